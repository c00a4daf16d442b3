"""Overlap removal on real TIFFs in the raw layout: crops of one textured field."""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PAPER, REPO, write_raw_image
from scipy.ndimage import gaussian_filter, map_coordinates

from temvirus.classes import FOLDER_NAMES
from temvirus.overlap import (
    DISTINCT,
    OVERLAP,
    OverlapSettings,
    _masked_ncc,
    _matched_descriptors,
    _shifts,
    _similarity_consensus,
    _View,
    deep_inside,
    find_overlaps,
    group_images,
    ncc_surface,
    point_agreement,
    register,
    rigid_matches,
    score_against_truth,
    score_pairs,
    significance,
    tile_agreement,
    tile_shape,
    turned,
    turned_points,
)
from temvirus.raw import read_dataset


def textured_field(seed: int, size: int = 1400) -> tuple[np.ndarray, np.ndarray]:
    """A 1 nm/px field like a stained grid (blurred noise, a gradient, dark round particles)
    and the particle centres (x, y) in nm."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.normal(size=(size, size)), 3) * 40 + np.linspace(0, 30, size)[None, :]
    yy, xx = np.mgrid[-45:46, -45:46]
    centres = []
    for _ in range(size * size // 20000):
        cy, cx = rng.integers(45, size - 45, 2).tolist()
        field[cy - 45 : cy + 46, cx - 45 : cx + 46] -= 60 * (yy**2 + xx**2 < rng.uniform(20, 45) ** 2)
        centres.append((cx + 0.5, cy + 0.5))
    return field + 1000, np.array(centres)


def view(field: tuple[np.ndarray, np.ndarray], x0: int, y0: int, side_nm: int, pixel_nm: int, seed: int):
    """A ``side_nm`` window at (x0, y0) nm, block-averaged to ``pixel_nm`` (integer), noisy,
    uint16, with the centres inside it in its pixels."""
    pixels, centres = field
    window = pixels[y0 : y0 + side_nm, x0 : x0 + side_nm]
    n = side_nm // pixel_nm
    blocks = window[: n * pixel_nm, : n * pixel_nm].reshape(n, pixel_nm, n, pixel_nm).mean(axis=(1, 3))
    noisy = np.clip(blocks + np.random.default_rng(seed).normal(0, 8, blocks.shape), 0, 65535).astype(np.uint16)
    local = (centres - [x0, y0]) / pixel_nm
    return noisy, local[((local >= 0) & (local < n)).all(axis=1)]


def write_class_image(
    root: Path, split: str, cls: str, image_id: str, image: tuple[np.ndarray, np.ndarray], pixel_nm: float
):
    """One image of class ``cls`` in the raw layout, each point a particle of its own."""
    pixels, points = image
    write_raw_image(root, split, FOLDER_NAMES[cls], image_id, pixels, pixel_nm, [[p] for p in points])


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    """Ebola: a (2 nm/px) and b (3 nm/px) overlap at b-origin (300, 250) nm in a; c is another field;
    d re-images a's field but its tags say 1.5 nm/px instead of 3 (a wrong pixel size);
    Lassa: e shows most of a's field, shifted by (150, 100) nm (other class: never compared with a;
    a's whole field in another class is refused by the reader, test_raw)."""
    root = tmp_path_factory.mktemp("raw")
    one, two = textured_field(1), textured_field(2)
    write_class_image(root, "train", "Ebola", "a", view(one, 0, 0, 600, 2, 10), 2.0)
    write_class_image(root, "train", "Ebola", "b", view(one, 300, 250, 450, 3, 11), 3.0)
    write_class_image(root, "test", "Ebola", "c", view(two, 100, 100, 600, 2, 12), 2.0)
    write_class_image(root, "train", "Ebola", "d", view(one, 250, 200, 720, 3, 13), 1.5)
    write_class_image(root, "train", "Lassa", "e", view(one, 150, 100, 600, 2, 14), 2.0)
    write_class_image(root, "train", "Lassa", "f", view(two, 700, 700, 600, 2, 15), 2.0)
    return root


SETTINGS = OverlapSettings(coarse_nm=6.0)


@pytest.fixture(scope="module")
def tables(raw_root) -> tuple[pd.DataFrame, pd.DataFrame]:
    return read_dataset(raw_root, hash_files=False)


@pytest.fixture(scope="module")
def images(tables) -> pd.DataFrame:
    return tables[0]


def pair(pairs: pd.DataFrame, a: str, b: str) -> pd.Series:
    return pairs.set_index(["image_a", "image_b"]).loc[(a, b)]


def test_overlap_found_with_offset_and_distinct_fields_rejected(raw_root, images):
    pairs = score_pairs(images, raw_root, SETTINGS)
    assert set(zip(pairs["class"], pairs.image_a, pairs.image_b)) == {
        ("Ebola", "a", "b"),
        ("Ebola", "a", "c"),
        ("Ebola", "a", "d"),
        ("Ebola", "b", "c"),
        ("Ebola", "b", "d"),
        ("Ebola", "c", "d"),
        ("Lassa", "e", "f"),
    }
    ab = pair(pairs, "a", "b")
    assert ab.decision == OVERLAP and ab.scale == 1.0
    assert abs(ab.dx_nm - 300) <= 6 and abs(ab.dy_nm - 250) <= 6
    assert ab.ncc > 0.8
    # b's 450x450 nm field lies in a's 600x600 from (300, 250): 300 x 350 nm overlap
    assert ab.overlap_nm2 == pytest.approx(300 * 350, rel=0.15)
    for a, b in [("a", "c"), ("b", "c"), ("c", "d"), ("e", "f")]:
        assert pair(pairs, a, b).decision == DISTINCT, (a, b)
        assert pair(pairs, a, b).evidence < -0.1  # rejected clearly, not by a hair


def test_wrong_pixel_size_needs_the_scale_fallback(raw_root, images):
    without = score_pairs(images, raw_root, SETTINGS)
    assert pair(without, "a", "d").decision == DISTINCT
    with_fallback = score_pairs(images, raw_root, OverlapSettings(coarse_nm=6.0, fallback_scales=(0.5, 2.0)))
    ad = pair(with_fallback, "a", "d")
    assert ad.decision == OVERLAP and ad.scale == 2.0
    # d's true origin is (250, 200) nm in a's field
    assert abs(ad.dx_nm - 250) <= 8 and abs(ad.dy_nm - 200) <= 8
    assert pair(with_fallback, "a", "c").decision == DISTINCT


