"""Lanczos-3 rescaling: kernel, mirror indexing, geometry, windowed == full image, PIL."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from temvirus.rescale import lanczos3, reflect_index, rescale_image, rescaled_size, weights_matrix, window, windows

SIZE = 256


def sample_image(height: int = 150, width: int = 170) -> np.ndarray:
    """Smooth structure plus pixel noise over most of the uint16 range."""
    gen = np.random.default_rng(3)
    r, c = np.mgrid[0:height, 0:width]
    smooth = 30000 + 20000 * np.sin(r / 7.0) * np.cos(c / 11.0)
    return np.clip(smooth + gen.normal(0, 4000, (height, width)), 0, 65535).astype(np.uint16)


def test_kernel_is_lanczos3():
    assert lanczos3(0.0) == 1.0
    assert np.allclose(lanczos3(np.array([-2.0, -1.0, 1.0, 2.0])), 0.0, atol=1e-15)
    assert np.all(lanczos3(np.array([-3.0, 3.0, 3.5, -7.0])) == 0.0)
    x = 0.4
    assert lanczos3(x) == pytest.approx(np.sin(np.pi * x) / (np.pi * x) * np.sin(np.pi * x / 3) / (np.pi * x / 3))


@pytest.mark.parametrize("n", [2, 3, 7])
def test_reflect_index_matches_numpy_pad_reflect(n):
    pad = 3 * n + 2  # several periods each side
    expected = np.pad(np.arange(n), pad, mode="reflect")
    assert np.array_equal(reflect_index(np.arange(-pad, n + pad), n), expected)
    assert np.all(reflect_index(np.arange(-5, 5), 1) == 0)


@pytest.mark.parametrize("pixel_size", [0.26, 0.8, 2.0, 5.57])
def test_weights_rows_sum_to_one(pixel_size):
    n = 40
    weights = weights_matrix(np.arange(rescaled_size(n, pixel_size)), pixel_size, n)
    assert np.allclose(np.asarray(weights.sum(axis=1)).ravel(), 1.0)
    assert weights.shape == (rescaled_size(n, pixel_size), n)


def test_geometry_follows_pixel_centres():
    """A bright source pixel (r, c) lands at ((c + 0.5) s, (r + 0.5) s) nm."""
    image = np.zeros((100, 100))
    image[50, 40] = 1000.0
    out = rescale_image(image, 4.0)  # source column 40 covers 160..164 nm, centre 162 nm
    row, col = out[201], out[:, 161]
    assert out.shape == (400, 400)
    assert np.argmax(row) in (161, 162) and row[161] == pytest.approx(row[162])
    assert np.argmax(col) in (201, 202) and col[201] == pytest.approx(col[202])
    # the window centred on that point has the peak at its centre pixels 127/128
    patch = window(image, 4.0, 162.0, 202.0, SIZE)
    peak = np.unravel_index(np.argmax(patch), patch.shape)
    assert peak[0] in (127, 128) and peak[1] in (127, 128)


@pytest.mark.parametrize("pixel_size", [0.26, 0.5, 0.8, 1.0, 2.0, 5.57])
def test_window_equals_full_rescaling_with_mirror_padding(pixel_size):
    image = sample_image()
    value_range = float(image.max()) - float(image.min())
    full = rescale_image(image, pixel_size, block_rows=37)  # several blocks
    out_h, out_w = full.shape
    assert (out_h, out_w) == (rescaled_size(150, pixel_size), rescaled_size(170, pixel_size))
    padded = np.pad(full, SIZE, mode="reflect")
    points = [(0.0, 0.0), (out_w / 2, out_h / 2), (out_w - 0.3, out_h - 0.7), (3.2, out_h - 1.0), (out_w + 40.0, -25.0)]
    for x_nm, y_nm in points:
        top, left = int(np.floor(y_nm - SIZE / 2 + 0.5)), int(np.floor(x_nm - SIZE / 2 + 0.5))
        expected = padded[top + SIZE : top + 2 * SIZE, left + SIZE : left + 2 * SIZE]
        got = window(image, pixel_size, x_nm, y_nm, SIZE)
        assert got.shape == (SIZE, SIZE)
        assert np.abs(got - expected).max() <= 1e-3 * value_range, (pixel_size, x_nm, y_nm)


def test_constant_image_stays_constant():
    image = np.full((60, 50), 1234, dtype=np.uint16)
    for pixel_size in (0.3, 3.3):
        assert np.allclose(rescale_image(image, pixel_size), 1234.0)
        assert np.allclose(window(image, pixel_size, 5.0, 7.0, 64), 1234.0)


@pytest.mark.parametrize(
    ("pixel_size", "shape"), [(0.5, (150, 170)), (0.8, (150, 170)), (2.0, (150, 170)), (4.0, (60, 70))]
)
def test_matches_pil_lanczos_away_from_the_border(pixel_size, shape):
    """PIL truncates the kernel at the border where we mirror: equal inside, different near it."""
    image = sample_image(*shape).astype(np.float32)
    ours = rescale_image(image, pixel_size)
    pil = np.asarray(Image.fromarray(image, mode="F").resize(ours.shape[::-1], Image.LANCZOS), dtype=np.float64)
    margin = int(np.ceil(3 / min(pixel_size, 1.0) * pixel_size)) + 1  # kernel reach, output pixels
    inner = (slice(margin, -margin), slice(margin, -margin))
    value_range = float(image.max() - image.min())
    assert np.abs(ours[inner] - pil[inner]).max() <= 1e-5 * value_range
    assert np.abs(ours - pil).max() > 1e-3 * value_range  # the border handling differs


@pytest.mark.parametrize(("pixel_size", "n_windows"), [(0.3, 1), (0.3, 12), (0.8, 40), (2.0, 3)])
def test_windows_equal_window_whichever_way_they_are_computed(pixel_size, n_windows):
    """Few windows are resampled one by one, many below 1 nm/px are cropped from the whole
    rescaled image (cheaper): the values are the same."""
    image = sample_image(300, 340)
    gen = np.random.default_rng(n_windows)
    out_w, out_h = rescaled_size(340, pixel_size), rescaled_size(300, pixel_size)
    centres = gen.uniform([-20, -20], [out_w + 20, out_h + 20], (n_windows, 2))
    got = list(windows(image, pixel_size, centres, 64))
    assert len(got) == n_windows
    for patch, (x_nm, y_nm) in zip(got, centres):
        assert patch.shape == (64, 64)
        assert np.abs(patch - window(image, pixel_size, x_nm, y_nm, 64)).max() <= 1e-9 * 65535


def test_a_wide_region_is_resampled_in_bands_of_columns_to_the_same_values():
    """A heat-map tile of a micrograph with fine pixels (4 µm at 0.5 nm/px) took its whole source
    region as float64 at once (about 1.25 GB for a 20000 px image at its peak); past
    ``MAX_BLOCK_BYTES`` the region goes in bands of columns, to the same values bit for bit."""
    from temvirus.rescale import _resample_rows, _taps

    image = np.random.default_rng(4).integers(0, 65535, (400, 300), dtype=np.uint16)
    taps, weights = _taps(np.arange(60), 400 / 60, 400)  # a 6.7x reduction, as to a heat map's scale
    whole = _resample_rows(image, taps, weights, slice(None))
    banded = _resample_rows(image, taps, weights, slice(None), max_bytes=8 * 400 * 7)  # 7 columns at a time
    assert whole.shape == (60, 300)
    np.testing.assert_array_equal(banded, whole)
