"""Evaluation, Table 2, Figs 3-4 and error tracing on a tiny trained model (and the default run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from conftest import PAPER, write_patch_split
from PIL import Image

from temvirus.baseline import baseline_split, block_means
from temvirus.evaluate import evaluate_experiment, prediction_table
from temvirus.experiments import experiment_folder, experiment_name, find_experiment, resolve_training
from temvirus.figures import error_tracing, paper_confusion_figure
from temvirus.metrics import read_confusion, summary, wilson_interval
from temvirus.tables import TABLE2_COLUMNS, write_table2
from temvirus.train import Settings, train_experiment

torch.set_num_threads(1)
CLASSES = ["Adenovirus", "Ebola", "Orf"]
CUSTOM = {"model": "custom", "init": "scratch", "method": "representative"}
EXPERIMENT = "custom-scratch-representative"  # CUSTOM's name (Table 2, metrics.json)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(split folder, best.pt) of a custom model trained 2 epochs on 48 px patches."""
    root = tmp_path_factory.mktemp("evaluate")
    split = root / "patches" / "representative"
    write_patch_split(split, CLASSES, {"train_augmented": 6, "validation": 3, "test": 4}, size=48)
    settings = Settings(epochs=2, batch_size=4, lr=1e-3, weight_decay=0.0, patience=5, seed=3)
    train_experiment(CUSTOM, split, root / "models" / "custom" / "scratch" / "representative", CLASSES, settings)
    return split, root / "models" / "custom" / "scratch" / "representative" / "best.pt"


