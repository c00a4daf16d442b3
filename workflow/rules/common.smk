"""Named input functions and path helpers shared by all rule files."""

import sys
from pathlib import Path

import yaml

from snakemake.utils import validate

from temvirus.configcheck import (
    ConfigError,
    check_config,
    check_config_files,
    check_schema,
    reorder_config,
)
from temvirus.experiments import (
    INITS,
    MODELS,
    experiment_folder,
    find_experiment,
    resolve_training,
    visible_gpus,
)
from temvirus.io import shell_path
from temvirus.provenance import params_drift
from temvirus.split import METHODS


# One wildcard per part of an experiment, one folder level each (results/models/{model}/
# {init}/{method}/), and {method} for a split method wherever it appears.
wildcard_constraints:
    model="|".join(MODELS),
    init="|".join(INITS),
    method="|".join(METHODS),


RAW_SYNTHETIC = "results/raw/synthetic"
DATASET_DIR = "resources/dataset"


#: content manifest of a local raw folder used in place (temvirus.raw.update_manifest)
LOCAL_MANIFEST = f"{DATASET_DIR}/local_manifest.json"
#: content manifest of the local archive(s) (temvirus.raw.update_archive_manifest)
LOCAL_ARCHIVES_MANIFEST = f"{DATASET_DIR}/local_archives.json"
_LOCAL = {}
_EXTRACTED_CHECKED = set()


def refuse(message):
    """End the run with ``message`` alone, each of its lines after ``Error: ``: for a bad config
    value, where Snakemake would print an exception raised while this file is parsed with its
    traceback, and wrap one raised in an input function (needed only by some targets, so not
    refused at parse time), WorkflowError too, in an InputFunctionException block.
    """
    for line in str(message).splitlines():
        print(f"Error: {line}", file=sys.stderr)
    raise SystemExit(1)


# the paper's tables, read by relative path: a run folder of its own needs a link to them
_MISSING_PAPER = [
    f"resources/paper/{p.name}"
    for p in sorted((Path(workflow.basedir) / "resources" / "paper").iterdir())
    if not Path("resources/paper", p.name).is_file()
]
if _MISSING_PAPER:
    refuse(
        f"{', '.join(_MISSING_PAPER)} not found in the working directory {Path.cwd()}: a run folder needs a "
        f"link to the checkout's resources/paper (ln -s {Path(workflow.basedir) / 'resources/paper'} "
        "resources/paper; README, runs side by side)"
    )


def _local_source():
    """dataset.local.path resolved once per run: (raw root used in place or None, archives).

    A folder used in place, or the archive(s), gets its manifest brought up to date here,
    before any job's inputs are compared with its outputs.
    """
    if not _LOCAL:
        path = config["dataset"]["local"]["path"]  # not empty (configcheck)
        from temvirus.download import DownloadError, locate_local
        from temvirus.raw import RawDataError, update_archive_manifest, update_manifest

        try:
            root, archives = locate_local(path)
            if root is not None:
                update_manifest(root, LOCAL_MANIFEST)
            elif archives:
                update_archive_manifest(archives, LOCAL_ARCHIVES_MANIFEST)
        # no such path, nothing to use at it, or an unclear layout (Test/ beside test/)
        except (DownloadError, RawDataError) as exc:
            refuse(f"dataset.local.path {path!r}: {exc}")
        except OSError as exc:  # a file there that cannot be read
            refuse(
                f"dataset.local.path {path!r}: {exc.filename}: cannot be read ({exc.strerror})"
            )
        _LOCAL["root"], _LOCAL["archives"] = root, archives
    return _LOCAL["root"], _LOCAL["archives"]


def raw_root(wildcards=None):
    """The raw-layout folder the chain starts from, according to dataset.source.

    synthetic: generated; mendeley: extracted by download_dataset; local: the raw layout
    found in the folder given (used in place), or else the archive(s) given or held by that
    folder, extracted by extract_local_dataset.
    """
    source = config["dataset"]["source"]
    if source == "synthetic":
        return RAW_SYNTHETIC
    if source == "mendeley":
        return checked_extraction(f"{DATASET_DIR}/mendeley")
    root, _ = _local_source()
    return checked_extraction(f"{DATASET_DIR}/local") if root is None else str(root)


