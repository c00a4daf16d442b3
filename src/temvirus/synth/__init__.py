"""Synthetic negative-stain TEM virus images in the published raw layout.

Modules: :mod:`~temvirus.synth.plan` (counts per image, microscope), :mod:`~temvirus.synth.specimen`
(class styles, particles, debris, stain), :mod:`~temvirus.synth.render` (image formation),
:mod:`~temvirus.synth.planted` (planted overlaps), :mod:`~temvirus.synth.write` (the raw layout,
the truth table, :func:`generate_dataset`); the figure of synthetic beside real examples is
:func:`temvirus.figures.plot_synthetic_vs_real`.

The embedded default dataset of the workflow: the real one cannot be downloaded here. It
follows the paper's Table 1 (``resources/paper/table1_dataset.csv``):

* **Counts.** At ``scale=1`` every class has exactly Table 1's images and particles. The
  per-image particle counts are chosen (a small integer program) so that the paper's
  representative split (:mod:`temvirus.split`: ascending count, ties by image id, dealt
  train, test, train, validation, train) of the generated images gives Table 1's image *and*
  particle counts per subset, and every image is written into the subset folder that rule
  gives it. ``scale < 1`` shrinks each class to ``max(4, round(scale * images))`` images
  (4 is the fewest that the dealing gives a validation image), keeping the mean particles per
  image and each subset's share.
* **Physics.** Each image is an exposure of a *specimen*: bodies (virus particles, debris)
  placed in nm coordinates on a stain layer whose thickness varies smoothly and carries a
  grain (4-90 nm value noise fixed on the specimen, so every exposure of one area shows the
  same grain, area-averaged over its pixels). Particles displace the stain (light), stain
  pools around them (dark rim and halo); the image is ``exp(-mu * thickness)`` with the
  bodies blurred by defocus, plus shot noise (the only per-exposure randomness besides
  optics and dose), recorded as uint16 counts of a 12- or 14-bit camera. Pixel sizes (0.26-5.57 nm) are chosen so that
  particles are at least ~12 px across and the image field holds its particles. Every body
  is rendered in its own local window (cost grows with particles, not image area); smooth
  terms are a low-rank separable sum (one matrix product per image).
* **Classes** differ by size (Table 1's mean diameter, with spread), outline (round,
  icosahedral, oval with a 2-point centre line, brick, pleomorphic, curved filament with a
  centre line of vertices every 50-100 nm), surface texture and arrangement (clusters), see
  :data:`~temvirus.synth.specimen.STYLES`. Debris, stain gradients, noise and defocus make them non-trivial.
* **Planted overlaps.** ``overlaps`` extra images re-image 20-80% of another image's specimen
  (same class and subset folder, shifted, at another pixel size) with the particles inside
  their field annotated, and fewer particles than their source; each with one kind of change
  of real re-imaging (:data:`CHANGES`, dealt in turn: magnification 0.4-2.5x, exposure,
  focus, particles cut by the border, black padding; :func:`~temvirus.synth.planted.plant_overlap`). They come on top of Table
  1's counts; the truth goes to a CSV outside the raw tree (:data:`TRUTH_COLUMNS`), and on
  request every particle's true diameter and length to another (:data:`SIZE_COLUMNS`).
* **Determinism.** Every random draw comes from :func:`temvirus.seeding.rng` keyed by the
  seed and the image id; TIFFs carry no time stamps: the same seed gives identical bytes.
"""

from __future__ import annotations

from temvirus.synth.planted import CHANGES
from temvirus.synth.write import SIZE_COLUMNS, TRUTH_COLUMNS, generate_dataset, generate_from_config

__all__ = ["CHANGES", "SIZE_COLUMNS", "TRUTH_COLUMNS", "generate_dataset", "generate_from_config"]
