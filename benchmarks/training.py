"""Training benchmark: samples per second of the project's training loop vs the torchvision way.

What it measures (per model, same process, interleaved repeats in rotated order)
--------------------------------------------------------------------------------
* ``project``: :func:`temvirus.train.fit`, the workflow's loop: the patches held as one
  compact integer tensor (resident on the GPU there), batches taken by index, a random D4
  element applied on the device, per-patch standardisation, channels_last, autocast (bf16 on
  CUDA). Timed by its own per-epoch clock (``metrics.csv``'s ``seconds``; the validation set
  is 2 patches so that the epoch is all training).
* ``torchvision``: the standard way: the same patches written as image files in an
  ImageFolder layout (``--format tif``: the published patch layout, written by
  :func:`temvirus.patches.export_published`; or 16-bit ``png``), read by
  ``torchvision.datasets.ImageFolder``, transforms on the CPU in the ``DataLoader``
  workers (``--workers``, default 2; ``--workers 2,16`` runs one ``torchvision_w{n}`` method
  per count: random rot90 + horizontal flip = a uniform D4 element, to tensor, per-patch
  standardisation), ``pin_memory`` and a non-blocking copy on CUDA.
* ``bound``: the model's own bound: the same forward/backward/Adam steps on one batch already
  standardised and resident on the device; no data pipeline at all.

All three use the same model (same init), batch size, optimizer (Adam, same lr), loss,
autocast, memory format and number of steps per epoch; each repeat is one epoch of
``--n-samples`` patches, after one warm-up epoch per method. Reported per model: samples/s
(median, min, max over repeats), the ratios project/torchvision and project/bound per repeat,
and, with ``--memory``, the peak RSS of each method in a fresh process running one epoch
(``VmHWM`` of the main process, not counting DataLoader workers; ``peak_rss_before_model_mib``
is the same after imports and data preparation, the torchvision method then holding no
patches in memory; plus ``torch.cuda.max_memory_allocated`` on a GPU).

How to run (``benchmarks/out/training.json`` gets the figures)::

    .venv/bin/python benchmarks/training.py                         # CPU: custom + mobilenet_v2, 128 px
    .venv/bin/python benchmarks/training.py --models custom --size 256 --n-samples 64
    .venv/bin/python benchmarks/training.py --device cuda           # GPU: 256 px, batch 128, 4096 samples
    .venv/bin/python benchmarks/training.py --device cuda --workers 2,16 --memory
    .venv/bin/python benchmarks/training.py --quick                 # smoke run, seconds

Targets on a GPU (issue 8): project >= 3x torchvision and >= 90% of the bound.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import OUT, REPO, machine_info, peak_rss_mib, reset_peak_rss, run_worker, summary, write_result  # noqa: E402

METHODS = ("project", "torchvision", "bound")
#: defaults that depend on the device: (size, batch size, samples per epoch)
DEFAULTS = {"cpu": (128, 16, 64), "cuda": (256, 128, 4096)}


# ----------------------------------------------------------------------------- data


def classes_from_config() -> list[str]:
    import yaml

    return list(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["classes"]["classification"])


def make_patches(args, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: uint16 patches ``(N, S, S)`` and class indices, from ``--patches`` or synthetic."""
    if args.patches:
        from temvirus.train import load_subset

        x, y, _ = load_subset(args.patches, "train_augmented", classes)
        reps = -(-args.n_samples // len(x))
        return np.concatenate([x] * reps)[: args.n_samples], np.concatenate([y] * reps)[: args.n_samples]
    draw = np.random.default_rng(args.seed)
    x = draw.integers(200, 4000, size=(args.n_samples, args.size, args.size), dtype=np.uint16)  # 12-bit camera noise
    y = np.arange(args.n_samples) % len(classes)
    return x, y


def write_image_folder(x: np.ndarray, y: np.ndarray, classes: list[str], fmt: str, root: Path) -> Path:
    """The patches as files of an ImageFolder layout ``root/train/{Class}/{patch}.{fmt}``; returns ``root/train``."""
    import pandas as pd

    from temvirus.classes import FOLDER_NAMES
    from temvirus.io import write_csv, write_npy
    from temvirus.patches import export_published

    marker = root / f".complete-{len(x)}-{x.shape[-1]}-{fmt}"
    if marker.is_file():
        return root / "train"
    ids = [f"bench_{i:06d}" for i in range(len(x))]
    if fmt == "tif":  # the project's writer of the published patch layout
        staging = root.parent / f"{root.name}-staging"
        table = pd.DataFrame(
            {"patch_id": ids, "class": [classes[k] for k in y], "subset": "train", "index": np.arange(len(x))}
        )
        write_npy(staging / "train.npy", x)
        write_csv(staging / "patches.csv", table)
        export_published(staging / "patches.csv", {"train": staging / "train.npy"}, root)
    else:
        from PIL import Image

        for i, (patch, label) in enumerate(zip(x, y)):
            folder = root / "train" / FOLDER_NAMES[classes[label]]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(patch).save(folder / f"{ids[i]}.png")  # 16-bit grayscale PNG (mode I;16)
    marker.write_text("")
    return root / "train"


def read_patch(path: str) -> np.ndarray:
    """ImageFolder loader for 16-bit patches (torchvision's ``ToTensor`` would wrap uint16 into int16)."""
    if path.endswith((".tif", ".tiff")):
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


class RandomRot90:
    """A random number of quarter turns (with ``RandomHorizontalFlip``: a uniform D4 element)."""

    def __call__(self, x):
        import torch

        return torch.rot90(x, int(torch.randint(0, 4, ())), dims=(-2, -1))


class ToFloatTensor:
    def __call__(self, patch):
        import torch

        return torch.from_numpy(patch.astype(np.float32))[None]


class Standardise:
    """Per-patch standardisation (subtract the mean, divide by the standard deviation)."""

    def __call__(self, x):
        return (x - x.mean()) / x.std(correction=0).clamp_min(1e-6)


def standard_loader(folder: Path, args, cuda: bool, workers: int):
    import torch
    from torchvision import datasets
    from torchvision.transforms import v2

    transform = v2.Compose([ToFloatTensor(), v2.RandomHorizontalFlip(), RandomRot90(), Standardise()])
    dataset = datasets.ImageFolder(str(folder), loader=read_patch, transform=transform)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=cuda,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
        generator=torch.Generator().manual_seed(args.seed),
    )


