"""Curation benchmark: patches per second of the project's rescale+patch path vs the usual way.

What it measures
----------------
* **Comparison** (one process, interleaved repeats, rotated order): the project's
  dataset-level patch extraction :func:`temvirus.patches.extract_patches` (raw image read
  once, each 256x256 patch resampled directly with Lanczos-3 by
  :func:`temvirus.rescale.window`) against the same function with the per-image step swapped
  for the usual way: rescale the *whole* image to 1 nm/px, mirror-pad it, crop the patches.
  Baselines: ``pil`` (``PIL.Image.resize(..., Image.LANCZOS)`` on the float32 ``F`` image,
  source mirror-padded and ``box`` set so that PIL samples at the project's positions),
  ``pil_plain`` (the usual one-liner ``resize(size, LANCZOS)``: same cost, but a sub-pixel
  scale/shift and a truncated kernel at the border) and ``full`` (the project's own
  whole-image :func:`temvirus.rescale.rescale_image`).
  Everything else (tables, image reading, rounding, the memory-mapped ``.npy`` writing) is the
  same code, so the difference is the resampling strategy; the per-image step is also timed
  by itself and broken down by pixel size (where each strategy wins). The raw files are read once
  before the timed passes (warm page cache), so the first path pays no cold-disk penalty. Reported: seconds (wall and CPU),
  patches/s, and the speedup per repeat (median and spread).
* **Agreement**: the patches of all paths on the comparison subset, max / p99 / mean absolute
  difference in uint16 grey levels, over all patches and over *interior* patches (window at
  least ``3 * max(s, 1) + 1`` rescaled pixels from the border, where PIL's truncated kernel
  and the project's mirrored taps agree). ``full`` must match the project exactly and ``pil``
  to +-1 grey level (float32 rounding); ``pil_plain`` differs by its sub-pixel shift.
* **Scaling**: the project path (and optionally a baseline) on nested subsets of 10, 25, 50 and
  100% of the images of each class, each in a fresh subprocess, with a least-squares fit of
  seconds against patches (seconds per patch, R^2) and the peak memory: peak RSS (``VmHWM``,
  reset at the worker's start: ``ru_maxrss`` would carry the parent's RSS over ``fork``; it
  counts the pages of the memory-mapped output arrays) and the sampled peak of anonymous
  memory (``RssAnon``: what the process itself allocates).
* BLAS threads: ``--threads 1`` by default, what Snakemake gives the single-threaded
  ``extract_patches`` job (``OPENBLAS_NUM_THREADS=1``); on a loaded machine multi-threaded
  OpenBLAS spins and distorts the window path's timings.

Data: the workflow's synthetic raw dataset (:func:`temvirus.synth.generate_dataset`, the
``dataset.synthetic`` seed/overlaps of ``config/config.yaml``) at ``--scale`` (default 1 =
Table 1's 1245 images) with ``--binning`` (default 1: the paper's 1376x1032 and 2048x2048
frames; the workflow's fast default config uses 2), generated once into
``benchmarks/out/data/`` (about 5.4 GB at scale 1) and reused while ``src/temvirus/synth/``
is unchanged (the sha256 of its files is stored beside the data); or any raw layout folder given
with ``--data``. ``--quick`` uses 12 binned synthetic images of 3 classes (seconds).

How to run (``benchmarks/out/curation.json`` gets the figures)::

    .venv/bin/python benchmarks/curation.py                       # scale 1 (generates ~5.6 GB once)
    .venv/bin/python benchmarks/curation.py --compare-fraction 0.25 --repeats 5
    .venv/bin/python benchmarks/curation.py --quick               # smoke run, seconds
    .venv/bin/python benchmarks/curation.py --data DIR --fractions 0.1,0.5,1
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _common import (  # noqa: E402
    OUT,
    REPO,
    limit_threads,
    linear_fit,
    machine_info,
    maxrss_mib,
    peak_rss_mib,
    reset_peak_rss,
    rss_mib,
    run_worker,
    summary,
    write_result,
)

PATHS = ("project", "pil", "pil_plain", "full")
QUICK_CLASSES = ["Adenovirus", "Ebola", "Orf"]


# ----------------------------------------------------------------------------- data


def synthetic_params() -> dict:
    """The ``dataset.synthetic`` section of the default config (seed, overlaps)."""
    import yaml

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return config["dataset"]["synthetic"]


def generator_sha256() -> str:
    """One sha256 over the generator's source files (``src/temvirus/synth/*.py``)."""
    from temvirus.io import sha256_file
    from temvirus.provenance import tree_sha256

    folder = REPO / "src" / "temvirus" / "synth"
    return tree_sha256((p.name, sha256_file(p)) for p in folder.glob("*.py"))


