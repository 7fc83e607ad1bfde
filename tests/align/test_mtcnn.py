"""The project's own MTCNN cascade on real photos and on simulated faces."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data as skimage_data
import torch

from pipeline.align.detectors import make_detector
from pipeline.align.detectors.mtcnn import MTCNN, MTCNNWeightsMissing, find_weights_dir
from pipeline.align.detectors.nms import nms
from pipeline.registry import UnknownNameError


@pytest.fixture(scope="module")
def mtcnn() -> MTCNN:
    torch.set_num_threads(1)  # as in align's workers; several threads only spin on a busy machine
    return MTCNN(device="cpu")


def test_astronaut_face_box_and_points(mtcnn: MTCNN) -> None:
    """The reference cascade finds Eileen Collins' face at about (180, 61)-(267, 171)."""
    dets = mtcnn.detect(skimage_data.astronaut())
    assert len(dets) == 1
    d = dets[0]
    np.testing.assert_allclose(d.box, [180, 61, 267, 171], atol=8)
    assert d.score > 0.99
    le, re, nose, ml, mr = d.landmarks
    x1, y1, x2, y2 = d.box
    assert le[0] < nose[0] < re[0] and ml[0] < nose[0] < mr[0]
    assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])
    assert x1 < le[0] < (x1 + x2) / 2 < re[0] < x2
    assert y1 < le[1] < (y1 + y2) / 2 < ml[1] < y2


def test_lfw_faces_upscaled(mtcnn: MTCNN) -> None:
    faces = skimage_data.lfw_subset()[:10]
    found = 0
    for f in faces:
        img = (cv2.resize(f, (100, 100), interpolation=cv2.INTER_CUBIC) * 255).clip(0, 255).astype(np.uint8)
        img = cv2.copyMakeBorder(np.stack([img] * 3, -1), 30, 30, 30, 30, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        dets = mtcnn.detect(img)
        if dets:
            le, re, nose, ml, mr = dets[0].landmarks
            assert le[1] < nose[1] < ml[1] and le[0] < re[0]
            found += 1
    assert found >= 9


def test_no_face_in_a_flat_image(mtcnn: MTCNN) -> None:
    assert mtcnn.detect(np.full((120, 160, 3), 127, np.uint8)) == []


def test_rejects_non_rgb_input(mtcnn: MTCNN) -> None:
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        mtcnn.detect(np.zeros((10, 10), np.uint8))


def test_finds_a_simulated_face(mtcnn: MTCNN) -> None:
    from pipeline.capture.expressions import au_vector
    from pipeline.capture.face_model import features_from_aus, five_points, sample_identity
    from pipeline.capture.render import ILLUMINATIONS, HeadRenderer

    ident = sample_identity(np.random.default_rng(5), tone_index=4)
    r = HeadRenderer(ident, 160)
    rng = np.random.default_rng(0)
    img, lm, _ = r.render(
        features_from_aus(au_vector("happiness", 1), ident.au_gain),
        0,
        0,
        ILLUMINATIONS["frontal"],
        (0, 0),
        rng,
        r.backdrop(0, ILLUMINATIONS["frontal"], rng),
    )
    dets = mtcnn.detect(img)
    assert dets
    truth = five_points(lm)
    iod = np.linalg.norm(truth[0] - truth[1])
    assert np.linalg.norm(dets[0].landmarks - truth, axis=1).mean() / iod < 0.25


def test_nms_union_and_min() -> None:
    boxes = torch.tensor([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29], [2, 2, 5, 5]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]  # the small box barely overlaps by IoU
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [3, 2]  # but lies inside the big ones
    assert nms(torch.empty(0, 4), torch.empty(0), 0.5).numel() == 0
    with pytest.raises(ValueError):
        nms(boxes, scores, 0.5, mode="max")


def test_missing_weights_say_how_to_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MVFER_MTCNN_WEIGHTS", str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(MTCNNWeightsMissing, match="pip install --no-deps facenet-pytorch==2.6.0"):
        find_weights_dir()


def test_registry_names_known_detectors() -> None:
    with pytest.raises(
        UnknownNameError, match=r"align\.detector: unknown detector 'yolo' \(known: insightface, mtcnn\)"
    ):
        make_detector("yolo")


def _reference_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union") -> list[int]:
    """The torch loop `nms` replaced (the original cascade's greedy suppression), to compare with."""
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = torch.argsort(scores, descending=True)
    keep: list[int] = []
    while order.numel() > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + 1).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + 1).clamp(min=0)
        inter = w * h
        den = torch.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / den <= threshold]
    return keep


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["union", "min"])
def test_nms_keeps_what_the_torch_loop_keeps(dtype: torch.dtype, mode: str) -> None:
    """Integer boxes (P-Net's, exact overlap ties) and fractional ones, with tied scores."""
    g = torch.Generator().manual_seed(3)
    for integer in (True, False):
        xy = torch.rand(300, 2, generator=g, dtype=torch.float64) * 100
        wh = torch.rand(300, 2, generator=g, dtype=torch.float64) * 30 + 2
        boxes = torch.cat([xy, xy + wh], dim=1)
        boxes = (boxes.floor() if integer else boxes).to(dtype)
        scores = (torch.rand(300, generator=g) * 8).round().to(dtype) / 8  # many ties
        for t in (0.3, 0.5, 0.7):
            assert nms(boxes, scores, t, mode=mode).tolist() == _reference_nms(boxes, scores, t, mode)


