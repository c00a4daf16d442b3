"""Snakemake script: read the raw-layout folder into the image and particle tables."""

from temvirus.raw import write_tables
from temvirus.smk import run_rule

run_rule(snakemake, lambda smk: write_tables(smk.input.root, smk.output.images, smk.output.particles))