def ensure_dataset(args) -> tuple[Path, Path]:
    """``(raw_root, cache_dir)``: the raw-layout folder and where its tables and subsets go."""
    if args.data:
        root = Path(args.data).resolve()
        cache = OUT / "cache" / root.name
        return root, cache
    from temvirus.synth import generate_dataset

    params = synthetic_params()
    table1 = REPO / "resources" / "paper" / "table1_dataset.csv"
    if args.quick:  # 3 classes x 4 images, binned frames: seconds
        scale, binning, classes, base = 0.03, 2, QUICK_CLASSES, OUT / "data" / "quick"
    else:
        scale, binning, classes, base = (
            args.scale,
            args.binning,
            None,
            OUT / "data" / f"synthetic-s{args.scale:g}-b{args.binning}",
        )
    root = base / "raw"
    stamp, generator = base / "generator.sha256", generator_sha256()
    if (root / "train").is_dir() and (not stamp.is_file() or stamp.read_text().strip() != generator):
        print(f"{root} was made by another version of temvirus/synth/: generating it again", flush=True)
        shutil.rmtree(base)
    if not (root / "train").is_dir():
        print(
            f"generating the synthetic dataset (scale {scale:g}, binning {binning}) into {root} (once) ...", flush=True
        )
        started = time.perf_counter()
        generate_dataset(
            root,
            base / "truth.csv",
            table1=table1,
            scale=scale,
            seed=int(params["seed"]),
            overlaps=0 if args.quick else int(params["overlaps"]),
            binning=binning,
            classes=classes,
        )
        stamp.write_text(generator + "\n")
        print(f"  generated in {time.perf_counter() - started:.0f} s", flush=True)
    return root, base


def ensure_tables(root: Path, cache: Path) -> tuple[Path, Path]:
    """The image and particle tables of ``root`` (read once, cached as CSV beside the data)."""
    from temvirus.io import write_csv
    from temvirus.raw import read_dataset

    images_csv, particles_csv = cache / "images.csv", cache / "particles.csv"
    if not (images_csv.is_file() and particles_csv.is_file()):
        images, particles = read_dataset(root, hash_files=False)
        write_csv(images_csv, images)
        write_csv(particles_csv, particles)
    return images_csv, particles_csv


def subset_split(images_csv: Path, fraction: float, seed: int, out_csv: Path) -> Path:
    """A split table (the folder split) of a nested subset: ``ceil(fraction * n)`` images per class.

    Each class's images are put in a fixed random order (seeded per class) and the first ones
    are taken, so the 10% subset lies inside the 25% one, and so on.
    """
    from temvirus.io import write_csv
    from temvirus.seeding import rng

    images = pd.read_csv(images_csv)
    keep = []
    for cls, rows in images.groupby("class", sort=True):
        order = rng(seed, "benchmark-subset", cls).permutation(len(rows))
        keep += list(rows.image_id.iloc[order[: max(1, math.ceil(fraction * len(rows)))]])
    chosen = images[images.image_id.isin(keep)]
    split = chosen[["image_id", "class", "n_particles", "folder_subset"]].assign(
        overlap_group=chosen.image_id, subset=chosen.folder_subset
    )
    write_csv(out_csv, split.sort_values("image_id", ignore_index=True))
    return out_csv


# ----------------------------------------------------------------------------- the usual way


def crop_patches(rescaled: np.ndarray, centres_nm: np.ndarray, low: int, high: int) -> np.ndarray:
    """Mirror-pad a whole 1 nm/px image and crop the 256x256 patches (window alignment as the project's)."""
    from temvirus.patches import PATCH_SIZE
    from temvirus.rescale import quantize

    half = PATCH_SIZE // 2
    pad = half + 1
    padded = np.pad(rescaled, pad, mode="reflect")
    out = np.empty((len(centres_nm), PATCH_SIZE, PATCH_SIZE), dtype=np.uint16)
    for i, (x_nm, y_nm) in enumerate(centres_nm):
        top = int(np.floor(y_nm - half + 0.5)) + pad
        left = int(np.floor(x_nm - half + 0.5)) + pad
        out[i] = quantize(padded[top : top + PATCH_SIZE, left : left + PATCH_SIZE], low, high)
    return out


