"""capture_verify's core: align's per-frame record scored against the simulator's truth."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.align.tracking import SOURCE_DETECT, SOURCE_NONE, SOURCE_TRACK
from pipeline.capture.verify import frame_results, true_box


def _truth(T: int) -> tuple[np.ndarray, np.ndarray]:
    """A face whose 68 points span x 40..80, y 30..90; its 5 points inside."""
    lm68 = np.zeros((T, 68, 2))
    lm68[:, :, 0] = np.linspace(40, 80, 68)
    lm68[:, :, 1] = np.linspace(30, 90, 68)
    five = np.tile(np.array([[50.0, 50.0], [70.0, 50.0], [60.0, 62.0], [52.0, 75.0], [68.0, 75.0]]), (T, 1, 1))
    return lm68, five


def test_true_box_spans_the_68_points() -> None:
    lm68, _ = _truth(1)
    np.testing.assert_array_equal(true_box(lm68[0]), [40, 30, 80, 90])


def test_a_detector_frame_counts_when_the_detected_nose_is_inside_the_true_face() -> None:
    lm68, five = _truth(9)
    points = five.copy()
    points[4] += 3.0  # a detection 3 px off: found, with its error
    points[8] += 100.0  # a face far from the simulated one (a false positive): not found
    aligned = {
        "raw_points": points,
        "source": np.array([SOURCE_DETECT, SOURCE_TRACK, SOURCE_TRACK, SOURCE_TRACK] * 2 + [SOURCE_DETECT]),
        "n_faces": np.array([1, -1, -1, -1, 1, -1, -1, -1, 2]),
        "stretched": np.array([False] * 8 + [True]),
    }
    aligned["source"][[5]] = SOURCE_NONE
    res, untested = frame_results(aligned, lm68, five, every=4)
    assert [r[0] for r in res] == [0, 4, 8] and untested == 0
    assert [r[1] for r in res] == [True, True, False]
    assert res[0][2] == 0.0 and res[1][2] == pytest.approx(np.hypot(3, 3) / 20)
    assert res[2][2] is None and res[2][3] is True


def test_frames_align_only_tracked_are_not_sampled() -> None:
    lm68, five = _truth(8)
    aligned = {
        "raw_points": five,
        "source": np.full(8, SOURCE_TRACK),
        "n_faces": np.array([0, -1, -1, -1, -1, 1, -1, -1]),  # detector ran on 0 (nothing found) and 5
        "stretched": np.zeros(8, bool),
    }
    aligned["source"][0] = SOURCE_NONE
    res, untested = frame_results(aligned, lm68, five, every=4)
    assert [(t, d) for t, d, _, _ in res] == [(0, False)]  # frame 5 is not every 4th
    assert untested == 1  # frame 4: align only tracked it
