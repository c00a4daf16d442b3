"""Reader for the raw layout of the published TEM virus dataset.

Layout (see ``docs/architecture.md``)::

    {train,validation,test}/{Class}/{image}.tif            (also .tiff, .png, .jpg, .jpeg)
    {subset}/{Class}/particle_positions/{image}_particlepositions.txt
    {subset}/{Class}/tags/{image}.{ext}_tags.csv

Hidden entries (names starting with ``.``, e.g. macOS ``._name.tif`` AppleDouble files and
``.DS_Store``), ``__MACOSX`` folders and Windows' ``Thumbs.db``/``desktop.ini`` are ignored
everywhere. Nothing else is left out unseen: an archive inside the layout, a file of another
type or a broken link in a class folder, another folder there, a tags or positions file
without its image and an image outside a class folder are refused. Subset folders match
ignoring case (``Train``); tags and positions files match their image ignoring case and
Unicode normalisation (as macOS and Windows file systems do). Image ids equal but for case,
or that the CSV tables would read back as other text (``001``, ``NA``), are refused.

Text files are read as UTF-8 (with or without a byte-order mark), UTF-16 (with a BOM, or
without one when one side of most byte pairs is NUL) or, failing UTF-8, Windows-1252; anything
else (NUL bytes in other text too) is an error naming the file and line. Lines end only at
``\\n``, ``\\r\\n`` or ``\\r`` (:func:`read_lines`: line numbers are an editor's); any other
control character in a line (a form feed, vertical tab, U+2028...; tabs aside) is an error naming it.

Tags (:func:`read_tags`): ``key;value[;unit]`` rows read **by key** (case, spaces, ``_`` and
``-`` ignored), not by position: ``Height`` and ``Width`` in pixels, ``XScale`` and ``YScale``
the pixel size. The unit of a scale is the third field of its row, a suffix of its value
(``5,57 Å``, ``0.5nm/px``), or a ``Unit``/``XUnit``/``YUnit``/``ScaleUnit`` row; without one it
is nm (the published files). Known units: :data:`UNITS_NM`. A decimal comma or point is
accepted; a row without ``;`` may use a tab, ``=``, ``:`` or ``,`` (:data:`TAG_SEPARATORS`),
and a key may carry its unit in brackets (``XScale [Å]``). A value that is not a decimal
number (``0x1A``, ``5 57``, ``1.234,5``), a pixel count with a possible thousands separator
(``1,000``), a pixel size whose ',' or '.' before three digits may be a thousands separator
giving a plausible size too (``50,000 pm``: 0.05 or 50 nm; ``1,000`` nm is 1 nm), a field
after the unit, a pixel size outside :data:`PIXEL_SIZE_RANGE_NM` (plausible for TEM),
XScale and YScale more than 0.1 % apart (non-square pixels), an unknown unit, a missing key or
a key or unit row given twice with different values is an error naming the row; so is any row
under a key the reader does not use whose whole value is a length unit of :data:`UNITS_NM` (any
case, also ``Å/px``, ``nm/pixel``, ``[nm]``; or, without a value, a key ending in one in brackets,
``Scale [Å]``): ``ScaleUnitX;Å``, ``Calibration;Å``, ``Length Unit;Å``, ``Scale;Å/px`` (a unit the
reader cannot attach to a value: the scales would be read in nm; the message lists the unit keys it
knows). Values holding a unit inside a word (``Mode;TEM``) are no unit, and a unit row under a key naming
another quantity (:data:`OTHER_QUANTITIES`: ``ScaleBarUnit;nm``) is skipped. A pixel size under another
name (:data:`PIXEL_SIZE_KEYS`, a unit in the key allowed: ``Pixel_Size_nm``, ``Scale;2 nm/px``,
``Image Pixel Size``) or a length per pixel under any key (``Sampling;2 nm/px``), and the inverse of a pixel density under any key (``Pixels per nm;2``, ``Resolution;500 px/µm``) must agree with XScale/YScale
when in the plausible range (:func:`read_tags`), and so must an image's own specimen calibration: a TIFF's
OME, FEI or ImageJ calibration or its resolution per centimetre or inch, a PNG's pixel density
(:func:`check_embedded_calibration`).

Positions (:func:`read_positions`): a header, recognised by content: the leading lines whose
first field does not start like a number (``image;…``, ``unit;pixel``, ``format;x;y``), none with
two numbers (``P1;360.13;488.45``, a labelled point, is an error); then ``x;y`` lines in pixels,
with one decimal mark in the whole file and none that may be a thousands separator
(:func:`_check_decimal_marks`; origin at the image's top-left corner, x to the right); a line
``particleposition`` separates particles (two without a point between them are an error: a
particle's points lost), and a particle of several points is a centre line.
A file without header is read whole; points without any marker, or several before the first
marker, are one centre line (logged as a warning). A unit row (keys as :data:`UNIT_KEYS`, or any key
starting or ending with ``unit``) must be pixels, and a header line under any other key whose whole
value is a length unit (``PosUnitX;nm``, ``Calibration;nm``, ``Length;µm``; as in tags) is refused, even
beside ``unit;pixel``: the coordinates would be read as pixels (a pixel unit there is left alone).
``format`` (or a column header line) must be ``x;y`` or ``y;x``, and a row under an image-name key
(:data:`IMAGE_NAME_KEYS`: ``image``, ``ImageName``, ``Filename``; in tags files too) must name the
file's image (any extension or none). Other header lines are skipped, but not one whose key says how to
read the points (:data:`POSITION_GEOMETRY_WORDS`, also glued to an axis or another such word:
``order;yx``, ``origin;bottom-left``, ``binning;2``, ``rescaled;0.5``, ``yflip;1``, ``pixelsize;2``,
``image width;500``), which the reader would not apply, nor a column header it does not know
(``pos_y;pos_x``, ``YCenter;XCenter``). A header line holding a point in brackets (``(360.13, 488.45)``), a column header in one field (``y/x``), another image's name under any key (``filename;b7.tif``, a bare ``b7.tif``) or fields after the image name or the unit, or, in a line of words, a length unit (``Positions in nm``) or a geometry word, is refused. Every coordinate ``d.ddd`` with every point in the image's first 10 px where thousands would fit in it (``1.360;1.120``) is refused as a thousands separator. A file without points needs the whole published header (3 lines)
and no marker: anything shorter is a truncated file. Every point is a patch centre and is given once:
the same point twice (a particle given twice, or a vertex repeated in a centre line, in a row or
not) is an error naming both lines; with the image's pixel size, so is a point closer than
:data:`NEAR_POINT_NM` to another where one of the two is a round particle (a point) or the two follow
each other in a centre line (a particle clicked twice), and a centre line that runs that close to
another all along (a particle given twice, a little apart). A point must lie in the image: ``0 <= x <
width``, ``0 <= y < height`` (pixel ``i`` spans ``[i, i + 1)``).

Images (:func:`read_image`): one rule for every format, see :func:`read_image`. One micrograph
in the folders of two classes is refused, as the same file or as another file of it (another
format, pixel type, compression, JPEG quality, scale, contrast, inverted, turned or mirrored, a
border or faint noise added): :func:`copy_signature`; the error names both files.

Anything the reader does not understand raises :class:`RawDataError` naming the file (and
line); nothing is written by this module except by :func:`write_tables` and
:func:`update_manifest`.
"""

from __future__ import annotations

import codecs
import io
import json
import logging
import os
import re
import stat
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from temvirus.classes import FOLDER_NAMES, class_from_folder
from temvirus.io import sha256_file
from temvirus.split import SUBSETS

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
#: archive files refused inside a raw-layout folder (and looked into by temvirus.download)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
PARTICLE_MARKER = "particleposition"
#: tags keys (normalised: lower case, no spaces, '_' or '-') -> Tags field
TAG_KEYS = {"height": "height", "width": "width", "xscale": "x", "yscale": "y"}
#: other names (normalised) of a pixel size -> the scales they give: checked against XScale/YScale, never read
#: alone; a key may end in a length unit (``Pixel_Size_nm``, ``Pixel size in nm``, ``XScale_nm``: :func:`_pixel_size_key`)
PIXEL_SIZE_KEYS = {
    "pixelsize": "xy",
    "pixelspacing": "xy",
    "pixelwidth": "x",
    "pixelheight": "y",
    "xpixelsize": "x",
    "ypixelsize": "y",
    "pixelsizex": "x",
    "pixelsizey": "y",
    "xscale": "x",
    "yscale": "y",
    "pixelscale": "xy",
    "scale": "xy",
    "scalex": "x",
    "scaley": "y",
    "calibration": "xy",
    "resolution": "xy",
}
#: ... words that name other things too (a scale factor, a resolution in dpi): a row under them is a pixel size only
#: when its value is a number with a length unit or none (``resolution``: a length per pixel, ``2 nm/px``; ``scale``
#: and ``calibration`` alone: a length unit given, a bare ``Scale;0.5`` being a zoom factor)
LOOSE_PIXEL_SIZE_KEYS = ("pixelscale", "scale", "scalex", "scaley", "calibration", "resolution")
#: ... of them, those whose bare numbers are scaling factors: a length unit must be given in the row
UNIT_NEEDED_PIXEL_SIZE_KEYS = ("scale", "calibration")
#: words of a tags key (as written, split into words at non-letters and lower-to-upper case changes; a word may be a
#: run of words, ``scalebar``, or begin one, ``tiltangle``) naming a quantity other than the pixel size: a unit row
#: under such a key (``ScaleBarUnit;nm``, ``FieldOfViewUnit;µm``, ``Probe size;nm``) is not the scales' unit and is
#: skipped, and a key with them names no pixel size (``Detector Pixel Size``, ``CCD pixel size``: the camera's pixel)
OTHER_QUANTITIES = (
    "scalebar",
    "fieldofview",
    "fov",
    "probe",
    "spot",
    "magnification",
    "voltage",
    "focus",
    "defocus",
    "aperture",
    "exposure",
    "dose",
    "current",
    "time",
    "wavelength",
    "camera",
    "detector",
    "ccd",
    "cmos",
    "sensor",
    "stage",
    "tilt",
    "thickness",
    "temperature",
)
#: rows giving the unit of both scales, or of one: keys as messages name them -> axes
_UNIT_KEY_AXES = {
    "Unit": "xy",
    "Units": "xy",
    "ScaleUnit": "xy",
    "PixelUnit": "xy",
    "XUnit": "x",
    "YUnit": "y",
    "XScaleUnit": "x",
    "YScaleUnit": "y",
}
#: ... normalised (lower case; as read, case, spaces, '_' and '-' ignored)
UNIT_KEYS = {name.lower(): axes for name, axes in _UNIT_KEY_AXES.items()}
#: unit spellings (lower case) -> nm per unit
UNITS_NM = {
    **dict.fromkeys(["nm", "nanometer", "nanometers", "nanometre", "nanometres"], 1.0),
    **dict.fromkeys(
        ["å", "\u212b", "a", "angstrom", "angstroms", "ångström", "ångströms", "ångstrom", "ångstroms"], 0.1
    ),
    **dict.fromkeys(
        ["µm", "μm", "um", "micron", "microns", "micrometer", "micrometers", "micrometre", "micrometres"], 1e3
    ),
    **dict.fromkeys(["pm", "picometer", "picometers", "picometre", "picometres"], 1e-3),
    **dict.fromkeys(["mm", "millimeter", "millimeters", "millimetre", "millimetres"], 1e6),
    **dict.fromkeys(["m", "meter", "meters", "metre", "metres"], 1e9),
}
#: plausible TEM pixel sizes (nm); anything outside is a wrong unit or a wrong value
PIXEL_SIZE_RANGE_NM = (0.05, 50.0)
#: lines of the published positions header (image, unit, format): a file without points must hold
#: them all, else it is taken for a truncated file
POSITIONS_HEADER_LINES = 3
#: two patch centres closer than this (nm) are one particle given twice, where one is a round particle
#: or the two are neighbours in a centre line: the closest of two particles' centres are 20 nm apart in
#: the real crops and 24.7 nm in the synthetic data (the smallest viruses, Astrovirus and Norovirus,
#: are about 30 nm across); crossing filaments may come closer and are not judged
NEAR_POINT_NM = 5.0
#: the most pixels an image may have (32768 x 32768): checked from its header, before any pixel is
#: decoded, since decoding takes several bytes a pixel (a 60000 x 60000 PNG of a few kB, all one
#: value, would take over 10 GB before it is refused as blank). The largest TEM cameras record 8k x 8k
#: (67 M pixels); a larger montage is to be cut into tiles
MAX_IMAGE_PIXELS = 2**30
#: units a positions file may give (its coordinates must be pixels); also the only unit of Height/Width
PIXEL_UNITS = ("pixel", "pixels", "px")
#: field separators of a tags row, the first one present in the row is used
TAG_SEPARATORS = (";", "\t", "=", ":", ",")
#: the folders of a class folder beside its images
COMPANION_FOLDERS = ("tags", "particle_positions")
#: files beside the images that operating systems write (Windows thumbnails); ignored like hidden files
SYSTEM_FILES = ("thumbs.db", "desktop.ini", "ehthumbs.db")
#: copies in two class folders (:func:`copy_signature`): the field's content (the padding along its borders
#: left out) averaged to this many cells along its longer side (16 nm cells for an unpadded 1000 nm crop)
COPY_GRID = 64
#: ... band-passed between these Gaussian sigmas (cells): the field's own structure, not its overall layout
COPY_BAND = (0.7, 3.0)
#: ... its values clipped to this many standard deviations
COPY_CLIP = 2.5
#: ... two images of two classes whose signatures have at least this cosine similarity (or at most its
#: negative: inverted contrast), as they are or one turned or mirrored, are one micrograph. Real crops
#: (578, 9 classes): the closest pair of two classes 0.42 (any turn; 0.65 while the padding counted), the
#: most opposite -0.38; planted copies (JPEG quality 20-90, downsampled 2x and 2.7x, contrast, brightness,
#: gamma) 0.91 or more, with a black or white border of 10-60 px or Gaussian noise of 2-4 grey levels
#: 0.98 or more (30 crops; docs/architecture.md)
COPY_SIMILARITY = 0.75
#: ... the padding left out (:func:`_content_box`): the border rows and columns whose standard deviation
#: (averaged over runs of about a cell) is at most this fraction of the image's. Real crops (578): their
#: padding with Gaussian noise of 2 (4) grey levels added at most 0.018 (0.033), the outer rows and
#: columns of their content 0.065 or more
COPY_FLAT = 0.04
#: ... and whose fields' contents (width and height in nm, by the tags' pixel sizes) differ by at most this
#: fraction
COPY_FIELD_TOLERANCE = 0.05
#: ... compared as they are and turned or mirrored (the 8 of a square, D4): the signature's
#: operation, and whether it swaps the field's width and height
COPY_TURNS = {
    "": (lambda a: a, False),
    "turned by 90 degrees": (np.rot90, True),
    "turned by 180 degrees": (lambda a: np.rot90(a, 2), False),
    "turned by 270 degrees": (lambda a: np.rot90(a, 3), True),
    "mirrored left to right": (np.fliplr, False),
    "mirrored top to bottom": (np.flipud, False),
    "mirrored on its diagonal": (np.transpose, True),
    "mirrored on its other diagonal": (lambda a: np.rot90(a, 2).T, True),
}

IMAGE_COLUMNS = [
    "image_id",
    "class",
    "folder_subset",
    "path",
    "positions_path",
    "tags_path",
    "sha256",
    "width",
    "height",
    "pixel_size_nm",
    "n_particles",
    "n_points",
]
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


def ignored(name: str) -> bool:
    """Entries every reader skips: hidden files (``.DS_Store``, ``._x.tif``), ``__MACOSX`` and
    Windows' :data:`SYSTEM_FILES` (``Thumbs.db``, ``desktop.ini``)."""
    return name.startswith(".") or name == "__MACOSX" or name.lower() in SYSTEM_FILES


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


#: the only line ends (an editor's): str.splitlines() also breaks at \x0b, \x0c, \x1c-\x1e, \x85, U+2028, U+2029
_LINE_END = re.compile(r"\r\n|\r|\n")
#: control characters refused inside a line (tabs allowed; NUL is named by :func:`read_text`)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def read_lines(path: str | Path) -> list[str]:
    """The lines of a small text file (:func:`read_text`), split only at ``\\n``, ``\\r\\n`` and ``\\r``,
    so that line numbers are an editor's (and those of every error of the tags and positions readers).

    Raises :class:`RawDataError` naming the line and column of any other control character (a form
    feed, vertical tab, U+2028...; tabs are allowed): text split there, or stripped, reads otherwise.
    """
    lines = _LINE_END.split(read_text(path))
    for number, line in enumerate(lines, start=1):
        if found := _CONTROL.search(line):
            raise RawDataError(
                path,
                f"control character U+{ord(found.group()):04X} at column {found.start() + 1} (lines end only at "
                "\\n, \\r\\n or \\r; no control character but a tab may stand in a line)",
                line=number,
            )
    return lines


def read_text(path: str | Path) -> str:
    """The text of a small file: UTF-8 (BOM optional), UTF-16 (BOM, or NUL-interleaved), else Windows-1252.

    NUL bytes in a file that is not UTF-16 (a few, or on both sides of the byte pairs: zero padding)
    are an error naming their line.

    Raises :class:`RawDataError` (file and line) when none of these decodes it.
    """
    path = Path(path)
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        encodings = ["utf-8-sig"]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encodings = ["utf-16"]
    else:
        encodings = ["utf-8", "cp1252"]
        # UTF-16 without a byte-order mark: ASCII characters have a NUL byte, all on one side; a few
        # NULs, or NULs on both sides (a file padded with zeros), are no UTF-16 (refused below)
        odd, even = data[1::2].count(0), data[0::2].count(0)
        if 4 * max(odd, even) >= len(data) and 4 * min(odd, even) <= max(odd, even):
            encodings = ["utf-16-le" if odd > even else "utf-16-be"]
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            error = exc
            continue
        if "\0" in text:
            raise RawDataError(
                path,
                f"not text: NUL characters after decoding as {encoding} (a binary file, or one padded "
                "with zeros, e.g. cut by a crash?)",
                line=len(_LINE_END.split(text[: text.index("\0")])),
            )
        return text
    line = len(_LINE_END.split(data[: error.start].decode(encoding, errors="replace")))
    raise RawDataError(path, f"not text in {' or '.join(encodings)} (byte {error.start}: {error.reason})", line=line)


