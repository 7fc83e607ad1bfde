"""Per-frame feature backends, chosen by name (`features.backends` in params.yaml).

- `cnn`: a small CNN trained per fold on the raw aligned frames of the training subjects.
- `cnn_delta`: the same CNN on each frame minus the take's first found (neutral) frame: the
  subject's identity cancels, the expression remains; the strong baseline.
- `cnn_pair`: the same CNN on that difference and the frame stacked (6 channels, in that order):
  the difference says what changed, the frame where on the face it sits; the strongest on the
  default data.
- `hog`: scikit-image HOG of the grey aligned crop; nothing trained.

Every backend fits on the training takes only and encodes any take frame by frame.
"""

from __future__ import annotations

from typing import Any

from pipeline.learn.backends import cnn, hog  # noqa: F401 - importing a backend module registers it
from pipeline.learn.backends.base import BACKENDS, PARAMS_KEY, Backend, TrainingFrames


def make_backend(name: str, **kwargs: Any) -> Backend:
    """A backend by its params name; an unknown name is one line naming `features.backends` and the known ones."""
    backend: Backend = BACKENDS.create(name, key=PARAMS_KEY, **kwargs)
    return backend


__all__ = ["BACKENDS", "PARAMS_KEY", "Backend", "TrainingFrames", "make_backend"]
