"""Synthetic negative-stain TEM virus images in the published raw layout.

The embedded default dataset of the workflow: the real one cannot be downloaded here. It
follows the paper's Table 1 (``resources/paper/table1_dataset.csv``):

* **Counts.** At ``scale=1`` every class has exactly Table 1's images and particles. The
  per-image particle counts are chosen (a small integer program) so that the paper's
  representative split (:mod:`temvirus.split`: ascending count, ties by image id, dealt
  train, test, train, validation, train) of the generated images gives Table 1's image *and*
  particle counts per split, and every image is written into the split folder that rule
  gives it. ``scale < 1`` shrinks each class to ``max(4, round(scale * images))`` images
  (4 is the fewest that the dealing gives a validation image), keeping the mean particles per
  image and each split's share.
* **Physics.** Each image is an exposure of a *specimen*: bodies (virus particles, debris)
  placed in nm coordinates on a stain layer whose thickness varies smoothly and carries a
  grain (4-90 nm value noise fixed on the specimen, so every exposure of one area shows the
  same grain, area-averaged over its pixels). Particles displace the stain (light), stain
  pools around them (dark rim and halo); the image is ``exp(-mu * thickness)`` with the
  bodies blurred by defocus, plus shot noise (the only per-exposure randomness besides
  optics and dose), recorded as uint16 counts of a 12- or 14-bit camera. Pixel sizes (0.26-5.57 nm) are chosen so that
  particles are at least ~12 px across and the image field holds its particles. Every body
  is rendered in its own local window (cost grows with particles, not image area); smooth
  terms are a low-rank separable sum (one matrix product per image).
* **Classes** differ by size (Table 1's mean diameter, with spread), outline (round,
  icosahedral, oval with a 2-point centre line, brick, pleomorphic, curved filament with a
  centre line of vertices every 50-100 nm), surface texture and arrangement (clusters), see
  :data:`STYLES`. Debris, stain gradients, noise and defocus make them non-trivial.
* **Planted overlaps.** ``overlaps`` extra images re-image 20-80% of another image's specimen
  (same class and split folder, shifted, at another pixel size) with the particles inside
  their field annotated, and fewer particles than their source; each with one kind of change
  of real re-imaging (:data:`CHANGES`, dealt in turn: magnification 0.4-2.5x, exposure,
  focus, particles cut by the border, black padding; :func:`plant_overlap`). They come on top of Table
  1's counts; the truth goes to a CSV outside the raw tree (:data:`TRUTH_COLUMNS`).
* **Determinism.** Every random draw comes from :func:`temvirus.seeding.rng` keyed by the
  seed and the image id; TIFFs carry no time stamps: the same seed gives identical bytes.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy.ndimage import gaussian_filter
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.stats import norm
from threadpoolctl import threadpool_limits

from temvirus.classes import CLASSES, FOLDER_NAMES, load_table1
from temvirus.io import write_csv
from temvirus.seeding import rng
from temvirus.split import deal_representative

log = logging.getLogger(__name__)

PIXEL_SIZE_RANGE_NM = (0.26, 5.57)
#: fewest pixels across a particle's diameter
MIN_DIAMETER_PX = 12.0
#: most pixels across a particle's diameter (higher magnifications are not chosen)
MAX_DIAMETER_PX = 160.0
#: fewest images per class: the dealing gives train, test, train, validation
MIN_IMAGES_PER_CLASS = 4
#: the two cameras of the paper: image size (width, height), camera pixel pitch (nm), bit depth
MICROSCOPES = {
    "Tecnai 10 (MegaView III)": ((1376, 1032), 6450.0, 12),
    "LEO 912AB (Morada)": ((2048, 2048), 9000.0, 14),
}
TEM_SHARE_2048 = 0.3
#: kinds of change of the planted re-images (:func:`plant_overlap`), dealt in turn
CHANGES = ("magnification", "exposure", "focus", "cutoff", "padding")
TRUTH_COLUMNS = [
    "image_id",
    "source_image_id",
    "class",
    "split",
    "change",
    "pixel_size_nm",
    "source_pixel_size_nm",
    "offset_x_nm",
    "offset_y_nm",
    "overlap_fraction",
    "n_particles",
    "source_n_particles",
]


@dataclass(frozen=True)
class Style:
    """How the particles of one class look and lie (sizes in nm, amplitudes in stain units)."""

    shape: str  # round | hexagon | oval | brick | pleomorphic | filament
    texture: str  # smooth | lattice | knobs | spokes | star | cups | granules | fringe | striations | helix
    spread: float = 0.08  # relative s.d. of the diameter
    outline: float = 0.02  # amplitude of outline irregularity (relative radius)
    arrangement: str = "scattered"  # scattered | groups | packed
    contrast: float = 0.42  # stain displaced by the particle body
    rim: float = 0.2  # stain pooled in a ring hugging the particle
    pool: float = 1.0  # factor on the image's broad stain pool around particles
    period: float = 10.0  # texture period (nm)
    texture_depth: float = 0.25
    aspect: float = 1.0  # length / width for oval, brick
    fringe: float = 0.0  # length of surface spikes (nm)
    penetrated: float = 0.0  # share of particles whose interior holds stain (dark core, e.g. empty capsids)


STYLES: dict[str, Style] = {
    "Adenovirus": Style("hexagon", "lattice", spread=0.05, period=9.0, texture_depth=0.3, penetrated=0.1),
    "Astrovirus": Style("round", "star", spread=0.1, texture_depth=0.35, rim=0.25),
    "CCHF": Style(
        "pleomorphic", "knobs", spread=0.15, outline=0.07, fringe=9.0, period=14.0, texture_depth=0.5, contrast=0.35
    ),
    "Cowpox": Style(
        "brick", "knobs", spread=0.08, contrast=0.3, rim=0.12, pool=2.2, period=38.0, texture_depth=0.3, aspect=1.3
    ),
    "Dengue": Style("round", "smooth", spread=0.08, rim=0.2),
    "Ebola": Style("filament", "helix", spread=0.08, period=6.0, texture_depth=0.25),
    "Guanarito": Style("pleomorphic", "granules", spread=0.22, outline=0.08),
    "Influenza": Style("pleomorphic", "fringe", spread=0.18, outline=0.09, fringe=12.0),
    "Lassa": Style("pleomorphic", "granules", spread=0.22, outline=0.08),
    "LCM": Style("pleomorphic", "granules", spread=0.2, outline=0.07),
    "Machupo": Style("pleomorphic", "granules", spread=0.22, outline=0.1),
    "Marburg": Style("filament", "helix", spread=0.08, period=5.0, texture_depth=0.2),
    "Nipah": Style("pleomorphic", "fringe", spread=0.3, outline=0.12, fringe=10.0, contrast=0.38),
    "Norovirus": Style("round", "cups", spread=0.1, outline=0.06, texture_depth=0.3),
    "Orf": Style("oval", "striations", spread=0.07, contrast=0.35, rim=0.25, pool=1.6, period=24.0, aspect=1.6),
    "Papilloma": Style(
        "round", "lattice", spread=0.05, arrangement="packed", period=11.0, rim=0.3, texture_depth=0.4, penetrated=0.15
    ),
    "Pseudocowpox": Style(
        "oval", "striations", spread=0.09, contrast=0.35, rim=0.25, pool=1.6, period=20.0, aspect=1.75
    ),
    "RiftValley": Style(
        "round",
        "knobs",
        spread=0.08,
        outline=0.04,
        arrangement="groups",
        period=13.0,
        texture_depth=0.5,
        contrast=0.33,
        pool=1.5,
        penetrated=0.1,
    ),
    "Rotavirus": Style("round", "spokes", spread=0.05, texture_depth=0.4, rim=0.3, penetrated=0.15),
    "Sapovirus": Style("round", "cups", spread=0.08, outline=0.03, texture_depth=0.45),
    "TBE": Style("round", "smooth", spread=0.09, rim=0.25, outline=0.03),
    "WestNile": Style("round", "smooth", spread=0.07, rim=0.18, arrangement="groups"),
}
#: filament length (nm): median and log s.d. of a lognormal, and the chance of an end hook
FILAMENTS = {"Ebola": (900.0, 0.4, 0.35), "Marburg": (750.0, 0.35, 0.5)}


# ----------------------------------------------------------------------------- planning


def particle_counts(n_images: int, total: int, split_targets: dict[str, float]) -> np.ndarray:
    """Non-decreasing per-image particle counts (>= 1) summing to ``total``.

    Images are in dealing order (:func:`temvirus.split.deal_representative`); the counts are
    the integers closest (L1) to a lognormal quantile curve whose split sums equal
    ``split_targets`` where possible (deviations are penalised 1000x more than shape).
    """
    n = n_images
    labels = np.array(deal_representative(n))
    q = np.exp(0.9 * norm.ppf((np.arange(n) + 0.5) / n))
    target = q / q.sum() * total
    nv = 2 * n + 6  # counts, |count - target|, split slacks (+/-)
    cost = np.r_[np.zeros(n), np.full(n, 1.0 / total), np.full(6, 1000.0)]
    rows, lo, hi = [], [], []

    def add(coeffs: dict[int, float] | np.ndarray, low: float, high: float) -> None:
        row = np.zeros(nv)
        if isinstance(coeffs, dict):
            for k, v in coeffs.items():
                row[k] = v
        else:
            row[: len(coeffs)] = coeffs
        rows.append(row), lo.append(low), hi.append(high)

    for i in range(n - 1):
        add({i: -1, i + 1: 1}, 0, np.inf)
    for i in range(n):
        add({i: 1, n + i: -1}, -np.inf, target[i])
        add({i: 1, n + i: 1}, target[i], np.inf)
    for k, split in enumerate(("train", "validation", "test")):
        row = np.zeros(nv)
        row[:n] = labels == split
        row[2 * n + 2 * k], row[2 * n + 2 * k + 1] = 1, -1
        rows.append(row), lo.append(split_targets[split]), hi.append(split_targets[split])
    add(np.ones(n), total, total)
    result = milp(
        cost,
        constraints=LinearConstraint(np.array(rows), lo, hi),
        integrality=np.r_[np.ones(n), np.zeros(n + 6)],
        bounds=Bounds(np.r_[np.ones(n), np.zeros(n + 6)], np.inf),
    )
    if not result.success:  # cannot happen for total >= n; kept as a clear failure
        raise RuntimeError(f"no particle counts for {n} images and {total} particles: {result.message}")
    return np.round(result.x[:n]).astype(int)


def plan_dataset(table1: pd.DataFrame, scale: float, seed: int, classes=None) -> pd.DataFrame:
    """One row per Table-1 image: ``image_id, class, split, n_particles, diameter_nm, microscope``.

    ``classes`` limits the plan to some classes (all 22 by default); each class's rows are
    the same whichever others are planned.

    Image ids are ``{Class}_{rank:04d}`` in dealing order, so the representative split of the
    generated data (ascending count, ties by id) reproduces the ``split`` column.
    """
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    unknown = sorted(set(classes or ()) - set(CLASSES))
    if unknown:
        raise ValueError(f"unknown classes {unknown}")
    rows = []
    for cls in [c for c in CLASSES if classes is None or c in classes]:
        t = table1.loc[cls]
        n = max(MIN_IMAGES_PER_CLASS, int(round(scale * t.images_total)))
        total = max(n, int(round(n * t.particles_total / t.images_total)))
        labels = deal_representative(n)
        per_split = {
            "train": ("images_train", "particles_train"),
            "validation": ("images_val", "particles_val"),
            "test": ("images_test", "particles_test"),
        }
        want = {s: labels.count(s) * t[p] / t[i] for s, (i, p) in per_split.items()}
        norm_ = total / sum(want.values())
        targets = {s: round(v * norm_) for s, v in want.items()}
        counts = particle_counts(n, total, targets)
        draw = rng(seed, "synth", "microscope", cls)
        for rank, (split, count) in enumerate(zip(labels, counts)):
            scope = list(MICROSCOPES)[1] if draw.random() < TEM_SHARE_2048 else list(MICROSCOPES)[0]
            rows.append((f"{cls}_{rank:04d}", cls, split, int(count), float(t.avg_particle_size_nm), scope))
    return pd.DataFrame(rows, columns=["image_id", "class", "split", "n_particles", "diameter_nm", "microscope"])


# ----------------------------------------------------------------------------- specimen


@dataclass
class Body:
    """Something on the grid that displaces or collects stain, in specimen nm coordinates."""

    shape: str
    texture: str
    x: float
    y: float
    r: float  # radius, or half-width of oval, brick and filament
    contrast: float
    rim: float
    angle: float = 0.0
    aspect: float = 1.0
    harmonics: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # k, amplitude, phase
    period: float = 10.0
    depth: float = 0.0
    fringe: float = 0.0
    line: np.ndarray | None = None  # dense centre line (m, 2) of a filament
    spots: np.ndarray | None = None  # (k, 3) local u, v, sigma of dark dots
    waves: np.ndarray | None = None  # (k, 3) kx, ky (rad/nm), phase of an irregular knobby surface
    core: float = 0.0  # stain held inside the particle (dark centre)
    phase: float = 0.0

    @property
    def extent(self) -> float:
        """Radius (nm) around (x, y) outside which the body contributes nothing."""
        if self.line is not None:
            return float(np.max(np.hypot(self.line[:, 0] - self.x, self.line[:, 1] - self.y))) + 1.6 * self.r + 4
        stretch = max(self.aspect, 1.0) * (1 + np.abs(self.harmonics[:, 1]).sum())
        return self.r * stretch * 1.45 + self.fringe + 4


@dataclass
class Particle:
    body: Body
    points: np.ndarray  # annotated centre point / centre line, nm


@dataclass
class Specimen:
    """A field of the grid: particles, debris and the smooth stain (all in nm)."""

    width_nm: float
    height_nm: float
    particles: list[Particle]
    debris: list[Body]
    bumps: np.ndarray  # (k, 4) x, y, sigma, amplitude of smooth stain variations
    gradient: tuple[float, float]  # stain thickness change across the field in x and y
    base: float  # mean stain thickness
    pool: float  # amplitude of the broad stain pool around each particle
    grain_key: int = 0  # hash key of the stain grain (:func:`stain_grain`)
    grain: tuple[tuple[float, float], ...] = ()  # its octaves: lattice spacing (nm), amplitude


def _harmonics(draw: np.random.Generator, amplitude: float) -> np.ndarray:
    ks = np.arange(2, 6)
    return np.column_stack([ks, draw.normal(0, amplitude / np.sqrt(ks - 1)), draw.uniform(0, 2 * np.pi, len(ks))])


def _make_body(style: Style, diameter: float, x: float, y: float, draw: np.random.Generator) -> Body:
    r = diameter / 2
    body = Body(
        shape=style.shape,
        texture=style.texture,
        x=x,
        y=y,
        r=r,
        contrast=style.contrast * draw.uniform(0.85, 1.15),
        rim=style.rim * draw.uniform(0.7, 1.3),
        angle=draw.uniform(0, 2 * np.pi),
        aspect=style.aspect * draw.uniform(0.92, 1.08),
        harmonics=_harmonics(draw, style.outline),
        period=style.period * draw.uniform(0.9, 1.1),
        depth=style.texture_depth,
        fringe=style.fringe,
        phase=draw.uniform(0, 2 * np.pi),
    )
    if draw.random() < style.penetrated:
        body.core = draw.uniform(0.6, 1.3)
    if style.texture == "cups":
        n = draw.integers(5, 7)
        a = body.phase + np.arange(n) * 2 * np.pi / n
        ring = np.column_stack([0.5 * r * np.cos(a), 0.5 * r * np.sin(a), np.full(n, 0.14 * r)])
        body.spots = np.vstack([ring, [[0, 0, 0.16 * r]]])
    elif style.texture == "knobs":
        k = 2 * np.pi / (style.period * draw.uniform(0.75, 1.35, 8))
        a = draw.uniform(0, np.pi, 8)
        body.waves = np.column_stack([k * np.cos(a), k * np.sin(a), draw.uniform(0, 2 * np.pi, 8)])
    elif style.texture == "granules":
        n = max(2, int(draw.poisson((r / 18) ** 2 * 2)))
        rad, a = r * 0.75 * np.sqrt(draw.random(n)), draw.uniform(0, 2 * np.pi, n)
        body.spots = np.column_stack([rad * np.cos(a), rad * np.sin(a), draw.uniform(3.0, 5.0, n)])
    return body


def _filament_line(length: float, hook: bool, draw: np.random.Generator, step: float = 4.0) -> np.ndarray:
    """A smooth curved centre line (dense, ``step`` nm apart) starting at the origin."""
    n = max(2, int(length / step) + 1)
    kappa = draw.normal(0, 1 / 900) + np.cumsum(draw.normal(0, 1 / 6000, n))
    if hook:  # shepherd's crook or "6": a tight turn at one end
        k = int(n * draw.uniform(0.15, 0.3))
        kappa[-k:] += np.sign(draw.normal()) / draw.uniform(45, 90)
    heading = draw.uniform(0, 2 * np.pi) + np.cumsum(kappa * step)
    xy = np.column_stack([np.cos(heading), np.sin(heading)]) * step
    return np.vstack([[0, 0], np.cumsum(xy[:-1], axis=0)])


def _centre_line_vertices(line: np.ndarray, inset: float, draw: np.random.Generator) -> np.ndarray:
    """Annotation vertices along a dense line: from ``inset`` of one end to the other, every 50-100 nm."""
    s = np.r_[0, np.cumsum(np.hypot(*np.diff(line, axis=0).T))]
    usable = max(s[-1] - 2 * inset, 1.0)
    n = max(2, int(round(usable / draw.uniform(50, 100))) + 1)
    at = inset + np.linspace(0, usable, n)
    return np.column_stack([np.interp(at, s, line[:, 0]), np.interp(at, s, line[:, 1])])


def _fits(points: np.ndarray, margin: float, width: float, height: float) -> bool:
    return bool(
        (points[:, 0] >= margin).all()
        and (points[:, 0] <= width - margin).all()
        and (points[:, 1] >= margin).all()
        and (points[:, 1] <= height - margin).all()
    )


def _place_centres(
    radii: np.ndarray, arrangement: str, width: float, height: float, draw: np.random.Generator
) -> np.ndarray:
    """Centres for round-ish bodies: scattered (with some touching pairs) or in packed clusters."""
    n = len(radii)
    margin = radii.max() * 1.5 + 2
    lo, hi = np.array([margin, margin]), np.array([max(width - margin, margin + 1), max(height - margin, margin + 1)])
    centres = np.zeros((n, 2))
    if arrangement == "scattered" or n < 3:
        for i in range(n):
            for attempt in range(60):
                if i and draw.random() < 0.25:  # touch an earlier particle
                    j, a = draw.integers(i), draw.uniform(0, 2 * np.pi)
                    c = centres[j] + (radii[i] + radii[j]) * 1.08 * np.array([np.cos(a), np.sin(a)])
                else:
                    c = draw.uniform(lo, hi)
                gap = 0.95 if attempt < 40 else 0.6
                if (
                    (c >= lo).all()
                    and (c <= hi).all()
                    and (i == 0 or (np.hypot(*(centres[:i] - c).T) >= (radii[:i] + radii[i]) * gap).all())
                ):
                    break
            centres[i] = np.clip(c, lo, hi)
        return centres
    # clusters: hexagonal packing (jittered) around a few cluster centres
    sizes = _cluster_sizes(n, arrangement, draw)
    spacing = 2 * np.median(radii) * 1.06
    placed, start = [], 0
    for size in sizes:
        ring = int(np.ceil(np.sqrt(size))) + 2
        ij = np.array([(i, j) for i in range(-ring, ring + 1) for j in range(-ring, ring + 1)], dtype=float)
        grid = np.column_stack([ij[:, 0] + 0.5 * ij[:, 1], ij[:, 1] * np.sqrt(3) / 2]) * spacing
        grid = grid[np.argsort(np.hypot(*grid.T) + draw.uniform(0, 0.9 * spacing, len(grid)))][:size]
        extent = np.abs(grid).max(axis=0)
        for attempt in range(40):
            c = draw.uniform(lo + extent, np.maximum(hi - extent, lo + extent + 1))
            if not placed or min(np.hypot(*(p - c).T).min() for p in placed) > spacing * 1.5 or attempt == 39:
                break
        cluster = np.clip(grid + c + draw.normal(0, 0.04 * spacing, grid.shape), lo, hi)
        placed.append(cluster)
        centres[start : start + size] = cluster
        start += size
    return centres


def _cluster_sizes(n: int, arrangement: str, draw: np.random.Generator) -> list[int]:
    """Split ``n`` particles into clusters: 'packed' few large ones, 'groups' of 2-40 plus singles."""
    sizes = []
    while n > 0:
        if arrangement == "packed":
            size = n if n <= 60 else int(draw.integers(n // 3, n // 2 + 1))
        else:
            size = 1 if draw.random() < 0.2 else int(min(n, draw.integers(2, 41)))
        sizes.append(min(size, n))
        n -= sizes[-1]
    return sizes


def _filament_need(cls: str, count: int, draw: np.random.Generator) -> np.ndarray:
    median, sigma, _ = FILAMENTS[cls]
    return np.clip(median * np.exp(draw.normal(0, sigma, count)), 250, 2600)


def choose_pixel_size(
    cls: str, diameters: np.ndarray, lengths: np.ndarray | None, size_px: tuple[int, int], draw
) -> float:
    """A pixel size (nm) that resolves the particles and gives them room in the field."""
    style = STYLES[cls]
    width_px, height_px = size_px
    d = float(np.median(diameters))
    footprint = {"scattered": 9.0, "groups": 4.0, "packed": 2.0}[style.arrangement]
    if lengths is not None:
        area = float(np.sum(lengths * d)) * 6
        short_side = float(np.max(lengths)) * 0.9
    else:
        area = float(np.sum((diameters * max(style.aspect, 1)) ** 2)) * footprint
        short_side = d * max(style.aspect, 1) * 3
    lo = max(
        PIXEL_SIZE_RANGE_NM[0], math.sqrt(area / (width_px * height_px)), short_side / height_px, d / MAX_DIAMETER_PX
    )
    hi = min(PIXEL_SIZE_RANGE_NM[1], float(diameters.min()) / MIN_DIAMETER_PX)
    lo = min(lo, hi)
    return float(np.exp(draw.uniform(np.log(lo), np.log(max(hi, lo) + 1e-9))))


def make_specimen(
    cls: str, n_particles: int, d_mean: float, size_px: tuple[int, int], seed: int, image_id: str
) -> tuple[Specimen, float]:
    """The specimen of one Table-1 image (mean diameter ``d_mean`` nm) and its pixel size (nm)."""
    draw = rng(seed, "synth", "specimen", image_id)
    style = STYLES[cls]
    diameters = d_mean * np.exp(draw.normal(0, style.spread, n_particles))
    lengths = _filament_need(cls, n_particles, draw) if style.shape == "filament" else None
    px = round(choose_pixel_size(cls, diameters, lengths, size_px, draw), 4)
    width, height = size_px[0] * px, size_px[1] * px
    particles = []
    if style.shape == "filament":
        hook_p = FILAMENTS[cls][2]
        for d, length in zip(diameters, lengths):
            r = d / 2
            for attempt in range(80):
                shrink = 0.85 ** (attempt // 20)
                line = _filament_line(length * shrink, draw.random() < hook_p, draw)
                span = line.max(axis=0) - line.min(axis=0)
                room = np.array([width, height]) - span - 2 * (r + 3)
                if (room > 0).all():
                    line = line - line.min(axis=0) + r + 3 + draw.uniform(0, room)
                    break
            else:
                line = line * min(1.0, 0.8 * min(width, height) / max(span.max(), 1))
                line = line - line.min(axis=0) + r + 3
            centre = line[len(line) // 2]
            body = replace(_make_body(style, d, *centre, draw), line=line)
            points = _centre_line_vertices(line, inset=r, draw=draw)
            particles.append(Particle(body, _jitter(points, d, width, height, draw)))
    else:
        radii = diameters / 2 * max(style.aspect, 1)
        centres = _place_centres(radii, style.arrangement, width, height, draw)
        for d, (x, y) in zip(diameters, centres):
            body = _make_body(style, d, x, y, draw)
            if style.shape == "oval":
                half = (body.aspect - 1) * body.r
                axis = np.array([np.cos(body.angle), np.sin(body.angle)])
                points = np.array([[x, y]]) + np.outer([-half, half], axis)
            else:
                points = np.array([[x, y]])
            particles.append(Particle(body, _jitter(points, d, width, height, draw)))
    debris = _make_debris(width, height, draw)
    k = 6
    bumps = np.column_stack(
        [
            draw.uniform(-0.5 * width, 1.5 * width, k),
            draw.uniform(-0.5 * height, 1.5 * height, k),
            draw.uniform(0.2, 0.7, k) * max(width, height),
            draw.normal(0, 0.18, k),
        ]
    )
    specimen = Specimen(
        width_nm=width,
        height_nm=height,
        particles=particles,
        debris=debris,
        bumps=bumps,
        gradient=(draw.normal(0, 0.25), draw.normal(0, 0.25)),
        base=draw.uniform(0.85, 1.2),
        pool=draw.uniform(0.05, 0.6) * style.pool,
    )
    grain = rng(seed, "synth", "grain", image_id)  # own stream: the draws above stay as they were
    specimen.grain_key = int(grain.integers(2**62))
    spacing, amplitude = grain.uniform(4.0, 12.0), grain.uniform(0.03, 0.08)
    specimen.grain = tuple((spacing * f, amplitude * a) for f, a in GRAIN_OCTAVES)
    return specimen, px


def _jitter(points: np.ndarray, diameter: float, width: float, height: float, draw) -> np.ndarray:
    """Annotated points: the true centre give or take an annotator's click (2% of the diameter)."""
    jittered = points + draw.normal(0, 0.02 * diameter, points.shape)
    return np.clip(jittered, 1.0, [width - 1.0, height - 1.0])


