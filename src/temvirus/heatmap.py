"""Particle-centre heat maps (issue 14): a small fully convolutional network finds particles.

The network (:class:`HeatNet`, a U-Net with one level per entry of ``widths``: five by default,
a few thousand weights per level) sees a micrograph rescaled to a coarse pixel size
(``heat_nm``, the config's 6 nm/px: the smallest classes, 25-30 nm, are 4-5 px across,
Cowpox's 270-350 nm are 45-58 px, inside its reach of 123 px each side) and standardised by
the image's mean and s.d. It predicts two maps of the same size:

* ``heat``: the logit of a particle centre at each pixel, trained towards Gaussians at the
  annotated centres (points, centre-line vertices, 2-point midpoints), ``sigma =
  sigma_fraction x`` the class's typical diameter (at least 1 px), with the penalty-reduced
  focal loss of CenterNet (Zhou et al. 2019, "Objects as points", arXiv:1904.07850): the pixel
  nearest each centre is the positive, the others negatives weighted by ``(1 - target)^4``;
* ``size``: ``log(d / 100 nm)`` of the particle centred there (L1 loss where the target is
  above 0.5), so that a peak comes with the diameter that sets its suppression distance and
  the measurement's search range.

Training (:func:`train_heatnet`) draws random ``crop_px`` crops (with flips and quarter turns)
from a bank of crops of the training images (centred on annotated particles and at random),
so memory stays bounded whatever the number of images. Inference (:func:`heat_peaks`) works in
bounded tiles (``tile_px`` cores plus a margin of the receptive field), each rescaled from the
raw image with the project's Lanczos-3 resampler (:func:`temvirus.rescale.region`); peaks are
the local maxima of the heat map (3x3) above ``floor``, refined to sub-pixel by a parabola.

The trained weights travel inside the detector's JSON (:func:`state_to_json`), so the detector
stays one text file (about 0.5 MB).
"""

from __future__ import annotations

import base64
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from torch import nn

from temvirus.models import TrainingDiverged
from temvirus.rescale import region, rescaled_size

log = logging.getLogger(__name__)

#: sizes are predicted as log(d / SIZE_UNIT_NM)
SIZE_UNIT_NM = 100.0


