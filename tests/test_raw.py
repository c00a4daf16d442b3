"""The raw-layout reader: round trip of generated data, every bad input, the real crops."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import unicodedata
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import copy_real_image
from PIL import Image, ImageOps

from temvirus.raw import (
    EmptyImageWarning,
    RawDataError,
    read_dataset,
    read_image,
    read_positions,
    read_tags,
    write_tables,
)


def write_image(
    root: Path,
    split: str,
    folder: str,
    image_id: str,
    points: list[list[tuple[float, float]]],
    *,
    size=(40, 30),
    pixel_size="5",
    suffix=".tif",
) -> Path:
    """One image of the raw layout with its tags and positions files; returns the image path."""
    width, height = size
    directory = root / split / folder
    (directory / "tags").mkdir(parents=True, exist_ok=True)
    (directory / "particle_positions").mkdir(exist_ok=True)
    offset = zlib.crc32(image_id.encode())  # other pixels per image: equal files in two classes are refused
    pixels = ((np.arange(width * height).reshape(height, width) + offset) % 251).astype(
        np.uint16 if suffix == ".tif" else np.uint8
    )
    path = directory / f"{image_id}{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, pixels)
    else:
        Image.fromarray(pixels).save(path)
    tags = [
        f"Height;{height}",
        f"Width;{width}",
        "BitsPerSample;16",
        "Microscope;test",
        "Magnification;10000",
        f"XScale;{pixel_size}",
        f"YScale;{pixel_size}",
    ]
    (directory / "tags" / f"{path.name}_tags.csv").write_text("\n".join(tags) + "\n")
    lines = [f"image;{path.name}", "unit;pixel", "format;x;y"]
    for particle in points:
        lines += ["particleposition"] + [f"{x};{y}" for x, y in particle]
    (directory / "particle_positions" / f"{image_id}_particlepositions.txt").write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def good(tmp_path) -> Path:
    """A valid little raw layout: 3 images, 2 classes, 3 splits, points and centre lines (few pixels,
    large ones: each side at least the 129 nm of :func:`temvirus.raw.min_image_side_nm`)."""
    root = tmp_path / "raw"
    write_image(root, "train", "Adenovirus", "a1", [[(10.5, 12.25)], [(30, 20)]])
    write_image(root, "test", "Rift Valley", "r1", [[(5, 5), (15, 8), (25, 9.5)]], pixel_size="4,5")
    write_image(root, "validation", "Nipah virus", "n1", [[(1, 1)]], suffix=".png", size=(20, 20), pixel_size="7,5")
    return root


def test_workflow_jobs_import_this_checkouts_package(good, tmp_path):
    """The jobs' scripts import the package of the workflow's own src/, not another checkout's
    found first on their path (a venv with another checkout installed editable, or an outer
    PYTHONPATH): before, Snakemake's script preamble appended src/ after site-packages, so a
    second checkout run with the first one's .venv built its job graph with its own code but ran
    every job with the other's, unseen (raw_tables read with the other reader)."""
    import subprocess

    import yaml
    from conftest import REPO, snakemake_cmd

    other = tmp_path / "other_checkout" / "temvirus"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("raise ImportError('the temvirus package of another checkout was imported')\n")
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "dataset": {"source": "local", "local": {"path": str(good)}},
                "classes": {"classification": ["Adenovirus", "Nipah", "RiftValley"]},
            }
        )
    )
    config = str(REPO / "config" / "config.yaml")
    cmd = snakemake_cmd(tmp_path / "work", "results/raw/images.csv", "--configfile", config, str(overlay), ci=False)
    env = {**os.environ, "PYTHONPATH": str(other.parent)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert pd.read_csv(tmp_path / "work" / "results" / "raw" / "images.csv").image_id.tolist() == ["a1", "n1", "r1"]


def test_reads_images_points_and_centre_lines(good):
    images, particles = read_dataset(good)
    assert list(images.image_id) == ["a1", "n1", "r1"]
    assert list(images["class"]) == ["Adenovirus", "Nipah", "RiftValley"]
    assert list(images.folder_subset) == ["train", "validation", "test"]
    assert list(images.pixel_size_nm) == [5, 7.5, 4.5]
    assert list(zip(images.width, images.height)) == [(40, 30), (20, 20), (40, 30)]
    assert list(images.n_particles) == [2, 1, 1] and list(images.n_points) == [2, 1, 3]
    assert images.path.iloc[0] == "train/Adenovirus/a1.tif" and len(images.sha256.iloc[0]) == 64
    line = particles[particles.image_id == "r1"]
    assert list(line.vertex) == [0, 1, 2] and list(line.x) == [5, 15, 25] and list(line.y) == [5, 8, 9.5]
    assert particles[particles.image_id == "a1"][["x", "y"]].to_numpy().tolist() == [[10.5, 12.25], [30, 20]]


def _refused_at_line(read, path: Path, line: int, reason: str) -> None:
    """``read(path)`` (read_positions, read_tags) raises a RawDataError matching ``reason`` that starts
    with ``path:line:``."""
    with pytest.raises(RawDataError, match=reason) as caught:
        read(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")


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


def test_a_file_name_in_a_legacy_code_page_is_refused_naming_its_readings(good, tmp_path):
    """A zip of cp1252 names extracted by a tool that keeps the bytes. Before: a UnicodeEncodeError
    ('surrogates not allowed') from pandas, naming no file; the name's letters a guess."""
    folder = good / "train" / "Adenovirus"
    for path in [
        folder / "a1.tif",
        folder / "tags" / "a1.tif_tags.csv",
        folder / "particle_positions" / "a1_particlepositions.txt",
    ]:
        name = os.fsencode(path.name).replace(b"a1", "a\u00e91".encode("cp1252"))
        os.rename(path, os.path.join(os.fsencode(path.parent), name))
    _expect_error(
        good,
        folder / "a\\xe91.tif",
        "the name is not UTF-8 but in a legacy code page \\('a\u00e91.tif' in cp1252, 'a\u03981.tif' in cp437",
        tmp_path,
    )


@pytest.mark.parametrize(
    "value,reason",
    [("abc", "not a number"), ("0", "must be positive"), ("-1,5", "must be positive"), ("", "not a number")],
)
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


@pytest.mark.parametrize("point", ["30;31", "30;30", "40;20", "-0.01;20"])
def test_point_outside_the_image(good, tmp_path, point):
    """Pixel i spans [i, i + 1): a 40x30 image holds 0 <= x < 40 and 0 <= y < 30; a point on the far
    edge (x = 40 or y = 30) was accepted and centred a patch on no pixel of the image."""
    positions = good / "train/Adenovirus/particle_positions/a1_particlepositions.txt"
    positions.write_text(positions.read_text().replace("30;20", point))
    _expect_error(good, positions, "outside the 40x30 image", tmp_path)
    shown = "\\(" + ", ".join(f"{float(v):g}" for v in point.split(";")) + "\\)"
    with pytest.raises(RawDataError, match=rf":7: point {shown} of particle 1 lies outside"):  # the line is named
        read_dataset(good)


def test_points_up_to_the_far_edge_are_in_the_image(good):
    positions = good / "train/Adenovirus/particle_positions/a1_particlepositions.txt"
    positions.write_text(positions.read_text().replace("30;20", "39.99;29.99"))
    assert read_dataset(good)[1].query("image_id == 'a1'")[["x", "y"]].max().tolist() == [39.99, 29.99]


def test_failed_read_leaves_both_table_paths_as_they_were(good, tmp_path):
    """`temvirus read DIR --images A --particles B` removed A and B before reading, so a failed read
    (a typo in DIR, a bad file in the data) destroyed whatever files they named; a table that could
    not be written (its folder cannot be made) left the new image table without a particle table.
    Now a failure leaves both paths as they were, and a success replaces both."""
    from temvirus.cli import main

    out = tmp_path / "tables"
    out.mkdir()
    images, particles = out / "images.csv", out / "particles.csv"
    images.write_text("a user's file\n")
    particles.write_text("another one\n")
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "no_such_dir", tmp_path / "empty"):  # a typo; a folder without the raw layout
        assert main(["read", str(root), "--images", str(images), "--particles", str(particles)]) == 1
        assert (images.read_text(), particles.read_text()) == ("a user's file\n", "another one\n")
    # a half pair: the particle table's folder cannot be made, the image table is not written either
    assert main(["read", str(good), "--images", str(images), "--particles", "/proc/nope/p.csv"]) == 1
    assert main(["read", str(good), "--images", str(out / "new.csv"), "--particles", "/proc/nope/p.csv"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["images.csv", "particles.csv"]  # no temporaries
    assert images.read_text() == "a user's file\n"
    args = ["read", str(good), "--images", str(images), "--particles", str(particles)]
    assert main(args) == 0 and len(pd.read_csv(images)) == 3 and len(pd.read_csv(particles)) == 6
    before = images.read_bytes(), particles.read_bytes()
    positions = good / "train/Adenovirus/particle_positions/a1_particlepositions.txt"
    positions.write_text(positions.read_text() + "nan;3\n")  # the data changed: the read fails now
    assert main(args) == 1
    assert (images.read_bytes(), particles.read_bytes()) == before
    assert sorted(p.name for p in out.iterdir()) == ["images.csv", "particles.csv"]


def test_read_refuses_table_paths_that_are_no_files_before_reading(good, tmp_path, capsys):
    """`temvirus read --images FIFO` (or a device, or `x/`) replaced it by a plain file, a
    folder failed naming a temporary after the particle table had been replaced, and `--images
    a1.jpg` replaced the image. Each is refused by the option's check, naming the option and the
    path, with nothing written."""
    from temvirus.cli import main

    fifo, folder, particles = tmp_path / "fifo", tmp_path / "folder", tmp_path / "particles.csv"
    os.mkfifo(fifo)
    folder.mkdir()
    particles.write_text("old\n")
    for images, why in ((fifo, "not a regular file"), (folder, "is a folder"), (f"{tmp_path}/x/", "ends in '/'")):
        with pytest.raises(SystemExit) as stop:
            main(["read", str(good), "--images", str(images), "--particles", str(particles)])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and f"argument --images: {images}: " in err and why in err, err
    photo = tmp_path / "a1.jpg"  # a slip of the shell: an image given as the table to write
    photo.write_bytes(b"\xff\xd8 an image")
    with pytest.raises(SystemExit) as stop:
        main(["read", str(good), "--images", str(photo), "--particles", str(particles)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"argument --images: {photo}: a CSV table is written here" in err, err
    assert particles.read_text() == "old\n" and stat.S_ISFIFO(fifo.stat().st_mode)
    assert photo.read_bytes() == b"\xff\xd8 an image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a1.jpg", "fifo", "folder", "particles.csv", "raw"]
    # one table of the two: a usage error like the others (before: exit 1, no usage line)
    for given in (["--images", str(tmp_path / "i.csv")], ["--particles", str(tmp_path / "p.csv")]):
        with pytest.raises(SystemExit) as stop:
            main(["read", str(good), *given])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.startswith("usage: temvirus read"), err
        assert "error: give both --images and --particles, or neither" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a1.jpg", "fifo", "folder", "particles.csv", "raw"]
    with pytest.raises(ValueError, match=f"{folder}: is a folder"):  # the function checks too
        write_tables(good, folder, particles)


def test_read_writes_through_links_given_as_table_paths(good, tmp_path):
    """`temvirus read --images LINK --particles LINK2`: the links were replaced by plain files
    (and the image table's link removed first). Now both tables go to the links' targets and the
    links stay."""
    from temvirus.cli import main

    store = tmp_path / "store"
    store.mkdir()
    (store / "images.csv").write_text("old\n")
    (tmp_path / "images.csv").symlink_to(store / "images.csv")
    (tmp_path / "particles.csv").symlink_to(Path("store") / "particles.csv")  # dangling, relative
    main(["read", str(good), "--images", str(tmp_path / "images.csv"), "--particles", str(tmp_path / "particles.csv")])
    assert (tmp_path / "images.csv").is_symlink() and (tmp_path / "particles.csv").is_symlink()
    assert len(pd.read_csv(store / "images.csv")) > 0  # the new table, not "old"
    assert len(pd.read_csv(store / "particles.csv")) > 0 and sorted(p.name for p in store.iterdir()) == [
        "images.csv",
        "particles.csv",
    ]


def test_a_kill_between_the_two_renames_leaves_no_mismatched_pair(good, tmp_path, monkeypatch):
    """`temvirus read --images A --particles B` replaced B, then A: a kill between the two renames
    left the earlier A beside the new B, a pair a later step would trust. The kill is injected at
    the second rename (the process stops there); now A is absent then, never the earlier one."""
    import os

    from temvirus.cli import main

    images, particles = tmp_path / "images.csv", tmp_path / "particles.csv"
    images.write_text("image_id,n_particles\nold,1\n")
    particles.write_text("image_id,particle\nold,0\n")
    replace, renames = os.replace, []

    def killed_at_the_second(src, dst):
        if Path(dst) in (images, particles):
            renames.append(Path(dst).name)
            if len(renames) == 2:
                raise KeyboardInterrupt
        replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_the_second)
    assert main(["read", str(good), "--images", str(images), "--particles", str(particles)]) == 130
    monkeypatch.undo()
    assert renames == ["particles.csv", "images.csv"] and "old" not in particles.read_text()
    assert not images.exists()
    assert main(["read", str(good), "--images", str(images), "--particles", str(particles)]) == 0
    assert pd.read_csv(images).n_particles.sum() == pd.read_csv(particles).groupby(["image_id", "particle"]).ngroups


def test_one_file_for_both_tables_is_refused(real_crops, tmp_path):
    """`temvirus read` of real crops with --images and --particles naming one file: the particle
    table replaced the image table, and the command reported success."""
    from temvirus.cli import main

    (tmp_path / "tables").mkdir()
    table = tmp_path / "tables" / "t.csv"
    args = ["read", str(real_crops), "--images", str(table), "--particles", str(tmp_path / "tables" / "." / "t.csv")]
    assert main(args) == 1
    assert not table.exists()


@pytest.mark.parametrize(
    "images,particles",
    [
        ("raw/train/Adenovirus/tags/a1.tif_tags.csv", "particles.csv"),  # a raw file: deleted, then "missing"
        ("images.csv", "raw/train/Adenovirus/a1.tif"),  # a raw image
        ("raw/train/images.csv", "particles.csv"),  # a new file: the table lands inside the data
    ],
)
def test_tables_inside_the_raw_folder_are_refused(good, tmp_path, images, particles):
    """`temvirus read RAW --images/--particles` naming a path inside RAW: the command removed an
    earlier table there first, so a raw file given by mistake (its tags file, an image) was
    deleted and the read then failed with "tags file is missing"; a new table was written into
    the raw layout. Now refused naming the path, before anything is removed or written."""
    from temvirus.cli import main

    before = {p: p.read_bytes() for p in good.rglob("*") if p.is_file()}
    images, particles = tmp_path / images, tmp_path / particles
    with pytest.raises(ValueError, match="inside the raw-layout folder"):
        write_tables(good, images, particles)
    args = ["read", str(good), "--images", str(images), "--particles", str(particles)]
    if particles.suffix == ".csv":
        assert main(args) == 1
    else:  # the image: not a CSV table's name, refused by argparse already (exit 2)
        with pytest.raises(SystemExit, match="2"):
            main(args)
    assert {p: p.read_bytes() for p in good.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "images.csv").exists() and not (tmp_path / "particles.csv").exists()


def test_one_image_file_in_two_class_folders_is_refused(real_crops, tmp_path):
    """A real micrograph copied (with its tags and positions) into a second class folder under
    another name was read as two images of two classes: its particles trained (or were scored)
    under both labels, and overlap removal, which compares images within a class, never saw the
    pair (the audit named it only when the two copies fell into different sets, after training).
    Now refused naming both files, neither as the copy (two files of one class named, before, when
    that class held a copy too); a copy within its own class is still read (overlap removal keeps
    one of them)."""
    raw = tmp_path / "raw"
    for cls in ("Adenovirus", "Astrovirus"):
        for image in sorted((real_crops / "train" / cls).glob("*.jpg"))[:1]:
            copy_real_image(image, raw / "train" / cls)
    source = next((raw / "train" / "Adenovirus").glob("*.jpg"))

    def copy_into(cls: str, name: str) -> Path:
        target = raw / "train" / cls / f"{name}.jpg"
        shutil.copy(source, target)
        shutil.copy(source.parent / "tags" / f"{source.name}_tags.csv", target.parent / "tags" / f"{name}.jpg_tags.csv")
        positions = (source.parent / "particle_positions" / f"{source.stem}_particlepositions.txt").read_text()
        (target.parent / "particle_positions" / f"{name}_particlepositions.txt").write_text(
            positions.replace(source.name, target.name)
        )
        return target

    copy_into("Adenovirus", "copy")
    assert "copy" in set(read_dataset(raw)[0].image_id)
    copy_into("Astrovirus", "other")  # train/Adenovirus/copy.jpg sorts before it
    both = f"train/Adenovirus/{source.name} and train/Astrovirus/other.jpg (in the folders of classes Adenovirus and "
    _expect_error(
        raw,
        source,
        re.escape(both + "Astrovirus) are one micrograph, the same file (equal bytes): its particles"),
        tmp_path,
    )


def _plant(raw: Path, source: Path, cls: str, name: str, pixels: np.ndarray, scale: float = 1.0, **save) -> Path:
    """``pixels`` (``source`` re-encoded, rescaled by ``scale`` or otherwise changed) saved as
    ``train/{cls}/{name}`` by its suffix (tifffile for .tif with ``save``'s options, else Pillow),
    with ``source``'s tags and positions made to fit: size in pixels, pixel size / ``scale``, the
    particles with a point outside ``pixels`` (cut or turned) left out."""
    target = raw / "train" / cls / name
    for folder in ("tags", "particle_positions"):
        (target.parent / folder).mkdir(parents=True, exist_ok=True)
    if target.suffix == ".tif":
        tifffile.imwrite(target, pixels, **save)
    else:
        Image.fromarray(pixels).save(target, **save)
    height, width = pixels.shape
    tags = [f"Height;{height}", f"Width;{width}", f"XScale;{1 / scale:g}", f"YScale;{1 / scale:g}"]
    (target.parent / "tags" / f"{name}_tags.csv").write_text("\n".join(tags) + "\n")
    positions = read_positions(source.parent / "particle_positions" / f"{source.stem}_particlepositions.txt")
    lines = [f"image;{name}", "unit;pixel", "format;x;y"]
    for particle in positions:
        if all(0 <= x * scale < width and 0 <= y * scale < height for x, y in particle):
            lines += ["particleposition"] + [f"{x * scale:.2f};{y * scale:.2f}" for x, y in particle]
    (target.parent / "particle_positions" / f"{target.stem}_particlepositions.txt").write_text("\n".join(lines) + "\n")
    return target


def _jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def _noisy(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """``pixels`` with Gaussian noise of ``sigma`` grey levels (always the same)."""
    noise = np.random.default_rng(0).normal(0, sigma, pixels.shape)
    return np.clip(np.rint(pixels + noise), 0, 255).astype(np.uint8)


EQUAL_PIXELS = re.escape("the same pixels (decoded; another file format, pixel type or compression)")
SIMILAR = re.escape("re-saved, rescaled, with other contrast, turned or mirrored (similarity ")


@pytest.mark.parametrize(
    "name,change,scale,save,kind,rows",
    [
        ("copy.png", lambda a: a, 1.0, {}, EQUAL_PIXELS, None),  # JPEG -> PNG
        (
            "copy.tif",
            lambda a: a.astype(np.uint16),
            1.0,
            {"compression": "lzw", "description": "re-saved"},
            EQUAL_PIXELS,
            None,
        ),
        ("copy.tif", lambda a: a.astype(np.uint16) * 257, 1.0, {"compression": "zlib"}, SIMILAR, None),  # 8 -> 16 bit
        ("copy.jpg", lambda a: _jpeg(a, 40), 1.0, {}, SIMILAR, None),  # quality changed
        ("copy.png", lambda a: np.asarray(Image.fromarray(a).reduce(2)), 0.5, {}, SIMILAR, None),  # 2 nm/px in its tags
        (
            "copy.png",
            lambda a: np.asarray(Image.fromarray(a).resize((370, 370), Image.BILINEAR)),
            0.37,
            {},
            SIMILAR,
            None,
        ),
        ("copy.png", lambda a: np.clip(a * 0.6 + 50, 0, 255).astype(np.uint8), 1.0, {}, SIMILAR, None),  # contrast
        ("copy.jpg", lambda a: _jpeg(np.clip(a.astype(int) + 15, 0, 255).astype(np.uint8), 75), 1.0, {}, SIMILAR, None),
        ("copy.png", lambda a: np.asarray(ImageOps.invert(Image.fromarray(a))), 1.0, {}, SIMILAR + ".*inverted", None),
        # a 1000 x 700 px field turned: 700 x 1000 px
        (
            "copy.png",
            lambda a: np.asarray(Image.fromarray(a).transpose(Image.ROTATE_90)),
            1.0,
            {},
            SIMILAR + ".*90",
            700,
        ),
        ("copy.jpg", lambda a: _jpeg(np.rot90(a, 2), 75), 1.0, {}, SIMILAR + ".*180", None),
        ("copy.png", lambda a: np.asarray(ImageOps.mirror(Image.fromarray(a))), 1.0, {}, SIMILAR + ".*mirrored", None),
        ("copy.png", lambda a: np.pad(a, 30), 1.0, {}, SIMILAR, None),  # a black border: a larger field
        ("copy.png", lambda a: np.pad(a, 60), 1.0, {}, SIMILAR, None),
        ("copy.png", lambda a: np.pad(a, 30, constant_values=255), 1.0, {}, SIMILAR, None),  # around black padding
        ("copy.png", lambda a: _noisy(a, 2), 1.0, {}, SIMILAR, None),  # the black padding no longer constant
        ("copy.png", lambda a: _noisy(np.pad(a, 60), 4), 1.0, {}, SIMILAR, None),
    ],
    ids=[
        "png",
        "tif16-lzw-metadata",
        "tif16x257",
        "jpeg-q40",
        "half-size",
        "x0.37",
        "contrast",
        "brighter-jpeg",
        "inverted",
        "turned-90-non-square",
        "turned-180-jpeg",
        "mirrored",
        "black-border-30",
        "black-border-60",
        "white-border-30",
        "noise-sigma-2",
        "black-border-60-noise-sigma-4",
    ],
)
def test_one_micrograph_re_encoded_in_two_class_folders_is_refused(
    real_crops, tmp_path, name, change, scale, save, kind, rows
):
    """A real micrograph saved again into a second class folder, as another file (PNG or TIFF of its
    pixels, 16 bits, another TIFF compression or metadata, another JPEG quality, rescaled with its
    pixel size, contrast or brightness changed, inverted, turned or mirrored, a black or white border
    or faint noise added): the byte comparison (sha256) missed it, so its particles were read under
    two labels (inverted, turned and mirrored copies also passed the signature check; so did a border
    of 30 px or more, the field then over 5 % larger, and noise of 2 grey levels, the black padding
    then no longer constant). Now refused naming both files, neither as the copy
    (decoded pixels equal, or the signature of :func:`temvirus.raw.copy_signature`, compared turned
    too); in its own class it is still read. ``rows``: the micrograph first cut to so many rows (a
    field that is not square: a quarter turn swaps its width and height)."""
    raw = tmp_path / "raw"
    for cls in ("Adenovirus", "Astrovirus"):
        for image in sorted((real_crops / "train" / cls).glob("*.jpg"))[:2]:
            copy_real_image(image, raw / "train" / cls)
    source = sorted((raw / "train" / "Adenovirus").glob("*.jpg"))[0]
    if rows:
        _plant(raw, source, "Adenovirus", source.name, np.asarray(Image.open(source))[:rows], quality=95)
    pixels = change(np.asarray(Image.open(source)))
    copy = _plant(raw, source, "Adenovirus", name, pixels, scale, **save)
    assert "copy" in set(read_dataset(raw)[0].image_id)  # overlap removal's case, not the reader's
    for companion in raw.rglob("copy*"):
        companion.unlink()
    copy = _plant(raw, source, "Astrovirus", name, pixels, scale, **save)
    both = re.escape(f"train/Adenovirus/{source.name} and train/Astrovirus/{copy.name} (in the folders of classes ")
    _expect_error(raw, source, both + ".*" + kind, tmp_path)
    with pytest.raises(RawDataError, match="its particles would get two labels; keep it in its own class only"):
        read_dataset(raw, hash_files=False)  # decoded pixels, not file hashes: checked without them too


@pytest.mark.realdata
def test_no_two_real_crops_of_two_classes_are_taken_for_one_micrograph(real_crops):
    """The threshold of the copy check against the 578 real crops (9 classes), each compared with
    the others as they are, turned and mirrored (:data:`temvirus.raw.COPY_TURNS`): the closest pair
    of two classes (0.415 since the padding along the borders is left out; 0.647 before, 0.607 as
    they are) and the most opposite one (-0.383, was -0.573; inverted contrast is taken at -0.75)
    stay at least 0.1 inside :data:`temvirus.raw.COPY_SIMILARITY`."""
    from temvirus.raw import COPY_SIMILARITY, copy_signature, copy_similarities, read_image

    images, _ = read_dataset(real_crops, hash_files=False)
    signatures = [copy_signature(read_image(real_crops / path))[0] for path in images.path]
    classes = images["class"].to_numpy()
    two_classes = classes[:, None] != classes[None, :]
    similarities = np.stack([similarity[two_classes] for _, _, similarity in copy_similarities(signatures)])
    assert similarities.max() <= COPY_SIMILARITY - 0.1, similarities.max()
    assert similarities.min() >= 0.1 - COPY_SIMILARITY, similarities.min()


def test_positions_of_another_image_are_refused(good, tmp_path):
    """A positions file whose header names another image (copied for the wrong one) is refused."""
    positions = good / "train/Adenovirus/particle_positions/a1_particlepositions.txt"
    positions.write_text(positions.read_text().replace("image;a1.tif", "image;a2.tif"))
    _expect_error(good, positions, "header names image 'a2.tif', but this file belongs to a1.tif", tmp_path)
    positions.write_text(positions.read_text().replace("image;a2.tif", "image;C:\\scans\\A1.jpg"))
    assert len(read_dataset(good)[0]) == 3  # another folder, case or extension: the same image


def test_image_without_particles_warns_and_is_kept(good, tmp_path):
    write_image(good, "train", "Adenovirus", "a0", [])
    with pytest.warns(EmptyImageWarning, match="a0_particlepositions.txt: image has no particles"):
        images, particles = read_dataset(good)
    assert images.set_index("image_id").loc["a0", "n_particles"] == 0
    assert "a0" not in set(particles.image_id)


@pytest.mark.parametrize(
    "keep,reason",
    [
        (0, ": empty file and no point: truncated"),
        (2, r": only 2 header line\(s\) and no point: truncated"),
        (4, ":4: the file ends after a 'particleposition' line without points: truncated"),
    ],
)
def test_truncated_positions_file_is_refused(good, tmp_path, keep, reason):
    """A positions file cut short (0 bytes, within the header, after a marker) was read as an image
    without particles, with a warning only (or a particle lost); the whole header without points
    still is an image without particles (above)."""
    positions = good / "train/Adenovirus/particle_positions/a1_particlepositions.txt"
    positions.write_text("".join(positions.read_text().splitlines(keepends=True)[:keep]))
    _expect_error(good, positions, reason, tmp_path)


def test_a_marker_ending_a_file_is_refused_where_markers_begin_the_particles(good, tmp_path):
    """Where every particle begins with a marker (the published files), a marker ending the file is
    a particle whose points were cut off (an interrupted copy): it was read with a warning only, one
    particle short. A writer that ends each particle with a marker may end the file with one."""
    positions = good / "train/Adenovirus/particle_positions/a1_particlepositions.txt"
    lines = positions.read_text().splitlines(keepends=True)
    positions.write_text("".join(lines) + "particleposition\n")
    _expect_error(good, positions, rf":{len(lines) + 1}: the file ends after a 'particleposition' line", tmp_path)
    ended = _positions_file(tmp_path, ["1;2", "particleposition", "3;4", "particleposition"])
    assert [p.tolist() for p in read_positions(ended)] == [[[1, 2]], [[3, 4]]]


@pytest.mark.parametrize(
    "body,first,second",
    [
        (["particleposition", "1;2", "particleposition", "particleposition", "3;4"], 6, 7),
        (["particleposition", "particleposition", "1;2"], 4, 5),
        (["1;2", "particleposition", "", "# lost", "particleposition", "3;4"], 5, 8),
        (["particleposition", "1;2", "particleposition", "particleposition"], 6, 7),
    ],
)
def test_two_markers_without_points_between_are_refused(good, tmp_path, body, first, second):
    """A particle whose points are lost (two markers in a row, anywhere in the file) was silently
    dropped: the image's particle count, which orders the split, was one too low."""
    positions = good / "train/Adenovirus/particle_positions/a1_particlepositions.txt"
    positions.write_text("\n".join(["image;a1.tif", "unit;pixel", "format;x;y", *body]) + "\n")
    reason = f":{second}: no points between the markers on lines {first} and {second}"
    _expect_error(good, positions, reason, tmp_path)


@pytest.mark.parametrize("keep,reason", [(0, "empty tags file"), (5, "no xscale / yscale row"), (6, "no yscale row")])
def test_truncated_tags_file_is_refused(good, tmp_path, keep, reason):
    """A tags file cut short (0 bytes, before the pixel-size rows) is an error naming it."""
    tags = good / "train/Adenovirus/tags/a1.tif_tags.csv"
    tags.write_text("".join(tags.read_text().splitlines(keepends=True)[:keep]))
    _expect_error(good, tags, reason, tmp_path)


def test_image_too_small_for_a_patch_is_refused(good, tmp_path):
    """A 20x15 px image at 5 nm/px (100x75 nm) was read: each of its 256 nm patches would mirror it
    over and over (temvirus.raw.min_image_side_nm)."""
    image = write_image(good, "train", "Adenovirus", "tiny", [[(3, 3)]], size=(20, 15))
    reason = r"image too small: 20x15 px at 5 nm/px is 100x75 nm; each side must be at least 129 nm \(26 px at"
    _expect_error(good, image, reason, tmp_path)
    write_image(good, "train", "Adenovirus", "tiny", [[(3, 3)]], size=(26, 26))  # 130 nm: enough
    assert len(read_dataset(good)[0]) == 4


@pytest.mark.parametrize("suffix,cut", [(".jpg", "half"), (".png", "half"), (".png", 1), (".png", 12)])
def test_truncated_jpeg_or_png_is_refused(good, tmp_path, suffix, cut):
    """A JPEG or PNG cut short is an error naming it, not an image with grey rows at the end
    (Pillow's LOAD_TRUNCATED_IMAGES stays False); a PNG cut within its last 12 bytes (its end
    chunk, after whole image data) was read without a word."""
    image = write_image(good, "train", "Adenovirus", "cut", [[(3, 3)]], size=(400, 300), suffix=suffix)
    size = image.stat().st_size
    image.write_bytes(image.read_bytes()[: size // 2 if cut == "half" else size - cut])
    _expect_error(good, image, "cannot read image .*truncated", tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data, m: data[: m - 1000] + bytes(2000) + data[m + 1000 :],  # 2000 bytes zeroed
        lambda data, m: data[: m - 2500] + data[m + 2500 :],  # 5000 bytes cut from the middle
    ],
    ids=["zeroed", "cut-in-the-middle"],
)
def test_jpeg_with_corrupt_data_is_refused(good, tmp_path, damage):
    """A JPEG damaged in its middle is an error naming it: Pillow (and imagecodecs) decode it
    without a word into wrong pixels (libjpeg's "Corrupt JPEG data" warning is swallowed)."""
    from temvirus.raw import read_image

    image = write_image(good, "train", "Adenovirus", "damaged", [[(3, 3)]], size=(400, 300), suffix=".jpg")
    assert read_image(image).shape == (300, 400)  # intact: read
    data = image.read_bytes()
    image.write_bytes(damage(data, len(data) // 2))
    with Image.open(image) as opened:
        opened.load()  # Pillow alone reads it without an error
    with pytest.raises(RawDataError, match="corrupt JPEG data .*premature end of data segment") as caught:
        read_image(image)
    assert str(caught.value).startswith(f"{image}: "), str(caught.value)
    _expect_error(good, image, "corrupt JPEG data", tmp_path)


@pytest.mark.parametrize("writer", ["tifffile", "pillow"])  # a whole JPEG per strip; shared tables (JPEGTables)
def test_jpeg_compressed_tiff_with_corrupt_data_is_refused(good, tmp_path, writer):
    """The same for a JPEG-compressed TIFF, which tifffile decodes through imagecodecs, as silently."""
    from temvirus.raw import read_image

    image = write_image(good, "train", "Adenovirus", "damaged", [[(3, 3)]], size=(400, 300))
    pixels = (np.random.default_rng(0).normal(128, 30, (300, 400)).clip(0, 255)).astype(np.uint8)
    if writer == "tifffile":
        tifffile.imwrite(image, pixels, compression="jpeg", rowsperstrip=64)
    else:
        Image.fromarray(pixels).save(image, compression="jpeg")
    page = tifffile.TiffFile(image).pages.first
    assert (page.jpegtables is not None) == (writer == "pillow")
    assert read_image(image).shape == (300, 400)  # intact: read
    middle = page.dataoffsets[0] + page.databytecounts[0] // 2
    data = image.read_bytes()
    image.write_bytes(data[:middle] + bytes(200) + data[middle + 200 :])
    assert tifffile.imread(image).shape == (300, 400)  # tifffile alone reads it without an error
    _expect_error(good, image, "corrupt JPEG data in strip or tile 0 ", tmp_path)


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
    assert images.groupby("folder_subset").size().to_dict() == {"train": 346, "validation": 116, "test": 116}
    assert (images.pixel_size_nm == 1.0).all() and len(particles) == images.n_points.sum()


# -- real data as published (issue 12): tags by key and unit, headers, images, macOS leftovers --


def _tags_file(tmp_path: Path, rows: list[str], encoding: str = "utf-8") -> Path:
    path = tmp_path / "x.tif_tags.csv"
    path.write_bytes(("\n".join(rows) + "\n").encode(encoding))
    return path


@pytest.mark.parametrize(
    "scale,nm",
    [
        ("XScale;5,57;Å", 0.557),
        ("XScale;5.57;A", 0.557),
        ("XScale;5,57;angstrom", 0.557),
        ("XScale;5,57 Å", 0.557),
        ("XScale;5,57;A\u030a", 0.557),  # Å decomposed (NFD, as macOS may write it): was "unknown unit 'Å'"
        ("XScale;0,000557;\u03bcm", 0.557),
        ("XScale;0,000557;µm", 0.557),
        ("XScale;0.000557;um", 0.557),
        ("XScale;0,000557;micron", 0.557),
        ("XScale;5,57e-10;m", 0.557),
        ("XScale;0,557;nm", 0.557),
        ("XScale;0,557nm/px", 0.557),
        ("X Scale;0,557", 0.557),
    ],
)
def test_tags_scale_units(tmp_path, scale, nm):
    """Case 1: the unit of the scale row is applied; extra rows before it change nothing."""
    rows = ["XBinning;2", "Height;30", "Microscope;x", "Width;40", scale, "YScale;" + scale.split(";", 1)[1]]
    tags = read_tags(_tags_file(tmp_path, rows))
    assert (tags.width, tags.height) == (40, 30)
    assert tags.pixel_size_x_nm == pytest.approx(nm) and tags.pixel_size_y_nm == pytest.approx(nm)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-8-sig", "cp1252"])
def test_tags_encodings(tmp_path, encoding):
    """UTF-16 (with or without BOM), UTF-8 with BOM and Windows-1252 tags read the same."""
    rows = ["Height;30", "Width;40", "Unit;Å", "XScale;5,57", "YScale;5,57"]
    tags = read_tags(_tags_file(tmp_path, rows, encoding))
    assert tags.pixel_size_x_nm == pytest.approx(0.557) and tags.height == 30


@pytest.mark.parametrize(
    "rows,reason,line",
    [
        (["Height;30", "Width;40", "XScale;557", "YScale;557"], "outside the plausible TEM range 0.05-50.0 nm", 3),
        (["Height;30", "Width;40", "XScale;0,557;µm", "YScale;0,557;µm"], "= 557 nm is outside", 3),
        # before: "x pixel size '500 nm' nm = 500 nm" (the unit written twice)
        (["Height;30", "Width;40", "XScale;500 nm", "YScale;1"], "x pixel size '500 nm' = 500 nm is outside", 3),
        (["Height;30", "Width;40", "XScale;5;furlong", "YScale;5;furlong"], "unknown unit 'furlong'", 3),
        (["Height;30", "Width;40", "YUnit;px", "XScale;1", "YScale;1"], "unknown unit 'px'", 5),
        (["Height;30", "Width;40", "XScale;1;nm", "YScale;1", "Unit;µm"], "conflicting units", 3),
        (["Height;30", "Width;40", "XScale;1,5", "YScale;1,5", "XScale;2"], "given twice", 5),
        (["Height;30,5", "Width;40", "XScale;1", "YScale;1"], "whole number of pixels", 1),
        (["Height;30", "Width;40", "XScale;1.000,5", "YScale;1"], "not a number", 3),
    ],
)
def test_tags_errors_name_the_row(tmp_path, rows, reason, line):
    path = _tags_file(tmp_path, rows)
    _refused_at_line(read_tags, path, line, reason)


@pytest.mark.parametrize(
    "row,line,reason",
    [
        # before: "value must be positive, got '0x1A'" (the regex read the '0' as the number)
        ("XScale;0x1A", 3, r"'XScale' value '0x1A' is not a number \(hexadecimal notation\): expected a decimal"),
        ("XScale;0X1a;nm", 3, r"'XScale' value '0X1a' is not a number \(hexadecimal notation\)"),
        ("Height;0x1E", 1, r"'Height' value '0x1E' is not a number \(hexadecimal notation\): expected a whole number"),
        ("XScale;0b11", 3, r"'XScale' value '0b11' is not a number \(binary notation\)"),
        # before: "unknown unit '57' / '/2' / '_0' / 'x 10^-9 m' of the x pixel size"
        ("XScale;5 57", 3, r"'XScale' value '5 57' is not a number: expected a decimal"),
        ("XScale;1/2", 3, r"'XScale' value '1/2' is not a number"),
        ("XScale;1_0", 3, r"'XScale' value '1_0' is not a number"),
        ("XScale;5 x 10^-9 m", 3, r"'XScale' value '5 x 10\^-9 m' is not a number"),
        ("Width;0", 2, r"'Width' value must be positive and finite, got '0' \(read as 0\)"),
        # before: "value must be positive, got '1e999'" (it overflows to infinity; 1e-999 to 0)
        ("XScale;1e999", 3, r"'XScale' value must be positive and finite, got '1e999' \(read as inf\)"),
        ("XScale;1e-999", 3, r"'XScale' value must be positive and finite, got '1e-999' \(read as 0\)"),
    ],
)
def test_tags_values_in_other_notations_name_the_key_and_what_is_expected(tmp_path, row, line, reason):
    """A value the reader cannot take as a decimal number is named as such, with its key and what
    is expected: not a misleading "must be positive" or "unknown unit" from a prefix read alone."""
    rows = {"Height": "Height;30", "Width": "Width;40", "XScale": "XScale;5", "YScale": "YScale;5"}
    rows[row.split(";")[0]] = row
    path = _tags_file(tmp_path, list(rows.values()))
    _refused_at_line(read_tags, path, line, reason)


@pytest.mark.parametrize(
    "row,line",
    [("XScale;5;;Å", 3), ("XScale;5;nm;Å", 3), ("XScale\t5\t\tÅ", 3), ("Height;30;px;2", 1), ("Unit;nm;Å", 5)],
)
def test_tags_fields_after_the_unit_are_refused(tmp_path, row, line):
    """``XScale;5;;Å`` was read as 5 nm (the unit, in a fourth field, left out: 10 times too large)."""
    rows = {"Height": "Height;30", "Width": "Width;40", "XScale": "XScale;5", "YScale": "YScale;5"}
    rows[re.split(r"[;\t]", row)[0]] = row
    path = _tags_file(tmp_path, list(rows.values()))  # a Unit row is added last
    with pytest.raises(RawDataError, match=r"more fields than 'key;(value;)?unit' in .*would be left out") as caught:
        read_tags(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")


@pytest.mark.parametrize("value", ["1,000", "2.048", "1.000", "30,000"])
def test_pixel_counts_with_a_thousands_separator_are_refused(tmp_path, value):
    """``Width;1,000`` was read as 1 px (a decimal comma), ``2.048`` refused as fractional: a ','
    or '.' before exactly three digits in a pixel count may be a thousands separator."""
    path = _tags_file(tmp_path, ["Height;30", f"Width;{value}", "XScale;5", "YScale;5"])
    with pytest.raises(RawDataError, match=rf"'Width' value {value!r}: .* thousands separator") as caught:
        read_tags(path)
    assert str(caught.value).startswith(f"{path}:2: ")


def test_tags_missing_key_and_garbage_bytes(tmp_path):
    path = _tags_file(tmp_path, ["Height;30", "Width;40", "XScale;1"])
    with pytest.raises(RawDataError, match=r"no yscale row"):
        read_tags(path)
    path.write_bytes(b"Height;30\nWidth;40\nXScale;1\x81\x8d\nYScale;1\n")  # not UTF-8, undefined in cp1252
    with pytest.raises(RawDataError, match=rf"^{path}:3: not text in utf-8 or cp1252"):
        read_tags(path)


@pytest.mark.parametrize(
    "data,line",
    [
        (b"Height;30\nWidth;40\nXScale;5\0\nYScale;5\n", 3),  # before: "no height / width / xscale / yscale row"
        (b"Height;30\nWidth;40\nXScale;5\nYScale;5\n" + b"\0" * 64, 5),  # before: "not text in utf-16-be"
        (b"Height;30\nWidth;40\nXScale;5\nYScale;5\n\n" + b"\0" * 63, 6),
    ],
)
def test_text_with_stray_or_padding_nul_bytes_is_not_taken_for_utf16(tmp_path, data, line):
    """A stray NUL byte, or a file padded with zeros (cut by a crash), was decoded as UTF-16 without
    BOM: mojibake without any key, or a decoding error about UTF-16. Now the NULs are named."""
    path = tmp_path / "x.tif_tags.csv"
    path.write_bytes(data)
    with pytest.raises(RawDataError, match=rf"^{path}:{line}: not text: NUL characters after decoding as utf-8"):
        read_tags(path)
    positions = tmp_path / "x_particlepositions.txt"
    positions.write_bytes(b"image;x.tif\nunit;pixel\nformat;x;y\nparticleposition\n1;2\n" + b"\0" * 64)
    with pytest.raises(RawDataError, match=rf"^{positions}:6: not text: NUL characters"):
        read_positions(positions)


@pytest.mark.parametrize(
    "row",
    ["order;yx", "swap xy;true", "transposed;yes", "coordinate order;row,column", "origin;bottom-left"]
    + ["y-axis;up", "offset;10", "index;1-based", "binning;2", "scale;0.5", "downsample;2", "magnification;2"]
    + ["image width;500", "ImageHeight;500", "pixelsize;2", "pixel size;2;nm", "Calibration;2 nm/px", "Scale;1;nm"]
    # a geometry word glued to another or inflected: were skipped (points read unscaled, unflipped)
    + ["Resampled;0.5", "downscaled;2", "resize;50%", "nm/px;1", "yflip;1", "flipy;1", "Y-up;yes", "ydown;false"]
    + ["BottomLeft;yes", "lowerleft;1", "pixelcenter;0.5"],
)
def test_positions_header_row_saying_how_to_read_the_points_is_refused(tmp_path, row):
    """Before: skipped, so the points were read as they stand: ``order;yx`` left x and y swapped,
    ``origin;bottom-left`` y unflipped, ``binning;2`` half-size positions, without a word. The reader
    applies none of these, so it refuses them, naming the line; harmless rows are still skipped."""
    path = _positions_file(tmp_path, ["image;x.tif", "unit;pixel", row, "format;x;y", "particleposition", "1;2"])
    with pytest.raises(RawDataError, match="says how to read the points .* which the reader does not apply") as caught:
        read_positions(path)
    assert str(caught.value).startswith(f"{path}:3: header line {row!r}")
    harmless = ["date;2020-01-01", "operator;jm", "grayscale;yes", "Sample;Adenovirus", "comment;scale bar cut"]
    # words of other meanings, free text under an image-name key, the file's own name, initials
    harmless += ["ImageJ;1.53", "Source;camera", "Lower threshold;10", "Set up;Fiji", "Autoscale;off", "Unbinned;yes"]
    harmless += ["Positions in px", "File created by ImageJ", "Micrograph;yes", "File;1 of 3", "Filepath;C:\\data\\"]
    harmless += ["File;x_particlepositions.txt", "Picked by R C Smith"]
    for line in harmless:
        path = _positions_file(tmp_path, ["image;x.tif", line, "format;x;y", "particleposition", "1;2"])
        assert read_positions(path, image="x.tif")[0].tolist() == [[1, 2]], line


def _positions_file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "x_particlepositions.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "header",
    [
        [],
        ["image;x.tif"],
        ["image;x.tif", "unit;pixel", "format;x;y"],
        ["image;x.tif", "unit;px", "format;x;y", "comment;by hand"],
        ["info;by hand", "operator;jm", "----------", "format;x;y"],
    ],
)
def test_positions_header_recognised_not_counted(tmp_path, header):
    """Case 4: with no header (or one of any length) every particle is read."""
    body = ["particleposition", "1;2", "particleposition", "3,5;4", "particleposition", "5;6", "7;8"]
    shapes = read_positions(_positions_file(tmp_path, header + body))
    assert [s.tolist() for s in shapes] == [[[1, 2]], [[3.5, 4]], [[5, 6], [7, 8]]]


def test_positions_without_header_or_markers_is_one_line(tmp_path, caplog):
    """Read as one centre line, with a warning naming the file: round particles written without
    markers (or before the first marker) would otherwise silently become one particle (2 of them
    one patch between the two)."""
    path = _positions_file(tmp_path, ["image;x.tif", "1;2", "3;4"])
    with caplog.at_level(logging.WARNING, logger="temvirus.raw"):
        assert [s.tolist() for s in read_positions(path)] == [[[1, 2], [3, 4]]]
    assert f"{path}: 2 points and no 'particleposition' line" in caplog.text
    caplog.clear()
    # before the first marker of a file that has markers: read alike, but silently (a lost first marker
    # merged two round particles into one 2-point line, one patch between them)
    path = _positions_file(tmp_path, ["image;x.tif", "1;2", "3;4", "particleposition", "5;6"])
    with caplog.at_level(logging.WARNING, logger="temvirus.raw"):
        assert [s.tolist() for s in read_positions(path)] == [[[1, 2], [3, 4]], [[5, 6]]]
    assert f"{path}: 2 points before the first 'particleposition' line: read as one particle" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="temvirus.raw"):
        read_positions(_positions_file(tmp_path, ["1;2", "particleposition", "3;4"]))  # one point first
        read_positions(_positions_file(tmp_path, ["particleposition", "1;2", "3;4"]))  # a marked centre line
        read_positions(_positions_file(tmp_path, ["1;2"]))  # one point
    assert not caplog.text


@pytest.mark.parametrize(
    "lines,reason,line",
    [
        (["image;x.tif", "units;nm", "particleposition", "1;2"], "positions in unit 'nm'", 2),
        (["Pixel Unit;µm", "1;2"], "positions in unit 'µm'", 1),
        (["format;y;x", "format;x;y", "1;2"], "column order 'format;x;y' contradicts line 1", 2),
        (["X;Y", "format;y;x", "1;2"], "contradicts line 1", 2),
        (["; 2", "3;4"], "empty field", 1),
        (["particleposition", "1_0;2"], "expected 'x;y'", 2),
    ],
)
def test_positions_header_and_numbers_never_misread(tmp_path, lines, reason, line):
    """A unit key spelled otherwise, contradicting column orders, a line without x, '1_0' (10 to
    Python): each an error naming the line, never skipped or read as another value."""
    path = _positions_file(tmp_path, lines)
    _refused_at_line(read_positions, path, line, reason)


def test_positions_column_header_gives_the_order(tmp_path):
    assert read_positions(_positions_file(tmp_path, ["y;x", "1;2", "3;4"]))[0].tolist() == [[2, 1], [4, 3]]
    assert read_positions(_positions_file(tmp_path, ["X\tY", "1\t2"]))[0].tolist() == [[1, 2]]


def test_positions_format_and_unit(tmp_path):
    swapped = _positions_file(tmp_path, ["format;y;x", "particleposition", "1;2"])
    assert read_positions(swapped)[0].tolist() == [[2, 1]]
    for lines, reason, line in [
        (["image;a", "unit;nm", "particleposition", "1;2"], "positions in unit 'nm'", 2),
        (["format;x;y;z", "1;2"], "unknown format 'x;y;z'", 1),
        (["particleposition", "1;2", "unit;pixel"], "expected 'x;y'", 3),
    ]:
        path = _positions_file(tmp_path, lines)
        _refused_at_line(read_positions, path, line, reason)


def _gray_ramp() -> np.ndarray:
    return (np.arange(30 * 40).reshape(30, 40) % 256).astype(np.uint8)


def test_palette_tiff_and_png_read_alike(tmp_path):
    """Case 5: an inverted palette is applied for TIFF as for PNG (same gray values, not indices)."""
    from temvirus.raw import read_image

    indices = _gray_ramp()
    palette = np.arange(255, -1, -1, dtype=np.uint8)  # index i shows gray 255 - i
    png = tmp_path / "p.png"
    image = Image.fromarray(indices, mode="P")
    image.putpalette(np.repeat(palette, 3).tolist())
    image.save(png)
    tif = tmp_path / "p.tif"
    tifffile.imwrite(
        tif, indices, photometric="palette", colormap=np.repeat(palette[None].astype(np.uint16) * 257, 3, 0)
    )
    expected = 255 - indices
    np.testing.assert_array_equal(read_image(png), expected)
    np.testing.assert_array_equal(read_image(tif), expected)
    assert read_image(tif).dtype == read_image(png).dtype == np.uint8


def test_photometric_rules(tmp_path, caplog):
    """MINISWHITE is inverted; gray RGB gives its channel; colour gives BT.601 luma, with a warning naming
    the file (before: none; a TEM micrograph is gray); transparency is refused."""
    from temvirus.raw import read_image

    gray = _gray_ramp()
    tifffile.imwrite(tmp_path / "w.tif", 255 - gray, photometric="miniswhite")
    np.testing.assert_array_equal(read_image(tmp_path / "w.tif"), gray)
    tifffile.imwrite(tmp_path / "w16.tif", (65535 - gray.astype(np.uint16) * 257), photometric="miniswhite")
    np.testing.assert_array_equal(read_image(tmp_path / "w16.tif"), gray.astype(np.uint16) * 257)
    rgb = np.stack([gray] * 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "g.png")
    tifffile.imwrite(tmp_path / "g.tif", rgb, photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "g.tif"), gray)
    colour = rgb.copy()
    colour[..., 0] = 0
    tifffile.imwrite(tmp_path / "c.tif", colour, photometric="rgb")
    Image.fromarray(colour).save(tmp_path / "c.png")
    luma = np.round(gray * 0.587 + gray * 0.114).astype(np.uint8)
    assert "colour" not in caplog.text  # gray RGB
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), luma)
    np.testing.assert_array_equal(read_image(tmp_path / "c.png"), luma)
    assert caplog.text.count("read as its luma: a TEM micrograph is gray") == 2 and "c.png: a colour" in caplog.text
    caplog.clear()
    noisy = rgb.copy()  # JPEG-like chroma noise of a few levels on a gray image: no warning
    noisy[..., 2] = np.clip(noisy[..., 2].astype(int) + 3, 0, 255)
    Image.fromarray(noisy).save(tmp_path / "n.png")
    read_image(tmp_path / "n.png")
    assert "colour" not in caplog.text
    rgba = np.concatenate([rgb, np.full((30, 40, 1), 255, np.uint8)], axis=-1)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "t.png")
    with pytest.raises(RawDataError, match="t.png: RGBA image has transparent pixels"):
        read_image(tmp_path / "t.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "k.jpg")
    with pytest.raises(RawDataError, match="k.jpg: image mode CMYK is not supported"):
        read_image(tmp_path / "k.jpg")


@pytest.mark.parametrize("compression", ["lzw", "deflate", "zstd", "jpeg"])
def test_compressed_tiffs(tmp_path, compression):
    """LZW, deflate, zstd and JPEG-compressed TIFFs are read (imagecodecs)."""
    from temvirus.raw import read_image

    gray = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (32, 1))
    tifffile.imwrite(tmp_path / "z.tif", gray, compression=compression)
    got = read_image(tmp_path / "z.tif")
    assert got.shape == gray.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - gray).max() <= (8 if compression == "jpeg" else 0)


@pytest.mark.parametrize(
    "pixels,expected",
    [
        (np.full((30, 40), 7, np.float32), "uint16"),
        (np.full((30, 40), 70000 - 5000, np.uint32), "uint16"),
        (np.full((30, 40), 300, np.int16), "uint16"),
        (np.ones((30, 40), bool), "uint8"),
        (np.full((30, 40), 0.5, np.float32), "fractional values"),
        (np.full((30, 40), -3, np.int16), "outside 0..65535"),
        (np.full((30, 40), 70000, np.uint32), "outside 0..65535"),
        (np.full((30, 40), np.nan, np.float64), "NaN"),
    ],
)
def test_pixel_types_converted_or_refused_at_read_time(good, tmp_path, pixels, expected):
    """Case 8: any depth is converted losslessly to uint8/16, or `temvirus read` refuses it naming the file."""
    from temvirus.cli import main
    from temvirus.raw import read_image

    image = good / "train/Adenovirus/a1.tif"
    tifffile.imwrite(image, pixels, photometric="minisblack")
    if expected in ("uint8", "uint16"):
        got = read_image(image)
        assert got.dtype == expected and got.shape == (30, 40)
        np.testing.assert_array_equal(got, pixels.astype(np.uint16) * (255 if pixels.dtype == bool else 1))
    else:
        _expect_error(good, image, expected, tmp_path)
        assert (
            main(["read", str(good), "--images", str(tmp_path / "i.csv"), "--particles", str(tmp_path / "p.csv")]) == 1
        )
        assert not (tmp_path / "i.csv").exists()


def test_png_of_any_size_is_read_like_a_tiff(tmp_path):
    """A 13,400 px square PNG (180 M pixels: a large frame or a montage) is read as a TIFF of that
    size is, not refused as a "decompression bomb" (Pillow's limit, 179 M pixels) nor warned about."""
    from temvirus.raw import read_image

    pixels = np.zeros((13_400, 13_400), np.uint8)
    pixels[::97] = 200
    Image.fromarray(pixels).save(tmp_path / "big.png", compress_level=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_image(tmp_path / "big.png")
    np.testing.assert_array_equal(got, pixels)


def test_a_grayscale_tiff_is_mapped_for_analysis_and_read_alike(tmp_path):
    """`temvirus analyse` gets a grayscale 8- or 16-bit TIFF as a read-only numpy.memmap
    (``read_image(mapped=True)``; pixels read from disk as used) instead of reading it whole, so a
    montage over MAX_IMAGE_PIXELS is analysed too: mapped as stored when uncompressed, else decoded
    into a temporary file (compressed, in strips or tiles, big-endian). The pixels are those
    read_image gives. A colour TIFF is read as before."""
    from temvirus.raw import MAX_IMAGE_PIXELS, read_image

    pixels = (np.arange(300 * 400).reshape(300, 400) * 7 % 65521).astype(np.uint16)
    kinds = {
        "plain": {},
        "deflate": {"compression": "zlib"},
        "lzw-tiles": {"compression": "lzw", "tile": (64, 128)},
        "big-endian": {"byteorder": ">"},
        "big-endian-lzw": {"byteorder": ">", "compression": "lzw", "predictor": True},
        "jpeg-8-bit": {"compression": "jpeg", "rowsperstrip": 16},
        "rgb": {"photometric": "rgb"},
    }
    for name, options in kinds.items():
        data = np.repeat(pixels[..., None], 3, axis=2) if name == "rgb" else pixels
        data = (data >> 8).astype(np.uint8) if name == "jpeg-8-bit" else data
        tifffile.imwrite(
            tmp_path / f"{name}.tif", data, photometric=options.pop("photometric", "minisblack"), **options
        )
        got = read_image(tmp_path / f"{name}.tif", mapped=True)
        assert isinstance(got, np.memmap) == (name != "rgb"), name
        assert not got.flags.writeable or name == "rgb", name
        assert got.dtype == np.dtype(data.dtype).newbyteorder("="), name
        np.testing.assert_array_equal(got, read_image(tmp_path / f"{name}.tif"))
    with tifffile.TiffWriter(tmp_path / "montage.tif") as tif:
        tif.write(shape=(40_000, 40_000), dtype="uint16")  # sparse: nothing is read
    assert 40_000**2 > MAX_IMAGE_PIXELS and read_image(tmp_path / "montage.tif", mapped=True).shape == (40_000, 40_000)


def test_a_compressed_tiff_is_decoded_for_analysis_in_bounded_memory(tmp_path):
    """A compressed micrograph is decoded for `temvirus analyse` a strip at a time into a mapped
    temporary file: the memory allocated while reading a 4096 x 4096 px 16-bit LZW TIFF (32 MiB of
    pixels) is a few of tifffile's read buffers (12 MiB; 14 MiB for 8192 x 8192 px), not the image
    (it was read whole before, and refused over
    MAX_IMAGE_PIXELS); its pixels are the image's. A TIFF to decode (here: big-endian) stored in one
    strip larger than MAX_IMAGE_PIXELS is refused from its header, naming the file and the strip."""
    import tracemalloc

    from temvirus.raw import DECODE_BUFFER_BYTES, read_image

    pixels = np.random.default_rng(0).integers(0, 4096, size=(4096, 4096), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "lzw.tif", pixels, compression="lzw", rowsperstrip=64)
    tracemalloc.start()
    try:
        got = read_image(tmp_path / "lzw.tif", mapped=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(got, np.memmap)
    assert peak < 4 * DECODE_BUFFER_BYTES < pixels.nbytes, f"{peak / 2**20:.1f} MiB allocated to read the image"
    np.testing.assert_array_equal(got, pixels)
    with tifffile.TiffWriter(tmp_path / "one-strip.tif", byteorder=">") as tif:  # sparse: only its header is read
        tif.write(shape=(40_000, 40_000), dtype="uint16", rowsperstrip=40_000)
    with pytest.raises(RawDataError, match=r"one-strip.tif.*strips or tiles of 40000x40000 px"):
        read_image(tmp_path / "one-strip.tif", mapped=True)


def test_a_compressed_tiff_without_room_to_decode_it_is_refused_naming_the_space(tmp_path):
    """Decoding a compressed micrograph for `temvirus analyse` writes its pixels to a temporary file;
    where the disk has no room for them (here: a file-size limit, ``RLIMIT_FSIZE``, under the 32 MiB
    needed), the space is claimed first and the image is refused naming the file, the space needed
    and TMPDIR. Before, the temporary file was sparse: on a full disk (a 4 MiB tmpfs) the process
    was killed by SIGBUS as a pixel was written to the map, and under this limit it failed with an
    OSError naming no file."""
    pixels = np.random.default_rng(0).integers(0, 4096, size=(4096, 4096), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "lzw.tif", pixels, compression="lzw", rowsperstrip=64)
    child = (
        "import resource, signal, sys\n"
        "from temvirus.raw import RawDataError, read_image\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))\n"
        "try:\n"
        "    read_image(sys.argv[1], mapped=True)\n"
        "except RawDataError as exc:\n"
        "    sys.exit(str(exc))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child, str(tmp_path / "lzw.tif")],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert re.search(r"lzw.tif.*32 MiB of temporary space needed in .*TMPDIR", done.stderr), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lzw.tif"]


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header says ``width`` x ``height`` px, with one empty image data chunk."""
    import struct

    from temvirus.raw import PNG_SIGNATURE

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_an_image_too_large_to_decode_is_refused_from_its_header(tmp_path, suffix):
    """A 40000 x 40000 px image (1.6 G pixels, over MAX_IMAGE_PIXELS) is refused naming its size
    before a pixel is decoded: a PNG of a few bytes, all one value, took over 10 GB before it was
    refused as blank. The TIFF is sparse on disk; the JPEG is a small one whose frame header says so."""
    from temvirus.raw import MAX_IMAGE_PIXELS, read_image

    path = tmp_path / f"huge{suffix}"
    if suffix == ".png":
        _png_header_only(path, 40_000, 40_000)
    elif suffix == ".tif":
        with tifffile.TiffWriter(path) as tif:
            tif.write(shape=(40_000, 40_000), dtype="uint8")  # no data written: a sparse file
    else:
        Image.fromarray(_gray_ramp()).save(path)
        data = bytearray(path.read_bytes())
        frame = data.index(b"\xff\xc0") + 5  # baseline frame header: length, precision, then height, width
        data[frame : frame + 4] = (40_000).to_bytes(2, "big") * 2
        path.write_bytes(bytes(data))
    assert 40_000**2 > MAX_IMAGE_PIXELS
    with pytest.raises(RawDataError, match=r"huge.*40000x40000 px \(1600 M pixels\) is larger than the 1074 M"):
        read_image(path)


def test_macos_leftovers_are_ignored(good):
    """Case 7: AppleDouble ``._`` files, .DS_Store and __MACOSX do not stop a valid dataset."""
    before = read_dataset(good)[0]
    (good / "train/Adenovirus/._a1.tif").write_bytes(b"\0\5\26\7 AppleDouble")
    (good / "train/Adenovirus/tags/._a1.tif_tags.csv").write_bytes(b"\0\5\26\7")
    (good / "train/.DS_Store").write_bytes(b"\0")
    (good / "__MACOSX/train/Adenovirus").mkdir(parents=True)
    (good / "train/__MACOSX").mkdir()
    pd.testing.assert_frame_equal(read_dataset(good)[0], before)


def test_archive_inside_the_layout_is_named(good, tmp_path):
    """Case 8: a zip inside the raw layout is refused by name instead of its images going missing."""
    inner = good / "train/Adenovirus/more_images.zip"
    inner.write_bytes(b"PK\5\6" + b"\0" * 18)
    _expect_error(good, inner, "archive inside the raw-layout folder", tmp_path)


def test_dataset_reads_units_and_utf16_tags(good):
    """Case 1 through the table: an Å scale and a UTF-16 file give nm, not the raw number."""
    tags = good / "train/Adenovirus/tags/a1.tif_tags.csv"
    rows = ["Binning;2"] + tags.read_text().replace("XScale;5", "XScale;50;Å").replace(
        "YScale;5", "YScale;50;Å"
    ).splitlines()
    tags.write_text("\n".join(rows) + "\n", encoding="utf-16")
    images = read_dataset(good)[0].set_index("image_id")
    assert images.loc["a1", "pixel_size_nm"] == pytest.approx(5)


def test_audit_refuses_a_folder_without_records(good, capsys):
    """Case 6: `temvirus audit` on a raw folder writes nothing into it; `temvirus read` still reads it."""
    from temvirus.cli import main

    before = sorted(p.relative_to(good) for p in good.rglob("*"))
    assert main(["audit", str(good)]) == 1
    assert f"{good}: no lineage records in provenance/" in capsys.readouterr().err
    assert sorted(p.relative_to(good) for p in good.rglob("*")) == before
    assert main(["read", str(good)]) == 0


# -- a user's own files (issue 12, second pass): every variant read right or refused by name --


@pytest.mark.parametrize(
    "text",
    [
        "\ufeffHeight;30\nWidth;40\nXScale;0,557\nYScale;0,557\n",
        "Height;30\r\nWidth;40\r\nXScale;0,557\r\nYScale;0,557\r\n",
        "Height;30\rWidth;40\rXScale;0,557\rYScale;0,557\r",
        "HEIGHT;30 \t\nwidth;\t40\nXSCALE ;0,557 \nyscale;0,557\t\n",
        "Height;30.0\nWidth;40\nXScale;5.57e-1\nYScale;5.57E-01\n",
        "Height;30\nWidth;40\nXScale;0.557 nm per px\nYScale;0.557;nm/pixel\n",
        "Height\t30\nWidth\t40\nXScale\t0.557\nYScale\t0.557\n",
        "Height = 30\nWidth = 40\nXScale = 0.557 nm\nYScale = 0.557 nm\n",
        "Height: 30\nWidth: 40\nXScale: 5,57 Å\nYScale: 5,57 Å\n",
        "Height,30\nWidth,40\nXScale,0.557\nYScale,0.557\n",
        '"Height";"30"\n"Width";"40"\n"XScale";"0,557"\n"YScale";"0,557"\n',
        "Height;30\nWidth;40\nXScale [Å];5,57\nYScale (nm/px);0,557\n",
        "Height;30;px\nWidth;40;pixels\nXScale;557;pm\nYScale;557;pm\n",
        "Height;30\nWidth;40\nXScale;0,557\nYScale;0,557\nXScale;0.557\nUnit;nm\nUnit;nanometres\n",
    ],
)
def test_tags_variants_read_alike(tmp_path, text):
    """BOM, CRLF/CR, spaces, case, exponents, other separators, quotes, units in the key: the same values."""
    path = tmp_path / "x.tif_tags.csv"
    path.write_bytes(text.encode())
    tags = read_tags(path)
    assert (tags.width, tags.height) == (40, 30)
    assert tags.pixel_size_x_nm == pytest.approx(0.557) and tags.pixel_size_y_nm == pytest.approx(0.557)


@pytest.mark.parametrize(
    "text,reason,line",
    [
        ("Height,30\nWidth,40\nXScale,0,557\nYScale,0,557\n", "ambiguous row 'XScale,0,557'", 3),
        ("Height;30;nm\nWidth;40\nXScale;1\nYScale;1\n", "whole number of pixels, got '30' in nm", 1),
        ("Height;30\nWidth;40\nUnit;nm\nUnit;Å\nXScale;15\nYScale;15\n", "unit rows disagree", 4),
        ("Height;30\nWidth;40\nXScale;1;pixel\nYScale;1;pixel\n", "unknown unit 'pixel'", 3),
        ("Height;30\nWidth;40\nXScale;1,8;px/nm\nYScale;1,8;px/nm\n", "unknown unit 'px/nm'", 3),
        ("Height;30\nWidth;40\nXScale;1,5\nYScale;1,5\nXScale;1.6\n", "'XScale' given twice .*'1,5' on line 3", 5),
        ("\n \n", "empty tags file", None),
        (
            "Height;30\nWidth;40\nPixelSize;14\n",
            r"no xscale / yscale row .*; a pixel size under another name \(line 3: 'PixelSize'\)",
            3,
        ),
        (
            "Height;30\nWidth;40\nXScale_nm;2\nYScale_nm;2\n",
            r"under another name \(line 3: 'XScale_nm', line 4: 'YScale_nm'\)",
            3,
        ),
        (
            "XScale;2\nYScale;2\n",
            r"no height / width row \(rows are 'key;value', keys Height, Width, XScale, YScale\)$",
            None,
        ),
        # non-square pixels: refused by read_tags itself, so that no reader of a pixel size (temvirus
        # analyse, the figures) silently takes XScale alone
        ("Height;30\nWidth;40\nXScale;2\nYScale;2,1\n", r"non-square pixels \(2 x 2.1 nm\)", 4),
    ],
)
def test_tags_variant_errors_name_the_row(tmp_path, text, reason, line):
    path = tmp_path / "x.tif_tags.csv"
    path.write_bytes(text.encode())
    with pytest.raises(RawDataError, match=reason) as caught:
        read_tags(path)
    assert str(caught.value).startswith(f"{path}:{line}: " if line else f"{path}: ")


@pytest.mark.parametrize(
    "text",
    [
        "image;x.tif\r\nunit;pixel\r\nformat;x;y\r\nparticleposition\r\n10;12\r\nparticleposition\r\n20,5;5\r\n",
        "# by hand\nparticleposition\n\n10;12\n# next\nparticleposition\n20,5;5\n\n",
        "ParticlePosition;\n10;12;\nparticle position\n20,5;5;;\n",
        "particlepositions\n10\t12\nparticlepositions\n20.5\t5\n",
        "image;x.tif\nparticleposition\n10 12\nparticleposition\n20.5  5\n",
    ],
)
def test_positions_variants_read_alike(tmp_path, text):
    """CRLF, comments, blank lines, trailing separators, the marker's case, tabs or spaces between x and y."""
    path = tmp_path / "x_particlepositions.txt"
    path.write_bytes(text.encode())
    assert [s.tolist() for s in read_positions(path)] == [[[10, 12]], [[20.5, 5]]]


@pytest.mark.parametrize(
    "lines,line",
    [
        (["image;x.tif", "unit;pixel", "format;x;y", "particleposition", "10;12", "", "30;40"], 7),
        (["particleposition", "10;12", "20;14", "", "", "30;40", "particleposition", "50;60"], 6),
        (["10;12", "", "30;40"], 3),  # no marker at all: blank lines as the separators
    ],
)
def test_a_blank_line_between_two_points_of_one_particle_is_refused(tmp_path, lines, line):
    """Before: blank lines were skipped, so two particles separated by a blank line in place of a marker
    were read as one centre line (one patch at their midpoint, a particle lost)."""
    _refused_at_line(
        read_positions,
        _positions_file(tmp_path, lines),
        line,
        rf"a blank line \(line {line - 1 if lines[line - 3] else line - 2}\) between two points of one particle",
    )


_HEADER = ["image;x.tif", "unit;pixel", "format;x;y"]


@pytest.mark.parametrize(
    "lines,line,reason",
    [
        # points in brackets: were skipped as header lines, every particle lost (an empty image)
        ([*_HEADER, "(360.13, 488.45)", "(100.5, 200.5)"], 4, r"a point in brackets: '\(360.13, 488.45\)'"),
        ([*_HEADER, "[360,13; 488,45]"], 4, "a point in brackets"),
        (["image;x.tif", "Point 1: {360.13 488.45}"], 2, "a point in brackets"),
        # a column header in one field: was skipped, x and y swapped
        (["image;x.tif", "y/x", "particleposition", "488;360"], 2, "column header 'y/x' is not one the reader knows"),
        (["image;x.tif", "(y,x)", "particleposition", "488;360"], 2, r"column header '\(y,x\)' is not one"),
        (["image;x.tif", "Row-Col", "particleposition", "488;360"], 2, "column header 'Row-Col' is not one"),
        # another image named under another key, or alone: was not checked, its points read for this one
        (["filename;b7.tif", "particleposition", "10;20"], 1, "header names image 'b7.tif', but this file belongs"),
        (["Image: b7.tif", "particleposition", "10;20"], 1, "header names image 'b7.tif'"),
        (["b7.png", "particleposition", "10;20"], 1, "header names image 'b7.png'"),
        (["image;x.tif;2048;2048", "particleposition", "10;20"], 1, "more fields after the image name 'x.tif'"),
        # the points' unit or geometry said in words, or beside the unit: was skipped, the points read as pixels
        (["image;x.tif", "Positions in nm", "particleposition", "10;20"], 2, r"looks like a unit \('nm'\)"),
        (["image;x.tif", "Coordinates in µm;", "particleposition", "10;20"], 2, r"looks like a unit \('µm'\)"),
        (["image;x.tif", "Units: nm;", "particleposition", "10;20"], 2, "positions in unit 'nm'"),
        (["image;x.tif", "unit;pixel;binned 2x", "particleposition", "10;20"], 2, "more fields than 'unit;pixel'"),
        ([*_HEADER, "zero-based;no", "particleposition", "10;20"], 4, r"says how to read the points \(based\)"),
        ([*_HEADER, "convention;matlab (1-based)", "particleposition", "10;20"], 4, "says how to read the points"),
        ([*_HEADER, "Y axis pointing up", "particleposition", "10;20"], 4, r"says how to read the points \(axis, up\)"),
        ([*_HEADER, "Transform;rot90", "particleposition", "10;20"], 4, "says how to read the points"),
        # a German spreadsheet's thousands separator in every coordinate: was read as 1.36 px
        ([*_HEADER, "particleposition", "1.360;1.120", "particleposition", "1.400;1.250"], 5, "thousands separator"),
    ],
)
def test_positions_read_wrongly_before_are_refused(tmp_path, lines, line, reason):
    """Inputs a new-user probe found read wrongly without an error (2026-12-03): each is refused, naming the line."""
    path = _positions_file(tmp_path, lines)
    with pytest.raises(RawDataError, match=reason) as caught:
        read_positions(path, image="x.tif", size=(1500, 1500), pixel_size_nm=1.0)
    assert str(caught.value).startswith(f"{path}:{line}: ")


@pytest.mark.parametrize(
    "lines",
    [
        ["date;2024-01-05", "operator;J. Doe", "comment;nm by hand", "particleposition", "10;20"],
        ["filename;x.jpg", "source;C:\\data\\x.tif", "Image=x.tif", "particleposition", "10;20"],
        ["Positions in pixels", "X [px];Y [px]", "particleposition", "10;20"],
        [*_HEADER, "particleposition", "10.125;20.000"],  # ImageJ's three decimals
    ],
)
def test_positions_header_words_that_change_nothing_are_still_read(tmp_path, lines):
    assert read_positions(_positions_file(tmp_path, lines), image="x.tif", size=(1500, 1500))[0].tolist() in (
        [[10, 20]],
        [[10.125, 20]],
    )


@pytest.mark.parametrize("text", ["10 12\n20 5\n", "10\t12\n20\t5\n"])
def test_positions_without_header_are_not_taken_for_one(tmp_path, text):
    """Numeric lines are never a header, whatever the separator: no point is lost to an empty image."""
    path = tmp_path / "x_particlepositions.txt"
    path.write_text(text)
    assert [s.tolist() for s in read_positions(path)] == [[[10, 12], [20, 5]]]


@pytest.mark.parametrize("line", ["10.5,12.5", "10,5,12,5", "10, 12, 3"])
def test_positions_with_comma_separators_are_refused(tmp_path, line):
    path = _positions_file(tmp_path, ["particleposition", "1;2", line])
    with pytest.raises(RawDataError, match="ambiguous with a decimal comma") as caught:
        read_positions(path)
    assert str(caught.value).startswith(f"{path}:3: ")


# -- decimal marks, thousands separators and labelled points (new-user trial) --


@pytest.mark.parametrize(
    "lines,line,reason",
    [
        # before: read as (1.0, 5.25) beside points with a decimal point
        (
            [
                "image;x.tif",
                "unit;pixel",
                "format;x;y",
                "particleposition",
                "360.13;488.45",
                "particleposition",
                "1,000;5,250",
            ],
            7,
            r"decimal mark ',' in '1,000' but '.' in '360.13' on line 5: a file must use one decimal mark",
        ),
        (["particleposition", "3,5;4", "particleposition", "12.25;8"], 4, r"'.' in '12.25' but ',' in '3,5' on line 2"),
        (["particleposition", "1.5;2,5"], 2, r"decimal mark ',' in '2,5' but '.' in '1.5' on this line"),
    ],
)
def test_positions_with_two_decimal_marks_are_refused(tmp_path, lines, line, reason):
    path = _positions_file(tmp_path, lines)
    _refused_at_line(read_positions, path, line, reason)


def test_positions_with_three_decimal_commas_read_as_decimals_where_thousands_lie_outside_the_image(tmp_path):
    """'360,125;488,450' (three decimals, as a German export writes them) read as thousands is
    360125 px, outside any image of the given size: the ',' is a decimal mark; where one reading
    in thousands fits in the image ('1,024' in 2048 px) it stays ambiguous and is refused."""
    path = _positions_file(tmp_path, ["particleposition", "360,125;488,450", "particleposition", "12,500;7,000"])
    assert [s.tolist() for s in read_positions(path, size=(2048, 2048))] == [[[360.125, 488.45]], [[12.5, 7]]]
    with pytest.raises(RawDataError, match="may be a thousands separator"):
        read_positions(path)  # no size: ambiguous
    path = _positions_file(tmp_path, ["particleposition", "360,125;1,024"])
    with pytest.raises(RawDataError, match=r"'360,125': a ',' before exactly three digits"):
        read_positions(path, size=(2048, 2048))


@pytest.mark.parametrize(
    "lines,line,reason,shown,read",
    [
        # before: 1,000 read as 1.0 (it may be 1000 with a thousands separator); shown to be decimals by 3,5
        (
            ["particleposition", "1,000;5,250"],
            2,
            r"'1,000': a ',' before exactly three digits may be a thousands separator \(1000 px\) or a decimal "
            r"mark \(1 px\), and no coordinate of the file shows which",
            "3,5;4",
            [[1, 5.25], [3.5, 4]],
        ),
        (
            ["particleposition", "360;488", "particleposition", "1,024;512"],
            4,
            r"'1,024': a ',' before exactly three digits beside coordinates without one \(line 2: '360'\)",
            "1024,5;7",
            [[360, 488], [1.024, 512], [1024.5, 7]],
        ),
        # a '.' before three digits beside integers: 1.000 as a German spreadsheet writes 1000
        (
            ["particleposition", "1.000;360"],
            2,
            r"'1.000': a '.' before exactly three digits beside coordinates without one \(line 2: '360'\)",
            "0.5;7",
            [[1, 360], [0.5, 7]],
        ),
    ],
)
def test_positions_with_a_possible_thousands_separator_are_refused(tmp_path, lines, line, reason, shown, read):
    """A ',' (or a '.' beside integers) before exactly three digits may be a thousands separator:
    refused, unless another coordinate of the file shows the mark to be a decimal one."""
    path = _positions_file(tmp_path, lines)
    _refused_at_line(read_positions, path, line, reason)
    path = _positions_file(tmp_path, [*lines, "particleposition", shown])
    assert [p for s in read_positions(path) for p in s.tolist()] == read


def test_positions_with_three_decimals_everywhere_read_as_decimals(tmp_path):
    """ImageJ-style fixed three decimals with '.', or a ',' shown to be decimal by '0,5': no thousands."""
    path = _positions_file(tmp_path, ["particleposition", "360.125;488.450", "particleposition", "1.000;2.500"])
    assert [s.tolist() for s in read_positions(path)] == [[[360.125, 488.45]], [[1, 2.5]]]
    path = _positions_file(tmp_path, ["particleposition", "0,500;1,250", "particleposition", "7;8"])
    assert [s.tolist() for s in read_positions(path)] == [[[0.5, 1.25]], [[7, 8]]]
    # a number with both marks is named as a possible thousands separator (before: "use ';'")
    for line in ["1.000,5;2", "1,000,000;2", "2;1.000.000"]:
        path = _positions_file(tmp_path, ["particleposition", line])
        with pytest.raises(
            RawDataError, match=rf"got '{line}' \(two ',' or '.' in one number: a thousands separator\?"
        ):
            read_positions(path)


@pytest.mark.parametrize(
    "lines,line,reason",
    [
        # before: every one taken for a header line: 0 particles, an EmptyImageWarning only
        (["P1 360.13 488.45", "P2 120.5 88.25"], 1, r"2 numbers in a header line: 'P1 360.13 488.45'"),
        (["image;x.tif", "unit;pixel", "format;x;y", "p1;360.13;488.45"], 4, r"header line: 'p1;360.13;488.45'"),
        (["Particle;X;Y", "P1;360.13;488.45"], 1, "column header 'Particle;X;Y' is not one the reader knows"),
        (["Particle", "P1;360.13;488.45"], 2, "a point with a label or an index"),
        (["x=360.13 y=488.45"], 1, r"expected 'x;y' \(px\) alone on a line, or 'particleposition'"),
        (["X: 360.13; Y: 488.45"], 1, "2 numbers in a header line"),
        # before: refused, as "expected 'x;y'" only
        (
            ["image;x.tif", "1;360.13;488.45"],
            2,
            r"\(3 fields: a label, an index column, a third value or a space in a number\? only x",
        ),
        (["360.13;488.45;0.5"], 1, r"got '360.13;488.45;0.5' \(3 fields"),
    ],
)
def test_labelled_points_are_refused(tmp_path, lines, line, reason):
    path = _positions_file(tmp_path, lines)
    _refused_at_line(read_positions, path, line, reason)


def test_positions_column_header_with_units_and_unit_rows_spelt_otherwise(tmp_path):
    """``Y [px];X [px]`` was skipped (y read as x), ``X (nm);Y (nm)`` and ``Unit of length;nm`` too
    (nm read as pixels)."""
    assert read_positions(_positions_file(tmp_path, ["Y [px];X [px]", "1;2"]))[0].tolist() == [[2, 1]]
    assert read_positions(_positions_file(tmp_path, ["x (pixel)\ty (pixel)", "1\t2"]))[0].tolist() == [[1, 2]]
    for lines, reason in [
        (["X (nm);Y (nm)", "1;2"], r"column header 'X \(nm\);Y \(nm\)': only pixel positions"),
        (["image;x.tif", "Unit of length;nm", "1;2"], "positions in unit 'nm'"),
        (["Coordinate units;µm", "1;2"], "positions in unit 'µm'"),
    ]:
        path = _positions_file(tmp_path, lines)
        with pytest.raises(RawDataError, match=reason) as caught:
            read_positions(path)
        assert str(caught.value).startswith(f"{path}:{len(lines) - 1}: ")
    # other header lines, dates and words with 'unit' inside, are still skipped
    path = _positions_file(tmp_path, ["community;virology", "date;2021-03-04", "created 04.03.2021 12:30", "1;2"])
    assert read_positions(path)[0].tolist() == [[1, 2]]


@pytest.mark.parametrize(
    "header",
    ["pos_y;pos_x", "y0;x0", "YPos;XPos", "Center Y;Center X", "y-coordinate;x-coordinate", "row;col", "i;j"]
    + ["vertical;horizontal", "height;width", "YX", "Particle;Y;X"]
    # the axis letter glued to a word: were skipped too (y;x read as x;y)
    + ["YCenter;XCenter", "YPosition;XPosition", "ycoord;xcoord", "Ycentre;Xcentre", "YM;XM", "Top;Left", "r;c"]
    # other names of the axes, and one name told apart by an axis letter or a digit: were skipped too
    + ["centroid-0;centroid-1", "dim_0;dim_1", "Y1;X1", "Xnm;Ynm", "Line;Sample", "Zeile;Spalte", "ligne;colonne"]
    + ["fila;columna", "riga;colonna", "ordinate;abscissa", "lat;lon", "v;h"],
)
def test_a_column_header_the_reader_does_not_know_is_refused(tmp_path, header):
    """Before: skipped as a header line, the points read as x;y whatever the header said (``pos_y;pos_x``:
    x and y swapped, without a word). Known headers (``"y";"x"`` quoted too) set the order."""
    path = _positions_file(tmp_path, [header, "particleposition", "354.87;140.97"])
    with pytest.raises(RawDataError, match="is not one the reader knows, so it cannot tell the column order") as caught:
        read_positions(path)
    assert str(caught.value).startswith(f"{path}:1: column header {header!r}")
    known_lines = [('"y";"x"', [140.97, 354.87]), ("'X';'Y'", [354.87, 140.97]), ("community;virology", None)]
    known_lines += [("Line scan of the sample", None), ("Sample;Adenovirus", None), ("Grid;A1", None)]
    for known, point in known_lines:
        path = _positions_file(tmp_path, [known, "particleposition", "354.87;140.97"])
        assert read_positions(path)[0].tolist() == [point or [354.87, 140.97]]


@pytest.mark.parametrize(
    "row,line",
    [("PixelSize;2", "PixelSize' '2' (2 nm)"), ("Pixel size (nm);2", "Pixel size (nm)' '2' (2 nm)")]
    + [("Pixel Spacing;0.2;nm", "Pixel Spacing' '0.2' (0.2 nm)"), ("PixelHeight;15;Å", "PixelHeight' '15' (1.5 nm)")],
)
def test_a_second_pixel_size_that_contradicts_the_scales_is_refused(tmp_path, row, line):
    """Before: a pixel size under another key was skipped, the image read at XScale's 1 nm without a
    word; now it must agree with XScale/YScale (in its own unit), else both lines are named."""
    rows = ["Height;30", "Width;40", "XScale;1", "YScale;1"]
    path = _tags_file(tmp_path, [*rows, row])
    with pytest.raises(
        RawDataError, match="'" + re.escape(line) + r" contradicts [XY]Scale \(1 nm, line [34]\)"
    ) as caught:
        read_tags(path)
    assert str(caught.value).startswith(f"{path}:5: ")
    agreeing = row.replace(";2", ";1").replace("0.2;nm", "1;nm").replace("15;Å", "10;Å")
    assert read_tags(_tags_file(tmp_path, [*rows, agreeing])).pixel_size_x_nm == 1


@pytest.mark.parametrize(
    "row,agreeing",
    [
        ("Pixel_Size_nm;2", "Pixel_Size_nm;1"),
        ("Scale;2 nm/px", "Scale;10 Å/px"),
        ("Calibration;2,0 nm", "Calibration;1,0 nm"),
        ("Resolution (nm/px);2", "Resolution (nm/px);1"),
        ("Resolution;2 nm per pixel", "Resolution;1 nm per pixel"),
        ("ScaleX;2,0", "ScaleX;1,0"),
        ("scale_y;2", "scale_y;1"),
        ("Pixel size in nm;3", "Pixel size in nm;1"),
        ("PixelSizeÅ;20", "PixelSizeÅ;10"),
        ("XScale_nm;2", "XScale_nm;1"),
        ("nm/px;2", "nm/px;1"),
        ("Calibration;0,002;µm", "Calibration;0,001;µm"),
        # before: skipped; a length per pixel is a pixel size whatever the key
        ("Sampling;2 nm/px", "Sampling;1 nm/px"),
        ("Sampling;20;Å/pixel", "Sampling;10;Å/pixel"),
        ("Sampling (nm/px);2", "Sampling (nm/px);1"),
        # before: skipped; leading words before a pixel-size name
        ("Image Pixel Size;2", "Image Pixel Size;1"),
        ("Specimen Pixel Size;2 nm", "Specimen Pixel Size;10 Å"),
        ("Pixel size at specimen;2 nm", "Pixel size at specimen;1 nm"),  # before: skipped
        ("PixelSizeOnSample;2", "PixelSizeOnSample;1"),
        ("ImagePixelSpacing_nm;2", "ImagePixelSpacing_nm;1"),
        ("Scale;2;nm", "Scale;1;nm"),
        ("Scale (nm);2", "Scale (nm);1"),
    ],
)
def test_a_pixel_size_under_another_name_that_contradicts_the_scales_is_refused(tmp_path, row, agreeing):
    """Before: keys naming the pixel size in other words (a unit in the key: ``_nm``, ``in nm``, ``(nm/px)``;
    scale, calibration, resolution per pixel) were skipped and the image read at XScale's 1 nm without a word."""
    rows = ["Height;30", "Width;40", "XScale;1,0", "YScale;1,0"]
    path = _tags_file(tmp_path, [*rows, row])
    key, value = row.split(";")[:2]
    _refused_at_line(
        read_tags, path, 5, re.escape(f"{key!r} {value!r} (") + r".* contradicts [XY]Scale \(1 nm, line [34]\)"
    )
    assert read_tags(_tags_file(tmp_path, [*rows, agreeing])).pixel_size_x_nm == 1


@pytest.mark.parametrize(
    "row,agreeing",
    [
        ("Pixels per nm;2", "Pixels per nm;1"),
        ("PixelsPerNm;2", "PixelsPerNm;1,0"),
        ("px/nm;2", "px/nm;1"),
        ("Pixels/Å;0.5", "Pixels/Å;0.1"),
        ("Pixels per µm;500", "Pixels per µm;1000"),
        ("Resolution;2 px/nm", "Resolution;1000 px/µm"),
        ("Scale;2 pixels per nm", "Scale;1 pixel per nm"),
        ("Scale (px/nm);2", "Scale (px/nm);1"),
        ("Calibration;2;px/nm", "Calibration;0,1;px/Å"),
        ("Pixel density;2 px/nm", "Pixel density;1 px/nm"),
    ],
)
def test_a_pixel_density_whose_inverse_contradicts_the_scales_is_refused(tmp_path, row, agreeing):
    """Before: pixels per length (the inverse of a pixel size) was skipped under any key, so a tags file
    saying 2 px/nm beside XScale 1 nm was read at 1 nm without a word; now its inverse must agree."""
    rows = ["Height;30", "Width;40", "XScale;1", "YScale;1"]
    key, value = row.split(";")[:2]
    _refused_at_line(
        read_tags,
        _tags_file(tmp_path, [*rows, row]),
        5,
        re.escape(f"{key!r} {value!r} (")
        + r"[0-9.]+ nm a pixel: the inverse of this pixel density\) contradicts XScale",
    )
    assert read_tags(_tags_file(tmp_path, [*rows, agreeing])).pixel_size_x_nm == 1


@pytest.mark.parametrize("row", ["Units: Å;", "Unit = Å;", "Unit Å;", "Unit: Å;;", "[Å];", "Scale in Å;"])
def test_a_unit_row_written_in_one_cell_is_refused(tmp_path, row):
    """Key and unit in one spreadsheet cell, the next one empty: was skipped, XScale 5,57 read in nm (5.57 nm for
    0.557). Now refused as a unit the reader cannot attach, naming the line."""
    rows = ["Height;30", "Width;40", "XScale;5,57", "YScale;5,57", row]
    _refused_at_line(read_tags, _tags_file(tmp_path, rows), 5, r"looks like a unit \('Å'\)")
    assert read_tags(_tags_file(tmp_path, [*rows[:4], "Comment;", "Operator: Smith;"])).pixel_size_x_nm == 5.57


def test_a_pixel_size_in_metres_without_its_unit_is_checked_as_metres(tmp_path):
    """FEI/Thermo write ``PixelWidth;5e-10`` (metres, no unit): was out of range in nm and skipped, so a
    contradiction passed; now read as metres and compared."""
    rows = ["Height;30", "Width;40", "XScale;5", "YScale;5"]
    _refused_at_line(
        read_tags,
        _tags_file(tmp_path, [*rows, "PixelWidth;5e-10"]),
        5,
        re.escape("'PixelWidth' '5e-10' (0.5 nm) contradicts XScale (5 nm, line 3)"),
    )
    assert read_tags(_tags_file(tmp_path, [*rows, "PixelWidth;5e-9", "PixelHeight;5,0E-9"])).pixel_size_x_nm == 5


def test_a_scale_in_pixels_per_length_or_a_pixel_density_of_two_units_is_refused(tmp_path):
    """``XScale;2 px/nm`` is a pixel density, not a size: the error gives its inverse; a density row mixing
    units gives no pixel size and is named."""
    rows = ["Height;30", "Width;40"]
    _refused_at_line(
        read_tags,
        _tags_file(tmp_path, [*rows, "XScale;2 px/nm", "YScale;0.5"]),
        3,
        re.escape("unknown unit 'px/nm' of the x pixel size ('px/nm' counts pixels per length, a pixel density: ")
        + re.escape("the pixel size is its inverse, 0.5 nm)"),
    )
    _refused_at_line(
        read_tags,
        _tags_file(tmp_path, [*rows, "XScale;1", "YScale;1", "Pixels per nm;2;Å"]),
        5,
        "a pixel density must be a number of pixels per one length unit",
    )


@pytest.mark.parametrize(
    "row",
    ["ScaleBarLength;100", "ScaleBar;100 nm", "Scale Bar (nm);200", "Magnification;50000", "Scale;1:1000"]
    + ["Scale;100 %", "Scale;2x", "Resolution;300", "Resolution;300 dpi", "Resolution;118 px/cm", "Resolution;2 nm"]
    + ["Resolution [nm];2", "Resolution;4096x4096", "Calibration;done", "Pixel Count;2", "Scale;high"]
    # before: refused as contradicting XScale (bare numbers under scale/calibration: scaling factors)
    + ["Scale;0.5", "Scale;2", "Calibration;2", "Scale;2,5"]
    # before: refused as out of range ('Scale;500 nm': a scale bar) or as contradicting (a camera's pixel)
    + ["Scale;500 nm", "Detector Pixel Size;14 µm", "CCD pixel size;6.45 um", "Camera pixel size;5", "Sampling;1 µm/px"]
    + ["Source;2 nm/px detection crop", "Scale bar;2 nm/px"],
)
def test_rows_that_are_no_pixel_size_are_still_skipped(tmp_path, row):
    """A scale bar, a magnification, a scale factor and a resolution that is no length per pixel (a bare
    number, dpi, px/cm, an instrument resolution in nm) are no pixel size; nor is a bare number under scale or
    calibration (a zoom factor), a length outside the plausible TEM range under another name (a scale bar,
    a camera's physical pixel) or a key naming a detector."""
    rows = ["Height;30", "Width;40", "XScale;1,0", "YScale;1,0", row]
    assert read_tags(_tags_file(tmp_path, rows)).pixel_size_x_nm == 1


@pytest.mark.parametrize(
    "rows",
    [["ScaleBarLength;100", "ScaleBarUnit;nm"], ["FieldOfViewUnit;µm"], ["Probe size;nm"], ["FOV [µm]"]]
    + [["Magnification Unit;Å"], ["Voltage;kV", "Defocus unit;µm"], ["Exposure;Å"], ["Stage X;µm"]]
    + [["TiltAngleUnit;µm"], ["tiltangle;µm"], ["DefocusUnit;µm"]]
    # before: refused as a unit the reader cannot attach; a detector's unit is not the scales'
    + [["Detector pixel unit;µm"], ["CCD;µm"], ["SensorPitch;µm"]]
    # before: a unit row of the scales (its qualifier taken for a unit in brackets): read as 0.1 nm
    + [["Scale unit (stage);Å"], ["Unit [probe];Å"], ["Units (Stage X);Å"]],
)
def test_tags_unit_rows_of_other_quantities_are_skipped(tmp_path, rows):
    """Before: refused as a unit the reader cannot attach, 'so the scales would be read in nm' (they are
    in nm); a key naming another quantity (:data:`~temvirus.raw.OTHER_QUANTITIES`) gives no scale's unit."""
    path = _tags_file(tmp_path, ["Height;30", "Width;40", "XScale;1,0", "YScale;1,0", *rows])
    assert read_tags(path).pixel_size_x_nm == 1


def test_tags_scale_with_a_possible_thousands_separator(tmp_path):
    """``50,000;pm`` was read as 0.05 nm (it may be 50 nm), ``2,500;pm`` refused as out of range
    without the reason; ``1,000`` (nm) stays 1 nm: 1000 nm is no TEM pixel size."""
    rows = ["Height;30", "Width;40"]
    for scale, reason in [
        ("50,000;pm", r"'XScale' value '50,000': .* thousands separator \(50000 pm = 50 nm\) or decimals \(50 pm"),
        ("2,500;pm", r"thousands separator \(2500 pm = 2.5 nm\) or decimals \(2.5 pm = 0.0025 nm\)"),
        ("1.234,5", r"'XScale' value '1.234,5' is not a number \(two ',' or '.' in one number: a thousands separator"),
        ("1,000,5", r"'XScale' value '1,000,5' is not a number \(two ',' or '.' in one number"),
    ]:
        path = _tags_file(tmp_path, [*rows, f"XScale;{scale}", f"YScale;{scale}"])
        with pytest.raises(RawDataError, match=reason) as caught:
            read_tags(path)
        assert str(caught.value).startswith(f"{path}:3: ")
    assert read_tags(_tags_file(tmp_path, [*rows, "XScale;1,000", "YScale;1,000"])).pixel_size_x_nm == 1


@pytest.mark.parametrize(
    "rows,line",
    [
        (["Height;30", "Width;40", "Length Unit;Å", "XScale;5,57", "YScale;5,57"], 3),
        (["Height;30", "Width;40", "XScale;5,57", "YScale;5,57", "Scale units;Å"], 5),
        (["Height;30", "Width;40", "Unit of length;µm", "XScale;0,000557", "YScale;0,000557"], 3),
    ],
)
def test_tags_unit_rows_the_reader_does_not_take_are_refused(tmp_path, rows, line):
    """``Length Unit;Å`` was skipped as an unknown row: ``XScale;5,57`` read as 5.57 nm, 10 times
    the pixel size (in range, so silently). A row naming a unit other than another quantity's
    (``VoltageUnit;kV``) is still skipped."""
    path = _tags_file(tmp_path, rows)
    with pytest.raises(
        RawDataError, match=r"row '.*' looks like a unit \('(Å|µm)'\) that the reader cannot attach"
    ) as caught:
        read_tags(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    other = _tags_file(
        tmp_path, ["Height;30", "Width;40", "VoltageUnit;kV", "TimeUnit;s", "XScale;5,57;Å", "YScale;5,57;Å"]
    )
    assert read_tags(other).pixel_size_x_nm == pytest.approx(0.557)


_STRAY = r"looks like a unit \('{unit}'\) that the reader cannot attach to a value: its key is not one it reads"


@pytest.mark.parametrize(
    "row,unit,renamed",
    [
        ("ScaleUnitX;Å", "Å", "Unit;Å"),
        ("PixelSizeUnitX;Å", "Å", "Units;Å"),
        ("XScaleUnitName;Å", "Å", "ScaleUnit;Å"),
        ("Calibration;Å", "Å", "Scale Unit;Å"),
        ("Length;Å", "Å", "Unit;Å"),
        ("Einheit;Å", "Å", "unit;Å"),
        ("Scale;Å/px", "Å/px", "Unit;Å/px"),
        ("Scale;  a / pixel ", "a / pixel", "Unit;a / pixel"),
        ("PixelScale;NM/PIXEL", "NM/PIXEL", None),
        ("Calibration;[nm]", "[nm]", None),
        ("Calibration;(Å)", "(Å)", None),
        ("Spacing;\u212b", "\u212b", "Pixel-Unit;\u212b"),
        ("Spacing;A\u030a", "A\u030a", "Unit;A\u030a"),
        ("Angstroms;angstroms", "angstroms", "Unit;angstroms"),
        ("XY;Å;Å", "Å", None),
        ("Scale\tÅ", "Å", "Unit\tÅ"),
        ("Scale=a", "a", "Unit=a"),
        # before: skipped, 'time' being found inside the word 'Realtime' (other quantities match whole words)
        ("Realtime Scale Unit;Å", "Å", "Scale Unit;Å"),
        ("Calibration [Å];", "Å", None),
        ("Unit [Å]", "Å", None),
        ('"Calibration";"Å"', "Å", '"Unit";"Å"'),
    ],
)
def test_tags_a_unit_under_a_key_the_reader_does_not_use_is_refused(tmp_path, row, unit, renamed):
    """``ScaleUnitX;Å`` (any key but the unit keys, any spelling of a known length unit as the whole
    value) was skipped: ``XScale;19,45`` read as 19.45 nm instead of 1.945 nm, in range, without a word.
    Only keys starting or ending with 'unit' were refused; now any key the reader does not use. Under a
    unit key the reader knows (as the message says) the row is read."""
    rows = ["Height;30", "Width;40", "XScale;19,45", "YScale;19,45"]
    path = _tags_file(tmp_path, [*rows[:2], row, *rows[2:]])
    _refused_at_line(read_tags, path, 3, _STRAY.format(unit=re.escape(unit)) + ".*the scales would be read in nm")
    with pytest.raises(RawDataError, match=r"rename the key to one it knows: Unit, Units, ScaleUnit, PixelUnit, XUnit"):
        read_tags(path)
    _refused_at_line(read_tags, _tags_file(tmp_path, [*rows, row]), 5, _STRAY.format(unit=re.escape(unit)))
    if renamed is not None:
        assert read_tags(_tags_file(tmp_path, [*rows[:2], renamed, *rows[2:]])).pixel_size_x_nm == pytest.approx(1.945)


@pytest.mark.parametrize(
    "row",
    ["Mode;TEM", "Detector;Morada (nm-ready)", "Source;1 nm/px detection crop", "Magnification;unknown"]
    + ["Comment;scale in nm", "VoltageUnit;kV", "HeightUnit;px", "SizeUnit;pixel", "Resolution;1;nm"]
    + ["Defocus [µm];-1,2", "Binning;2", "Unit;", "Note;nmx", "Mode;AMP", "Scale;nm nm"],
)
def test_tags_values_that_are_no_length_unit_are_still_skipped(tmp_path, row):
    """Words holding a unit (``TEM``, ``nm-ready``), pixel units, units of other quantities, a unit after a
    value and empty values are no unit row the reader cannot place."""
    rows = ["Height;30", "Width;40", row, "XScale;19,45", "YScale;19,45"]
    assert read_tags(_tags_file(tmp_path, rows)).pixel_size_x_nm == pytest.approx(19.45)


@pytest.mark.parametrize(
    "header,unit",
    [
        (["image;x.tif", "PosUnitX;nm", "format;x;y"], "nm"),
        (["image;x.tif", "Calibration;nm", "format;x;y"], "nm"),
        (["image;x.tif", "Length;µm", "format;x;y"], "µm"),
        (["image;x.tif", "Scale;Å/px", "format;x;y"], "Å/px"),
        (["image;x.tif", "PixelSpacing;NM / PIXEL", "format;x;y"], "NM / PIXEL"),
        (["image;x.tif", "Calibration;[nm]", "format;x;y"], "[nm]"),
        (["image;x.tif", "Einheit\tmm", "format;x;y"], "mm"),
        (["image;x.tif", "Scale nm", "format;x;y"], "nm"),
        (["image;x.tif", "Position [nm]", "format;x;y"], "[nm]"),  # split at spaces
        (["image;x.tif", "Position(nm)", "format;x;y"], "nm"),
        (["image;x.tif", "ScaleXY;nm;nm", "format;x;y"], "nm"),
        (["image;x.tif", "unit;pixel", "ScaleUnitX;nm"], "nm"),  # contradicts 'unit;pixel': was accepted
        (["ScaleUnitX;nm", "unit;pixel", "format;x;y"], "nm"),
    ],
)
def test_positions_a_unit_under_a_key_the_reader_does_not_use_is_refused(tmp_path, header, unit):
    """``PosUnitX;nm`` in place of ``unit;pixel`` was skipped: nm coordinates read as pixels without a word,
    and so was ``ScaleUnitX;nm`` beside ``unit;pixel``. The line is named."""
    path = _positions_file(tmp_path, [*header, "particleposition", "1;2"])
    line = next(n for n, text in enumerate(header, start=1) if unit.split()[0].strip("[]") in text)
    _refused_at_line(
        read_positions, path, line, _STRAY.format(unit=re.escape(unit)) + ".*the coordinates would be read as pixels"
    )


@pytest.mark.parametrize("line", ["PosUnitX;px", "Calibration;pixel", "Scale;Pixels", "Mode;TEM", "comment;nm by hand"])
def test_positions_pixel_units_and_words_under_other_keys_are_still_skipped(tmp_path, line):
    """A pixel unit under an unknown key cannot change the reading (coordinates are pixels anyway)."""
    path = _positions_file(tmp_path, ["image;x.tif", line, "format;x;y", "particleposition", "1;2"])
    assert read_positions(path)[0].tolist() == [[1, 2]]


def test_pandas_unnamed_column_names_are_not_read_as_a_point(tmp_path):
    """``DataFrame.to_csv(sep=';', index=False)`` of unnamed columns writes ``0;1`` above the points: it was
    read as a point on the image's corner (a centre line from there to the first particle, its patch at
    the midpoint), with a warning at most."""
    for lines, line in [
        (["image;x.tif", "unit;pixel", "format;x;y", "particleposition", "0;1", "488.5;360.25"], 5),
        (["0;1", "488.5;360.25", "100.5;700.25"], 1),
    ]:
        path = _positions_file(tmp_path, lines)
        _refused_at_line(read_positions, path, line, "the column names '0' and '1' that pandas writes")
    path = _positions_file(tmp_path, ["particleposition", "10;20", "0;1"])  # a vertex there, not a first point
    assert read_positions(path)[0].tolist() == [[10, 20], [0, 1]]


@pytest.mark.parametrize("points", [["0.53;0.41", "0.2;0.9"], ["0.36;0.48"], ["0.4;1"], ["1;0"]])
def test_normalised_positions_are_refused(good, tmp_path, points):
    """One point in the first pixel of a large image too: a particle centred there shows a quarter of itself.
    Before: one point on the far edge of 0-1 (``0.4;1``) was read as a particle in the image's corner."""
    positions = good / "train/Adenovirus/particle_positions/a1_particlepositions.txt"
    positions.write_text("".join(f"particleposition\n{point}\n" for point in points))
    _expect_error(good, positions, "normalised \\(0-1\\) coordinates", tmp_path)


@pytest.mark.parametrize(
    "make,culprit,reason",
    [
        (lambda d: (d / "a2.dm4").write_bytes(b"DM4"), "a2.dm4", "not an image of a supported type"),
        (lambda d: (d / "a2.bmp").write_bytes(b"BM"), "a2.bmp", "not an image of a supported type"),
        (lambda d: (d / "more").mkdir(), "more", "unexpected folder in a class folder"),
        # before: "not an image of a supported type ... move it out of the raw layout"
        (
            lambda d: shutil.copy(d / "tags/a1.tif_tags.csv", d / "a1.tif_tags.csv"),
            "a1.tif_tags.csv",
            "a tags file beside the images: it belongs in tags/ of this class folder",
        ),
        (
            lambda d: (d / "a1_ParticlePositions.txt").write_text("1;1\n"),
            "a1_ParticlePositions.txt",
            "a particle_positions file beside the images: it belongs in particle_positions/",
        ),
        (lambda d: (d / "Tags").mkdir(), ".", "two tags/ folders: Tags/, tags/; merge them"),
        (lambda d: (d / "gone.tif").symlink_to(d / "nowhere.tif"), "gone.tif", "not a regular file"),
        (lambda d: (d / "tags/a2.tif_tags.csv").write_text("Height;1\n"), "tags/a2.tif_tags.csv", "no image for this"),
        (
            lambda d: (d / "particle_positions/A2_particlepositions.txt").write_text("1;1\n"),
            "particle_positions/A2_particlepositions.txt",
            "no image for this particle positions file",
        ),
        (lambda d: shutil.copy(d / "a1.tif", d.parent / "a9.tif"), "../a9.tif", "image outside a class folder"),
        # a second tags file of a1 in other case: was 'no image for this tags file' (the image is there)
        (
            lambda d: (d / "tags/A1.TIF_tags.csv").write_text("Height;1\n"),
            "tags/A1.TIF_tags.csv",
            r"a second tags file for the image of a1.tif_tags.csv \(the names differ only in case",
        ),
    ],
)
def test_files_the_reader_would_leave_out_are_refused(good, tmp_path, make, culprit, reason):
    """Nothing in the layout is skipped unseen: another image type, another folder, a broken link, an
    orphan tags/positions file, an image beside the class folders."""
    folder = good / "train/Adenovirus"
    make(folder)
    _expect_error(good, Path(os.path.normpath(folder / culprit)), reason, tmp_path)


def test_windows_files_are_ignored_and_names_matched_like_macos(good):
    """Thumbs.db/desktop.ini are ignored; a tags/positions file named in other case or Unicode form is found."""
    before = read_dataset(good)[0]
    (good / "train/Adenovirus/Thumbs.db").write_bytes(b"\0")
    (good / "train/desktop.ini").write_text("[.ShellClassInfo]")
    tags = good / "train/Adenovirus/tags/a1.tif_tags.csv"
    tags.rename(tags.with_name("A1.TIF_tags.csv"))
    name = "Probe \u00e4 1"  # NFC on the image, NFD on its files (as macOS may write them)
    image = write_image(good, "test", "Rift Valley", name, [[(3, 3)]])
    for sub in ("tags", "particle_positions"):
        for f in (image.parent / sub).glob("Probe*"):
            f.rename(f.with_name(unicodedata.normalize("NFD", f.name)))
    images = read_dataset(good)[0].set_index("image_id")
    assert images.loc["a1", "tags_path"] == "train/Adenovirus/tags/A1.TIF_tags.csv"
    assert images.loc[name, "n_particles"] == 1
    others = images.drop(index=name).reset_index()[before.columns]
    pd.testing.assert_frame_equal(others.drop(columns="tags_path"), before.drop(columns="tags_path"))


def test_similar_names_are_named_when_a_file_is_missing(good, tmp_path):
    tags = good / "train/Adenovirus/tags/a1.tif_tags.csv"
    tags.rename(tags.with_name("a1_tags.csv"))
    _expect_error(good, tags, r"tags file is missing; files of a similar name: \['a1_tags.csv'\]", tmp_path)


def test_another_images_file_is_not_offered_for_a_rename(good, tmp_path):
    """Before: with a1's positions file missing, the error offered a11's own file ('rename the right one'),
    whose name starts with a1: following it would give a11's particles to a1."""
    write_image(good, "train", "Adenovirus", "a11", [[(3, 3)]])
    positions = good / "train/Adenovirus/particle_positions/a1_particlepositions.txt"
    positions.unlink()
    _expect_error(good, positions, r"particle positions file is missing$", tmp_path)


@pytest.mark.parametrize("row", ["ImageName;B7", "Image Name;B7", "Filename;B7", "Micrograph;B7.dm3", "file;B7.jpg"])
def test_a_header_row_naming_another_image_is_refused_in_positions_and_tags(tmp_path, row):
    """Before: in positions only ``image;…`` and names ending in an image extension were compared, and tags
    files were not checked at all: another image's file, with its particles or its pixel size, was read for
    this one. A row under an image-name key must name this image: in positions files any value under
    ``image`` or a ``…name`` key, else a file name with an extension (the only kind in tags files)."""
    path = _positions_file(tmp_path, [row, "unit;pixel", "format;x;y", "particleposition", "1;2"])
    with pytest.raises(RawDataError, match=r"header names image 'B7(\.dm3|\.jpg)?', but this file belongs to x\.tif"):
        read_positions(path, image="x.tif")
    tags = tmp_path / "x.tif_tags.csv"
    # in tags files only a file name with its extension: instruments name acquisitions there ('Image;Capture 12')
    for named in [row, "Filename: C:\\data\\B7.tif"] if "." in row else []:
        tags.write_text("Height;20\nWidth;20\nXScale;1,5\nYScale;1,5\n" + named + "\n")
        with pytest.raises(RawDataError, match=rf"^{re.escape(str(tags))}:5: row .* names another image: this tags"):
            read_tags(tags, image="x.tif")
        assert read_tags(tags).pixel_size_x_nm == 1.5  # without an image to compare with, the row is not read
    for other in ["Image;Capture 12", "Micrograph;yes", "File;", "File;x.tif_tags.csv", "Filename: C:\\data\\x.tif"]:
        tags.write_text("Height;20\nWidth;20\nXScale;1,5\nYScale;1,5\n" + other + "\n")
        assert read_tags(tags, image="x.tif").pixel_size_x_nm == 1.5, other
    for own in ["ImageName;x", "Filename;x.jpg", "image;X.TIF"]:
        tags.write_text("Height;20\nWidth;20\nXScale;1,5\nYScale;1,5\n" + own + "\n")
        assert read_tags(tags, image="x.tif").pixel_size_x_nm == 1.5
        path = _positions_file(tmp_path, [own, "particleposition", "1;2"])
        assert read_positions(path, image="x.tif")[0].tolist() == [[1, 2]]


def test_a_two_point_line_longer_than_a_patch_is_logged(tmp_path, caplog):
    """Two round particles whose marker line between them is lost read as one 2-point centre line, whose
    one patch, at the midpoint, shows neither (METHOD.md: a 2-point line gives one patch). Before: silent.
    Now a warning names both lines; a 2-point line within a patch's side (an oval particle) gives none."""
    lines = ["image;x.tif", "unit;pixel", "format;x;y", "particleposition", "140.97;354.87", "860.26;646.78"]
    path = _positions_file(tmp_path, lines)
    with caplog.at_level(logging.WARNING, logger="temvirus.raw"):
        assert len(read_positions(path, pixel_size_nm=1.0)) == 1
    assert f"{path}:5-6: a centre line of 2 points 719 nm apart" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="temvirus.raw"):
        read_positions(path, pixel_size_nm=0.3)  # 216 nm apart along x: both in the patch
        read_positions(_positions_file(tmp_path, lines[:-1] + ["300;500"]), pixel_size_nm=1.0)  # 160 and 145 nm
    assert not caplog.text


def test_a_longer_centre_line_with_points_further_apart_than_a_patch_is_logged(tmp_path, caplog):
    """Six round Rift Valley particles whose five marker lines were lost read as one centre line of 6
    points: each still a patch centre, but counted as one particle (Table 1, the split's particle-count
    order). Before: silent (a probe, 2026-12-05). Now a warning names the two lines of each step longer
    than a patch's side; a filament's centre line of steps within it gives none."""
    head = ["image;x.tif", "unit;pixel", "format;x;y", "particleposition"]
    centres = ["100;100", "150;120", "576;120", "600;180", "620;700", "650;720"]  # steps 426 and 520 px along
    path = _positions_file(tmp_path, head + centres)
    with caplog.at_level(logging.WARNING, logger="temvirus.raw"):
        assert len(read_positions(path, pixel_size_nm=1.0)) == 1
    assert f"{path}:6-7: two consecutive points of a centre line of 6 points 426 nm apart" in caplog.text
    assert f"{path}:8-9: two consecutive points of a centre line of 6 points 520 nm apart" in caplog.text
    assert caplog.text.count("WARNING") == 2, caplog.text
    caplog.clear()
    filament = [f"{100 + 90 * k};{300 + 20 * k}" for k in range(8)]  # a filament clicked every 92 nm
    with caplog.at_level(logging.WARNING, logger="temvirus.raw"):
        read_positions(path, pixel_size_nm=0.5)  # 213 and 260 nm: the second step still warns
        read_positions(_positions_file(tmp_path, head + filament), pixel_size_nm=1.0)
    assert caplog.text.count("WARNING") == 1 and ":8-9:" in caplog.text, caplog.text


@pytest.mark.parametrize(
    "names,culprit,reason",
    [
        (["a1", "A1"], "A1", "duplicate image id 'A1'"),
        (["001", "b"], "001", "image id '001' is read back from the CSV tables as 1"),
        (["NA", "b"], "NA", "image id 'NA' is read back from the CSV tables as nan"),
        (["1e5", "b"], "1e5", "read back from the CSV tables as 100000.0"),
        (
            ["1", "1.5"],
            "1",
            r"image id '1' is read back from the CSV tables holding it and the number-like ids \['1.5'\] \(the "
            r"rows of one class or subset\) as 1.0",
        ),
        (["1", "1.5", "b"], "1", r"image id '1' is read back from the CSV tables holding it and the number-like"),
    ],
)
def test_image_ids_that_clash_later_are_refused(tmp_path, names, culprit, reason):
    """Ids equal but for case clash on macOS/Windows; ids pandas reads as numbers or NaN change in the tables."""
    root = tmp_path / "raw"
    splits = ["train", "test", "validation"]
    paths = {n: write_image(root, split, "Adenovirus", n, [[(3, 3)]]) for n, split in zip(names, splits)}
    _expect_error(root, paths[culprit], reason, tmp_path)


def test_image_format_is_taken_from_the_content(tmp_path):
    """A PNG named .tif and a TIFF named .png are read as what they are."""
    from temvirus.raw import read_image

    gray = _gray_ramp()
    Image.fromarray(gray).save(tmp_path / "png.tif", format="PNG")
    tifffile.imwrite(tmp_path / "tif.png", gray.astype(np.uint16) * 3)
    np.testing.assert_array_equal(read_image(tmp_path / "png.tif"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "tif.png"), gray.astype(np.uint16) * 3)
    (tmp_path / "dm.tif").write_bytes(b"\0\0\0\3 DigitalMicrograph")
    with pytest.raises(RawDataError, match="dm.tif: cannot read image"):
        read_image(tmp_path / "dm.tif")


def test_big_endian_and_thumbnail_tiffs(tmp_path):
    """16-bit big-endian TIFF and PNG read as their values; a smaller second TIFF image (thumbnail) is left."""
    from temvirus.raw import read_image

    values = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)
    tifffile.imwrite(tmp_path / "be.tif", values, byteorder=">")
    Image.fromarray(values).save(tmp_path / "16.png")
    with tifffile.TiffWriter(tmp_path / "thumb.tif") as writer:
        writer.write(values)
        writer.write(np.zeros((8, 10), np.uint16))
    for name in ("be.tif", "16.png", "thumb.tif"):
        got = read_image(tmp_path / name)
        assert got.dtype == np.uint16 and got.dtype.isnative, name
        np.testing.assert_array_equal(got, values)


def test_single_image_tiff_with_length_1_axes_is_read(real_crops, tmp_path):
    """A real micrograph saved by tifffile from a (1, h, w) or (1, 1, h, w) array (a frame taken out
    of a stack): one page of h x w, read so by Pillow and ImageJ, but refused as "expected a 2-D
    grayscale image, got ... shape (1, h, w)" because tifffile's 'shaped' series keeps the axes."""
    from temvirus.raw import read_image

    source = sorted((real_crops / "train" / "Adenovirus").glob("*.jpg"))[0]
    pixels = read_image(source)
    for shape in ((1, *pixels.shape), (1, 1, *pixels.shape)):
        path = tmp_path / f"{len(shape)}d.tif"
        tifffile.imwrite(path, pixels.reshape(shape), photometric="minisblack")
        np.testing.assert_array_equal(read_image(path), pixels)
        np.testing.assert_array_equal(np.asarray(Image.open(path)), pixels)


def _stack(path: Path, shapes) -> None:
    with tifffile.TiffWriter(path) as writer:
        for shape in shapes:
            writer.write(np.zeros(shape, np.uint8), photometric="minisblack")


@pytest.mark.parametrize(
    "write,reason",
    [
        (lambda p: tifffile.imwrite(p, np.zeros((3, 30, 40), np.uint8), photometric="minisblack"), "several images"),
        (lambda p: _stack(p, [(30, 40), (30, 40)]), "several images"),
        (lambda p: _stack(p, [(8, 10), (30, 40)]), "several images"),
        (lambda p: tifffile.imwrite(p, np.zeros((30, 40), np.uint8), extratags=[(274, 3, 1, 3, True)]), "orientation"),
    ],
)
def test_ambiguous_tiffs_are_refused(good, tmp_path, write, reason):
    """Stacks (which page?), a larger image after the first, a rotated orientation: refused at read time."""
    image = good / "train/Adenovirus/a1.tif"
    write(image)
    _expect_error(good, image, reason, tmp_path)


def _samples(names: str, axis: int = -1) -> np.ndarray:
    """The gray ramp with more samples per pixel: ``gray``, ``inverted``, ``half``, ``noise`` (not alpha), ``opaque``."""
    gray = _gray_ramp()
    sample = {"gray": gray, "inverted": 255 - gray, "half": gray // 2, "noise": gray[::-1], "opaque": gray * 0 + 255}
    return np.stack([sample[name] for name in names.split(",")], axis)


@pytest.mark.parametrize(
    "names,options,warned",
    [
        ("gray,noise", dict(photometric="minisblack", planarconfig="contig"), "MINISBLACK TIFF with 2 samples"),
        ("gray,noise", dict(photometric="minisblack", planarconfig="separate"), "MINISBLACK TIFF with 2 samples"),
        ("inverted,noise", dict(photometric="miniswhite", planarconfig="contig"), "MINISWHITE TIFF with 2 samples"),
        ("gray,half,noise", dict(photometric="minisblack", planarconfig="contig"), "MINISBLACK TIFF with 3 samples"),
        ("gray,gray,gray,opaque,noise", dict(photometric="rgb", extrasamples=[2, 0]), "RGB TIFF with 5 samples"),
        ("gray,opaque", dict(photometric="minisblack", extrasamples=[2]), None),
    ],
)
def test_tiff_extra_samples_not_marked_alpha_are_left_out(tmp_path, caplog, names, options, warned):
    """A TIFF's image is the samples of its photometric interpretation; an extra sample of unspecified
    meaning is not part of it (TIFF 6.0, as Pillow reads it) and is left out with a warning. Before:
    gray + such a sample was refused as "minisblack TIFF has transparent pixels", three gray-photometric
    samples were read as RGB (luma of unrelated samples: wrong pixels), five RGB samples refused as
    "expected a 2-D grayscale image, got RGB TIFF of shape (30, 40, 5)"."""
    from temvirus.raw import read_image

    path = tmp_path / "s.tif"
    tifffile.imwrite(path, _samples(names, 0 if options.get("planarconfig") == "separate" else -1), **options)
    with caplog.at_level(logging.WARNING, logger="temvirus.raw"):
        np.testing.assert_array_equal(read_image(path), _gray_ramp())
    if warned:
        assert (
            f"{path}: {warned} per pixel: " in caplog.text and "unspecified meaning (not alpha) left out" in caplog.text
        )
    else:
        assert not caplog.text


@pytest.mark.parametrize(
    "names,options,reason",
    [
        # before: "minisblack TIFF has transparent pixels: no defined gray value" (which sample, how many?)
        (
            "gray,opaque",
            dict(photometric="minisblack", extrasamples=[2]),
            r"minisblack TIFF has transparent pixels \(1 of 1200; alpha is sample 2 of 2 per pixel\)",
        ),
        # before: "expected a 2-D grayscale image, got RGB TIFF of shape (30, 40, 5)"
        (
            "gray,gray,gray,opaque,opaque",
            dict(photometric="rgb", extrasamples=[1, 2]),
            "RGB TIFF with 5 samples per pixel, 2 of them alpha",
        ),
    ],
)
def test_tiff_alpha_samples_refused_with_the_sample_count(tmp_path, names, options, reason):
    from temvirus.raw import read_image

    pixels = _samples(names)
    pixels[0, 0, 1] = 0  # one transparent pixel (the second sample: alpha in the first case)
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, pixels, **options)
    with pytest.raises(RawDataError, match=rf"^{path}: {reason}"):
        read_image(path)


@pytest.mark.parametrize("photometric,samples", [("separated", 4), ("cielab", 3)])
def test_tiff_of_an_unsupported_interpretation_is_named_as_such(tmp_path, photometric, samples):
    """CMYK and CIELab TIFFs are refused for their interpretation, not for their sample count."""
    from temvirus.raw import read_image

    path = tmp_path / "k.tif"
    tifffile.imwrite(path, np.stack([_gray_ramp()] * samples, -1), photometric=photometric)
    with pytest.raises(RawDataError, match=rf"^{path}: TIFF photometric interpretation {photometric.upper()} is not"):
        read_image(path)


def test_gray_alpha_array_written_as_pages_is_named(good, tmp_path):
    """tifffile writes an (h, w, 2) array given without planarconfig as h pages of w x 2 px. Before:
    "TIFF holds several images (pages or series of shapes [(30, 40, 2)])", as if there were several
    30x40 images; now the pages, their size and the likely cause are named."""
    image = good / "train/Adenovirus/a1.tif"
    tifffile.imwrite(image, np.stack([_gray_ramp(), _gray_ramp() * 0 + 255], -1))
    reason = r"TIFF holds several images: 30 pages of 2x40 px \(an \(h, w, 2\) array, gray \+ alpha or colour"
    _expect_error(good, image, reason, tmp_path)


def test_rotated_jpeg_is_refused(tmp_path):
    from temvirus.raw import read_image

    path = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[274] = 6
    Image.fromarray(_gray_ramp()).save(path, exif=exif)
    with pytest.raises(RawDataError, match="r.jpg: orientation tag 6"):
        read_image(path)


def test_split_folders_in_other_case(tmp_path):
    """``Train``/``TEST`` are the train and test splits (found by the archive search too); two
    folders for one split are refused."""
    from temvirus.download import find_raw_root

    root = tmp_path / "raw"
    write_image(root, "Train", "Adenovirus", "a1", [[(3, 3)]])
    write_image(root, "TEST", "Adenovirus", "b1", [[(3, 3)]])
    images = read_dataset(root)[0]
    assert list(zip(images.folder_subset, images.path)) == [
        ("train", "Train/Adenovirus/a1.tif"),
        ("test", "TEST/Adenovirus/b1.tif"),
    ]
    assert find_raw_root(tmp_path) == root
    write_image(root, "train", "Adenovirus", "c1", [[(3, 3)]])
    _expect_error(root, root / "train", "two folders for the train subset: Train/ and train/", tmp_path)


def test_two_folders_of_one_class_in_a_subset_are_refused(tmp_path):
    """``train/Adenovirus/`` beside ``train/adenovirus/`` (or ``Rift Valley/`` beside
    ``RiftValley/``) was read as one class, merged unseen: on macOS or Windows the two are one
    folder (a copy merges or clashes), as ``Train/`` beside ``train/``, which is refused. Now
    refused naming both folders; the same class in two subsets stays as it was."""
    root = tmp_path / "raw"
    write_image(root, "train", "Adenovirus", "a1", [[(3, 3)]])
    write_image(root, "test", "adenovirus", "b1", [[(3, 3)]])
    assert read_dataset(root)[0]["class"].tolist() == ["Adenovirus", "Adenovirus"]
    write_image(root, "train", "adenovirus", "c1", [[(3, 3)]])
    _expect_error(
        root, root / "train/adenovirus", "two folders for class Adenovirus: Adenovirus/ and adenovirus/", tmp_path
    )


def test_folder_variants_read_alike(good, tmp_path):
    """A class folder in other case, a linked class folder and an empty class folder change nothing."""
    before = read_dataset(good)[0]
    (good / "train/Adenovirus").rename(good / "train/adenovirus")
    (good / "test/Rift Valley").rename(tmp_path / "elsewhere")
    (good / "test/Rift Valley").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (good / "test/Orf").mkdir()
    after = read_dataset(good)[0]
    assert after.path.iloc[0] == "train/adenovirus/a1.tif"
    columns = ["image_id", "class", "folder_subset", "sha256", "pixel_size_nm", "n_points"]
    pd.testing.assert_frame_equal(after[columns], before[columns])


def test_published_patches_are_not_read_as_raw_layout(tmp_path):
    folder = tmp_path / "context_virus_1nm_256x256/train/Adenovirus"
    folder.mkdir(parents=True)
    tifffile.imwrite(folder / "p.tif", np.zeros((8, 8), np.uint16))
    with pytest.raises(RawDataError, match="images without tags/ and particle_positions/ folders: not the raw layout"):
        read_dataset(tmp_path / "context_virus_1nm_256x256")


def _display_before_data(path: Path, pixels: np.ndarray) -> None:
    """A Gatan-style export: an 8-bit RGB rendering (inverted) before the 16-bit data, both full size."""
    tifffile.imwrite(path, np.dstack([255 - (pixels >> 8).astype(np.uint8)] * 3), photometric="rgb")
    tifffile.imwrite(path, pixels, append=True)


def _without_photometric(path: Path, pixels: np.ndarray) -> None:
    tifffile.imwrite(path, pixels, photometric="minisblack")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].tags[262].offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 2] = (65000).to_bytes(2, "little")  # the tag's code: a private one
    path.write_bytes(bytes(data))


