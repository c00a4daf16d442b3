"""micrographs stage (issue 14, beyond the paper): find, classify, count and measure particles
on whole test micrographs (see temvirus.micrographs and docs/architecture.md).

micrograph_detector trains, per split method, the particle-centre heat map on the training
images (CPU, one thread) and chooses its suppression and threshold on the validation images;
calibrate_micrographs chooses, per experiment, the thresholds on the particle score (heat map x
size agreement with the best model's classes), one per class the model gives a particle, on the
same validation images;
analyse_micrographs applies both with the experiment's best model to every test image of its
split method and evaluates against the annotations (results/micrographs/{model}/{init}/{method}/).
"""


rule micrograph_detector:
    input:
        unpack(micrograph_detector_inputs),
    output:
        detector="results/micrographs/detector/{method}.json",
    log:
        "logs/micrographs/detector/{method}.log",
    conda:
        "../../envs/temvirus.yaml"
    threads: 1
    params:
        settings=micrograph_settings,
        classes=config["classes"]["classification"],
        seed=config["seed"],
    script:
        "../scripts/micrograph_detector.py"


rule calibrate_micrographs:
    input:
        unpack(calibrate_micrographs_inputs),
    output:
        detector="results/micrographs/detector/{model}/{init}/{method}.json",
    log:
        "logs/micrographs/{model}/{init}/{method}/calibrate.log",
    conda:
        "../../envs/temvirus.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=gpu_request,
    params:
        training=experiment_training,
        settings=calibrate_settings,
    script:
        "../scripts/calibrate_micrographs.py"


rule analyse_micrographs:
    input:
        unpack(analyse_micrographs_inputs),
    output:
        particles=directory("results/micrographs/{model}/{init}/{method}/particles"),
        overlays=report(
            directory("results/micrographs/{model}/{init}/{method}/overlays"),
            patterns=["{image}.png"],
            caption="../report/micrograph_overlays.rst",
            category="Micrographs",
            subcategory="{model}/{init}/{method}",
            labels=experiment_labels,
        ),
        summary=report(
            "results/micrographs/{model}/{init}/{method}/summary.csv",
            caption="../report/micrograph_summary.rst",
            category="Micrographs",
            subcategory="{model}/{init}/{method}",
            labels=experiment_labels,
        ),
        sizes=report(
            "results/micrographs/{model}/{init}/{method}/sizes.png",
            caption="../report/micrograph_sizes.rst",
            category="Micrographs",
            subcategory="{model}/{init}/{method}",
            labels=experiment_labels,
        ),
        evaluation=report(
            "results/micrographs/{model}/{init}/{method}/evaluation.csv",
            caption="../report/micrograph_evaluation.rst",
            category="Micrographs",
            subcategory="{model}/{init}/{method}",
            labels=experiment_labels,
        ),
        metrics="results/micrographs/{model}/{init}/{method}/metrics.json",
    log:
        "logs/micrographs/{model}/{init}/{method}/analyse.log",
    conda:
        "../../envs/temvirus.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=gpu_request,
    params:
        training=experiment_training,
        settings=analyse_settings,
        seed=config["seed"],
        note=experiment_note,
    script:
        "../scripts/analyse_micrographs.py"
