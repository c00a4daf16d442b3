"""The classifiers of the paper: its custom CNN and torchvision transfer models.

All models take standardised 1-channel patches ``(B, 1, H, W)`` and return logits ``(B, N)``.

``custom`` follows the authors' released Keras code: 4 blocks of two 3x3 'same' convolutions
(each followed by ReLU and batch normalisation) whose output is concatenated with the block
input, then 2x2 max-pooling and dropout; a 3x3 'valid' convolution with 256 filters, flatten,
dense 256, dropout 0.35, dense 256, dense N. On 1x256x256 input with 14 classes it has
14,649,867 trainable parameters, the paper's count for its bad-split run.

``small_cnn`` is not the paper's: a plain CNN for the CPU demo (config/config.yaml), five
blocks of 3x3 convolution, batch normalisation, ReLU and 2x2 max-pooling (16, 32, 64, 128, 256
filters), global average pooling, dropout 0.2 and one dense layer; about 0.39 M parameters,
any input size >= 32.

Transfer models keep a torchvision backbone up to its last feature map and replace the top,
as the paper's Keras models did (``include_top=False`` then flatten), by dense 1024, ReLU,
dropout 0.3, dense 1024, ReLU, dropout 0.3, dense N. The gray patch is repeated to 3 channels
inside ``forward``. Flattening the feature map makes the head's size depend on the input size
(``input_size``, 256 for the paper's patches); with it the head sizes equal the paper's.

``resnet50v2`` and ``xception``, the paper's Keras-only models, are timm's ``resnetv2_50`` and
``legacy_xception`` (see :data:`temvirus.weights.TIMM_WEIGHTS`), cut at ``forward_features``
(after the final batch norm and ReLU, as Keras' ``include_top=False``). Xception's trainable
count equals the paper's; ResNetV2-50 has 19,008 fewer, the biases that Keras gives the stem
convolution, the last 1x1 convolution of every block and the projection shortcuts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from temvirus.experiments import INITS, MODELS

#: the paper's names of our models (Table 2), and of the initialisations
PAPER_MODEL_NAMES = {
    "custom": "Custom",
    "small_cnn": "SmallCNN",
    "densenet201": "DenseNet201",
    "vgg16": "VGG16",
    "vgg19": "VGG19",
    "resnet50": "ResNet50",
    "inception_v3": "InceptionV3",
    "mobilenet_v2": "MobileNetV2",
    "efficientnet_b0": "EfficientNetB0",
    "convnext_tiny": "ConvNeXtTiny",
    "resnet50v2": "ResNet50V2",
    "xception": "Xception",
}
PAPER_INIT_NAMES = {"scratch": "scratch", "imagenet": "transfer"}

# Keras BatchNormalization defaults (momentum 0.99 = PyTorch's 0.01, epsilon 1e-3)
_BN = {"momentum": 0.01, "eps": 1e-3}
_CUSTOM_FILTERS = ((64, 63), (64, 64), (128, 128), (128, 128))
_CUSTOM_DROPOUT = (0.2, 0.25, 0.3, 0.35)


class _ConcatBlock(nn.Module):
    """Two conv-ReLU-BN layers; output = concat(input, conv output), then pool and dropout."""

    def __init__(self, in_ch: int, filters: tuple[int, int], dropout: float):
        super().__init__()
        f1, f2 = filters
        self.convs = nn.Sequential(
            nn.Conv2d(in_ch, f1, 3, padding="same"),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(f1, **_BN),
            nn.Conv2d(f1, f2, 3, padding="same"),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(f2, **_BN),
        )
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout)
        self.out_channels = in_ch + f2

    def forward(self, x):
        return self.dropout(self.pool(torch.cat([x, self.convs(x)], dim=1)))


class CustomNet(nn.Module):
    """The paper's custom CNN (see the module docstring)."""

    def __init__(self, n_classes: int, input_size: int = 256):
        super().__init__()
        blocks, ch = [], 1
        for filters, p in zip(_CUSTOM_FILTERS, _CUSTOM_DROPOUT):
            blocks.append(_ConcatBlock(ch, filters, p))
            ch = blocks[-1].out_channels
        self.blocks = nn.Sequential(*blocks)
        side = input_size // 2 ** len(blocks) - 2  # after the 'valid' 3x3 convolution
        if side < 1:
            raise ValueError(f"custom model needs input_size >= 48, got {input_size}")
        self.top = nn.Sequential(
            nn.Conv2d(ch, 256, 3),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(256 * side * side, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.35),
            nn.Linear(256, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, n_classes),
        )

    def forward(self, x):
        return self.top(self.blocks(x))


