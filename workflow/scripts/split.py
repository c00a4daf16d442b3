"""Snakemake script: split the kept images with the split method named by the {method} wildcard."""

from temvirus.smk import run_rule
from temvirus.split import write_split

# classes.classification is checked here, the first job that knows the subsets (augment checks it again);
# it is read from the config, not a param: it does not change the split, so changing it must not re-run
# the patches
run_rule(
    snakemake,
    lambda smk: write_split(
        smk.input.kept, smk.output.split, smk.wildcards.method, smk.config["classes"]["classification"]
    ),
)
