"""Named input functions and path helpers shared by all rule files."""

from pathlib import Path

RAW_SYNTHETIC = "results/raw/synthetic"


def raw_root(wildcards=None):
    """The raw-layout folder the chain starts from, according to dataset.source."""
    source = config["dataset"]["source"]
    if source == "synthetic":
        return RAW_SYNTHETIC
    if source == "local":
        return config["dataset"]["local"]["path"]
    raise ValueError(f"dataset.source {source!r} has no raw folder yet")


def data_targets():
    return ["results/raw/images.csv"]


def curation_targets():
    return []


def patches_targets():
    return []


def training_targets():
    return []


def audit_targets():
    return []


def all_inputs(wildcards):
    """The default target: each stage contributes its own list."""
    return (
        data_targets()
        + curation_targets()
        + patches_targets()
        + training_targets()
        + audit_targets()
    )
