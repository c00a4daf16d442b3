"""The configuration: bad values refused before any job (naming the key), and reruns that follow
what a change touches, nothing more (temvirus.configcheck, workflow/schemas/config.schema.yaml)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY_CLASSES, snakemake_cmd

from temvirus.configcheck import canonical_order, config_problems, integer_problems, key_path, schema_problems

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _dry_run(tmp_path: Path, overlay: dict, *args: str) -> subprocess.CompletedProcess:
    """A dry run of the default workflow with ``overlay`` on top of config/config.yaml."""
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    cmd = snakemake_cmd(
        tmp_path / "work", "-n", *args, "--configfile", str(REPO / "config" / "config.yaml"), str(path), ci=False
    )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


MICRO_OFF = {"micrographs": {"experiments": []}}

#: overlay -> what the refusal says (each a value that used to pass the parse and fail in a job,
#: or be silently ignored)
REFUSED = {
    "float_epochs": (
        {"training": {"epochs": {"scratch": 30.0, "imagenet": 4}}},
        ["training.epochs.scratch: 30.0 is a float where a whole number is needed; write 30"],
    ),
    "float_seed": ({"seed": 42.0}, ["seed: 42.0 is a float where a whole number is needed; write 42"]),
    "float_in_experiment": (
        {"experiments": [{"model": "small_cnn", "init": "scratch", "method": "representative", "batch_size": 16.0}]},
        ["experiments[0].batch_size: 16.0 is a float where a whole number is needed; write 16"],
    ),
    # a number YAML 1.1 reads as text: named, with how to write it, not "'3e-3' is not of type 'number'"
    "exponent_without_a_dot": (
        {"micrographs": {"lr": "3e-3"}},
        [
            "micrographs.lr: '3e-3' is text, not a number (YAML 1.1 reads an exponent as a number only "
            "after a dot and with its sign); write 3.0e-3, unquoted"
        ],
    ),
    "exponent_of_a_whole_number": ({"seed": "1e3"}, ["seed: '1e3' is text, not a number", "write 1000, unquoted"]),
    "quoted_number_in_an_experiment": (
        {"experiments": [{"model": "small_cnn", "init": "scratch", "method": "representative", "lr": "0.5"}]},
        [
            "experiments[0].lr: '0.5' is text, not a number (quoted in a config file, or nested in a --config value, "
            "whose leaves Snakemake reads as text); write 0.5, unquoted, in a config file (--configfile)"
        ],
    ),
    # NaN passes every minimum and maximum of the schema; it would switch off the test that reads it
    "nan_threshold": ({"overlap": {"min_ncc": float("nan")}}, ["overlap.min_ncc: nan is not a finite number"]),
    "nan_in_an_experiment": (
        {"experiments": [{"model": "small_cnn", "init": "scratch", "method": "representative", "lr": float("nan")}]},
        ["experiments[0].lr: nan is not a finite number"],
    ),
    # found by configcheck while the workflow is parsed, not in an input function (one line, no
    # InputFunctionException block)
    "local_source_without_a_path": (
        {"dataset": {"source": "local", "local": {"path": " "}}},
        ["\nError: config dataset.source is 'local' but dataset.local.path is empty\n"],
    ),
    "input_size_not_a_divisor": (
        {"training": {"input_size": 100}},
        ["Error: config training.input_size: 100 is not one of [32, 64, 128, 256, None]"],
    ),
    "input_size_below_the_model": (
        {"experiments": [{"model": "inception_v3", "init": "imagenet", "method": "representative"}], **MICRO_OFF},
        [
            "experiments[0] (inception_v3/imagenet/representative): model inception_v3 needs an input size "
            "of at least 75 px, training.input_size is 64"
        ],
    ),
    "repeated_experiment": (
        {
            "experiments": [
                {"model": "small_cnn", "init": "scratch", "method": "representative"},
                {"model": "small_cnn", "init": "scratch", "method": "representative", "epochs": 2},
            ]
        },
        ["experiments[1] (small_cnn/scratch/representative) repeats experiments[0]"],
    ),
    "small_cnn_from_imagenet": (
        {"experiments": [{"model": "small_cnn", "init": "imagenet", "method": "representative"}], **MICRO_OFF},
        ["Error: config experiments[0]: custom and small_cnn have no ImageNet weights (init scratch only)"],
    ),
    "experiment_lr_above_the_training_bound": (
        {"experiments": [{"model": "small_cnn", "init": "scratch", "method": "representative", "lr": 5}]},
        ["Error: config experiments[0].lr: 5 is greater than the maximum of 1"],
    ),
    "baseline_block_not_a_divisor": (
        {"evaluation": {"baseline_block_px": 48}},
        ["Error: config evaluation.baseline_block_px: 48 is not one of [1, 2, 4, 8, 16, 32, 64, 128, 256]"],
    ),
    "diameter_of_a_misspelt_class": (
        {"micrographs": {"diameters_nm": {"ebola": 80}}},
        ["Error: config micrographs.diameters_nm: 'ebola' is not one of ['Adenovirus', "],
    ),
    "diameter_of_a_class_not_classified": (
        {"micrographs": {"diameters_nm": {"Dengue": 50}}},
        ["micrographs.diameters_nm names ['Dengue'], not among classes.classification"],
    ),
    "crop_not_a_multiple": (
        {"micrographs": {"crop_px": 40}},
        ["micrographs.crop_px 40 is not a multiple of 16 (2**(len(micrographs.widths) - 1)"],
    ),
    "heat_map_coarser_than_the_smallest_particle": (
        {"micrographs": {"heat_nm": 20.0}},
        [
            "micrographs.heat_nm 20.0 shows Astrovirus (25 nm across) in 1.2 px: at least 2 px are needed "
            "(heat_nm at most 12.5)"
        ],
    ),
    "micrograph_model_unknown": (
        {"micrographs": {"experiments": [{"model": "foo", "init": "scratch", "method": "representative"}]}},
        ["Error: config micrographs.experiments[0].model: 'foo' is not one of ['custom', 'small_cnn'"],
    ),
    # values out of their key's range (the schema) ...
    "sigma_fraction_not_a_fraction": (
        {"micrographs": {"sigma_fraction": 50}},
        ["Error: config micrographs.sigma_fraction: 50 is greater than the maximum of 1"],
    ),
    "nms_fraction_above_one_diameter": (
        {"micrographs": {"nms_fractions": [0.5, 1.5]}},
        ["Error: config micrographs.nms_fractions[1]: 1.5 is greater than the maximum of 1"],
    ),
    "micrograph_lr_above_one": (
        {"micrographs": {"lr": 5}},
        ["Error: config micrographs.lr: 5 is greater than the maximum of 1"],
    ),
    "weight_decay_above_one": (
        {"training": {"weight_decay": 2}},
        ["Error: config training.weight_decay: 2 is greater than the maximum of 1"],
    ),
    "experiment_weight_decay_above_one": (
        {"experiments": [{"model": "small_cnn", "init": "scratch", "method": "representative", "weight_decay": 2}]},
        ["Error: config experiments[0].weight_decay: 2 is greater than the maximum of 1"],
    ),
    # ... and pairs of keys out of order, or a size too small for what it must hold (configcheck)
    "second_heat_pass_as_fine_as_the_first": (
        {"micrographs": {"large_heat_nm": 6.0}},
        ["micrographs.large_heat_nm 6.0 is not coarser than micrographs.heat_nm 6.0"],
    ),
    "second_heat_pass_finer_than_the_first": (
        {"micrographs": {"large_heat_nm": 3.0}},
        ["micrographs.large_heat_nm 3.0 is not coarser than micrographs.heat_nm 6.0"],
    ),
    "second_pass_keeps_particles_under_2_px": (
        {"micrographs": {"large_min_nm": 20.0}},
        ["micrographs.large_min_nm 20.0 keeps second-pass peaks of 1.1 px at micrographs.large_heat_nm 18.0"],
    ),
    "crop_bottleneck_of_1_px": (
        {"micrographs": {"crop_px": 8, "widths": [8, 16, 24, 32]}},
        [
            "micrographs.crop_px 8 is too small: it leaves the heat-map network's bottleneck 1 px wide",
            "crop_px at least 32 (a multiple of 8)",
        ],
    ),
    "crop_narrower_than_the_biggest_particle": (
        {"micrographs": {"crop_px": 32, "large_heat_nm": None}},
        [
            "micrographs.crop_px 32 is too small: Cowpox (270 nm across) is 45 px at micrographs.heat_nm 6.0",
            "crop_px at least 48 (a multiple of 16)",
        ],
    ),
    "overlap_coarse_cap_finer_than_the_pyramid": (
        {"overlap": {"max_coarse_nm": 1.0}},
        ["overlap.coarse_nm 2.0 and overlap.max_coarse_nm 1.0: coarse_nm must be at most max_coarse_nm"],
    ),
    "overlap_fine_check_coarser_than_the_coarse": (
        {"overlap": {"min_fine_nm": 4.0}},
        ["overlap.min_fine_nm 4.0 and overlap.coarse_nm 2.0: min_fine_nm must be at most coarse_nm"],
    ),
    "overlap_band_pass_empty": (
        {"overlap": {"lowpass_px": 12.0}},
        ["overlap.lowpass_px 12.0 and overlap.highpass_px 12.0: lowpass_px must be below highpass_px"],
    ),
    "overlap_lead_screen_above_the_screen": (
        {"overlap": {"min_screen_ncc": 0.8}},
        ["overlap.min_screen_ncc 0.8 and overlap.screen_ncc 0.7: min_screen_ncc must be at most screen_ncc"],
    ),
    # a typo was skipped: the figure drawn without the real examples
    "real_examples_not_there": (
        {"dataset": {"synthetic": {"real_examples": "/typo"}}},
        [
            "Error: config dataset.synthetic.real_examples: '/typo' is no such folder (from ",
            "give the raw-layout folder of real images shown in results/figures/synthetic_vs_real.png, or '' for none",
        ],
    ),
    "real_examples_a_file": (
        {"dataset": {"synthetic": {"real_examples": str(REPO / "README.md")}}},
        [f"dataset.synthetic.real_examples: '{REPO / 'README.md'}' is not a folder"],
    ),
    # a folder with no layout (the folder above one): every real tile of the figure "no example"
    "real_examples_no_layout": (
        {"dataset": {"synthetic": {"real_examples": str(REPO / "docs")}}},
        [f"dataset.synthetic.real_examples: '{REPO / 'docs'}' is no raw-layout folder: it holds no train"],
    ),
    # a traceback from Snakemake's job graph (NotADirectoryError) before; an unset variable made a folder '$NOPE'
    "weights_dir_a_file": (
        {"weights": {"dir": str(REPO / "README.md")}},
        [f"Error: config weights.dir: '{REPO / 'README.md'}' is a file, not a folder"],
    ),
    "weights_dir_unset_variable": (
        {"weights": {"dir": "$TEMVIRUS_SURELY_UNSET/weights"}},
        ["weights.dir: '$TEMVIRUS_SURELY_UNSET/weights' names an environment variable that is not set"],
    ),
    "real_examples_with_spaces": (
        {"dataset": {"synthetic": {"real_examples": "  "}}},
        ["dataset.synthetic.real_examples: '  ' is a path with spaces around it"],
    ),
    # only image_b is rescaled: a factor without its inverse finds a pair one way round only
    "fallback_scale_without_its_inverse": (
        {"overlap": {"fallback_scales": [0.8, 1.2]}},
        [
            "overlap.fallback_scales: 0.8 is given without its inverse 1.25 (1/0.8, within 1%): only the second "
            "image of a pair is rescaled",
            "overlap.fallback_scales: 1.2 is given without its inverse 0.833",
        ],
    ),
    # batch norm cannot normalise a batch of one patch where a feature map is 1x1 (a crash in training)
    "batch_of_one": (
        {"experiments": [{"model": "small_cnn", "init": "scratch", "method": "representative", "batch_size": 1}]},
        ["experiments[0].batch_size: 1 is less than the minimum of 2"],
    ),
    "scale_search_without_its_inverse": (
        {"overlap": {"scale_search": [0.97, 1.03, 0.94]}},
        ["overlap.scale_search: 0.94 is given without its inverse 1.06 (1/0.94, within 1%)"],
    ),
    # every pair rejected at the fine check: overlap removal claimed no overlap, re-imaged fields leaked
    "tiles_that_no_field_holds": (
        {"overlap": {"tile_px": 300}},
        ["overlap.tile_px 300 and overlap.min_tiles 4: a whole field at the fine check (512 px: max_side_px x"],
    ),
    # an unquoted off is YAML 1.1's false: said so (was only "False is not one of ['bf16', 'fp16', 'off']")
    "amp_off_unquoted": (
        {"training": {"amp": False}},
        ["training.amp: False is not one of ['bf16', 'fp16', 'off'] (YAML 1.1 reads an unquoted off, on, yes or no"],
    ),
    # read by the last job only: Snakemake's MissingInputException naming no key, or the audit job failing
    # after the whole run on a file of other columns
    "accepted_leaks_not_there": (
        {"audit": {"accepted_leaks": "/typo/accepted.csv"}},
        ["Error: config audit.accepted_leaks: /typo/accepted.csv: file of accepted leaks not found"],
    ),
    "accepted_leaks_of_other_columns": (
        {"audit": {"accepted_leaks": str(REPO / "README.md")}},
        [f"Error: config audit.accepted_leaks: {REPO / 'README.md'}: missing columns ['method', 'patch_id'"],
    ),
    # scikit-learn's random_state (the baseline job) refused it, after curation
    "seed_above_32_bits": ({"seed": 2**32}, ["seed: 4294967296 is greater than the maximum of 4294967295"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_bad_value_is_refused_before_any_job_naming_its_key(tmp_path, case):
    overlay, expected = REFUSED[case]
    proc = _dry_run(tmp_path, overlay)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    for text in expected:
        assert text in out, out[-3000:]
    assert "Job stats" not in out and "InputFunctionException" not in out
    if any("is text, not a number" in text for text in expected):  # said why, not the schema's words
        assert "is not of type" not in out, out[-3000:]
    _assert_errors_alone(proc)


def test_numbers_yaml_1_1_reads_as_other_numbers_are_refused_naming_file_line_and_key(tmp_path):
    """``epochs: 030`` was read as 24 (octal), ``seed: 0042`` as 34, ``batch_size: 1:04`` as 64 (base 60), all
    accepted; quoted, they are text (refused by the schema as such)."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("training:\n  epochs: {scratch: 030}\n  batch_size: 1:04\nseed: 0042\n")
    cmd = snakemake_cmd(tmp_path / "work", "-n", "--configfile", str(REPO / "config" / "config.yaml"), str(overlay))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert errors == [
        f"Error: config {overlay}:2: training.epochs.scratch: 030 is read by YAML 1.1 as 24 (a leading zero makes "
        "it octal); write the number without a leading zero or colons",
        f"Error: config {overlay}:3: training.batch_size: 1:04 is read by YAML 1.1 as 64 (colons make it base 60); "
        "write the number without a leading zero or colons",
        f"Error: config {overlay}:4: seed: 0042 is read by YAML 1.1 as 34 (a leading zero makes it octal); write "
        "the number without a leading zero or colons",
    ]


