"""File helpers shared by every step: atomic writes and hashing.

Every output is written under a temporary name in the destination folder and renamed into
place only once it is complete, so that a crash or a bad input never leaves a half-written
file under a name that a later step would trust. A job killed outright (SIGKILL, the
out-of-memory killer, a time limit) cannot remove its temporary: every temporary is named
``.{name}.{8 random characters}.part[{suffix}]`` (:data:`TEMPORARY`), and the workflow removes
such leftovers under ``results/`` when it starts (:func:`remove_temporaries`, the ``onstart``
handler of ``workflow/rules/data.smk``), before any job runs. The command line has no such
start: its writer holds a lock on its temporary while it lives (``flock``; the kernel drops it
when the process dies, however), and a later write of the same output removes the leftovers that
no live process holds (:func:`remove_abandoned_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

_CHUNK = 1 << 20
#: names of the temporaries of atomic writes (files here, folders in patches and synth):
#: ``tempfile.mkstemp``/``mkdtemp`` with prefix ``.{name}.`` and suffix ``.part[{suffix}]``
TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.part(\.[^.]+)?$")
#: a temporary that no live process holds locked and that is untouched for this long (s) is the
#: leftover of a killed writer (the age covers the instant between its creation and its lock)
ABANDONED_AFTER_S = 2.0
_UMASK = os.umask(0)
os.umask(_UMASK)


def shell_path(path: str | os.PathLike) -> Path:
    """``path`` with ``~`` and ``$VARIABLES`` expanded as a shell does (``~/data``, ``$SCRATCH/tem``);
    an unset variable is left as written."""
    return Path(os.path.expandvars(os.path.expanduser(path)))


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
    and the link stays (:func:`write_target`). The temporary is locked while it is written, and
    the leftovers of killed writes of ``path`` are removed first
    (:func:`remove_abandoned_temporaries`).
    """
    check_file_destination(path)
    final = write_target(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(final)
    prefix, suffix = _temporary_affixes(final.name)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=final.parent)
    _hold(fd)
    tmp_path = Path(tmp)
    try:
        tmp_path.chmod(0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def _hold(fd: int) -> None:
    """Lock the open temporary ``fd`` for as long as it is open (``flock``, exclusive): the mark of
    a live writer for :func:`remove_abandoned_temporaries`. Where the file system has no locks,
    nothing is held and the temporary is never taken for abandoned."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _abandoned(path: Path) -> bool:
    """Whether the temporary ``path`` is a killed writer's: untouched for :data:`ABANDONED_AFTER_S`
    and not locked by a live process (a lock can be taken on it now)."""
    try:
        if time.time() - path.lstat().st_mtime < ABANDONED_AFTER_S or path.is_symlink():
            return False
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a live writer's (or no locks here: cannot tell)
    finally:
        os.close(fd)
    return True


def remove_abandoned_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of the output ``path`` (its siblings ``.{name}.XXXXXXXX.part[suffix]``,
    :data:`TEMPORARY`) left by writers killed outright (SIGKILL, the out-of-memory killer): those
    no live process holds (:func:`atomic_path`, :func:`atomic_dir`). Safe while other processes
    write the same output. Returns what was removed."""
    final = Path(path)
    if not final.parent.is_dir() or TEMPORARY.match(final.parent.name):  # a write inside a new temporary folder
        return []
    removed = []
    for entry in os.scandir(final.parent):
        name = entry.name
        if name.startswith(f".{final.name}.") and TEMPORARY.match(name) and _abandoned(Path(entry.path)):
            _remove(Path(entry.path))
            removed.append(Path(entry.path))
    return removed


def _remove(path: Path) -> None:
    """Remove a temporary: a folder with its contents (not through a link), else the file or link."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _temporary_affixes(name: str, *, folder: bool = False) -> tuple[str, str]:
    """The prefix and suffix around the 8 random characters of ``tempfile`` in the name of the
    temporary of an atomic write of the file (or ``folder``) ``name`` (:data:`TEMPORARY`):
    ``.{name}.`` and ``.part{suffix}`` (a folder's: ``.part``)."""
    return f".{name}.", ".part" if folder else f".part{Path(name).suffix}"


def temporary_name_bytes(name: str, *, folder: bool = False) -> int:
    """Bytes of the name of the temporary that an atomic write of a file (or ``folder``) ``name``
    makes (:func:`_temporary_affixes`): a name that fits the file system (255 bytes) can still make
    one that does not, and the write fails after the work that made it."""
    return 8 + sum(len(os.fsencode(affix)) for affix in _temporary_affixes(name, folder=folder))


def temporary_dir(path: str | os.PathLike) -> Path:
    """A new empty folder beside ``path`` (its parents made), named like :data:`TEMPORARY`, with the
    permissions of an ordinary ``mkdir`` under the umask (``tempfile.mkdtemp`` makes 0700: a folder
    moved into place from it would be unreadable to the group and others)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _temporary_affixes(final.name, folder=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=final.parent))
    tmp.chmod(0o777 & ~_UMASK)
    return tmp


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` (:func:`temporary_dir`); it replaces ``path`` on
    success, else is removed.

    The folder counterpart of :func:`atomic_path` (named like it, :data:`TEMPORARY`, with ordinary
    permissions, locked while written): a failed step leaves neither a half-written folder nor a
    changed ``path``; the leftovers of killed writes of ``path`` are removed first
    (:func:`remove_abandoned_temporaries`). With ``replace=False`` a ``path`` that is not an empty
    folder when the output is complete (another run wrote it meanwhile) is kept: one rename that
    the system refuses onto a folder with contents, a FileExistsError naming it, and the output
    of this run removed.
    """
    final = Path(path)
    remove_abandoned_temporaries(final)
    tmp = temporary_dir(final)
    fd = os.open(tmp, os.O_RDONLY)
    _hold(fd)
    try:
        yield tmp
        if not replace and final.is_dir():  # an empty folder given: its permissions and group kept
            mode = final.stat()
            os.chmod(tmp, stat.S_IMODE(mode.st_mode))
            with contextlib.suppress(OSError):  # another group: only the owner (or root) may set it
                os.chown(tmp, -1, mode.st_gid)
        if replace and final.exists():
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)  # onto an empty folder or nothing; a folder with contents: refused
        except OSError as error:
            if replace or error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
            raise FileExistsError(
                f"{final}: written by another run while this one ran; its contents are kept (this run's output "
                "is removed): give each run its own folder"
            ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(fd)


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the leftover temporaries (:data:`TEMPORARY`) of killed jobs under ``folder``.

    Only for when no job writes there (the workflow's start). Returns what was removed.
    """
    removed = []
    for parent, dirs, names in os.walk(folder):
        for name in [n for n in dirs + names if TEMPORARY.match(n)]:
            path = Path(parent, name)
            if name in dirs:
                dirs.remove(name)  # not walked into: removed whole
            _remove(path)
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
