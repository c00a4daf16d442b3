"""patches stage rules: Lanczos-3 rescaling, patch extraction, augmentation (see docs/architecture.md)."""


rule extract_patches:
    input:
        split="results/curation/split_{method}.csv",
        images="results/raw/images.csv",
        particles="results/raw/particles.csv",
        root=raw_root,
    output:
        patches="results/patches/{method}/patches.csv",
        train="results/patches/{method}/train.npy",
        validation="results/patches/{method}/validation.npy",
        test="results/patches/{method}/test.npy",
    log:
        "logs/patches/extract_patches_{method}.log",
    conda:
        "../../envs/temvirus.yaml"
    script:
        "../scripts/extract_patches.py"


rule augment:
    input:
        patches="results/patches/{method}/patches.csv",
        train="results/patches/{method}/train.npy",
        classes="results/raw/classification_classes.csv",  # after check_classes
    output:
        npy="results/patches/{method}/train_augmented.npy",
        csv="results/patches/{method}/train_augmented.csv",
    log:
        "logs/patches/augment_{method}.log",
    conda:
        "../../envs/temvirus.yaml"
    params:
        classes=config["classes"]["classification"],
        per_class=config["augment"]["per_class"],
        seed=config["seed"],
    script:
        "../scripts/augment.py"


rule fig1_patch_examples:
    input:
        patches=f"results/patches/{table1_method()}/patches.csv",
        train=f"results/patches/{table1_method()}/train.npy",
        validation=f"results/patches/{table1_method()}/validation.npy",
        test=f"results/patches/{table1_method()}/test.npy",
        classes="results/raw/classification_classes.csv",  # after check_classes
    output:
        report(
            "results/figures/fig1_patch_examples.png",
            caption="../report/fig1_patch_examples.rst",
            category="3 Patches",
            subcategory="Fig 1",
        ),
    log:
        "logs/patches/fig1_patch_examples.log",
    conda:
        "../../envs/temvirus.yaml"
    params:
        classes=config["classes"]["classification"],
        per_class=config["patches"]["figure_examples"],
        seed=config["seed"],
    script:
        "../scripts/fig1_patch_examples.py"


rule export_patches:
    input:
        patches="results/patches/{method}/patches.csv",
        train="results/patches/{method}/train.npy",
        validation="results/patches/{method}/validation.npy",
        test="results/patches/{method}/test.npy",
    output:
        root=directory("results/patches/{method}/published"),
    log:
        "logs/patches/export_patches_{method}.log",
    conda:
        "../../envs/temvirus.yaml"
    script:
        "../scripts/export_patches.py"


rule rescaled_images:
    input:
        images="results/raw/images.csv",
        root=raw_root,
    output:
        root=directory("results/rescaled"),
    log:
        "logs/patches/rescaled_images.log",
    conda:
        "../../envs/temvirus.yaml"
    script:
        "../scripts/rescaled_images.py"
