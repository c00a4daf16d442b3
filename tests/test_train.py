"""Training: data loading, D4 on tensors, standardisation, reproducibility, early stopping, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, write_patch_split

from temvirus.augment import TRANSFORMS, apply_transform
from temvirus.seeding import derive_seed
from temvirus.train import (
    HISTORY_COLUMNS,
    Settings,
    compact_tensor,
    d4,
    load_checkpoint,
    load_subset,
    settings_from_config,
    standardise,
    train_experiment,
    train_from_config,
)

torch.set_num_threads(1)
CLASSES = ["Adenovirus", "Ebola", "Orf"]
TINY = Settings(epochs=3, batch_size=4, lr=1e-3, weight_decay=0.0, patience=10, seed=5)
CUSTOM = {"model": "custom", "init": "scratch", "method": "representative"}
SMALL = {"model": "small_cnn", "init": "scratch", "method": "representative"}


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("patches") / "representative"
    write_patch_split(folder, CLASSES, {"train_augmented": 6, "validation": 3, "test": 3}, size=48)
    return folder


def state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model_state"]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_an_experiment_is_its_three_parts_named_and_found_by_them():
    from temvirus.experiments import experiment_folder, experiment_key, experiment_name, find_experiment

    entry = {"model": "mobilenet_v2", "init": "imagenet", "method": "bad", "lr": 0.1}
    assert experiment_key(entry) == ("mobilenet_v2", "imagenet", "bad")
    assert experiment_name(entry) == "mobilenet_v2-imagenet-bad"
    assert experiment_folder(entry) == "mobilenet_v2/imagenet/bad"
    assert find_experiment([CUSTOM, entry], {"model": "mobilenet_v2", "init": "imagenet", "method": "bad"}) is entry
    with pytest.raises(ValueError, match="experiment custom/scratch/bad is not configured"):
        find_experiment([CUSTOM, entry], {**CUSTOM, "method": "bad"})


def test_the_config_schema_allows_the_packages_models_inits_and_methods():
    """The schema (YAML, so a copy) lists exactly the values the wildcards are constrained to."""
    import yaml

    from temvirus.experiments import INITS, MODELS
    from temvirus.split import METHODS

    full = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    schema = full["properties"]
    entry = schema["experiments"]["items"]["properties"]
    analysed = schema["micrographs"]["properties"]["experiments"]["items"]["properties"]
    assert entry["model"] == analysed["model"] == {"$ref": "#/$defs/model"}
    assert full["$defs"]["model"]["enum"] == list(MODELS)
    assert entry["init"]["enum"] == analysed["init"]["enum"] == list(INITS)
    assert entry["method"]["enum"] == analysed["method"]["enum"] == list(METHODS)


def test_settings_per_init_values_overrides_and_derived_seed():
    import yaml

    from temvirus.experiments import resolve_training

    training = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["training"]
    vgg16 = {"model": "vgg16", "init": "imagenet", "method": "bad", "lr": 0.123, "epochs": 7}
    scratch = resolve_training(training, CUSTOM)
    tuned = resolve_training(training, vgg16)
    a = settings_from_config(scratch, 42, CUSTOM)
    b = settings_from_config(tuned, 42, vgg16)
    assert (a.epochs, a.lr) == (training["epochs"]["scratch"], training["lr"]["scratch"])
    assert (b.epochs, b.lr, b.patience) == (7, 0.123, training["patience"]["imagenet"])
    assert a.seed != b.seed and a.seed == settings_from_config(scratch, 42, CUSTOM).seed
    assert a.seed == derive_seed(42, "train", "custom-scratch-representative")  # the name's stream, as before


def test_d4_elements_are_the_eight_transforms_of_the_augment_stage():
    patch = np.random.default_rng(0).integers(0, 65535, (1, 6, 6)).astype(np.uint16)
    ours = {d4(torch.from_numpy(patch.astype(np.int32)), torch.tensor([e])).numpy().tobytes() for e in range(8)}
    theirs = {np.ascontiguousarray(apply_transform(patch, t)).astype(np.int32).tobytes() for t in TRANSFORMS}
    assert len(ours) == 8 and ours == theirs
    batch = torch.arange(3 * 16).reshape(3, 4, 4)
    assert torch.equal(d4(batch, torch.zeros(3, dtype=torch.long)), batch)
    turned = d4(batch, torch.tensor([1, 0, 4]))  # per-patch elements
    assert torch.equal(turned[0], torch.rot90(batch[0], 1)) and torch.equal(turned[2], batch[2].flip(-1))


def test_standardisation_per_patch_and_compact_storage():
    gen = np.random.default_rng(1)
    patches = gen.integers(20000, 65535, (4, 16, 16)).astype(np.uint16)
    patches[3] = 40000  # a constant patch
    compact = compact_tensor(patches)
    assert compact.dtype == torch.int16
    x = standardise(compact)
    assert x.shape == (4, 1, 16, 16) and torch.isfinite(x).all()
    np.testing.assert_allclose(x[:3].mean(dim=(-2, -1)).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(x[:3].std(dim=(-2, -1), correction=0).numpy(), 1, atol=1e-5)
    assert torch.equal(x[3], torch.zeros_like(x[3]))
    direct = (patches[:3] - patches[:3].mean(axis=(1, 2), keepdims=True)) / patches[:3].std(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(x[:3, 0].numpy(), direct, atol=1e-4)
    assert compact_tensor(patches // 256).dtype == torch.uint8


def test_load_subset_caps_per_class_and_reports_bad_files(split_dir, tmp_path):
    x, y, table = load_subset(split_dir, "train_augmented", CLASSES, cap=2, seed=1)
    assert x.shape == (6, 48, 48) and x.dtype == np.uint16
    assert np.bincount(y).tolist() == [2, 2, 2] and list(table["class"]) == [CLASSES[i] for i in y]
    full = np.load(split_dir / "train_augmented.npy")
    assert np.array_equal(x, full[table["index"]])
    x, y, table = load_subset(split_dir, "validation", CLASSES[:2])  # other classes left out
    assert len(y) == 6 and set(table["class"]) == set(CLASSES[:2])

    with pytest.raises(ValueError, match=r"train_augmented.csv: no train_augmented patches of classes \['Nipah'\]"):
        load_subset(split_dir, "train_augmented", CLASSES + ["Nipah"])
    broken = tmp_path / "broken"
    write_patch_split(broken, CLASSES, {"train_augmented": 2, "validation": 1, "test": 1}, size=16)
    np.save(broken / "validation.npy", np.zeros((2, 16, 16), np.uint16))
    with pytest.raises(ValueError, match=r"validation.npy: expected 3 square patches"):
        load_subset(broken, "validation", CLASSES)


def test_training_writes_its_outputs_and_is_reproducible(split_dir, tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        train_experiment(CUSTOM, split_dir, out, CLASSES, TINY)
    a, b = runs
    assert sorted(p.name for p in a.iterdir()) == ["best.pt", "curve.png", "last.pt", "metrics.csv", "resume"]
    history = pd.read_csv(a / "metrics.csv")
    assert list(history.columns) == HISTORY_COLUMNS and history["epoch"].tolist() == [1, 2, 3]
    assert history["val_f1_macro"].between(0, 1).all() and (history["lr"] == TINY.lr).all()
    for name in ("best.pt", "last.pt", "curve.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    pd.testing.assert_frame_equal(
        history.drop(columns="seconds"), pd.read_csv(b / "metrics.csv").drop(columns="seconds")
    )
    model, meta = load_checkpoint(a / "best.pt")
    assert (
        meta["classes"] == CLASSES
        and meta["input_size"] == 48
        and meta["epoch"] == history["val_f1_macro"].idxmax() + 1
    )
    assert meta["trainable_params"] == sum(p.numel() for p in model.parameters())
    last = torch.load(a / "last.pt", weights_only=True)
    assert last["epoch"] == 3
    other_seed = tmp_path / "c"
    train_experiment(CUSTOM, split_dir, other_seed, CLASSES, replace(TINY, seed=6, epochs=1))
    assert not torch.equal(state(other_seed / "last.pt")["top.8.weight"], state(a / "last.pt")["top.8.weight"])


def test_train_from_config_trains_with_the_configs_settings_caps_and_threads(split_dir, tmp_path, caplog):
    """The rule's function: the resolved training dict gives the Settings, the caps and the threads."""
    import yaml

    from temvirus.experiments import experiment_name, resolve_training

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    entry = {**SMALL, "epochs": 1}
    training = {**resolve_training(config["training"], entry), "device": "cpu", "input_size": None}
    name = experiment_name(entry)
    try:
        with caplog.at_level("INFO", logger="temvirus.train"):
            train_from_config(
                entry, split_dir, tmp_path / "a", CLASSES, {**training, "max_train_per_class": 2}, 3, threads=2
            )
        assert torch.get_num_threads() == 2
        assert f"{name}: 6 training patches, 9 validation patches" in caplog.text  # 2 per class
        settings = settings_from_config(training, 3, entry)
        train_experiment(entry, split_dir, tmp_path / "b", CLASSES, settings, max_train_per_class=2)
    finally:
        torch.set_num_threads(1)
    assert_same_state(state(tmp_path / "a" / "last.pt"), state(tmp_path / "b" / "last.pt"))


