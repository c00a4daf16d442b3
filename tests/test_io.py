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


#: a writer of ``argv[1]`` (``dir``: atomic_dir, ``file``: atomic_path) that prints its temporary,
#: then kills itself outright (``kill``) or waits, alive, until its stdin closes (``wait``)
WRITER = """
import os, signal, sys
from pathlib import Path
from temvirus.io import atomic_dir, atomic_path
out, kind, how = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
with (atomic_dir if kind == "dir" else atomic_path)(out) as tmp:
    (tmp / "half.csv" if kind == "dir" else tmp).write_text("half")
    print(tmp, flush=True)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.read()
"""


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_the_next_write_of_an_output_removes_what_a_killed_write_left(tmp_path, kind):
    """A writer killed outright (SIGKILL: nothing of it runs) leaves its temporary; the next write of
    the same output removes it (the command line has no workflow start that cleans up), but not a
    live writer's temporary of that output nor another output's leftover."""
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    from temvirus.io import TEMPORARY, atomic_dir

    out = tmp_path / ("out" if kind == "dir" else "table.csv")
    run = [sys.executable, "-c", WRITER, str(out), kind]
    killed = subprocess.run([*run, "kill"], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = Path(killed.stdout.strip())
    assert left.exists() and TEMPORARY.match(left.name) and not out.exists()
    live = subprocess.Popen([*run, "wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        held = Path(live.stdout.readline().strip())
        fd, other = tempfile.mkstemp(prefix=".other.csv.", suffix=".part.csv", dir=tmp_path)
        os.close(fd)
        past = time.time() - 3600  # long untouched: only the lock tells a live writer
        for path in (left, held, Path(other)):
            os.utime(path, (past, past))
        with (atomic_dir if kind == "dir" else atomic_path)(out) as tmp:
            (tmp / "x.csv" if kind == "dir" else tmp).write_text("whole")
        assert not left.exists()
        assert held.exists() and Path(other).exists()
    finally:
        live.communicate(timeout=120)
    assert live.returncode == 0 and not held.exists()  # the live writer finished its output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}.")) == []


def test_folders_written_into_place_are_readable_by_others_under_the_umask(tmp_path):
    """Folder outputs are made in a temporary folder moved into place; ``tempfile.mkdtemp`` makes it
    0700, so the synthetic raw tree, the published patches, the micrograph results, the overlap
    figures and an extracted archive's layout were unreadable to the group and others (the files
    in them 0644). Every such folder now comes from :func:`temvirus.io.temporary_dir`."""
    import re
    import zipfile

    import pandas as pd
    from conftest import REPO

    from temvirus.download import extract_archives
    from temvirus.io import atomic_dir
    from temvirus.overlap_figures import plot_decisions
    from temvirus.synth import generate_dataset

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "atomic") as tmp:
            (tmp / "a.txt").write_text("x")
        generate_dataset(
            tmp_path / "synth",
            tmp_path / "truth.csv",
            table1=REPO / "resources" / "paper" / "table1_dataset.csv",
            scale=0.001,
            seed=1,
            overlaps=0,
            binning=2,
            classes=["Sapovirus"],
        )
        pairs = tmp_path / "pairs.csv"
        pd.DataFrame(columns=["class", "image_a", "image_b", "decision", "evidence"]).to_csv(pairs, index=False)
        plot_decisions(pairs, pairs, tmp_path, tmp_path / "figures", near_misses=0)
        archive = tmp_path / "raw.zip"  # the layout at the archive's top: the staging folder becomes it
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted((tmp_path / "synth").rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(tmp_path / "synth").as_posix())
        extract_archives([archive], tmp_path / "extracted")
    finally:
        os.umask(old)
    for folder in ("atomic", "synth", "figures", "extracted"):
        assert stat.S_IMODE((tmp_path / folder).stat().st_mode) == 0o755, folder
    # no other way to a temporary folder: each would have to set its permissions again
    sources = [p for p in (REPO / "src" / "temvirus").rglob("*.py") if p.name != "io.py"]
    assert [p.name for p in sources if re.search(r"mkdtemp|TemporaryDirectory", p.read_text())] == []


def test_a_folder_filled_by_another_writer_meanwhile_is_kept_unless_replaced(tmp_path):
    """Two runs given one output folder: the later one to finish removed the other's complete
    output (a check that the folder is empty ran only at the start). With ``replace=False`` the
    rename is refused onto a folder with contents, the other's output is kept, and this writer's
    temporary goes; onto an empty folder or nothing it goes in; ``replace=True`` (the workflow's
    rules: Snakemake owns their outputs) replaces it as before."""
    from temvirus.io import atomic_dir

    out = tmp_path / "out"
    with pytest.raises(FileExistsError, match=f"{out}: written by another run while this one ran"):
        with atomic_dir(out, replace=False) as tmp:
            (tmp / "mine.csv").write_text("mine")
            out.mkdir()
            (out / "theirs.csv").write_text("theirs")  # the other run, finished first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and [p.name for p in out.iterdir()] == ["theirs.csv"]
    (out / "theirs.csv").unlink()
    with atomic_dir(out, replace=False) as tmp:  # an empty folder is filled
        (tmp / "mine.csv").write_text("mine")
    assert [p.name for p in out.iterdir()] == ["mine.csv"]
    with atomic_dir(out) as tmp:
        (tmp / "again.csv").write_text("again")
    assert [p.name for p in out.iterdir()] == ["again.csv"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_path_refuses_a_folder_a_device_or_a_fifo(tmp_path):
    """os.replace put a plain file in place of a FIFO, a device (as root: /dev/null) or, for a
    name ending in '/', a new file named like the folder; a folder failed naming the temporary.
    Each is refused naming the path, before anything is written, and is left as it was."""
    fifo, folder = tmp_path / "fifo", tmp_path / "folder"
    os.mkfifo(fifo)
    folder.mkdir()
    for path, why in (
        (fifo, "not a regular file"),
        (folder, "is a folder"),
        (f"{tmp_path}/new/", "ends in '/'"),
    ):
        with pytest.raises(ValueError, match=f"{path}: .*{why}"):
            with atomic_path(path) as tmp:
                tmp.write_text("x")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder"] and not any(folder.iterdir())


def test_a_link_given_as_an_output_is_written_through(tmp_path):
    """A symbolic link (relative or absolute, a chain of them, or dangling into an existing
    folder) was replaced by a plain file, its target left as it was. Now the target gets the new
    content, written atomically beside it, and the link stays; a link that loops, or one into a
    folder that does not exist, is refused naming the link, before anything is written."""
    data, links = tmp_path / "data", tmp_path / "links"
    data.mkdir()
    links.mkdir()
    (data / "table.csv").write_text("old\n")
    (links / "direct").symlink_to(data / "table.csv")
    (links / "relative").symlink_to(Path("..") / "data" / "table.csv")
    (links / "chain").symlink_to("relative")
    for name in ("direct", "relative", "chain"):
        write_text(links / name, f"{name}\n")
        assert (links / name).is_symlink() and (data / "table.csv").read_text() == f"{name}\n"
    (links / "dangling").symlink_to(data / "new.csv")
    write_text(links / "dangling", "new\n")
    assert (links / "dangling").is_symlink() and (data / "new.csv").read_text() == "new\n"
    (links / "nowhere").symlink_to(tmp_path / "missing" / "x.csv")
    (links / "loop").symlink_to("loop")
    (links / "folder").symlink_to(data)
    for name, why in (
        ("nowhere", f"a symbolic link to {tmp_path / 'missing' / 'x.csv'}, whose folder .* does not exist"),
        ("loop", "a symbolic link that loops"),
        ("folder", f"is a folder \\(a link to {data}\\)"),
    ):
        with pytest.raises(ValueError, match=f"{links / name}: {why}"):
            write_text(links / name, "x")
    assert sorted(p.name for p in data.iterdir()) == ["new.csv", "table.csv"]  # no temporaries left
    assert all(p.is_symlink() for p in links.iterdir()) and not (tmp_path / "missing").exists()


def test_the_length_of_a_temporary_name_is_the_one_made(tmp_path):
    """`temvirus analyse` refuses an image or --out whose outputs' temporaries would be too long
    from :func:`temvirus.io.temporary_name_bytes`: it must count the names atomic writes make."""
    from temvirus.io import atomic_path, temporary_dir, temporary_name_bytes

    for name in ("a.csv", "café.png", "out.v2"):
        with atomic_path(tmp_path / name) as tmp:
            assert len(os.fsencode(tmp.name)) == temporary_name_bytes(name), name
            tmp.write_text("x")
        folder = temporary_dir(tmp_path / "d" / name)
        assert len(os.fsencode(folder.name)) == temporary_name_bytes(name, folder=True), name
