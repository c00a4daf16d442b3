"""Shared fixtures. Real data lives outside the repo in ../shared (CI has it there)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_CROPS = SHARED / "real-tem" / "tem-virus-1nm-crops"
PAPER = REPO / "resources" / "paper"


#: the modules that take longest (a SLURM run; the default run), started first
LONGEST = ("test_slurm.py", "test_audit.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """:data:`LONGEST`, then the other modules with ``slow`` tests (workflow runs), then the
    rest: under ``make test``'s ``--dist loadfile`` each module goes whole to a worker in this
    order, so the longest start at once instead of ending the session on one worker while
    the other idles."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> tuple[int, bool]:
        name = item.path.name
        return (LONGEST.index(name) if name in LONGEST else len(LONGEST), item.path not in slow)

    items.sort(key=rank)  # stable: each module keeps its order of tests


@pytest.fixture(scope="session")
def real_crops() -> Path:
    """The 578 real 1 nm/px crops (9 classes); the test is skipped, saying why, when absent."""
    if not REAL_CROPS.is_dir():
        pytest.skip(f"real TEM crops not found at {REAL_CROPS} (they are read from ../shared, never committed)")
    return REAL_CROPS


#: the test suite's size of the default (config/config.yaml), applied on top of it by
#: :func:`snakemake_cmd`: less data and fewer epochs than ``make run``, so that the suite's
#: workflow runs fit CI's time (the full default's figures come from benchmarks/end_to_end.py)
CI_CONFIG = REPO / "tests" / "ci.yaml"


def make_workdir(workdir: Path) -> Path:
    """A scratch workdir for this repo's workflow: links to the repo's ``config/`` and
    ``resources/paper/``, so that a run there reads the same configuration and never touches
    the repo's ``results/``, and its own ``resources/`` for what a run writes there
    (``resources/dataset``: a local dataset's manifest, extracted archives, downloads), so
    that runs never share it (the suite runs on two workers)."""
    (workdir / "resources").mkdir(parents=True, exist_ok=True)
    for name in ("config", "resources/paper"):
        link = workdir / name
        if not link.exists():
            link.symlink_to(REPO / name, target_is_directory=True)
    return workdir


def snakemake_cmd(workdir: Path, *args: str, ci: bool = True) -> list[str]:
    """Command line running this repo's workflow with ``workdir`` (:func:`make_workdir`) as its
    working directory.

    ``ci``: :data:`CI_CONFIG` is the first ``--configfile`` on top of config/config.yaml
    (before any the test passes, which override it).
    """
    import sys

    make_workdir(workdir)
    args = list(args)
    if ci:
        if "--configfile" in args:
            args.insert(args.index("--configfile") + 1, str(CI_CONFIG))
        else:
            args += ["--configfile", str(CI_CONFIG)]
    snakemake = Path(sys.executable).with_name("snakemake")
    return [str(snakemake), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args]


def ensure_debian_packages(what: str, packages: list[str], programs: list[str], find=shutil.which) -> None:
    """Install Debian ``packages`` with apt-get when one of ``programs`` is missing (as root).

    The test is skipped, saying why, when they cannot be installed (not root, no apt-get, no
    package index reachable). ``find`` locates a program (default: on PATH).
    """
    if all(find(p) for p in programs):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{what} is not installed and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        except subprocess.TimeoutExpired:
            pytest.skip(f"installing {what} timed out: {' '.join(cmd)}")
        if done.returncode != 0:
            pytest.skip(f"installing {what} failed ({' '.join(cmd)}): {done.stderr.strip()[-500:]}")


