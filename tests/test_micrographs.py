"""Whole-micrograph analysis (temvirus.micrographs): detection, measurement, matching, the stage, the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import PAPER, TINY_CLASSES, assert_stopped_by
from scipy.special import expit

from temvirus.heatmap import (
    Crop,
    HeatNet,
    Prepared,
    black_padding_box,
    heat_peaks,
    line_points,
    model_from_json,
    state_to_json,
    targets,
    train_heatnet,
)
from temvirus.io import write_json
from temvirus.micrographs import (
    PARTICLE_COLUMNS,
    Classifier,
    Options,
    analyse_files,
    analyse_image,
    analyse_micrographs,
    annotated_centres,
    best_threshold,
    calibrate,
    class_diameters,
    class_thresholds,
    default_detector,
    detect,
    detect_peaks,
    detection_counts,
    evaluate_image,
    fit_detector,
    link_chains,
    match,
    measure_diameters,
    read_detector,
    size_agreement,
    state_sha256,
    summarise_evaluation,
    suppress,
)
from temvirus.raw import read_dataset, read_image
from temvirus.rescale import region, rescale_image

TABLE1 = PAPER / "table1_dataset.csv"
#: the detector's settings with a short training (the default's 1500 steps take minutes)
FAST = Options(steps=300)

#: a hand-made micrograph: (x nm, y nm, diameter nm) of light discs with a dark rim
DISCS = [(300.0, 300.0, 80.0), (700.0, 420.0, 86.0), (450.0, 800.0, 74.0), (1050.0, 900.0, 80.0)]
PIXEL_NM = 2.0


def disc_image(discs=DISCS, size_nm=(1300, 1200), pixel_nm=PIXEL_NM, seed=0) -> np.ndarray:
    """uint16 image: stain background with noise, light discs with a dark rim (negative stain)."""
    h, w = int(size_nm[1] / pixel_nm), int(size_nm[0] / pixel_nm)
    yy, xx = (np.mgrid[:h, :w] + 0.5) * pixel_nm
    image = np.full((h, w), 1000.0)
    for x, y, d in discs:
        r = np.hypot(xx - x, yy - y)
        image += 600.0 * expit(-(r - d / 2) / 1.5)  # light body, sharp edge
        image -= 300.0 * np.exp(-(((r - d / 2 - 4) / 5) ** 2))  # dark rim of pooled stain
    image += np.random.default_rng(seed).normal(0, 40, image.shape)
    return np.clip(image, 0, 65535).astype(np.uint16)


def test_region_is_a_crop_of_the_mirrored_rescaled_image():
    image = np.random.default_rng(1).integers(0, 4000, (37, 41)).astype(np.uint16)
    full = np.pad(rescale_image(image, 1.7), 20, mode="reflect")
    got = region(image, 1.7, -5, -7, 60, 50)
    assert got.shape == (50, 60)
    assert np.allclose(got, full[20 - 7 : 20 - 7 + 50, 20 - 5 : 20 - 5 + 60])


def test_class_diameters():
    diameters = class_diameters(["Adenovirus", "RiftValley", "Astrovirus"], TABLE1)
    assert diameters == {"Adenovirus": 80.0, "RiftValley": 90.0, "Astrovirus": 25.0}
    assert class_diameters(["Adenovirus"], TABLE1, {"Adenovirus": 70})["Adenovirus"] == 70.0
    with pytest.raises(ValueError, match="Cowpox"):
        class_diameters(["Adenovirus"], TABLE1, {"Cowpox": 300})


def test_heat_targets_peak_at_the_centres_and_ridge_along_centre_lines():
    # two points: 20 px apart; the second is not an annotated centre (a ridge point): no peak
    heat, peak, size = targets(
        (40, 60), np.array([[10.5, 20.5], [30.2, 20.5]]), np.array([10.0, 20.0]), [True, False], 0.15
    )
    assert peak.sum() == 1 and peak[20, 10] and heat[20, 10] == 1.0
    assert heat[20, 30] == pytest.approx(np.exp(-(0.3**2) / (2 * 3.0**2)), rel=1e-5) and heat[20, 30] < 1
    assert size[20, 10] == pytest.approx(np.log(10.0)) and size[20, 30] == pytest.approx(np.log(20.0))
    assert heat[0, 59] == 0.0
    centres = pd.DataFrame(
        {
            "particle": [0, 1, 1, 1, 2, 2],
            "vertex": [0, 0, 1, 2, 0, 1],
            "x_nm": [0.0, 0, 100, 100, 500, 560],
            "y_nm": [0.0, 0, 0, 50, 0, 0],
        }
    )
    ridge = line_points(centres, 10.0)  # only the 3-vertex line: 10 + 5 points along its two segments
    assert len(ridge) == 15 and np.allclose(ridge[0], [5.0, 0.0]) and np.allclose(ridge[-1], [100.0, 45.0])


def test_heat_net_shapes_and_weights_round_trip():
    import torch

    torch.manual_seed(0)
    model = HeatNet((4, 8, 8)).eval()
    assert model.unit == 4
    x = torch.randn(2, 1, 24, 36)
    with torch.inference_mode():
        out = model(x)
        again = model_from_json(state_to_json(model), (4, 8, 8))(x)
    assert out.shape == (2, 2, 24, 36) and torch.equal(out, again)


def test_black_padding_is_left_out():
    import torch

    torch.manual_seed(0)
    model = HeatNet((4, 8, 8)).eval()
    image = disc_image()
    image[:, :150] = 0  # the left 300 nm padded black
    assert black_padding_box(image) == (0, image.shape[0], 150, image.shape[1])
    assert black_padding_box(disc_image()) is None
    prepared = Prepared.of(image, PIXEL_NM)
    assert prepared.mean == pytest.approx(image[:, 150:].mean(), rel=1e-9)
    assert prepared.std == pytest.approx(image[:, 150:].std(), rel=1e-9)
    # the padding filled with that mean in a copy of the image's own type, not a float image
    assert prepared.pixels.dtype == image.dtype and (prepared.pixels[:, :150] == round(prepared.mean)).all()
    found = heat_peaks(model, image, PIXEL_NM, 4.0, floor=0.0)  # an untrained net: peaks everywhere
    assert len(found) > 100 and ((found.score >= 0) & (found.score <= 1)).all() and (found.d_nm > 0).all()
    assert (found.x_nm - 300 >= 0.5 * found.d_nm - PIXEL_NM).all()  # to a pixel


def test_areas_clipped_to_black_inside_the_field_are_not_padding():
    """Stain pooled and clipped to the darkest value, inside the field or along part of a border,
    is content: the peaks beside it are kept, and the mean and s.d. are those of the whole image."""
    import torch

    torch.manual_seed(0)
    model = HeatNet((4, 8, 8)).eval()
    image = disc_image()
    image[200:350, 100:250] = 0  # 300 nm x 300 nm clipped to black inside the field
    image[:100, :60] = 0  # and a corner along part of two borders
    assert black_padding_box(image) is None
    prepared = Prepared.of(image, PIXEL_NM)
    assert prepared.box is None and prepared.mean == pytest.approx(image.mean(), rel=0.01)
    found = heat_peaks(model, image, PIXEL_NM, 4.0, floor=0.0)
    beside = found[found.x_nm.between(150, 550) & found.y_nm.between(350, 750)]
    assert len(beside) > 10  # the peaks in and next to the dark square are not dropped as padding


def test_diameters_within_ten_percent():
    image = disc_image()
    xy = np.array(DISCS)[:, :2] + 1.5  # a slightly off centre
    measured = measure_diameters(image, PIXEL_NM, xy, np.full(len(DISCS), 80.0), np.zeros(len(DISCS), bool))
    true = np.array(DISCS)[:, 2]
    assert np.all(np.abs(measured - true) / true < 0.1), measured


def test_matching_is_one_to_one_within_tolerance():
    found = np.array([[0.0, 0.0], [3.0, 0.0], [50.0, 50.0]])
    true = np.array([[1.0, 0.0], [100.0, 100.0]])
    assert match(found, true, 10.0) == [(0, 0)]  # one of the two near ones, the closer
    # as many pairs as possible: the greedy closest pair would leave one unmatched
    assert sorted(match(np.array([[0.0, 0.0], [6.0, 0.0]]), np.array([[4.0, 0.0], [-4.0, 0.0]]), 5.0)) == [
        (0, 1),
        (1, 0),
    ]
    assert match(np.zeros((0, 2)), true, 5.0) == []
    assert match(found, true, np.array([0.5, 10.0])) == []  # per-annotation tolerance
    assert detection_counts(2, 4, 5) == pytest.approx({"precision": 0.5, "recall": 0.4, "f1": 4 / 9})
    assert detection_counts(0, 0, 0)["f1"] == pytest.approx(1.0)


def test_evaluation_summary_by_hand():
    frame = pd.DataFrame(
        {
            "n_annotated": [4, 6],
            "n_found": [5, 3],
            "n_matched": [4, 3],
            "count_error": [1, -3],
            "relative_count_error": [0.25, 0.5],
            "correct": [True, False],
        }
    )
    metrics = summarise_evaluation(frame, pd.Series([0.05, 0.15, np.nan]))
    assert metrics["precision"] == pytest.approx(7 / 8) and metrics["recall"] == pytest.approx(0.7)
    assert metrics["count_mae"] == 2.0 and metrics["count_relative_error"] == pytest.approx(0.375)
    assert metrics["image_accuracy"] == 0.5 and metrics["median_diameter_error"] == pytest.approx(0.1)


def test_annotated_centres_and_filament_chains():
    particles = pd.DataFrame(
        {
            "particle": [0, 1, 1, 2, 2, 2],
            "vertex": [0, 0, 1, 0, 1, 2],
            "x": [10.0, 20, 30, 100, 150, 200],
            "y": [10.0, 0, 0, 50, 50, 50],
        }
    )
    centres = annotated_centres(particles)
    assert len(centres) == 5  # a point, a 2-point midpoint, 3 vertices
    assert ((centres.x == 25) & (centres.vertex == -1)).any()
    xy = np.array([[0.0, 0], [60, 0], [120, 0], [1000, 0], [500, 500]])
    chains = link_chains(xy, ["Ebola", "Ebola", "Ebola", "Ebola", "Rotavirus"], {"Ebola": 80.0}, 1.6)
    assert chains[0] == chains[1] == chains[2] != chains[3] and chains[4] == -1


def test_a_filament_is_one_particle_of_one_class_whatever_its_points_are_called():
    """A filament whose points the patch model calls Ebola in one place and Marburg in another was
    split into chains of each class, and counted as many particles as it has points. Now its
    points form one chain of the class of the larger weighted vote, counted once, as the
    annotation's centre line is in the evaluation."""
    from temvirus.micrographs import count_units, filament_classes

    classes = ["Ebola", "Marburg", "Rotavirus"]
    xy = np.array([[0.0, 0], [60, 0], [120, 0], [180, 0], [240, 0], [2000, 0], [1000, 1000]])
    called = ["Ebola", "Ebola", "Marburg", "Ebola", "Ebola", "Marburg", "Rotavirus"]
    chain = link_chains(xy, called, {"Ebola": 80.0, "Marburg": 80.0}, 1.6)
    assert len(set(chain[:5])) == 1 and chain[5] not in chain[:5] and chain[6] == -1
    probs = np.array(
        [[0.8, 0.2, 0], [0.7, 0.3, 0], [0.4, 0.6, 0], [0.9, 0.1, 0], [0.6, 0.4, 0], [0.3, 0.7, 0], [0, 0, 1]]
    )
    labels = filament_classes(chain, probs, np.ones(len(xy)), classes)
    assert [classes[i] for i in labels] == ["Ebola"] * 5 + ["Marburg", "Rotavirus"]
    assert count_units(chain) == 3  # two filaments and a round particle, not 7 points
    annotated = pd.DataFrame({"particle": [0, 0, 0, 1, 1], "vertex": [0, 1, 2, 0, 1], "x": [0, 50, 100, 0, 50.0]})
    annotated["y"] = [0.0, 0, 0, 500, 500]
    found = pd.DataFrame({"particle": range(3), "x_nm": [0.0, 50, 100], "y_nm": [0.0, 0, 0], "diameter_nm": 80.0})
    row, _ = evaluate_image(found.assign(chain=[0, 0, 0]), annotated, "Ebola", 1.0, {"Ebola": 80.0})
    assert (row["annotated_count"], row["found_count"], row["count_error"]) == (2, 1, -1)
    assert (row["n_annotated"], row["n_matched"]) == (4, 3)  # detection by vertex (a 2-point line: its midpoint)


