"""Training one experiment (model x initialisation x split method), on the CPU or a GPU.

The data are held in memory as compact integer tensors (on the GPU when training there: the
fast path, no DataLoader); every batch is taken by index, optionally turned by a random D4
element (on the device holding it), standardised per patch and fed to the model, in
channels_last layout if configured (faster on GPUs and on oneDNN CPUs). On CUDA, autocast
(bf16/fp16) and ``torch.compile`` are available.

A training job writes ``resume/ckpt.pt`` (model, optimizer, grad scaler, epoch, RNG states,
the best weights with their epoch and metric, early-stopping counter, history) atomically
after every epoch, one file, so a job killed at any moment that is started again continues
where it stopped and ends with the same weights as an uninterrupted run. Once training ends it
holds the final state instead (the weights, the best weights and the history, without the
optimizer's state: about twice the model's size) and is kept: outputs written and then lost
(Snakemake stopped while the job finished, so it took them for incomplete and removed them; a
cluster job that outlived its scheduler) are written again from it by the next run, without an
epoch trained again. Delete ``resume/`` to free the space once the results are final.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import random
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from temvirus import provenance
from temvirus.experiments import experiment_name
from temvirus.figures import plot_curves
from temvirus.io import atomic_path, save_figure, sha256_file, write_csv
from temvirus.metrics import confusion_matrix, summary
from temvirus.models import (
    TrainingDiverged,
    build_model,
    first_nonfinite,
    set_bn_momentum,
    trainable_parameters,
)
from temvirus.seeding import derive_seed, rng
from temvirus.split import check_class_subsets

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_f1_macro", "lr", "seconds"]
MONITORS = {"f1_macro": "val_f1_macro", "accuracy": "val_acc"}
_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Settings:
    """Everything that decides a training run besides the data (see config ``training``)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int
    monitor: str = "f1_macro"
    device: str = "auto"
    gpu_augment: bool = True
    amp: str = "bf16"
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = True
    seed: int = 0
    #: ``adam`` (the paper's; L2 ``weight_decay``) or ``adamw`` (decoupled weight decay)
    optimizer: str = "adam"
    #: ``constant`` (the paper's) or ``onecycle`` (warm-up to ``lr``, cosine decay, per batch)
    schedule: str = "constant"
    #: side (px) the patches are area-averaged down to; ``None`` = as stored (256, the paper's)
    input_size: int | None = None
    #: batch-norm momentum (PyTorch's convention) for every BN layer; ``None`` = the model's own
    bn_momentum: float | None = None
    #: label smoothing of the training loss (Szegedy et al. 2016, Section 7): the target puts
    #: ``1 - label_smoothing`` on the class and spreads ``label_smoothing`` over all classes; 0 = the paper's
    label_smoothing: float = 0.0


def settings_from_config(training: dict, seed: int, experiment: Mapping) -> Settings:
    """The :class:`Settings` of ``experiment`` (its ``model``, ``init``, ``method``) from its resolved training settings.

    ``training`` is :func:`temvirus.experiments.resolve_training`'s flat dict; the run's seed
    is derived from the master ``seed`` and the experiment's name
    (:func:`temvirus.experiments.experiment_name`).
    """
    t = training
    return Settings(
        epochs=t["epochs"],
        batch_size=t["batch_size"],
        lr=t["lr"],
        weight_decay=t["weight_decay"],
        patience=t["patience"],
        monitor=t["monitor"],
        device=t["device"],
        gpu_augment=t["gpu_augment"],
        amp=t["amp"],
        channels_last=t["channels_last"],
        compile=t["compile"],
        deterministic=t["deterministic"],
        seed=derive_seed(seed, "train", experiment_name(experiment)),
        optimizer=t["optimizer"],
        schedule=t["schedule"],
        input_size=t["input_size"],
        bn_momentum=t["bn_momentum"],
        label_smoothing=t["label_smoothing"],
    )


# ---------------------------------------------------------------------------------- data


