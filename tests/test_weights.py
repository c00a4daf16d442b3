"""ImageNet weights: fetched from a server on 127.0.0.1, hash prefix checked, read offline."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import subprocess

import pytest
import torch

from temvirus.download import DownloadError
from temvirus.weights import (
    WeightsError,
    download_weights,
    fetch_weights_file,
    hash_prefix,
    load_imagenet_state_dict,
    load_weights_file,
    source_url,
    weights_filename,
    weights_url,
)


def _download_weights(workdir, override) -> subprocess.CompletedProcess:
    """``snakemake download_weights`` in ``workdir`` with the config overlay ``override``."""
    from conftest import snakemake_cmd

    cmd = snakemake_cmd(workdir, "download_weights", "--configfile", str(override))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _state_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@functools.cache
def _resnetv2_body() -> bytes:
    """A safetensors file of timm's resnetv2_50 layers (random values, float16 to halve its 100 MB)."""
    import timm
    from safetensors.torch import save

    torch.manual_seed(0)
    model = timm.create_model("resnetv2_50", pretrained=False)
    return save(
        {key: value.half() if value.is_floating_point() else value for key, value in model.state_dict().items()}
    )


def test_torchvision_file_names_carry_a_hash_prefix():
    assert weights_filename("densenet201") == "densenet201-c1103571.pth"
    assert hash_prefix(weights_filename("inception_v3")) == "0cc3c7bd"
    for bad in ("model.pth", "model-XYZ.pth", "model-12.pth"):
        with pytest.raises(ValueError, match="does not end in"):
            hash_prefix(bad)


@pytest.mark.parametrize("name", ["m-0cc3c7bd.pth", "-0cc3c7bd.pth", "m-0CC3C7BD.pth", "m-0cc3c.pth", "m.pth"])
def test_a_name_carries_a_hash_prefix_by_one_rule(tmp_path, name):
    """hash_prefix, the download's check and the load's check read a name's prefix by one rule
    (download.SHA256_PREFIX): weights had its own two patterns, and hash_prefix('-0cc3c7bd.pth')
    gave a prefix that loading then ignored (asking for a download record instead)."""
    path = tmp_path / name
    path.write_bytes(b"not the published file")
    try:
        prefix = hash_prefix(name)
    except ValueError:
        prefix = None
    with pytest.raises(WeightsError) as refused:
        load_weights_file(path, "m")
    if prefix:
        assert f"does not start with {prefix!r} from its name" in str(refused.value)
    else:
        assert "its name carries no hash prefix" in str(refused.value)


def test_weights_table_equals_torchvisions_urls():
    """The torch-free table of weights URLs is torchvision's, for every torchvision transfer model."""
    from torchvision.models import get_model_weights

    from temvirus.experiments import TRANSFER_MODELS
    from temvirus.weights import TIMM_WEIGHTS

    for arch in set(TRANSFER_MODELS) - set(TIMM_WEIGHTS):
        assert weights_url(arch) == get_model_weights(arch).DEFAULT.url, arch
    for arch, timm in TIMM_WEIGHTS.items():
        assert weights_url(arch) == timm.url, arch
    with pytest.raises(ValueError, match="no ImageNet weights for model 'custom'"):
        weights_url("custom")


def test_weights_file_served_fetched_and_loaded(file_server, tmp_path):
    torch.manual_seed(0)
    state = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).state_dict()
    body = _state_bytes(state)
    name = f"tinynet-{hashlib.sha256(body).hexdigest()[:8]}.pth"
    file_server.files[f"/models/{name}"] = body
    file_server.faults[f"/models/{name}"] = {"drop_once"}
    path = fetch_weights_file(file_server.url(f"/models/{name}"), tmp_path / "weights" / name)
    loaded = load_weights_file(path, "tinynet")
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[key], state[key]) for key in state)
    assert file_server.requests[1][1] is not None  # resumed with a Range request


def test_served_file_with_wrong_hash_prefix_is_rejected(file_server, tmp_path):
    """A mirror (weights.base_url) serving other bytes under torchvision's name is refused."""
    name = weights_filename("mobilenet_v2")
    file_server.files[f"/mirror/{name}"] = _state_bytes({"w": torch.zeros(2)})
    with pytest.raises(DownloadError, match=f"does not start with '{hash_prefix(name)}'"):
        download_weights("mobilenet_v2", tmp_path, base_url=file_server.url("/mirror/"))
    assert file_server.requests[0][0] == f"/mirror/{name}"
    assert list(tmp_path.iterdir()) == []


def test_missing_weights_say_which_file_to_place_where(tmp_path):
    path = tmp_path / "densenet201-c1103571.pth"
    expected = f"weights for densenet201 not found at {path}: run `snakemake download_weights`"
    with pytest.raises(WeightsError) as err:
        load_imagenet_state_dict("densenet201", tmp_path)
    assert str(err.value).startswith(expected)
    assert "place the file there" in str(err.value)