def test_groups_keep_most_particles_then_pixel_size_then_id():
    images = pd.DataFrame(
        {
            "image_id": ["p", "q", "r", "s", "t", "u"],
            "n_particles": [3, 5, 5, 1, 2, 2],
            "pixel_size_nm": [1.0, 2.0, 1.0, 1.0, 1.0, 1.0],
        }
    )
    pairs = pd.DataFrame(
        {
            "image_a": ["p", "q", "s", "t"],
            "image_b": ["q", "r", "u", "u"],
            "decision": [OVERLAP, OVERLAP, DISTINCT, OVERLAP],
        }
    )
    kept = group_images(images, pairs).set_index("image_id")
    # p-q-r chain: q and r have 5 particles, r has the smaller pixel size
    assert kept.overlap_group.to_dict() == {"p": "r", "q": "r", "r": "r", "s": "s", "t": "t", "u": "t"}
    assert kept.index[kept.kept].tolist() == ["r", "s", "t"]


def test_precision_recall_against_truth():
    kept = pd.DataFrame({"image_id": ["a", "b", "c", "d", "e"], "overlap_group": ["a", "a", "c", "c", "e"]})
    pairs = pd.DataFrame(
        {"image_a": ["a", "c", "a"], "image_b": ["b", "d", "e"], "decision": [OVERLAP, OVERLAP, DISTINCT]}
    )
    truth = pd.DataFrame({"image_id": ["b", "e"], "source_image_id": ["a", "a"]})
    score = score_against_truth(kept, pairs, truth)
    assert score["precision"] == 0.5 and score["recall"] == 0.5
    assert (score["true_positive_pairs"], score["false_positive_pairs"], score["planted_found"]) == (1, 1, 1)


def test_find_overlaps_writes_tables_and_is_deterministic(raw_root, tables, tmp_path):
    images, particles = tables
    images_csv, particles_csv = tmp_path / "images.csv", tmp_path / "particles.csv"
    images.to_csv(images_csv, index=False)
    particles.to_csv(particles_csv, index=False)
    # particles of radius <= 45 nm: points 50 nm inside the shared area are judged
    settings = {"coarse_nm": 6.0, "fallback_scales": [0.5, 2.0], "point_margin_nm": 50.0}
    outputs = []
    for run, threads in (("one", 1), ("two", 2)):  # two worker processes (one per class): same tables
        pairs_csv, kept_csv = tmp_path / run / "pairs.csv", tmp_path / run / "kept.csv"
        find_overlaps(images_csv, particles_csv, raw_root, pairs_csv, kept_csv, settings, threads)
        outputs.append((pairs_csv.read_bytes(), kept_csv.read_bytes()))
    assert outputs[0] == outputs[1]
    pairs = pd.read_csv(tmp_path / "one" / "pairs.csv")
    ab = pair(pairs, "a", "b")
    assert ab.points > 0 and ab.point_agreement == 1.0
    kept = pd.read_csv(tmp_path / "one" / "kept.csv", dtype={"image_id": str}).set_index("image_id")
    # a, b and d show one field: the one with the most particles is kept
    keeper = kept.loc[["a", "b", "d"], "n_particles"].idxmax()
    assert kept.overlap_group.to_dict() == {"a": keeper, "b": keeper, "c": "c", "d": keeper, "e": "e", "f": "f"}
    assert kept.kept.sum() == 4 and kept.loc[keeper, "kept"]
    assert list(kept.columns[-2:]) == ["overlap_group", "kept"]


def test_point_agreement_judges_only_the_counted_points():
    a = np.array([[10.0, 10.0], [50.0, 50.0], [90.0, 90.0], [300.0, 300.0]])
    b = np.array([[52.0, 49.0], [91.0, 88.0], [70.0, 20.0]])
    # a's (10, 10) and (300, 300) are not judged (outside the shared area); b's (70, 20) has no partner
    counted_a, counted_b = np.array([False, True, True, False]), np.ones(3, bool)
    assert point_agreement(a, b, counted_a, counted_b, 5.0) == (5, 0.8)
    assert point_agreement(a, b, counted_a & False, counted_b & False, 5.0)[0] == 0
    # one-sided: a's two judged points have partners (b's third is a particle a leaves unannotated)
    assert point_agreement(a, b, counted_a, counted_b, 5.0, one_sided=True) == (5, 1.0)
    assert point_agreement(a, b[:0], counted_a, counted_b[:0], 5.0, one_sided=True) == (2, 1.0)  # b: none
    assert point_agreement(a, b + 200, counted_a, counted_b, 5.0, one_sided=True) == (5, 0.0)  # contradict


@pytest.mark.parametrize("kept", [0, 1, 3])
def test_a_reimage_annotated_in_part_is_found(tmp_path, kept):
    """b shows part of a's field with ``kept`` of its particles annotated (the rest left out by the
    annotator). Before, each of a's unmatched points counted against the pair, and below about a quarter
    of them annotated the pair was called distinct, however well the images agreed: the images of one
    field in two subsets (the probe: a real Papilloma field cut in two, its shared band byte for byte
    alike, fine and background NCC 0.996, with 0-16 of its 63 particles annotated in b). Another field
    annotated in part is still not claimed."""
    one, two = textured_field(21), textured_field(22)
    a = view(one, 0, 0, 600, 2, 30)
    pixels, points = view(one, 250, 180, 500, 2, 31)
    other, other_points = view(two, 250, 180, 500, 2, 32)
    b, c = (pixels, points[:kept]), (other, other_points[:kept])
    root, images, particles = pair_root(tmp_path, a, b, c, (2.0, 2.0, 2.0))
    pairs = score_pairs(images, root, SETTINGS, particles)
    ab = pair(pairs, "a", "b")
    assert ab.decision == OVERLAP and ab.points > 0 and ab.point_agreement == 1.0, ab.to_dict()
    assert abs(ab.dx_nm - 250) <= 8 and abs(ab.dy_nm - 180) <= 8
    for others in [("a", "c"), ("b", "c")]:
        assert pair(pairs, *others).decision == DISTINCT, pair(pairs, *others).to_dict()