def _number(text: str) -> float:
    """A number with a decimal comma or point (``5,57``, ``5.57``, ``1e-9``); ValueError otherwise."""
    text = text.strip()
    if "_" in text:  # float() reads '1_0' as 10
        raise ValueError(f"'_' in {text!r}")
    if "," in text and "." in text:
        raise ValueError(f"both ',' and '.' in {text!r}")
    return float(text.replace(",", "."))


#: a number a thousands separator could have written: 1 to 3 digits (no lone 0), ',' or '.', then
#: exactly 3 digits (``1,000``, ``12.500``); the mark may as well be a decimal one (1.0, 12.5)
_THOUSANDS = re.compile(r"^[-+]?[1-9]\d{0,2}[.,]\d{3}$")


def _both_marks_hint(text: str) -> str:
    """A hint for a number holding two marks (``1.234,5``, ``1,000.5``, ``1,000,000``): a thousands separator."""
    if text.count(",") + text.count(".") > 1:
        return " (two ',' or '.' in one number: a thousands separator? write numbers without one)"
    return ""


_VALUE_UNIT = re.compile(r"^\s*([-+]?[0-9.,]+(?:[eE][-+]?[0-9]+)?)\s*(\S.*?)?\s*$")
#: a key with its unit in brackets: ``XScale [nm]``, ``X Scale (Å/px)``
_KEY_UNIT = re.compile(r"^(.*?)\s*[\[(]\s*([^\])]*?)\s*[\])]\s*$")


#: the per-pixel suffix a length unit may carry (``nm/px``, ``Å per pixel``, ``nmperpixel``)
_PER_PIXEL = re.compile(r"\s*(/|per)\s*(px|pix|pixels?)$", re.IGNORECASE)


def _unit_nm(unit: str) -> float | None:
    """nm per ``unit`` (``/px``, ``/pixel``, ``per pixel`` suffixes allowed); None if unknown.
    Unicode compatibility forms count as their letters (``A`` + ring above as ``Å``, as macOS may write it)."""
    unit = unicodedata.normalize("NFKC", unit).strip().lower()
    return UNITS_NM.get(_PER_PIXEL.sub("", unit))


#: a pixel density's unit, pixels per length (``px/nm``, ``pixels per µm``, a normalised key ``pixelspernm``)
_PER_LENGTH = re.compile(r"^(px|pix|pixels?)\s*(/|per)\s*(\S.*)$", re.IGNORECASE)


def _density_unit_nm(unit: str) -> float | None:
    """nm of the length a pixel-density unit counts pixels per (``px/nm``: 1, ``pixels per µm``: 1000), the
    inverse of a pixel size's unit; None for any other unit (``dpi``: a printer's density, ``nm/px``)."""
    match = _PER_LENGTH.match(unicodedata.normalize("NFKC", unit).strip())
    return UNITS_NM.get(match[3].strip().lower()) if match else None


#: the name :func:`read_tags` gives a pixel-density row (``Pixels per nm;2``) among the other pixel sizes
PIXEL_DENSITY = "pixeldensity"


def _pixel_density_nm(path: Path, key: str, number: int, text: str, units: list[str]) -> float:
    """The pixel size in nm that a pixel-density row gives, the inverse of its value (``Pixels per nm;2``: 0.5 nm;
    ``Resolution;500 px/µm``: 2 nm); ``units`` every unit given in the row (its key's too, where the key is
    one). Raises :class:`RawDataError` naming the row when the value is not a positive number or its units are
    not one pixel density (``Pixels per nm;2;Å``)."""
    factors = {_density_unit_nm(unit) for unit in units}
    if len(factors) != 1 or None in factors:
        raise RawDataError(
            path,
            f"{key!r} value {text!r} with units {units}: a pixel density must be a number of pixels per one length "
            "unit (e.g. 'Pixels per nm;2' or '2 px/nm')",
            line=number,
        )
    value, _ = _positive_number(path, key, number, text, "a number of pixels per length unit (e.g. 2 px/nm)")
    return factors.pop() / value


def _pixel_size_key(key: str) -> tuple[str, str] | None:
    """``(name, unit)`` of a normalised tags key naming a pixel size: a :data:`PIXEL_SIZE_KEYS` name, maybe
    followed by a length unit, maybe after ``in`` (``pixelsizenm``, ``pixelsizeinnm``, ``scalexå``), a name with
    ``pixel`` maybe after leading words (``imagepixelsize``, ``specimenpixelsize``) or before where it holds
    (``pixelsizeatspecimen``, ``pixelsizeonsample``; a key naming another quantity,
    ``detectorpixelsize``, is refused by the caller: :func:`_names_other_quantity`), or a length per pixel alone
    (``nm/px``: a pixel size); None for any other key (``scalebar``, ``magnification``)."""
    for name in sorted(PIXEL_SIZE_KEYS, key=len, reverse=True):
        start = key.find(name) if "pixel" in name else 0 if key.startswith(name) else -1
        if start == 0 or (start > 0 and key[:start].isalpha()):
            # 'pixelsizeatspecimen': where the size holds, not a unit
            tail = re.sub(r"^(at|on|of|in)?(the)?(specimen|sample|object)", "", key[start + len(name) :])
            unit = re.sub(r"^in(?=.)", "", tail)
            if not unit or _unit_nm(unit) is not None:
                return name, unit
    return ("pixelsize", key) if _PER_PIXEL.search(key) and _unit_nm(key) is not None else None


def _is_length(text: str, units: list[str], per_pixel: bool, unit_needed: bool = False) -> bool:
    """Whether value ``text`` is a number whose units (its suffix and ``units``) are all length units, or
    none; with ``per_pixel`` one of them must be a length per pixel (``2 nm/px``; a resolution in nm is no
    pixel size), with ``unit_needed`` one must be given (``Scale;0.5`` is a scaling factor)."""
    match = _VALUE_UNIT.match(text)
    if not match or not re.search(r"\d", match[1]) or re.search(r"\d", match[2] or ""):
        return False
    given = [unit for unit in [match[2], *units] if unit]
    if per_pixel and not any(_PER_PIXEL.search(unit) for unit in given):
        return False
    if unit_needed and not given:
        return False
    return all(_unit_nm(unit) is not None for unit in given)


