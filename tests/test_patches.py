"""Patch centres, ids, mirror padding, the extraction to arrays, export; real crops."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import write_raw_image

from temvirus.io import sha256_file
from temvirus.patches import (
    PATCH_COLUMNS,
    export_published,
    extract_image,
    extract_patches,
    patch_id,
    patch_points,
    write_rescaled_images,
)
from temvirus.raw import RawDataError, read_dataset, write_tables
from temvirus.rescale import quantize, rescale_image, window
from temvirus.split import SUBSETS


def noise(seed: int, shape: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(seed).integers(100, 60000, shape, dtype=np.uint16)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A 4-image raw dataset (pixel sizes 0.5, 1, 2.5, 4 nm) with its tables and a split table."""
    base = tmp_path_factory.mktemp("tiny")
    root = base / "raw"
    write_raw_image(
        root, "train", "Orf", "orf_a", noise(1, (300, 260)), 0.5, [[(20.0, 30.0), (60.0, 70.0)], [(250.0, 290.0)]]
    )
    write_raw_image(
        root,
        "train",
        "Ebola",
        "ebola_a",
        noise(2, (120, 140)),
        2.5,
        [[(10.0, 10.0), (50.0, 20.0), (90.0, 100.0), (139.0, 119.0)]],
    )
    write_raw_image(root, "test", "Orf", "orf_b", noise(3, (200, 200)), 1.0, [[(0.0, 0.0)], [(100.5, 199.9)]])
    write_raw_image(
        root,
        "validation",
        "Rift Valley",
        "rift_a",
        noise(4, (64, 80)),
        4.0,
        [[(40.0, 32.0)], [(5.0, 60.0), (7.0, 62.0)]],
    )
    write_tables(root, base / "images.csv", base / "particles.csv")
    images = pd.read_csv(base / "images.csv")
    split = images[["image_id", "class", "n_particles", "folder_subset"]].assign(
        overlap_group=images.image_id, subset=images.folder_subset
    )
    split.to_csv(base / "split.csv", index=False)
    return {
        "base": base,
        "root": root,
        "images": base / "images.csv",
        "particles": base / "particles.csv",
        "split": base / "split.csv",
    }


def run_extract(tiny: dict[str, Path], out: Path, split_csv: Path | None = None) -> pd.DataFrame:
    arrays = {s: out / f"{s}.npy" for s in SUBSETS}
    return extract_patches(
        split_csv or tiny["split"], tiny["images"], tiny["particles"], tiny["root"], out / "patches.csv", arrays
    )


def copy_raw(tiny: dict[str, Path], root: Path) -> tuple[Path, pd.DataFrame]:
    """A copy of the tiny raw images under ``root`` (to damage one), and the image table."""
    images = pd.read_csv(tiny["images"])
    for path in images.path:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes((tiny["root"] / path).read_bytes())
    return root, images


def test_patch_ids_are_stable():
    assert patch_id("A4-080201_1", 3, 2) == "A4-080201_1_p003_v02"
    assert patch_id("img", 12, -1) == "img_p012_vmid"


def test_centres_points_vertices_and_two_point_midpoint():
    particles = pd.DataFrame(
        [
            ("a", 0, 0, 5.0, 6.0),
            ("a", 1, 0, 10.0, 20.0),
            ("a", 1, 1, 30.0, 40.0),
            ("a", 2, 0, 1.0, 1.0),
            ("a", 2, 1, 2.0, 2.0),
            ("a", 2, 2, 3.0, 5.0),
        ],
        columns=["image_id", "particle", "vertex", "x", "y"],
    )
    centres = patch_points(particles)
    assert list(centres.itertuples(index=False, name=None)) == [
        ("a", 0, 0, 5.0, 6.0),
        ("a", 1, -1, 20.0, 30.0),  # 2-point centre line: one patch at the midpoint
        ("a", 2, 0, 1.0, 1.0),  # >= 3 points: one patch per vertex
        ("a", 2, 1, 2.0, 2.0),
        ("a", 2, 2, 3.0, 5.0),
    ]


def test_mirror_padding_at_borders_equals_numpy_reflect():
    """At 1 nm/px the patch is the image itself, padded by reflection past the border."""
    image = noise(5, (300, 200))
    padded = np.pad(image, 256, mode="reflect")
    centres = np.array([[0.0, 0.0], [199.9, 299.9], [100.0, 150.0], [10.4, 290.6]])
    patches = extract_image(image, 1.0, centres)
    for (x, y), patch in zip(centres, patches):
        top, left = int(np.floor(y - 128 + 0.5)), int(np.floor(x - 128 + 0.5))
        assert np.array_equal(patch, padded[top + 256 : top + 512, left + 256 : left + 512])


