"""Snakemake script: an experiment's per-class test metrics as an HTML page for the report."""

from temvirus.report import write_per_class_html
from temvirus.smk import run_rule

run_rule(snakemake, lambda smk: write_per_class_html(smk.input.metrics, smk.output.html, smk.params.note))
