"""Snakemake script: regenerate Table 1 (CSV and Markdown) beside the paper's numbers."""

from temvirus.smk import run_rule
from temvirus.tables import write_table1


def main(smk):
    write_table1(smk.input.split, smk.input.patches, smk.input.paper, smk.output.csv, smk.output.md, smk.params.method)


run_rule(snakemake, main)
