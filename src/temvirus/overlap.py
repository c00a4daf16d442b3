"""Overlap removal: find images of one class that show the same field, keep one per group.

Built for real re-imaging (issue 15): the same field at another magnification (pixel sizes
recorded, a few percent off), exposure, contrast or focus, with black padding and with
particles cut by the border; the decision rests on the area valid in *both* images only.

Method (all pairs of images within a class):

1. **Common scale.** Images are area-averaged, using their recorded pixel sizes, onto a
   pyramid of pixel sizes ``coarse_nm * 2**k`` nm, so two views of one field line up pixel
   for pixel. An image's own level shows its whole field in the nearest to ``max_side_px``
   pixels (not finer than its own pixels), but is not coarser than ``max_coarse_nm``
   (particles of 30-100 nm stay a few pixels wide: a 10 um synthetic field in 128 pixels
   would leave only the background to register); a pair is compared at the coarser of the
   two images' own levels. Constant areas (black padding) are marked invalid. Grey levels are
   replaced by the normal scores of their ranks (any monotone change of exposure or
   contrast gives the same values).
2. **Band-pass.** Masked difference of Gaussians (``lowpass_px`` minus ``highpass_px``
   pixels): removes illumination gradients and pixel noise; then zero mean, unit variance
   over the valid pixels, zero elsewhere. At the coarse levels from ``2 * coarse_nm`` up the
   least-squares plane is removed first (:func:`_detrended`): a gradient would otherwise
   leave a band along each border, shared by every image of the specimen, whose alignment
   outranks the true shift.
3. **Registration (coarse).** The exact normalised cross-correlation over the jointly valid
   pixels for every shift at once (masked NCC by FFT, Padfield 2012, :func:`ncc_surface`),
   over the shifts whose jointly valid overlap covers ``>= min_overlap_px`` pixels and
   ``>= min_overlap_fraction`` of the smaller valid field. Shifts are ranked by
   *significance* (:func:`significance`: Fisher's z, the NCC weighted by the square root of
   the number of jointly valid pixels), not by raw NCC: a spurious peak over a small corner
   reaches a high NCC by chance, a real strip overlap is significant because it is large.
   The :data:`_CANDIDATES` most significant peaks are scored exactly (``ncc``, ``n``);
   ``runner_up`` is the NCC as significant, over the candidate's overlap, as the next one.
4. **Verification (fine).** The most significant shift, and the next ones (up to
   :data:`_VERIFIED` in all) where they also pass the screen with ``runner_up`` the best NCC
   of a more significant candidate (:func:`_ambiguous`), are checked
   ``2**fine_levels`` times finer (not finer than the images' own pixels nor
   ``min_fine_nm``): the overlap of both images is resampled, band-passed with the same
   pixel sigmas, the shift refined by masked NCC within a few pixels, giving ``fine_ncc``;
   the same NCC over the *background* only (``background_ncc``: the stain grain); and
   ``tile_agreement`` (:func:`tile_agreement`: the fraction of tiles of the jointly valid
   area that agree on their own: one look-alike particle makes one tile agree, a shared
   field all of them; along a strip thinner than a tile the tiles are strips,
   :func:`tile_shape`). Where the check fails, it is tried again with image_b's pixel size
   changed by each factor of ``scale_search`` (recorded pixel sizes a few percent off). With
   the particle table, annotated points at least ``point_margin_nm`` inside the jointly valid
   area (:func:`deep_inside`: particles cut by a border or hidden by padding are not judged)
   must have partners in the other image (:func:`point_agreement`).
5. **Decision.** ``overlap`` when every test passes: the screen (:func:`_screen`:
   ``ncc >= screen_ncc``, or ``ncc >= min_screen_ncc`` with a lead ``ncc - runner_up >=
   screen_lead``: a shift that stands out of its own surface; it also decides which
   candidates get the fine check),
   ``ncc - runner_up >= min_margin``, ``fine_ncc >= min_ncc``,
   ``background_ncc >= min_background_ncc``, ``tile_agreement >= min_tile_agreement`` over
   ``>= min_tiles`` tiles, the overlap size limits of step 3 and (where points are judged)
   ``point_agreement >= min_point_agreement``. ``evidence`` is the least margin by which a
   pair passes (negative: it fails); near misses are the rejected pairs of highest evidence.
6. **Scale fallback.** Pairs not found at the recorded pixel sizes are tried again with
   image_b resampled by each relative scale of ``fallback_scales`` (pixel sizes recorded
   wrongly by about that factor); the list should hold each scale and its inverse.
7. **Groups.** Overlapping images form groups (connected components); in each group the
   image kept is the one with the most particles, then the smallest pixel size, then the
   smallest image id. ``overlap_group`` is the kept image's id (a singleton's own id).

Classes are independent: ``threads`` > 1 scores them in parallel worker processes.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft
from PIL import Image
from scipy.ndimage import binary_erosion, distance_transform_edt, gaussian_filter, label, maximum_filter, minimum_filter
from scipy.special import ndtri
from scipy.stats import rankdata

from temvirus.io import write_csv
from temvirus.raw import read_image

log = logging.getLogger(__name__)

PAIR_COLUMNS = [
    "class",
    "image_a",
    "image_b",
    "scale",
    "dx_nm",
    "dy_nm",
    "ncc",
    "runner_up",
    "fine_ncc",
    "background_ncc",
    "tiles",
    "tile_agreement",
    "overlap_fraction",
    "overlap_nm2",
    "points",
    "point_agreement",
    "evidence",
    "decision",
]
OVERLAP, DISTINCT = "overlap", "distinct"
#: least area (fraction of the image) of a constant region that counts as padding
_MIN_PADDING = 0.01
#: pixels removed from the valid area along padding (edge artefacts of the padding)
_ERODE_PX = 2
#: candidate shifts (highest peaks of the NCC surface) scored exactly
_CANDIDATES = 12
#: the scale search runs only when the fine NCC at the recorded scale is within this of min_ncc
_SEARCH_WITHIN = 0.3
#: candidate shifts given the fine check (those passing the screen, best first)
_VERIFIED = 3
#: candidates (and the runner-up) are more than this many pixels apart
_RUNNER_UP_PX = 3
#: background NCC: pixels departing more than this many robust s.d. from the median are left out
_BACKGROUND_CLIP = 2.5
#: background NCC: Gaussian sigma (nm, at least 1.5 fine pixels) of a further high-pass
#: (the stain pools and halos around particles are smooth; the stain grain is not)
_BACKGROUND_HIGHPASS_NM = 8.0


@dataclass(frozen=True)
class OverlapSettings:
    """Thresholds and scales of overlap detection (config section ``overlap``)."""

    coarse_nm: float = 2.0
    max_side_px: int = 128
    max_coarse_nm: float = 16.0
    fine_levels: int = 2
    min_fine_nm: float = 1.0
    lowpass_px: float = 1.0
    highpass_px: float = 12.0
    screen_ncc: float = 0.7
    min_screen_ncc: float = 0.5
    screen_lead: float = 0.15
    min_margin: float = 0.0
    min_ncc: float = 0.5
    min_background_ncc: float = 0.3
    tile_px: int = 32
    tile_ncc: float = 0.5
    min_tiles: int = 4
    min_tile_agreement: float = 0.4
    min_overlap_fraction: float = 0.05
    min_overlap_px: int = 400
    point_tolerance_nm: float = 30.0
    point_margin_nm: float = 150.0
    min_point_agreement: float = 0.4
    fallback_scales: tuple[float, ...] = ()
    scale_search: tuple[float, ...] = (0.97, 1.03, 0.94, 1.06)
    near_misses: int = 20  # report only: rejected pairs shown beside the claims (temvirus.overlap_figures)

    @classmethod
    def from_config(cls, section: dict) -> OverlapSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"overlap config: unknown keys {unknown}")
        values = dict(section)
        for key in ("fallback_scales", "scale_search"):
            if key in values:
                values[key] = tuple(float(x) for x in values[key])
        return cls(**values)


@dataclass
class _View:
    """One image (or region) at one pixel size, band-passed, with its FFT once computed."""

    mean: np.ndarray  # area-averaged intensities (before band-pass)
    valid: np.ndarray  # bool: not constant padding
    data: np.ndarray  # band-passed, standardised, 0 where invalid
    spectra: dict = field(default_factory=dict)  # zero-padded shape -> rfft2 of data, data**2, valid


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


def _resample_box(
    array: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int], resample
) -> np.ndarray:
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


def normal_scores(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``values`` replaced by the normal scores of their ranks among the valid pixels (0
    elsewhere): any monotone change of exposure or contrast gives the same result."""
    out = np.zeros(values.shape, dtype=np.float32)
    if valid.any():
        ranks = rankdata(values[valid])
        out[valid] = ndtri((ranks - 0.5) / len(ranks))
    return out


