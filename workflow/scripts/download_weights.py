"""Snakemake script: fetch one ImageNet weights file, checking the hash prefix of its name."""

from temvirus.smk import run_rule
from temvirus.weights import fetch_weights_file

run_rule(snakemake, lambda smk: fetch_weights_file(smk.params.url, smk.output.weights))
