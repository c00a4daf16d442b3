"""curation stage rules: overlap removal, splits, Table 1, split summary (see docs/architecture.md)."""


# Tables and figures from the small split tables: seconds of work, run where Snakemake runs (on a
# cluster a queue and a job start would cost more than the work; Snakemake's localrules).
localrules:
    split_agreement,
    table1,
    split_summary,


rule find_overlaps:
    input:
        images="results/raw/images.csv",
        particles="results/raw/particles.csv",
        root=raw_root,
    output:
        pairs=report(
            "results/curation/overlap_pairs.csv",
            caption="../report/overlap_pairs.rst",
            category="2 Curation",
            subcategory="Overlap removal",
        ),
        kept="results/curation/images_kept.csv",
    log:
        "logs/curation/find_overlaps.log",
    conda:
        "../../envs/temvirus.yaml"
    threads: 8  # one process per class at a time; Snakemake gives at most --cores
    params:
        overlap=overlap_settings,
    script:
        "../scripts/find_overlaps.py"


rule overlap_figures:
    input:
        pairs="results/curation/overlap_pairs.csv",
        images="results/raw/images.csv",
        root=raw_root,
    output:
        figures=report(
            directory("results/figures/overlap_decisions"),
            patterns=["{name}.png"],
            caption="../report/overlap_decisions.rst",
            category="2 Curation",
            subcategory="Overlap removal",
        ),
    log:
        "logs/curation/overlap_figures.log",
    conda:
        "../../envs/temvirus.yaml"
    params:
        near_misses=config["overlap"]["near_misses"],
    script:
        "../scripts/overlap_figures.py"


rule split:
    input:
        kept="results/curation/images_kept.csv",
    output:
        split="results/curation/split_{method}.csv",
    log:
        "logs/curation/split_{method}.log",
    conda:
        "../../envs/temvirus.yaml"
    script:
        "../scripts/split.py"


rule split_agreement:
    input:
        unpack(split_tables),
    output:
        agreement=report(
            "results/curation/split_agreement.csv",
            caption="../report/split_agreement.rst",
            category="2 Curation",
            subcategory="Split",
        ),
    log:
        "logs/curation/split_agreement.log",
    conda:
        "../../envs/temvirus.yaml"
    script:
        "../scripts/split_agreement.py"


rule table1:
    input:
        split=f"results/curation/split_{table1_method()}.csv",
        patches=f"results/patches/{table1_method()}/patches.csv",
        paper="resources/paper/table1_dataset.csv",
    output:
        csv=report(
            "results/tables/table1.csv",
            caption="../report/table1.rst",
            category="2 Curation",
            subcategory="Table 1",
        ),
        md=report(
            "results/tables/table1.md",
            caption="../report/table1.rst",
            category="2 Curation",
            subcategory="Table 1",
        ),
    log:
        "logs/curation/table1.log",
    conda:
        "../../envs/temvirus.yaml"
    params:
        method=table1_method(),
    script:
        "../scripts/table1.py"


rule split_summary:
    input:
        table1="results/tables/table1.csv",
    output:
        png=report(
            "results/figures/split_summary.png",
            caption="../report/split_summary.rst",
            category="2 Curation",
            subcategory="Split",
        ),
    log:
        "logs/curation/split_summary.log",
    conda:
        "../../envs/temvirus.yaml"
    script:
        "../scripts/split_summary.py"
