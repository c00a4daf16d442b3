"""Leak measure: the audit's free-turn pass, on copies turned by any angle and on look-alikes.

What it measures
----------------
Every particle of a raw-layout dataset gives its 256x256 patch at 1 nm/px
(:func:`temvirus.patches.extract_image`). Within each class, every patch is scored as the audit's
third leak pass scores a test patch (:func:`temvirus.audit.leakage.turn_candidates`, then
:func:`temvirus.audit.leakage.free_turn_ncc`) against the patches of the class's other images:

* **look-alikes**: the pairs of images that ``--same-field`` does not list as one field re-imaged
  (the verified re-imaged pairs of the real crops by default): their largest |NCC| must stay under
  :data:`temvirus.audit.leakage.LEAK_TURNED_NCC`, where the pass fails a pair;
* **planted copies**: ``--planted`` patches drawn at random, each turned by a random angle (bicubic,
  half of them mirrored first) with noise of ``--noise`` of its standard deviation added, are scored
  against all patches, their source among them: the share whose source is in the pre-screen
  (recall), the |NCC| with it, and the turn found against the one made (degrees).

Prints the figures; ``--out`` writes them as JSON. Needs no GPU.

How to run::

    .venv/bin/python benchmarks/turned_leaks.py --data ../shared/real-tem/tem-virus-1nm-crops
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

from _common import OUT, REPO, machine_info, particle_patches, write_result  # noqa: E402

PERCENTILES = (50, 99, 99.9, 100)


def plant(patches: np.ndarray, count: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` patches turned by a random angle (half mirrored first, then turned as
    ``scipy.ndimage.rotate`` turns an array), noise added; returns (copies, source rows, (angle, mirrored))."""
    from scipy.ndimage import rotate

    generator = np.random.default_rng(seed)
    rows = generator.choice(len(patches), size=min(count, len(patches)), replace=False)
    angles, mirrored = generator.uniform(-180, 180, len(rows)), generator.random(len(rows)) < 0.5
    copies = []
    for row, angle, flip in zip(rows, angles, mirrored):
        source = patches[row].astype(np.float64)
        turned = rotate(source[:, ::-1] if flip else source, angle, reshape=False, order=3, mode="reflect")
        turned += generator.normal(0, noise * source.std(), source.shape)
        copies.append(np.clip(turned, 0, np.iinfo(patches.dtype).max).astype(patches.dtype))
    return np.stack(copies), rows, np.stack([angles, mirrored])


def main(argv=None) -> dict:
    from temvirus.audit.leakage import (
        LEAK_TURN_NEIGHBOURS,
        LEAK_TURNED_NCC,
        _standardised,
        free_turn_ncc,
        ring_spectra,
        turn_candidates,
    )
    from temvirus.cli import number_in_range  # argparse types with their ranges

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a raw-layout folder")
    parser.add_argument(
        "--same-field",
        default=str(REPO / "tests" / "data" / "overlap_verified_pairs.csv"),
        help="CSV of image pairs known to show one field (columns image_a, image_b), left out of the look-alikes",
    )
    parser.add_argument(
        "--planted", type=number_in_range(int, 1), default=60, help="turned copies planted (default 60)"
    )
    parser.add_argument(
        "--noise", type=number_in_range(float, 0), default=0.2, help="their noise, of each patch's std (default 0.2)"
    )
    parser.add_argument("--seed", type=number_in_range(int, 0), default=0)
    parser.add_argument(
        "--neighbours",
        type=number_in_range(int, 1),
        default=LEAK_TURN_NEIGHBOURS,
        help="pre-screen: patches scored per patch",
    )
    parser.add_argument("--out", default=str(OUT / "turned_leaks.json"), help="write the figures as JSON here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    table, patches = particle_patches(args.data)
    print(f"{len(table)} patches of {table.image_id.nunique()} images ({time.perf_counter() - started:.0f} s)")
    same = set()
    if Path(args.same_field).is_file():
        pairs = pd.read_csv(args.same_field, dtype=str)
        same = {frozenset(p) for p in zip(pairs.image_a, pairs.image_b)}
    spectra, (_, detail) = ring_spectra(patches), _standardised(patches)
    alike = []
    for _, rows in table.groupby("class"):
        index, images = rows.index.to_numpy(), rows.image_id.to_numpy()
        pairs = turn_candidates(spectra[index], images, spectra[index], images, args.neighbours)
        ncc = free_turn_ncc(patches[index], spectra[index], detail[index], spectra[index], pairs)[0]
        for (q, t), score in zip(pairs, ncc):
            if frozenset((images[q], images[t])) not in same:
                alike.append((images[q], images[t], abs(float(score))))
    alike = pd.DataFrame(alike, columns=["a", "b", "ncc"]).sort_values("ncc", ascending=False)
    copies, rows, (angles, mirrored) = plant(patches, args.planted, args.noise, args.seed)
    copy_spectra = ring_spectra(copies)
    names = np.array([f"copy{i}" for i in range(len(copies))])
    pairs = turn_candidates(copy_spectra, names, spectra, table.image_id.to_numpy(), args.neighbours)
    ncc, _, turn, flip = free_turn_ncc(copies, copy_spectra, detail, spectra, pairs)
    own = pairs[:, 1] == rows[pairs[:, 0]]
    back = np.where(mirrored[pairs[own, 0]] > 0, angles[pairs[own, 0]], -angles[pairs[own, 0]])
    result = {
        "data": args.data,
        "neighbours": args.neighbours,
        "patches": len(table),
        "look_alike_pairs": len(alike),
        "look_alike_abs_ncc_percentiles": dict(
            zip(map(str, PERCENTILES), np.percentile(alike.ncc, PERCENTILES).round(3))
        ),
        "highest_look_alikes": [f"{a} ~ {b}: {n:.3f}" for a, b, n in alike.head(5).itertuples(index=False)],
        "fails_at": LEAK_TURNED_NCC,
        "look_alikes_failed": int((alike.ncc >= LEAK_TURNED_NCC).sum()),
        "planted": len(copies),
        "planted_with_source_in_prescreen": int(own.sum()),
        "planted_abs_ncc_min_median": [
            round(float(np.abs(ncc[own]).min()), 3),
            round(float(np.median(np.abs(ncc[own]))), 3),
        ],
        "planted_failed": int((np.abs(ncc[own]) >= LEAK_TURNED_NCC).sum()),
        "turn_error_deg_max": round(float(np.abs((turn[own] - back + 180) % 360 - 180).max()), 1),
        "mirror_right": int((flip[own] == (mirrored[pairs[own, 0]] > 0)).sum()),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine_info(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    print(f"wrote {write_result(args.out, result)}")
    return result


if __name__ == "__main__":
    main()
