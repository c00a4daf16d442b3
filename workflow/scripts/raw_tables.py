"""Snakemake script: read the raw-layout folder into the image and particle tables."""

from temvirus.raw import write_tables
from temvirus.smk import run_rule

# classes.classification is checked here, the first job reading the raw data; it is read from the
# config, not a param: it does not change the tables, so changing it must not re-run curation
run_rule(
    snakemake,
    lambda smk: write_tables(
        smk.input.root, smk.output.images, smk.output.particles, smk.config["classes"]["classification"]
    ),
)