def test_deep_inside_keeps_points_away_from_borders_and_padding():
    joint = np.ones((50, 60), bool)
    joint[:, 40:] = False  # padding of one image
    points = np.array([[200.0, 250.0], [30.0, 250.0], [380.0, 250.0], [700.0, 250.0], [200.0, 480.0]])
    deep = deep_inside(points, {"mask": joint, "x0": 0.0, "y0": 0.0, "f_nm": 10.0}, 100.0)
    assert deep.tolist() == [True, False, False, False, False]


def test_unreadable_image_names_the_file(raw_root, images, tmp_path):
    broken = images.copy()
    broken.loc[broken.image_id == "c", "path"] = "train/Ebola/missing.tif"
    with pytest.raises(ValueError, match="missing.tif"):
        score_pairs(broken, raw_root, SETTINGS)


def test_unknown_setting_is_rejected():
    with pytest.raises(ValueError, match="unknown keys"):
        OverlapSettings.from_config({"min_ncc": 0.5, "typo": 1})


VERIFIED = Path(__file__).parent / "data" / "overlap_verified_pairs.csv"
NAMED = [
    ("Papilloma", "5957", "5960"),
    ("Cowpox", "5980", "5981"),
    ("Norovirus", "A1-160k-071019_4", "A1-93k-071019_3"),
    # missed by the former rule (fine NCC 0.59 and 0.54 < 0.62): an 11% strip, and one field
    # at two exposures and a pixel size 3% off
    ("Cowpox", "6001", "6002"),
    ("RiftValley", "1172", "1173"),
    # thin strips of adjacent exposures (5-8% of the field), found since shifts are ranked
    # by significance and thin strips are tiled in strips
    ("Cowpox", "5974", "5975"),
    ("Cowpox", "5975", "5976"),
]


@pytest.mark.realdata
@pytest.mark.slow
def test_real_crops_overlaps_are_the_verified_ones(real_crops):
    """The images of the named pairs and of Rotavirus's verified pairs (every pair among them
    within a class scored): the named pairs are found, and the claims are exactly the pairs
    verified by eye among these images (docs/overlap.md: the list holds all verified pairs of the
    578 crops; all 578, 21,641 pairs, are scored by benchmarks/overlap.py --real, too slow for CI)."""
    images, particles = read_dataset(real_crops, hash_files=False)
    verified = pd.read_csv(VERIFIED, dtype=str)
    rotavirus = verified[verified["class"] == "Rotavirus"]
    chosen = {image for _, a, b in NAMED for image in (a, b)} | set(rotavirus.image_a) | set(rotavirus.image_b)
    images = images[images.image_id.isin(chosen)]
    started = time.time()
    settings = OverlapSettings.from_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["overlap"])
    assert settings == OverlapSettings()  # the defaults are the default config's
    pairs = score_pairs(images, real_crops, settings, particles, threads=2)
    claimed = set(
        pairs.loc[pairs.decision == OVERLAP, ["class", "image_a", "image_b"]].itertuples(index=False, name=None)
    )
    print(f"{len(images)} images, {len(pairs)} pairs, {time.time() - started:.0f} s: {sorted(claimed)}")
    shown = verified.image_a.isin(images.image_id) & verified.image_b.isin(images.image_id)
    expected = set(verified.loc[shown, ["class", "image_a", "image_b"]].itertuples(index=False, name=None))
    assert set(NAMED) <= claimed, sorted(set(NAMED) - claimed)
    assert claimed == expected, {"unverified": sorted(claimed - expected), "missed": sorted(expected - claimed)}


def score_planted(tmp_path, classes: list[str], scale: float, overlaps: int):
    """``(score, pairs, images)`` of the default config's overlap removal on generated data
    (seed 7, 2x2-binned frames) with ``overlaps`` planted re-images, against its truth."""
    from temvirus.synth import generate_dataset

    truth = generate_dataset(
        tmp_path / "raw",
        tmp_path / "truth.csv",
        table1=PAPER / "table1_dataset.csv",
        scale=scale,
        seed=7,
        overlaps=overlaps,
        binning=2,
        classes=classes,
    )
    images, particles = read_dataset(tmp_path / "raw", hash_files=False)
    pairs = score_pairs(images, tmp_path / "raw", OverlapSettings(), particles)
    score = score_against_truth(group_images(images, pairs), pairs, truth)
    print(score)
    return score, pairs, images


@pytest.mark.slow
def test_planted_overlaps_of_the_synthetic_data_are_found(tmp_path):
    """Five classes of the synthetic generator (2x2-binned frames) with 8 planted re-images."""
    score, _, _ = score_planted(tmp_path, ["Dengue", "Ebola", "Orf", "Papilloma", "Rotavirus"], 0.1, 8)
    assert score["planted"] == 8
    # measured 8/8 found, 8/8 claimed pairs right: the exposures of one specimen share its
    # stain grain, which the background NCC compares (the target is 0.95; scale 1,
    # binning 2: 60/60 found, 63/63 claimed pairs right)
    assert score["recall"] >= 0.95
    assert score["precision"] >= 0.95


@pytest.mark.slow
def test_planted_overlaps_of_large_synthetic_fields_are_found(tmp_path):
    """Issue 15, default data at scale 0.15: frames of 1024 px at up to 5.6 nm (fields of
    3-6 um). Shown in ``max_side_px`` pixels the coarse level was 32-64 nm, where the
    particles of TBE (50 nm) and Influenza vanish and registration rests on the background:
    the former code found 3 of these 6 plants. ``max_coarse_nm`` keeps the particles a few
    pixels wide; the plane removed before the coarse band-pass keeps a stain gradient's
    border bands from outranking the true shift (TBE); the relative screen lets a clear but
    low coarse NCC reach the fine check."""
    score, pairs, images = score_planted(tmp_path, ["Ebola", "Influenza", "TBE"], 0.15, 6)
    assert images.pixel_size_nm.max() > 5  # fields of several um: the coarse level is capped
    assert score["planted"] == 6
    assert score["planted_found"] == 6, pairs[pairs.decision == OVERLAP].to_dict("records")
    assert score["false_positive_pairs"] == 0


# --------------------------------------------------------------------- kinds of re-imaging