_SMALL_FILTERS = (16, 32, 64, 128, 256)


class SmallCNN(nn.Module):
    """A plain CNN that trains in minutes on a CPU (not in the paper; see the module docstring)."""

    def __init__(self, n_classes: int, input_size: int = 128):
        super().__init__()
        if input_size < 2 ** len(_SMALL_FILTERS):
            raise ValueError(f"small_cnn needs input_size >= {2 ** len(_SMALL_FILTERS)}, got {input_size}")
        layers, ch = [], 1
        for filters in _SMALL_FILTERS:
            layers += [
                nn.Conv2d(ch, filters, 3, padding=1, bias=False),
                nn.BatchNorm2d(filters),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            ch = filters
        self.features = nn.Sequential(*layers)
        self.top = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(ch, n_classes))

    def forward(self, x):
        return self.top(self.features(x))


class TransferNet(nn.Module):
    """A torchvision feature extractor, flattened, under the paper's 3-layer dense top."""

    def __init__(self, features: nn.Module, n_classes: int, input_size: int):
        super().__init__()
        self.features = features
        # size of the flattened feature map: a forward pass on the meta device (shapes only)
        meta = {
            k: torch.empty_like(v, device="meta") for k, v in [*features.named_parameters(), *features.named_buffers()]
        }
        probe = functional_call(features, meta, (torch.zeros(2, 3, input_size, input_size, device="meta"),))
        n_features = probe.flatten(1).shape[1]
        self.top = nn.Sequential(
            nn.Flatten(),
            nn.Linear(n_features, 1024),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(1024, 1024),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(1024, n_classes),
        )

    def forward(self, x):
        return self.top(self.features(x.expand(-1, 3, -1, -1)))


class _TimmFeatures(nn.Module):
    """A timm classifier's ``forward_features``: the last feature map, before pooling and the head."""

    def __init__(self, model: nn.Module):
        super().__init__()
        model.reset_classifier(0)
        self.body = model

    def forward(self, x):
        return self.body.forward_features(x)


