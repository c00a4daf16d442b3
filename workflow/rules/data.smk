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
        synthetic=config["dataset"]["synthetic"],
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
