"""micrographs stage (issue 14, beyond the paper): find, classify, count and measure particles
on whole test micrographs (see temvirus.micrographs and docs/architecture.md).

micrograph_detector trains, per split method, the particle-centre heat map on the training
images (CPU, one thread) and chooses its suppression and threshold on the validation images;
analyse_micrographs applies it with an experiment's best model to every test image of its
split and evaluates against the annotations (results/micrographs/{experiment}/).
"""


wildcard_constraints:
    split="representative|bad|given",


rule micrograph_detector:
    input:
        unpack(micrograph_detector_inputs),
    output:
        detector="results/micrographs/detector/{split}.json",
    log:
        "logs/micrographs/detector_{split}.log",
    conda:
        "../../envs/temvirus.yaml"
    threads: 1
    params:
        settings=micrograph_settings,
        classes=config["classes"]["classification"],
        seed=config["seed"],
    script:
        "../scripts/micrograph_detector.py"


rule analyse_micrographs:
    input:
        unpack(analyse_micrographs_inputs),
    output:
        particles=directory("results/micrographs/{experiment}/particles"),
        overlays=report(
            directory("results/micrographs/{experiment}/overlays"),
            patterns=["{image}.png"],
            caption="../report/micrograph_overlays.rst",
            category="Micrographs",
            subcategory="{experiment}",
            labels=experiment_labels,
        ),
        summary=report(
            "results/micrographs/{experiment}/summary.csv",
            caption="../report/micrograph_summary.rst",
            category="Micrographs",
            subcategory="{experiment}",
            labels=experiment_labels,
        ),
        sizes=report(
            "results/micrographs/{experiment}/sizes.png",
            caption="../report/micrograph_sizes.rst",
            category="Micrographs",
            subcategory="{experiment}",
            labels=experiment_labels,
        ),
        evaluation=report(
            "results/micrographs/{experiment}/evaluation.csv",
            caption="../report/micrograph_evaluation.rst",
            category="Micrographs",
            subcategory="{experiment}",
            labels=experiment_labels,
        ),
        metrics="results/micrographs/{experiment}/metrics.json",
    log:
        "logs/micrographs/analyse_{experiment}.log",
    conda:
        "../../envs/temvirus.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=gpu_request,
    params:
        training=experiment_training,
        settings=config["micrographs"],
        seed=config["seed"],
        note=experiment_note,
    script:
        "../scripts/analyse_micrographs.py"
