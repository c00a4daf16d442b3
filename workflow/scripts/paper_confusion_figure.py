"""Snakemake script: Fig 3 / Fig 4, this run's confusion matrix beside the paper's."""

from temvirus.evaluate import run_confusion_figure
from temvirus.smk import run_rule

run_rule(snakemake, run_confusion_figure)
