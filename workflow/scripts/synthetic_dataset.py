"""Snakemake script: generate the embedded synthetic raw dataset."""

from temvirus.smk import run_rule
from temvirus.synth import generate_from_config

run_rule(
    snakemake,
    lambda smk: generate_from_config(
        smk.params.synthetic, smk.input.table1, smk.output.root, smk.output.truth, smk.output.sizes
    ),
)
