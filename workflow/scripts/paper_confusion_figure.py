"""Snakemake script: Fig 3 / Fig 4, this run's confusion matrix beside the paper's."""

from temvirus.figures import paper_confusion_figure
from temvirus.smk import run_rule

run_rule(
    snakemake,
    lambda smk: paper_confusion_figure(
        smk.input.confusion, smk.input.paper, smk.output.png, smk.params.title, smk.params.note
    ),
)
