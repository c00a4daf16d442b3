"""Real-data learning benchmark: the package's chain on the 9-class real crops, on the CPU, in a time budget.

What it measures
----------------
The workflow's own functions, in its order, on ``../shared/real-tem/tem-virus-1nm-crops``
(578 real images at 1 nm/px, 9 classes, the raw layout) with the settings of
``config/config.yaml`` + ``config/real_crops.yaml``: raw tables (``temvirus.raw``), overlap
removal (``temvirus.overlap``: the crops hold 28 pairs of re-imaged fields, and without it 14
to 17 of them straddle subsets under either split method), the split
(``given``: the published folders, or ``representative``: the paper's particle-count dealing,
``temvirus.split``), 256 px patches (``temvirus.patches``), D4 balancing (``temvirus.augment``),
training of one model on the CPU (``temvirus.train``, ``small_cnn`` at 128 px) and evaluation
on all test patches of the split (``temvirus.evaluate``). Overlap removal scores the crops'
21,641 same-class pairs (8-14 minutes on 2 cores); ``--kept`` reuses the ``images_kept.csv``
of an earlier run on the same data and config instead (its image list must equal this run's).

It prints accuracy and macro-F1 on the test patches beside two baselines that need no
training: chance (1 / 9) and always predicting the test patches' majority class; plus the wall
time, which must stay within ``--budget-min`` (45 minutes). Targets: >= 0.95 accuracy and
>= 0.93 macro-F1.

How to run (figures in ``benchmarks/out/real_crops.json``, work files in ``benchmarks/out/real_crops/``)::

    nice .venv/bin/python benchmarks/real_crops.py                          # given split method
    nice .venv/bin/python benchmarks/real_crops.py --method representative
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT, REPO, machine_info, write_result  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
import yaml  # noqa: E402
from conftest import REAL_CROPS  # noqa: E402

CONFIG = REPO / "config" / "real_crops.yaml"


def settings() -> dict:
    """config/config.yaml with config/real_crops.yaml's sections merged over it (as ``--configfile`` does)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for key, value in yaml.safe_load(CONFIG.read_text()).items():
        config[key] = (
            {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
        )
    return config


def baselines(predictions_csv: Path, n_classes: int) -> dict:
    """Chance (1 / classes) and the majority-class accuracy and macro-F1 on the same test patches."""
    import pandas as pd
    from sklearn.metrics import f1_score

    frame = pd.read_csv(predictions_csv)
    majority = frame["true"].value_counts().idxmax()
    always = [majority] * len(frame)
    return {
        "chance_accuracy": 1 / n_classes,
        "majority_class": majority,
        "majority_accuracy": float((frame["true"] == majority).mean()),
        "majority_f1_macro": float(f1_score(frame["true"], always, average="macro", labels=sorted(set(frame["true"])))),
    }


def main(argv=None) -> dict:
    from temvirus.cli import number_in_range  # argparse types with their ranges

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REAL_CROPS), help="the crops' raw-layout folder")
    parser.add_argument("--method", default="given", choices=["given", "representative"], help="the split method")
    parser.add_argument(
        "--budget-min",
        type=number_in_range(float, 0, above=True),
        default=45.0,
        help="wall-time budget (minutes); the run is reported OVER past it",
    )
    parser.add_argument("--threads", type=number_in_range(int, 1), default=2)
    parser.add_argument(
        "--kept",
        help="images_kept.csv of an earlier run on the same data and config: overlap removal's result, reused",
    )
    parser.add_argument("--workdir", default=str(OUT / "real_crops"), help="work folder (emptied first)")
    parser.add_argument("--out", default=str(OUT / "real_crops.json"))
    args = parser.parse_args(argv)
    import torch

    from temvirus.augment import augment
    from temvirus.evaluate import evaluate_experiment
    from temvirus.experiments import experiment_folder, experiment_name, resolve_training
    from temvirus.overlap import find_overlaps
    from temvirus.patches import extract_patches
    from temvirus.raw import write_tables
    from temvirus.split import SUBSETS, write_split
    from temvirus.train import settings_from_config, train_experiment

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    data = Path(args.data).resolve()
    if not data.is_dir():
        raise SystemExit(f"{data}: real crops not found (read from ../shared, never committed)")
    config = settings()
    classes = config["classes"]["classification"]
    entry = next(e for e in config["experiments"] if e["method"] == args.method)
    name, folder_name = experiment_name(entry), experiment_folder(entry)
    work = Path(args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    result = {
        "benchmark": "real_crops",
        "machine": machine_info(),
        "args": vars(args),
        "data": str(data),
        "experiment": name,
    }

    images, _ = write_tables(data, work / "images.csv", work / "particles.csv", classes)
    if args.kept:
        import pandas as pd

        kept = pd.read_csv(args.kept, dtype={"image_id": str})
        if sorted(kept["image_id"]) != sorted(images["image_id"]):
            raise SystemExit(f"{args.kept}: its images are not this run's ({len(kept)} against {len(images)})")
        shutil.copyfile(args.kept, work / "images_kept.csv")
    else:
        find_overlaps(
            work / "images.csv",
            work / "particles.csv",
            data,
            work / "overlap_pairs.csv",
            work / "images_kept.csv",
            config["overlap"],
            args.threads,
        )
    result["overlap_seconds"] = time.perf_counter() - started
    write_split(work / "images_kept.csv", work / f"split_{args.method}.csv", args.method)
    folder = work / "patches" / args.method
    extract_patches(
        work / f"split_{args.method}.csv",
        work / "images.csv",
        work / "particles.csv",
        data,
        folder / "patches.csv",
        {subset: folder / f"{subset}.npy" for subset in SUBSETS},
    )
    augment(
        folder / "patches.csv",
        folder / "train.npy",
        folder / "train_augmented.npy",
        folder / "train_augmented.csv",
        classes,
        config["augment"]["per_class"],
        config["seed"],
    )
    result["curation_seconds"] = time.perf_counter() - started

    training = resolve_training(config["training"], entry)
    train_settings = settings_from_config(training, config["seed"], entry)
    fit = train_experiment(
        entry,
        folder,
        work / "models" / folder_name,
        classes,
        train_settings,
        training["max_train_per_class"],
        training["max_val_per_class"],
    )
    result["training_seconds"] = time.perf_counter() - started - result["curation_seconds"]
    metrics = evaluate_experiment(
        work / "models" / folder_name / "best.pt",
        folder,
        work / "evaluation" / folder_name,
        args.method,
        batch_size=training["batch_size"],
        device="cpu",
    )
    result["seconds"] = time.perf_counter() - started
    row = {k: metrics[k] for k in ("accuracy", "f1_macro", "n_test", "best_epoch")}
    row.update(baselines(work / "evaluation" / folder_name / "predictions.csv", len(classes)))
    row["epochs_run"] = len(fit.history)
    row["history"] = fit.history.to_dict("records")
    result.update(row)
    result["within_budget"] = result["seconds"] <= args.budget_min * 60
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    path = write_result(args.out, result)
    print(f"\n== real crops ({len(classes)} classes, {args.method} split method, {data}) ==")
    print(
        f"wall time {result['seconds'] / 60:.1f} min (curation {result['curation_seconds'] / 60:.1f}, of it overlap "
        f"removal {result['overlap_seconds'] / 60:.1f}{' reused' if args.kept else ''}; training "
        f"{result['training_seconds'] / 60:.1f}; budget {args.budget_min:.0f} min{'' if result['within_budget'] else ': OVER'}), "
        f"load average at start {result['machine']['load_average_at_start']}, at end {result['machine']['load_average_at_end']}"
    )
    print(
        f"{name}: accuracy {row['accuracy']:.3f}, macro-F1 {row['f1_macro']:.3f} on {row['n_test']} test patches "
        f"(best epoch {row['best_epoch']} of {row['epochs_run']})"
    )
    print(
        f"baselines: chance {row['chance_accuracy']:.3f}; majority class ({row['majority_class']}) accuracy "
        f"{row['majority_accuracy']:.3f}, macro-F1 {row['majority_f1_macro']:.3f}"
    )
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