def checked_extraction(root):
    """``root``, the copy extracted from the archive(s), refused in one line (once per run) if
    its files were changed since the extraction (temvirus.download.check_extracted): the jobs
    reading it would not run again, and their results would stand for the archive."""
    if root not in _EXTRACTED_CHECKED:
        from temvirus.download import DownloadError, check_extracted

        try:
            check_extracted(root)
        except DownloadError as exc:
            refuse(str(exc))
        _EXTRACTED_CHECKED.add(root)
    return root


def synthetic_settings(wildcards=None):
    """synthetic_dataset's settings: dataset.synthetic but real_examples (the examples shown beside
    the synthetic ones in a figure: changing them must not re-make the data and all after it).
    """
    return {
        k: v for k, v in config["dataset"]["synthetic"].items() if k != "real_examples"
    }


def raw_tables_inputs(wildcards):
    """The raw root and, for a local folder used in place, its content manifest."""
    inputs = {"root": raw_root()}
    if config["dataset"]["source"] == "local" and _local_source()[0] is not None:
        inputs["manifest"] = LOCAL_MANIFEST
    return inputs


def local_archives(wildcards=None):
    """The archive(s) of dataset.local.path that extract_local_dataset unpacks."""
    return [str(a) for a in _local_source()[1]]


def imagenet_archs():
    """Transfer models of the configured experiments that start from ImageNet weights."""
    return sorted(
        {e["model"] for e in config.get("experiments", []) if e["init"] == "imagenet"}
    )


def imagenet_weights_files(wildcards=None):
    """The local weights files of imagenet_archs() (weights.dir/{torchvision file name})."""
    from temvirus.weights import weights_filename

    return [
        f"{config['weights']['dir']}/{weights_filename(a)}" for a in imagenet_archs()
    ]


def data_targets():
    """The raw tables; with synthetic data also the synthetic-vs-real figure."""
    targets = ["results/raw/images.csv"]
    if config["dataset"]["source"] == "synthetic":
        targets.append("results/figures/synthetic_vs_real.png")
    return targets


def split_tables(wildcards=None):
    """split method -> split table, for each of split.methods compared with the folders."""
    return {
        m: f"results/curation/split_{m}.csv"
        for m in config["split"]["methods"]
        if m != "given"
    }


def table1_method():
    """The split method of Table 1 and Fig 1: representative (the paper's) when it is built,
    else the first of split.methods (e.g. given alone, the published folders)."""
    methods = config["split"]["methods"]
    return "representative" if "representative" in methods else methods[0]


def curation_targets():
    return [
        "results/curation/overlap_pairs.csv",
        "results/curation/images_kept.csv",
        "results/figures/overlap_decisions",
        *[f"results/curation/split_{m}.csv" for m in config["split"]["methods"]],
        # agreement with the folders: only of methods other than the folders' own
        *(["results/curation/split_agreement.csv"] if split_tables() else []),
        "results/tables/table1.csv",
        "results/tables/table1.md",
        "results/figures/split_summary.png",
    ]


def patches_targets():
    """Patches and the balanced training set of every split built, Fig 1, optional exports."""
    options = config["patches"]
    targets = ["results/figures/fig1_patch_examples.png"]
    for method in config["split"]["methods"]:
        folder = f"results/patches/{method}"
        targets += [f"{folder}/patches.csv", f"{folder}/train_augmented.csv"]
        if options["export_tif"]:
            targets.append(f"{folder}/published")
    if options["write_rescaled"]:
        targets.append("results/rescaled")
    return targets


# --- training stage (training.smk) ---------------------------------------------------

