"""Snakemake script: audit results/ against the lineage records (fails on any finding)."""

from temvirus.audit import audit_or_fail
from temvirus.audit.lineage import RESULTS_PREFIX
from temvirus.smk import run_rule

run_rule(
    snakemake,
    lambda smk: audit_or_fail(
        RESULTS_PREFIX,
        smk.output.md,
        smk.output.html,
        smk.output.json,
        max_hamming=smk.params.max_hamming,
        leak_ncc=smk.params.leak_ncc,
        accepted_leaks=smk.params.accepted_leaks,
        run_targets=list(smk.input),
    ),
)