#: a line of the config's refusal: ``Error: config `` and the key path it is about
ERROR_LINE = re.compile(r"Error: config [a-z_0-9]+(\.[a-z_0-9]+|\[\d+\])*[ :]")


def _assert_errors_alone(proc: subprocess.CompletedProcess) -> None:
    """The run failed with the refusal's lines, each naming its key, and no traceback."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out and 'File "' not in out and "Exception" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("Error")]
    assert errors and all(ERROR_LINE.match(line) for line in errors), out[-3000:]


def test_every_schema_problem_is_refused_one_line_each_naming_its_key(tmp_path):
    """Each of the schema's errors on a line of its own, the key first (Snakemake's ``validate``
    printed the first only, its key eight lines down under a dump of the schema, with a traceback)."""
    overlay = {
        "overlap": {"fallback_scales": 0.8, "min_ncc": "high"},
        "training": {"input_size": 100, "epochs_typo": 3},
        "micrographs": {"lr": "3e-3"},
    }
    proc = _dry_run(tmp_path, overlay)
    _assert_errors_alone(proc)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
    assert errors == [
        "Error: config micrographs.lr: '3e-3' is text, not a number (YAML 1.1 reads an exponent as a number only "
        "after a dot and with its sign); write 3.0e-3, unquoted, in a config file (--configfile)",
        "Error: config overlap.fallback_scales: 0.8 is not of type 'array'",
        "Error: config overlap.min_ncc: 'high' is not of type 'number'",
        "Error: config training.epochs_typo: no such key (a typo?); the keys here are "
        + ", ".join(SCHEMA["properties"]["training"]["properties"]),
        "Error: config training.input_size: 100 is not one of [32, 64, 128, 256, None]",
    ]


def test_schema_problems_name_each_key_and_none_for_the_default_config():
    config = default_config()
    assert schema_problems(config, SCHEMA) == []
    config["seed"] = -1
    config["experiments"][0].update(model="small_cnn", init="imagenet")
    del config["audit"]
    config["trainig"] = {"epochs": 3}
    config["training"]["lr"] = "0.01"  # --config training={lr: 0.01}: one value for a per-init mapping
    assert schema_problems(config, SCHEMA) == [
        "'audit' is a required property",
        "experiments[0]: custom and small_cnn have no ImageNet weights (init scratch only)",
        "seed: -1 is less than the minimum of 0",
        f"trainig: no such key (a typo?); the keys at the top are {', '.join(SCHEMA['properties'])}",
        "training.lr: '0.01' is one value where a mapping is needed: {scratch: ..., imagenet: ...}",
    ]


def test_every_configcheck_problem_is_refused_one_line_each_naming_its_key(tmp_path):
    """The new user's overlay: two problems beyond the schema, a line each (was a ValueError block
    with a traceback)."""
    overlay = {"overlap": {"fallback_scales": [0.5, 2.0, 0.8]}, "dataset": {"source": "local"}}
    proc = _dry_run(tmp_path, overlay)
    _assert_errors_alone(proc)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
    assert len(errors) == 2, errors
    assert errors[0] == "Error: config dataset.source is 'local' but dataset.local.path is empty"
    assert errors[1].startswith("Error: config overlap.fallback_scales: 0.8 is given without its inverse 1.25")


def test_a_micrograph_experiment_not_configured_is_refused_when_the_stage_is_built(tmp_path):
    """Refused for the default target (it builds the micrographs stage), before any job; a target
    outside the stage runs (an overlay replacing `experiments` can still download weights)."""
    overlay = {"micrographs": {"experiments": [{"model": "vgg16", "init": "scratch", "method": "representative"}]}}
    proc = _dry_run(tmp_path, overlay)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Job stats" not in out, out[-3000:]
    message = "\nError: micrographs.experiments: ['vgg16/scratch/representative'] are not configured experiments"
    assert message in out, out[-3000:]
    assert "InputFunctionException" not in out and "Traceback" not in out, out[-3000:]
    proc = _dry_run(tmp_path, overlay, "results/tables/table1.csv")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def test_a_local_path_that_is_not_there_is_refused_in_one_line_when_the_data_are_needed(tmp_path):
    """dataset.local.path (a typo, a folder without the raw layout or archives, a file or a folder's
    archive that is no zip or tar archive) is resolved when a
    target needs the data, not at parse time (its content manifest is hashed then); refused with
    one line naming the key and the path, no InputFunctionException block."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "real.yaml").write_text("dataset: {source: local}\n")  # the config given as the data
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "TEM virus dataset.zip").write_text("<!DOCTYPE html><html>Sign in</html>")
    for path, why in (
        ("/typo/data", "/typo/data: no such file or folder; give a raw-layout folder"),
        (
            str(tmp_path / "empty"),
            f"{tmp_path / 'empty'}: no raw-layout folder",
        ),
        # before: planned, then a traceback of the extraction job
        (str(tmp_path / "real.yaml"), f"{tmp_path / 'real.yaml'}: not a zip or tar archive"),
        (str(tmp_path / "saved"), f"{tmp_path / 'saved' / 'TEM virus dataset.zip'}: an HTML page"),
    ):
        proc = _dry_run(tmp_path, {"dataset": {"source": "local", "local": {"path": path}}})
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "Job stats" not in out, out[-3000:]
        assert f"\nError: dataset.local.path {path!r}: {why}" in out, out[-3000:]
        assert "InputFunctionException" not in out and "Traceback" not in out, out[-3000:]


