"""Snakemake script: the split summary figure (images and particles per class and split)."""

from temvirus.figures import split_summary
from temvirus.smk import run_rule

run_rule(snakemake, lambda smk: split_summary(smk.input.table1, smk.output.png))
