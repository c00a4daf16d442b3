"""Snakemake script: Fig 1, example patches per classification class."""

from temvirus.figures import fig1_patch_examples
from temvirus.smk import run_rule
from temvirus.split import SUBSETS


def main(smk):
    arrays = {subset: smk.input[subset] for subset in SUBSETS}
    fig1_patch_examples(
        smk.input.patches, arrays, smk.output[0], smk.params.classes, smk.params.per_class, smk.params.seed
    )


run_rule(snakemake, main)
