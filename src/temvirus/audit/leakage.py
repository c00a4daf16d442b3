"""Domain checks of the audit: no leakage between the training, validation and test sets.

Split integrity (no image, overlap group or raw file in two sets), patches in their image's
set, exact and near-duplicate patches across sets, the same particle in a training patch and
a test/validation patch (leaks), and Table 1's counts recounted. Part of :mod:`temvirus.audit`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from temvirus.audit.lineage import RESULTS_PREFIX, Check, Folder
from temvirus.split import SUBSETS

#: patches per block of work in the duplicate and leak checks: a block's numpy temporaries (a few MiB)
#: stay below glibc's mmap threshold, so they are reused, not mapped and zeroed anew for each block
#: (blocks of 256-512 took about 3x the time, most of it in the kernel: docs/benchmarks.md)
LEAK_CHUNK = 32
#: near-duplicate patches: perceptual hashes at most this many bits apart (of 64)
NEAR_HAMMING = 4
#: at most this many near-duplicate pairs are listed per pair of sets
MAX_LISTED = 200


# --- split and patch checks ------------------------------------------------------------------


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"image_id": str, "overlap_group": str, "patch_id": str, "source_patch_id": str})


def check_splits(folder: Folder) -> Check:
    from temvirus.split import METHODS, assign_split

    check = Check("splits", "Split integrity: no image, overlap group or raw file in two sets")
    tables = [
        p
        for m in METHODS
        if (p := folder.local(f"results/curation/split_{m}.csv")).is_file() and not folder.left_over(p)
    ]
    if not tables:
        check.skipped = f"no results/curation/split_{{{','.join(METHODS)}}}.csv (curation stage not run)"
        return check
    kept_path = folder.local("results/curation/images_kept.csv")
    kept = _read(kept_path).set_index("image_id") if kept_path.is_file() else None
    raw_path = folder.local("results/raw/images.csv")
    raw = _read(raw_path).set_index("image_id") if raw_path.is_file() else None
    sizes = []
    for path in tables:
        name = Path(RESULTS_PREFIX, path.relative_to(folder.root)).as_posix()
        method = path.stem.removeprefix("split_")
        table = _read(path)
        rows_per_image = table.image_id.value_counts()
        for image in sorted(rows_per_image.index[rows_per_image > 1]):
            check.fail("image listed twice", name, f"image {image}: {sorted(table.subset[table.image_id == image])}")
        for group, sets in table.groupby("overlap_group")["subset"].unique().items():
            if len(sets) > 1:
                members = sorted(table.image_id[table.overlap_group == group])
                check.fail("overlap group in two sets", name, f"group {group} ({', '.join(members)}): {sorted(sets)}")
        if raw is not None:
            digests = raw["sha256"].reindex(table.image_id).to_numpy()
            for digest, sets in table.assign(sha256=digests).groupby("sha256")["subset"].unique().items():
                if len(sets) > 1:
                    names = sorted(table.image_id[digests == digest])
                    check.fail(
                        "same raw file in two sets", name, f"images {', '.join(names)} have equal bytes: {sorted(sets)}"
                    )
        if kept is not None:
            known = table.image_id.isin(kept.index)
            for image in table.image_id[~known]:
                check.fail("unknown image", name, f"image {image} is not in images_kept.csv")
            rows = kept.reindex(table.image_id[known])
            for image in rows.index[~rows["kept"].astype(bool)]:
                check.fail("removed image used", name, f"image {image} was removed by overlap removal")
            with warnings.catch_warnings():  # images without particles: left out, as by the rule
                warnings.simplefilter("ignore")
                expected = assign_split(kept.reset_index(), method).set_index("image_id")["subset"]
            found = table.set_index("image_id")["subset"]
            for image in sorted(set(expected.index) | set(found.index)):
                want, got = expected.get(image), found.get(image)
                if want != got:
                    check.fail(
                        "split differs from its rule", name, f"image {image}: in {got}, the {method} rule gives {want}"
                    )
        sizes.append(f"{path.name}: {len(table)} images, {table.overlap_group.nunique()} overlap groups")
    check.covered = "; ".join(sizes) + ("" if kept is not None else " (images_kept.csv absent: rule not re-derived)")
    return check


def _subset_arrays(pdir: Path) -> dict[str, np.ndarray]:
    return {s: np.load(pdir / f"{s}.npy", mmap_mode="r") for s in SUBSETS if (pdir / f"{s}.npy").is_file()}


def _patch_dirs(folder: Folder, check: Check) -> list[Path]:
    """The patch folders of the results (one per split method); marks ``check`` skipped if none."""
    dirs = sorted(p.parent for p in folder.local("results/patches").glob("*/patches.csv") if not folder.left_over(p))
    if not dirs:
        check.skipped = "no results/patches/*/patches.csv (patches stage not run)"
    return dirs


def check_patches(folder: Folder) -> Check:
    from temvirus.augment import apply_transform

    check = Check("patches", "Every patch comes from an image of the set its split table names")
    dirs = _patch_dirs(folder, check)
    if not dirs:
        return check
    n = 0
    for pdir in dirs:
        split_path = folder.local(f"results/curation/split_{pdir.name}.csv")
        name = Path(RESULTS_PREFIX, (pdir / "patches.csv").relative_to(folder.root)).as_posix()
        patches = _read(pdir / "patches.csv")
        n += len(patches)
        if split_path.is_file():
            split = _read(split_path).set_index("image_id")
            want = split["subset"].reindex(patches.image_id).to_numpy()
            for row in patches[want != patches.subset.to_numpy()].itertuples():
                where = split["subset"].get(row.image_id, "absent")
                check.fail(
                    "patch in wrong set",
                    name,
                    f"patch {row.patch_id} ({row.subset}) of image {row.image_id} (split table: {where})",
                )
        else:
            check.fail("no split table", name, f"{split_path.name} is missing")
        arrays = _subset_arrays(pdir)
        for subset, array in arrays.items():
            rows = patches[patches.subset == subset]
            if len(array) != len(rows) or sorted(rows["index"]) != list(range(len(rows))):
                check.fail(
                    "array/table mismatch", name, f"{subset}.npy has {len(array)} rows, table {len(rows)} patches"
                )
        csv, npy = pdir / "train_augmented.csv", pdir / "train_augmented.npy"
        if csv.is_file() and npy.is_file() and "train" in arrays:
            aug_name = Path(RESULTS_PREFIX, csv.relative_to(folder.root)).as_posix()
            aug, aug_arr = _read(csv), np.load(npy, mmap_mode="r")
            train = patches[patches.subset == "train"].set_index("patch_id")
            for row in aug.itertuples():
                if row.source_patch_id not in train.index:
                    check.fail(
                        "augmented from a non-training patch",
                        aug_name,
                        f"row {row.index}: source {row.source_patch_id}",
                    )
                elif not np.array_equal(
                    aug_arr[row.index],
                    apply_transform(arrays["train"][train.at[row.source_patch_id, "index"]], row.transform),
                ):
                    check.fail(
                        "augmented patch differs from its source",
                        aug_name,
                        f"row {row.index}: not {row.transform} of {row.source_patch_id}",
                    )
    check.covered = f"{n} patches in {len(dirs)} patch sets, with their arrays and augmented training sets"
    return check


def patch_hashes(array: np.ndarray, chunk: int = LEAK_CHUNK) -> tuple[list[str], np.ndarray]:
    """Per patch: sha256 of its bytes, and a 64-bit perceptual hash (uint64).

    The perceptual hash: the patch averaged down to 32x32, its 2-D DCT, and one bit per
    coefficient of the lowest 8x8 frequencies, set where it exceeds their median.
    """
    from scipy.fft import dctn

    exact, phash = [], []
    n, h, w = array.shape
    for start in range(0, n, chunk):
        block = np.asarray(array[start : start + chunk])
        exact.extend(hashlib.sha256(p.tobytes()).hexdigest() for p in block)
        small = block[:, : h // 32 * 32, : w // 32 * 32].astype(np.float64)
        small = small.reshape(len(block), 32, h // 32, 32, w // 32).mean(axis=(2, 4))
        low = dctn(small, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(block), 64)
        bits = low > np.median(low[:, 1:], axis=1, keepdims=True)
        phash.append(np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64))
    return exact, np.concatenate(phash) if phash else np.zeros(0, np.uint64)


def check_duplicates(folder: Folder, max_hamming: int = NEAR_HAMMING) -> Check:
    check = Check("duplicates", f"Patches repeated across sets (exact; near: <= {max_hamming} of 64 hash bits)")
    dirs = _patch_dirs(folder, check)
    if not dirs:
        return check
    n = 0
    for pdir in dirs:
        patches = _read(pdir / "patches.csv")
        hashes = {}
        for subset, array in _subset_arrays(pdir).items():
            ids = patches[patches.subset == subset].sort_values("index").patch_id.to_numpy()
            if len(ids) == len(array):
                hashes[subset] = (ids, *patch_hashes(array))
                n += len(ids)
        for i, a in enumerate(SUBSETS):
            for b in SUBSETS[i + 1 :]:
                if a not in hashes or b not in hashes:
                    continue
                (ids_a, exact_a, ph_a), (ids_b, exact_b, ph_b) = hashes[a], hashes[b]
                where = f"results/patches/{pdir.name}"
                first = dict(zip(exact_a, ids_a))
                for digest, pid in zip(exact_b, ids_b):
                    if digest in first:
                        check.fail("identical patches", where, f"{a} {first[digest]} == {b} {pid}")
                pairs = 0
                for start in range(0, len(ph_a), 1024):
                    dist = np.bitwise_count(ph_a[start : start + 1024, None] ^ ph_b[None, :])
                    for r, c in zip(*np.nonzero(dist <= max_hamming)):
                        pairs += 1
                        if pairs <= MAX_LISTED:
                            check.inform(
                                "near-duplicate",
                                where,
                                f"{a} {ids_a[start + r]} ~ {b} {ids_b[c]} ({int(dist[r, c])} bits)",
                            )
                if pairs > MAX_LISTED:
                    check.inform("near-duplicates not listed", where, f"{pairs - MAX_LISTED} more {a}/{b} pairs")
    check.covered = f"{n} patches hashed, {len(dirs)} patch sets"
    return check


# --- leaks: the same particle in a training patch and a test/validation patch ----------------

#: patches are averaged in 2x2 blocks (2 nm/px) before they are compared
LEAK_BIN = 2
#: side of the compared central template, px at 2 nm/px (128 nm: the particle and its surroundings)
LEAK_TEMPLATE = 64
#: shifts searched, px at 2 nm/px each way (+-16 nm: two annotations of one particle differ by less)
LEAK_SHIFT = 8
#: the band compared: difference of Gaussians of these sigmas, px at 2 nm/px (structure of ~3-16 nm)
LEAK_BAND = (0.7, 4.0)
#: no-data areas (padding) are widened by this many px at 2 nm/px before they are left out
LEAK_NODATA_MARGIN = 4
#: side of the pre-screen embedding (the standardised central 160 nm averaged to 8x8: 20 nm cells)
LEAK_EMBED = 8
#: training patches of other images scored exactly per test/validation patch (its nearest in the embedding)
LEAK_NEIGHBOURS = 20
#: a max NCC at or above this is the same particle (chosen on real and synthetic data, docs/lineage.md)
LEAK_NCC = 0.85
#: a pair within this margin above the threshold ``t`` (``audit.leak_ncc``) fails only if its particle's
#: field agrees too (:func:`leak_decision`): its surroundings correlate at ``LEAK_CONTEXT_NCC``, or
#: another particle of the same two images matches at ``t - LEAK_CONTEXT_MARGIN`` or above at the
#: same distance from it (``LEAK_FIELD_TOLERANCE``). Alike icosahedral particles of different fields
#: reach 0.87-0.88 on the real crops, one particle each, in surroundings that differ (docs/lineage.md)
LEAK_CONTEXT_MARGIN = 0.05
LEAK_CONTEXT_NCC = 0.5
#: two particles' distances agree within this many nm, or this fraction of the distance (a re-image's
#: recorded pixel size may be a few percent off)
LEAK_FIELD_TOLERANCE = (20.0, 0.05)
#: the surroundings are compared at 4 nm/px in a band of 4-16 nm (difference of Gaussians of 1 and
#: 4 px), over the whole 256 nm patch outside its central 128 nm (the compared template's area)
LEAK_CONTEXT_BIN = 4
LEAK_CONTEXT_BAND = (1.0, 4.0)
LEAK_CONTEXT_INNER = 128
#: fewer compared pixels than this (at 4 nm/px): the surroundings are unknown (padding)
LEAK_CONTEXT_MIN_PX = 50
#: columns of the file of accepted leaks (``audit.accepted_leaks``)
ACCEPTED_COLUMNS = ["method", "patch_id", "train_patch_id", "reason"]
#: old names of columns of that file, refused with a hint: the new name
ACCEPTED_RENAMED = {"split": "method"}
D4 = [(k, flip) for flip in (False, True) for k in range(4)]
#: the transforms of D4 compared at ``LEAK_NCC``: the identity only. Re-imaged particles matched
#: untransformed (real crops); the 8 transforms let alike particles match (synthetic Rotavirus 0.867 in the
#: default run, filaments 0.869), and the audit compares unaugmented patches (docs/lineage.md)
LEAK_TRANSFORMS = D4[:1]
#: the other 7 (a copy stored mirrored or turned by 90 degrees), compared in a pass of their own
LEAK_TURNED = D4[1:]
#: ... where a pair fails at this |NCC| (copies score ~1; the most alike particles of different fields,
#: turned: synthetic default run 0.860, real crops 0.893; docs/lineage.md)
LEAK_TURNED_NCC = 0.95
#: the free-turn pass (a copy turned by any angle, mirrored or not; :func:`free_turn_ncc`), failing at
#: ``LEAK_TURNED_NCC`` too: rings of the central 160 nm sampled at these radii (px at 2 nm/px) ...
LEAK_POLAR_RADII = tuple(range(3, 39, 2))
#: ... every this many degrees (the turn is found to half of it) ...
LEAK_POLAR_STEP_DEG = 1
#: ... and described for the pre-screen by the magnitudes of their first angular Fourier orders (unchanged by
#: a turn, a mirror image or an inverted contrast), averaged over ``LEAK_POLAR_BANDS`` bands of rings
LEAK_POLAR_ORDERS = 9
LEAK_POLAR_BANDS = 6
#: training patches scored per test/validation patch in that pass, by each of its two pre-screens: a turned copy
#: is its source's nearest (60 of 60 planted in the default run's validation patches, turned and mirrored at
#: random; shifted by up to 10 nm too, 50 of 60 with 3, 52 with 5 or 10: docs/lineage.md)
LEAK_TURN_NEIGHBOURS = 3
#: pairs of that pass at or above this |NCC| are scored again at the best turn plus each of these (degrees)
LEAK_TURN_REFINE_FROM = 0.8
LEAK_TURN_REFINE_DEG = (-1.5, -1.0, -0.5, 0.5, 1.0, 1.5)


def transform_name(transform: tuple[int, bool]) -> str:
    """``(k, flip)`` of :data:`D4` in words: ``identity``, ``turned 90°``, ``mirrored, turned 180°``..."""
    k, flip = transform
    words = (["mirrored"] if flip else []) + ([f"turned {90 * k}°"] if k else [])
    return ", ".join(words) or "identity"


def _standardised(patches: np.ndarray, chunk: int = LEAK_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings (n, LEAK_EMBED**2), detail (n, 80, 80) float32)`` of the central 160 nm of each patch.

    The patch is averaged in ``LEAK_BIN`` blocks (2 nm/px: the template plus the searched shifts).
    Areas without data (padding: pixels equal to all 8 neighbours, widened by
    ``LEAK_NODATA_MARGIN`` px) are left out. ``detail`` is the band-passed patch (difference of
    Gaussians of ``LEAK_BAND`` px: the fine structure that a re-image of the same particle
    shares and a look-alike does not; smooth backgrounds, the particle's outline and padding
    edges, which look alike across fields, are removed), zero where there is no data, unit std;
    the embeddings (:func:`_embed`) are of the smooth patch, for the pre-screen.
    """
    n, side = len(patches), LEAK_TEMPLATE + 2 * LEAK_SHIFT
    embeddings, detail = np.empty((n, LEAK_EMBED**2)), np.empty((n, side, side), dtype=np.float32)
    for start in range(0, n, chunk):
        block = _blocks(patches[start : start + chunk], side)
        embeddings[start : start + chunk], detail[start : start + chunk] = _detail(block)
    return embeddings, detail