#: the paper's confusion-matrix figures: figure -> (experiment, title)
PAPER_FIGURES = {
    "fig3_confusion_custom": (
        {"model": "custom", "init": "scratch", "method": "representative"},
        "Fig 3, custom CNN",
    ),
    "fig4_confusion_densenet201_transfer": (
        {"model": "densenet201", "init": "imagenet", "method": "representative"},
        "Fig 4, DenseNet201 transfer",
    ),
}


def experiment_folders(experiments=None):
    """{model}/{init}/{method} of each experiment (default: the configured ones)."""
    return [
        experiment_folder(e)
        for e in (config["experiments"] if experiments is None else experiments)
    ]


def experiment_training(wildcards):
    """This experiment's own training settings (changing another one re-runs nothing here)."""
    return resolve_training(
        config["training"], find_experiment(config["experiments"], wildcards)
    )


def gpu_request(wildcards):
    """GPUs a train/evaluate job holds: 0 with training.device cpu, else 1.

    With device auto on a machine without a GPU, the machine-wide `gpu` limit below
    (visible_gpus(), 0 there) lowers the request to 0: the job runs on the CPU.
    """
    return int(experiment_training(wildcards)["device"] != "cpu")


def train_priority(wildcards):
    """Of the train_model jobs ready at once, those of micrographs.experiments start first (1,
    else 0): their calibrate_micrographs and analyse_micrographs jobs wait for them and the
    detector, which then run beside the other experiments' training. On the 2-core default
    that shortens the run by about the micrograph jobs' time (docs/benchmarks.md section 3).
    """
    return int(experiment_folder(wildcards) in micrograph_experiments())


def train_model_inputs(wildcards):
    """Patch table, balanced training set, validation set; the weights file for imagenet."""
    folder = f"results/patches/{wildcards.method}"
    inputs = {
        "patches": f"{folder}/patches.csv",
        "train": f"{folder}/train_augmented.npy",
        "train_table": f"{folder}/train_augmented.csv",
        "validation": f"{folder}/validation.npy",
    }
    if wildcards.init == "imagenet":
        from temvirus.weights import weights_filename

        inputs["weights"] = (
            f"{config['weights']['dir']}/{weights_filename(wildcards.model)}"
        )
    return inputs


def evaluate_model_inputs(wildcards):
    """The best checkpoint and the test patches of the experiment's split method."""
    folder = f"results/patches/{wildcards.method}"
    return {
        "model": f"results/models/{experiment_folder(wildcards)}/best.pt",
        "patches": f"{folder}/patches.csv",
        "test": f"{folder}/test.npy",
    }


def error_tracing_inputs(wildcards):
    """Predictions, patch centres, the image table and the raw images they came from."""
    return {
        "predictions": f"results/evaluation/{experiment_folder(wildcards)}/predictions.csv",
        "patches": f"results/patches/{wildcards.method}/patches.csv",
        "images": "results/raw/images.csv",
        "root": raw_root(),
    }


def experiment_metrics(wildcards=None):
    """metrics.json of every configured experiment (the rows of Table 2)."""
    return [f"results/evaluation/{f}/metrics.json" for f in experiment_folders()]


def baseline_metrics(wildcards=None):
    """The no-GPU baselines of each split method that has experiments (rows of Table 2)."""
    methods = sorted({e["method"] for e in config["experiments"]})
    return [f"results/evaluation/baseline/{m}/metrics.json" for m in methods]


def baseline_model_inputs(wildcards):
    """The patch table, balanced training set and test patches of split method {method}."""
    folder = f"results/patches/{wildcards.method}"
    return {
        "patches": f"{folder}/patches.csv",
        "train": f"{folder}/train_augmented.npy",
        "train_table": f"{folder}/train_augmented.csv",
        "test": f"{folder}/test.npy",
    }


