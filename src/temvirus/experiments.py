"""The configured experiments: their names and each one's own training settings.

An experiment is a config ``experiments`` entry ``{model, init, split}``, optionally with its
own ``epochs``, ``patience``, ``lr``, ``weight_decay``, ``batch_size`` or ``input_size``. Its settings are the
``training`` section with the per-initialisation values (``{scratch: ..., imagenet: ...}``)
picked for its init, then its own overrides. Rules take only these resolved settings as
params, so changing one experiment re-runs only that experiment's jobs.

No torch import here: the workflow calls this while it builds the job graph.
"""

from __future__ import annotations

import os
from pathlib import Path

#: training settings given per initialisation in the config
PER_INIT = ("epochs", "patience", "lr")
#: settings an experiment entry may override
OVERRIDES = ("epochs", "patience", "lr", "weight_decay", "batch_size", "input_size")


def experiment_name(entry: dict) -> str:
    """``{model}-{init}-{split}``, the experiment's folder name and Snakemake wildcard."""
    return f"{entry['model']}-{entry['init']}-{entry['split']}"


def resolve_training(training: dict, entry: dict) -> dict:
    """The flat training settings of one experiment entry (see the module docstring)."""
    resolved = {key: (value[entry["init"]] if key in PER_INIT else value) for key, value in training.items()}
    resolved.update({key: entry[key] for key in OVERRIDES if key in entry})
    return resolved


def find_experiment(experiments: list[dict], name: str) -> dict:
    """The config entry named ``name``; a clear error when none is configured."""
    for entry in experiments:
        if experiment_name(entry) == name:
            return entry
    raise ValueError(f"experiment {name!r} is not configured; configured: {[experiment_name(e) for e in experiments]}")


#: training keys that set where and how fast a run computes, not what the method is
HARDWARE_KEYS = ("device", "gpu_augment", "amp", "channels_last", "compile", "deterministic")
#: method settings compared with the paper's: (config section, key, words for the note)
METHOD_SETTINGS = (
    ("augment", "per_class", "balanced training patches per class"),
    ("evaluation", "max_test_per_class", "test patches per class at most"),
)
#: words for training keys in the note (others: ``training {key}``)
TRAINING_WORDS = {
    "max_train_per_class": "training patches per class at most",
    "max_val_per_class": "validation patches per class at most",
    "batch_size": "batch size",
}


def _shown(value) -> str:
    if isinstance(value, dict):
        return " / ".join(f"{_shown(v)} {k}" for k, v in value.items())
    return "all" if value is None else str(value)


def run_note(config: dict, paper: dict, experiments: list[str] | None = None) -> str:
    """One line saying how this run's method differs from the paper's, or ``""`` when it does not.

    ``paper`` is ``config/paper.yaml`` (the paper's method: Matuszewski & Sintorn 2021,
    Section 2); only the keys it sets are compared, so a setting it leaves to the defaults
    counts as the paper's. Compared: the data source (anything but the published dataset via
    ``mendeley`` or a ``local`` copy of it counts as different: ``synthetic``), the
    ``augment`` and ``evaluation`` caps of :data:`METHOD_SETTINGS`, every ``training`` key but
    :data:`HARDWARE_KEYS`, and each experiment's own overrides (:data:`OVERRIDES`). E.g.
    ``"demo run: synthetic data, epochs 2 scratch / 2 imagenet (paper 300 scratch / 50
    imagenet), ...: not a reproduction"``. Used by Table 2, its report caption and the
    confusion-matrix figures. ``experiments``: names (``{model}-{init}-{split}``) whose own
    overrides count (default: every configured one), so that the note of one experiment's
    results does not change when another experiment's settings do.
    """
    differences = []
    if config["dataset"]["source"] == "synthetic":
        differences.append("synthetic data")
    for section, key, words in METHOD_SETTINGS:
        if key in paper.get(section, {}) and config[section][key] != paper[section][key]:
            differences.append(f"{words} {_shown(config[section][key])} (paper {_shown(paper[section][key])})")
    paper_training = paper.get("training", {})
    for key, theirs in paper_training.items():
        if key not in HARDWARE_KEYS and key in config["training"] and config["training"][key] != theirs:
            words = TRAINING_WORDS.get(key, f"training {key}")
            differences.append(f"{words} {_shown(config['training'][key])} (paper {_shown(theirs)})")
    for entry in config.get("experiments", []):
        if experiments is not None and experiment_name(entry) not in experiments:
            continue
        for key in OVERRIDES:
            if key in entry and key in paper_training:
                theirs = resolve_training({key: paper_training[key]}, {"init": entry["init"]})[key]
                if entry[key] != theirs:
                    differences.append(f"{experiment_name(entry)} {key} {entry[key]} (paper {_shown(theirs)})")
    if not differences:
        return ""
    return "demo run: " + ", ".join(differences) + ": not a reproduction"


def visible_gpus(driver: str | os.PathLike = "/proc/driver/nvidia/gpus") -> int:
    """NVIDIA GPUs this machine shows to its jobs, found without torch.

    The NVIDIA driver's entries under ``driver`` (one folder per GPU), limited by
    ``CUDA_VISIBLE_DEVICES`` when it is set (empty or ``-1``: none). The workflow's default
    limit of GPU jobs at once (workflow/rules/common.smk).
    """
    found = Path(driver)
    n = len(list(found.iterdir())) if found.is_dir() else 0
    chosen = os.environ.get("CUDA_VISIBLE_DEVICES")
    if chosen is not None:
        ids = [i.strip() for i in chosen.split(",") if i.strip()]
        n = 0 if "-1" in ids else min(n, len(ids))
    return n