def _bits_misstated(path: Path, pixels: np.ndarray) -> None:
    tifffile.imwrite(path, pixels)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags[258].overwrite(8)


@pytest.mark.parametrize(
    "write,reason",
    [
        (_display_before_data, r"several images .*only thumbnails of at most half its width and height"),
        (lambda p, a: (tifffile.imwrite(p, a), tifffile.imwrite(p, a[:29], append=True)), "several images"),
        (lambda p, a: tifffile.imwrite(p, np.stack([a] * 3), imagej=True, truncate=True), "a stack of shape"),
        (_without_photometric, "without a PhotometricInterpretation tag"),
        (_bits_misstated, "2400 bytes of pixel data for the 1200 bytes its tags describe"),
    ],
)
def test_tiffs_read_wrongly_before_are_refused(tmp_path, write, reason):
    """A new-user probe (2026-12-03) found these read without an error: the display page instead of the data
    (inverted, 8-bit), a second image about as large taken for a thumbnail, frame 0 of an ImageJ stack over
    4 GiB (one IFD), a missing photometric tag read as min-is-white (inverted), 16-bit data tagged 8-bit."""
    pixels = np.random.default_rng(0).integers(1, 60000, (30, 40), dtype=np.uint16)
    path = tmp_path / "a.tif"
    write(path, pixels)
    with pytest.raises(RawDataError, match=reason):
        read_image(path)
    tifffile.imwrite(path, pixels, rowsperstrip=7)  # as they should be: read as stored
    tifffile.imwrite(path, pixels[::2, ::2], append=True)  # with a thumbnail of half the size
    assert np.array_equal(read_image(path), pixels)
    tifffile.imwrite(path, pixels, tile=(16, 16))
    assert np.array_equal(read_image(path), pixels)


