"""Snakemake script: one figure per claimed overlap and per near miss (registered side by side)."""

from temvirus.overlap_figures import plot_decisions
from temvirus.smk import run_rule


def main(smk):
    plot_decisions(smk.input.pairs, smk.input.images, smk.input.root, smk.output.figures, smk.params.near_misses)


run_rule(snakemake, main)
