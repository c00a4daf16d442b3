"""Seeds: one master seed in the config, one independent generator per random step."""

from __future__ import annotations

import hashlib

import numpy as np


def _key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "little")


def rng(seed: int, *names: str | int) -> np.random.Generator:
    """A numpy generator for one random step, derived from ``seed`` and the step's names.

    The same seed and names give the same stream on every platform and run; different names
    give independent streams (``rng(42, "augment", "Ebola")``).
    """
    return np.random.default_rng([int(seed)] + [_key(str(n)) for n in names])


def derive_seed(seed: int, *names: str | int) -> int:
    """A 63-bit integer seed for libraries that take one (torch), derived like :func:`rng`.

    The seed is reported to the current job's lineage record (``seeds``), named by ``names``.
    """
    from temvirus.provenance import report_seed

    derived = int(rng(seed, *names).integers(0, 2**63 - 1))
    report_seed("/".join(str(n) for n in names), derived)
    return derived