def _cap_per_class(labels: np.ndarray, cap: int | None, generator: np.random.Generator) -> np.ndarray:
    """Sorted row indices keeping at most ``cap`` random rows of each label (all if ``cap`` is None)."""
    keep = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if cap is not None and len(rows) > cap:
            rows = generator.choice(rows, size=cap, replace=False)
        keep.append(rows)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def area_downsample(patches: np.ndarray, size: int, chunk: int = 32) -> np.ndarray:
    """Integer patches ``(N, S, S)`` averaged over ``f x f`` pixel blocks to ``(N, size, size)``, ``f = S / size``.

    Area averaging (each output pixel is the mean of the ``f x f`` input pixels it covers,
    rounded to the input's integer type): at 1 nm/px input, a 128 px output has 2 nm pixels.
    ``S`` must be a multiple of ``size`` (ValueError otherwise). ``chunk`` patches at a time: small blocks keep
    the float temporaries below glibc's mmap threshold (blocks of 256 took 3-6x the time, mostly in the kernel).
    """
    side = patches.shape[-1]
    if side == size:
        return patches
    if size < 1 or side % size:
        raise ValueError(
            f"input_size {size} does not divide the patch size {side} (area averaging needs an integer factor)"
        )
    f = side // size
    out = np.empty((len(patches), size, size), dtype=patches.dtype)
    for start in range(0, len(patches), chunk):
        block = patches[start : start + chunk].astype(np.float32)
        out[start : start + chunk] = np.rint(block.reshape(len(block), size, f, size, f).mean(axis=(2, 4)))
    return out


def _load_rows(npy: Path, rows: np.ndarray, n_expected: int, size: int | None) -> np.ndarray:
    array = np.load(npy, mmap_mode="r")
    if array.ndim != 3 or array.shape[0] != n_expected or array.shape[1] != array.shape[2]:
        raise ValueError(f"{npy}: expected {n_expected} square patches (N, S, S), found shape {array.shape}")
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{npy}: expected uint16 (or uint8) patches, found {array.dtype}")
    try:
        return area_downsample(np.asarray(array[rows]), size or array.shape[-1])
    except ValueError as exc:
        raise ValueError(f"{npy}: {exc}") from None


def load_subset(
    patches_dir: str | Path,
    subset: str,
    classes: Sequence[str],
    cap: int | None = None,
    seed: int = 0,
    size: int | None = None,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Patches of one subset of a split folder (``train_augmented``, ``validation``, ``test``, ``train``).

    Returns ``(x, y, table)``: the ``(N, S, S)`` integer patches (area-averaged down to
    ``size`` px when given, see :func:`area_downsample`), their class indices in the order of
    ``classes``, and their table rows (``patches.csv`` or ``train_augmented.csv``).
    Classes outside ``classes`` are left out; at most ``cap`` random patches per class are kept.
    A class of ``classes`` without patches in ``subset`` is refused (ValueError naming the table;
    :func:`temvirus.split.check_class_subsets`).
    """
    folder = Path(patches_dir)
    if subset == "train_augmented":
        csv = folder / "train_augmented.csv"
        table = pd.read_csv(csv)
        missing = sorted(set(classes) - set(table["class"]))
        if missing:
            raise ValueError(f"{csv}: no {subset} patches of classes {missing}; adjust classes.classification")
    else:
        csv = folder / "patches.csv"
        table = pd.read_csv(csv, dtype={"image_id": str})
        check_class_subsets(table, classes, csv, subsets=[subset])
        table = table[table["subset"] == subset].sort_values("index")
    if not np.array_equal(table["index"].to_numpy(), np.arange(len(table))):
        raise ValueError(f"{csv}: 'index' of subset {subset} is not 0..{len(table) - 1} (one row per array row)")
    present = table["class"].isin(classes).to_numpy()
    labels = table["class"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    rows = np.flatnonzero(present)
    rows = rows[_cap_per_class(labels[rows].astype(np.int64), cap, rng(seed, "subset", subset))]
    x = _load_rows(folder / f"{subset}.npy", rows, len(table), size)
    return x, labels[rows].astype(np.int64), table.iloc[rows].reset_index(drop=True)


def compact_tensor(patches: np.ndarray) -> torch.Tensor:
    """Patches as a small CPU tensor that every device indexes: uint8 if they fit, else int16.

    uint16 values are shifted by -32768 into int16; per-patch standardisation does not see
    the shift.
    """
    if patches.dtype == np.uint8 or (patches.size and patches.max() < 256) or patches.size == 0:
        return torch.from_numpy(patches.astype(np.uint8))
    return torch.from_numpy((patches.astype(np.int32) - 32768).astype(np.int16))


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Per-patch standardisation of integer patches ``(B, S, S)`` to float ``(B, 1, S, S)``."""
    x = x.float()
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, correction=0)
    return ((x - mean) / std.clamp_min(1e-6)).unsqueeze(1)


