"""ImageNet weights of the transfer models: where they come from and where they live.

Training reads only the local file ``{weights_dir}/{weights_filename(arch)}``; the file name
is torchvision's, whose part after the last '-' is a prefix of the file's sha256. The rule
``download_weights`` (on the machine that launches the workflow) fetches it with
:func:`download_weights`; training calls :func:`load_imagenet_state_dict`, which checks the hash
prefix and says which file to place where when it is missing.

ResNet50V2 and Xception (Keras-only in the paper, absent from torchvision) come from timm
(:data:`TIMM_WEIGHTS`): Xception's file carries a hash prefix in its name like torchvision's;
timm publishes ResNetV2-50's only on the Hugging Face hub under a name without one, and its
sha256 could not be pinned here (no access to the hub from the machine that wrote this), so
it is checked against the sha256 recorded by its download (``{file}.record.json``): the file
is the one that was fetched, unaltered, though nothing published vouches for the fetch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from temvirus.download import SHA256_PREFIX
from temvirus.io import sha256_file

#: torchvision's DenseNet files name layers ``norm.1``, ``conv.2``; its modules ``norm1``, ``conv2``
_DENSENET_KEY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.(\d)")


@dataclass(frozen=True)
class TimmWeights:
    """ImageNet weights of a timm architecture: timm's model name, its published URL, the local file name."""

    timm_model: str
    url: str
    filename: str


#: our model name -> the timm model and weights standing in for the paper's Keras model
#: (README "ResNet50V2 and Xception" says why these variants)
TIMM_WEIGHTS = {
    "resnet50v2": TimmWeights(
        "resnetv2_50",
        "https://huggingface.co/timm/resnetv2_50.a1h_in1k/resolve/main/model.safetensors",
        "resnetv2_50.a1h_in1k.safetensors",
    ),
    "xception": TimmWeights(
        "legacy_xception",
        "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-cadene/xception-43020ad28.pth",
        "xception-43020ad28.pth",
    ),
}


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
    """The published URL of the default ImageNet weights of ``arch`` (torchvision's, or timm's for TIMM_WEIGHTS).

    Raises ValueError for an architecture without ImageNet weights here (e.g. ``custom``).
    """
    if arch in TIMM_WEIGHTS:
        return TIMM_WEIGHTS[arch].url
    try:
        return WEIGHTS_URLS[arch]
    except KeyError:
        known = sorted([*WEIGHTS_URLS, *TIMM_WEIGHTS])
        raise ValueError(f"no ImageNet weights for model {arch!r}; known: {known}") from None


def weights_filename(arch: str) -> str:
    """The local weights file name, e.g. torchvision's ``vgg16-397923af.pth`` (carrying its hash prefix)."""
    if arch in TIMM_WEIGHTS:
        return TIMM_WEIGHTS[arch].filename
    return PurePosixPath(urlparse(weights_url(arch)).path).name


#: what to do with a weights file that is there but unusable (a fetch that went wrong unseen: a file without
#: a hash in its name is checked only against what was fetched)
REFETCH_HINT = "; delete it (and its .record.json, if any) and run `snakemake download_weights` again"


class WeightsError(FileNotFoundError):
    """A weights file that is missing, fails its hash check or cannot be used.

    ``refetch``: the file is there but unusable, so the message ends in :data:`REFETCH_HINT`;
    ``reason`` is the message without it (what a fetch that just wrote the file reports).
    """

    def __init__(self, reason: str, refetch: bool = False):
        super().__init__(reason + (REFETCH_HINT if refetch else ""))
        self.reason = reason


def _name_prefix(filename: str) -> str | None:
    """The part of a file name's stem after its last '-' when :data:`temvirus.download.SHA256_PREFIX`
    (6 to 64 lower-case hex digits) and something comes before the '-'; else None."""
    head, _, prefix = PurePosixPath(filename).name.split(".")[0].rpartition("-")
    return prefix if head and SHA256_PREFIX.fullmatch(prefix) else None


def hash_prefix(filename: str) -> str:
    """torchvision's sha256 prefix in a weights file name: the part after the last '-'.

    Raises ValueError for a name without one (:func:`_name_prefix`)."""
    prefix = _name_prefix(filename)
    if prefix is None:
        raise ValueError(f"{filename}: name does not end in '-<sha256 prefix>.pth'")
    return prefix


def source_url(arch: str, base_url: str | None = None) -> str:
    """Where to fetch ``arch``'s weights: torchvision's URL, or its file name under ``base_url``."""
    if base_url:
        return f"{base_url.rstrip('/')}/{weights_filename(arch)}"
    return weights_url(arch)