def _make_debris(width: float, height: float, draw: np.random.Generator) -> list[Body]:
    """Stain crystals, protein blobs, fibres and vesicles over the field and a margin around it."""
    x0, x1, y0, y1 = -0.6 * width, 1.6 * width, -0.6 * height, 1.6 * height
    area_um2 = (x1 - x0) * (y1 - y0) / 1e6
    density = draw.uniform(0.3, 2.0)
    debris = []

    def spot(n):
        return draw.uniform([x0, y0], [x1, y1], (n, 2))

    for x, y in spot(min(int(draw.poisson(3 * density * area_um2)), 120)):  # light blobs (decoys)
        r = float(np.exp(draw.uniform(np.log(4), np.log(35))))
        debris.append(
            Body(
                "pleomorphic",
                "smooth",
                x,
                y,
                r,
                contrast=draw.uniform(0.2, 0.6),
                rim=draw.uniform(0, 0.25),
                harmonics=_harmonics(draw, 0.15),
            )
        )
    for x, y in spot(min(int(draw.poisson(3 * density * area_um2)), 120)):  # dark stain specks
        debris.append(Body("round", "smooth", x, y, draw.uniform(2, 7), contrast=-draw.uniform(0.2, 0.6), rim=0.0))
    for x, y in spot(min(int(draw.poisson(0.15 * density * area_um2)), 8)):  # fibres
        line = _filament_line(draw.uniform(150, 1500), False, draw) + [x, y]
        debris.append(
            Body("filament", "smooth", x, y, draw.uniform(2, 5), contrast=draw.uniform(0.2, 0.5), rim=0.05, line=line)
        )
    for x, y in spot(min(int(draw.poisson(0.02 * density * area_um2)), 3)):  # vesicles, membrane
        r = draw.uniform(60, 300)
        debris.append(
            Body(
                "pleomorphic",
                "smooth",
                x,
                y,
                r,
                contrast=draw.uniform(0.15, 0.45),
                rim=draw.uniform(0.05, 0.2),
                harmonics=_harmonics(draw, 0.12),
            )
        )
    return debris


