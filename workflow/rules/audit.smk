"""Lineage stage: the audit of the results folder against the jobs' lineage records.

Every job that runs through temvirus.smk.run_rule writes results/provenance/{rule}/*.json;
this rule runs last (its inputs are every other stage's targets), re-hashes what the records
list, checks the splits for leakage, and fails on any finding. `temvirus audit results` runs
the same checks without Snakemake (docs/lineage.md).
"""


rule audit:
    input:
        audit_inputs,
        accepted_leaks=accepted_leaks_input,
    output:
        md="results/audit/audit_report.md",
        html=report(
            "results/audit/audit_report.html",
            caption="../report/audit_report.rst",
            category="6 Audit",
        ),
        json="results/audit/audit.json",
    log:
        "logs/audit/audit.log",
    conda:
        "../../envs/temvirus.yaml"
    params:
        max_hamming=config["audit"]["near_duplicate_bits"],
        leak_ncc=config["audit"]["leak_ncc"],
        accepted_leaks=config["audit"]["accepted_leaks"],
    script:
        "../scripts/audit.py"
