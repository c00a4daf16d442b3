"""Snakemake script: extract the published archive(s) found on disk (dataset.local.path)."""

from temvirus.download import extract_local_dataset
from temvirus.smk import run_rule

run_rule(snakemake, lambda smk: extract_local_dataset(list(smk.input.archives), smk.output.root, smk.output.record))