def test_channels_last_max_pooling_is_the_planar_one() -> None:
    from pipeline.align.detectors.mtcnn import _MaxPool

    g = torch.Generator().manual_seed(0)
    for shape, k in (((3, 28, 22, 22), 3), ((2, 10, 45, 47), 2), ((1, 64, 8, 7), 2)):
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        got = _MaxPool(k, 2, ceil_mode=True)(x)
        assert got.is_contiguous() and torch.equal(got, torch.nn.functional.max_pool2d(x, k, 2, ceil_mode=True))


def _batch_images() -> list[np.ndarray]:
    """Faces of two image sizes, small and large, a dim one, and one without a face."""
    astro = cv2.resize(skimage_data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    images = [astro, astro[::-1, ::-1].copy(), (astro // 3).astype(np.uint8), np.full_like(astro, 127)]
    for f in skimage_data.lfw_subset()[:5]:
        img = (cv2.resize(f, (100, 100), interpolation=cv2.INTER_CUBIC) * 255).clip(0, 255).astype(np.uint8)
        images.append(cv2.copyMakeBorder(np.stack([img] * 3, -1), 30, 30, 30, 30, cv2.BORDER_CONSTANT, value=128))
    return images


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_batched_detection_is_one_image_at_a_time(mtcnn: MTCNN, precision: str) -> None:
    """P-Net over a stack of images, R-Net and O-Net over all their boxes: the same boxes, scores, points.

    Bit for bit in float64 (align's default); float32 convolutions (oneDNN) round with the batch size.
    """
    det = MTCNN(device="cpu", precision=precision)
    images = _batch_images()
    one_by_one = [det.detect(im) for im in images]
    assert sum(map(len, one_by_one)) >= 6 and one_by_one[3] == []
    for batch in (det.detect_batch(images), det.detect_batch(images[::-1])[::-1]):
        assert [len(d) for d in batch] == [len(d) for d in one_by_one]
        for got, want in zip(batch, one_by_one):
            for g_, w_ in zip(got, want):
                if precision == "float64":
                    assert g_.box.tobytes() == w_.box.tobytes()
                    assert g_.score == w_.score
                    assert g_.landmarks.tobytes() == w_.landmarks.tobytes()
                else:
                    np.testing.assert_allclose(g_.box, w_.box, atol=1e-2)
                    assert g_.score == pytest.approx(w_.score, abs=1e-5)
                    np.testing.assert_allclose(g_.landmarks, w_.landmarks, atol=1e-2)
    assert det.detect_batch([]) == []
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        det.detect_batch([images[0], np.zeros((10, 10), np.uint8)])
