"""Snakemake script: misclassified patches per test image and the worst images drawn."""

from temvirus.evaluate import run_error_tracing
from temvirus.smk import run_rule

run_rule(snakemake, run_error_tracing)