def pil_image(pixels: np.ndarray, pixel_size_nm: float, centres_nm: np.ndarray, size: int = 256) -> np.ndarray:
    """Baseline ``pil``: PIL Lanczos resize of the whole float32 image, then pad and crop.

    The source is mirror-padded by the kernel's reach and ``box`` selects exactly
    ``rescaled_size / pixel_size_nm`` source pixels, so PIL samples at the project's positions
    with the project's border rule and the patches agree to float32 rounding.
    """
    from PIL import Image

    from temvirus.rescale import RADIUS, rescaled_size

    height, width = pixels.shape
    out_w, out_h = rescaled_size(width, pixel_size_nm), rescaled_size(height, pixel_size_nm)
    k = int(np.ceil(RADIUS / min(pixel_size_nm, 1.0))) + 2
    source = Image.fromarray(np.pad(pixels.astype(np.float32), k, mode="reflect"))  # mode F
    box = (k, k, k + out_w / pixel_size_nm, k + out_h / pixel_size_nm)
    rescaled = np.asarray(source.resize((out_w, out_h), Image.LANCZOS, box=box))
    return crop_patches(rescaled, centres_nm, int(pixels.min()), int(pixels.max()))


def pil_plain_image(pixels: np.ndarray, pixel_size_nm: float, centres_nm: np.ndarray, size: int = 256) -> np.ndarray:
    """Baseline ``pil_plain``: the one-liner ``Image.resize(size, LANCZOS)``, then pad and crop.

    Faster than ``pil`` (no padded copy) but PIL then maps the ``n`` source pixels onto
    ``round(n * s)`` output pixels (a scale off by up to half an output pixel over the image)
    and truncates the kernel at the border: its patches are shifted by a fraction of a pixel.
    """
    from PIL import Image

    from temvirus.rescale import rescaled_size

    height, width = pixels.shape
    image = Image.fromarray(pixels.astype(np.float32))  # mode F
    rescaled = np.asarray(
        image.resize((rescaled_size(width, pixel_size_nm), rescaled_size(height, pixel_size_nm)), Image.LANCZOS)
    )
    return crop_patches(rescaled, centres_nm, int(pixels.min()), int(pixels.max()))


def full_image(pixels: np.ndarray, pixel_size_nm: float, centres_nm: np.ndarray, size: int = 256) -> np.ndarray:
    """Baseline ``full``: the project's whole-image Lanczos-3 rescale, then pad and crop."""
    from temvirus.rescale import rescale_image

    return crop_patches(rescale_image(pixels, pixel_size_nm), centres_nm, int(pixels.min()), int(pixels.max()))


def per_image_function(path: str):
    from temvirus import patches

    return {"project": patches.extract_image, "pil": pil_image, "pil_plain": pil_plain_image, "full": full_image}[path]


@contextlib.contextmanager
def patched(path: str, calls: list | None = None):
    """Run :func:`temvirus.patches.extract_patches` with ``path``'s per-image step.

    With ``calls``, each per-image call appends ``(pixel_size_nm, n_patches, seconds)`` to it.
    """
    from temvirus import patches

    original = patches.extract_image
    function = per_image_function(path) if path != "project" else original

    def timed(pixels, pixel_size_nm, centres_nm, *rest, **kw):
        started = time.perf_counter()
        out = function(pixels, pixel_size_nm, centres_nm, *rest, **kw)
        calls.append((float(pixel_size_nm), len(centres_nm), time.perf_counter() - started))
        return out

    patches.extract_image = timed if calls is not None else function
    try:
        yield
    finally:
        patches.extract_image = original


