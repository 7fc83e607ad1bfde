"""The simulator writes what a rig writes, deterministically, with physically sensible light."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.capture.expressions import au_vector
from pipeline.capture.face_model import features_from_aus, sample_identity
from pipeline.capture.render import ILLUMINATIONS, HeadRenderer
from pipeline.capture.simulate import LOG_COLUMNS, plan_subjects, simulate
from pipeline.ingest.schema import LOG_REQUIRED
from tests.conftest import tiny_capture_params


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_layout_is_what_a_rig_writes(tiny_raw: Path) -> None:
    log = pd.read_csv(tiny_raw / "capture_log.csv")
    assert list(log.columns) == LOG_COLUMNS and set(LOG_REQUIRED) <= set(log.columns)
    assert len(log) == 2 * 2 * 2 * 2  # subjects x lights x expressions x cameras
    assert log["take_id"].is_unique
    subjects = pd.read_csv(tiny_raw / "subjects.csv")
    assert set(log["subject_id"]) <= set(subjects["subject_id"])
    assert all(s.startswith("sub-") for s in subjects["subject_id"])
    takes = sorted(p.name for p in (tiny_raw / "takes").iterdir())
    assert takes == sorted(Path(f).name for f in log["file"])


def test_videos_are_real_encoded_files(tiny_raw: Path) -> None:
    log = pd.read_csv(tiny_raw / "capture_log.csv")
    for f in log["file"]:
        cap = cv2.VideoCapture(str(tiny_raw / f))
        n = 0
        while cap.read()[0]:
            n += 1
        assert n == 8 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
        assert (tiny_raw / f).read_bytes()[4:8] == b"ftyp"


def test_truth_is_kept_apart_and_consistent(tiny_raw: Path) -> None:
    truth = pd.read_csv(tiny_raw / "_truth" / "takes.csv")
    for t in truth.itertuples():
        z = np.load(tiny_raw / "_truth" / f"{t.take_id}.npz")
        assert z["landmarks68"].shape == (8, 68, 2) and z["landmarks5"].shape == (8, 5, 2)
        assert (z["landmarks68"] >= 0).all() and (z["landmarks68"] < 96).all()
        assert int(np.argmax(z["intensity"])) == t.apex_frame
        assert z["intensity"][0] == 0


def test_deterministic_from_the_seed(tiny_raw: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    simulate(tiny_capture_params(workers=2), again)
    assert _digest(again) == _digest(tiny_raw)


def test_a_different_seed_gives_different_faces(tiny_raw: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    simulate(tiny_capture_params(seed=8, expressions=["happiness"], illuminations=["frontal"]), other)
    a = tiny_raw / "_truth" / "pf00000-cam_c.npz"
    assert not np.allclose(np.load(a)["landmarks68"], np.load(other / "_truth" / "pf00000-cam_c.npz")["landmarks68"])


def test_consent_plan_marks_withdrawn_and_research_only_subjects() -> None:
    s = plan_subjects(tiny_capture_params(n_subjects=6, n_withdrawn=1, n_no_public_release=2))
    assert s["withdrawn"].sum() == 1
    assert (~s["consent_public_release"]).sum() == 3  # withdrawn subjects never consent to release
    assert s.loc[s["withdrawn"], "withdrawn_date"].str.len().min() == 10


def _render(illum: str, yaw: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    ident = sample_identity(np.random.default_rng(11), tone_index=1)
    r = HeadRenderer(ident, 128)
    rng = np.random.default_rng(seed)
    f = features_from_aus(au_vector("neutral", 0), ident.au_gain)
    img, lm, _ = r.render(f, yaw, 0, ILLUMINATIONS[illum], (0, 0), rng, r.backdrop(yaw, ILLUMINATIONS[illum], rng))
    return img.astype(float), lm


def _cheeks(img: np.ndarray, lm: np.ndarray) -> tuple[float, float]:
    """Mean brightness of patches on the image-left and image-right cheek."""

    def patch(p):
        x, y = int(p[0]), int(p[1])
        return img[y - 3 : y + 4, x - 3 : x + 4].mean()

    left = (lm[3] + lm[31]) / 2
    right = (lm[13] + lm[35]) / 2
    return patch(left), patch(right)


def test_a_side_light_darkens_the_far_half_of_the_face() -> None:
    left_lit, right_dark = _cheeks(*_render("left"))
    assert left_lit > 1.8 * right_dark
    a, b = _cheeks(*_render("right"))
    assert b > 1.8 * a
    f_left, f_right = _cheeks(*_render("frontal"))
    assert 0.8 < f_left / f_right < 1.25


def test_dim_light_is_darker_and_noisier() -> None:
    frontal, _ = _render("frontal")
    dim, _ = _render("dim")
    assert dim.mean() < 0.6 * frontal.mean()

    def noise(img):
        corner = img[2:22, 2:22, 1]
        return float(np.std(corner - cv2.GaussianBlur(corner, (0, 0), 2)))

    assert noise(dim) > 2.5 * noise(frontal)


def test_yaw_turns_the_nose_towards_the_side() -> None:
    _, lm0 = _render("frontal", 0)
    _, lm30 = _render("frontal", 30)
    eyes_mid0 = (lm0[39, 0] + lm0[42, 0]) / 2
    eyes_mid30 = (lm30[39, 0] + lm30[42, 0]) / 2
    assert lm0[30, 0] - eyes_mid0 == pytest.approx(0, abs=1.0)
    assert lm30[30, 0] - eyes_mid30 > 3  # the nose tip swings ahead of the eyes


def test_a_surface_shared_by_cameras_renders_what_the_expression_renders() -> None:
    """The rig's cameras share one surface per frame (computed once, read-only): rendering camera after
    camera from it gives exactly the frames, landmarks and visibility rendered from the expression
    itself, so nothing one camera does leaks into the next."""
    ident = sample_identity(np.random.default_rng(5), tone_index=3)
    r = HeadRenderer(ident, 96)
    f = features_from_aus(au_vector("surprise", 0.9), ident.au_gain)
    surface = r.surface(f)
    light = ILLUMINATIONS["left"]
    for yaw in (-30.0, 0.0, 30.0):
        backdrop = r.backdrop(yaw, light, np.random.default_rng(1))
        a = r.render(f, yaw, 2.0, light, (1.5, -1.0), np.random.default_rng(2), backdrop)
        b = r.render(surface, yaw, 2.0, light, (1.5, -1.0), np.random.default_rng(2), backdrop)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="read-only"):
        surface.points[0, 0] = 0.0
