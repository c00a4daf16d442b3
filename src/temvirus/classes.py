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


def load_table1(path: str | Path) -> pd.DataFrame:
    """The paper's Table 1, indexed by canonical class name."""
    table = pd.read_csv(path).set_index("virus")
    unknown = sorted(set(table.index) - set(CLASSES))
    if unknown:
        raise ValueError(f"{path}: unknown classes {unknown}")
    return table
