"""The synthetic raw dataset: Table 1's counts, the raw layout, planted overlaps, determinism."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import PAPER, TINY_CLASSES
from scipy.ndimage import gaussian_filter, map_coordinates

from temvirus.classes import CLASSES, FOLDER_NAMES, load_table1
from temvirus.raw import read_dataset
from temvirus.split import deal_representative, representative_order
from temvirus.synth import CHANGES, SIZE_COLUMNS, TRUTH_COLUMNS, generate_dataset
from temvirus.synth.plan import particle_counts, plan_dataset
from temvirus.synth.specimen import PIXEL_SIZE_RANGE_NM, make_specimen

TABLE1 = load_table1(PAPER / "table1_dataset.csv")
PAPER_SUFFIXES = {"train": "train", "validation": "val", "test": "test"}


def test_plan_at_scale_one_is_table1_per_class_and_subset():
    plan = plan_dataset(TABLE1, 1.0, seed=7)
    assert sorted(plan["class"].unique()) == sorted(CLASSES)
    assert len(plan) == 1245 and plan.n_particles.sum() == 7677
    assert plan.image_id.is_unique and (plan.n_particles >= 1).all()
    for (cls, subset), group in plan.groupby(["class", "subset"]):
        column = PAPER_SUFFIXES[subset]
        assert len(group) == TABLE1.loc[cls, f"images_{column}"], (cls, subset)
        assert group.n_particles.sum() == TABLE1.loc[cls, f"particles_{column}"], (cls, subset)


def test_representative_split_of_the_plan_reproduces_its_folders():
    plan = plan_dataset(TABLE1, 1.0, seed=7)
    for cls, group in plan.groupby("class"):
        ordered = representative_order(group)
        assert list(ordered.subset) == deal_representative(len(group)), cls


@pytest.mark.parametrize("scale", [0.001, 0.03, 0.2])
def test_smaller_scales_keep_every_subset_of_every_class(scale):
    plan = plan_dataset(TABLE1, scale, seed=7)
    assert sorted(plan["class"].unique()) == sorted(CLASSES)
    subsets = plan.groupby("class").subset.agg(set)
    assert (subsets == {"train", "validation", "test"}).all()
    sizes = plan.groupby("class").size()
    expected = np.maximum(4, np.round(scale * TABLE1.images_total)).astype(int)
    assert (sizes == expected.reindex(sizes.index)).all()
    # the mean particles per image follow Table 1
    mean = plan.groupby("class").n_particles.mean()
    table_mean = (TABLE1.particles_total / TABLE1.images_total).reindex(mean.index)
    assert (np.abs(mean - table_mean) <= 0.5 * table_mean + 1).all()


def test_particle_counts_are_non_decreasing_and_meet_subset_targets():
    labels = np.array(deal_representative(12))
    # reachable targets (e.g. 1 1 2 2 3 3 4 4 5 5 6 20) are met exactly
    counts = particle_counts(12, 56, {"train": 24, "validation": 7, "test": 25})
    assert (np.diff(counts) >= 0).all() and counts.min() >= 1 and counts.sum() == 56
    assert [counts[labels == s].sum() for s in ("train", "validation", "test")] == [24, 7, 25]
    # unreachable ones (validation images come after test images) still give the total
    counts = particle_counts(12, 60, {"train": 10, "validation": 45, "test": 5})
    assert (np.diff(counts) >= 0).all() and counts.min() >= 1 and counts.sum() == 60


def test_plan_rejects_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        plan_dataset(TABLE1, 0, seed=1)
    with pytest.raises(ValueError, match=r"unknown classes \['Smallpox'\]; the classes: Adenovirus, Astrovirus, "):
        plan_dataset(TABLE1, 0.1, seed=1, classes=["Smallpox"])
    # a folder's spelling names its class, as the raw reader takes it (was "unknown classes ['Rift Valley']")
    pd.testing.assert_frame_equal(
        plan_dataset(TABLE1, 0.1, seed=1, classes=["Rift Valley", "rotavirus"]),
        plan_dataset(TABLE1, 0.1, seed=1, classes=["RiftValley", "Rotavirus"]),
    )


TABLE1_LINES = (PAPER / "table1_dataset.csv").read_text(encoding="utf-8").splitlines(keepends=True)
ADENOVIRUS = "Adenovirus,80,40,13,14,67,160,44,86,290,yes\n"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "not a CSV table: No columns to parse"),
        ("a,b\n1,2\n", "columns ['virus', 'avg_particle_size_nm', "),
        (TABLE1_LINES[0], "missing classes ['Adenovirus', 'Astrovirus', "),
        ("".join(TABLE1_LINES) + ADENOVIRUS, "repeated classes ['Adenovirus'] in column virus"),
        ("".join(TABLE1_LINES) + "Smallpox" + ADENOVIRUS[10:], "unknown classes ['Smallpox']"),
        (ADENOVIRUS.replace(",40,", ",abc,"), "class Adenovirus, column images_train: 'abc' is not a positive integer"),
        (ADENOVIRUS.replace(",40,", ",-5,"), "class Adenovirus, column images_train: '-5' is not a positive integer"),
        (ADENOVIRUS.replace(",40,", ",4.5,"), "class Adenovirus, column images_train: '4.5' is not a positive integer"),
        ("Adenovirus,80\n", "class Adenovirus, column images_train: '' is not a positive integer"),
        (ADENOVIRUS.replace("s,80,", "s,0,"), "class Adenovirus, column avg_particle_size_nm: '0' is not a positive"),
        (
            ADENOVIRUS.replace("s,80,", "s,nan,"),
            "class Adenovirus, column avg_particle_size_nm: 'nan' is not a positive",
        ),
        (
            ADENOVIRUS.replace(",67,", ",68,"),
            "class Adenovirus, column images_total: 68 is not the sum 67 of its subsets",
        ),
        (
            ADENOVIRUS.replace(",160,44,86,290,", ",1,44,86,131,"),
            "class Adenovirus, column particles_train: 1 particles for 40 images",
        ),
    ],
)
def test_load_table1_names_the_file_class_and_column_of_a_bad_table(tmp_path, text, error):
    """A malformed Table 1 stops with one message naming the file, the class and the column; before,
    these were KeyErrors, TypeErrors, OverflowErrors, or (fewer particles than images, negative
    counts) a dataset silently unlike the table."""
    path = tmp_path / "table1.csv"
    if text.startswith("Adenovirus,"):  # the package's table with the Adenovirus row replaced
        text = "".join(text if line.startswith("Adenovirus,") else line for line in TABLE1_LINES)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        load_table1(path)
    assert str(caught.value).startswith(f"{path}: ") and error in str(caught.value)


def test_cli_synth_with_a_bad_table1_says_why_and_writes_nothing(tmp_path):
    path = tmp_path / "table1.csv"
    path.write_text("".join(TABLE1_LINES).replace(ADENOVIRUS, ADENOVIRUS.replace(",40,", ",-5,")), encoding="utf-8")
    out = tmp_path / "raw"
    proc = subprocess.run(
        [Path(sys.executable).with_name("temvirus"), "synth", "--out", out, "--truth", tmp_path / "truth.csv"]
        + ["--scale", "0.01", "--classes", "Adenovirus", "--table1", path],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"temvirus synth: error: {path}: class Adenovirus, column images_train: '-5'" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "args, error",
    [
        (["synth", "--seed", "-5"], "argument --seed: must be at least 0, got -5"),
        (["synth", "--seed", "1.5"], "argument --seed: must be a whole number, at least 0, got '1.5'"),
        (["synth", "--scale", "0"], "argument --scale: must be in (0, 1], got 0"),
        (["synth", "--scale", "nan"], "argument --scale: must be a finite number, in (0, 1], got 'nan'"),
        (["synth", "--overlaps", "-1"], "argument --overlaps: must be at least 0, got -1"),
        (["audit", "r", "--near-bits", "65"], "argument --near-bits: must be in [0, 64], got 65"),
        (["audit", "r", "--leak-ncc", "-0.5"], "argument --leak-ncc: must be in (0, 1], got -0.5"),
        (
            ["analyse", "a", "--model", "m", "--pixel-size", "inf"],
            "--pixel-size: must be a finite number, above 0, got 'inf'",
        ),
        (["analyse", "a", "--model", "m", "--pixel-size", "1e400"], "--pixel-size: must be a finite number, above 0"),
        # int() and float() take these; nobody means 10 nm by '1_0', and the tags reader refuses both
        (["analyse", "a", "--model", "m", "--pixel-size", "1_0"], "--pixel-size: must be a number, above 0, got '1_0'"),
        (["analyse", "a", "--model", "m", "--pixel-size", "\uff11"], "--pixel-size: must be a number, above 0, got"),
        (["analyse", "a", "--model", "m", "--threads", "-2"], "argument --threads: must be in [1, 1024], got -2"),
        # more failed as "cannot read image (ImportError ...)", blaming the image
        (
            ["analyse", "a", "--model", "m", "--threads", "100000"],
            "argument --threads: must be in [1, 1024], got 100000",
        ),
    ],
)
def test_cli_numeric_options_out_of_range_name_the_option_and_range(args, error, tmp_path, capsys):
    """``temvirus synth --seed -5`` failed inside numpy ("expected non-negative integer"), not
    naming the option: every numeric option is checked as it is parsed (exit 2, nothing written)."""
    from temvirus.cli import main

    with pytest.raises(SystemExit) as stopped:
        main([*args, "--out", str(tmp_path / "out"), "--truth", str(tmp_path / "truth.csv")])
    assert stopped.value.code == 2 and error in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ["synth", "--out", "keep.txt", "--truth", "truth.csv"],
        ["synth", "--out", "keep.txt/raw", "--truth", "truth.csv"],
        ["download", "--weights", "vgg16", "--out", "keep.txt"],
    ],
)
def test_cli_an_output_folder_that_is_a_file_is_named_as_such(args, tmp_path, monkeypatch, capsys):
    """``--out`` naming a file (or a folder inside one) printed Python's words, "[Errno 20] Not a
    directory: 'keep.txt'" or "[Errno 17] File exists: 'keep.txt'"; now the file is named and the
    problem said, and nothing is written (found by helper-81)."""
    from temvirus.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("keep\n")
    assert main(args) == 1
    assert capsys.readouterr().err.strip() == (
        f"temvirus {args[0]}: error: keep.txt: a file is there, where a folder is needed"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert (tmp_path / "keep.txt").read_text() == "keep\n"


@pytest.fixture(scope="module")
def tiny(tiny_synthetic):
    images, particles = read_dataset(tiny_synthetic / "raw")
    truth = pd.read_csv(tiny_synthetic / "truth.csv")
    return tiny_synthetic / "raw", images, particles, truth


def test_tiny_dataset_reads_back_with_the_planned_counts(tiny):
    root, images, particles, truth = tiny
    plan = plan_dataset(TABLE1, 0.001, seed=3, classes=TINY_CLASSES)
    assert list(truth.columns) == TRUTH_COLUMNS and len(truth) == 3
    originals = images[~images.image_id.isin(truth.image_id)].set_index("image_id")
    assert sorted(originals.index) == sorted(plan.image_id)
    planned = plan.set_index("image_id").loc[originals.index]
    assert (originals.n_particles == planned.n_particles).all()
    assert (originals.folder_subset == planned.subset).all()
    assert (originals["class"] == planned["class"]).all()
    # folder names are those of the published layout
    assert {Path(p).parts[1] for p in images.path} == {FOLDER_NAMES[c] for c in TINY_CLASSES}
    assert len(particles.groupby(["image_id", "particle"])) == images.n_particles.sum()


def test_true_sizes_cover_every_annotated_particle(tiny_synthetic):
    """sizes.csv: one row per annotated particle, diameters near Table 1's, lengths of the shapes."""
    images, particles = read_dataset(tiny_synthetic / "raw")
    sizes = pd.read_csv(tiny_synthetic / "sizes.csv")
    assert list(sizes.columns) == SIZE_COLUMNS
    annotated = particles[["image_id", "particle"]].drop_duplicates()
    assert sorted(map(tuple, annotated.to_numpy())) == sorted(map(tuple, sizes[["image_id", "particle"]].to_numpy()))
    for cls, rows in sizes.groupby("class"):
        mean = TABLE1.loc[cls, "avg_particle_size_nm"]
        assert 0.7 * mean < rows.diameter_nm.median() < 1.3 * mean, cls
    assert (sizes.length_nm >= sizes.diameter_nm - 1e-6).all()
    assert (sizes[sizes["class"] == "Ebola"].length_nm > 2 * sizes[sizes["class"] == "Ebola"].diameter_nm).all()