# ----------------------------------------------------------------------------- rendering


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


#: octaves of the stain grain: (lattice spacing, amplitude) relative to the specimen's finest
GRAIN_OCTAVES = ((1.0, 1.0), (2.7, 0.55), (7.3, 0.3))
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


# ----------------------------------------------------------------------------- overlaps


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
    seen = (local[:, 0] >= 0) & (local[:, 0] <= w) & (local[:, 1] >= 0) & (local[:, 1] <= h)
    return bool(seen.any()) and not _fits(local, 0.5 * p.body.r, w, h)


def _visible_part(p: Particle, ox: float, oy: float, w: float, h: float) -> Particle:
    """``p`` annotated on its visible part: a one-point particle at the centre of the box
    around what is seen of its disc, a centre line by its vertices inside the field."""
    local = p.points - [ox, oy]
    if len(local) > 1:
        seen = (local[:, 0] >= 0) & (local[:, 0] <= w) & (local[:, 1] >= 0) & (local[:, 1] <= h)
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


# ----------------------------------------------------------------------------- writing


def _tags_text(exposure: Exposure) -> str:
    _, pitch, _ = MICROSCOPES[exposure.microscope]
    width, height = exposure.size_px
    px = f"{exposure.pixel_size_nm:.4f}".replace(".", ",")
    magnification = int(round(pitch * exposure.binning / exposure.pixel_size_nm, -2))
    return (
        "\n".join(
            [
                f"Height;{height}",
                f"Width;{width}",
                "BitsPerSample;16",
                f"Microscope;{exposure.microscope}",
                f"Magnification;{magnification}",
                f"XScale;{px}",
                f"YScale;{px}",
                f"Binning;{exposure.binning}",
            ]
        )
        + "\n"
    )