def imagenet_model(arch: str, weights_file: str | Path | None) -> nn.Module:
    """A torchvision (or timm) ImageNet classifier, random (``weights_file`` None) or loaded from the file.

    Raises WeightsError (:mod:`temvirus.weights`) for a file that fails its hash check, is no
    state dict, holds NaN or infinite values, or whose layers are not those of ``arch``.
    """
    from temvirus.weights import TIMM_WEIGHTS

    if arch in TIMM_WEIGHTS:
        import timm

        model = timm.create_model(TIMM_WEIGHTS[arch].timm_model, pretrained=False)
    else:
        import torchvision

        kwargs = {}
        if arch == "inception_v3":  # the weights carry the auxiliary head; scratch builds drop it
            kwargs = {"aux_logits": weights_file is not None, "init_weights": weights_file is None}
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
    if weights_file is None:
        return model
    from temvirus.weights import WeightsError, load_weights_file

    state = load_weights_file(weights_file, arch)  # checks the name's hash prefix; clear errors
    expected = model.state_dict()
    # batch norm's step counters are absent from files saved before torch 0.4.1: load_state_dict fills them
    missing = [key for key in expected if key not in state and not key.endswith(".num_batches_tracked")]
    unexpected = [key for key in state if key not in expected]
    reshaped = [key for key in expected if key in state and getattr(state[key], "shape", None) != expected[key].shape]
    # torch's own message lists every key (16 kB for another model's file): counts and three examples
    problems = [
        f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})"
        for keys, what in [
            (missing, f"of the model's {len(expected)} tensors missing"),
            (unexpected, "tensors of no layer of it"),
            (reshaped, "tensors of another shape"),
        ]
        if keys
    ]
    if problems:
        raise WeightsError(f"{weights_file}: not usable as {arch} weights: {'; '.join(problems)}", refetch=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # anything the names and shapes above let through
        raise WeightsError(f"{weights_file}: not usable as {arch} weights ({exc})", refetch=True) from None
    return model


def _features(arch: str, model: nn.Module) -> nn.Module:
    """The part of a torchvision or timm classifier up to its last feature map (Keras include_top=False)."""
    if arch in ("resnet50v2", "xception"):
        return _TimmFeatures(model)
    if arch.startswith("densenet"):  # torchvision applies the final ReLU in forward()
        return nn.Sequential(model.features, nn.ReLU(inplace=True))
    if arch.startswith("resnet"):
        return nn.Sequential(
            *(getattr(model, n) for n in ("conv1", "bn1", "relu", "maxpool")),
            model.layer1,
            model.layer2,
            model.layer3,
            model.layer4,
        )
    if arch == "inception_v3":
        names = [
            "Conv2d_1a_3x3",
            "Conv2d_2a_3x3",
            "Conv2d_2b_3x3",
            "maxpool1",
            "Conv2d_3b_1x1",
            "Conv2d_4a_3x3",
            "maxpool2",
            "Mixed_5b",
            "Mixed_5c",
            "Mixed_5d",
            "Mixed_6a",
            "Mixed_6b",
            "Mixed_6c",
            "Mixed_6d",
            "Mixed_6e",
            "Mixed_7a",
            "Mixed_7b",
            "Mixed_7c",
        ]
        return nn.Sequential(*(getattr(model, n) for n in names))
    return model.features  # vgg, mobilenet, efficientnet, convnext


def build_model(
    name: str,
    n_classes: int,
    init: str = "scratch",
    weights_file: str | Path | None = None,
    input_size: int = 256,
) -> nn.Module:
    """Build model ``name`` for ``n_classes`` classes on ``input_size`` square patches.

    ``init`` is ``scratch`` (random) or ``imagenet`` (transfer models only: torchvision's
    ImageNet weights read from the local ``weights_file``, see :mod:`temvirus.weights`).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; known: {', '.join(INITS)}")
    scratch_only = {"custom": CustomNet, "small_cnn": SmallCNN}
    if name in scratch_only:
        if init != "scratch":
            raise ValueError(f"model {name!r} has no pretrained weights; use init 'scratch'")
        return scratch_only[name](n_classes, input_size)
    if init == "imagenet" and weights_file is None:
        raise ValueError(f"init 'imagenet' of {name} needs a weights file")
    backbone = imagenet_model(name, weights_file if init == "imagenet" else None)
    return TransferNet(_features(name, backbone), n_classes, input_size)


def set_bn_momentum(model: nn.Module, momentum: float | None) -> nn.Module:
    """Set the momentum of every batch-norm layer of ``model`` (PyTorch's convention).

    PyTorch updates ``running = (1 - momentum) * running + momentum * batch``; Keras'
    ``momentum`` is PyTorch's ``1 - momentum`` (Keras 0.99 = PyTorch 0.01, the custom model's
    default). ``None`` keeps each model's own value.
    """
    if momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = momentum
    return model


class TrainingDiverged(ArithmeticError):
    """A model's weights, batch-norm statistics or loss became NaN or infinite during training."""


def first_nonfinite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor of ``tensors`` (a state dict) holding a NaN or an
    infinity, else None: weights that would give NaN logits, and so one class for every patch."""
    for name, tensor in tensors.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return name
    return None


def trainable_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (Keras' 'trainable params')."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