def test_local_file_not_matching_its_name_is_rejected(tmp_path):
    (tmp_path / weights_filename("resnet50")).write_bytes(_state_bytes({"w": torch.ones(1)}))
    with pytest.raises(WeightsError, match="does not start with '11ad3fa6'"):
        load_imagenet_state_dict("resnet50", tmp_path)


def test_densenet_layer_names_are_those_of_torchvision_modules(tmp_path):
    state = {"features.denseblock1.denselayer1.norm.1.weight": torch.ones(2), "classifier.bias": torch.zeros(1)}
    body = _state_bytes(state)
    path = tmp_path / f"densenet201-{hashlib.sha256(body).hexdigest()[:8]}.pth"
    path.write_bytes(body)
    assert sorted(load_weights_file(path, "densenet201")) == [
        "classifier.bias",
        "features.denseblock1.denselayer1.norm1.weight",
    ]


def test_file_that_is_not_a_state_dict_is_rejected(tmp_path):
    body = b"<html>mirror error page</html>"
    path = tmp_path / f"vgg16-{hashlib.sha256(body).hexdigest()[:8]}.pth"
    path.write_bytes(body)
    with pytest.raises(WeightsError, match="cannot be read as a weights file"):
        load_weights_file(path, "vgg16")


@pytest.mark.slow
def test_snakemake_download_weights_uses_base_url_and_checks_the_name(file_server, tmp_path):
    """The rule fetches weights.base_url/{torchvision name} per imagenet experiment; wrong bytes fail it."""
    import json

    from conftest import make_workdir

    name = weights_filename("mobilenet_v2")
    file_server.files[f"/mirror/{name}"] = _state_bytes({"w": torch.zeros(2)})
    workdir = make_workdir(tmp_path / "wd")
    override = workdir / "override.json"
    experiments = [{"model": "mobilenet_v2", "init": "imagenet", "method": "representative"}]
    override.write_text(json.dumps({"experiments": experiments, "weights": {"base_url": file_server.url("/mirror")}}))
    run = _download_weights(workdir, override)
    assert run.returncode != 0
    assert [path for path, _ in file_server.requests] == [f"/mirror/{name}"]
    log = (workdir / "logs" / "download" / f"download_weights_{name}.log").read_text()
    assert f"does not start with '{hash_prefix(name)}'" in log
    assert not (workdir / "resources" / "weights" / name).exists()


def test_timm_weights_names_and_urls():
    assert (
        weights_filename("xception") == "xception-43020ad28.pth"
        and hash_prefix("xception-43020ad28.pth") == "43020ad28"
    )
    assert weights_filename("resnet50v2") == "resnetv2_50.a1h_in1k.safetensors"
    assert source_url("resnet50v2", "http://127.0.0.1:1/m/") == "http://127.0.0.1:1/m/resnetv2_50.a1h_in1k.safetensors"
    assert source_url("resnet50v2").startswith("https://huggingface.co/timm/resnetv2_50.a1h_in1k/")


def test_unprefixed_safetensors_file_is_checked_against_its_download_record(file_server, tmp_path):
    """timm's hub file has no hash in its name: the sha256 recorded at download guards it afterwards."""
    from safetensors.torch import load, save

    body = _resnetv2_body()
    name = weights_filename("resnet50v2")
    file_server.files[f"/mirror/{name}"] = body
    path = download_weights("resnet50v2", tmp_path, base_url=file_server.url("/mirror"))
    record = json.loads((tmp_path / f"{name}.record.json").read_text())
    assert record["sha256"] == hashlib.sha256(body).hexdigest() and record["sha256_verified"] is False
    loaded = load_imagenet_state_dict("resnet50v2", tmp_path)
    assert torch.equal(loaded["stem.conv.weight"], load(body)["stem.conv.weight"])

    path.write_bytes(save({"stem.conv.weight": torch.zeros(2, 3, 2, 2)}))  # altered after the download
    with pytest.raises(WeightsError, match=f"does not start with '{record['sha256']}' recorded in"):
        load_weights_file(path, "resnet50v2")
    (tmp_path / f"{name}.record.json").unlink()
    with pytest.raises(WeightsError, match="carries no hash prefix .* holds no sha256"):
        load_weights_file(path, "resnet50v2")
    # a body cut short, served as whole; another model's weights, or a part of them (before, kept
    # and refused only at training); this architecture's layers holding a NaN
    nan = load(body)
    nan["stem.conv.weight"][0, 0, 0, 0] = float("nan")
    weights = [key for key in nan if not key.endswith("num_batches_tracked")]  # (counters may be absent)
    part = {key: value for key, value in load(body).items() if key not in weights[-3:]}
    for served, why in [
        (body[:-10], "cannot be read as a weights file"),
        (save({"stem.conv.weight": torch.ones(2, 3, 2, 2)}), "not usable as resnet50v2 weights"),
        (save(part), f"3 of the model's {len(load(body))} tensors missing (e.g. "),
        (save(nan), "tensor 'stem.conv.weight' holds NaN"),
    ]:
        file_server.files[f"/bad/{name}"] = served
        with pytest.raises(WeightsError, match=r"/bad/.*: what was fetched is not a weights file, nothing kept") as bad:
            download_weights("resnet50v2", tmp_path / "bad", base_url=file_server.url("/bad"))
        assert why in str(bad.value) and "download_weights` again" not in str(bad.value)
        assert not (tmp_path / "bad" / name).exists() and not (tmp_path / "bad" / f"{name}.record.json").exists()
    for digest in ("", "0", record["sha256"][:12]):  # before, "" let any file pass
        (tmp_path / f"{name}.record.json").write_text(json.dumps({"sha256": digest}))
        with pytest.raises(WeightsError, match=r"holds no sha256 \(64 hex digits\)"):
            load_weights_file(path, "resnet50v2")