def test_an_uncompressed_tiff_with_a_strip_of_no_bytes_is_refused(good, tmp_path):
    """Before: a strip whose byte count is 0 (an interrupted or preallocated write) was read as rows of zeros."""
    import struct

    image = good / "train/Adenovirus/a1.tif"
    pixels = np.random.default_rng(0).integers(1, 255, (30, 40), dtype=np.uint8)
    tifffile.imwrite(image, pixels, rowsperstrip=8)
    assert read_image(image).min() > 0
    with tifffile.TiffFile(image) as tif:
        tag = tif.pages[0].tags["StripByteCounts"]
        offset, strips, kind = (
            tag.valueoffset,
            len(tif.pages[0].databytecounts),
            {3: "<H", 4: "<I", 16: "<Q"}[tag.dtype],
        )
    data = bytearray(image.read_bytes())
    struct.pack_into(kind, data, offset + (strips - 1) * struct.calcsize(kind), 0)
    image.write_bytes(bytes(data))
    _expect_error(good, image, "a strip or tile of 0 bytes, for 1200 bytes of a 40x30 image", tmp_path)


@pytest.mark.parametrize("compression", ["jpeg", "lzw", None])
def test_cut_tiff_is_refused_not_filled_in(good, tmp_path, compression):
    """A TIFF cut short (an interrupted copy) is refused: JPEG decoding would fill the cut strip in silently."""
    image = good / "train/Adenovirus/a1.tif"
    pixels = np.random.default_rng(0).integers(0, 255, (30, 40), dtype=np.uint8)
    tifffile.imwrite(image, pixels, compression=compression, rowsperstrip=8)
    image.write_bytes(image.read_bytes()[:-100])
    _expect_error(good, image, "cannot read image", tmp_path)


