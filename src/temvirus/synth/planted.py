"""Planted overlaps: extra images that re-image part of another image's specimen, as real re-imaging does.

Part of :mod:`temvirus.synth`; :func:`plant_overlap` chooses the view and the change (:data:`CHANGES`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from temvirus.synth.render import Exposure
from temvirus.synth.specimen import PIXEL_SIZE_RANGE_NM, Particle, Specimen, _fits

#: kinds of change of the planted re-images (:func:`plant_overlap`), dealt in turn
CHANGES = ("magnification", "exposure", "focus", "cutoff", "padding")


def plant_overlap(specimen: Specimen, source: Exposure, n_source: int, change: str, draw: np.random.Generator):
    """An exposure re-imaging 20-80% of ``source``'s field, with fewer particles, changed as
    real re-imaging changes it (``change``, one of :data:`CHANGES`):

    * ``magnification``: pixel size 0.4-2.5x the source's (at least 1.5x apart);
    * ``exposure``: a monotone, non-linear grey-level change (gamma 0.5-2, new offset and range);
    * ``focus``: defocus 4-8 nm (the source's is 0.8-3 nm);
    * ``cutoff``: particles cut by the border, annotated at the centre of their visible part
      (as a box around it would be);
    * ``padding``: one to four sides of the field padded with black (20-45% of the field).

    All but ``magnification`` change the pixel size by 0.6-1.6x (at least 15%).
    Returns ``(exposure, particles, overlap_fraction, post)`` or None when no such view is
    found: ``post`` turns the rendered pixels into the recorded ones (exposure change,
    padding). ``overlap_fraction`` is the shared area over the smaller of the two fields.
    """
    width, height = source.size_px
    low, high, least = (0.4, 2.5, 1.5) if change == "magnification" else (0.6, 1.6, 1.15)
    for _ in range(400):
        factor = float(np.exp(draw.uniform(np.log(low), np.log(high))))
        if max(factor, 1 / factor) < least:
            continue
        px = round(float(np.clip(source.pixel_size_nm * factor, *PIXEL_SIZE_RANGE_NM)), 4)
        if px == source.pixel_size_nm:
            continue
        w, h = width * px, height * px
        ox = draw.uniform(-0.8 * w, specimen.width_nm - 0.2 * w)
        oy = draw.uniform(-0.8 * h, specimen.height_nm - 0.2 * h)
        shared = max(0.0, min(ox + w, specimen.width_nm) - max(ox, 0)) * max(
            0.0, min(oy + h, specimen.height_nm) - max(oy, 0)
        )
        fraction = shared / min(w * h, specimen.width_nm * specimen.height_nm)
        if not 0.2 <= fraction <= 0.8:
            continue
        keep = (0.0, 0.0, w, h)  # the field not padded (nm, the view's frame)
        if change == "padding":
            sides = draw.uniform(0, 0.45, 4) * (draw.random(4) < 0.6)
            sides[int(draw.integers(4))] = draw.uniform(0.2, 0.45)
            keep = (sides[0] * w / 2, sides[1] * h / 2, w - sides[2] * w / 2, h - sides[3] * h / 2)
        inside = [
            replace(p, points=p.points.copy())
            for p in specimen.particles
            if _fits(p.points - [ox, oy], 0.5 * p.body.r, w, h)
        ]
        inside = [
            p
            for p in inside
            if _fits(p.points - [ox + keep[0], oy + keep[1]], 0.0, keep[2] - keep[0], keep[3] - keep[1])
        ]
        if change == "cutoff":
            cut = [p for p in specimen.particles if _cut_by_border(p, ox, oy, w, h)]
            if not cut:
                continue
            inside += [_visible_part(p, ox, oy, w, h) for p in cut]
        if not 1 <= len(inside) < n_source:
            continue
        view = replace(source, origin=(ox, oy), pixel_size_nm=px)
        if change == "focus":
            view = replace(view, defocus_nm=float(draw.uniform(4.0, 8.0)))
        post = _post(change, keep, px, draw)
        return view, inside, fraction, post
    return None


def _cut_by_border(p: Particle, ox: float, oy: float, w: float, h: float) -> bool:
    """Whether a particle has a point inside the field (origin (ox, oy), w x h nm) but its
    body reaches beyond the border (it is not among the fully seen ones)."""
    local = p.points - [ox, oy]
    seen = (local[:, 0] >= 0) & (local[:, 0] < w) & (local[:, 1] >= 0) & (local[:, 1] < h)
    return bool(seen.any()) and not _fits(local, 0.5 * p.body.r, w, h)


def _visible_part(p: Particle, ox: float, oy: float, w: float, h: float) -> Particle:
    """``p`` annotated on its visible part: a one-point particle at the centre of the box
    around what is seen of its disc, a centre line by its vertices inside the field."""
    local = p.points - [ox, oy]
    if len(local) > 1:
        seen = (local[:, 0] >= 0) & (local[:, 0] < w) & (local[:, 1] >= 0) & (local[:, 1] < h)
        return replace(p, points=p.points[seen])
    (x, y), r = local[0], p.body.r
    centre = [(max(x - r, 0) + min(x + r, w)) / 2 + ox, (max(y - r, 0) + min(y + r, h)) / 2 + oy]
    return replace(p, points=np.array([centre]))


def _post(change: str, keep: tuple[float, float, float, float], px: float, draw: np.random.Generator):
    """The change of recorded grey levels of a planted view (see :func:`plant_overlap`)."""
    gamma, offset, span = (
        float(np.exp(draw.uniform(np.log(0.5), np.log(2.0)))),
        draw.uniform(50, 600),
        draw.uniform(0.4, 1.0),
    )

    def apply(pixels: np.ndarray) -> np.ndarray:
        out = pixels
        if change == "exposure":
            values = pixels.astype(np.float64)
            top = float(values.max()) or 1.0
            out = np.rint(offset + span * top * (values / top) ** gamma).clip(0, 65535).astype(pixels.dtype)
        if change == "padding":
            out = np.zeros_like(pixels)
            c0, r0, c1, r1 = (int(round(v / px)) for v in keep)
            out[r0:r1, c0:c1] = pixels[r0:r1, c0:c1]
        return out

    return apply