# ----------------------------------------------------------------------------- the three methods


def settings_for(args, model_name: str):
    """The project's training settings (config ``training`` where present), for one benchmark epoch."""
    from temvirus.experiments import resolve_training
    from temvirus.train import Settings, settings_from_config

    try:
        import yaml

        config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        entry = {"model": model_name, "init": "scratch", "method": "representative"}
        settings = settings_from_config(resolve_training(config["training"], entry), config["seed"], entry)
    except (
        ImportError,
        KeyError,
        TypeError,
        ValueError,
    ):  # no PyYAML (a bare GPU machine) or no training section: the dataclass defaults
        settings = Settings(epochs=1, batch_size=args.batch_size, lr=1e-3, weight_decay=0.0, patience=1)
    changes = {"epochs": 1, "patience": 10**6, "batch_size": args.batch_size, "device": args.device, "compile": False}
    for key in ("amp", "channels_last", "deterministic"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    return dataclasses.replace(settings, **changes)


class Bench:
    """One model and its data, ready for the three methods."""

    def __init__(self, args, model_name: str, x: np.ndarray, y: np.ndarray, folder: Path, n_classes: int):
        import torch

        from temvirus.models import build_model
        from temvirus.train import compact_tensor, resolve_device

        self.args, self.model_name, self.n_classes = args, model_name, n_classes
        self.settings = settings_for(args, model_name)
        self.device = resolve_device(args.device)
        self.cuda = self.device.type == "cuda"
        torch.manual_seed(args.seed)
        self.model = build_model(model_name, n_classes, "scratch", input_size=x.shape[-1])
        self.x, self.y = compact_tensor(x), torch.from_numpy(np.asarray(y, dtype=np.int64))
        self.val_x, self.val_y = self.x[:2], self.y[:2]
        self.n = len(x)
        self.folder = folder
        self.loaders = {}

    def _sync(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)

    def _step(self, optimizer, xb, yb):
        import torch.nn.functional as F

        from temvirus.train import _autocast

        with _autocast(self.device, self.settings.amp):
            logits = self.model(xb)
        loss = F.cross_entropy(logits.float(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    def _optimizer(self):
        import torch

        return torch.optim.Adam(self.model.parameters(), lr=self.settings.lr, weight_decay=self.settings.weight_decay)

    def _prepare(self):
        import torch

        from temvirus.train import seed_everything

        seed_everything(self.settings.seed, self.settings.deterministic)
        self.model.to(self.device)
        if self.settings.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.train()

    def project(self) -> float:
        """Seconds of one epoch of :func:`temvirus.train.fit` (its own per-epoch clock)."""
        from temvirus.train import fit

        result = fit(self.model, self.x, self.y, self.val_x, self.val_y, self.settings, self.n_classes)
        return float(result.history["seconds"].iloc[-1])

    def run(self, method: str) -> float:
        """Seconds of one epoch of ``method`` (``project``, ``bound``, ``torchvision`` or ``torchvision_w{n}``)."""
        if method.startswith("torchvision"):
            return self.torchvision(workers_of(method, self.args.workers))
        return getattr(self, method)()

    def torchvision(self, workers: int) -> float:
        """Seconds of one epoch of the ImageFolder + DataLoader loop with ``workers`` workers."""
        import torch

        if workers not in self.loaders:
            self.loaders[workers] = standard_loader(self.folder, self.args, self.cuda, workers)
        self._prepare()
        optimizer = self._optimizer()
        self._sync()
        started = time.perf_counter()
        for xb, yb in self.loaders[workers]:
            xb = xb.to(self.device, non_blocking=True)
            yb = yb.to(self.device, non_blocking=True)
            if self.settings.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            self._step(optimizer, xb, yb)
        self._sync()
        return time.perf_counter() - started

    def bound(self) -> float:
        """Seconds of the same number of steps on one standardised batch resident on the device."""
        from temvirus.train import _batch

        self._prepare()
        xb = _batch(self.x[: self.args.batch_size].to(self.device), self.settings.channels_last)
        yb = self.y[: self.args.batch_size].to(self.device)
        optimizer = self._optimizer()
        steps = -(-self.n // self.args.batch_size)
        self._sync()
        started = time.perf_counter()
        for _ in range(steps):
            self._step(optimizer, xb, yb)
        self._sync()
        return time.perf_counter() - started


def bench_model(args, model_name: str, x, y, folder: Path, classes: list[str]) -> dict:
    bench = Bench(args, model_name, x, y, folder, len(classes))
    methods = args.methods
    for method in methods:  # warm-up: allocator, cuDNN, DataLoader workers
        seconds = bench.run(method)
        print(f"  {model_name:14s} warm-up {method:12s} {seconds:8.2f} s", flush=True)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(args.repeats):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        for method in order:
            seconds = bench.run(method)
            times[method].append(seconds)
            print(
                f"  {model_name:14s} repeat {r + 1}/{args.repeats} {method:12s} {seconds:8.2f} s  {bench.n / seconds:9.1f} samples/s",
                flush=True,
            )
    out = {"n_samples": bench.n, "settings": dataclasses.asdict(bench.settings), "methods": {}}
    for method in methods:
        out["methods"][method] = {
            "seconds": summary(times[method]),
            "samples_per_second": summary([bench.n / s for s in times[method]]),
        }
    if "project" in methods:
        for other in methods:
            if other != "project":
                ratios = [o / p for o, p in zip(times[other], times["project"])]  # = project speed / other speed
                out["methods"][other]["project_speed_ratio"] = summary(ratios)
    bench.loaders.clear()  # stop the persistent workers
    return out


# ----------------------------------------------------------------------------- memory (fresh process)


def memory_worker(args) -> None:
    """One epoch of one method in this (fresh) process; prints its peak memory as one JSON line."""
    import gc

    reset_peak_rss()
    import torch

    classes = classes_from_config()
    x, y = make_patches(args, classes)
    args.size = x.shape[-1]  # --patches: the workflow's patch size
    folder = write_image_folder(x, y, classes, args.format, data_dir(args))
    if args.memory_worker.startswith("torchvision"):  # the standard way never holds the patches in memory
        x, y = x[: args.batch_size].copy(), y[: args.batch_size].copy()
        gc.collect()
    rss_imports = peak_rss_mib()
    bench = Bench(args, args.memory_worker_model, x, y, folder, len(classes))
    del x, y
    gc.collect()
    if bench.cuda:
        torch.cuda.reset_peak_memory_stats(bench.device)
    seconds = bench.run(args.memory_worker)
    result = {
        "method": args.memory_worker,
        "model": args.memory_worker_model,
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_before_model_mib": rss_imports,
    }
    if bench.cuda:
        result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(bench.device) / 2**20
    print(json.dumps(result))


def memory(args, model_name: str) -> dict:
    out = {}
    for method in args.methods:
        cmd = [
            str(Path(__file__).resolve()),
            *args.argv_for_worker,
            "--memory-worker",
            method,
            "--memory-worker-model",
            model_name,
        ]
        out[method] = run_worker(cmd)
        print(
            f"  {model_name:14s} memory {method:12s} peak RSS {out[method]['peak_rss_mib']:8.0f} MiB"
            + (
                f", CUDA {out[method]['cuda_max_allocated_mib']:.0f} MiB"
                if "cuda_max_allocated_mib" in out[method]
                else ""
            ),
            flush=True,
        )
    return out


# ----------------------------------------------------------------------------- main


def workers_of(method: str, workers: list[int]) -> int:
    """Worker count of a torchvision method: ``torchvision_w{n}``, or the only ``--workers`` value."""
    return int(method.rsplit("_w", 1)[1]) if "_w" in method else workers[0]


def data_dir(args) -> Path:
    tag = "patches" if args.patches else "synthetic"
    return OUT / "tmp" / "training" / f"{tag}-{args.n_samples}-{args.size}-{args.format}"


def parse_args(argv=None):
    from temvirus.cli import number_in_range  # argparse types with their ranges

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny run for the smoke test (custom, 48 px, 4 samples, 1 thread)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--models", default="custom,mobilenet_v2", help="comma list of temvirus.models names")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of project, torchvision, bound")
    parser.add_argument("--size", type=number_in_range(int, 1), help="patch side (px); default 128 on cpu, 256 on cuda")
    parser.add_argument("--batch-size", type=number_in_range(int, 1), help="default 16 on cpu, 128 on cuda")
    parser.add_argument(
        "--n-samples",
        type=number_in_range(int, 1),
        help="samples per epoch (one repeat); default 64 on cpu, 4096 on cuda",
    )
    parser.add_argument(
        "--patches", help="a split folder of the workflow (train_augmented.npy/.csv) instead of synthetic patches"
    )
    parser.add_argument("--format", choices=("tif", "png"), default="tif", help="image files of the torchvision way")
    parser.add_argument(
        "--workers",
        default="2",
        help="DataLoader workers of the torchvision way; a comma list runs one torchvision_w{n} method per count",
    )
    parser.add_argument(
        "--threads", type=number_in_range(int, 0), default=0, help="torch CPU threads (0: torch's default)"
    )
    parser.add_argument("--repeats", type=number_in_range(int, 1), default=3)
    parser.add_argument("--amp", choices=("bf16", "fp16", "off"), help="override the config's training.amp")
    parser.add_argument("--channels-last", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
    parser.add_argument("--deterministic", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
    parser.add_argument("--memory", action="store_true", help="also the peak memory of each method, in fresh processes")
    parser.add_argument("--seed", type=number_in_range(int, 0), default=0)
    parser.add_argument("--out", default=str(OUT / "training.json"))
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker-model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = "cuda" if args.device.startswith("cuda") else "cpu"
    if args.quick:
        args.models = args.models if "--models" in (argv or sys.argv) else "custom"
        size, batch, n = 48, 2, 4
        args.repeats = 1
        args.threads = args.threads or 1
    else:
        size, batch, n = DEFAULTS[device]
    args.size = args.size or size
    args.batch_size = args.batch_size or batch
    args.n_samples = args.n_samples or n
    args.models = [m for m in args.models.split(",") if m]
    args.workers = [int(w) for w in str(args.workers).split(",") if w != ""]
    methods = [m for m in args.methods.split(",") if m]
    if args.amp is None and device == "cpu":
        args.amp = "off"
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        parser.error(f"unknown methods {bad}; choose from {list(METHODS)}")
    if not args.workers:
        parser.error("--workers needs at least one count")
    args.methods = []
    for m in methods:  # one torchvision method per worker count
        args.methods += (
            [f"torchvision_w{w}" for w in args.workers] if m == "torchvision" and len(args.workers) > 1 else [m]
        )
    if args.memory_worker:
        args.methods = [args.memory_worker]
    # what a memory worker needs to rebuild the same data and settings
    args.argv_for_worker = [
        "--device",
        args.device,
        "--size",
        str(args.size),
        "--batch-size",
        str(args.batch_size),
        "--n-samples",
        str(args.n_samples),
        "--format",
        args.format,
        "--workers",
        ",".join(map(str, args.workers)),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
        *(["--patches", args.patches] if args.patches else []),
        *(["--amp", args.amp] if args.amp else []),
        *(["--channels-last", str(args.channels_last)] if args.channels_last is not None else []),
        *(["--deterministic", str(args.deterministic)] if args.deterministic is not None else []),
    ]
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        memory_worker(args)
        return {}
    classes = classes_from_config()
    x, y = make_patches(args, classes)
    args.size = x.shape[-1]  # --patches: the workflow's patch size
    started = time.perf_counter()
    folder = write_image_folder(x, y, classes, args.format, data_dir(args))
    print(
        f"{len(x)} patches {x.shape[-1]}x{x.shape[-1]} ({'from ' + args.patches if args.patches else 'synthetic'}); "
        f"image files ({args.format}) ready in {time.perf_counter() - started:.1f} s at {folder}",
        flush=True,
    )
    result = {
        "benchmark": "training",
        "machine": machine_info(args.device),
        "args": {k: v for k, v in vars(args).items() if not k.startswith(("memory_worker", "argv_for"))},
        "models": {},
    }
    for model_name in args.models:
        result["models"][model_name] = bench_model(args, model_name, x, y, folder, classes)
        if args.memory:
            result["models"][model_name]["memory"] = memory(args, model_name)
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    path = write_result(args.out, result)
    report(result)
    print(f"wrote {path}")
    return result


def report(result: dict) -> None:
    device = result["machine"]["device"]
    print(f"\n== training throughput on {device} ({result['machine'].get('gpu', result['machine']['cpu_model'])}) ==")
    for model_name, r in result["models"].items():
        print(
            f"{model_name} ({r['n_samples']} samples/epoch, batch {r['settings']['batch_size']}, amp {r['settings']['amp']}):"
        )
        for method, m in r["methods"].items():
            sps = m["samples_per_second"]
            line = f"  {method:12s} {sps['median']:9.1f} samples/s (min {sps['min']:.1f}, max {sps['max']:.1f})"
            if "project_speed_ratio" in m:
                ratio = m["project_speed_ratio"]
                what = "of the bound" if method == "bound" else f"x {method}"
                value = f"{ratio['median']:.0%}" if method == "bound" else f"{ratio['median']:.2f}"
                line += f"; project = {value} {what} (range {ratio['min']:.2f}-{ratio['max']:.2f})"
            print(line)


if __name__ == "__main__":
    main()
