"""Helpers shared by the benchmark scripts: machine info, repeat statistics, peak memory, JSON.

Not a benchmark itself. Every script in ``benchmarks/`` writes one JSON file under
``benchmarks/out/`` (git-ignored) with :func:`machine_info` in it, and prints its figures.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: where benchmarks write (git-ignored); TEMVIRUS_BENCH_OUT moves it (the smoke tests use a tmp folder)
OUT = Path(os.environ.get("TEMVIRUS_BENCH_OUT", REPO / "benchmarks" / "out")).resolve()

if str(REPO / "src") not in sys.path:  # run from a checkout without `pip install -e`
    sys.path.insert(0, str(REPO / "src"))


def machine_info(device: str | None = None) -> dict:
    """Where the figures come from: CPUs, memory, load, library versions, accelerator."""
    import numpy

    from temvirus.provenance import cpu_model

    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": list(os.getloadavg()),
        "numpy": numpy.__version__,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        # CPU results repeat bit for bit on one instruction set only (docs/lineage.md)
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["cuda_available"] = torch.cuda.is_available()
        if device and device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    except ImportError:
        info["torch"] = None
    info["device"] = device or "cpu"
    return info


def summary(values: list[float]) -> dict:
    """Median and spread of repeated measurements."""
    values = [float(v) for v in values]
    ordered = sorted(values)
    n = len(ordered)
    q1 = ordered[(n - 1) // 4]
    q3 = ordered[(3 * (n - 1) + 3) // 4]
    return {
        "median": statistics.median(values),
        "min": ordered[0],
        "max": ordered[-1],
        "iqr": q3 - q1,
        "n": n,
        "values": values,
    }


def maxrss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def _status_kib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux); False where unsupported.

    Needed because ``ru_maxrss`` survives ``execve``: a child started from a large parent
    reports at least the parent's RSS at fork time.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak RSS of this process (``VmHWM`` since start or the last :func:`reset_peak_rss`), MiB."""
    kib = _status_kib("VmHWM")
    return kib / 1024 if kib is not None else maxrss_mib()


def rss_mib(field: str = "VmRSS") -> float:
    """Current ``VmRSS`` (or ``RssAnon``, ``RssFile``) of this process, MiB (nan where unknown)."""
    kib = _status_kib(field)
    return kib / 1024 if kib is not None else float("nan")


def limit_threads(n: int | None) -> dict:
    """Limit BLAS/OpenMP threads of this process to ``n`` (as Snakemake does for a job); returns what was set."""
    if not n:
        return {}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)  # for child processes
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:  # threadpoolctl comes with scikit-learn; without it only children are limited
        pass
    return {"blas_threads": n}


def run_worker(args: list[str], timeout: float | None = None) -> dict:
    """Run ``python <args>`` in a fresh process and return the JSON object of its last stdout line.

    A fresh process per measurement keeps peak-memory figures (``ru_maxrss``) apart.
    """
    cmd = [sys.executable, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"worker printed nothing: {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])


def linear_fit(x: list[float], y: list[float]) -> dict:
    """Least-squares ``y = intercept + slope * x`` with its R^2."""
    import numpy as np

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        return {"slope": float("nan"), "intercept": float("nan"), "r2": float("nan")}
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / total if total > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2}


def write_result(path: str | Path, result: dict) -> Path:
    """Write a benchmark's JSON (atomically, via the project's writer) and return its path."""
    from temvirus.io import write_json

    path = Path(path)
    write_json(path, result)
    return path


def particle_patches(root: str | Path):
    """``(table, patches)``: the 256x256 patch at 1 nm/px of every particle of the raw-layout folder ``root``
    (:func:`temvirus.patches.extract_image`), read image by image in image-id order; ``table`` has a row per
    patch, in the patches' order: ``image_id``, ``class``, its centre ``x_nm``, ``y_nm``."""
    import numpy as np
    import pandas as pd

    from temvirus.patches import extract_image, patch_points
    from temvirus.raw import read_dataset, read_image

    root = Path(root)
    images, particles = read_dataset(root, hash_files=False)
    points = patch_points(particles).merge(images[["image_id", "class", "pixel_size_nm", "path"]], on="image_id")
    points["x_nm"], points["y_nm"] = points.x * points.pixel_size_nm, points.y * points.pixel_size_nm
    tables, arrays = [], []
    for _, rows in points.groupby("image_id", sort=True):
        pixels = read_image(root / rows.path.iloc[0])
        arrays.append(extract_image(pixels, rows.pixel_size_nm.iloc[0], rows[["x_nm", "y_nm"]].to_numpy()))
        tables.append(rows[["image_id", "class", "x_nm", "y_nm"]])
    return pd.concat(tables).reset_index(drop=True), np.concatenate(arrays)
