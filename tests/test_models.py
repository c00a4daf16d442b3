"""Models: the custom CNN's size, the transfer models' heads, shapes and ImageNet weight files."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torchvision
from conftest import PAPER

from temvirus.experiments import TRANSFER_MODELS
from temvirus.models import (
    PAPER_INIT_NAMES,
    PAPER_MODEL_NAMES,
    build_model,
    trainable_parameters,
)
from temvirus.weights import WeightsError

torch.set_num_threads(1)


def paper_params(model: str, init: str, method: str) -> int:
    table = pd.read_csv(PAPER / "table2_performance.csv")
    row = table[
        (table.model == PAPER_MODEL_NAMES[model])
        & (table.training == PAPER_INIT_NAMES[init])
        & (table.method == method)
    ]
    return int(row["trainable_params"].iloc[0])


def test_custom_has_the_papers_parameter_count_and_output_shape():
    model = build_model("custom", 14)
    # the paper's bad-split run (its representative run reports 14,651,401)
    assert trainable_parameters(model) == paper_params("custom", "scratch", "bad") == 14_649_867
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 256, 256))
    assert out.shape == (2, 14)
    assert torch.isfinite(out).all()


def test_small_cnn_takes_any_input_size_and_counts_its_parameters():
    for size in (32, 128, 256):
        model = build_model("small_cnn", 14, input_size=size).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 1, size, size)).shape == (2, 14)
    convs = 1 * 16 + 16 * 32 + 32 * 64 + 64 * 128 + 128 * 256
    assert trainable_parameters(model) == 9 * convs + 2 * (16 + 32 + 64 + 128 + 256) + 256 * 14 + 14
    with pytest.raises(ValueError, match="small_cnn needs input_size >= 32"):
        build_model("small_cnn", 14, input_size=16)


def test_custom_blocks_concatenate_their_input():
    model = build_model("custom", 3, input_size=64)
    assert [b.out_channels for b in model.blocks] == [1 + 63, 64 + 64, 128 + 128, 256 + 128]


@pytest.mark.parametrize("arch", ["densenet201", "vgg16", "vgg19", "mobilenet_v2"])
def test_transfer_models_with_flattened_head_match_the_papers_keras_counts(arch):
    """Keras include_top=False + Flatten + the 3 dense layers: the paper's trainable counts exactly."""
    assert trainable_parameters(build_model(arch, 14, input_size=256)) == paper_params(
        arch, "imagenet", "representative"
    )


def test_resnet50_and_inception_v3_against_the_papers_keras_counts():
    """torchvision's ResNet-50 lacks the conv biases of Keras' (stem 64; 6c a bottleneck of c channels,
    stages of 3, 4, 6, 3 blocks at c = 64..512; 4c a projection shortcut): 26,560; torchvision's
    Inception-v3 has batch-norm scales (gamma), Keras' (scale=False) none: one per BN channel."""
    from torch import nn

    keras_biases = 64 + sum(blocks * 6 * c + 4 * c for blocks, c in ((3, 64), (4, 128), (6, 256), (3, 512)))
    assert keras_biases == 26_560
    ours = trainable_parameters(build_model("resnet50", 14, input_size=256))
    assert ours + keras_biases == paper_params("resnet50", "imagenet", "representative")
    inception = build_model("inception_v3", 14, input_size=256)
    gammas = sum(m.weight.numel() for m in inception.modules() if isinstance(m, nn.BatchNorm2d))
    assert gammas == 17_216
    assert trainable_parameters(inception) - gammas == paper_params("inception_v3", "imagenet", "representative")


def test_timm_models_against_the_papers_keras_counts():
    """Xception (timm legacy_xception) has the paper's count exactly; ResNet50V2 (timm resnetv2_50)
    lacks the 19,008 conv biases of Keras' ResNet50V2: stem conv (64), the last 1x1 conv of every
    block (3x256 + 4x512 + 6x1024 + 3x2048) and the 4 projection shortcuts (256+512+1024+2048)."""
    assert (
        trainable_parameters(build_model("xception", 14))
        == paper_params("xception", "imagenet", "representative")
        == 156_089_654
    )
    keras_biases = 64 + (3 * 256 + 4 * 512 + 6 * 1024 + 3 * 2048) + (256 + 512 + 1024 + 2048)
    assert keras_biases == 19_008
    ours = trainable_parameters(build_model("resnet50v2", 14))
    assert ours + keras_biases == paper_params("resnet50v2", "imagenet", "representative") == 158_802_062


