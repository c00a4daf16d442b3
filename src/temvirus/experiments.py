"""The configured experiments: their parts, names and each one's own training settings.

An experiment is a config ``experiments`` entry ``{model, init, method}`` (:data:`PARTS`: a
model of :data:`MODELS`, an initialisation of :data:`INITS`, a split method of
:data:`temvirus.split.METHODS`), optionally with its own ``epochs``, ``patience``, ``lr``,
``weight_decay``, ``batch_size`` or ``input_size``. The same three parts are the workflow's
wildcards and the folder levels of its results (``results/models/{model}/{init}/{method}/``).
Its settings are the ``training`` section with the per-initialisation values
(``{scratch: ..., imagenet: ...}``) picked for its init, then its own overrides. Rules take
only these resolved settings as params, so changing one experiment re-runs only that
experiment's jobs.

No torch import here: the workflow calls this while it builds the job graph.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

#: transfer architectures (torchvision builder names; timm's for resnet50v2 and xception,
#: see :mod:`temvirus.models`); the first six are the paper's
TRANSFER_MODELS = (
    "densenet201",
    "vgg16",
    "vgg19",
    "resnet50",
    "inception_v3",
    "mobilenet_v2",
    "efficientnet_b0",
    "convnext_tiny",
    "resnet50v2",
    "xception",
)
#: the models (:func:`temvirus.models.build_model`): the one definition in the package
MODELS = ("custom", "small_cnn") + TRANSFER_MODELS
#: the initialisations: the one definition in the package
INITS = ("scratch", "imagenet")
#: the smallest input side (px) each model is built for (others: any of the allowed sizes, 32 px
#: and up): the custom CNN's four poolings and 'valid' 3x3 convolution, Inception v3's stem
#: (torchvision's minimum, 75 px); tests/test_models.py builds each at the bounds
MIN_INPUT_SIZE = {"custom": 48, "inception_v3": 75}
#: an experiment's parts: the keys of a config ``experiments`` entry, the workflow's wildcards
#: and the folder levels of its results, in this order
PARTS = ("model", "init", "method")
#: training settings given per initialisation in the config
PER_INIT = ("epochs", "patience", "lr")
#: settings an experiment entry may override
OVERRIDES = ("epochs", "patience", "lr", "weight_decay", "batch_size", "input_size")


def experiment_key(experiment: Mapping) -> tuple[str, str, str]:
    """``(model, init, method)`` of a config entry, a job's wildcards or any such mapping."""
    return tuple(str(experiment[part]) for part in PARTS)


def experiment_name(experiment: Mapping) -> str:
    """``{model}-{init}-{method}``: the experiment's name in Table 2, titles, notes and its
    checkpoints, and the stream its training seed is derived from (never parsed back)."""
    return "-".join(experiment_key(experiment))


def experiment_folder(experiment: Mapping) -> str:
    """``{model}/{init}/{method}``: the experiment's folder below ``results/models``,
    ``results/evaluation``, ``results/micrographs`` and ``logs``."""
    return "/".join(experiment_key(experiment))


def resolve_training(training: dict, entry: dict) -> dict:
    """The flat training settings of one experiment entry (see the module docstring)."""
    resolved = {key: (value[entry["init"]] if key in PER_INIT else value) for key, value in training.items()}
    resolved.update({key: entry[key] for key in OVERRIDES if key in entry})
    return resolved


def find_experiment(experiments: list[dict], wanted: Mapping) -> dict:
    """The config entry with ``wanted``'s model, init and method; a clear error when none is configured."""
    key = experiment_key(wanted)
    for entry in experiments:
        if experiment_key(entry) == key:
            return entry
    raise ValueError(
        f"experiment {experiment_folder(wanted)} is not configured; configured: {[experiment_folder(e) for e in experiments]}"
    )


#: training keys that set where and how fast a run computes, not what the method is
HARDWARE_KEYS = ("device", "gpu_augment", "amp", "channels_last", "compile", "deterministic", "threads")
#: method settings compared with the paper's: (config section, key, words for the note)
METHOD_SETTINGS = (
    ("augment", "per_class", "balanced training patches per class"),
    ("evaluation", "max_test_per_class", "test patches per class at most"),
    ("evaluation", "tta", "test-time D4 averaging"),
)
#: what a ``null`` of a training key means, in the note (others: ``all``)
NULL_WORDS = {"input_size": "256 px as cut", "bn_momentum": "each model's own"}
#: words for training keys in the note (others: ``training {key}``)
TRAINING_WORDS = {
    "max_train_per_class": "training patches per class at most",
    "max_val_per_class": "validation patches per class at most",
    "batch_size": "batch size",
    "label_smoothing": "label smoothing",
}