def test_images_are_uint16_camera_frames_at_plausible_pixel_sizes(tiny):
    root, images, _, _ = tiny
    sizes = set(zip(images.width, images.height))
    assert sizes <= {(688, 516), (1024, 1024)}
    assert images.pixel_size_nm.between(*PIXEL_SIZE_RANGE_NM).all()
    diameters = TABLE1.avg_particle_size_nm.reindex(images["class"]).to_numpy()
    assert (diameters / images.pixel_size_nm.to_numpy() >= 10).all()  # particles are resolved
    for path in images.path:
        with tifffile.TiffFile(root / path) as tif:
            page = tif.pages[0]
            assert page.dtype == np.uint16 and 306 not in page.tags  # no DateTime: identical bytes
            pixels = page.asarray()
        assert pixels.std() > 0 and pixels.max() < 2**14


def test_tags_and_positions_follow_the_raw_format(tiny):
    root, images, _, _ = tiny
    row = images.iloc[0]
    tags = (root / row.tags_path).read_text().splitlines()
    assert tags[0] == f"Height;{row.height}" and tags[1] == f"Width;{row.width}"
    assert tags[5].startswith("XScale;") and "," in tags[5] and tags[5] == tags[6].replace("YScale", "XScale")
    positions = (root / row.positions_path).read_text().splitlines()
    assert positions[:3] == [f"image;{Path(row.path).name}", "unit;pixel", "format;x;y"]
    assert positions[3] == "particleposition"