def dry_run_resources(workdir: Path, *args: str) -> dict[str, dict[str, str]]:
    """The resources of each rule of the default workflow in a dry run with ``args`` added."""
    import re

    done = subprocess.run(
        snakemake_cmd(workdir, "--dry-run", *args), capture_output=True, text=True, timeout=300, cwd=workdir
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    resources = {}
    for block in re.split(r"^(?=(?:local)?rule \w+:$)", done.stdout, flags=re.MULTILINE)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        listed = re.search(r"^    resources: (.*)$", block, re.MULTILINE)
        resources[rule] = dict(item.split("=", 1) for item in listed.group(1).split(", ")) if listed else {}
    return resources


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """One real run of the default workflow (config/config.yaml at the suite's size,
    :data:`CI_CONFIG`) in a scratch workdir.

    Session-scoped and made once per test session: under ``make test`` (pytest-xdist, one
    module per worker) the first worker that needs it runs it while holding a lock, and the
    others wait for it and share it (the pattern of pytest-xdist's documentation). Tests that
    modify results must copy them first.
    """
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder above the workers' own
    workdir, done, failed = base / "default_run", base / "default_run.done", base / "default_run.failed"
    with FileLock(base / "default_run.lock"):
        if failed.exists():
            pytest.fail(failed.read_text())
        if not done.exists():
            proc = subprocess.run(snakemake_cmd(workdir), capture_output=True, text=True, timeout=1200)
            if proc.returncode != 0:
                failed.write_text(f"default workflow failed in {workdir}:\n{proc.stderr[-6000:]}")
                pytest.fail(failed.read_text())
            done.touch()
    return workdir


#: outputs that legitimately differ between two runs with the same config and seed (glob ->
#: columns that may differ, and why); every other column of these must still be equal. Logs
#: and records are not outputs and are never compared.
NONDETERMINISTIC = {
    "results/models/*/*/*/metrics.csv": (["seconds"], "the training history's wall-clock time per epoch"),
}


def assert_same_recorded_outputs(first: Path, second: Path) -> None:
    """Every output recorded in the lineage records of two workdirs' runs (same config and
    seed) has the same sha256 in both, except the columns of :data:`NONDETERMINISTIC`, and
    both ran the same code. The audit and the report's summary of it state when the audit ran,
    so their outputs are left out."""
    import fnmatch

    import pandas as pd

    from temvirus.audit.lineage import AUDIT_RULE
    from temvirus.provenance import load_records

    def outputs(workdir: Path) -> tuple[dict[str, str], set[str]]:
        hashes, code = {}, set()
        for record in load_records(workdir / "results/provenance").values():
            code.add(record["code"]["code_sha256"])
            if record["rule"] in (AUDIT_RULE, "report_summary"):
                continue
            for entry in record["outputs"]:
                for item in entry.get("files", [entry]):
                    hashes[item["path"]] = item["sha256"]
        return hashes, code

    (first_run, code_a), (second_run, code_b) = outputs(first), outputs(second)
    assert code_a == code_b, "the checkout changed between the two runs (edited during the test?)"
    assert set(first_run) == set(second_run)
    differ = sorted(p for p in first_run if first_run[p] != second_run[p])
    for path in list(differ):
        timing = [cols for pattern, (cols, _) in NONDETERMINISTIC.items() if fnmatch.fnmatch(path, pattern)]
        if timing:
            a, b = (pd.read_csv(w / path).drop(columns=timing[0]) for w in (first, second))
            pd.testing.assert_frame_equal(a, b, check_exact=True, obj=path)
            differ.remove(path)
    assert not differ, f"outputs differ between two runs with the same config and seed: {differ}"


def assert_stopped_by(child: subprocess.Popen, sig: signal.Signals, command: str) -> str:
    """Send ``sig`` to ``child`` (``temvirus COMMAND`` with text stderr piped) and check that it
    ends as :mod:`temvirus.cli` says: exit status 128 + ``sig``, a last line ``temvirus COMMAND:
    stopped by SIG...``, no traceback. Returns its stderr; fails (killing it) when it is still
    running 60 s after the signal."""
    child.send_signal(sig)
    try:
        _, stderr = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail(f"still running 60 s after {sig.name}:\n{child.communicate()[1][-2000:]}")
    assert child.returncode == 128 + sig, stderr
    assert stderr.strip().splitlines()[-1] == f"temvirus {command}: stopped by {sig.name}", stderr
    assert "Traceback" not in stderr, stderr
    return stderr


def write_patch_split(
    folder: Path, classes: list[str], per_subset: dict[str, int], size: int = 64, seed: int = 0
) -> None:
    """A small learnable patch split in the patches stage's layout (docs/architecture.md).

    ``per_subset`` gives the patches per class of ``train_augmented``, ``validation`` and
    ``test``; class ``i`` is a bright disc of radius growing with ``i`` on uint16 noise. Every
    two patches of a class share an image (``img_{class}_{subset}_{k}``).
    """
    import numpy as np
    import pandas as pd

    gen = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2

    def patches(label: int, n: int) -> np.ndarray:
        radius = size * (0.12 + 0.3 * label / max(1, len(classes) - 1))
        disc = (np.hypot(yy, xx) < radius) * 20000.0
        return np.clip(disc + gen.normal(30000, 4000, (n, size, size)), 0, 65535).astype(np.uint16)

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for subset in ("train", "validation", "test"):
        n = per_subset.get(subset, per_subset["train_augmented"] // 2)
        arrays = [patches(i, n) for i in range(len(classes))]
        np.save(folder / f"{subset}.npy", np.concatenate(arrays))
        for i, cls in enumerate(classes):
            for k in range(n):
                image_id = f"img_{cls}_{subset}_{k // 2}"
                rows.append(
                    {
                        "patch_id": f"{image_id}_p{k:03d}_v00",
                        "image_id": image_id,
                        "class": cls,
                        "subset": subset,
                        "index": i * n + k,
                        "particle": k,
                        "vertex": 0,
                        "x_nm": 100.0 + 50 * (k % 2),
                        "y_nm": 120.0,
                    }
                )
    pd.DataFrame(rows).to_csv(folder / "patches.csv", index=False)
    n = per_subset["train_augmented"]
    np.save(folder / "train_augmented.npy", np.concatenate([patches(i, n) for i in range(len(classes))]))
    aug = [
        {
            "index": i * n + k,
            "aug_id": f"a{i}_{k}",
            "source_patch_id": f"src{i}_{k}",
            "class": cls,
            "transform": "identity",
        }
        for i, cls in enumerate(classes)
        for k in range(n)
    ]
    pd.DataFrame(aug).to_csv(folder / "train_augmented.csv", index=False)


# -- download tests: a file server on 127.0.0.1 (tests/test_download.py, tests/test_weights.py)


class FileServer:
    """Serves ``files`` (path -> bytes) on 127.0.0.1 with Range support and injectable faults.

    ``faults[path]`` is a set of: ``drop_once`` (send half of the body, then close the
    connection, once), ``drop_always`` (the same, every time), ``ignore_range`` (answer 200
    with the whole body to a Range request), ``missing`` (404), ``wrong_body`` (same length,
    other bytes), ``busy_once`` (503 with ``Retry-After: 1``, once), ``error_500`` (500, every
    time), ``no_etag`` and ``no_last_modified`` (leave that header out), ``encoded_range`` (a
    206's range sent gzipped, with ``Content-Encoding: gzip`` and the compressed length, once),
    ``transfer_gzip`` (the body gzipped and chunked: ``Transfer-Encoding: gzip, chunked``). ``modified`` maps a
    path to its ``Last-Modified`` date (default 2 March 2021). ``If-Range`` is ignored, as by a
    server that does not implement it. ``redirects`` maps a path to the path it redirects to
    (302; after the faults above that answer in place of the body). ``content_types`` maps a path to its Content-Type (default application/octet-stream),
    ``content_encodings`` to a Content-Encoding sent with it (default none), whatever was asked.
    ``requests`` lists ``(path, Range header)`` of every GET, ``headers`` all its
    request headers.
    """

    def __init__(self):
        import gzip
        import hashlib
        import http.server
        import re
        import threading

        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # a stuck client cannot hold the server

            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                server.headers.append(dict(self.headers))
                faults = server.faults.setdefault(self.path, set())
                if "busy_once" in faults or "error_500" in faults:
                    busy = "busy_once" in faults
                    faults.discard("busy_once")
                    self.send_response(503 if busy else 500)
                    if busy:
                        self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(self.path)
                if body is None or "missing" in faults:
                    self.send_error(404, "Not Found")
                    return
                if "wrong_body" in faults:
                    body = bytes(b ^ 0xFF for b in body)
                match = re.fullmatch(r"bytes=(\d+)-", rng or "")
                start = int(match.group(1)) if match and "ignore_range" not in faults else 0
                if start >= len(body) > 0:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                payload = body[start:]
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                    if "encoded_range" in faults:
                        faults.discard("encoded_range")
                        payload = gzip.compress(payload)
                        self.send_header("Content-Encoding", "gzip")
                if "transfer_gzip" in faults:
                    payload = gzip.compress(payload)
                    self.send_header("Transfer-Encoding", "gzip, chunked")
                else:
                    self.send_header("Content-Length", str(len(payload)))
                self.send_header("Content-Type", server.content_types.get(self.path, "application/octet-stream"))
                if self.path in server.content_encodings:
                    self.send_header("Content-Encoding", server.content_encodings[self.path])
                if "no_etag" not in faults:
                    self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()[:16]}"')
                if "no_last_modified" not in faults:
                    self.send_header("Last-Modified", server.modified.get(self.path, "Tue, 02 Mar 2021 10:00:00 GMT"))
                self.end_headers()
                if faults & {"drop_once", "drop_always"}:
                    faults.discard("drop_once")
                    self.wfile.write(payload[: len(payload) // 2])
                    self.close_connection = True
                    return
                if "transfer_gzip" in faults:
                    payload = f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n"
                self.wfile.write(payload)

        self.files: dict[str, bytes] = {}
        self.faults: dict[str, set[str]] = {}
        self.redirects: dict[str, str] = {}
        self.modified: dict[str, str] = {}
        self.content_types: dict[str, str] = {}
        self.content_encodings: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.headers: list[dict[str, str]] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def file_server():
    """A :class:`FileServer` on 127.0.0.1, stopped after the test."""
    server = FileServer()
    yield server
    server.close()


#: the classes of the tiny synthetic dataset: oval, filament, packed clusters, round
TINY_CLASSES = ["Orf", "Ebola", "Papilloma", "Rotavirus"]


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """A tiny synthetic raw dataset (4 classes x 4 images + 3 planted overlaps, binned frames).

    Holds ``raw/`` (the raw layout), ``truth.csv`` and ``sizes.csv`` (every particle's true
    size). Shared by the tests: copy before modifying.
    """
    from temvirus.synth import generate_dataset

    folder = tmp_path_factory.mktemp("tiny_synthetic")
    generate_dataset(
        folder / "raw",
        folder / "truth.csv",
        table1=PAPER / "table1_dataset.csv",
        scale=0.001,
        seed=3,
        overlaps=3,
        binning=2,
        classes=TINY_CLASSES,
        sizes_csv=folder / "sizes.csv",
    )
    return folder


def copy_real_image(image: Path, target: Path) -> None:
    """Copy one real crop (``{subset}/{class}/NAME.jpg`` of :data:`REAL_CROPS`) with its tags
    and particle positions files into the class folder ``target`` of another raw layout."""
    for name, folder in (
        (image.name, ""),
        (f"{image.name}_tags.csv", "tags"),
        (f"{image.stem}_particlepositions.txt", "particle_positions"),
    ):
        (target / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(image.parent / folder / name, target / folder / name)


def write_raw_image(
    root: Path,
    subset: str,
    folder: str,
    image_id: str,
    pixels,
    pixel_nm: float,
    particles: list[list[tuple[float, float]]],
) -> None:
    """One image of the raw layout: TIFF, particle positions (centre lines allowed), tags."""
    import tifffile

    directory = root / subset / folder
    (directory / "particle_positions").mkdir(parents=True, exist_ok=True)
    (directory / "tags").mkdir(exist_ok=True)
    tifffile.imwrite(directory / f"{image_id}.tif", pixels)
    lines = ["header", "header", "header"]
    for points in particles:
        lines.append("particleposition")
        lines += [f"{x};{y}" for x, y in points]
    (directory / "particle_positions" / f"{image_id}_particlepositions.txt").write_text("\n".join(lines) + "\n")
    nm = f"{pixel_nm}".replace(".", ",")
    tags = [
        f"height;{pixels.shape[0]}",
        f"width;{pixels.shape[1]}",
        "a;1",
        "b;1",
        "c;1",
        f"xscale;{nm}",
        f"yscale;{nm}",
    ]
    (directory / "tags" / f"{image_id}.tif_tags.csv").write_text("\n".join(tags) + "\n")
