"""Image formation of the synthetic data: a specimen seen through an exposure, as uint16 counts.

Part of :mod:`temvirus.synth`; :func:`render` (stain, defocus, grain, shot noise, camera).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from temvirus.synth.plan import MICROSCOPES
from temvirus.synth.specimen import Body, Specimen


def _mtf(frequency: float, sigma_nm: float) -> float:
    """Contrast left of a pattern of ``frequency`` (1/nm) by a Gaussian blur of ``sigma_nm``."""
    return float(np.exp(-2 * (np.pi * sigma_nm * frequency) ** 2))


def _distance_to_line(line: np.ndarray, xs: np.ndarray, ys: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Distance (nm) of window pixels to a dense polyline, and the arc length of the nearest point.

    Each segment only updates the pixels within ``reach`` nm of its bounding box (farther
    pixels keep an infinite distance), so the cost follows the line, not the window.
    """
    seg = line[::4] if len(line) > 8 else line
    if len(seg) < 2 or not np.array_equal(seg[-1], line[-1]):
        seg = np.vstack([seg, line[-1:]])
    best = np.full((len(ys), len(xs)), np.inf, dtype=np.float32)
    along = np.zeros_like(best)
    s0 = 0.0
    for (ax, ay), (bx, by) in zip(seg[:-1], seg[1:]):
        dx, dy = bx - ax, by - ay
        length = math.hypot(dx, dy) or 1e-9
        c0, c1 = np.searchsorted(xs, [min(ax, bx) - reach, max(ax, bx) + reach])
        r0, r1 = np.searchsorted(ys, [min(ay, by) - reach, max(ay, by) + reach])
        if c1 > c0 and r1 > r0:
            px_, py_ = xs[c0:c1][None, :] - ax, ys[r0:r1][:, None] - ay
            t = np.clip((px_ * dx + py_ * dy) / (length * length), 0, 1)
            d = np.hypot(px_ - t * dx, py_ - t * dy).astype(np.float32)
            block = best[r0:r1, c0:c1]
            closer = d < block
            block[closer] = d[closer]
            along[r0:r1, c0:c1][closer] = (s0 + t * length)[closer]
        s0 += length
    return best, along


def _body_map(b: Body, xs: np.ndarray, ys: np.ndarray, sigma_nm: float) -> np.ndarray:
    """Stain-thickness change (float32) of one body on a window of pixel centres (nm)."""
    if b.shape == "filament":
        d, s = _distance_to_line(b.line, xs, ys, reach=1.6 * b.r + 4 + 3 * sigma_nm)
        rho, edge_scale, u, v, theta = d / b.r, b.r, s, d, None
    else:
        ca, sa = math.cos(b.angle), math.sin(b.angle)
        dx, dy = (xs - b.x).astype(np.float32)[None, :], (ys - b.y).astype(np.float32)[:, None]
        u, v = dx * ca + dy * sa, dy * ca - dx * sa
        radius = np.hypot(u, v)
        unit = (u + 1j * v) / np.maximum(radius, 1e-6)  # e^(i theta): harmonics without trigonometry
        radial, power = np.ones_like(u), unit
        for _k, a, p in b.harmonics:
            power = power * unit  # k runs 2, 3, ...
            radial += a * (power * complex(math.cos(p), math.sin(p))).real
        needs_angle = b.shape == "hexagon" or b.texture in ("spokes", "star") or b.fringe
        theta = np.angle(unit) if needs_angle else None
        if b.shape == "oval":
            a_, b_ = b.r * b.aspect, b.r
            rho = ((np.abs(u) / a_) ** 2.3 + (np.abs(v) / b_) ** 2.3) ** (1 / 2.3) / radial
            edge_scale = b.r
        elif b.shape == "brick":
            a_, b_ = b.r * b.aspect * 0.95, b.r * 0.95
            rho = ((np.abs(u) / a_) ** 4 + (np.abs(v) / b_) ** 4) ** 0.25 / radial
            edge_scale = b.r
        else:
            if b.shape == "hexagon":
                facet = np.cos(np.pi / 6) / np.cos(np.mod(theta - b.phase, np.pi / 3) - np.pi / 6)
                radial = radial * (0.55 + 0.45 * facet) * 1.03
            rho = radius / (b.r * radial)
            edge_scale = b.r
    edge = (rho - 1) * edge_scale  # nm outside the boundary (negative inside)
    inside = 1 / (1 + np.exp(np.clip(edge / 2.0, -30, 30)))
    dome = np.sqrt(np.clip(1 - rho * rho, 0, 1))
    body = inside * (0.55 + 0.45 * dome) * (1 + _texture(b, u, v, rho, theta, sigma_nm))
    rim_width = max(0.1 * b.r, 2.0)
    rim = np.exp(-(((edge - 0.6 * rim_width) / rim_width) ** 2))
    out = b.rim * rim - b.contrast * body
    if b.core:  # stain inside a penetrated particle: dark centre within a light shell
        out += b.core * b.contrast * inside / (1 + np.exp(np.clip((rho - 0.72) / 0.06, -30, 30)))
    if b.fringe:
        n = max(6, round(2 * np.pi * b.r / 9))
        spikes = 0.5 + 0.5 * np.cos(n * theta + b.phase) * _mtf(n / (2 * np.pi * b.r), sigma_nm)
        band = (edge > -1) & (edge < b.fringe)
        out = out - 0.35 * b.contrast * spikes * band * np.exp(-edge.clip(0) / b.fringe)
    return out.astype(np.float32)