def _positions_text(name: str, particles: list[Particle], exposure: Exposure) -> str:
    lines = [f"image;{name}", "unit;pixel", "format;x;y"]
    ox, oy = exposure.origin
    for p in particles:
        lines.append("particleposition")
        for x, y in (p.points - [ox, oy]) / exposure.pixel_size_nm:
            lines.append(f"{x:.2f};{y:.2f}")
    return "\n".join(lines) + "\n"


def _write_image(
    folder: Path, image_id: str, pixels: np.ndarray, particles: list[Particle], exposure: Exposure
) -> None:
    name = f"{image_id}.tif"
    (folder / "particle_positions").mkdir(parents=True, exist_ok=True)
    (folder / "tags").mkdir(exist_ok=True)
    tifffile.imwrite(folder / name, pixels, photometric="minisblack", metadata=None, software=None)
    (folder / "tags" / f"{name}_tags.csv").write_text(_tags_text(exposure), encoding="utf-8")
    (folder / "particle_positions" / f"{image_id}_particlepositions.txt").write_text(
        _positions_text(name, particles, exposure), encoding="utf-8"
    )


def generate_dataset(
    out_root: str | os.PathLike,
    truth_csv: str | os.PathLike,
    *,
    table1,
    scale: float,
    seed: int,
    overlaps: int,
    binning: int = 1,
    classes=None,
) -> pd.DataFrame:
    """Write the synthetic raw dataset to ``out_root`` and the planted overlaps to ``truth_csv``.

    ``table1`` is the paper's Table 1 (a path or :func:`temvirus.classes.load_table1` frame).
    ``binning`` 2 records 2x2-binned camera frames (688x516 and 1024x1024 px, a quarter of
    the pixels: the fast default); 1 gives the paper's 1376x1032 and 2048x2048 frames.
    ``classes`` generates only those classes (quick tries and tests); default all 22.
    The tree is built in a temporary folder beside ``out_root`` and renamed into place when
    complete; an existing non-empty ``out_root`` is an error. Returns the truth table.
    """
    table = load_table1(table1) if isinstance(table1, (str, os.PathLike)) else table1
    if binning not in (1, 2):
        raise ValueError(f"binning must be 1 or 2, got {binning}")
    out_root = Path(out_root)
    if out_root.exists() and any(out_root.iterdir()):
        raise FileExistsError(f"{out_root}: output folder exists and is not empty; remove it first")
    plan = plan_dataset(table, scale, seed, classes)
    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_root.name}.", suffix=".part", dir=out_root.parent))
    try:
        with threadpool_limits(1):  # small matrix products: BLAS threads only spin on a busy machine
            truth = _generate_into(tmp, plan, seed, overlaps, binning)
        write_csv(truth_csv, truth)
        if out_root.exists():
            out_root.rmdir()
        os.replace(tmp, out_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "%s: %d images (%d planted overlaps), %d particles, %d classes",
        out_root,
        len(plan) + len(truth),
        len(truth),
        int(plan.n_particles.sum() + truth.n_particles.sum()),
        plan["class"].nunique(),
    )
    return truth


