"""Snakemake script: the no-GPU baselines of Table 2 for one split method."""

from pathlib import Path

from temvirus.baseline import baseline_split
from temvirus.smk import run_rule

run_rule(
    snakemake,
    lambda smk: baseline_split(
        Path(smk.input.patches).parent,
        smk.params.classes,
        smk.output.metrics,
        block=smk.params.block,
        max_test_per_class=smk.params.max_test_per_class,
        seed=smk.params.seed,
    ),
)
