"""Snakemake script: an experiment's per-class test metrics as an HTML page for the report."""

from temvirus.report import run_per_class_html
from temvirus.smk import run_rule

run_rule(snakemake, run_per_class_html)