def test_early_stopping_stops_after_patience_epochs_without_improvement(split_dir, tmp_path):
    frozen = replace(TINY, lr=0.0, epochs=10, patience=2)  # nothing changes: no improvement after epoch 1
    result = train_experiment(CUSTOM, split_dir, tmp_path, CLASSES, frozen)
    assert result.history["epoch"].tolist() == [1, 2, 3] and result.best_epoch == 1


def test_a_diverging_training_stops_with_an_error_and_writes_no_model(split_dir, tmp_path):
    """A learning rate far too high makes weights NaN within an epoch: before, training went on,
    NaN logits called every patch class 0, and best.pt kept an early epoch without a word."""
    from temvirus.models import TrainingDiverged

    for experiment in (SMALL, CUSTOM):
        out = tmp_path / experiment["model"]
        with pytest.raises(TrainingDiverged, match=r"training diverged in epoch 1: .* lower the learning rate"):
            train_experiment(experiment, split_dir, out, CLASSES, replace(TINY, lr=1e10))
        assert not (out / "best.pt").exists() and not (out / "metrics.csv").exists()


_CHILD = """
import sys, torch
torch.set_num_threads(1)
from temvirus.train import Settings, train_experiment
s = Settings(epochs=6, batch_size=4, lr=1e-3, weight_decay=0.0, patience=10, seed=5)
train_experiment({experiment!r}, sys.argv[1], sys.argv[2], {classes!r}, s)
"""


