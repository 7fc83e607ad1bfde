# Two commands do everything on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Installed --no-deps, their real needs being in the lock:
# - facenet-pytorch only carries the MIT-licensed MTCNN weights (importing it would need an old
#   torch and torchvision; pipeline/align/detectors/mtcnn.py runs the networks);
# - insightface declares opencv-python (needs libGL); we use opencv-python-headless;
# - crowd-kit (reference Dawid-Skene for the tests) declares transformers, needed only for text.
NO_DEPS := facenet-pytorch==2.6.0 insightface==2.1 crowd-kit==1.4.2

LS_VENV  := .venv-ls
LS_STAMP := $(LS_VENV)/.installed
# A local S3 server (moto) for the release push/pull tests: a service, in its own environment.
S3_VENV  := .venv-s3
S3_STAMP := $(S3_VENV)/.installed

.PHONY: run test test-fast lint install labelstudio repro study bench clean-venv system-packages

run: $(STAMP)  ## install (once) and run the whole pipeline on the built-in data; its stage log goes to reports/run.json
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python scripts/timed_repro.py

test: $(STAMP) $(LS_STAMP) $(S3_STAMP) system-packages lint  ## lint, type check, dvc.yaml drift, then every test tier
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q --durations=15

# The unit tier alone (tests/tiers.py): under a minute, for development. `make test` runs all three tiers.
test-fast: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m unit

# What CI checks before the tests: lint and format (ruff), types (mypy), dvc.yaml generated from pipeline/stages.py.
# The docs' strict build and figure drift are tests (tests/test_docs.py).
lint: $(STAMP)
	$(BIN)/ruff check pipeline tests scripts
	$(BIN)/ruff format --check pipeline tests scripts
	$(BIN)/mypy
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/mvfer dvc-yaml --check

install: $(STAMP)

# Debian packages the tests drive: chromium + chromedriver (tests/annotate/test_browser.py, a real browser),
# strace (tests/test_dvc_pipeline.py::test_every_stage_reads_only_what_it_declares) and g++ (the compiled MV-LSTM
# scan, tests/models/test_mv_scan.py). CI runs as root; a machine without apt-get and without them fails those
# tests (never skips them).
SYS_TOOLS := chromium chromedriver strace g++
SYS_PKGS  := chromium chromium-driver strace g++
system-packages:
	@for t in $(SYS_TOOLS); do command -v $$t >/dev/null || missing=1; done; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYS_PKGS); fi

# One pip resolve over the fully pinned lock file, so no later install can move an earlier pin.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps $(NO_DEPS)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/mvfer build-ext || echo "WARNING: the compiled MV-LSTM scan did not build (see above): models run on the Python scan, 2-3x slower"
	touch $(STAMP)

# Label Studio in its own environment: it pins label-studio-sdk, Django and an old pytz.
labelstudio: $(LS_STAMP)
$(LS_STAMP): requirements-labelstudio.lock
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q -r requirements-labelstudio.lock
	touch $(LS_STAMP)

$(S3_STAMP): requirements-s3server.lock
	test -x $(S3_VENV)/bin/python || $(PYTHON) -m venv $(S3_VENV)
	$(S3_VENV)/bin/python -m pip install -q -r requirements-s3server.lock
	touch $(S3_STAMP)

repro: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

study: $(STAMP)  ## queue and run the full study (params.study.yaml) as DVC experiments; JOBS=2 runs two at once
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python scripts/study.py --jobs $(or $(JOBS),1)

bench: $(STAMP)  ## print render speed of the capture simulator
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python scripts/bench_capture.py

clean-venv:
	rm -rf $(VENV) $(LS_VENV) $(S3_VENV)