def _shown(value, key: str | None = None) -> str:
    """A setting's value in the note; ``null`` in the words of :data:`NULL_WORDS` for ``key``."""
    if isinstance(value, dict):
        return " / ".join(f"{_shown(v, key)} {k}" for k, v in value.items())
    if isinstance(value, bool):
        return "on" if value else "off"
    return NULL_WORDS.get(key, "all") if value is None else str(value)


def run_note(config: dict, paper: dict, experiments: Iterable[Mapping] | None = None) -> str:
    """One line saying how this run's method differs from the paper's, or ``""`` when it does not.

    ``paper`` is ``config/paper.yaml`` (the paper's method: Matuszewski & Sintorn 2021,
    Section 2); only the keys it sets are compared, so a setting it leaves to the defaults
    counts as the paper's. Compared: the data source (``synthetic`` counts as different; a
    ``local`` folder is taken for a copy of the published dataset, which cannot be told from
    here: its Table 1 beside the paper's shows what it holds), the classes
    classified (``classes.classification`` as a set: fewer or other classes than the paper's 14
    give accuracies that its values cannot be compared with), the
    ``augment`` and ``evaluation`` caps of :data:`METHOD_SETTINGS`, every ``training`` key but
    :data:`HARDWARE_KEYS` and those every experiment shown sets itself, and each experiment's own
    overrides (:data:`OVERRIDES`). E.g.
    ``"demo run: synthetic data, training epochs 2 scratch / 2 imagenet (paper 300 scratch / 50
    imagenet), ...: not a reproduction"``. Used by Table 2, its report caption and the
    confusion-matrix figures. ``experiments``: the experiments (mappings of :data:`PARTS`)
    whose own overrides count (default: every configured one), so that the note of one
    experiment's results does not change when another experiment's settings do.
    """
    chosen = None if experiments is None else {experiment_key(e) for e in experiments}
    differences = []
    if config["dataset"]["source"] == "synthetic":
        differences.append("synthetic data")
    theirs = paper.get("classes", {}).get("classification")
    if theirs is not None and set(config["classes"]["classification"]) != set(theirs):
        ours = config["classes"]["classification"]
        changes = [f"without {', '.join(c for c in theirs if c not in ours)}"] if set(theirs) - set(ours) else []
        changes += [f"with {', '.join(c for c in ours if c not in theirs)}"] if set(ours) - set(theirs) else []
        differences.append(f"{len(ours)} classes (paper {len(theirs)}: {'; '.join(changes)})")
    for section, key, words in METHOD_SETTINGS:
        if key in paper.get(section, {}) and config[section][key] != paper[section][key]:
            differences.append(f"{words} {_shown(config[section][key])} (paper {_shown(paper[section][key])})")
    paper_training = paper.get("training", {})
    shown = [e for e in config.get("experiments", []) if chosen is None or experiment_key(e) in chosen]
    # a key every experiment shown sets for itself: the run-wide value made none of its results (a change
    # of it must not re-caption them either); the experiments' own values follow
    own = {key for key in OVERRIDES if shown and all(key in e for e in shown)}
    for key, theirs in paper_training.items():
        if key in own:
            continue
        if key not in HARDWARE_KEYS and key in config["training"] and config["training"][key] != theirs:
            words = TRAINING_WORDS.get(key, f"training {key}")
            differences.append(f"{words} {_shown(config['training'][key], key)} (paper {_shown(theirs, key)})")
    for entry in shown:
        for key in OVERRIDES:
            if key in entry and key in paper_training:
                theirs = resolve_training({key: paper_training[key]}, {"init": entry["init"]})[key]
                if entry[key] != theirs:
                    differences.append(
                        f"{experiment_name(entry)} {key} {_shown(entry[key], key)} (paper {_shown(theirs, key)})"
                    )
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
