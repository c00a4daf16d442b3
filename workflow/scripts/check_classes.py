"""Snakemake script: check classes.classification against the image table; write them with their counts."""

from temvirus.raw import write_classification_classes
from temvirus.smk import run_rule

run_rule(
    snakemake,
    lambda smk: write_classification_classes(smk.input.images, smk.params.classes, smk.output.classes),
)