def _blocks(patches: np.ndarray, side: int) -> np.ndarray:
    """``(n, side, side)`` float32: the central ``side`` x ``LEAK_BIN`` px of ``(n, h, w)`` patches averaged
    in ``LEAK_BIN`` blocks (2 nm/px). Raises ValueError for patches smaller than that."""
    n, h, w = patches.shape
    b = LEAK_BIN
    top, left = (h - b * side) // 2, (w - b * side) // 2
    if top < 0 or left < 0:
        raise ValueError(f"patches of {h}x{w} px are smaller than the compared {b * side} px")
    block = np.asarray(patches[:, top : top + b * side, left : left + b * side], dtype=np.float32)
    return block.reshape(n, side, b, side, b).mean(axis=(2, 4))


def _filled(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(block, valid)``: ``(n, h, w)`` blocks with their no-data areas (:func:`_nodata`, widened by
    ``LEAK_NODATA_MARGIN``) set to the mean of the rest, and where the data are."""
    valid = ~_nodata(block, LEAK_NODATA_MARGIN)
    mean = (block * valid).sum(axis=(1, 2), keepdims=True) / np.maximum(valid.sum(axis=(1, 2), keepdims=True), 1)
    return np.where(valid, block, mean), valid


def _detail(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_standardised`'s embeddings and band-passed detail of ``(n, side, side)`` blocks (:func:`_blocks`)."""
    from scipy.ndimage import gaussian_filter

    block, valid = _filled(block)
    band = gaussian_filter(block, (0, LEAK_BAND[0], LEAK_BAND[0])) - gaussian_filter(
        block, (0, LEAK_BAND[1], LEAK_BAND[1])
    )
    band = np.where(valid, band, 0.0)
    return _embed(block), (band / np.maximum(band.std(axis=(1, 2), keepdims=True), 1e-6)).astype(np.float32)


def _d4(images: np.ndarray, transforms: list[tuple[int, bool]]) -> list[np.ndarray]:
    """``(..., h, w)`` images under ``transforms`` (of :data:`D4`: rotation by ``k * 90`` degrees, then transposed if flipped)."""
    return [
        np.swapaxes(np.rot90(images, k, axes=(-2, -1)), -2, -1) if flip else np.rot90(images, k, axes=(-2, -1))
        for k, flip in transforms
    ]


def _embed(block: np.ndarray) -> np.ndarray:
    """``(n, LEAK_EMBED**2)`` unit vectors: ``(n, 80, 80)`` patches averaged to LEAK_EMBED x LEAK_EMBED, centred."""
    n, h, w = block.shape
    e = LEAK_EMBED
    small = block.reshape(n, e, h // e, e, w // e).mean(axis=(2, 4)).reshape(n, e * e).astype(np.float64)
    small = small - small.mean(axis=1, keepdims=True)
    return small / np.maximum(np.linalg.norm(small, axis=1, keepdims=True), 1e-9)


def candidate_pairs(
    query: np.ndarray,
    query_images: np.ndarray,
    train: np.ndarray,
    train_images: np.ndarray,
    k: int = LEAK_NEIGHBOURS,
    transforms: list[tuple[int, bool]] = LEAK_TRANSFORMS,
) -> np.ndarray:
    """Pre-screen: ``(m, 2)`` index pairs (query patch, training patch of another image).

    ``query``, ``train``: embeddings (:func:`_standardised`). For each query patch, the ``k``
    training patches of other images whose embedding (under any of ``transforms`` of the
    training patch, as it is or with its contrast inverted) is closest, found with a KD-tree
    (``scipy.spatial.cKDTree``).
    """
    if not len(query) or not len(train):
        return np.zeros((0, 2), dtype=np.int64)
    small = train.reshape(len(train), LEAK_EMBED, LEAK_EMBED)
    turned = [t.reshape(len(train), -1) for t in _d4(small, transforms)]
    points = np.concatenate(turned + [-t for t in turned])  # (2 x transforms x n_train, e*e): also inverted
    return _nearest_of_other_images(query, query_images, points, len(train), train_images, k)


def _nearest_of_other_images(
    query: np.ndarray, query_images: np.ndarray, points: np.ndarray, n_train: int, train_images: np.ndarray, k: int
) -> np.ndarray:
    """``(m, 2)`` sorted index pairs: for each ``query`` row, the ``k`` training patches of other images whose
    nearest view among ``points`` (views of the ``n_train`` training patches, view ``v`` of patch ``t`` at
    row ``v * n_train + t``) is closest (``scipy.spatial.cKDTree``)."""
    from scipy.spatial import cKDTree

    if not len(query) or not n_train:
        return np.zeros((0, 2), dtype=np.int64)
    owner = np.tile(np.arange(n_train), len(points) // n_train)
    want = min(len(points), (k + 1) * (len(points) // n_train) + 32)  # room for the other views and same-image patches
    _, found = cKDTree(points).query(query, k=want)
    pairs = set()
    for q, row in enumerate(np.asarray(found).reshape(len(query), -1)):  # k=1 gives one index per query
        kept = 0
        for t in dict.fromkeys(owner[row[row < len(points)]]):  # nearest first, each training patch once
            if train_images[t] != query_images[q]:
                pairs.add((q, int(t)))
                kept += 1
                if kept == k:
                    break
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def ring_spectra(patches: np.ndarray, chunk: int = LEAK_CHUNK) -> np.ndarray:
    """``(n, 2 * len(LEAK_POLAR_RADII), 180 / LEAK_POLAR_STEP_DEG + 1)`` complex64: the angular Fourier
    transforms of rings around each patch's centre (the first half) and of rings of its power spectrum
    (the second).

    The smooth central 160 nm at 2 nm/px (as :func:`_standardised`, no-data areas at the mean) is
    sampled (bilinear) on rings of :data:`LEAK_POLAR_RADII` px every :data:`LEAK_POLAR_STEP_DEG`
    degrees; so is its log power spectrum (Hann-windowed; the same radii in frequency px), which a
    shift of the patch leaves as it is (Reddy & Chatterji 1996). Each set of rings is centred and
    scaled to unit variance. A turn of the patch shifts every ring by one angle (a phase ramp here),
    a mirror image reverses them (the conjugate): :func:`free_turn_ncc` reads the turn from them.
    """
    from scipy.ndimage import map_coordinates

    n, side = len(patches), LEAK_TEMPLATE + 2 * LEAK_SHIFT
    radii = np.asarray(LEAK_POLAR_RADII, dtype=np.float32)[:, None]
    angles = np.deg2rad(np.arange(0, 360, LEAK_POLAR_STEP_DEG))[None]
    rings_at = np.stack([np.sin(angles) * radii, np.cos(angles) * radii])  # (2, rings, angles) from the centre
    window = np.outer(np.hanning(side), np.hanning(side))
    out = np.empty((n, 2 * len(LEAK_POLAR_RADII), len(angles[0]) // 2 + 1), dtype=np.complex64)
    for start in range(0, n, chunk):
        block, _ = _filled(_blocks(patches[start : start + chunk], side))
        mean = block.mean(axis=(1, 2), keepdims=True)
        power = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2((block - mean) * window), axes=(1, 2))))
        for half, (images, centre) in enumerate(((block, (side - 1) / 2), (power, side // 2))):
            rings = np.stack([map_coordinates(image, rings_at + centre, order=1) for image in images])
            rings -= rings.mean(axis=(1, 2), keepdims=True)
            rings /= np.maximum(rings.std(axis=(1, 2), keepdims=True), 1e-6)
            part = slice(half * len(LEAK_POLAR_RADII), (half + 1) * len(LEAK_POLAR_RADII))
            out[start : start + chunk, part] = np.fft.rfft(rings, axis=-1)
    return out


def turn_invariants(spectra: np.ndarray) -> np.ndarray:
    """``(n, LEAK_POLAR_BANDS * LEAK_POLAR_ORDERS)`` unit vectors for the free-turn pre-screen: the magnitudes of
    the first :data:`LEAK_POLAR_ORDERS` angular orders of one half of :func:`ring_spectra`, averaged over
    :data:`LEAK_POLAR_BANDS` bands of rings, centred (the same for a patch turned, mirrored or inverted)."""
    n, rings, _ = spectra.shape
    per_band = rings // LEAK_POLAR_BANDS
    magnitude = np.abs(spectra[:, : per_band * LEAK_POLAR_BANDS, :LEAK_POLAR_ORDERS]).astype(np.float64)
    e = magnitude.reshape(n, LEAK_POLAR_BANDS, per_band, LEAK_POLAR_ORDERS).mean(axis=2).reshape(n, -1)
    e -= e.mean(axis=1, keepdims=True)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-9)


def turn_candidates(
    query: np.ndarray,
    query_images: np.ndarray,
    train: np.ndarray,
    train_images: np.ndarray,
    k: int = LEAK_TURN_NEIGHBOURS,
) -> np.ndarray:
    """The free-turn pass's pre-screen: ``(m, 2)`` sorted index pairs (query patch, training patch of another
    image), for each query patch the ``k`` nearest in :func:`turn_invariants` of the rings around the
    centres, and the ``k`` nearest in those of the power spectra (a copy shifted a few nm)
    (:func:`ring_spectra`)."""
    half = query.shape[1] // 2
    found = [
        _nearest_of_other_images(
            turn_invariants(query[:, part]), query_images, turn_invariants(train[:, part]), len(train), train_images, k
        )
        for part in (slice(None, half), slice(half, None))
    ]
    return np.unique(np.concatenate(found), axis=0).reshape(-1, 2)


def _ring_turns(a: np.ndarray, b: np.ndarray, n_angles: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mirrored, steps)`` of the largest ``|circular correlation|`` of rings ``b`` with rings ``a`` as they are
    and mirrored (its rings reversed, whose transform is the conjugate), summed over the rings: ``mirrored``
    0 or 1, ``steps`` the angle in steps of :data:`LEAK_POLAR_STEP_DEG`, refined to a fraction of one by
    the parabola through the peak and its two neighbours."""
    corr = np.abs(np.fft.irfft(np.stack([(b * np.conj(a)).sum(axis=1), (b * a).sum(axis=1)], axis=1), n=n_angles))
    mirrored, step = np.divmod(corr.reshape(len(corr), -1).argmax(axis=1), n_angles)
    rows = np.arange(len(corr))
    before, peak, after = (corr[rows, mirrored, (step + k) % n_angles] for k in (-1, 0, 1))
    curvature = before - 2 * peak + after
    offset = np.where(curvature < 0, 0.5 * (before - after) / np.where(curvature < 0, curvature, -1), 0.0)
    return mirrored, step + np.clip(offset, -0.5, 0.5)


def _turned_ncc(
    blocks: np.ndarray, mirrored: np.ndarray, turn: np.ndarray, train_detail: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`max_ncc` of whole-patch 2 nm/px ``blocks`` (one per pair) mirrored left-right where ``mirrored``,
    then turned by ``turn`` degrees (as ``scipy.ndimage.rotate`` turns an array; bilinear, sampled only where
    the compared centre lies), against the training patches' band-passed centres: ``(ncc, shift_px)``."""
    from scipy.ndimage import map_coordinates

    side = LEAK_TEMPLATE + 2 * LEAK_SHIFT
    grid = np.mgrid[:side, :side].astype(np.float64) - (side - 1) / 2  # (2, side, side): (row, column) from the centre
    middle = (blocks.shape[-1] - 1) / 2
    turned = np.empty((len(blocks), side, side), dtype=np.float32)
    for i, (block, flip, deg) in enumerate(zip(blocks, mirrored, turn)):
        cos, sin = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
        where = np.stack([cos * grid[0] + sin * grid[1], -sin * grid[0] + cos * grid[1]]) + middle
        turned[i] = map_coordinates(block[:, ::-1] if flip else block, where, order=1, mode="nearest")
    ncc, shift, _ = max_ncc(_detail(turned)[1], train_detail)
    return ncc, shift


def free_turn_ncc(
    query_patches: np.ndarray,
    query_spectra: np.ndarray,
    train_detail: np.ndarray,
    train_spectra: np.ndarray,
    pairs: np.ndarray,
    chunk: int = LEAK_CHUNK,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: :func:`max_ncc` of the query patch turned (and mirrored) onto the training patch.

    ``query_patches``: ``(n, h, w)`` patches at 1 nm/px; ``*_spectra``: their :func:`ring_spectra`;
    ``train_detail``: the training patches' band-passed centres (:func:`_standardised`). The turn (and
    mirror image) is the angle of the largest ``|correlation|`` of the two patches' power spectra's
    rings, to :data:`LEAK_POLAR_STEP_DEG` and refined by a parabola (right for a copy shifted off the
    centre too, which the centre rings' correlation reads degrees off); a power spectrum cannot tell a
    turn from one 180 degrees on, so both are tried: the query's 2 nm/px block is turned about its
    centre (bilinear) and compared untransformed, the better kept, and where it reaches
    :data:`LEAK_TURN_REFINE_FROM`, the turns :data:`LEAK_TURN_REFINE_DEG` beside it are tried too.
    Returns ``(ncc, shift_px, angle_deg, mirrored)`` (the query mirrored left-right, then turned
    by ``angle_deg`` as ``scipy.ndimage.rotate`` turns an array).
    """
    m = len(pairs)
    n_angles, rings = 360 // LEAK_POLAR_STEP_DEG, query_spectra.shape[1] // 2
    ncc, shift = np.full(m, 0.0), np.zeros((m, 2), dtype=np.int64)
    angle, mirrored = np.zeros(m), np.zeros(m, dtype=bool)
    for start in range(0, m, chunk):
        q, t = pairs[start : start + chunk, 0], pairs[start : start + chunk, 1]
        power_mirror, power_step = _ring_turns(query_spectra[q, rings:], train_spectra[t, rings:], n_angles)
        turned_over = power_step + n_angles // 2  # the power spectrum's other reading
        rows, index = np.unique(q, return_inverse=True)
        whole = _blocks(query_patches[rows], min(query_patches.shape[-2:]) // LEAK_BIN)

        tries = [
            (np.arange(len(q)), flips == 1, np.where(flips == 1, 180.0, 0.0) - steps * LEAK_POLAR_STEP_DEG)
            for flips, steps in ((power_mirror, power_step), (power_mirror, turned_over))
        ]
        for refine in (False, True):
            if refine:  # a turn read a degree off loses a copy shifted from the centre a few hundredths of NCC:
                # near the threshold, the turns beside the best are tried too
                close = np.flatnonzero(np.abs(ncc[start : start + len(q)]) >= LEAK_TURN_REFINE_FROM)
                best = mirrored[start + close].copy(), angle[start + close].copy()
                tries = [(close, best[0], best[1] + offset) for offset in LEAK_TURN_REFINE_DEG]
            for which, flips, turn in tries:
                found, moved = _turned_ncc(whole[index[which]], flips, turn, train_detail[t[which]])
                better = np.abs(found) > np.abs(ncc[start + which])
                at = start + which[better]
                ncc[at], shift[at] = found[better], moved[better]
                angle[at], mirrored[at] = ((turn + 180.0) % 360.0 - 180.0)[better], flips[better]
    return ncc, shift, angle, mirrored


def max_ncc(
    a: np.ndarray,
    b: np.ndarray,
    chunk: int = LEAK_CHUNK,
    transforms: list[tuple[int, bool]] = LEAK_TRANSFORMS,
    pairs: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: the largest normalised cross-correlation of ``a``'s central template with ``b``.

    ``a``, ``b``: ``(m, 80, 80)`` band-passed patches (:func:`_standardised`, 2 nm/px), or with
    ``pairs`` (``(m, 2)`` indices) ``a[pairs[:, 0]]`` against ``b[pairs[:, 1]]``, gathered a block at
    a time (not all at once: gigabytes for a large run), each query patch's templates transformed once
    for its pairs in the block (the same NCC to about 1e-8: FFTs in batches of another size). The
    central ``LEAK_TEMPLATE``-px square of ``a``, under each of ``transforms`` (of :data:`D4`), is compared with every same-size window of ``b`` (shifts
    up to ``LEAK_SHIFT`` px each way): NCC is the Pearson correlation of the template with the
    window. Correlations by FFT (float32), window means and variances by summed-area tables.
    Returns ``(ncc, shift_px, transform)``: ncc in [-1, 1] of the window of largest ``|ncc|``
    (1 = identical up to a linear intensity change, -1 the same with the contrast inverted: a
    file saved as a negative), the best window's ``(dy, dx)`` offset from the centre in px at
    2 nm/px, and the index of the transform of ``a`` in ``transforms``.
    """
    from scipy.fft import ifft, irfft, rfft2

    _, h, w = a.shape
    pairs = None if pairs is None else np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    m = len(a) if pairs is None else len(pairs)
    t, s = LEAK_TEMPLATE, LEAK_SHIFT
    side, n_shift = t + 2 * s, 2 * s + 1
    if b.shape[1:] != (side, side) or (h, w) != (side, side):
        raise ValueError(f"max_ncc needs {side}x{side} standardised patches, got {a.shape[1:]} and {b.shape[1:]}")
    ncc, shift, transform = np.full(m, -1.0), np.zeros((m, 2), dtype=np.int64), np.zeros(m, dtype=np.int64)
    for start in range(0, m, chunk):
        rows = slice(start, start + chunk)
        if pairs is None:
            a_block, b_rows, of_pair = a[rows], rows, slice(None)
        else:  # the pairs of one query patch come together (pre-screens give them sorted): its templates once
            unique, of_pair = np.unique(pairs[rows, 0], return_inverse=True)
            a_block, b_rows = a[unique], pairs[rows, 1]
        tpl = np.stack(_d4(a_block[:, s : s + t, s : s + t], transforms), axis=1).astype(
            np.float32
        )  # (templates, transforms, t, t)
        tpl -= tpl.mean(axis=(2, 3), keepdims=True)
        tpl /= np.maximum(np.linalg.norm(tpl, axis=(2, 3), keepdims=True), 1e-6)
        region = np.ascontiguousarray(b[b_rows], dtype=np.float32)  # (c, side, side)
        product = rfft2(region)[:, None] * np.conj(rfft2(tpl, s=(side, side)))[of_pair]
        corr = irfft(ifft(product, axis=-2)[..., :n_shift, :], n=side, axis=-1)[
            ..., :n_shift
        ]  # (c, transforms, n_shift, n_shift)
        area = np.pad(region.astype(np.float64), ((0, 0), (1, 0), (1, 0)))
        sums = area.cumsum(axis=1).cumsum(axis=2)
        squares = (area**2).cumsum(axis=1).cumsum(axis=2)

        def windows(c: np.ndarray) -> np.ndarray:
            return c[:, t:, t:] - c[:, :-t, t:] - c[:, t:, :-t] + c[:, :-t, :-t]

        var = np.maximum(windows(squares) - windows(sums) ** 2 / (t * t), 1e-9)  # (c, n_shift, n_shift)
        score = (corr / np.sqrt(var)[:, None]).reshape(len(region), -1)  # the template has zero mean, unit norm
        best = np.abs(score).argmax(axis=1)
        tr, dy, dx = np.unravel_index(best, (len(transforms), n_shift, n_shift))
        ncc[start : start + chunk] = score[np.arange(len(score)), best]
        shift[start : start + chunk] = np.stack([dy - s, dx - s], axis=1)
        transform[start : start + chunk] = tr
    return np.clip(ncc, -1.0, 1.0), shift, transform


def _nodata(block: np.ndarray, margin: int) -> np.ndarray:
    """``(n, h, w)`` bool: pixels equal to all 8 neighbours (padding, constant fill), widened by ``margin`` px."""
    from scipy.ndimage import maximum_filter

    height, width = block.shape[1:]
    padded = np.pad(block, ((0, 0), (1, 1), (1, 1)), mode="edge")
    flat = np.ones(block.shape, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            flat &= padded[:, dy : dy + height, dx : dx + width] == block
    return maximum_filter(flat, size=(1, 2 * margin + 1, 2 * margin + 1))


def surroundings_ncc(a: np.ndarray, b: np.ndarray, shifts_nm: np.ndarray) -> np.ndarray:
    """Per pair: the correlation of two patches' surroundings, ``b`` moved by the pair's shift.

    ``a``, ``b``: ``(m, S, S)`` patches at 1 nm/px (S a multiple of :data:`LEAK_CONTEXT_BIN`);
    ``shifts_nm``: ``(m, 2)`` ``(dy, dx)`` in nm (:func:`max_ncc`'s times :data:`LEAK_BIN`).
    Both are averaged to ``LEAK_CONTEXT_BIN`` nm/px and band-passed (:data:`LEAK_CONTEXT_BAND`);
    the Pearson correlation is taken where both have data, outside the central
    ``LEAK_CONTEXT_INNER`` nm (the compared particle): a re-image shares its field's stain,
    debris and neighbours, an alike particle of another field does not. NaN where fewer than
    :data:`LEAK_CONTEXT_MIN_PX` pixels are compared.
    """
    from scipy.ndimage import gaussian_filter

    m, size = len(a), a.shape[-1]
    out = np.full(m, np.nan)
    if not m:
        return out
    b_, side = LEAK_CONTEXT_BIN, size // LEAK_CONTEXT_BIN
    views = []
    for patches in (a, b):
        block = np.asarray(patches, dtype=np.float32).reshape(m, side, b_, side, b_).mean(axis=(2, 4))
        low, high = LEAK_CONTEXT_BAND
        views.append(
            (gaussian_filter(block, (0, low, low)) - gaussian_filter(block, (0, high, high)), ~_nodata(block, 1))
        )
    (band_a, valid_a), (band_b, valid_b) = views
    inner = LEAK_CONTEXT_INNER // b_
    start = (side - inner) // 2
    for i, (dy, dx) in enumerate(np.rint(np.asarray(shifts_nm, float) / b_).astype(int)):
        moved, moved_valid = (np.roll(x, (-dy, -dx), axis=(0, 1)) for x in (band_b[i], valid_b[i]))
        keep = valid_a[i] & moved_valid
        keep[: abs(dy) + 1], keep[side - abs(dy) - 1 :] = False, False  # rows and columns rolled round
        keep[:, : abs(dx) + 1], keep[:, side - abs(dx) - 1 :] = False, False
        keep[start : start + inner, start : start + inner] = False
        if keep.sum() >= LEAK_CONTEXT_MIN_PX:
            x, y = band_a[i][keep] - band_a[i][keep].mean(), moved[keep] - moved[keep].mean()
            out[i] = float((x * y).sum() / max(np.sqrt((x * x).sum() * (y * y).sum()), 1e-12))
    return out


def same_field(query_nm: np.ndarray, train_nm: np.ndarray, others: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    """Whether another matched particle pair of the same two images (``others``: ``(query_nm,
    train_nm)`` positions, each ``(2,)`` nm in its image) lies at the same distance from this
    pair's particles in both images (within :data:`LEAK_FIELD_TOLERANCE`): one field seen twice,
    turned or not, puts its particles the same distance apart."""
    near_nm, fraction = LEAK_FIELD_TOLERANCE
    for other_query, other_train in others:
        apart_q, apart_t = np.hypot(*(other_query - query_nm)), np.hypot(*(other_train - train_nm))
        if abs(apart_q - apart_t) <= max(near_nm, fraction * max(apart_q, apart_t)):
            return True
    return False


def leak_decision(ncc: float, threshold: float, surroundings: float = np.nan, field: bool = False) -> bool:
    """Whether a pair of patches shows one particle: ``|ncc|`` (:func:`max_ncc`) at least
    ``threshold + LEAK_CONTEXT_MARGIN``, or at least ``threshold`` with the field agreeing:
    ``surroundings`` (:func:`surroundings_ncc`, times the sign of ``ncc``; NaN: unknown, taken as
    agreeing) at least :data:`LEAK_CONTEXT_NCC`, or ``field`` (:func:`same_field`)."""
    score = abs(ncc)
    if score >= threshold + LEAK_CONTEXT_MARGIN:
        return True
    context = surroundings * np.sign(ncc)
    return bool(score >= threshold and (field or np.isnan(context) or context >= LEAK_CONTEXT_NCC))


def _field_evidence(
    pairs: np.ndarray,
    ncc: np.ndarray,
    shift: np.ndarray,
    threshold: float,
    query_patches: np.ndarray,
    train_patches: np.ndarray,
    query_rows: pd.DataFrame,
    train_rows: pd.DataFrame,
) -> dict[int, tuple[float, bool]]:
    """For each pair ``k`` of ``pairs`` whose ``|ncc|`` lies from ``threshold`` to ``threshold +
    LEAK_CONTEXT_MARGIN``: ``(surroundings, same field)`` (:func:`surroundings_ncc`,
    :func:`same_field` against the pairs of other particles of its two images at ``threshold -
    LEAK_CONTEXT_MARGIN`` or above; positions from the tables' ``x_nm``, ``y_nm``). Other patches
    of the same particle (the vertices along a filament's centre line, a table's ``particle``) are
    no evidence: two straight filaments of two fields match all along, their vertices the same
    distance apart."""
    score = np.abs(ncc)
    borderline = np.flatnonzero((score >= threshold) & (score < threshold + LEAK_CONTEXT_MARGIN))
    if not len(borderline):
        return {}
    around = surroundings_ncc(
        query_patches[pairs[borderline, 0]], train_patches[pairs[borderline, 1]], LEAK_BIN * shift[borderline]
    )
    q_nm = query_rows[["x_nm", "y_nm"]].to_numpy(float)
    t_nm = train_rows[["x_nm", "y_nm"]].to_numpy(float)
    q_particle = list(zip(query_rows.image_id, query_rows.particle))  # a particle: its image and number
    t_particle = list(zip(train_rows.image_id, train_rows.particle))
    q_image, t_image = query_rows.image_id.to_numpy(), train_rows.image_id.to_numpy()
    matched = pairs[score >= threshold - LEAK_CONTEXT_MARGIN]
    out = {}
    for k, context in zip(borderline, around):
        q, t = pairs[k]
        others = [
            (q_nm[oq], t_nm[ot])
            for oq, ot in matched
            if q_particle[oq] != q_particle[q]
            and t_particle[ot] != t_particle[t]
            and q_image[oq] == q_image[q]
            and t_image[ot] == t_image[t]
        ]
        out[int(k)] = (float(context), same_field(q_nm[q], t_nm[t], others))
    return out


def _leak_reason(ncc: float, threshold: float, surroundings: float, field: bool) -> str:
    """Why :func:`leak_decision` failed an untransformed pair, in words."""
    if abs(ncc) >= threshold + LEAK_CONTEXT_MARGIN:
        return f"fails at |NCC| >= {threshold + LEAK_CONTEXT_MARGIN:g}"
    if field:
        agreeing = "another patch pair of the two images matched at the same distance"
    elif np.isnan(surroundings):
        agreeing = "surroundings not comparable"
    else:
        agreeing = f"surroundings {surroundings * np.sign(ncc):.2f}"
    return f"fails at |NCC| >= {threshold:g} with the field agreeing: {agreeing}"


def read_accepted_leaks(path: str | os.PathLike | None) -> dict[tuple[str, str, str], str]:
    """A reviewer's accepted leaks: ``{(method, patch_id, train_patch_id): reason}``.

    The CSV has the columns :data:`ACCEPTED_COLUMNS` (``method``: the split method of the
    patch set, e.g. ``representative``; ``patch_id``: the test/validation patch; ``train_patch_id``; ``reason``:
    why the pair is not a leak, required). ``None`` or ``""``: none accepted.
    Raises ValueError naming the file and row of a missing column (an old column name, ``split``
    for ``method``, among them), empty field or repeated pair;
    FileNotFoundError if the file is missing.
    """
    if not path:
        return {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file of accepted leaks not found")
    from temvirus.raw import read_text

    rows = csv.reader(io.StringIO(read_text(path), newline=""))  # line_num: the physical line, quoted newlines too
    header = [name.strip() for name in next(rows, [])]
    missing = [c for c in ACCEPTED_COLUMNS if c not in header]
    if missing:
        old = [f"{c!r} is now {ACCEPTED_RENAMED[c]!r}" for c in ACCEPTED_RENAMED if c in header]
        hint = f" (renamed: {', '.join(old)})" if old else ""
        raise ValueError(f"{path}: missing columns {missing}; expected {ACCEPTED_COLUMNS}{hint}")
    accepted = {}
    for fields in rows:
        line = rows.line_num
        if not any(field.strip() for field in fields):
            continue
        if len(fields) != len(header):
            raise ValueError(
                f"{path}, line {line}: {len(fields)} fields, the header has {len(header)} "
                '(a comma inside an unquoted reason? put the reason in "quotes")'
            )
        row = {name: field.strip() for name, field in zip(header, fields)}
        empty = [c for c in ACCEPTED_COLUMNS if not row[c]]
        if empty:
            raise ValueError(f"{path}, line {line}: empty {empty} (every accepted leak needs its pair and a reason)")
        key = (row["method"], row["patch_id"], row["train_patch_id"])
        if key in accepted:
            raise ValueError(f"{path}, line {line}: pair {key} listed twice")
        accepted[key] = row["reason"]
    return accepted


def check_leaks(folder: Folder, threshold: float = LEAK_NCC, accepted: dict | None = None) -> Check:
    """Fail on every test or validation patch that shows the same particle as a training patch
    of another image (:func:`max_ncc` at least ``threshold``, or at most its negative: the contrast
    inverted, after the :func:`candidate_pairs` pre-screen; within :data:`LEAK_CONTEXT_MARGIN` of
    ``threshold`` only where the field agrees, :func:`leak_decision`, else noted as alike
    particles), or that is one mirrored or turned (a pass of its own over :data:`LEAK_TURNED`, and one
    turning by any angle, :func:`free_turn_ncc`; both failing at :data:`LEAK_TURNED_NCC` or ``threshold``
    if higher),
    unless ``accepted`` (:func:`read_accepted_leaks`) lists the pair: then it is a note
    with the reviewer's reason. Accepted pairs that are not found are noted too."""
    check = Check(
        "leaks",
        f"Same particle in a training and a test/validation patch (max |NCC| >= {threshold + LEAK_CONTEXT_MARGIN:g}, "
        f"or >= {threshold:g} with the field agreeing: inverted contrast too;"
        f" mirrored or turned by any angle at >= {max(threshold, LEAK_TURNED_NCC):g})",
    )
    dirs = _patch_dirs(folder, check)
    if not dirs:
        return check
    accepted = dict(accepted or {})
    used, covered = set(), []
    for pdir in dirs:
        method, where = pdir.name, f"results/patches/{pdir.name}"
        patches = _read(pdir / "patches.csv")
        arrays = _subset_arrays(pdir)
        tables = {s: patches[patches.subset == s].sort_values("index") for s in arrays}
        if "train" not in arrays or any(len(tables[s]) != len(arrays[s]) for s in arrays):
            covered.append(f"{method}: not compared (no training array, or arrays unlike the table)")
            continue
        (train_embedded, train), train_rows = _standardised(arrays["train"]), tables["train"]
        train_spectra = ring_spectra(arrays["train"])
        n_pairs = n_query = 0
        for subset in ("validation", "test"):
            if subset not in arrays or not len(arrays[subset]):
                continue
            (embedded, query), rows = _standardised(arrays[subset]), tables[subset]
            # (query, training patch) -> (|NCC| met, NCC, shift, transform, surroundings, field), the identity's first
            found, alike = {}, {}
            for transforms, least in ((LEAK_TRANSFORMS, threshold), (LEAK_TURNED, max(threshold, LEAK_TURNED_NCC))):
                pairs = candidate_pairs(
                    embedded,
                    rows.image_id.to_numpy(),
                    train_embedded,
                    train_rows.image_id.to_numpy(),
                    transforms=transforms,
                )
                n_pairs += len(pairs)
                ncc, shift, transform = max_ncc(query, train, transforms=transforms, pairs=pairs)
                field = (
                    _field_evidence(pairs, ncc, shift, least, arrays[subset], arrays["train"], rows, train_rows)
                    if transforms is LEAK_TRANSFORMS
                    else {}
                )
                for k, ((q, t), score, move, tr) in enumerate(zip(pairs, ncc, shift, transform)):
                    if abs(score) < least:
                        continue
                    around, agrees = field.get(k, (np.nan, False))
                    if transforms is not LEAK_TRANSFORMS or leak_decision(score, least, around, agrees):
                        found.setdefault(
                            (int(q), int(t)), (least, score, move, transform_name(transforms[tr]), around, agrees)
                        )
                    else:
                        alike[int(q), int(t)] = (score, move, around)
            # turned by any angle (a copy turned by hand, a turned scan): a pass of its own, at the turned threshold
            least = max(threshold, LEAK_TURNED_NCC)
            spectra = ring_spectra(arrays[subset])
            pairs = turn_candidates(spectra, rows.image_id.to_numpy(), train_spectra, train_rows.image_id.to_numpy())
            n_pairs += len(pairs)
            ncc, shift, angle, mirrored = free_turn_ncc(arrays[subset], spectra, train, train_spectra, pairs)
            for (q, t), score, move, deg, flip in zip(pairs, ncc, shift, angle, mirrored):
                if abs(score) >= least:
                    turned = ("mirrored, " if flip else "") + f"turned {deg:.0f}°"
                    found.setdefault((int(q), int(t)), (least, score, move, turned, np.nan, False))
            n_query += len(query)
            for (q, t), (score, (dy, dx), around) in sorted(alike.items()):
                if (q, t) not in found:
                    a, b = rows.iloc[q], train_rows.iloc[t]
                    check.inform(
                        "alike particles",
                        where,
                        f"{subset} {a.patch_id} (image {a.image_id}) ~ train {b.patch_id} (image {b.image_id}): NCC "
                        f"{score:.3f} (shift {LEAK_BIN * dx:+d}, {LEAK_BIN * dy:+d} nm) below "
                        f"{threshold + LEAK_CONTEXT_MARGIN:g}, surroundings {around * np.sign(score):.2f} (< "
                        f"{LEAK_CONTEXT_NCC:g}) and no other patch pair of the two images matched at the same "
                        "distance: alike particles of two fields",
                    )
            for (q, t), (least, score, (dy, dx), tr, around, agrees) in sorted(found.items()):
                a, b = rows.iloc[q], train_rows.iloc[t]
                identity = tr == transform_name(D4[0])
                why = _leak_reason(score, least, around, agrees) if identity else f"fails at |NCC| >= {least:g}"
                detail = (
                    f"{subset} {a.patch_id} (image {a.image_id}) ~ train {b.patch_id} (image {b.image_id}): NCC {score:.3f}"
                    f" (shift {LEAK_BIN * dx:+d}, {LEAK_BIN * dy:+d} nm, "
                    f"{'as it is' if identity else 'the ' + subset + ' patch ' + tr}"
                    f"{', contrast inverted' if score < 0 else ''}; {why})"
                )
                key = (method, a.patch_id, b.patch_id)
                if key in accepted:
                    used.add(key)
                    check.inform("accepted leak", where, f"{detail}; accepted: {accepted[key]}")
                else:
                    published = " in the published split" if method == "given" else ""
                    check.fail("leak" + published, where, detail)
        covered.append(
            f"{method}: {n_query} test/validation patches, {n_pairs} pairs with training patches of other images scored"
        )
    for key in sorted(set(accepted) - used):
        check.inform(
            "accepted pair not found",
            f"results/patches/{key[0]}",
            f"{key[1]} ~ {key[2]}: not a leak here (or not present)",
        )
    check.covered = "; ".join(covered)
    return check


TABLE1 = "results/tables/table1.csv"


def check_table1(folder: Folder, records: dict[Path, dict]) -> Check:
    """Recount Table 1 (images, particles, patches per class and subset, ``all``/``total``
    sums) from the split and patch tables its job's record says it was made from."""
    check = Check("table1", "Table 1 counts follow from the split and patch tables")
    made = [r for r in records.values() if any(o["path"] == TABLE1 for o in r["outputs"])]
    if not folder.local(TABLE1).is_file() or not made:
        check.skipped = f"no {TABLE1} with a lineage record (table stage not run)"
        return check
    inputs = [e["path"] for e in made[0]["inputs"]]
    split_csv = next((p for p in inputs if Path(p).name.startswith("split_")), None)
    patches_csv = next((p for p in inputs if Path(p).name == "patches.csv"), None)
    if split_csv is None or patches_csv is None:
        check.fail("unknown sources", TABLE1, f"its record names no split table and patch table among {inputs}")
        return check
    split, patches, table = (
        _read(folder.local(split_csv)),
        _read(folder.local(patches_csv)),
        pd.read_csv(folder.local(TABLE1)),
    )
    for row in table.itertuples():
        images = split if row[1] == "all" else split[split["class"] == row[1]]
        members = patches if row[1] == "all" else patches[patches["class"] == row[1]]
        if row.subset != "total":
            images, members = images[images["subset"] == row.subset], members[members["subset"] == row.subset]
        want = {"images": len(images), "particles": int(images["n_particles"].sum()), "patches": len(members)}
        for column, value in want.items():
            if getattr(row, column) != value:
                check.fail(
                    "count differs",
                    TABLE1,
                    f"{row[1]} {row.subset} {column}: table {getattr(row, column)}, recounted {value}",
                )
    classes = set(split["class"]) | {"all"}
    if set(table["class"]) != classes:
        check.fail(
            "classes differ", TABLE1, f"table classes {sorted(set(table['class']) ^ classes)} differ from {split_csv}"
        )
    check.covered = f"{len(table)} rows of {TABLE1} recounted from {split_csv} and {patches_csv}"
    return check