def test_quantize_rounds_and_clips_to_the_source_range():
    assert quantize(np.array([-5.0, 10.4, 10.6, 99.5, 70000.0]), 3, 99).tolist() == [3, 10, 11, 99, 99]


def test_extract_patches_writes_table_and_arrays(tiny, tmp_path):
    table = run_extract(tiny, tmp_path)
    written = pd.read_csv(tmp_path / "patches.csv")
    assert list(written.columns) == PATCH_COLUMNS
    # orf_a: midpoint + 1 point; ebola_a: 4 vertices; orf_b: 2 points; rift_a: 1 point + midpoint
    assert written.groupby("subset").size().to_dict() == {"train": 6, "validation": 2, "test": 2}
    assert written.patch_id.tolist()[:2] == ["ebola_a_p000_v00", "ebola_a_p000_v01"]
    assert set(written.patch_id[written.vertex == -1]) == {"orf_a_p000_vmid", "rift_a_p001_vmid"}
    mid = written.set_index("patch_id").loc["orf_a_p000_vmid"]
    assert (mid.x_nm, mid.y_nm) == (20.0, 25.0)  # midpoint (40, 50) px x 0.5 nm
    images = pd.read_csv(tiny["images"]).set_index("image_id")
    for subset in SUBSETS:
        rows = written[written.subset == subset]
        assert rows["index"].tolist() == list(range(len(rows)))
        array = np.load(tmp_path / f"{subset}.npy")
        assert array.dtype == np.uint16 and array.shape == (len(rows), 256, 256)
        for row in rows.itertuples():
            pixels = tifffile.imread(tiny["root"] / images.loc[row.image_id, "path"])
            expected = quantize(
                window(pixels, images.loc[row.image_id, "pixel_size_nm"], row.x_nm, row.y_nm),
                pixels.min(),
                pixels.max(),
            )
            assert np.array_equal(array[row.index], expected), row.patch_id
            assert pixels.min() <= array[row.index].min() and array[row.index].max() <= pixels.max()
    pd.testing.assert_frame_equal(table.reset_index(drop=True), written, check_dtype=False)


def test_extract_patches_is_byte_deterministic(tiny, tmp_path):
    run_extract(tiny, tmp_path / "a")
    run_extract(tiny, tmp_path / "b")
    for name in ["patches.csv"] + [f"{s}.npy" for s in SUBSETS]:
        assert sha256_file(tmp_path / "a" / name) == sha256_file(tmp_path / "b" / name)


def test_unknown_image_in_split_is_named_and_nothing_written(tiny, tmp_path):
    split = pd.read_csv(tiny["split"])
    bad = pd.concat([split, split.iloc[[0]].assign(image_id="ghost")])
    bad.to_csv(tmp_path / "bad_split.csv", index=False)
    with pytest.raises(ValueError, match=r"bad_split\.csv: 1 images not in .*images\.csv.*ghost"):
        run_extract(tiny, tmp_path / "out", tmp_path / "bad_split.csv")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_split_table_of_an_older_run_is_refused_naming_the_new_column(tiny, tmp_path):
    old = pd.read_csv(tiny["split"]).rename(columns={"subset": "split"})
    old.to_csv(tmp_path / "old_split.csv", index=False)
    with pytest.raises(ValueError, match=r"old_split\.csv: missing columns \['subset'\].*'split' is now 'subset'"):
        run_extract(tiny, tmp_path / "out", tmp_path / "old_split.csv")


def test_image_that_changed_size_fails_cleanly(tiny, tmp_path):
    root, images = copy_raw(tiny, tmp_path / "raw")  # same tables, but one image on disk is now smaller
    tifffile.imwrite(root / images.path[images.image_id == "orf_b"].item(), noise(9, (50, 50)))
    out = tmp_path / "out"
    with pytest.raises(RawDataError, match=r"orf_b\.tif: image is 50x50 px, the image table says 200x200"):
        extract_patches(
            tiny["split"],
            tiny["images"],
            tiny["particles"],
            root,
            out / "patches.csv",
            {s: out / f"{s}.npy" for s in SUBSETS},
        )
    assert list(out.iterdir()) == []  # no array, table or temporary file left