def test_shapes_of_the_centre_lines(tiny):
    _, images, particles, _ = tiny
    per_particle = particles.merge(images[["image_id", "class", "pixel_size_nm"]]).groupby(["image_id", "particle"])
    points = per_particle.size()
    cls = per_particle["class"].first()
    assert (points[cls == "Orf"] == 2).all()  # oval: 2-point centre line
    assert (points[cls.isin(["Papilloma", "Rotavirus"])] == 1).all()
    assert (points[cls == "Ebola"] >= 2).all()
    ebola = particles.merge(images[["image_id", "class", "pixel_size_nm"]]).query("`class` == 'Ebola'")
    for _, line in ebola.groupby(["image_id", "particle"]):
        steps = np.hypot(np.diff(line.x), np.diff(line.y)) * line.pixel_size_nm.iloc[0]
        assert steps.min() > 35 and steps.max() < 110  # vertices every 50-100 nm (+ click jitter)


def _total_turn_deg(line: np.ndarray) -> float:
    """Total change of heading (degrees) along a dense centre line."""
    heading = np.unwrap(np.arctan2(*np.diff(line, axis=0).T[::-1]))
    return float(np.degrees(abs(heading[-1] - heading[0])))


def test_marburg_virions_curl_and_ebola_virions_lie_straight():
    """As in the published images (FILAMENTS): half the Marburg virions or more turn by a half circle or
    more (hook, "6", U, ring), most Ebola virions by less than a quarter circle."""
    turns = {}
    for cls in ("Ebola", "Marburg"):
        specimens = [make_specimen(cls, 4, 80.0, (1024, 1024), seed=3, image_id=f"{cls}_{i:04d}") for i in range(25)]
        turns[cls] = np.array([_total_turn_deg(p.body.line) for s, _ in specimens for p in s.particles])
    assert len(turns["Ebola"]) == len(turns["Marburg"]) == 100
    assert np.mean(turns["Marburg"] >= 180) >= 0.5
    assert np.mean(turns["Ebola"] < 90) >= 0.6
    assert np.median(turns["Marburg"]) > 2 * np.median(turns["Ebola"])


