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
* **Cost**: wall seconds and pairs per second of ``score_pairs`` at each ``--threads``
  (one worker process per class at a time), BLAS limited to one thread per process.

How to run (``benchmarks/out/overlap.json`` gets the figures)::

    .venv/bin/python benchmarks/overlap.py --scale 0.2 --overlaps 30 --threads 1,2
    .venv/bin/python benchmarks/overlap.py --scale 0 --real ../shared/real-tem/tem-virus-1nm-crops \\
        --verified tests/data/overlap_verified_pairs.csv --threads 1,2
    .venv/bin/python benchmarks/overlap.py --scale 0 --real ../shared/real-tem/tem-virus-1nm-crops \\
        --verified tests/data/overlap_verified_pairs.csv --turned
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=0.2, help="synthetic data scale (0: no synthetic run)")
    parser.add_argument("--overlaps", type=int, default=30, help="planted re-images")
    parser.add_argument("--threads", default="1,2", help="worker processes to time, comma-separated")
    parser.add_argument("--real", type=Path, help="raw-layout folder of real images")
    parser.add_argument("--verified", type=Path, help="CSV class,image_a,image_b of same-field pairs verified by eye")
    parser.add_argument("--classes", nargs="*", help="only these classes of the real data")
    parser.add_argument(
        "--turned", action="store_true", help="with --real/--verified: the verified pairs with image_b turned"
    )
    args = parser.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    limit_threads(1)
    settings, params = overlap_settings()
    result = {"machine": machine_info(), "settings": repr(settings)}
    if args.scale > 0:
        synthetic(args, settings, params, result)
    if args.real and args.turned:
        turned_pairs(args, settings, result)
    elif args.real:
        real(args, settings, result)
    print(write_result(OUT / "overlap.json", result))


if __name__ == "__main__":
    main()
