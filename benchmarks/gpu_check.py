"""GPU check (issue 13): the CUDA tests, training throughput and one real training, in one command.

Two steps:

``--prepare`` (here, where ../shared/real-tem is): cuts the real 1 nm/px crops' patches with
the workflow's own reader and patcher (:func:`temvirus.raw.read_dataset`,
:func:`temvirus.patches.extract_patches`; the crops' given train/validation/test folders,
9 classes), downsamples every 256x256 patch ``--downsample`` times by area averaging
(default 2: 128x128 px at 2 nm/px; the 4983 patches at 256 px do not fit the 64 MiB that
travel to the GPU machine even compressed), and writes them, unaugmented, with their class
indices and patch ids, into one LZMA-compressed ``.npz`` (default ``.gpucheck/real_crops.npz``,
git-ignored; ``np.load`` reads it). Its ``manifest`` member says exactly what was carried
(source, counts per subset and class, size, downsampling) and the paper's training recipe
for ``custom`` (config/config.yaml + config/paper.yaml, resolved here because the GPU machine
has no PyYAML guarantee), so the device run needs neither ../shared nor the config reader.
Pure-Python ``pytest`` and its dependencies are zipped to ``.gpucheck/site.zip``, put at the
END of ``sys.path`` for the tests (a pytest installed on the GPU machine wins).

The run (the GPU machine; ``--quick`` on a CPU for the smoke test), in this order so that an
early stop leaves the most important figures (``gpu_check.json`` is rewritten after each):

a. ``pytest -m cuda tests/test_cuda.py`` (junit XML and log kept): counts and failures.
b. Training throughput, ``benchmarks/training.py``'s three methods (project = the fast path
   of :func:`temvirus.train.fit`; torchvision ImageFolder + DataLoader with 16 workers on
   TIFF files, PNG where tifffile is missing; the bound = the same steps on one batch already
   on the GPU) for custom and densenet201 at 256 px, batch 64, synthetic patches: samples/s
   and CUDA peak memory per method (fresh processes). ``--quick``: custom only, 48 px, on the CPU.
c. One real training: custom (scratch) on the carried crops: the training patches balanced
   by :func:`temvirus.augment.plan` to the paper's 736 per class, the paper recipe (batch,
   lr, patience, bf16, channels_last, D4 on the device, deterministic), as many epochs as
   fit ``--real-seconds`` (from the time of a 2-epoch warm-up run), the best validation
   macro-F1 epoch's weights scored on the crops' test patches (accuracy, macro-F1); then
   the time per epoch at paper scale (14 classes x 736 synthetic 256 px patches, 1900
   validation patches, paper recipe), times 300 = the estimated paper run.

Outputs (``$OUT`` when set, else ``benchmarks/out/``): ``gpu_check.json``,
``gpu_check_cuda_tests.{log,xml}``; the last thing printed is a short table.

    python benchmarks/gpu_check.py --prepare                     # here: .gpucheck/ (~35 MiB)
    bash benchmarks/gpu_check.sh                                 # the GPU machine, see docs/benchmarks.md
    python benchmarks/gpu_check.py --quick                       # CPU smoke run, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import OUT, REPO, machine_info  # noqa: E402

GPUCHECK = REPO / ".gpucheck"
DEFAULT_DATA = GPUCHECK / "real_crops.npz"
SITE_ZIP = GPUCHECK / "site.zip"
DEFAULT_CROPS = REPO.parent / "shared" / "real-tem" / "tem-virus-1nm-crops"
SUBSETS = ("train", "validation", "test")
#: pure-Python packages the CUDA tests need besides torch and numpy (pytest and its dependencies)
TEST_PACKAGES = ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "pygments", "py")
#: the paper's run length from scratch (METHOD.md, Models and training)
PAPER_EPOCHS = 300
#: the paper's validation set size assumed for the paper-scale epoch (its test set has 1900 patches)
PAPER_VAL = 1900


# ----------------------------------------------------------------------------- prepare (here)


def downsample(x: np.ndarray, factor: int, chunk: int = 256) -> np.ndarray:
    """``(N, S, S)`` integer patches averaged over ``factor x factor`` blocks -> ``(N, S/f, S/f)``, same dtype."""
    n, s = len(x), x.shape[-1]
    if factor == 1:
        return np.asarray(x)
    if s % factor:
        raise ValueError(f"patch side {s} is not a multiple of --downsample {factor}")
    out = np.empty((n, s // factor, s // factor), dtype=x.dtype)
    for start in range(0, n, chunk):
        block = np.asarray(x[start : start + chunk], dtype=np.float32)
        out[start : start + chunk] = np.rint(
            block.reshape(len(block), s // factor, factor, s // factor, factor).mean((2, 4))
        )
    return out


def link_subset(crops: Path, dest: Path, per_class: int) -> Path:
    """A raw-layout folder linking the first ``per_class`` images of each class and subset of ``crops``."""
    for subset_dir in sorted(p for p in crops.iterdir() if p.is_dir()):
        for class_dir in sorted(p for p in subset_dir.iterdir() if p.is_dir()):
            images = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))[:per_class]
            for image in images:
                for source in (
                    image,
                    class_dir / "particle_positions" / f"{image.stem}_particlepositions.txt",
                    class_dir / "tags" / f"{image.name}_tags.csv",
                ):
                    if source.exists():
                        target = dest / source.relative_to(crops)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.symlink_to(source)
    return dest


def cut_crops(crops: Path, work: Path, images_per_class: int | None) -> Path:
    """The crops' patches (given split) in the workflow's patch layout under ``work``; returns the folder."""
    from temvirus.patches import extract_patches
    from temvirus.raw import read_dataset

    if images_per_class:
        crops = link_subset(crops, work / "raw", images_per_class)
    images, particles = read_dataset(crops, hash_files=False)
    images.to_csv(work / "images.csv", index=False)
    particles.to_csv(work / "particles.csv", index=False)
    split = images[["image_id", "class", "n_particles", "folder_subset"]].assign(
        overlap_group=images.image_id, subset=images.folder_subset
    )
    split.to_csv(work / "split.csv", index=False)
    folder = work / "patches"
    folder.mkdir()
    extract_patches(
        work / "split.csv",
        work / "images.csv",
        work / "particles.csv",
        crops,
        folder / "patches.csv",
        {s: folder / f"{s}.npy" for s in SUBSETS},
    )
    return folder


def paper_recipe() -> dict:
    """The paper's training settings of ``custom`` from scratch, its balancing count, seed and classes.

    config/config.yaml overlaid by config/paper.yaml (the full reproduction), resolved by
    :func:`temvirus.experiments.resolve_training` for ``custom`` from ``scratch``.
    """
    import yaml

    from temvirus.experiments import resolve_training

    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    for key in ("training", "augment", "classes"):
        base[key] = {**base.get(key, {}), **paper.get(key, {})}
    seed = paper.get("seed", base["seed"])
    training = resolve_training(base["training"], {"model": "custom", "init": "scratch", "method": "given"})
    return {
        "training": training,
        "per_class": base["augment"]["per_class"],
        "seed": seed,
        "classes": list(base["classes"]["classification"]),
    }


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` whose members are LZMA-compressed (``np.load`` reads it); written atomically."""
    from temvirus.io import atomic_path

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def zip_test_packages(path: Path) -> list[str]:
    """Zip the pure-Python test packages (:data:`TEST_PACKAGES`) found in this environment to ``path``."""
    import importlib.util

    from temvirus.io import atomic_path

    found = []
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in TEST_PACKAGES:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                continue
            origin = Path(spec.origin)
            if origin.name == "__init__.py":
                for file in sorted(origin.parent.rglob("*")):
                    if file.is_file() and "__pycache__" not in file.parts:
                        archive.write(file, f"{name}/{file.relative_to(origin.parent)}")
            else:
                archive.write(origin, origin.name)
            found.append(name)
    return found


