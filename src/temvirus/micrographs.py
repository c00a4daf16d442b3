"""Whole-micrograph analysis (issue 14, beyond the paper): find, classify, count and measure particles.

The paper classifies 256x256 patches centred on annotated particles; this module answers the
questions asked of a whole micrograph: where are the particles, of which virus, how many and
how large. Steps, per image (:func:`analyse_image`):

1. **Detection** by a particle-centre heat map (:mod:`temvirus.heatmap`): a small fully
   convolutional network sees the image rescaled to ``heat_nm`` nm/px (6 by default) with the
   project's windowed Lanczos-3 resampler (:func:`temvirus.rescale.region`), one bounded tile
   at a time (``tile_nm`` plus a margin), standardised by the image's mean and s.d. (black
   padding of crops, whole border lines at the minimum, left out: :func:`temvirus.heatmap.black_padding_box`;
   areas clipped to black inside the field are content), and predicts the probability of a particle
   centre at each pixel and the diameter of the particle centred there. It is trained
   (:func:`fit_detector`) on random crops of the *training* images towards Gaussians at the
   annotated centres (``sigma = sigma_fraction x`` the class's typical diameter, Table 1's or
   ``diameters_nm``; a centre line of 3 or more vertices is a ridge with its vertices as peaks).
   A second pass of the same network at ``large_heat_nm`` (18 nm/px) answers for particles of
   ``large_min_nm`` (192 nm) and more, which fill most of a training crop at ``heat_nm``
   (:func:`detect_peaks`).
2. **Peaks**: the local maxima of the heat map, kept by greedy non-maximum suppression (a peak
   closer than ``nms_fraction`` x the larger of the two predicted diameters to a better one is
   dropped) at or above a score threshold; the fraction (of ``nms_fractions``) and the
   threshold are the pair of best detection F1 on the *validation* images. Test images are
   never used.
3. **Classification** of every kept particle by the trained patch model: the 256x256 patch at
   1 nm/px around it, cut and quantised as the patches stage does
   (:func:`temvirus.patches.extract_image`), area-averaged to the checkpoint's ``input_size``
   and standardised per patch (:func:`temvirus.train.predict`), as in evaluation.
4. **Particle score** (beyond the paper): the heat-map score times the particle's size
   agreement (:func:`size_agreement`: how well the heat map's predicted diameter fits the
   typical diameter of the classes the patch model gives it). Particles are the peaks whose
   particle score reaches the threshold of the class the patch model gives them, chosen for
   each patch model on the *validation* images (:func:`calibrate`; rule
   ``calibrate_micrographs``): debris the heat map takes for particles rarely has the size of
   the class it looks like (real crops' validation F1 0.841 -> 0.863, synthetic 0.920 -> 0.928;
   docs/benchmarks.md section 7), and a class whose small particles look like stain blobs
   (Astrovirus) needs a higher score than the others (:func:`class_thresholds`).
5. **Measurement**: the diameter (nm) from 32 radial intensity profiles around the centre (the
   steepest light-to-dark step of each ray; the median over rays, for filaments the lower
   quartile: their width). Filaments (Ebola, Marburg) are found as chains of points along
   their centre line: points of either filament class closer than ``chain_fraction`` x their
   classes' mean diameter are linked (:func:`link_chains`); each chain is one filament, of one
   class (:func:`filament_classes`), and counts as one particle (``count_{class}``,
   :func:`count_units`).
6. **Image call**: the class with the largest particle-score- and probability-weighted vote of
   its particles, its confidence that class's share of the vote (``call_from`` "particles").
   An image where no peak passes its class's threshold is called from its strongest peak, the
   one of highest particle score among those whose heat-map score reaches the lowest class
   threshold (``call_from`` "strongest peak", confidence its class probability), and counts no
   particle; with no such peak there is no call (beyond the paper; chosen on the validation
   images, docs/benchmarks.md section 7).

:func:`evaluate_image` matches found particles one-to-one with the annotated centres (the
patch centres of :func:`temvirus.patches.patch_points`: points, centre-line vertices, midpoints
of 2-point lines) within half the annotated class's typical diameter
(:func:`scipy.optimize.linear_sum_assignment`): detection precision, recall and F1 (issue 14).
Counts compare particles as a microscopist counts them: a filament image's annotated centre
lines against the found chains, each once; other images' annotated centres against the found
particles.

Memory: the raw image is held as read (uint16: 8 MB for 2048x2048 px), or mapped from disk when it
is a grayscale 8- or 16-bit TIFF (:func:`temvirus.raw.read_image` ``mapped``: from its file when
uncompressed, else decoded a strip or tile at a time into a temporary file; a montage of any size,
read from disk as it is used); everything rescaled is one tile at a time, so a micrograph of any
pixel size needs a bounded amount beyond it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from temvirus.rescale import region

log = logging.getLogger(__name__)

#: classes found as chains of points along their centre line
FILAMENT_CLASSES = ("Ebola", "Marburg")
#: columns of a particle table (one row per found particle)
PARTICLE_COLUMNS = [
    "image_id",
    "particle",
    "x",
    "y",
    "x_nm",
    "y_nm",
    "class",
    "probability",
    "heat_score",
    "score",
    "diameter_nm",
    "chain",
]
DETECTOR_KIND = "temvirus micrograph detector"
_RAYS = 32


@dataclass(frozen=True)
class Options:
    """Settings of the detector (config ``micrographs``; see config/README.md)."""

    tile_nm: int = 4096
    heat_nm: float = 6.0
    widths: tuple[int, ...] = (8, 16, 24, 32, 48)
    sigma_fraction: float = 0.15
    steps: int = 2000
    crop_px: int = 64
    train_batch: int = 8
    crops_per_image: int = 16
    lr: float = 0.01
    nms_fractions: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7)
    chain_fraction: float = 2.0
    large_heat_nm: float | None = 18.0
    large_min_nm: float = 192.0

    @classmethod
    def from_config(cls, section: Mapping) -> Options:
        values = {k: section[k] for k in cls.__dataclass_fields__ if k in section}
        for key in ("widths", "nms_fractions"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def class_diameters(
    classes: Sequence[str], table1_csv, overrides: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Typical diameter (nm) of each class: Table 1's mean particle size, or ``overrides[class]``."""
    from temvirus.classes import load_table1

    table = load_table1(table1_csv)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(classes))
    if unknown:
        raise ValueError(f"micrographs.diameters_nm: classes {unknown} are not among the classes {list(classes)}")
    return {c: float(overrides.get(c, table.loc[c, "avg_particle_size_nm"])) for c in classes}


# ------------------------------------------------------------------------- detection


def suppress(candidates: pd.DataFrame, scores: np.ndarray, fraction: float) -> np.ndarray:
    """Indices (best first) kept by greedy non-maximum suppression: a candidate closer than
    ``fraction`` x the larger of the two diameters to a better kept one is dropped."""
    order = np.argsort(-scores, kind="stable")
    xy = candidates[["x_nm", "y_nm"]].to_numpy()
    d = candidates.d_nm.to_numpy()
    kept: list[int] = []
    for i in order:
        if kept:
            k = np.array(kept)
            dist = np.hypot(*(xy[k] - xy[i]).T)
            if np.any(dist < fraction * np.maximum(d[k], d[i])):
                continue
        kept.append(int(i))
    return np.array(kept, dtype=int)


# ------------------------------------------------------------------------- matching, metrics


