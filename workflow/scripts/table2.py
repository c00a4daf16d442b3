"""Snakemake script: Table 2 with the paper's rows beside ours."""

from temvirus.smk import run_rule
from temvirus.tables import write_table2

run_rule(
    snakemake,
    lambda smk: write_table2(
        smk.input.metrics, smk.input.paper, smk.output.csv, smk.output.md, smk.input.baselines, smk.params.note
    ),
)
