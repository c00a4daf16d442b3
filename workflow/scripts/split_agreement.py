"""Snakemake script: agreement of each built split with the given folder split."""

from temvirus.smk import run_rule
from temvirus.split import write_agreement

run_rule(snakemake, lambda smk: write_agreement(dict(smk.input.items()), smk.output.agreement))