def test_a_killed_training_job_resumes_to_the_same_weights(split_dir, tmp_path, caplog):
    settings = replace(TINY, epochs=6)
    straight = tmp_path / "straight"
    train_experiment(CUSTOM, split_dir, straight, CLASSES, settings)

    killed = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(experiment=CUSTOM, classes=CLASSES), str(split_dir), str(killed)]
    )
    ckpt = killed / "resume" / "ckpt.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)  # like a preempted SLURM job
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert ckpt.exists() and not (killed / "best.pt").exists(), "the job was not killed mid-training"
    done = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= done < 6

    with caplog.at_level("INFO", logger="temvirus.train"):
        train_experiment(CUSTOM, split_dir, killed, CLASSES, settings)
    assert f"resuming from {ckpt} after epoch {done}" in caplog.text
    for name in ("best.pt", "last.pt"):
        assert_same_state(state(straight / name), state(killed / name))
    pd.testing.assert_frame_equal(
        pd.read_csv(straight / "metrics.csv").drop(columns="seconds"),
        pd.read_csv(killed / "metrics.csv").drop(columns="seconds"),
    )
    final = torch.load(ckpt, weights_only=True)  # the final state is kept, without the optimizer's
    assert final["finished"] and final["epoch"] == 6 and "optimizer" not in final