def big_particle_field(seed: int, size: int = 1400) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`textured_field` with large particles (radius 100-130 nm, Cowpox-like),
    whose annotations move when a border cuts them."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.normal(size=(size, size)), 3) * 40
    yy, xx = np.mgrid[:size, :size]
    centres = []
    for cy, cx in rng.integers(140, size - 140, (22, 2)).tolist():
        if all(np.hypot(cx - x, cy - y) > 270 for x, y in centres):
            field -= 60 * ((yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(100, 130) ** 2)
            centres.append((cx + 0.5, cy + 0.5))
    return field + 1000, np.array(centres)


def visible_centres(points: np.ndarray, side_px: float, radius_px: float) -> np.ndarray:
    """Annotations as boxes around the visible part give them: centres of the discs clipped
    to the field (cut particles' points move inwards)."""
    low, high = np.clip(points - radius_px, 0, side_px), np.clip(points + radius_px, 0, side_px)
    seen = (points + radius_px > 0).all(axis=1) & (points - radius_px < side_px).all(axis=1)
    return ((low + high) / 2)[seen]


def changed(kind: str, pixels: np.ndarray) -> np.ndarray:
    """``pixels`` with one change of real re-imaging: a monotone non-linear grey-level change,
    a shift of focus, black padding over the left 45% and the bottom 30%, or a lower dose
    (shot noise: Poisson counts of :data:`LOW_DOSE` a pixel on average, bright = more)."""
    values = pixels.astype(np.float64)
    if kind == "low_dose":
        counts = (values - values.min()) / (values - values.min()).mean() * LOW_DOSE
        rng = np.random.default_rng(int(values.sum()))  # b and c: noise of their own
        values = 1000 + rng.poisson(counts) * (values - values.min()).mean() / LOW_DOSE
    if kind == "exposure":
        values = 200 + 3000 * ((values - values.min()) / np.ptp(values)) ** 2.2
    elif kind == "focus":
        values = gaussian_filter(values, 2.5)
    elif kind == "padding":
        values[:, : int(0.45 * values.shape[1])] = 0
        values[int(0.7 * values.shape[0]) :, :] = 0
    return np.clip(values, 0, 65535).astype(np.uint16)


def pair_root(tmp_path: Path, a, b, c, nm: tuple[float, float, float]) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """A raw tree of one class with images a, b (one field) and c (another field)."""
    for image_id, image, pixel_nm in zip("abc", (a, b, c), nm):
        write_class_image(tmp_path, "train", "Ebola", image_id, image, pixel_nm)
    images, particles = read_dataset(tmp_path, hash_files=False)
    return tmp_path, images, particles


#: ``low_dose``: mean counts per pixel of b
LOW_DOSE = 3

KINDS = {
    # kind: (b's origin (nm) in the field, b's side (nm), b's pixel (nm), a's pixel (nm))
    "magnification": (260, 200, 600, 5, 2),  # 2.5x a's pixel size
    "magnification_down": (220, 260, 240, 1, 3),  # 0.33x: b's field is small
    "exposure": (250, 180, 500, 2, 2),
    "focus": (250, 180, 500, 2, 2),
    "padding": (120, 150, 560, 2, 2),
    "small_overlap": (330, 330, 560, 2, 2),  # 270 x 270 nm shared: 23% of either field
    "thin_strip": (30, 548, 600, 2, 2),  # 570 x 52 nm shared: a 9% strip, 26 fine pixels thick
    "low_dose": (250, 180, 500, 2, 2),  # b at a dose where shot noise outweighs the stain grain
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_of_reimaging_is_found_and_another_field_is_not(kind, tmp_path):
    one, two = textured_field(21), textured_field(22)
    x, y, side, b_nm, a_nm = KINDS[kind]
    a = view(one, 0, 0, 600, a_nm, 30)
    pixels, points = view(one, x, y, side, b_nm, 31)
    b = (changed(kind, pixels), points)
    c = (changed(kind, view(two, x, y, side, b_nm, 32)[0]), view(two, x, y, side, b_nm, 32)[1])
    root, images, particles = pair_root(tmp_path, a, b, c, (a_nm, b_nm, b_nm))
    pairs = score_pairs(images, root, SETTINGS, particles)
    ab = pair(pairs, "a", "b")
    assert ab.decision == OVERLAP, ab.to_dict()
    assert abs(ab.dx_nm - x) <= 2 * a_nm + 4 and abs(ab.dy_nm - y) <= 2 * a_nm + 4
    for other in [("a", "c"), ("b", "c")]:
        assert pair(pairs, *other).decision == DISTINCT, pair(pairs, *other).to_dict()


def test_pixel_size_a_few_percent_off_is_found_by_the_scale_search(tmp_path):
    one, two = textured_field(23), textured_field(24)
    a = view(one, 0, 0, 600, 2, 40)
    b = view(one, 200, 150, 600, 2, 41)
    c = view(two, 200, 150, 600, 2, 42)
    # b's tags say 2.1 nm/px (5% too large)
    root, images, particles = pair_root(tmp_path, a, b, c, (2.0, 2.1, 2.0))
    found = pair(score_pairs(images, root, SETTINGS, particles), "a", "b")
    assert found.decision == OVERLAP and found.scale == pytest.approx(2 / 2.1, abs=0.035)
    off = OverlapSettings(coarse_nm=6.0, scale_search=(), fallback_scales=())
    strict = pair(score_pairs(images, root, off, particles), "a", "b")
    assert strict.decision == DISTINCT and strict.fine_ncc < found.fine_ncc


def inverted(image: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A view saved as a negative (its grey levels turned upside down), with its points."""
    pixels, points = image
    return (pixels.max() - pixels).astype(pixels.dtype), points


def test_an_inverted_reimage_is_found_and_another_field_is_not(tmp_path):
    """b shows part of a's field as a negative (saved inverted by another program, or inverted on
    purpose): every NCC of the pair is negative, so it was missed (a leak where a and b lie in
    two subsets) while the cross-class copy check already compared inverted signatures. c is
    another field, also inverted: it stays apart from both."""
    one, two = textured_field(31), textured_field(32)
    a = view(one, 0, 0, 600, 2, 70)
    b = inverted(view(one, 200, 150, 600, 2, 71))
    c = inverted(view(two, 200, 150, 600, 2, 72))
    root, images, particles = pair_root(tmp_path, a, b, c, (2.0, 2.0, 2.0))
    pairs = score_pairs(images, root, SETTINGS, particles)
    ab = pair(pairs, "a", "b")
    assert ab.decision == OVERLAP and ab.inverted, ab.to_dict()
    assert ab.dx_nm == pytest.approx(200, abs=6) and ab.dy_nm == pytest.approx(150, abs=6), ab.to_dict()
    for other in [("a", "c"), ("b", "c")]:
        assert pair(pairs, *other).decision == DISTINCT, pair(pairs, *other).to_dict()


def turned_view(field, centre: tuple[float, float], side_nm: int, angle: float, mirrored: bool, seed: int):
    """A ``side_nm`` square of ``field`` about ``centre`` (nm) seen turned: b's point q
    (about its centre) shows the field at ``centre + M R(-angle) q`` (M mirrors x), so b is
    the field turned by ``angle`` after mirroring; 2 nm/px, noisy, uint16, with its points."""
    pixels, centres = field
    t = np.radians(angle)
    flip = np.diag([-1.0 if mirrored else 1.0, 1.0])
    to_field = flip @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])  # M R(-angle)
    q = np.stack(np.meshgrid(np.arange(side_nm) + 0.5, np.arange(side_nm) + 0.5), axis=-1) - side_nm / 2
    p = q @ to_field.T + centre
    window = map_coordinates(pixels, [p[..., 1] - 0.5, p[..., 0] - 0.5], order=1)
    blocks = window.reshape(side_nm // 2, 2, side_nm // 2, 2).mean(axis=(1, 3))
    noisy = np.clip(blocks + np.random.default_rng(seed).normal(0, 8, blocks.shape), 0, 65535).astype(np.uint16)
    local = ((centres - centre) @ to_field + side_nm / 2) / 2  # to_field is orthogonal
    return noisy, local[((local >= 0) & (local < side_nm // 2)).all(axis=1)]


#: kind: rotation (degrees) and mirror of b's view of the field
TURNS = {"rotated_2": (2.0, False), "rotated_-35": (-35.0, False), "rotated_90": (90.0, False), "mirrored": (0.0, True)}


@pytest.mark.parametrize("kind", sorted(TURNS))
def test_turned_reimaging_is_found_and_another_field_is_not(kind, tmp_path):
    """b re-images part of a's field turned (another magnification's image rotation, a holder
    put back) or mirrored (saved flipped); c is another field seen the same way. The turn comes
    from the annotated points, and without them from the images' keypoints; with neither
    search (``rotation_min_points: 0``, ``keypoint_min_inliers: 0``) the pair is missed."""
    angle, mirrored = TURNS[kind]
    one, two = textured_field(27), textured_field(28)
    a = view(one, 0, 0, 800, 2, 60)
    b = turned_view(one, (520, 480), 560, angle, mirrored, 61)
    c = turned_view(two, (520, 480), 560, angle, mirrored, 62)
    root, images, particles = pair_root(tmp_path, a, b, c, (2.0, 2.0, 2.0))
    pairs = score_pairs(images, root, SETTINGS, particles)
    ab = pair(pairs, "a", "b")
    # the turn found maps b back onto a: R(-angle), or for a mirror image M R(-angle) = R(angle) M
    back = angle if mirrored else -angle
    assert ab.decision == OVERLAP and ab.mirrored == mirrored and ab.turn_from == "points", ab.to_dict()
    assert abs((ab.rotation_deg - back + 180) % 360 - 180) <= 1.0, ab.to_dict()
    for other in [("a", "c"), ("b", "c")]:
        assert pair(pairs, *other).decision == DISTINCT, pair(pairs, *other).to_dict()
    by_keypoints = score_pairs(images, root, replace(SETTINGS, rotation_min_points=0), particles)
    ab = pair(by_keypoints, "a", "b")
    assert ab.decision == OVERLAP and ab.mirrored == mirrored and ab.turn_from == "keypoints", ab.to_dict()
    assert abs((ab.rotation_deg - back + 180) % 360 - 180) <= 1.0, ab.to_dict()
    for other in [("a", "c"), ("b", "c")]:
        assert pair(by_keypoints, *other).decision == DISTINCT, pair(by_keypoints, *other).to_dict()
    neither = OverlapSettings(coarse_nm=6.0, rotation_min_points=0, keypoint_min_inliers=0)
    unturned = pair(score_pairs(images, root, neither, particles), "a", "b")
    assert unturned.decision == DISTINCT and unturned.rotation_deg == 0 and unturned.turn_from == ""
    if kind == "rotated_-35":  # the decision figure shows b turned back
        from temvirus.overlap_figures import plot_pair

        plot_pair(pairs[(pairs.image_a == "a") & (pairs.image_b == "b")].iloc[0], images, root, tmp_path / "ab.png")
        assert (tmp_path / "ab.png").stat().st_size > 10_000


#: verified real pairs (one field twice) of many and of few particles, and an unrelated crop
REAL_TURNED = {
    "CCHF": ("635", "639", "1070"),  # 9 particles each: the points decide the turn
    "Rotavirus": ("A2-135k-071120_6", "A2-65k-071120_5", "A2-65k-071120_8"),  # 2 each: they cannot
}


@pytest.mark.realdata
@pytest.mark.parametrize(("cls", "turn_from"), [("CCHF", "points"), ("Rotavirus", "keypoints")])
def test_real_reimaging_turned_or_mirrored_is_found(real_crops, tmp_path, cls, turn_from):
    """A verified real pair with b turned by 90 and -23 degrees and mirrored then turned by 20,
    beside an unrelated crop of the class: each turned copy is grouped with a, by the points
    where the field holds enough of them (CCHF 635/639), else by the images' keypoints (the
    two-particle Rotavirus magnification pair)."""
    from temvirus.raw import read_image, read_positions

    def crop(image_id):
        path = next(real_crops.glob(f"*/{cls}/{image_id}.jpg"))
        points = read_positions(path.parent / "particle_positions" / f"{image_id}_particlepositions.txt")
        return read_image(path), np.concatenate([np.reshape(p, (-1, 2)) for p in points])

    a, b, other = REAL_TURNED[cls]
    (pixels_b, points_b) = crop(b)
    images = {"a": crop(a), "c": crop(other)}
    for name, angle, mirrored in (("r90", 90.0, False), ("r-23", -23.0, False), ("m20", 20.0, True)):
        turned_b = np.clip(np.round(turned(pixels_b, angle, mirrored, order=3)), 0, 255).astype(np.uint8)
        images[name] = (turned_b, turned_points(points_b, pixels_b.shape, angle, mirrored))
    for image_id, image in images.items():
        write_class_image(tmp_path, "train", cls, image_id, image, 1.0)
    table, particles = read_dataset(tmp_path, hash_files=False)
    pairs = score_pairs(table, tmp_path, OverlapSettings(), particles)
    print(pairs.to_string())
    claims = pairs[pairs.decision == OVERLAP]
    with_a = claims[claims.image_a == "a"]
    assert set(with_a.image_b) == {"m20", "r-23", "r90"}, claims.to_string()
    assert set(with_a.turn_from) == {turn_from}, claims.to_string()
    assert not ((claims.image_a == "c") | (claims.image_b == "c")).any(), claims.to_string()


def real_crop(real_crops: Path, cls: str, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """A real crop's pixels and its annotated particle centres (x, y pixels)."""
    from temvirus.raw import read_image, read_positions

    path = next(real_crops.glob(f"*/{cls}/{image_id}.jpg"))
    points = read_positions(path.parent / "particle_positions" / f"{image_id}_particlepositions.txt")
    return read_image(path), np.concatenate([np.reshape(p, (-1, 2)) for p in points])


