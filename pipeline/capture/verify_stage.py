"""The capture_verify stage's shell: does a real face detector find the simulated faces?

Reads align's detections (data/aligned) and the simulated raw folder's capture log and truth
(data/raw, or `--raw`); writes reports/capture_verify.json. Runs after align: the detector runs once,
in align, and this stage only scores what it found against the simulator's truth.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.capture.verify import verify
from pipeline.layout import Layout
from pipeline.params import Params
from pipeline.stage import main, with_provenance
from pipeline.utils import io

log = logging.getLogger(__name__)

PARAMS = ("capture_verify.every_nth_frame", "align.detector", "align.min_face_px", "align.keyframe_every")


def run(layout: Layout, params: Params, raw: str | Path | None = None) -> None:
    """Detection rate and 5-point error per pose, illumination, mode, skin tone and expression."""
    raw_dir = Path(raw) if raw else layout.raw
    report = verify(raw_dir, layout.aligned, params.capture_verify, params.align)
    io.write_json(layout.capture_verify_report, with_provenance(report, params, *PARAMS))
    for mode, figs in report.get("mode", {}).items():
        log.info("%-28s detection %.1f %%  NME %s", mode, 100 * figs["detection_rate"], figs["nme_mean"])


if __name__ == "__main__":
    raise SystemExit(main(run))
