"""Snakemake script: train one experiment (best/last checkpoints, metrics, curve)."""

from pathlib import Path

from temvirus.smk import run_rule
from temvirus.train import train_from_config

run_rule(
    snakemake,
    lambda smk: train_from_config(
        smk.wildcards,
        Path(smk.input.patches).parent,
        Path(smk.output.best).parent,
        smk.params.classes,
        smk.params.training,
        smk.params.seed,
        weights_file=smk.input.get("weights"),
        threads=smk.threads,
    ),
)
