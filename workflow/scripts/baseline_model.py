"""Snakemake script: the no-GPU baselines of Table 2 for one split method."""

from temvirus.baseline import run_baseline
from temvirus.smk import run_rule

run_rule(snakemake, run_baseline)