def test_a_second_process_training_the_same_experiment_is_refused_naming_the_first(split_dir, tmp_path):
    """After `kill -9` of Snakemake alone, its training job runs on, orphaned; the rerun's job
    resumed from the checkpoint the orphan was still writing, and both wrote the outputs (the
    orphan's log lines lost). The trainer now holds resume/lock: a second one is refused naming
    the first's pid, and goes ahead once that one is gone."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD.replace("epochs=6", "epochs=500").format(experiment=CUSTOM, classes=CLASSES),
            str(split_dir),
            str(tmp_path / "run"),
        ]
    )
    ckpt = tmp_path / "run" / "resume" / "ckpt.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    try:
        assert child.poll() is None, "the first trainer ended before the second one started"
        with pytest.raises(RuntimeError, match=rf"resume: pid {child.pid} on .* is training this experiment now"):
            train_experiment(CUSTOM, split_dir, tmp_path / "run", CLASSES, replace(TINY, epochs=500))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert not (tmp_path / "run" / "best.pt").exists()
    train_experiment(CUSTOM, split_dir, tmp_path / "run", CLASSES, replace(TINY, epochs=2))  # the lock went with it


def test_outputs_lost_after_training_are_written_again_without_training_again(split_dir, tmp_path, caplog):
    """A training job that finished after Snakemake was stopped (or a cluster job that outlived its
    scheduler) had its outputs taken for incomplete and removed by the next run, and the job, its
    resume state removed at its end, trained again from epoch 1. The final state is kept now: the
    outputs come back from it, byte for byte, with no epoch trained."""
    out = tmp_path / "run"
    train_experiment(CUSTOM, split_dir, out, CLASSES, TINY)
    first = {name: (out / name).read_bytes() for name in ("best.pt", "last.pt", "metrics.csv", "curve.png")}
    for name in first:
        (out / name).unlink()
    caplog.clear()  # the first run's epochs
    with caplog.at_level("INFO", logger="temvirus.train"):
        train_experiment(CUSTOM, split_dir, out, CLASSES, TINY)
    assert "training had ended; its outputs are written again from its final state" in caplog.text
    assert f"epoch 1/{TINY.epochs}" not in caplog.text
    assert {name: (out / name).read_bytes() for name in first} == first
    # a damaged state (here, garbage bytes) was a torch UnpicklingError traceback: now said, and trained again
    (out / "resume" / "ckpt.pt").write_bytes(b"not a checkpoint")
    for name in first:
        (out / name).unlink()
    caplog.clear()
    with caplog.at_level("INFO", logger="temvirus.train"):
        train_experiment(CUSTOM, split_dir, out, CLASSES, TINY)
    assert "resume/ckpt.pt cannot be read (" in caplog.text and f"epoch 1/{TINY.epochs}" in caplog.text
    for name in ("best.pt", "last.pt"):
        assert (out / name).read_bytes() == first[name], name


def test_a_resume_under_other_threads_starts_over_and_a_resume_is_recorded(split_dir, tmp_path, caplog):
    """Before: the resume checkpoint's fingerprint held the settings and data only, so a job killed on one CPU
    thread and rerun on two (or under other code or torch) went on from the first, and its weights matched no
    run its record described; the record did not say it was resumed either. Now the software is in the
    fingerprint (another starts over, naming what differs) and a resume is a note of the job's record."""
    from temvirus import provenance
    from temvirus.models import build_model
    from temvirus.train import fit, software_fingerprint

    x, y, _ = load_subset(split_dir, "train_augmented", CLASSES)
    args = (compact_tensor(x), torch.from_numpy(y), compact_tensor(x[:6]), torch.from_numpy(y[:6]))
    settings = replace(TINY, epochs=1)

    def run():
        fingerprint = {"software": software_fingerprint(settings)}
        return fit(build_model("custom", 3, input_size=48), *args, settings, 3, tmp_path, fingerprint)

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        run()  # leaves its checkpoint after epoch 1
        provenance.reset()
        with caplog.at_level("INFO", logger="temvirus.train"):
            torch.set_num_threads(2)
            assert run().history["epoch"].tolist() == [1]  # trained again
            assert "was written for another run (software.threads differ); starting over" in caplog.text
            assert "resumed_after_epoch" not in provenance._notes
            caplog.clear()
            run()  # the same threads: resumed after its one epoch
        assert f"resuming from {tmp_path / 'ckpt.pt'} after epoch 1" in caplog.text
        assert provenance._notes["resumed_after_epoch"] == 1
    finally:
        torch.set_num_threads(threads)
        provenance.reset()