def _detrended(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``values`` less their least-squares plane over the valid pixels. A smooth gradient
    leaves, after the masked difference of Gaussians, a band of one sign along each border
    (the local mean there is one-sided); every image of a specimen with a gradient then
    shares that band, and the coarse surface gets ridges of shifts that align two images'
    borders (issue 15: synthetic stain gradients; the true shift of TBE 0005/0007 was not
    among the 12 most significant). A plane only: a quadratic surface also took the large
    shared shape of a real particle cluster (Rift Valley 1172/1173 lost). Sums only, no
    LAPACK (workers are forked)."""
    rows, cols = np.nonzero(valid)
    if len(rows) < 3:
        return values
    v = values[rows, cols].astype(np.float64)
    y, x = rows - rows.mean(), cols - cols.mean()
    sxx, syy, sxy = float(x @ x), float(y @ y), float(x @ y)
    det = sxx * syy - sxy * sxy
    if det <= 0:
        return values
    sxv, syv = float(x @ (v - v.mean())), float(y @ (v - v.mean()))
    gx, gy = (sxv * syy - syv * sxy) / det, (syv * sxx - sxv * sxy) / det
    h, w = values.shape
    plane = gx * (np.arange(w) - cols.mean())[None, :] + gy * (np.arange(h) - rows.mean())[:, None]
    return (values - plane).astype(np.float32)


def _bandpass(mean: np.ndarray, valid: np.ndarray, low_px: float, high_px: float, detrend: bool = False) -> np.ndarray:
    """Masked difference of Gaussians, standardised over the valid pixels, 0 elsewhere;
    ``detrend``: of ``mean`` less its least-squares plane (:func:`_detrended`)."""
    weight = valid.astype(np.float32)
    if weight.sum() < 2:
        return np.zeros_like(mean)
    if detrend:
        mean = _detrended(mean, valid)

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


def _view(mean: np.ndarray, valid: np.ndarray, s: OverlapSettings, detrend: bool = False) -> _View:
    """A band-passed view; ``detrend`` (the coarse levels from ``2 * coarse_nm`` up) removes
    the least-squares plane first (:func:`_detrended`). The finest level (fields of at most
    ~300 nm at 2 nm) and the fine check are left as they were: there a gradient's border band
    is negligible, and the plane moved a true focus plant's coarse NCC (Astrovirus,
    benchmark) from above ``screen_ncc`` to 0.694."""
    return _View(mean, valid, _bandpass(mean, valid, s.lowpass_px, s.highpass_px, detrend))


def _rescaled(view: _View, scale: float, s: OverlapSettings) -> _View:
    """``view`` as it would look if its true pixel size were ``scale`` times the recorded one."""
    method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    mean = area_resample(view.mean, 1 / scale, method)
    valid = area_resample(view.valid.astype(np.float32), 1 / scale, method) > 0.5
    return _view(mean, valid, s, detrend=True)


def _spectra(view: _View, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rfft2 (single precision) of the data, its square and the valid mask, zero-padded to
    ``shape`` (cached per shape)."""
    if shape not in view.spectra:
        data = view.data.astype(np.float32)
        mask = view.valid.astype(np.float32)
        view.spectra[shape] = tuple(scipy.fft.rfft2(x, s=shape, workers=1) for x in (data, data * data, mask))
    return view.spectra[shape]


