"""Render one frame of a synthetic head: geometry, pose, Lambertian light, z-buffered splatting.

The head is a dense grid of surface points on an ellipsoid (plus hair volume and a neck), displaced
by the face relief. Points are rotated by the head pose, shaded in camera space by the rig's light
(so a side light darkens the far half of the face whatever the pose), and splatted into the image
with a z-buffer. Cheap enough for thousands of frames per minute on one core, with no GL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.capture.face_model import Features, Identity, albedo, landmarks_uv, relief

GAMMA = 1 / 2.2


@dataclass(frozen=True)
class Light:
    """A rig illumination: direction towards the light (camera frame), strengths, sensor noise."""

    direction: tuple[float, float, float]
    intensity: float
    ambient: float
    noise_sigma: float  # 8-bit units, after gamma: dim light means high gain, hence noise


ILLUMINATIONS: dict[str, Light] = {
    "frontal": Light((0.0, -0.3, 1.0), 0.80, 0.28, 1.5),
    "left": Light((-1.0, -0.2, 0.2), 1.1, 0.05, 2.0),
    "right": Light((1.0, -0.2, 0.2), 1.1, 0.05, 2.0),
    "dim": Light((0.0, -0.3, 1.0), 0.20, 0.05, 7.0),
}


def rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Head rotation: yaw about the vertical axis (positive turns the nose to image-right), then pitch (up)."""
    y, p = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    return rx @ ry


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


@dataclass(frozen=True)
class Surface:
    """One frame's head in head space (before pose): points, unit normals, albedo, 68 landmarks (all N x 3)."""

    points: np.ndarray
    normals: np.ndarray
    albedo: np.ndarray
    landmarks: np.ndarray