def check_evaluation(folder: Path, classes: list[str], patches_csv: Path) -> dict:
    """The evaluation outputs agree with each other and with the patch table."""
    predictions = pd.read_csv(folder / "predictions.csv")
    assert list(predictions.columns) == ["patch_id", "image_id", "true", "predicted"] + [f"prob_{c}" for c in classes]
    patches = pd.read_csv(patches_csv).set_index("patch_id")
    assert (patches.loc[predictions["patch_id"], "subset"] == "test").all()
    assert (patches.loc[predictions["patch_id"], "class"].to_numpy() == predictions["true"].to_numpy()).all()
    probs = predictions[[f"prob_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (np.array(classes)[probs.argmax(axis=1)] == predictions["predicted"].to_numpy()).all()
    confusion = read_confusion(folder / "confusion.csv")
    assert list(confusion.index) == classes
    counts = pd.crosstab(predictions["true"], predictions["predicted"]).reindex(
        index=classes, columns=classes, fill_value=0
    )
    assert np.array_equal(confusion.to_numpy(), counts.to_numpy())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n_test"] == len(predictions) == confusion.to_numpy().sum()
    for key, value in summary(confusion.to_numpy()).items():
        assert metrics[key] == pytest.approx(value, abs=1e-12)
    assert {c: metrics["per_class"][c]["support"] for c in classes} == dict(zip(classes, confusion.sum(axis=1)))
    correct = int(np.trace(confusion.to_numpy()))
    assert (metrics["accuracy_ci_low"], metrics["accuracy_ci_high"]) == pytest.approx(
        wilson_interval(correct, metrics["n_test"])
    )
    assert metrics["accuracy_ci_low"] <= metrics["accuracy"] <= metrics["accuracy_ci_high"]
    assert metrics["chance"] == pytest.approx(1 / len(classes))
    table = pd.read_csv(folder / "per_class.csv")
    assert table["class"].tolist() == classes and table["support"].tolist() == confusion.sum(axis=1).tolist()
    for column, key in (("precision", "precision_macro"), ("recall", "recall_macro"), ("f1", "f1_macro")):
        assert table[column].mean() == pytest.approx(metrics[key], abs=1e-5)
    # recall of a class = its correctly predicted share, from the predictions themselves
    for cls in classes:
        mine = predictions[predictions["true"] == cls]
        assert table.set_index("class").loc[cls, "recall"] == pytest.approx((mine["predicted"] == cls).mean(), abs=1e-6)
    assert Image.open(folder / "confusion.png").format == "PNG"
    return metrics


def test_evaluation_outputs_are_consistent(trained, tmp_path):
    split, best = trained
    metrics = evaluate_experiment(best, split, tmp_path, "representative", batch_size=5)
    assert check_evaluation(tmp_path, CLASSES, split / "patches.csv") == json.loads(
        (tmp_path / "metrics.json").read_text()
    )
    assert metrics["n_test"] == 12 and metrics["experiment"] == EXPERIMENT and metrics["tta"] is False
    capped = evaluate_experiment(best, split, tmp_path / "capped", "representative", max_per_class=2)
    assert capped["n_test"] == 6 and all(v["support"] == 2 for v in capped["per_class"].values())


def test_test_time_augmentation_is_invariant_to_flips_and_rotations(trained, tmp_path):
    split, best = trained
    turned = tmp_path / "turned"
    shutil.copytree(split, turned)
    np.save(turned / "test.npy", np.rot90(np.load(split / "test.npy"), 1, axes=(1, 2)).transpose(0, 2, 1))
    probs = {}
    for name, folder in (("plain", split), ("turned", turned)):
        for tta in (False, True):
            evaluate_experiment(best, folder, tmp_path / f"{name}_{tta}", "representative", tta=tta)
            probs[name, tta] = (
                pd.read_csv(tmp_path / f"{name}_{tta}" / "predictions.csv").filter(like="prob_").to_numpy()
            )
    np.testing.assert_allclose(probs["plain", True], probs["turned", True], atol=1e-5)
    assert not np.allclose(probs["plain", False], probs["turned", False], atol=1e-4)


def test_table2_puts_the_papers_row_beside_ours_and_the_baselines_on_their_own_lines(trained, tmp_path):
    split, best = trained
    evaluate_experiment(best, split, tmp_path / EXPERIMENT, "representative")
    other = json.loads((tmp_path / EXPERIMENT / "metrics.json").read_text())
    other.update(experiment="efficientnet_b0-scratch-bad", model="efficientnet_b0", method="bad")
    (tmp_path / "other.json").write_text(json.dumps(other))
    baseline = baseline_split(split, CLASSES, tmp_path / "baseline-representative" / "metrics.json", block=8)
    note = "demo run: synthetic data, 2 epochs: not a reproduction"
    frame = write_table2(
        [tmp_path / EXPERIMENT / "metrics.json", tmp_path / "other.json"],
        PAPER / "table2_performance.csv",
        tmp_path / "table2.csv",
        tmp_path / "table2.md",
        [tmp_path / "baseline-representative" / "metrics.json"],
        note,
    )
    table = pd.read_csv(tmp_path / "table2.csv")
    assert list(table.columns) == TABLE2_COLUMNS
    assert table["experiment"].tolist() == [  # by split method, models before baselines
        "efficientnet_b0-scratch-bad",
        EXPERIMENT,
        "baseline-representative/logistic_regression",
        "baseline-representative/majority",
    ]
    assert table["kind"].tolist() == ["model", "model", "baseline", "baseline"]
    ours = table.set_index("experiment").loc[EXPERIMENT]
    assert (ours["model"], ours["training"], ours["paper_accuracy"], ours["paper_trainable_params"]) == (
        "Custom",
        "scratch",
        0.901,
        14651401,
    )
    assert (
        ours["accuracy"] == round(other["accuracy"], 3) and ours["n_test"] == 12 and ours["chance"] == round(1 / 3, 3)
    )
    assert ours["accuracy_ci_low"] <= ours["accuracy"] <= ours["accuracy_ci_high"]
    assert (
        table.set_index("experiment")
        .loc["efficientnet_b0-scratch-bad", ["paper_accuracy", "paper_f1_macro"]]
        .isna()
        .all()
    )
    majority = table.set_index("experiment").loc["baseline-representative/majority"]
    assert majority["accuracy"] == round(1 / 3, 3) and majority["n_test"] == baseline["n_test"] == 12
    assert majority[[c for c in TABLE2_COLUMNS if c.startswith("paper_")]].isna().all()
    md = (tmp_path / "table2.md").read_text()
    assert md.splitlines()[0] == f"**{note}**"
    assert "| model | training | split method | test patches |" in md
    assert f"| Custom | scratch | representative | 12 | 0.333 | {int(ours['trainable_params']):,} (14,651,401) |" in md
    assert "(0.893)" in md
    assert f"{ours['accuracy']:.3f} [{ours['accuracy_ci_low']:.3f}, {ours['accuracy_ci_high']:.3f}] (0.901)" in md
    assert "| EfficientNetB0 | scratch | bad |" in md and "(-)" in md
    assert "| *baseline: always the majority class (Adenovirus)* | - | representative | 12 | 0.333 |" in md
    assert "| *baseline: logistic regression on 8x8 px block means* | - | representative |" in md
    assert len(frame) == 4
    write_table2(
        [tmp_path / EXPERIMENT / "metrics.json"],
        PAPER / "table2_performance.csv",
        tmp_path / "t.csv",
        tmp_path / "t.md",
    )
    assert (tmp_path / "t.md").read_text().startswith("Table 2: this run (paper)")  # the paper's method: no note


def test_block_means_of_standardised_patches():
    x = np.zeros((2, 4, 4), dtype=np.uint16)
    x[0, :2, :2] = 10  # one bright quarter
    x[1, :, 2:] = 7  # bright right half
    means = block_means(x, 2)
    assert means.shape == (2, 4)
    z = (10 - 2.5) / np.sqrt(0.25 * 7.5**2 + 0.75 * 2.5**2)
    assert means[0, 0] == pytest.approx(z)
    np.testing.assert_allclose(means[0, 1:], -z / 3)
    np.testing.assert_allclose(means[1], [-1, 1, -1, 1])
    np.testing.assert_allclose(block_means(x, 4), 0, atol=1e-12)  # a whole standardised patch averages to 0
    with pytest.raises(ValueError, match="block 3 px does not divide the 4x4 px patches"):
        block_means(x, 3)


def test_baselines_learn_the_coarse_layout_and_predict_the_majority(tmp_path):
    """Discs of 3 radii are told apart by block means; the majority class is the largest train class."""
    split = tmp_path / "representative"
    write_patch_split(split, CLASSES, {"train_augmented": 24, "train": 6, "validation": 2, "test": 10}, size=64, seed=5)
    table = pd.read_csv(split / "patches.csv")
    drop = table[(table["subset"] == "train") & (table["class"] == "Adenovirus")].index[:3]
    table.drop(index=drop).to_csv(split / "patches.csv", index=False)  # Adenovirus: 3 train patches, others 6
    record = baseline_split(split, CLASSES, tmp_path / "out" / "metrics.json", block=16)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == record
    assert (record["method"], record["n_train"], record["n_test"], record["chance"]) == (
        "representative",
        72,
        30,
        pytest.approx(1 / 3),
    )
    lr, majority = record["baselines"]
    assert lr["name"] == "logistic_regression" and lr["accuracy"] >= 0.9 and lr["trainable_params"] == 3 * 16 + 3
    assert majority["description"] == "always the majority class (Ebola)"  # tie with Orf: first in class order
    assert majority["accuracy"] == pytest.approx(1 / 3) and majority["recall_macro"] == pytest.approx(1 / 3)
    for b in record["baselines"]:
        assert b["accuracy_ci_low"] <= b["accuracy"] <= b["accuracy_ci_high"]
    capped = baseline_split(split, CLASSES, tmp_path / "capped.json", block=16, max_test_per_class=4, seed=1)
    assert capped["n_test"] == 12
    with pytest.raises(ValueError, match="block 24 px does not divide"):
        baseline_split(split, CLASSES, tmp_path / "bad.json", block=24)
    assert not (tmp_path / "bad.json").exists()


def test_paper_confusion_figure(trained, tmp_path):
    split, best = trained
    evaluate_experiment(best, split, tmp_path, "representative")
    paper_confusion_figure(
        tmp_path / "confusion.csv",
        PAPER / "fig3_confusion_custom.csv",
        tmp_path / "fig3.png",
        "Fig 3",
        "demo run: synthetic data: not a reproduction",
    )
    with Image.open(tmp_path / "fig3.png") as png, Image.open(tmp_path / "confusion.png") as single:
        # ours beside the paper's (2 columns), counts above row-normalised (2 rows)
        assert 0.8 < png.width / png.height < 1.2 and png.width > 1.8 * single.width
        assert single.height > 1.8 * single.width


def test_error_tracing_counts_and_draws_the_worst_images(trained, tmp_path):
    split, best = trained
    evaluate_experiment(best, split, tmp_path, "representative")
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    # a wrong prediction on one image for certain, so there is something to trace
    predictions.loc[predictions["image_id"] == "img_Ebola_test_1", "predicted"] = "Orf"
    predictions.to_csv(tmp_path / "predictions.csv", index=False)
    raw = tmp_path / "raw"
    rows = []
    for image_id in sorted(predictions["image_id"].unique()):
        path = Path("test") / image_id.split("_")[1] / f"{image_id}.tif"
        (raw / path).parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(raw / path, np.random.default_rng(0).integers(0, 4000, (300, 400)).astype(np.uint16))
        rows.append({"image_id": image_id, "path": str(path), "pixel_size_nm": 2.0})
    pd.DataFrame(rows).to_csv(tmp_path / "images.csv", index=False)

    per_image = error_tracing(
        tmp_path / "predictions.csv",
        split / "patches.csv",
        tmp_path / "images.csv",
        raw,
        tmp_path / "errors.csv",
        tmp_path / "errors.png",
        CLASSES,
        n_images=2,
    )
    table = pd.read_csv(tmp_path / "errors.csv")
    wrong = predictions.assign(w=predictions["true"] != predictions["predicted"]).groupby("image_id")["w"].sum()
    assert table.set_index("image_id")["n_misclassified"].to_dict() == wrong.to_dict()
    assert table["n_misclassified"].is_monotonic_decreasing and table["n_patches"].sum() == len(predictions)
    row = table.set_index("image_id").loc["img_Ebola_test_1"]
    assert row["n_misclassified"] == 2 and row["predicted_as"] == "Orf:2" and row["fraction_misclassified"] == 1.0
    assert len(per_image) == len(table)
    assert Image.open(tmp_path / "errors.png").format == "PNG"

    without = [r for r in rows if r["image_id"] != "img_Ebola_test_1"]
    pd.DataFrame(without).to_csv(tmp_path / "images.csv", index=False)
    with pytest.raises(ValueError, match="images.csv: test image img_Ebola_test_1 .* is not in the image table"):
        error_tracing(
            tmp_path / "predictions.csv",
            split / "patches.csv",
            tmp_path / "images.csv",
            raw,
            tmp_path / "e2.csv",
            tmp_path / "e2.png",
            CLASSES,
            n_images=len(rows),
        )


@pytest.mark.slow
def test_default_workflow_trains_evaluates_and_tabulates(default_run):
    """The default config's experiments produce every training-stage output, consistently."""
    import yaml

    config = yaml.safe_load((default_run / "config" / "config.yaml").read_text())
    classes = config["classes"]["classification"]
    for entry in config["experiments"]:
        folder = experiment_folder(entry)
        model_dir = default_run / "results" / "models" / folder
        assert all((model_dir / f).is_file() for f in ("best.pt", "last.pt", "metrics.csv", "curve.png"))
        assert torch.load(model_dir / "resume" / "ckpt.pt", weights_only=True)["finished"]  # kept: final state
        history = pd.read_csv(model_dir / "metrics.csv")
        assert (
            1
            <= len(history)
            <= resolve_training(config["training"], find_experiment(config["experiments"], entry))["epochs"]
        )
        patches_csv = default_run / "results" / "patches" / entry["method"] / "patches.csv"
        metrics = check_evaluation(default_run / "results" / "evaluation" / folder, classes, patches_csv)
        assert (metrics["model"], metrics["init"], metrics["method"]) == (
            entry["model"],
            entry["init"],
            entry["method"],
        )
        assert (default_run / "results" / "evaluation" / folder / "errors.png").is_file()
    names = [experiment_name(e) for e in config["experiments"]]
    table = pd.read_csv(default_run / "results" / "tables" / "table2.csv")
    assert sorted(table.loc[table["kind"] == "model", "experiment"]) == sorted(names)
    methods = sorted({e["method"] for e in config["experiments"]})
    baselines = table[table["kind"] == "baseline"]
    assert sorted(set(baselines["method"])) == methods and len(baselines) == 2 * len(methods)
    for method in methods:  # the baselines score the same test patches as the models of their split method
        record = json.loads((default_run / "results" / "evaluation" / "baseline" / method / "metrics.json").read_text())
        assert set(table.loc[table["method"] == method, "n_test"]) == {record["n_test"]}
    markdown = (default_run / "results" / "tables" / "table2.md").read_text()
    assert markdown.startswith("**demo run: synthetic data, ")  # the default is not the paper's method
    fig3 = default_run / "results" / "figures" / "fig3_confusion_custom.png"
    assert fig3.is_file() == ("custom-scratch-representative" in names)


def test_predictions_name_the_class_of_the_highest_probability_as_written():
    """A near-uniform model (1 epoch) gave two classes 3e-7 apart: written to 6 decimals they
    were equal, and the file named the second while its own probabilities named the first
    (the CI run of 2026-12-05). The prediction is now the argmax of the probabilities as
    written, so predictions.csv reproduces its `predicted` column (and the accuracy)."""
    classes = ["RiftValley", "Rotavirus", "Orf"]
    probs = np.array([[0.4181931, 0.4181934, 0.1636135], [0.2, 0.5, 0.3]])
    table = pd.DataFrame({"patch_id": ["p0", "p1"], "image_id": ["i0", "i1"]})
    frame, predicted = prediction_table(table, ["Rotavirus", "Rotavirus"], probs, classes)
    written = frame[[f"prob_{c}" for c in classes]].to_numpy()
    assert frame["predicted"].tolist() == ["RiftValley", "Rotavirus"] and predicted.tolist() == [0, 1]
    assert (np.array(classes)[written.argmax(axis=1)] == frame["predicted"]).all()
    assert written[0, 0] == written[0, 1] == 0.418193
