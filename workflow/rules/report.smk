"""Report stage: what `snakemake --report` shows beyond the stages' own outputs.

The headline tables as HTML pages (the report shows CSV files only as downloads) and the front
page's summary (workflow/report/workflow.rst includes results/report/summary.html): data,
config files, commit, the audit's verdict and whether the settings are the paper's.
"""


# HTML pages of small tables and the front page: run where Snakemake runs (localrules, as
# curation.smk's tables).
localrules:
    table_html,
    per_class_html,
    report_summary,


wildcard_constraints:
    table="|".join(REPORT_TABLES),


rule table_html:
    input:
        csv="results/tables/{table}.csv",
    output:
        html=report(
            "results/report/{table}.html",
            caption="../report/table_html.rst",
            category="0 Tables",
        ),
    log:
        "logs/report/table_html_{table}.log",
    conda:
        "../../envs/temvirus.yaml"
    params:
        title=report_table_title,
        note=report_table_note,
    script:
        "../scripts/table_html.py"


rule per_class_html:
    input:
        metrics="results/evaluation/{model}/{init}/{method}/metrics.json",
    output:
        html=report(
            "results/report/per_class/{model}/{init}/{method}.html",
            caption="../report/per_class_html.rst",
            category="5 Evaluation",
            subcategory="{model}/{init}/{method}",
            labels=experiment_labels,
        ),
    log:
        "logs/report/{model}/{init}/{method}/per_class_html.log",
    conda:
        "../../envs/temvirus.yaml"
    params:
        note=experiment_note,
    script:
        "../scripts/per_class_html.py"


rule report_summary:
    input:
        audit="results/audit/audit.json",
        images="results/raw/images.csv",
        particles="results/raw/particles.csv",
    output:
        html="results/report/summary.html",
    log:
        "logs/report/report_summary.log",
    conda:
        "../../envs/temvirus.yaml"
    params:
        configfiles=applied_configfiles(),
        config=summary_settings,
        note=run_note(),
    script:
        "../scripts/report_summary.py"
