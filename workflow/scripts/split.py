"""Snakemake script: split the kept images with the split method named by the {method} wildcard."""

from temvirus.smk import run_rule
from temvirus.split import write_split

run_rule(snakemake, lambda smk: write_split(smk.input.kept, smk.output.split, smk.wildcards.method))
