from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/curation.smk"
include: "workflow/rules/patches.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/audit.smk"


rule all:
    default_target: True
    input:
        all_inputs,
