"""Snakemake script: write every raw image rescaled to 1 nm/px (Lanczos-3)."""

from temvirus.patches import write_rescaled_images
from temvirus.smk import run_rule

run_rule(snakemake, lambda smk: write_rescaled_images(smk.input.images, smk.input.root, smk.output.root))
