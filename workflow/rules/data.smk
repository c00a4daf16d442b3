"""Raw data: the embedded synthetic dataset, and the image/particle tables read from it."""


onstart:
    # temporaries of atomic writes left by jobs killed outright (temvirus.io); no job runs yet
    from temvirus.io import remove_temporaries

    for path in remove_temporaries("results") + remove_temporaries(DATASET_DIR):
        logger.info(f"removed {path}: temporary of an interrupted job")


rule synthetic_dataset:
    input:
        table1="resources/paper/table1_dataset.csv",
    output:
        root=directory(RAW_SYNTHETIC),
        truth="results/raw/synthetic_truth.csv",
        sizes="results/raw/synthetic_sizes.csv",
    log:
        "logs/data/synthetic_dataset.log",
    conda:
        "../../envs/temvirus.yaml"
    params:
        synthetic=synthetic_settings,
    script:
        "../scripts/synthetic_dataset.py"


rule synthetic_vs_real_figure:
    input:
        root=RAW_SYNTHETIC,
    output:
        png=report(
            "results/figures/synthetic_vs_real.png",
            caption="../report/synthetic_vs_real.rst",
            category="1 Data",
            subcategory="Synthetic dataset",
        ),
    log:
        "logs/data/synthetic_vs_real_figure.log",
    conda:
        "../../envs/temvirus.yaml"
    params:
        real=config["dataset"]["synthetic"]["real_examples"],
        seed=config["dataset"]["synthetic"]["seed"],
    script:
        "../scripts/synthetic_vs_real_figure.py"


rule raw_tables:
    input:
        unpack(raw_tables_inputs),
    output:
        images="results/raw/images.csv",
        particles="results/raw/particles.csv",
    log:
        "logs/data/raw_tables.log",
    conda:
        "../../envs/temvirus.yaml"
    script:
        "../scripts/raw_tables.py"


# classes.classification against the data, on every run in which the list changed: raw_tables
# checks it too, on the run that reads the data, but is not re-run for a change of the list (its
# tables do not depend on it). The jobs that read the list and can be the first to run after
# such a change (augment, fig1_patch_examples, micrograph_detector; the others come after
# augment) take this job's table as input, so none of them starts before the check has passed;
# they re-run for a change of the list anyway (their params). Not as ancient() input: Snakemake
# does not compare the params of a job below one that re-runs, it re-runs the job because of its
# inputs, which ancient() would have it ignore, so a changed list would re-run none of them.
# Overlap removal and the rest of curation do not depend on it: a change of the list re-runs
# none of them. A local job of high priority: on a cluster it does not wait in the queue, and
# among jobs ready at the same time it is started first.
localrules:
    check_classes,


rule check_classes:
    input:
        images="results/raw/images.csv",
    output:
        classes="results/raw/classification_classes.csv",
    log:
        "logs/data/check_classes.log",
    priority: 100
    conda:
        "../../envs/temvirus.yaml"
    params:
        classes=config["classes"]["classification"],
    script:
        "../scripts/check_classes.py"