def _texture(b: Body, u, v, rho, theta, sigma_nm: float):
    """Relative modulation of the stain a body displaces: its surface pattern."""
    t, depth = b.texture, b.depth
    if t == "smooth" or depth == 0:
        return 0.0
    if t == "lattice":  # hexagonal array of capsomeres
        k = 2 * np.pi / b.period
        angles = b.phase + np.array([0, np.pi / 3, 2 * np.pi / 3])
        wave = sum(np.cos(k * (u * math.cos(a) + v * math.sin(a)) + i * b.phase) for i, a in enumerate(angles)) / 3
        return depth * _mtf(1 / b.period, sigma_nm) * wave * (0.4 + 0.6 * np.clip(1 - rho, 0, 1) ** 0.3)
    if t == "knobs":
        wave = sum(
            np.cos(kx * u + ky * v + p) * _mtf(math.hypot(kx, ky) / (2 * np.pi), sigma_nm) for kx, ky, p in b.waves
        )
        return depth * wave / 2.5
    if t == "striations":
        k, a = 2 * np.pi / b.period, 0.45
        weave = np.cos(k * (u * math.cos(a) + v * math.sin(a))) * np.cos(k * (u * math.cos(a) - v * math.sin(a)))
        return 0.3 * _mtf(1.4 / b.period, sigma_nm) * weave
    if t == "spokes":
        band = np.exp(-(((rho - 0.62) / 0.2) ** 2))
        hub = np.exp(-(((rho - 0.3) / 0.08) ** 2))
        n = 13
        return depth * (band * np.cos(n * theta + b.phase) * _mtf(n / (2 * np.pi * 0.6 * b.r), sigma_nm) - 1.2 * hub)
    if t == "star":
        star = rho / (0.55 + 0.22 * np.cos(5 * theta + b.phase))
        return depth * (0.5 - 1 / (1 + np.exp(-(star - 1) * 8))) * 2
    if t in ("cups", "granules"):
        dots = np.zeros_like(u)
        for su, sv, ss in b.spots:
            ss = math.hypot(ss, sigma_nm)
            dots += np.exp(-((u - su) ** 2 + (v - sv) ** 2) / (2 * ss * ss))
        return -depth * dots if t == "cups" else -0.6 * dots
    if t == "fringe":
        return depth * _mtf(1 / 12, sigma_nm) * np.cos(2 * np.pi * (u + v) / 12 + b.phase) * (rho < 1)
    if t == "helix":
        core = np.exp(-((rho / 0.25) ** 2))
        return depth * (_mtf(1 / b.period, sigma_nm) * np.cos(2 * np.pi * u / b.period) - 1.5 * core)
    raise ValueError(f"unknown texture {t!r}")