@pytest.mark.parametrize("channels", ["rgb", "la", "rgba", "colour"])
def test_16_bit_colour_png_reads_like_the_same_tiff(tmp_path, channels):
    """Pillow reads 16-bit colour PNGs at 8 bits; they are read at 16 bits, like the same picture as TIFF."""
    import imagecodecs

    from temvirus.raw import read_image

    gray = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)
    opaque = np.full_like(gray, 65535)
    pixels = {
        "rgb": np.stack([gray] * 3, -1),
        "la": np.stack([gray, opaque], -1),
        "rgba": np.stack([gray] * 3 + [opaque], -1),
        "colour": np.stack([gray, gray // 2, gray], -1),
    }[channels]
    (tmp_path / "x.png").write_bytes(imagecodecs.png_encode(pixels))
    tifffile.imwrite(
        tmp_path / "x.tif",
        pixels,
        photometric="minisblack" if channels == "la" else "rgb",
        extrasamples=[2] if channels in ("la", "rgba") else None,
    )
    got = read_image(tmp_path / "x.png")
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, read_image(tmp_path / "x.tif"))
    if channels != "colour":
        np.testing.assert_array_equal(got, gray)


def test_names_that_look_right_but_are_not(good, tmp_path):
    """A trailing space after the extension is shown; a file given as the dataset folder is named as such."""
    image = good / "train/Adenovirus/a1.tif"
    image.rename(image.with_name("a1.tif "))
    _expect_error(good, image.with_name("a1.tif "), "extension '.tif '", tmp_path)
    with pytest.raises(RawDataError, match="not a folder"):
        read_dataset(image.with_name("a1.tif "))


def test_a_class_folder_without_images_is_logged(good, caplog):
    """An empty class folder (an incomplete copy) is named in a warning: the class lacks that subset."""
    empty = good / "test/Adenovirus"
    empty.mkdir()
    with caplog.at_level(logging.WARNING, logger="temvirus.raw"):
        images, _ = read_dataset(good)
    assert f"{empty}: a class folder without images: no test images of Adenovirus are read" in caplog.text
    assert len(images) == 3
    caplog.clear()
    shutil.rmtree(empty)
    with caplog.at_level(logging.WARNING, logger="temvirus.raw"):
        read_dataset(good)
    assert "without images" not in caplog.text


def test_blank_frame_is_refused(good, tmp_path):
    image = good / "train/Adenovirus/a1.tif"
    tifffile.imwrite(image, np.full((30, 40), 4095, np.uint16))
    _expect_error(good, image, "every pixel has the value 4095: a blank frame", tmp_path)


@pytest.mark.parametrize("levels", [2, 7])
def test_a_mask_of_few_values_is_refused_and_an_image_of_eight_read(good, tmp_path, levels):
    """A binary mask (or a label map) saved in place of a micrograph is refused, its values named; the
    few values may lie off the sparse grid checked first (here in one pixel each)."""
    image = write_image(good, "train", "Adenovirus", "a1", [[(10.5, 12.25)]], size=(400, 300))
    pixels = np.zeros((300, 400), np.uint16)
    pixels[100:200, 100:300] = 1
    pixels[7, 9 : 9 + levels - 2] = np.arange(2, levels)  # off the grid of every 4th row checked first
    tifffile.imwrite(image, pixels)
    values = ", ".join(map(str, range(levels)))
    _expect_error(good, image, f"only {levels} distinct pixel values \\({values}\\): a mask", tmp_path)
    pixels[7, 9:15] = np.arange(2, 8)  # 8 values: read
    tifffile.imwrite(image, pixels)
    assert read_dataset(good)[0].image_id.tolist() == ["a1", "n1", "r1"]


def test_analyse_refuses_non_square_pixels(tmp_path):
    """`temvirus analyse` takes the pixel size from a tags file beside the image: XScale alone was used."""
    from temvirus.micrographs import image_pixel_size

    image = tmp_path / "m.tif"
    tifffile.imwrite(image, _gray_ramp())
    (tmp_path / "m.tif_tags.csv").write_text("Height;30\nWidth;40\nXScale;2\nYScale;2,5\n")
    with pytest.raises(RawDataError, match=r"m.tif_tags.csv:4: non-square pixels"):
        image_pixel_size(image, 1.0, (30, 40))


def test_a_class_of_the_data_left_out_of_the_classification_list_is_warned_of(tmp_path, caplog):
    """A class folder that classes.classification does not list is curated but never trained:
    the check_classes rule says so, naming it, instead of leaving it out silently."""
    from temvirus.raw import write_classification_classes

    images = tmp_path / "images.csv"
    images.write_text("image_id,class,n_particles\na,Orf,3\nb,Norovirus,2\nc,Rotavirus,4\n")
    with caplog.at_level(logging.WARNING, logger="temvirus.raw"):
        table = write_classification_classes(images, ["Orf", "Norovirus"], tmp_path / "classes.csv")
    assert list(table["class"]) == ["Orf", "Norovirus"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "['Rotavirus']" in warned[0] and str(images) in warned[0], warned
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="temvirus.raw"):
        write_classification_classes(images, ["Orf", "Norovirus", "Rotavirus"], tmp_path / "classes.csv")
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_a_particle_given_twice_is_refused_naming_both_lines(real_crops, tmp_path):
    """A real positions file with its 'particleposition' block copied: read as 2 particles, identical
    duplicate patches and an inflated Table 1 count. Now an error naming the file and both lines."""
    raw = tmp_path / "raw"
    copy_real_image(real_crops / "train/Adenovirus/A4-080201_1.jpg", raw / "train" / "Adenovirus")
    positions = raw / "train/Adenovirus/particle_positions/A4-080201_1_particlepositions.txt"
    assert read_dataset(raw)[0].n_particles.tolist() == [1]
    positions.write_text(positions.read_text() + "particleposition\n500.79;500.33\n")
    _expect_error(raw, positions, r":7: the same point \(500.79, 500.33\) as line 5: a particle given twice", tmp_path)


@pytest.mark.parametrize(
    "lines,line,reason",
    [
        (["particleposition", "1;2", "3;4", "particleposition", "1;2", "3;4"], 5, "as line 2: a particle given twice"),
        (["particleposition", "1;2", "particleposition", "1,0;2,00"], 4, "as line 2: a particle given twice"),
        (["particleposition", "1;2", "3;4", "3;4", "5;6"], 4, "as line 3 in the same centre line"),
        (["particleposition", "1;2", "3;4", "5;6", "1;2"], 5, "as line 2 in the same centre line"),
        (["particleposition", "1;2", "3;4", "particleposition", "3;4"], 5, "as line 3: a particle given twice"),
        (["1;2", "1;2"], 2, "as line 1 in the same centre line"),
    ],
)
def test_a_point_given_twice_is_refused(tmp_path, lines, line, reason):
    """Every point of a positions file is a patch centre: a point given twice, as a second particle or
    twice in one centre line (in a row or not), made identical duplicate patches. Now an error."""
    path = _positions_file(tmp_path, lines)
    with pytest.raises(RawDataError, match=reason) as caught:
        read_positions(path)
    assert str(caught.value).startswith(f"{path}:{line}: the same point"), str(caught.value)


@pytest.mark.parametrize("cut", [2, 3, 5])  # '646.78' -> '646.', '646', '6'
def test_a_positions_file_cut_inside_its_last_number_is_refused(tmp_path, cut):
    """A positions file cut by an interrupted copy ends inside a number: '860.26;646.78' read as
    '860.26;64' put a patch 580 px off the particle without a word. Now a file that ends in a point
    without a newline needs that number's decimals to be the file's (an error naming the line)."""
    whole = "image;a.tif\nunit;pixel\nformat;x;y\nparticleposition\n10.25;20.50\nparticleposition\n860.26;646.78\n"
    path = tmp_path / "a_particlepositions.txt"
    path.write_text(whole[:-1])  # whole, only the final newline missing: read
    assert read_positions(path)[1].tolist() == [[860.26, 646.78]]
    path.write_text(whole[: -1 - cut])
    with pytest.raises(RawDataError, match=r":7: the file ends inside '6[\d.]*' without a newline") as caught:
        read_positions(path)
    assert "a cut file" in str(caught.value)
    path.write_text("particleposition\n860.26;64")  # one point: judged by its other number
    with pytest.raises(RawDataError, match="has no decimal mark where the file's other coordinates have 2 decimals"):
        read_positions(path)
    path.write_text("particleposition\n10;20\nparticleposition\n860;64")  # integers throughout: whole
    assert len(read_positions(path)) == 2


@pytest.mark.parametrize(
    "lines,pixel_size,line,reason",
    [
        (
            ["particleposition", "10;10", "particleposition", "11;10"],
            1.0,
            4,
            r"1 px \(1 nm\) from the point of line 2:",
        ),
        (
            ["particleposition", "10;10", "particleposition", "11;10"],
            4.0,
            4,
            r"1 px \(4 nm\) from the point of line 2:",
        ),
        (["particleposition", "10;10", "40;10", "particleposition", "12;11"], 1.0, 5, "from the point of line 2:"),
        (["particleposition", "10;10", "12;10", "40;10"], 1.0, 3, "from the point of line 2 in the same centre line"),
    ],
)
def test_a_particle_given_twice_a_little_apart_is_refused(tmp_path, lines, pixel_size, line, reason):
    """A particle clicked twice, its two points a pixel or two apart: two near-identical patches and
    one particle counted twice, where the same point twice was already refused. Two particles'
    centres are never closer than NEAR_POINT_NM (5 nm; the real crops' closest are 20 nm apart), so
    a round particle that close to another point, or a centre line's neighbouring vertices that
    close, are an error naming the line; the distance is judged in nm (the image's pixel size)."""
    path = _positions_file(tmp_path, lines)
    assert len(read_positions(path)) == lines.count("particleposition")  # without a pixel size: not judged
    with pytest.raises(RawDataError, match=reason) as caught:
        read_positions(path, pixel_size_nm=pixel_size)
    assert str(caught.value).startswith(f"{path}:{line}: point"), str(caught.value)


@pytest.mark.parametrize(
    "lines,line,other",
    [
        (
            [
                "particleposition",
                "360.13;488.45",
                "380.13;488.45",
                "particleposition",
                "362.13;489.45",
                "382.13;489.45",
            ],
            5,
            "2-3",
        ),
        (["particleposition", "0;0", "20;0", "40;0", "particleposition", "1;1", "21;0", "41;1"], 6, "2-4"),
        (["particleposition", "20.5;0", "40.5;0", "particleposition", "0;0", "20;0", "40;0"], 2, "5-7"),  # a part of it
        # the same filament, its vertices between the first line's
        (
            [
                "particleposition",
                "100;100",
                "150;120",
                "200;140",
                "250;160",
                "300;180",
                "particleposition",
                "125;111",
                "175;131",
                "225;151",
                "275;171",
            ],
            8,
            "2-6",
        ),
    ],
)
def test_a_centre_line_given_twice_a_little_apart_is_refused(tmp_path, lines, line, other):
    """A centre line (an oval particle, a filament) given twice, the copy within NEAR_POINT_NM of the
    other all along (its vertices where they may be), or a part of another line: near-identical
    patches, one particle counted twice. Only a line and a round particle, or neighbouring
    vertices, were judged."""
    path = _positions_file(tmp_path, lines)
    with pytest.raises(
        RawDataError,
        match=rf"^{path}:{line}: the centre line on lines {line}-\d+ runs within 5 nm of the centre line on "
        rf"lines {other} all along: one particle given twice",
    ):
        read_positions(path, pixel_size_nm=1.0)


@pytest.mark.parametrize(
    "lines",
    [
        ["particleposition", "10;10", "particleposition", "12;10"],  # 6 nm apart at 3 nm/px
        ["particleposition", "0;10", "10;10", "20;10", "particleposition", "10;0", "10.5;10", "10;20"],  # a crossing
        ["particleposition", "0;0", "20;0", "20;20", "0;20", "0.5;0.5"],  # a filament curling back onto itself
        # a short line bridging a U-shaped one's arms: it meets the U at its ends only
        [
            "particleposition",
            "100;100",
            "100;300",
            "200;400",
            "300;300",
            "300;100",
            "particleposition",
            "101;300",
            "299;300",
        ],
    ],
)
def test_crossing_filaments_and_particles_5_nm_apart_are_kept(tmp_path, lines):
    path = _positions_file(tmp_path, lines)
    assert len(read_positions(path, pixel_size_nm=3.0)) == lines.count("particleposition")


def test_a_real_particle_given_twice_a_pixel_apart_is_refused(real_crops, tmp_path):
    """The layout reader judges near points at the tags' pixel size (a real crop, 1 nm/px)."""
    raw = tmp_path / "raw"
    copy_real_image(real_crops / "train/Adenovirus/A4-080201_1.jpg", raw / "train" / "Adenovirus")
    positions = raw / "train/Adenovirus/particle_positions/A4-080201_1_particlepositions.txt"
    positions.write_text(positions.read_text() + "particleposition\n502.79;500.33\n")
    _expect_error(raw, positions, r":7: point '502.79;500.33' lies 2 px \(2 nm\) from the point of line 5:", tmp_path)


@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\u2028", "\u2029", "\x07"])
def test_lines_end_only_at_newlines_and_other_control_characters_are_refused(tmp_path, char):
    """Text was split with str.splitlines(), which also breaks lines at \\x0b, \\x0c, \\x1c-\\x1e, \\x85,
    U+2028 and U+2029: '10;20\\x0c30;40' was read as two points, 'XScale;1,0\\x0bYScale;1' as two
    rows, and the line numbers of later errors did not match an editor's; a control character at a
    line's end was stripped. Lines now end only at \\n, \\r\\n and \\r; any other control character
    (tabs aside) is an error naming the file, line and column."""
    code = rf"control character U\+{ord(char):04X} at column"
    positions = tmp_path / "x_particlepositions.txt"
    positions.write_text(
        f"image;x.tif\r\nunit;pixel\r\nformat;x;y\r\nparticleposition\r\n10;20{char}30;40\r\n", "utf-8"
    )
    with pytest.raises(RawDataError, match=rf"^{positions}:5: {code} 6"):
        read_positions(positions)
    positions.write_text(f"particleposition\r1;2\r{char}3;4\r", "utf-8")
    with pytest.raises(RawDataError, match=rf"^{positions}:3: {code} 1"):
        read_positions(positions)
    tags = _tags_file(tmp_path, ["Height;30", "Width;40", f"XScale;1,0{char}YScale;1", "YScale;1"])
    with pytest.raises(RawDataError, match=rf"^{tags}:3: {code} 11"):
        read_tags(tags)


def test_nul_and_undecodable_bytes_are_named_at_the_line_of_a_cr_only_file(tmp_path):
    """The NUL and decoding errors counted only '\\n': in a file with CR line ends (old Mac) they were
    named at line 1."""
    positions = tmp_path / "x_particlepositions.txt"
    positions.write_bytes(b"image;x.tif\runit;pixel\rformat;x;y\rparticleposition\r1;2\rparticleposition\r3\0;4\r")
    with pytest.raises(RawDataError, match=rf"^{positions}:7: not text: NUL characters"):
        read_positions(positions)
    tags = tmp_path / "x.tif_tags.csv"
    tags.write_bytes(b"Height;30\r\nWidth;40\rXScale;1\x81\x8d\nYScale;1\r")
    with pytest.raises(RawDataError, match=rf"^{tags}:3: not text in utf-8 or cp1252"):
        read_tags(tags)


@pytest.mark.parametrize(
    "calibration,error",
    [
        (
            {"imagej": True, "resolution": (0.5, 0.5), "metadata": {"unit": "nm"}},
            r"ImageJ calibration \(unit 'nm'\) gives 2 nm/px along x",
        ),
        ({"imagej": True, "resolution": (100, 100), "metadata": {"unit": "micron"}}, "gives 10 nm/px along x"),
        (
            {"imagej": True, "resolution": (0.05, 0.05), "metadata": {"unit": "\\u00C5"}},
            r"\(unit 'Å'\) gives 2 nm/px along x",
        ),
        (
            {"imagej": True, "resolution": (0.2, 0.5), "metadata": {"unit": "nm"}},
            "gives 2 nm/px along y, but its tags file cal.tif_tags.csv gives YScale",
        ),
        (
            {"resolution": (1e7 / 2, 1e7 / 2), "resolutionunit": "CENTIMETER"},
            "resolution per centimetre gives 2 nm/px along x",
        ),
        ({"resolution": (2.54e7 / 2, 2.54e7 / 2), "resolutionunit": "INCH"}, "resolution per inch gives 2 nm/px"),
        (
            {"ome": True, "metadata": {"PhysicalSizeX": 2, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 2}},
            "OME-XML PhysicalSize gives 2 nm/px along x",
        ),
        ({"imagej": True, "resolution": (0.2, 0.2), "metadata": {"unit": "nm"}}, None),  # agrees: 5 nm/px
        ({"resolution": (72, 72), "resolutionunit": "INCH"}, None),  # a writer's 72 dpi: no calibration
        ({"resolution": (1e4 / 7.4, 1e4 / 7.4), "resolutionunit": "CENTIMETER"}, None),  # the sensor's 7.4 µm pitch
    ],
    ids=[
        "imagej-nm",
        "imagej-micron",
        "imagej-angstrom-escaped",
        "y-only",
        "per-cm",
        "per-inch",
        "ome",
        "agrees",
        "dpi",
        "sensor-pitch",
    ],
)
def test_a_tiff_calibrated_otherwise_than_its_tags_is_refused(good, tmp_path, calibration, error):
    """A TIFF's own specimen calibration (ImageJ's unit and resolution, or pixels per centimetre or
    inch) that contradicts the tags' XScale (5 nm/px here) was passed over: the image was rescaled by the
    tags alone (per inch until 2026-12-04). Now an error naming the image and both sizes; a writer's
    72 dpi and a camera's sensor pitch are no specimen calibration and are left alone."""
    image = write_image(good, "train", "Adenovirus", "cal", [[(3, 3)]], size=(60, 60))
    tifffile.imwrite(image, tifffile.imread(image), **calibration)
    if error is None:
        assert "cal" in set(read_dataset(good)[0].image_id)
    else:
        _expect_error(good, image, rf"{error}.* 5 nm/px: which is right is unknown", tmp_path)


@pytest.mark.parametrize(
    "size,reason", [("1,0", "PhysicalSizeX='1,0' is not a number"), ("n/a", "PhysicalSizeX='n/a' is not")]
)
def test_an_ome_calibration_that_is_no_number_is_named(good, tmp_path, size, reason):
    """Before: ``float('1,0')`` raised a bare ValueError, naming neither the image nor the attribute
    (``temvirus read``: "could not convert string to float: '1,0'")."""
    image = write_image(good, "train", "Adenovirus", "ome", [[(3, 3)]], size=(60, 60))
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint16" SizeX="60" SizeY="60" '
        f'SizeC="1" SizeZ="1" SizeT="1" PhysicalSizeX="{size}" PhysicalSizeXUnit="nm" PhysicalSizeY="{size}" '
        'PhysicalSizeYUnit="nm"><Channel ID="Channel:0:0" SamplesPerPixel="1"/><TiffData/></Pixels></Image></OME>'
    )
    tifffile.imwrite(image, tifffile.imread(image), description=xml, metadata=None)
    _expect_error(good, image, f"its OME-XML {reason}", tmp_path)


