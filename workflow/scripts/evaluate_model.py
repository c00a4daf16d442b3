"""Snakemake script: evaluate one experiment on its test patches."""

from pathlib import Path

from temvirus.evaluate import evaluate_experiment
from temvirus.smk import run_rule


def main(smk):
    training, evaluation = smk.params.training, smk.params.evaluation
    evaluate_experiment(
        smk.input.model,
        Path(smk.input.patches).parent,
        Path(smk.output.metrics).parent,
        smk.wildcards.method,
        batch_size=training["batch_size"],
        device=training["device"],
        amp=training["amp"],
        channels_last=training["channels_last"],
        tta=evaluation["tta"],
        max_per_class=evaluation["max_test_per_class"],
        seed=smk.params.seed,
        note=smk.params.note,
        threads=smk.threads,
    )


run_rule(snakemake, main)
