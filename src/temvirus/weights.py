"""ImageNet weights of the transfer models: where they come from and where they live.

Training reads only the local file ``{weights_dir}/{weights_filename(arch)}``; the file name
is torchvision's, whose part after the last '-' is a prefix of the file's sha256.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlparse


def weights_url(arch: str) -> str:
    """torchvision's published URL of the default ImageNet weights of ``arch``."""
    from torchvision.models import get_model_weights

    return get_model_weights(arch).DEFAULT.url


def weights_filename(arch: str) -> str:
    """The weights file name (torchvision's, carrying its hash prefix), e.g. ``vgg16-397923af.pth``."""
    return PurePosixPath(urlparse(weights_url(arch)).path).name
