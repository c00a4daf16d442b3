"""Whole-micrograph analysis benchmark (issue 14): detection, counts, image calls, diameters, speed.

What it measures
----------------
1. ``synthetic``: the workflow's micrographs stage on the default synthetic data
   (``config/config.yaml``, ``make run``'s settings): the default workflow is run in a scratch
   folder up to ``results/micrographs/{first experiment}/metrics.json`` (or ``--results`` names
   an existing results folder of it), and its figures are printed: detection precision, recall
   and F1 over all test images, mean absolute and relative count error per image, image-level
   class accuracy, and the median relative diameter error against the generator's true sizes.
2. ``real``: the same on the 9-class real crops (``../shared/real-tem/tem-virus-1nm-crops``,
   never committed): the model that ``benchmarks/real_crops.py`` trains (its work folder,
   ``benchmarks/out/real_crops/``: run it first), the detector fitted on the crops' training
   images and thresholded on their validation images with the crops' box sizes as the classes'
   diameters (:data:`BOX_NM`), then calibrated for the model (the particle threshold, on the
   same validation images), every test image analysed; the median measured diameter per
   class beside the box size and Table 1's mean particle size (the paper's published sizes).
3. ``speed``: one 2048x2048 px micrograph at 1.75 nm/px (a synthetic Rotavirus specimen, the
   default's detector and model), wall time of :func:`temvirus.micrographs.analyse_image` on the
   CPU threads given, the process's peak memory, and how many of the particles in the field
   were found (matched within half the diameter); then the same image with its left 30% padded
   black (a crop that reached past its micrograph): the memory that preparing it for the heat
   map takes beyond the image (``tracemalloc``'s peak, bytes per pixel) and the analysis's wall time;
   then a 4096x4096 px montage of four of it as an uncompressed TIFF, read whole and mapped
   (:func:`montage_memory`, what ``temvirus analyse`` does): seconds and memory allocated at peak;
   and the heat-map pass over a 12000 px square at 0.5 nm/px (:func:`fine_pixels_memory`).

Targets (issue 14): synthetic F1 >= 0.90, image accuracy >= 0.95, count error <= 10%, median
diameter error <= 10%; real crops F1 >= 0.80, image accuracy >= 0.90; speed <= 60 s on 2 cores.

How to run (figures in ``benchmarks/out/micrographs.json``)::

    nice .venv/bin/python benchmarks/real_crops.py          # once: the real crops' model
    nice .venv/bin/python benchmarks/micrographs.py          # all three parts
    nice .venv/bin/python benchmarks/micrographs.py --parts speed --results /path/to/results
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT, REPO, machine_info, maxrss_mib, write_result  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from conftest import REAL_CROPS, snakemake_cmd  # noqa: E402

#: the real crops' box sizes (nm, at 1 nm/px): the classes' diameters there
BOX_NM = {
    "Adenovirus": 80.0,
    "Astrovirus": 25.0,
    "CCHF": 150.0,
    "Cowpox": 350.0,
    "Norovirus": 30.0,
    "Orf": 320.0,
    "Papilloma": 55.0,
    "RiftValley": 90.0,
    "Rotavirus": 80.0,
}
TARGETS = {
    "synthetic": {"f1": 0.90, "image_accuracy": 0.95, "count_relative_error": 0.10, "median_diameter_error": 0.10},
    "real": {"f1": 0.80, "image_accuracy": 0.90},
    "speed": {"seconds": 60.0},
}


def _config() -> dict:
    import yaml

    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def synthetic(results: Path | None, cores: int) -> dict:
    """The default workflow's micrographs stage (run in a scratch folder unless ``results`` is given)."""
    import subprocess

    from temvirus.experiments import experiment_folder

    experiment = _config()["micrographs"]["experiments"][0]
    target = f"results/micrographs/{experiment_folder(experiment)}/metrics.json"
    if results is None:
        workdir = OUT / "micrographs" / "default"
        started = time.perf_counter()
        cmd = snakemake_cmd(workdir, target, ci=False)
        cmd[cmd.index("--cores") + 1] = str(cores)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"default workflow failed:\n{done.stderr[-4000:]}")
        results = workdir / "results"
        print(f"default workflow up to {target}: {time.perf_counter() - started:.0f} s")
    metrics = json.loads((results / "micrographs" / experiment_folder(experiment) / "metrics.json").read_text())
    detector = json.loads((results / "micrographs" / "detector" / f"{experiment['method']}.json").read_text())
    metrics["heat_map_validation_f1"] = detector["validation_f1"]
    metrics["results"] = str(results)
    metrics["experiment"] = experiment_folder(experiment)
    return metrics