def test_the_checks_pass_the_shipped_configs():
    from snakemake.utils import update_config

    default = default_config()
    paper = default_config()
    update_config(paper, yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    for config in (default, paper):
        assert integer_problems(config, SCHEMA) == [] and config_problems(config, default) == []


def test_real_examples_empty_the_embedded_default_or_unused_are_not_refused(tmp_path, monkeypatch):
    """'' means none; the embedded default's folder (the project's shared data) may be absent; with
    another dataset.source the figure is not built, and the key is not read."""
    monkeypatch.chdir(tmp_path)  # the embedded default's relative folder is not there
    embedded = default_config()
    config = default_config()
    assert config_problems(config, embedded) == []
    config["dataset"]["synthetic"]["real_examples"] = ""
    assert config_problems(config, embedded) == []
    (tmp_path / "layout" / "Test").mkdir(parents=True)  # a raw-layout folder (subset names in any case)
    config["dataset"]["synthetic"]["real_examples"] = str(tmp_path / "layout")
    assert config_problems(config, embedded) == []
    config["dataset"]["synthetic"]["real_examples"] = "/typo"
    config["dataset"]["source"] = "mendeley"
    assert config_problems(config, embedded) == []


def test_key_path_and_integer_problems_name_the_key():
    assert key_path(["training", "epochs", "scratch"]) == "training.epochs.scratch"
    assert key_path(["experiments", 1, "epochs"]) == "experiments[1].epochs"
    config = default_config()
    config["micrographs"]["max_test_images_per_class"] = 3.0  # an integer or null
    config["overlap"]["coarse_nm"] = 2  # a number: an int is fine
    config["dataset"]["synthetic"]["scale"] = 0.0  # a number out of its range, whole: the schema's to say
    config["micrographs"]["sigma_fraction"] = 0.0
    assert integer_problems(config, SCHEMA) == [
        "micrographs.max_test_images_per_class: 3.0 is a float where a whole number is needed; write 3"
    ]


def test_the_schemas_key_order_is_the_defaults():
    """canonical_order leaves config/config.yaml as written (its params, hence its finished jobs, are
    unchanged) and puts any other order into it."""
    config = default_config()
    ordered = canonical_order(config, SCHEMA)
    assert repr(ordered) == repr(config)
    shuffled = yaml.safe_load(yaml.safe_dump(config, sort_keys=True))
    assert repr(shuffled) != repr(config) and repr(canonical_order(shuffled, SCHEMA)) == repr(config)
    micro = {"micrographs": {"diameters_nm": {"Orf": 300, "Ebola": 80}}}
    assert list(canonical_order(micro, SCHEMA)["micrographs"]["diameters_nm"]) == ["Ebola", "Orf"]


# -- reruns after a finished run: a change re-runs what reads it, and only that ---------------


def _tiny_overlay(raw: Path) -> dict:
    return {
        "dataset": {"source": "local", "local": {"path": str(raw)}},
        "classes": {"classification": TINY_CLASSES},
        "split": {"methods": ["given"]},
        "augment": {"per_class": 8},
        "experiments": [
            {"model": "small_cnn", "init": "scratch", "method": "given", "epochs": 1},
            {"model": "custom", "init": "scratch", "method": "given", "epochs": 1},
        ],
        "micrographs": {"experiments": [{"model": "small_cnn", "init": "scratch", "method": "given"}], "steps": 20},
    }


@pytest.fixture(scope="module")
def finished_tiny_run(tiny_synthetic, tmp_path_factory):
    """The whole workflow on the tiny synthetic data (two experiments, micrographs of one), finished."""
    folder = tmp_path_factory.mktemp("finished_tiny_run")
    overlay = folder / "overlay.yaml"
    # keys written in the order a person might (not the schema's), as one file
    overlay.write_text(
        "micrographs:\n  steps: 20\n  experiments: [{method: given, init: scratch, model: small_cnn}]\n"
        + yaml.safe_dump({k: v for k, v in _tiny_overlay(tiny_synthetic / "raw").items() if k != "micrographs"})
    )
    cmd = snakemake_cmd(folder / "work", "--configfile", str(REPO / "config" / "config.yaml"), str(overlay), ci=False)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return folder


def _jobs_after(folder: Path, overlay: dict, *, default_first: bool = True) -> dict[str, int]:
    """rule -> jobs a dry run in the finished run's folder would run with ``overlay``."""
    path = folder / "overlay.yaml"  # the run's file (report_summary lists the config files given)
    path.write_text(yaml.safe_dump(overlay, sort_keys=True))  # keys sorted: another order than the run's
    files = [str(REPO / "config" / "config.yaml"), str(path)] if default_first else [str(path)]
    proc = subprocess.run(
        snakemake_cmd(folder / "work", "-n", "--configfile", *files, ci=False),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if "Job stats:" not in proc.stdout:
        assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]
        return {}
    table = proc.stdout.split("Job stats:")[1].split("\ntotal")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


@pytest.mark.slow
def test_the_same_config_in_another_key_order_or_file_layout_reruns_nothing(finished_tiny_run, tiny_synthetic):
    overlay = _tiny_overlay(tiny_synthetic / "raw")
    assert _jobs_after(finished_tiny_run, overlay) == {}
    # the overlay names keys first (--configfile OVERLAY alone; the Snakefile adds config.yaml):
    # only the front page, which lists the config files given, is made again
    assert _jobs_after(finished_tiny_run, overlay, default_first=False) == {"report_summary": 1, "all": 1}


#: what a change of classes.classification re-runs after a finished run of :func:`_tiny_overlay`
CLASS_LIST_JOBS = {
    "check_classes",
    "augment",
    "fig1_patch_examples",
    "micrograph_detector",
    "baseline_model",
    "train_model",
    "evaluate_model",
    "calibrate_micrographs",
    "analyse_micrographs",
    "error_tracing",
    "per_class_html",
    "table2",
    "table_html",
    "audit",
    "report_summary",
    "all",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # the report's figures only: not overlap removal and all after it
        ({"overlap": {"near_misses": 5}}, {"overlap_figures", "audit", "report_summary", "all"}),
        # the error-tracing figure only: the models are not re-evaluated
        ({"evaluation": {"error_images": 2}}, {"error_tracing", "audit", "report_summary", "all"}),
        # one more analysed experiment: the other's calibration and analysis stay
        (
            {
                "micrographs": {
                    "experiments": [{"model": m, "init": "scratch", "method": "given"} for m in ("small_cnn", "custom")]
                }
            },
            {"calibrate_micrographs": 1, "analyse_micrographs": 1, "audit": 1, "report_summary": 1, "all": 1},
        ),
        # the classifier's batch in the analysis: the detector is not re-fitted
        (
            {"micrographs": {"batch_size": 16}},
            {"calibrate_micrographs", "analyse_micrographs", "audit", "report_summary", "all"},
        ),
        # the classes the models see, one fewer or one the data lack: the list checked against the
        # raw tables again (check_classes, first), then what reads it; not curation nor patches
        ({"classes": {"classification": TINY_CLASSES[:-1]}}, CLASS_LIST_JOBS),
        ({"classes": {"classification": [*TINY_CLASSES, "Nipah"]}}, CLASS_LIST_JOBS),
    ],
    ids=[
        "near_misses",
        "error_images",
        "another_micrograph_experiment",
        "micrograph_batch_size",
        "one_class_fewer",
        "a_class_the_data_lack",
    ],
)
def test_a_change_reruns_only_what_reads_it(finished_tiny_run, tiny_synthetic, change, expected):
    overlay = _tiny_overlay(tiny_synthetic / "raw")
    for section, values in change.items():
        overlay[section] = {**overlay.get(section, {}), **values}
    jobs = _jobs_after(finished_tiny_run, overlay)
    if isinstance(expected, dict):
        assert jobs == expected
    else:
        assert set(jobs) == expected


