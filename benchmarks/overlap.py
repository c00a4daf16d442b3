"""Overlap-removal benchmark: precision and recall (per kind of change) and cost of find_overlaps.

What it measures
----------------
* **Synthetic**: the generator's planted re-images (:func:`temvirus.synth.generate_dataset`,
  the ``dataset.synthetic`` seed, ``--scale``, ``--overlaps``, binning 2), scored by
  :func:`temvirus.overlap.score_pairs` with the default config's ``overlap`` section.
  Precision (claimed pairs inside one planted group) and recall (planted images grouped with
  their source), overall and per kind of change (``change`` of the truth table: a claimed
  pair counts for the kind of the planted image in it; a false pair for none).
* **Real** (``--real DIR`` and ``--verified CSV``): the same on a raw-layout folder against
  a list of same-field pairs verified by eye (``class,image_a,image_b``); ``--classes``
  restricts both.
* **Turned** (``--turned`` with ``--real`` and ``--verified``): each verified pair with
  image_b turned (rotated by 1-90 degrees, mirrored; :data:`TURNS`): found with the turned
  search (step 7 of :mod:`temvirus.overlap`: turns from the points and from keypoints), with
  the points' turns only, and without it, side by side.
* **Variants** (``--variants`` with ``--real`` and ``--verified``): kinds of real re-imaging
  (:data:`VARIANTS`: magnification, a pixel size recorded wrongly, the share of the field,
  exposure, dose, defocus, JPEG, 8/16 bits, turns, and some combined) made from one real crop
  of each of :data:`VARIANT_CLASSES` (``--classes``): a second view of part of its field
  (:func:`reimaged`), scored against the first (planted) and against an unrelated crop of the
  class (control); per kind planted / found / false claims and seconds, every pair's figures
  in ``overlap_variants.csv``.
* **Cost**: wall seconds and pairs per second of ``score_pairs`` at each ``--threads``
  (one worker process per class at a time), BLAS limited to one thread per process.

How to run (``benchmarks/out/overlap.json`` gets the figures)::

    .venv/bin/python benchmarks/overlap.py --scale 0.2 --overlaps 30 --threads 1,2
    .venv/bin/python benchmarks/overlap.py --scale 0 --real ../shared/real-tem/tem-virus-1nm-crops \\
        --verified tests/data/overlap_verified_pairs.csv --threads 1,2
    .venv/bin/python benchmarks/overlap.py --scale 0 --real ../shared/real-tem/tem-virus-1nm-crops \\
        --verified tests/data/overlap_verified_pairs.csv --turned
    .venv/bin/python benchmarks/overlap.py --scale 0 --real ../shared/real-tem/tem-virus-1nm-crops \\
        --verified tests/data/overlap_verified_pairs.csv --variants --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from _common import OUT, REPO, limit_threads, machine_info, write_result  # noqa: E402


def overlap_settings():
    from temvirus.overlap import OverlapSettings

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return OverlapSettings.from_config(config["overlap"]), config["dataset"]["synthetic"]


def timed(images, root, settings, particles, threads: int) -> tuple[pd.DataFrame, dict]:
    from temvirus.overlap import score_pairs

    started = time.perf_counter()
    pairs = score_pairs(images, root, settings, particles, threads)
    wall = time.perf_counter() - started
    return pairs, {
        "threads": threads,
        "wall_s": round(wall, 1),
        "pairs": len(pairs),
        "pairs_per_s": round(len(pairs) / wall, 1),
    }


def per_kind(pairs: pd.DataFrame, kept: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Precision and recall overall and per ``change`` of the planted images."""
    from temvirus.overlap import OVERLAP, score_against_truth

    result = {"all": score_against_truth(kept, pairs, truth)}
    claimed = pairs[pairs.decision == OVERLAP]
    kind_of = truth.set_index("image_id")["change"]
    for kind, rows in truth.groupby("change"):
        group = kept.set_index("image_id").overlap_group
        found = int((group.reindex(rows.image_id).to_numpy() == group.reindex(rows.source_image_id).to_numpy()).sum())
        mine = claimed[claimed.image_a.map(kind_of).eq(kind) | claimed.image_b.map(kind_of).eq(kind)]
        right = sum(_same_truth_group(r.image_a, r.image_b, truth) for r in mine.itertuples())
        result[kind] = {
            "planted": len(rows),
            "found": found,
            "recall": round(found / len(rows), 3),
            "claimed": len(mine),
            "precision": round(right / len(mine), 3) if len(mine) else None,
        }
    return result


