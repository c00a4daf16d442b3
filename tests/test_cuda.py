"""The CUDA fast path of training (temvirus.train): run with ``pytest -m cuda`` on a GPU machine.

Every test here is skipped, saying why, where torch sees no CUDA device; on a GPU they check
that every model runs forward and backward in bf16 with channels_last, that the D4
augmentation on the GPU equals the CPU's, that a deterministic CUDA run repeated gives
identical weights, that a killed CUDA run resumes to the same weights, and that
``compile: true`` trains. ``benchmarks/gpu_check.py`` runs them first (issue 13).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

# as a training job's fit() does before its first CUDA call (cuBLAS reads it when it starts)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from temvirus.models import MODELS, build_model  # noqa: E402
from temvirus.train import Settings, _autocast, _batch, compact_tensor, d4, fit, standardise  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not HAS_CUDA,
        reason="needs a CUDA GPU (torch.cuda.is_available() is False); run on a GPU machine, see docs/benchmarks.md 'GPU check'",
    ),
]
TESTS = Path(__file__).resolve().parent
N_CLASSES = 9
#: a small CUDA run of the project's recipe (bf16, channels_last, D4 on the device, deterministic)
SETTINGS = Settings(epochs=3, batch_size=16, lr=1e-3, weight_decay=0.0, patience=100, device="cuda", seed=11)


def tiny_data(size: int = 64, per_class: int = 16, seed: int = 0):
    """Learnable compact patches: class ``i`` is a bright disc of radius growing with ``i`` on noise."""
    gen = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    x, y = [], []
    for label in range(N_CLASSES):
        disc = (np.hypot(yy, xx) < size * (0.1 + 0.35 * label / N_CLASSES)) * 60.0
        x.append(np.clip(disc + gen.normal(120, 25, (per_class, size, size)), 0, 255).astype(np.uint8))
        y += [label] * per_class
    x, y = compact_tensor(np.concatenate(x)), torch.tensor(y)
    return x, y, x[::4].clone(), y[::4].clone()


def fresh_model(seed: int = SETTINGS.seed, size: int = 64):
    torch.manual_seed(seed)
    return build_model("custom", N_CLASSES, "scratch", input_size=size)


def cpu_state(model) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), f"{key} differs"


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_bf16_channels_last(name):
    device = torch.device("cuda")
    size = 256  # the paper's patches (inception_v3 needs >= 75 px)
    torch.manual_seed(0)
    model = build_model(name, N_CLASSES, "scratch", input_size=size).to(device).to(memory_format=torch.channels_last)
    model.train()
    xb = _batch(torch.randint(0, 255, (4, size, size), dtype=torch.uint8, device=device), channels_last=True)
    assert xb.is_contiguous(memory_format=torch.channels_last)
    with _autocast(device, "bf16"):
        logits = model(xb)
    assert logits.dtype == torch.bfloat16 and logits.shape == (4, N_CLASSES)
    loss = torch.nn.functional.cross_entropy(logits.float(), torch.arange(4, device=device))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.float32])
def test_d4_on_the_gpu_equals_the_cpu(dtype):
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 200, (64, 33, 33), generator=gen).to(dtype)  # odd side: no symmetric centre hides a bug
    elements = torch.arange(64) % 8
    on_gpu = d4(x.cuda(), elements.cuda()).cpu()
    assert torch.equal(on_gpu, d4(x, elements))
    assert torch.allclose(standardise(x.cuda()).cpu(), standardise(x), atol=1e-5)


def test_a_deterministic_cuda_run_repeated_gives_identical_weights():
    data = tiny_data()
    runs = []
    for _ in range(2):
        model = fresh_model()
        result = fit(model, *data, SETTINGS, N_CLASSES)
        runs.append((cpu_state(model), result))
    (a, ra), (b, rb) = runs
    assert next(iter(a.values())).device.type == "cpu" and len(ra.history) == SETTINGS.epochs
    assert_same_state(a, b)
    assert_same_state(ra.best_state, rb.best_state)
    assert ra.history.drop(columns="seconds").equals(rb.history.drop(columns="seconds"))
    other = fresh_model()
    fit(other, *data, replace(SETTINGS, seed=12, epochs=1), N_CLASSES)
    assert not torch.equal(cpu_state(other)["top.8.weight"], a["top.8.weight"])  # the seed matters


_CHILD = """
import logging, sys, time
sys.path.insert(0, {tests!r})
from test_cuda import SETTINGS, N_CLASSES, fresh_model, tiny_data
from temvirus.train import fit

class Slow(logging.Handler):  # a pause after each epoch's log line, before its checkpoint: time to kill
    def emit(self, record):
        if record.getMessage().startswith("epoch "):
            time.sleep(1.0)

logging.getLogger("temvirus.train").addHandler(Slow())
logging.getLogger("temvirus.train").setLevel(logging.INFO)
fit(fresh_model(), *tiny_data(), SETTINGS, N_CLASSES, resume_dir=sys.argv[1])
"""


def test_a_killed_cuda_run_resumes_to_the_same_weights(tmp_path, caplog):
    straight = fresh_model()
    expected = fit(straight, *tiny_data(), SETTINGS, N_CLASSES)

    resume = tmp_path / "resume"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent / "src"), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(tests=str(TESTS)), str(resume)], env=env)
    ckpt = resume / "ckpt.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)  # like a preempted SLURM job
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the child ended before it was killed"
    done = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= done < SETTINGS.epochs

    resumed = fresh_model()
    with caplog.at_level(logging.INFO, logger="temvirus.train"):
        result = fit(resumed, *tiny_data(), SETTINGS, N_CLASSES, resume_dir=resume)
    assert f"after epoch {done}" in caplog.text
    assert_same_state(cpu_state(straight), cpu_state(resumed))
    assert_same_state(expected.best_state, result.best_state)
    assert expected.history.drop(columns="seconds").equals(result.history.drop(columns="seconds"))


def test_compile_true_trains():
    data = tiny_data()
    result = fit(fresh_model(), *data, replace(SETTINGS, compile=True, epochs=2, deterministic=False), N_CLASSES)
    assert len(result.history) == 2 and np.isfinite(result.history["train_loss"]).all()
    assert result.best_state is not None and all(torch.isfinite(v.float()).all() for v in result.best_state.values())
