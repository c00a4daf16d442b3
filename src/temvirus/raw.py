"""Reader for the raw layout of the published TEM virus dataset.

Layout (see ``docs/architecture.md``)::

    {train,validation,test}/{Class}/{image}.tif            (also .tiff, .png, .jpg, .jpeg)
    {split}/{Class}/particle_positions/{image}_particlepositions.txt
    {split}/{Class}/tags/{image}.{ext}_tags.csv

Positions: 3 header lines, then ``x;y`` lines in pixels (origin at the image's top-left
corner, x to the right); a line ``particleposition`` separates particles, and a particle of
several points is a centre line. Tags: ``key;value`` rows; row 0 height, row 1 width, rows 5
and 6 the x and y pixel size in nm, with a decimal comma.

Anything the reader does not understand raises :class:`RawDataError` naming the file (and
line); nothing is written by this module.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from temvirus.classes import FOLDER_NAMES, class_from_folder
from temvirus.io import sha256_file

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
HEADER_LINES = 3
PARTICLE_MARKER = "particleposition"
# row indices in a tags file
TAG_HEIGHT, TAG_WIDTH, TAG_XSCALE, TAG_YSCALE = 0, 1, 5, 6

IMAGE_COLUMNS = [
    "image_id", "class", "folder_split", "path", "positions_path", "tags_path", "sha256",
    "width", "height", "pixel_size_nm", "n_particles", "n_points",
]  # fmt: skip
PARTICLE_COLUMNS = ["image_id", "particle", "vertex", "x", "y"]


class RawDataError(ValueError):
    """A raw-dataset file that cannot be used; the message names the file and line."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path, self.reason, self.line = Path(path), reason, line


class EmptyImageWarning(UserWarning):
    """An image without particles: kept in the table, left out of patching."""


@dataclass(frozen=True)
class Tags:
    height: int
    width: int
    pixel_size_x_nm: float
    pixel_size_y_nm: float


def _number(text: str) -> float:
    return float(text.strip().replace(",", "."))


def read_tags(path: str | Path) -> Tags:
    """Parse a ``*_tags.csv`` file (rows ``key;value``, decimal comma allowed)."""
    path = Path(path)
    if not path.is_file():
        raise RawDataError(path, "tags file is missing")
    rows = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    if len(rows) <= TAG_YSCALE:
        raise RawDataError(path, f"expected at least {TAG_YSCALE + 1} 'key;value' rows, found {len(rows)}")
    values = {}
    for index in (TAG_HEIGHT, TAG_WIDTH, TAG_XSCALE, TAG_YSCALE):
        parts = rows[index].split(";")
        if len(parts) < 2:
            raise RawDataError(path, f"row is not 'key;value': {rows[index]!r}", line=index + 1)
        try:
            values[index] = _number(parts[1])
        except ValueError:
            raise RawDataError(path, f"value {parts[1]!r} of {parts[0]!r} is not a number", line=index + 1) from None
        if not np.isfinite(values[index]) or values[index] <= 0:
            raise RawDataError(path, f"{parts[0]!r} must be positive, got {parts[1]!r}", line=index + 1)
    return Tags(
        height=int(values[TAG_HEIGHT]),
        width=int(values[TAG_WIDTH]),
        pixel_size_x_nm=values[TAG_XSCALE],
        pixel_size_y_nm=values[TAG_YSCALE],
    )


def read_positions(path: str | Path) -> list[np.ndarray]:
    """Parse a ``*_particlepositions.txt`` file into one (n_points, 2) x/y array per particle."""
    path = Path(path)
    if not path.is_file():
        raise RawDataError(path, "particle positions file is missing")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if len(lines) < HEADER_LINES:
        raise RawDataError(path, f"expected {HEADER_LINES} header lines, file has {len(lines)} lines")
    particles: list[list[tuple[float, float]]] = [[]]
    for number, line in enumerate(lines[HEADER_LINES:], start=HEADER_LINES + 1):
        text = line.strip()
        if not text:
            continue
        if text.lower() == PARTICLE_MARKER:
            if particles[-1]:
                particles.append([])
            continue
        parts = text.split(";")
        try:
            if len(parts) != 2:
                raise ValueError
            x, y = _number(parts[0]), _number(parts[1])
        except ValueError:
            raise RawDataError(path, f"expected 'x;y' or '{PARTICLE_MARKER}', got {text!r}", line=number) from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise RawDataError(path, f"coordinate is not finite: {text!r}", line=number)
        particles[-1].append((x, y))
    return [np.asarray(p, dtype=np.float64) for p in particles if p]


