"""Snakemake script: score all same-class image pairs, group overlaps, keep one per group."""

from temvirus.overlap import find_overlaps
from temvirus.smk import run_rule


def main(smk):
    find_overlaps(
        smk.input.images,
        smk.input.particles,
        smk.input.root,
        smk.output.pairs,
        smk.output.kept,
        smk.params.overlap,
        smk.threads,
    )


run_rule(snakemake, main)
