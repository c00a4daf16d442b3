"""Snakemake script: cut the 256x256 patches of one split (Lanczos-3 at 1 nm/px)."""

from temvirus.patches import extract_patches
from temvirus.smk import run_rule
from temvirus.split import SUBSETS


def main(smk):
    arrays = {subset: smk.output[subset] for subset in SUBSETS}
    extract_patches(smk.input.split, smk.input.images, smk.input.particles, smk.input.root, smk.output.patches, arrays)


run_rule(snakemake, main)