def run_note(experiments=None):
    """The demo-run line of Table 2 and the figures ('' for the paper's method): see
    temvirus.experiments.run_note, against config/paper.yaml beside the Snakefile;
    ``experiments``: only these experiments' own overrides count (default: all)."""
    import yaml

    from temvirus.experiments import run_note as note

    with open(Path(workflow.basedir) / "config" / "paper.yaml", encoding="utf-8") as fh:
        return note(config, yaml.safe_load(fh), experiments)


def experiment_note(wildcards):
    """run_note of the one experiment whose results the job makes."""
    return run_note([wildcards])


def paper_figure_note(wildcards):
    """run_note of the experiment a paper figure shows."""
    return run_note([PAPER_FIGURES[wildcards.figure][0]])


def paper_figure_inputs(wildcards):
    """This run's confusion matrix of the figure's experiment and the paper's."""
    experiment = PAPER_FIGURES[wildcards.figure][0]
    return {
        "confusion": f"results/evaluation/{experiment_folder(experiment)}/confusion.csv",
        "paper": f"resources/paper/{wildcards.figure}.csv",
    }


def paper_figure_title(wildcards):
    return PAPER_FIGURES[wildcards.figure][1]


def training_targets():
    """Table 2, each experiment's curve, confusion and error tracing, Figs 3-4 if configured."""
    folders = experiment_folders()
    if not folders:
        return []
    targets = ["results/tables/table2.csv", "results/tables/table2.md"]
    for f in folders:
        targets += [
            f"results/models/{f}/curve.png",
            f"results/evaluation/{f}/confusion.png",
            f"results/evaluation/{f}/errors.png",
        ]
    targets += [
        f"results/figures/{figure}.png"
        for figure, (experiment, _) in PAPER_FIGURES.items()
        if experiment_folder(experiment) in folders
    ]
    return targets


def experiment_labels(wildcards):
    """Report labels of an experiment's results: model, initialisation, split method."""
    return {
        "model": wildcards.model,
        "init": wildcards.init,
        "split method": wildcards.method,
    }


#: results/tables/{table}.csv shown as HTML in the report: table -> title
REPORT_TABLES = {
    "table1": "Table 1: images, particles and patches per class and set (ours and the paper's)",
    "table2": "Table 2: test performance per experiment (ours and the paper's)",
}


def report_tables_targets():
    """HTML pages of Tables 1-2 and of each experiment's per-class metrics, for the report."""
    tables = ["table1"] + (["table2"] if experiment_folders() else [])
    return [f"results/report/{t}.html" for t in tables] + [
        f"results/report/per_class/{f}.html" for f in experiment_folders()
    ]


def report_table_title(wildcards):
    return REPORT_TABLES[wildcards.table]


def report_table_note(wildcards):
    """run_note for Table 2's page (how the run differs from the paper); none for Table 1's counts."""
    return run_note() if wildcards.table == "table2" else ""


# --- micrographs stage (micrographs.smk) -----------------------------------------------


def micrograph_experiments():
    """{model}/{init}/{method} of micrographs.experiments, each a configured experiment (checked
    when the stage is built, not for any target: an overlay that replaces `experiments` can
    still run e.g. download_weights without clearing micrographs.experiments)."""
    folders = experiment_folders(config["micrographs"]["experiments"])
    unknown = sorted(set(folders) - set(experiment_folders()))
    if unknown:
        refuse(
            f"micrographs.experiments: {unknown} are not configured experiments {experiment_folders()}; "
            "add them to experiments, or leave them out of micrographs.experiments"
        )
    return folders


#: micrographs keys read by the classifier's jobs (calibrate_micrographs: batch_size;
#: analyse_micrographs: both), not by the detector's fit
MICROGRAPH_CLASSIFIER_KEYS = ("batch_size", "max_test_images_per_class")


def micrograph_settings(wildcards=None):
    """The detector's settings: the micrographs section without its list of experiments and the
    classifier's keys (changing those must not re-fit the detector), in key order."""
    return {
        k: v
        for k, v in sorted(config["micrographs"].items())
        if k not in ("experiments", *MICROGRAPH_CLASSIFIER_KEYS)
    }


