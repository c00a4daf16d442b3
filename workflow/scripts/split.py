"""Snakemake script: split the kept images with the method named by the {split} wildcard."""

from temvirus.smk import run_rule
from temvirus.split import write_split

run_rule(snakemake, lambda smk: write_split(smk.input.kept, smk.output.split, smk.wildcards.split))
