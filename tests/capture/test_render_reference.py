"""The vectorised renderer gives exactly what the per-frame renderer it replaced gave.

`reference_render` below is the previous renderer, kept verbatim as the slow reference: every point
shaded, every pixel gamma-corrected, one frame at a time, generic np.gradient/np.cross/np.linalg.norm
normals. The take renderer must match it byte for byte (frames) and bit for bit (landmarks,
visibility), so the committed data/raw did not change.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.capture.expressions import au_vector
from pipeline.capture.face_model import albedo, features_from_aus, landmarks_uv, relief, sample_identity
from pipeline.capture.render import GAMMA, ILLUMINATIONS, HeadRenderer, Light, Surface, rotation


def _reference_normals(P: np.ndarray) -> np.ndarray:
    d_lat = np.gradient(P, axis=0)
    d_lon = np.gradient(P, axis=1)
    n = np.cross(d_lon, d_lat)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    return n / np.maximum(norm, 1e-12)


def _reference_fill_holes(img: np.ndarray, covered: np.ndarray) -> np.ndarray:
    closed = cv2.morphologyEx(covered, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    holes = (closed > 0) & (covered == 0)
    if not holes.any():
        return img
    w = covered.astype(np.float64)
    num = cv2.blur(img * w[..., None], (3, 3))
    den = cv2.blur(w, (3, 3))
    fill = num / np.maximum(den, 1e-9)[..., None]
    return np.where(holes[..., None], fill, img)


def reference_surface(r: HeadRenderer, f) -> Surface:
    """The previous HeadRenderer.surface, with the generic normals."""
    ident, u, v = r.ident, r.u, r.v
    z = r.z_base.copy()
    z[r.front] += relief(u[r.front], v[r.front], ident, f) * np.clip(r.cos_lam[r.front] * 3, 0, 1)
    pts = r._surface(u, v, z, f)
    normals = _reference_normals(pts.reshape(*r.grid_shape, 3)).reshape(-1, 3)
    pts[r.is_hair] *= 1.06
    col = r.static_albedo.copy()
    col[r.feature_idx] = albedo(u[r.feature_idx], v[r.feature_idx], ident, f)
    lm_uv = landmarks_uv(ident, f)
    lu, lv = lm_uv[:, 0], lm_uv[:, 1]
    cb = np.sqrt(np.clip(1 - lv**2, 1e-6, 1))
    cl = np.sqrt(np.clip(1 - (lu / cb) ** 2, 0, 1))
    lz = ident.head_c * cb * cl + relief(lu, lv, ident, f) * np.clip(cl * 3, 0, 1)
    return Surface(pts, normals, col, r._surface(lu, lv, lz, f))


def reference_render(
    r: HeadRenderer,
    surf: Surface,
    yaw: float,
    pitch: float,
    light: Light,
    offset: tuple[float, float],
    rng: np.random.Generator,
    backdrop: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The previous HeadRenderer.render: one frame, every point shaded, every pixel gamma-corrected."""
    S = r.size
    R = rotation(yaw, pitch)
    all_pts, all_n, all_col = surf.points @ R.T, surf.normals @ R.T, surf.albedo
    ldir = np.asarray(light.direction, dtype=np.float64)
    ldir = ldir / np.linalg.norm(ldir)
    ndotl = np.clip(all_n @ ldir, 0, None)
    half = ldir + np.array([0, 0, 1.0])
    half /= np.linalg.norm(half)
    spec = np.clip(all_n @ half, 0, None) ** 24 * 0.12 * light.intensity
    shade = light.ambient + light.intensity * ndotl
    rgb = all_col * shade[:, None] + spec[:, None]
    cx, cy = S / 2 + offset[0], S * 0.45 + offset[1]
    px = np.rint(cx + r.scale * all_pts[:, 0]).astype(np.int64)
    py = np.rint(cy + r.scale * all_pts[:, 1]).astype(np.int64)
    ok = (px >= 0) & (px < S) & (py >= 0) & (py < S) & (all_n[:, 2] > -0.05)
    idx = py[ok] * S + px[ok]
    depth = all_pts[ok, 2]
    zbuf = np.full(S * S, -np.inf)
    np.maximum.at(zbuf, idx, depth)
    win = depth >= zbuf[idx]
    flat = backdrop.reshape(-1, 3).copy()
    covered = np.zeros(S * S, dtype=np.uint8)
    flat[idx[win]] = rgb[ok][win]
    covered[idx[win]] = 1
    img = _reference_fill_holes(flat.reshape(S, S, 3), covered.reshape(S, S))
    out: np.ndarray = np.clip(img, 0, 1) ** GAMMA * 255.0
    out = cv2.GaussianBlur(out, (0, 0), 0.6)
    out = out + rng.normal(0, light.noise_sigma, out.shape)
    frame = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    lm3 = surf.landmarks @ R.T
    lm2 = np.stack([cx + r.scale * lm3[:, 0], cy + r.scale * lm3[:, 1]], 1)
    li = np.clip(np.rint(lm2[:, 1]), 0, S - 1).astype(int) * S + np.clip(np.rint(lm2[:, 0]), 0, S - 1).astype(int)
    visible = lm3[:, 2] >= zbuf[li] - 0.06
    return frame, lm2, visible


