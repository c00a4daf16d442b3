"""Snakemake script: train one experiment (best/last checkpoints, metrics, curve)."""

from temvirus.smk import run_rule
from temvirus.train import run_train

run_rule(snakemake, run_train)
