"""Leak measure: how well the audit's patch similarity separates same-particle pairs from look-alikes.

What it measures
----------------
Every particle of a raw-layout dataset gives its 256x256 patch at 1 nm/px
(:func:`temvirus.patches.extract_image`). Pairs of patches of two *different* images are scored
with the audit's measure (:func:`temvirus.audit.leakage.max_ncc`: max normalised cross-correlation of the
central 128 nm over +-16 nm shifts and the 8 flips/rotations, at 2 nm/px):

* **candidates**: for every patch, its :data:`temvirus.audit.leakage.LEAK_NEIGHBOURS` nearest patches of
  other images of the same class in the pre-screen embedding (what the audit scores);
* **same-field image pairs** (ground truth): with ``--truth`` (the synthetic generator's
  truth.csv) a planted re-image and its source, related by the recorded offset; without it
  (real data), image pairs where at least :data:`MIN_AGREEING` candidate pairs of distinct
  particles with NCC >= :data:`LOOSE_NCC` agree on one field offset within :data:`TOLERANCE_NM`
  (two particles at the same relative place in two fields: the same field); ``--pair A,B``
  adds known pairs, whose offset is found the same way over all their patch pairs;
* **positives**: every patch pair of a same-field image pair whose particle positions differ by
  that pair's field offset within :data:`TOLERANCE_NM` (the same particle), scored exhaustively;
  the **pre-screen recall** is the share of them among the candidates;
* **negatives**: candidate pairs of images that are not a same-field pair (the most similar
  look-alikes of each patch: same class, other fields).

Prints the distributions (percentiles), the pre-screen recall, the largest negatives and
smallest positives (patch ids, to look at), and the margin at the audit's threshold
:data:`temvirus.audit.leakage.LEAK_NCC`; ``--out`` writes them as JSON.

How to run::

    .venv/bin/python benchmarks/leak_separation.py --data ../shared/real-tem/tem-virus-1nm-crops \\
        --pair 5957,5960 --pair 5980,5981 --pair A1-160k-071019_4,A1-93k-071019_3
    .venv/bin/python benchmarks/leak_separation.py --data benchmarks/out/data/synthetic-s0.25-b1/raw \\
        --truth benchmarks/out/data/synthetic-s0.25-b1/truth.csv
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import particle_patches  # noqa: E402

#: candidate pairs at or above this NCC vote for their image pair's field offset
LOOSE_NCC = 0.5
#: a same-field image pair needs this many agreeing candidate pairs of distinct particles
MIN_AGREEING = 2
#: two offsets agree (and a patch pair is the same particle) within this distance, nm
TOLERANCE_NM = 10.0
PERCENTILES = (0, 1, 5, 25, 50, 75, 95, 99, 100)


def candidates(table: pd.DataFrame, embedded: np.ndarray, std: np.ndarray) -> pd.DataFrame:
    """The audit's pre-screen within each class (every patch against the others), scored."""
    from temvirus.audit.leakage import candidate_pairs

    found = []
    for _, rows in table.groupby("class"):
        idx = rows.index.to_numpy()
        pairs = candidate_pairs(embedded[idx], rows.image_id.to_numpy(), embedded[idx], rows.image_id.to_numpy())
        pairs = idx[pairs]
        pairs = np.unique(np.sort(pairs, axis=1), axis=0)  # a ~ b and b ~ a once
        found.append(pairs)
    pairs = np.concatenate(found)
    return score(table, std, pairs)


def score(table: pd.DataFrame, std: np.ndarray, pairs: np.ndarray) -> pd.DataFrame:
    from temvirus.audit.leakage import LEAK_BIN, max_ncc

    ncc, shift, transform = max_ncc(std, std, pairs=pairs)
    a, b = table.iloc[pairs[:, 0]].reset_index(drop=True), table.iloc[pairs[:, 1]].reset_index(drop=True)
    return pd.DataFrame(
        {
            "a": pairs[:, 0],
            "b": pairs[:, 1],
            "image_a": a.image_id,
            "image_b": b.image_id,
            "class": a["class"],
            "ncc": ncc,
            "transform": transform,
            # b's centre + the shift is a's centre: the field offset b - a, in nm (valid for transform 0)
            "dx_nm": b.x_nm - a.x_nm + LEAK_BIN * shift[:, 1],
            "dy_nm": b.y_nm - a.y_nm + LEAK_BIN * shift[:, 0],
        }
    )


def consensus_offset(pairs: pd.DataFrame) -> tuple[np.ndarray, int] | None:
    """The field offset most pairs (NCC >= LOOSE_NCC, identity transform) agree on, and how many of distinct particles."""
    good = pairs[(pairs.ncc >= LOOSE_NCC) & (pairs["transform"] == 0)]
    if len(good) < MIN_AGREEING:
        return None
    offsets = good[["dx_nm", "dy_nm"]].to_numpy()
    near = np.linalg.norm(offsets[:, None] - offsets[None], axis=2) <= TOLERANCE_NM
    best = near.sum(axis=1).argmax()
    members = good[near[best]]
    agreeing = min(members.a.nunique(), members.b.nunique())
    return members[["dx_nm", "dy_nm"]].median().to_numpy(), agreeing