#: real crops re-imaged at 2 nm (docs/overlap.md, "Kinds of real re-imaging"), and an unrelated crop
REAL_MISCALIBRATED = {
    "Rotavirus": ("A5-65k-070920_7", "B1-65k-070913_2"),
    "Papilloma": ("1562", "5963"),
}


@pytest.mark.realdata
@pytest.mark.parametrize("cls", sorted(REAL_MISCALIBRATED))
@pytest.mark.parametrize(("rotation", "recorded"), [(0.0, 0.9), (0.0, 1.1), (10.0, 1.1), (5.0, 0.9)])
def test_real_reimaging_with_the_pixel_size_recorded_10_percent_off_is_found(
    real_crops, tmp_path, cls, rotation, recorded
):
    """Part of a real crop's field (the right 714 of 1000 nm, 60% shared with a: the left 714)
    re-imaged at 2 nm (the workflow's Lanczos-3) with its pixel size recorded 10% off: found
    by the scale fallback (``fallback_scales`` 0.91, 1.1; without it the coarse screen fails:
    the probe's Rotavirus and Papilloma sources), the unrelated crop of the class not. Turned by
    ``rotation`` degrees as well, it was missed (turned pairs were scored at the recorded sizes
    only, the keypoints' RANSAC fitted no scale; the probe's 18 such re-images of six classes: 0
    found): the keypoints now fit a similarity, and the turned b is scored at its scale."""
    from temvirus.overlap import turned, turned_points
    from temvirus.rescale import rescale_image

    source, other = REAL_MISCALIBRATED[cls]
    pixels, points = real_crop(real_crops, cls, source)
    left, right = points[:, 0] < 714, points[:, 0] >= 286
    field = rescale_image(pixels[:, 286:].astype(np.float64), 0.5)  # 2 nm pixels
    b_points = (points[right] - [286, 0]) / 2
    if rotation:
        field, b_points = turned(field, rotation, False, order=3), turned_points(b_points, field.shape, rotation, False)
    b = np.clip(np.round(field), 0, 255).astype(np.uint8)
    write_class_image(tmp_path, "train", cls, "a", (pixels[:, :714], points[left]), 1.0)
    write_class_image(tmp_path, "test", cls, "b", (b, b_points), 2.0 * recorded)
    write_class_image(tmp_path, "validation", cls, "c", real_crop(real_crops, cls, other), 1.0)
    table, particles = read_dataset(tmp_path, hash_files=False)
    pairs = score_pairs(table, tmp_path, OverlapSettings(), particles)
    print(pairs.to_string())
    ab = pair(pairs, "a", "b")
    assert ab.decision == OVERLAP and ab.scale == pytest.approx(1 / recorded, rel=0.03), ab.to_dict()
    if not rotation:  # a turned b is placed about its turned centre
        assert abs(ab.dx_nm - 286) <= 8 and abs(ab.dy_nm) <= 8, ab.to_dict()
    assert (pairs.decision == OVERLAP).sum() == 1, pairs.to_string()


