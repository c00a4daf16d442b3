"""Lanczos-3 resampling of raw images to 1 nm/px, whole or one window at a time.

Geometry (``docs/architecture.md``): a raw pixel ``(r, c)`` of size ``s`` nm covers
``[c, c+1) x [r, r+1)`` in pixel units, so output pixel ``j`` of the 1 nm/px image, centred at
``j + 0.5`` nm, samples the source at index position ``p = (j + 0.5) / s - 0.5``. The output
image has ``round(n * s)`` pixels along a side of ``n`` source pixels.

Kernel: ``L(x) = sinc(x) sinc(x / 3)`` for ``|x| < 3``. When downsampling (``s < 1``) the kernel
is stretched by ``1 / s`` (antialiasing, as in PIL and ImageMagick); weights are normalised to
sum 1. The resampler is separable: one sparse (banded) weights matrix per axis, ``Wy @ I @ Wx.T``.

Borders are mirrored (``numpy.pad`` mode ``reflect``: the edge pixel is not repeated), twice:
source taps beyond the raw image reflect in source pixels, and output pixels beyond the
rescaled image (a patch reaching past the border) reflect in rescaled pixels. So
:func:`window` equals cropping ``numpy.pad(rescale_image(...), mode="reflect")``, without ever
materialising the rescaled image (a 2048 px image at 5.57 nm/px would be 11,400 px): it gathers
only the source rows and columns the window needs.

Differences from ``PIL.Image.resize(..., LANCZOS)``: PIL uses the same kernel, stretching and
sampling positions (for sizes with ``n * s`` integral) but truncates and renormalises the kernel
at the border instead of mirroring, so results agree away from the border (more than
``3 / min(s, 1)`` source pixels from it) up to float rounding, and differ near it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

#: Lanczos kernel radius ``a`` (Lanczos-3)
RADIUS = 3
#: pixel size of the rescaled images and patches, nm
TARGET_NM = 1.0
#: the most source pixels, as float64 bytes, resampled at once (128 MiB); wider regions go in bands
#: of columns, so that a heat-map tile of a micrograph with fine pixels (4 µm at 0.5 nm/px: 8000 px
#: square, 512 MiB as float64) takes bounded memory. Patches and the default data's images stay below it
MAX_BLOCK_BYTES = 128 << 20


def lanczos3(x: np.ndarray) -> np.ndarray:
    """The Lanczos-3 kernel ``sinc(x) sinc(x/3)`` on ``|x| < 3``, 0 outside and exactly 0 at non-zero integers."""
    x = np.asarray(x, dtype=np.float64)
    zero = (np.abs(x) >= RADIUS) | ((x == np.round(x)) & (x != 0))
    return np.where(zero, 0.0, np.sinc(x) * np.sinc(x / RADIUS))


def reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Map integer indices into ``[0, n)`` by mirroring without repeating the edge (``reflect``)."""
    index = np.asarray(index, dtype=np.int64)
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    folded = np.mod(index, period)
    return np.where(folded >= n, period - folded, folded)


def rescaled_size(n: int, pixel_size_nm: float) -> int:
    """Pixels of the 1 nm/px image along a side of ``n`` source pixels of ``pixel_size_nm``."""
    return max(1, int(np.floor(n * pixel_size_nm / TARGET_NM + 0.5)))


def _taps(out_index: np.ndarray, pixel_size_nm: float, n_src: int) -> tuple[np.ndarray, np.ndarray]:
    """Source taps and weights, both ``(len(out_index), 2 * ceil(3 / min(s, 1)) + 1)``, of output
    pixels ``out_index``: taps mirrored into ``[0, n_src)``, weights normalised to sum 1 per row."""
    scale = pixel_size_nm / TARGET_NM  # output pixels per source pixel
    stretch = min(scale, 1.0)
    centre = (np.asarray(out_index, dtype=np.float64) + 0.5) / scale - 0.5
    half = int(np.ceil(RADIUS / stretch))
    taps = np.floor(centre)[:, None].astype(np.int64) + np.arange(-half, half + 1)
    weights = lanczos3((centre[:, None] - taps) * stretch)
    weights /= weights.sum(axis=1, keepdims=True)
    return reflect_index(taps, n_src), weights


