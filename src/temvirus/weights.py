"""ImageNet weights of the transfer models: where they come from and where they live.

Training reads only the local file ``{weights_dir}/{weights_filename(arch)}``; the file name
is torchvision's, whose part after the last '-' is a prefix of the file's sha256. The rule
``download_weights`` (on the machine that launches the workflow) fetches it with
:func:`download_weights`; training calls :func:`load_imagenet_state_dict`, which checks the hash
prefix and says which file to place where when it is missing.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from temvirus.io import sha256_file

#: torchvision's DenseNet files name layers ``norm.1``, ``conv.2``; its modules ``norm1``, ``conv2``
_DENSENET_KEY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.(\d)")


#: torchvision's published URLs of the default ImageNet weights (``get_model_weights(arch).DEFAULT.url``
#: of torchvision 0.28; tests/test_weights.py checks they still agree). A table, so that the workflow
#: builds its job graph without importing torch.
WEIGHTS_URLS = {
    "densenet201": "https://download.pytorch.org/models/densenet201-c1103571.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    "inception_v3": "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
    "mobilenet_v2": "https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth",
    "efficientnet_b0": "https://download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth",
    "convnext_tiny": "https://download.pytorch.org/models/convnext_tiny-983f1562.pth",
}


def weights_url(arch: str) -> str:
    """torchvision's published URL of the default ImageNet weights of ``arch`` (a transfer model).

    Raises ValueError for an architecture without ImageNet weights here (e.g. ``custom``).
    """
    try:
        return WEIGHTS_URLS[arch]
    except KeyError:
        raise ValueError(f"no ImageNet weights for model {arch!r}; known: {sorted(WEIGHTS_URLS)}") from None


def weights_filename(arch: str) -> str:
    """The weights file name (torchvision's, carrying its hash prefix), e.g. ``vgg16-397923af.pth``."""
    return PurePosixPath(urlparse(weights_url(arch)).path).name


class WeightsError(FileNotFoundError):
    """A weights file that is missing or whose sha256 does not match its name."""


def hash_prefix(filename: str) -> str:
    """torchvision's sha256 prefix in a weights file name: the part after the last '-'."""
    stem = PurePosixPath(filename).name.split(".")[0]
    prefix = stem.rpartition("-")[2]
    if "-" not in stem or not re.fullmatch(r"[0-9a-f]{6,64}", prefix):
        raise ValueError(f"{filename}: name does not end in '-<sha256 prefix>.pth'")
    return prefix


def source_url(arch: str, base_url: str | None = None) -> str:
    """Where to fetch ``arch``'s weights: torchvision's URL, or its file name under ``base_url``."""
    if base_url:
        return f"{base_url.rstrip('/')}/{weights_filename(arch)}"
    return weights_url(arch)


def fetch_weights_file(url: str, dest: str | Path) -> Path:
    """Download a weights file to ``dest`` (resumable, retried), checking the hash prefix of its name."""
    from temvirus.download import fetch

    dest = Path(dest)
    fetch(
        url,
        dest,
        sha256_prefix=hash_prefix(dest.name),
        hint=f"; without internet, place the file {dest.name} at {dest}",
    )
    return dest


def load_weights_file(path: str | Path, arch: str) -> dict:
    """Read a local torchvision weights file (``weights_only=True``) after checking its hash prefix.

    DenseNet files of torchvision name their layers ``norm.1``/``conv.2``; the keys are renamed
    to the ``norm1``/``conv2`` of torchvision's current DenseNet modules.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"weights for {arch} not found at {path}: run `snakemake download_weights` on a machine with "
            "internet or place the file there"
        )
    digest, prefix = sha256_file(path), hash_prefix(path.name)
    if not digest.startswith(prefix):
        raise WeightsError(
            f"{path}: sha256 {digest} does not start with {prefix!r} from its name: corrupt or not torchvision's "
            f"file; delete it and run `snakemake download_weights`"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure: truncated, not a torch file, disallowed object
        raise WeightsError(f"{path}: cannot be read as a weights file ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    if arch.startswith("densenet"):
        state = {_DENSENET_KEY.sub(r"\1\2", key): value for key, value in state.items()}
    return state


def load_imagenet_state_dict(arch: str, weights_dir: str | Path) -> dict:
    """The ImageNet state dict of ``arch`` from ``{weights_dir}/{weights_filename(arch)}`` (never the network)."""
    return load_weights_file(Path(weights_dir) / weights_filename(arch), arch)


def download_weights(arch: str, weights_dir: str | Path, base_url: str | None = None) -> Path:
    """Fetch ``arch``'s ImageNet weights into ``weights_dir`` (kept when already there and valid)."""
    return fetch_weights_file(source_url(arch, base_url), Path(weights_dir) / weights_filename(arch))