def _same_truth_group(a: str, b: str, truth: pd.DataFrame) -> bool:
    """Whether two images show one planted field (a planted image and its source, or two
    planted images of one source)."""
    source = dict(zip(truth.image_id, truth.source_image_id))
    return source.get(a, a) == source.get(b, b)


def synthetic(args, settings, params, result: dict) -> None:
    from temvirus.overlap import group_images
    from temvirus.raw import read_dataset
    from temvirus.synth import generate_dataset

    base = OUT / "data" / f"overlap-s{args.scale:g}-o{args.overlaps}"
    if not (base / "raw" / "train").is_dir():
        generate_dataset(
            base / "raw",
            base / "truth.csv",
            table1=REPO / "resources" / "paper" / "table1_dataset.csv",
            scale=args.scale,
            seed=int(params["seed"]),
            overlaps=args.overlaps,
            binning=2,
        )
    truth = pd.read_csv(base / "truth.csv")
    images, particles = read_dataset(base / "raw", hash_files=False)
    runs = []
    for threads in args.threads:
        pairs, cost = timed(images, base / "raw", settings, particles, threads)
        runs.append(cost)
        print("synthetic", cost, flush=True)
    result["synthetic"] = {
        "scale": args.scale,
        "overlaps": args.overlaps,
        "images": len(images),
        "cost": runs,
        "scores": per_kind(pairs, group_images(images, pairs), truth),
    }
    print(pd.DataFrame(result["synthetic"]["scores"]).T.to_string(), flush=True)


def real(args, settings, result: dict) -> None:
    from temvirus.overlap import OVERLAP
    from temvirus.raw import read_dataset

    images, particles = read_dataset(args.real, hash_files=False)
    verified = pd.read_csv(args.verified, dtype=str)
    if args.classes:
        images = images[images["class"].isin(args.classes)]
        verified = verified[verified["class"].isin(args.classes)]
    runs = []
    for threads in args.threads:
        pairs, cost = timed(images, args.real, settings, particles, threads)
        runs.append(cost)
        print("real", cost, flush=True)
    claimed = {
        frozenset(p) for p in pairs.loc[pairs.decision == OVERLAP, ["image_a", "image_b"]].itertuples(index=False)
    }
    truth = {frozenset(p) for p in verified[["image_a", "image_b"]].itertuples(index=False)}
    result["real"] = {
        "images": len(images),
        "cost": runs,
        "verified_pairs": len(truth),
        "claimed": len(claimed),
        "found": len(claimed & truth),
        "recall": round(len(claimed & truth) / len(truth), 3) if truth else None,
        "unverified_claims": sorted(sorted(p) for p in claimed - truth),
        "missed": sorted(sorted(p) for p in truth - claimed),
    }
    print({k: v for k, v in result["real"].items()}, flush=True)


#: turns of image_b for ``--turned``: (rotation in degrees, mirrored)
TURNS = {
    "rotated 1": (1.0, False),
    "rotated 3": (3.0, False),
    "rotated 10": (10.0, False),
    "rotated -37": (-37.0, False),
    "rotated 90": (90.0, False),
    "mirrored": (0.0, True),
    "mirrored, rotated 20": (20.0, True),
}


