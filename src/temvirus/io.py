"""File helpers shared by every step: atomic writes and hashing.

Every output is written under a temporary name in the destination folder and renamed into
place only once it is complete, so that a crash or a bad input never leaves a half-written
file under a name that a later step would trust. A job killed outright (SIGKILL, the
out-of-memory killer, a time limit) cannot remove its temporary: every temporary is named
``.{name}.{8 random characters}.part[{suffix}]`` (:data:`TEMPORARY`), and the workflow removes
such leftovers under ``results/`` when it starts (:func:`remove_temporaries`, the ``onstart``
handler of ``workflow/rules/data.smk``), before any job runs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

_CHUNK = 1 << 20
#: names of the temporaries of atomic writes (files here, folders in patches and synth):
#: ``tempfile.mkstemp``/``mkdtemp`` with prefix ``.{name}.`` and suffix ``.part[{suffix}]``
TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.part(\.[^.]+)?$")
_UMASK = os.umask(0)
os.umask(_UMASK)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def write_target(path: str | os.PathLike) -> Path:
    """The file a write to ``path`` creates or replaces: ``path`` itself or, for a symbolic link
    (a chain of them, relative or absolute), the file it points to, so that the link stays and
    its target gets the new content (as ``cp`` and a shell's ``>`` do)."""
    return Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)


def check_file_destination(path: str | os.PathLike) -> None:
    """Raise ValueError, naming ``path``, unless it names a file that a write may create or replace.

    Refused: a name ending in ``/`` (a folder's name), anything but a regular file already
    there (a folder, a device such as ``/dev/null``, a FIFO, a socket, a link to one of them):
    an atomic write renames its temporary over the name, which would replace a device or FIFO by
    a plain file, and reading one to check it can block for ever; a link that loops, and a
    dangling link whose target's folder does not exist. A link to a file (or to none yet) is
    written through (:func:`write_target`).
    """
    if str(path).endswith(("/", os.sep)):
        raise ValueError(f"{path}: ends in '/', naming a folder; give the name of the file to write")
    final = Path(path)
    if final.is_symlink():
        try:
            os.stat(final)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ValueError(f"{path}: a symbolic link that loops; give the name of the file to write") from None
        target = write_target(final)
        if not target.parent.is_dir():
            raise ValueError(
                f"{path}: a symbolic link to {target}, whose folder {target.parent} does not exist; "
                "make it, or give the name of the file to write"
            )
    if final.exists() and not final.is_file():
        kind = "a folder" if final.is_dir() else "not a regular file (a device, FIFO or socket)"
        via = f" (a link to {write_target(final)})" if final.is_symlink() else ""
        raise ValueError(f"{path}: is {kind}{via}; give the name of the file to write")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary file keeps the destination's suffix (writers such as numpy and matplotlib
    pick the format from it). On any exception it is removed and ``path`` is untouched. A ``path``
    that :func:`check_file_destination` refuses raises its ValueError before anything is written;
    a symbolic link is written through: the temporary goes beside its target, which it replaces,
    and the link stays (:func:`write_target`).
    """
    check_file_destination(path)
    final = write_target(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".part{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def temporary_dir(path: str | os.PathLike) -> Path:
    """A new empty folder beside ``path`` (its parents made), named like :data:`TEMPORARY`, with the
    permissions of an ordinary ``mkdir`` under the umask (``tempfile.mkdtemp`` makes 0700: a folder
    moved into place from it would be unreadable to the group and others)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    tmp.chmod(0o777 & ~_UMASK)
    return tmp


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` (:func:`temporary_dir`); it replaces ``path`` on
    success, else is removed.

    The folder counterpart of :func:`atomic_path` (named like it, :data:`TEMPORARY`, with ordinary
    permissions): a failed step leaves neither a half-written folder nor a changed ``path``.
    """
    final = Path(path)
    tmp = temporary_dir(final)
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the leftover temporaries (:data:`TEMPORARY`) of killed jobs under ``folder``.

    Only for when no job writes there (the workflow's start). Returns what was removed.
    """
    removed = []
    for parent, dirs, names in os.walk(folder):
        for name in [n for n in dirs + names if TEMPORARY.match(n)]:
            path = Path(parent, name)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
                dirs.remove(name)
            else:
                path.unlink()
            removed.append(path)
    return removed


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """CSV with a fixed float format and no index, so equal tables give equal bytes."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)


def save_figure(path: str | os.PathLike, fig) -> None:
    """Save a matplotlib figure atomically with fixed metadata (byte-stable PNGs)."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=fig.dpi, metadata={"Software": None})
    plt.close(fig)
