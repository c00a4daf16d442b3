import os
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.27")  # a priority given by a function of the wildcards (train_model)

# The project package is imported from this workflow's own source tree: here while the job
# graph is built, and by every script, so an environment needs only the third-party packages
# (envs/temvirus.yaml). The scripts get it first through PYTHONPATH, which their processes
# inherit (locally, on SLURM, in --sdm conda): Snakemake's script preamble only appends this
# process's sys.path, after site-packages, where another checkout's package (installed
# editable in a shared .venv) or an outer PYTHONPATH would be imported instead.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join([SRC, *filter(None, [os.environ.get("PYTHONPATH")])])
)


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/curation.smk"
include: "workflow/rules/patches.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/micrographs.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_inputs,