@pytest.mark.slow
def test_snakemake_download_weights_fetches_timm_safetensors_from_base_url(file_server, tmp_path):
    """resnet50v2's hub file (.safetensors, no hash in its name) goes through the same rule; its hash is recorded."""

    from conftest import make_workdir
    from safetensors.torch import load

    name = weights_filename("resnet50v2")
    body = _resnetv2_body()
    file_server.files[f"/mirror/{name}"] = body
    workdir = make_workdir(tmp_path / "wd")
    override = workdir / "override.json"
    experiments = [{"model": "resnet50v2", "init": "imagenet", "method": "representative"}]
    override.write_text(json.dumps({"experiments": experiments, "weights": {"base_url": file_server.url("/mirror")}}))
    run = _download_weights(workdir, override)
    assert run.returncode == 0, run.stderr[-3000:]
    path = workdir / "resources" / "weights" / name
    assert path.read_bytes() == body
    assert json.loads(path.with_name(name + ".record.json").read_text())["sha256"] == hashlib.sha256(body).hexdigest()
    assert torch.equal(load_weights_file(path, "resnet50v2")["stem.conv.weight"], load(body)["stem.conv.weight"])

    # another mirror (here one without the file) re-runs nothing: before, the URL was a param of the
    # job, so Snakemake deleted the verified file to fetch it again, and with the mirror failing it was gone
    override.write_text(json.dumps({"experiments": experiments, "weights": {"base_url": file_server.url("/gone")}}))
    again = _download_weights(workdir, override)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stderr[-3000:]
    assert path.read_bytes() == body


@pytest.mark.slow
def test_weights_dir_with_home_or_a_variable_is_expanded_as_in_a_shell(tmp_path):
    """Before, ``weights.dir: ~/w`` made a folder named '~' in the workdir (dataset.local.path was expanded)."""
    import os

    from conftest import snakemake_cmd

    experiments = [{"model": "resnet50", "init": "imagenet", "method": "representative"}]
    for given in ("~/w", "$TEMVIRUS_TEST_WEIGHTS/w"):
        override = tmp_path / "override.json"
        override.write_text(json.dumps({"experiments": experiments, "weights": {"dir": given}}))
        env = {**os.environ, "HOME": str(tmp_path / "home"), "TEMVIRUS_TEST_WEIGHTS": str(tmp_path / "home")}
        run = subprocess.run(
            snakemake_cmd(tmp_path / "wd", "-n", "download_weights", "--configfile", str(override)),
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"output: {tmp_path / 'home' / 'w' / weights_filename('resnet50')}" in run.stdout, run.stdout[-3000:]


def test_weights_with_a_nan_or_an_infinity_are_refused(tmp_path):
    """Before, a state dict holding NaN loaded: every patch then had NaN logits, so one class."""
    import re

    for bad in (float("nan"), float("inf")):
        state = {"conv.weight": torch.ones(2, 2), "bn.num_batches_tracked": torch.tensor(3)}
        state["conv.weight"][1, 0] = bad
        body = _state_bytes(state)
        path = tmp_path / f"m-{hashlib.sha256(body).hexdigest()[:8]}.pth"
        path.write_bytes(body)
        with pytest.raises(WeightsError, match=re.escape(f"{path}: tensor 'conv.weight' holds NaN or infinite")):
            load_weights_file(path, "mobilenet_v2")
    state["conv.weight"][1, 0] = 2.0  # finite again: read (an integer counter is not checked)
    body = _state_bytes(state)
    path = tmp_path / f"m-{hashlib.sha256(body).hexdigest()[:8]}.pth"
    path.write_bytes(body)
    assert torch.equal(load_weights_file(path, "mobilenet_v2")["conv.weight"], state["conv.weight"])
