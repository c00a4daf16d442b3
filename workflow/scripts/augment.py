"""Snakemake script: balance the training patches of one split by D4 transforms."""

from temvirus.augment import augment
from temvirus.smk import run_rule

run_rule(
    snakemake,
    lambda smk: augment(
        smk.input.patches,
        smk.input.train,
        smk.output.npy,
        smk.output.csv,
        smk.params.classes,
        smk.params.per_class,
        smk.params.seed,
        smk.wildcards.method,
    ),
)
