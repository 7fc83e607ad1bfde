"""A parametric face: identity (shape, colours), FACS-driven feature geometry, albedo and relief.

Everything is expressed in *face coordinates* (u, v): u across the face (-1 image-left .. +1
image-right when frontal), v down the face (-1 crown .. +1 chin), the frontal projection of a
head ellipsoid. Expressions move features in these coordinates, so the texture, the relief and
the 68 landmarks all come from the same numbers and stay consistent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

# Skin albedos (sRGB, 0..1) spanning light to dark tones; hair and iris palettes.
SKIN_TONES = np.array(
    [
        [0.93, 0.78, 0.68],
        [0.88, 0.70, 0.58],
        [0.80, 0.62, 0.48],
        [0.72, 0.54, 0.40],
        [0.62, 0.44, 0.32],
        [0.52, 0.36, 0.25],
        [0.42, 0.28, 0.19],
        [0.34, 0.22, 0.15],
    ]
)
HAIR_COLOURS = np.array(
    [[0.08, 0.06, 0.05], [0.20, 0.13, 0.08], [0.35, 0.24, 0.14], [0.55, 0.42, 0.25], [0.45, 0.45, 0.45]]
)
IRIS_COLOURS = np.array([[0.25, 0.15, 0.08], [0.35, 0.25, 0.12], [0.25, 0.35, 0.45], [0.30, 0.40, 0.30]])
SHIRT_COLOURS = np.array([[0.20, 0.25, 0.45], [0.45, 0.15, 0.15], [0.25, 0.40, 0.25], [0.30, 0.30, 0.30]])


def _linear(srgb: np.ndarray) -> np.ndarray:
    return np.asarray(srgb, dtype=np.float64) ** 2.2


@dataclass(frozen=True)
class Identity:
    """What makes one synthetic subject look like themselves."""

    head_a: float  # half-width of the head ellipsoid
    head_b: float  # half-height
    head_c: float  # half-depth
    jaw_taper: float  # narrowing of the lower face
    eye_dx: float
    eye_y: float
    eye_w: float
    brow_y: float
    brow_thick: float
    nose_tip_y: float
    nose_height: float
    mouth_y: float
    mouth_w: float
    lip_thick: float
    hairline: float  # v of the hairline at the centre
    skin: np.ndarray  # linear RGB albedo
    hair: np.ndarray
    iris: np.ndarray
    shirt: np.ndarray
    lip_tint: np.ndarray
    au_gain: dict[int, float]


def sample_identity(rng: np.random.Generator, tone_index: int | None = None) -> Identity:
    """A random but plausible face; tone_index picks the skin tone (cycled over subjects)."""
    tone = (
        SKIN_TONES[tone_index % len(SKIN_TONES)]
        if tone_index is not None
        else SKIN_TONES[rng.integers(len(SKIN_TONES))]
    )
    skin = np.clip(tone * rng.uniform(0.95, 1.05, 3), 0, 1)
    return Identity(
        head_a=rng.uniform(0.72, 0.84),
        head_b=1.0,
        head_c=rng.uniform(0.80, 0.92),
        jaw_taper=rng.uniform(0.15, 0.35),
        eye_dx=rng.uniform(0.33, 0.39),
        eye_y=rng.uniform(-0.16, -0.09),
        eye_w=rng.uniform(0.12, 0.145),
        brow_y=rng.uniform(-0.34, -0.28),
        brow_thick=rng.uniform(0.035, 0.055),
        nose_tip_y=rng.uniform(0.18, 0.26),
        nose_height=rng.uniform(0.16, 0.24),
        mouth_y=rng.uniform(0.47, 0.55),
        mouth_w=rng.uniform(0.19, 0.25),
        lip_thick=rng.uniform(0.035, 0.055),
        hairline=rng.uniform(-0.62, -0.50),
        skin=_linear(skin),
        hair=_linear(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]),
        iris=_linear(IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))]),
        shirt=_linear(SHIRT_COLOURS[rng.integers(len(SHIRT_COLOURS))]),
        lip_tint=np.array([1.0, rng.uniform(0.55, 0.7), rng.uniform(0.55, 0.7)]),
        au_gain={au: float(rng.uniform(0.8, 1.1)) for au in (1, 2, 4, 5, 6, 7, 9, 12, 15, 16, 20, 23, 26)},
    )


@dataclass(frozen=True)
class Features:
    """Feature geometry for one frame: identity plus the action units' displacements."""

    eye_open_up: float  # upper lid height above the eye centre line
    eye_open_lo: float  # lower lid depth below it
    brow_inner_dv: float  # vertical shift of the inner brow end (negative: raised)
    brow_outer_dv: float
    brow_inner_du: float  # horizontal shift of the inner end towards the midline (positive)
    corner_dv: float  # mouth corner vertical shift (negative: up)
    corner_du: float  # mouth corner outward shift
    upper_lip_dv: float  # upper lip raise (negative)
    lower_lip_dv: float  # lower lip depression (positive)
    jaw_open: float  # gap between the lips from the jaw drop
    lip_thin: float  # lip thickness factor (AU23 tightens)
    cheek_raise: float  # AU6 cheek bulge and lower-lid push
    nose_wrinkle: float  # AU9
    brow_furrow: float  # AU4 vertical lines between the brows