def test_planted_overlaps_reimage_the_same_particles(tiny):
    root, images, particles, truth = tiny
    table = images.set_index("image_id")
    for t in truth.itertuples():
        source = table.loc[t.source_image_id]
        extra = table.loc[t.image_id]
        assert (extra["class"], extra.folder_subset) == (source["class"], source.folder_subset) == (t._3, t.subset)
        assert extra.n_particles == t.n_particles < source.n_particles == t.source_n_particles
        assert 0.2 <= t.overlap_fraction <= 0.8
        assert extra.pixel_size_nm == t.pixel_size_nm != t.source_pixel_size_nm == source.pixel_size_nm
        # every annotated point of the extra image is a point of the source, moved by the
        # offset (but for particles cut by the border: the centre of their visible part)
        mine = particles[particles.image_id == t.image_id][["x", "y"]].to_numpy()
        theirs = particles[particles.image_id == t.source_image_id][["x", "y"]].to_numpy()
        mapped = (mine * t.pixel_size_nm + [t.offset_x_nm, t.offset_y_nm]) / t.source_pixel_size_nm
        nearest = np.min(np.hypot(*(mapped[:, None, :] - theirs[None, :, :]).transpose(2, 0, 1)), axis=1)
        assert nearest.max() < 0.05 or t.change == "cutoff"
    # the kinds of change are dealt in turn
    assert sorted(truth.change) == sorted(CHANGES[: len(truth)])