def run_extraction(
    path: str, split_csv: Path, images_csv: Path, particles_csv: Path, root: Path, out_dir: Path
) -> dict:
    """One timed pass of the dataset-level extraction with ``path``'s resampling."""
    import logging

    from temvirus.patches import extract_patches
    from temvirus.split import SUBSETS

    logging.getLogger("temvirus").setLevel(logging.WARNING)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = {s: out_dir / f"{s}.npy" for s in SUBSETS}
    calls: list = []
    with patched(path, calls):
        wall, cpu = time.perf_counter(), time.process_time()
        table = extract_patches(split_csv, images_csv, particles_csv, root, out_dir / "patches.csv", arrays)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "n_patches": len(table),
        "n_images": int(table.image_id.nunique()),
        "calls": calls,
    }


#: pixel-size bins (nm) of the per-image breakdown
PIXEL_BINS = (0.0, 1.0, 2.0, 4.0, 100.0)


def by_pixel_size(times: dict[str, list[dict]]) -> list[dict]:
    """Seconds spent in the per-image step per pixel-size bin (median over repeats), each path."""
    rows = []
    for lo, hi in zip(PIXEL_BINS[:-1], PIXEL_BINS[1:]):
        row = {"pixel_size_nm": f"[{lo:g}, {hi:g})"}
        for path, runs in times.items():
            totals = []
            for run in runs:
                inside = [(n, t) for px, n, t in run["calls"] if lo <= px < hi]
                totals.append(sum(t for _, t in inside))
                row["n_images"], row["n_patches"] = len(inside), sum(n for n, _ in inside)
            row[f"{path}_seconds"] = float(np.median(totals))
        for path in times:
            if path != "project" and row["project_seconds"] > 0:
                row[f"{path}_over_project"] = row[f"{path}_seconds"] / row["project_seconds"]
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- comparison


def warm_page_cache(root: Path, images_csv: Path, split_csv: Path) -> dict:
    """Read the raw files of a subset once, so that no timed path pays for a cold disk; returns the cost."""
    images = pd.read_csv(images_csv).set_index("image_id")
    ids = pd.read_csv(split_csv).image_id
    started, n_bytes = time.perf_counter(), 0
    for rel in images.loc[ids, "path"]:
        with open(root / rel, "rb") as fh:
            while chunk := fh.read(1 << 24):
                n_bytes += len(chunk)
    return {"seconds": time.perf_counter() - started, "n_files": len(ids), "mib": n_bytes / 2**20}


def compare(args, root: Path, cache: Path, images_csv: Path, particles_csv: Path) -> dict:
    split_csv = subset_split(
        images_csv, args.compare_fraction, args.seed, cache / f"split_{args.compare_fraction:g}.csv"
    )
    warm = warm_page_cache(root, images_csv, split_csv)
    print(f"  page cache warmed: {warm['n_files']} files, {warm['mib']:.0f} MiB in {warm['seconds']:.1f} s", flush=True)
    paths = ["project", *args.baselines]
    times: dict[str, list[dict]] = {p: [] for p in paths}
    for r in range(args.repeats):
        order = paths[r % len(paths) :] + paths[: r % len(paths)]  # rotate who goes first
        for path in order:
            result = run_extraction(path, split_csv, images_csv, particles_csv, root, OUT / "tmp" / "compare" / path)
            times[path].append(result)
            print(
                f"  repeat {r + 1}/{args.repeats} {path:8s} {result['seconds']:8.2f} s  {result['n_patches'] / result['seconds']:8.1f} patches/s",
                flush=True,
            )
    n_patches, n_images = times["project"][0]["n_patches"], times["project"][0]["n_images"]
    out = {
        "fraction": args.compare_fraction,
        "n_images": n_images,
        "n_patches": n_patches,
        "repeats": args.repeats,
        "page_cache_warm_up": warm,
        "paths": {},
    }
    for path in paths:
        seconds = [t["seconds"] for t in times[path]]
        out["paths"][path] = {
            "seconds": summary(seconds),
            "cpu_seconds": summary([t["cpu_seconds"] for t in times[path]]),
            "patches_per_second": summary([n_patches / s for s in seconds]),
        }
    for base in args.baselines:  # speedup per repeat (same repeat = adjacent in time)
        ratios = [b["seconds"] / p["seconds"] for b, p in zip(times[base], times["project"])]
        cpu = [b["cpu_seconds"] / p["cpu_seconds"] for b, p in zip(times[base], times["project"])]
        out["paths"][base]["speedup_of_project"] = summary(ratios)
        out["paths"][base]["cpu_speedup_of_project"] = summary(cpu)
    out["by_pixel_size"] = by_pixel_size(times)
    out["agreement"] = agreement(args.baselines, split_csv, images_csv, particles_csv)
    return out


