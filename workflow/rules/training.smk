"""training stage rules: train, evaluate, Table 2, Figs 3-4, error tracing (see docs/architecture.md).

One job per experiment {model}/{init}/{method} (config experiments; the wildcards' constraints
are in common.smk). Training keeps a resume checkpoint in results/models/{model}/{init}/{method}/resume/
(not an output, so it survives a killed job and a restarted job continues from it). train_model and evaluate_model run on
training.threads CPU threads (torch's intra-op threads; the patches are in-memory tensors,
so there are no data-loading workers).
"""


# Table 2 and Figs 3-4 from the evaluations' small tables: run where Snakemake runs (localrules,
# as curation.smk's tables).
localrules:
    table2,
    paper_confusion_figure,


wildcard_constraints:
    figure="|".join(PAPER_FIGURES),


rule train_model:
    input:
        unpack(train_model_inputs),
    output:
        best="results/models/{model}/{init}/{method}/best.pt",
        last="results/models/{model}/{init}/{method}/last.pt",
        metrics="results/models/{model}/{init}/{method}/metrics.csv",
        curve=report(
            "results/models/{model}/{init}/{method}/curve.png",
            caption="../report/training_curve.rst",
            category="4 Training",
            subcategory="{model}/{init}/{method}",
            labels=experiment_labels,
        ),
    log:
        "logs/training/{model}/{init}/{method}/train.log",
    priority: train_priority
    conda:
        "../../envs/temvirus.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=gpu_request,
    params:
        training=experiment_training,
        classes=config["classes"]["classification"],
        seed=config["seed"],
    script:
        "../scripts/train_model.py"


rule evaluate_model:
    input:
        unpack(evaluate_model_inputs),
    output:
        predictions="results/evaluation/{model}/{init}/{method}/predictions.csv",
        confusion=report(
            "results/evaluation/{model}/{init}/{method}/confusion.csv",
            caption="../report/confusion_csv.rst",
            category="5 Evaluation",
            subcategory="{model}/{init}/{method}",
            labels=experiment_labels,
        ),
        confusion_png=report(
            "results/evaluation/{model}/{init}/{method}/confusion.png",
            caption="../report/confusion.rst",
            category="5 Evaluation",
            subcategory="{model}/{init}/{method}",
            labels=experiment_labels,
        ),
        per_class=report(
            "results/evaluation/{model}/{init}/{method}/per_class.csv",
            caption="../report/per_class.rst",
            category="5 Evaluation",
            subcategory="{model}/{init}/{method}",
            labels=experiment_labels,
        ),
        metrics="results/evaluation/{model}/{init}/{method}/metrics.json",
    log:
        "logs/training/{model}/{init}/{method}/evaluate.log",
    conda:
        "../../envs/temvirus.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=gpu_request,
    params:
        training=experiment_training,
        evaluation=evaluation_settings,
        seed=config["seed"],
        note=experiment_note,
    script:
        "../scripts/evaluate_model.py"


rule error_tracing:
    input:
        unpack(error_tracing_inputs),
    output:
        csv=report(
            "results/evaluation/{model}/{init}/{method}/errors_per_image.csv",
            caption="../report/errors_per_image.rst",
            category="5 Evaluation",
            subcategory="{model}/{init}/{method}",
            labels=experiment_labels,
        ),
        png=report(
            "results/evaluation/{model}/{init}/{method}/errors.png",
            caption="../report/errors.rst",
            category="5 Evaluation",
            subcategory="{model}/{init}/{method}",
            labels=experiment_labels,
        ),
    log:
        "logs/training/{model}/{init}/{method}/error_tracing.log",
    conda:
        "../../envs/temvirus.yaml"
    params:
        classes=config["classes"]["classification"],
        n_images=config["evaluation"]["error_images"],
    script:
        "../scripts/error_tracing.py"


rule baseline_model:
    input:
        unpack(baseline_model_inputs),
    output:
        metrics="results/evaluation/baseline/{method}/metrics.json",
    log:
        "logs/training/baseline/{method}.log",
    conda:
        "../../envs/temvirus.yaml"
    params:
        classes=config["classes"]["classification"],
        block=config["evaluation"]["baseline_block_px"],
        max_test_per_class=config["evaluation"]["max_test_per_class"],
        seed=config["seed"],
    script:
        "../scripts/baseline_model.py"


rule table2:
    input:
        metrics=experiment_metrics,
        baselines=baseline_metrics,
        paper="resources/paper/table2_performance.csv",
    output:
        csv=report(
            "results/tables/table2.csv",
            caption="../report/table2.rst",
            category="5 Evaluation",
            subcategory="Table 2",
        ),
        md="results/tables/table2.md",
    log:
        "logs/training/table2.log",
    conda:
        "../../envs/temvirus.yaml"
    params:
        note=run_note(),
    script:
        "../scripts/table2.py"


rule paper_confusion_figure:
    input:
        unpack(paper_figure_inputs),
    output:
        png=report(
            "results/figures/{figure}.png",
            caption="../report/paper_confusion_figure.rst",
            category="5 Evaluation",
            subcategory="Figs 3-4",
        ),
    log:
        "logs/training/{figure}.log",
    conda:
        "../../envs/temvirus.yaml"
    params:
        title=paper_figure_title,
        note=paper_figure_note,
    script:
        "../scripts/paper_confusion_figure.py"