def match(found_xy: np.ndarray, true_xy: np.ndarray, tolerance: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one pairs ``(found, true)`` within ``tolerance[true]`` (nm), as many as possible,
    then the closest (:func:`scipy.optimize.linear_sum_assignment`)."""
    found_xy = np.asarray(found_xy, dtype=float).reshape(-1, 2)
    true_xy = np.asarray(true_xy, dtype=float).reshape(-1, 2)
    if not len(found_xy) or not len(true_xy):
        return []
    tolerance = np.broadcast_to(np.asarray(tolerance, dtype=float), (len(true_xy),))
    dist = np.hypot(found_xy[:, None, 0] - true_xy[None, :, 0], found_xy[:, None, 1] - true_xy[None, :, 1])
    ok = dist <= tolerance[None, :]
    cost = np.where(ok, dist / tolerance[None, :], 1e6)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if ok[r, c]]


def detection_counts(pairs: int, n_found: int, n_true: int) -> dict:
    precision = pairs / n_found if n_found else (1.0 if n_true == 0 else 0.0)
    recall = pairs / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def annotated_centres(particles: pd.DataFrame) -> pd.DataFrame:
    """The annotated centres of an image's particle rows (``particle, vertex, x, y``): points,
    centre-line vertices and 2-point midpoints, as the patches stage cuts them."""
    from temvirus.patches import patch_points

    if len(particles) == 0:
        return pd.DataFrame(columns=["particle", "vertex", "x", "y"])
    table = particles.assign(image_id=particles.get("image_id", "image"))
    return patch_points(table)[["particle", "vertex", "x", "y"]].reset_index(drop=True)


# ------------------------------------------------------------------------- measurement


def measure_diameters(
    pixels: np.ndarray, pixel_size_nm: float, xy_nm: np.ndarray, d_nm: np.ndarray, filament: np.ndarray
) -> np.ndarray:
    """Diameter (nm; a filament's width) of each particle from radial profiles of a 1 nm/px
    window around it: the steepest light-to-dark step of each of 32 rays between 0.25 and 0.95
    times the detection diameter from the centre; median over rays (filaments: lower quartile)."""
    angles = np.linspace(0, 2 * np.pi, _RAYS, endpoint=False)
    out = np.full(len(xy_nm), np.nan)
    for i, ((x, y), d) in enumerate(zip(xy_nm, d_nm)):
        half = int(math.ceil(1.05 * d)) + 4
        left, top = int(math.floor(x)) - half, int(math.floor(y)) - half
        win = region(pixels, pixel_size_nm, left, top, 2 * half + 1, 2 * half + 1)
        win = ndimage.gaussian_filter(win, max(1.0, d / 40))
        radii = np.arange(0.25 * d, 0.95 * d, max(0.5, d / 100))
        cx, cy = x - left - 0.5, y - top - 0.5
        xs = cx + radii[None, :] * np.cos(angles)[:, None]
        ys = cy + radii[None, :] * np.sin(angles)[:, None]
        profiles = ndimage.map_coordinates(win, [ys.ravel(), xs.ravel()], order=1, mode="nearest").reshape(xs.shape)
        edges = radii[np.argmin(np.diff(profiles, axis=1), axis=1)] + (radii[1] - radii[0]) / 2
        out[i] = 2 * (np.percentile(edges, 25) if filament[i] else np.median(edges))
    return out


def link_chains(
    xy_nm: np.ndarray, classes: Sequence[str], diameters: Mapping[str, float], fraction: float
) -> np.ndarray:
    """Chain id of each particle of a filament class (:data:`FILAMENT_CLASSES`), -1 for the others:
    points closer than ``fraction`` x the mean of their two classes' diameters linked, transitively
    (connected components, :func:`scipy.sparse.csgraph.connected_components`), whichever filament
    class each was given: one virion's points called Ebola in one place and Marburg in another are
    one filament (:func:`filament_classes` gives it one class)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    chain = np.full(len(xy_nm), -1, dtype=int)
    idx = np.flatnonzero(np.isin(np.asarray(classes), FILAMENT_CLASSES))
    if not len(idx):
        return chain
    pts = np.asarray(xy_nm, float)[idx]
    d = np.array([diameters.get(c, 80.0) for c in np.asarray(classes)[idx]])
    dist = np.hypot(pts[:, None, 0] - pts[None, :, 0], pts[:, None, 1] - pts[None, :, 1])
    a, b = np.nonzero(dist < fraction * (d[:, None] + d[None, :]) / 2)
    _, labels = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(len(idx),) * 2), directed=False)
    chain[idx] = labels
    return chain