@pytest.mark.realdata
@pytest.mark.parametrize("kept", [0, 2, 12])
def test_a_real_reimage_annotated_in_part_is_found(real_crops, tmp_path, kept):
    """A real Papilloma crop (63 particles) cut into a (the left 700 nm) and b (the right 800 nm: a
    500 nm band shared), b annotated with ``kept`` of its particles: found (before, 12 or fewer were
    called distinct at fine and background NCC 0.996); the unrelated crop, annotated alike, not."""
    source, other = REAL_MISCALIBRATED["Papilloma"]
    pixels, points = real_crop(real_crops, "Papilloma", source)
    right = points[points[:, 0] >= 200] - [200, 0]
    write_class_image(tmp_path, "train", "Papilloma", "a", (pixels[:, :700], points[points[:, 0] < 700]), 1.0)
    write_class_image(tmp_path, "test", "Papilloma", "b", (pixels[:, 200:], right[:kept]), 1.0)
    pixels_c, points_c = real_crop(real_crops, "Papilloma", other)
    write_class_image(tmp_path, "validation", "Papilloma", "c", (pixels_c, points_c[:kept]), 1.0)
    table, particles = read_dataset(tmp_path, hash_files=False)
    pairs = score_pairs(table, tmp_path, OverlapSettings(), particles)
    print(pairs.to_string())
    ab = pair(pairs, "a", "b")
    assert ab.decision == OVERLAP and abs(ab.dx_nm - 200) <= 4 and abs(ab.dy_nm) <= 4, ab.to_dict()
    assert (pairs.decision == OVERLAP).sum() == 1, pairs.to_string()


#: real crops of the probe (docs/overlap.md, "Thin shared strips") and an unrelated crop of the class
REAL_STRIPS = {"Adenovirus": ("A4-080201_19", "B2-080201_24"), "CCHF": ("639", "8328")}