def test_the_resume_checkpoint_holds_the_best_weights_with_their_epoch(split_dir, tmp_path):
    """One file, written atomically after each epoch, holds the training state and the best
    weights with their epoch and metric: a job killed at any moment cannot resume with one
    epoch's best weights beside another's metric (two files, written one after the other, could)."""
    from temvirus.models import build_model
    from temvirus.train import fit

    x, y, _ = load_subset(split_dir, "train_augmented", CLASSES)
    args = (compact_tensor(x), torch.from_numpy(y), compact_tensor(x[:6]), torch.from_numpy(y[:6]))
    result = fit(build_model("custom", 3, input_size=48), *args, replace(TINY, epochs=3), 3, resume_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert (ckpt["best_epoch"], ckpt["best_metric"]) == (result.best_epoch, result.best_metric)
    assert_same_state(ckpt["best_model"], result.best_state)


def test_a_checkpoint_of_other_settings_is_not_resumed(split_dir, tmp_path, caplog):
    from temvirus.models import build_model
    from temvirus.train import fit

    x, y, _ = load_subset(split_dir, "train_augmented", CLASSES)
    args = (compact_tensor(x), torch.from_numpy(y), compact_tensor(x[:6]), torch.from_numpy(y[:6]))
    fit(build_model("custom", 3, input_size=48), *args, replace(TINY, epochs=1), 3, resume_dir=tmp_path)
    assert (tmp_path / "ckpt.pt").exists()
    with caplog.at_level("INFO", logger="temvirus.train"):
        result = fit(
            build_model("custom", 3, input_size=48), *args, replace(TINY, epochs=1, lr=5e-4), 3, resume_dir=tmp_path
        )
    assert "was written for another run (settings.lr differ); starting over" in caplog.text
    assert result.history["epoch"].tolist() == [1]


def test_a_run_begun_on_other_imagenet_weights_is_not_resumed(split_dir, tmp_path, monkeypatch):
    """The resume fingerprint holds the ImageNet file's sha256: before, a killed job restarted after its
    weights file was replaced (fetched again from another mirror) continued the run begun on the first."""
    from torchvision.models import mobilenet_v2

    from temvirus import train
    from temvirus.io import sha256_file

    files = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        raw = tmp_path / f"raw{seed}.pth"
        torch.save(mobilenet_v2(weights=None).state_dict(), raw)  # as torchvision's ImageNet file, other values
        named = tmp_path / f"w{seed}" / f"mobilenet_v2-{sha256_file(raw)[:8]}.pth"  # a name carrying its hash
        named.parent.mkdir()
        raw.rename(named)
        files.append(named)
    fingerprints = []
    real_fit = train.fit
    monkeypatch.setattr(train, "fit", lambda *a, **k: fingerprints.append(k["fingerprint"]) or real_fit(*a, **k))
    entry = {"model": "mobilenet_v2", "init": "imagenet", "method": "representative"}
    for weights in files:
        train.train_experiment(
            entry, split_dir, tmp_path / "out", CLASSES, replace(TINY, epochs=1), weights_file=weights
        )
    assert [f["init_weights"] for f in fingerprints] == [sha256_file(f) for f in files]
    assert fingerprints[0] != fingerprints[1]  # so fit starts over (test_a_checkpoint_of_other_settings_...)


def default_settings(**changes) -> Settings:
    """The default config's training settings of its first experiment, with ``changes``."""
    import yaml

    from temvirus.experiments import resolve_training

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    entry = config["experiments"][0]
    settings = settings_from_config(resolve_training(config["training"], entry), 1, entry)
    return replace(settings, **{"device": "cpu", "input_size": None, **changes})


def bn_lag(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Largest (over BN layers) median relative gap between running variances and the exact ones on ``x``.

    The exact statistics are those of the same weights over all of ``x`` in training mode
    (cumulative average, ``momentum=None``): what evaluation should normalise with.
    """
    import copy

    exact = copy.deepcopy(model).train()
    for m in exact.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        exact(standardise(x))
    pairs = [(a, b) for a, b in zip(model.modules(), exact.modules()) if isinstance(a, torch.nn.BatchNorm2d)]
    return max(float(((a.running_var - b.running_var).abs() / b.running_var).median()) for a, b in pairs)


@pytest.mark.parametrize("model_name", ["small_cnn", "custom"])
def test_bn_statistics_at_evaluation_are_the_trained_ones(split_dir, model_name):
    """After a short run (30 steps) the running variances match the trained network's.

    With Keras' momentum 0.99 (PyTorch 0.01, the custom model's own) they are still mostly
    their initial values; the default config's bn_momentum fixes that.
    """
    from temvirus.models import build_model
    from temvirus.train import fit

    x, y, _ = load_subset(split_dir, "train_augmented", CLASSES)
    vx, vy, _ = load_subset(split_dir, "validation", CLASSES)
    lags = {}
    for momentum in (default_settings().bn_momentum, 0.01):
        torch.manual_seed(0)
        model = build_model(model_name, 3, input_size=48)
        settings = default_settings(epochs=5, patience=5, batch_size=3, bn_momentum=momentum)
        fit(model, compact_tensor(x), torch.from_numpy(y), compact_tensor(vx), torch.from_numpy(vy), settings, 3)
        lags[momentum] = bn_lag(model, compact_tensor(x))
    assert lags[default_settings().bn_momentum] < 0.5, lags  # batches of 3 (and custom's dropout): noisy, but unbiased
    assert lags[0.01] > 1.0, lags  # the check sees the old momentum's stale statistics


def test_area_downsample_averages_blocks_and_rejects_other_factors():
    from temvirus.train import area_downsample

    patches = np.arange(2 * 4 * 4, dtype=np.uint16).reshape(2, 4, 4)
    small = area_downsample(patches, 2)
    assert small.dtype == np.uint16 and small.shape == (2, 2, 2)
    assert small[0].tolist() == [
        [np.rint((0 + 1 + 4 + 5) / 4), np.rint((2 + 3 + 6 + 7) / 4)],
        [np.rint((8 + 9 + 12 + 13) / 4), np.rint((10 + 11 + 14 + 15) / 4)],
    ]
    assert area_downsample(patches, 4) is patches
    with pytest.raises(ValueError, match="input_size 3 does not divide the patch size 4"):
        area_downsample(patches, 3)


def test_a_model_trained_on_downsampled_patches_is_evaluated_on_the_same_size(tmp_path):
    from temvirus.evaluate import evaluate_experiment

    split = tmp_path / "representative"
    write_patch_split(split, CLASSES, {"train_augmented": 6, "validation": 3, "test": 3}, size=64)
    settings = default_settings(epochs=2, patience=2, batch_size=6, input_size=32)
    train_experiment(SMALL, split, tmp_path / "model", CLASSES, settings)
    _, meta = load_checkpoint(tmp_path / "model" / "best.pt")
    assert meta["input_size"] == 32
    try:
        metrics = evaluate_experiment(
            tmp_path / "model" / "best.pt", split, tmp_path / "evaluation", "representative", device="cpu", threads=2
        )
        assert torch.get_num_threads() == 2  # the rule's threads
    finally:
        torch.set_num_threads(1)
    assert metrics["n_test"] == 9
    with pytest.raises(ValueError, match=r"train_augmented.npy: input_size 24 does not divide the patch size 64"):
        train_experiment(SMALL, split, tmp_path / "bad", CLASSES, replace(settings, input_size=24))


def test_label_smoothing_trains_towards_the_smoothed_target(split_dir):
    """With ``label_smoothing`` e the loss is least when the model gives its class 1 - e + e/K
    (K classes): on patches it has learnt, its top probability settles near there, not at 1
    (a little above: the loss is taken with dropout on, the probabilities without)."""
    from temvirus.models import build_model
    from temvirus.train import fit, predict

    x, y, _ = load_subset(split_dir, "train_augmented", CLASSES)
    data = (compact_tensor(x), torch.from_numpy(y), compact_tensor(x), torch.from_numpy(y))
    top = {}
    for smoothing in (0.0, 0.3):
        settings = replace(TINY, epochs=60, batch_size=6, lr=3e-3, label_smoothing=smoothing, gpu_augment=False)
        torch.manual_seed(0)
        model = build_model("small_cnn", 3, input_size=48)
        fit(model, *data, settings, 3)  # the model keeps its last epoch's weights
        probs = predict(model, data[0], 6, torch.device("cpu"))
        assert (probs.argmax(1) == y).all(), smoothing  # learnt
        top[smoothing] = probs.max(1).mean()
    assert top[0.0] > 0.97, top
    assert 1 - 0.3 + 0.3 / 3 - 0.05 < top[0.3] < 0.9, top


def test_a_last_batch_of_one_patch_is_left_out_where_batch_norm_cannot_take_it(split_dir):
    """mobilenet_v2 at 16 px (resnet50 and others at 32) normalises a 1x1 feature map: batch norm in
    training mode refuses a batch of one patch there. 5 patches in batches of 4 train (4 a step,
    another patch left out each epoch); a batch size of 1 is refused, naming the setting."""
    from temvirus.models import build_model
    from temvirus.train import fit

    x, y, _ = load_subset(split_dir, "train_augmented", CLASSES, size=16)
    data = (compact_tensor(x[:5]), torch.from_numpy(y[:5]), compact_tensor(x[:3]), torch.from_numpy(y[:3]))
    result = fit(build_model("mobilenet_v2", 3, input_size=16), *data, replace(TINY, epochs=2), 3)
    assert len(result.history) == 2 and np.isfinite(result.history.train_loss).all()
    with pytest.raises(ValueError, match="training batch_size must be at least 2"):
        fit(build_model("mobilenet_v2", 3, input_size=16), *data, replace(TINY, batch_size=1), 3)