def _banded(taps: np.ndarray, weights: np.ndarray, first: int, n_cols: int) -> sp.csr_matrix:
    """The ``(len(taps), n_cols)`` banded weights matrix on source columns ``first + [0, n_cols)``;
    mirrored taps that coincide stay separate entries (products sum them)."""
    n, k = taps.shape
    return sp.csr_matrix((weights.ravel(), (taps - first).ravel(), np.arange(0, n * k + 1, k)), shape=(n, n_cols))


def weights_matrix(out_index: np.ndarray, pixel_size_nm: float, n_src: int) -> sp.csr_matrix:
    """Sparse ``(len(out_index), n_src)`` Lanczos-3 weights for output pixels ``out_index``.

    ``out_index`` are pixel indices of the rescaled axis, already inside it; row ``i`` holds the
    normalised weights of the source pixels (taps mirrored into ``[0, n_src)``) for pixel
    ``out_index[i]``: about ``6 / min(s, 1)`` non-zeros per row (banded).
    """
    matrix = _banded(*_taps(out_index, pixel_size_nm, n_src), 0, n_src)
    matrix.sum_duplicates()  # mirrored taps
    matrix.eliminate_zeros()
    return matrix


def _selection(taps: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """The source index of each row if every row picks one pixel with weight 1 (integral scale 1), else None."""
    ones = weights == 1.0
    if np.all(ones.any(axis=1)):
        return taps[np.arange(len(taps)), ones.argmax(axis=1)]
    return None


def _resample_rows(
    image: np.ndarray, taps: np.ndarray, weights: np.ndarray, cols: slice, max_bytes: int = MAX_BLOCK_BYTES
) -> np.ndarray:
    """``W @ image[:, cols]`` (float64) for the banded weights ``W`` given by ``taps``, ``weights``,
    reading only the source rows between the smallest and largest tap, at most ``max_bytes`` of
    them as float64 at a time (in bands of columns beyond that)."""
    first, stop = int(taps.min()), int(taps.max()) + 1
    band, source = _banded(taps, weights, first, stop - first), image[first:stop, cols]
    step = max(1, max_bytes // (8 * (stop - first)))
    if source.shape[1] <= step:
        return band @ source.astype(np.float64)
    out = np.empty((band.shape[0], source.shape[1]))
    for start in range(0, source.shape[1], step):
        out[:, start : start + step] = band @ source[:, start : start + step].astype(np.float64)
    return out


def _window_pixels(
    shape: tuple[int, int], pixel_size_nm: float, x_nm: float, y_nm: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the rescaled image (mirrored into it) of the window centred at ``(x_nm, y_nm)``."""
    top = int(np.floor(y_nm - size / 2 + 0.5))
    left = int(np.floor(x_nm - size / 2 + 0.5))
    offsets = np.arange(size)
    return (
        reflect_index(top + offsets, rescaled_size(shape[0], pixel_size_nm)),
        reflect_index(left + offsets, rescaled_size(shape[1], pixel_size_nm)),
    )


def window(image: np.ndarray, pixel_size_nm: float, x_nm: float, y_nm: float, size: int = 256) -> np.ndarray:
    """The ``size x size`` float64 window of the 1 nm/px image centred at ``(x_nm, y_nm)``.

    The window is aligned on the rescaled pixel grid: its top-left pixel is
    ``round(y_nm - size/2), round(x_nm - size/2)`` (halves round up), so its centre lies within
    half a nanometre of the requested point and it equals the same crop of the mirror-padded
    :func:`rescale_image`. Only the source rows and columns it needs are read, and the banded
    weights are applied as sparse matrices: about ``size * 6 / min(s, 1)`` multiply-adds per
    output row and column instead of a dense ``size x size / s`` product.
    """
    rows_out, cols_out = _window_pixels(image.shape, pixel_size_nm, x_nm, y_nm, size)
    return _resample_at(image, pixel_size_nm, rows_out, cols_out)


def region(image: np.ndarray, pixel_size_nm: float, left: int, top: int, width: int, height: int) -> np.ndarray:
    """Rows ``top .. top + height - 1`` and columns ``left .. left + width - 1`` (float64) of the
    mirror-padded 1 nm/px image, computed like :func:`window` (only the source pixels they need).

    A rectangular :func:`window`: the tiles of a whole micrograph at 1 nm/px, one at a time
    (:mod:`temvirus.micrographs`); pixels past the border are mirrored as in :func:`window`.
    """
    rows_out = reflect_index(top + np.arange(height), rescaled_size(image.shape[0], pixel_size_nm))
    cols_out = reflect_index(left + np.arange(width), rescaled_size(image.shape[1], pixel_size_nm))
    return _resample_at(image, pixel_size_nm, rows_out, cols_out)


def _resample_at(image: np.ndarray, pixel_size_nm: float, rows_out: np.ndarray, cols_out: np.ndarray) -> np.ndarray:
    """The 1 nm/px pixels ``rows_out x cols_out`` (indices inside the rescaled image) of ``image``."""
    height, width = image.shape
    rows, cols = _taps(rows_out, pixel_size_nm, height), _taps(cols_out, pixel_size_nm, width)
    pick_rows, pick_cols = _selection(*rows), _selection(*cols)
    if pick_rows is not None and pick_cols is not None:  # already at 1 nm/px: a plain (mirrored) crop
        return image[np.ix_(pick_rows, pick_cols)].astype(np.float64)
    first, stop = int(cols[0].min()), int(cols[0].max()) + 1
    vertical = _resample_rows(image, *rows, slice(first, stop))  # (size, stop - first)
    return np.ascontiguousarray((_banded(*cols, first, stop - first) @ np.ascontiguousarray(vertical.T)).T)


def rescale_image(image: np.ndarray, pixel_size_nm: float, *, block_rows: int = 512) -> np.ndarray:
    """The whole image rescaled to 1 nm/px (float64), computed in blocks of output rows.

    Memory is the output plus one block; use it to write rescaled images, not for patches
    (see :func:`window`).
    """
    height, width = image.shape
    out_h, out_w = rescaled_size(height, pixel_size_nm), rescaled_size(width, pixel_size_nm)
    wx = weights_matrix(np.arange(out_w), pixel_size_nm, width)
    out = np.empty((out_h, out_w), dtype=np.float64)
    for start in range(0, out_h, block_rows):
        rows = np.arange(start, min(start + block_rows, out_h))
        vertical = _resample_rows(image, *_taps(rows, pixel_size_nm, height), slice(None))
        out[rows] = (wx @ np.ascontiguousarray(vertical.T)).T
    return out


def windows(image: np.ndarray, pixel_size_nm: float, centres_nm: np.ndarray, size: int = 256) -> Iterator[np.ndarray]:
    """Yield :func:`window` of each ``(x_nm, y_nm)`` row of ``centres_nm``, computed the cheaper way.

    Each window alone costs about ``size * K * (size / s + size)`` multiply-adds (``K = 6 / min(s, 1)``
    taps); rescaling the whole image once (:func:`rescale_image`) and cropping costs about
    ``H' * K * (W + W')`` for a ``H x W`` image rescaled to ``H' x W'``. The whole image is rescaled
    when that is less than the windows together: many particles below 1 nm/px, where the rescaled
    image is smaller than its patches. Both ways give the same values (to float rounding).
    """
    height, width = image.shape
    out_h, out_w = rescaled_size(height, pixel_size_nm), rescaled_size(width, pixel_size_nm)
    taps = 2 * int(np.ceil(RADIUS / min(pixel_size_nm / TARGET_NM, 1.0))) + 1
    per_window = size * taps * (min(width, size * TARGET_NM / pixel_size_nm + taps) + size)
    if out_h * taps * (width + out_w) < len(centres_nm) * per_window:
        full = rescale_image(image, pixel_size_nm)
        for x_nm, y_nm in centres_nm:
            yield full[np.ix_(*_window_pixels(image.shape, pixel_size_nm, x_nm, y_nm, size))]
    else:
        for x_nm, y_nm in centres_nm:
            yield window(image, pixel_size_nm, x_nm, y_nm, size)


def quantize(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Round to the nearest integer (half to even) and clip to ``[low, high]``, as uint16."""
    return np.clip(np.rint(values), low, high).astype(np.uint16)