def calibrate_settings(wildcards=None):
    """What calibrate_micrographs reads of the micrographs section (the detector is its input)."""
    return {"batch_size": config["micrographs"]["batch_size"]}


def analyse_settings(wildcards=None):
    """What analyse_micrographs reads of the micrographs section: not the list of experiments
    (analysing one more must not re-run the others), nor the detector's settings (its input).
    """
    return {k: config["micrographs"][k] for k in MICROGRAPH_CLASSIFIER_KEYS}


def overlap_settings(wildcards=None):
    """find_overlaps' settings: the overlap section but near_misses (the report's figures only:
    changing it must not re-run overlap removal and everything after it)."""
    return {k: v for k, v in config["overlap"].items() if k != "near_misses"}


def evaluation_settings(wildcards=None):
    """What evaluate_model reads of the evaluation section (error_images and baseline_block_px
    are other rules' params: changing them must not re-evaluate the models)."""
    return {k: config["evaluation"][k] for k in ("tta", "max_test_per_class")}


def applied_configfiles():
    """The run's config sources in the order they apply (temvirus.smk.applied_config_sources)."""
    from temvirus.smk import applied_config_sources

    settings = workflow.config_settings
    given = [str(f) for f in settings.configfiles]
    args = settings.config_args if settings.config else []
    return applied_config_sources([str(f) for f in workflow.configfiles], given, args)


def summary_settings(wildcards=None):
    """What report_summary shows of the config (temvirus.report.summary_html): the data source
    (the local path, the synthetic scale and binning), the classes, split methods, training
    patches per class, epochs, batch size, device, seed and experiments. Its params (not the
    whole config read by the script), so that the front page follows a change of them by
    itself, not only through the jobs before it; and the run's, not those of the config that
    `snakemake --report` is given (another one would misstate them).
    """
    dataset, training = config["dataset"], config["training"]
    return {
        "dataset": {
            "source": dataset["source"],
            "local": {"path": dataset["local"]["path"]},
            "synthetic": {k: dataset["synthetic"][k] for k in ("scale", "binning")},
        },
        "classes": {"classification": list(config["classes"]["classification"])},
        "split": {"methods": list(config["split"]["methods"])},
        "augment": {"per_class": config["augment"]["per_class"]},
        "training": {k: training[k] for k in ("epochs", "batch_size", "device")},
        "seed": config["seed"],
        "experiments": [dict(e) for e in config["experiments"]],
    }


def micrograph_detector_inputs(wildcards):
    """Image and particle tables, the split table, the raw root and Table 1 (the diameters)."""
    return {
        "images": "results/raw/images.csv",
        "particles": "results/raw/particles.csv",
        "split": f"results/curation/split_{wildcards.method}.csv",
        "root": raw_root(),
        "table1": "resources/paper/table1_dataset.csv",
        "classes": "results/raw/classification_classes.csv",  # after check_classes
    }


def calibrate_micrographs_inputs(wildcards):
    """The best model, its split method's detector and validation images."""
    method = wildcards.method
    return {
        "model": f"results/models/{experiment_folder(wildcards)}/best.pt",
        "detector": f"results/micrographs/detector/{method}.json",
        "images": "results/raw/images.csv",
        "particles": "results/raw/particles.csv",
        "split": f"results/curation/split_{method}.csv",
        "root": raw_root(),
    }


def analyse_micrographs_inputs(wildcards):
    """The best model, the detector calibrated for it and its split method's test images; true
    sizes of synthetic data."""
    inputs = {
        **calibrate_micrographs_inputs(wildcards),
        "detector": f"results/micrographs/detector/{experiment_folder(wildcards)}.json",
    }
    if config["dataset"]["source"] == "synthetic":
        inputs["sizes"] = "results/raw/synthetic_sizes.csv"
    return inputs