def _histogram_stats(counts: np.ndarray) -> dict:
    """Max, 99th percentile, mean and share of zeros of absolute differences given as a histogram."""
    total = counts.sum()
    cumulative = np.cumsum(counts)
    return {
        "max_abs_diff": int(np.flatnonzero(counts)[-1]),
        "p99_abs_diff": int(np.searchsorted(cumulative, 0.99 * total)),
        "mean_abs_diff": float((np.arange(len(counts)) * counts).sum() / total),
        "fraction_identical": float(counts[0] / total),
    }


def agreement(baselines: list[str], split_csv: Path, images_csv: Path, particles_csv: Path) -> dict:
    """Absolute differences (grey levels) between the stored patches of the project and each baseline."""
    from temvirus.patches import PATCH_SIZE
    from temvirus.rescale import rescaled_size
    from temvirus.split import SUBSETS

    table = pd.read_csv(OUT / "tmp" / "compare" / "project" / "patches.csv")
    images = pd.read_csv(images_csv).set_index("image_id").loc[table.image_id]
    px = images.pixel_size_nm.to_numpy()
    width = np.array([rescaled_size(w, s) for w, s in zip(images.width, px)])
    height = np.array([rescaled_size(h, s) for h, s in zip(images.height, px)])
    margin = np.ceil(3 * np.maximum(px, 1.0)) + 1
    top = np.floor(table.y_nm - PATCH_SIZE / 2 + 0.5)
    left = np.floor(table.x_nm - PATCH_SIZE / 2 + 0.5)
    interior = (
        (top >= margin)
        & (left >= margin)
        & (top + PATCH_SIZE <= height - margin)
        & (left + PATCH_SIZE <= width - margin)
    ).to_numpy()
    result = {"n_patches": len(table), "n_interior": int(interior.sum())}
    for base in baselines:
        hist = {"all": np.zeros(1, dtype=np.int64), "interior": np.zeros(1, dtype=np.int64)}

        def add(where: str, diff: np.ndarray, hist: dict = hist) -> None:
            counts = np.bincount(diff.ravel())
            if len(counts) > len(hist[where]):
                hist[where] = np.pad(hist[where], (0, len(counts) - len(hist[where])))
            hist[where][: len(counts)] += counts

        for subset in SUBSETS:
            rows = np.flatnonzero(table.subset.to_numpy() == subset)
            if not len(rows):
                continue
            a = np.load(OUT / "tmp" / "compare" / "project" / f"{subset}.npy", mmap_mode="r")
            b = np.load(OUT / "tmp" / "compare" / base / f"{subset}.npy", mmap_mode="r")
            for row in rows:
                index = table["index"].iat[row]
                diff = np.abs(a[index].astype(np.int32) - b[index].astype(np.int32))
                add("all", diff)
                if interior[row]:
                    add("interior", diff)
        result[base] = {where: (_histogram_stats(h) if h.sum() else None) for where, h in hist.items()}
    return result


# ----------------------------------------------------------------------------- scaling