@pytest.mark.parametrize("arch", TRANSFER_MODELS)
def test_transfer_model_forward_shapes(arch):
    size = 80 if arch == "inception_v3" else 64
    model = build_model(arch, 5, input_size=size)
    head = [m for m in model.top if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in head] == [1024, 1024, 5]
    x = torch.randn(2, 1, size, size)  # 1 channel in: the model repeats it to 3
    model.train()
    assert model(x).shape == (2, 5)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_unknown_model_init_and_custom_imagenet_are_rejected():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet18", 14)
    with pytest.raises(ValueError, match="unknown init"):
        build_model("vgg16", 14, init="random")
    for name in ("custom", "small_cnn"):
        with pytest.raises(ValueError, match=f"model '{name}' has no pretrained weights"):
            build_model(name, 14, init="imagenet", weights_file="x.pth")


def save_weights(state: dict, folder, arch: str):
    """Save ``state`` under a torchvision-style name carrying its own sha256 prefix."""
    import hashlib

    tmp = folder / f"{arch}.tmp"
    torch.save(state, tmp)
    path = folder / f"{arch}-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.pth"
    tmp.rename(path)
    return path


def test_missing_weights_file_names_the_path_and_the_fix(tmp_path):
    path = tmp_path / "weights" / "mobilenet_v2-7ebf99e0.pth"
    with pytest.raises(WeightsError) as err:
        build_model("mobilenet_v2", 14, init="imagenet", weights_file=path, input_size=64)
    assert str(path) in str(err.value) and "snakemake download_weights" in str(err.value)


def test_imagenet_init_loads_the_weights_file_into_the_backbone(tmp_path):
    reference = torchvision.models.mobilenet_v2(weights=None)
    path = save_weights(reference.state_dict(), tmp_path, "mobilenet_v2")
    model = build_model("mobilenet_v2", 3, init="imagenet", weights_file=path, input_size=64)
    for name, value in reference.features.state_dict().items():
        assert torch.equal(model.features.state_dict()[name], value), name
    scratch = build_model("mobilenet_v2", 3, init="scratch", input_size=64)
    assert not torch.equal(scratch.features[0][0].weight, reference.features[0][0].weight)


def test_old_densenet_key_names_and_inception_aux_weights_load(tmp_path):
    dense = torchvision.models.densenet201(weights=None)
    # torchvision's published densenet files name layers 'norm.1', 'conv.2', ...
    old = {k.replace("norm1", "norm.1").replace("conv2", "conv.2"): v for k, v in dense.state_dict().items()}
    assert any("norm.1" in k for k in old)
    model = build_model(
        "densenet201", 3, init="imagenet", weights_file=save_weights(old, tmp_path, "densenet201"), input_size=32
    )
    assert torch.equal(
        model.features[0].denseblock1.denselayer1.norm1.weight, dense.features.denseblock1.denselayer1.norm1.weight
    )

    inception = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = save_weights(inception.state_dict(), tmp_path, "inception_v3_google")
    model = build_model("inception_v3", 3, init="imagenet", weights_file=path, input_size=80)
    assert torch.equal(model.features[0].conv.weight, inception.Conv2d_1a_3x3.conv.weight)


@pytest.mark.parametrize(("arch", "timm_name"), [("xception", "legacy_xception"), ("resnet50v2", "resnetv2_50")])
def test_timm_imagenet_weights_load_from_a_local_file(tmp_path, arch, timm_name):
    """timm's state dict (with its 1000-class head) loads into the backbone; scratch differs."""
    import timm

    torch.manual_seed(1)
    reference = timm.create_model(timm_name, pretrained=False)
    model = build_model(
        arch, 3, init="imagenet", weights_file=save_weights(reference.state_dict(), tmp_path, arch), input_size=64
    )
    loaded = model.features.body.state_dict()
    body = {k: v for k, v in reference.state_dict().items() if k in loaded}
    assert len(body) == len(loaded) > 100
    assert all(torch.equal(loaded[k], v) for k, v in body.items())
    scratch = build_model(arch, 3, input_size=64).features.body.state_dict()
    assert not all(torch.equal(scratch[k], v) for k, v in body.items())


def test_weights_saved_before_batch_norm_counted_its_steps_load(tmp_path):
    """Files saved before torch 0.4.1 have no ``num_batches_tracked``: torch fills it in, so the
    key check must not call them incomplete (a review found it did, for DenseNet and Xception)."""
    reference = torchvision.models.mobilenet_v2(weights=None)
    old = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(old) < len(reference.state_dict())
    model = build_model("mobilenet_v2", 3, init="imagenet", weights_file=save_weights(old, tmp_path, "mobilenet_v2"))
    loaded = model.features.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.features.state_dict().items() if k in loaded)


