"""Snakemake script: calibrate a split's micrograph detector for an experiment's best model."""

from temvirus.micrographs import calibrate_from_tables
from temvirus.smk import run_rule


def main(smk):
    calibrate_from_tables(
        smk.input.model,
        smk.input.detector,
        smk.input.images,
        smk.input.particles,
        smk.input.split,
        smk.input.root,
        smk.output.detector,
        device=smk.params.training["device"],
        batch_size=smk.params.settings["batch_size"],
        threads=smk.threads,
    )


run_rule(snakemake, main)