def ncc_surface(a: _View, b: _View, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised cross-correlation over the jointly valid pixels for every shift of ``b``
    over ``a``, and their count (both arrays of ``shape``).

    Exact masked NCC (Padfield, "Masked object registration in the Fourier domain", IEEE
    TIP 21(5), 2012): the count ``n``, the sums of a and b and of their squares over
    the jointly valid area, and the sum of products, each one correlation of masked arrays by
    FFT (6 inverse FFTs); then ``(sum ab - sum a sum b / n) / sqrt(var_a var_b)`` with the
    means taken over the overlap itself, as :func:`_masked_ncc` does at one shift.

    Index ``(i, j)`` puts b's origin at ``(i, j)`` in a's pixels (negative shifts wrap to the
    end); ``shape`` must be at least the sum of the two images' shapes (no wrap-around).
    Shifts whose overlap has (almost) no variance in either image get 0.
    """
    fa, fa2, fma = _spectra(a, shape)
    fb, fb2, fmb = (np.conj(x) for x in _spectra(b, shape))

    def corr(x, y):
        return scipy.fft.irfft2(x * y, s=shape, workers=1)

    n = np.rint(corr(fma, fmb))
    safe = np.maximum(n, 1.0)
    sum_a, sum_b = corr(fa, fmb), corr(fma, fb)
    var_a = corr(fa2, fmb) - sum_a * sum_a / safe
    var_b = corr(fma, fb2) - sum_b * sum_b / safe
    cov = corr(fa, fb) - sum_a * sum_b / safe
    # float32 FFTs: sums of squares of unit-variance data lose ~1e-6 of n to rounding
    ok = (n >= 2) & (var_a > 1e-3 * n) & (var_b > 1e-3 * n)
    ncc = cov / np.sqrt(np.where(ok, var_a * var_b, 1.0))
    return np.where(ok, np.clip(ncc, -1, 1), 0.0), n


def significance(ncc: np.ndarray | float, n: np.ndarray | float) -> np.ndarray | float:
    """How unlikely an NCC of ``ncc`` over ``n`` pixels is by chance: Fisher's z,
    ``atanh(ncc) * sqrt(n - 3)`` (Fisher 1915; the s.d. of atanh r of unrelated data is
    ``1 / sqrt(n - 3)``). Neighbouring pixels of band-passed data are correlated, so this
    over-states the significance by a constant factor, which does not change how shifts of
    one pair rank: a real strip overlap (NCC 0.6 over 2,000 pixels: 31) beats a whole-field
    coincidence of look-alike particles (0.15 over 16,000: 19) and a spurious peak of a
    corner of 400 pixels (0.8 over 400: 22)."""
    r = np.clip(ncc, -0.999, 0.999)
    return np.arctanh(r) * np.sqrt(np.maximum(np.asarray(n, dtype=float) - 3, 0.0))


def _equivalent_ncc(z: float, n: float) -> float:
    """The NCC over ``n`` pixels that has significance ``z`` (inverse of :func:`significance`)."""
    return float(np.tanh(z / math.sqrt(max(n - 3, 1.0))))


def _masked_ncc(a: _View, b: _View, dy: int, dx: int) -> float:
    """Pearson correlation of a and b over the pixels valid in both, b's origin at (dy, dx)."""
    (ha, wa), (hb, wb) = a.data.shape, b.data.shape
    y0, y1, x0, x1 = max(0, dy), min(ha, dy + hb), max(0, dx), min(wa, dx + wb)
    if y1 - y0 < 2 or x1 - x0 < 2:
        return -1.0
    mask = a.valid[y0:y1, x0:x1] & b.valid[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
    if mask.sum() < 2:
        return -1.0
    pa = a.data[y0:y1, x0:x1][mask].astype(np.float64)
    pb = b.data[y0 - dy : y1 - dy, x0 - dx : x1 - dx][mask].astype(np.float64)
    pa -= pa.mean()
    pb -= pb.mean()
    denom = math.sqrt(float((pa * pa).sum() * (pb * pb).sum()))
    return float((pa * pb).sum()) / denom if denom > 0 else 0.0


def _shifts(n_a: int, size: int) -> np.ndarray:
    """Shift (b's origin in a's frame) of each index of a correlation of length ``size``."""
    index = np.arange(size)
    return np.where(index < n_a, index, index - size)


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


def _best_shift(a: _View, b: _View, shape: tuple[int, int], allowed: np.ndarray | None, min_px: int) -> dict:
    """The most significant shift (:func:`significance`: the NCC weighted by the number of
    jointly valid pixels) among the allowed ones with at least ``min_px`` jointly valid pixels.

    The :data:`_CANDIDATES` most significant peaks of :func:`ncc_surface` (each
    neighbourhood of :data:`_RUNNER_UP_PX` pixels once) are scored exactly
    (:func:`_masked_ncc`) and ranked by significance: ``candidates``, best first, each with its
    ``ncc``, sub-pixel shift ``dy``, ``dx`` (pixels), overlap ``n`` (pixels), ``z`` and
    ``runner_up``: the NCC which, over this candidate's overlap, is as significant as the next
    candidate (how well a wrong shift does: particles of one class look alike; the raw NCC of
    a tiny corner overlap is not comparable with that of a large one). The best candidate's
    fields are also returned at the top level.
    """
    ncc, n = ncc_surface(a, b, shape)
    ok = n >= max(min_px, 4)
    if allowed is not None:
        ok &= allowed
    scores = np.where(ok, significance(ncc, n), -np.inf)
    shift_y, shift_x = _shifts(a.data.shape[0], shape[0]), _shifts(a.data.shape[1], shape[1])
    r = _RUNNER_UP_PX
    found = []  # exact z, exact ncc, i, j
    for _ in range(_CANDIDATES):
        i, j = divmod(int(np.argmax(scores)), shape[1])
        if not np.isfinite(scores[i, j]):
            break
        exact = _masked_ncc(a, b, int(shift_y[i]), int(shift_x[j]))
        found.append((float(significance(exact, n[i, j])), exact, i, j))
        scores[np.ix_(np.arange(i - r, i + r + 1) % shape[0], np.arange(j - r, j + r + 1) % shape[1])] = -np.inf
    if not found:
        return {"ncc": -1.0, "runner_up": -1.0, "dy": 0.0, "dx": 0.0, "n": 0, "z": 0.0, "candidates": []}
    found.sort(reverse=True)
    candidates = []
    surface = np.where(ok, ncc, -1.0)
    for k, (z, exact, i, j) in enumerate(found):
        fy, fx = _subpixel(surface, i, j)
        runner_up = _equivalent_ncc(found[k + 1][0], n[i, j]) if k + 1 < len(found) else -1.0
        candidates.append(
            {
                "ncc": exact,
                "z": z,
                "dy": shift_y[i] + fy,
                "dx": shift_x[j] + fx,
                "n": int(n[i, j]),
                "runner_up": runner_up,
            }
        )
    return dict(candidates[0], candidates=candidates)


def register(a: _View, b: _View, s: OverlapSettings) -> dict:
    """Most significant translation of ``b`` onto ``a`` (pixels) by masked NCC over the jointly
    valid area (step 3, :func:`_best_shift`); ``fraction`` is the jointly valid overlap over
    the smaller valid field (``smaller``, pixels)."""
    shape = tuple(scipy.fft.next_fast_len(na + nb, real=True) for na, nb in zip(a.data.shape, b.data.shape))
    smaller = min(int(a.valid.sum()), int(b.valid.sum())) or 1
    best = _best_shift(a, b, shape, None, max(s.min_overlap_px, int(math.ceil(s.min_overlap_fraction * smaller))))
    best["fraction"], best["smaller"] = best["n"] / smaller, smaller
    return best


def _region(
    view: _View, pixel_nm: float, x0_nm: float, y0_nm: float, size: tuple[int, int], f_nm: float, s: OverlapSettings
) -> _View:
    """The ``size`` (width, height) region of ``view`` from (x0, y0) nm at ``f_nm`` per pixel."""
    factor = f_nm / pixel_nm
    x0, y0 = x0_nm / pixel_nm, y0_nm / pixel_nm
    box = (x0, y0, x0 + size[0] * factor, y0 + size[1] * factor)
    method = Image.Resampling.BOX if factor >= 1 else Image.Resampling.BILINEAR
    mean = _resample_box(view.mean, box, size, method)
    valid = _resample_box(view.valid.astype(np.float32), box, size, method) > 0.99
    return _view(mean, valid, s)


def _shifted(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``array`` moved by (dy, dx) pixels, zero (False) where nothing moved in."""
    out = np.zeros_like(array)
    h, w = array.shape
    out[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)] = array[
        max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)
    ]
    return out


def tile_shape(joint: np.ndarray, tile_px: int) -> tuple[int, int]:
    """(height, width) of the tiles of :func:`tile_agreement`: ``tile_px`` square, or, where
    the jointly valid area is a strip thinner than ``tile_px`` (an overlap of two adjacent
    exposures), as thick as the strip (at least ``tile_px // 4``) and as long as keeps the
    tile's area ``tile_px**2``, so that a thin strip still gets several tiles."""
    rows, cols = np.flatnonzero(joint.any(axis=1)), np.flatnonzero(joint.any(axis=0))
    if not len(rows):
        return tile_px, tile_px
    height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    if min(height, width) >= tile_px:
        return tile_px, tile_px
    thick = max(min(height, width), tile_px // 4, 1)
    long = min(tile_px * tile_px // thick, max(height, width))
    return (thick, long) if height <= width else (long, thick)


def tile_agreement(a: np.ndarray, b: np.ndarray, joint: np.ndarray, tile_px: int, tile_ncc: float) -> tuple[int, float]:
    """How evenly two registered views agree: the bounding box of the jointly valid area is
    cut into tiles of :func:`tile_shape` (``tile_px`` square, strip-shaped along a thin
    strip); of the tiles at least 3/4 valid, the fraction whose Pearson correlation is
    ``>= tile_ncc``. One look-alike particle makes one tile agree, a shared field makes them
    all agree (each tile normalises its own contrast: exposure changes cancel). Returns the
    number of tiles judged and the fraction (NaN when none)."""
    judged = agreeing = 0
    rows, cols = np.flatnonzero(joint.any(axis=1)), np.flatnonzero(joint.any(axis=0))
    if not len(rows):
        return 0, float("nan")
    th, tw = tile_shape(joint, tile_px)
    for y in range(int(rows[0]), int(rows[-1]) + 2 - th, th):
        for x in range(int(cols[0]), int(cols[-1]) + 2 - tw, tw):
            mask = joint[y : y + th, x : x + tw]
            if mask.sum() < 0.75 * th * tw:
                continue
            pa = a[y : y + th, x : x + tw][mask].astype(np.float64)
            pb = b[y : y + th, x : x + tw][mask].astype(np.float64)
            pa -= pa.mean()
            pb -= pb.mean()
            denom = math.sqrt(float((pa * pa).sum() * (pb * pb).sum()))
            judged += 1
            agreeing += denom > 0 and float((pa * pb).sum()) / denom >= tile_ncc
    return judged, (agreeing / judged if judged else float("nan"))


def verify(
    a: _Image, b: _Image, scale: float, dx_nm: float, dy_nm: float, coarse_nm: float, s: OverlapSettings
) -> dict:
    """Fine verification of a coarse match (step 4) ``2**fine_levels`` finer.

    ``b`` lies at (dx, dy) nm in ``a``'s field with its pixels ``scale`` times their recorded
    size. Returns ``fine_ncc``, ``background_ncc``, ``tiles``, ``tile_agreement``, the refined
    ``dx_nm``, ``dy_nm`` and ``joint``: the jointly valid area of the overlap on the fine grid
    (``mask``, its origin ``x0``, ``y0`` in a's field and its pixel ``f_nm``).
    """
    b_nm = b.fine_nm * scale
    f_nm = max(coarse_nm / 2**s.fine_levels, a.fine_nm, b_nm)
    (ha, wa), (hb, wb) = a.fine.mean.shape, b.fine.mean.shape
    x0, x1 = max(0.0, dx_nm), min(wa * a.fine_nm, dx_nm + wb * b_nm)
    y0, y1 = max(0.0, dy_nm), min(ha * a.fine_nm, dy_nm + hb * b_nm)
    size = (int((x1 - x0) / f_nm), int((y1 - y0) / f_nm))
    result = {
        "fine_ncc": -1.0,
        "background_ncc": -1.0,
        "tiles": 0,
        "tile_agreement": float("nan"),
        "dx_nm": dx_nm,
        "dy_nm": dy_nm,
        "joint": None,
    }
    if min(size) < 8:
        return result
    ra = _region(a.fine, a.fine_nm, x0, y0, size, f_nm, s)
    rb = _region(b.fine, b_nm, x0 - dx_nm, y0 - dy_nm, size, f_nm, s)
    reach = int(math.ceil(2 * coarse_nm / f_nm)) + 2  # coarse shift error, in fine pixels
    shape = (
        scipy.fft.next_fast_len(size[1] + reach + 1, real=True),
        scipy.fft.next_fast_len(size[0] + reach + 1, real=True),
    )
    near_y = np.minimum(np.arange(shape[0]), shape[0] - np.arange(shape[0])) <= reach
    near_x = np.minimum(np.arange(shape[1]), shape[1] - np.arange(shape[1])) <= reach
    best = _best_shift(ra, rb, shape, np.outer(near_y, near_x), min(s.min_overlap_px, size[0] * size[1] // 4))
    if best["n"]:
        dy, dx = int(round(best["dy"])), int(round(best["dx"]))
        joint = ra.valid & _shifted(rb.valid, dy, dx)
        tiles, agreement = tile_agreement(ra.data, _shifted(rb.data, dy, dx), joint, s.tile_px, s.tile_ncc)
        result = {
            "fine_ncc": best["ncc"],
            "background_ncc": _background_ncc(ra, rb, dy, dx, f_nm),
            "tiles": tiles,
            "tile_agreement": agreement,
            "dx_nm": dx_nm + best["dx"] * f_nm,
            "dy_nm": dy_nm + best["dy"] * f_nm,
            "joint": {"mask": joint, "x0": x0, "y0": y0, "f_nm": f_nm},
        }
    return result


def point_agreement(
    a_nm: np.ndarray, b_nm: np.ndarray, counted_a: np.ndarray, counted_b: np.ndarray, tolerance_nm: float
) -> tuple[int, float]:
    """How well the annotated points of two registered images agree.

    ``a_nm`` and ``b_nm`` are (n, 2) x/y points in one frame (nm); ``counted_a`` and
    ``counted_b`` (bool) mark the points judged (those deep inside the jointly valid area,
    :func:`deep_inside`): each should have a partner among *all* points of the other image
    within ``tolerance_nm``. Returns the number of judged points and the fraction that has
    one (NaN when there are none).
    """
    total = matched = 0
    for own, other in ((a_nm[counted_a], b_nm), (b_nm[counted_b], a_nm)):
        total += len(own)
        if len(own) and len(other):
            distance = np.sqrt(((own[:, None, :] - other[None, :, :]) ** 2).sum(axis=-1)).min(axis=1)
            matched += int((distance <= tolerance_nm).sum())
    return total, (matched / total if total else float("nan"))


def deep_inside(points_nm: np.ndarray, joint: dict, margin_nm: float) -> np.ndarray:
    """Which (n, 2) x/y points (nm, a's frame) lie at least ``margin_nm`` inside the jointly
    valid area ``joint`` (:func:`verify`): away from both images' borders and padding, so
    that a particle cut by a border or hidden by padding in one image is not judged."""
    mask = np.pad(joint["mask"], 1)
    depth = distance_transform_edt(mask)[1:-1, 1:-1] * joint["f_nm"]
    col = np.floor((points_nm[:, 0] - joint["x0"]) / joint["f_nm"]).astype(int)
    row = np.floor((points_nm[:, 1] - joint["y0"]) / joint["f_nm"]).astype(int)
    inside = (row >= 0) & (row < depth.shape[0]) & (col >= 0) & (col < depth.shape[1])
    deep = np.zeros(len(points_nm), dtype=bool)
    deep[inside] = depth[row[inside], col[inside]] >= margin_nm
    return deep


def own_level(width: int, height: int, pixel_size_nm: float, s: OverlapSettings) -> int:
    """The image's pyramid level: the ``k`` whose pixel, ``coarse_nm * 2**k``, shows the whole
    field in the nearest to ``max_side_px`` pixels (0.71-1.41 times it), not finer than the
    image's own pixel."""
    field = max(width, height) * pixel_size_nm / s.max_side_px / s.coarse_nm
    finest = math.ceil(math.log2(pixel_size_nm / s.coarse_nm) - 1e-9)
    cap = math.floor(math.log2(s.max_coarse_nm / s.coarse_nm) + 1e-9)
    return max(0, finest, min(cap, round(math.log2(field))))


def _prepare(image_id: str, pixels: np.ndarray, pixel_size_nm: float, top: int, s: OverlapSettings) -> _Image:
    """An image's fine view and its coarse views from its own level up to ``top`` (halving)."""
    height, width = pixels.shape
    own = own_level(width, height, pixel_size_nm, s)
    fine_nm = max(s.coarse_nm * 2**own / 2**s.fine_levels, pixel_size_nm, s.min_fine_nm)
    mean, valid = coarse(pixels, pixel_size_nm, fine_nm)
    mean = normal_scores(mean, valid)
    image = _Image(image_id, own, fine_nm, _View(mean, valid, mean))
    factor = s.coarse_nm * 2**own / fine_nm
    for level in range(own, top + 1):
        mean, valid = area_resample(mean, factor), area_resample(valid.astype(np.float32), factor) > 0.5
        image.levels[level] = _view(mean, valid, s, detrend=level >= 1)
        factor = 2.0
    return image


def _decide(score: dict, s: OverlapSettings) -> bool:
    return _evidence(score, s) >= 0


def _screen(score: dict, s: OverlapSettings) -> float:
    """Margin by which a coarse match passes the screen: ``ncc >= screen_ncc``, or
    ``ncc >= min_screen_ncc`` where the shift leads the next one by ``screen_lead``
    (``ncc - runner_up``: a shift that stands out of its own surface)."""
    lead = min(score["ncc"] - s.min_screen_ncc, score["ncc"] - score["runner_up"] - s.screen_lead)
    return max(score["ncc"] - s.screen_ncc, lead)


def _ambiguous(candidates: list[dict], s: OverlapSettings) -> list[dict]:
    """Candidates after the most significant one that also get the fine check (at most
    :data:`_VERIFIED` - 1): each with ``runner_up`` the highest NCC of a more significant
    candidate, where it then passes the screen (:func:`_screen`). A broad ridge of shifts
    (a smooth pattern shared at the coarse scale) can outrank, by overlap size alone, the
    true shift of a higher NCC (issue 15: TBE at 16 nm, the true shift 12th by significance).
    """
    out = []
    for k, candidate in enumerate(candidates[1:], start=1):
        trial = dict(candidate, runner_up=max(c["ncc"] for c in candidates[:k]))
        if _screen(trial, s) >= 0:
            out.append(trial)
    return out[: _VERIFIED - 1]


def _evidence(score: dict, s: OverlapSettings) -> float:
    """The least margin by which the pair passes the tests of step 5 (negative: the most
    failed one; near misses are the rejected pairs of highest evidence)."""
    if score["n"] < s.min_overlap_px or score["fraction"] < s.min_overlap_fraction:
        return -1.0
    margins = [_screen(score, s)]
    if "fine_ncc" in score:
        margins += [
            score["ncc"] - score["runner_up"] - s.min_margin,
            score["fine_ncc"] - s.min_ncc,
            score["background_ncc"] - s.min_background_ncc,
            (score["tile_agreement"] if score["tiles"] >= s.min_tiles else -1.0) - s.min_tile_agreement,
        ]
        if score.get("points", 0):
            margins.append(score["point_agreement"] - s.min_point_agreement)
    else:
        margins.append(-1.0)  # never verified
    return min(margins)


def _points_score(
    a: pd.Series, b: pd.Series, points: dict[str, np.ndarray], scale: float, score: dict, s: OverlapSettings
) -> dict:
    """:func:`point_agreement` of two images' annotations, b placed at (dx, dy) nm in a,
    judging the points deep inside the jointly valid area (``point_margin_nm``)."""
    empty = np.zeros((0, 2))
    a_nm = points.get(a.image_id, empty) * a.pixel_size_nm
    b_in_a = points.get(b.image_id, empty) * (b.pixel_size_nm * scale) + [score["dx_nm"], score["dy_nm"]]
    joint = score["joint"]
    if joint is None:
        return {"points": 0, "point_agreement": float("nan")}
    deep_a, deep_b = deep_inside(a_nm, joint, s.point_margin_nm), deep_inside(b_in_a, joint, s.point_margin_nm)
    n, agreement = point_agreement(a_nm, b_in_a, deep_a, deep_b, s.point_tolerance_nm)
    return {"points": n, "point_agreement": agreement}


def _verified(
    row_a: pd.Series,
    row_b: pd.Series,
    a: _Image,
    b: _Image,
    score: dict,
    coarse_nm: float,
    points: dict | None,
    s: OverlapSettings,
) -> dict:
    """``score`` (a coarse match at ``score["scale"]``) with the fine check (step 4) and the
    points; where it fails, tried again at the relative scales of ``scale_search`` (recorded
    pixel sizes a few percent off), the overlap's centre kept in place. The best try."""
    best = None
    for relative in (1.0, *s.scale_search):
        scale = score["scale"] * relative
        width_b, height_b = b.fine.mean.shape[1] * b.fine_nm, b.fine.mean.shape[0] * b.fine_nm
        width_a, height_a = a.fine.mean.shape[1] * a.fine_nm, a.fine.mean.shape[0] * a.fine_nm
        trial = dict(score, scale=scale)
        for axis, extent_a, extent_b in (("dx_nm", width_a, width_b), ("dy_nm", height_a, height_b)):
            shift = score[axis]
            centre = (max(0.0, shift) + min(extent_a, shift + extent_b * score["scale"])) / 2
            trial[axis] = centre - (centre - shift) * relative
        trial.update(verify(a, b, scale, trial["dx_nm"], trial["dy_nm"], coarse_nm, s))
        if points is not None:
            trial.update(_points_score(row_a, row_b, points, scale, trial, s))
        trial["evidence"] = _evidence(trial, s)
        if best is None or trial["evidence"] > best["evidence"]:
            best = trial
        if best["evidence"] >= 0 or best["fine_ncc"] < s.min_ncc - _SEARCH_WITHIN:
            break  # found, or too far off for a few percent of scale to explain
    return best


def score_class(
    images: pd.DataFrame, root: str | Path, s: OverlapSettings, points: dict[str, np.ndarray] | None = None
) -> pd.DataFrame:
    """Score every pair of images of one class; one row per pair (:data:`PAIR_COLUMNS`).

    ``points`` maps image ids to their annotated (x, y) pixels; without it the decision
    rests on the images alone.
    """
    images = images.sort_values("image_id", kind="stable").reset_index(drop=True)
    cls = images["class"].iloc[0]
    top = max(own_level(r.width, r.height, r.pixel_size_nm, s) for r in images.itertuples(index=False))
    prepared = [
        _prepare(r.image_id, read_image(Path(root) / r.path), r.pixel_size_nm, top, s)
        for r in images.itertuples(index=False)
    ]
    pending = {
        (i, j): max(prepared[i].own, prepared[j].own) for i in range(len(images)) for j in range(i + 1, len(images))
    }
    results: dict[tuple[int, int], tuple[float, dict]] = {}
    for scale in [1.0, *sorted(sc for sc in s.fallback_scales if sc != 1.0)]:
        moved: dict[tuple[int, int], _View] = {}
        for (i, j), k in pending.items():
            if (j, k) not in moved:
                view = prepared[j].levels[k]
                moved[j, k] = view if scale == 1.0 else _rescaled(view, scale, s)
            registered = register(prepared[i].levels[k], moved[j, k], s)
            coarse_nm = s.coarse_nm * 2**k
            # the best shift, and the next ones that pass the screen (same-class particles
            # can make a wrong shift score best at the coarse scale; the fine check tells)
            tries = registered["candidates"][:1] or [registered]
            tries += _ambiguous(registered["candidates"], s)
            for candidate in tries:
                score = dict(candidate, fraction=candidate["n"] / registered["smaller"])
                score["dx_nm"], score["dy_nm"] = score["dx"] * coarse_nm, score["dy"] * coarse_nm
                score["area_nm2"] = score["n"] * coarse_nm**2
                score["scale"], score["evidence"] = scale, _evidence(score, s)
                if _screen(score, s) >= 0:
                    score = _verified(
                        images.loc[i], images.loc[j], prepared[i], prepared[j], score, coarse_nm, points, s
                    )
                if (i, j) not in results or score["evidence"] > results[i, j][1]["evidence"]:
                    results[i, j] = (score["scale"], score)
        pending = {pair: k for pair, k in pending.items() if results[pair][1]["evidence"] < 0}
    rows = []
    for (i, j), (scale, score) in sorted(results.items()):
        rows.append(
            (
                cls,
                images.image_id[i],
                images.image_id[j],
                scale,
                round(float(score["dx_nm"]), 1),
                round(float(score["dy_nm"]), 1),
                round(score["ncc"], 4),
                round(score["runner_up"], 4),
                round(score.get("fine_ncc", float("nan")), 4),
                round(score.get("background_ncc", float("nan")), 4),
                score.get("tiles", 0),
                round(score.get("tile_agreement", float("nan")), 4),
                round(score["fraction"], 4),
                round(score["area_nm2"], 1),
                score.get("points", 0),
                round(score.get("point_agreement", float("nan")), 4),
                round(score["evidence"], 4),
                OVERLAP if score["evidence"] >= 0 else DISTINCT,
            )
        )
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def _score_class_logged(
    group: pd.DataFrame, root: str | Path, s: OverlapSettings, points: dict[str, np.ndarray] | None
) -> pd.DataFrame:
    started = time.time()
    pairs = score_class(group, root, s, points)
    log.info(
        "%s: %d images, %d pairs, %d overlaps (%.1f s)",
        group["class"].iloc[0],
        len(group),
        len(pairs),
        int((pairs.decision == OVERLAP).sum()),
        time.time() - started,
    )
    return pairs


def score_pairs(
    images: pd.DataFrame, root: str | Path, s: OverlapSettings, particles: pd.DataFrame | None = None, threads: int = 1
) -> pd.DataFrame:
    """Score all same-class pairs of ``images`` (the raw image table) read from ``root``;
    ``particles`` (the particle table) adds the annotation check. ``threads`` > 1 scores
    classes in that many worker processes (largest classes first); the table is the same."""
    points = None if particles is None else {k: g[["x", "y"]].to_numpy(float) for k, g in particles.groupby("image_id")}
    groups = [group for _, group in images.groupby("class", sort=True)]

    def own_points(group):
        return None if points is None else {i: points[i] for i in group.image_id if i in points}

    if threads > 1 and len(groups) > 1:
        order = sorted(groups, key=len, reverse=True)
        # fork, not spawn: a spawned worker imports the caller's main module again, and a
        # Snakemake script's module level runs the rule
        with ProcessPoolExecutor(max_workers=threads, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(_score_class_logged, g, root, s, own_points(g)) for g in order]
            frames = [f.result() for f in futures]
    else:
        frames = [_score_class_logged(g, root, s, own_points(g)) for g in groups]
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
    ranked = table.sort_values(
        ["n_particles", "pixel_size_nm", "image_id"], ascending=[False, True, True], kind="stable"
    )
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


def find_overlaps(images_csv, particles_csv, root, pairs_csv, kept_csv, settings: dict, threads: int = 1) -> None:
    """Rule ``find_overlaps``: score all pairs, group, write both tables (atomically)."""
    s = OverlapSettings.from_config(settings)
    images = pd.read_csv(images_csv, dtype={"image_id": str})
    particles = pd.read_csv(particles_csv, dtype={"image_id": str})
    pairs = score_pairs(images, root, s, particles, threads)
    kept = group_images(images, pairs)
    log.info(
        "%d pairs scored, %d overlapping; %d of %d images kept",
        len(pairs),
        int((pairs.decision == OVERLAP).sum()),
        int(kept.kept.sum()),
        len(kept),
    )
    write_csv(pairs_csv, pairs)
    write_csv(kept_csv, kept)
