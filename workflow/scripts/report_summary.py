"""Snakemake script: the report front page's summary (data, config, commit, audit verdict)."""

from temvirus.report import run_summary
from temvirus.smk import run_rule

run_rule(snakemake, run_summary)