CASES = [  # (identity seed, expression, camera yaw, light, frame size)
    (3, "surprise", 0.0, "frontal", 160),
    (6, "happiness", -30.0, "left", 160),
    (7, "anger", 30.0, "dim", 96),
    (1, "fear", 30.0, "right", 128),
]


@pytest.mark.parametrize("seed,expression,yaw,illum,size", CASES)
def test_the_take_renderer_equals_the_per_frame_reference(
    seed: int, expression: str, yaw: float, illum: str, size: int
) -> None:
    ident = sample_identity(np.random.default_rng(seed), tone_index=seed)
    r = HeadRenderer(ident, size)
    light = ILLUMINATIONS[illum]
    n = 5
    feats = [features_from_aus(au_vector(expression, i / (n - 1)), ident.au_gain) for i in range(n)]
    motion = np.random.default_rng(seed).normal(0, 1, (n, 4)) * [1.0, 1.0, 2.0, 2.0]
    yaws, pitches = [yaw + m[0] for m in motion], [m[1] for m in motion]
    offsets = [(m[2], m[3]) for m in motion]
    backdrop = r.backdrop(yaw, light, np.random.default_rng(seed))

    surfaces = [r.surface(f) for f in feats]
    frames, lm2, visible = r.render_take(surfaces, yaws, pitches, offsets, light, np.random.default_rng(9), backdrop)

    ref_rng = np.random.default_rng(9)
    for t, f in enumerate(feats):
        ref_surf = reference_surface(r, f)
        for field in ("points", "normals", "albedo", "landmarks"):
            a, b = getattr(surfaces[t], field), getattr(ref_surf, field)
            np.testing.assert_array_equal(a, b)
        frame, lm, vis = reference_render(r, ref_surf, yaws[t], pitches[t], light, offsets[t], ref_rng, backdrop)
        assert frames[t].tobytes() == frame.tobytes(), f"frame {t} differs"
        np.testing.assert_array_equal(lm2[t], lm)
        np.testing.assert_array_equal(visible[t], vis)


def test_one_frame_render_is_the_take_renderer() -> None:
    """render() (tests, benchmarks) is render_take on one frame: same bytes as the reference."""
    ident = sample_identity(np.random.default_rng(2), tone_index=2)
    r = HeadRenderer(ident, 128)
    light = ILLUMINATIONS["frontal"]
    f = features_from_aus(au_vector("sadness", 0.8), ident.au_gain)
    backdrop = r.backdrop(0.0, light, np.random.default_rng(0))
    frame, lm, vis = r.render(f, 4.0, -2.0, light, (1.0, -0.5), np.random.default_rng(1), backdrop)
    ref = reference_render(
        r, reference_surface(r, f), 4.0, -2.0, light, (1.0, -0.5), np.random.default_rng(1), backdrop
    )
    assert frame.tobytes() == ref[0].tobytes()
    np.testing.assert_array_equal(lm, ref[1])
    np.testing.assert_array_equal(vis, ref[2])