def turned_pairs(args, settings, result: dict) -> None:
    """Each verified real pair with image_b turned (:data:`TURNS`, bicubic): is the pair still
    found, with the turned search from the points and keypoints, from the points only
    (``keypoint_min_inliers: 0``), and without it (both 0)?"""
    from dataclasses import replace

    import numpy as np
    from PIL import Image

    from temvirus.overlap import OVERLAP, score_class, turned, turned_points
    from temvirus.raw import read_dataset, read_image

    images, particles = read_dataset(args.real, hash_files=False)
    images = images.set_index("image_id")
    verified = pd.read_csv(args.verified, dtype=str)
    if args.classes:
        verified = verified[verified["class"].isin(args.classes)]
    verified = verified[verified.image_a.isin(images.index) & verified.image_b.isin(images.index)]
    points = {k: g[["x", "y"]].to_numpy(float) for k, g in particles.groupby("image_id")}
    folder = OUT / "data" / "overlap-turned"
    folder.mkdir(parents=True, exist_ok=True)
    variants = {
        "points and keypoints": settings,
        "points only": replace(settings, keypoint_min_inliers=0),
        "without": replace(settings, rotation_min_points=0, keypoint_min_inliers=0),
    }
    found = {name: {kind: 0 for kind in TURNS} for name in variants}
    seconds = dict.fromkeys(variants, 0.0)
    misses = []
    for pair in verified.itertuples(index=False):
        a, b = images.loc[pair.image_a], images.loc[pair.image_b]
        pixels_b = read_image(Path(args.real) / b.path)
        for kind, (angle, mirrored) in TURNS.items():
            top = np.iinfo(pixels_b.dtype).max  # raw images are integer (temvirus.raw.read_image)
            copy = np.clip(np.round(turned(pixels_b, angle, mirrored, order=3)), 0, top).astype(pixels_b.dtype)
            path = folder / f"{pair.image_b}_{kind.replace(' ', '_').replace(',', '')}.png"
            Image.fromarray(copy).save(path)
            table = pd.DataFrame(
                [
                    (
                        pair.image_a,
                        pair[0],
                        str(Path(args.real).resolve() / a.path),
                        a.width,
                        a.height,
                        a.pixel_size_nm,
                    ),
                    ("turned", pair[0], str(path.resolve()), copy.shape[1], copy.shape[0], b.pixel_size_nm),
                ],
                columns=["image_id", "class", "path", "width", "height", "pixel_size_nm"],
            )
            known = {
                pair.image_a: points.get(pair.image_a, np.zeros((0, 2))),
                "turned": turned_points(points.get(pair.image_b, np.zeros((0, 2))), pixels_b.shape, angle, mirrored),
            }
            for name, variant in variants.items():
                started = time.perf_counter()
                row = score_class(table, "/", variant, known).iloc[0]
                seconds[name] += time.perf_counter() - started
                found[name][kind] += row.decision == OVERLAP
                if variant is settings and row.decision != OVERLAP:
                    misses.append(f"{pair[0]} {pair.image_a}/{pair.image_b} {kind}: evidence {row.evidence:.3f}")
    result["turned"] = {
        "pairs": len(verified),
        "found": found,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "missed": misses,
    }
    print(pd.DataFrame(found).to_string(), flush=True)
    print({k: v for k, v in result["turned"].items() if k != "found"}, flush=True)