@pytest.mark.parametrize(
    "suffix,density,error",
    [
        (".png", 2.54e7 / 2, "PNG pHYs pixel density gives 2 nm/px along x"),  # pHYs 5e8 px/m
        (".png", 2.54e7 / 5, None),  # agrees: 5 nm/px
        (".png", 72, None),  # a writer's 72 dpi: no calibration
        (".jpg", 96, None),
    ],
)
def test_a_png_whose_pixel_density_contradicts_its_tags_is_refused(good, tmp_path, suffix, density, error):
    """Before: a PNG's pHYs of 2 nm/px beside tags of 5 nm/px was passed over (a TIFF's calibration was
    checked); now the same error. A writer's 72 or 96 dpi is no calibration (a JPEG's 16-bit density
    cannot reach a TEM pixel size)."""
    image = write_image(good, "train", "Adenovirus", "cal", [[(3, 3)]], size=(60, 60), suffix=suffix)
    Image.open(image).save(image, dpi=(density, density), **({"quality": 95} if suffix == ".jpg" else {}))
    if error is None:
        assert "cal" in set(read_dataset(good)[0].image_id)
    else:
        _expect_error(good, image, rf"{error}.* 5 nm/px: which is right is unknown", tmp_path)


def test_a_tiff_whose_fei_metadata_contradicts_its_tags_is_refused(good, tmp_path):
    """FEI's (Thermo Fisher's) TIFF metadata, tag 34682, gives the pixel size in metres; 2 nm beside tags
    of 5 nm was passed over. A 5 nm one agrees."""
    image = write_image(good, "train", "Adenovirus", "fei", [[(3, 3)]], size=(60, 60))
    pixels = tifffile.imread(image)
    for metres, error in [(2e-9, "FEI metadata \\(\\[Scan\\] PixelWidth\\) gives 2 nm/px along x"), (5e-9, None)]:
        fei = f"[User]\nDate=01/01/2021\n[Scan]\nPixelWidth={metres:.1e}\nPixelHeight={metres:.1e}\n"
        tifffile.imwrite(image, pixels, extratags=[(34682, 2, 0, fei, False)])
        if error is None:
            assert "fei" in set(read_dataset(good)[0].image_id)
        else:
            _expect_error(good, image, rf"{error}.* 5 nm/px: which is right is unknown", tmp_path)