def read_image(path: str | Path) -> np.ndarray:
    """Read a 2-D grayscale image (TIFF via tifffile, PNG/JPEG via Pillow)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            array = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as image:
                image.load()
                array = np.asarray(image.convert("L") if image.mode not in ("L", "I;16", "I") else image)
    except Exception as exc:  # any decoder failure: corrupt, truncated, not an image
        raise RawDataError(path, f"cannot read image ({type(exc).__name__}: {exc})") from None
    if array.size == 0:  # tifffile reads a file without a valid first page as an empty array
        raise RawDataError(path, "cannot read image (no image data: corrupt or not an image file)")
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3].mean(axis=-1).astype(array.dtype)
    if array.ndim != 2:
        raise RawDataError(path, f"expected a 2-D grayscale image, got shape {array.shape}")
    return array


def _image_files(class_dir: Path) -> list[Path]:
    return sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_dataset(root: str | Path, *, hash_files: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a raw-layout folder into an image table and a particle table.

    Returns ``(images, particles)`` with columns :data:`IMAGE_COLUMNS` and
    :data:`PARTICLE_COLUMNS`, sorted by image id. Paths are relative to ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise RawDataError(root, "dataset folder does not exist")
    found_splits = [s for s in SPLITS if (root / s).is_dir()]
    unexpected = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in SPLITS)
    if not found_splits:
        raise RawDataError(root, f"no split folder ({', '.join(SPLITS)}) found")
    if unexpected:
        raise RawDataError(root, f"unknown folders {unexpected}; expected only {list(SPLITS)}")
    images, particles, seen = [], [], {}
    for split in found_splits:
        for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            cls = class_from_folder(class_dir.name)
            if cls is None:
                raise RawDataError(class_dir, f"unknown class folder; known classes: {sorted(FOLDER_NAMES.values())}")
            for image_path in _image_files(class_dir):
                image_id = image_path.stem
                if image_id in seen:
                    raise RawDataError(image_path, f"duplicate image id {image_id!r} (also {seen[image_id]})")
                seen[image_id] = image_path
                row, points = _read_one(root, image_path, cls, split, hash_files)
                images.append(row)
                particles.extend(points)
    if not images:
        raise RawDataError(root, "no images found")
    image_table = pd.DataFrame(images, columns=IMAGE_COLUMNS).sort_values("image_id", kind="stable")
    particle_table = pd.DataFrame(particles, columns=PARTICLE_COLUMNS)
    particle_table = particle_table.sort_values(["image_id", "particle", "vertex"], kind="stable")
    return image_table.reset_index(drop=True), particle_table.reset_index(drop=True)


def _read_one(root: Path, image_path: Path, cls: str, split: str, hash_files: bool):
    class_dir = image_path.parent
    positions_path = class_dir / "particle_positions" / f"{image_path.stem}_particlepositions.txt"
    tags_path = class_dir / "tags" / f"{image_path.name}_tags.csv"
    tags = read_tags(tags_path)
    pixels = read_image(image_path)
    height, width = pixels.shape
    if (height, width) != (tags.height, tags.width):
        raise RawDataError(tags_path, f"tags give {tags.width}x{tags.height} px but {image_path.name} is {width}x{height}")
    if not np.isclose(tags.pixel_size_x_nm, tags.pixel_size_y_nm, rtol=1e-3):
        raise RawDataError(tags_path, f"non-square pixels ({tags.pixel_size_x_nm} x {tags.pixel_size_y_nm} nm) are not supported")
    shapes = read_positions(positions_path)
    points = []
    for particle, line in enumerate(shapes):
        outside = (line[:, 0] < 0) | (line[:, 0] > width) | (line[:, 1] < 0) | (line[:, 1] > height)
        if outside.any():
            x, y = line[np.argmax(outside)]
            raise RawDataError(positions_path, f"point ({x}, {y}) of particle {particle} lies outside the {width}x{height} image")
        points.extend((image_path.stem, particle, vertex, float(x), float(y)) for vertex, (x, y) in enumerate(line))
    if not shapes:
        warnings.warn(f"{positions_path}: image has no particles; kept in the table, left out of patching", EmptyImageWarning, stacklevel=2)
    row = (
        image_path.stem, cls, split,
        image_path.relative_to(root).as_posix(),
        positions_path.relative_to(root).as_posix(),
        tags_path.relative_to(root).as_posix(),
        sha256_file(image_path) if hash_files else "",
        width, height, tags.pixel_size_x_nm, len(shapes), len(points),
    )  # fmt: skip
    return row, points


def write_tables(
    root: str | Path, images_csv: str | Path, particles_csv: str | Path, classes: Sequence[str] = ()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``root``, write the image and particle tables and return them.

    ``classes`` (config ``classes.classification``) must all be in the data: else a
    :class:`RawDataError` names the missing classes and the classes found, before any
    curation work. Nothing is written unless the whole folder reads without error.
    """
    from temvirus.io import write_csv

    images, particles = read_dataset(root)
    found = sorted(set(images["class"]))
    missing = [c for c in classes if c not in found]
    if missing:
        raise RawDataError(root, f"classes.classification lists {missing}, which the data do not hold; classes found: {found}")
    log.info("%s: %d images, %d particles, %d classes", root, len(images), int(images.n_particles.sum()), images["class"].nunique())
    write_csv(images_csv, images)
    write_csv(particles_csv, particles)
    return images, particles
