"""Table 1 of the paper, regenerated: images, particles and patches per class and split.

One row per class and subset (``train``, ``validation``, ``test``, ``total``) for the classes
of the data, plus ``all`` rows summing them. Beside the regenerated numbers: the paper's
(``paper_images``, ``paper_particles``; the paper gives no patch counts per class), the
difference in images, and how the split relates to the given folder split (``given_images``:
kept images in that folder; ``agreement``: the fraction of the subset's images whose folder
is the same subset).
"""

from __future__ import annotations

import logging

import pandas as pd

from temvirus.classes import load_table1
from temvirus.io import write_csv, write_text
from temvirus.split import SUBSETS, read_table

log = logging.getLogger(__name__)

#: subset -> suffix of the paper's Table 1 columns
PAPER_SUFFIX = {"train": "train", "validation": "val", "test": "test", "total": "total"}
TABLE1_COLUMNS = [
    "class",
    "subset",
    "images",
    "particles",
    "patches",
    "paper_images",
    "paper_particles",
    "images_diff",
    "given_images",
    "agreement",
]


def table1(split: pd.DataFrame, patches: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Table 1 from a split table, a patch table and the paper's table (indexed by class)."""
    classes = sorted(set(split["class"]))
    unknown = sorted(set(classes) - set(paper.index))
    if unknown:
        raise ValueError(f"classes {unknown} are not in the paper's Table 1")
    rows = []
    for cls in [*classes, "all"]:
        images = split if cls == "all" else split[split["class"] == cls]
        members = patches if cls == "all" else patches[patches["class"] == cls]
        reference = paper.loc[classes].sum() if cls == "all" else paper.loc[cls]
        for subset in [*SUBSETS, "total"]:
            chosen = images if subset == "total" else images[images["split"] == subset]
            folder = images if subset == "total" else images[images["folder_split"] == subset]
            n_patches = len(members) if subset == "total" else int((members["subset"] == subset).sum())
            same = chosen["split"] == chosen["folder_split"]
            rows.append(
                {
                    "class": cls,
                    "subset": subset,
                    "images": len(chosen),
                    "particles": int(chosen["n_particles"].sum()),
                    "patches": n_patches,
                    "paper_images": int(reference[f"images_{PAPER_SUFFIX[subset]}"]),
                    "paper_particles": int(reference[f"particles_{PAPER_SUFFIX[subset]}"]),
                    "images_diff": len(chosen) - int(reference[f"images_{PAPER_SUFFIX[subset]}"]),
                    "given_images": len(folder),
                    "agreement": round(float(same.mean()), 4) if len(chosen) else float("nan"),
                }
            )
    return pd.DataFrame(rows, columns=TABLE1_COLUMNS)


def table1_markdown(table: pd.DataFrame, split_name: str) -> str:
    """Table 1 as Markdown, one row per class: each cell ``ours (paper)``."""
    wide = table.set_index(["class", "subset"])
    order = [*SUBSETS, "total"]
    header = (
        ["class"]
        + [f"images {s}" for s in order]
        + [f"particles {s}" for s in order]
        + [f"patches {s}" for s in order]
        + ["agreement with given"]
    )
    lines = [
        f"Table 1, regenerated ({split_name} split): ours (paper). Patches are ours only; "
        "agreement is the fraction of images whose split equals their folder split.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for cls in dict.fromkeys(table["class"]):
        cells = [cls]
        for kind in ("images", "particles"):
            cells += [f"{wide.loc[(cls, s), kind]} ({wide.loc[(cls, s), f'paper_{kind}']})" for s in order]
        cells += [str(wide.loc[(cls, s), "patches"]) for s in order]
        cells.append(f"{wide.loc[(cls, 'total'), 'agreement']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table1(split_csv, patches_csv, paper_csv, out_csv, out_md, split_name: str = "representative") -> None:
    """Rule ``table1``: write Table 1 of the ``split_name`` split as CSV and Markdown."""
    table = table1(read_table(split_csv), pd.read_csv(patches_csv, dtype={"image_id": str}), load_table1(paper_csv))
    per_class = table[(table["subset"] != "total") & (table["class"] != "all")]
    mismatched = sorted(set(per_class.loc[per_class.images_diff != 0, "class"]))
    log.info(
        "Table 1: image counts equal the paper's for %d of %d classes%s",
        table["class"].nunique() - 1 - len(mismatched),
        table["class"].nunique() - 1,
        f" (differ: {mismatched})" if mismatched else "",
    )
    write_csv(out_csv, table)
    write_text(out_md, table1_markdown(table, split_name))