def micrographs_targets():
    """Each analysed experiment's tables, figures and evaluation."""
    targets = []
    for f in micrograph_experiments():
        folder = f"results/micrographs/{f}"
        targets += [
            f"{folder}/summary.csv",
            f"{folder}/sizes.png",
            f"{folder}/evaluation.csv",
            f"{folder}/metrics.json",
        ]
    return targets


def audit_targets():
    """The audit's report; it runs after everything else (see audit_inputs)."""
    return [
        "results/audit/audit_report.md",
        "results/audit/audit_report.html",
        "results/audit/audit.json",
    ]


def audit_inputs(wildcards):
    """Every other stage's targets: the audit runs last, on finished results."""
    return (
        data_targets()
        + curation_targets()
        + patches_targets()
        + training_targets()
        + micrographs_targets()
        + report_tables_targets()
    )


def accepted_leaks_input(wildcards):
    """The reviewer's file of accepted leaks when config names one (editing it re-runs the audit)."""
    path = config["audit"]["accepted_leaks"]
    return [path] if path else []


def all_inputs(wildcards):
    """The default target: each stage contributes its own list."""
    return (
        data_targets()
        + curation_targets()
        + patches_targets()
        + training_targets()
        + micrographs_targets()
        + report_tables_targets()
        + audit_targets()
        + ["results/report/summary.html"]
    )


# Whatever the target, before any job: every error of the schema, one line each naming its key
# (a number YAML 1.1 reads as text named with how to write it), then what the schema cannot
# check (temvirus.configcheck: an
# empty dataset.local.path for dataset.source local, a real_examples folder that is not there
# (but the embedded default's), whole numbers written as floats, repeated
# experiments, an experiment of a split method the config does not build or below its model's
# input size, crop_px, diameters_nm of classes not classified, pairs of keys out of order), one
# line per problem. (micrographs.experiments not configured is refused only when the stage is
# built, by micrograph_experiments: the targets are not known while this file is parsed.) Then
# every mapping's keys in the schema's order, before the rule files read their params (the order
# in which config files name keys re-runs nothing).
SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
EMBEDDED = Path(workflow.basedir) / "config" / "config.yaml"
try:
    check_config_files(workflow.configfiles)
    check_schema(config, SCHEMA)
    validate(config, str(SCHEMA))  # Snakemake's, for its defaults
    check_config(config, SCHEMA, yaml.safe_load(EMBEDDED.read_text(encoding="utf-8")))
except ConfigError as exc:
    refuse(exc)
reorder_config(config, SCHEMA)
# as a shell would: "~/weights", "$SCRATCH/weights" (temvirus.configcheck refuses an unset variable)
config["weights"]["dir"] = str(shell_path(config["weights"]["dir"]))


# At most as many GPU jobs at once as this machine has GPUs, with or without a profile:
# the default of the machine-wide `gpu` resource, unless --resources (or a profile, as
# profiles/slurm does) sets it. Not on a cluster, whose scheduler hands out the GPUs of its
# nodes (Snakemake caps every job's resources at these limits).
if workflow.local_exec and "gpu" not in workflow.global_resources:
    workflow.register_resource("gpu", visible_gpus())


# Results of a whole run made with other settings than this config's: a run re-makes what the change
# touches, but `snakemake --report` before that would caption them with this config's (the demo-run note,
# the epochs, the seed), not those that made them. Compared: the front page's params, which are these
# settings (temvirus.provenance.params_drift); hardware keys such as training.threads are not among them.
if workflow.is_main_process and (
    drift := params_drift(
        "report_summary",
        {
            "configfiles": applied_configfiles(),
            "config": summary_settings(),
            "note": run_note(),
        },
    )
):
    shown = [key.removeprefix("config.") for key in drift]
    print(
        "Warning: results/ were made with other settings than the config given now (they differ in "
        f"{', '.join(shown[:8])}{f' and {len(shown) - 8} more' if len(shown) > 8 else ''}). Run the "
        "workflow to bring them up to date before `snakemake --report`, whose captions follow this config.",
        file=sys.stderr,
    )