def prepare(args) -> dict:
    """Write ``args.data`` (the carried patches) and ``.gpucheck/site.zip``; returns the manifest."""
    import pandas as pd

    data = Path(args.data)
    recipe = paper_recipe()
    with tempfile.TemporaryDirectory(prefix="gpucheck-") as work:
        if args.from_patches:
            folder, source = Path(args.from_patches), str(Path(args.from_patches).resolve())
        else:
            crops = Path(args.crops)
            if not crops.is_dir():
                raise SystemExit(f"--prepare: the real crops are not at {crops} (give --crops or --from-patches)")
            folder, source = cut_crops(crops, Path(work), args.images_per_class), str(crops.resolve())
        table = pd.read_csv(folder / "patches.csv")
        classes = [c for c in recipe["classes"] if c in set(table["class"])]
        arrays, counts = {}, {}
        for subset in SUBSETS:
            rows = table[(table["subset"] == subset) & table["class"].isin(classes)].sort_values("index")
            if rows.empty:
                raise SystemExit(f"{folder / 'patches.csv'}: no {subset} patches of the classes {classes}")
            x = np.load(folder / f"{subset}.npy", mmap_mode="r")[rows["index"].to_numpy()]
            x = downsample(x, args.downsample)
            if x.max() < 256:
                x = x.astype(np.uint8)
            arrays[f"{subset}_x"] = x
            arrays[f"{subset}_y"] = rows["class"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
            arrays[f"{subset}_patch_id"] = rows["patch_id"].to_numpy(str)
            counts[subset] = rows.groupby("class").size().reindex(classes, fill_value=0).astype(int).to_dict()
    manifest = {
        "source": source,
        "method": "given (the crops' folders)",
        "classes": classes,
        "counts": counts,
        "patch_size_px": int(arrays["train_x"].shape[-1]),
        "downsample": args.downsample,
        "nm_per_px": float(args.downsample),
        "dtype": str(arrays["train_x"].dtype),
        "what": "unaugmented patches (the workflow's patcher), area-averaged by `downsample`, with class indices and patch ids",
        "recipe": recipe,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    arrays["manifest"] = np.array(json.dumps(manifest))
    started = time.perf_counter()
    write_npz(data, arrays)
    mib = data.stat().st_size / 2**20
    if mib > args.max_mib:
        data.unlink()
        raise SystemExit(
            f"{data}: {mib:.1f} MiB is over --max-mib {args.max_mib} (64 MiB travel in all): raise --downsample"
        )
    packages = zip_test_packages(Path(args.site_zip))
    total = sum(len(arrays[f"{s}_y"]) for s in SUBSETS)
    print(
        f"wrote {data}: {mib:.1f} MiB in {time.perf_counter() - started:.0f} s; {total} patches "
        f"{manifest['patch_size_px']} px ({manifest['dtype']}), classes {classes}"
    )
    for subset in SUBSETS:
        print(f"  {subset:10s} {sum(counts[subset].values()):5d}  {counts[subset]}")
    print(f"wrote {args.site_zip}: {Path(args.site_zip).stat().st_size / 2**20:.1f} MiB ({', '.join(packages)})")
    return manifest


# ----------------------------------------------------------------------------- the run


def load_data(path: Path) -> tuple[dict, dict]:
    """The carried arrays and their manifest (see :func:`prepare`)."""
    if not path.is_file():
        raise SystemExit(
            f"{path} not found: run `python benchmarks/gpu_check.py --prepare` first (and carry .gpucheck)"
        )
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: np.array(npz[k]) for k in npz.files}  # writable copies (torch.from_numpy)
    return arrays, json.loads(str(arrays.pop("manifest")))


def stage_tests(args, out: Path) -> dict:
    """a. ``pytest -m cuda tests/test_cuda.py``: counts from the junit XML, failures named."""
    import xml.etree.ElementTree as ET

    xml, log = out / "gpu_check_cuda_tests.xml", out / "gpu_check_cuda_tests.log"
    code = (
        f"import sys; sys.path.append({str(SITE_ZIP)!r}); import pytest; "
        f"raise SystemExit(pytest.main(['-m', 'cuda', '-p', 'no:cacheprovider', '-v', '-rs', '--junitxml', {str(xml)!r}, 'tests/test_cuda.py']))"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=args.tests_timeout,
            check=False,
        )
        output, returncode = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output, returncode = f"{exc.stdout or ''}{exc.stderr or ''}\nTIMEOUT after {args.tests_timeout} s", "timeout"
    log.write_text(output if isinstance(output, str) else output.decode())
    result = {"returncode": returncode, "seconds": round(time.perf_counter() - started, 1), "log": str(log)}
    if xml.is_file():
        cases = ET.parse(xml).getroot().iter("testcase")
        outcome = {"passed": [], "failed": [], "skipped": []}
        for case in cases:
            name = case.get("name")
            if case.find("failure") is not None or case.find("error") is not None:
                outcome["failed"].append(name)
            elif case.find("skipped") is not None:
                outcome["skipped"].append(name)
            else:
                outcome["passed"].append(name)
        result.update({k: len(v) for k, v in outcome.items()}, failed_tests=outcome["failed"])
        skips = [e.get("message", "") for e in ET.parse(xml).getroot().iter("skipped")]
        result["skip_reasons"] = sorted(set(skips))
    print(output[-3000:], flush=True)
    return result


def stage_throughput(args, classes: list[str], cuda: bool) -> dict:
    """b. ``benchmarks/training.py``'s project / torchvision / bound for custom and densenet201."""
    import importlib.util

    import training

    fmt = "tif" if importlib.util.find_spec("tifffile") else "png"
    models = "custom" if args.quick else "custom,densenet201"  # quick: one model, the same code path
    argv = ["--device", "cuda" if cuda else "cpu", "--models", models, "--format", fmt]
    argv += (
        ["--quick", "--workers", "1"]
        if args.quick
        else [
            "--size",
            "256",
            "--batch-size",
            "64",
            "--n-samples",
            str(args.n_samples),
            "--workers",
            "16",
            "--repeats",
            str(args.repeats),
        ]
    )
    targs = training.parse_args(argv)
    x, y = training.make_patches(targs, classes)
    folder = training.write_image_folder(x, y, classes, fmt, training.data_dir(targs))
    result = {
        "format": fmt,
        "args": {k: v for k, v in vars(targs).items() if not k.startswith(("memory_worker", "argv_for"))},
        "models": {},
    }
    for model_name in targs.models:
        r = training.bench_model(targs, model_name, x, y, folder, classes)
        if cuda:  # peak memory per method, each in a fresh process
            r["memory"] = training.memory(targs, model_name)
        result["models"][model_name] = r
    return result


def _settings(recipe: dict, method: str, device: str, **changes):
    """The recipe's :class:`temvirus.train.Settings` (``custom`` from ``scratch`` on split method
    ``method``); keys the recipe predates take the dataclass defaults."""
    from temvirus.train import Settings, settings_from_config

    defaults = {f.name: f.default for f in dataclasses.fields(Settings) if f.default is not dataclasses.MISSING}
    settings = settings_from_config(
        {**defaults, **recipe["training"]}, recipe["seed"], {"model": "custom", "init": "scratch", "method": method}
    )
    return dataclasses.replace(settings, device=device, **changes)


def balanced_train(arrays: dict, classes: list[str], per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training patches balanced to ``per_class`` per class by the workflow's plan (:mod:`temvirus.augment`)."""
    import pandas as pd

    from temvirus.augment import apply_transform, plan

    ids = arrays["train_patch_id"]
    train = pd.DataFrame({"patch_id": ids, "class": [classes[k] for k in arrays["train_y"]]})
    table = plan(train, classes, per_class, seed)
    row_of = {pid: i for i, pid in enumerate(ids)}
    x = np.stack(
        [
            apply_transform(arrays["train_x"][row_of[pid]], t)
            for pid, t in zip(table.source_patch_id, table["transform"])
        ]
    )
    y = np.array(
        table["class"].map({c: i for i, c in enumerate(classes)}), dtype=np.int64
    )  # writable (pandas 3 views are not)
    return x, y


def stage_real(args, arrays: dict, manifest: dict, device: str, deadline: float) -> dict:
    """c. custom on the carried crops: epochs to fit the time left, test accuracy and macro-F1."""
    import torch

    from temvirus.metrics import confusion_matrix, summary
    from temvirus.models import build_model
    from temvirus.train import compact_tensor, fit, predict

    recipe, classes = manifest["recipe"], manifest["classes"]
    per_class = args.per_class or recipe["per_class"]
    x, y = balanced_train(arrays, classes, per_class, recipe["seed"])
    tensors = (
        compact_tensor(x),
        torch.from_numpy(y),
        compact_tensor(arrays["validation_x"]),
        torch.from_numpy(arrays["validation_y"]),
    )
    size = x.shape[-1]
    settings = _settings(recipe, "given", device)

    def model():  # the same initial weights for the warm-up and the run
        torch.manual_seed(settings.seed)
        return build_model("custom", len(classes), "scratch", input_size=size)

    out = {
        "n_train_balanced": len(y),
        "per_class": per_class,
        "n_validation": len(arrays["validation_y"]),
        "n_test": len(arrays["test_y"]),
        "patch_size_px": size,
        "nm_per_px": manifest["nm_per_px"],
    }
    if args.real_epochs:
        epochs = args.real_epochs
    else:  # a 2-epoch warm-up run times a steady epoch (validation included)
        warm = fit(model(), *tensors, dataclasses.replace(settings, epochs=2, patience=10**6), len(classes))
        epoch_s = float(warm.history["seconds"].iloc[-1])
        budget = min(args.real_seconds, deadline - time.time() - args.reserve_s)
        epochs = max(1, min(recipe["training"]["epochs"], int(budget / epoch_s)))
        out.update(warmup_epoch_seconds=warm.history["seconds"].tolist(), budget_seconds=round(budget, 1))
    settings = dataclasses.replace(settings, epochs=epochs)
    out["settings"] = dataclasses.asdict(settings)
    print(
        f"  real crops: custom, {len(y)} balanced training patches {size} px, {epochs} epochs (patience {settings.patience})",
        flush=True,
    )
    started = time.perf_counter()
    net = model()
    result = fit(net, *tensors, settings, len(classes))
    out["train_seconds"] = round(time.perf_counter() - started, 1)
    net.load_state_dict(result.best_state)
    dev = torch.device(device)
    probs = predict(
        net.to(dev),
        compact_tensor(arrays["test_x"]),
        settings.batch_size,
        dev,
        amp=settings.amp,
        channels_last=settings.channels_last,
    )
    stats = summary(confusion_matrix(arrays["test_y"], probs.argmax(1), len(classes)))
    seconds = result.history["seconds"]
    out.update(
        epochs_run=len(result.history),
        best_epoch=result.best_epoch,
        best_val_f1_macro=result.best_metric,
        epoch_seconds_median=float(seconds.median()),
        test_accuracy=float(stats["accuracy"]),
        test_f1_macro=float(stats["f1_macro"]),
        history=result.history.to_dict(orient="list"),
    )
    return out


def stage_paper_scale(args, manifest: dict, device: str) -> dict:
    """c. seconds per epoch of custom at paper scale (14 x 736 synthetic 256 px patches), x 300."""
    import torch
    import training

    from temvirus.models import build_model
    from temvirus.train import compact_tensor, fit

    recipe = manifest["recipe"]
    classes = recipe["classes"]
    per_class, size, n_val = (1, 48, 4) if args.quick else (recipe["per_class"], 256, PAPER_VAL)
    targs = argparse.Namespace(patches=None, n_samples=len(classes) * per_class, size=size, seed=0)
    x, y = training.make_patches(targs, classes)
    settings = _settings(recipe, "representative", device, epochs=2, patience=10**6)
    torch.manual_seed(settings.seed)
    model = build_model("custom", len(classes), "scratch", input_size=size)
    tensors = (compact_tensor(x), torch.from_numpy(y), compact_tensor(x[:n_val]), torch.from_numpy(y[:n_val]))
    result = fit(model, *tensors, settings, len(classes))
    epoch_s = float(result.history["seconds"].iloc[-1])
    return {
        "n_train": len(y),
        "n_validation": n_val,
        "patch_size_px": size,
        "batch_size": settings.batch_size,
        "epoch_seconds": result.history["seconds"].tolist(),
        "steady_epoch_seconds": epoch_s,
        "estimated_300_epoch_minutes": epoch_s * PAPER_EPOCHS / 60,
    }


def module_versions() -> dict:
    """Versions of the libraries the run may use (None: not installed; the GPU machine is bare)."""
    import importlib
    import importlib.util

    versions = {}
    for name in ("torchvision", "pandas", "sklearn", "scipy", "yaml", "tifffile", "PIL", "triton", "pytest"):
        try:
            versions[name] = (
                getattr(importlib.import_module(name), "__version__", "?") if importlib.util.find_spec(name) else None
            )
        except ImportError:
            versions[name] = None
    return versions


def run(args) -> dict:
    from temvirus.io import write_json

    started = time.time()
    deadline = started + args.budget_s
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else OUT
    out.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.out) if args.out else out / "gpu_check.json"
    arrays, manifest = load_data(Path(args.data))
    import torch

    cuda = torch.cuda.is_available() and args.device != "cpu"
    device = "cuda" if cuda else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {
        "benchmark": "gpu_check",
        "machine": machine_info(device),
        "quick": args.quick,
        "data": {k: manifest[k] for k in manifest if k != "recipe"},
        "recipe": manifest["recipe"],
        "stages": {},
    }
    result["machine"]["modules"] = module_versions()
    if cuda:
        props = torch.cuda.get_device_properties(0)
        result["machine"].update(
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    stages = [
        ("cuda_tests", lambda: stage_tests(args, out)),
        ("throughput", lambda: stage_throughput(args, manifest["recipe"]["classes"], cuda)),
        ("real_training", lambda: stage_real(args, arrays, manifest, device, deadline)),
        ("paper_scale", lambda: stage_paper_scale(args, manifest, device)),
    ]
    for name, stage in stages:
        if name not in args.stages:
            continue
        print(f"\n== {name} ({time.time() - started:.0f} s since start) ==", flush=True)
        t0 = time.perf_counter()
        try:
            result["stages"][name] = stage()
        except Exception as exc:  # noqa: BLE001  (keep going: the later stages still give figures)
            traceback.print_exc()
            result["stages"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        result["stages"][name]["stage_seconds"] = round(time.perf_counter() - t0, 1)
        if cuda:
            result["stages"][name]["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
        result["total_seconds"] = round(time.time() - started, 1)
        write_json(json_path, result)
    print(f"\nwrote {json_path}")
    print(table(result))
    return result


def table(result: dict) -> str:
    """The short summary printed last."""
    m, s = result["machine"], result["stages"]
    lines = [
        f"== GPU check: {m.get('gpu', m['cpu_model'])}, torch {m['torch']}, device {m['device']}{' (quick)' if result['quick'] else ''}, {result.get('total_seconds', 0):.0f} s =="
    ]
    t = s.get("cuda_tests")
    if t is None:  # not among --stages
        pass
    elif "error" in t or "passed" not in t:
        lines.append(f"cuda tests       : {t.get('error', 'no result (rc ' + str(t.get('returncode')) + ')')}")
    else:
        lines.append(
            f"cuda tests       : {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped"
            + (f" ({', '.join(t['failed_tests'])})" if t["failed_tests"] else "")
        )
    b = s.get("throughput", {})
    for model, r in b.get("models", {}).items():
        sps = {k: v["samples_per_second"]["median"] for k, v in r["methods"].items()}
        tv = next((k for k in sps if k.startswith("torchvision")), None)
        ratio = r["methods"][tv]["project_speed_ratio"]["median"] if tv else float("nan")
        bound = r["methods"]["bound"]["project_speed_ratio"]["median"] if "bound" in sps else float("nan")
        mem = r.get("memory", {}).get("project", {}).get("cuda_max_allocated_mib")
        lines.append(
            f"{model:17s}: project {sps.get('project', 0):8.1f}, torchvision {sps.get(tv, 0):8.1f}, bound {sps.get('bound', 0):8.1f} samples/s; "
            f"project {ratio:.2f}x torchvision (target >= 3), {bound:.0%} of bound (>= 90%)"
            + (f"; {mem:.0f} MiB" if mem else "")
        )
    if "error" in b:
        lines.append(f"throughput       : {b['error']}")
    later = {  # stage: (label, the key present when it worked, its line)
        "real_training": (
            "real crops custom",
            "test_accuracy",
            lambda r: (
                f"test accuracy {r['test_accuracy']:.3f} (target >= 0.95), macro-F1 {r['test_f1_macro']:.3f}; "
                f"{r['epochs_run']} epochs (best {r['best_epoch']}), {r['epoch_seconds_median']:.2f} s/epoch, {r['patch_size_px']} px"
            ),
        ),
        "paper_scale": (
            "paper scale      ",
            "steady_epoch_seconds",
            lambda p: (
                f"{p['n_train']} x {p['patch_size_px']} px, batch {p['batch_size']}: {p['steady_epoch_seconds']:.2f} s/epoch; "
                f"300 epochs ~ {p['estimated_300_epoch_minutes']:.1f} min (target < 60)"
            ),
        ),
    }
    for stage, (label, key, line) in later.items():
        r = s.get(stage, {})
        if key in r:
            lines.append(f"{label}: {line(r)}")
        elif r:
            lines.append(f"{label}: {r.get('error')}")
    return "\n".join(lines)


def parse_args(argv=None):
    from temvirus.cli import number_in_range  # argparse types with their ranges

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--prepare", action="store_true", help="write --data and .gpucheck/site.zip here (needs the crops)"
    )
    parser.add_argument("--crops", default=str(DEFAULT_CROPS), help="the real crops (raw layout) for --prepare")
    parser.add_argument(
        "--from-patches", help="--prepare from a patch folder of the workflow (patches.csv + {subset}.npy) instead"
    )
    parser.add_argument(
        "--images-per-class",
        type=number_in_range(int, 1),
        help="--prepare from only this many images per class and split (tests)",
    )
    parser.add_argument(
        "--downsample",
        type=number_in_range(int, 1),
        default=2,
        help="--prepare: area-average factor (2: 128 px at 2 nm/px)",
    )
    parser.add_argument(
        "--max-mib",
        type=number_in_range(float, 0, above=True),
        default=56.0,
        help="--prepare: largest allowed --data file",
    )
    parser.add_argument("--site-zip", default=str(SITE_ZIP), help=argparse.SUPPRESS)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the prepared .npz")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a CPU smoke run (seconds)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available) or cpu")
    parser.add_argument("--stages", default="cuda_tests,throughput,real_training,paper_scale")
    parser.add_argument(
        "--budget-s",
        type=number_in_range(float, 0, above=True),
        default=450.0,
        help="the whole run's time; the real training gets what is left",
    )
    parser.add_argument("--tests-timeout", type=number_in_range(float, 0, above=True), default=240.0)
    parser.add_argument("--n-samples", type=number_in_range(int, 1), default=4096, help="throughput: samples per epoch")
    parser.add_argument(
        "--repeats", type=number_in_range(int, 1), default=2, help="throughput: timed epochs per method"
    )
    parser.add_argument(
        "--real-seconds",
        type=number_in_range(float, 0, above=True),
        default=180.0,
        help="real training: time for the epochs",
    )
    parser.add_argument(
        "--real-epochs",
        type=number_in_range(int, 0),
        default=0,
        help="real training: fixed epochs (0: fit --real-seconds)",
    )
    parser.add_argument(
        "--reserve-s",
        type=number_in_range(float, 0),
        default=45.0,
        help="time kept for the paper-scale epochs after the real training",
    )
    parser.add_argument(
        "--per-class",
        type=number_in_range(int, 0),
        default=0,
        help="balanced training patches per class (0: the paper's, from the data's recipe)",
    )
    parser.add_argument(
        "--threads", type=number_in_range(int, 0), default=0, help="torch CPU threads (0: torch's default)"
    )
    parser.add_argument("--out", help="the JSON (default $OUT/gpu_check.json, else benchmarks/out/gpu_check.json)")
    args = parser.parse_args(argv)
    args.stages = [s for s in args.stages.split(",") if s]
    if args.quick:
        args.real_epochs = args.real_epochs or 1
        args.per_class = args.per_class or 2
        args.threads = args.threads or 1
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    return prepare(args) if args.prepare else run(args)


if __name__ == "__main__":
    main()
