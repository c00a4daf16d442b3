"""Snakemake script: fetch the published dataset from Mendeley Data and extract its raw layout."""

from temvirus.download import download_dataset
from temvirus.smk import run_rule

run_rule(
    snakemake,
    lambda smk: download_dataset(smk.params.mendeley, smk.output.root, smk.output.record, smk.params.downloads),
)
