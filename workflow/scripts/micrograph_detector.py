"""Snakemake script: fit the micrograph detector of one split on its train/validation images."""

from temvirus.micrographs import fit_from_tables
from temvirus.smk import run_rule


def main(smk):
    fit_from_tables(
        smk.input.images,
        smk.input.particles,
        smk.input.split,
        smk.input.root,
        smk.input.table1,
        smk.params.classes,
        smk.params.settings,
        smk.output.detector,
        seed=smk.params.seed,
        threads=smk.threads,
    )


run_rule(snakemake, main)
