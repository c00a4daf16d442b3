"""Image-level splits into train / validation / test.

``representative`` (the paper's rule): per class, order the images by particle count and deal
them in the repeating sequence train, test, train, validation, train. Ties in particle count
are broken by image id, so the order (and the split) is a pure function of the table.
"""

from __future__ import annotations

import pandas as pd

#: the paper's dealing sequence, repeated until no image is left
REPRESENTATIVE_SEQUENCE = ("train", "test", "train", "validation", "train")


def representative_order(images: pd.DataFrame) -> pd.DataFrame:
    """Images of one class in dealing order: ascending ``n_particles``, then ``image_id``."""
    return images.sort_values(["n_particles", "image_id"], kind="stable")


def deal_representative(n: int) -> list[str]:
    """Split labels for ``n`` images already in :func:`representative_order`."""
    return [REPRESENTATIVE_SEQUENCE[i % len(REPRESENTATIVE_SEQUENCE)] for i in range(n)]