@pytest.mark.realdata
@pytest.mark.parametrize(("cls", "shared_nm"), [("Adenovirus", 40), ("Adenovirus", 81), ("CCHF", 40)])
def test_real_fields_sharing_a_thin_strip_are_found(real_crops, tmp_path, cls, shared_nm):
    """A real 1000 nm crop cut into two adjacent exposures, a (left) and b (right), sharing a
    strip of ``shared_nm`` (40 nm: 5 coarse pixels at 8 nm; 81 nm: 15% of either field): found,
    the unrelated crop of the class not. Before, the Adenovirus strips scored a coarse NCC of
    0.51-0.58 band-passed whole (one-sided local means at the two views' borders) and failed
    the screen; the CCHF strip (0.95) was crowded out of the candidates by a ridge of shifts
    along this crop's horizontal structure; a wrong corner was fine-checked instead."""
    source, other = REAL_STRIPS[cls]
    pixels, points = real_crop(real_crops, cls, source)
    width = (pixels.shape[1] + shared_nm) // 2
    x0 = pixels.shape[1] - width  # b's origin in a (nm: 1 nm pixels)
    a = (pixels[:, :width], points[points[:, 0] < width])
    b = (pixels[:, x0:], points[points[:, 0] >= x0] - [x0, 0])
    write_class_image(tmp_path, "train", cls, "a", a, 1.0)
    write_class_image(tmp_path, "test", cls, "b", b, 1.0)
    write_class_image(tmp_path, "validation", cls, "c", real_crop(real_crops, cls, other), 1.0)
    table, particles = read_dataset(tmp_path, hash_files=False)
    pairs = score_pairs(table, tmp_path, OverlapSettings(), particles)
    print(pairs.to_string())
    ab = pair(pairs, "a", "b")
    assert ab.decision == OVERLAP, ab.to_dict()
    assert abs(ab.dx_nm - x0) <= 4 and abs(ab.dy_nm) <= 4, ab.to_dict()
    assert (pairs.decision == OVERLAP).sum() == 1, pairs.to_string()


@pytest.mark.parametrize("angle, mirrored", [(0.0, False), (33.0, False), (90.0, True), (-120.0, True)])
def test_turned_points_land_where_turned_moves_their_pixels(angle, mirrored):
    spots = np.array([[5.5, 7.5], [50.5, 30.5], [30.5, 20.5]])  # continuous x, y (pixel centres)
    for (x, y), (qx, qy) in zip(spots, turned_points(spots, (40, 60), angle, mirrored)):
        image = np.zeros((40, 60), np.float32)
        image[int(y), int(x)] = 1.0
        out = turned(gaussian_filter(image, 1.5), angle, mirrored)
        row, col = np.unravel_index(np.argmax(out), out.shape)
        assert abs(row + 0.5 - qy) <= 1 and abs(col + 0.5 - qx) <= 1, (angle, mirrored, (row, col), (qy, qx))


def test_rigid_matches_recover_a_turn_and_reject_unrelated_points():
    rng = np.random.default_rng(5)
    b = rng.uniform(0, 900, (14, 2))
    for angle, mirrored in [(7.0, False), (-150.0, False), (40.0, True)]:
        flip = np.array([-1.0 if mirrored else 1.0, 1.0])
        t = np.radians(angle)
        a = (b * flip) @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) + [300, -100]
        a += rng.normal(0, 4, a.shape)
        best = rigid_matches(a, b, (2000, 2000), (900, 900), 30.0, 3, 0.4)[0]
        assert best["mirrored"] == mirrored and best["matches"] == 14
        assert abs((best["rotation_deg"] - angle + 180) % 360 - 180) < 0.5
        assert np.hypot(best["dx_nm"] - 300, best["dy_nm"] + 100) < 5
    sparse = rng.uniform(0, 5000, (6, 2))
    assert rigid_matches(sparse, rng.uniform(0, 5000, (6, 2)), (5000, 5000), (5000, 5000), 30.0, 3, 0.4) == []


def test_padding_and_cut_particles_do_not_count_as_disagreement(tmp_path):
    """b re-images part of a's field; a is black-padded where b shows particles (so a has no
    annotation there), and b's border cuts large particles, annotated at their visible part:
    counted over the whole overlap rectangle, as before, these points disagree."""
    field = big_particle_field(25)
    pixels_a, points_a = view(field, 0, 0, 1000, 2, 50)
    pixels_a[:, :150] = 0  # black padding over the left 300 nm
    points_a = points_a[points_a[:, 0] >= 150 + 65]
    x, y = 180, 120
    pixels_b, _ = view(field, x, y, 800, 2, 51)
    points_b = visible_centres((field[1] - [x, y]) / 2, 400, 115 / 2)
    pixels_c, points_c = view(big_particle_field(26), x, y, 800, 2, 52)
    root, images, particles = pair_root(
        tmp_path, (pixels_a, points_a), (pixels_b, points_b), (pixels_c, points_c), (2.0, 2.0, 2.0)
    )
    settings = OverlapSettings(coarse_nm=6.0, point_margin_nm=120.0)  # radius <= 130: cut points move <= 65 nm
    ab = pair(score_pairs(images, root, settings, particles), "a", "b")
    assert ab.decision == OVERLAP and ab.points >= 2 and ab.point_agreement == 1.0, ab.to_dict()
    # the old rule judged every point deeper than the tolerance inside the overlap rectangle
    a_nm, b_nm = points_a * 2, points_b * 2 + [ab.dx_nm, ab.dy_nm]
    x0, y0, x1, y1, tol = ab.dx_nm, ab.dy_nm, 1000, 1000, settings.point_tolerance_nm

    def in_rectangle(p):
        return (p[:, 0] > x0 + tol) & (p[:, 0] < x1 - tol) & (p[:, 1] > y0 + tol) & (p[:, 1] < y1 - tol)

    n_old, old = point_agreement(a_nm, b_nm, in_rectangle(a_nm), in_rectangle(b_nm), tol)
    assert n_old > ab.points and old < settings.min_point_agreement


def test_decision_figures_show_every_claim_and_the_near_misses(raw_root, tables, tmp_path):
    from temvirus.overlap_figures import plot_decisions

    images, particles = tables
    pairs = score_pairs(images, raw_root, SETTINGS, particles)
    pairs_csv, images_csv = tmp_path / "pairs.csv", tmp_path / "images.csv"
    pairs.to_csv(pairs_csv, index=False)
    images.to_csv(images_csv, index=False)
    plot_decisions(pairs_csv, images_csv, raw_root, tmp_path / "figures", near_misses=2)
    claimed = pairs[pairs.decision == OVERLAP]
    closest = pairs[pairs.decision == DISTINCT].nlargest(2, "evidence")
    expected = {f"{r['class']}__{r.image_a}__{r.image_b}.png" for _, r in pd.concat([claimed, closest]).iterrows()}
    assert len(claimed) >= 1 and {p.name for p in (tmp_path / "figures").iterdir()} == expected
    assert all(p.stat().st_size > 10_000 for p in (tmp_path / "figures").iterdir())