def test_the_overlay_of_a_long_strip_is_a_figure_of_bounded_size():
    """A 40000x130 px micrograph made a 700x215,444 px overlay (5.3 GB of memory): the figure's
    height followed the image's aspect without a cap. Chain lines joined points in x+y order, across
    a U-shaped filament's gap; now along it (the chain's minimum spanning tree)."""
    from matplotlib.collections import LineCollection

    from temvirus.figures import micrograph_overlay

    arms = [[x, y] for y in (20.0, 180.0) for x in range(100, 601, 50)]  # a U: two arms joined at x = 600
    xy = np.array(arms + [[650.0, 100.0]])
    particles = pd.DataFrame({"x_nm": xy[:, 0], "y_nm": xy[:, 1], "class": "Marburg", "diameter_nm": 80.0})
    particles["chain"] = 0
    for shape in ((40000, 130), (130, 40000), (300, 300)):
        fig = micrograph_overlay(np.ones(shape, np.uint8), 1.0, particles, ["Marburg"], "t")
        width, height = fig.get_size_inches() * fig.dpi
        assert max(width, height) <= 760 and min(width, height) >= 200, (shape, width, height)
    segments = next(c for c in fig.axes[0].collections if isinstance(c, LineCollection)).get_segments()
    lengths = sorted(float(np.hypot(*(b - a))) for a, b in segments)
    assert len(segments) == len(xy) - 1 and lengths[-1] < 100  # no segment across the U's 160 nm gap
    # the legend counts the filament once (it said "Marburg (23)", its points), as summary.csv does
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["Marburg (1)"]
    from temvirus.figures import size_histograms

    sizes = size_histograms(particles.assign(image_id="x"), ["Marburg"], {"Marburg": 80.0})
    assert sizes.axes[0].get_title().startswith("Marburg: n=1,")  # one width per filament, not per point


def test_suppression_keeps_the_better_of_overlapping_candidates():
    cands = pd.DataFrame({"x_nm": [0.0, 20.0, 100.0], "y_nm": [0.0, 0.0, 0.0], "d_nm": [80.0, 25.0, 80.0]})
    assert list(suppress(cands, np.array([0.9, 0.95, 0.5]), 0.6)) == [1, 2]
    assert list(suppress(cands, np.array([0.99, 0.95, 0.5]), 0.6)) == [0, 2]


def _fake_checkpoint(path: Path, classes) -> Path:
    import torch

    from temvirus.models import build_model

    torch.manual_seed(0)
    model = build_model("small_cnn", len(classes), input_size=64)
    meta = {
        "experiment": "small_cnn-scratch-representative",
        "model": "small_cnn",
        "init": "scratch",
        "classes": list(classes),
    }
    torch.save({**meta, "input_size": 64, "model_state": model.state_dict(), "epoch": 1}, path)
    return path


@pytest.fixture(scope="module")
def tiny_stage(tiny_synthetic, tmp_path_factory):
    """The detector fitted on the tiny synthetic dataset's train/validation folders
    (``split_detector.json``), an untrained model of its classes, the detector calibrated for it
    on the validation folders (``detector.json``), and its test images analysed (folders as the
    subsets)."""
    work = tmp_path_factory.mktemp("micrographs")
    images, particles = read_dataset(tiny_synthetic / "raw")
    images = images.rename(columns={"folder_subset": "subset"})
    diameters = class_diameters(TINY_CLASSES, TABLE1)
    detector = fit_detector(images[images.subset != "test"], particles, tiny_synthetic / "raw", diameters, FAST)
    write_json(work / "split_detector.json", detector)  # as the workflow writes it (sorted keys)
    checkpoint = _fake_checkpoint(work / "best.pt", TINY_CLASSES)
    classifier = Classifier.load(checkpoint, "cpu")
    validation = images[images.subset == "validation"]
    calibrated = calibrate(validation, tiny_synthetic / "raw", classifier, detector, particles)
    write_json(work / "detector.json", calibrated)
    out = work / "analysis"
    metrics = analyse_micrographs(
        images[images.subset == "test"],
        tiny_synthetic / "raw",
        classifier,
        read_detector(work / "detector.json", classifier),
        out,
        annotations=particles,
        sizes=pd.read_csv(tiny_synthetic / "sizes.csv"),
    )
    return work, images, metrics


def test_size_agreement_by_hand():
    sizes = np.array([80.0, 25.0])
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5]])
    got = size_agreement(np.array([80.0, 80.0, 80.0, 20.0]), probs, sizes)
    assert np.allclose(got, [1.0, 25 / 80, 0.5 + 0.5 * 25 / 80, 0.5 * 20 / 80 + 0.5 * 20 / 25])