@pytest.mark.parametrize("name", ["a;b", "scan 1", "scan  1"])
def test_an_image_name_holding_the_separator_is_read_in_the_header(tmp_path, name):
    """The header's ``image`` row of an image named ``a;b.tif`` was cut at the ';' ("header names
    image 'a', but this file belongs to a;b.tif"); a name with a space, in a file separated by
    spaces, likewise."""
    root = tmp_path / "raw"
    write_image(root, "train", "Adenovirus", name, [[(3, 3)]])
    positions = root / "train/Adenovirus/particle_positions" / f"{name}_particlepositions.txt"
    if " " in name:
        positions.write_text(f"image {name}.tif\nparticleposition\n3 3\n")
    assert read_dataset(root)[0].image_id.tolist() == [name]


def test_a_whole_png_with_bytes_after_its_end_chunk_is_read(good):
    """Bytes after IEND (a writer's padding) leave the image whole: the end chunk is found by
    walking the chunks, not by looking at the file's last bytes."""
    image = write_image(good, "train", "Adenovirus", "padded", [[(3, 3)]], size=(400, 300), suffix=".png")
    image.write_bytes(image.read_bytes() + bytes(5000))
    assert "padded" in set(read_dataset(good)[0].image_id)


def test_a_subset_folder_or_a_class_missing_from_one_is_warned_of(tmp_path, caplog, capsys):
    """Before: an archive or folder without its validation/ subset (or a class without images in one)
    went in without a word: the representative split method pools the folders, so the run had fewer
    images than published. Now the raw tables' log and `temvirus read` name each gap."""
    from temvirus.cli import main

    root = tmp_path / "raw"
    for split in ("train", "test"):
        write_image(root, split, "Adenovirus", f"A_{split}", [[(10, 10)]])
    write_image(root, "train", "Rift Valley", "R_train", [[(12, 12)]])
    with caplog.at_level(logging.WARNING, logger="temvirus.raw"):
        write_tables(root, tmp_path / "images.csv", tmp_path / "particles.csv")
    assert [r.getMessage() for r in caplog.records] == [
        f"{root}: no images in a validation/ subset folder (absent, or holding no class folder)",
        f"{root}: class RiftValley has no images in test/",
    ]
    assert main(["read", str(root)]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert warned == [f"warning: {m.getMessage()}" for m in caplog.records]
    shutil.rmtree(root / "train" / "Rift Valley")
    write_image(root, "validation", "Adenovirus", "A_validation", [[(10, 10)]])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="temvirus.raw"):
        write_tables(root, tmp_path / "images.csv", tmp_path / "particles.csv")
    assert caplog.records == []