def _run(workdir: Path, overlay: dict, *args: str) -> subprocess.CompletedProcess:
    """The workflow in ``workdir`` with ``overlay`` on top of config/config.yaml; ``args`` (targets,
    flags) before the config files."""
    path = workdir.parent / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    cmd = snakemake_cmd(workdir, *args, "--configfile", str(REPO / "config" / "config.yaml"), str(path), ci=False)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_a_class_the_data_lack_added_after_the_raw_tables_fails_first_naming_it(tiny_synthetic, tmp_path):
    """raw_tables checks classes.classification against the data, but is not re-run for a change of
    the list: with the raw tables made, a class the data lack added to it fails the next run at
    check_classes, naming the class and the classes found, before overlap removal starts (and
    before augment, fig1_patch_examples and micrograph_detector, which read the list)."""
    work = tmp_path / "work"
    overlay = _tiny_overlay(tiny_synthetic / "raw")
    proc = _run(work, overlay, "results/raw/images.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    overlay["classes"]["classification"] = [*TINY_CLASSES, "Nipah"]
    proc = _run(work, overlay)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    expected = (
        "results/raw/images.csv: classes.classification lists ['Nipah'], which the data do not hold; "
        f"classes found: {sorted(TINY_CLASSES)}"
    )
    assert f"rule check_classes failed: RawDataError: {expected}" in out, out[-3000:]
    assert expected in (work / "logs" / "data" / "check_classes.log").read_text()
    started = set(re.findall(r"^(?:local)?rule (\w+):$", out, re.MULTILINE))
    assert started == {"check_classes"}, out[-3000:]
    assert (work / "results" / "raw" / "images.csv").exists()  # the raw tables stay: they do not depend on it


@pytest.mark.slow
def test_the_real_examples_of_the_synthetic_figure_rerun_only_the_figure(tmp_path):
    """dataset.synthetic.real_examples is read by synthetic_vs_real_figure alone: changing it does not
    re-make the synthetic data (and every job after them)."""
    work = tmp_path / "work"
    overlay = {"dataset": {"synthetic": {"scale": 0.01}}}
    targets = ("results/raw/images.csv", "results/figures/synthetic_vs_real.png")
    proc = _run(work, overlay, *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    overlay["dataset"]["synthetic"]["real_examples"] = str(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "train").mkdir(parents=True)  # a raw-layout folder (configcheck)
    proc = _run(work, overlay, "-n", *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(re.findall(r"^(?:local)?rule (\w+):$", proc.stdout, re.MULTILINE)) == {"synthetic_vs_real_figure"}


def test_the_jobs_read_the_config_through_their_params():
    """Snakemake re-runs a job for a change of its params, never for a config key its script reads
    directly: only raw_tables and split read one (classes.classification, checked against the data and
    the subsets; their tables do not depend on it, and check_classes and augment, whose params hold it,
    check it again), and
    download_weights (weights.base_url: where a file comes from, not what it is; as a param a new
    mirror re-ran the job, which deleted the verified file first)."""
    readers = {
        path.name
        for path in (REPO / "workflow" / "scripts").glob("*.py")
        if re.search(r"\b(?:smk|snakemake)\.config\b", path.read_text())
    }
    assert readers == {"raw_tables.py", "split.py", "download_weights.py"}


def test_a_run_folder_without_the_papers_tables_is_refused_in_one_line_saying_what_to_link(tmp_path):
    """A run folder of its own (README: runs side by side) made without the link to the checkout's
    resources/paper failed with Snakemake's MissingInputException for table1, no hint why; now one
    line before any job names the file, the folder and the link to make."""
    import shutil

    cmd = snakemake_cmd(tmp_path / "work", "-n")
    paper = tmp_path / "work" / "resources" / "paper"
    paper.unlink()  # make_workdir linked it: a user who did not
    for missing in (
        "resources/paper/fig3_confusion_custom.csv, resources/paper/fig4_confusion_densenet201_transfer.csv, "
        "resources/paper/table1_dataset.csv, resources/paper/table2_performance.csv",
        "resources/paper/table2_performance.csv",  # a copy of the folder short of a file
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "MissingInputException" not in out and "Traceback" not in out, out[-3000:]
        assert f"Error: {missing} not found in the working directory {tmp_path / 'work'}" in out, out[-3000:]
        assert f"(ln -s {REPO / 'resources' / 'paper'} resources/paper;" in out, out[-3000:]
        shutil.copytree(REPO / "resources" / "paper", paper, dirs_exist_ok=True)
        (paper / "table2_performance.csv").unlink()