def real(threads: int, fit_cap: int | None) -> dict:
    """The real crops: detector fitted on train/validation, every test image analysed."""
    import pandas as pd

    from temvirus.classes import load_table1
    from temvirus.micrographs import analyse_from_tables, calibrate_from_tables, fit_from_tables

    work = OUT / "real_crops"
    model = work / "models" / "small_cnn" / "scratch" / "given" / "best.pt"
    if not model.is_file():
        raise SystemExit(f"{model}: not found; run benchmarks/real_crops.py first (it trains the crops' model)")
    section = {k: v for k, v in _config()["micrographs"].items() if k != "experiments"}
    section.update(diameters_nm=BOX_NM, max_fit_images_per_class=fit_cap)
    out = OUT / "micrographs" / "real"
    started = time.perf_counter()
    detector = fit_from_tables(
        work / "images.csv",
        work / "particles.csv",
        work / "split_given.csv",
        REAL_CROPS,
        REPO / "resources" / "paper" / "table1_dataset.csv",
        list(BOX_NM),
        section,
        out / "detector.json",
        threads=threads,
    )
    fitted = time.perf_counter()
    calibrated = calibrate_from_tables(
        model,
        out / "detector.json",
        work / "images.csv",
        work / "particles.csv",
        work / "split_given.csv",
        REAL_CROPS,
        out / "calibrated.json",
        device="cpu",
        threads=threads,
    )
    calibrated_at = time.perf_counter()
    metrics = analyse_from_tables(
        model,
        out / "calibrated.json",
        work / "images.csv",
        work / "particles.csv",
        work / "split_given.csv",
        REAL_CROPS,
        out / "analysis",
        device="cpu",
        threads=threads,
    )
    metrics["fit_seconds"] = fitted - started
    metrics["calibrate_seconds"] = calibrated_at - fitted
    metrics["analyse_seconds"] = time.perf_counter() - calibrated_at
    metrics["heat_map_validation_f1"] = detector["validation_f1"]
    metrics["validation_f1"] = calibrated["calibration"]["f1"]
    particles = pd.concat(pd.read_csv(p) for p in sorted((out / "analysis" / "particles").glob("*.csv")))
    table1 = load_table1(REPO / "resources" / "paper" / "table1_dataset.csv")
    metrics["diameters"] = {
        cls: {
            "box_nm": BOX_NM[cls],
            "table1_nm": float(table1.loc[cls, "avg_particle_size_nm"]),
            "measured_median_nm": float(particles.loc[particles["class"] == cls, "diameter_nm"].median()),
            "particles": int((particles["class"] == cls).sum()),
        }
        for cls in BOX_NM
    }
    return metrics


def speed_image(side: int = 2048, pixel_nm: float = 1.75, cls: str = "Rotavirus", n: int = 120, seed: int = 0):
    """A ``side``-px micrograph at ``pixel_nm`` of the synthetic generator (:mod:`temvirus.synth`)
    and the centres (x, y nm) of the particles in its field: a specimen of ``n`` particles of
    ``cls`` (laid out by the generator for its own pixel size, so the field holds only part of
    them) seen by the 2048 px camera at ``pixel_nm``."""
    from temvirus.classes import load_table1
    from temvirus.seeding import rng
    from temvirus.synth.render import Exposure, render
    from temvirus.synth.specimen import make_specimen

    d_mean = float(load_table1(REPO / "resources" / "paper" / "table1_dataset.csv").loc[cls, "avg_particle_size_nm"])
    specimen, _ = make_specimen(cls, n, d_mean, (side, side), seed, "speed")
    exposure = Exposure((0.0, 0.0), pixel_nm, (side, side), "LEO 912AB (Morada)", 1)
    field = side * pixel_nm
    centres = [(p.body.x, p.body.y) for p in specimen.particles if p.body.x < field and p.body.y < field]
    return render(specimen, exposure, rng(seed, "speed")), centres, d_mean


