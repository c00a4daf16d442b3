"""Real-data learning benchmark: the workflow on the 9-class real crops, one CPU, a time budget.

What it measures
----------------
The workflow (``snakemake``, as ``make run`` calls it) with ``config/config.yaml`` and
``config/real_crops.yaml`` on ``../shared/real-tem/tem-virus-1nm-crops`` (578 real images at
1 nm/px, 9 classes, ``dataset.source: local``): raw tables, overlap removal, the given and
the representative split, patches, augmentation, training of ``small_cnn`` on the CPU and
evaluation on all test patches of the split. It prints, per experiment, the accuracy and
macro-F1 on the test patches beside two baselines that need no training: chance (1 / 9) and
always predicting the majority class of the test patches; plus the wall time of the whole
command, which must stay within ``--budget-min`` (45 minutes; the snakemake command is
killed past it). Targets: >= 0.95 accuracy and >= 0.93 macro-F1.

How to run (figures in ``benchmarks/out/real_crops.json``, the workdir in ``benchmarks/out/real_crops/``)::

    nice .venv/bin/python benchmarks/real_crops.py                         # both splits
    nice .venv/bin/python benchmarks/real_crops.py --experiment small_cnn-scratch-given
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT, REPO, machine_info, write_result  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from conftest import REAL_CROPS, snakemake_cmd  # noqa: E402

import yaml  # noqa: E402

CONFIG = REPO / "config" / "real_crops.yaml"


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REAL_CROPS), help="the crops' raw-layout folder")
    parser.add_argument("--experiment", action="append", help="experiment(s) of config/real_crops.yaml to run (default: all)")
    parser.add_argument("--budget-min", type=float, default=45.0, help="wall-time budget of the whole command (minutes)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", default=str(OUT / "real_crops"), help="scratch workdir (emptied first)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir's results (re-use finished jobs)")
    parser.add_argument("--out", default=str(OUT / "real_crops.json"))
    args = parser.parse_args(argv)
    data = Path(args.data).resolve()
    if not data.is_dir():
        raise SystemExit(f"{data}: real crops not found (read from ../shared, never committed)")
    config = yaml.safe_load(CONFIG.read_text())
    names = [f"{e['model']}-{e['init']}-{e['split']}" for e in config["experiments"]]
    chosen = args.experiment or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise SystemExit(f"{unknown} not in {CONFIG}: {names}")
    workdir = Path(args.workdir).resolve()
    if workdir.exists() and not args.keep:
        shutil.rmtree(workdir)
    overlay = workdir.parent / "real_crops_overlay.yaml"
    overlay.parent.mkdir(parents=True, exist_ok=True)
    overlay.write_text(yaml.safe_dump({"dataset": {"source": "local", "local": {"path": str(data)}}}))
    targets = [f"results/evaluation/{e}/metrics.json" for e in chosen]
    cmd = snakemake_cmd(workdir, *targets, "--configfile", str(REPO / "config" / "config.yaml"), str(CONFIG), str(overlay))
    cmd[cmd.index("--cores") + 1] = str(args.cores)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = {"benchmark": "real_crops", "machine": machine_info(), "args": vars(args), "command": cmd, "data": str(data)}
    print(f"$ {' '.join(cmd)}", flush=True)
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.budget_min * 60, cwd=REPO, env=env)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"FAIL: over the budget of {args.budget_min} min (logs in {workdir / 'logs'})") from None
    seconds = time.perf_counter() - started
    (workdir.parent / "real_crops_snakemake.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"snakemake failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    result["seconds"] = seconds
    result["experiments"] = {}
    n_classes = len(config["classes"]["classification"])
    for name in chosen:
        metrics = json.loads((workdir / "results" / "evaluation" / name / "metrics.json").read_text())
        history = (workdir / "results" / "models" / name / "metrics.csv").read_text().splitlines()
        row = {k: metrics[k] for k in ("accuracy", "f1_macro", "n_test", "best_epoch")}
        row.update(baselines(workdir / "results" / "evaluation" / name / "predictions.csv", n_classes))
        row["epochs_run"] = len(history) - 1
        result["experiments"][name] = row
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    path = write_result(args.out, result)
    print(f"\n== real crops ({n_classes} classes, {data}) ==")
    print(f"wall time {seconds / 60:.1f} min (budget {args.budget_min:.0f} min), load average at end {result['machine']['load_average_at_end']}")
    for name, r in result["experiments"].items():
        print(f"{name}: accuracy {r['accuracy']:.3f}, macro-F1 {r['f1_macro']:.3f} on {r['n_test']} test patches "
              f"(best epoch {r['best_epoch']} of {r['epochs_run']}); chance {r['chance_accuracy']:.3f}, "
              f"majority class ({r['majority_class']}) accuracy {r['majority_accuracy']:.3f}, macro-F1 {r['majority_f1_macro']:.3f}")  # fmt: skip
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
