"""The 22 virus classes of the dataset: canonical names, folder names, Table 1 facts.

Canonical names are those of the paper's Table 1 (``resources/paper/table1_dataset.csv``).
Folder names are those of the published raw dataset where known (e.g. ``Rift Valley``,
``Nipah virus``); the reader also accepts any folder whose name normalises to a canonical
name (case, spaces and a trailing "virus" ignored), and stops on anything else.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import pandas as pd

#: canonical class name -> folder name in the published raw layout
FOLDER_NAMES: dict[str, str] = {
    "Adenovirus": "Adenovirus",
    "Astrovirus": "Astrovirus",
    "CCHF": "CCHF",
    "Cowpox": "Cowpox",
    "Dengue": "Dengue",
    "Ebola": "Ebola",
    "Guanarito": "Guanarito",
    "Influenza": "Influenza",
    "Lassa": "Lassa",
    "LCM": "LCM",
    "Machupo": "Machupo",
    "Marburg": "Marburg",
    "Nipah": "Nipah virus",
    "Norovirus": "Norovirus",
    "Orf": "Orf",
    "Papilloma": "Papilloma",
    "Pseudocowpox": "Pseudocowpox",
    "RiftValley": "Rift Valley",
    "Rotavirus": "Rotavirus",
    "Sapovirus": "Sapovirus",
    "TBE": "TBE",
    "WestNile": "West Nile",
}
CLASSES: tuple[str, ...] = tuple(FOLDER_NAMES)


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_NORMALISED = {_normalise(c): c for c in CLASSES}


def class_from_folder(folder: str) -> str | None:
    """Canonical class for a folder name, or None if it names no known class."""
    key = _normalise(folder)
    if key in _BY_NORMALISED:
        return _BY_NORMALISED[key]
    if key.endswith("virus"):
        return _BY_NORMALISED.get(key[: -len("virus")])
    return None


def paper_file(name: str) -> Path:
    """A file of the paper's data shipped with the package, e.g. ``table1_dataset.csv``.

    Package data ``temvirus/paper/`` (in the checkout a link to ``resources/paper/``, the
    workflow's inputs), found with importlib.resources, so that an installed package finds it
    too. Raises FileNotFoundError naming the file when it is not there.
    """
    path = Path(str(files("temvirus") / "paper" / name))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file among the package's paper data")
    return path


#: Table 1's subsets (column suffixes) and the counts given for each of them and in total
TABLE1_SUBSETS = ("train", "val", "test")
TABLE1_COUNTS = tuple(f"{kind}_{s}" for kind in ("images", "particles") for s in (*TABLE1_SUBSETS, "total"))
#: the columns of the paper's Table 1 that the package reads (others are kept as read)
TABLE1_COLUMNS = ("virus", "avg_particle_size_nm", *TABLE1_COUNTS)


def load_table1(path: str | Path) -> pd.DataFrame:
    """The paper's Table 1 (CSV), indexed by canonical class name, counts as int, sizes as float.

    Raises ValueError naming the file, and the class and column where one is at fault, when
    the file is not a CSV table, lacks a column of :data:`TABLE1_COLUMNS`, has a class that is
    unknown or repeated or lacks one of the 22, has a count that is not a positive integer or a
    size (nm) that is not a positive number, a total that is not the sum of its subsets, or
    fewer particles than images in a subset (every image of a split holds a particle). OSError
    when the file cannot be opened.
    """
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except ValueError as exc:  # pandas' EmptyDataError and ParserError, UnicodeDecodeError
        raise ValueError(f"{path}: not a CSV table: {exc}") from None
    missing = [c for c in TABLE1_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} missing")
    names = table["virus"].str.strip()
    unknown = sorted(set(names) - set(CLASSES))
    repeated = sorted(set(names[names.duplicated()]))
    absent = [c for c in CLASSES if c not in set(names)]
    for problem, found in (("unknown", unknown), ("repeated", repeated), ("missing", absent)):
        if found:
            raise ValueError(f"{path}: {problem} classes {found} in column virus")
    table = table.assign(virus=names).set_index("virus")
    for cls, row in table.iterrows():
        where = f"{path}: class {cls}, column"
        for column in TABLE1_COUNTS:
            if not re.fullmatch(r"\s*\d+\s*", row[column]) or int(row[column]) < 1:
                raise ValueError(f"{where} {column}: {row[column]!r} is not a positive integer")
        try:
            size = float(row["avg_particle_size_nm"])
        except ValueError:
            size = float("nan")
        if not 0 < size < float("inf"):
            raise ValueError(
                f"{where} avg_particle_size_nm: {row['avg_particle_size_nm']!r} is not a positive size (nm)"
            )
    table = table.astype({c: int for c in TABLE1_COUNTS} | {"avg_particle_size_nm": float})
    for cls, row in table.iterrows():
        for kind in ("images", "particles"):
            parts = sum(row[f"{kind}_{s}"] for s in TABLE1_SUBSETS)
            if parts != row[f"{kind}_total"]:
                raise ValueError(
                    f"{path}: class {cls}, column {kind}_total: {row[f'{kind}_total']} is not the sum {parts} of its subsets"
                )
        for s in (*TABLE1_SUBSETS, "total"):
            if row[f"particles_{s}"] < row[f"images_{s}"]:
                raise ValueError(
                    f"{path}: class {cls}, column particles_{s}: {row[f'particles_{s}']} particles for "
                    f"{row[f'images_{s}']} images (images_{s}); every image of a split holds a particle"
                )
    return table