def test_a_class_whose_particles_are_mostly_blobs_gets_a_higher_threshold():
    # image A: two true particles of class 0 (score 0.3) and three blobs the model calls class 1
    # (0.5); image B: one true particle of class 1 (0.8). One threshold: best at <= 0.3 (F1 6/9);
    # per class: class 1 above 0.5 keeps B's particle and drops the blobs (F1 1)
    a = pd.DataFrame(
        {
            "x_nm": [0.0, 500, 1000, 1500, 2000],
            "y_nm": 0.0,
            "score": [0.3, 0.3, 0.5, 0.5, 0.5],
            "label": [0, 0, 1, 1, 1],
        }
    )
    b = pd.DataFrame({"x_nm": [0.0], "y_nm": [0.0], "score": [0.8], "label": [1]})
    kept = [(a, np.array([[0.0, 0.0], [500.0, 0.0]]), 40.0), (b, np.array([[5.0, 0.0]]), 40.0)]
    one = best_threshold(kept)
    assert one["threshold"] <= 0.3 and one["validation_f1"] == pytest.approx(2 / 3)
    thresholds, stats = class_thresholds(kept, 3, one["threshold"])
    assert thresholds[0] <= 0.3 < 0.5 < thresholds[1] <= 0.8 and stats["f1"] == 1.0
    assert thresholds[2] == one["threshold"]  # no particle of class 2: the one threshold


def test_particle_threshold_is_chosen_on_validation_for_one_model(tiny_synthetic, tiny_stage):
    work, images, _ = tiny_stage
    classifier = Classifier.load(work / "best.pt", "cpu")
    split_detector = read_detector(work / "split_detector.json")
    calibrated = read_detector(work / "detector.json", classifier)
    calibration = calibrated["calibration"]
    assert calibration["model_sha256"] == classifier.sha256 and len(classifier.sha256) == 64
    assert calibration["validation_images"] == (images.subset == "validation").sum()
    thresholds = calibrated["particle_thresholds"]
    assert sorted(thresholds) == sorted(classifier.classes) and all(0 < t < 1 for t in thresholds.values())
    # the thresholds per class start from the one threshold, and never do worse on validation
    assert 0 < calibration["one_threshold"]["f1"] <= calibration["f1"] + 1e-12 <= 1 + 1e-12
    assert {k: v for k, v in calibrated.items() if k not in ("particle_thresholds", "calibration")} == split_detector
    # every analysed particle: its particle score (heat score x size agreement) at or above its class's threshold
    table = pd.concat(pd.read_csv(p) for p in (work / "analysis" / "particles").glob("*.csv"))
    assert len(table) and (table.score >= table["class"].map(thresholds) - 1e-4).all()
    assert (table.score <= table.heat_score + 1e-4).all() and (table.score < table.heat_score - 1e-3).any()
    older = work / "older_detector.json"
    older.write_text(json.dumps({k: v for k, v in calibrated.items() if k != "particle_thresholds"}))
    with pytest.raises(ValueError, match="older version.*calibrate_micrographs"):
        read_detector(older, classifier)
    particles = read_dataset(tiny_synthetic / "raw")[1]
    with pytest.raises(ValueError, match="validation images only"):
        calibrate(images[images.subset != "train"], tiny_synthetic / "raw", classifier, split_detector, particles)
    fewer = {**split_detector, "diameters_nm": {c: 50.0 for c in TINY_CLASSES[1:]}}
    with pytest.raises(ValueError, match=TINY_CLASSES[0]):
        calibrate(images[images.subset == "validation"], tiny_synthetic / "raw", classifier, fewer, particles)


def test_detector_is_fitted_on_train_and_chosen_on_validation(tiny_synthetic, tiny_stage):
    work, images, _ = tiny_stage
    detector = read_detector(work / "detector.json")
    assert detector["threshold_from"] == "validation"
    assert detector["n_train_images"] == (images.subset == "train").sum()
    assert detector["n_train_crops"] == FAST.crops_per_image * detector["n_train_images"]
    assert detector["nms_fraction"] in FAST.nms_fractions and len(detector["training_loss"]) == 10
    assert 0 < detector["threshold"] < 1 and detector["validation_f1"] > 0.3
    with pytest.raises(ValueError, match="train and validation images only"):
        fit_detector(images, pd.DataFrame(), tiny_synthetic / "raw", class_diameters(TINY_CLASSES, TABLE1))


def test_stage_outputs_and_evaluation(tiny_stage):
    work, images, metrics = tiny_stage
    out = work / "analysis"
    test_ids = sorted(images.image_id[images.subset == "test"])
    assert sorted(p.stem for p in (out / "particles").glob("*.csv")) == test_ids
    assert sorted(p.stem for p in (out / "overlays").glob("*.png")) == test_ids
    tables = [pd.read_csv(p) for p in (out / "particles").glob("*.csv")]
    assert all(list(t.columns) == PARTICLE_COLUMNS for t in tables)
    table = pd.concat([t for t in tables if len(t)])
    assert table["class"].isin(TINY_CLASSES).all()
    # x is rounded to 0.01 px and x_nm to 0.01 nm: they agree within half of each (a fixed 0.02
    # nm failed where 0.005 px is 0.024 nm, at 4.8 nm/px)
    pixel = table.image_id.map(images.set_index("image_id").pixel_size_nm)
    assert ((table.x_nm - table.x * pixel).abs() <= 0.005 * pixel + 0.005 + 1e-9).all()
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary.image_id) == test_ids and {"call", "confidence", "count_Ebola"} <= set(summary.columns)
    # n_particles counts each filament once, as the raw tables do (it counted a filament's points); n_points those
    counts = summary.filter(like="count_").sum(axis=1)
    points = summary.image_id.map({p.stem: len(pd.read_csv(p)) for p in (out / "particles").glob("*.csv")})
    assert summary.n_particles.tolist() == counts.tolist() and summary.n_points.tolist() == points.tolist()
    assert (summary.n_particles < summary.n_points).any()  # a filament found as several points
    evaluation = pd.read_csv(out / "evaluation.csv")
    assert (evaluation.n_matched <= evaluation[["n_found", "n_annotated"]].min(axis=1)).all()
    assert metrics["f1"] > 0.3 and metrics["diameters_compared"] > 0
    assert metrics["median_diameter_error"] < 0.3  # an untrained model: filament widths taken for round particles
    assert (out / "sizes.png").stat().st_size > 0 and json.loads((out / "metrics.json").read_text())["images"] == 4


def test_peaks_are_found_tile_by_tile(tiny_synthetic, tiny_stage):
    work, images, _ = tiny_stage
    detector = read_detector(work / "detector.json")
    model = model_from_json(detector["state"], detector["options"]["widths"])
    row = images[images.subset == "test"].sort_values("image_id").iloc[0]
    pixels = read_image(tiny_synthetic / "raw" / row.path)
    heat_nm = detector["options"]["heat_nm"]
    whole = heat_peaks(model, pixels, row.pixel_size_nm, heat_nm, tile_px=4096)
    tiled = heat_peaks(model, pixels, row.pixel_size_nm, heat_nm, tile_px=48)  # margins: the net's reach
    assert len(whole) > 0 and ((whole.score >= 0.05) & (whole.score <= 1)).all() and (whole.d_nm > 0).all()
    assert len(tiled) == len(whole)
    pairs = match(tiled[["x_nm", "y_nm"]].to_numpy(), whole[["x_nm", "y_nm"]].to_numpy(), 0.01)
    assert len(pairs) == len(whole), (len(pairs), len(whole))
    assert np.allclose(np.sort(tiled.score), np.sort(whole.score), atol=1e-5)