#: ``--variants``: kinds of real re-imaging, each applied to a second view of part of a real
#: crop's field (:func:`reimaged`). Keys: ``share`` (of the smaller field shared, or
#: ``strip_nm``), ``pixel_nm`` (b's true pixel), ``recorded`` (its recorded pixel / the true
#: one), ``blur_nm`` (defocus: Gaussian sigma before sampling), ``gamma``, ``gradient`` (a
#: brightness ramp across b: 1 -/+ this), ``inverted``, ``dose`` (electrons per nm^2: Poisson
#: noise), ``jpeg`` (quality), ``bits`` (8 or 16; PNG / TIFF), ``rotation``, ``mirrored``.
VARIANTS = {
    "60% shared (base)": {},
    "magnification 0.5x": {"pixel_nm": 0.5},
    "magnification 0.7x": {"pixel_nm": 0.7},
    "magnification 1.5x": {"pixel_nm": 1.5},
    "magnification 2x": {"pixel_nm": 2.0},
    "magnification 3x": {"pixel_nm": 3.0},
    "2x, recorded +2%": {"pixel_nm": 2.0, "recorded": 1.02},
    "2x, recorded -5%": {"pixel_nm": 2.0, "recorded": 0.95},
    "2x, recorded +10%": {"pixel_nm": 2.0, "recorded": 1.10},
    "1x, recorded -10%": {"recorded": 0.90},
    "30% shared": {"share": 0.3},
    "15% shared": {"share": 0.15},
    "strip 40 nm": {"strip_nm": 40},
    "b inside a (100%)": {"share": 1.0},
    "gamma 0.5": {"gamma": 0.5},
    "gamma 2": {"gamma": 2.0},
    "gradient +-40%": {"gradient": 0.4},
    "contrast inverted": {"inverted": True},
    "dose 20 e/nm2": {"dose": 20},
    "dose 5 e/nm2": {"dose": 5},
    "defocus blur 1 nm": {"blur_nm": 1.0},
    "defocus blur 2 nm": {"blur_nm": 2.0},
    "defocus blur 3 nm": {"blur_nm": 3.0},
    "JPEG quality 10": {"jpeg": 10},
    "16-bit TIFF": {"bits": 16},
    "turned 10": {"rotation": 10.0},
    "mirrored": {"mirrored": True},
    "turned 90, 2x": {"rotation": 90.0, "pixel_nm": 2.0},
    "mirrored, gamma 2, dose 20": {"mirrored": True, "gamma": 2.0, "dose": 20},
    "turned -37, 30% shared": {"rotation": -37.0, "share": 0.3},
    "turned 10, recorded +10%": {"rotation": 10.0, "recorded": 1.10},
    "turned 5, 2x, recorded -10%": {"rotation": 5.0, "pixel_nm": 2.0, "recorded": 0.90},
    "turned 20, recorded +15%": {"rotation": 20.0, "recorded": 1.15},
    "2x, gamma 0.5, dose 20, blur 2": {"pixel_nm": 2.0, "gamma": 0.5, "dose": 20, "blur_nm": 2.0},
    "0.7x, 30% shared, JPEG 20": {"pixel_nm": 0.7, "share": 0.3, "jpeg": 20},
    "1.5x recorded +5%, gradient, blur 1": {"pixel_nm": 1.5, "recorded": 1.05, "gradient": 0.4, "blur_nm": 1.0},
    "3x, 15% shared, 16-bit": {"pixel_nm": 3.0, "share": 0.15, "bits": 16},
}
#: ``--variants``: classes of different particle sizes (Norovirus ~30 nm ... Cowpox ~250 nm)
VARIANT_CLASSES = ("Rotavirus", "Papilloma", "Norovirus", "Adenovirus", "Cowpox", "CCHF")


