"""Snakemake script: Table 2 with the paper's rows beside ours."""

from temvirus.evaluate import run_table2
from temvirus.smk import run_rule

run_rule(snakemake, run_table2)
