"""Snakemake script: the report front page's summary (data, config, commit, audit verdict)."""

from temvirus.report import write_summary
from temvirus.smk import run_rule

run_rule(
    snakemake,
    lambda smk: write_summary(
        smk.input.audit,
        smk.input.images,
        smk.input.particles,
        smk.params.config,
        smk.params.configfiles,
        smk.params.note,
        smk.output.html,
    ),
)