def montage_memory(pixels, detector, classifier) -> dict:
    """A montage ``pixels`` (uint16) written as an uncompressed TIFF and analysed at 1.75 nm/px twice,
    read whole and mapped (``read_image(mapped=True)``, what ``temvirus analyse`` does): the seconds
    and the peak of memory allocated by numpy and Python (tracemalloc; torch's own allocations and
    the mapped file's pages are not counted), in bytes per pixel of the montage."""
    import tempfile
    import tracemalloc

    import tifffile

    from temvirus.micrographs import analyse_image
    from temvirus.raw import read_image

    figures = {"montage": f"{pixels.shape[1]}x{pixels.shape[0]} px, 16-bit, uncompressed TIFF"}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "montage.tif"
        tifffile.imwrite(path, pixels)
        for how, mapped in (("read", False), ("mapped", True)):
            tracemalloc.start()
            started = time.perf_counter()
            analyse_image(read_image(path, mapped=mapped), 1.75, detector, classifier, "montage")
            figures[f"montage_{how}_seconds"] = time.perf_counter() - started
            figures[f"montage_{how}_bytes_per_pixel"] = tracemalloc.get_traced_memory()[1] / pixels.size
            tracemalloc.stop()
    return figures


def fine_pixels_memory(detector, side: int = 12000, pixel_nm: float = 0.5) -> dict:
    """The heat-map pass (:func:`temvirus.micrographs.detect_peaks`) over a ``side``-px square of
    noise at ``pixel_nm`` (fine pixels: each 4 µm tile is 8000 px square of source): seconds and
    the peak of memory allocated beyond the image (tracemalloc)."""
    import tracemalloc

    import numpy as np

    from temvirus.micrographs import detect_peaks

    pixels = np.random.default_rng(0).integers(1000, 3000, (side, side), dtype=np.uint16)
    tracemalloc.start()
    started = time.perf_counter()
    detect_peaks(pixels, pixel_nm, detector)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"fine": f"{side}x{side} px at {pixel_nm} nm/px", "fine_seconds": seconds, "fine_peak_mib": peak / 2**20}


def speed(results: Path, threads: int) -> dict:
    import tracemalloc

    import numpy as np
    import torch

    from temvirus.experiments import experiment_folder
    from temvirus.heatmap import Prepared
    from temvirus.micrographs import Classifier, analyse_image, match, read_detector

    torch.set_num_threads(threads)
    experiment = _config()["micrographs"]["experiments"][0]
    classifier = Classifier.load(results / "models" / experiment_folder(experiment) / "best.pt", "cpu")
    detector = read_detector(results / "micrographs" / "detector" / f"{experiment_folder(experiment)}.json", classifier)
    image, centres, d_mean = speed_image()
    started = time.perf_counter()
    table, call = analyse_image(image, 1.75, detector, classifier, "speed_2048")
    seconds = time.perf_counter() - started
    true_xy = np.asarray(centres, float).reshape(-1, 2)
    matched = match(table[["x_nm", "y_nm"]].to_numpy(), true_xy, np.full(len(true_xy), d_mean / 2))
    padded = image.copy()
    padded[:, : int(0.3 * padded.shape[1])] = 0
    tracemalloc.start()
    Prepared.of(padded, 1.75)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    started = time.perf_counter()
    analyse_image(padded, 1.75, detector, classifier, "speed_2048_padded")
    padded_seconds = time.perf_counter() - started
    montage = montage_memory(np.tile(image, (2, 2)), detector, classifier)
    return {
        **montage,
        **fine_pixels_memory(detector),
        "padded_prepare_bytes_per_pixel": peak / padded.size,
        "padded_image_bytes_per_pixel": padded.itemsize,
        "padded_seconds": padded_seconds,
        "image": "2048x2048 px at 1.75 nm/px (3584 nm square), synthetic Rotavirus",
        "seconds": seconds,
        "threads": threads,
        "particles_in_field": len(true_xy),
        "particles_found": len(table),
        "particles_matched": len(matched),
        "peak_rss_mib": maxrss_mib(),
    }