def same_field_pairs(table, std, cands, truth: pd.DataFrame | None, known: list[tuple[str, str]]) -> dict:
    """``{(image_a, image_b): offset b - a (nm)}`` of the same-field image pairs (see the module docstring)."""
    fields = {}
    if truth is not None:
        for row in truth.itertuples():  # planted: source position = planted position + offset
            fields[(row.image_id, row.source_image_id)] = np.array([row.offset_x_nm, row.offset_y_nm])
        return fields
    for (ia, ib), rows in cands.groupby(["image_a", "image_b"]):
        found = consensus_offset(rows)
        if found is not None and found[1] >= MIN_AGREEING:
            fields[(ia, ib)] = found[0]
    for ia, ib in known:
        if (ia, ib) in fields or (ib, ia) in fields:
            continue
        found = consensus_offset(all_pairs(table, std, ia, ib))
        if found is None:
            print(f"  known pair {ia}, {ib}: no agreeing patch pairs (not used)")
            continue
        fields[(ia, ib)] = found[0]
    return fields


def all_pairs(table, std, ia: str, ib: str) -> pd.DataFrame:
    ra, rb = table.index[table.image_id == ia].to_numpy(), table.index[table.image_id == ib].to_numpy()
    grid = np.stack(np.meshgrid(ra, rb, indexing="ij"), axis=-1).reshape(-1, 2)
    return score(table, std, grid)


def positives(table, std, fields: dict) -> pd.DataFrame:
    out = []
    for (ia, ib), offset in fields.items():
        pairs = all_pairs(table, std, ia, ib)
        a, b = table.loc[pairs.a], table.loc[pairs.b]
        geometric = np.hypot(
            b.x_nm.to_numpy() - a.x_nm.to_numpy() - offset[0], b.y_nm.to_numpy() - a.y_nm.to_numpy() - offset[1]
        )
        out.append(pairs[geometric <= TOLERANCE_NM])
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["a", "b", "ncc"])


def describe(values: np.ndarray) -> dict:
    return {
        "n": int(len(values)),
        **({f"p{p}": round(float(np.percentile(values, p)), 4) for p in PERCENTILES} if len(values) else {}),
    }


def main(argv=None) -> dict:
    from temvirus.audit.leakage import LEAK_NCC, _standardised

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a raw-layout folder")
    parser.add_argument("--truth", help="the synthetic generator's truth.csv (planted re-images)")
    parser.add_argument("--pair", action="append", default=[], help="a known same-field image pair A,B (real data)")
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--cache", help="keep the patches and scored candidates here (reused when present)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cache = Path(args.cache) if args.cache else None
    if cache and (cache / "candidates.csv").is_file():
        table, std = pd.read_csv(cache / "patches.csv", dtype={"image_id": str}), np.load(cache / "standardised.npy")
        cands = pd.read_csv(cache / "candidates.csv", dtype={"image_a": str, "image_b": str})
    else:
        table, patches = particle_patches(args.data)
        embedded, std = _standardised(patches)
        print(
            f"{len(table)} patches of {table.image_id.nunique()} images ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        cands = candidates(table, embedded, std)
        if cache:
            cache.mkdir(parents=True, exist_ok=True)
            table.to_csv(cache / "patches.csv", index=False)
            np.save(cache / "standardised.npy", std)
            cands.to_csv(cache / "candidates.csv", index=False)
    print(f"{len(cands)} candidate pairs scored ({time.perf_counter() - started:.0f} s)", flush=True)
    truth = pd.read_csv(args.truth, dtype={"image_id": str, "source_image_id": str}) if args.truth else None
    known = [tuple(p.split(",")) for p in args.pair]
    fields = same_field_pairs(table, std, cands, truth, known)
    pos = positives(table, std, fields)
    field_set = {frozenset(k) for k in fields}
    neg = cands[[frozenset((a, b)) not in field_set for a, b in zip(cands.image_a, cands.image_b)]]
    cand_keys = set(zip(np.minimum(cands.a, cands.b), np.maximum(cands.a, cands.b)))
    recalled = np.array([(min(a, b), max(a, b)) in cand_keys for a, b in zip(pos.a, pos.b)])
    margin = float(pos.ncc.min() - neg.ncc.max()) if len(pos) and len(neg) else None
    result = {
        "data": args.data,
        "patches": len(table),
        "images": int(table.image_id.nunique()),
        "same_field_image_pairs": sorted(
            f"{a} ~ {b} (offset {o[0]:.0f}, {o[1]:.0f} nm)" for (a, b), o in fields.items()
        ),
        "positives": describe(pos.ncc.to_numpy()),
        "negatives": describe(neg.ncc.to_numpy()),
        "prescreen_recall": float(recalled.mean()) if len(pos) else None,
        "threshold": LEAK_NCC,
        "positives_below": int((pos.ncc < LEAK_NCC).sum()),
        "negatives_at_or_above": int((neg.ncc >= LEAK_NCC).sum()),
        "margin_min_positive_minus_max_negative": margin,
        "lowest_positives": [
            f"{table.image_id[a]}#{a} ~ {table.image_id[b]}#{b}: {n:.3f}"
            for a, b, n in pos.nsmallest(8, "ncc")[["a", "b", "ncc"]].itertuples(index=False)
        ],
        "highest_negatives": [
            f"{table.image_id[a]}#{a} ~ {table.image_id[b]}#{b}: {n:.3f}"
            for a, b, n in neg.nlargest(12, "ncc")[["a", "b", "ncc"]].itertuples(index=False)
        ],
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
