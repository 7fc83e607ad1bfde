"""Expression geometry follows the FACS prototypes; the time course is neutral -> apex."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.capture.expressions import PROTOTYPES, au_vector, intensity_curve
from pipeline.capture.face_model import NEUTRAL, features_from_aus, five_points, landmarks_uv, sample_identity

IDENT = sample_identity(np.random.default_rng(3), tone_index=2)


def lm(expression: str, intensity: float = 1.0) -> np.ndarray:
    return landmarks_uv(IDENT, features_from_aus(au_vector(expression, intensity), IDENT.au_gain))


NEUTRAL_LM = landmarks_uv(IDENT, NEUTRAL)
BROWS, INNER_BROWS = slice(17, 27), [21, 22]
EYE_OPEN = lambda p: (p[40, 1] - p[38, 1]) + (p[46, 1] - p[44, 1])  # noqa: E731  (lower minus upper lid)
MOUTH_OPEN = lambda p: p[66, 1] - p[62, 1]  # noqa: E731
CORNERS_V = lambda p: (p[48, 1] + p[54, 1]) / 2  # noqa: E731
MOUTH_W = lambda p: p[54, 0] - p[48, 0]  # noqa: E731


def test_68_points_and_5_points_in_face_order() -> None:
    assert NEUTRAL_LM.shape == (68, 2)
    five = five_points(NEUTRAL_LM)
    assert five[0, 0] < five[2, 0] < five[1, 0]  # left eye, nose, right eye across the face
    assert five[3, 0] < five[4, 0]  # mouth corners left to right
    assert five[0, 1] < five[2, 1] < five[3, 1]  # eyes above nose above mouth (v down)


def test_neutral_activates_nothing() -> None:
    np.testing.assert_allclose(lm("neutral"), NEUTRAL_LM)


def test_surprise_raises_brows_opens_eyes_and_jaw() -> None:  # AU1+2+5+26
    p = lm("surprise")
    assert p[BROWS, 1].mean() < NEUTRAL_LM[BROWS, 1].mean() - 0.04
    assert EYE_OPEN(p) > EYE_OPEN(NEUTRAL_LM) * 1.4
    assert MOUTH_OPEN(p) > 0.1


def test_happiness_lifts_and_widens_the_mouth_corners() -> None:  # AU6+12
    p = lm("happiness")
    assert CORNERS_V(p) < CORNERS_V(NEUTRAL_LM) - 0.04
    assert MOUTH_W(p) > MOUTH_W(NEUTRAL_LM)
    assert EYE_OPEN(p) < EYE_OPEN(NEUTRAL_LM)  # cheeks push the lower lids up


def test_sadness_and_disgust_pull_the_corners_down() -> None:  # AU15
    for e in ("sadness", "disgust"):
        assert CORNERS_V(lm(e)) > CORNERS_V(NEUTRAL_LM) + 0.03


def test_anger_lowers_and_draws_the_brows_together_and_tightens_lips() -> None:  # AU4+5+7+23
    p = lm("anger")
    assert p[INNER_BROWS, 1].mean() > NEUTRAL_LM[INNER_BROWS, 1].mean() + 0.03
    assert (p[22, 0] - p[21, 0]) < (NEUTRAL_LM[22, 0] - NEUTRAL_LM[21, 0]) - 0.04
    assert MOUTH_W(p) < MOUTH_W(NEUTRAL_LM)


def test_fear_differs_from_surprise_by_brows_together_and_stretched_lips() -> None:  # AU4, AU20
    f, s = lm("fear"), lm("surprise")
    assert (f[22, 0] - f[21, 0]) < (s[22, 0] - s[21, 0])
    assert MOUTH_W(f) > MOUTH_W(s)


def test_intensity_scales_the_displacement() -> None:
    half, full = lm("surprise", 0.5), lm("surprise", 1.0)
    d_half = np.abs(half - NEUTRAL_LM).sum()
    d_full = np.abs(full - NEUTRAL_LM).sum()
    assert 0.3 * d_full < d_half < 0.7 * d_full


def test_unknown_expression_is_named() -> None:
    with pytest.raises(ValueError, match="'contempt'"):
        au_vector("contempt", 1.0)


def test_every_prototype_is_a_known_emfacs_set() -> None:
    assert PROTOTYPES["fear"] == (1, 2, 4, 5, 7, 20, 26)
    assert set(PROTOTYPES) == {"neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise"}


@pytest.mark.parametrize("back", [False, True])
def test_intensity_curve_starts_neutral_and_peaks_at_the_apex(back: bool) -> None:
    c = intensity_curve(20, onset=3, apex=12, peak=0.9, return_to_neutral=back)
    assert c[:4].max() == 0
    assert int(np.argmax(c)) == 12 and c[12] == pytest.approx(0.9)
    assert np.all(np.diff(c[:13]) >= 0)
    if back:
        assert c[-1] == pytest.approx(0)
    else:
        assert c[-1] == pytest.approx(0.9)


def test_intensity_curve_rejects_bad_timing() -> None:
    with pytest.raises(ValueError):
        intensity_curve(10, onset=5, apex=5, peak=1, return_to_neutral=False)