class AnonPeak:
    """Samples ``RssAnon`` of this process every few milliseconds; ``peak_mib`` is its maximum."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak_mib, self._stop = interval, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, rss_mib("RssAnon"))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, rss_mib("RssAnon"))


def worker(args) -> None:
    """One scaling point in this (fresh) process; prints one JSON line."""
    import json

    reset_peak_rss()  # ru_maxrss would include the parent's RSS at fork time
    limit_threads(args.threads)
    from PIL import Image  # noqa: F401

    import temvirus.patches  # noqa: F401  (imports counted in the baseline RSS)

    root, cache = Path(args.worker_root), Path(args.worker_cache)
    images_csv, particles_csv = cache / "images.csv", cache / "particles.csv"
    split_csv = subset_split(images_csv, args.fraction, args.seed, cache / f"split_{args.fraction:g}.csv")
    rss_before = rss_mib()
    with AnonPeak() as anon:
        result = run_extraction(
            args.worker, split_csv, images_csv, particles_csv, root, OUT / "tmp" / "sweep" / args.worker
        )
    result.pop("calls")
    result.update(
        {
            "path": args.worker,
            "fraction": args.fraction,
            "peak_rss_mib": peak_rss_mib(),
            "ru_maxrss_mib": maxrss_mib(),
            "rss_before_mib": rss_before,
            "peak_anon_mib": anon.peak_mib,
        }
    )
    print(json.dumps(result))


def sweep(args, root: Path, cache: Path) -> dict:
    out = {}
    if args.sweep_paths and args.fractions:
        images_csv = cache / "images.csv"
        largest = subset_split(images_csv, max(args.fractions), args.seed, cache / f"split_{max(args.fractions):g}.csv")
        warm = warm_page_cache(root, images_csv, largest)
        out["page_cache_warm_up"] = warm
        print(
            f"  page cache warmed: {warm['n_files']} files, {warm['mib']:.0f} MiB in {warm['seconds']:.1f} s",
            flush=True,
        )
    for path in args.sweep_paths:
        points = []
        for fraction in args.fractions:
            point = run_worker(
                [
                    str(Path(__file__).resolve()),
                    "--worker",
                    path,
                    "--worker-root",
                    str(root),
                    "--worker-cache",
                    str(cache),
                    "--fraction",
                    str(fraction),
                    "--seed",
                    str(args.seed),
                    "--threads",
                    str(args.threads),
                ]
            )
            points.append(point)
            print(
                f"  sweep {path:8s} {fraction:5.0%}: {point['n_images']:5d} images {point['n_patches']:6d} patches "
                f"{point['seconds']:8.2f} s  peak RSS {point['peak_rss_mib']:7.0f} MiB  peak anon {point['peak_anon_mib']:7.0f} MiB",
                flush=True,
            )
        fit = linear_fit([p["n_patches"] for p in points], [p["seconds"] for p in points])
        fit_cpu = linear_fit([p["n_patches"] for p in points], [p["cpu_seconds"] for p in points])
        out[path] = {
            "points": points,
            "fit_seconds_vs_patches": fit,
            "fit_cpu_seconds_vs_patches": fit_cpu,
            "seconds_per_patch": fit["slope"],
            "memory_fit_peak_rss_mib_vs_patches": linear_fit(
                [p["n_patches"] for p in points], [p["peak_rss_mib"] for p in points]
            ),
            "memory_fit_anon_mib_vs_patches": linear_fit(
                [p["n_patches"] for p in points], [p["peak_anon_mib"] for p in points]
            ),
        }
        print(
            f"  fit {path}: {fit['slope'] * 1e3:.2f} ms/patch + {fit['intercept']:.2f} s, R^2 = {fit['r2']:.4f}",
            flush=True,
        )
    return out


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    from temvirus.cli import number_in_range  # argparse types with their ranges

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny dataset, 1 repeat, 2 sweep points (smoke test)")
    parser.add_argument("--data", help="a raw-layout folder to use instead of the synthetic data")
    parser.add_argument(
        "--scale",
        type=number_in_range(float, 0, 1, above=True),
        default=1.0,
        help="synthetic dataset scale (1 = Table 1's counts)",
    )
    parser.add_argument(
        "--binning", type=int, default=1, choices=(1, 2), help="synthetic camera binning (1 = the paper's frame sizes)"
    )
    parser.add_argument(
        "--compare-fraction",
        type=number_in_range(float, 0, 1, above=True),
        default=0.05,
        help="fraction of images per class in the comparison",
    )
    parser.add_argument("--repeats", type=number_in_range(int, 1), default=3)
    parser.add_argument("--baselines", default="pil,pil_plain,full", help="comma list of pil, pil_plain, full")
    parser.add_argument(
        "--fractions", default="0.1,0.25,0.5,1.0", help="scaling points (fractions of images per class)"
    )
    parser.add_argument(
        "--sweep-paths",
        default="project",
        help="comma list of project, pil, pil_plain, full for the scaling sweep ('' = none)",
    )
    parser.add_argument("--seed", type=number_in_range(int, 0), default=0, help="seed of the subset choice")
    parser.add_argument(
        "--threads",
        type=number_in_range(int, 0),
        default=1,
        help="BLAS threads (Snakemake gives the patches job 1; 0 = library default)",
    )
    parser.add_argument("--out", default=str(OUT / "curation.json"))
    # internal: one scaling point in a fresh process
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-root", help=argparse.SUPPRESS)
    parser.add_argument("--worker-cache", help=argparse.SUPPRESS)
    parser.add_argument(
        "--fraction", type=number_in_range(float, 0, 1, above=True), default=1.0, help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    args.baselines = [b for b in args.baselines.split(",") if b]
    args.sweep_paths = [p for p in args.sweep_paths.split(",") if p]
    args.fractions = [float(f) for f in args.fractions.split(",") if f]
    if args.quick:
        args.repeats = min(args.repeats, 1)
        args.compare_fraction = 1.0
        args.fractions = [0.5, 1.0] if args.fractions == [0.1, 0.25, 0.5, 1.0] else args.fractions
    bad = sorted(set(args.baselines + args.sweep_paths) - set(PATHS))
    if bad:
        parser.error(f"unknown paths {bad}; choose from {list(PATHS)}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    limit_threads(args.threads)
    root, cache = ensure_dataset(args)
    images_csv, particles_csv = ensure_tables(root, cache)
    images = pd.read_csv(images_csv)
    result = {
        "benchmark": "curation",
        "machine": machine_info(),
        "dataset": {
            "root": str(root),
            "n_images": len(images),
            "n_particles": int(images.n_particles.sum()),
            "pixel_size_nm": summary(images.pixel_size_nm.tolist()) | {"values": None},
        },
        "args": {k: v for k, v in vars(args).items() if not k.startswith("worker")},
    }
    print(f"dataset {root}: {len(images)} images, {int(images.n_particles.sum())} particles", flush=True)
    print(
        f"comparison on {args.compare_fraction:.0%} of the images per class, {args.repeats} interleaved repeats:",
        flush=True,
    )
    result["comparison"] = compare(args, root, cache, images_csv, particles_csv)
    print(f"scaling sweep {args.fractions} (fresh process each):", flush=True)
    result["scaling"] = sweep(args, root, cache)
    result["machine"]["load_average_at_end"] = list(__import__("os").getloadavg())
    path = write_result(args.out, result)
    report(result)
    print(f"wrote {path}")
    return result


def report(result: dict) -> None:
    comp = result["comparison"]
    print(f"\n== curation: {comp['n_patches']} patches from {comp['n_images']} images ==")
    for path, stats in comp["paths"].items():
        pps = stats["patches_per_second"]
        line = f"{path:8s} {pps['median']:9.1f} patches/s (min {pps['min']:.1f}, max {pps['max']:.1f}); {stats['seconds']['median']:.2f} s"
        if "speedup_of_project" in stats:
            sp = stats["speedup_of_project"]
            line += f"; project is {sp['median']:.1f}x faster (range {sp['min']:.1f}-{sp['max']:.1f}, CPU time {stats['cpu_speedup_of_project']['median']:.1f}x)"
        print(line)
    for row in comp["by_pixel_size"]:
        print(
            f"pixel size {row['pixel_size_nm']:>9s} nm: {row.get('n_images', 0):4d} images {row.get('n_patches', 0):5d} patches; seconds "
            + ", ".join(f"{k[:-8]} {v:.2f}" for k, v in row.items() if k.endswith("_seconds"))
            + "".join(f"; {k[:-13]}/project {v:.1f}x" for k, v in row.items() if k.endswith("_over_project"))
        )
    for base, agree in comp["agreement"].items():
        if isinstance(agree, dict):
            for where, s in agree.items():
                if s:
                    print(
                        f"agreement project vs {base} ({where}): max |diff| {s['max_abs_diff']} grey levels, p99 {s['p99_abs_diff']:.1f}, "
                        f"mean {s['mean_abs_diff']:.3f}, identical {s['fraction_identical']:.1%}"
                    )
    for path, sweep_ in result["scaling"].items():
        if path == "page_cache_warm_up":
            continue
        fit = sweep_["fit_seconds_vs_patches"]
        print(
            f"scaling {path}: {fit['slope'] * 1e3:.2f} ms/patch, R^2 {fit['r2']:.4f}; peak RSS "
            + ", ".join(
                f"{p['fraction']:.0%}: {p['peak_rss_mib']:.0f} MiB (anon {p['peak_anon_mib']:.0f})"
                for p in sweep_["points"]
            )
        )


if __name__ == "__main__":
    main()
