"""Writing the synthetic dataset in the published raw layout (TIFF, tags, particle positions) and its truth.

Part of :mod:`temvirus.synth`; :func:`generate_dataset` runs plan, specimen, render and planted overlaps.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from threadpoolctl import threadpool_limits

from temvirus.classes import FOLDER_NAMES, load_table1
from temvirus.io import atomic_dir, write_csv
from temvirus.seeding import rng
from temvirus.synth.plan import MICROSCOPES, plan_dataset
from temvirus.synth.planted import CHANGES, plant_overlap
from temvirus.synth.render import Exposure, render
from temvirus.synth.specimen import Particle, make_specimen

log = logging.getLogger(__name__)

TRUTH_COLUMNS = [
    "image_id",
    "source_image_id",
    "class",
    "subset",
    "change",
    "pixel_size_nm",
    "source_pixel_size_nm",
    "offset_x_nm",
    "offset_y_nm",
    "overlap_fraction",
    "n_particles",
    "source_n_particles",
]
#: columns of the particle sizes table (``sizes_csv`` of :func:`generate_dataset`): one row per
#: annotated particle (``particle`` numbers them per image as in its positions file); the true
#: diameter (nm; the width of ovals, bricks and filaments) and length (nm; the diameter of
#: round particles, the centre line's length of filaments)
SIZE_COLUMNS = ["image_id", "particle", "class", "shape", "diameter_nm", "length_nm"]


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


def _size_rows(image_id: str, cls: str, particles: list[Particle]) -> list[tuple]:
    """The true sizes (:data:`SIZE_COLUMNS`) of the particles written to one image, in file order."""
    rows = []
    for k, p in enumerate(particles):
        body, diameter = p.body, 2 * p.body.r
        if body.line is not None:
            length = float(np.hypot(*np.diff(body.line, axis=0).T).sum())
        else:
            length = diameter * max(body.aspect, 1.0)
        rows.append((image_id, k, cls, body.shape, round(diameter, 3), round(length, 3)))
    return rows


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
    sizes_csv: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Write the synthetic raw dataset to ``out_root`` and the planted overlaps to ``truth_csv``.

    ``sizes_csv``: also write every annotated particle's true size there (:data:`SIZE_COLUMNS`).

    ``table1`` is the paper's Table 1 (a path or :func:`temvirus.classes.load_table1` frame).
    ``binning`` 2 records 2x2-binned camera frames (688x516 and 1024x1024 px, a quarter of
    the pixels: the fast default); 1 gives the paper's 1376x1032 and 2048x2048 frames.
    ``classes`` generates only those classes (quick tries and tests); default all 22.
    The tree is built in a temporary folder beside ``out_root`` and renamed into place when
    complete. Errors, raised before anything is written: an existing non-empty ``out_root``
    (FileExistsError); ``binning`` not 1 or 2, ``overlaps`` below 0, or ``truth_csv`` or
    ``sizes_csv`` inside ``out_root``, where the raw reader would take them for data
    (ValueError). Returns the truth table.
    """
    table = load_table1(table1) if isinstance(table1, (str, os.PathLike)) else table1
    if binning not in (1, 2):
        raise ValueError(f"binning must be 1 or 2, got {binning}")
    if overlaps < 0:
        raise ValueError(f"overlaps must be at least 0, got {overlaps}")
    out_root = Path(out_root)
    for table_csv in (truth_csv, sizes_csv):
        if table_csv is not None and Path(table_csv).resolve().is_relative_to(out_root.resolve()):
            raise ValueError(f"{table_csv}: inside the output folder {out_root}; write it elsewhere")
    if out_root.exists() and any(out_root.iterdir()):
        raise FileExistsError(f"{out_root}: output folder exists and is not empty; remove it first")
    plan = plan_dataset(table, scale, seed, classes)
    with atomic_dir(out_root) as tmp:  # out_root is missing or empty (checked above)
        with threadpool_limits(1):  # small matrix products: BLAS threads only spin on a busy machine
            truth, sizes = _generate_into(tmp, plan, seed, overlaps, binning)
        write_csv(truth_csv, truth)
        if sizes_csv is not None:
            write_csv(sizes_csv, sizes)
    log.info(
        "%s: %d images (%d planted overlaps), %d particles, %d classes",
        out_root,
        len(plan) + len(truth),
        len(truth),
        int(plan.n_particles.sum() + truth.n_particles.sum()),
        plan["class"].nunique(),
    )
    return truth


def _generate_into(
    root: Path, plan: pd.DataFrame, seed: int, overlaps: int, binning: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    sources = _overlap_sources(plan, seed, overlaps)
    truth, sizes = [], []
    next_rank = plan.groupby("class").size().to_dict()
    for row in plan.rename(columns={"class": "cls"}).itertuples(index=False):
        size_px = tuple(side // binning for side in MICROSCOPES[row.microscope][0])
        specimen, px = make_specimen(row.cls, row.n_particles, row.diameter_nm, size_px, seed, row.image_id)
        exposure = Exposure((0.0, 0.0), px, size_px, row.microscope, binning)
        folder = root / row.subset / FOLDER_NAMES[row.cls]
        pixels = render(specimen, exposure, rng(seed, "synth", "exposure", row.image_id))
        _write_image(folder, row.image_id, pixels, specimen.particles, exposure)
        sizes += _size_rows(row.image_id, row.cls, specimen.particles)
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
            sizes += _size_rows(image_id, row.cls, inside)
            truth.append(
                (
                    image_id,
                    row.image_id,
                    row.cls,
                    row.subset,
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
    truth = pd.DataFrame(truth, columns=TRUTH_COLUMNS).sort_values("image_id", kind="stable").reset_index(drop=True)
    sizes = pd.DataFrame(sizes, columns=SIZE_COLUMNS).sort_values(["image_id", "particle"], kind="stable")
    return truth, sizes.reset_index(drop=True)


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


def generate_from_config(params: dict, table1_csv, out_root, truth_csv, sizes_csv=None) -> pd.DataFrame:
    """:func:`generate_dataset` with the ``dataset.synthetic`` section of the config."""
    return generate_dataset(
        out_root,
        truth_csv,
        table1=table1_csv,
        scale=float(params["scale"]),
        seed=int(params["seed"]),
        overlaps=int(params["overlaps"]),
        binning=int(params.get("binning", 1)),
        sizes_csv=sizes_csv,
    )