def _detail(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """Band-pass (difference of Gaussians): particles and debris without gradients or shot noise."""
    pixels = pixels.astype(np.float32)
    return gaussian_filter(pixels, sigma) - gaussian_filter(pixels, 8 * sigma)


def test_planted_overlaps_show_the_same_specimen(tiny):
    root, images, _, truth = tiny
    table = images.set_index("image_id")
    for t in truth.itertuples():
        source = tifffile.imread(root / table.loc[t.source_image_id, "path"])
        extra = tifffile.imread(root / table.loc[t.image_id, "path"])
        # source pixel centres -> extra pixel coordinates; keep those well inside the extra field
        rows, cols = np.mgrid[0 : source.shape[0], 0 : source.shape[1]].astype(np.float64)
        ex = ((cols + 0.5) * t.source_pixel_size_nm - t.offset_x_nm) / t.pixel_size_nm - 0.5
        ey = ((rows + 0.5) * t.source_pixel_size_nm - t.offset_y_nm) / t.pixel_size_nm - 0.5
        inside = (ex > 10) & (ex < extra.shape[1] - 10) & (ey > 10) & (ey < extra.shape[0] - 10)
        assert inside.mean() > 0.15
        sigma = max(1.0, 3.0 / t.source_pixel_size_nm)
        seen = map_coordinates(_detail(extra, sigma * t.source_pixel_size_nm / t.pixel_size_nm), [ey, ex], order=1)
        mine = _detail(source, sigma)
        same = np.corrcoef(mine[inside], seen[inside])[0, 1]
        shifted = np.corrcoef(np.roll(mine, source.shape[1] // 3, axis=1)[inside], seen[inside])[0, 1]
        assert same > 0.5 and abs(shifted) < 0.3, (t.image_id, same, shifted)


def test_stain_grain_is_fixed_on_the_specimen_and_area_averaged():
    """Two exposures of one specimen see the same grain: shifted by whole pixels it is the same
    numbers, and a pixel twice as large is the mean of the four small ones it covers."""
    from temvirus.synth.render import Exposure, stain_grain
    from temvirus.synth.specimen import make_specimen

    specimen, _ = make_specimen("Dengue", 3, 45.0, (200, 200), 5, "Dengue_0000")
    scope = "Tecnai 10 (MegaView III)"
    fine = stain_grain(specimen, Exposure((-30.0, 12.5), 2.5, (96, 80), scope))
    shifted = stain_grain(specimen, Exposure((-30.0 + 10 * 2.5, 12.5 + 4 * 2.5), 2.5, (40, 40), scope))
    coarse = stain_grain(specimen, Exposure((-30.0, 12.5), 5.0, (48, 40), scope))
    assert fine.std() > 0.01
    np.testing.assert_allclose(shifted, fine[4:44, 10:50], atol=1e-6)
    np.testing.assert_allclose(coarse, fine.reshape(40, 2, 48, 2).mean(axis=(1, 3)), atol=1e-5)
    other, _ = make_specimen("Dengue", 3, 45.0, (200, 200), 5, "Dengue_0001")
    assert (
        abs(np.corrcoef(fine.ravel(), stain_grain(other, Exposure((-30.0, 12.5), 2.5, (96, 80), scope)).ravel())[0, 1])
        < 0.2
    )


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_bytes(tmp_path):
    kwargs = dict(
        table1=PAPER / "table1_dataset.csv", scale=0.001, overlaps=1, binning=2, classes=["Astrovirus", "Marburg"]
    )
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        generate_dataset(tmp_path / name / "raw", tmp_path / name / "truth.csv", seed=seed, **kwargs)
    a, b, c = (_digests(tmp_path / name) for name in "abc")
    assert len(a) == 8 * 3 + 3 + 1  # 8 images + 1 overlap, each with tags and positions; truth
    assert a == b
    tifs = [k for k in a if k.endswith(".tif")]
    assert all(a[k] != c.get(k) for k in tifs)


def test_existing_output_and_failed_runs_leave_no_partial_tree(tmp_path):
    kwargs = dict(
        table1=PAPER / "table1_dataset.csv", scale=0.001, seed=1, overlaps=0, binning=2, classes=["Sapovirus"]
    )
    full = tmp_path / "full"
    (full / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not empty"):
        generate_dataset(full, tmp_path / "truth.csv", **kwargs)
    bad_truth = tmp_path / "truth_is_a_folder"
    (bad_truth / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="truth_is_a_folder: is a folder"):
        generate_dataset(tmp_path / "out" / "raw", bad_truth, **kwargs)
    assert list((tmp_path / "out").iterdir()) == []  # neither the tree nor its temporary folder
    inside = tmp_path / "out" / "raw"
    for truth, sizes, what in (
        (inside / "truth.csv", None, "truth.csv: inside the output folder"),
        (tmp_path / "truth.csv", inside / "train" / "sizes.csv", "sizes.csv: inside the output folder"),
    ):
        with pytest.raises(ValueError, match=what):
            generate_dataset(inside, truth, sizes_csv=sizes, **kwargs)
    with pytest.raises(ValueError, match="overlaps must be at least 0, got -3"):
        generate_dataset(inside, tmp_path / "truth.csv", **{**kwargs, "overlaps": -3})
    assert list((tmp_path / "out").iterdir()) == [] and not (tmp_path / "truth.csv").exists()


def test_cli_synth_and_read(tmp_path):
    temvirus = Path(sys.executable).with_name("temvirus")
    out, truth = tmp_path / "raw", tmp_path / "truth.csv"
    args = ["synth", "--out", out, "--truth", truth, "--scale", "0.001", "--seed", "5", "--overlaps", "1"]
    proc = subprocess.run(
        [temvirus, *args, "--binning", "2", "--classes", "Sapovirus"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(truth)) == 1 and len(list(out.glob("*/Sapovirus/*.tif"))) == 5
    proc = subprocess.run([temvirus, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "not empty" in proc.stderr
    images_csv, particles_csv = tmp_path / "images.csv", tmp_path / "particles.csv"
    proc = subprocess.run(
        [temvirus, "read", out, "--images", images_csv, "--particles", particles_csv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    images = pd.read_csv(images_csv)
    assert len(images) == 5 and f"{out}: 5 images" in proc.stdout
    assert images.n_particles.sum() == len(pd.read_csv(particles_csv).groupby(["image_id", "particle"]))
    # the summary's reader gone before it is printed (`temvirus read ... | head -0`): the tables are
    # written, no "error: [Errno 32] Broken pipe" (status 1, as if the read had failed): SIGPIPE's 141
    images_csv.unlink()
    reader = subprocess.Popen(
        [temvirus, "read", out, "--images", images_csv, "--particles", particles_csv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reader.stdout.close()
    status, stderr = reader.wait(timeout=60), reader.stderr.read().decode()
    assert status == 141 and "Broken pipe" not in stderr and "Traceback" not in stderr, stderr
    pd.testing.assert_frame_equal(pd.read_csv(images_csv), images)


def test_figure_with_and_without_real_examples(tiny_synthetic, real_crops, tmp_path):
    from PIL import Image

    from temvirus.figures import example_crops, plot_synthetic_vs_real

    crops = example_crops(tiny_synthetic / "raw", "Orf", 2, seed=1)
    assert len(crops) == 2 and all(c.shape == (256, 256) and c.std() > 0 for c in crops)
    # folders and files named as the raw reader also accepts ('TRAIN/orf/', a positions file in upper case):
    # before, no real example was found there and the figure lost its real column without a word
    renamed = tmp_path / "renamed"
    shutil.copytree(tiny_synthetic / "raw", renamed)
    for subset in [d for d in renamed.iterdir() if d.is_dir()]:
        (subset / "Orf").rename(subset / "orf")
        for f in (subset / "orf" / "particle_positions").iterdir():
            f.rename(f.with_name(f.name.upper()))
        subset.rename(subset.with_name(subset.name.upper()))
    again = example_crops(renamed, "Orf", 2, seed=1)
    assert len(again) == 2 and all(np.array_equal(a, b) for a, b in zip(crops, again))
    plot_synthetic_vs_real(tiny_synthetic / "raw", real_crops, tmp_path / "both.png", seed=1, per_class=1)
    plot_synthetic_vs_real(tiny_synthetic / "raw", tmp_path / "absent", tmp_path / "synthetic.png", seed=1, per_class=1)
    both, alone = Image.open(tmp_path / "both.png"), Image.open(tmp_path / "synthetic.png")
    assert both.width > alone.width and both.height == alone.height  # the real column is left out


@pytest.mark.slow
def test_snakemake_generates_reads_and_plots(tmp_path):
    from conftest import snakemake_cmd

    (tmp_path / "tiny.yaml").write_text(
        "dataset:\n  source: synthetic\n  synthetic:\n    scale: 0.001\n    overlaps: 2\n    binning: 2\n"
        "    real_examples: ''\n"
    )
    targets = ["results/raw/images.csv", "results/figures/synthetic_vs_real.png"]
    proc = subprocess.run(
        snakemake_cmd(tmp_path, *targets, "--configfile", str(tmp_path / "tiny.yaml")),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    images = pd.read_csv(tmp_path / "results/raw/images.csv")
    truth = pd.read_csv(tmp_path / "results/raw/synthetic_truth.csv")
    assert len(images) == 22 * 4 + 2 and len(truth) == 2 and set(truth.image_id) <= set(images.image_id)
    assert images["class"].nunique() == 22
    assert (tmp_path / "results/figures/synthetic_vs_real.png").stat().st_size > 10_000
    assert "synthetic" in (tmp_path / "logs/data/synthetic_dataset.log").read_text()


@pytest.mark.parametrize(
    "image_id,binning,n,diameter",
    [("RiftValley_0126", 2, 65, 90.0), ("Papilloma_0029", 1, 99, 55.0)],  # Table 1's plan at seed 7
)
def test_crowded_fields_hold_every_particle_apart(image_id, binning, n, diameter):
    """A crowded cluster clipped to the field put two particles on each other: at scale 1.0, seed 7,
    RiftValley_0126 (binning 2) had two 90 nm particles 2.9 nm apart and Papilloma_0029 (binning 1)
    two 55 nm ones 1.1 nm apart, annotated as two particles, which the raw reader now refuses
    (NEAR_POINT_NM). Now such a particle moves to a free place, and Table 1's count is kept."""
    from scipy.spatial.distance import pdist

    from temvirus.raw import NEAR_POINT_NM
    from temvirus.synth.plan import MICROSCOPES

    size_px = tuple(side // binning for side in MICROSCOPES["Tecnai 10 (MegaView III)"][0])
    cls = image_id.split("_")[0]
    specimen, _ = make_specimen(cls, n, diameter, size_px, 7, image_id)
    assert len(specimen.particles) == n
    centres = np.array([p.points[0] for p in specimen.particles])
    assert pdist(centres).min() > max(NEAR_POINT_NM, 0.4 * diameter)
