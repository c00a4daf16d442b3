"""Overlap removal: find images of one class that show the same field, keep one per group.

Method (all pairs of images within a class):

1. **Common scale.** Images are area-averaged, using their recorded pixel sizes, onto a
   pyramid of pixel sizes ``coarse_nm * 2**k`` nm, so two views of one field line up pixel
   for pixel. An image's own level is the finest that shows its whole field in at most
   ``max_side_px`` pixels without upsampling; a pair is compared at the coarser of the two
   images' own levels. Blocks of constant intensity (black padding) are marked invalid.
2. **Band-pass.** Masked difference of Gaussians (``lowpass_px`` minus ``highpass_px``
   pixels): removes illumination gradients and pixel noise; then zero mean, unit variance
   over the valid pixels, zero elsewhere.
3. **Registration (coarse).** Phase correlation of the zero-padded (no wrap-around),
   Tukey-windowed images; each image's FFT is computed once per level. The ``peaks`` highest
   peaks among the shifts whose overlap is large enough are candidate translations, each
   scored by the normalised cross-correlation (Pearson) over the pixels valid in both (masked
   NCC). The best gives ``ncc``, ``overlap_fraction`` (overlap / valid field of the smaller
   image) and the overlap area; the best of the other candidates gives ``runner_up`` (how well
   a wrong shift does: same-class particles look alike, so a lone coincidence of two
   particles scores high but not much higher than other coincidences).
4. **Verification (fine).** Pairs with ``ncc >= screen_ncc`` are checked ``2**fine_levels``
   times finer (not finer than the images' own pixels): the overlap region of both images is
   resampled, band-passed with the same pixel sigmas (so the smooth stain and halos that make
   unrelated images look alike at the coarse scale are gone), the shift refined by phase
   correlation within a few pixels, and the masked NCC taken again (``fine_ncc``); the same
   NCC over the *background* only (pixels within a few robust s.d. of the median in both
   images: particle edges, rims and debris, which look alike across a class, left out) gives
   ``background_ncc``: the stain grain, which only views of one field share. With the
   particle table, the annotated points in the overlap must have partners in the other image
   (:func:`point_agreement`, ``points`` and ``point_agreement``).
5. **Decision.** ``overlap`` when ``ncc >= screen_ncc``, ``ncc - runner_up >= min_margin``,
   ``fine_ncc >= min_ncc``, ``background_ncc >= min_background_ncc``,
   ``overlap_fraction >= min_overlap_fraction``, the overlap covers ``>= min_overlap_px``
   coarse pixels and (where the overlap holds annotated points)
   ``point_agreement >= min_point_agreement``.
6. **Scale fallback.** Pairs not found at the recorded pixel sizes are tried again with
   image_b resampled by each relative scale of ``fallback_scales`` (pixel sizes recorded
   wrongly by about that factor); the list should hold each scale and its inverse.
7. **Groups.** Overlapping images form groups (connected components); in each group the
   image kept is the one with the most particles, then the smallest pixel size, then the
   smallest image id. ``overlap_group`` is the kept image's id (a singleton's own id).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft
from PIL import Image
from scipy.ndimage import binary_erosion, gaussian_filter, label, maximum_filter, minimum_filter
from scipy.signal.windows import tukey

from temvirus.io import write_csv
from temvirus.raw import read_image

log = logging.getLogger(__name__)

PAIR_COLUMNS = [
    "class", "image_a", "image_b", "scale", "dx_nm", "dy_nm", "peak", "ncc", "runner_up", "fine_ncc", "background_ncc",
    "overlap_fraction", "overlap_nm2", "points", "point_agreement", "decision",
]  # fmt: skip
OVERLAP, DISTINCT = "overlap", "distinct"
#: least area (fraction of the image) of a constant region that counts as padding
_MIN_PADDING = 0.01
#: pixels removed from the valid area along padding (edge artefacts of the padding)
_ERODE_PX = 2
#: background NCC: pixels departing more than this many robust s.d. from the median are left out
_BACKGROUND_CLIP = 2.5
#: background NCC: Gaussian sigma (nm, at least 1.5 fine pixels) of a further high-pass
#: (the stain pools and halos around particles are smooth; the stain grain is not)
_BACKGROUND_HIGHPASS_NM = 8.0


@dataclass(frozen=True)
class OverlapSettings:
    """Thresholds and scales of overlap detection (config section ``overlap``)."""

    coarse_nm: float = 2.0
    max_side_px: int = 256
    fine_levels: int = 1
    lowpass_px: float = 1.0
    highpass_px: float = 12.0
    taper: float = 0.05
    peaks: int = 6
    screen_ncc: float = 0.7
    min_margin: float = 0.0
    min_ncc: float = 0.62
    min_background_ncc: float = 0.3
    min_overlap_fraction: float = 0.05
    min_overlap_px: int = 400
    point_tolerance_nm: float = 30.0
    min_point_agreement: float = 0.4
    fallback_scales: tuple[float, ...] = ()

    @classmethod
    def from_config(cls, section: dict) -> OverlapSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"overlap config: unknown keys {unknown}")
        values = dict(section)
        if "fallback_scales" in values:
            values["fallback_scales"] = tuple(float(s) for s in values["fallback_scales"])
        return cls(**values)


@dataclass
class _View:
    """One image (or region) at one pixel size, band-passed, with its FFT once computed."""

    mean: np.ndarray  # area-averaged intensities (before band-pass)
    valid: np.ndarray  # bool: not constant padding
    data: np.ndarray  # band-passed, standardised, 0 where invalid
    spectrum: np.ndarray | None = None  # rfft2 of the windowed data, zero-padded


@dataclass
class _Image:
    """What pair scoring keeps of one image: its coarse pyramid and its fine level."""

    image_id: str
    own: int  # own pyramid level
    fine_nm: float  # pixel size of ``fine``
    fine: _View  # the whole image at the fine pixel size (mean and valid only)
    levels: dict[int, _View] = field(default_factory=dict)


def area_resample(array: np.ndarray, factor: float, resample=Image.Resampling.BOX) -> np.ndarray:
    """Resample by ``1 / factor`` (``factor`` input pixels per output pixel, any real > 0).

    The output covers ``floor(size / factor)`` whole output pixels starting at the top-left
    corner, so output pixel ``(r, c)`` is exactly the input area ``[c*f, (c+1)*f) x [r*f, (r+1)*f)``
    (BOX: the area average when downsampling).
    """
    height, width = array.shape
    out_h, out_w = max(1, int(height / factor)), max(1, int(width / factor))
    return _resample_box(array, (0.0, 0.0, out_w * factor, out_h * factor), (out_w, out_h), resample)


def _resample_box(array: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int], resample) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F")
    return np.asarray(image.resize(size, resample, box=box), dtype=np.float32)


def padding_mask(pixels: np.ndarray) -> np.ndarray:
    """Pixels of padding: connected areas of constant intensity covering at least
    ``_MIN_PADDING`` of the image (black borders of crops; saturated areas)."""
    values = pixels.ravel()
    counts = np.bincount(values) if values.dtype.kind == "u" else np.unique(values, return_counts=True)[1]
    if counts.max() < _MIN_PADDING * values.size:  # no value is common enough: no padding
        return np.zeros(pixels.shape, dtype=bool)
    flat = maximum_filter(pixels, 3) == minimum_filter(pixels, 3)
    labels, count = label(flat)
    if count == 0:
        return flat
    big = np.bincount(labels.ravel()) >= _MIN_PADDING * pixels.size
    big[0] = False
    return big[labels]


def coarse(pixels: np.ndarray, pixel_size_nm: float, coarse_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """Area-average ``pixels`` to ``coarse_nm`` per pixel; also return the valid mask: blocks
    mostly outside :func:`padding_mask`, less ``_ERODE_PX`` pixels along the padding."""
    factor = coarse_nm / pixel_size_nm
    mean = area_resample(pixels.astype(np.float32), factor)
    inside = area_resample((~padding_mask(pixels)).astype(np.float32), factor) > 0.5
    return mean, binary_erosion(inside, iterations=_ERODE_PX, border_value=1)


def _bandpass(mean: np.ndarray, valid: np.ndarray, low_px: float, high_px: float) -> np.ndarray:
    """Masked difference of Gaussians, standardised over the valid pixels, 0 elsewhere."""
    weight = valid.astype(np.float32)
    if weight.sum() < 2:
        return np.zeros_like(mean)

    def blur(sigma):
        num = gaussian_filter(mean * weight, sigma, mode="constant")
        den = gaussian_filter(weight, sigma, mode="constant")
        return num / np.maximum(den, 1e-6)

    band = blur(low_px) - blur(high_px)
    band = np.where(valid, band, 0).astype(np.float32)
    values = band[valid]
    std = float(values.std())
    band[valid] = (values - values.mean()) / (std if std > 0 else 1.0)
    return band


def _view(mean: np.ndarray, valid: np.ndarray, s: OverlapSettings) -> _View:
    return _View(mean, valid, _bandpass(mean, valid, s.lowpass_px, s.highpass_px))


def _with_spectrum(view: _View, shape: tuple[int, int], taper: float) -> _View:
    """``view`` with ``spectrum`` computed for zero padding to ``shape`` (kept if already so)."""
    if view.spectrum is None or view.spectrum.shape[0] != shape[0] or (view.spectrum.shape[1] - 1) * 2 < shape[1] - 1:
        h, w = view.data.shape
        window = np.outer(tukey(h, taper), tukey(w, taper)).astype(np.float32)
        view.spectrum = scipy.fft.rfft2(view.data * window, s=shape, workers=1)
    return view


def _rescaled(view: _View, scale: float, s: OverlapSettings) -> _View:
    """``view`` as it would look if its true pixel size were ``scale`` times the recorded one."""
    method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    mean = area_resample(view.mean, 1 / scale, method)
    valid = area_resample(view.valid.astype(np.float32), 1 / scale, method) > 0.5
    return _view(mean, valid, s)


def _overlap_lengths(n_a: int, n_b: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shift (b's origin in a's frame) of each correlation index and the overlap length there."""
    index = np.arange(size)
    shift = np.where(index < n_a, index, index - size)
    length = np.clip(np.minimum(n_a, shift + n_b) - np.maximum(0, shift), 0, None)
    return shift, length