def d4(x: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
    """Apply D4 element ``element[i]`` (0..7: ``k = e % 4`` quarter turns, mirrored if ``e >= 4``) to patch i."""
    element = element.to(x.device)
    x = torch.where((element >= 4).view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
    out = x.clone()
    for k in (1, 2, 3):
        rows = (element % 4) == k
        if rows.any():
            out[rows] = torch.rot90(x[rows], k, dims=(-2, -1))
    return out


# ------------------------------------------------------------------------ device, seeds


def resolve_device(name: str, setting: str = "training.device") -> torch.device:
    """``auto`` -> cuda if available, else cpu. ``cuda`` without a GPU is a ValueError naming
    ``setting`` (the config key, or a command's option, that asked for it)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{setting} is 'cuda' but torch sees no CUDA device here (use auto or cpu)")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed torch, numpy and python; in deterministic mode make torch use deterministic kernels."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def _rng_state(shuffle: torch.Generator) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
        "shuffle": shuffle.get_state(),
    }


def _set_rng_state(state: dict, shuffle: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    shuffle.set_state(state["shuffle"])


def _save(obj, path: Path) -> None:
    """torch.save atomically; through a file object so the bytes do not depend on the temporary name."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


# ---------------------------------------------------------------------------- the loop


def make_optimizer(model: nn.Module, settings: Settings) -> torch.optim.Optimizer:
    """Adam with L2 ``weight_decay`` (the paper's Keras Adam) or AdamW (decoupled weight decay).

    AdamW does not decay biases and batch-norm weights (parameters with one dimension).
    """
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.optimizer != "adamw":
        raise ValueError(f"training.optimizer must be adam or adamw, got {settings.optimizer!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": settings.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.lr)


def _autocast(device: torch.device, amp: str):
    """Autocast on CUDA when ``amp`` is bf16/fp16; on the CPU it is always off."""
    enabled = device.type == "cuda" and amp in _AMP
    return torch.autocast(device.type, dtype=_AMP.get(amp, torch.bfloat16), enabled=enabled)


def _batch(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = standardise(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int,
    device: torch.device,
    *,
    tta: bool = False,
    amp: str = "off",
    channels_last: bool = False,
) -> np.ndarray:
    """Class probabilities ``(N, C)`` (float64) of compact patches ``x``; ``tta`` averages the 8 D4 views."""
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True)
        views = range(8) if tta else (0,)
        probs = 0
        for e in views:
            xv = d4(xb, torch.full((len(xb),), e)) if e else xb
            with _autocast(device, amp):
                logits = model(_batch(xv, channels_last))
            probs = probs + torch.softmax(logits.float(), dim=1)
        out.append((probs / len(views)).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


def validate(model, x, y, n_classes: int, batch_size: int, device, amp="off", channels_last=False) -> dict:
    """Validation loss, accuracy and macro-F1 of compact patches ``x`` with labels ``y``."""
    probs = predict(model, x, batch_size, device, amp=amp, channels_last=channels_last)
    y = y.cpu().numpy()
    loss = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean()) if len(y) else float("nan")
    stats = summary(confusion_matrix(y, probs.argmax(axis=1), n_classes))
    return {"val_loss": loss, "val_acc": stats["accuracy"], "val_f1_macro": stats["f1_macro"]}


@dataclass
class FitResult:
    history: pd.DataFrame
    best_state: dict
    best_epoch: int
    best_metric: float


def fit(
    model: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    settings: Settings,
    n_classes: int,
    resume_dir: str | Path | None = None,
    fingerprint: dict | None = None,
) -> FitResult:
    """Train ``model`` on compact patch tensors (see :func:`compact_tensor`) with early stopping.

    With ``resume_dir`` the state is checkpointed there after every epoch and a run started
    again with the same ``fingerprint`` (and settings) continues from the last checkpoint.
    This is the function a throughput benchmark calls with its own tensors.

    Raises TrainingDiverged when an epoch leaves a NaN or infinite weight or batch-norm
    statistic (a learning rate too high): no checkpoint of that epoch is written.
    """
    if settings.schedule not in ("constant", "onecycle"):
        raise ValueError(f"training.schedule must be constant or onecycle, got {settings.schedule!r}")
    if settings.batch_size < 2:
        raise ValueError(f"training batch_size must be at least 2 (batch norm), got {settings.batch_size}")
    seed_everything(settings.seed, settings.deterministic)
    device = resolve_device(settings.device)
    cuda = device.type == "cuda"
    channels_last = settings.channels_last
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if settings.compile and cuda else model
    if cuda:  # the fast path: the whole arrays resident on the GPU
        train_x, val_x = (t.pin_memory().to(device, non_blocking=True) for t in (train_x, val_x))
    train_y, val_y = train_y.to(device), val_y.to(device)
    set_bn_momentum(model, settings.bn_momentum)
    optimizer = make_optimizer(model, settings)
    # a last batch of one patch is left out of each epoch (another one each epoch: the order is
    # shuffled): batch norm cannot normalise it where a feature map is 1x1 (e.g. resnet50 at 32 px)
    n = len(train_x) - (len(train_x) % settings.batch_size == 1)
    steps_per_epoch = -(-n // settings.batch_size)
    scheduler = (
        torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=settings.lr, total_steps=max(1, settings.epochs * steps_per_epoch)
        )
        if settings.schedule == "onecycle"
        else None
    )
    scaler = torch.amp.GradScaler(device.type, enabled=cuda and settings.amp == "fp16")
    shuffle = torch.Generator().manual_seed(settings.seed)
    monitor = MONITORS[settings.monitor]
    fingerprint = {"settings": asdict(settings), "n_train": len(train_x), "n_val": len(val_x), **(fingerprint or {})}

    history: list[dict] = []
    epoch, best_metric, best_epoch, bad_epochs = 0, -np.inf, 0, 0
    best_state = None
    ckpt_path = None
    if resume_dir is not None:
        ckpt_path = Path(resume_dir) / "ckpt.pt"
        ckpt = None
        if ckpt_path.is_file():
            try:  # written atomically, so never half: damaged on disk, or not this workflow's
                ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
                differs = provenance.config_differences(ckpt["fingerprint"], fingerprint)
            except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint: train from the start
                log.warning("%s cannot be read (%s); starting over", ckpt_path, str(exc).splitlines()[0][:200])
                ckpt = None
        if ckpt is not None:
            if not differs:
                model.load_state_dict(ckpt["model"])
                if not ckpt.get("finished"):  # a finished run's state has no more epochs to train
                    optimizer.load_state_dict(ckpt["optimizer"])
                    if scheduler is not None:
                        scheduler.load_state_dict(ckpt["scheduler"])
                    scaler.load_state_dict(ckpt["scaler"])
                    _set_rng_state(ckpt["rng"], shuffle)
                epoch, best_metric, best_epoch = ckpt["epoch"], ckpt["best_metric"], ckpt["best_epoch"]
                bad_epochs, history, best_state = ckpt["bad_epochs"], ckpt["history"], ckpt["best_model"]
                log.info(
                    "resuming from %s after epoch %d (best %s %.4f at epoch %d); the earlier attempt's epochs:\n%s",
                    ckpt_path,
                    epoch,
                    monitor,
                    best_metric,
                    best_epoch,
                    pd.DataFrame(history, columns=HISTORY_COLUMNS).to_string(index=False),
                )
                provenance.note("resumed_after_epoch", epoch)  # the record says that two processes trained it
                if ckpt.get("finished"):
                    log.info("%s: training had ended; its outputs are written again from its final state", ckpt_path)
            else:
                log.warning("%s was written for another run (%s differ); starting over", ckpt_path, ", ".join(differs))

    def state() -> dict:
        """The checkpoint's part that a finished run keeps too. The best weights are in the same
        file as their epoch and metric: a job killed between two writes could otherwise resume
        with one epoch's weights and another's metric."""
        return {
            "model": model.state_dict(),
            "epoch": epoch,
            "best_metric": best_metric,
            "best_epoch": best_epoch,
            "best_model": best_state,
            "bad_epochs": bad_epochs,
            "history": history,
            "fingerprint": fingerprint,
        }

    while epoch < settings.epochs and bad_epochs < settings.patience:
        started = time.time()
        step_model.train()
        order = torch.randperm(len(train_x), generator=shuffle)
        elements = torch.randint(0, 8, (len(train_x),), generator=shuffle) if settings.gpu_augment else None
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for start in range(0, n, settings.batch_size):
            idx = order[start : start + settings.batch_size].to(device)
            xb = train_x[idx]
            if elements is not None:
                xb = d4(xb, elements[start : start + settings.batch_size])
            yb = train_y[idx]
            with _autocast(device, settings.amp):
                logits = step_model(_batch(xb, channels_last))
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=settings.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == yb).sum()
        epoch += 1
        bad = first_nonfinite(model.state_dict())
        if bad is not None:
            # before, the run went on: NaN logits called every patch class 0, the best epoch an early one
            raise TrainingDiverged(
                f"training diverged in epoch {epoch}: {bad} holds NaN or infinite values (training loss "
                f"{loss_sum.item() / n:.4g}, learning rate up to {settings.lr:g}); lower the learning rate "
                "(training.lr, or the experiment's own lr)"
            )
        row = {"epoch": epoch, "train_loss": loss_sum.item() / n, "train_acc": correct.item() / n}
        row.update(validate(model, val_x, val_y, n_classes, settings.batch_size, device, settings.amp, channels_last))
        row["lr"] = optimizer.param_groups[0]["lr"]
        row["seconds"] = round(time.time() - started, 3)
        history.append(row)
        improved = row[monitor] > best_metric
        if improved:
            best_metric, best_epoch, bad_epochs = row[monitor], epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        log.info(
            "epoch %d/%d train_loss %.4f train_acc %.3f val_loss %.4f val_acc %.3f val_f1_macro %.3f %.1f s%s",
            epoch,
            settings.epochs,
            row["train_loss"],
            row["train_acc"],
            row["val_loss"],
            row["val_acc"],
            row["val_f1_macro"],
            row["seconds"],
            " *best" if improved else "",
        )
        if ckpt_path is not None:
            _save(
                {
                    **state(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "rng": _rng_state(shuffle),
                },
                ckpt_path,
            )
    if bad_epochs >= settings.patience:
        log.info("early stop after epoch %d: no %s improvement for %d epochs", epoch, monitor, bad_epochs)
    # the final state, kept: outputs lost after training come back from it (module docstring)
    if ckpt_path is not None:
        _save({**state(), "finished": True}, ckpt_path)
    return FitResult(pd.DataFrame(history, columns=HISTORY_COLUMNS), best_state, best_epoch, float(best_metric))


# ------------------------------------------------------------------------- one experiment


def software_fingerprint(settings: Settings) -> dict:
    """What besides the settings and data decides a run's weights: the code (hash of the package and workflow,
    :func:`temvirus.provenance.code_version`), torch, the CPU threads and instruction set, and the GPU."""
    device = resolve_device(settings.device)
    return {
        "code_sha256": provenance.code_version()["code_sha256"],
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def _digest(*arrays: np.ndarray) -> str:
    """sha256 of arrays' bytes: a resume checkpoint is only used for the very same data."""
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).data)
    return digest.hexdigest()


@contextlib.contextmanager
def sole_trainer(resume_dir: str | Path) -> Iterator[None]:
    """Hold ``resume_dir/lock`` (``flock``, exclusive) while one experiment trains.

    A second process training the same experiment (the rerun of a Snakemake killed outright,
    whose training job, orphaned, still runs) would resume from the checkpoint the first one is
    still writing, and both would write the outputs. Raises RuntimeError naming the other process
    (its pid and host, written in the file). Where the file system has no locks, nothing is held.
    """
    Path(resume_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(resume_dir) / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "a process"
            raise RuntimeError(
                f"{resume_dir}: {other} is training this experiment now (an orphan of a Snakemake killed "
                "outright?): wait for it to end, or stop it, then run again"
            ) from None
        except OSError:  # no locks on this file system
            pass
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)


def train_experiment(
    experiment: Mapping,
    patches_dir: str | Path,
    out_dir: str | Path,
    classes: Sequence[str],
    settings: Settings,
    max_train_per_class: int | None = None,
    max_val_per_class: int | None = None,
    weights_file: str | Path | None = None,
) -> FitResult:
    """Train ``experiment`` on a split's patches; write best.pt, last.pt, metrics.csv, curve.png to ``out_dir``.

    ``experiment``: its ``model``, ``init`` and ``method`` (a config entry or a job's
    wildcards); the checkpoints record its name (:func:`temvirus.experiments.experiment_name`).
    ``out_dir/resume/`` holds the resume checkpoint while the job runs and the final state after
    (see the module docstring).
    """
    model_name, init = experiment["model"], experiment["init"]
    name = experiment_name(experiment)
    out = Path(out_dir)
    with sole_trainer(out / "resume"):
        size = settings.input_size
        train_np, train_y, _ = load_subset(
            patches_dir, "train_augmented", classes, max_train_per_class, settings.seed, size
        )
        val_np, val_y, _ = load_subset(patches_dir, "validation", classes, max_val_per_class, settings.seed, size)
        size = train_np.shape[-1]
        log.info(
            "%s: %d training patches, %d validation patches, %d classes, %dx%d px",
            name,
            len(train_y),
            len(val_y),
            len(classes),
            size,
            size,
        )
        torch.manual_seed(settings.seed)  # model initialisation
        model = build_model(model_name, len(classes), init, weights_file, input_size=size)
        n_params = trainable_parameters(model)
        log.info(
            "%s: %d trainable parameters; device %s, %d CPU threads",
            model_name,
            n_params,
            resolve_device(settings.device),
            torch.get_num_threads(),
        )
        result = fit(
            model,
            compact_tensor(train_np),
            torch.from_numpy(train_y),
            compact_tensor(val_np),
            torch.from_numpy(val_y),
            settings,
            len(classes),
            resume_dir=out / "resume",
            fingerprint={
                "experiment": name,
                "classes": list(classes),
                "data": _digest(train_np, train_y, val_np, val_y),
                # another ImageNet file (a mirror's, fetched again) must not continue a run begun on the first
                "init_weights": sha256_file(weights_file) if weights_file else None,
                # what else makes the weights: a run resumed under other code, torch, threads or instruction set
                # matched no run its record describes (docs/lineage.md: results repeat bit for bit only on one)
                "software": software_fingerprint(settings),
            },
        )
        meta = {
            "experiment": name,
            "model": model_name,
            "init": init,
            "classes": list(classes),
            "input_size": size,
            "trainable_params": n_params,
            "monitor": settings.monitor,
        }
        last_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        _save(
            {**meta, "model_state": result.best_state, "epoch": result.best_epoch, "metric": result.best_metric},
            out / "best.pt",
        )
        _save({**meta, "model_state": last_state, "epoch": int(result.history["epoch"].iloc[-1])}, out / "last.pt")
        write_csv(out / "metrics.csv", result.history)
        save_figure(
            out / "curve.png",
            plot_curves(result.history, f"{name} (best epoch {result.best_epoch})", settings.label_smoothing),
        )
        return result


class DamagedModelError(ValueError):
    """A trained model file of this workflow whose weights cannot be used (NaN or infinite values)."""


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """The model of a best.pt / last.pt file (on the CPU) and the file's metadata.

    Raises DamagedModelError when a weight or batch-norm statistic is NaN or infinite (a model that
    would give every patch one class); torch's and build_model's errors for other files pass through.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ckpt["model"], len(ckpt["classes"]), "scratch", input_size=ckpt["input_size"])
    state = ckpt.pop("model_state")
    bad = first_nonfinite(state)
    if bad is not None:
        raise DamagedModelError(
            f"{path}: {bad} holds NaN or infinite values: not a usable model; copy it again from where it was trained"
        )
    model.load_state_dict(state)
    return model, ckpt


def train_from_config(
    experiment: Mapping,
    patches_dir: str | Path,
    out_dir: str | Path,
    classes: Sequence[str],
    training: dict,
    seed: int,
    weights_file: str | Path | None = None,
    threads: int = 1,
) -> FitResult:
    """The rule ``train_model``: :func:`train_experiment` with the experiment's training settings.

    ``experiment``: its ``model``, ``init`` and ``method`` (the job's wildcards); ``patches_dir``
    the split's patch folder (``patches.csv``, ``train_augmented.npy``, ``validation.npy``);
    ``out_dir`` receives best.pt, last.pt, metrics.csv, curve.png. ``training`` is
    :func:`temvirus.experiments.resolve_training`'s flat dict for the experiment (its
    ``max_train_per_class``/``max_val_per_class`` cap the patches per class), ``seed`` the
    master seed (:func:`settings_from_config`), ``weights_file`` the ImageNet weights of an
    ``imagenet`` init, ``threads`` torch's CPU threads.
    """
    torch.set_num_threads(max(1, threads))
    return train_experiment(
        experiment,
        patches_dir,
        out_dir,
        classes,
        settings_from_config(training, seed, experiment),
        training["max_train_per_class"],
        training["max_val_per_class"],
        weights_file,
    )