def features_from_aus(aus: dict[int, float], gain: dict[int, float]) -> Features:
    """Translate AU intensities (0..1) into feature displacements in face units."""
    a = {au: aus.get(au, 0.0) * gain.get(au, 1.0) for au in aus}
    g = lambda au: a.get(au, 0.0)  # noqa: E731
    return Features(
        eye_open_up=0.045 * (1 + 0.9 * g(5) - 0.45 * g(7) - 0.25 * g(6) - 0.2 * g(9)),
        eye_open_lo=0.030 * (1 + 0.3 * g(5) - 0.5 * g(7) - 0.55 * g(6)),
        brow_inner_dv=-0.09 * g(1) + 0.06 * g(4) + 0.03 * g(9),
        brow_outer_dv=-0.085 * g(2) + 0.015 * g(4) + 0.02 * g(9),
        brow_inner_du=0.035 * g(4),
        corner_dv=-0.075 * g(12) + 0.07 * g(15) + 0.01 * g(20),
        corner_du=0.045 * g(12) + 0.07 * g(20) - 0.05 * g(23),
        upper_lip_dv=-0.03 * g(9),
        lower_lip_dv=0.045 * g(16),
        jaw_open=0.17 * g(26),
        lip_thin=1 - 0.55 * g(23),
        cheek_raise=g(6),
        nose_wrinkle=g(9),
        brow_furrow=g(4),
    )


NEUTRAL = features_from_aus({}, {})


# ---------------------------------------------------------------- feature curves in (u, v)


def _brow_polyline(ident: Identity, f: Features, side: int, n: int = 9) -> np.ndarray:
    """Points along one eyebrow (side -1: image-left, +1: image-right), inner to outer."""
    inner = np.array([side * (ident.eye_dx - 0.2 - f.brow_inner_du), ident.brow_y + 0.03 + f.brow_inner_dv])
    outer = np.array([side * (ident.eye_dx + 0.2), ident.brow_y + 0.04 + f.brow_outer_dv])
    mid = (inner + outer) / 2 + np.array([0.0, -0.05])  # the arch
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * inner + 2 * (1 - t) * t * mid + t**2 * outer


def _lid(ident: Identity, f: Features, side: int, u: np.ndarray, upper: bool) -> np.ndarray:
    """v of the upper or lower eyelid edge at u (parabola through the eye corners)."""
    ex = side * ident.eye_dx
    s = np.clip(1 - ((u - ex) / ident.eye_w) ** 2, 0, None)
    cheek = 0.012 * f.cheek_raise
    if upper:
        return ident.eye_y - f.eye_open_up * s
    return ident.eye_y + f.eye_open_lo * s - cheek * s


def _mouth(ident: Identity, f: Features) -> tuple[float, float]:
    """Mouth centre v and half-width after the action units."""
    return ident.mouth_y, ident.mouth_w + f.corner_du