def _masked_ncc(a: _View, b: _View, dy: int, dx: int) -> tuple[float, int]:
    """Pearson correlation of a and b over the pixels valid in both, b's origin at (dy, dx)."""
    (ha, wa), (hb, wb) = a.data.shape, b.data.shape
    y0, y1, x0, x1 = max(0, dy), min(ha, dy + hb), max(0, dx), min(wa, dx + wb)
    if y1 <= y0 or x1 <= x0:
        return 0.0, 0
    va, vb = a.data[y0:y1, x0:x1], b.data[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
    mask = a.valid[y0:y1, x0:x1] & b.valid[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
    n = int(mask.sum())
    if n < 2:
        return 0.0, n
    pa, pb = va[mask].astype(np.float64), vb[mask].astype(np.float64)
    pa -= pa.mean()
    pb -= pb.mean()
    denom = np.sqrt((pa * pa).sum() * (pb * pb).sum())
    return (float((pa * pb).sum() / denom) if denom > 0 else 0.0), n


def _background_ncc(a: _View, b: _View, dy: int, dx: int, pixel_nm: float) -> float:
    """Pearson correlation over the *background* of the overlap (b's origin at (dy, dx)).

    Both are high-passed further (:data:`_BACKGROUND_HIGHPASS_NM`: the smooth stain pools
    and halos around look-alike particles match too). Pixels where either image departs more than :data:`_BACKGROUND_CLIP` robust
    s.d. (median absolute deviation) from its median are left out: particle edges, rims and
    debris, which look alike in unrelated images of one class. What is left is mostly the
    stain grain, which only two views of the same field share.
    """
    (ha, wa), (hb, wb) = a.data.shape, b.data.shape
    y0, y1, x0, x1 = max(0, dy), min(ha, dy + hb), max(0, dx), min(wa, dx + wb)
    if y1 <= y0 or x1 <= x0:
        return 0.0
    mask = a.valid[y0:y1, x0:x1] & b.valid[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
    if mask.sum() < 16:
        return 0.0
    weight = mask.astype(np.float32)
    sigma = max(1.5, _BACKGROUND_HIGHPASS_NM / pixel_nm)
    den = np.maximum(gaussian_filter(weight, sigma, mode="constant"), 1e-6)
    z = []
    for crop in (a.data[y0:y1, x0:x1], b.data[y0 - dy : y1 - dy, x0 - dx : x1 - dx]):
        crop = crop * weight
        values = (crop - gaussian_filter(crop, sigma, mode="constant") / den)[mask].astype(np.float64)
        median = float(np.median(values))
        spread = 1.4826 * float(np.median(np.abs(values - median))) or 1.0
        z.append((values - median) / spread)
    keep = (np.abs(z[0]) <= _BACKGROUND_CLIP) & (np.abs(z[1]) <= _BACKGROUND_CLIP)
    if keep.sum() < 16:
        return 0.0
    pa, pb = z[0][keep] - z[0][keep].mean(), z[1][keep] - z[1][keep].mean()
    denom = np.sqrt((pa * pa).sum() * (pb * pb).sum())
    return float((pa * pb).sum() / denom) if denom > 0 else 0.0


def _subpixel(corr: np.ndarray, i: int, j: int) -> tuple[float, float]:
    """Parabolic refinement of a correlation peak along each axis."""

    def offset(minus, centre, plus):
        denom = minus - 2 * centre + plus
        return 0.0 if denom >= 0 else float(np.clip(0.5 * (minus - plus) / denom, -0.5, 0.5))

    n, m = corr.shape
    c = corr[i, j]
    return offset(corr[(i - 1) % n, j], c, corr[(i + 1) % n, j]), offset(corr[i, (j - 1) % m], c, corr[i, (j + 1) % m])


def _phase_correlation(a: _View, b: _View, shape: tuple[int, int]) -> np.ndarray:
    cross = a.spectrum * np.conj(b.spectrum)
    cross /= np.abs(cross) + 1e-6 * float(np.abs(cross).max() or 1)
    return scipy.fft.irfft2(cross, s=shape, workers=1)


def _best_peak(a: _View, b: _View, corr: np.ndarray, allowed: np.ndarray, peaks: int, min_px: int) -> dict:
    """The best-NCC candidate among the ``peaks`` highest allowed correlation peaks, and the
    best NCC of the other candidates (``runner_up``: how well a wrong shift does)."""
    rows, cols = corr.shape
    shift_y = np.where(np.arange(rows) < a.data.shape[0], np.arange(rows), np.arange(rows) - rows)
    shift_x = np.where(np.arange(cols) < a.data.shape[1], np.arange(cols), np.arange(cols) - cols)
    scores = np.where(allowed, corr, -np.inf)
    found: list[tuple[float, int, int, int]] = []  # ncc, n, i, j
    for _ in range(peaks):
        i, j = divmod(int(np.argmax(scores)), cols)
        if not np.isfinite(scores[i, j]):
            break
        scores[max(0, i - 2) : i + 3, max(0, j - 2) : j + 3] = -np.inf  # the peak's neighbourhood
        ncc, n = _masked_ncc(a, b, int(shift_y[i]), int(shift_x[j]))
        found.append((ncc if n >= min_px else -1.0, n, i, j))
    valid = [f for f in found if f[0] > -1.0]
    if not valid:
        return {"peak": 0.0, "ncc": -1.0, "runner_up": -1.0, "dy": 0.0, "dx": 0.0, "n": 0}
    ncc, n, i, j = max(valid, key=lambda f: f[0])
    others = [f[0] for f in valid if max(abs(f[2] - i), abs(f[3] - j)) > 2]
    fy, fx = _subpixel(corr, i, j)
    return {"peak": float(corr[i, j]), "ncc": ncc, "runner_up": max(others, default=-1.0),
            "dy": shift_y[i] + fy, "dx": shift_x[j] + fx, "n": n}  # fmt: skip


def register(a: _View, b: _View, size: int, s: OverlapSettings) -> dict:
    """Best verified translation of ``b`` onto ``a`` (pixels) with its scores (step 3)."""
    a, b = _with_spectrum(a, (size, size), s.taper), _with_spectrum(b, (size, size), s.taper)
    corr = _phase_correlation(a, b, (size, size))
    (ha, wa), (hb, wb) = a.data.shape, b.data.shape
    area = np.outer(_overlap_lengths(ha, hb, size)[1], _overlap_lengths(wa, wb, size)[1])
    smaller = min(int(a.valid.sum()), int(b.valid.sum())) or 1
    allowed = (area >= s.min_overlap_px) & (area >= s.min_overlap_fraction * smaller)
    best = _best_peak(a, b, corr, allowed, s.peaks, s.min_overlap_px)
    best["fraction"] = best["n"] / smaller
    return best


def _region(view: _View, pixel_nm: float, x0_nm: float, y0_nm: float, size: tuple[int, int], f_nm: float, s: OverlapSettings) -> _View:
    """The ``size`` (width, height) region of ``view`` from (x0, y0) nm at ``f_nm`` per pixel."""
    factor = f_nm / pixel_nm
    x0, y0 = x0_nm / pixel_nm, y0_nm / pixel_nm
    box = (x0, y0, x0 + size[0] * factor, y0 + size[1] * factor)
    method = Image.Resampling.BOX if factor >= 1 else Image.Resampling.BILINEAR
    mean = _resample_box(view.mean, box, size, method)
    valid = _resample_box(view.valid.astype(np.float32), box, size, method) > 0.99
    return _view(mean, valid, s)


def verify(a: _Image, b: _Image, scale: float, dx_nm: float, dy_nm: float, coarse_nm: float, s: OverlapSettings) -> dict:
    """Fine verification of a coarse match (step 4): NCC of the overlap ``2**fine_levels`` finer.

    ``b`` lies at (dx, dy) nm in ``a``'s field with its pixels ``scale`` times their recorded
    size. Returns ``fine_ncc`` and the refined ``dx_nm``, ``dy_nm``.
    """
    b_nm = b.fine_nm * scale
    f_nm = max(coarse_nm / 2**s.fine_levels, a.fine_nm, b_nm)
    (ha, wa), (hb, wb) = a.fine.mean.shape, b.fine.mean.shape
    x0, x1 = max(0.0, dx_nm), min(wa * a.fine_nm, dx_nm + wb * b_nm)
    y0, y1 = max(0.0, dy_nm), min(ha * a.fine_nm, dy_nm + hb * b_nm)
    size = (int((x1 - x0) / f_nm), int((y1 - y0) / f_nm))
    result = {"fine_ncc": -1.0, "background_ncc": -1.0, "dx_nm": dx_nm, "dy_nm": dy_nm}
    if min(size) < 8:
        return result
    ra = _region(a.fine, a.fine_nm, x0, y0, size, f_nm, s)
    rb = _region(b.fine, b_nm, x0 - dx_nm, y0 - dy_nm, size, f_nm, s)
    reach = int(math.ceil(2 * coarse_nm / f_nm)) + 2  # coarse shift error, in fine pixels
    shape = (scipy.fft.next_fast_len(size[1] + reach + 1, real=True), scipy.fft.next_fast_len(size[0] + reach + 1, real=True))
    ra, rb = _with_spectrum(ra, shape, s.taper), _with_spectrum(rb, shape, s.taper)
    corr = _phase_correlation(ra, rb, shape)
    near_y = np.minimum(np.arange(shape[0]), shape[0] - np.arange(shape[0])) <= reach
    near_x = np.minimum(np.arange(shape[1]), shape[1] - np.arange(shape[1])) <= reach
    best = _best_peak(ra, rb, corr, np.outer(near_y, near_x), s.peaks, min(s.min_overlap_px, size[0] * size[1] // 4))
    if best["n"]:
        background = _background_ncc(ra, rb, int(round(best["dy"])), int(round(best["dx"])), f_nm)
        result = {"fine_ncc": best["ncc"], "background_ncc": background, "dx_nm": dx_nm + best["dx"] * f_nm, "dy_nm": dy_nm + best["dy"] * f_nm}
    return result


def point_agreement(a_nm: np.ndarray, b_nm: np.ndarray, rect: tuple[float, float, float, float], tolerance_nm: float) -> tuple[int, float]:
    """How well the annotated points of two registered images agree over their overlap.

    ``a_nm`` and ``b_nm`` are (n, 2) x/y points in one frame (nm); ``rect`` is the overlap
    ``(x0, y0, x1, y1)``. Points deeper than ``tolerance_nm`` inside ``rect`` should have a
    partner in the other image within ``tolerance_nm``. Returns the number of such points
    and the fraction that has one (NaN when there are none).
    """
    x0, y0, x1, y1 = rect
    total = matched = 0
    for own, other in ((a_nm, b_nm), (b_nm, a_nm)):
        inside = own[(own[:, 0] > x0 + tolerance_nm) & (own[:, 0] < x1 - tolerance_nm)
                     & (own[:, 1] > y0 + tolerance_nm) & (own[:, 1] < y1 - tolerance_nm)]  # fmt: skip
        total += len(inside)
        if len(inside) and len(other):
            distance = np.sqrt(((inside[:, None, :] - other[None, :, :]) ** 2).sum(axis=-1)).min(axis=1)
            matched += int((distance <= tolerance_nm).sum())
    return total, (matched / total if total else float("nan"))


def own_level(width: int, height: int, pixel_size_nm: float, s: OverlapSettings) -> int:
    """The image's pyramid level: the finest ``k`` whose pixel, ``coarse_nm * 2**k``, is at least
    the image's pixel size and shows the whole field in ``max_side_px`` pixels."""
    need = max(max(width, height) * pixel_size_nm / s.max_side_px, pixel_size_nm) / s.coarse_nm
    return max(0, math.ceil(math.log2(need) - 1e-9))


def _prepare(image_id: str, pixels: np.ndarray, pixel_size_nm: float, top: int, s: OverlapSettings) -> _Image:
    """An image's fine view and its coarse views from its own level up to ``top`` (halving)."""
    height, width = pixels.shape
    own = own_level(width, height, pixel_size_nm, s)
    fine_nm = max(s.coarse_nm * 2**own / 2**s.fine_levels, pixel_size_nm)
    mean, valid = coarse(pixels, pixel_size_nm, fine_nm)
    image = _Image(image_id, own, fine_nm, _View(mean, valid, mean))
    factor = s.coarse_nm * 2**own / fine_nm
    for level in range(own, top + 1):
        mean, valid = area_resample(mean, factor), area_resample(valid.astype(np.float32), factor) > 0.5
        image.levels[level] = _view(mean, valid, s)
        factor = 2.0
    return image


def _decide(score: dict, s: OverlapSettings) -> bool:
    return (
        score["ncc"] >= s.screen_ncc
        and score["ncc"] - score["runner_up"] >= s.min_margin
        and score.get("fine_ncc", -1.0) >= s.min_ncc
        and score.get("background_ncc", -1.0) >= s.min_background_ncc
        and score["fraction"] >= s.min_overlap_fraction
        and score["n"] >= s.min_overlap_px
        and not score.get("point_agreement", 1.0) < s.min_point_agreement
    )


def _points_score(a: pd.Series, b: pd.Series, points: dict[str, np.ndarray], scale: float, dx_nm: float, dy_nm: float, s: OverlapSettings) -> dict:
    """:func:`point_agreement` of two images' annotations, b placed at (dx, dy) nm in a."""
    b_nm = b.pixel_size_nm * scale
    rect = (max(0.0, dx_nm), max(0.0, dy_nm), min(a.width * a.pixel_size_nm, dx_nm + b.width * b_nm),
            min(a.height * a.pixel_size_nm, dy_nm + b.height * b_nm))  # fmt: skip
    empty = np.zeros((0, 2))
    a_nm = points.get(a.image_id, empty) * a.pixel_size_nm
    b_in_a = points.get(b.image_id, empty) * b_nm + [dx_nm, dy_nm]
    n, agreement = point_agreement(a_nm, b_in_a, rect, s.point_tolerance_nm)
    return {"points": n, "point_agreement": agreement}


def score_class(images: pd.DataFrame, root: str | Path, s: OverlapSettings, points: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Score every pair of images of one class; one row per pair (:data:`PAIR_COLUMNS`).

    ``points`` maps image ids to their annotated (x, y) pixels; without it the decision
    rests on the images alone.
    """
    images = images.sort_values("image_id", kind="stable").reset_index(drop=True)
    cls = images["class"].iloc[0]
    top = max(own_level(r.width, r.height, r.pixel_size_nm, s) for r in images.itertuples(index=False))
    prepared = [_prepare(r.image_id, read_image(Path(root) / r.path), r.pixel_size_nm, top, s) for r in images.itertuples(index=False)]
    pending = {(i, j): max(prepared[i].own, prepared[j].own) for i in range(len(images)) for j in range(i + 1, len(images))}
    results: dict[tuple[int, int], tuple[float, dict]] = {}
    for scale in [1.0, *sorted(sc for sc in s.fallback_scales if sc != 1.0)]:
        # zero padding that holds image_a beside image_b resampled by ``scale``
        size = scipy.fft.next_fast_len(int(s.max_side_px * (1 + max(1.0, scale))) + 2, real=True)
        moved: dict[tuple[int, int], _View] = {}
        for (i, j), k in pending.items():
            if (j, k) not in moved:
                view = prepared[j].levels[k]
                moved[j, k] = view if scale == 1.0 else _rescaled(view, scale, s)
            score = register(prepared[i].levels[k], moved[j, k], size, s)
            coarse_nm = s.coarse_nm * 2**k
            score["dx_nm"], score["dy_nm"] = score["dx"] * coarse_nm, score["dy"] * coarse_nm
            if score["ncc"] >= s.screen_ncc:
                score.update(verify(prepared[i], prepared[j], scale, score["dx_nm"], score["dy_nm"], coarse_nm, s))
                if points is not None:
                    score.update(_points_score(images.loc[i], images.loc[j], points, scale, score["dx_nm"], score["dy_nm"], s))
            score["area_nm2"] = score["n"] * coarse_nm**2
            if (i, j) not in results or _rank(score) > _rank(results[i, j][1]):
                results[i, j] = (scale, score)
        pending = {pair: k for pair, k in pending.items() if not _decide(results[pair][1], s)}
    rows = []
    for (i, j), (scale, score) in sorted(results.items()):
        rows.append((
            cls, images.image_id[i], images.image_id[j], scale,
            round(float(score["dx_nm"]), 1), round(float(score["dy_nm"]), 1), round(score["peak"], 4),
            round(score["ncc"], 4), round(score["runner_up"], 4), round(score.get("fine_ncc", float("nan")), 4),
            round(score.get("background_ncc", float("nan")), 4),
            round(score["fraction"], 4),
            round(score["area_nm2"], 1), score.get("points", 0), round(score.get("point_agreement", float("nan")), 4),
            OVERLAP if _decide(score, s) else DISTINCT,
        ))  # fmt: skip
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def _rank(score: dict) -> tuple[float, float]:
    """Order of two scorings of one pair (at different scales): fine NCC first, then coarse."""
    return score.get("fine_ncc", -1.0), score["ncc"]


def score_pairs(images: pd.DataFrame, root: str | Path, s: OverlapSettings, particles: pd.DataFrame | None = None) -> pd.DataFrame:
    """Score all same-class pairs of ``images`` (the raw image table) read from ``root``;
    ``particles`` (the particle table) adds the annotation check."""
    points = None if particles is None else {k: g[["x", "y"]].to_numpy(float) for k, g in particles.groupby("image_id")}
    frames = []
    for cls, group in images.groupby("class", sort=True):
        started = time.time()
        pairs = score_class(group, root, s, points)
        log.info("%s: %d images, %d pairs, %d overlaps (%.1f s)", cls, len(group), len(pairs),
                 int((pairs.decision == OVERLAP).sum()), time.time() - started)  # fmt: skip
        frames.append(pairs)
    pairs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PAIR_COLUMNS)
    return pairs.sort_values(["class", "image_a", "image_b"], kind="stable").reset_index(drop=True)


def group_images(images: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The image table plus ``overlap_group`` and ``kept`` (module docstring, step 7)."""
    parent = {image_id: image_id for image_id in images.image_id}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for row in pairs[pairs.decision == OVERLAP].itertuples(index=False):
        ra, rb = find(row.image_a), find(row.image_b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    table = images.copy()
    table["_root"] = [find(x) for x in table.image_id]
    ranked = table.sort_values(["n_particles", "pixel_size_nm", "image_id"], ascending=[False, True, True], kind="stable")
    keeper = ranked.drop_duplicates("_root").set_index("_root").image_id
    table["overlap_group"] = table["_root"].map(keeper)
    table["kept"] = table.image_id == table.overlap_group
    return table.drop(columns="_root").sort_values("image_id", kind="stable").reset_index(drop=True)


def score_against_truth(kept: pd.DataFrame, pairs: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Precision and recall of overlap detection against the planted overlaps.

    ``truth`` has one row per planted image (``image_id``, ``source_image_id``). Truth groups
    are the connected components of these links. A detected overlapping pair is correct when
    both images are in one truth group (precision); a planted link is found when both images
    end up in one detected group (recall).
    """
    truth_images = kept[["image_id"]].assign(n_particles=0, pixel_size_nm=0.0)
    links = truth.rename(columns={"image_id": "image_a", "source_image_id": "image_b"}).assign(decision=OVERLAP)
    truth_group = group_images(truth_images, links).set_index("image_id").overlap_group
    detected = pairs[pairs.decision == OVERLAP]
    same = truth_group.reindex(detected.image_a).to_numpy() == truth_group.reindex(detected.image_b).to_numpy()
    group = kept.set_index("image_id").overlap_group
    found = group.reindex(truth.image_id).to_numpy() == group.reindex(truth.source_image_id).to_numpy()
    tp, fp, n_truth = int(same.sum()), int((~same).sum()), len(truth)
    return {
        "detected_pairs": len(detected),
        "true_positive_pairs": tp,
        "false_positive_pairs": fp,
        "planted": n_truth,
        "planted_found": int(found.sum()),
        "precision": tp / len(detected) if len(detected) else 1.0,
        "recall": float(found.mean()) if n_truth else 1.0,
    }


def find_overlaps(images_csv, particles_csv, root, pairs_csv, kept_csv, settings: dict) -> None:
    """Rule ``find_overlaps``: score all pairs, group, write both tables (atomically)."""
    s = OverlapSettings.from_config(settings)
    images = pd.read_csv(images_csv, dtype={"image_id": str})
    particles = pd.read_csv(particles_csv, dtype={"image_id": str})
    pairs = score_pairs(images, root, s, particles)
    kept = group_images(images, pairs)
    log.info("%d pairs scored, %d overlapping; %d of %d images kept",
             len(pairs), int((pairs.decision == OVERLAP).sum()), int(kept.kept.sum()), len(kept))  # fmt: skip
    write_csv(pairs_csv, pairs)
    write_csv(kept_csv, kept)
