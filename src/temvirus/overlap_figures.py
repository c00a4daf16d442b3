"""Figures of overlap decisions: the two fields registered side by side, shared area outlined.

One PNG per judged pair (every claimed overlap and every near miss, :func:`decisions_to_plot`),
so that a reviewer can check each decision by eye (issue 15, item 4).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from temvirus.io import atomic_dir, save_figure
from temvirus.overlap import OVERLAP, area_resample, constant_area_mask, turned
from temvirus.raw import read_image

#: most pixels along a panel's longer side
_PANEL_PX = 420


def decisions_to_plot(pairs: pd.DataFrame, near_misses: int) -> pd.DataFrame:
    """Every claimed pair plus the ``near_misses`` distinct pairs ranked highest by
    ``evidence`` (the pairs rejected closest to the decision; ties by ids)."""
    claimed = pairs[pairs.decision == OVERLAP]
    rejected = pairs[pairs.decision != OVERLAP].sort_values(
        ["evidence", "image_a", "image_b"], ascending=[False, True, True], kind="stable"
    )
    return pd.concat([claimed, rejected.head(near_misses)]).reset_index(drop=True)


def _turn_label(row: pd.Series) -> str:
    turn = f" turned {row.rotation_deg:g} deg" if row.rotation_deg else ""
    return turn + (" mirrored" if row.mirrored else "")


def _stretch(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Contrast stretch to the 1st-99th percentile of the valid pixels (0..1)."""
    if not valid.any():
        return np.zeros_like(values)
    low, high = np.percentile(values[valid], [1, 99])
    return np.clip((values - low) / max(high - low, 1e-6), 0, 1)


def _placed(
    pixels: np.ndarray,
    factor: float,
    origin_px: tuple[float, float],
    shape: tuple[int, int],
    inside: np.ndarray | None = None,
):
    """``pixels`` resampled by ``1 / factor`` and pasted at ``origin_px`` (x, y) of a canvas of
    ``shape``; returns the canvas and its valid mask (inside the image, or ``inside`` where
    given, and not padding)."""
    image = area_resample(pixels.astype(np.float32), factor)
    inside = ~constant_area_mask(pixels) if inside is None else inside
    valid = area_resample(inside.astype(np.float32), factor) > 0.5
    canvas, mask = np.zeros(shape, np.float32), np.zeros(shape, bool)
    x0, y0 = int(round(origin_px[0])), int(round(origin_px[1]))
    h, w = image.shape
    ys, xs = slice(max(0, y0), min(shape[0], y0 + h)), slice(max(0, x0), min(shape[1], x0 + w))
    src_y, src_x = slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0)
    canvas[ys, xs], mask[ys, xs] = image[src_y, src_x], valid[src_y, src_x]
    return canvas, mask


def plot_pair(row: pd.Series, images: pd.DataFrame, root: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """One decision: image_a, image_b and their overlay, all in image_a's frame (nm).

    ``row`` is a row of the pair table (:data:`temvirus.overlap.PAIR_COLUMNS`): image_b's
    top-left corner lies at (``dx_nm``, ``dy_nm``) in image_a's field, its pixels ``scale``
    times their recorded size, after the turn ``rotation_deg`` / ``mirrored`` (a turned
    re-image; :func:`temvirus.overlap.turned`), and inverted where ``inverted``. The area valid in both (no padding) is outlined in yellow in
    the two left panels; the right panel shows it only, image_a in magenta and the registered
    image_b in green, each stretched over it (grey where they agree).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = images.set_index("image_id")
    a, b = table.loc[row.image_a], table.loc[row.image_b]
    pa, pb = read_image(Path(root) / a.path), read_image(Path(root) / b.path)
    inside_b = None
    if row.rotation_deg or row.mirrored:  # a turned re-image (temvirus.overlap, step 7)
        inside_b = turned((~constant_area_mask(pb)).astype(np.float32), row.rotation_deg, row.mirrored) > 0.99
        pb = turned(pb, row.rotation_deg, row.mirrored)
    b_nm = b.pixel_size_nm * row.scale
    x0, y0 = min(0.0, row.dx_nm), min(0.0, row.dy_nm)
    x1 = max(pa.shape[1] * a.pixel_size_nm, row.dx_nm + pb.shape[1] * b_nm)
    y1 = max(pa.shape[0] * a.pixel_size_nm, row.dy_nm + pb.shape[0] * b_nm)
    step = max(a.pixel_size_nm, b_nm, (x1 - x0) / _PANEL_PX, (y1 - y0) / _PANEL_PX)
    shape = (math.ceil((y1 - y0) / step), math.ceil((x1 - x0) / step))
    ia, va = _placed(pa, step / a.pixel_size_nm, (-x0 / step, -y0 / step), shape)
    ib, vb = _placed(pb, step / b_nm, ((row.dx_nm - x0) / step, (row.dy_nm - y0) / step), shape, inside_b)
    if row.get("inverted", False):  # b's contrast inverted (temvirus.overlap, step 8): shown as it was matched
        ib = -ib
    shared = va & vb
    overlay = np.zeros((*shape, 3), np.float32)
    overlay[..., 0] = overlay[..., 2] = np.where(shared, _stretch(ia, shared), 0)
    overlay[..., 1] = np.where(shared, _stretch(ib, shared), 0)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), dpi=90, layout="constrained")
    for ax, image, valid, title in (
        (axes[0], ia, va, f"a: {row.image_a}"),
        (axes[1], ib, vb, f"b: {row.image_b} (registered)"),
    ):
        ax.imshow(np.where(valid, _stretch(image, valid), 0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if shared.any():
            ax.contour(shared, levels=[0.5], colors="yellow", linewidths=1.2)
        ax.set_title(title, fontsize=9)
    axes[2].imshow(overlay, interpolation="nearest")
    axes[2].set_title("shared area: a magenta, b green", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    tests = "  ".join(
        f"{k}={row[k]:.3g}"
        for k in (
            "ncc",
            "runner_up",
            "fine_ncc",
            "background_ncc",
            "tile_agreement",
            "overlap_fraction",
            "point_agreement",
        )
        if k in row
    )
    fig.suptitle(
        f"{row['class']}: {row.decision.upper()}  scale={row.scale:g}{_turn_label(row)} dx={row.dx_nm:.0f} dy={row.dy_nm:.0f} nm  points={row.points}\n{tests}",
        fontsize=9,
    )
    save_figure(out_png, fig)


def plot_decisions(pairs_csv, images_csv, root, out_dir, near_misses: int) -> None:
    """Rule ``overlap_figures``: one PNG per claimed pair and near miss in ``out_dir``
    (``{class}__{image_a}__{image_b}.png``), written into place whole."""
    pairs = pd.read_csv(pairs_csv, dtype={"image_a": str, "image_b": str})
    images = pd.read_csv(images_csv, dtype={"image_id": str})
    with atomic_dir(out_dir) as tmp:
        for _, row in decisions_to_plot(pairs, near_misses).iterrows():
            plot_pair(row, images, root, tmp / f"{row['class']}__{row.image_a}__{row.image_b}.png".replace(" ", "_"))
