"""Specimen geometry of the synthetic data: class styles, particles, debris and stain, in nm.

Part of :mod:`temvirus.synth`; :func:`make_specimen` builds the specimen of one image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from temvirus.seeding import rng

PIXEL_SIZE_RANGE_NM = (0.26, 5.57)
#: fewest pixels across a particle's diameter
MIN_DIAMETER_PX = 12.0
#: most pixels across a particle's diameter (higher magnifications are not chosen)
MAX_DIAMETER_PX = 160.0


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
    "Ebola": Style("filament", "helix", spread=0.08, period=6.0, texture_depth=0.25),  # shape: FILAMENTS
    "Guanarito": Style("pleomorphic", "granules", spread=0.22, outline=0.08),
    "Influenza": Style("pleomorphic", "fringe", spread=0.18, outline=0.09, fringe=12.0),
    "Lassa": Style("pleomorphic", "granules", spread=0.22, outline=0.08),
    "LCM": Style("pleomorphic", "granules", spread=0.2, outline=0.07),
    "Machupo": Style("pleomorphic", "granules", spread=0.22, outline=0.1),
    # the real Marburg images show a dark halo of pooled stain around the curled virions
    "Marburg": Style("filament", "helix", spread=0.08, period=5.0, texture_depth=0.2, pool=1.8),
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


@dataclass(frozen=True)
class Filament:
    """Length and shape of one filamentous class's virions (lengths in nm).

    Read off the published images of the two filovirus classes (the 123 Ebola and Marburg
    crops in ``../shared/real-tem``, docs/benchmarks.md section 5): Ebola virions lie mostly
    straight, a few with a crook at one end; Marburg virions are mostly curled into a hook,
    a "6", a U or a ring, and shorter. The helix of the nucleocapsid (``Style.period``)
    needs pixels under 2.5 nm, which most images do not have.
    """

    median_nm: float  # median length (lognormal)
    log_sd: float  # log standard deviation of the length
    curl: float  # chance that a virion is curled
    curl_share: tuple[float, float]  # range of the share of the length the curl takes
    curl_radius_nm: tuple[float, float]  # range of the centre line's radius in the curl
    curl_at_end: bool  # the curl ends the filament (crook, "6"), or lies anywhere along it (also U)
    bend: float = 1.0  # factor on the gentle bending of the rest of the filament


FILAMENTS = {
    "Ebola": Filament(900.0, 0.4, 0.2, (0.15, 0.3), (45.0, 90.0), curl_at_end=True, bend=0.5),
    "Marburg": Filament(750.0, 0.35, 0.8, (0.3, 0.6), (60.0, 110.0), curl_at_end=False),
}
#: octaves of the stain grain: (lattice spacing, amplitude) relative to the specimen's finest
GRAIN_OCTAVES = ((1.0, 1.0), (2.7, 0.55), (7.3, 0.3))


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


def _filament_line(length: float, shape: Filament | None, draw: np.random.Generator, step: float = 4.0) -> np.ndarray:
    """A smooth curved centre line (dense, ``step`` nm apart) starting at the origin.

    ``shape`` None: a gently bent line (debris fibres); else a virion of that class, curled
    with the chance ``shape.curl``.
    """
    n = max(2, int(length / step) + 1)
    bend = 1.0 if shape is None else shape.bend
    kappa = bend * (draw.normal(0, 1 / 900) + np.cumsum(draw.normal(0, 1 / 6000, n)))
    if shape is not None and draw.random() < shape.curl:
        k = max(1, int(n * draw.uniform(*shape.curl_share)))
        start = n - k if shape.curl_at_end else int(draw.integers(0, n - k + 1))
        kappa[start : start + k] += np.sign(draw.normal()) / draw.uniform(*shape.curl_radius_nm)
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
    """Centres (n, 2) nm for round-ish bodies, scattered (with some touching pairs) or in packed
    clusters, and which to keep (:func:`_apart`)."""
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
        return centres, _apart(centres, radii, lo, hi, draw)
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
    return centres, _apart(centres, radii, lo, hi, draw)


def _apart(centres: np.ndarray, radii: np.ndarray, lo: np.ndarray, hi: np.ndarray, draw) -> np.ndarray:
    """Move each of ``centres`` (n, 2) nm lying within half the two radii of an earlier one (a
    crowded cluster clipped to the field, or a last placing attempt that failed) to a free place in
    ``lo``..``hi``, in place; which to keep: one without a free place in 100 tries is left out.
    An annotator marks one particle where two lie on each other, and the raw reader refuses two
    centres closer than :data:`temvirus.raw.NEAR_POINT_NM`. Fields where particles do not lie on
    each other are as before (no draw is taken)."""
    keep = np.ones(len(centres), dtype=bool)
    for i in range(1, len(centres)):
        kept = keep[:i]
        for _ in range(100):
            if (np.hypot(*(centres[:i][kept] - centres[i]).T) >= 0.5 * (radii[:i][kept] + radii[i])).all():
                break
            centres[i] = draw.uniform(lo, hi)
        else:
            keep[i] = False
    return keep


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
    shape = FILAMENTS[cls]
    return np.clip(shape.median_nm * np.exp(draw.normal(0, shape.log_sd, count)), 250, 2600)


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
        for d, length in zip(diameters, lengths):
            r = d / 2
            for attempt in range(80):
                shrink = 0.85 ** (attempt // 20)
                line = _filament_line(length * shrink, FILAMENTS[cls], draw)
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
        centres, keep = _place_centres(radii, style.arrangement, width, height, draw)
        for d, (x, y) in zip(diameters[keep], centres[keep]):
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
        line = _filament_line(draw.uniform(150, 1500), None, draw) + [x, y]
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
