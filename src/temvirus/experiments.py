"""The configured experiments: their names and each one's own training settings.

An experiment is a config ``experiments`` entry ``{model, init, split}``, optionally with its
own ``epochs``, ``patience``, ``lr``, ``weight_decay``, ``batch_size`` or ``input_size``. Its settings are the
``training`` section with the per-initialisation values (``{scratch: ..., imagenet: ...}``)
picked for its init, then its own overrides. Rules take only these resolved settings as
params, so changing one experiment re-runs only that experiment's jobs.

No torch import here: the workflow calls this while it builds the job graph.
"""

from __future__ import annotations

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