def filament_classes(chain: np.ndarray, probs: np.ndarray, score: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """The class index of each particle with one class per filament: a chain's points (``chain``
    >= 0, :func:`link_chains`) all take the filament class of the largest particle-score-weighted
    probability summed over them (a virion is of one virus, and a few of its points may look like
    the other's); other particles keep their most probable class. ``probs``: ``(n, classes)``."""
    labels = probs.argmax(axis=1) if len(probs) else np.zeros(0, int)
    filament = [list(classes).index(c) for c in FILAMENT_CLASSES if c in classes]
    for c in np.unique(chain[chain >= 0]):
        members = chain == c
        votes = (score[members, None] * probs[members][:, filament]).sum(axis=0)
        labels[members] = filament[int(votes.argmax())]
    return labels


def count_units(chain: Sequence[int]) -> int:
    """Particles as a microscopist counts them, from the ``chain`` of each point (-1: not a
    filament's, :func:`link_chains`; or the annotated particle of a filament's centre-line
    vertex): each filament once, each other particle once."""
    chain = np.asarray(chain)
    return int((chain < 0).sum() + len(np.unique(chain[chain >= 0])))


# ------------------------------------------------------------------------- detector fitting


def _image_centres(particles: pd.DataFrame, pixel_size_nm: float) -> pd.DataFrame:
    centres = annotated_centres(particles)
    return centres.assign(x_nm=centres.x * pixel_size_nm, y_nm=centres.y * pixel_size_nm)


def fit_detector(
    images: pd.DataFrame,
    particles: pd.DataFrame,
    raw_root,
    diameters: Mapping[str, float],
    options: Options = Options(),
    seed: int = 0,
) -> dict:
    """Train the heat-map network (:func:`temvirus.heatmap.train_heatnet`) on crops of the
    ``train`` images and choose its suppression distance and score threshold on the
    ``validation`` images (column ``subset``; test images are refused): the pair of best pooled
    detection F1. Targets: every annotated centre (:func:`annotated_centres`) with its class's
    diameter; a centre line of 3 or more vertices is a ridge (:func:`temvirus.heatmap.line_points`).
    Returns the detector (JSON-serialisable: options, diameters, the network's weights, the
    chosen ``nms_fraction`` and ``threshold``, validation precision, recall and F1)."""
    import time

    from temvirus.heatmap import Prepared, bank_crops, line_points, state_to_json, train_heatnet
    from temvirus.raw import read_image
    from temvirus.seeding import rng

    subsets = set(images.subset)
    if not subsets <= {"train", "validation"}:
        raise ValueError(f"the detector is fitted on train and validation images only, got subsets {sorted(subsets)}")
    by_image = {k: v for k, v in particles.groupby("image_id")}
    draw = rng(seed, "micrographs", "bank")
    bank, validation = [], []
    started = time.perf_counter()
    for _, image in images.iterrows():
        centres = _image_centres(by_image.get(image.image_id, particles.iloc[:0]), image.pixel_size_nm)
        d = diameters[image["class"]]
        if image.subset == "validation":
            validation.append((image, centres))
            continue
        ridge = line_points(centres, options.heat_nm)
        xy = np.vstack([centres[["x_nm", "y_nm"]].to_numpy(float).reshape(-1, 2), ridge])
        positive = np.r_[np.ones(len(centres), bool), np.zeros(len(ridge), bool)]
        prepared = Prepared.of(read_image(Path(raw_root) / image.path), image.pixel_size_nm)
        side = options.crop_px + 32
        bank += bank_crops(
            prepared, xy, np.full(len(xy), d), positive, options.heat_nm, side, options.crops_per_image, draw
        )
    model, curve = train_heatnet(
        bank,
        widths=options.widths,
        steps=options.steps,
        batch_size=options.train_batch,
        crop_px=options.crop_px,
        lr=options.lr,
        sigma_fraction=options.sigma_fraction,
        heat_nm=options.heat_nm,
        seed=seed,
    )
    detector = {
        "kind": DETECTOR_KIND,
        "method": "particle-centre heat map (temvirus.heatmap), peaks, non-maximum suppression",
        "diameters_nm": dict(diameters),
        "options": asdict(options),
        "state": state_to_json(model),
        "state_sha256": state_sha256(state_to_json(model)),
        "n_train_images": int((images.subset == "train").sum()),
        "n_train_crops": len(bank),
        "training_loss": [round(v, 4) for v in curve],
    }
    # the time goes to the log, not the file: the same config and seed give the same detector file
    log.info("heat map trained in %.1f s", time.perf_counter() - started)
    items = validation or list(_train_items(images, particles))
    peaks = []
    for image, centres in items:
        found = detect_peaks(read_image(Path(raw_root) / image.path), image.pixel_size_nm, detector)
        peaks.append((found, centres, diameters[image["class"]] / 2))
    detector.update(_choose_settings(peaks, options.nms_fractions))
    detector["threshold_from"] = "validation" if validation else "train (no validation images)"
    return detector


def _train_items(images: pd.DataFrame, particles: pd.DataFrame):
    for _, image in images[images.subset == "train"].iterrows():
        yield image, _image_centres(particles[particles.image_id == image.image_id], image.pixel_size_nm)


def _choose_settings(peaks, fractions: Sequence[float]) -> dict:
    """The suppression fraction and score threshold of best pooled detection F1 over ``peaks``
    (found peaks, annotated centres, matching tolerance nm) of a set of images."""
    best = {"nms_fraction": float(fractions[0]), "threshold": 0.5, "validation_f1": -1.0}
    for fraction in fractions:
        kept = []
        for found, centres, tol in peaks:
            order = suppress(found, found.score.to_numpy(), fraction) if len(found) else np.zeros(0, dtype=int)
            kept.append((found.iloc[order], centres[["x_nm", "y_nm"]].to_numpy(), tol))
        chosen = best_threshold(kept)
        if chosen["validation_f1"] > best["validation_f1"]:
            best = {"nms_fraction": float(fraction), **chosen}
    return best


def best_threshold(kept) -> dict:
    """The score threshold of best pooled detection F1 over ``kept`` (found particles with a
    ``score`` column, annotated centres (n, 2) nm, matching tolerance nm) of a set of images,
    with its precision and recall (``threshold, validation_f1, validation_precision,
    validation_recall``). Thresholds tried: 0.05-0.95 by 0.01 and 50 quantiles of the scores."""
    best = {"threshold": 0.5, "validation_f1": -1.0}
    for t in _threshold_grid(kept):
        pairs = found_n = true_n = 0
        for found, centres, tol in kept:
            sel = found[found.score >= t]
            pairs += len(match(sel[["x_nm", "y_nm"]].to_numpy(), centres, tol))
            found_n += len(sel)
            true_n += len(centres)
        stats = detection_counts(pairs, found_n, true_n)
        if stats["f1"] > best["validation_f1"]:
            best = {
                "threshold": float(t),
                "validation_f1": stats["f1"],
                "validation_precision": stats["precision"],
                "validation_recall": stats["recall"],
            }
    return best


def _threshold_grid(kept) -> np.ndarray:
    scores = np.concatenate([f.score.to_numpy() for f, _, _ in kept] + [[0.5]])
    return np.unique(np.concatenate([np.linspace(0.05, 0.95, 91), np.quantile(scores, np.linspace(0, 1, 50))]))


def class_thresholds(kept, n_classes: int, start: float, passes: int = 3) -> tuple[np.ndarray, dict]:
    """Score thresholds per class (n_classes,) of best pooled detection F1 over ``kept`` (found
    particles with ``score`` and ``label``, the index of the class the patch model gives each;
    annotated centres (n, 2) nm; matching tolerance nm) of a set of images.

    Coordinate ascent from ``start`` (:func:`best_threshold`'s one threshold) for every class:
    each class in turn gets the threshold of :func:`best_threshold`'s grid that raises the
    pooled F1 most with the others held, until a pass changes none (at most ``passes``). A class
    no particle is given keeps ``start``. Beyond the paper: the heat map cannot tell a
    25-30 nm virion (Astrovirus, Norovirus: 4-5 px at 6 nm/px) from a stain blob of its size,
    and the patch model, trained on particles only, calls such blobs that class; a class whose
    particles are mostly such blobs on the validation images gets a higher threshold
    (docs/benchmarks.md section 7). Returns the thresholds and their pooled
    :func:`detection_counts` (precision, recall, F1)."""
    thresholds = np.full(n_classes, float(start))
    n_true = sum(len(centres) for _, centres, _ in kept)

    def counts(found, centres, tol, thr):
        sel = found[found.score.to_numpy() >= thr[found.label.to_numpy()]]
        return len(match(sel[["x_nm", "y_nm"]].to_numpy(), centres, tol)), len(sel)

    def pooled(current):
        return detection_counts(sum(p for p, _ in current), sum(n for _, n in current), n_true)

    current = [counts(*item, thresholds) for item in kept]
    best = pooled(current)["f1"]
    grid = _threshold_grid(kept)
    for _ in range(passes):
        changed = False
        for c in range(n_classes):
            given = [i for i, (found, _, _) in enumerate(kept) if (found.label.to_numpy() == c).any()]
            for t in grid if given else ():
                trial = thresholds.copy()
                trial[c] = t
                attempt = list(current)
                for i in given:
                    attempt[i] = counts(*kept[i], trial)
                f1 = pooled(attempt)["f1"]
                if f1 > best + 1e-12:
                    best, thresholds, current, changed = f1, trial, attempt, True
        if not changed:
            break
    return thresholds, pooled(current)


def detect_peaks(pixels: np.ndarray, pixel_size_nm: float, detector: Mapping) -> pd.DataFrame:
    """Heat-map peaks of a raw image (``x_nm, y_nm, score, d_nm``) with the detector's network,
    tile by tile (``tile_nm`` cores): :func:`temvirus.heatmap.heat_peaks`, at two scales.

    The network is trained at ``heat_nm`` nm/px on crops of ``crop_px`` px, so a particle
    filling most of a crop (Cowpox's and Orf's 270-350 nm: 45-58 px at 6 nm/px) gets a weak
    peak. A second pass sees the image at ``large_heat_nm`` nm/px (18: such a particle is then
    15-20 px, as the mid-sized classes are at ``heat_nm``) and keeps its peaks whose diameter,
    scaled by ``large_heat_nm / heat_nm``, is at least ``large_min_nm`` (192 nm, half a 64 px
    crop at 6 nm/px): one network applied to an image pyramid, each level answering for the sizes
    it sees best (the scale normalisation of SNIP, Singh & Davis 2018, arXiv:1711.08189). Both
    levels' peaks go to the same suppression and threshold. ``large_heat_nm`` ``None``: one pass.
    """
    from temvirus.heatmap import heat_peaks, model_from_json

    # a detector fitted before the second pass existed has no large_heat_nm: one pass, as fitted
    options = Options.from_config({"large_heat_nm": None, **detector["options"]})
    model = model_from_json(detector["state"], options.widths)
    tile_px = max(64, int(options.tile_nm / options.heat_nm))
    found = heat_peaks(model, pixels, pixel_size_nm, options.heat_nm, tile_px=tile_px)
    if options.large_heat_nm is None:
        return found
    factor = options.large_heat_nm / options.heat_nm
    large = heat_peaks(
        model, pixels, pixel_size_nm, options.large_heat_nm, tile_px=max(64, int(tile_px / factor)), size_scale=factor
    )
    large = large[large.d_nm >= options.large_min_nm]
    return pd.concat([found, large], ignore_index=True) if len(found) and len(large) else found if len(found) else large


def detect(pixels: np.ndarray, pixel_size_nm: float, detector: Mapping, threshold: float) -> pd.DataFrame:
    """The heat-map peaks of a raw image (``x_nm, y_nm, score, d_nm``, best first) after
    suppression at the detector's ``nms_fraction``, at or above ``threshold``."""
    found = detect_peaks(pixels, pixel_size_nm, detector)
    order = suppress(found, found.score.to_numpy(), detector["nms_fraction"]) if len(found) else np.zeros(0, int)
    kept = found.iloc[order]
    return kept[kept.score >= threshold].reset_index(drop=True)


def size_agreement(d_nm: np.ndarray, probs: np.ndarray, class_diameters_nm: np.ndarray) -> np.ndarray:
    """How well each particle's size fits the classes the patch model gives it, in [0, 1]: the
    expected ratio of the smaller to the larger of the heat map's predicted diameter ``d_nm``
    (n,) and the class's typical diameter ``class_diameters_nm`` (C,), over the class
    probabilities ``probs`` (n, C): ``sum_c p_c min(d, D_c) / max(d, D_c)``. Debris and stain
    blobs the heat map takes for particles are rarely of the size of the class they look like
    (beyond the paper; chosen on the validation images, docs/benchmarks.md section 7)."""
    d = np.asarray(d_nm, float)[:, None]
    ratio = np.minimum(d, class_diameters_nm) / np.maximum(d, class_diameters_nm)
    return (np.asarray(probs) * ratio).sum(axis=1)


def _candidates(pixels: np.ndarray, pixel_size_nm: float, detector: Mapping, classifier, thresholds: np.ndarray):
    """The peaks that could be a particle of some class: heat-map score at or above the lowest
    of ``thresholds`` (C,), the classifier's order (the particle score, heat-map score x
    :func:`size_agreement`, is at most the heat-map score, so no other peak is classified).
    Returns them (:func:`detect`), their class probabilities (n, C), particle scores (n,) and
    whether each particle score is at or above the threshold of its class (n,)."""
    thresholds = np.asarray(thresholds, float)
    found = detect(pixels, pixel_size_nm, detector, float(thresholds.min()))
    probs = classifier.probabilities(pixels, pixel_size_nm, found[["x_nm", "y_nm"]].to_numpy())
    sizes = np.array([detector["diameters_nm"][c] for c in classifier.classes], float)
    if not len(found):
        return found, probs, np.zeros(0), np.zeros(0, bool)
    score = found.score.to_numpy() * size_agreement(found.d_nm.to_numpy(), probs, sizes)
    return found, probs, score, score >= thresholds[probs.argmax(axis=1)]


def particle_thresholds(detector: Mapping, classes: Sequence[str]) -> np.ndarray:
    """The calibrated detector's particle-score thresholds (C,) of ``classes`` (:func:`calibrate`)."""
    return np.array([detector["particle_thresholds"][c] for c in classes], float)


def calibrate(
    images: pd.DataFrame,
    raw_root,
    classifier: Classifier,
    detector: Mapping,
    annotations: pd.DataFrame,
) -> dict:
    """The detector calibrated for one patch model: thresholds on the particle score
    (:func:`_particles`), one per class the patch model gives a particle, of best pooled
    detection F1 over the *validation* images of ``images`` (column ``subset``; others are
    refused) with their annotations: :func:`best_threshold`'s one threshold, then
    :func:`class_thresholds`. Returns the detector with ``particle_thresholds`` ({class:
    threshold}) and ``calibration`` (the model's sha256, the number of images, validation
    precision, recall and F1, and ``one_threshold`` with the F1 of one threshold for all
    classes); a ValueError when a class of the model has no diameter in the detector."""
    subsets = set(images.subset)
    if subsets != {"validation"}:
        raise ValueError(f"the particle threshold is chosen on validation images only, got subsets {sorted(subsets)}")
    missing = sorted(set(classifier.classes) - set(detector["diameters_nm"]))
    if missing:
        raise ValueError(f"the model's classes {missing} have no diameter in the detector (fitted for other classes)")
    from temvirus.raw import read_image

    by_image = {k: v for k, v in annotations.groupby("image_id")}
    n_classes = len(classifier.classes)
    kept = []
    for _, image in images.iterrows():
        pixels = read_image(Path(raw_root) / image.path)
        found, probs, score, _ = _candidates(pixels, image.pixel_size_nm, detector, classifier, np.zeros(n_classes))
        centres = _image_centres(by_image.get(image.image_id, annotations.iloc[:0]), image.pixel_size_nm)
        tol = detector["diameters_nm"][image["class"]] / 2
        label = probs.argmax(axis=1) if len(found) else np.zeros(0, int)
        kept.append((found.assign(score=score, label=label), centres[["x_nm", "y_nm"]].to_numpy(), tol))
    one = best_threshold(kept)
    thresholds, stats = class_thresholds(kept, n_classes, one["threshold"])
    return {
        **detector,
        "particle_thresholds": {c: float(t) for c, t in zip(classifier.classes, thresholds)},
        "calibration": {
            "model_sha256": classifier.sha256,
            "validation_images": len(images),
            **stats,
            "one_threshold": {"threshold": one["threshold"], "f1": one["validation_f1"]},
        },
    }


def read_detector(path, classifier: Classifier | None = None) -> dict:
    """A detector.json of :func:`fit_detector` (or :func:`calibrate`); with ``classifier``, one
    calibrated for that very model (its sha256), with a particle threshold in 0..1 and a
    diameter for each of the model's classes and no threshold of another class. A ValueError
    naming the file for any other file, or one edited by hand into values the analysis cannot
    use (a NaN threshold would keep no particle of its class, unseen)."""
    if not Path(path).is_file():  # a FIFO would be waited on for ever
        what = "not found" if not Path(path).exists() else "not a regular file (a folder, a FIFO?)"
        raise FileNotFoundError(f"{path}: detector file {what}")
    try:
        detector = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a micrograph detector (not JSON: {exc})") from None
    if not isinstance(detector, dict) or detector.get("kind") != DETECTOR_KIND:
        raise ValueError(f"{path}: not a micrograph detector (no kind {DETECTOR_KIND!r})")
    if "state" not in detector or "options" not in detector:
        raise ValueError(
            f"{path}: a micrograph detector of an older version (no heat-map network); fit it again "
            "(rule micrograph_detector)"
        )
    _check_options(path, detector["options"])
    for key in ("nms_fraction", "threshold"):  # the suppression distance and heat-map threshold chosen
        value = detector.get(key)
        if not _number(value) or not 0 < value <= 1:
            raise ValueError(f"{path}: {key} is {value!r}, not a number in (0, 1]: fit the detector again")
    _check_state(path, detector)
    if classifier is None:
        return detector
    if "calibration" not in detector:
        raise ValueError(
            f"{path}: a split's detector, not yet calibrated for a patch model: give the "
            "results/micrographs/detector/{model}/{init}/{method}.json of rule calibrate_micrographs"
        )
    if "particle_thresholds" not in detector:
        raise ValueError(
            f"{path}: calibrated by an older version (one particle threshold for all classes): run rule "
            "calibrate_micrographs again"
        )
    calibrated_for = detector["calibration"].get("model_sha256") if isinstance(detector["calibration"], dict) else None
    if calibrated_for != classifier.sha256:
        raise ValueError(
            f"{path}: calibrated for another model (sha256 {str(calibrated_for)[:12]}..., "
            f"{classifier.path} has {classifier.sha256[:12]}...): run rule calibrate_micrographs for this model"
        )
    _check_class_values(
        path, detector, "particle_thresholds", classifier.classes, lambda v: 0 <= v <= 1, "in 0..1", True
    )
    _check_class_values(path, detector, "diameters_nm", classifier.classes, lambda v: v > 0, "above 0")
    return detector


def state_sha256(state: Mapping) -> str:
    """SHA-256 of a detector's network weights (:func:`temvirus.heatmap.state_to_json`), its
    tensors' names, shapes and data, by name (JSON files are written with sorted keys): a weight
    changed by hand or by a damaged copy (one base64 character) no longer matches the
    ``state_sha256`` written beside them."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(json.dumps([name, tensor["shape"], tensor["data"]]).encode())
    return digest.hexdigest()


def _number(value) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_options(path, options) -> None:
    """A ValueError naming ``path`` and the key unless the detector's ``options`` (the config's
    ``micrographs`` settings it was fitted with, :class:`Options`) hold values the analysis can use,
    as the config schema and :mod:`temvirus.configcheck` require of them: whole numbers of at least 1
    (``tile_nm``, ``steps``, ``crop_px``, ``train_batch``, ``crops_per_image``), finite numbers above 0
    (``heat_nm``, ``sigma_fraction``, ``lr``, ``chain_fraction``; ``large_min_nm`` 0 or more), the
    network's ``widths`` (2 or more whole numbers of at least 1), ``nms_fractions`` in (0, 1], and
    ``large_heat_nm`` null or coarser than ``heat_nm``. A NaN or negative ``chain_fraction`` made every
    filament point a filament of its own, unseen."""
    if not isinstance(options, dict):
        raise ValueError(f"{path}: options is {type(options).__name__}, not a mapping of settings: fit it again")
    defaults = Options()

    def bad(key, value, what):
        return ValueError(f"{path}: options.{key} is {value!r}, not {what}: fit the detector again")

    for key in ("tile_nm", "steps", "crop_px", "train_batch", "crops_per_image"):
        value = options.get(key, getattr(defaults, key))
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(key, value, "a whole number of at least 1")
    for key in ("heat_nm", "sigma_fraction", "lr", "chain_fraction", "large_min_nm"):
        value = options.get(key, getattr(defaults, key))
        if not _number(value) or not (value >= 0 if key == "large_min_nm" else value > 0):
            raise bad(key, value, "a finite number " + ("of 0 or more" if key == "large_min_nm" else "above 0"))
    widths = options.get("widths", defaults.widths)
    if (
        not isinstance(widths, (list, tuple))
        or len(widths) < 2
        or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)
    ):
        raise bad("widths", widths, "a list of 2 or more whole numbers of at least 1")
    fractions = options.get("nms_fractions", defaults.nms_fractions)
    if (
        not isinstance(fractions, (list, tuple))
        or not fractions
        or not all(_number(f) and 0 < f <= 1 for f in fractions)
    ):
        raise bad("nms_fractions", fractions, "a list of numbers in (0, 1]")
    large = options.get("large_heat_nm")
    if large is not None and not (_number(large) and large > options.get("heat_nm", defaults.heat_nm)):
        raise bad("large_heat_nm", large, "null or a number coarser than heat_nm")


def _check_state(path, detector: Mapping) -> None:
    """A ValueError naming ``path`` unless the detector's ``state`` is the network its ``widths``
    make, with finite weights, as ``state_sha256`` recorded them (:func:`state_sha256`)."""
    import binascii

    from temvirus.heatmap import model_from_json

    state = detector["state"]
    recorded = detector.get("state_sha256")
    if not isinstance(state, dict) or recorded is None:
        raise ValueError(
            f"{path}: no state_sha256 beside the network's weights (a detector of an older version, or edited): "
            "fit it again (rule micrograph_detector)"
        )
    try:
        found = state_sha256(state)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"{path}: state is not a network's weights ({exc!r}): fit the detector again") from None
    if found != recorded:
        raise ValueError(
            f"{path}: the network's weights are not those recorded (state_sha256 {str(recorded)[:12]}..., the weights "
            f"give {found[:12]}...): changed or damaged; fit the detector again or copy it again"
        )
    try:
        model = model_from_json(state, tuple(detector["options"].get("widths", Options().widths)))
    except (KeyError, RuntimeError, ValueError, TypeError, binascii.Error) as exc:
        raise ValueError(
            f"{path}: state is not the network of options.widths ({type(exc).__name__}: {str(exc)[:120]}): "
            "fit the detector again"
        ) from None
    import torch

    if not all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point()):
        raise ValueError(f"{path}: the network's weights hold NaN or infinite values: not a usable detector")


def _check_class_values(path, detector: Mapping, key: str, classes, valid, what: str, exact: bool = False) -> None:
    """A ValueError naming ``path`` unless ``detector[key]`` is ``{class: number}`` with a finite
    number for each of ``classes`` (the patch model's) for which ``valid(number)`` holds
    (``what`` says the range), and, with ``exact``, no other class: a detector edited by hand
    must not leave a class without particles (a NaN threshold keeps none) or fail with a bare
    KeyError half-way through."""
    values = detector.get(key)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: {key} is not a {{class: number}} mapping: run rule calibrate_micrographs again")
    missing = [c for c in classes if c not in values]
    if missing:
        raise ValueError(
            f"{path}: {key} has no value for the model's classes {missing}: run rule calibrate_micrographs"
        )
    other = sorted(set(values) - set(classes)) if exact else []
    if other:
        raise ValueError(
            f"{path}: {key} has values for classes the model does not give {other}: run rule calibrate_micrographs"
        )
    for c in classes:
        v = values[c]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not valid(v):
            raise ValueError(
                f"{path}: {key} of {c} is {v!r}, not a number {what}: run rule calibrate_micrographs again"
            )


# ------------------------------------------------------------------------- analysis


def _check_model_zip(path: Path) -> None:
    """A ValueError naming ``path`` when it is empty, or a zip (as torch saves models) cut short
    or with a member failing its CRC: torch reports an empty file as a bare EOFError, most cuts as
    "[Errno 22] Invalid argument", and does not check the CRCs, so a flipped byte in the weights
    would be loaded. Other files are left to :func:`temvirus.train.load_checkpoint` (its error
    says what they are)."""
    import zipfile

    with path.open("rb") as fh:
        magic = fh.read(4)
    if not magic:
        reason = "empty: 0 bytes"
    elif magic != b"PK\x03\x04":
        return
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            reason = f"member {bad} fails its CRC" if bad else None
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
    if reason:
        raise ValueError(
            f"{path}: a model file cut short or damaged ({reason}): copy it again from where it was trained"
        )


@dataclass
class Classifier:
    """A trained patch model and how to feed it (the checkpoint's classes and input size)."""

    model: object
    classes: list[str]
    input_size: int | None
    device: object
    path: Path
    sha256: str
    batch_size: int = 64

    @classmethod
    def load(cls, checkpoint, device: str = "auto", batch_size: int = 64) -> Classifier:
        from temvirus.train import DamagedModelError, load_checkpoint, resolve_device

        path = Path(checkpoint)
        if path.is_dir():
            raise IsADirectoryError(
                f"{path}: a folder, not a model file (results/models/{{model}}/{{init}}/{{method}}/best.pt)"
            )
        if not path.is_file():
            what = "not a regular file (a FIFO, a device?)" if path.exists() else "not found"
            raise FileNotFoundError(f"{path}: model file {what}")
        _check_model_zip(path)
        try:
            model, meta = load_checkpoint(path)
        except DamagedModelError:  # one of this workflow's models, its weights unusable: said as it is
            raise
        except Exception as exc:  # a zip of another kind, a pickle, text...
            with path.open("rb") as fh:
                json_text = fh.read(64).lstrip().startswith(b"{")
            first = (str(exc).strip().splitlines() or [repr(exc)])[0]
            # torch's own messages advise weights_only=False, which this workflow never needs
            what = type(exc).__name__ + ("" if "weights_only" in str(exc) else f": {first}")
            if json_text:
                what = "a JSON file (a micrograph detector goes to --detector)"
            raise ValueError(
                f"{path}: not a trained model of this workflow (a best.pt of train_model): {what}"
            ) from None
        from temvirus.io import sha256_file

        dev = resolve_device(device)
        return cls(
            model.to(dev).eval(),
            list(meta["classes"]),
            meta.get("input_size"),
            dev,
            path,
            sha256_file(path),
            batch_size,
        )

    def probabilities(self, pixels: np.ndarray, pixel_size_nm: float, xy_nm: np.ndarray) -> np.ndarray:
        from temvirus.patches import extract_image
        from temvirus.train import area_downsample, compact_tensor, predict

        if not len(xy_nm):
            return np.zeros((0, len(self.classes)))
        out = []
        for start in range(0, len(xy_nm), 256):  # bounded: 256 patches of 256x256 at a time
            patches = extract_image(pixels, pixel_size_nm, xy_nm[start : start + 256])
            if self.input_size:
                patches = area_downsample(patches, self.input_size)
            out.append(predict(self.model, compact_tensor(patches), self.batch_size, self.device))
        return np.vstack(out)


def _is_raw_root(folder: Path) -> bool:
    """Whether ``folder`` holds the raw layout (:func:`temvirus.download.is_raw_root`)."""
    from temvirus.download import is_raw_root
    from temvirus.raw import RawDataError

    try:
        return folder.is_dir() and is_raw_root(folder)
    except (RawDataError, OSError):  # Test/ beside test/, or a folder that cannot be listed: no raw layout to spoil
        return False


def analyse_image(
    pixels: np.ndarray,
    pixel_size_nm: float,
    detector: Mapping,
    classifier: Classifier,
    image_id: str = "image",
) -> tuple[pd.DataFrame, dict]:
    """Particles of one raw image (:data:`PARTICLE_COLUMNS`) and its call (``call``,
    ``confidence``, ``call_from``, ``n_particles`` (each filament once), ``n_points``, ``count_{class}``,
    ``filaments``, ``unseen_classes``: the model's classes under :data:`MIN_PARTICLE_PX` pixels across
    at ``pixel_size_nm``, space-separated, whose particles the image cannot show, so that a call or
    count of one of them is meaningless; empty where none) with a
    detector calibrated for ``classifier`` (:func:`calibrate`): the particles whose particle score
    is at or above the threshold of their class (``particle_thresholds``), each particle's vote
    weighted by that score; with none, the strongest peak's class (module docstring, step 6)."""
    options = Options.from_config(detector["options"])
    diameters = {c: float(detector["diameters_nm"][c]) for c in classifier.classes}
    thresholds = particle_thresholds(detector, classifier.classes)
    found, found_probs, found_score, passed = _candidates(pixels, pixel_size_nm, detector, classifier, thresholds)
    kept, probs, score = found[passed].reset_index(drop=True), found_probs[passed], found_score[passed]
    xy = kept[["x_nm", "y_nm"]].to_numpy()
    first = [classifier.classes[i] for i in probs.argmax(axis=1)] if len(probs) else []
    chain = link_chains(xy, first, diameters, options.chain_fraction) if len(xy) else np.zeros(0, int)
    index = filament_classes(chain, probs, score, classifier.classes)
    labels = [classifier.classes[i] for i in index]
    filament = np.isin(labels, FILAMENT_CLASSES)
    diam = measure_diameters(pixels, pixel_size_nm, xy, kept.d_nm.to_numpy(), filament) if len(xy) else np.zeros(0)
    table = pd.DataFrame(
        {
            "image_id": image_id,
            "particle": np.arange(len(kept)),
            "x": (xy[:, 0] / pixel_size_nm).round(2) if len(xy) else [],
            "y": (xy[:, 1] / pixel_size_nm).round(2) if len(xy) else [],
            "x_nm": xy[:, 0].round(2) if len(xy) else [],
            "y_nm": xy[:, 1].round(2) if len(xy) else [],
            "class": labels,
            "probability": probs[np.arange(len(probs)), index].round(4) if len(probs) else [],
            "heat_score": kept.score.round(4),
            "score": np.round(score, 4),
            "diameter_nm": np.round(diam, 1),
            "chain": chain,
        }
    )[PARTICLE_COLUMNS]
    votes = (score[:, None] * probs).sum(axis=0) if len(probs) else np.zeros(len(classifier.classes))
    if votes.sum() > 0:
        called, confidence, call_from = classifier.classes[int(votes.argmax())], votes.max() / votes.sum(), "particles"
    elif len(found):  # no particle passed its class's threshold: the strongest candidate's class
        strongest = found_probs[int(found_score.argmax())]
        called, confidence, call_from = classifier.classes[int(strongest.argmax())], strongest.max(), "strongest peak"
    else:
        called, confidence, call_from = "", 0.0, ""
    call = {
        "image_id": image_id,
        "pixel_size_nm": pixel_size_nm,
        "call": called,
        "confidence": round(float(confidence), 4),
        "call_from": call_from,
        "n_particles": count_units(table.chain),  # each filament once, as the raw tables' n_particles
        "n_points": len(table),
        "filaments": int(table.loc[table.chain >= 0, "chain"].nunique()),
        "unseen_classes": " ".join(unseen_classes(diameters, classifier.classes, pixel_size_nm)),
    }
    for cls in classifier.classes:  # filaments counted as virions, not as the points along them
        of_class = table["class"] == cls
        call[f"count_{cls}"] = count_units(table.chain[of_class])
    return table, call


def evaluate_image(
    found: pd.DataFrame,
    annotated: pd.DataFrame,
    true_class: str,
    pixel_size_nm: float,
    diameters: Mapping[str, float],
    sizes: pd.DataFrame | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Detection and count figures of one image against its annotations (``particle, vertex, x, y``
    in px) and the matched pairs (``particle`` found, ``true_particle``, diameters when ``sizes``
    (``particle, diameter_nm``) gives the true ones)."""
    centres = _image_centres(annotated, pixel_size_nm)
    tol = np.full(len(centres), diameters[true_class] / 2)
    pairs = match(found[["x_nm", "y_nm"]].to_numpy(), centres[["x_nm", "y_nm"]].to_numpy(), tol)
    matched = pd.DataFrame(
        {
            "particle": [found.particle.iloc[i] for i, _ in pairs],
            "true_particle": [int(centres.particle.iloc[j]) for _, j in pairs],
            "diameter_nm": [float(found.diameter_nm.iloc[i]) for i, _ in pairs],
        }
    )
    if sizes is not None and len(matched):
        true_d = sizes.set_index("particle")["diameter_nm"]
        matched["true_diameter_nm"] = true_d.reindex(matched.true_particle).to_numpy()
    # counts of particles, each filament once: the annotated centre lines, the found chains
    annotated_count = count_units(centres.particle if true_class in FILAMENT_CLASSES else np.full(len(centres), -1))
    found_count = count_units(found.chain)
    row = {
        "n_annotated": len(centres),
        "n_found": len(found),
        "n_matched": len(pairs),
        **detection_counts(len(pairs), len(found), len(centres)),
        "annotated_count": annotated_count,
        "found_count": found_count,
        "count_error": found_count - annotated_count,
        "relative_count_error": abs(found_count - annotated_count) / max(annotated_count, 1),
    }
    return row, matched


# ------------------------------------------------------------------------- a set of images


#: columns of the evaluation table (one row per image with annotations)
EVALUATION_COLUMNS = [
    "image_id",
    "class",
    "call",
    "correct",
    "n_annotated",
    "n_found",
    "n_matched",
    "precision",
    "recall",
    "f1",
    "annotated_count",
    "found_count",
    "count_error",
    "relative_count_error",
    "median_diameter_error",
]


def analyse_micrographs(
    images: pd.DataFrame,
    raw_root,
    classifier: Classifier,
    detector: Mapping,
    out_dir,
    *,
    annotations: pd.DataFrame | None = None,
    sizes: pd.DataFrame | None = None,
    note: str = "",
    overlay_side: int = 1024,
    replace: bool = True,
) -> dict:
    """Analyse every image of ``images`` (``image_id``, ``path`` under ``raw_root`` or absolute,
    ``pixel_size_nm``, optionally ``class``) and write to ``out_dir``: ``particles/{image_id}.csv``
    (:data:`PARTICLE_COLUMNS`), ``overlays/{image_id}.png``, ``summary.csv`` (one row per image:
    call, confidence, counts per class), ``sizes.png`` (size histograms per class) and, with
    ``annotations`` (the particle table, ``image_id, particle, vertex, x, y``) and ``class``,
    ``evaluation.csv`` (:data:`EVALUATION_COLUMNS`) and ``metrics.json`` (pooled detection
    precision/recall/F1, count errors, image-level accuracy, with ``sizes`` (true diameters,
    ``image_id, particle, diameter_nm``) the median relative diameter error).

    Everything is written into a temporary folder beside ``out_dir`` that replaces it only when
    complete: a failure (an unreadable image...) leaves no half-written output. With
    ``replace=False`` an ``out_dir`` that another run filled meanwhile is kept and this run ends in
    a FileExistsError (:func:`temvirus.io.atomic_dir`). Returns the metrics (an empty dict without
    annotations).
    """
    from temvirus.figures import micrograph_overlay, size_histograms
    from temvirus.io import atomic_dir, save_figure, write_csv, write_json
    from temvirus.raw import read_image

    diameters = {c: float(v) for c, v in detector["diameters_nm"].items()}
    evaluate = annotations is not None and "class" in images.columns
    by_image = {k: v for k, v in annotations.groupby("image_id")} if evaluate else {}
    true_sizes = {k: v for k, v in sizes.groupby("image_id")} if sizes is not None else {}
    calls, evaluations, all_particles, matched_all = [], [], [], []
    with atomic_dir(out_dir, replace=replace) as tmp:
        (tmp / "particles").mkdir()
        (tmp / "overlays").mkdir()
        for _, image in images.iterrows():
            path = Path(image.path) if Path(image.path).is_absolute() else Path(raw_root) / image.path
            pixels = read_image(path, mapped=True)
            table, call = analyse_image(pixels, float(image.pixel_size_nm), detector, classifier, image.image_id)
            write_csv(tmp / "particles" / f"{image.image_id}.csv", table)
            weak = ", from the strongest peak, below threshold" if call["call_from"] == "strongest peak" else ""
            count = sum(call[f"count_{c}"] for c in classifier.classes)  # a filament once
            points = f" ({len(table)} points)" if count != len(table) else ""
            title = f"{image.image_id}: {call['call'] or 'nothing found'} ({call['confidence']:.2f}{weak}), {count} particles{points}"
            annotated = None
            if evaluate:
                truth_class = image["class"]
                annotated = by_image.get(image.image_id, annotations.iloc[:0])
                row, matched = evaluate_image(
                    table, annotated, truth_class, float(image.pixel_size_nm), diameters, true_sizes.get(image.image_id)
                )
                errors = (
                    (matched.diameter_nm - matched.true_diameter_nm).abs() / matched.true_diameter_nm
                    if "true_diameter_nm" in matched
                    else pd.Series(dtype=float)
                )
                evaluations.append(
                    {
                        "image_id": image.image_id,
                        "class": truth_class,
                        "call": call["call"],
                        "correct": call["call"] == truth_class,
                        **row,
                        "median_diameter_error": float(errors.median()) if len(errors.dropna()) else np.nan,
                    }
                )
                matched_all.append(errors.dropna())
                title += f"; annotated {truth_class}: {row['n_matched']}/{row['n_annotated']} found"
                call["class"] = truth_class
            fig = micrograph_overlay(
                pixels, float(image.pixel_size_nm), table, classifier.classes, title, overlay_side, annotated
            )
            save_figure(tmp / "overlays" / f"{image.image_id}.png", fig)
            calls.append(call)
            all_particles.append(table)
            log.info("%s", title)  # the title begins with the image id
            del pixels
        summary = pd.DataFrame(calls)
        front = ["image_id", "class"] if "class" in summary else ["image_id"]
        summary = summary[front + [c for c in summary.columns if c not in front]]
        write_csv(tmp / "summary.csv", summary.sort_values("image_id", kind="stable"))
        particles = (
            pd.concat(all_particles, ignore_index=True) if all_particles else pd.DataFrame(columns=PARTICLE_COLUMNS)
        )
        save_figure(tmp / "sizes.png", size_histograms(particles, classifier.classes, diameters, note))
        metrics: dict = {}
        if evaluate:
            frame = pd.DataFrame(evaluations, columns=EVALUATION_COLUMNS).sort_values("image_id", kind="stable")
            write_csv(tmp / "evaluation.csv", frame.round(6))
            metrics = summarise_evaluation(frame, pd.concat(matched_all) if matched_all else pd.Series(dtype=float))
            metrics["note"] = note
            metrics["particle_thresholds"] = detector["particle_thresholds"]
            metrics["validation_f1"] = detector["calibration"]["f1"]
            write_json(tmp / "metrics.json", metrics)
    return metrics


def summarise_evaluation(frame: pd.DataFrame, diameter_errors: pd.Series) -> dict:
    """Pooled figures of an evaluation table: detection precision/recall/F1 over all images,
    mean absolute and mean relative count error per image, image-level accuracy, and the
    median relative diameter error of the matched particles whose true size is known."""
    pooled = detection_counts(int(frame.n_matched.sum()), int(frame.n_found.sum()), int(frame.n_annotated.sum()))
    errors = diameter_errors.dropna()
    return {
        "images": len(frame),
        "annotated": int(frame.n_annotated.sum()),
        "found": int(frame.n_found.sum()),
        "matched": int(frame.n_matched.sum()),
        **pooled,
        "count_mae": float(frame.count_error.abs().mean()) if len(frame) else float("nan"),
        "count_relative_error": float(frame.relative_count_error.mean()) if len(frame) else float("nan"),
        "image_accuracy": float(frame.correct.mean()) if len(frame) else float("nan"),
        "median_diameter_error": float(errors.median()) if len(errors) else None,
        "diameters_compared": len(errors),
    }


def subset_images(
    images_csv, split_csv, subsets: Sequence[str], classes: Sequence[str], cap: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """The image rows (with ``subset``) of a split's ``subsets`` whose class is one of
    ``classes``; at most ``cap`` random images per class and subset (``None``: all)."""
    from temvirus.seeding import rng

    images = pd.read_csv(images_csv)
    split = pd.read_csv(split_csv)[["image_id", "subset"]]
    table = images.merge(split, on="image_id", validate="one_to_one")
    table = table[table.subset.isin(subsets) & table["class"].isin(classes)].sort_values("image_id", kind="stable")
    if cap is not None:
        draw = rng(seed, "micrographs", *subsets)
        keep = []
        for _, group in table.groupby(["class", "subset"], sort=True):
            keep += list(group.index[np.sort(draw.permutation(len(group))[:cap])])
        table = table.loc[sorted(keep, key=list(table.index).index)]
    return table.reset_index(drop=True)


def fit_from_tables(
    images_csv,
    particles_csv,
    split_csv,
    raw_root,
    table1_csv,
    classes,
    section: Mapping,
    out_json,
    seed: int = 0,
    threads: int | None = None,
) -> dict:
    """The rule ``micrograph_detector``: :func:`fit_detector` on a split's train and validation
    images with the config's ``micrographs`` section (on ``threads`` CPU threads), written to
    ``out_json``."""
    import torch

    from temvirus.io import write_json

    if threads is not None:
        torch.set_num_threads(max(1, threads))

    images = subset_images(
        images_csv, split_csv, ("train", "validation"), classes, section.get("max_fit_images_per_class"), seed
    )
    diameters = class_diameters(classes, table1_csv, section.get("diameters_nm"))
    detector = fit_detector(images, pd.read_csv(particles_csv), raw_root, diameters, Options.from_config(section), seed)
    write_json(out_json, detector)
    log.info(
        "%s: threshold %.3f, validation precision %.3f recall %.3f F1 %.3f",
        out_json,
        detector["threshold"],
        detector.get("validation_precision", float("nan")),
        detector.get("validation_recall", float("nan")),
        detector["validation_f1"],
    )
    return detector


def _model_and_images(
    checkpoint, device: str, batch_size: int, threads, images_csv, split_csv, subset: str, cap=None, seed: int = 0
) -> tuple[Classifier, pd.DataFrame]:
    """The patch model of ``checkpoint`` (torch on ``threads`` CPU threads) and a split's images
    of ``subset`` of its classes (:func:`subset_images`); a ValueError when there are none."""
    import torch

    if threads is not None:
        torch.set_num_threads(max(1, threads))
    classifier = Classifier.load(checkpoint, device, batch_size)
    images = subset_images(images_csv, split_csv, (subset,), classifier.classes, cap, seed)
    if images.empty:
        raise ValueError(f"{split_csv}: no {subset} images of the model's classes {classifier.classes}")
    return classifier, images


def calibrate_from_tables(
    checkpoint,
    detector_json,
    images_csv,
    particles_csv,
    split_csv,
    raw_root,
    out_json,
    *,
    device: str = "auto",
    batch_size: int = 64,
    threads: int | None = None,
) -> dict:
    """The rule ``calibrate_micrographs``: a split's detector calibrated (:func:`calibrate`) for an
    experiment's best model on the split's validation images (of the model's classes), written
    to ``out_json``."""
    from temvirus.io import write_json

    classifier, images = _model_and_images(checkpoint, device, batch_size, threads, images_csv, split_csv, "validation")
    detector = calibrate(images, raw_root, classifier, read_detector(detector_json), pd.read_csv(particles_csv))
    write_json(out_json, detector)
    calibration = detector["calibration"]
    log.info(
        "%s: particle thresholds %s, validation precision %.3f recall %.3f F1 %.3f (one threshold: F1 %.3f; "
        "heat map alone: F1 %.3f)",
        out_json,
        {c: round(t, 3) for c, t in detector["particle_thresholds"].items()},
        calibration["precision"],
        calibration["recall"],
        calibration["f1"],
        calibration["one_threshold"]["f1"],
        detector["validation_f1"],
    )
    return detector


def analyse_from_tables(
    checkpoint,
    detector_json,
    images_csv,
    particles_csv,
    split_csv,
    raw_root,
    out_dir,
    *,
    sizes_csv=None,
    max_images_per_class: int | None = None,
    device: str = "auto",
    batch_size: int = 64,
    threads: int | None = None,
    note: str = "",
    seed: int = 0,
) -> dict:
    """The rule ``analyse_micrographs``: every test image of a split (of the model's classes),
    analysed with an experiment's best model and the split's detector, evaluated against the
    annotations (and the true sizes of synthetic data, ``sizes_csv``)."""
    classifier, images = _model_and_images(
        checkpoint, device, batch_size, threads, images_csv, split_csv, "test", max_images_per_class, seed
    )
    detector = read_detector(detector_json, classifier)
    sizes = pd.read_csv(sizes_csv) if sizes_csv else None
    metrics = analyse_micrographs(
        images, raw_root, classifier, detector, out_dir, annotations=pd.read_csv(particles_csv), sizes=sizes, note=note
    )
    log.info(
        "%s: detection F1 %.3f (precision %.3f, recall %.3f), image accuracy %.3f, count error %.2f",
        out_dir,
        metrics["f1"],
        metrics["precision"],
        metrics["recall"],
        metrics["image_accuracy"],
        metrics["count_relative_error"],
    )
    return metrics


@dataclass
class _Folder:
    """One listing of a folder for :func:`tags_file` (each image's lookup then costs no listing)."""

    files: dict[str, bool]  # name -> a regular file (or a link to one)
    by_key: dict[str, list[str]]  # name_key -> names
    tags_by_stem: dict[str, list[str]]  # name_key of the stem before '_tags.csv' -> names

    @classmethod
    def of(cls, folder: Path) -> _Folder:
        from temvirus.raw import name_key

        files: dict[str, bool] = {}
        by_key: dict[str, list[str]] = {}
        tags_by_stem: dict[str, list[str]] = {}
        for p in sorted(folder.iterdir()) if folder.is_dir() else []:
            files[p.name] = p.is_file()
            by_key.setdefault(name_key(p.name), []).append(p.name)
            if p.name.endswith("_tags.csv"):
                tags_by_stem.setdefault(name_key(Path(p.name[:-9]).stem), []).append(p.name)
        return cls(files, by_key, tags_by_stem)


def tags_file(image: Path, listings: dict[Path, _Folder] | None = None) -> Path | None:
    """The tags file of an image outside a raw layout: ``tags/{name}_tags.csv`` or
    ``{name}_tags.csv`` beside it, names matched ignoring case and Unicode normalisation as the
    raw reader does, but not the tags named exactly after another image beside it (``A.tif`` and
    ``a.tif`` are two images on a case-sensitive disk); ``None`` when there is none. A
    RawDataError when several match (in one folder, or one in each that give other values: which
    one is meant is unknown), when the one that matches is not a regular file (a broken link, a
    folder: it would otherwise be passed over unseen), when a file of a similar name
    (``{stem}_tags.csv``, another extension; not the tags of another image beside it) gives other
    values than the one that matches (:func:`temvirus.raw.read_tags`), or when only such a file is
    there: it would otherwise be passed over for ``--pixel-size`` unseen. ``listings``: folders
    listed once for many images (:class:`_Folder`; filled as needed), so that a folder of ``n``
    images costs ``n`` lookups, not ``n`` listings."""
    from temvirus.raw import IMAGE_SUFFIXES, RawDataError, companion_folder, name_key, read_tags

    listings = {} if listings is None else listings
    tags_folder = companion_folder(image.parent, "tags")
    for folder in (image.parent, tags_folder):
        if folder not in listings:
            listings[folder] = _Folder.of(folder)
    here = listings[image.parent]

    def other_file(name: str) -> bool:  # another file beside the image (not the image under another case)
        return (
            name != image.name
            and here.files.get(name, False)
            and not (image.exists() and (image.parent / name).samefile(image))
        )

    name, stem = name_key(f"{image.name}_tags.csv"), name_key(image.stem)
    similar, matches = [], []
    for folder in (tags_folder, image.parent):
        listing = listings[folder]
        found = [n for n in listing.by_key.get(name, []) if not other_file(n[: -len("_tags.csv")])]
        broken = [n for n in found if not listing.files[n]]
        if broken:
            raise RawDataError(
                folder / broken[0], f"the tags file of {image.name} is not a regular file (a broken link, a folder?)"
            )
        if len(found) > 1:
            raise RawDataError(folder / found[0], f"several tags files match {image.name}: {found}")
        matches += [folder / n for n in found]
        # {stem}_tags.csv or {stem}.{another extension}_tags.csv; not {stem}0.tif_tags.csv
        similar += [folder / n for n in listing.tags_by_stem.get(stem, []) if listing.files[n]]

    # a similar name that is not another image's beside it ({stem}.tif_tags.csv of {stem}.tif) and says otherwise;
    # an image by its extension: a file 'A' beside A.tif does not make A_tags.csv another image's
    def another_image(tags: Path) -> bool:
        return any(
            other_file(n) and Path(n).suffix.lower() in IMAGE_SUFFIXES
            for n in here.by_key.get(name_key(tags.name[:-9]), [])
        )

    similar = [p for p in similar if p not in matches and not another_image(p)]
    values = read_tags(matches[0], image=image.name) if matches else None
    for other in matches[1:] + (similar if matches else []):
        if read_tags(other, image=image.name) != values:  # the values: line ends, decimal marks may differ
            raise RawDataError(
                other, f"differs from {matches[0]}: two tags files for {image.name}; remove the one that is wrong"
            )
    if matches:
        return matches[0]
    if similar:
        raise RawDataError(
            similar[0], f"a tags file of a similar name, not {image.name}_tags.csv: rename it (or move it away)"
        )
    return None


def image_pixel_size(
    path: Path, pixel_size_nm: float | None, shape: tuple[int, int], listings: dict[Path, _Folder] | None = None
) -> float:
    """Pixel size (nm) of an image of ``shape`` (height, width px): from its tags file
    (:func:`tags_file`), whose Height and Width must be the image's, else ``pixel_size_nm``, else the
    image's own calibration (:func:`temvirus.raw.embedded_pixel_sizes_nm`: an ImageJ, OME or FEI TIFF,
    a TIFF's or PNG's resolution), which must give both axes, square, every calibration in the file
    agreeing; a
    ValueError naming the file when there is none of these, or when they disagree, and a RawDataError
    when the image's own calibration (a TIFF's or a PNG's) contradicts its tags or ``pixel_size_nm``
    (:func:`temvirus.raw.check_embedded_calibration`).
    A ``pixel_size_nm`` other than the tags file's is not used, with a warning naming the tags file."""
    from temvirus.raw import (
        CALIBRATION_TOLERANCE,
        PIXEL_SIZE_RANGE_NM,
        check_embedded_calibration,
        check_tags_size,
        embedded_pixel_sizes_nm,
        read_tags,
    )

    tags_path = tags_file(path, listings)
    if tags_path is not None:
        tags = read_tags(tags_path, image=path.name)
        check_tags_size(tags, tags_path, path, shape)
        size = float(tags.pixel_size_x_nm)
        if path.is_file():
            check_embedded_calibration(
                path, tags.pixel_size_x_nm, tags.pixel_size_y_nm, f"its tags file {tags_path.name} gives {{axis}}Scale"
            )
        if pixel_size_nm is not None and not math.isclose(size, pixel_size_nm, rel_tol=1e-6):
            log.warning(
                "%s: pixel size %g nm used for %s, not --pixel-size %g (which is for images without a tags file)",
                tags_path,
                size,
                path.name,
                pixel_size_nm,
            )
        return size
    if pixel_size_nm is None:
        embedded = embedded_pixel_sizes_nm(path) if path.is_file() else []
        if not embedded:
            raise ValueError(
                f"{path}: no pixel size: no tags file ({path.parent / 'tags' / (path.name + '_tags.csv')} or "
                f"{path.name}_tags.csv beside it) and no calibration in the image; give --pixel-size NM"
            )
        sizes = [size for _, size, _ in embedded]
        # both axes, every calibration the file holds agreeing: one axis alone (the other implausible,
        # or not given) or two calibrations that differ leave the size unknown
        if {axis for axis, _, _ in embedded} != {"x", "y"} or max(sizes) > min(sizes) * (1 + CALIBRATION_TOLERANCE):
            found = "; ".join(f"{where}: {axis} {size:.4g} nm" for axis, size, where in embedded)
            raise ValueError(
                f"{path}: its own calibration gives no one square pixel size ({found}; a size outside "
                f"{PIXEL_SIZE_RANGE_NM[0]}-{PIXEL_SIZE_RANGE_NM[1]} nm is no calibration): give --pixel-size NM or a "
                "tags file"
            )
        return float(sizes[0])
    low, high = PIXEL_SIZE_RANGE_NM
    if not low <= pixel_size_nm <= high:  # nan too
        raise ValueError(
            f"--pixel-size {pixel_size_nm:g} nm is outside the plausible TEM range {low}-{high} nm (wrong unit?)"
        )
    if path.is_file():
        check_embedded_calibration(path, pixel_size_nm, pixel_size_nm, "--pixel-size gives")
    return float(pixel_size_nm)


def default_detector(checkpoint: Path) -> Path:
    """``results/micrographs/detector/{model}/{init}/{method}.json`` (the detector calibrated for
    the model, rule ``calibrate_micrographs``) of the results folder holding ``checkpoint`` as
    ``results/models/{model}/{init}/{method}/best.pt``; a FileNotFoundError when the model is
    not in such a folder."""
    folder = Path(checkpoint).resolve().parent
    if len(folder.parents) < 4 or folder.parents[2].name != "models":
        raise FileNotFoundError(
            f"the micrograph detector of {checkpoint} is unknown: the model is not in a "
            "results/models/{model}/{init}/{method}/ folder; give --detector"
        )
    return folder.parents[3] / "micrographs" / "detector" / f"{folder.relative_to(folder.parents[2])}.json"


#: fewest pixels across the smallest of the model's classes for its particles to be seen at all
MIN_PARTICLE_PX = 3.0


def unseen_classes(diameters_nm: Mapping, classes: Sequence[str], pixel_size_nm: float) -> list[str]:
    """The ``classes`` (in their order) whose diameter (``diameters_nm``, nm) is under
    :data:`MIN_PARTICLE_PX` pixels of ``pixel_size_nm``: particles an image cannot show."""
    return [c for c in classes if float(diameters_nm[c]) / pixel_size_nm < MIN_PARTICLE_PX]


def warn_coarse_pixels(images: pd.DataFrame, detector: Mapping, classes: Sequence[str]) -> None:
    """A warning for each image (``image_id``, ``path``, ``pixel_size_nm``) whose pixels are too
    coarse for the model's smallest class (its diameter under :data:`MIN_PARTICLE_PX` pixels): the
    analysis still runs, slowly (the image is enlarged to the heat map's pixel), and finds and
    calls particles in what cannot show them; a pixel size given in the wrong unit or for
    another image is the usual cause. summary.csv's ``unseen_classes`` names those classes per
    image (:func:`analyse_image`): a warning in a log alone left a confident call in the table
    that a batch user reads (a probe, 2026-12-05: 40 nm pixels, "Papilloma, 0.66, 286 particles")."""
    smallest = min(classes, key=lambda c: float(detector["diameters_nm"][c]))
    diameter = float(detector["diameters_nm"][smallest])
    for image in images.itertuples():
        if unseen_classes(detector["diameters_nm"], [smallest], image.pixel_size_nm):
            log.warning(
                "%s: pixel size %g nm: the model's smallest class, %s (%g nm), is %.1f px across, too few to "
                "be seen (the particles found will be meaningless; summary.csv's unseen_classes names the classes); "
                "is the pixel size right?",
                image.path,
                image.pixel_size_nm,
                smallest,
                diameter,
                diameter / image.pixel_size_nm,
            )


def analyse_files(
    paths: Sequence[Path],
    checkpoint: Path,
    out_dir: Path,
    pixel_size_nm: float | None = None,
    detector_json: Path | None = None,
    device: str = "auto",
    threads: int = 2,
) -> tuple[dict, pd.DataFrame]:
    """``temvirus analyse``: every image analysed into ``out_dir`` as the workflow does (no
    evaluation: no annotations). Every input is checked first (images exist, are readable, have
    a pixel size and sides long enough to cut patches from, :func:`temvirus.raw.check_image_size`,
    and are not blank frames, :func:`temvirus.raw.check_not_blank`;
    unique names, none hidden (``.x.tif``); the model and detector are of this workflow; ``out_dir`` is new or empty, not the
    current folder); the output folder appears only when complete (for a link, in the folder it
    points to). Raises :class:`temvirus.raw.RawDataError` naming
    an unreadable, blank or too small image or a bad tags file. Returns (metrics, summary)."""
    import torch

    from temvirus.io import temporary_dir, temporary_name_bytes
    from temvirus.raw import check_image_size, check_not_blank, name_key, read_image
    from temvirus.train import resolve_device

    torch.set_num_threads(max(1, threads))
    resolve_device(device, "--device")  # a GPU asked for and absent: said before anything is read
    given = out_dir
    try:
        out_dir = Path(out_dir).resolve()  # a link's folder receives the output; '.' spelt out
    except RuntimeError:  # Python's "Symlink loop from ..."
        raise ValueError(f"{given}: a symbolic link that loops; choose another --out") from None
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{given}: exists and is a file, not an output folder; choose another --out")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{given}: output folder exists and is not empty; remove it or choose another")
    if out_dir == Path.cwd().resolve():  # replaced by the output: the shell would stand in a removed folder
        raise FileExistsError(f"{given}: the current folder ({out_dir}); give a folder inside it or elsewhere")
    for folder in out_dir.parents:  # folders whose own checks would take the output for theirs
        if folder.name == "results" and (folder / "provenance").is_dir():
            raise ValueError(
                f"{given}: inside the workflow's results folder {folder} (its audit fails on files no job made); "
                "write the analysis elsewhere"
            )
        if _is_raw_root(folder):
            raise ValueError(
                f"{given}: inside the raw-layout folder {folder} (its reader refuses folders it does not know); "
                "write the analysis elsewhere"
            )
    ancestor = next(p for p in out_dir.parents if p.exists())  # '/' at the latest
    if not ancestor.is_dir():  # found here, not as "[Errno 17] File exists" after the model is loaded
        raise NotADirectoryError(f"{given}: {ancestor.name} is a file, not a folder; choose another --out")
    # the output is made beside --out and moved into place: found here, not after every image is analysed
    if out_dir.exists() and os.path.ismount(out_dir):
        raise ValueError(f"{given}: a mount point, which cannot be replaced; give a folder inside it")
    name_max = os.pathconf(ancestor, "PC_NAME_MAX")
    if temporary_name_bytes(out_dir.name, folder=True) > name_max:
        raise ValueError(f"{given}: a name too long for its temporary while written ({name_max} bytes at most)")
    try:  # a temporary made and removed: os.access says yes to root, and knows no immutable folder
        os.rmdir(temporary_dir(ancestor / out_dir.name))
    except OSError as exc:
        raise PermissionError(
            f"{given}: {ancestor} is not writable ({exc.strerror}; the output is made there, then moved in place)"
        ) from None
    rows, seen, listings = [], {}, {}
    for path in map(Path, paths):
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:  # the outputs' names, the tables and the figures' titles are UTF-8
            shown = os.fsencode(path).decode("utf-8", "backslashreplace")
            raise ValueError(f"{shown}: a file name that is not UTF-8 text; rename the image") from None
        if path.is_dir():
            raise IsADirectoryError(f"{path}: a folder, not an image; give the image files (e.g. {path}/*.tif)")
        if path.exists() and not path.is_file():
            raise ValueError(f"{path}: not a regular file (a FIFO, a device or a pipe?); give the image file")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image not found")
        if path.name.startswith("."):  # named on purpose: a shell's * leaves hidden files out
            raise ValueError(
                f"{path}: a hidden file's name (starting with '.'): its outputs (particles/{path.stem}.csv, "
                "overlays/...) would be hidden too, and the raw reader skips such files (macOS's ._ copies); "
                "rename the image"
            )
        if path.resolve() in seen:
            raise ValueError(f"{path}: given twice (also as {seen[path.resolve()]}); give each image once")
        seen[path.resolve()] = path
        longest = max(temporary_name_bytes(f"{path.stem}{suffix}") for suffix in (".csv", ".png"))
        if longest > name_max:
            raise ValueError(
                f"{path}: a name too long for its outputs (particles/{path.stem}.csv, written through a temporary of "
                f"{longest} bytes; {name_max} at most); rename the image"
            )
        # unreadable images and wrong pixel sizes fail here, before anything is written
        pixels = read_image(path, mapped=True)
        check_not_blank(path, pixels)
        shape = pixels.shape
        del pixels  # read again when analysed: one image in memory at a time
        pixel_size = image_pixel_size(path, pixel_size_nm, shape, listings)
        check_image_size(path, shape, pixel_size)
        rows.append({"image_id": path.stem, "path": str(path.resolve()), "pixel_size_nm": pixel_size})
    images = pd.DataFrame(rows)
    # names equal but for case or Unicode form too, as the raw reader: one file on macOS and Windows
    twice = images[images.image_id.map(name_key).duplicated(keep=False)].sort_values("path")
    if len(twice):
        raise ValueError(
            f"images with the same name (but for case or Unicode form): {list(twice.path)}: the outputs are named "
            "after the images (particles/NAME.csv); rename one, or analyse them into two folders"
        )
    classifier = Classifier.load(checkpoint, device)
    if detector_json is None:
        detector_json = default_detector(Path(checkpoint))
        if not Path(detector_json).is_file():
            raise FileNotFoundError(
                f"{detector_json}: the micrograph detector of {checkpoint} not found: run the workflow's "
                "calibrate_micrographs rule, or give --detector"
            )
    detector = read_detector(detector_json, classifier)
    warn_coarse_pixels(images, detector, classifier.classes)
    # another run given the same --out meanwhile: its output is kept, not replaced by this one's
    metrics = analyse_micrographs(images, "", classifier, detector, out_dir, replace=False)
    # the image ids and calls as written: images named 001, 1e5 or NA are not read back as 1, 100000.0, NaN
    summary = pd.read_csv(out_dir / "summary.csv", dtype={"image_id": str, "call": str}, keep_default_na=False)
    return metrics, summary