def test_large_particles_come_from_a_second_coarser_pass(tiny_stage):
    """The second pass sees the image at large_heat_nm and adds its peaks of a (rescaled)
    diameter >= large_min_nm to the first pass's; large_heat_nm null gives the first pass alone."""
    work, _, _ = tiny_stage
    detector = read_detector(work / "detector.json")
    options = detector["options"]
    model = model_from_json(detector["state"], options["widths"])
    pixels = disc_image([(400.0, 400.0, 330.0), (900.0, 300.0, 80.0), (1000.0, 850.0, 80.0)], size_nm=(1300, 1200))
    one_pass = detect_peaks(pixels, PIXEL_NM, {**detector, "options": {**options, "large_heat_nm": None}})
    fine = heat_peaks(model, pixels, PIXEL_NM, options["heat_nm"])
    pd.testing.assert_frame_equal(one_pass, fine)
    # a detector fitted before the second pass existed (no such key) stays one pass, as fitted
    older = {k: v for k, v in options.items() if k not in ("large_heat_nm", "large_min_nm")}
    pd.testing.assert_frame_equal(detect_peaks(pixels, PIXEL_NM, {**detector, "options": older}), fine)
    factor = 3.0
    coarse = heat_peaks(model, pixels, PIXEL_NM, factor * options["heat_nm"])
    sizes = np.unique(coarse.d_nm * factor)
    assert len(sizes) >= 2
    # some coarse peaks kept, some dropped: a bound halfway between two sizes, not on one (the
    # second pass scales its diameters in another order of operations, which may round it below)
    large_min_nm = float(sizes[len(sizes) // 2 - 1] + sizes[len(sizes) // 2]) / 2
    both = detect_peaks(
        pixels,
        PIXEL_NM,
        {
            **detector,
            "options": {**options, "large_heat_nm": factor * options["heat_nm"], "large_min_nm": large_min_nm},
        },
    )
    added = both.iloc[len(fine) :]
    pd.testing.assert_frame_equal(both.iloc[: len(fine)], fine)
    kept = coarse[coarse.d_nm * factor >= large_min_nm]
    assert 0 < len(added) == len(kept) < len(coarse)
    assert np.allclose(added.d_nm, kept.d_nm * factor) and np.allclose(added[["x_nm", "y_nm"]], kept[["x_nm", "y_nm"]])


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "temvirus.cli", "analyse", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def test_the_default_detector_is_that_of_the_models_split_method(tiny_stage, tmp_path):
    """A model at results/models/{model}/{init}/{method}/best.pt uses the detector calibrated for it,
    results/micrographs/{model}/{init}/{method}/detector.json."""
    work, _, _ = tiny_stage
    model = tmp_path / "results" / "models" / "small_cnn" / "scratch" / "bad" / "best.pt"
    detector = tmp_path / "results" / "micrographs" / "detector" / "small_cnn" / "scratch" / "bad.json"
    for source, target in ((work / "best.pt", model), (work / "detector.json", detector)):
        target.parent.mkdir(parents=True)
        shutil.copy2(source, target)
    assert default_detector(model) == detector.resolve()
    tifffile.imwrite(tmp_path / "disc.tif", disc_image())
    metrics, summary = analyse_files([tmp_path / "disc.tif"], model, tmp_path / "out", 2.0, device="cpu", threads=1)
    assert summary["image_id"].tolist() == ["disc"]
    with pytest.raises(FileNotFoundError, match="micrograph detector of .* is unknown"):
        default_detector(work / "best.pt")


def test_an_image_without_a_particle_above_threshold_is_called_from_its_strongest_peak(tiny_stage):
    """No peak passed its class's threshold: the image had no call. Now the class of the peak of
    highest particle score among those whose heat-map score reaches the lowest threshold, with
    its class probability as the confidence, ``call_from`` "strongest peak", and no particle
    counted; with no such peak, still no call."""
    work, _, _ = tiny_stage
    classifier = Classifier.load(work / "best.pt", "cpu")
    detector = read_detector(work / "detector.json", classifier)
    pixels = disc_image()
    peaks = detect(pixels, PIXEL_NM, detector, 0.0)
    probs = classifier.probabilities(pixels, PIXEL_NM, peaks[["x_nm", "y_nm"]].to_numpy())
    sizes = np.array([detector["diameters_nm"][c] for c in classifier.classes])
    score = peaks.score.to_numpy() * size_agreement(peaks.d_nm.to_numpy(), probs, sizes)
    between = (score.max() + peaks.score.max()) / 2  # above every particle score, below the best heat
    assert score.max() < between < peaks.score.max()
    for threshold, expected in ((between, "strongest peak"), (peaks.score.max() + 0.01, "")):
        calibrated = {**detector, "particle_thresholds": dict.fromkeys(classifier.classes, float(threshold))}
        table, call = analyse_image(pixels, PIXEL_NM, calibrated, classifier)
        assert table.empty and call["n_particles"] == 0 and call["call_from"] == expected
        if expected:
            candidate = peaks.score.to_numpy() >= threshold
            strongest = probs[candidate][int(score[candidate].argmax())]
            assert call["call"] == classifier.classes[int(strongest.argmax())]
            assert call["confidence"] == pytest.approx(strongest.max(), abs=1e-4)
        else:
            assert call["call"] == "" and call["confidence"] == 0.0


def test_image_names_are_given_back_as_written(tiny_stage, tmp_path):
    """Images outside a raw layout may have any name: the summary (printed by temvirus analyse)
    gives 001, 1e5 and NA back as written, not as the numbers or missing value that CSV reading
    would make of them; a call of nothing found stays empty text."""
    work, _, _ = tiny_stage
    names = ["001", "1e5", "NA"]
    for name in names:
        tifffile.imwrite(tmp_path / f"{name}.tif", disc_image())
    tifffile.imwrite(
        tmp_path / "plain.tif", np.full((600, 650), 1000, np.uint16) + (np.arange(650) % 8).astype(np.uint16)
    )  # a frame without particles: faint stripes of 8 grey levels (fewer are refused as a mask)
    paths = [tmp_path / f"{name}.tif" for name in [*names, "plain"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a frame without particles gives no NaN on the way
        _, summary = analyse_files(paths, work / "best.pt", tmp_path / "out", 2.0, work / "detector.json", "cpu", 1)
    assert summary.image_id.tolist() == [*names, "plain"]
    assert summary.set_index("image_id").loc["plain", "call"] == ""
    assert (summary.set_index("image_id").loc[names, "pixel_size_nm"] == 2.0).all()


def test_cli_analyses_and_refuses_bad_inputs_without_output(tiny_stage, tmp_path):
    work, _, _ = tiny_stage
    model, detector = work / "best.pt", work / "detector.json"
    tifffile.imwrite(tmp_path / "disc.tif", disc_image())
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 not really a TIFF")
    (tmp_path / "empty.jpg").write_bytes(b"")
    tifffile.imwrite(tmp_path / "blank.tif", np.full((600, 650), 1000, np.uint16))
    (tmp_path / "folder").mkdir()
    older = {k: v for k, v in json.loads(detector.read_text()).items() if k != "state"}
    (tmp_path / "older.json").write_text(json.dumps(older))
    import torch

    other = torch.load(model, weights_only=True)
    torch.save({**other, "epoch": 2}, tmp_path / "other.pt")  # the same classes, another model file
    nan_state = {k: v.clone() for k, v in other["model_state"].items()}
    next(v for v in nan_state.values() if v.is_floating_point()).view(-1)[0] = float("nan")
    torch.save({**other, "model_state": nan_state}, tmp_path / "nan.pt")  # before, every particle one class
    bad = [
        (
            ["disc.tif", "--model", model, "--detector", work / "split_detector.json", "--pixel-size", 2],
            "split_detector.json: a split's detector, not yet calibrated for a patch model",
        ),
        (
            ["disc.tif", "--model", "other.pt", "--detector", detector, "--pixel-size", 2],
            "detector.json: calibrated for another model",
        ),
        (
            ["disc.tif", "--model", "nan.pt", "--detector", detector, "--pixel-size", 2],
            "holds NaN or infinite values: not a usable model",
        ),
        (
            ["disc.tif", "--model", model, "--detector", "older.json", "--pixel-size", 2],
            "older.json: a micrograph detector of an older version",
        ),
        (
            ["disc.tif", "--model", "folder", "--detector", detector, "--pixel-size", 2],
            "folder: a folder, not a model file",
        ),
        (
            ["disc.tif", "--model", model, "--detector", detector, "--pixel-size", 2, "--threads", "x"],
            "must be a whole number, in [1, 1024], got 'x'",
        ),
        (
            ["disc.tif", "--model", model, "--detector", detector, "--pixel-size", 1000],
            "outside the plausible TEM range",
        ),
        (
            ["empty.jpg", "--model", model, "--detector", detector, "--pixel-size", 2],
            "empty.jpg: cannot read image: the file is empty",
        ),
        (["folder", "--model", model, "--detector", detector, "--pixel-size", 2], "folder: a folder, not an image"),
        (
            ["blank.tif", "--model", model, "--detector", detector, "--pixel-size", 2],
            "blank.tif: every pixel has the value 1000: a blank frame",
        ),
        (
            ["disc.tif", "--model", model, "--detector", detector, "--pixel-size", 2, "--threads", 0],
            "must be in [1, 1024], got 0",
        ),
        (["disc.tif", "--model", model, "--detector", detector], "disc.tif: no pixel size"),
        (["broken.tif", "--model", model, "--detector", detector, "--pixel-size", 2], "broken.tif: cannot read image"),
        (
            ["disc.tif", "--model", detector, "--detector", detector, "--pixel-size", 2],
            "not a trained model of this workflow (a best.pt of train_model): a JSON file",
        ),
        (["disc.tif", "--model", model, "--detector", model, "--pixel-size", 2], "not a micrograph detector"),
        (["disc.tif", "--model", model, "--pixel-size", 2], "micrograph detector of"),
    ]
    if not torch.cuda.is_available():  # on a GPU machine --device cuda is a valid choice
        bad.append(
            (
                ["disc.tif", "--model", model, "--detector", detector, "--pixel-size", 2, "--device", "cuda"],
                "--device is 'cuda' but torch sees no CUDA device here",
            )
        )
    for args, message in bad:
        done = _cli(*args, "--out", "out", cwd=tmp_path)
        assert done.returncode in (1, 2) and message in done.stderr, (args, done.stderr)
        assert "weights_only" not in done.stderr and "Traceback" not in done.stderr, args
        if "nan.pt" in args:  # one of the workflow's models, damaged: said so, not "not a trained model"
            assert "not a trained model" not in done.stderr and "ValueError" not in done.stderr, done.stderr
        assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*")), args
    done = _cli("disc.tif", "--model", model, "--detector", detector, "--pixel-size", 2, "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "overlays" / "disc.png").is_file()
    assert pd.read_csv(tmp_path / "out" / "summary.csv").image_id.tolist() == ["disc"]
    done = _cli("disc.tif", "--model", model, "--detector", detector, "--pixel-size", 2, "--out", "out", cwd=tmp_path)
    assert done.returncode == 1 and "not empty" in done.stderr
    done = _cli(
        "disc.tif", "--model", model, "--detector", detector, "--pixel-size", 2, "--out", "disc.tif", cwd=tmp_path
    )
    assert done.returncode == 1 and "disc.tif: exists and is a file, not an output folder" in done.stderr
    for out in ("disc.tif/out", "disc.tif/a/b"):  # a file on the way to the output folder
        done = _cli("disc.tif", "--model", model, "--detector", detector, "--pixel-size", 2, "--out", out, cwd=tmp_path)
        assert done.returncode == 1 and f"{out}: disc.tif is a file, not a folder" in done.stderr, done.stderr


def wait_for_temporary_output(folder: Path, child: subprocess.Popen, seconds: float = 600) -> None:
    """Wait until `temvirus analyse` (``child``, writing ``--out out`` in ``folder``) has made its
    temporary output folder (``.out.*``): it has checked every image and is analysing them. Fails
    when ``child`` ends first, or after ``seconds`` (checking 200 images took over 120 s at a load
    of 5 on 2 cores)."""
    import time

    deadline = time.monotonic() + seconds
    while not list(folder.glob(".out.*")):
        if child.poll() is not None:
            pytest.fail(f"the analysis ended (exit status {child.returncode}) before its temporary folder was seen")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"no temporary output folder after {seconds} s")
        time.sleep(0.002)


def test_cli_stopped_by_sigterm_leaves_no_output_and_no_temporary(tiny_stage, tmp_path):
    """SIGTERM (``kill``, a scheduler's stop) during `temvirus analyse` left the hidden
    temporary output folder (``.out.*.part``) behind: the default disposition ends the process
    at once. Now it unwinds as after Ctrl-C: the temporary is removed, one line names the
    signal, and the exit status is 143 (128 + 15)."""
    import signal
    import time

    work, _, _ = tiny_stage
    images = []
    for i in range(200):  # enough images that the analysis is still running when signalled
        images.append(f"disc{i}.tif")
        tifffile.imwrite(tmp_path / images[-1], disc_image())
    cmd = [sys.executable, "-m", "temvirus.cli", "analyse", *images, "--model", str(work / "best.pt")]
    cmd += ["--detector", str(work / "detector.json"), "--pixel-size", "2", "--threads", "1", "--out", "out"]
    child = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_temporary_output(tmp_path, child)
    time.sleep(0.5)  # inside the analysis of the images
    assert_stopped_by(child, signal.SIGTERM, "analyse")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(images)


def test_two_runs_given_one_output_folder_never_lose_an_output(tiny_stage, tmp_path):
    """Two `temvirus analyse` runs with the same --out both exited 0, the later one having deleted
    the other's results. Now one of them fails naming the folder (at the start, where the folder is
    already there, or at the end, where the other filled it meanwhile) and the folder holds the
    complete output of the one that succeeded."""

    work, _, _ = tiny_stage
    many = [f"disc{i}.tif" for i in range(40)]
    for name in [*many, "one.tif"]:
        tifffile.imwrite(tmp_path / name, disc_image())
    base = [sys.executable, "-m", "temvirus.cli", "analyse", "--model", str(work / "best.pt")]
    base += ["--detector", str(work / "detector.json"), "--pixel-size", "2", "--threads", "1", "--out", "out"]
    slow = subprocess.Popen([*base, *many], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_temporary_output(tmp_path, slow)  # the slow run is under way: its temporary folder is there
    fast = subprocess.run([*base, "one.tif"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    _, slow_err = slow.communicate(timeout=600)
    codes = {"slow": slow.returncode, "fast": fast.returncode}
    assert sorted(codes.values()) == [0, 1], (codes, slow_err, fast.stderr)
    winner = "slow" if slow.returncode == 0 else "fast"
    loser_err = fast.stderr if winner == "slow" else slow_err
    assert "out: written by another run while this one ran" in loser_err or "out: output folder exists" in loser_err
    expected = many if winner == "slow" else ["one.tif"]
    written = sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir())
    assert written == sorted(Path(n).stem + ".png" for n in expected)
    assert not list(tmp_path.glob(".out.*"))  # no temporary left by either


def test_inputs_a_new_user_tried_are_refused_before_anything_naming_them(tiny_stage, tmp_path):
    """What a probe of `temvirus analyse` found (each refused now before the model is loaded, naming
    the file, nothing written): a FIFO given as an image ("image not found") or as --detector (waited
    on for ever); one image given twice ("rename one"); an --out that is a looping link (a
    traceback); a tags file that is a broken link (passed over for --pixel-size, unseen); an image
    name too long for its outputs' temporaries, or not UTF-8 (both failed after the analysis); a
    hidden file's name (its outputs hidden too)."""
    import stat

    work, _, _ = tiny_stage
    model, detector = work / "best.pt", work / "detector.json"
    tifffile.imwrite(tmp_path / "disc.tif", disc_image())
    os.mkfifo(tmp_path / "fifo.tif")
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "tagged").mkdir()
    tifffile.imwrite(tmp_path / "tagged" / "t.tif", disc_image())
    (tmp_path / "tagged" / "t.tif_tags.csv").symlink_to("gone.csv")
    long = tmp_path / ("y" * 233 + ".tif")  # a legal name (237 bytes) whose temporaries are not
    tifffile.imwrite(long, disc_image())
    latin = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.tif"))
    tifffile.imwrite(latin, disc_image())
    hidden = tmp_path / ".x.tif"  # its outputs were hidden files: particles/.x.csv, overlays/.x.png
    tifffile.imwrite(hidden, disc_image())
    out = tmp_path / "out"
    cases = [
        ([tmp_path / "fifo.tif"], out, detector, "fifo.tif: not a regular file (a FIFO"),
        ([tmp_path / "disc.tif"], out, tmp_path / "fifo.json", "fifo.json: detector file not a regular file"),
        ([tmp_path / "disc.tif"], out, tmp_path / "none.json", "none.json: detector file not found"),
        ([tmp_path / "disc.tif", tmp_path / "." / "disc.tif"], out, detector, "disc.tif: given twice (also as"),
        ([tmp_path / "disc.tif"], tmp_path / "loop", detector, "loop: a symbolic link that loops"),
        ([tmp_path / "tagged" / "t.tif"], out, detector, "t.tif_tags.csv: the tags file of t.tif is not a regular"),
        ([long], out, detector, f"{long.name}: a name too long for its outputs"),
        ([latin], out, detector, "caf\\xe9.tif: a file name that is not UTF-8 text"),
        ([hidden], out, detector, ".x.tif: a hidden file's name (starting with '.')"),
    ]
    for images, out_dir, det, message in cases:
        with pytest.raises((ValueError, OSError), match=re.escape(message)):
            analyse_files(images, model, out_dir, 2.0, det, "cpu", 1)
        assert not out.exists() and not list(tmp_path.glob(".out.*")), message
    # an empty --out given is filled with its permissions kept (it was replaced by a 0755 folder)
    out.mkdir(mode=0o700)
    out.chmod(0o2750)
    analyse_files([tmp_path / "disc.tif"], model, out, 2.0, detector, "cpu", 1)
    assert stat.S_IMODE(out.stat().st_mode) == 0o2750 and (out / "summary.csv").is_file()


def test_an_output_folder_in_an_immutable_or_read_only_folder_is_refused_before_anything(tiny_stage, tmp_path):
    """`--out locked/out` with `locked` made immutable (`chattr +i`): as root, os.access said it was
    writable, every image was analysed, and the output then failed to go in place. Now refused at
    once, naming the folder (as a user, a 0555 folder is the same case)."""
    import subprocess

    work, _, _ = tiny_stage
    tifffile.imwrite(tmp_path / "disc.tif", disc_image())
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o555)
    elif subprocess.run(["chattr", "+i", locked], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (no chattr, or a file system without it)")
    try:
        with pytest.raises(PermissionError, match=rf"{locked}/out: {locked} is not writable"):
            analyse_files([tmp_path / "disc.tif"], work / "best.pt", locked / "out", 2.0, work / "detector.json")
    finally:
        subprocess.run(["chattr", "-i", locked], capture_output=True)
        locked.chmod(0o755)
    assert list(locked.iterdir()) == []


def test_an_output_folder_inside_a_results_or_raw_layout_folder_is_refused(tiny_stage, tiny_synthetic, tmp_path):
    """`--out results/my_analysis` in a finished run folder was written: the run's audit then failed on
    files no job made; `--out` inside the raw layout (a class folder's `analysis/`) made the folder
    unreadable (an unexpected folder). Now both refused before anything is read, naming the folder."""
    work, _, _ = tiny_stage
    tifffile.imwrite(tmp_path / "disc.tif", disc_image())
    (tmp_path / "run" / "results" / "provenance").mkdir(parents=True)
    raw = tiny_synthetic / "raw"
    cls = next(d for d in sorted((raw / "test").iterdir()) if d.is_dir())
    for out, message in (
        (
            tmp_path / "run" / "results" / "my_analysis",
            f"inside the workflow's results folder {tmp_path / 'run' / 'results'}",
        ),
        (cls / "analysis", f"inside the raw-layout folder {raw}"),
    ):
        with pytest.raises(ValueError, match=re.escape(f"{out}: {message}")):
            analyse_files([tmp_path / "disc.tif"], work / "best.pt", out, 2.0, work / "detector.json")
        assert not out.exists() and not list(out.parent.glob(".analysis.*"))
    # a folder that merely holds a provenance/ folder, or Test/ beside test/, is no results or raw-layout folder
    for name in ("provenance", "Test", "test"):
        (tmp_path / "run" / name).mkdir()
    analyse_files([tmp_path / "disc.tif"], work / "best.pt", tmp_path / "run" / "analysis", 2.0, work / "detector.json")
    assert (tmp_path / "run" / "analysis" / "summary.csv").is_file()


def test_an_output_folder_given_as_a_link_or_as_the_current_folder(tiny_stage, tmp_path):
    """`temvirus analyse --out` a link to an empty folder passed the checks, every image was
    analysed, then the output failed to go in place with "Cannot call rmtree on a symbolic link"
    (no path named); `--out .` in an empty folder failed at once with a bare StopIteration
    traceback. Now the link's folder receives the output (the link kept), and the current folder
    (which would be replaced under the shell standing in it) is refused naming it."""
    work, _, _ = tiny_stage
    args = ["disc.tif", "--model", work / "best.pt", "--detector", work / "detector.json", "--pixel-size", 2]
    tifffile.imwrite(tmp_path / "disc.tif", disc_image())
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target", target_is_directory=True)
    done = _cli(*args, "--out", "link", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "link").is_symlink() and (tmp_path / "target" / "summary.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disc.tif", "link", "target"]
    (tmp_path / "here").mkdir()
    args[0] = tmp_path / "disc.tif"
    for out in (".", "../here"):
        done = _cli(*args, "--out", out, cwd=tmp_path / "here")
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert f"{out}: the current folder" in done.stderr, done.stderr
        assert list((tmp_path / "here").iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
            "disc.tif",
            "here",
            "link",
            "target",
        ]


def test_detector_edited_by_hand_is_refused_naming_the_key(tiny_stage, tmp_path):
    """A calibrated detector whose particle thresholds or diameters were edited by hand into
    values the analysis cannot use is refused naming the file and key, before anything is
    written: before, a NaN (or null) threshold kept no particle of its class, unseen, and a
    missing class or an nms_fraction of null failed with a bare KeyError/TypeError."""
    work, _, _ = tiny_stage
    model = work / "best.pt"
    calibrated = json.loads((work / "detector.json").read_text())
    classifier = Classifier.load(model, "cpu")
    first = classifier.classes[0]

    def edited(key, value):
        edit = json.loads(json.dumps(calibrated))
        edit[key] = value if not callable(value) else value(edit[key])
        return edit

    cases = [
        (edited("particle_thresholds", lambda t: {**t, first: float("nan")}), f"particle_thresholds of {first} is nan"),
        (edited("particle_thresholds", lambda t: {**t, first: None}), f"particle_thresholds of {first} is None"),
        (edited("particle_thresholds", lambda t: {**t, first: "0.2"}), f"particle_thresholds of {first} is '0.2'"),
        (edited("particle_thresholds", lambda t: {**t, first: -1}), f"particle_thresholds of {first} is -1"),
        (edited("particle_thresholds", lambda t: {**t, first: 2}), f"particle_thresholds of {first} is 2"),
        (
            edited("particle_thresholds", lambda t: {c: v for c, v in t.items() if c != first}),
            f"particle_thresholds has no value for the model's classes ['{first}']",
        ),
        (
            edited("particle_thresholds", lambda t: {**t, "Adenovirus": 0.3}),
            "particle_thresholds has values for classes the model does not give ['Adenovirus']",
        ),
        (edited("particle_thresholds", [0.3] * 4), "particle_thresholds is not a {class: number} mapping"),
        (
            edited("diameters_nm", lambda d: {c: v for c, v in d.items() if c != first}),
            f"diameters_nm has no value for the model's classes ['{first}']",
        ),
        (edited("diameters_nm", lambda d: {**d, first: 0}), f"diameters_nm of {first} is 0"),
        (edited("nms_fraction", None), "nms_fraction is None"),
        (edited("nms_fraction", 1e9), "nms_fraction is 1000000000.0, not a number in (0, 1]"),
        (edited("calibration", None), "calibrated for another model"),
        # the settings and weights the network was fitted with: before, a traceback, an error naming
        # no file, or (NaN or negative chain_fraction, NaN weights, a changed weight) wrong results, exit 0
        (edited("options", lambda o: {**o, "heat_nm": 0}), "options.heat_nm is 0, not a finite number above 0"),
        (edited("options", lambda o: {**o, "heat_nm": float("nan")}), "options.heat_nm is nan"),
        (edited("options", lambda o: {**o, "chain_fraction": -1}), "options.chain_fraction is -1"),
        (edited("options", lambda o: {**o, "tile_nm": "4096"}), "options.tile_nm is '4096', not a whole number"),
        (edited("options", lambda o: {**o, "widths": [8]}), "options.widths is [8], not a list of 2 or more"),
        (edited("options", lambda o: {**o, "large_heat_nm": 0}), "options.large_heat_nm is 0, not null or a number"),
        (edited("options", [1, 2]), "options is list, not a mapping of settings"),
        (edited("state_sha256", "0" * 64), "the network's weights are not those recorded"),
        (edited("state", lambda t: {k: v for k, v in list(t.items())[1:]}), "the network's weights are not those"),
        (
            edited("options", lambda o: {**o, "widths": [*o["widths"][:-1], o["widths"][-1] + 1]}),
            "state is not the network of options.widths",
        ),
    ]
    # one base64 character of one weight changed (a damaged copy): still JSON, still a network
    name = next(iter(calibrated["state"]))
    damaged = json.loads(json.dumps(calibrated))
    data = damaged["state"][name]["data"]
    damaged["state"][name]["data"] = ("B" if data[0] != "B" else "C") + data[1:]
    cases.append((damaged, "the network's weights are not those recorded"))
    # NaN weights, their checksum made to match (edited knowingly): refused as a NaN model file is
    import base64

    nan = json.loads(json.dumps(calibrated))
    shape = nan["state"][name]["shape"]
    nan["state"][name]["data"] = base64.b64encode(np.full(shape, np.nan, "<f4").tobytes()).decode()
    nan["state_sha256"] = state_sha256(nan["state"])
    cases.append((nan, "the network's weights hold NaN or infinite values"))
    for i, (detector, message) in enumerate(cases):
        path = tmp_path / f"edited{i}.json"
        path.write_text(json.dumps(detector))
        with pytest.raises(ValueError, match="^" + re.escape(f"{path}: {message}")):
            read_detector(path, classifier)
    tifffile.imwrite(tmp_path / "disc.tif", disc_image())
    with pytest.raises(ValueError, match="edited0.json: particle_thresholds of"):
        analyse_files([tmp_path / "disc.tif"], model, tmp_path / "out", 2.0, tmp_path / "edited0.json", "cpu", 1)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
    assert read_detector(work / "detector.json", classifier)["particle_thresholds"] == calibrated["particle_thresholds"]


def test_a_model_file_cut_short_or_damaged_is_named_so(tmp_path):
    """A best.pt cut short by an interrupted copy was refused with torch's words for it
    ("OSError: [Errno 22] Invalid argument" for most cuts), and one with a flipped byte in its
    weights was loaded (torch does not check the zip's CRCs), refused by temvirus analyse only as
    "calibrated for another model"; an empty one as "EOFError". All now say the file is cut short
    or damaged."""
    data = _fake_checkpoint(tmp_path / "best.pt", TINY_CLASSES).read_bytes()
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF
    variants = {
        "empty.pt": b"",
        "cut100.pt": data[:100],
        "cut20000.pt": data[:20000],
        "cut_end.pt": data[:-10],
        "flip.pt": damaged,
    }
    for name, content in variants.items():
        (tmp_path / name).write_bytes(bytes(content))
        with pytest.raises(ValueError, match=f"^{tmp_path / name}: a model file cut short or damaged"):
            Classifier.load(tmp_path / name, "cpu")
    assert Classifier.load(tmp_path / "best.pt", "cpu").classes == list(TINY_CLASSES)


def test_pixel_size_from_the_tags_file(tiny_synthetic, tiny_stage, tmp_path):
    work, images, _ = tiny_stage
    row = images.iloc[0]
    metrics, summary = analyse_files(
        [tiny_synthetic / "raw" / row.path], work / "best.pt", tmp_path / "out", None, work / "detector.json", "cpu", 1
    )
    assert metrics == {} and summary.pixel_size_nm.iloc[0] == pytest.approx(row.pixel_size_nm)


def test_tags_file_found_as_the_raw_reader_finds_it_and_checked(tmp_path):
    """Tags beside an image are matched ignoring case (c.JPG, c.jpg_tags.csv); a tags file of
    another size, or only one of a similar name, is an error naming it, never passed over."""
    from temvirus.micrographs import image_pixel_size
    from temvirus.raw import RawDataError

    (tmp_path / "tags").mkdir()
    (tmp_path / "tags" / "c.jpg_tags.csv").write_text("Height;30\nWidth;40\nXScale;1,5\nYScale;1,5\n")
    assert image_pixel_size(tmp_path / "c.JPG", 9.0, (30, 40)) == 1.5
    with pytest.raises(RawDataError, match=r"c.jpg_tags.csv: tags give 40x30 px but c.JPG is 80x60"):
        image_pixel_size(tmp_path / "c.JPG", 9.0, (60, 80))
    (tmp_path / "d_tags.csv").write_text("Height;30\nWidth;40\nXScale;1,5\nYScale;1,5\n")
    with pytest.raises(RawDataError, match=r"d_tags.csv: a tags file of a similar name, not d.tif_tags.csv"):
        image_pixel_size(tmp_path / "d.tif", 9.0, (30, 40))
    (tmp_path / "d").write_text("notes")  # a file that is no image does not make d_tags.csv its tags
    with pytest.raises(RawDataError, match=r"d_tags.csv: a tags file of a similar name, not d.tif_tags.csv"):
        image_pixel_size(tmp_path / "d.tif", 9.0, (30, 40))
    (tmp_path / "e0.tif_tags.csv").write_text("Height;30\nWidth;40\nXScale;1,5\nYScale;1,5\n")  # another image's
    assert image_pixel_size(tmp_path / "e.tif", 9.0, (30, 40)) == 9.0
    (tmp_path / "e.png_tags.csv").write_text("Height;30\nWidth;40\nXScale;1,5\nYScale;1,5\n")
    with pytest.raises(RawDataError, match=r"e.png_tags.csv: a tags file of a similar name, not e.tif_tags.csv"):
        image_pixel_size(tmp_path / "e.tif", 9.0, (30, 40))
    # beside the tags file of the image, one of a similar name giving the same values is no conflict
    (tmp_path / "c_tags.csv").write_bytes(b"Height;30\r\nWidth;40\r\nXScale;1.5\r\nYScale;1.5\r\n")
    assert image_pixel_size(tmp_path / "c.JPG", 9.0, (30, 40)) == 1.5
    # ... and one that says otherwise was passed over
    (tmp_path / "c_tags.csv").write_text("Height;30\nWidth;40\nXScale;2,0\nYScale;2,0\n")
    with pytest.raises(RawDataError, match=r"c_tags.csv: differs from .*c.jpg_tags.csv: two tags files for c.JPG"):
        image_pixel_size(tmp_path / "c.JPG", 9.0, (30, 40))
    (tmp_path / "c.png").write_bytes(b"")  # ... unless it is the tags of another image beside it
    (tmp_path / "c_tags.csv").rename(tmp_path / "c.png_tags.csv")
    assert image_pixel_size(tmp_path / "c.JPG", 9.0, (30, 40)) == 1.5
    # a TIFF calibrated otherwise than its tags file says (ImageJ: 2 nm/px against 1.5)
    tifffile.imwrite(
        tmp_path / "f.tif", np.ones((30, 40), np.uint16), imagej=True, resolution=(0.5, 0.5), metadata={"unit": "nm"}
    )
    (tmp_path / "f.tif_tags.csv").write_text("Height;30\nWidth;40\nXScale;1,5\nYScale;1,5\n")
    with pytest.raises(
        RawDataError, match=r"f.tif: its ImageJ calibration \(unit 'nm'\) gives 2 nm/px along x, but its tags"
    ):
        image_pixel_size(tmp_path / "f.tif", None, (30, 40))
    (tmp_path / "f.tif_tags.csv").unlink()  # ... or than --pixel-size says, for an image without tags
    with pytest.raises(
        RawDataError, match=r"f.tif: its ImageJ calibration .* 2 nm/px along x, but --pixel-size gives 1.5"
    ):
        image_pixel_size(tmp_path / "f.tif", 1.5, (30, 40))
    assert image_pixel_size(tmp_path / "f.tif", 2.0, (30, 40)) == 2.0


def test_the_tags_of_another_image_named_but_for_case_are_not_taken(tmp_path):
    """On a case-sensitive disk A.tif and a.tif are two images; a.tif was given A.tif's tags file
    (matched ignoring case) and analysed at A.tif's pixel size. Each now gets its own, and an
    image without one gets --pixel-size (or the error asking for it)."""
    from temvirus.micrographs import image_pixel_size

    for name in ("A.tif", "a.tif"):
        tifffile.imwrite(tmp_path / name, np.ones((30, 40), np.uint16))
    (tmp_path / "A.tif_tags.csv").write_text("Height;30\nWidth;40\nXScale;1,5\nYScale;1,5\n")
    assert image_pixel_size(tmp_path / "A.tif", None, (30, 40)) == 1.5
    assert image_pixel_size(tmp_path / "a.tif", 9.0, (30, 40)) == 9.0
    with pytest.raises(ValueError, match=r"a.tif: no pixel size: no tags file"):
        image_pixel_size(tmp_path / "a.tif", None, (30, 40))
    (tmp_path / "tags").mkdir()  # its own, in tags/: no conflict with the other image's
    (tmp_path / "tags" / "a.tif_tags.csv").write_text("Height;30\nWidth;40\nXScale;2,5\nYScale;2,5\n")
    assert image_pixel_size(tmp_path / "a.tif", None, (30, 40)) == 2.5
    assert image_pixel_size(tmp_path / "A.tif", None, (30, 40)) == 1.5


def test_an_image_without_tags_file_or_pixel_size_is_analysed_at_its_own_calibration(tmp_path):
    """An ImageJ-calibrated TIFF (2 nm/px) and a TIFF at 2.54e7 / 1.5 pixels per inch, without a tags
    file or --pixel-size, were refused ("no pixel size"). Their own calibration is used now; one
    giving non-square pixels, one axis alone, two calibrations that differ, or none at all, is
    refused naming the image."""
    from temvirus.micrographs import image_pixel_size

    pixels = np.arange(1200, dtype=np.uint16).reshape(30, 40)
    tifffile.imwrite(tmp_path / "ij.tif", pixels, imagej=True, resolution=(0.5, 0.5), metadata={"unit": "nm"})
    tifffile.imwrite(tmp_path / "inch.tif", pixels, resolution=(2.54e7 / 1.5,) * 2, resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "oblong.tif", pixels, imagej=True, resolution=(0.5, 0.25), metadata={"unit": "nm"})
    tifffile.imwrite(tmp_path / "dpi.tif", pixels, resolution=(72, 72), resolutionunit="INCH")
    assert image_pixel_size(tmp_path / "ij.tif", None, (30, 40)) == pytest.approx(2.0)
    assert image_pixel_size(tmp_path / "inch.tif", None, (30, 40)) == pytest.approx(1.5)
    # one axis implausible (80 nm: left out) was taken for both; two calibrations that differ, the last one
    tifffile.imwrite(tmp_path / "one_axis.tif", pixels, resolution=(1e7, 1e7 / 80), resolutionunit="CENTIMETER")
    tifffile.imwrite(
        tmp_path / "two.tif",
        pixels,
        resolution=(1e7 / 2, 1e7 / 2),
        resolutionunit="CENTIMETER",
        metadata={"PhysicalSizeX": 1, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 1, "PhysicalSizeYUnit": "nm"},
        ome=True,
    )
    for name, found in (
        ("oblong.tif", "x 2 nm; .*: y 4 nm"),
        ("one_axis.tif", "resolution per centimetre: x 1 nm; a size"),
        ("two.tif", "OME-XML PhysicalSize: x 1 nm; .*resolution per centimetre: x 2 nm"),
    ):
        with pytest.raises(
            ValueError, match=rf"{name}: its own calibration gives no one square pixel size \(.*{found}"
        ):
            image_pixel_size(tmp_path / name, None, (30, 40))
    with pytest.raises(ValueError, match=r"dpi.tif: no pixel size: .* and no calibration in the image"):
        image_pixel_size(tmp_path / "dpi.tif", None, (30, 40))


def test_a_pixel_size_given_against_the_tags_file_is_said(tmp_path, caplog):
    """``--pixel-size 9`` for an image whose tags file says 1.5 nm: the tags file's size is used
    (``--pixel-size`` is for images without one), and now a warning names the tags file and both
    sizes; before, the size given was passed over without a word."""
    import logging

    from temvirus.micrographs import image_pixel_size

    (tmp_path / "c.jpg_tags.csv").write_text("Height;30\nWidth;40\nXScale;1,5\nYScale;1,5\n")
    with caplog.at_level(logging.WARNING, logger="temvirus.micrographs"):
        assert image_pixel_size(tmp_path / "c.jpg", 1.5, (30, 40)) == 1.5
        assert image_pixel_size(tmp_path / "c.jpg", None, (30, 40)) == 1.5
        assert not caplog.records
        assert image_pixel_size(tmp_path / "c.jpg", 9.0, (30, 40)) == 1.5
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'c.jpg_tags.csv'}: pixel size 1.5 nm used for c.jpg, not --pixel-size 9 "
        "(which is for images without a tags file)"
    ]


def test_a_pixel_size_too_coarse_for_the_models_classes_is_warned_of(tiny_stage, tmp_path, caplog):
    """`--pixel-size 40` (a slip of unit or image) for a small image: its smallest class is under
    3 px across; the analysis runs, with a warning naming the image, the size and the class (before,
    a 1000 px image at 50 nm/px took minutes and gave 162 particles without a word), and
    summary.csv, which a batch user reads rather than the log, names the classes it cannot show
    (before, a probe's 40 nm/px image read "Papilloma, 0.66, 286 particles" there and nothing else)."""
    import logging

    work, _, _ = tiny_stage
    tifffile.imwrite(tmp_path / "coarse.tif", disc_image(size_nm=(400, 440), pixel_nm=40.0))
    tifffile.imwrite(tmp_path / "fine.tif", disc_image())
    with caplog.at_level(logging.WARNING, logger="temvirus.micrographs"):
        _, fine = analyse_files(
            [tmp_path / "fine.tif"], work / "best.pt", tmp_path / "out1", 2.0, work / "detector.json", "cpu", 1
        )
        assert not caplog.records
        _, coarse = analyse_files(
            [tmp_path / "coarse.tif"], work / "best.pt", tmp_path / "out2", 40.0, work / "detector.json", "cpu", 1
        )
    detector = json.loads((work / "detector.json").read_text())
    smallest = min(TINY_CLASSES, key=lambda c: detector["diameters_nm"][c])
    assert [r.getMessage() for r in caplog.records] == [
        f"{(tmp_path / 'coarse.tif').resolve()}: pixel size 40 nm: the model's smallest class, {smallest} "
        f"({detector['diameters_nm'][smallest]:g} nm), is {detector['diameters_nm'][smallest] / 40:.1f} px across, "
        "too few to be seen (the particles found will be meaningless; summary.csv's unseen_classes names the "
        "classes); is the pixel size right?"
    ]
    unseen = [c for c in TINY_CLASSES if detector["diameters_nm"][c] / 40 < 3]
    assert smallest in unseen and coarse.unseen_classes.tolist() == [" ".join(unseen)]
    assert fine.unseen_classes.tolist() == [""]


def test_analyse_refuses_bad_images_before_anything(tmp_path):
    """`temvirus analyse` checks each image as the raw reader does, before the model is loaded or
    anything written: an image too small to cut a patch from (was analysed), a JPEG cut short, a
    tags file cut before its pixel-size rows."""
    from PIL import Image

    from temvirus.raw import RawDataError

    gen = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "tiny.tif", gen.integers(0, 4000, (15, 20), dtype=np.uint16))
    Image.fromarray(gen.integers(0, 255, (300, 400), dtype=np.uint8)).save(tmp_path / "cut.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "cut.jpg").read_bytes()[:5000])
    tifffile.imwrite(tmp_path / "short.tif", gen.integers(0, 4000, (300, 400), dtype=np.uint16))
    (tmp_path / "short.tif_tags.csv").write_text("Height;300\nWidth;400\nBitsPerSample;16\n")
    for name, reason in [
        ("tiny.tif", r"tiny.tif: image too small: 20x15 px at 2 nm/px is 40x30 nm; each side must be at least 129 nm"),
        ("cut.jpg", r"cut.jpg: cannot read image .*truncated"),
        ("short.tif", r"short.tif_tags.csv: no xscale / yscale row"),
    ]:
        with pytest.raises(RawDataError, match=reason):
            analyse_files([tmp_path / name], tmp_path / "no_model.pt", tmp_path / "out", 2.0, None, "cpu", 1)
        assert not (tmp_path / "out").exists()


def test_two_tags_files_that_differ_are_refused(real_crops, tmp_path):
    """A real crop with its tags file in tags/ and another one beside it giving 2 nm: which is
    meant is unknown (tags/ was used unseen); two equal copies are read."""
    from temvirus.micrographs import image_pixel_size
    from temvirus.raw import RawDataError

    source = sorted((real_crops / "test" / "Rotavirus").glob("*.jpg"))[0]
    image = tmp_path / source.name
    shutil.copy(source, image)
    (tmp_path / "tags").mkdir()
    tags = shutil.copy(real_crops / "test" / "Rotavirus" / "tags" / f"{source.name}_tags.csv", tmp_path / "tags")
    shape = read_image(image).shape
    assert image_pixel_size(image, None, shape) == 1.0
    beside = tmp_path / f"{source.name}_tags.csv"
    beside.write_text(Path(tags).read_text().replace("Scale;1,0", "Scale;2,0"))
    with pytest.raises(RawDataError, match=rf"{beside.name}: differs from .*tags/{beside.name}: two tags files for"):
        image_pixel_size(image, None, shape)
    shutil.copy(tags, beside)
    assert image_pixel_size(image, None, shape) == 1.0


def test_image_names_equal_but_for_case_are_refused(real_crops, tmp_path):
    """Two real crops from two folders, named a1.jpg and A1.jpg: their outputs (particles/a1.csv,
    particles/A1.csv...) are one file on macOS and Windows, where one image's results would
    replace the other's; refused (as by the raw reader) before anything is written."""
    first, second = sorted((real_crops / "test" / "Rotavirus").glob("*.jpg"))[:2]
    for folder, source, name in (("x", first, "a1.jpg"), ("y", second, "A1.jpg")):
        (tmp_path / folder).mkdir()
        shutil.copy(source, tmp_path / folder / name)

    paths = re.escape(str([str(tmp_path / "x" / "a1.jpg"), str(tmp_path / "y" / "A1.jpg")]))  # to find them by
    with pytest.raises(ValueError, match=rf"images with the same name \(but for case or Unicode form\): {paths}"):
        analyse_files(
            [tmp_path / "x" / "a1.jpg", tmp_path / "y" / "A1.jpg"], tmp_path / "best.pt", tmp_path / "out", 1.0
        )
    assert not (tmp_path / "out").exists()


def test_a_diverging_detector_training_stops_at_the_first_nan_loss():
    """Before, a learning rate far too high went on to the end with NaN weights: a detector finding nothing."""
    from temvirus.models import TrainingDiverged

    rng = np.random.default_rng(0)
    bank = [
        Crop(rng.normal(size=(32, 32)).astype(np.float16), np.array([[16.0, 16.0]]), np.array([6.0]), np.array([True]))
        for _ in range(4)
    ]
    kwargs = dict(widths=(4, 8), batch_size=2, crop_px=16, sigma_fraction=0.25, heat_nm=6.0, seed=0)
    model, curve = train_heatnet(bank, steps=10, lr=0.01, **kwargs)
    assert len(curve) == 10 and np.isfinite(curve).all()
    with pytest.raises(TrainingDiverged, match=r"particle detector training diverged at step \d+: loss .* lower"):
        train_heatnet(bank, steps=10, lr=1e30, **kwargs)