def _key_words(key: str) -> list[str]:
    """The words of a tags key as written, lower case: split at non-letters and where lower case turns upper
    (``ScaleBarUnit``: scale, bar, unit; ``CCD pixel size``: ccd, pixel, size; ``XScale``: x, scale)."""
    return [word.lower() for word in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+", key)]


def _names_other_quantity(key: str) -> bool:
    """Whether a tags key as written names a quantity of :data:`OTHER_QUANTITIES`: one of its words or a run of
    them (``Scale Bar``), or the start of a word (``tiltangle``); not a part inside a word (``Realtime``)."""
    words = _key_words(key)
    joined = "".join(words)
    starts = [sum(len(word) for word in words[:i]) for i in range(len(words))]
    return any(joined.startswith(word, start) for word in OTHER_QUANTITIES for start in starts)


def _is_length_unit(field: str) -> bool:
    """Whether a whole field is a length unit of :data:`UNITS_NM` as :func:`_unit_nm` reads it (any case,
    ``Å/px``, ``nm/pixel``), also in brackets (``[nm]``, ``(Å)``); a word holding one (``TEM``) is none."""
    bracketed = _KEY_UNIT.match(field)
    if bracketed and not bracketed.group(1):
        field = bracketed.group(2)
    return _unit_nm(field) is not None


def _stray_unit(key: str, fields: list[str]) -> str | None:
    """The unit a row the reader does not use gives, if its whole value is a length unit: ``fields``
    (after the key, empty ones dropped) all units (``ScaleUnitX;Å``, ``Calibration;nm/pixel``,
    ``XY;nm;nm``), or, without a value, a unit in brackets after the key (``Scale [Å]``). Such a
    row gives the unit of something the reader cannot tell (tags: the scales, read in nm without it;
    positions: the coordinates, read as pixels), so it is refused rather than skipped. So is a key without a
    value that ends in a length unit after a space, ``:`` or ``=`` (``Units: Å;``, ``Unit = Å;``, ``Scale in Å;``:
    key and value in one spreadsheet cell), or in brackets (``[Å]``)."""
    values = [field for field in fields if field]
    if values and all(_is_length_unit(value) for value in values):
        return values[0]
    if values:
        return None
    bracketed = _KEY_UNIT.match(key)
    if bracketed and _is_length_unit(bracketed.group(2)):  # 'Scale [Å]', '[Å]'
        return bracketed.group(2)
    # the key and its value in one field, the next one empty ('Units: Å;', 'Unit = Å;', 'Scale in Å;'), as a
    # spreadsheet cell writes them; or a line of words ('Positions in nm')
    words = re.split(r"[\s:=]+", key.strip())
    return words[-1] if len(words) > 1 and _is_length_unit(words[-1]) else None


def _stray_unit_error(path: Path, number: int, row: str, unit: str, reads: str, advice: str) -> RawDataError:
    """The error of a row whose value is a length unit under a key the reader does not use (:func:`_stray_unit`)."""
    return RawDataError(
        path,
        f"row {row!r} looks like a unit ({unit!r}) that the reader cannot attach to a value: its key is not one "
        f"it reads, so {reads}; rename the key to one it knows: {', '.join(_UNIT_KEY_AXES)} (case, spaces, '_' and '-' "
        f"ignored){advice}",
        line=number,
    )


#: words of a positions header key that says how to read the coordinates: their order, origin,
#: direction or scale, or the size of the image they were taken on (``order;yx``, ``swap xy;true``,
#: ``origin;bottom-left``, ``binning;2``, ``pixelsize;2``, ``image width;500``). The reader applies
#: none of them (points are ``x;y`` pixels of the image as stored, from its top-left corner), so such a
#: row is refused rather than skipped (:func:`read_positions`)
POSITION_GEOMETRY_WORDS = frozenset(
    "order axis axes swap swapped swapxy transpose transposed origin offset shift index indexing flip flipped "
    "mirror mirrored rotate rotated rotation scale scaled scaling binning binned bin downsample downsampled "
    "downsampling upsample upsampled zoom magnification mag pixel pixels pixelsize spacing calibration "
    "calibrated resolution width height size shape dimension dimensions coordinate coordinates direction "
    "invert inverted xaxis yaxis based zerobased onebased convention transform transformed "
    "resample resampled resampling resize resized resizing px".split()
)
#: directions, geometry only glued to an axis or to each other (``yup``, ``ydown``, ``bottomleft``) or beside
#: an axis word in the key (``y_up``, ``Y axis pointing up``); alone they are other things (``Lower threshold``)
DIRECTION_WORDS = frozenset("up down top bottom left right upper lower".split())
#: keys (normalised: lower case, no spaces, ``_`` or ``-``) of a tags or positions header row that names the
#: image the file belongs to (``Image;b7.tif``, ``ImageName;b7``, ``Filename;b7.dm3``): it must be this file's
#: image, any extension or none (:func:`_names_another_image`)
IMAGE_NAME_KEYS = frozenset(
    "image imagename imagefile imagefilename imagepath file filename filepath micrograph micrographname".split()
)
#: what a word of a positions header key may hold glued to a geometry word (``rescaled``, ``downscaled``,
#: ``yflip``, ``flipy``, ``pixelcenter``, ``imagesize``): read as that geometry word (:func:`_glued`)
GEOMETRY_AFFIXES = frozenset("re up down x y xy yx image center centre centered centred".split())


def _geometry_words(words: set[str]) -> set[str]:
    """The words of a positions header key that say how to read the points (:data:`POSITION_GEOMETRY_WORDS`,
    alone or glued, :func:`_glued`; :data:`DIRECTION_WORDS` glued to an axis or each other, or beside an axis
    or another direction)."""
    axes = {"x", "y", "axis", "xaxis", "yaxis", "origin"}
    found = {w for w in words if _glued(w, POSITION_GEOMETRY_WORDS, GEOMETRY_AFFIXES)}
    found |= {w for w in words if w not in DIRECTION_WORDS and _glued(w, DIRECTION_WORDS, DIRECTION_WORDS | axes)}
    directions = words & DIRECTION_WORDS  # beside an axis, or two of them ('BottomLeft', 'top left')
    return found | (directions if words & axes or len(directions) > 1 else set())


def _glued(word: str, words: frozenset[str], affixes: frozenset[str]) -> bool:
    """Whether ``word`` is one of ``words``, or one of them glued to another or to one of ``affixes``
    before or after it (``yflip``, ``rescaled``, ``bottomleft``; not ``grayscale``: ``gray`` is neither)."""
    if word in words:
        return True
    for cut in range(1, len(word)):
        head, tail = word[:cut], word[cut:]
        if (head in words and (tail in words or tail in affixes)) or (tail in words and head in affixes):
            return True
    return False


def _names_a_unit(key: str) -> bool:
    """A normalised key that names a unit (``unitoflength``, ``lengthunit``, ``scaleunits``), known or not:
    read as a unit row by :func:`read_positions` (its value must be pixels). :func:`read_tags` takes only
    :data:`UNIT_KEYS`; a row under any other key whose value is a length unit is refused (:func:`_stray_unit`)."""
    return key in UNIT_KEYS or key.startswith("unit") or key.endswith(("unit", "units"))


def _tag_fields(row: str) -> tuple[str | None, list[str]]:
    """A tags row split at the first :data:`TAG_SEPARATORS` present (returned too); fields stripped
    of spaces and quotes."""
    separator = next((sep for sep in TAG_SEPARATORS if sep in row), None)
    parts = row.split(separator) if separator else [row]
    return separator, [part.strip().strip("\"'").strip() for part in parts]


#: numbers written in another base (``0x1A``): named as such, not read as 0 with a unit ``x1A``
_BASE_PREFIXES = {"x": "hexadecimal", "o": "octal", "b": "binary"}


def _positive_number(path: Path, key: str, number: int, text: str, expected: str) -> tuple[float, re.Match]:
    """The positive, finite number of tags row ``number`` (value ``text``, under ``key`` as written) and the
    :data:`_VALUE_UNIT` match splitting it from its unit. Raises :class:`RawDataError` naming the row and key
    when it is not a decimal number (``0x1A``, ``5 57``, ``1/2``: a unit must not hold digits; ``1.234,5``),
    saying what was ``expected``, or when it is not positive and finite."""
    match = _VALUE_UNIT.match(text)
    try:
        if match is None or re.search(r"\d", match.group(2) or ""):
            raise ValueError
        value = _number(match.group(1))
    except ValueError:
        base = re.match(r"[-+]?0([xob])", text.strip().lower())
        raise RawDataError(
            path,
            f"{key!r} value {text!r} is not a number{f' ({_BASE_PREFIXES[base[1]]} notation)' if base else ''}"
            f"{_both_marks_hint(text)}: expected {expected}",
            line=number,
        ) from None
    if not np.isfinite(value) or value <= 0:
        raise RawDataError(
            path, f"{key!r} value must be positive and finite, got {text!r} (read as {value:g})", line=number
        )
    return value, match


def _tag_value(
    path: Path, field: str, key: str, number: int, text: str, units: list[str], in_range: bool = True
) -> float | int:
    """The value of one Height/Width (px) or XScale/YScale (nm) row; ``key`` as written, ``units``
    every unit given for it.

    Raises :class:`RawDataError` naming the row and key when the value is not a decimal number
    (``0x1A``, ``5 57``, ``1/2``: a unit must not hold digits; ``1.234,5``), not positive, not whole
    pixels or a pixel count with a possible thousands separator (``1,000``), a pixel size whose
    ',' or '.' before three digits (:data:`_THOUSANDS`) may be a thousands separator that gives
    a plausible size too (``50,000 pm``: 0.05 or 50 nm; ``1,000`` nm stays 1 nm, 1000 nm being
    out of range), or for a bad unit or size (with ``in_range`` False a pixel size outside
    :data:`PIXEL_SIZE_RANGE_NM` is returned: a pixel size under another name, checked by the caller).
    """
    pixels = field in ("height", "width")
    expected = (
        "a whole number of pixels in decimal digits (e.g. 1024)"
        if pixels
        else "a decimal number of nm per pixel, with a decimal comma or point and an optional unit "
        "(e.g. 5,57 or 0.557 nm)"
    )
    value, match = _positive_number(path, key, number, text, expected)
    given = [u for u in [match.group(2), *units] if u]
    if pixels:
        if re.search(r"[.,]\d{3}$", match.group(1)):
            raise RawDataError(
                path,
                f"{key!r} value {text!r}: a ',' or '.' before three digits may be a thousands separator "
                f"({match.group(1)[:-4]}{match.group(1)[-3:]} px) or decimals; give whole pixels without separators",
                line=number,
            )
        wrong = [u for u in given if u.lower() not in PIXEL_UNITS]
        if value != int(value) or wrong:
            raise RawDataError(
                path,
                f"{field} must be a whole number of pixels, got {text!r}{' in ' + wrong[0] if wrong else ''}",
                line=number,
            )
        return int(value)
    if len({_unit_nm(u) for u in given}) > 1:
        raise RawDataError(path, f"conflicting units {given} for the {field} pixel size", line=number)
    factor = _unit_nm(given[0]) if given else 1.0
    if factor is None:
        inverse = (
            f" ({given[0]!r} counts pixels per length, a pixel density: the pixel size is its inverse, "
            f"{_density_unit_nm(given[0]) / value:g} nm)"
            if _density_unit_nm(given[0])
            else ""
        )
        raise RawDataError(
            path,
            f"unknown unit {given[0]!r} of the {field} pixel size{inverse}; known: nm, Å, µm, pm, m",
            line=number,
        )
    nm = value * factor
    low, high = PIXEL_SIZE_RANGE_NM
    if _THOUSANDS.match(match.group(1)):  # 50,000 pm: 0.05 nm, or 50 nm with a thousands separator?
        whole = int(re.sub(r"[.,]", "", match.group(1)))
        if low <= whole * factor <= high:
            unit = f" {given[0]}" if given else ""
            raise RawDataError(
                path,
                f"{key!r} value {text!r}: a ',' or '.' before three digits may be a thousands separator "
                f"({whole}{unit} = {whole * factor:g} nm) or decimals ({value:g}{unit} = {nm:g} nm); "
                "write the number without thousands separators",
                line=number,
            )
    if in_range and not low <= nm <= high:
        unit = f" {given[0]}" if given and not match.group(2) else ""
        raise RawDataError(
            path,
            f"{field} pixel size {text!r}{unit} = {nm:g} nm is outside "
            f"the plausible TEM range {low}-{high} nm (wrong unit?)",
            line=number,
        )
    return nm


def read_tags(path: str | Path, image: str | None = None) -> Tags:
    """Parse a ``*_tags.csv`` file by key (see the module docstring for keys, units and checks).

    With ``image`` (the image's file name), a row under :data:`IMAGE_NAME_KEYS` (``Image;b7.tif``,
    ``Filename;b7``) must name that image (any extension): the tags of another image give another pixel size.

    Rows are ``key;value[;unit]``; a row without ``;`` may use a tab, ``=``, ``:`` or ``,``
    (the first present); quotes around fields are dropped; a key may carry its unit in
    brackets (``XScale [Å]``). A key or unit row given twice must give the same value; a
    non-empty field after the unit (``XScale;5;;Å``) is an error, and so is a pixel size under another key
    (:data:`PIXEL_SIZE_KEYS`: ``PixelSize;2`` beside ``XScale;1``) that differs from XScale/YScale by more than
    0.1 % in nm, or a row under a key the reader does not use whose whole value is a length unit
    (:func:`_stray_unit`: ``ScaleUnitX;Å``, ``Calibration;Å``, ``Length Unit;Å``, ``Scale;Å/px``; the scales
    would be read in nm).

    A pixel size's key may carry a unit (``Pixel_Size_nm``, ``Pixel size in nm``, ``Resolution (nm/px)``) and,
    before a name with ``pixel``, leading words (``Image Pixel Size``, ``Specimen Pixel Size``;
    :func:`_pixel_size_key`). Under the words :data:`LOOSE_PIXEL_SIZE_KEYS` (scale, calibration, resolution)
    a row is a pixel size only when its value is a number with a length unit or none (``ScaleX;2,0``), under
    ``Scale`` and ``Calibration`` alone with a length unit given in the value, the key or the unit column
    (``Scale;2 nm``, ``Scale (nm);2``, ``Calibration;2;nm``; a bare ``Scale;0.5`` is a zoom factor), for
    ``Resolution`` a length per pixel (``Resolution;2 nm/px``); other rows under them (``Scale;1:1000``,
    ``Resolution;300``, ``Resolution;300 dpi``, ``Resolution;2 nm``) are skipped. Under any other key a number
    with a length per pixel as its whole unit is a pixel size (``Sampling;2 nm/px``; words after it,
    ``Source;1 nm/px detection crop``, make it none). A pixel size under another name outside
    :data:`PIXEL_SIZE_RANGE_NM` is something else (``Scale;500 nm``: a scale bar; a camera's 14 µm pixel) and
    skipped; XScale/YScale themselves must be in range. A key naming another quantity
    (:data:`OTHER_QUANTITIES`, by whole words or a word's start: ``ScaleBarUnit;nm``, ``Probe size;nm``,
    ``Detector Pixel Size;14 µm``, ``CCD pixel size``; not ``Realtime``) gives neither a pixel size nor a unit
    row and is skipped.
    Returns pixel counts and pixel sizes in nm. Raises :class:`RawDataError` naming the row.
    """
    path = Path(path)
    if not path.is_file():
        raise RawDataError(path, "tags file is missing")
    rows = read_lines(path)
    if not any(row.strip() for row in rows):
        raise RawDataError(path, "empty tags file (rows are 'key;value', keys Height, Width, XScale, YScale)")
    found: dict[str, list] = {}  # field -> [(line, value text, units given in the row, key as written)]
    units: dict[str, list[tuple[int, str]]] = {}  # axis -> [(line, unit)] from Unit rows
    others: list[tuple] = []  # rows of PIXEL_SIZE_KEYS: (line, value text, units given in the row, key, name)
    for number, row in enumerate(rows, start=1):
        separator, parts = _tag_fields(row)
        key, key_unit = parts[0], ""
        bracketed = _KEY_UNIT.match(key)
        if bracketed:
            key, key_unit = bracketed.groups()
        key = re.sub(r"[\s_\-]", "", key.lower())
        given = row.split(separator, 1)[1].strip().strip("\"'") if separator else ""  # 'Filename: C:\\data\\b7.tif'
        if (
            image is not None
            and _names_a_file(key, given, strict=False)
            and _names_another_image(given, image)
            and not _names_this_file(given, path)
        ):
            raise RawDataError(
                path, f"row {row.strip()!r} names another image: this tags file belongs to {image}", line=number
            )
        other = _names_other_quantity(parts[0])  # 'ScaleBarUnit', 'Detector Pixel Size': not the image's
        # 'Scale unit (stage);Å', 'Unit [probe];nm': a unit row of another quantity, not the scales'
        unit_row = key in UNIT_KEYS and len(parts) > 1 and parts[1] and not other
        candidate = not (unit_row or other or key in TAG_KEYS or len(parts) < 2 or not parts[1])
        value_unit = (_VALUE_UNIT.match(parts[1]) or [None] * 3)[2] if candidate else None
        density_key = key if _density_unit_nm(key) else ""  # 'Pixels per nm;2': the unit is the key
        given_units = [u for u in (value_unit, key_unit, parts[2] if len(parts) > 2 else "", density_key) if u]
        if candidate and any(_density_unit_nm(unit) for unit in given_units):
            # 'Pixels per nm;2', 'Resolution;500 px/µm': a pixel density, whose inverse must agree with XScale
            others.append((number, parts[1], given_units, parts[0], PIXEL_DENSITY))
            continue
        size = _pixel_size_key(key) if candidate else None
        if size:  # 'PixelSize;2', 'Pixel_Size_nm;2', 'Scale;2 nm', 'Image Pixel Size;2' beside XScale: must agree
            name, unit = size
            row_units = [parts[2] if len(parts) > 2 else "", key_unit, unit]
            needed = name in UNIT_NEEDED_PIXEL_SIZE_KEYS
            if name not in LOOSE_PIXEL_SIZE_KEYS or _is_length(parts[1], row_units, name == "resolution", needed):
                others.append((number, parts[1], row_units, parts[0], name))
                continue
        row_units = [parts[2] if len(parts) > 2 else "", key_unit]
        if candidate and _is_length(parts[1], row_units, per_pixel=True):  # 'Sampling;2 nm/px': a pixel size
            others.append((number, parts[1], row_units, parts[0], "pixelsize"))
            continue
        if not unit_row and key not in TAG_KEYS:
            # 'ScaleUnitX;Å', 'Calibration;Å', 'Scale;Å/px': a unit row the reader does not know; skipped, the
            # scales were read in nm (10 times too large). Words holding a unit ('Mode;TEM') and units of
            # other quantities ('ScaleBarUnit;nm') are still skipped
            unit = None if other else _stray_unit(parts[0], parts[1:])
            if unit is not None:
                raise _stray_unit_error(
                    path,
                    number,
                    row.strip(),
                    unit,
                    "the scales would be read in nm",
                    "; or give the unit after the XScale/YScale value ('XScale;1,945;Å')",
                )
            continue
        if len(parts) < 2:
            raise RawDataError(path, f"row is not 'key;value': {row!r}", line=number)
        if separator == "," and len(parts) > 2 and parts[2].isdigit():
            raise RawDataError(
                path, f"ambiguous row {row!r}: ',' separates the fields and the decimals; use ';'", line=number
            )
        form, fields = ("key;unit", 2) if unit_row else ("key;value;unit", 3)
        extra = [part for part in parts[fields:] if part]
        if extra:  # 'XScale;5;;Å': the unit would be left out
            raise RawDataError(path, f"more fields than '{form}' in {row!r}: {extra} would be left out", line=number)
        if unit_row:
            for axis in UNIT_KEYS[key]:
                units.setdefault(axis, []).append((number, parts[1]))
            continue
        row_units = [parts[2] if len(parts) > 2 else "", key_unit]
        found.setdefault(TAG_KEYS[key], []).append((number, parts[1], row_units, parts[0]))
    missing = [key for key, field in TAG_KEYS.items() if field not in found]
    if missing:
        named = [
            f"line {number}: {key!r}" for number, _, _, key, _ in others
        ]  # 'XScale_nm;2': a pixel size, not XScale
        raise RawDataError(
            path,
            f"no {' / '.join(missing)} row (rows are 'key;value', keys Height, Width, XScale, YScale)"
            + (f"; a pixel size under another name ({', '.join(named)}) is only checked against them" if named else ""),
            line=others[0][0] if others and {"xscale", "yscale"} & set(missing) else None,
        )
    for axis, given in units.items():
        factors = {_unit_nm(unit) for _, unit in given}
        if len(factors) > 1:
            raise RawDataError(
                path,
                f"unit rows disagree for {axis}: {[unit for _, unit in given]} (lines {[n for n, _ in given]})",
                line=given[-1][0],
            )
    values = {}
    for field, entries in found.items():
        unit_rows = [unit for _, unit in units.get(field, [])[:1]] if field in ("x", "y") else []
        got = [
            _tag_value(path, field, key, number, text, row_units + unit_rows)
            for number, text, row_units, key in entries
        ]
        for (number, text, _, key), value in zip(entries[1:], got[1:]):
            if not np.isclose(value, got[0], rtol=1e-9):
                raise RawDataError(
                    path,
                    f"{key!r} given twice with different values: {text!r} here, {entries[0][1]!r} on line {entries[0][0]}",
                    line=number,
                )
        values[field] = got[0]
    low, high = PIXEL_SIZE_RANGE_NM
    for number, text, row_units, key, normalised in others:
        density = normalised == PIXEL_DENSITY
        for axis in "xy" if density else PIXEL_SIZE_KEYS[normalised]:
            scale = {"x": "XScale", "y": "YScale"}[axis]
            unit_rows = [unit for _, unit in units.get(axis, [])[:1]]
            if density:
                nm = _pixel_density_nm(path, key, number, text, row_units)
            else:
                nm = _tag_value(path, axis, key, number, text, row_units + unit_rows, in_range=False)
                if nm < low and not any([*row_units, *unit_rows]) and low <= nm * 1e9 <= high:
                    nm *= 1e9  # 'PixelWidth;5e-10' as FEI/Thermo write it: metres without a unit
            if not low <= nm <= high:  # 'Scale;500 nm' (a scale bar), a camera's 14 µm pixel: something else
                continue
            if not np.isclose(nm, values[axis], rtol=1e-3):
                raise RawDataError(
                    path,
                    f"{key!r} {text!r} ({nm:g} nm{' a pixel: the inverse of this pixel density' if density else ''}) "
                    f"contradicts {scale} ({values[axis]:g} nm, line {found[axis][0][0]}): "
                    "two pixel sizes for one image; keep the right one",
                    line=number,
                )
    if not np.isclose(values["x"], values["y"], rtol=1e-3):  # every reader of a pixel size takes XScale
        raise RawDataError(
            path,
            f"non-square pixels ({values['x']:g} x {values['y']:g} nm) are not supported",
            line=found["y"][0][0],
        )
    return Tags(
        height=values["height"], width=values["width"], pixel_size_x_nm=values["x"], pixel_size_y_nm=values["y"]
    )


#: a line that starts like a number is a coordinate line, never a header line
_LOOKS_NUMERIC = re.compile(r"^[-+]?\.?\d|^[-+]?(nan|inf|infinity)$", re.IGNORECASE)


def check_tags_size(tags: Tags, tags_path: Path, image_path: Path, shape: tuple[int, int]) -> None:
    """The tags' Height and Width must be the image's ``shape`` (height, width px); else a
    :class:`RawDataError` naming the tags file (tags of another image, or of the image before
    a crop or binning: their pixel size would be wrong for it)."""
    if (tags.height, tags.width) != tuple(shape):
        raise RawDataError(
            tags_path, f"tags give {tags.width}x{tags.height} px but {Path(image_path).name} is {shape[1]}x{shape[0]}"
        )


def min_image_side_nm() -> int:
    """The smallest side (nm) of an image patches can be cut from: half a patch window plus one pixel
    at 1 nm/px (129 nm for 256 nm patches).

    A patch (:func:`temvirus.rescale.window`) is the window centred on a particle point, which
    lies in the image, so it reaches at most half its side past a border; past the border the
    1 nm/px image is mirrored without repeating the edge (``numpy.pad`` ``reflect``), which maps
    those pixels into the image only when the image has more pixels than that. In a smaller
    image the mirror is mirrored again, and a patch shows the same few pixels over and over,
    not a particle in its context. The heat-map tiles of :mod:`temvirus.micrographs` are
    mirrored alike. A side counts as the whole pixels it has at 1 nm/px
    (:func:`temvirus.rescale.rescaled_size`).
    """
    from temvirus.patches import PATCH_SIZE  # temvirus.patches imports this module

    return PATCH_SIZE // 2 + 1


def check_image_size(path: str | Path, shape: tuple[int, int], pixel_size_nm: float) -> None:
    """Refuse an image of ``shape`` (height, width px) at ``pixel_size_nm`` (nm/px) with a side shorter
    than :func:`min_image_side_nm`: a :class:`RawDataError` naming ``path``, its size and the minimum."""
    from temvirus.rescale import rescaled_size

    least = min_image_side_nm()
    height, width = shape
    if min(rescaled_size(height, pixel_size_nm), rescaled_size(width, pixel_size_nm)) < least:
        raise RawDataError(
            path,
            f"image too small: {width}x{height} px at {pixel_size_nm:g} nm/px is {width * pixel_size_nm:g}x"
            f"{height * pixel_size_nm:g} nm; each side must be at least {least} nm "
            f"({int(np.ceil((least - 0.5) / pixel_size_nm))} px at this pixel size), more than half a patch window",
        )


def _is_marker(text: str) -> bool:
    """``particleposition`` in any case, with spaces/``_`` inside, a plural ``s`` or trailing separators."""
    return re.sub(r"[\s_;,\t]", "", text.lower()) in (PARTICLE_MARKER, PARTICLE_MARKER + "s")


def _position_fields(text: str) -> list[str]:
    """A positions line split at ``;`` (else a tab, else spaces); trailing empty fields dropped."""
    parts = text.split(";") if ";" in text else text.split("\t") if "\t" in text else text.split()
    parts = [part.strip() for part in parts]
    while len(parts) > 1 and not parts[-1]:
        parts.pop()
    return parts


#: a field holding one number, bare or named (``360.5``, ``x=360.5``, ``Y:12,5``): in a header line, a coordinate
#: words of a field that name a coordinate axis (:func:`_names_coordinates`): ``Center Y``, ``pos_x``, ``YPos``, ``row``
COORDINATE_WORDS = frozenset(
    "x y xy yx x0 y0 cx cy xc yc xpos ypos posx posy row rows col cols column columns i j r c "
    "horizontal vertical height width top left "
    # row and column in German, French, Spanish, Italian; ENVI/ISIS's line and sample; map axes; h, v
    "zeile spalte ligne colonne fila columna riga colonna line sample lat lon latitude longitude "
    "ordinate abscissa h v".split()
)
#: coordinate words that a line of words ('Picked by R C Smith', 'Line scan of the sample') uses in
#: other meanings: an axis there only beside the separators of a column header
FREE_TEXT_WORDS = frozenset("r c h v line sample lat lon".split())
#: what an axis letter may be glued to in a column header (``YCenter``, ``ycoord``, ``XM``, ``centroidx``)
AXIS_AFFIXES = frozenset(
    "center centre centroid pos position coord coords coordinate coordinates loc location m c px pix pixel "
    "val value mid middle point pt".split()
)


def _names_coordinates(fields: list[str], free: bool = False) -> bool:
    """Whether two or more of a header line's fields (or two words of its one field, ``YX``, ``y/x``, ``(y,x)``) name coordinate axes
    (:data:`COORDINATE_WORDS`; quotes, units in brackets and case ignored, camel case split): a
    column header the reader does not know (``pos_y;pos_x``, ``Particle;Y;X``), whose column order it
    cannot tell."""

    def words(field: str) -> list[str]:
        field = field.strip().strip("\"'")
        field = re.sub(r"[\[(].*?[\])]", " ", field) if re.sub(r"[\[(].*?[\])]", "", field).strip() else field
        return [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", field).lower()) if w]

    def axis(word: str) -> bool:
        if free:  # a line of words ('Picked by R C Smith', 'my notes'): whole axis words only, no initials
            return word in COORDINATE_WORDS and word not in FREE_TEXT_WORDS
        return word in COORDINATE_WORDS or _glued(word, frozenset("xy"), AXIS_AFFIXES)

    named = sum(any(axis(w) for w in words(field)) for field in fields)
    # one field: 'YX', or two axes in it ('y/x', '(y,x)', 'Y-X', 'row/col')
    one = words(fields[0]) if len(fields) == 1 else []
    return named > 1 or one in (["xy"], ["yx"]) or sum(w in COORDINATE_WORDS for w in one) > 1 or _paired(fields)


def _paired(fields: list[str]) -> bool:
    """Whether two fields are one name told apart by one axis letter or one digit (``centroid-0;centroid-1``,
    ``dim_0;dim_1``, ``Y1;X1``, ``Xnm;Ynm``): the columns of an array's axes, in an order the reader cannot tell."""
    names = [re.sub(r"[^a-z0-9]", "", field.lower()) for field in fields]
    for k, a in enumerate(names):
        for b in names[k + 1 :]:
            differ = [(p, q) for p, q in zip(a, b, strict=False) if p != q]
            if a and len(a) == len(b) and len(differ) == 1:
                p, q = differ[0]
                if {p, q} <= set("xyz") or (p.isdigit() and q.isdigit()):
                    return True
    return False


#: a point written in brackets, as a tuple or list (``(360.13, 488.45)``, ``[360;488]``, ``{1,5 2,5}``)
_BRACKETED_POINT = re.compile(r"[(\[{]\s*[-+]?\d+(?:[.,]\d+)?\s*[,;\s]\s*[-+]?\d+(?:[.,]\d+)?\s*[)\]}]")
_NUMBER_FIELD = re.compile(r"^(?:[a-z]\w*\s*[=:]\s*)?[-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:e[-+]?\d+)?,?$", re.IGNORECASE)


def _check_decimal_marks(path: Path, fields: list[tuple[int, str]], size: tuple[int, int] | None = None) -> None:
    """Refuse coordinates (``(line, field)`` in file order) whose decimal mark is ambiguous.

    A file uses one decimal mark: a ',' after a '.' (or a '.' after a ',') is an error naming
    both lines (``1,000`` beside ``360.13``: a thousands separator or a decimal comma?). A mark
    before exactly three digits (:data:`_THOUSANDS`: ``1,000``, ``12.500``) is a decimal mark only
    when the file shows it to be one: another coordinate with it before other than three digits,
    or after four or more (``5,25``, ``1024,000``); else a ',' is refused (``1,000``: 1000 or 1.0?),
    and so is a '.' beside coordinates without a mark (``1.000`` beside ``360``: a thousands
    separator, as a German spreadsheet writes it); a '.' in every coordinate (``360.125;488.450``,
    three decimals as ImageJ writes them) reads as decimals. With the image's ``size`` (width,
    height px), a mark whose thousands reading lies outside the image in every such coordinate
    (``360,125``: 360125 px) is a decimal mark.
    """
    first: dict[str, tuple[int, str]] = {}  # mark -> (line, field) of its first use
    for number, field in fields:
        for mark, other in ((".", ","), (",", ".")):
            if mark in field and other in first:
                line, earlier = first[other]
                where = "on this line" if line == number else f"on line {line}"
                raise RawDataError(
                    path,
                    f"decimal mark {mark!r} in {field!r} but {other!r} in {earlier!r} {where}: a file must use one "
                    "decimal mark (a ',' may be a thousands separator, 1,000 = 1000, or a decimal comma, 1,000 = 1)",
                    line=number,
                )
            if mark in field:
                first.setdefault(mark, (number, field))
    if not first:
        return
    (mark,) = first
    shaped = [(number, field) for number, field in fields if mark in field and _THOUSANDS.match(field)]
    if not shaped or any(mark in field and not _THOUSANDS.match(field) for _, field in fields):
        return
    if size is not None and all(float(field.replace(mark, "")) > max(size) for _, field in shaped):
        return  # read as thousands, no such coordinate would lie in the image
    bare = next(((number, field) for number, field in fields if mark not in field), None)
    if mark == "." and bare is None:
        return
    number, field = shaped[0]
    beside = f" beside coordinates without one (line {bare[0]}: {bare[1]!r})" if bare else ""
    raise RawDataError(
        path,
        f"{field!r}: a {mark!r} before exactly three digits{beside} may be a thousands separator "
        f"({re.sub(r'[.,]', '', field)} px) or a decimal mark ({_number(field):g} px), and no coordinate of the file "
        f"shows which (as '5{mark}25' would); write coordinates without thousands separators, decimals with '.'",
        line=number,
    )


def _decimals(field: str) -> int:
    """Digits after the decimal mark of a coordinate (``646.78``: 2, ``646.``: 0, ``646``: -1)."""
    found = re.search(r"[.,](\d*)$", field)
    return len(found.group(1)) if found else -1


def _check_last_field(path: Path, coordinates: list[tuple[int, str]], text: str) -> None:
    """A file that ends in the point ``text`` without a newline may be cut inside its last number
    (an interrupted copy: ``646.78`` read as ``64`` or ``646.``): that number must have as many
    decimals as the file's other coordinates ((line, field) each; with no other line, the point's
    other number), else :class:`RawDataError` naming its line."""
    number = coordinates[-1][0]
    *before, last = _position_fields(text)
    seen = {_decimals(field) for line, field in coordinates if line != number} or set(map(_decimals, before))
    if seen and _decimals(last) not in seen:

        def said(decimals: int) -> str:
            return "no decimal mark" if decimals < 0 else f"{decimals} decimals"

        raise RawDataError(
            path,
            f"the file ends inside {last!r} without a newline, and the number has {said(_decimals(last))} where the "
            f"file's other coordinates have {' or '.join(map(said, sorted(seen)))}: a cut file (an interrupted "
            "copy)? Copy it again; if it is whole, end it with a newline",
            line=number,
        )


def _along(vertices: np.ndarray, step: float) -> np.ndarray:
    """Points along the polyline ``vertices`` (n, 2), its vertices among them, at most ``step`` apart."""
    pieces = [vertices[:1]]
    for a, b in zip(vertices[:-1], vertices[1:]):
        count = max(1, int(np.ceil(np.hypot(*(b - a)) / step)))
        pieces.append(a + (b - a) * (np.arange(1, count + 1) / count)[:, None])
    return np.concatenate(pieces)


def _check_near_points(path: Path, points: list[tuple[int, str, float, float, int]], pixel_size_nm: float) -> None:
    """Refuse two of ``points`` ((line, text, x, y, particle) each, px) closer than :data:`NEAR_POINT_NM`
    at ``pixel_size_nm`` where one is a round particle (a particle of one point) or the two are
    neighbours in a centre line; and a centre line that runs within that distance of another all
    along (a particle given twice, a little apart, its vertices where they may be; or a part of
    another line). Crossing filaments, and lines that meet at their ends only, are kept."""
    from scipy.spatial import KDTree

    if len(points) < 2:
        return
    radius = NEAR_POINT_NM / pixel_size_nm
    sizes = Counter(particle for *_, particle in points)
    xy = np.array([(x, y) for _, _, x, y, _ in points])
    for i, j in sorted(KDTree(xy).query_pairs(radius)):  # i < j: j is the later line
        (first, _, *_, mine), (number, text, *_, theirs) = points[i], points[j]
        neighbours = mine == theirs and j - i == 1
        if sizes[mine] == 1 or sizes[theirs] == 1 or neighbours:
            distance = float(np.hypot(*(xy[j] - xy[i])))
            raise RawDataError(
                path,
                f"point {text!r} lies {distance:.3g} px ({distance * pixel_size_nm:.3g} nm) from the point of line "
                f"{first}{' in the same centre line' if neighbours else ''}: one particle given twice? two "
                f"particles' centres are never closer than {NEAR_POINT_NM:g} nm (near-identical patches)",
                line=number,
            )
    numbers = {p: [k for k, point in enumerate(points) if point[4] == p] for p in sizes if sizes[p] > 1}
    samples = {p: _along(xy[rows], radius / 2) for p, rows in numbers.items()}
    if len(samples) < 2:
        return
    owner = np.concatenate([np.full(len(along), p) for p, along in samples.items()])
    tree = KDTree(np.concatenate(list(samples.values())))
    for line in sorted(samples, reverse=True):  # the later of two lines alike is the copy
        beside = None  # the other lines within the radius of every point along this one
        for found in tree.query_ball_point(samples[line], radius):
            near = set(owner[found].tolist()) - {line}
            beside = near if beside is None else beside & near
            if not beside:
                break
        if beside:
            own, other = numbers[line], numbers[min(beside)]
            raise RawDataError(
                path,
                f"the centre line on lines {points[own[0]][0]}-{points[own[-1]][0]} runs within {NEAR_POINT_NM:g} nm "
                f"of the centre line on lines {points[other[0]][0]}-{points[other[-1]][0]} all along: one particle "
                "given twice? (near-identical patches)",
                line=points[own[0]][0],
            )


def _warn_far_vertices(path: Path, points: list[tuple[int, str, float, float, int]], pixel_size_nm: float) -> None:
    """Log a warning naming the lines of two consecutive points of one particle that lie further
    apart along x or y than a patch's side (256 nm). Two round particles (or more) whose marker
    line between them was lost, most likely (points before the first marker warn likewise); a
    straight filament given by few points is the other reading, so this is not an error. A
    centre line of exactly 2 points gives one patch, at their midpoint (METHOD.md, "Patches"),
    which then shows neither point; a longer one gives a patch at every vertex, but is counted
    as one particle (Table 1, the particle-count order of the split): six Rift Valley particles
    read as one when five marker lines were lost."""
    from temvirus.patches import PATCH_SIZE  # temvirus.patches imports this module

    lines: dict[int, list[tuple[int, float, float]]] = {}
    for number, _, x, y, particle in points:
        lines.setdefault(particle, []).append((number, x, y))
    for vertices in lines.values():
        for (first, x0, y0), (second, x1, y1) in zip(vertices, vertices[1:]):
            apart_nm = max(abs(x1 - x0), abs(y1 - y0)) * pixel_size_nm
            if apart_nm <= PATCH_SIZE:
                continue
            if len(vertices) == 2:
                what = f"a centre line of 2 points {apart_nm:.0f} nm apart: its one patch, {PATCH_SIZE} nm at their midpoint, shows neither"
            else:
                what = (
                    f"two consecutive points of a centre line of {len(vertices)} points {apart_nm:.0f} nm apart, more "
                    f"than a patch's side ({PATCH_SIZE} nm): all its points are counted as one particle"
                )
            log.warning(
                "%s:%d-%d: %s; if they are separate particles, put a '%s' line between them",
                path,
                first,
                second,
                what,
                PARTICLE_MARKER,
            )


#: a value ending in a file extension (``b7.tif``, ``C:\\data\\b7.dm3``), not words or a folder
_FILE_NAME = re.compile(r"\.[A-Za-z][A-Za-z0-9]{1,4}$")


def _names_a_file(key: str, value: str, strict: bool) -> bool:
    """Whether a header row under normalised ``key`` with ``value`` names an image file
    (:data:`IMAGE_NAME_KEYS`): a value with a file extension; ``strict`` (positions files, this project's
    layout): under ``image`` or a key ending in ``name`` any value (``image;b7``, ``ImageName;b7``). Not free
    text (``File created by ImageJ``, ``Micrograph;yes``) or a folder (``Filepath;C:\\data\\``)."""
    if key not in IMAGE_NAME_KEYS or not value:
        return False
    return bool(_FILE_NAME.search(value)) or (strict and (key == "image" or key.endswith("name")))


def _names_this_file(named: str, path: Path) -> bool:
    """Whether a name given in a header is that of the header's own file (``File;b7_particlepositions.txt``)."""
    return name_key(Path(named.replace("\\", "/")).name) == name_key(path.name)


def _names_another_image(named: str, image: str) -> bool:
    """Whether a file name (a path, maybe with backslashes) given in a positions header names another image
    than ``image``; the extension may differ (``x.jpg`` names ``x.tif``)."""
    named = Path(named.replace("\\", "/")).name
    return name_key(Path(image).stem) not in (name_key(named), name_key(Path(named).stem))


#: a field in double quotes, as a whole field (between separators or the line's ends)
_QUOTED_FIELD = re.compile(r'(?<![^;\t\s])"([^"]*)"(?![^;\t\s])')


def read_positions(
    path: str | Path, image: str | None = None, size: tuple[int, int] | None = None, pixel_size_nm: float | None = None
) -> list[np.ndarray]:
    """Parse a ``*_particlepositions.txt`` file into one (n_points, 2) x/y array per particle (px).

    The header is recognised by content (module docstring): leading lines whose first field
    does not start like a number; a file without one is read whole. Header keys are matched
    like tags keys (case, spaces, ``_`` and ``-`` ignored): ``image``, a unit key of
    :data:`UNIT_KEYS` (must be pixels), ``format`` (``x;y`` or ``y;x``), or a column header
    ``x;y`` / ``y;x`` (units in brackets, ``X [px]``, must be pixels); a key starting or ending
    with ``unit`` (``Unit of length``) is a unit row too; a line under any other key whose whole value
    is a length unit other than pixels (:func:`_stray_unit`: ``PosUnitX;nm``, ``Calibration;nm``) is an
    error (the coordinates would be read as pixels); so is a line whose key says how to read the points
    (:data:`POSITION_GEOMETRY_WORDS`: their order, origin, direction or scale, or the image size they
    refer to; the reader applies none of them); other header lines are skipped, but a
    header line with two numbers (``P1;360.13;488.45``, ``x=360 y=488``, ``size;1024;1024``) is an
    error unless its key is one of these: a labelled point would be lost. Lines starting with
    ``#`` are comments; fields are separated by ``;`` (a tab or spaces also), trailing separators are ignored,
    fields in double quotes are read without them (a spreadsheet's "quote all cells" export), and
    the particle marker may have any case. A line that starts like a number must be ``x;y``:
    a comma between two numbers is refused as ambiguous (decimal comma), and so is a third field
    (an index column, a third value). Decimal marks follow :func:`_check_decimal_marks`: one mark
    in a file (``360.13`` and ``1,000`` are an error naming both lines), and a mark before exactly
    three digits (``1,000``: 1000 or 1.0?) only where the file shows it to be decimal.
    With ``image`` (the image's file name), a header line naming an image file (:func:`_names_a_file`:
    ``image;b7``, ``ImageName;b7``, ``Micrograph;b7.dm3``) must name that image (the extension may differ)
    or this file itself; with ``size`` (width, height px), every point must lie in the image
    (``0 <= x < width``, ``0 <= y < height``: ``x = width`` is the far edge, outside every pixel),
    and points that all lie within 0-1 px of the top-left corner (``0 <= x, y <= 1``; one point too, unless at ``1;1``) are taken for normalised (0-1)
    coordinates; with ``pixel_size_nm`` (nm/px), no two points may be closer than
    :data:`NEAR_POINT_NM` where one is a round particle or the two are neighbours in a centre
    line, and no centre line may run that close to another all along (a particle given twice
    with its points a little apart; crossing filaments may come closer).
    A file without points must hold at least :data:`POSITIONS_HEADER_LINES` header lines and no
    marker (an image without particles): else the file is taken for a truncated one (an
    interrupted copy, a 0-byte file). A marker that ends a file whose first point comes after a
    marker is an error (each particle begins with one there: the last particle's points are
    lost, the file cut); a writer that ends each particle with a marker (points before the
    first one) may end the file with it. Several points before the first marker (or in a file
    without one) are logged as a warning: they are read as one particle, a centre line.
    Raises :class:`RawDataError` naming the line of anything else, a labelled point, an ambiguous
    decimal mark, a non-pixel unit, an
    unknown ``format``, two header lines giving different column orders, two markers without a
    point between them (a particle whose points are lost), a truncated file (also one that ends
    without a newline inside a number with other decimals than the file's others: ``646.78`` cut
    to ``64``), or a point given
    twice (equal x and y, at the second line, naming the first): a copied particle, a second
    particle on a point of another one, or a vertex repeated in a centre line (in a row or not).
    Each point is a patch centre, so any of these made identical patches, and a copied particle
    an inflated particle count. Column headers and geometry rows are recognised with their words glued
    (``YCenter;XCenter``, ``rescaled;0.5``, ``yflip;1``: :func:`_glued`), and a centre line with two
    consecutive points further apart than a patch is logged as a warning (:func:`_warn_far_vertices`: a
    lost marker between particles?).
    """
    path = Path(path)
    if not path.is_file():
        raise RawDataError(path, "particle positions file is missing")
    particles: list[list[tuple[float, float]]] = [[]]
    header, order, order_line = True, (0, 1), None
    header_lines, open_marker = 0, None  # open_marker: the line of a marker not yet followed by a point
    marked, leading = False, 0  # a marker seen; points before the first marker
    points: list[tuple[int, str, float, float, int]] = []  # (line, text, x, y, particle)
    coordinates: list[tuple[int, str]] = []  # (line, field) of each coordinate, for their decimal marks
    blank = None  # the line of a blank line after a point of the particle being read
    lines = read_lines(path)
    for number, line in enumerate(lines, start=1):
        # fields in double quotes, as a spreadsheet's "quote all cells" export writes them: '"500.79";"500.33"'
        text = _QUOTED_FIELD.sub(r"\1", line).strip()
        if not text or text.startswith("#"):
            if not text and particles[-1] and blank is None:
                blank = number
            continue
        if _is_marker(text):
            blank = None
            if open_marker is not None:  # a particle without points: dropped, the particle count off by one
                raise RawDataError(
                    path,
                    f"no points between the markers on lines {open_marker} and {number}: a particle's points are lost",
                    line=number,
                )
            header, open_marker, marked = False, number, True
            if particles[-1]:
                particles.append([])
            continue
        parts = _position_fields(text)
        if header and not _LOOKS_NUMERIC.match(parts[0]):
            header_lines += 1
            if _BRACKETED_POINT.search(text):  # '(360.13, 488.45)', 'Point 1: [360, 488]': was skipped, points lost
                raise RawDataError(
                    path,
                    f"a point in brackets: {text!r}; expected 'x;y' (px) alone on a line, each particle after a "
                    f"'{PARTICLE_MARKER}' line",
                    line=number,
                )
            parts = [part.strip("\"'") for part in parts]  # '"y";"x"': quoted as spreadsheets write them
            key, values = re.sub(r"[\s_\-]", "", parts[0].lower()), [p.lower() for p in parts[1:]]
            if not key and len(parts) > 1:
                raise RawDataError(path, f"line starts with an empty field (a missing x?): {text!r}", line=number)
            named = [m.groups() if (m := _KEY_UNIT.match(p)) else (p, "") for p in parts]  # 'X [px]' -> X, px
            columns = sorted(name.lower() for name, _ in named) == ["x", "y"]
            unit_key = _names_a_unit(key)
            separator = ";" if ";" in text else "\t" if "\t" in text else None  # None: spaces
            # the rest of the line as written: a name may hold the separator ('a;b.tif', 'scan  1.tif')
            given = text.split(separator, 1)[1].strip().rstrip(";\t").strip().strip("\"'") if len(parts) > 1 else ""
            # 'image;b7', 'ImageName;b7', 'Micrograph;b7.dm3'; not 'File created by ImageJ', 'Micrograph;yes'
            names_image = bool(given) and _names_a_file(key, given, strict=True)
            known = unit_key or columns or names_image or key == "format"  # a header line the reader reads
            numbers = sum(bool(_NUMBER_FIELD.match(p)) for p in parts)
            if numbers > 1 and not known:
                raise RawDataError(
                    path,
                    f"{numbers} numbers in a header line: {text!r}; a point with a label or an index ('P1;x;y')? "
                    f"expected 'x;y' (px) alone on a line, or '{PARTICLE_MARKER}'",
                    line=number,
                )
            if not known and _names_coordinates(parts, free=";" not in text and "\t" not in text):
                raise RawDataError(
                    path,
                    f"column header {text!r} is not one the reader knows, so it cannot tell the column order; "
                    "write 'x;y' or 'y;x' (or 'format;x;y')",
                    line=number,
                )
            if columns and any(unit.lower() not in PIXEL_UNITS for _, unit in named if unit):
                raise RawDataError(path, f"column header {text!r}: only pixel positions are supported", line=number)
            if unit_key and values[:1] and values[0] not in PIXEL_UNITS:
                raise RawDataError(
                    path, f"positions in unit {parts[1]!r}: only pixel positions are supported", line=number
                )
            in_key = _stray_unit(parts[0], []) if unit_key and not values else None  # 'Units: nm;': one cell
            if in_key is not None:
                raise RawDataError(
                    path, f"positions in unit {in_key!r} ({text!r}): only pixel positions are supported", line=number
                )
            # 'PosUnitX;nm', 'Calibration;nm', 'Length;µm': a unit row under a key the reader does not know, so far
            # skipped and the coordinates read as pixels. A pixel unit there ('PosUnitX;px') is left alone: the
            # coordinates are read as pixels anyway, so it cannot change the reading
            free = ";" not in text and "\t" not in text  # a line of words: 'Positions in nm', 'Y axis pointing up'
            unit = None if known else _stray_unit(parts[0], parts[1:])
            if unit is None and not known and free:
                unit = _stray_unit(text, [])
            if unit is not None:
                raise _stray_unit_error(
                    path,
                    number,
                    text,
                    unit,
                    "the coordinates would be read as pixels",
                    "; positions must be pixels ('unit;pixel')",
                )
            # ('Scale;pixels': in pixels, as read, so it cannot change the reading; a key alone says nothing)
            in_pixels = all(value.strip() in PIXEL_UNITS for value in values if value.strip())
            # a line of words by all its words, but for the pixel ('Positions in pixels')
            words = set(_key_words(text)) - {"pixel", "pixels", *PIXEL_UNITS} if free else set(_key_words(parts[0]))
            geometry = [] if known or in_pixels else sorted(_geometry_words(words))
            if geometry:  # 'order;yx', 'origin;bottom-left', 'binning;2': was skipped, the points read as they stand
                raise RawDataError(
                    path,
                    f"header line {text!r} says how to read the points ({', '.join(geometry)}), which the reader "
                    "does not apply: points are 'x;y' pixels of the image as stored, from its top-left corner "
                    "(a column order goes in 'format;y;x'); convert the points and remove the line",
                    line=number,
                )
            if unit_key and len([v for v in values if v.strip()]) > 1:  # 'unit;pixel;binned 2x'
                raise RawDataError(
                    path, f"more fields than 'unit;pixel' in {text!r}: the reader would leave them out", line=number
                )
            if image is not None and not names_image:  # 'Source;b7.tif', 'Image: b7.tif', a bare 'b7.tif'
                for field in parts:
                    file = re.split(r"[=:,]", field.strip("\"'"))[-1].strip()
                    if file.lower().endswith(IMAGE_SUFFIXES) and _names_another_image(file, image):
                        raise RawDataError(
                            path, f"header names image {file!r}, but this file belongs to {image}", line=number
                        )
            if image is not None and names_image:
                extra = re.fullmatch(r"(.+?\.(?:tiff?|png|jpe?g))\s*[;\t](.+)", given, re.IGNORECASE)
                if extra:  # 'image;x.tif;2048;2048': the size of another image (binned?) the points were taken on
                    raise RawDataError(
                        path,
                        f"more fields after the image name {extra[1]!r} in {text!r}: the reader would leave "
                        f"{extra[2].strip()!r} out",
                        line=number,
                    )
                if _names_another_image(given, image) and not _names_this_file(given, path):
                    raise RawDataError(
                        path, f"header names image {given!r}, but this file belongs to {image}", line=number
                    )
            if (key == "format" and values) or columns:
                fields = [name.lower() for name, _ in named] if columns else values
                if sorted(fields) != ["x", "y"]:
                    raise RawDataError(
                        path, f"unknown format {';'.join(parts[1:])!r}: expected 'x;y' or 'y;x'", line=number
                    )
                given = (fields.index("x"), fields.index("y"))
                if order_line is not None and given != order:
                    raise RawDataError(
                        path, f"column order {text!r} contradicts line {order_line} of the header", line=number
                    )
                order, order_line = given, number
            continue
        try:
            if len(parts) != 2:
                raise ValueError
            x, y = _number(parts[order[0]]), _number(parts[order[1]])
        except ValueError:
            hint = next(filter(None, map(_both_marks_hint, parts)), "") if len(parts) == 2 else ""  # 1.000,5;2
            hint = hint or (" (',' between numbers is ambiguous with a decimal comma: use ';')" if "," in text else "")
            if len(parts) > 2 and not hint:  # '1;360.13;488.45', '360.13;488.45;0.5': which two are x and y?
                hint = f" ({len(parts)} fields: a label, an index column, a third value or a space in a number? only x and y)"
            raise RawDataError(
                path, f"expected 'x;y' or '{PARTICLE_MARKER}', got {text!r}{hint}", line=number
            ) from None
        if not particles[-1] and parts == ["0", "1"]:
            raise RawDataError(  # pandas' to_csv of unnamed columns: a header line, read as a point on the corner
                path,
                f"a particle starting at {text!r}: the column names '0' and '1' that pandas writes for unnamed "
                "columns (to_csv without header=False)? a particle centre on the image's corner pixel is not "
                "plausible; remove the line",
                line=number,
            )
        if blank is not None:  # blank lines as particle separators: the particles read as one centre line
            raise RawDataError(
                path,
                f"a blank line (line {blank}) between two points of one particle: blank lines do not separate "
                f"particles here; put a '{PARTICLE_MARKER}' line before each particle, or remove the blank line "
                "if the points are one centre line",
                line=number,
            )
        points.append((number, text, x, y, len(particles) - 1))
        coordinates += [(number, parts[order[0]]), (number, parts[order[1]])]
        header, open_marker = False, None
        leading += not marked
        particles[-1].append((x, y))
    _check_decimal_marks(path, coordinates, size)  # before any value is used: 1,000 may be 1000
    corner = size is not None and min(size) >= 100 and all(re.fullmatch(r"\d\.\d{3}", f) for _, f in coordinates)
    if corner and coordinates and all(x * 1000 < size[0] and y * 1000 < size[1] for _, _, x, y, _ in points):
        raise RawDataError(  # '1.360;1.120' from a German spreadsheet: 1360 px, read as 1.36
            path,
            f"every coordinate is one digit and three decimals, so every point lies within 10 px of the top-left "
            f"corner of the {size[0]}x{size[1]} image: a '.' thousands separator ({coordinates[0][1]} = "
            f"{coordinates[0][1].replace('.', '')} px)? write coordinates without thousands separators",
            line=coordinates[0][0],
        )
    if points and points[-1][0] == len(lines) and lines[-1].strip():  # the file ends in a point, no newline
        _check_last_field(path, coordinates, points[-1][1])
    seen: dict[tuple[float, float], tuple[int, int]] = {}  # point -> (line, particle) of its first occurrence
    for number, text, x, y, particle in points:
        if not (np.isfinite(x) and np.isfinite(y)):
            raise RawDataError(path, f"coordinate is not finite: {text!r}", line=number)
        if size is not None and not (0 <= x < size[0] and 0 <= y < size[1]):
            raise RawDataError(
                path,
                f"point ({x:g}, {y:g}) of particle {particle} lies outside the {size[0]}x{size[1]} image",
                line=number,
            )
        if (x, y) in seen:  # one patch centre given twice: identical patches (and a particle counted twice)
            first, earlier = seen[x, y]
            kind = (
                " in the same centre line: a vertex given twice"
                if earlier == particle
                else ": a particle given twice (or a point of another particle)"
            )
            raise RawDataError(
                path, f"the same point ({x:g}, {y:g}) as line {first}{kind}: identical patches", line=number
            )
        seen[x, y] = (number, particle)
    normalised = [0 <= x <= 1 and 0 <= y <= 1 for *_, x, y, _ in points]  # 1 itself: the far edge of 0-1
    # one point too ('0.36;0.48', '0.4;1'), but for the pixel (1, 1)
    alone = len(points) == 1 and min(points[0][2:4]) < 1
    if size is not None and min(size) > 2 and all(normalised) and (len(points) > 1 or alone):
        raise RawDataError(
            path,
            f"every point lies within 0-1 px of the top-left corner of the {size[0]}x{size[1]} image: normalised (0-1) "
            "coordinates? positions must be in pixels",
        )
    if pixel_size_nm is not None:
        _check_near_points(path, points, pixel_size_nm)
        _warn_far_vertices(path, points, pixel_size_nm)
    if open_marker is not None and not leading:  # markers begin the particles here: the last one's points are lost
        raise RawDataError(
            path, f"the file ends after a '{PARTICLE_MARKER}' line without points: truncated?", line=open_marker
        )
    if leading > 1:  # points before any marker: one centre line, or round particles unmarked?
        log.warning(
            "%s: %d points %s '%s' line: read as one particle (a centre line; 2 points give one patch "
            "at their midpoint); if they are separate particles, put a '%s' line before each",
            path,
            leading,
            "before the first" if marked else "and no",
            PARTICLE_MARKER,
            PARTICLE_MARKER,
        )
    if not particles[0] and header_lines < POSITIONS_HEADER_LINES:
        found = f"only {header_lines} header line(s)" if header_lines else "empty file"
        raise RawDataError(
            path,
            f"{found} and no point: truncated? (an image without particles keeps the whole header, "
            f"{POSITIONS_HEADER_LINES} lines: image, unit, format)",
        )
    return [np.asarray(p, dtype=np.float64) for p in particles if p]


def _stored_dtype(array: np.ndarray, path: Path) -> np.ndarray:
    """The integer rule of :func:`read_image`: bool, uint8, uint16 kept; others to uint16 if lossless."""
    if array.dtype == bool:
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype.kind == "u" and array.dtype.itemsize <= 2:
        return array.astype(array.dtype.newbyteorder("="), copy=False)
    if array.dtype.kind not in "uif":
        raise RawDataError(path, f"pixels of type {array.dtype} are not supported (8/16-bit integer images are)")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise RawDataError(path, f"{array.dtype} image with NaN or infinite pixels")
    low, high = array.min(), array.max()
    if low < 0 or high > 65535:
        raise RawDataError(
            path, f"{array.dtype} pixels span {low}..{high}, outside 0..65535: convert the image to 16 bits"
        )
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise RawDataError(
            path, f"{array.dtype} image with fractional values ({low:g}..{high:g}): convert it to 8- or 16-bit integers"
        )
    return array.astype(np.uint16)


def _to_gray(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    """(h, w, c) -> (h, w): alpha must be opaque and is dropped; equal channels kept; else BT.601 luma."""
    if array.ndim == 2:
        return array
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise RawDataError(path, f"expected a 2-D grayscale image, got {what} of shape {array.shape}")
    if array.shape[-1] in (2, 4):
        alpha = array[..., -1]
        opaque = np.iinfo(array.dtype).max if array.dtype.kind in "ui" else 1.0
        if (alpha != opaque).any():
            raise RawDataError(
                path,
                f"{what} has transparent pixels ({np.count_nonzero(alpha != opaque)} of {alpha.size}; alpha is "
                f"sample {array.shape[-1]} of {array.shape[-1]} per pixel): no defined gray value",
            )
        array = array[..., :-1]
    if array.shape[-1] == 1 or (array == array[..., :1]).all():
        return array[..., 0]
    spread = array.max(axis=-1).astype(np.float64) - array.min(axis=-1)
    full = np.iinfo(array.dtype).max if array.dtype.kind in "ui" else 1.0
    coloured = float(np.mean(spread > full / 8))
    if coloured > 0.001:  # not the few levels of JPEG chroma noise on a gray image
        log.warning(
            "%s: a colour %s (channels differ by more than 1/8 of the range in %.1f%% of pixels), read as its "
            "luma: a TEM micrograph is gray (coloured annotations burned in, or a false-colour image?)",
            path,
            what,
            100 * coloured,
        )
    luma = array[..., 0] * 0.299 + array[..., 1] * 0.587 + array[..., 2] * 0.114
    return np.round(luma).astype(array.dtype) if array.dtype.kind in "ui" else luma.astype(array.dtype)


def _check_orientation(path: Path, orientation) -> None:
    """Refuse an EXIF/TIFF Orientation other than 1 (top-left): viewers show such an image rotated or
    mirrored, so whether pixel coordinates (a positions file's, or those `temvirus analyse` writes)
    refer to the stored or the shown pixels is unknown."""
    if int(orientation) != 1:
        raise RawDataError(
            path,
            f"orientation tag {int(orientation)} (rotated or mirrored on display): pixel coordinates (particle "
            "positions given or found) would refer to the stored pixels, not the ones shown; save the image as "
            "shown with orientation 1 (top-left)",
        )


#: leading bytes of TIFF and BigTIFF files, little- and big-endian
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def _tiff_samples(array: np.ndarray, page, path: Path) -> np.ndarray:
    """The samples of a TIFF page (h, w, samples) that make its image: the colour samples of its
    photometric interpretation (1 gray or palette index, 3 RGB), then its alpha sample if one is
    marked so (ExtraSamples associated or unassociated alpha; :func:`_to_gray` requires it opaque).

    Extra samples of unspecified meaning are not part of the image (TIFF 6.0; Pillow reads such a
    file so): left out, with a warning naming the file and the sample count. Raises
    :class:`RawDataError` naming the sample count when the samples do not add up or two are alpha.
    Other interpretations (CMYK, CIELab...) are returned as they are: :func:`_read_tiff` refuses them.
    """
    from tifffile import EXTRASAMPLE, PHOTOMETRIC

    colour = {
        PHOTOMETRIC.MINISBLACK: 1,
        PHOTOMETRIC.MINISWHITE: 1,
        PHOTOMETRIC.PALETTE: 1,
        PHOTOMETRIC.RGB: 3,
        PHOTOMETRIC.YCBCR: 3,
    }.get(page.photometric)
    if colour is None:
        return array
    extras, samples = list(page.extrasamples), array.shape[-1]
    what = f"{page.photometric.name} TIFF with {samples} samples per pixel"
    if samples != colour + len(extras):
        raise RawDataError(
            path,
            f"{what}, but {colour} colour sample(s) and {len(extras)} extra sample(s) (ExtraSamples tag): "
            "the meaning of the others is unknown",
        )
    alpha = [colour + i for i, kind in enumerate(extras) if kind in (EXTRASAMPLE.ASSOCALPHA, EXTRASAMPLE.UNASSALPHA)]
    if len(alpha) > 1:
        raise RawDataError(path, f"{what}, {len(alpha)} of them alpha: which one applies is ambiguous")
    if len(extras) > len(alpha):
        log.warning(
            "%s: %s: %d extra sample(s) of unspecified meaning (not alpha) left out; the image is read from %s",
            path,
            what,
            len(extras) - len(alpha),
            "sample 1" if colour == 1 else f"samples 1-{colour}",
        )
    kept = array[..., list(range(colour)) + alpha]
    return kept[..., 0] if kept.shape[-1] == 1 else kept


def _check_jpeg(path: Path, data: bytes, what: str = "JPEG data") -> None:
    """Decode the JPEG stream ``data`` strictly (simplejpeg, libjpeg-turbo): Pillow, and imagecodecs
    for JPEG-compressed TIFFs, decode corrupt entropy-coded data (bytes zeroed or cut, a stray
    marker) without an error into wrong pixels. Raises :class:`RawDataError` naming ``path``."""
    import simplejpeg

    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True)
    except ValueError as exc:
        raise RawDataError(
            path,
            f"corrupt {what} ({exc}): the file is damaged (an interrupted copy or a disk error); "
            "copy it again from its source",
        ) from None


def _check_uncompressed_size(path: Path, page) -> None:
    """An uncompressed TIFF page's pixel data must fill the image its tags describe: fewer bytes, or a strip or
    tile of 0 bytes, is an interrupted or preallocated write (read as rows of zeros); more than a last strip
    padded to full rows (or tiles padded to full tiles) is a misstated BitsPerSample or SamplesPerPixel
    (missing: 1 bit). Raises :class:`RawDataError` naming the file."""
    counts = list(page.databytecounts)
    stored = sum(counts)
    row_bytes = -(-page.imagewidth * page.samplesperpixel * page.bitspersample // 8)
    needed = page.imagelength * row_bytes
    padded = max(len(counts) * (page.rowsperstrip or page.imagelength) - page.imagelength, 0)
    tile_bytes = -(-page.tilewidth * page.samplesperpixel * page.bitspersample // 8) * page.tilelength
    allowed = len(counts) * tile_bytes if page.is_tiled else needed + padded * row_bytes
    if stored > allowed:
        raise RawDataError(
            path,
            f"cannot read image (uncompressed TIFF with {stored} bytes of pixel data for the {needed} bytes its "
            f"tags describe: {page.bitspersample} bits and {page.samplesperpixel} samples per pixel, "
            f"{page.imagewidth}x{page.imagelength} px; a tag is wrong)",
        )
    if 0 in counts or stored < needed:
        raise RawDataError(
            path,
            f"cannot read image (uncompressed TIFF with {stored} bytes of pixel data, "
            f"{0 in counts and 'a strip or tile of 0 bytes, ' or ''}for {needed} bytes "
            f"of a {page.imagewidth}x{page.imagelength} image: an interrupted write?)",
        )


def _check_pixel_count(path: Path, width: int, height: int) -> None:
    """Refuse an image of ``width`` x ``height`` px over :data:`MAX_IMAGE_PIXELS`, before decoding it:
    :class:`RawDataError` naming ``path``, its size and the limit."""
    if width * height > MAX_IMAGE_PIXELS:
        raise RawDataError(
            path,
            f"image of {width}x{height} px ({width * height / 1e6:.0f} M pixels) is larger than the "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} M pixels read (decoding it would take several bytes a pixel): "
            "cut it into tiles (temvirus analyse reads a grayscale 8- or 16-bit TIFF of any size from disk instead)",
        )


def _tiff_directory_problem(path: Path) -> str | None:
    """What is wrong with the first image file directory (IFD) of the TIFF (or BigTIFF) ``path``, from its
    header, or None: an offset past the end of the file (a copy cut short: libtiff writes the directory
    after the pixel data) or a directory without entries (zeroed). tifffile reports both as an
    ``IndexError: 0``, or reads a zeroed directory as a page without tags."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(16)
        order = "<" if head[:2] == b"II" else ">"
        big = struct.unpack(order + "H", head[2:4])[0] == 43
        offset_format, count_format = (order + "Q", order + "Q") if big else (order + "I", order + "H")
        whole = len(head) >= (16 if big else 8)
        offset = struct.unpack(offset_format, head[8:16] if big else head[4:8])[0] if whole else None
        if offset is None or offset + struct.calcsize(count_format) > size:
            where = f"at byte {offset}" if offset is not None else "its offset"
            return f"truncated TIFF: its image directory ({where}) lies past the end of the file ({size} bytes)"
        fh.seek(offset)
        if struct.unpack(count_format, fh.read(struct.calcsize(count_format)))[0] == 0:
            return f"damaged TIFF: its image directory at byte {offset} holds no entries (zeroed?)"
    return None


def _read_tiff(path: Path, mapped: bool = False) -> np.ndarray:
    import tifffile
    from tifffile import COMPRESSION, PHOTOMETRIC, PLANARCONFIG

    with tifffile.TiffFile(path) as tif:
        page, series = tif.pages.first, tif.series
        plain = page.photometric == PHOTOMETRIC.MINISBLACK and page.samplesperpixel == 1
        stored = np.dtype(page.dtype).newbyteorder(tif.byteorder)  # as in the file
        mapped = mapped and plain and stored.kind == "u" and stored.itemsize in (1, 2)
        as_stored = mapped and page.is_memmappable and stored.isnative
        if mapped and not as_stored:  # decoded a strip or tile at a time: a strip or tile is what is held
            segment = (page.tilewidth, page.tilelength) if page.is_tiled else (page.imagewidth, page.rowsperstrip)
            if min(segment[1], page.imagelength) * segment[0] > MAX_IMAGE_PIXELS:
                raise RawDataError(
                    path,
                    f"image of {page.imagewidth}x{page.imagelength} px stored in strips or tiles of "
                    f"{segment[0]}x{min(segment[1], page.imagelength)} px, each larger than the "
                    f"{MAX_IMAGE_PIXELS / 1e6:.0f} M pixels decoded at a time: save it in strips or "
                    "tiles, or uncompressed in little-endian byte order (then mapped as stored)",
                )
        elif not mapped:
            _check_pixel_count(path, page.imagewidth, page.imagelength)
        sizes = [int(np.prod(s.shape)) for s in series]
        if len(series[0].pages) > 1:
            pages = len(series[0].pages)
            narrow = (
                f" (an (h, w, {page.imagewidth}) array, gray + alpha or colour, written as {pages} pages of "
                f"w x {page.imagewidth} px? tifffile stores it as one image of {page.imagewidth} samples per "
                "pixel with planarconfig='contig')"
                if page.imagewidth <= 4
                else ""
            )
            raise RawDataError(
                path,
                f"TIFF holds several images: {pages} pages of {page.imagewidth}x{page.imagelength} px{narrow}: "
                "which is the micrograph is ambiguous; save it as a single-image file",
            )
        areas = [other.imagelength * other.imagewidth for other in tif.pages]  # every image file directory
        # a thumbnail or a reduced-resolution level after the micrograph is at most half its width and height;
        # a display rendering before the data, or a second image about as large, makes the choice ambiguous
        if any(size >= sizes[0] for size in sizes[1:]) or any(4 * area > areas[0] for area in areas[1:]):
            shapes = [s.shape for s in series]
            raise RawDataError(
                path,
                f"TIFF holds several images (series of shapes {shapes}; pages of {areas} px): which is the "
                "micrograph is ambiguous (only thumbnails of at most half its width and height may follow it); "
                "save it as a single-image file",
            )
        if int(np.prod(series[0].shape)) > int(np.prod(page.shape)):  # ImageJ's stacks over 4 GiB: one IFD
            raise RawDataError(
                path,
                f"TIFF holds a stack of shape {series[0].shape} stored after one page of {page.shape}: which "
                "frame is the micrograph is ambiguous; save it as a single-image file",
            )
        if 262 not in page.tags:  # tifffile then reads it as min-is-white, inverted; libtiff as min-is-black
            raise RawDataError(path, "TIFF without a PhotometricInterpretation tag: its contrast is ambiguous")
        _check_orientation(path, page.tags.valueof(274, 1))
        size = tif.filehandle.size
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            if offset + count > size:  # some decoders (JPEG) fill a cut strip in silently
                raise RawDataError(
                    path,
                    f"cannot read image (truncated TIFF: data up to byte {offset + count}, the file has {size} bytes)",
                )
        if page.compression == COMPRESSION.NONE:
            _check_uncompressed_size(path, page)
        if page.compression == COMPRESSION.JPEG and page.bitspersample == 8:  # decoded silently when corrupt
            tables = page.jpegtables or b""  # an abbreviated stream per strip: the tables come once, in a tag
            for index, (offset, count) in enumerate(zip(page.dataoffsets, page.databytecounts)):
                tif.filehandle.seek(offset)
                strip = tif.filehandle.read(count)
                _check_jpeg(path, tables[:-2] + strip[2:] if tables else strip, f"JPEG data in strip or tile {index}")
        if as_stored:
            return tifffile.memmap(path, page=0, mode="r")
        if mapped:
            return _decoded_to_disk(page, path)
        # the page itself (its checks above are this page's): a series may carry metadata axes of
        # length 1 (tifffile's 'shaped' (1, h, w)) that no other reader sees
        array = page.asarray()
        photometric, compression = page.photometric, page.compression
        if array.ndim == 3 and page.samplesperpixel > 1:
            if page.planarconfig == PLANARCONFIG.SEPARATE:
                array = np.moveaxis(array, 0, -1)
            array = _tiff_samples(array, page, path)
        if photometric == PHOTOMETRIC.MINISBLACK:
            return _to_gray(array, path, "minisblack TIFF")
        if photometric == PHOTOMETRIC.MINISWHITE:
            if array.dtype.kind == "f":
                raise RawDataError(path, "floating-point TIFF with photometric MINISWHITE is not supported")
            if array.dtype == bool:
                return ~array
            return (2**page.bitspersample - 1 - _to_gray(array, path, "miniswhite TIFF")).astype(array.dtype)
        if photometric == PHOTOMETRIC.PALETTE:
            colormap = page.colormap
            if colormap is None:
                raise RawDataError(path, "palette TIFF without a colour map")
            if (colormap % 257 == 0).all():  # an 8-bit palette scaled to TIFF's 16 bits
                colormap = (colormap // 257).astype(np.uint8)
            return _to_gray(np.moveaxis(colormap[:, array], 0, -1), path, "palette TIFF")
        if photometric == PHOTOMETRIC.RGB or (photometric == PHOTOMETRIC.YCBCR and compression == COMPRESSION.JPEG):
            return _to_gray(array, path, f"{photometric.name} TIFF")
        raise RawDataError(
            path,
            f"TIFF photometric interpretation {photometric.name} is not supported "
            "(grayscale, inverted grayscale, palette and RGB are)",
        )


#: compressed bytes tifffile reads and decodes in one pass (:func:`_decoded_to_disk`)
DECODE_BUFFER_BYTES = 4 << 20


def _decoded_to_disk(page, path: Path) -> np.memmap:
    """A grayscale TIFF page (of the file ``path``) that cannot be mapped as stored (compressed, or in
    the other byte order), decoded a strip or tile at a time into an unlinked temporary file (in
    ``TMPDIR``: width x height x bytes a pixel of disk) and mapped read-only: memory holds about
    :data:`DECODE_BUFFER_BYTES` of compressed data and the strips decoded from it, whatever the
    image's size. The file's space is claimed first (``posix_fallocate``, where the system has it):
    a disk without room raises :class:`RawDataError` saying how much is needed and where, where
    writing to the map would kill the process (SIGBUS)."""
    import tempfile

    dtype = page.dtype.newbyteorder("=")
    size = int(np.prod(page.shape)) * dtype.itemsize
    with tempfile.TemporaryFile(prefix="temvirus-decoded-") as fh:  # its space is freed with the map
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fh.fileno(), 0, size)
        except OSError as exc:
            raise RawDataError(
                path,
                f"cannot decode it: {size / 2**20:.0f} MiB of temporary space needed in {tempfile.gettempdir()} "
                f"({exc.strerror}); set TMPDIR to a folder with room",
            ) from None
        out = np.memmap(fh, dtype=dtype, mode="w+", shape=page.shape)
        page.asarray(out=out, buffersize=DECODE_BUFFER_BYTES)
    out.flags.writeable = False
    return out


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png_end(path: Path) -> None:
    """Refuse a PNG whose chunks run out before its end chunk (IEND): a file cut at its end (an
    interrupted copy) that Pillow reads without a word while its image data happen to be whole,
    where a JPEG cut as short is refused (its end marker missing). Bytes after IEND are left alone."""
    import struct

    size, offset = path.stat().st_size, len(PNG_SIGNATURE)
    with open(path, "rb") as fh:
        while offset + 12 <= size:  # length, type, data, CRC
            fh.seek(offset)
            length, kind = struct.unpack(">I4s", fh.read(8))
            offset += 12 + length
            if kind == b"IEND" and offset <= size:
                return
    raise RawDataError(path, "cannot read image (truncated PNG: no end chunk IEND): an interrupted copy? copy it again")


#: Pillow modes read as they are (the rest: palette and colour modes through _to_gray)
_PIL_DIRECT = {"1", "L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with open(path, "rb") as fh:
        head = fh.read(26)
    if head.startswith(PNG_SIGNATURE):
        _check_png_end(path)
    # Pillow's decompression-bomb limit (a warning from 89 M pixels, an error from 179 M) gives way to
    # the reader's own, the same for every format (MAX_IMAGE_PIXELS, checked before decoding)
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(path) as image:
        _check_pixel_count(path, *image.size)
        if head.startswith(PNG_SIGNATURE) and head[24] == 16 and head[25] in (2, 4, 6):
            import imagecodecs  # Pillow reads 16-bit colour PNGs at 8 bits only

            return _to_gray(imagecodecs.png_decode(path.read_bytes()), path, "16-bit colour PNG")
        image.load()
        _check_orientation(path, image.getexif().get(274, 1))
        if getattr(image, "n_frames", 1) > 1:
            raise RawDataError(
                path, f"{image.format} file holds {image.n_frames} images: which is the micrograph is ambiguous"
            )
        if image.format in ("JPEG", "MPO"):  # Pillow (libjpeg) decodes corrupt entropy-coded data silently
            _check_jpeg(path, path.read_bytes())
        mode = image.mode
        if mode in _PIL_DIRECT:
            return np.asarray(image)
        if mode in ("P", "PA"):
            image = image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
        elif mode not in ("LA", "RGB", "RGBA"):
            raise RawDataError(path, f"image mode {mode} is not supported (grayscale, palette and RGB are)")
        return _to_gray(np.asarray(image), path, f"{mode} image")


def read_image(path: str | Path, *, mapped: bool = False) -> np.ndarray:
    """Read a raw image as a 2-D uint8 or uint16 array (h, w), the same rule for every format.

    An image over :data:`MAX_IMAGE_PIXELS` is refused from its header, before it is decoded. With
    ``mapped`` (``temvirus analyse``), a grayscale 8- or 16-bit TIFF gives a read-only
    ``numpy.memmap`` instead, so it may be of any size: one stored as the array itself
    (uncompressed, in one block, in this machine's byte order: what cameras and montage programs
    write) is mapped as it is (``tifffile.memmap``), and its pixels are read from disk as they are
    used; any other (LZW, deflate, JPEG...; strips or tiles) is decoded a strip or tile at a time
    into a temporary file that is mapped (:func:`_decoded_to_disk`), and only a strip or tile over
    :data:`MAX_IMAGE_PIXELS` is refused.

    The format is taken from the file's content, not its name (a PNG named ``.tif`` is read as
    PNG): TIFF via tifffile (LZW, deflate, JPEG... through imagecodecs), the rest via Pillow.
    A file holding several images (a multi-page TIFF stack, a larger second TIFF series, an
    animated PNG), or with an EXIF/TIFF orientation other than top-left, is refused.
    A JPEG, and every strip or tile of a JPEG-compressed TIFF, is also decoded strictly
    (simplejpeg): one with corrupt data, which Pillow and imagecodecs decode silently into
    wrong pixels, is refused.
    Photometric interpretation: grayscale as stored; inverted grayscale (TIFF MINISWHITE)
    inverted (``2**bits - 1 - value``); palette images through their palette (TIFF colour
    maps holding an 8-bit palette scaled by 257 give 8 bits); colour images with equal
    channels give that channel, others ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B,
    rounded); an alpha channel must be opaque and is dropped; a TIFF's extra samples not marked
    as alpha are left out with a warning (:func:`_tiff_samples`). Pixel type: 1-bit images
    give 0/255 uint8; uint8 and uint16 are kept; any other integer or float image becomes
    uint16 when that is lossless (integer values in 0..65535), else it is refused. Other
    interpretations (CMYK, CIELab...), stacks and empty images raise :class:`RawDataError`.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise RawDataError(path, "cannot read image: the file is empty (0 bytes)")
    magic = b""  # a file that cannot be opened is no TIFF to blame
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
        tiff = magic in TIFF_MAGIC
        problem = _tiff_directory_problem(path) if tiff else None
        if problem:
            raise RawDataError(path, f"cannot read image ({problem}): an interrupted copy? copy it again")
        array = _read_tiff(path, mapped) if tiff else _read_pillow(path)
    except RawDataError:
        raise
    except Exception as exc:  # any decoder failure: corrupt, truncated, not an image, missing codec
        # a codec's own error (imagecodecs' DeflateError, LzwError...) on a TIFF's data: not a missing codec
        decoding = magic in TIFF_MAGIC and type(exc).__module__.split(".")[0] == "imagecodecs"
        damaged = ": damaged pixel data (an interrupted copy?), copy it again" if decoding else ""
        raise RawDataError(path, f"cannot read image ({type(exc).__name__}: {exc}){damaged}") from None
    if array.size == 0:
        raise RawDataError(path, "cannot read image (no image data: corrupt or not an image file)")
    if array.ndim != 2:
        raise RawDataError(path, f"expected a 2-D grayscale image, got shape {array.shape}")
    return _stored_dtype(array, path)


def _entries(folder: Path) -> list[Path]:
    """The entries of ``folder`` a reader looks at (see :func:`ignored`); archives refused."""
    entries = sorted(p for p in folder.iterdir() if not ignored(p.name))
    for entry in entries:
        name = os.fsencode(entry.name)
        try:
            name.decode("utf-8")
        except UnicodeError:  # Python keeps the bytes as surrogates: written to a UTF-8 table they fail
            raise RawDataError(
                entry.parent / name.decode("utf-8", "backslashreplace"),
                f"the name is not UTF-8 but in a legacy code page ({name.decode('cp1252', 'replace')!r} in cp1252, "
                f"{name.decode('cp437')!r} in cp437; an archive extracted without converting its names?): rename it "
                "in UTF-8 (convmv -f cp1252 -t utf-8 -r --notest FOLDER), with its tags and positions files",
            ) from None
        if entry.is_file() and is_archive(entry):
            raise RawDataError(
                entry,
                "archive inside the raw-layout folder: extract it in place (images are not read from inside archives)",
            )
    return entries


def companion_folder(class_dir: Path, name: str) -> Path:
    """``class_dir``'s folder of :data:`COMPANION_FOLDERS` ``name``, its name matched ignoring case (``Tags/``,
    as subset folders are); ``class_dir / name`` when there is none. Two (``tags/`` and ``Tags/``) raise
    :class:`RawDataError`."""
    entries = sorted(class_dir.iterdir()) if class_dir.is_dir() else []
    found = [e for e in entries if e.name.lower() == name and not ignored(e.name) and e.is_dir()]
    if len(found) > 1:
        raise RawDataError(class_dir, f"two {name}/ folders: {', '.join(e.name + '/' for e in found)}; merge them")
    return found[0] if found else class_dir / name


def _image_files(class_dir: Path) -> list[Path]:
    """The images of a class folder. Anything else in it but :data:`COMPANION_FOLDERS` (a file of
    another type, a broken link, another folder) is refused: it would otherwise be left out unseen."""
    images = []
    for entry in _entries(class_dir):
        if entry.is_dir():
            if entry.name.lower() not in COMPANION_FOLDERS:
                expected = ", ".join(f"{f}/" for f in COMPANION_FOLDERS)
                raise RawDataError(entry, f"unexpected folder in a class folder (expected images, {expected})")
        elif not entry.is_file():
            raise RawDataError(entry, "not a regular file (a broken link?)")
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            images.append(entry)
        elif companion := _companion_of(entry.name):
            raise RawDataError(
                entry, f"a {companion} file beside the images: it belongs in {companion}/ of this class folder"
            )
        else:
            raise RawDataError(
                entry,
                f"not an image of a supported type ({f'extension {entry.suffix!r}' if entry.suffix else 'no extension'}; supported: "
                f"{', '.join(IMAGE_SUFFIXES)}): convert it, or move it out of "
                "the raw layout",
            )
    return images


def _companion_of(name: str) -> str | None:
    """The companion folder (:data:`COMPANION_FOLDERS`) whose file ``name`` is named as: ``tags`` for
    ``{image}_tags.csv``, ``particle_positions`` for ``{image}_particlepositions.txt``; else None."""
    lowered = name_key(name)
    if lowered.endswith("_tags.csv"):
        return "tags"
    return "particle_positions" if lowered.endswith("_particlepositions.txt") else None


def name_key(name: str) -> str:
    """``name`` as file systems that ignore case and Unicode normalisation (macOS, Windows) see it:
    two names with equal keys (``a1.tif``, ``A1.TIF``; ``é`` composed or not) are one file there.
    Used to match tags and positions files to their image and to refuse image ids that clash."""
    return unicodedata.normalize("NFC", name).casefold()


class _Companions:
    """The tags or positions files of one class folder, matched to images by name; reports the unused."""

    def __init__(self, folder: Path, what: str, expected: Sequence[str] = ()):
        """``expected``: the names of every image's file in ``folder``; when one is missing, a file of similar
        name is offered for a rename only when it is no other image's."""
        self.folder, self.what = folder, what
        self.expected = {name_key(name) for name in expected}
        self.files = {}
        for entry in _entries(folder) if folder.is_dir() else []:
            if not entry.is_file():
                raise RawDataError(entry, f"not a {what} (a folder or a broken link) in {folder.name}/")
            self.files[entry.name] = entry
        self.used: set[str] = set()

    def find(self, name: str, stem: str) -> Path:
        """The file called ``name`` (case and Unicode normalisation ignored when only one matches);
        when there is none, the path it should have (the readers then name it as missing), and
        the files of similar name are logged."""
        matches = [n for n in self.files if n == name] or [n for n in self.files if name_key(n) == name_key(name)]
        if len(matches) > 1:
            raise RawDataError(self.folder / name, f"several {self.what}s match this name: {sorted(matches)}")
        if matches:
            self.used.add(matches[0])
            return self.files[matches[0]]
        similar = sorted(
            n for n in self.files if name_key(n).startswith(name_key(stem)) and name_key(n) not in self.expected
        )
        if similar:
            raise RawDataError(
                self.folder / name, f"{self.what} is missing; files of a similar name: {similar} (rename the right one)"
            )
        return self.folder / name

    def check_all_used(self) -> None:
        unused = sorted(set(self.files) - self.used)
        used = {name_key(name): name for name in self.used}
        for name in unused:  # 'a.JPG_tags.csv' beside the 'A.jpg_tags.csv' read: which one is right?
            if name_key(name) in used:
                raise RawDataError(
                    self.files[name],
                    f"a second {self.what} for the image of {used[name_key(name)]} (the names differ only in case "
                    "or Unicode form: one file on macOS and Windows); which is right is unknown, keep one",
                )
        if unused:
            raise RawDataError(
                self.files[unused[0]],
                f"no image for this {self.what} in {self.folder.parent} ({len(unused)} such file(s): "
                f"{unused[:5]}): the image is missing or has another name or type",
            )


def subset_folders(root: str | Path) -> dict[str, Path]:
    """The subset folders of ``root`` by subset name (:data:`SUBSETS` order), names matched
    ignoring case (``Train``, ``TEST``). Two folders for one subset raise :class:`RawDataError`."""
    root, found = Path(root), {}
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        subset = entry.name.lower()
        if subset in SUBSETS and not ignored(entry.name) and entry.is_dir():
            if subset in found:
                raise RawDataError(
                    entry, f"two folders for the {subset} subset: {found[subset].name}/ and {entry.name}/"
                )
            found[subset] = entry
    return {subset: found[subset] for subset in SUBSETS if subset in found}


def read_dataset(root: str | Path, *, hash_files: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a raw-layout folder into an image table and a particle table.

    Returns ``(images, particles)`` with columns :data:`IMAGE_COLUMNS` and
    :data:`PARTICLE_COLUMNS`, sorted by image id. Paths are relative to ``root``. Two folders of
    one class in one subset (``Adenovirus/`` and ``adenovirus/``), and one micrograph in the folders
    of two classes (equal bytes, when ``hash_files``; equal decoded pixels, or re-saved lossily,
    rescaled, with other contrast, inverted, turned, mirrored, a border or faint noise added:
    :func:`copy_signature`, computed from the pixels read anyway, whatever ``hash_files``), raise
    :class:`RawDataError` naming both files. A class folder without images is logged as a
    warning naming it (the class lacks that subset).
    """
    root = Path(root)
    if root.is_file() and is_archive(root):
        raise RawDataError(
            root, "an archive, not a folder: extract it, or give it as dataset.local.path (the workflow extracts it)"
        )
    if not root.is_dir():
        raise RawDataError(
            root, "not a folder (a raw-layout folder is expected)" if root.exists() else "dataset folder does not exist"
        )
    subsets = subset_folders(root)
    unexpected = sorted(p.name for p in _entries(root) if p.is_dir() and p not in subsets.values())
    if not subsets:
        raise RawDataError(root, f"no subset folder ({', '.join(SUBSETS)}) found")
    if unexpected:
        raise RawDataError(root, f"unknown folders {unexpected}; expected only {list(SUBSETS)}")
    images, particles, seen, signatures = [], [], {}, {}
    for folder in [root, *subsets.values()]:
        for entry in _entries(folder):
            if entry.suffix.lower() in IMAGE_SUFFIXES:
                raise RawDataError(entry, "image outside a class folder ({subset}/{class}/{image})")
    for subset, subset_dir in subsets.items():
        class_dirs = {}  # one folder per class and subset, as one subset folder (adenovirus/ is Adenovirus/)
        for class_dir in (p for p in _entries(subset_dir) if p.is_dir()):
            cls = class_from_folder(class_dir.name)
            if cls is None:
                raise RawDataError(class_dir, f"unknown class folder; known classes: {sorted(FOLDER_NAMES.values())}")
            if cls in class_dirs:
                raise RawDataError(
                    class_dir,
                    f"two folders for class {cls}: {class_dirs[cls].name}/ and {class_dir.name}/; merge them into one",
                )
            class_dirs[cls] = class_dir
            image_files = _image_files(class_dir)
            if not image_files:  # an incomplete copy or extraction, most likely: the class then lacks this subset
                log.warning(
                    "%s: a class folder without images: no %s images of %s are read (an incomplete copy or "
                    "extraction?); remove the folder if the class has none",
                    class_dir,
                    subset,
                    cls,
                )
            if image_files and not any(companion_folder(class_dir, f).is_dir() for f in COMPANION_FOLDERS):
                raise RawDataError(
                    class_dir,
                    "images without tags/ and particle_positions/ folders: not the raw layout "
                    "(the published 256x256 patches?)",
                )
            tags = _Companions(
                companion_folder(class_dir, "tags"), "tags file", [f"{p.name}_tags.csv" for p in image_files]
            )
            positions = _Companions(
                companion_folder(class_dir, "particle_positions"),
                "particle positions file",
                [f"{p.stem}_particlepositions.txt" for p in image_files],
            )
            for image_path in image_files:
                image_id = image_path.stem
                if name_key(image_id) in seen:  # ids equal but for case clash on macOS/Windows file systems
                    raise RawDataError(image_path, f"duplicate image id {image_id!r} (also {seen[name_key(image_id)]})")
                seen[name_key(image_id)] = image_path
                tags_path = tags.find(f"{image_path.name}_tags.csv", image_id)
                positions_path = positions.find(f"{image_id}_particlepositions.txt", image_id)
                row, points, signatures[image_id] = _read_one(
                    root, image_path, tags_path, positions_path, cls, subset, hash_files
                )
                images.append(row)
                particles.extend(points)
            tags.check_all_used()
            positions.check_all_used()
    if not images:
        raise RawDataError(root, "no images found")
    image_table = pd.DataFrame(images, columns=IMAGE_COLUMNS).sort_values("image_id", kind="stable")
    particle_table = pd.DataFrame(particles, columns=PARTICLE_COLUMNS)
    _check_ids_read_back(image_table.image_id, seen)
    _check_copies_in_two_classes(image_table, root)
    _check_similar_in_two_classes(image_table, signatures, root)
    particle_table = particle_table.sort_values(["image_id", "particle", "vertex"], kind="stable")
    return image_table.reset_index(drop=True), particle_table.reset_index(drop=True)


def _check_copies_in_two_classes(images: pd.DataFrame, root: Path) -> None:
    """Refuse one image file (equal bytes, by ``sha256``; not checked when the files were not hashed)
    in the folders of two classes: a copy put into a second class folder gives its particles two
    labels, and overlap removal, which compares images within a class, never sees the pair."""
    hashed = images[images.sha256 != ""]
    for _, same in hashed.groupby("sha256", sort=False):
        if same["class"].nunique() > 1:
            first, second = same.drop_duplicates("class").sort_values("path").path.iloc[:2]
            _refuse_in_two_classes(root, images, first, second, "the same file (equal bytes)")


def copy_signature(pixels: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The signature of an image (2-D array, any pixel type) that two copies of one micrograph share, and
    the height and width (pixels) of the content it was taken from: a 2-D float32 array of unit norm,
    :data:`COPY_GRID` cells along the content's longer side (its rows and columns those of the field:
    turned and mirrored with it), whatever the file format, pixel type, lossy compression, scale (the
    content, not its pixels, is divided into cells), contrast and brightness, padding along the borders
    (black or white, added or taken away) and faint noise; an inverted contrast negates it.

    The content: the image less the near-constant rows and columns along its borders (:func:`_content_box`,
    tolerant to faint noise). It is averaged to :data:`COPY_GRID` cells along its longer side (its shorter
    side alike, centred: a turned copy has the same cells), the cell means replaced by the normal scores of their ranks
    (:func:`temvirus.overlap.normal_scores`: any monotone change of grey levels gives the same
    values) and band-passed between :data:`COPY_BAND` cells (:func:`temvirus.overlap._bandpass`:
    what the field shows, not the halo around a centred particle that many images share).
    Only cells wholly outside constant areas left (saturated areas, :func:`temvirus.overlap.constant_area_mask`,
    found on the content averaged in whole blocks to at least 4 px per cell) and not next to them or to the
    content's border count; the others are 0. The band-passed values are clipped to +-:data:`COPY_CLIP` standard
    deviations, so that no few cells (a thin border strip found constant in one copy only) outweigh the rest.
    """
    from PIL import Image
    from scipy.ndimage import binary_erosion

    from temvirus.overlap import _bandpass, _resample_box, constant_area_mask, normal_scores

    top, bottom, left, right = _content_box(pixels)
    pixels = pixels[top:bottom, left:right]  # the padding along the borders left out
    block = max(1, max(pixels.shape) // (4 * COPY_GRID))  # whole blocks of pixels first: sums are fast
    top, left = (side % block // 2 for side in pixels.shape)  # the same blocks in a turned copy
    whole = pixels[top : top + pixels.shape[0] // block * block, left : left + pixels.shape[1] // block * block]
    rows = sum(whole[i::block].astype(np.float32) for i in range(block))
    small = sum(rows[:, i::block] for i in range(block)) / block**2
    factor = max(small.shape) / COPY_GRID  # cells of the whole content: the same in every copy
    size = tuple(max(1, int(side / factor)) for side in small.shape[::-1])  # (width, height) in cells
    left, top = ((side - count * factor) / 2 for side, count in zip(small.shape[::-1], size))  # centred
    box = (left, top, left + size[0] * factor, top + size[1] * factor)
    mean = _resample_box(small, box, size, Image.Resampling.BOX)
    valid = _resample_box(constant_area_mask(small).astype(np.float32), box, size, Image.Resampling.BOX) == 0
    valid = binary_erosion(valid, iterations=1, border_value=0)
    band = np.clip(_bandpass(normal_scores(mean, valid), valid, *COPY_BAND), -COPY_CLIP, COPY_CLIP)
    return (band / max(float(np.linalg.norm(band)), 1e-9)).astype(np.float32), pixels.shape


def _content_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """Top, bottom, left and right (exclusive) of the micrograph in ``pixels`` within the padding
    along its borders (black or white, with faint noise or not, one border around another): the
    rows and columns not near-constant (standard deviation at most :data:`COPY_FLAT` of the area's),
    from the first to the last, again within them until none is left out."""

    def spread(lines: np.ndarray, size: int) -> np.ndarray:  # of each row, averaged over runs of size pixels
        return lines[:, : lines.shape[1] // size * size].reshape(len(lines), -1, size).mean(2).std(1)

    values = pixels.astype(np.float32)
    box = (0, pixels.shape[0], 0, pixels.shape[1])
    while True:
        top, bottom, left, right = box
        inner = values[top:bottom, left:right]
        size = max(1, min(inner.shape) // COPY_GRID)  # about a cell: faint noise averaged out
        flat = COPY_FLAT * inner.std()
        rows, cols = (np.flatnonzero(spread(lines, size) > flat) for lines in (inner, inner.T))
        if not (rows.size and cols.size):  # every row or column near-constant: a smooth gradient
            return box
        box = (top + rows[0], top + rows[-1] + 1, left + cols[0], left + cols[-1] + 1)
        if box == (top, bottom, left, right):
            return box


def copy_similarities(signatures: Sequence[np.ndarray]) -> Iterator[tuple[str, bool, np.ndarray]]:
    """For each of :data:`COPY_TURNS`: its name, whether it swaps width and height, and the cosine
    similarities (``n x n``, -1 to 1) of the :func:`copy_signature` ``signatures`` (of ``n``
    images), row ``i`` column ``j``: image ``i`` with image ``j`` turned or mirrored so. Negative
    near -1: one image with inverted contrast."""

    def padded(signature: np.ndarray) -> np.ndarray:  # cells laid out from the top-left corner
        out = np.zeros((COPY_GRID, COPY_GRID), dtype=np.float32)
        out[: signature.shape[0], : signature.shape[1]] = signature
        return out.ravel()

    vectors = np.stack([padded(signature) for signature in signatures])
    for name, (turn, swaps) in COPY_TURNS.items():
        yield name, swaps, vectors @ np.stack([padded(turn(signature)) for signature in signatures]).T


def _check_similar_in_two_classes(
    images: pd.DataFrame, signatures: dict[str, tuple[np.ndarray, tuple[int, int]]], root: Path
) -> None:
    """Refuse one micrograph in the folders of two classes when the files differ: the same decoded
    pixels in another format (JPEG -> PNG or TIFF, 8 -> 16 bit, another TIFF compression, other
    metadata), or the image re-saved lossily, rescaled, with other contrast or brightness (inverted
    too), turned or mirrored (:func:`copy_similarities` at least :data:`COPY_SIMILARITY`, or at
    most its negative, for a turn of :data:`COPY_TURNS`; the contents of the fields, padding along the
    borders left out, of equal width and height in nm, swapped by a quarter turn, within
    :data:`COPY_FIELD_TOLERANCE`), a border or faint noise added too. Overlap removal compares
    images within a class only."""
    table = images.reset_index(drop=True)
    classes = table["class"].to_numpy()
    cells, content = zip(*(signatures[image_id] for image_id in table.image_id))
    height, width = np.log(np.array(content, dtype=float) * table.pixel_size_nm.to_numpy(dtype=float)[:, None]).T
    tolerance = np.log(1 + COPY_FIELD_TOLERANCE)
    pairs = []
    for turn, swaps, similarity in copy_similarities(cells):
        candidate = (np.abs(similarity) >= COPY_SIMILARITY) & (classes[:, None] != classes[None, :])
        for mine, theirs in ((width, height), (height, width)) if swaps else ((width, width), (height, height)):
            candidate &= np.abs(mine[:, None] - theirs[None, :]) <= tolerance  # a rescaled copy: other pixels
        pairs += [(table.path[i], table.path[j], similarity[i, j], turn) for i, j in zip(*np.nonzero(candidate))]
    if not pairs:
        return
    first, second, score, turn = min(pairs, key=lambda pair: (-abs(pair[2]), sorted(pair[:2])))
    first, second = sorted([first, second])
    a, b = read_image(root / first), read_image(root / second)
    changes = ", ".join(change for change in (turn, "inverted contrast" if score < 0 else "") if change)
    how = (
        "the same pixels (decoded; another file format, pixel type or compression)"
        if np.array_equal(a, b)
        else f"re-saved, rescaled, with other contrast, turned or mirrored (similarity "
        f"{abs(score):.3f}{', ' + changes if changes else ''}; at least {COPY_SIMILARITY} is one image)"
    )
    _refuse_in_two_classes(root, table, first, second, how)


def _refuse_in_two_classes(root: Path, images: pd.DataFrame, first: str, second: str, how: str) -> None:
    """Raise the :class:`RawDataError` of one micrograph in two class folders: ``first`` and
    ``second`` (paths relative to ``root``, rows of ``images``), both named, neither as the copy."""
    classes = images.set_index("path")["class"]
    raise RawDataError(
        root / first,
        f"{first} and {second} (in the folders of classes {classes[first]} and {classes[second]}) are one "
        f"micrograph, {how}: its particles would get two labels; keep it in its own class only: remove the "
        "copy in the wrong class folder, with its tags and positions files",
    )


def _check_ids_read_back(ids: Sequence[str], paths: dict[str, Path]) -> None:
    """Refuse image ids that a CSV table holding such ids would not give back as the same text.

    The later steps read their tables (``images.csv``, a split's ``patches.csv``, a class's or a
    subset's rows...) with pandas' type inference: ids that look like numbers (``001``, ``1e5``),
    booleans or missing values (``NA``, ``null``) come back as other text, or collide (``001``
    and ``01`` both ``1``); and a table whose ids are whole and decimal numbers alone reads them
    as decimals (``1`` beside ``1.5`` comes back as ``1.0``), so whole-number ids beside
    decimal-number ids are refused wherever they are in the layout.
    """
    ids = list(ids)
    frame = pd.DataFrame([ids], columns=[f"c{i}" for i in range(len(ids))])
    back = pd.read_csv(io.StringIO(frame.to_csv(index=False)))
    alone = [back[column].iloc[0] for column in back]  # each id alone in its column (a row would upcast)
    decimals = [image_id for image_id, value in zip(ids, alone) if isinstance(value, float) and str(value) == image_id]
    for image_id, value in zip(ids, alone):
        where = ""
        if not (pd.isna(value) or str(value) != image_id):
            if not (decimals and isinstance(value, (int, np.integer))):
                continue
            value = float(value)
            where = f" holding it and the number-like ids {decimals[:3]} (the rows of one class or subset)"
        raise RawDataError(
            paths[name_key(image_id)],
            f"image id {image_id!r} is read back from the CSV tables{where} as {value} (a number, boolean or "
            "missing value): give the images names with a letter (e.g. img_001.tif)",
        )


#: a frame of fewer distinct values records no micrograph: shot noise alone gives a recorded frame
#: hundreds (a binary mask, a label map or a line drawing has a few)
MIN_GREY_LEVELS = 8


def check_not_blank(path: str | Path, pixels: np.ndarray) -> None:
    """Refuse a frame that records no micrograph: ``pixels`` (2-D, or any shape whose first axis
    is rows) all one value (a blank frame: the camera's dark or saturated one) or of fewer than
    :data:`MIN_GREY_LEVELS` distinct values (a binary mask, a label map, a drawing), which the
    models would read as a micrograph. A memory-mapped image is read in blocks of rows, and
    only where a sparse grid of its pixels shows few values. Raises :class:`RawDataError`
    naming ``path`` and the values."""
    step = [max(1, side // 64) for side in pixels.shape]
    if len(np.unique(pixels[tuple(slice(None, None, s) for s in step)])) >= MIN_GREY_LEVELS:
        return
    levels: set = set()
    rows = max(1, 2**22 // max(1, pixels[:1].size))  # blocks of about 4 M values
    for start in range(0, len(pixels), rows):
        levels.update(np.unique(pixels[start : start + rows]).tolist())
        if len(levels) >= MIN_GREY_LEVELS:
            return
    if len(levels) == 1:
        raise RawDataError(path, f"every pixel has the value {pixels.flat[0]}: a blank frame, no micrograph recorded")
    raise RawDataError(
        path,
        f"only {len(levels)} distinct pixel values ({', '.join(map(str, sorted(levels)))}): a mask, label map or "
        f"drawing, not a recorded micrograph (one has hundreds; fewer than {MIN_GREY_LEVELS} are refused)",
    )


#: a TIFF's own calibration and the tags' XScale differing by more than this fraction contradict each other
CALIBRATION_TOLERANCE = 0.02


def embedded_pixel_sizes_nm(path: Path) -> list[tuple[str, float, str]]:
    """The pixel sizes (nm) an image file records of itself: ``(axis, size, where it says so)`` for x
    and y. A TIFF: from its OME-XML (``PhysicalSizeX/Y`` in their units, µm by default), from FEI's
    (Thermo Fisher's) metadata (``[Scan]`` ``PixelWidth`` / ``PixelHeight`` in metres), and from ImageJ's
    calibration (``unit=`` nm, micron, Å... in its ImageDescription, with X/YResolution pixels per unit),
    else X/YResolution with ResolutionUnit centimetre or inch (TIFF 6.0's default). A PNG: its
    ``pHYs`` pixel density (per metre; a JPEG's JFIF density, at most 65535 per inch or centimetre,
    cannot give a TEM pixel size). No unit, and sizes outside :data:`PIXEL_SIZE_RANGE_NM` (a
    camera's sensor pitch in µm; a writer's 72 dpi: 353 µm) are no specimen calibration and are
    left out."""
    import tifffile
    from PIL import Image

    with open(path, "rb") as fh:
        tiff = fh.read(4) in TIFF_MAGIC
    sizes = []
    if not tiff:
        with Image.open(path) as im:
            dpi = im.info.get("dpi") if im.format == "PNG" else None
        if dpi and all(dpi):
            sizes += [(axis, 2.54e7 / float(d), "PNG pHYs pixel density") for axis, d in zip("xy", dpi)]
    else:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome:
                sizes += _ome_pixel_sizes_nm(tif.ome_metadata, path)
            scan = (tif.fei_metadata or {}).get("Scan", {}) if tif.is_fei else {}
            for axis, key in (("x", "PixelWidth"), ("y", "PixelHeight")):
                if isinstance(scan.get(key), (int, float)) and scan[key] > 0:
                    sizes.append((axis, scan[key] * 1e9, f"FEI metadata ([Scan] {key})"))
            tags = tif.pages[0].tags
            unit = str((tif.imagej_metadata or {}).get("unit", "")).strip()
            if unit:
                unit = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), unit)  # ImageJ's escapes: \u00C5
                nm, where = _unit_nm(unit), f"ImageJ calibration (unit {unit!r})"
            else:  # TIFF 6.0: ResolutionUnit 1 none, 2 inch (also when the tag is absent), 3 centimetre
                unit_tag = tags.get("ResolutionUnit")
                nm, where = {2: (2.54e7, "resolution per inch"), 3: (1e7, "resolution per centimetre")}.get(
                    2 if unit_tag is None else int(unit_tag.value), (None, "")
                )
            for axis in "xy" if nm else "":
                num, den = tags[f"{axis.upper()}Resolution"].value if f"{axis.upper()}Resolution" in tags else (0, 0)
                if num and den:
                    sizes.append((axis, nm * den / num, where))
    low, high = PIXEL_SIZE_RANGE_NM
    return [(axis, size, where) for axis, size, where in sizes if low <= size <= high]


def _ome_pixel_sizes_nm(xml: str, path: Path) -> list[tuple[str, float, str]]:
    """``(axis, nm, where)`` of the first ``Pixels`` element's PhysicalSizeX/Y in OME-XML ``xml`` (of the
    image ``path``). Raises :class:`RawDataError` naming ``path`` where the XML cannot be parsed or a size
    is not a number as OME writes them (``1,0``: a decimal comma, ``n/a``): the calibration would be
    silently left unchecked."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as error:
        raise RawDataError(path, f"its OME-XML metadata cannot be parsed ({error})") from None
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    sizes = []
    for axis in "XY":
        value = pixels.get(f"PhysicalSize{axis}") if pixels is not None else None
        nm = _unit_nm(pixels.get(f"PhysicalSize{axis}Unit", "µm")) if value else None
        if nm:
            try:
                size = float(value)
            except ValueError:
                raise RawDataError(
                    path,
                    f"its OME-XML PhysicalSize{axis}={value!r} is not a number (OME writes a '.' decimal point): "
                    "its calibration cannot be checked against the tags; correct the metadata",
                ) from None
            sizes.append((axis.lower(), size * nm, "OME-XML PhysicalSize"))
    return sizes


def check_embedded_calibration(image_path: Path, x_nm: float, y_nm: float, source: str) -> None:
    """Refuse an image whose own calibration (:func:`embedded_pixel_sizes_nm`) contradicts the pixel size
    given for that axis (``x_nm``, ``y_nm``, by ``source``: ``"its tags file X gives {axis}Scale"``,
    ``"--pixel-size gives"``) by more than :data:`CALIBRATION_TOLERANCE`: which one is right is
    unknown, and the image would be rescaled by the one given alone. Raises :class:`RawDataError`
    naming the image and both sizes."""
    for axis, size, where in embedded_pixel_sizes_nm(image_path):
        given = x_nm if axis == "x" else y_nm
        if abs(size / given - 1) > CALIBRATION_TOLERANCE:
            raise RawDataError(
                image_path,
                f"its {where} gives {size:.4g} nm/px along {axis}, but {source.format(axis=axis.upper())} "
                f"{given:.4g} nm/px: which is right is unknown; correct the wrong one",
            )


def _read_one(
    root: Path, image_path: Path, tags_path: Path, positions_path: Path, cls: str, subset: str, hash_files: bool
):
    tags = read_tags(tags_path, image=image_path.name)
    pixels = read_image(image_path)
    height, width = pixels.shape
    check_not_blank(image_path, pixels)
    check_tags_size(tags, tags_path, image_path, pixels.shape)
    check_embedded_calibration(
        image_path, tags.pixel_size_x_nm, tags.pixel_size_y_nm, f"its tags file {tags_path.name} gives {{axis}}Scale"
    )
    check_image_size(image_path, pixels.shape, tags.pixel_size_x_nm)
    shapes = read_positions(
        positions_path, image=image_path.name, size=(width, height), pixel_size_nm=tags.pixel_size_x_nm
    )
    points = []
    for particle, line in enumerate(shapes):
        points.extend((image_path.stem, particle, vertex, float(x), float(y)) for vertex, (x, y) in enumerate(line))
    if not shapes:
        warnings.warn(
            f"{positions_path}: image has no particles; kept in the table, left out of patching",
            EmptyImageWarning,
            stacklevel=2,
        )
    row = (
        image_path.stem,
        cls,
        subset,
        image_path.relative_to(root).as_posix(),
        positions_path.relative_to(root).as_posix(),
        tags_path.relative_to(root).as_posix(),
        sha256_file(image_path) if hash_files else "",
        width,
        height,
        tags.pixel_size_x_nm,
        len(shapes),
        len(points),
    )
    return row, points, copy_signature(pixels)


def write_tables(
    root: str | Path, images_csv: str | Path, particles_csv: str | Path, classes: Sequence[str] = ()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``root``, write the image and particle tables and return them.

    ``classes`` (config ``classes.classification``) must all be in the data: else a
    :class:`RawDataError` names the missing classes and the classes found, before any
    curation work. A failure leaves both paths as they were: nothing is written unless the whole
    folder reads without error, and both tables are written to temporaries before either
    replaces what is there, so that a table that cannot be written (its folder cannot be made)
    leaves no new table beside an old or missing one. Files at these paths are never removed
    before the new tables are ready (a typo in ``root`` would destroy whatever they name); then
    the image table is removed, the particle table replaced and the image table put back, so that
    a process killed between the two renames leaves no image table rather than an earlier one
    beside a new particle table (Snakemake also marks a killed job's outputs incomplete); the error of ``temvirus read``
    tells that no table was written, and Snakemake removes a failed job's outputs itself. A
    table path inside ``root`` (links resolved) raises ValueError: it would replace a raw file
    given by mistake, or put a table into the layout it describes; a path that
    :func:`temvirus.io.check_file_destination` refuses (a folder, a device, a FIFO) raises its
    ValueError before the folder is read.
    """
    from temvirus.io import atomic_path, check_file_destination, write_csv, write_target

    if Path(images_csv).resolve() == Path(particles_csv).resolve():
        raise ValueError(f"{images_csv}: given for both the image and the particle table (one would replace the other)")
    for table in (images_csv, particles_csv):
        check_file_destination(table)
        if Path(table).resolve().is_relative_to(Path(root).resolve()):
            raise ValueError(f"{table}: inside the raw-layout folder {root} it reads; write the table elsewhere")
    images, particles = read_dataset(root)
    check_classes(images, classes, root)
    for gap in subset_gaps(images):
        log.warning("%s: %s", root, gap)
    log.info(
        "%s: %d images, %d particles, %d classes",
        root,
        len(images),
        int(images.n_particles.sum()),
        images["class"].nunique(),
    )
    with atomic_path(images_csv) as images_tmp, atomic_path(particles_csv) as particles_tmp:  # a pair or neither
        write_csv(images_tmp, images)
        write_csv(particles_tmp, particles)
        # Two renames cannot be one: the image table goes before the particle table is replaced
        # and comes back after it, so that a kill between them leaves no image table (a reader
        # stops, a rerun writes both), never an earlier image table beside a new particle table.
        write_target(images_csv).unlink(missing_ok=True)  # through a link, as atomic_path writes
    return images, particles


def subset_gaps(images: pd.DataFrame) -> list[str]:
    """What the raw layout's subset folders lack, one line each: a subset folder with no images at all
    (absent: an archive extracted in part, a download that left one out), then each class without
    images in a subset folder. The representative and bad split methods pool the folders, so such
    data go in with fewer images than published; the given split method refuses them later (every
    class needs patches in every subset). Empty when every class has images in every subset folder."""
    held = images.groupby("class")["folder_subset"].agg(set)
    absent = [s for s in SUBSETS if s not in set(images["folder_subset"])]
    lines = [f"no images in a {s}/ subset folder (absent, or holding no class folder)" for s in absent]
    for cls, subsets in held.items():
        lacking = [s for s in SUBSETS if s not in subsets and s not in absent]
        if lacking:
            lines.append(f"class {cls} has no images in {', '.join(s + '/' for s in lacking)}")
    return lines


def check_classes(images: pd.DataFrame, classes: Sequence[str], where: str | Path) -> None:
    """Every class of ``classes`` (config ``classes.classification``) is a class of the image
    table ``images``: else a :class:`RawDataError` at ``where`` names the missing classes and
    the classes found."""
    found = sorted(set(images["class"]))
    missing = [c for c in classes if c not in found]
    if missing:
        raise RawDataError(
            where, f"classes.classification lists {missing}, which the data do not hold; classes found: {found}"
        )


def write_classification_classes(images_csv: str | Path, classes: Sequence[str], out_csv: str | Path) -> pd.DataFrame:
    """Check ``classes`` (config ``classes.classification``) against the image table and write
    them, in that order, with their images and annotated particles in the data.

    The ``check_classes`` rule: its params hold the class list, so that a list changed after
    the raw tables were made is checked again before any job that reads it (:func:`write_tables`
    checks it on the run that reads the raw data, but is not re-run for a change of the list).
    """
    from temvirus.io import write_csv

    images = pd.read_csv(images_csv)
    check_classes(images, classes, images_csv)
    counts = images.groupby("class")["n_particles"].agg(images="size", particles="sum")
    table = counts.reindex(list(classes)).rename_axis("class").reset_index()
    log.info("%s: the %d classes of classes.classification are in the data", images_csv, len(table))
    left_out = sorted(set(images["class"]) - set(classes))
    if left_out:  # a class folder the list forgets: curated and in Table 1, but never trained or tested
        log.warning(
            "%s: the data hold classes that classes.classification leaves out: %s (curated and counted in "
            "Table 1, not trained or evaluated; add them to the list to classify them)",
            images_csv,
            left_out,
        )
    write_csv(out_csv, table)
    return table


def tree_files(root: Path) -> Iterator[Path]:
    """Every entry but a folder under ``root`` that the reader looks at, sorted by folder and name:
    hidden files and ``__MACOSX`` left out (:func:`ignored`); linked folders followed, each real
    folder once (a link back up the tree is not followed again)."""
    seen = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not ignored(d))
        yield from (Path(folder, name) for name in sorted(names) if not ignored(name))


def update_manifest(root: str | os.PathLike, manifest: str | os.PathLike) -> bool:
    """Write the content manifest of a raw-layout folder used in place; True when it changed.

    ``manifest`` (JSON) lists every file under ``root`` that the reader looks at (hidden files
    and ``__MACOSX`` left out; linked files and folders followed, a broken link listed by its
    target, a named pipe or other special file by its type, never read) with its size and
    sha256, sorted by path. It is rewritten only
    when that list differs, so a rule taking it as input reruns exactly when a file was
    edited, added or removed. Hashes are reused from ``{manifest}.stat.json`` for files whose
    size, mtime, ctime and inode are unchanged (an edit always changes the ctime); all others
    are re-hashed.
    """
    root, manifest = Path(root), Path(manifest)
    cache, stats = _stat_cache(manifest), {}
    files = _tree_entries(root, cache, stats)
    content = {"root": str(root.resolve()), "files": files}
    return _write_manifest(manifest, content, cache, stats, f"{len(files)} files of {root}")


def changed_since_manifest(root: str | os.PathLike, manifest: str | os.PathLike) -> list[str]:
    """The paths (relative, ``/``-separated) of the files under ``root`` that differ from the list
    ``manifest`` (:func:`update_manifest`) holds: edited, added or removed since it was written,
    sorted. The manifest is left as it is (it is the reference); its stat cache is brought up to
    date, so a tree checked again is not read again."""
    root, manifest = Path(root), Path(manifest)
    cache, stats = _stat_cache(manifest), {}
    now = {entry["path"]: entry for entry in _tree_entries(root, cache, stats)}
    then = {entry["path"]: entry for entry in json.loads(manifest.read_text(encoding="utf-8"))["files"]}
    _save_stat_cache(manifest, cache, stats)
    return sorted(path for path in now.keys() | then.keys() if now.get(path) != then.get(path))


def _tree_entries(root: Path, cache: dict, stats: dict) -> list[dict]:
    """``{path, size, sha256}`` of every file under ``root`` the reader looks at, sorted by path
    (:func:`update_manifest`); hashes from ``cache`` where a file is unchanged, noted in ``stats``."""
    files = []
    for path in tree_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            st = path.stat()
        except FileNotFoundError:  # a broken link: listed, so that the reader's refusal is rerun when fixed
            files.append({"path": rel, "size": None, "sha256": f"broken link to {os.readlink(path)}"})
            continue
        if not stat.S_ISREG(st.st_mode):  # a named pipe, socket or device: reading it would block
            files.append({"path": rel, "size": None, "sha256": f"not a regular file ({stat.filemode(st.st_mode)})"})
            continue
        try:
            digest = _cached_sha256(path, rel, st, cache, stats)
        except OSError as exc:  # named: a read error (EIO) carries no file name of its own
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        files.append({"path": rel, "size": st.st_size, "sha256": digest})
    return sorted(files, key=lambda f: f["path"])


def _stat_cache(manifest: Path) -> dict:
    """``{manifest}.stat.json``: path -> [[size, mtime, ctime, inode], sha256] of the last run."""
    try:
        return json.loads(manifest.with_name(manifest.name + ".stat.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _cached_sha256(path: Path, key: str, st: os.stat_result, cache: dict, stats: dict) -> str:
    """sha256 of ``path``, from ``cache`` when its size, mtime, ctime and inode are unchanged; noted in ``stats``."""
    identity = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    digest = cache[key][1] if key in cache and cache[key][0] == identity else sha256_file(path)
    stats[key] = [identity, digest]
    return digest


def _write_manifest(manifest: Path, content: dict, cache: dict, stats: dict, what: str) -> bool:
    """Write ``content`` to ``manifest`` only when it differs from what is there (True then), and the stat cache."""
    from temvirus.io import write_json

    try:
        changed = json.loads(manifest.read_text(encoding="utf-8")) != content
    except (OSError, ValueError):
        changed = True
    if changed:
        write_json(manifest, content)
        log.info("%s: %s, changed since the last run", manifest, what)
    _save_stat_cache(manifest, cache, stats)
    return changed


def _save_stat_cache(manifest: Path, cache: dict, stats: dict) -> None:
    """Write ``stats`` as ``{manifest}.stat.json`` (:func:`_stat_cache`) where it differs from ``cache``."""
    from temvirus.io import write_json

    if stats != cache:
        write_json(manifest.with_name(manifest.name + ".stat.json"), stats)


def update_archive_manifest(archives: Sequence[str | os.PathLike], manifest: str | os.PathLike) -> bool:
    """Write the content manifest of the archive(s) of ``dataset.local.path``; True when it changed.

    ``manifest`` (JSON) lists each archive's path, size and sha256 (hashes reused as by
    :func:`update_manifest`) and is rewritten only when that list differs. The rule
    ``extract_local_dataset`` takes it as input: an archive replaced by another one with an
    older time stamp (a backup restored, ``cp -p``, ``rsync -t``) is extracted again, where
    Snakemake, comparing times only, would keep the results of the archive it replaced.
    """
    manifest = Path(manifest)
    cache, stats, files = _stat_cache(manifest), {}, []
    for archive in sorted(Path(a).resolve() for a in archives):
        st = archive.stat()
        files.append(
            {
                "path": str(archive),
                "size": st.st_size,
                "sha256": _cached_sha256(archive, str(archive), st, cache, stats),
            }
        )
    return _write_manifest(manifest, {"files": files}, cache, stats, f"{len(files)} archive(s)")