def reimaged(pixels, points, kind: dict, seed: int):
    """Two views of one real 1 nm/px field ``pixels`` (points: (n, 2) x/y pixels): ``a``, its
    left part, as it is, and ``b``, its right part, re-imaged as ``kind`` (:data:`VARIANTS`)
    says; the parts share ``share`` (default 0.6) of their width, or ``strip_nm``, or b lies
    inside a (share 1). Returns ``(a, points_a), (b, points_b, encoding, recorded pixel nm)``;
    b's pixels are uint8 or uint16, its points in its own pixels."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    from temvirus.overlap import turned, turned_points
    from temvirus.rescale import rescale_image

    rng = np.random.default_rng(seed)
    height, width = pixels.shape
    share = kind.get("share", 0.6)
    if share >= 1:  # b: the middle 60% of a's field
        a_cols, b_x0, b_w = (0, width), int(0.2 * width), int(0.6 * width)
    else:
        shared = kind.get("strip_nm") or share * width / (2 - share)
        w = int(round((width + shared) / 2))
        a_cols, b_x0, b_w = (0, w), width - w, w
    a = pixels[:, a_cols[0] : a_cols[1]]

    def inside(p, x0, w):  # points within columns x0 .. x0 + w, in that part's pixels
        return p[(p[:, 0] >= x0) & (p[:, 0] < x0 + w)] - [x0, 0]

    field = pixels[:, b_x0 : b_x0 + b_w].astype(np.float64)
    b_points = inside(points, b_x0, b_w)
    if kind.get("blur_nm"):
        field = gaussian_filter(field, kind["blur_nm"])
    pixel_nm = kind.get("pixel_nm", 1.0)
    if pixel_nm != 1.0:  # the workflow's Lanczos-3, here from 1 nm to pixel_nm
        field = rescale_image(field, 1 / pixel_nm)
        b_points = b_points / pixel_nm
    top = field.max()
    b = np.clip(field / top, 0, 1)
    if kind.get("gamma"):
        b = b ** kind["gamma"]
    if kind.get("gradient"):
        b = b * np.linspace(1 - kind["gradient"], 1 + kind["gradient"], b.shape[1])[None, :] / (1 + kind["gradient"])
    if kind.get("inverted"):
        b = 1 - b
    if kind.get("dose"):  # counts per pixel: dose per nm^2 times the pixel's area, bright = more
        counts = kind["dose"] * pixel_nm**2
        b = rng.poisson(b * counts) / counts
    if kind.get("rotation") or kind.get("mirrored"):
        angle, mirrored = kind.get("rotation", 0.0), kind.get("mirrored", False)
        b_points = turned_points(b_points, b.shape, angle, mirrored)
        b = turned(b, angle, mirrored, order=3)
    bits = kind.get("bits", 8)
    top = 2**bits - 1
    b = np.clip(np.round(b / max(b.max(), 1e-9) * top), 0, top).astype(np.uint8 if bits == 8 else np.uint16)
    encoding = f"jpeg{kind['jpeg']}" if kind.get("jpeg") else ("tif" if bits == 16 else "png")
    return (a, inside(points, *a_cols)), (b, b_points, encoding, pixel_nm * kind.get("recorded", 1.0))


def variant_sources(images: pd.DataFrame, verified: pd.DataFrame, root: Path, classes) -> list[tuple]:
    """Per class, a source crop (at the 3rd quartile of particle counts, with less than 2% of
    padding) and an unrelated crop (1st quartile, not verified as one field with it)."""
    from temvirus.overlap import constant_area_mask
    from temvirus.raw import read_image

    same = {frozenset(p) for p in verified[["image_a", "image_b"]].itertuples(index=False)}
    chosen = []
    for cls in classes:
        rows = images[images["class"] == cls].sort_values(["n_particles", "image_id"]).reset_index(drop=True)
        order = list(range(len(rows) * 3 // 4, len(rows))) + list(range(len(rows) * 3 // 4 - 1, -1, -1))
        source = next(rows.loc[k] for k in order if constant_area_mask(read_image(root / rows.path[k])).mean() < 0.02)
        other = next(
            rows.loc[k]
            for k in range(len(rows) // 4, len(rows))
            if rows.image_id[k] != source.image_id and frozenset((rows.image_id[k], source.image_id)) not in same
        )
        chosen.append((cls, source, other))
    return chosen


def _variants_of(task) -> list[dict]:
    """Every kind of :data:`VARIANTS` on one class's source: a with b, and b with the unrelated
    crop; one row per pair scored (what :func:`variant_probe` tabulates)."""
    import numpy as np
    import tifffile
    from PIL import Image

    from temvirus.overlap import OVERLAP, score_class
    from temvirus.raw import read_image

    cls, source, other, root, points, folder, settings, kinds = task
    limit_threads(1)
    pixels = read_image(root / source.path)
    rows = []
    for k, (kind, spec) in enumerate(VARIANTS.items()):
        if kinds and kind not in kinds:
            continue
        (a, points_a), (b, points_b, encoding, recorded) = reimaged(pixels, points[source.image_id], spec, seed=k)
        path_a = folder / f"{cls}_{k:02d}_a.png"
        Image.fromarray(a).save(path_a)
        if encoding == "tif":
            path_b = folder / f"{cls}_{k:02d}_b.tif"
            tifffile.imwrite(path_b, b)
        else:
            path_b = folder / f"{cls}_{k:02d}_b.{'png' if encoding == 'png' else 'jpg'}"
            Image.fromarray(b).save(path_b, **({} if encoding == "png" else {"quality": int(encoding[4:])}))

        def entry(name, path, shape, nm):
            return name, cls, str(path), shape[1], shape[0], nm

        tables = {
            "planted": [entry("a", path_a, a.shape, source.pixel_size_nm), entry("b", path_b, b.shape, recorded)],
            "control": [
                entry("c", root / other.path, (other.height, other.width), other.pixel_size_nm),
                entry("b", path_b, b.shape, recorded),
            ],
        }
        known = {"a": points_a, "b": points_b, "c": points.get(other.image_id, np.zeros((0, 2)))}
        for role, table in tables.items():
            frame = pd.DataFrame(table, columns=["image_id", "class", "path", "width", "height", "pixel_size_nm"])
            started = time.perf_counter()
            row = score_class(frame, "/", settings, known).iloc[0]
            rows.append(
                dict(
                    row.to_dict(),
                    kind=kind,
                    role=role,
                    source=source.image_id,
                    other=other.image_id,
                    claimed=row.decision == OVERLAP,
                    seconds=time.perf_counter() - started,
                )
            )
    return rows


def variant_probe(args, settings, result: dict) -> None:
    """``--variants``: for one real crop of each of :data:`VARIANT_CLASSES` (or ``--classes``),
    a second view of part of its field re-imaged as each kind of :data:`VARIANTS` says,
    scored against the first view (planted: should be claimed) and against an unrelated crop
    of the class (control: should not). Per kind: planted, found, false claims, seconds; the
    pairs' figures go to ``overlap_variants.csv``."""
    from concurrent.futures import ProcessPoolExecutor

    from temvirus.raw import read_dataset

    images, particles = read_dataset(args.real, hash_files=False)
    verified = pd.read_csv(args.verified, dtype=str)
    points = {k: g[["x", "y"]].to_numpy(float) for k, g in particles.groupby("image_id")}
    folder = OUT / "data" / "overlap-variants"
    folder.mkdir(parents=True, exist_ok=True)
    tasks = [
        (cls, source, other, Path(args.real).resolve(), points, folder, settings, args.kinds)
        for cls, source, other in variant_sources(images, verified, Path(args.real), args.classes or VARIANT_CLASSES)
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(max(args.threads)) as pool:
        rows = pd.DataFrame([row for rows in pool.map(_variants_of, tasks) for row in rows])
    rows.to_csv(OUT / "overlap_variants.csv", index=False)
    planted, control = rows[rows.role == "planted"], rows[rows.role == "control"]
    table = pd.DataFrame(
        {
            "planted": planted.groupby("kind", sort=False).size(),
            "found": planted.groupby("kind", sort=False).claimed.sum(),
            "false": control.groupby("kind", sort=False).claimed.sum(),
            "seconds": rows.groupby("kind", sort=False).seconds.sum().round(1),
        }
    )
    missed = planted[~planted.claimed]
    result["variants"] = {
        "sources": {t[0]: [t[1].image_id, t[2].image_id] for t in tasks},
        "table": table.reset_index().to_dict("records"),
        "missed": [f"{r.kind}: {r['class']} {r.source} evidence {r.evidence:.3f}" for _, r in missed.iterrows()],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(table.to_string(), flush=True)
    print(
        f"all: {table.planted.sum()} planted, {table.found.sum()} found, {table.false.sum()} false claims", flush=True
    )
    print(result["variants"]["sources"], result["variants"]["wall_s"], "s", flush=True)


def main() -> None:
    from temvirus.cli import number_in_range  # argparse types with their ranges

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scale", type=number_in_range(float, 0, 1), default=0.2, help="synthetic data scale (0: no synthetic run)"
    )
    parser.add_argument("--overlaps", type=number_in_range(int, 0), default=30, help="planted re-images")
    parser.add_argument("--threads", default="1,2", help="worker processes to time, comma-separated")
    parser.add_argument("--real", type=Path, help="raw-layout folder of real images")
    parser.add_argument("--verified", type=Path, help="CSV class,image_a,image_b of same-field pairs verified by eye")
    parser.add_argument("--classes", nargs="*", help="only these classes of the real data")
    parser.add_argument(
        "--turned", action="store_true", help="with --real/--verified: the verified pairs with image_b turned"
    )
    parser.add_argument(
        "--variants", action="store_true", help="with --real/--verified: real crops re-imaged by kind (VARIANTS)"
    )
    parser.add_argument("--kinds", nargs="*", help="with --variants: only these kinds of VARIANTS (names as listed)")
    args = parser.parse_args()
    unknown = sorted(set(args.kinds or ()) - set(VARIANTS))
    if unknown:
        parser.error(f"--kinds: unknown {unknown}; known: {list(VARIANTS)}")
    args.threads = [int(t) for t in args.threads.split(",")]
    limit_threads(1)
    settings, params = overlap_settings()
    result = {"machine": machine_info(), "settings": repr(settings)}
    if args.scale > 0:
        synthetic(args, settings, params, result)
    if args.real and args.variants:
        variant_probe(args, settings, result)
    elif args.real and args.turned:
        turned_pairs(args, settings, result)
    elif args.real:
        real(args, settings, result)
    print(write_result(OUT / "overlap.json", result))


if __name__ == "__main__":
    main()
