"""Snakemake script: misclassified patches per test image and the worst images drawn."""

from temvirus.figures import error_tracing
from temvirus.smk import run_rule

run_rule(
    snakemake,
    lambda smk: error_tracing(
        smk.input.predictions,
        smk.input.patches,
        smk.input.images,
        smk.input.root,
        smk.output.csv,
        smk.output.png,
        smk.params.classes,
        smk.params.n_images,
    ),
)
