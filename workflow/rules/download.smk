"""Download stage: the published dataset and the ImageNet weights of the transfer models.

These rules need the internet (or a local archive) and run where the workflow is launched
(localrules), never on a compute node. Archives are cached in resources/dataset/downloads/
(with .part files while incomplete), so a rerun resumes or reuses them.
"""


localrules:
    download_dataset,
    extract_local_dataset,
    download_weights_file,
    download_weights,


rule download_dataset:
    output:
        root=directory(f"{DATASET_DIR}/mendeley"),
        record=f"{DATASET_DIR}/download_record.json",
    log:
        "logs/download/download_dataset.log",
    conda:
        "../../envs/temvirus.yaml"
    params:
        mendeley=config["dataset"]["mendeley"],
        downloads=f"{DATASET_DIR}/downloads",
    script:
        "../scripts/download_dataset.py"


rule extract_local_dataset:
    input:
        archives=local_archives,
        # their content (an archive replaced by one with an older time stamp is extracted again)
        manifest=LOCAL_ARCHIVES_MANIFEST,
    output:
        root=directory(f"{DATASET_DIR}/local"),
        record=f"{DATASET_DIR}/local_record.json",
    log:
        "logs/download/extract_local_dataset.log",
    conda:
        "../../envs/temvirus.yaml"
    script:
        "../scripts/extract_local_dataset.py"


# No params: the script takes the URL from weights.base_url itself. Where a file is fetched from
# does not change what it is (its name's hash prefix, or its record, says that); as a param, a new
# mirror re-ran the job, and Snakemake deleted the verified file before fetching it again.
rule download_weights_file:
    output:
        weights=f"{config['weights']['dir']}/{{filename}}",
    log:
        "logs/download/download_weights_{filename}.log",
    wildcard_constraints:
        filename=r"[^/]+\.(?:pth|safetensors)",
    conda:
        "../../envs/temvirus.yaml"
    script:
        "../scripts/download_weights.py"


rule download_weights:
    input:
        weights=imagenet_weights_files,