def test_float_image_is_rejected(tiny, tmp_path):
    """A float image with fractional values is refused by the reader (temvirus.raw.read_image)."""
    root, images = copy_raw(tiny, tmp_path / "raw")
    tifffile.imwrite(root / images.path[images.image_id == "ebola_a"].item(), noise(2, (120, 140)) / 65535.0)
    out = tmp_path / "out"
    with pytest.raises(RawDataError, match=r"ebola_a\.tif: float64 image with fractional values"):
        extract_patches(
            tiny["split"],
            tiny["images"],
            tiny["particles"],
            root,
            out / "patches.csv",
            {s: out / f"{s}.npy" for s in SUBSETS},
        )
    assert list(out.iterdir()) == []


def test_export_to_published_layout(tiny, tmp_path):
    table = run_extract(tiny, tmp_path)
    export_published(tmp_path / "patches.csv", {s: tmp_path / f"{s}.npy" for s in SUBSETS}, tmp_path / "published")
    files = sorted(p.relative_to(tmp_path / "published").as_posix() for p in (tmp_path / "published").rglob("*.tif"))
    assert len(files) == len(table)
    assert "validation/Rift Valley/rift_a_p001_vmid.tif" in files  # class folder names of the raw layout
    row = table[table.patch_id == "ebola_a_p000_v02"].iloc[0]
    exported = tifffile.imread(tmp_path / "published" / "train" / "Ebola" / "ebola_a_p000_v02.tif")
    assert np.array_equal(exported, np.load(tmp_path / "train.npy")[row["index"]])


def test_write_rescaled_images(tiny, tmp_path):
    write_rescaled_images(tiny["images"], tiny["root"], tmp_path / "rescaled")
    rescaled = tifffile.imread(tmp_path / "rescaled" / "rift_a.tif")
    pixels = tifffile.imread(tiny["root"] / "validation" / "Rift Valley" / "rift_a.tif")
    assert rescaled.shape == (256, 320) and rescaled.dtype == np.uint16
    assert np.array_equal(rescaled, quantize(rescale_image(pixels, 4.0), pixels.min(), pixels.max()))


@pytest.mark.realdata
def test_real_crops_through_patches(real_crops, tmp_path):
    """The real 1 nm/px crops: one patch per particle (single points), per folder subset."""
    images, particles = read_dataset(real_crops, hash_files=False)
    images.to_csv(tmp_path / "images.csv", index=False)
    particles.to_csv(tmp_path / "particles.csv", index=False)
    split = images[["image_id", "class", "n_particles", "folder_subset"]].assign(
        overlap_group=images.image_id, subset=images.folder_subset
    )
    split.to_csv(tmp_path / "split.csv", index=False)
    arrays = {s: tmp_path / f"{s}.npy" for s in SUBSETS}
    started = time.perf_counter()
    table = extract_patches(
        tmp_path / "split.csv",
        tmp_path / "images.csv",
        tmp_path / "particles.csv",
        real_crops,
        tmp_path / "patches.csv",
        arrays,
    )
    seconds = time.perf_counter() - started
    counts = table.groupby("subset").size()
    print(f"\nreal crops: {len(images)} images, {len(table)} patches {counts.to_dict()} in {seconds:.1f} s")
    assert len(images) == 578 and len(table) == 4983 == images.n_particles.sum()
    assert counts.to_dict() == images.groupby("folder_subset").n_particles.sum().to_dict()
    for subset in SUBSETS:
        array = np.load(arrays[subset], mmap_mode="r")
        assert array.shape == (counts[subset], 256, 256) and array.dtype == np.uint16
        assert array.max() <= 255  # 8-bit JPEGs keep their range


def test_fig1_patch_examples_is_a_deterministic_png(tiny, tmp_path):
    from PIL import Image

    from temvirus.figures import fig1_patch_examples

    run_extract(tiny, tmp_path)
    arrays = {s: tmp_path / f"{s}.npy" for s in SUBSETS}
    for name in ("a.png", "b.png"):
        fig1_patch_examples(
            tmp_path / "patches.csv", arrays, tmp_path / name, ["Orf", "Ebola", "RiftValley", "Nipah"], 3, seed=1
        )
    assert sha256_file(tmp_path / "a.png") == sha256_file(tmp_path / "b.png")
    with Image.open(tmp_path / "a.png") as png:
        width, height = png.size
        pixels = np.asarray(png.convert("L"))
    assert (width, height) == (round(100 * (1.2 * 3 + 1.4)), round(100 * (1.2 * 4 + 0.3)))  # 3 examples, 4 classes
    assert pixels.std() > 20  # patches drawn, not a blank canvas
