"""Snakemake script: audit results/ against the lineage records (fails on any finding)."""

from temvirus.audit import run
from temvirus.smk import run_rule

run_rule(snakemake, run)
