"""Snakemake script: a results table (CSV) as an HTML page for the report."""

from temvirus.report import run_table_html
from temvirus.smk import run_rule

run_rule(snakemake, run_table_html)
