"""Atomic writes: all or nothing under the final name, with ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from temvirus.io import atomic_path, sha256_file, write_text


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "table.csv"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_written_files_are_readable_by_others_under_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode & 0o444 == 0o444


def test_sha256_of_a_known_file(tmp_path):
    (tmp_path / "abc").write_bytes(b"abc")
    assert sha256_file(tmp_path / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_remove_temporaries_takes_only_temporaries(tmp_path):
    """Leftovers of atomic writes (files and folders) go; outputs and other hidden files stay."""
    import tempfile

    from temvirus.io import TEMPORARY, remove_temporaries, write_text

    (tmp_path / "a").mkdir()
    write_text(tmp_path / "a" / "images.csv", "x\n")
    (tmp_path / "a" / ".keep").write_text("")
    fd, left = tempfile.mkstemp(prefix=".train.npy.", suffix=".part.npy", dir=tmp_path / "a")
    os.close(fd)
    folder = Path(tempfile.mkdtemp(prefix=".published.", suffix=".part", dir=tmp_path))
    (folder / "x.tif").write_bytes(b"1")
    assert TEMPORARY.match(Path(left).name) and TEMPORARY.match(folder.name)
    assert sorted(remove_temporaries(tmp_path)) == sorted([Path(left), folder])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/.keep", "a/images.csv"]