def test_weights_of_another_architecture_give_a_clear_error(tmp_path):
    path = save_weights(torchvision.models.mobilenet_v2(weights=None).state_dict(), tmp_path, "vgg16")
    with pytest.raises(WeightsError, match=f"{path}: not usable as vgg16 weights: ") as err:
        build_model("vgg16", 3, init="imagenet", weights_file=path, input_size=32)
    # counts and examples, not torch's list of every key (before: thousands of characters)
    assert "of the model's 32 tensors missing (e.g. features.0.weight," in str(err.value)
    assert "tensors of no layer of it (e.g. features.0.0.weight" in str(err.value) and len(str(err.value)) < 800


# -- training is right: chance-level start, every family can fit one batch ------------------

#: input side (px) per model in the quick training checks (inception_v3 needs >= 75 px)
QUICK_SIZE = {"custom": 48, "inception_v3": 80}


def standardised_patches(n: int, size: int, n_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` standardised patches ``(n, 1, size, size)`` (a bright disc on noise, radius by class) and labels."""
    import numpy as np

    from temvirus.train import compact_tensor, standardise

    gen = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    discs = np.stack([(np.hypot(yy, xx) < size * (0.1 + 0.3 * c / n_classes)) * 20000.0 for c in labels])
    patches = np.clip(discs + gen.normal(30000, 4000, (n, size, size)), 0, 65535).astype(np.uint16)
    return standardise(compact_tensor(patches)), torch.from_numpy(labels)


@pytest.mark.parametrize("arch", ["custom", "small_cnn", *TRANSFER_MODELS])
def test_every_model_starts_at_chance_loss(arch):
    """At initialisation the cross-entropy on standardised patches is ln(N) within 20%."""
    import math

    n_classes, size = 14, QUICK_SIZE.get(arch, 64)
    x, y = standardised_patches(28, size, n_classes)
    torch.manual_seed(0)
    model = build_model(arch, n_classes, input_size=size).train()
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(x), y).item()
    assert abs(loss - math.log(n_classes)) < 0.2 * math.log(n_classes), loss


#: one model of each family (vgg19 is vgg16 with more layers)
FAMILIES = [
    "custom",
    "small_cnn",
    "vgg16",
    "resnet50",
    "densenet201",
    "inception_v3",
    "mobilenet_v2",
    "efficientnet_b0",
    "convnext_tiny",
]


@pytest.mark.parametrize("arch", FAMILIES)
def test_every_model_family_overfits_one_batch(arch):
    """Trained on one batch of 8 patches (4 classes), the training loss falls below 0.05 within 150 steps."""
    size = QUICK_SIZE.get(arch, 32)
    x, y = standardised_patches(8, size, 4, seed=1)
    torch.manual_seed(0)
    model = build_model(arch, 4, input_size=size).train()
    optimizer = torch.optim.Adam(model.parameters(), lr={"vgg16": 1e-4, "convnext_tiny": 3e-4}.get(arch, 1e-3))
    losses = []
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if loss.item() < 0.05:
            break
    assert losses[-1] < 0.05, f"{arch}: loss {losses[0]:.3f} -> {losses[-1]:.3f} after {len(losses)} steps"


def test_bn_momentum_is_set_on_every_batch_norm_layer():
    from temvirus.models import set_bn_momentum

    model = build_model("mobilenet_v2", 3, input_size=32)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.1 for m in norms)  # torchvision's own
    set_bn_momentum(model, 0.3)
    assert all(m.momentum == 0.3 for m in norms)
    set_bn_momentum(model, None)  # keeps what is there
    assert all(m.momentum == 0.3 for m in norms)
    assert all(
        m.momentum == 0.01
        for m in build_model("custom", 3, input_size=48).modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    )


@pytest.mark.parametrize("name", ["custom", "inception_v3"])
def test_the_minimum_input_sizes_the_workflow_checks_are_the_models(name):
    """temvirus.experiments.MIN_INPUT_SIZE (read when the workflow is parsed, no torch there) is
    where each model starts to build: at the minimum it does, one pixel less it does not."""
    from temvirus.experiments import MIN_INPUT_SIZE

    need = MIN_INPUT_SIZE[name]
    build_model(name, 3, "scratch", None, input_size=need)
    with pytest.raises((ValueError, RuntimeError)):
        build_model(name, 3, "scratch", None, input_size=need - 1)