# ------------------------------------------------------------- registration and tiles


def masked_view(data: np.ndarray, valid: np.ndarray) -> _View:
    data = np.where(valid, data, 0).astype(np.float32)
    return _View(data, valid, data)


def test_ncc_surface_is_the_exact_masked_ncc_at_every_shift():
    """Padfield's masked NCC: the means and variances over each shift's jointly valid area
    (with padding in both images), equal to the direct Pearson correlation."""
    rng = np.random.default_rng(3)
    a = masked_view(rng.normal(size=(20, 24)) + 3, rng.random((20, 24)) > 0.2)
    b = masked_view(rng.normal(size=(15, 18)) - 2, rng.random((15, 18)) > 0.2)
    shape = (36, 45)
    ncc, n = ncc_surface(a, b, shape)
    shift_y, shift_x = _shifts(20, shape[0]), _shifts(24, shape[1])
    checked = 0
    for i in range(shape[0]):
        for j in range(shape[1]):
            dy, dx = int(shift_y[i]), int(shift_x[j])
            wide = min(20, dy + 15) - max(0, dy) >= 2 and min(24, dx + 18) - max(0, dx) >= 2
            if n[i, j] >= 10 and wide:
                assert ncc[i, j] == pytest.approx(_masked_ncc(a, b, dy, dx), abs=1e-3), (dy, dx)
                checked += 1
    assert checked > 500


def test_registration_prefers_a_significant_strip_to_a_small_corner_coincidence():
    """b shares a 12-pixel strip with a (NCC 0.99 over 1,440 pixels) and, by chance, a
    5x5 corner (NCC 1.0 over 25 pixels): the highest raw NCC is the corner, significance picks the strip."""
    rng = np.random.default_rng(4)
    field = gaussian_filter(rng.normal(size=(240, 120)), 1.0)
    a = field[:120].copy()
    b = field[108:228] + rng.normal(0, 0.04, (120, 120))
    b[-5:, -5:] = a[:5, :5]  # b's bottom-right corner repeats a's top-left corner
    va, vb = (masked_view((x - x.mean()) / x.std(), np.ones(x.shape, bool)) for x in (a, b))
    best = register(va, vb, OverlapSettings(min_overlap_px=20, min_overlap_fraction=0.0))
    assert (round(best["dy"]), round(best["dx"])) == (108, 0), best
    assert best["z"] > best["candidates"][1]["z"] and best["runner_up"] < best["ncc"]
    assert significance(0.6, 2000) > significance(0.8, 400) > significance(0.15, 16000)


def test_tiles_follow_a_thin_strip():
    joint = np.zeros((200, 300), bool)
    joint[150:170, 10:290] = True  # a 20-pixel strip: no 32-pixel square tile fits
    assert tile_shape(joint, 32) == (20, 51)
    rng = np.random.default_rng(5)
    a = rng.normal(size=joint.shape)
    tiles, agreement = tile_agreement(a, a + rng.normal(0, 0.3, a.shape), joint, 32, 0.5)
    assert tiles == 5 and agreement == 1.0
    tiles, agreement = tile_agreement(a, rng.normal(size=a.shape), joint, 32, 0.5)
    assert tiles == 5 and agreement == 0.0
    square = np.ones((70, 70), bool)
    assert tile_shape(square, 32) == (32, 32) and tile_agreement(a[:70, :70], a[:70, :70], square, 32, 0.5)[0] == 4


@pytest.mark.parametrize("max_ratio", [0.8, 0.95])
def test_descriptors_are_matched_as_scikit_image_matches_them(max_ratio):
    """The keypoint turn's matching (step 7) takes the distances from one matrix product
    instead of scikit-image's cdist: the same matches, ties and zero distances included
    (repeated descriptors, exact copies, near copies, unrelated ones)."""
    from skimage.feature import match_descriptors

    rng = np.random.default_rng(7)
    for _ in range(20):
        a = rng.integers(0, 256, (60, 128)).astype(np.uint8)
        near = np.clip(a[:25].astype(int) + rng.integers(-6, 7, (25, 128)), 0, 255).astype(np.uint8)
        b = np.concatenate([near, a[25:30], a[25:30], rng.integers(0, 256, (40, 128)).astype(np.uint8)])
        b = b[rng.permutation(len(b))]
        expected = match_descriptors(a, b, cross_check=True, max_ratio=max_ratio)
        np.testing.assert_array_equal(_matched_descriptors(a, b, max_ratio), expected)
        assert len(expected) >= 20  # the near copies match: the comparison is not of empty sets


def test_similarity_consensus_finds_a_planted_turn_and_never_fewer_inliers_than_ransac():
    """RANSAC over every pair of a few dozen keypoint matches: a similarity (turned 37
    degrees, scale 1.1) planted among random matches is found with exactly its inliers, and
    on unrelated matches it finds at least the inliers of scikit-image's 500 random draws."""
    from skimage.measure import ransac
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(3)
    truth = SimilarityTransform(scale=1.1, rotation=np.deg2rad(37), translation=(120.0, -40.0))
    src = rng.uniform(0, 1000, (30, 2))
    dst = rng.uniform(0, 1000, (30, 2))
    dst[:12] = truth(src[:12]) + rng.normal(0, 1.0, (12, 2))
    model, inliers = _similarity_consensus(src, dst, 6.0)
    assert np.flatnonzero(inliers).tolist() == list(range(12))
    assert model.scale == pytest.approx(1.1, abs=0.005)
    assert np.rad2deg(model.rotation) == pytest.approx(37, abs=0.3)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        src, dst = rng.uniform(0, 300, (25, 2)), rng.uniform(0, 300, (25, 2))
        _, ours = _similarity_consensus(src, dst, 6.0)
        with warnings.catch_warnings():  # "No inliers found" where no draw gives a plausible scale
            warnings.simplefilter("ignore", UserWarning)
            _, theirs = ransac(
                (src, dst),
                SimilarityTransform,
                min_samples=2,
                residual_threshold=6.0,
                is_model_valid=lambda m, *_: 1 / 1.2 <= m.scale <= 1.2,
                max_trials=500,
                rng=0,
            )
        assert (0 if ours is None else ours.sum()) >= (0 if theirs is None else theirs.sum())
