"""Snakemake script: a results table (CSV) as an HTML page for the report."""

from temvirus.report import write_csv_html
from temvirus.smk import run_rule

run_rule(snakemake, lambda smk: write_csv_html(smk.input.csv, smk.output.html, smk.params.title, smk.params.note))