def _generate_into(root: Path, plan: pd.DataFrame, seed: int, overlaps: int, binning: int) -> pd.DataFrame:
    sources = _overlap_sources(plan, seed, overlaps)
    truth = []
    next_rank = plan.groupby("class").size().to_dict()
    for row in plan.rename(columns={"class": "cls"}).itertuples(index=False):
        size_px = tuple(side // binning for side in MICROSCOPES[row.microscope][0])
        specimen, px = make_specimen(row.cls, row.n_particles, row.diameter_nm, size_px, seed, row.image_id)
        exposure = Exposure((0.0, 0.0), px, size_px, row.microscope, binning)
        folder = root / row.split / FOLDER_NAMES[row.cls]
        pixels = render(specimen, exposure, rng(seed, "synth", "exposure", row.image_id))
        _write_image(folder, row.image_id, pixels, specimen.particles, exposure)
        for k in range(sources.get(row.image_id, 0)):
            change = CHANGES[len(truth) % len(CHANGES)]
            planted = plant_overlap(
                specimen, exposure, row.n_particles, change, rng(seed, "synth", "overlap", row.image_id, k)
            )
            if planted is None:
                log.warning("%s: no overlapping view with fewer particles found; skipped", row.image_id)
                continue
            view, inside, fraction, post = planted
            image_id = f"{row.cls}_{next_rank[row.cls]:04d}"
            next_rank[row.cls] += 1
            pixels = post(render(specimen, view, rng(seed, "synth", "exposure", image_id)))
            _write_image(folder, image_id, pixels, inside, view)
            truth.append(
                (
                    image_id,
                    row.image_id,
                    row.cls,
                    row.split,
                    change,
                    view.pixel_size_nm,
                    px,
                    round(view.origin[0], 3),
                    round(view.origin[1], 3),
                    round(fraction, 4),
                    len(inside),
                    row.n_particles,
                )
            )
    if len(truth) < overlaps:
        log.warning("planted %d of %d requested overlapping images", len(truth), overlaps)
    return pd.DataFrame(truth, columns=TRUTH_COLUMNS).sort_values("image_id", kind="stable").reset_index(drop=True)


def _overlap_sources(plan: pd.DataFrame, seed: int, overlaps: int) -> dict[str, int]:
    """Which images get planted re-images (how many each): images with >= 3 particles, spread over classes."""
    candidates = plan[plan.n_particles >= 3]
    if overlaps and candidates.empty:
        raise ValueError("no image has the >= 3 particles an overlapping re-image needs")
    draw = rng(seed, "synth", "overlap-sources")
    classes = list(candidates["class"].unique())
    draw.shuffle(classes)
    chosen: dict[str, int] = {}
    for k in range(overlaps):
        pool = candidates[candidates["class"] == classes[k % len(classes)]]
        image_id = pool.image_id.iloc[int(draw.integers(len(pool)))]
        chosen[image_id] = chosen.get(image_id, 0) + 1
    return chosen


def generate_from_config(params: dict, table1_csv, out_root, truth_csv) -> pd.DataFrame:
    """:func:`generate_dataset` with the ``dataset.synthetic`` section of the config."""
    return generate_dataset(
        out_root,
        truth_csv,
        table1=table1_csv,
        scale=float(params["scale"]),
        seed=int(params["seed"]),
        overlaps=int(params["overlaps"]),
        binning=int(params.get("binning", 1)),
    )


# ----------------------------------------------------------------------------- figure

#: field of view (nm) of each example, shown at 1 nm/px
EXAMPLE_FIELD_NM = 256


def example_crops(root: str | os.PathLike, cls: str, count: int, seed: int) -> list[np.ndarray]:
    """Up to ``count`` 256x256 crops (1 nm/px, float) around particles of class ``cls`` in a raw-layout folder.

    Images are drawn (seeded) from every split folder of the class; each crop is centred on
    one annotated point (a centre line's middle vertex) and resampled bilinearly.
    """
    from scipy.ndimage import map_coordinates

    from temvirus.raw import SPLITS, _image_files, read_image, read_positions, read_tags

    root = Path(root)
    files = [
        f
        for split in SPLITS
        if (root / split / FOLDER_NAMES[cls]).is_dir()
        for f in _image_files(root / split / FOLDER_NAMES[cls])
    ]
    draw = rng(seed, "synth", "figure", cls)
    crops = []
    for index in draw.permutation(len(files))[:count]:
        path = files[index]
        shapes = read_positions(path.parent / "particle_positions" / f"{path.stem}_particlepositions.txt")
        if not shapes:
            continue
        px = read_tags(path.parent / "tags" / f"{path.name}_tags.csv").pixel_size_x_nm
        line = shapes[int(draw.integers(len(shapes)))]
        x, y = line[len(line) // 2]
        offsets = (np.arange(EXAMPLE_FIELD_NM) - EXAMPLE_FIELD_NM / 2 + 0.5) / px  # pixel offsets of 1 nm steps
        rows, cols = np.meshgrid(y + offsets - 0.5, x + offsets - 0.5, indexing="ij")
        crops.append(map_coordinates(read_image(path).astype(np.float32), [rows, cols], order=1, mode="mirror"))
    return crops


def plot_synthetic_vs_real(synthetic_root, real_root, out_png, *, seed: int, per_class: int = 3) -> None:
    """Figure: per class, synthetic crops (left) beside real ones (right), all 256 nm fields at 1 nm/px."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from temvirus.io import save_figure

    real_root = Path(real_root) if real_root else None
    has_real = real_root is not None and real_root.is_dir()
    columns = per_class * (2 if has_real else 1)
    fig, axes = plt.subplots(
        len(CLASSES), columns, figsize=(1.25 * columns + 1.2, 1.25 * len(CLASSES) + 0.8), dpi=80, squeeze=False
    )
    for row, cls in zip(axes, CLASSES):
        tiles = example_crops(synthetic_root, cls, per_class, seed)
        tiles += [None] * (per_class - len(tiles))
        if has_real:
            real = example_crops(real_root, cls, per_class, seed)
            tiles += real + [None] * (per_class - len(real))
        for k, (ax, tile) in enumerate(zip(row, tiles)):
            ax.set_xticks([]), ax.set_yticks([])
            if tile is None:
                ax.set_facecolor("0.92")
                ax.text(
                    0.5, 0.5, "no\nexample", ha="center", va="center", fontsize=7, color="0.4", transform=ax.transAxes
                )
            else:
                lo, hi = np.percentile(tile, [1, 99])
                ax.imshow(tile, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6), interpolation="nearest")
            if k == 0:
                ax.set_ylabel(cls, fontsize=8, rotation=0, ha="right", va="center")
    axes[0, 0].set_title("synthetic", fontsize=9, loc="left")
    if has_real:
        axes[0, per_class].set_title(f"real ({real_root.name})", fontsize=9, loc="left")
        title = "Synthetic (left) vs real (right) TEM examples: 256 nm fields at 1 nm/px"
    else:
        title = f"Synthetic TEM examples only (no real examples: {real_root} not found); 256 nm fields at 1 nm/px"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    save_figure(out_png, fig)