def file_arch(filename: str) -> str:
    """The architecture whose :func:`weights_filename` is ``filename``.

    Raises ValueError for a name of no architecture here."""
    for arch in [*WEIGHTS_URLS, *TIMM_WEIGHTS]:
        if weights_filename(arch) == filename:
            return arch
    raise ValueError(f"{filename}: not the ImageNet weights file of any transfer model here")


def file_source_url(filename: str, base_url: str | None = None) -> str:
    """Where to fetch the weights file called ``filename`` (:func:`source_url` of :func:`file_arch`)."""
    return source_url(file_arch(filename), base_url)


def fetch_weights_file(url: str, dest: str | Path) -> Path:
    """Download a weights file to ``dest`` (resumable, retried), checking the hash prefix of its name.

    A name without a hash prefix (timm's hub files, see the module docstring; it must be the
    :func:`weights_filename` of an architecture here) is fetched unchecked and its computed
    sha256 recorded in ``{dest}.record.json``, which :func:`load_weights_file` then checks the
    file against; such a file must at least load into its architecture (the same layers and
    shapes, finite values), or it is removed with its record and WeightsError names the URL
    (before, a truncated body or another model's weights were kept and failed only at training,
    where fetching again was not offered). Raises ValueError for an unprefixed name of no
    architecture here, before fetching.
    """
    from temvirus.download import fetch

    dest = Path(dest)
    prefix = _name_prefix(dest.name)
    arch = file_arch(dest.name) if prefix is None else None
    fetch(url, dest, sha256_prefix=prefix, hint=f"; without internet, place the file {dest.name} at {dest}")
    if prefix is None:
        from temvirus.models import imagenet_model

        try:
            imagenet_model(arch, dest)
        except WeightsError as exc:
            dest.unlink(missing_ok=True)
            dest.with_name(dest.name + ".record.json").unlink(missing_ok=True)
            raise WeightsError(f"{url}: what was fetched is not a weights file, nothing kept ({exc.reason})") from None
    return dest


def _expected_hash(path: Path) -> tuple[str, str]:
    """(sha256 or its prefix that ``path`` must have, where that comes from)."""
    prefix = _name_prefix(path.name)
    if prefix:
        return prefix, "from its name"
    record = path.with_name(path.name + ".record.json")
    try:
        digest = json.loads(record.read_text(encoding="utf-8"))["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        digest = None
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):  # "" would let any file pass
        raise WeightsError(
            f"{path}: its name carries no hash prefix and {record} (written by `snakemake download_weights`) "
            "holds no sha256 (64 hex digits) to check it against; delete the file and run "
            "`snakemake download_weights`"
        )
    return digest.lower(), f"recorded in {record}"


def load_weights_file(path: str | Path, arch: str) -> dict:
    """Read a local weights file (``weights_only=True``, or safetensors) after checking its hash prefix.

    DenseNet files of torchvision name their layers ``norm.1``/``conv.2``; the keys are renamed
    to the ``norm1``/``conv2`` of torchvision's current DenseNet modules.

    Raises WeightsError for a missing file, a wrong hash, a file that is no state dict, or one
    with a NaN or infinite value in a floating-point tensor.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"weights for {arch} not found at {path}: run `snakemake download_weights` on a machine with "
            "internet or place the file there"
        )
    prefix, source = _expected_hash(path)
    digest = sha256_file(path)
    if not digest.startswith(prefix):
        raise WeightsError(
            f"{path}: sha256 {digest} does not start with {prefix!r} {source}: corrupt or not the published "
            f"file; delete it and run `snakemake download_weights`"
        )
    from safetensors.torch import load_file  # outside the try: a missing package is no damaged file

    try:
        if path.suffix == ".safetensors":
            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure: truncated, not a torch file, disallowed object
        raise WeightsError(
            f"{path}: cannot be read as a weights file ({type(exc).__name__}: {exc})", refetch=True
        ) from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    from temvirus.models import first_nonfinite

    bad = first_nonfinite(state)
    if bad is not None:  # before, loaded: every patch then got NaN logits, so one class
        raise WeightsError(f"{path}: tensor {bad!r} holds NaN or infinite values", refetch=True)
    if arch.startswith("densenet"):
        state = {_DENSENET_KEY.sub(r"\1\2", key): value for key, value in state.items()}
    return state


def load_imagenet_state_dict(arch: str, weights_dir: str | Path) -> dict:
    """The ImageNet state dict of ``arch`` from ``{weights_dir}/{weights_filename(arch)}`` (never the network)."""
    return load_weights_file(Path(weights_dir) / weights_filename(arch), arch)


def download_weights(arch: str, weights_dir: str | Path, base_url: str | None = None) -> Path:
    """Fetch ``arch``'s ImageNet weights into ``weights_dir`` (kept when already there and valid)."""
    return fetch_weights_file(source_url(arch, base_url), Path(weights_dir) / weights_filename(arch))