class HeadRenderer:
    """Renders one identity at one frame size; the point grid is built once and reused per frame."""

    def __init__(self, ident: Identity, frame_size: int) -> None:
        self.ident = ident
        self.size = int(frame_size)
        self.scale = 0.30 * self.size  # pixels per face unit: the head is 60 % of the frame tall
        # Grid density so neighbouring points land < 0.9 px apart (holes are filled) at the face centre.
        n_lam = int(np.ceil(self.scale * ident.head_a * 1.6 * np.pi / 0.9))
        n_beta = int(np.ceil(self.scale * ident.head_b * np.pi / 0.9))
        lam = np.linspace(-0.8 * np.pi, 0.8 * np.pi, n_lam)
        beta = np.linspace(-np.pi / 2, np.pi / 2, n_beta)
        L, B = np.meshgrid(lam, beta)
        self.grid_shape = L.shape
        cb = np.cos(B)
        self.u = (cb * np.sin(L)).ravel()
        self.v = np.sin(B).ravel()
        self.cos_lam = np.cos(L).ravel()
        front = self.cos_lam > 0
        self.z_base = ident.head_c * (cb.ravel() * self.cos_lam)
        hair_back = (self.cos_lam < 0.3) & (self.v < 0.35)
        hair_top = self.v < ident.hairline + 0.25 * self.u**2
        self.is_hair = hair_back | hair_top
        # Features can only appear on the front of the face: recompute albedo there per frame.
        self.feature_idx = np.flatnonzero(
            front & (np.abs(self.u) < 0.8) & (self.v > -0.55) & (self.v < 1.0) & ~hair_back
        )
        self.front = front
        self.static_albedo = np.where(self.is_hair[:, None], ident.hair, ident.skin)

    def _surface(self, u: np.ndarray, v: np.ndarray, z: np.ndarray, f: Features) -> np.ndarray:
        """Face coordinates plus depth -> 3D points in head space (before pose)."""
        ident = self.ident
        taper = 1 - ident.jaw_taper * np.clip(v - 0.1, 0, None) ** 2
        x = ident.head_a * u * taper
        y = ident.head_b * v + 0.5 * f.jaw_open * _smoothstep((v - ident.mouth_y - 0.08) / 0.3)
        return np.stack([x, y, z], axis=-1)

    def backdrop(self, yaw: float, light: Light, rng: np.random.Generator) -> np.ndarray:
        """Background, shoulders and neck (linear RGB) for one take: all that the head occludes.

        The neck turns less than the head and hides behind the chin, so it is drawn once per take.
        """
        S = self.size
        bg = draw_torso(make_background(S, light, rng), self.ident.shirt, light, yaw)
        yy, xx = np.mgrid[0:S, 0:S].astype(np.float64)
        cx = S / 2 + S * 0.08 * np.sin(np.deg2rad(yaw))
        half = 0.40 * self.ident.head_a / 0.78 * self.scale
        top = S * 0.45 + 0.45 * self.scale
        neck = (np.abs(xx - cx) < half) & (yy > top)
        nx = np.clip((xx - cx) / half, -1, 1)
        normal = np.stack([nx, np.zeros_like(nx), np.sqrt(1 - nx**2)], -1)
        ldir = np.asarray(light.direction) / np.linalg.norm(light.direction)
        shade = light.ambient + light.intensity * np.clip(normal @ ldir, 0, None)
        bg[neck] = (self.ident.skin * 0.85) * shade[neck][:, None]
        return bg

    def surface(self, f: Features) -> Surface:
        """The head in its own space for one frame's expression: the same for every camera of the rig.

        Why separate: relief, albedo and normals are about half of a frame's rendering time and do
        not depend on the pose, so a performance filmed by three cameras computes them once.
        """
        ident = self.ident
        u, v = self.u, self.v
        z = self.z_base.copy()
        z[self.front] += relief(u[self.front], v[self.front], ident, f) * np.clip(self.cos_lam[self.front] * 3, 0, 1)
        pts = self._surface(u, v, z, f)
        # normals of the smooth surface; the hair's volume step would otherwise light up as seams
        normals = _grid_normals(pts.reshape(*self.grid_shape, 3)).reshape(-1, 3)
        pts[self.is_hair] *= 1.06  # hair has volume
        col = self.static_albedo.copy()
        fi = self.feature_idx
        col[fi] = albedo(u[fi], v[fi], ident, f)
        lm_uv = landmarks_uv(ident, f)
        lu, lv = lm_uv[:, 0], lm_uv[:, 1]
        cb = np.sqrt(np.clip(1 - lv**2, 1e-6, 1))
        cl = np.sqrt(np.clip(1 - (lu / cb) ** 2, 0, 1))
        lz = ident.head_c * cb * cl + relief(lu, lv, ident, f) * np.clip(cl * 3, 0, 1)
        arrays = (pts, normals, col, self._surface(lu, lv, lz, f))
        # shared by every camera: an in-place edit in render() must fail, not leak into the next camera
        for a in arrays:
            a.flags.writeable = False
        return Surface(*arrays)

    def render(
        self,
        f: Features | Surface,
        yaw: float,
        pitch: float,
        light: Light,
        offset: tuple[float, float],
        rng: np.random.Generator,
        backdrop: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One frame: (H x W x 3 uint8 RGB image, 68 x 2 landmarks in pixels, 68 visibility flags).

        `f` is the frame's expression, or its `surface()` computed once for several cameras.
        """
        surf = f if isinstance(f, Surface) else self.surface(f)
        frames, lm2, visible = self.render_take([surf], [yaw], [pitch], [offset], light, rng, backdrop)
        return frames[0], lm2[0], visible[0]

    def render_take(
        self,
        surfaces: Sequence[Surface],
        yaws: Sequence[float],
        pitches: Sequence[float],
        offsets: Sequence[tuple[float, float]],
        light: Light,
        rng: np.random.Generator,
        backdrop: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A camera's frames: (T x H x W x 3 uint8 RGB, T x 68 x 2 landmarks, T x 68 visibility flags).

        Why this shape: per point, only what decides a pixel is computed for every point (pose,
        projection, depth); shading, gamma and hole filling touch only the points that win a pixel
        and the pixels the head covers; the backdrop's gamma is done once for the take. Each value is
        the same arithmetic on the same numbers as rendering the frames one at a time, so the bytes
        do not change (tests/capture/test_render_reference.py).
        """
        S, T = self.size, len(surfaces)
        ldir = np.asarray(light.direction, dtype=np.float64)
        ldir = ldir / np.linalg.norm(ldir)
        # camera space has y down; light.direction has y down too (negative y: light from above)
        half = ldir + np.array([0, 0, 1.0])
        half /= np.linalg.norm(half)
        flat_bg = backdrop.reshape(-1, 3)
        gamma_bg = np.clip(flat_bg, 0, 1) ** GAMMA * 255.0  # uncovered pixels: the same in every frame
        g, last = gamma_bg.copy(), np.zeros(S * S, dtype=bool)
        flat = flat_bg.copy()  # linear RGB of the drawn pixels (finite everywhere: hole filling weighs it by 0)
        frames = np.empty((T, S, S, 3), dtype=np.uint8)
        noise = np.empty((S, S, 3))
        lm2 = np.empty((T, 68, 2))
        visible = np.empty((T, 68), dtype=bool)
        for t, surf in enumerate(surfaces):
            R = rotation(yaws[t], pitches[t])
            all_pts, all_n = surf.points @ R.T, surf.normals @ R.T
            cx, cy = S / 2 + offsets[t][0], S * 0.45 + offsets[t][1]
            cand = np.flatnonzero(all_n[:, 2] > -0.05)  # back-facing points never show
            x, y = all_pts[:, 0].take(cand), all_pts[:, 1].take(cand)
            x *= self.scale  # in place: cx + scale * x, rounded
            x += cx
            y *= self.scale
            y += cy
            px = np.rint(x, out=x).astype(np.int64)
            py = np.rint(y, out=y).astype(np.int64)
            ok = (px >= 0) & (px < S) & (py >= 0) & (py < S)
            sel = cand[ok]
            idx = py[ok] * S + px[ok]
            depth = all_pts[:, 2].take(sel)
            zbuf = np.full(S * S, -np.inf)
            np.maximum.at(zbuf, idx, depth)
            win = depth >= zbuf[idx]
            wpt, wpx = sel[win], idx[win]  # in point order: on a depth tie the later point wins, as ever
            n_w = all_n[wpt]
            ndotl = np.clip(n_w @ ldir, 0, None)
            spec = np.clip(n_w @ half, 0, None) ** 24 * 0.12 * light.intensity
            shade = light.ambient + light.intensity * ndotl
            rgb = surf.albedo[wpt] * shade[:, None] + spec[:, None]

            flat[wpx] = rgb  # pixels not drawn this frame keep stale values: nothing reads them
            covered = np.zeros(S * S, dtype=np.uint8)
            covered[wpx] = 1
            changed = _fill_holes(flat, covered, S)  # fills in place; the pixels that differ from the backdrop
            g[last] = gamma_bg[last]  # back to the backdrop where the last frame drew
            g[changed] = np.clip(flat[changed], 0, 1) ** GAMMA * 255.0
            last = changed
            out: np.ndarray = cv2.GaussianBlur(g.reshape(S, S, 3), (0, 0), 0.6)
            # sensor noise: normal(0, sigma) is sigma * standard_normal, drawn frame after frame from the
            # one stream; in place, so the frame stays in cache
            rng.standard_normal(out=noise)
            noise *= light.noise_sigma
            out += noise
            np.clip(np.rint(out, out=out), 0, 255, out=out)
            frames[t] = out

            lm3 = surf.landmarks @ R.T
            lm2[t] = np.stack([cx + self.scale * lm3[:, 0], cy + self.scale * lm3[:, 1]], 1)
            li = np.clip(np.rint(lm2[t, :, 1]), 0, S - 1).astype(int) * S + np.clip(
                np.rint(lm2[t, :, 0]), 0, S - 1
            ).astype(int)
            visible[t] = lm3[:, 2] >= zbuf[li] - 0.06
        return frames, lm2, visible


def _grid_normals(P: np.ndarray) -> np.ndarray:
    """Outward unit normals of a (rows=latitude, cols=longitude) grid of surface points.

    np.gradient, np.cross and np.linalg.norm written out on the coordinate planes (the same
    operations in the same order, about twice as fast as the generic functions).
    """
    x, y, z = (np.ascontiguousarray(P[..., i]) for i in range(3))
    a0, a1, a2 = _diff(x, 1), _diff(y, 1), _diff(z, 1)  # along longitude
    b0, b1, b2 = _diff(x, 0), _diff(y, 0), _diff(z, 0)  # along latitude
    c0 = a1 * b2 - a2 * b1
    c1 = a2 * b0 - a0 * b2
    c2 = a0 * b1 - a1 * b0
    norm = np.maximum(np.sqrt(c0 * c0 + c1 * c1 + c2 * c2), 1e-12)
    return np.stack([c0 / norm, c1 / norm, c2 / norm], axis=-1)


def _diff(f: np.ndarray, axis: int) -> np.ndarray:
    """np.gradient(f, axis=axis) for unit spacing: central differences inside, one-sided at the ends."""
    g = np.moveaxis(np.empty_like(f), axis, 0)
    v = np.moveaxis(f, axis, 0)
    g[1:-1] = (v[2:] - v[:-2]) / 2.0
    g[0] = v[1] - v[0]
    g[-1] = v[-1] - v[-2]
    return np.moveaxis(g, 0, axis)


def _fill_holes(flat: np.ndarray, covered: np.ndarray, size: int) -> np.ndarray:
    """Fill pixels inside the silhouette that no point landed on, from their covered neighbours.

    `flat` (pixels x 3) is filled in place; returns the mask of the pixels drawn (covered or filled).
    """
    cov = covered.reshape(size, size)
    closed = cv2.morphologyEx(cov, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    holes = ((closed > 0) & (cov == 0)).ravel()
    drawn = covered > 0
    if not holes.any():
        return drawn
    w = cov.astype(np.float64)
    num = cv2.blur(flat.reshape(size, size, 3) * w[..., None], (3, 3)).reshape(-1, 3)
    den = cv2.blur(w, (3, 3)).ravel()
    flat[holes] = num[holes] / np.maximum(den[holes], 1e-9)[:, None]
    return drawn | holes


def make_background(size: int, light: Light, rng: np.random.Generator) -> np.ndarray:
    """A lab backdrop (linear RGB) lit by the same light, with a vignette."""
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    base = np.array([0.30, 0.33, 0.36])
    lx = light.direction[0] / np.linalg.norm(light.direction)
    lit = light.ambient + light.intensity * np.clip(0.55 + 0.6 * lx * xx - 0.2 * yy, 0, None)
    vignette = 1 - 0.5 * (xx**2 + yy**2)
    return (base[None, None] ** 2.2) * (lit * vignette)[..., None] * rng.uniform(0.95, 1.05)


def draw_torso(background: np.ndarray, colour: np.ndarray, light: Light, yaw: float) -> np.ndarray:
    """Shoulders in a shirt at the bottom of the frame, shifted a little with the pose."""
    S = background.shape[0]
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64)
    cx = S / 2 + S * 0.08 * np.sin(np.deg2rad(yaw))
    r = ((xx - cx) / (0.48 * S)) ** 2 + ((yy - 1.18 * S) / (0.38 * S)) ** 2
    torso = r < 1
    nx = np.clip((xx - cx) / (0.48 * S), -1, 1)
    ldir = np.asarray(light.direction) / np.linalg.norm(light.direction)
    shade = light.ambient + light.intensity * np.clip(0.6 + 0.5 * nx * ldir[0], 0, None)
    out = background.copy()
    out[torso] = colour * shade[torso][:, None]
    return out