def main(argv=None) -> dict:
    from temvirus.cli import number_in_range  # argparse types with their ranges

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--parts", nargs="+", default=["synthetic", "real", "speed"], choices=["synthetic", "real", "speed"]
    )
    parser.add_argument(
        "--results", type=Path, help="an existing results folder of the default workflow (with its micrographs stage)"
    )
    parser.add_argument(
        "--cores", type=number_in_range(int, 1), default=2, help="snakemake cores for the default workflow"
    )
    parser.add_argument(
        "--threads", type=number_in_range(int, 1), default=2, help="torch CPU threads (real crops, speed)"
    )
    parser.add_argument(
        "--fit-images-per-class",
        type=number_in_range(int, 1),
        help="real crops: train/validation images per class fitting the detector (default all)",
    )
    parser.add_argument("--out", default=str(OUT / "micrographs.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = {"benchmark": "micrographs", "machine": machine_info(), "args": vars(args), "targets": TARGETS}
    if "synthetic" in args.parts or "speed" in args.parts:
        result["synthetic"] = synthetic(args.results, args.cores)
        results = Path(result["synthetic"]["results"])
    if "synthetic" in args.parts:
        _print("synthetic (default data, test images)", result["synthetic"], TARGETS["synthetic"])
    if "real" in args.parts:
        result["real"] = real(args.threads, args.fit_images_per_class)
        _print(f"real crops ({REAL_CROPS}, given split, test images)", result["real"], TARGETS["real"])
        print(f"  {'class':12s} {'box nm':>7s} {'Table 1 nm':>10s} {'measured median nm':>19s} {'found':>6s}")
        for cls, row in result["real"]["diameters"].items():
            print(
                f"  {cls:12s} {row['box_nm']:7.0f} {row['table1_nm']:10.0f} {row['measured_median_nm']:19.1f} {row['particles']:6d}"
            )
    if "speed" in args.parts:
        result["speed"] = speed(results, args.threads)
        s = result["speed"]
        print(
            f"\n== speed: {s['image']}: {s['seconds']:.1f} s on {s['threads']} CPU threads (target <= 60 s), "
            f"{s['particles_found']} particles found, {s['particles_matched']} of the {s['particles_in_field']} "
            f"in the field matched, peak RSS {s['peak_rss_mib']:.0f} MiB"
        )
        print(
            f"   the same with its left 30% padded black: {s['padded_seconds']:.1f} s; preparing it for the heat map "
            f"took {s['padded_prepare_bytes_per_pixel']:.1f} bytes a pixel at peak (the image: "
            f"{s['padded_image_bytes_per_pixel']} a pixel)"
        )
        print(
            f"   a {s['montage']} (2x2 of it): read whole {s['montage_read_seconds']:.1f} s, "
            f"{s['montage_read_bytes_per_pixel']:.2f} bytes a pixel allocated at peak; mapped "
            f"{s['montage_mapped_seconds']:.1f} s, {s['montage_mapped_bytes_per_pixel']:.2f} bytes a pixel"
        )
        print(
            f"   the heat-map pass over {s['fine']} (noise): {s['fine_seconds']:.1f} s, "
            f"{s['fine_peak_mib']:.0f} MiB allocated at peak beyond the image"
        )
    result["machine"]["load_average_at_end"] = list(__import__("os").getloadavg())
    print(f"wrote {write_result(args.out, result)}")
    return result


def _print(title: str, m: dict, targets: dict) -> None:
    def mark(key, value, lower=False):
        if key not in targets or value is None:
            return ""
        ok = value <= targets[key] if lower else value >= targets[key]
        return f" (target {'<=' if lower else '>='} {targets[key]}: {'met' if ok else 'NOT met'})"

    print(f"\n== {title}: {m['images']} images, {m['annotated']} annotated centres, {m['found']} found")
    print(f"detection precision {m['precision']:.3f}, recall {m['recall']:.3f}, F1 {m['f1']:.3f}{mark('f1', m['f1'])}")
    print(
        f"  (thresholds chosen on validation images: validation F1 {m['validation_f1']:.3f}; "
        f"heat map alone {m['heat_map_validation_f1']:.3f})"
    )
    print(f"image-level accuracy {m['image_accuracy']:.3f}{mark('image_accuracy', m['image_accuracy'])}")
    print(
        f"count error per image: mean absolute {m['count_mae']:.2f}, mean relative {m['count_relative_error']:.3f}"
        f"{mark('count_relative_error', m['count_relative_error'], lower=True)}"
    )
    if m.get("median_diameter_error") is not None:
        print(
            f"median diameter error {m['median_diameter_error']:.3f} over {m['diameters_compared']} matched particles"
            f"{mark('median_diameter_error', m['median_diameter_error'], lower=True)}"
        )


if __name__ == "__main__":
    main()