class HeatNet(nn.Module):
    """U-Net with additive skips, one level per width (``widths[k]`` channels at ``2**k`` times
    the input's pixel size): ``(B, 1, H, W)`` standardised image -> ``(B, 2, H, W)`` (heat logit,
    log size); ``H`` and ``W`` multiples of :attr:`unit` (``2**(len(widths) - 1)``)."""

    def __init__(self, widths: Sequence[int] = (8, 16, 24, 32, 48)):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        widths = list(widths)
        levels = len(widths) - 1
        self.unit = 2**levels
        #: pixels each side an output pixel depends on (the receptive field's half-width, bound
        #: above: the convolutions going down and up, the pooling and the upsampling)
        self.reach = 2 * (2 ** (levels + 1) - 1) + (2**levels - 1) + 2 * (2**levels - 1) + 2**levels
        self.down = nn.ModuleList([block(1, widths[0])] + [block(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.lateral = nn.ModuleList([nn.Conv2d(b, a, 1) for a, b in zip(widths[:-1], widths[1:])])
        self.up = nn.ModuleList([block(a, a) for a in widths[:-1]])
        self.head = nn.Conv2d(widths[0], 2, 1)
        nn.init.constant_(self.head.bias, 0.0)
        with torch.no_grad():
            self.head.bias[0] = -4.0  # a rare positive: start near p = 0.02

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for k in reversed(range(len(self.up))):
            x = nn.functional.interpolate(self.lateral[k](x), scale_factor=2, mode="nearest")
            x = self.up[k](x + skips[k])
        return self.head(x)


def state_to_json(model: nn.Module) -> dict:
    """The model's state as ``{name: {shape, data}}`` (float32 little-endian, base64)."""
    return {
        k: {"shape": list(v.shape), "data": base64.b64encode(v.detach().cpu().numpy().astype("<f4").tobytes()).decode()}
        for k, v in model.state_dict().items()
    }


def model_from_json(state: dict, widths: Sequence[int]) -> HeatNet:
    """A :class:`HeatNet` with the weights of :func:`state_to_json`, in evaluation mode."""
    model = HeatNet(widths)
    tensors = {
        k: torch.from_numpy(np.frombuffer(base64.b64decode(v["data"]), dtype="<f4").reshape(v["shape"]).copy())
        for k, v in state.items()
    }
    for k, v in model.state_dict().items():  # integer buffers (num_batches_tracked) keep their dtype
        tensors[k] = tensors[k].to(v.dtype)
    model.load_state_dict(tensors)
    return model.eval()


# ------------------------------------------------------------------------- images


def black_padding_box(pixels: np.ndarray, min_fraction: float = 0.01) -> tuple[int, int, int, int] | None:
    """Top, bottom, left and right (exclusive, px) of the micrograph within the black padding of a
    crop (a crop box that reached past its micrograph: the real crops, the planted re-images of
    :mod:`temvirus.synth.planted`): the whole rows and columns along the borders at the image's
    minimum value. ``None`` when they are under ``min_fraction`` of the image or every pixel is at
    the minimum (a blank frame has nothing to pad: its mean and s.d. are its own). Areas clipped
    to black inside the field, or along part of a border, are image content (they do not fill a
    whole line). No copy of the image: row and column maxima only."""
    low = pixels.min()
    rows, cols = np.flatnonzero(pixels.max(axis=1) > low), np.flatnonzero(pixels.max(axis=0) > low)
    if not rows.size:
        return None
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if (bottom - top) * (right - left) > (1 - min_fraction) * pixels.size:
        return None
    return top, bottom, left, right


def _mean_std(pixels: np.ndarray, chunk_px: int = 1 << 18) -> tuple[float, float]:
    """Mean and s.d. (at least 1e-6) of ``pixels`` (2-D, any type) in float64, a band of rows of about
    ``chunk_px`` pixels at a time: no float copy of the whole image."""
    rows = max(1, chunk_px // max(1, pixels.shape[1]))
    shift = float(np.asarray(pixels[:: max(1, len(pixels) // 64), :: max(1, pixels.shape[1] // 64)]).mean())
    total = squares = 0.0
    for start in range(0, len(pixels), rows):
        block = np.asarray(pixels[start : start + rows], dtype=np.float64) - shift
        total, squares = total + float(block.sum()), squares + float(np.square(block).sum())
    n = pixels.size
    return shift + total / n, max(math.sqrt(max(squares / n - (total / n) ** 2, 0.0)), 1e-6)


@dataclass
class Prepared:
    """A raw image ready for tiling: black padding (:func:`black_padding_box`) filled with the mean
    of the rest (a copy in the image's own pixel type, only where there is padding), the mean and
    s.d. of the valid pixels, and the box of the valid pixels (``None`` without padding)."""

    pixels: np.ndarray
    pixel_size_nm: float
    mean: float
    std: float
    box: tuple[int, int, int, int] | None

    @classmethod
    def of(cls, pixels: np.ndarray, pixel_size_nm: float) -> Prepared:
        box = black_padding_box(pixels)
        top, bottom, left, right = box or (0, pixels.shape[0], 0, pixels.shape[1])
        valid = pixels[top:bottom, left:right]
        step = max(1, int(math.sqrt(valid.size / 1e6)))
        mean, std = _mean_std(valid[::step, ::step])
        if box is None:
            return cls(pixels, pixel_size_nm, mean, std, None)
        fill = round(mean) if np.issubdtype(pixels.dtype, np.integer) else mean
        filled = np.full_like(pixels, fill)
        filled[top:bottom, left:right] = valid
        return cls(filled, pixel_size_nm, mean, std, box)

    def coarse_shape(self, heat_nm: float) -> tuple[int, int]:
        """Rows and columns of the image at ``heat_nm`` nm/px."""
        px = self.pixel_size_nm / heat_nm
        return rescaled_size(self.pixels.shape[0], px), rescaled_size(self.pixels.shape[1], px)

    def tile(self, heat_nm: float, left: int, top: int, width: int, height: int) -> np.ndarray:
        """Standardised float32 pixels of the ``heat_nm`` nm/px image (mirrored past the border)."""
        out = region(self.pixels, self.pixel_size_nm / heat_nm, left, top, width, height)
        return ((out - self.mean) / self.std).astype(np.float32)

    def near_padding(self, x_nm: np.ndarray, y_nm: np.ndarray, d_nm: np.ndarray) -> np.ndarray:
        """True for points closer than half their diameter to the padding (or in it)."""
        x, y = np.asarray(x_nm, float), np.asarray(y_nm, float)
        if self.box is None:
            return np.zeros(len(x), bool)
        top, bottom, left, right = (v * self.pixel_size_nm for v in self.box)
        height, width = (v * self.pixel_size_nm for v in self.pixels.shape)
        # the distance to each padded side (a side of the box on the image's border is not padding)
        sides = [(x - left, left > 0), (right - x, right < width), (y - top, top > 0), (bottom - y, bottom < height)]
        distance = np.min([np.where(padded, d, np.inf) for d, padded in sides], axis=0)
        return distance < 0.5 * np.asarray(d_nm)


# ------------------------------------------------------------------------- targets, training


def targets(
    shape: tuple[int, int], xy_px: np.ndarray, d_px: np.ndarray, positive: np.ndarray, sigma_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heat target, peak mask and log-size target (``log d_px``), each ``(H, W)``, of points
    ``xy_px`` (x, y in pixel units, pixel ``j`` centred at ``j + 0.5``) of diameters ``d_px``
    (pixels): a Gaussian of ``sigma = max(1, sigma_fraction d_px)`` at each point, and at the
    ``positive`` ones (the annotated centres, not the points filling a centre line) 1 and a
    peak at the nearest pixel; where Gaussians overlap the larger wins."""
    h, w = shape
    heat = np.zeros(shape, np.float32)
    size = np.zeros(shape, np.float32)
    peak = np.zeros(shape, bool)
    for (x, y), d, pos in zip(np.asarray(xy_px, float).reshape(-1, 2), np.asarray(d_px, float), positive):
        sigma = max(1.0, sigma_fraction * d)
        r = int(math.ceil(3 * sigma))
        cx, cy = x - 0.5, y - 0.5
        c0, c1 = max(0, int(cx) - r), min(w, int(cx) + r + 2)
        r0, r1 = max(0, int(cy) - r), min(h, int(cy) + r + 2)
        if c0 >= c1 or r0 >= r1:
            continue
        yy, xx = np.mgrid[r0:r1, c0:c1]
        g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)).astype(np.float32)
        window = heat[r0:r1, c0:c1]
        better = g > window
        window[better] = g[better]
        size[r0:r1, c0:c1][better] = math.log(d)
        pr, pc = int(round(cy)), int(round(cx))
        if pos and 0 <= pr < h and 0 <= pc < w:
            heat[pr, pc] = 1.0
            size[pr, pc] = math.log(d)
            peak[pr, pc] = True
    return heat, peak, size


def focal_loss(logit: torch.Tensor, heat: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of peaks (>= 1)."""
    p = torch.sigmoid(logit).clamp(1e-4, 1 - 1e-4)
    pos = -((1 - p) ** 2) * torch.log(p) * peak
    neg = -((1 - heat) ** 4) * p**2 * torch.log(1 - p) * (~peak)
    return (pos.sum() + neg.sum()) / peak.sum().clamp_min(1)


@dataclass
class Crop:
    """A bank crop: standardised pixels (float16, ``(S, S)``), the target points in it (x, y px),
    their diameters (px) and whether each is an annotated centre (else it fills a centre line)."""

    pixels: np.ndarray
    xy_px: np.ndarray
    d_px: np.ndarray
    positive: np.ndarray


def line_points(centres: pd.DataFrame, step_nm: float) -> np.ndarray:
    """Points (x_nm, y_nm) every ``step_nm`` along the segments between consecutive vertices of
    each centre line of ``centres`` (``particle, vertex, x_nm, y_nm``; lines of >= 3 vertices):
    the target of a filament is a ridge along its centre line, its vertices the peaks."""
    out = [np.zeros((0, 2))]
    lines = centres[centres.vertex >= 0]
    for _, line in lines.groupby("particle"):
        if len(line) < 3:
            continue
        xy = line.sort_values("vertex")[["x_nm", "y_nm"]].to_numpy(float)
        for a, b in zip(xy[:-1], xy[1:]):
            n = max(1, int(np.hypot(*(b - a)) / step_nm))
            t = (np.arange(n) + 0.5)[:, None] / n
            out.append(a + t * (b - a))
    return np.vstack(out)


def bank_crops(
    prepared: Prepared,
    centres_nm: np.ndarray,
    diameters_nm: np.ndarray,
    positive: np.ndarray,
    heat_nm: float,
    side: int,
    count: int,
    generator: np.random.Generator,
) -> list[Crop]:
    """``count`` crops of ``side`` px at ``heat_nm`` nm/px of one image with their target points
    (``centres_nm``, ``diameters_nm``, ``positive``: see :class:`Crop`): half centred near random
    annotated centres (jittered by up to a third of the side), the rest at random; an image
    smaller than a crop gives crops mirrored past its border."""
    rows, cols = prepared.coarse_shape(heat_nm)
    centres_px = np.asarray(centres_nm, float).reshape(-1, 2) / heat_nm
    positive = np.asarray(positive, bool)
    annotated = centres_px[positive]
    out = []
    for k in range(count):
        if len(annotated) and k % 2 == 0:
            cx, cy = annotated[generator.integers(len(annotated))] + generator.uniform(-side / 3, side / 3, 2)
        else:
            cx, cy = generator.uniform(0, max(cols, 1)), generator.uniform(0, max(rows, 1))
        left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
        pixels = prepared.tile(heat_nm, left, top, side, side).astype(np.float16)
        xy = centres_px - [left, top]
        inside = (xy[:, 0] > -side / 2) & (xy[:, 0] < 1.5 * side) & (xy[:, 1] > -side / 2) & (xy[:, 1] < 1.5 * side)
        out.append(Crop(pixels, xy[inside], np.asarray(diameters_nm, float)[inside] / heat_nm, positive[inside]))
    return out


def _batch(bank: Sequence[Crop], size: int, crop_px: int, sigma_fraction: float, heat_nm: float, generator):
    """A training batch: random crops of random bank crops, random D4, and their targets."""
    xs, heats, peaks, sizes = [], [], [], []
    for i in generator.integers(len(bank), size=size):
        crop = bank[i]
        side = crop.pixels.shape[0]
        dx, dy = generator.integers(0, side - crop_px + 1, size=2)
        x = crop.pixels[dy : dy + crop_px, dx : dx + crop_px].astype(np.float32)
        heat, peak, logd = targets((crop_px, crop_px), crop.xy_px - [dx, dy], crop.d_px, crop.positive, sigma_fraction)
        stack = [x, heat, peak, logd + math.log(heat_nm / SIZE_UNIT_NM)]
        k, flip = int(generator.integers(4)), bool(generator.integers(2))
        stack = [np.rot90(a[:, ::-1] if flip else a, k) for a in stack]
        for store, a in zip((xs, heats, peaks, sizes), stack):
            store.append(np.ascontiguousarray(a))
    as_tensor = [torch.from_numpy(np.stack(a)).unsqueeze(1) for a in (xs, heats, peaks, sizes)]
    return as_tensor[0], as_tensor[1], as_tensor[2].bool(), as_tensor[3]


#: gradient-norm clip of :func:`train_heatnet`: a batch of random crops with few peaks gives the
#: focal loss (divided by the peaks) rare large gradients; unclipped, at the schedule's peak one
#: of them could stall training (docs/benchmarks.md, section 7: validation F1 0.64 against 0.85)
MAX_GRAD_NORM = 1.0


def train_heatnet(
    bank: Sequence[Crop],
    *,
    widths: Sequence[int],
    steps: int,
    batch_size: int,
    crop_px: int,
    lr: float,
    sigma_fraction: float,
    heat_nm: float,
    seed: int,
) -> tuple[HeatNet, list[float]]:
    """Train a :class:`HeatNet` for ``steps`` AdamW steps (one-cycle learning rate peaking at
    ``lr``, gradients clipped to norm :data:`MAX_GRAD_NORM`) on random crops of ``bank`` (on the
    CPU). Returns the model (evaluation mode) and the mean loss of each tenth of the steps.

    Raises ValueError for an empty bank or a crop size that does not fit it, and
    TrainingDiverged at the first step whose loss is NaN or infinite."""
    from temvirus.seeding import derive_seed, rng

    if not bank:
        raise ValueError("no training crops: nothing to train the particle detector on")
    unit = 2 ** (len(widths) - 1)
    if crop_px % unit or crop_px > bank[0].pixels.shape[0]:
        raise ValueError(f"crop_px {crop_px} must be a multiple of {unit} and fit the bank's crops")
    torch.manual_seed(derive_seed(seed, "micrographs", "heatnet"))
    generator = rng(seed, "micrographs", "heatnet", "batches")
    model = HeatNet(widths)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    losses, curve, started = [], [], time.perf_counter()
    for step in range(steps):
        x, heat, peak, logd = _batch(bank, batch_size, crop_px, sigma_fraction, heat_nm, generator)
        out = model(x)
        near = heat > 0.5
        size_loss = (out[:, 1:] - logd).abs()[near].mean() if near.any() else out.sum() * 0
        loss = focal_loss(out[:, :1], heat, peak) + size_loss
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):  # before, training went on and every later step was NaN
            raise TrainingDiverged(
                f"particle detector training diverged at step {step + 1}: loss {losses[-1]} "
                f"(learning rate up to {lr:g}); lower micrographs.lr in the config"
            )
        if (step + 1) % max(1, steps // 10) == 0:
            curve.append(float(np.mean(losses[-max(1, steps // 10) :])))
            log.info(
                "heat map step %d/%d: loss %.4f (%.0f s)", step + 1, steps, curve[-1], time.perf_counter() - started
            )
    return model.eval(), curve


# ------------------------------------------------------------------------- inference


def _subpixel(resp: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel peak offsets (rows, cols) from a parabola through each peak and its neighbours."""

    def offset(minus, centre, plus):
        denom = minus - 2 * centre + plus
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.where(denom < 0, 0.5 * (minus - plus) / denom, 0.0)
        return np.clip(off, -0.5, 0.5)

    h, w = resp.shape
    up, down = resp[np.clip(rows - 1, 0, h - 1), cols], resp[np.clip(rows + 1, 0, h - 1), cols]
    left, right = resp[rows, np.clip(cols - 1, 0, w - 1)], resp[rows, np.clip(cols + 1, 0, w - 1)]
    centre = resp[rows, cols]
    return offset(up, centre, down), offset(left, centre, right)


def heat_peaks(
    model: HeatNet,
    pixels: np.ndarray,
    pixel_size_nm: float,
    heat_nm: float,
    *,
    tile_px: int = 512,
    margin_px: int | None = None,
    floor: float = 0.05,
    size_scale: float = 1.0,
) -> pd.DataFrame:
    """Peaks of the heat map of a raw image: ``x_nm, y_nm`` (from the image's top-left corner),
    ``score`` (the heat, 0-1) and ``d_nm`` (the predicted diameter), one row per local maximum
    (3x3) above ``floor``, tile by tile (``tile_px`` cores at ``heat_nm`` nm/px with
    ``margin_px`` of context each side, by default the network's reach, so that the tiles give
    the heat map of the whole image: memory bounded by the tile). ``size_scale``: the factor
    from the predicted to the true diameter (``heat_nm`` over the pixel size the network was
    trained at, for a pass at another scale). Peaks closer than half their diameter to black
    padding are dropped."""
    prepared = Prepared.of(pixels, pixel_size_nm)
    rows, cols = prepared.coarse_shape(heat_nm)
    unit = model.unit
    margin = int(math.ceil((model.reach if margin_px is None else margin_px) / unit)) * unit
    frames = []
    for top in range(0, rows, tile_px):
        for left in range(0, cols, tile_px):
            height, width = min(tile_px, rows - top), min(tile_px, cols - left)
            th = int(math.ceil((height + 2 * margin) / unit)) * unit
            tw = int(math.ceil((width + 2 * margin) / unit)) * unit
            tile = prepared.tile(heat_nm, left - margin, top - margin, tw, th)
            with torch.inference_mode():
                out = model(torch.from_numpy(tile)[None, None])[0].numpy()
            heat = 1 / (1 + np.exp(-out[0]))
            local_max = heat == ndimage.maximum_filter(heat, size=3, mode="nearest")
            core = heat[margin : margin + height, margin : margin + width]
            peaks = local_max[margin : margin + height, margin : margin + width] & (core > floor)
            r, c = np.nonzero(peaks)
            dr, dc = _subpixel(heat, r + margin, c + margin)  # neighbours from the margin too
            frames.append(
                pd.DataFrame(
                    {
                        "x_nm": (left + c + dc + 0.5) * heat_nm,
                        "y_nm": (top + r + dr + 0.5) * heat_nm,
                        "score": core[r, c],
                        "d_nm": size_scale * SIZE_UNIT_NM * np.exp(out[1, margin + r, margin + c]),
                    }
                )
            )
    found = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["x_nm", "y_nm", "score", "d_nm"])
    keep = ~prepared.near_padding(found.x_nm.to_numpy(), found.y_nm.to_numpy(), found.d_nm.to_numpy())
    return found[keep].reset_index(drop=True)
