"""Snakemake script: export the patches of one split as TIFFs in the published layout."""

from temvirus.patches import export_published
from temvirus.smk import run_rule
from temvirus.split import SUBSETS

run_rule(
    snakemake, lambda smk: export_published(smk.input.patches, {s: smk.input[s] for s in SUBSETS}, smk.output.root)
)