_SQRT3 = math.sqrt(3.0)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64, wrapping)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _lattice_values(key: int, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """Unit-variance uniform values of integer lattice nodes (iy rows, ix columns), a pure hash of
    ``key`` and the node: any window of the lattice gives the same values wherever it is cut."""
    with np.errstate(over="ignore"):
        zx = _mix64(np.uint64(key) + ix.astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        z = _mix64(zx[None, :] + iy.astype(np.int64).astype(np.uint64)[:, None] * np.uint64(0xC2B2AE3D27D4EB4F))
    return ((z >> np.uint64(11)).astype(np.float64) * 2.0**-53 - 0.5) * (2 * _SQRT3)


def _box_weights(x0_nm: float, step_nm: float, n: int, spacing_nm: float):
    """Sparse ``(n, m)`` weights and first node ``j0``: pixel ``k`` (``[x0 + k step, x0 + (k+1) step]`` nm)
    is the average over its width of the piecewise-linear interpolant of lattice nodes ``j0 .. j0+m-1``
    (node ``j`` at ``j * spacing`` nm). Exact area averaging: a coarse pixel sees the grain blurred."""
    from scipy.sparse import csr_matrix

    a = (x0_nm + np.arange(n) * step_nm) / spacing_nm
    b = a + step_nm / spacing_nm
    width = int(math.ceil(step_nm / spacing_nm)) + 3
    j = np.floor(a).astype(np.int64)[:, None] - 1 + np.arange(width)[None, :]

    def ramp(t):  # integral of the hat function from -1 to t
        t = np.clip(t, -1.0, 1.0)
        return np.where(t < 0, 0.5 * (t + 1) ** 2, 1 - 0.5 * (1 - t) ** 2)

    w = (ramp(b[:, None] - j) - ramp(a[:, None] - j)) / (b - a)[:, None]
    j0 = int(j.min())
    matrix = csr_matrix(
        (w.ravel(), (np.repeat(np.arange(n), width), (j - j0).ravel())), shape=(n, int(j.max()) - j0 + 1)
    )
    return matrix, j0


def stain_grain(specimen: Specimen, exposure: Exposure) -> np.ndarray:
    """The specimen's fine stain grain (float32) as ``exposure`` records it.

    The grain is fixed on the specimen: octaves of value noise on nm lattices (hashed from
    ``specimen.grain_key``), so two exposures of one area see the same grain; each pixel
    averages it over its area (finer than a pixel it blurs away). Octaves whose lattice is
    finer than a quarter pixel are left out (averaged to a few percent of their contrast).
    """
    px = exposure.pixel_size_nm
    width, height = exposure.size_px
    ox, oy = exposure.origin
    out = np.zeros((height, width), dtype=np.float64)
    for octave, (spacing, amplitude) in enumerate(specimen.grain):
        if spacing < px / 4:
            continue
        wx, jx = _box_weights(ox, px, width, spacing)
        wy, jy = _box_weights(oy, px, height, spacing)
        values = _lattice_values(
            specimen.grain_key + 7919 * octave, np.arange(jx, jx + wx.shape[1]), np.arange(jy, jy + wy.shape[1])
        )
        out += amplitude * (wx @ (wy @ values).T).T
    return out.astype(np.float32)


@dataclass(frozen=True)
class Exposure:
    """How one image records a specimen: its field in specimen nm, pixels and optics."""

    origin: tuple[float, float]  # specimen nm at the image's top-left corner
    pixel_size_nm: float
    size_px: tuple[int, int]
    microscope: str
    binning: int = 1
    defocus_nm: float | None = None  # None: drawn at rendering (0.8-3 nm)


def render(specimen: Specimen, exposure: Exposure, draw: np.random.Generator) -> np.ndarray:
    """The uint16 image of ``specimen`` seen through ``exposure``."""
    px = exposure.pixel_size_nm
    width, height = exposure.size_px
    ox, oy = exposure.origin
    xs = ox + (np.arange(width, dtype=np.float64) + 0.5) * px
    ys = oy + (np.arange(height, dtype=np.float64) + 0.5) * px
    defocus_nm = float(np.exp(draw.uniform(np.log(0.8), np.log(3.0))))
    if exposure.defocus_nm is not None:
        defocus_nm = exposure.defocus_nm
    sigma_px = max(defocus_nm / px, 0.45)
    sigma_nm = math.hypot(sigma_px * px, 0.5 * px)
    stain = _smooth_stain(specimen, xs, ys)
    for body in [p.body for p in specimen.particles] + specimen.debris:
        reach = body.extent + 3 * sigma_px * px
        c0, c1 = np.searchsorted(xs, [body.x - reach, body.x + reach])
        r0, r1 = np.searchsorted(ys, [body.y - reach, body.y + reach])
        if c1 <= c0 or r1 <= r0:
            continue
        if body.r / px < 0.5:  # below a pixel: lost in the noise
            continue
        patch = _body_map(body, xs[c0:c1], ys[r0:r1], sigma_nm)
        stain[r0:r1, c0:c1] += gaussian_filter(patch, sigma_px, mode="constant", truncate=3.0)
    stain += stain_grain(specimen, exposure)
    mu = draw.uniform(1.1, 1.5)
    _, _, bits = MICROSCOPES[exposure.microscope]
    full = 2**bits - 1
    electrons_per_px = float(np.clip(draw.uniform(150, 600) * px * px, 40, 6000))
    signal = np.clip(stain, 0, None, out=stain)  # in place from here on: images are large
    signal *= -mu
    np.exp(signal, out=signal)
    signal *= electrons_per_px
    noise = draw.standard_normal(signal.shape, dtype=np.float32)
    noise *= np.sqrt(signal)
    signal += noise
    signal *= draw.uniform(0.6, 0.9) * full / max(float(np.percentile(signal[::7, ::7], 99.9)), 1.0)  # exposure
    signal += 100
    return np.clip(np.rint(signal, out=signal), 0, full, out=signal).astype(np.uint16)


def _smooth_stain(s: Specimen, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Base stain + gradient + broad bumps + pools around particles, as one low-rank product."""
    gx, gy = s.gradient
    cols = [np.ones_like(ys), ys / s.height_nm]
    rows = [s.base + gx * xs / s.width_nm, np.full_like(xs, gy)]
    for x, y, sigma, amp in s.bumps:
        cols.append(np.exp(-((ys - y) ** 2) / (2 * sigma**2)))
        rows.append(amp * np.exp(-((xs - x) ** 2) / (2 * sigma**2)))
    centres = np.array([[p.body.x, p.body.y] for p in s.particles]).reshape(-1, 2)
    radii = np.array([p.body.r for p in s.particles])
    near = np.hypot(*(centres[:, None] - centres[None]).transpose(2, 0, 1)) < 5 * radii[:, None]
    crowd = near.sum(axis=1)  # pools of packed particles merge instead of adding up
    for p, n in zip(s.particles, crowd):
        sigma = 1.1 * p.body.r * (1.6 if p.body.shape == "filament" else 1.0) + 25
        for x, y in p.points:
            cols.append(np.exp(-((ys - y) ** 2) / (2 * sigma**2)))
            rows.append(s.pool / (len(p.points) * n) ** 0.5 * np.exp(-((xs - x) ** 2) / (2 * sigma**2)))
    return (np.array(cols, dtype=np.float32).T @ np.array(rows, dtype=np.float32)).astype(np.float32)