def test_positions_with_every_field_in_double_quotes_are_read_as_without(tmp_path):
    """A spreadsheet's "quote all cells" CSV export: before, the quoted marker was taken for a header
    line and the first point refused as "2 numbers in a header line"."""
    lines = [
        "image;a.tif",
        "unit;pixel",
        "format;x;y",
        "particleposition",
        "500.79;500.33",
        "particleposition",
        "10;20",
    ]
    plain, quoted = tmp_path / "plain.txt", tmp_path / "quoted.txt"
    plain.write_text("\n".join(lines) + "\n")
    quoted.write_text("\n".join(";".join(f'"{f}"' for f in line.split(";")) for line in lines) + "\n")
    read = [read_positions(p, image="a.tif") for p in (plain, quoted)]
    assert len(read[0]) == 2 and all(np.array_equal(a, b) for a, b in zip(*read))


def test_companion_folders_named_in_another_case_are_read_as_subset_folders_are(good, tmp_path):
    """`Tags/` and `Particle_Positions/` (subset folders were matched ignoring case, these were not): before,
    "unexpected folder in a class folder", and an archive holding them "not the raw layout"."""
    from temvirus.download import find_raw_root

    reference = read_dataset(good)[0]
    for cls in (p for p in good.glob("*/*") if p.is_dir()):
        (cls / "tags").rename(cls / "Tags")
        (cls / "particle_positions").rename(cls / "Particle_Positions")
    assert find_raw_root(good) == good
    renamed = read_dataset(good)[0]
    assert renamed.drop(columns=["tags_path", "positions_path"]).equals(
        reference.drop(columns=["tags_path", "positions_path"])
    )
    assert renamed.tags_path.str.contains("/Tags/").all()
    cls = next(p for p in good.glob("*/*") if p.is_dir())
    (cls / "tags").mkdir()
    with pytest.raises(RawDataError, match="two tags/ folders: Tags/, tags/; merge them"):
        read_dataset(good)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("cut", r"truncated TIFF: its image directory \(at byte \d+\) lies past the end of the file"),
        ("zeroed tail", r"damaged TIFF: its image directory at byte \d+ holds no entries \(zeroed\?\)"),
        ("header only", r"truncated TIFF: its image directory \(at byte 8\) lies past the end of the file \(8 bytes\)"),
        (
            "zeroed data",
            r"cannot read image \(\w+Error: .*\): damaged pixel data \(an interrupted copy\?\), copy it again",
        ),
    ],
)
def test_a_damaged_tiff_says_how_it_is_damaged(tmp_path, damage, message):
    """libtiff's layout (the image directory after the pixel data) cut short or zeroed: before, "cannot
    read image (IndexError: 0)", or "TIFF without a PhotometricInterpretation tag" for a zeroed directory
    (the tag was there); undecodable compressed data named only by the codec's error."""
    pixels = np.random.default_rng(0).integers(0, 255, (300, 400)).astype(np.uint8)
    whole = tmp_path / "whole.tif"
    Image.fromarray(pixels).save(whole, compression="tiff_deflate" if damage == "zeroed data" else "tiff_lzw")
    data = bytearray(whole.read_bytes())
    with tifffile.TiffFile(whole) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    if damage == "cut":
        data = data[: len(data) // 2]
    elif damage == "zeroed tail":
        data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    elif damage == "header only":
        data = data[:4] + b"\x08\0\0\0"
    else:
        data[offset + count // 3 : offset + count] = bytes(count - count // 3)
    assert read_image(whole).shape == (300, 400)
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(bytes(data))
    with pytest.raises(RawDataError, match=message):
        read_image(damaged)


def test_a_bigtiff_cut_within_its_header_is_named_truncated(tmp_path):
    whole = tmp_path / "big.tif"
    tifffile.imwrite(whole, np.zeros((40, 48), np.uint16), bigtiff=True)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[:12])
    with pytest.raises(RawDataError, match="truncated TIFF: its image directory \\(its offset\\) lies past the end"):
        read_image(cut)
