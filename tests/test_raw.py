"""The raw-layout reader: round trip of generated data, every bad input, the real crops."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from temvirus.raw import EmptyImageWarning, RawDataError, read_dataset, read_positions, read_tags, write_tables


def write_image(root: Path, split: str, folder: str, image_id: str, points: list[list[tuple[float, float]]], *,
                size=(40, 30), pixel_size="1,5", suffix=".tif") -> Path:  # fmt: skip
    """One image of the raw layout with its tags and positions files; returns the image path."""
    width, height = size
    directory = root / split / folder
    (directory / "tags").mkdir(parents=True, exist_ok=True)
    (directory / "particle_positions").mkdir(exist_ok=True)
    pixels = (np.arange(width * height).reshape(height, width) % 251).astype(np.uint16 if suffix == ".tif" else np.uint8)
    path = directory / f"{image_id}{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, pixels)
    else:
        Image.fromarray(pixels).save(path)
    tags = [f"Height;{height}", f"Width;{width}", "BitsPerSample;16", "Microscope;test", "Magnification;10000",
            f"XScale;{pixel_size}", f"YScale;{pixel_size}"]  # fmt: skip
    (directory / "tags" / f"{path.name}_tags.csv").write_text("\n".join(tags) + "\n")
    lines = [f"image;{path.name}", "unit;pixel", "format;x;y"]
    for particle in points:
        lines += ["particleposition"] + [f"{x};{y}" for x, y in particle]
    (directory / "particle_positions" / f"{image_id}_particlepositions.txt").write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def good(tmp_path) -> Path:
    """A valid little raw layout: 3 images, 2 classes, 3 splits, points and centre lines."""
    root = tmp_path / "raw"
    write_image(root, "train", "Adenovirus", "a1", [[(10.5, 12.25)], [(30, 20)]])
    write_image(root, "test", "Rift Valley", "r1", [[(5, 5), (15, 8), (25, 9.5)]], pixel_size="0,26")
    write_image(root, "validation", "Nipah virus", "n1", [[(1, 1)]], suffix=".png", size=(20, 20))
    return root


def test_reads_images_points_and_centre_lines(good):
    images, particles = read_dataset(good)
    assert list(images.image_id) == ["a1", "n1", "r1"]
    assert list(images["class"]) == ["Adenovirus", "Nipah", "RiftValley"]
    assert list(images.folder_split) == ["train", "validation", "test"]
    assert list(images.pixel_size_nm) == [1.5, 1.5, 0.26]
    assert list(zip(images.width, images.height)) == [(40, 30), (20, 20), (40, 30)]
    assert list(images.n_particles) == [2, 1, 1] and list(images.n_points) == [2, 1, 3]
    assert images.path.iloc[0] == "train/Adenovirus/a1.tif" and len(images.sha256.iloc[0]) == 64
    line = particles[particles.image_id == "r1"]
    assert list(line.vertex) == [0, 1, 2] and list(line.x) == [5, 15, 25] and list(line.y) == [5, 8, 9.5]
    assert particles[particles.image_id == "a1"][["x", "y"]].to_numpy().tolist() == [[10.5, 12.25], [30, 20]]


def _expect_error(root: Path, culprit: Path, reason: str, tmp_path: Path) -> None:
    """read_dataset stops naming ``culprit``; write_tables then writes nothing."""
    with pytest.raises(RawDataError, match=reason) as caught:
        read_dataset(root)
    assert str(caught.value).startswith(str(culprit)), str(caught.value)
    out = tmp_path / "tables"
    with pytest.raises(RawDataError):
        write_tables(root, out / "images.csv", out / "particles.csv")
    assert not out.exists() or list(out.iterdir()) == []


def test_missing_tags_file(good, tmp_path):
    tags = good / "train/Adenovirus/tags/a1.tif_tags.csv"
    tags.unlink()
    _expect_error(good, tags, "tags file is missing", tmp_path)


@pytest.mark.parametrize("value,reason", [("abc", "not a number"), ("0", "must be positive"), ("-1,5", "must be positive"), ("", "not a number")])
def test_bad_pixel_size(good, tmp_path, value, reason):
    tags = good / "train/Adenovirus/tags/a1.tif_tags.csv"
    rows = tags.read_text().splitlines()
    rows[5] = f"XScale;{value}"
    tags.write_text("\n".join(rows) + "\n")
    _expect_error(good, tags, reason, tmp_path)
    with pytest.raises(RawDataError, match=":6: "):  # the line is named too
        read_tags(tags)


def test_non_numeric_positions_line(good, tmp_path):
    positions = good / "test/Rift Valley/particle_positions/r1_particlepositions.txt"
    positions.write_text(positions.read_text().replace("15;8", "15;eight"))
    _expect_error(good, positions, "expected 'x;y'", tmp_path)
    with pytest.raises(RawDataError, match=":6: "):
        read_positions(positions)


def test_point_outside_the_image(good, tmp_path):
    positions = good / "train/Adenovirus/particle_positions/a1_particlepositions.txt"
    positions.write_text(positions.read_text().replace("30;20", "30;31"))
    _expect_error(good, positions, "outside the 40x30 image", tmp_path)


def test_image_without_particles_warns_and_is_kept(good, tmp_path):
    write_image(good, "train", "Adenovirus", "a0", [])
    with pytest.warns(EmptyImageWarning, match="a0_particlepositions.txt: image has no particles"):
        images, particles = read_dataset(good)
    assert images.set_index("image_id").loc["a0", "n_particles"] == 0
    assert "a0" not in set(particles.image_id)


def test_unknown_class_folder(good, tmp_path):
    write_image(good, "train", "Smallpox", "s1", [[(3, 3)]])
    _expect_error(good, good / "train/Smallpox", "unknown class folder", tmp_path)


def test_unknown_split_folder(good, tmp_path):
    (good / "holdout").mkdir()
    _expect_error(good, good, "unknown folders", tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_or_truncated_tiff(good, tmp_path, damage):
    image = write_image(good, "train", "Adenovirus", "big", [[(3, 3)]], size=(400, 300))
    data = image.read_bytes()
    image.write_bytes(b"II*\0 not a tiff at all" if damage == "garbage" else data[: len(data) // 2])
    _expect_error(good, image, "cannot read image", tmp_path)


def test_duplicate_image_ids(good, tmp_path):
    duplicate = write_image(good, "test", "Adenovirus", "a1", [[(3, 3)]])
    _expect_error(good, duplicate, "duplicate image id 'a1' \\(also .*train/Adenovirus/a1.tif\\)", tmp_path)


def test_tags_disagreeing_with_the_image_size(good, tmp_path):
    tags = good / "train/Adenovirus/tags/a1.tif_tags.csv"
    tags.write_text(tags.read_text().replace("Height;30", "Height;31"))
    _expect_error(good, tags, "tags give 40x31 px", tmp_path)


def test_write_tables_writes_both_tables(good, tmp_path):
    images, particles = write_tables(good, tmp_path / "t/images.csv", tmp_path / "t/particles.csv")
    assert pd.read_csv(tmp_path / "t/images.csv").image_id.tolist() == images.image_id.tolist()
    assert len(pd.read_csv(tmp_path / "t/particles.csv")) == len(particles) == 6


def test_generated_dataset_round_trip(tiny_synthetic, tmp_path):
    """Positions and pixel sizes read back as written (2-decimal points, 4-decimal nm)."""
    root = tmp_path / "raw"
    shutil.copytree(tiny_synthetic / "raw", root)
    images, particles = read_dataset(root)
    for row in images.itertuples():
        text = (root / row.positions_path).read_text().splitlines()[3:]
        written = [tuple(map(float, line.split(";"))) for line in text if line != "particleposition"]
        mine = particles[particles.image_id == row.image_id]
        assert list(zip(mine.x, mine.y)) == written
        scale = (root / row.tags_path).read_text().splitlines()[5].split(";")[1]
        assert row.pixel_size_nm == float(scale.replace(",", "."))
    # a damaged copy of generated data stops the reader too
    victim = root / images.path.iloc[-1]
    victim.write_bytes(victim.read_bytes()[:1000])
    _expect_error(root, victim, "cannot read image", tmp_path)


@pytest.mark.realdata
def test_real_crops(real_crops):
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyImageWarning)
        images, particles = read_dataset(real_crops, hash_files=False)
    assert len(images) == 578 and images.n_particles.sum() == 4983 and images["class"].nunique() == 9
    assert images.groupby("folder_split").size().to_dict() == {"train": 346, "validation": 116, "test": 116}
    assert (images.pixel_size_nm == 1.0).all() and len(particles) == images.n_points.sum()
