"""Snakemake script: train one experiment (best/last checkpoints, metrics, curve)."""

from temvirus.train import run_train
from temvirus.smk import run_rule

run_rule(snakemake, run_train)
