"""Snakemake script: evaluate one experiment on its test patches."""

from temvirus.evaluate import run_evaluate
from temvirus.smk import run_rule

run_rule(snakemake, run_evaluate)