def _mouth_lines(ident: Identity, f: Features, u: np.ndarray) -> dict[str, np.ndarray]:
    """v of the four lip contours at u, and t = u / half-width."""
    my, mw = _mouth(ident, f)
    t = np.clip(u / mw, -1, 1)
    bulge = np.sqrt(np.clip(1 - t**2, 0, 1))
    line = my + f.corner_dv * t**2 - 0.3 * f.corner_dv * (1 - t**2) * 0.3
    gap_up = 0.3 * f.jaw_open * bulge + (-f.upper_lip_dv) * bulge
    gap_lo = 0.7 * f.jaw_open * bulge + f.lower_lip_dv * bulge
    upper_in = line - gap_up
    lower_in = line + gap_lo
    th = ident.lip_thick * f.lip_thin
    bow = 0.012 * np.exp(-((u / (0.35 * mw)) ** 2))  # cupid's bow dip
    upper_out = upper_in - th * 0.85 * bulge + bow * bulge
    lower_out = lower_in + th * 1.15 * bulge
    return {
        "t": t,
        "line": line,
        "upper_in": upper_in,
        "lower_in": lower_in,
        "upper_out": upper_out,
        "lower_out": lower_out,
    }


# ---------------------------------------------------------------- relief and albedo


def _gauss(u: np.ndarray, v: np.ndarray, cu: float, cv: float, su: float, sv: float) -> np.ndarray:
    return np.exp(-(((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2))


def relief(u: np.ndarray, v: np.ndarray, ident: Identity, f: Features) -> np.ndarray:
    """Outward displacement of the face surface (nose, brow ridge, sockets, cheeks, lips, chin)."""
    d = np.zeros_like(u)
    # nose: a ridge from between the eyes to the tip, widening downwards, plus the tip and alae
    top, tip = ident.eye_y - 0.02, ident.nose_tip_y
    along = np.clip((v - top) / (tip - top), 0, 1)
    width = 0.05 + 0.06 * along
    in_span = (v > top - 0.05) & (v < tip + 0.05)
    d += np.where(in_span, ident.nose_height * (0.35 + 0.65 * along) * np.exp(-((u / width) ** 2)), 0)
    d *= np.clip(1 - np.clip(v - tip, 0, None) / 0.05, 0, 1)
    d += 0.05 * _gauss(u, v, 0, tip, 0.07, 0.05)
    for s in (-1, 1):
        d += 0.04 * _gauss(u, v, s * 0.08, tip + 0.02, 0.05, 0.04)
        d -= 0.07 * _gauss(u, v, s * ident.eye_dx, ident.eye_y, 0.14, 0.08)  # eye sockets
        d += 0.03 * _gauss(u, v, s * ident.eye_dx, ident.brow_y + 0.02, 0.18, 0.05)  # brow ridge
        d += (0.025 + 0.03 * f.cheek_raise) * _gauss(u, v, s * 0.42, 0.22 - 0.04 * f.cheek_raise, 0.15, 0.12)
    m = _mouth_lines(ident, f, u)
    _, mw = _mouth(ident, f)
    lips = (v > m["upper_out"] - 0.02) & (v < m["lower_out"] + 0.02) & (np.abs(u) < mw + 0.02)
    d += np.where(lips, 0.025, 0.0)
    d += 0.03 * _gauss(u, v, 0, 0.88, 0.18, 0.08)  # chin
    return d


def _dist_to_polyline(u: np.ndarray, v: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each (u, v) to a polyline, and the position (0..1) of the nearest point on it."""
    best = np.full(u.shape, np.inf)
    pos = np.zeros(u.shape)
    n = len(pts) - 1
    for k in range(n):
        p, q = pts[k], pts[k + 1]
        dq = q - p
        L2 = float(dq @ dq)
        t = np.clip(((u - p[0]) * dq[0] + (v - p[1]) * dq[1]) / L2, 0, 1)
        dist = np.hypot(u - (p[0] + t * dq[0]), v - (p[1] + t * dq[1]))
        closer = dist < best
        best = np.where(closer, dist, best)
        pos = np.where(closer, (k + t) / n, pos)
    return best, pos


def _box(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    """Indices of points inside a (u, v) box: each feature is painted only where it can be."""
    return np.flatnonzero((u > u0) & (u < u1) & (v > v0) & (v < v1))


def albedo(u: np.ndarray, v: np.ndarray, ident: Identity, f: Features) -> np.ndarray:
    """Linear RGB albedo of the face at (u, v): skin, brows, eyes, lips, mouth interior, hairline."""
    col = np.broadcast_to(ident.skin, u.shape + (3,)).copy()
    shade = np.ones(u.shape)
    for s in (-1, 1):
        ex = s * ident.eye_dx
        k = _box(u, v, ex - 0.42, ex + 0.42, ident.eye_y - 0.36, ident.eye_y + 0.3)
        uk, vk = u[k], v[k]
        sk = 1 - 0.18 * _gauss(uk, vk, ex, ident.eye_y, 0.17, 0.09)  # darker orbit
        up, lo = _lid(ident, f, s, uk, True), _lid(ident, f, s, uk, False)
        ck = col[k]
        inside = (np.abs(uk - ex) < ident.eye_w) & (vk > up) & (vk < lo)
        r = np.hypot(uk - ex, vk - ident.eye_y)
        eye = np.where((r < 0.048)[:, None], ident.iris, np.array([0.80, 0.78, 0.74]))
        eye = np.where((r < 0.02)[:, None], 0.01, eye)
        ck = np.where(inside[:, None], eye, ck)
        lash = (np.abs(uk - ex) < ident.eye_w * 1.05) & (vk > up - 0.016) & (vk <= up + 0.004)
        ck = np.where(lash[:, None], ident.hair * 0.5, ck)
        sk *= np.where((np.abs(uk - ex) < ident.eye_w * 0.95) & (vk >= lo) & (vk < lo + 0.01), 0.7, 1.0)
        crease = (np.abs(uk - ex) < ident.eye_w * 0.9) & (np.abs(vk - (ident.eye_y - f.eye_open_up - 0.035)) < 0.008)
        sk *= np.where(crease, 0.85, 1.0)
        dist, pos = _dist_to_polyline(uk, vk, _brow_polyline(ident, f, s))
        thick = ident.brow_thick * (1.0 - 0.45 * pos)
        brow = np.clip((thick - dist) / 0.012 + 0.5, 0, 1)[:, None]
        ck = ck * (1 - brow) + ident.hair * 0.8 * brow
        if f.cheek_raise > 0.05:  # AU6 crow's feet
            cf = _gauss(uk, vk, s * (ident.eye_dx + ident.eye_w + 0.05), ident.eye_y, 0.03, 0.05)
            sk *= 1 - 0.25 * f.cheek_raise * cf * (np.sin(vk * 160) > 0.3)
        col[k], shade[k] = ck, shade[k] * sk
    if f.brow_furrow > 0.05 or f.nose_wrinkle > 0.05:  # AU4 furrows, AU9 nose wrinkles
        k = _box(u, v, -0.2, 0.2, ident.brow_y - 0.1, ident.eye_y + 0.2)
        uk, vk = u[k], v[k]
        sk = np.ones(len(k))
        for s in (-1, 1):
            line = np.exp(-(((uk - s * 0.06) / 0.010) ** 2)) * _gauss(uk, vk, 0, ident.brow_y + 0.06, 1, 0.07)
            sk *= 1 - 0.5 * f.brow_furrow * line
        bridge = _gauss(uk, vk, 0, ident.eye_y + 0.06, 0.09, 0.05)
        sk *= 1 - 0.45 * f.nose_wrinkle * bridge * (np.sin(vk * 140) > 0.2)
        shade[k] *= sk
    k = _box(u, v, -0.2, 0.2, ident.nose_tip_y - 0.05, ident.nose_tip_y + 0.12)
    for s in (-1, 1):  # nostrils
        shade[k] *= 1 - 0.75 * _gauss(u[k], v[k], s * 0.065, ident.nose_tip_y + 0.045, 0.03, 0.016)
    _, mw = _mouth(ident, f)
    k = _box(u, v, -mw - 0.02, mw + 0.02, ident.mouth_y - 0.2, ident.mouth_y + 0.3)
    uk, vk = u[k], v[k]
    m = _mouth_lines(ident, f, uk)
    in_u = np.abs(uk) < mw
    ck = col[k]
    lips = in_u & (vk > m["upper_out"]) & (vk < m["lower_out"])
    ck = np.where(lips[:, None], ident.skin * ident.lip_tint * 0.75, ck)
    opening = in_u & (vk > m["upper_in"]) & (vk < m["lower_in"])
    cavity = np.where(
        (vk < m["upper_in"] + 0.03)[:, None], np.array([0.75, 0.72, 0.62]), np.array([0.08, 0.015, 0.015])
    )
    ck = np.where(opening[:, None], cavity, ck)
    seam = in_u & (np.abs(vk - (m["upper_in"] + m["lower_in"]) / 2) < 0.008 + 0.5 * (m["lower_in"] - m["upper_in"]))
    shade[k] *= np.where(seam & ~opening, 0.55, 1.0)
    col[k] = ck
    hair = v < ident.hairline + 0.25 * u**2
    col[hair] = ident.hair
    return col * shade[:, None]


# ---------------------------------------------------------------- landmarks


def landmarks_uv(ident: Identity, f: Features) -> np.ndarray:
    """The 68 iBUG landmarks in face coordinates (image-left first, as the iBUG scheme orders them)."""
    pts: list[np.ndarray] = []
    phi = np.linspace(0, np.pi, 17)
    jaw_v = -0.02 + 0.92 * np.sin(phi)  # the jaw drop moves these through the geometry
    jaw_u = -np.cos(phi) * (0.93 - 0.25 * np.sin(phi) ** 2)
    pts.append(np.stack([jaw_u, jaw_v], 1))
    for s in (-1, 1):
        b = _brow_polyline(ident, f, s, n=5)
        pts.append(b[::-1] if s == -1 else b)  # brows run image-left to image-right
    tip = ident.nose_tip_y
    bridge_v = np.linspace(ident.eye_y - 0.01, tip, 4)
    pts.append(np.stack([np.zeros(4), bridge_v], 1))
    pts.append(
        np.array([[-0.1, tip + 0.05], [-0.05, tip + 0.065], [0.0, tip + 0.07], [0.05, tip + 0.065], [0.1, tip + 0.05]])
    )
    for s in (-1, 1):
        ex, w = s * ident.eye_dx, ident.eye_w
        us = np.array([ex - w, ex - w / 3, ex + w / 3, ex + w])
        up = _lid(ident, f, s, us, True)
        lo = _lid(ident, f, s, us, False)
        if s == -1:  # outer corner, upper, inner corner, lower (iBUG 36..41)
            pts.append(
                np.array(
                    [[us[0], up[0]], [us[1], up[1]], [us[2], up[2]], [us[3], up[3]], [us[2], lo[2]], [us[1], lo[1]]]
                )
            )
        else:  # inner corner, upper, outer corner, lower (42..47)
            pts.append(
                np.array(
                    [[us[0], up[0]], [us[1], up[1]], [us[2], up[2]], [us[3], up[3]], [us[2], lo[2]], [us[1], lo[1]]]
                )
            )
    _, mw = _mouth(ident, f)
    uo = np.array([-1, -0.6, -0.25, 0, 0.25, 0.6, 1]) * mw
    m = _mouth_lines(ident, f, uo)
    corner_v = m["line"][[0, -1]]
    outer = [[uo[0], corner_v[0]]] + [[uo[k], m["upper_out"][k]] for k in range(1, 6)] + [[uo[6], corner_v[1]]]
    outer += [[uo[k], m["lower_out"][k]] for k in (5, 4, 3, 2, 1)]
    pts.append(np.array(outer))
    ui = np.array([-0.85, -0.35, 0, 0.35, 0.85]) * mw
    mi = _mouth_lines(ident, f, ui)
    inner = [[ui[0], mi["line"][0]]] + [[ui[k], mi["upper_in"][k]] for k in (1, 2, 3)] + [[ui[4], mi["line"][4]]]
    inner += [[ui[k], mi["lower_in"][k]] for k in (3, 2, 1)]
    pts.append(np.array(inner))
    out = np.concatenate(pts, 0)
    if out.shape != (68, 2):
        raise RuntimeError(f"landmark layout bug: {out.shape}")
    return out


def five_points(lm68: np.ndarray) -> np.ndarray:
    """ArcFace's 5 points from the 68: eye centres, nose tip, mouth corners (image-left first)."""
    return np.stack([lm68[36:42].mean(0), lm68[42:48].mean(0), lm68[30], lm68[48], lm68[54]])


def with_gain(ident: Identity, scale: float) -> Identity:
    """The same identity with every AU gain scaled (per-take expressiveness)."""
    return replace(ident, au_gain={k: v * scale for k, v in ident.au_gain.items()})
