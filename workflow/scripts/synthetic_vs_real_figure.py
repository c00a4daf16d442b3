"""Snakemake script: synthetic examples beside real ones, per class."""

from temvirus.figures import plot_synthetic_vs_real
from temvirus.smk import run_rule

run_rule(
    snakemake, lambda smk: plot_synthetic_vs_real(smk.input.root, smk.params.real, smk.output.png, seed=smk.params.seed)
)
