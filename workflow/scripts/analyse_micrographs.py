"""Snakemake script: analyse the test micrographs of an experiment's split with its best model."""

from pathlib import Path

from temvirus.micrographs import analyse_from_tables
from temvirus.smk import run_rule


def main(smk):
    settings = smk.params.settings
    analyse_from_tables(
        smk.input.model,
        smk.input.detector,
        smk.input.images,
        smk.input.particles,
        smk.input.split,
        smk.input.root,
        Path(smk.output.summary).parent,
        sizes_csv=smk.input.get("sizes"),
        max_images_per_class=settings["max_test_images_per_class"],
        device=smk.params.training["device"],
        batch_size=settings["batch_size"],
        threads=smk.threads,
        note=smk.params.note,
        seed=smk.params.seed,
    )


run_rule(snakemake, main)
