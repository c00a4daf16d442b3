"""Downloads (resume, retries, verification), safe extraction and the dataset sources.

Every HTTP request goes to the FileServer of conftest.py on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, assert_stopped_by, copy_real_image, make_workdir, snakemake_cmd

from temvirus.download import (
    DownloadError,
    download_dataset,
    extract_archives,
    extract_local_dataset,
    fetch,
    find_raw_root,
)
from temvirus.raw import RawDataError, read_dataset

FAST = {"backoff_s": 0.01, "timeout_s": 5}


def make_raw_tree(root: Path) -> Path:
    """A tiny dataset in the raw layout: 2 classes, train and test, 1 image each (16-bit TIFF)."""
    import tifffile

    cases = [
        ("train", "Adenovirus", 1),
        ("test", "Adenovirus", 2),
        ("train", "Rift Valley", 3),
        ("test", "Rift Valley", 4),
    ]
    for split, cls, seed in cases:
        folder = root / split / cls
        (folder / "particle_positions").mkdir(parents=True)
        (folder / "tags").mkdir()
        name = f"{cls[:3]}_{split}_{seed}"
        tifffile.imwrite(
            folder / f"{name}.tif", np.random.default_rng(seed).integers(0, 4000, (40, 48), dtype=np.uint16)
        )
        points = "particleposition\n".join(f"{10 + k};{12 + k}\n" for k in range(seed))
        (folder / "particle_positions" / f"{name}_particlepositions.txt").write_text(f"h1\nh2\nh3\n{points}")
        tags = ["height;40", "width;48", "a;1", "b;1", "c;1", "xscale;4,5", "yscale;4,5"]
        (folder / "tags" / f"{name}.tif_tags.csv").write_text("\n".join(tags) + "\n")
    return root


def zip_tree(tree: Path, top: str = "context_virus_RAW", extra: dict[str, bytes] | None = None) -> bytes:
    """Zip ``tree`` under the folder ``top`` (plus ``extra`` raw entries) into bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                zf.write(path, f"{top}/{path.relative_to(tree).as_posix()}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def raw_zip(tmp_path) -> bytes:
    return zip_tree(make_raw_tree(tmp_path / "made"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- fetch ----------------------------------------------------------------------------------


def test_fetch_downloads_verifies_and_records(file_server, tmp_path):
    body = np.random.default_rng(0).bytes(300_000)
    file_server.files["/a.bin"] = body
    dest = tmp_path / "dl" / "a.bin"
    record = fetch(file_server.url("/a.bin"), dest, size=len(body), sha256=sha(body), **FAST)
    assert dest.read_bytes() == body
    assert not (tmp_path / "dl" / "a.bin.part").exists()
    assert record["sha256"] == sha(body) and record["sha256_verified"] and record["size"] == len(body)
    assert record["final_url"] == file_server.url("/a.bin")
    assert record["headers"]["ETag"] == f'"{sha(body)[:16]}"'
    assert record["headers"]["Content-Length"] == str(len(body))
    assert set(record["headers"]) == {"ETag", "Last-Modified", "Content-Length", "Content-Type"}
    # a second call reuses the verified file and its record, without a request
    assert fetch(file_server.url("/a.bin"), dest, size=len(body), sha256=sha(body), **FAST) == record
    assert len(file_server.requests) == 1


def test_fetch_resumes_after_dropped_connection(file_server, tmp_path):
    body = np.random.default_rng(1).bytes(200_001)
    file_server.files["/big.zip"] = body
    file_server.faults["/big.zip"] = {"drop_once"}
    dest = tmp_path / "big.zip"
    fetch(file_server.url("/big.zip"), dest, sha256=sha(body), **FAST)
    assert dest.read_bytes() == body
    (first, range1), (second, range2) = file_server.requests
    assert range1 is None and range2 == f"bytes={len(body) // 2}-"


def test_a_body_dropped_on_every_attempt_is_kept_and_resumed_later(file_server, tmp_path):
    """Each attempt resumes from the bytes already written; the drops count against ``retries``,
    and the next fetch resumes from what they left."""
    body = np.random.default_rng(5).bytes(100_000)
    file_server.files["/d.bin"] = body
    file_server.faults["/d.bin"] = {"drop_always"}
    dest = tmp_path / "d.bin"
    with pytest.raises(DownloadError, match=r"failed after 3 attempts .*IncompleteRead.*; 87500 bytes kept in"):
        fetch(file_server.url("/d.bin"), dest, **FAST, retries=3)
    assert [rng for _, rng in file_server.requests] == [None, "bytes=50000-", "bytes=75000-"]
    file_server.faults["/d.bin"].clear()
    fetch(file_server.url("/d.bin"), dest, sha256=sha(body), **FAST)
    assert dest.read_bytes() == body and file_server.requests[-1][1] == "bytes=87500-"


def test_a_redirect_is_followed_again_by_the_resume(file_server, tmp_path):
    body = np.random.default_rng(6).bytes(10_000)
    file_server.files["/v3/r.bin"] = body
    file_server.faults["/v3/r.bin"] = {"drop_once"}
    file_server.redirects["/latest/r.bin"] = "/v3/r.bin"
    record = fetch(file_server.url("/latest/r.bin"), tmp_path / "r.bin", sha256=sha(body), **FAST)
    assert record["url"] == file_server.url("/latest/r.bin") and record["final_url"] == file_server.url("/v3/r.bin")
    assert [path for path, _ in file_server.requests] == ["/latest/r.bin", "/v3/r.bin"] * 2
    assert file_server.requests[-1][1] == "bytes=5000-"  # Range kept through the redirect


def test_redirects_are_not_counted_as_tries_and_a_redirect_loop_is_named(file_server, tmp_path, caplog):
    """A host that sends each request through three redirects to its storage (Zenodo, Figshare, Mendeley
    do one or two). Before: each redirect counted as one of the ``retries`` requests, so with two tries the
    download failed at its first redirect ("too many redirects"), and a dropped body was never resumed."""
    body = np.random.default_rng(7).bytes(20_000)
    file_server.files["/store/r.bin"] = body
    file_server.faults["/store/r.bin"] = {"drop_once"}
    file_server.redirects.update({"/r.bin": "/a/r.bin", "/a/r.bin": "/b/r.bin", "/b/r.bin": "/store/r.bin"})
    with caplog.at_level("WARNING", logger="temvirus.download"):
        fetch(file_server.url("/r.bin"), tmp_path / "r.bin", sha256=sha(body), **FAST, retries=2)
    assert (tmp_path / "r.bin").read_bytes() == body
    assert [path for path, _ in file_server.requests] == ["/r.bin", "/a/r.bin", "/b/r.bin", "/store/r.bin"] * 2
    assert "attempt 1/2 failed" in caplog.text
    file_server.redirects.update({"/loop": "/loop2", "/loop2": "/loop"})
    with pytest.raises(DownloadError, match=r"download failed: more than 10 redirects in one try \(a redirect loop"):
        fetch(file_server.url("/loop"), tmp_path / "loop.bin", **FAST)  # (before: "after 5 attempts")
    assert 10 <= len(file_server.requests) - 8 <= 12  # one try's redirects, not retried
    # a failure at a hop in the middle counts as a try (urllib3's PoolManager drops it at the next hop)
    for hop in ("/r.bin", "/a/r.bin"):
        file_server.faults[hop] = {"busy_once"}
    with pytest.raises(DownloadError, match=r"failed after 2 attempts \(too many 503 error responses\)"):
        fetch(file_server.url("/r.bin"), tmp_path / "r2.bin", sha256=sha(body), **FAST, retries=2)
    file_server.faults.update({"/r.bin": {"busy_once"}, "/a/r.bin": {"busy_once"}})
    fetch(file_server.url("/r.bin"), tmp_path / "r3.bin", sha256=sha(body), **FAST, retries=3)


def test_fetch_waits_as_retry_after_says_then_succeeds(file_server, tmp_path, caplog):
    import time

    file_server.files["/busy.bin"] = b"payload"
    file_server.faults["/busy.bin"] = {"busy_once"}
    url = file_server.url("/busy.bin")
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="temvirus.download"):
        fetch(url, tmp_path / "busy.bin", **FAST)
    assert time.monotonic() - started >= 1  # Retry-After: 1, not the 0.01 s backoff
    assert (tmp_path / "busy.bin").read_bytes() == b"payload" and len(file_server.requests) == 2
    assert f"{url}: attempt 1/5 failed (HTTP 503 Service Unavailable); retrying in 1.0 s" in caplog.messages


def test_fetch_gives_up_on_a_500_every_time_naming_url_and_attempts(file_server, tmp_path):
    file_server.faults["/broken.bin"] = {"error_500"}
    url = file_server.url("/broken.bin")
    with pytest.raises(DownloadError, match=rf"^{re.escape(url)}: download failed after 3 attempts \(too many 500"):
        fetch(url, tmp_path / "broken.bin", **FAST, retries=3)
    assert len(file_server.requests) == 3 and list(tmp_path.iterdir()) == []


def test_fetch_starts_over_when_server_ignores_range(file_server, tmp_path):
    body = np.random.default_rng(2).bytes(100_000)
    file_server.files["/f"] = body
    file_server.faults["/f"] = {"drop_once", "ignore_range"}
    fetch(file_server.url("/f"), tmp_path / "f", size=len(body), sha256=sha(body), **FAST)
    assert (tmp_path / "f").read_bytes() == body  # not the first half twice
    assert file_server.requests[1][1] == f"bytes={len(body) // 2}-"


def test_a_partial_download_is_resumed_only_from_its_own_file(file_server, tmp_path):
    """A .part left by another URL, or by a file that has changed on the server since, is not
    completed with the other file's bytes (no hash known: the splice would be recorded as the file)."""
    old, new = np.random.default_rng(3).bytes(100_000), np.random.default_rng(4).bytes(100_000)
    dest = tmp_path / "model.bin"
    for first, second in (("/v1/model.bin", "/v2/model.bin"), ("/model.bin", "/model.bin")):
        file_server.files[first] = old
        file_server.faults[first] = {"drop_once"}
        with pytest.raises(DownloadError, match="bytes kept in"):
            fetch(file_server.url(first), dest, **FAST, retries=1)
        assert (tmp_path / "model.bin.part").stat().st_size == len(old) // 2
        file_server.files[second] = new  # another file, or the same URL now serving another version
        record = fetch(file_server.url(second), dest, **FAST)
        assert dest.read_bytes() == new and record["sha256"] == sha(new)
        assert not list(tmp_path.glob("model.bin.part*"))
        dest.unlink()


def test_a_resume_is_checked_by_last_modified_when_there_is_no_etag(file_server, tmp_path):
    """A server without ETag: the resume sends If-Range with the Last-Modified date (RFC 9110,
    13.1.5), and a 206 of a file changed since (Last-Modified differs, If-Range ignored) starts
    it over; before, the old half and the new half were spliced and recorded. A resumed file's
    record gives the whole file's Content-Length, not the 206's; with neither ETag nor
    Last-Modified a partial file is not resumed."""
    old, new = np.random.default_rng(7).bytes(300_000), np.random.default_rng(8).bytes(300_000)
    url, dest = file_server.url("/lm.bin"), tmp_path / "lm.bin"
    file_server.files["/lm.bin"] = old
    file_server.faults["/lm.bin"] = {"no_etag", "drop_once"}
    with pytest.raises(DownloadError, match="150000 bytes kept in"):
        fetch(url, dest, **FAST, retries=1)
    file_server.files["/lm.bin"] = new
    file_server.modified["/lm.bin"] = "Wed, 03 Mar 2021 10:00:00 GMT"
    record = fetch(url, dest, **FAST)
    assert dest.read_bytes() == new and record["sha256"] == sha(new)
    assert file_server.headers[1]["Range"] == "bytes=150000-"
    assert file_server.headers[1]["If-Range"] == "Tue, 02 Mar 2021 10:00:00 GMT"
    assert record["headers"]["Last-Modified"] == "Wed, 03 Mar 2021 10:00:00 GMT"

    dest.unlink()  # unchanged on the server: resumed, recorded with the whole file's size
    file_server.faults["/lm.bin"].add("drop_once")
    with pytest.raises(DownloadError, match="bytes kept in"):
        fetch(url, dest, **FAST, retries=1)
    record = fetch(url, dest, **FAST)
    assert dest.read_bytes() == new and file_server.requests[-1][1] == "bytes=150000-"
    assert record["headers"]["Content-Length"] == "300000"

    dest.unlink()  # neither validator: the partial file cannot be told from another version
    file_server.faults["/lm.bin"] |= {"no_last_modified", "drop_once"}
    with pytest.raises(DownloadError, match="bytes kept in"):
        fetch(url, dest, **FAST, retries=1)
    assert fetch(url, dest, **FAST)["sha256"] == sha(new) and file_server.requests[-1][1] is None


def test_a_file_of_another_url_is_not_taken_for_this_one(real_crops, file_server, tmp_path):
    """Two real crops served at two URLs, fetched in turn to one file without a hash: the second
    URL's file is downloaded, not the first one kept (and given as the second's)."""
    first, second = (path.read_bytes() for path in sorted((real_crops / "test" / "Orf").glob("*.jpg"))[:2])
    file_server.files["/v1/crop.jpg"], file_server.files["/v2/crop.jpg"] = first, second
    dest = tmp_path / "crop.jpg"
    assert fetch(file_server.url("/v1/crop.jpg"), dest, **FAST)["sha256"] == sha(first)
    record = fetch(file_server.url("/v2/crop.jpg"), dest, **FAST)
    assert dest.read_bytes() == second and record["sha256"] == sha(second)
    assert json.loads((tmp_path / "crop.jpg.record.json").read_text())["url"] == file_server.url("/v2/crop.jpg")
    assert fetch(file_server.url("/v2/crop.jpg"), dest, **FAST) == record  # its own: kept, no request
    assert len(file_server.requests) == 2
    (tmp_path / "crop.jpg.record.json").unlink()  # a file of unknown origin: fetched again
    assert fetch(file_server.url("/v2/crop.jpg"), dest, **FAST)["sha256"] == sha(second)
    assert len(file_server.requests) == 3


def test_a_url_that_is_not_http_is_refused_naming_it(tmp_path, real_crops):
    crop = sorted((real_crops / "test" / "Orf").glob("*.jpg"))[0]
    for url in (crop.as_uri(), "ftp://example.org/data.zip", str(crop), "http:///data.zip"):
        with pytest.raises(DownloadError, match=f"^{re.escape(url)}: not an http or https URL"):
            fetch(url, tmp_path / "out.jpg", **FAST)
    assert list(tmp_path.iterdir()) == []


def test_fetch_replaces_a_corrupt_earlier_download(file_server, tmp_path):
    body = b"good bytes" * 100
    file_server.files["/c"] = body
    (tmp_path / "c").write_bytes(b"bad bytes" * 100)
    fetch(file_server.url("/c"), tmp_path / "c", sha256=sha(body), **FAST)
    assert (tmp_path / "c").read_bytes() == body and len(file_server.requests) == 1


def test_fetch_without_known_hash_records_the_computed_one(file_server, tmp_path):
    file_server.files["/x"] = b"payload"
    record = fetch(file_server.url("/x"), tmp_path / "x", **FAST)
    assert record["sha256"] == sha(b"payload") and record["sha256_verified"] is False


@pytest.mark.parametrize(
    "size_delta, fault, message",
    [(0, "wrong_body", "sha256 mismatch"), (1, None, "expected 1001 bytes, got 1000")],
)
def test_fetch_rejects_wrong_content(file_server, tmp_path, size_delta, fault, message):
    body = bytes(range(250)) * 4
    file_server.files["/w"] = body
    file_server.faults["/w"] = {fault} if fault else set()
    with pytest.raises(DownloadError, match=message) as err:
        fetch(file_server.url("/w"), tmp_path / "w", size=len(body) + size_delta, sha256=sha(body), **FAST)
    assert str(err.value).startswith(file_server.url("/w"))
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a .part


@pytest.mark.parametrize(
    "body, content_type, message",
    [
        (b"", None, "the server sent an empty body (0 bytes) where a data file is expected"),
        (b"<p>Please log in</p>", "text/html; charset=utf-8", "an HTML page (20 bytes, Content-Type text/html"),
        (b"\n <!DOCTYPE html><title>Error</title>", None, "an HTML page (37 bytes, Content-Type application/octet"),
    ],
)
def test_an_empty_body_or_an_html_page_is_refused_without_a_hash(
    file_server, tmp_path, capsys, body, content_type, message
):
    """With no sha256 to check, a 0-byte body or a login/error page served with 200 was saved
    as the data file: refused, naming the URL, nothing written, the file already there kept
    (the CLI says it in one line); a published hash that matches still decides."""
    from temvirus.cli import main

    file_server.files["/data.zip"] = body
    if content_type:
        file_server.content_types["/data.zip"] = content_type
    url, dest = file_server.url("/data.zip"), tmp_path / "data.zip"
    with pytest.raises(DownloadError, match=f"^{re.escape(url)}: .*{re.escape(message)}"):
        fetch(url, dest, **FAST)
    assert list(tmp_path.iterdir()) == []
    dest.write_bytes(b"an earlier file")
    assert main(["download", "--url", url, "--out", str(dest)]) == 1
    assert message in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["data.zip"] and dest.read_bytes() == b"an earlier file"
    assert fetch(url, tmp_path / "known", sha256=sha(body), **FAST)["sha256_verified"]
    if body:  # with a size or hash that the page misses, what came is said too (before: the numbers alone)
        for known in ({"size": 1234}, {"sha256": "0" * 64}, {"sha256_prefix": "000000"}):
            with pytest.raises(
                DownloadError, match=f"^{re.escape(url)}: .*: {re.escape('the server sent ' + message)}"
            ):
                fetch(url, tmp_path / "other", **known, **FAST)


def test_a_body_shorter_than_its_content_length_is_never_saved(file_server, tmp_path):
    """urllib3 enforces Content-Length (IncompleteRead): a cut-short body is resumed, and when
    the attempts run out it stays a .part file, never the output. (A close-delimited body, sent
    without Content-Length, cannot be told from a whole one: only a hash can.)"""
    file_server.files["/cut"] = bytes(range(256)) * 40
    file_server.faults["/cut"] = {"drop_always"}
    with pytest.raises(DownloadError, match="IncompleteRead"):
        fetch(file_server.url("/cut"), tmp_path / "cut", **FAST, retries=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.part", "cut.part.json"]


def test_a_malformed_sha256_is_refused_before_anything_is_fetched(file_server, tmp_path, capsys):
    """``--sha256 abc`` was found wrong only after the whole download ("sha256 mismatch"): a
    sha256 that is not 64 hex digits, or a prefix that is not 6 to 64 (torchvision's file
    names), is refused first, naming the option; upper-case hex digits are a sha256 too."""
    from temvirus.cli import main

    file_server.files["/s"] = b"payload"
    url, dest = file_server.url("/s"), tmp_path / "s"
    for option, value, rule in [
        ("sha256", "abc", "64 hex digits"),
        ("sha256", sha(b"payload")[:-1] + "g", "64 hex digits"),
        ("sha256_prefix", "abc12", "6 to 64 hex digits"),
        ("sha256_prefix", "xyzxyz", "6 to 64 hex digits"),
    ]:
        with pytest.raises(DownloadError, match=f"^{re.escape(url)}: {option} {value!r} is not {rule}"):
            fetch(url, dest, **{option: value}, **FAST)
    with pytest.raises(SystemExit) as stopped:
        main(["download", "--url", url, "--out", str(dest), "--sha256", "abc"])
    assert stopped.value.code == 2
    assert "argument --sha256: must be 64 hex digits (a sha256), got 'abc'" in capsys.readouterr().err
    assert file_server.requests == [] and list(tmp_path.iterdir()) == []
    assert fetch(url, dest, sha256=sha(b"payload").upper(), **FAST)["sha256_verified"]


def test_out_naming_a_folder_is_refused(file_server, tmp_path, capsys):
    """``--out somedir/`` (no such folder) wrote a file named ``somedir``; an existing folder
    failed with a bare "[Errno 21] Is a directory". Both are now refused before anything is
    fetched, naming the path and why: --out with --url is the file to write."""
    from temvirus.cli import main

    file_server.files["/f"] = b"payload"
    (tmp_path / "existing").mkdir()
    with pytest.raises(DownloadError, match="not a regular file"):  # read to check it, a FIFO blocked for ever
        os.mkfifo(tmp_path / "fifo")
        fetch(file_server.url("/f"), tmp_path / "fifo", **FAST)
    (tmp_path / "fifo").unlink()
    for out in (f"{tmp_path}/somedir/", str(tmp_path / "existing"), f"{tmp_path}/existing/"):
        assert main(["download", "--url", file_server.url("/f"), "--out", out]) == 1
        err = capsys.readouterr().err
        assert f"temvirus download: error: {out}: " in err and "give the name of the file to write" in err, err
    with pytest.raises(DownloadError, match="ends in '/'"):
        fetch(file_server.url("/f"), f"{tmp_path}/somedir/", **FAST)
    assert file_server.requests == [] and [p.name for p in tmp_path.iterdir()] == ["existing"]
    assert list((tmp_path / "existing").iterdir()) == []


def test_out_given_as_a_link_is_written_through(file_server, tmp_path):
    """``--out LINK`` (to a file, or dangling into a folder): the link was replaced by the
    download. Now the file lands at the link's target (its record beside it) and the link stays."""
    file_server.files["/f"] = b"payload"
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "f.zip").write_bytes(b"old")
    (tmp_path / "link.zip").symlink_to(tmp_path / "store" / "f.zip")
    (tmp_path / "new.zip").symlink_to(Path("store") / "new.zip")
    for link in ("link.zip", "new.zip"):
        info = fetch(file_server.url("/f"), tmp_path / link, **FAST)
        assert (tmp_path / link).is_symlink() and (tmp_path / link).read_bytes() == b"payload"
        assert info["path"] == str(tmp_path / "store" / link.replace("link", "f"))
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [
        "f.zip",
        "f.zip.record.json",
        "new.zip",
        "new.zip.record.json",
    ]


def test_fetch_404_names_the_url_and_is_not_retried(file_server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        fetch(file_server.url("/nothing.zip"), tmp_path / "n.zip", **FAST)
    assert file_server.url("/nothing.zip") in str(err.value)
    assert len(file_server.requests) == 1 and list(tmp_path.iterdir()) == []


def test_a_failed_download_leaves_the_file_already_there(file_server, tmp_path):
    """A file already at ``dest`` that fetch would download again (of another URL, of unknown
    origin, failing the hash) was deleted, with its record, before the download and stayed gone
    when that failed: it is now replaced only by a completed, verified download."""
    precious, body = b"my precious results\n", b"the published file"
    file_server.files["/v1/precious.txt"], file_server.files["/w"] = precious, body
    dest = tmp_path / "precious.txt"
    record = fetch(file_server.url("/v1/precious.txt"), dest, **FAST)
    kept = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(kept) == {"precious.txt", "precious.txt.record.json"}
    with pytest.raises(DownloadError, match="HTTP 404"):  # recorded from another URL
        fetch(file_server.url("/404"), dest, **FAST)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == kept
    file_server.faults["/w"] = {"wrong_body"}
    with pytest.raises(DownloadError, match="sha256 mismatch"):  # failing the hash
        fetch(file_server.url("/w"), dest, sha256=sha(body), **FAST)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == kept
    (tmp_path / "precious.txt.record.json").unlink()
    with pytest.raises(DownloadError, match="HTTP 404"):  # of unknown origin
        fetch(file_server.url("/404"), dest, **FAST)
    assert [p.name for p in tmp_path.iterdir()] == ["precious.txt"] and dest.read_bytes() == precious
    file_server.faults["/w"].clear()
    record = fetch(file_server.url("/w"), dest, sha256=sha(body), **FAST)
    assert dest.read_bytes() == body and record["url"] == file_server.url("/w")
    assert json.loads((tmp_path / "precious.txt.record.json").read_text())["sha256"] == sha(body)


def test_fetch_gives_up_after_bounded_retries(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x"
    with pytest.raises(
        DownloadError, match=rf"^{re.escape(url)}: download failed after 3 attempts .*Connection refused"
    ):
        fetch(url, tmp_path / "x", retries=3, **FAST)
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())
    # nothing arrived: before, the message said "0 bytes kept in x.part for a resume", a file that is not there
    with pytest.raises(DownloadError, match=r"Connection refused.*\); nothing received$"):
        fetch(url, tmp_path / "x", retries=1, **FAST)


# -- archives -------------------------------------------------------------------------------


def _zip_with(raw_zip: bytes, name: str, data: bytes = b"evil", symlink: bool = False) -> bytes:
    buffer = io.BytesIO(raw_zip)
    with zipfile.ZipFile(buffer, "a") as zf:
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = 0o120777 << 16
        zf.writestr(info, data)
    return buffer.getvalue()


def _tar_with(tree: Path, member: tarfile.TarInfo) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        tf.add(tree, arcname="context_virus_RAW")
        tf.addfile(member, io.BytesIO(b"evil") if member.isfile() else None)
    return buffer.getvalue()


def _tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    member.size = 4 if kind == tarfile.REGTYPE else 0
    return member


@pytest.mark.parametrize(
    "case, reason",
    [
        ("zip_dotdot", "'..' in path"),
        ("zip_absolute", "absolute path"),
        ("zip_symlink", "symbolic link"),
        ("tar_dotdot", "'..' in path"),
        ("tar_absolute", "absolute path"),
        ("tar_symlink", "link to '/etc/passwd'"),
        ("tar_hardlink", "link to '/etc/passwd'"),
    ],
)
def test_malicious_archive_is_rejected_before_writing(tmp_path, case, reason):
    tree = make_raw_tree(tmp_path / "tree")
    raw_zip = zip_tree(tree)
    outside = tmp_path / "work" / "evil.txt"
    data = {
        "zip_dotdot": lambda: _zip_with(raw_zip, "../evil.txt"),
        "zip_absolute": lambda: _zip_with(raw_zip, f"{outside}"),
        "zip_symlink": lambda: _zip_with(raw_zip, "context_virus_RAW/link", b"/etc/passwd", symlink=True),
        "tar_dotdot": lambda: _tar_with(tree, _tar_member("context_virus_RAW/../../evil.txt")),
        "tar_absolute": lambda: _tar_with(tree, _tar_member(str(outside))),
        "tar_symlink": lambda: _tar_with(tree, _tar_member("context_virus_RAW/l", tarfile.SYMTYPE, "/etc/passwd")),
        "tar_hardlink": lambda: _tar_with(tree, _tar_member("context_virus_RAW/h", tarfile.LNKTYPE, "/etc/passwd")),
    }[case]()
    archive = tmp_path / "in" / ("a.zip" if case.startswith("zip") else "a.tar.gz")
    archive.parent.mkdir()
    archive.write_bytes(data)
    target = tmp_path / "work" / "dataset" / "raw"
    target.parent.mkdir(parents=True)
    with pytest.raises(DownloadError, match="refusing to extract unsafe members") as err:
        extract_archives([archive], target)
    assert str(err.value).startswith(str(archive)) and reason in str(err.value)
    assert list(target.parent.iterdir()) == []  # no target, no staging folder
    assert not outside.exists() and not (tmp_path / "work" / "evil.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "tree", "work"]


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_extract_finds_raw_layout_under_top_folder(tmp_path, kind):
    tree = make_raw_tree(tmp_path / "tree")
    archive = tmp_path / f"raw.{kind}"
    if kind == "zip":
        archive.write_bytes(zip_tree(tree, top="TEM virus dataset/context_virus_RAW", extra={"README.txt": b"hi"}))
    else:
        with tarfile.open(archive, "w:gz") as tf:
            tf.add(tree, arcname="context_virus_RAW")
    summary = extract_archives([archive], tmp_path / "out" / "raw")
    images, _ = read_dataset(tmp_path / "out" / "raw")
    expected, _ = read_dataset(tree)
    assert images.equals(expected)
    assert summary["images"] == 4 and summary["classes"] == 2 and summary["particles"] == 10
    top = "TEM virus dataset/context_virus_RAW" if kind == "zip" else "context_virus_RAW"
    assert summary["raw_root_in_archive"] == top
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["raw"]


def test_extract_rejects_archive_without_raw_layout(tmp_path):
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("patches/Adenovirus/a.tif", b"x")
    with pytest.raises(DownloadError, match="other.zip: inside the archive: no raw-layout folder"):
        extract_archives([archive], tmp_path / "out" / "raw")
    assert list((tmp_path / "out").iterdir()) == []


def test_extract_rejects_a_file_that_is_no_archive(tmp_path):
    (tmp_path / "a.zip").write_bytes(b"<html>not found</html>")
    with pytest.raises(DownloadError, match="an HTML page .*not an archive"):
        extract_archives([tmp_path / "a.zip"], tmp_path / "raw")
    (tmp_path / "a.zip").write_bytes(b"plain text")
    with pytest.raises(DownloadError, match="not a zip or tar archive"):
        extract_archives([tmp_path / "a.zip"], tmp_path / "raw")


def test_find_raw_root_accepts_the_root_itself(tmp_path):
    tree = make_raw_tree(tmp_path / "tree")
    assert find_raw_root(tree) == tree


# -- dataset sources ------------------------------------------------------------------------


def test_download_dataset_from_mendeley_listing(file_server, tmp_path, raw_zip):
    """The listing contract: a JSON list of {filename, size, content_details{download_url, sha256_hash}}."""
    listing = [
        {
            "filename": name,
            "size": len(body),
            "content_details": {"download_url": file_server.url(f"/files/{name}"), "sha256_hash": sha(body)},
        }
        for name, body in [("context_virus_RAW.zip", raw_zip), ("context_virus_1nm_256x256.zip", b"not wanted")]
    ]
    file_server.files["/public-api/datasets/x4dwwfwtw3/files?folder_id=root&version=3"] = json.dumps(listing).encode()
    file_server.faults["/public-api/datasets/x4dwwfwtw3/files?folder_id=root&version=3"] = {"drop_once"}
    file_server.files["/files/context_virus_RAW.zip"] = raw_zip
    api = file_server.url("/public-api")
    settings = {"id": "x4dwwfwtw3", "version": 3, "api_url": api, "include": "*RAW*", "files": []}
    root, record = tmp_path / "ds" / "mendeley", tmp_path / "ds" / "download_record.json"
    download_dataset(settings, root, record, tmp_path / "ds" / "downloads")
    assert len(read_dataset(root)[0]) == 4
    saved = json.loads(record.read_text())
    assert saved["doi"] == "10.17632/x4dwwfwtw3.3" and saved["files_from"].endswith("folder_id=root&version=3")
    (entry,) = saved["files"]
    assert entry["name"] == "context_virus_RAW.zip" and entry["hash_source"] == "listing"
    assert entry["sha256"] == sha(raw_zip) and entry["headers"]["ETag"]
    assert not any("256x256" in path for path, _ in file_server.requests)
    assert sum("folder_id" in path for path, _ in file_server.requests) == 2  # the listing cut short, read again


def test_listing_without_a_match_lists_the_names(file_server, tmp_path):
    listing = [{"filename": "other.zip", "size": 1, "content_details": {"download_url": "http://x/y"}}]
    file_server.files["/api/datasets/abc/files?folder_id=root&version=1"] = json.dumps(listing).encode()
    settings = {"id": "abc", "version": 1, "api_url": file_server.url("/api"), "include": "*RAW*", "files": []}
    with pytest.raises(DownloadError, match=r"no listed file matches .*'other.zip'"):
        download_dataset(settings, tmp_path / "r", tmp_path / "rec.json", tmp_path / "dl")
    assert list(tmp_path.iterdir()) == []


def test_extract_local_dataset_records_the_archive(tmp_path, raw_zip):
    (tmp_path / "copy.zip").write_bytes(raw_zip)
    extract_local_dataset(tmp_path / "copy.zip", tmp_path / "local", tmp_path / "local_record.json")
    record = json.loads((tmp_path / "local_record.json").read_text())
    assert record["files"][0]["sha256"] == sha(raw_zip) and record["images"] == 4
    assert len(read_dataset(tmp_path / "local")[0]) == 4


# -- the workflow ---------------------------------------------------------------------------


def _workdir(tmp_path: Path, dataset: dict) -> tuple[Path, Path]:
    """A scratch workdir (:func:`conftest.snakemake_cmd`'s) and a config override.

    The override classifies the two classes of :func:`make_raw_tree` (raw_tables refuses a
    classes.classification that lists classes the data do not hold).
    """
    workdir = make_workdir(tmp_path / "wd")
    override = workdir / "override.json"
    override.write_text(json.dumps({"dataset": dataset, "classes": {"classification": ["Adenovirus", "RiftValley"]}}))
    return workdir, override


@pytest.mark.slow
def test_snakemake_downloads_dataset_from_pinned_url(file_server, tmp_path, raw_zip):
    file_server.files["/pub/context_virus_RAW.zip"] = raw_zip
    file_server.faults["/pub/context_virus_RAW.zip"] = {"drop_once"}
    url = file_server.url("/pub/context_virus_RAW.zip")
    pinned = [{"name": "context_virus_RAW.zip", "url": url, "size": None, "sha256": None}]
    workdir, override = _workdir(tmp_path, {"source": "mendeley", "mendeley": {"files": pinned}})
    cmd = snakemake_cmd(workdir, "results/raw/images.csv", "--configfile", str(override))
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    root = workdir / "resources" / "dataset" / "mendeley"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["test", "train"]
    record = json.loads((workdir / "resources" / "dataset" / "download_record.json").read_text())
    (entry,) = record["files"]
    assert entry["sha256"] == sha(raw_zip) and entry["hash_source"].startswith("computed")
    assert record["raw_root_in_archive"] == "context_virus_RAW" and record["files_from"] == "config"
    assert (workdir / "resources" / "dataset" / "downloads" / "context_virus_RAW.zip").read_bytes() == raw_zip
    assert file_server.requests[-1][1] is not None  # the drop was resumed with a Range request
    assert "resuming at byte" in (workdir / "logs" / "download" / "download_dataset.log").read_text()
    images = (workdir / "results" / "raw" / "images.csv").read_text().splitlines()
    assert len(images) == 5  # header + 4 images


@pytest.mark.slow
def test_snakemake_plans_extraction_of_a_local_archive(tmp_path, raw_zip):
    (tmp_path / "copy.zip").write_bytes(raw_zip)
    workdir, override = _workdir(tmp_path, {"source": "local", "local": {"path": str(tmp_path / "copy.zip")}})
    run = subprocess.run(
        snakemake_cmd(workdir, "-n", "results/raw/images.csv", "--configfile", str(override)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "extract_local_dataset" in run.stdout and "raw_tables" in run.stdout
    assert "synthetic_dataset" not in run.stdout and "download_dataset" not in run.stdout


def test_an_extracted_copy_changed_since_is_refused_naming_the_files(tmp_path, raw_zip):
    """The tree extracted from an archive is recorded file by file ({root}.extracted.json): an edit,
    an added or a removed file there is named (the workflow's jobs would not see it); the same
    bytes put back pass."""
    from temvirus.download import check_extracted, extract_local_dataset

    (tmp_path / "copy.zip").write_bytes(raw_zip)
    root = tmp_path / "local"
    extract_local_dataset([tmp_path / "copy.zip"], root, tmp_path / "record.json")
    check_extracted(root)
    positions = root / "train/Adenovirus/particle_positions/Ade_train_1_particlepositions.txt"
    original = positions.read_bytes()
    positions.write_bytes(original.replace(b"10;12", b"30;12"))
    with pytest.raises(
        DownloadError,
        match=r"local: the copy extracted from the archive was changed since .*"
        r"train/Adenovirus/particle_positions/Ade_train_1_particlepositions.txt\); remove",
    ):
        check_extracted(root)
    positions.write_bytes(original)
    check_extracted(root)
    (root / "test/Adenovirus/notes.txt").write_text("x")
    (root / "test/Rift Valley/tags/Rif_test_4.tif_tags.csv").unlink()
    with pytest.raises(DownloadError, match=r"test/Adenovirus/notes.txt, test/Rift Valley/tags/Rif_test_4.tif_tags"):
        check_extracted(root)
    (root / "test/Adenovirus/notes.txt").unlink()
    (root / "test/Adenovirus/mem.tif").symlink_to("/proc/self/mem")  # a file that cannot be read (EIO)
    with pytest.raises(DownloadError, match=r"local: the copy extracted from the archive cannot be checked: .*mem.tif"):
        check_extracted(root)


@pytest.mark.slow
def test_the_workflow_refuses_an_extracted_copy_edited_after_its_tables_were_made(tmp_path, raw_zip):
    """The probe's case: the raw tables made from a local archive, then a positions file of the
    extracted copy edited: the next run said "Nothing to be done" and the tables kept the old
    point for good while later jobs would read the edited copy. Now every run refuses in one line,
    naming the file, until the copy is removed (extracted again when a job needs it) or the
    archive changes."""
    (tmp_path / "copy.zip").write_bytes(raw_zip)
    workdir, override = _workdir(tmp_path, {"source": "local", "local": {"path": str(tmp_path / "copy.zip")}})
    cmd = snakemake_cmd(workdir, "results/raw/images.csv", "--configfile", str(override))
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    local = workdir / "resources" / "dataset" / "local"
    positions = local / "train/Adenovirus/particle_positions/Ade_train_1_particlepositions.txt"
    positions.write_text(positions.read_text().replace("10;12", "30;12"))
    run = subprocess.run([*cmd, "-n"], capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "Nothing to be done" not in out, out[-3000:]
    assert "Error: resources/dataset/local: the copy extracted from the archive was changed since" in out, out[-3000:]
    assert "Ade_train_1_particlepositions.txt" in out and "Traceback" not in out, out[-3000:]
    shutil.rmtree(local)  # extracted again when a job needs it; the tables hold the archive's point
    run = subprocess.run([*cmd, "-n"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "Error" not in run.stdout + run.stderr, run.stderr[-3000:]
    assert "\nAde_train_1,0,0,10.0,12.0\n" in (workdir / "results/raw/particles.csv").read_text()


@pytest.mark.slow
@pytest.mark.realdata
def test_real_crops_through_source_local(real_crops, tmp_path):
    """The real 1 nm/px crops are used in place: the chain starts from them, nothing is extracted."""
    assert find_raw_root(real_crops) == real_crops
    workdir, override = _workdir(tmp_path, {"source": "local", "local": {"path": str(real_crops)}})
    cmd = snakemake_cmd(workdir, "-n", "--configfile", str(override))
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    # raw_tables reads the crops in place, tracked by their content manifest
    assert f"input: {real_crops}, resources/dataset/local_manifest.json\n" in run.stdout
    assert "results/curation/images_kept.csv" in run.stdout  # and the curation chain follows
    for rule in ("synthetic_dataset", "extract_local_dataset", "download_dataset"):
        assert rule not in run.stdout


def test_cli_interrupted_says_so_in_one_line_and_leaves_nothing(tmp_path):
    """Ctrl-C (SIGINT) during a command printed a Python traceback; now one line naming the
    command and the signal, exit status 130, and no output or temporary left. The command here
    waits on a loopback server that accepts the connection and never answers. The child gets
    SIGINT's default disposition, as in a terminal: a CI shell or test runner may ignore SIGINT,
    and a child inherits that (an earlier version of this test then waited for ever)."""
    import signal
    import socket
    import sys
    import time

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        temvirus = str(Path(sys.executable).with_name("temvirus"))
        url = f"http://127.0.0.1:{server.getsockname()[1]}/x"
        child = subprocess.Popen(
            [temvirus, "download", "--url", url, "--out", str(tmp_path / "x")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        server.settimeout(120)
        connection, _ = server.accept()  # the request has been sent: the command now waits
        time.sleep(0.5)
        try:
            assert_stopped_by(child, signal.SIGINT, "download")
        finally:
            connection.close()
    assert list(tmp_path.iterdir()) == []


def test_cli_download_fetches_and_verifies(file_server, tmp_path):
    import sys

    body = bytes(range(256)) * 512
    file_server.files["/data.bin"] = body
    file_server.faults["/data.bin"] = {"drop_once"}
    temvirus = str(Path(sys.executable).with_name("temvirus"))
    out = tmp_path / "data.bin"
    good = subprocess.run(
        [
            temvirus,
            "download",
            "--url",
            file_server.url("/data.bin"),
            "--out",
            str(out),
            "--sha256",
            hashlib.sha256(body).hexdigest(),
        ],
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0, good.stderr
    assert out.read_bytes() == body
    bad = subprocess.run(
        [
            temvirus,
            "download",
            "--url",
            file_server.url("/data.bin"),
            "--out",
            str(tmp_path / "x.bin"),
            "--sha256",
            "0" * 64,
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert file_server.url("/data.bin") in bad.stderr and "sha256" in bad.stderr
    assert not (tmp_path / "x.bin").exists()


# -- the published archive as it is (issue 12) -------------------------------------------------


def published_tree(folder: Path) -> Path:
    """``TEM virus dataset/`` as published: context_virus_RAW/ (raw layout) beside
    context_virus_1nm_256x256/ (patches in train/validation/test, no tags), macOS leftovers."""
    import tifffile

    top = folder / "TEM virus dataset"
    make_raw_tree(top / "context_virus_RAW")
    for split in ("train", "validation", "test"):
        patches = top / "context_virus_1nm_256x256" / split / "Adenovirus"
        patches.mkdir(parents=True)
        tifffile.imwrite(patches / f"p_{split}.tif", np.zeros((8, 8), np.uint16))
    (top / "context_virus_RAW" / "train" / "Adenovirus" / "._Ade_train_1.tif").write_bytes(b"\0\5\26\7")
    (top / "context_virus_RAW" / ".DS_Store").write_bytes(b"\0")
    (top / "context_virus_RAW" / "__MACOSX").mkdir()
    return top


def published_zip(folder: Path, nested: bool = False) -> Path:
    """``TEM virus dataset.zip`` with a ``__MACOSX/`` root; ``nested``: the RAW folder zipped inside."""
    top = published_tree(folder.with_name(folder.name + "_src"))
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "TEM virus dataset.zip"
    extra = {"__MACOSX/TEM virus dataset/._context_virus_RAW": b"\0\5\26\7"}
    if nested:
        extra["TEM virus dataset/context_virus_RAW.zip"] = zip_tree(top / "context_virus_RAW")
        shutil.rmtree(top / "context_virus_RAW")
    archive.write_bytes(zip_tree(top, top="TEM virus dataset", extra=extra))
    return archive


@pytest.mark.parametrize("nested", [False, True])
def test_published_archive_is_extracted(tmp_path, nested):
    """The zip as published (or with the RAW folder zipped inside it) gives context_virus_RAW."""
    archive = published_zip(tmp_path / "in", nested=nested)
    summary = extract_archives([archive], tmp_path / "out" / "raw")
    assert summary["images"] == 4 and summary["raw_root_in_archive"].endswith("context_virus_RAW")
    assert read_dataset(tmp_path / "out" / "raw")[0].equals(read_dataset(make_raw_tree(tmp_path / "ref"))[0])
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["raw"]


def test_published_folder_and_folders_holding_it(tmp_path):
    """The extracted folder, its parent, or a folder holding only the zip all lead to the RAW layout."""
    from temvirus.download import locate_local

    top = published_tree(tmp_path / "extracted")
    raw = top / "context_virus_RAW"
    assert find_raw_root(top) == raw and find_raw_root(tmp_path / "extracted") == raw
    assert locate_local(top) == (raw, [])
    archive = published_zip(tmp_path / "zips")
    assert locate_local(tmp_path / "zips") == (None, [archive])
    assert locate_local(archive) == (None, [archive])
    (tmp_path / "extracted" / archive.name).write_bytes(archive.read_bytes())  # zip beside its extraction
    assert locate_local(tmp_path / "extracted") == (raw, [])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DownloadError, match="empty: no raw-layout folder"):
        locate_local(tmp_path / "empty")


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_a_folder_that_differs_from_its_archive_beside_it_is_refused(tmp_path, kind, capsys):
    """Before: the folder was used and the archive beside it passed over, so an extraction cut
    short (files missing, the last one truncated) or a folder edited since went in unseen, by the
    workflow (dataset.local.path) and by `temvirus read`."""
    from temvirus.cli import main
    from temvirus.download import locate_local

    top = published_tree(tmp_path / "data")
    raw = top / "context_virus_RAW"
    archive = tmp_path / "data" / f"TEM virus dataset.{kind}"
    if kind == "zip":
        archive.write_bytes(zip_tree(top, top="TEM virus dataset"))
    else:
        with tarfile.open(archive, "w:gz") as tf:
            tf.add(top, arcname="TEM virus dataset")
    (tmp_path / "data" / "patches_only.zip").write_bytes(zip_tree(top / "context_virus_1nm_256x256"))
    assert locate_local(tmp_path / "data") == (raw, [])  # the same files: used in place

    image = raw / "test" / "Rift Valley" / "Rif_test_4.tif"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])  # the extraction stopped inside this file ...
    (raw / "test" / "Rift Valley" / "tags" / "Rif_test_4.tif_tags.csv").unlink()  # ... before this one
    with pytest.raises(DownloadError) as caught:
        locate_local(tmp_path / "data")
    message = str(caught.value)
    assert message.startswith(f"{raw}: differs from {archive} beside it (TEM virus dataset/context_virus_RAW there)")
    assert "1 missing from the folder" in message and "test/Rift Valley/tags/Rif_test_4.tif_tags.csv" in message
    assert "1 of another size, e.g. ['test/Rift Valley/Rif_test_4.tif']" in message
    assert main(["read", str(tmp_path / "data")]) == 1
    assert message in capsys.readouterr().err
    assert locate_local(raw) == (raw, [])  # the folder alone, as the message says

    image.write_bytes(data)
    (raw / "test" / "Rift Valley" / "tags" / "Rif_test_4.tif_tags.csv").write_text("edited\n")
    (raw / "notes.txt").write_text("added\n")
    with pytest.raises(DownloadError, match=r"1 of another size.*1 not in the archive, e\.g\. \['notes\.txt'\]"):
        locate_local(tmp_path / "data")

    archive.write_bytes(archive.read_bytes()[:-300])  # a copy of the archive cut short
    with pytest.raises(DownloadError, match=f"{re.escape(str(archive))}: .*(corrupt|truncated)"):
        locate_local(tmp_path / "data")


def test_a_folder_beside_the_parts_of_a_dataset_split_over_archives_is_compared_with_all_of_them(tmp_path):
    """Each part alone lacks the other's files: compared one by one, the folder was refused."""
    from temvirus.download import locate_local

    raw = make_raw_tree(tmp_path / "data" / "context_virus_RAW")
    for part in ("train", "test"):
        (tmp_path / "data" / f"raw_{part}.zip").write_bytes(zip_tree(raw / part, top=f"context_virus_RAW/{part}"))
    assert locate_local(tmp_path / "data") == (raw, [])
    (raw / "test" / "Rift Valley" / "Rif_test_4.tif").unlink()
    with pytest.raises(DownloadError, match=r"raw_test\.zip beside it .*1 missing from the folder"):
        locate_local(tmp_path / "data")


def test_patches_folder_is_not_taken_for_the_raw_layout(tmp_path):
    top = published_tree(tmp_path)
    shutil.rmtree(top / "context_virus_RAW")
    with pytest.raises(
        DownloadError, match=r"no raw-layout folder .*\(not the raw layout\): \[.*context_virus_1nm_256x256'\]"
    ):
        find_raw_root(tmp_path)


def test_error_inside_an_archive_names_the_member(tmp_path):
    """A bad file in the archive is named by its path in the archive, not by a vanished temporary folder."""
    top = published_tree(tmp_path / "made")
    tags = top / "context_virus_RAW/train/Adenovirus/tags/Ade_train_1.tif_tags.csv"
    tags.write_text(tags.read_text().replace("xscale;4,5", "xscale;15;furlong"))
    archive = tmp_path / "TEM virus dataset.zip"
    archive.write_bytes(zip_tree(top, top="TEM virus dataset"))
    with pytest.raises(DownloadError) as caught:
        extract_archives([archive], tmp_path / "out" / "raw")
    message = str(caught.value)
    assert message.startswith(
        f"{archive}: inside the archive: TEM virus dataset/context_virus_RAW/train/Adenovirus/tags/Ade_train_1.tif_tags.csv:6: unknown unit 'furlong'"
    )
    assert ".part" not in message and list((tmp_path / "out").iterdir()) == []


def test_mendeley_default_include_selects_the_published_archive(file_server, tmp_path):
    """The default include of config.yaml picks "TEM virus dataset.zip" from a listing, case-insensitively."""
    import yaml

    include = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["dataset"]["mendeley"]["include"]
    body = published_zip(tmp_path / "in").read_bytes()
    listing = [
        {
            "filename": name,
            "size": len(data),
            "content_details": {
                "download_url": file_server.url(f"/files/{name.replace(' ', '%20')}"),
                "sha256_hash": sha(data),
            },
        }
        for name, data in [("TEM virus dataset.zip", body), ("README.pdf", b"pdf")]
    ]
    file_server.files["/api/datasets/x4dwwfwtw3/files?folder_id=root&version=3"] = json.dumps(listing).encode()
    file_server.files["/files/TEM%20virus%20dataset.zip"] = body
    settings = {"id": "x4dwwfwtw3", "version": 3, "api_url": file_server.url("/api"), "include": include, "files": []}
    download_dataset(settings, tmp_path / "ds" / "mendeley", tmp_path / "ds" / "rec.json", tmp_path / "ds" / "dl")
    assert len(read_dataset(tmp_path / "ds" / "mendeley")[0]) == 4
    assert [f["name"] for f in json.loads((tmp_path / "ds" / "rec.json").read_text())["files"]] == [
        "TEM virus dataset.zip"
    ]
    # still the RAW-named archive when that is what the record lists; nothing matching: the names seen
    from temvirus.download import mendeley_files

    listing[0]["filename"] = "context_virus_raw.zip"
    file_server.files["/api/datasets/x4dwwfwtw3/files?folder_id=root&version=3"] = json.dumps(listing).encode()
    assert [f["name"] for f in mendeley_files(settings)[0]] == ["context_virus_raw.zip"]
    listing[0]["filename"] = "images.zip"
    file_server.files["/api/datasets/x4dwwfwtw3/files?folder_id=root&version=3"] = json.dumps(listing).encode()
    with pytest.raises(DownloadError, match=r"no listed file matches .*listed: \['images.zip', 'README.pdf'\]"):
        mendeley_files(settings)


@pytest.mark.slow
def test_local_folder_is_tracked_by_content(tmp_path):
    """Case 2: editing (even with the old mtime), adding or removing a file of a local raw folder
    used in place reruns raw_tables; touching a file or adding macOS leftovers does not."""
    import os
    import sys

    raw = make_raw_tree(tmp_path / "data" / "TEM virus dataset" / "context_virus_RAW")
    workdir, override = _workdir(tmp_path, {"source": "local", "local": {"path": str(tmp_path / "data")}})
    images_csv = workdir / "results" / "raw" / "images.csv"

    def run() -> str:
        done = subprocess.run(
            snakemake_cmd(workdir, "results/raw/images.csv", "--configfile", str(override)),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    def audit() -> subprocess.CompletedProcess:
        temvirus = str(Path(sys.executable).with_name("temvirus"))
        return subprocess.run(
            [temvirus, "audit", str(workdir / "results"), "--out", str(tmp_path / "audit"), "--partial"],
            capture_output=True,
            text=True,
            timeout=300,
        )

    assert "raw_tables" in run()
    assert "Nothing to be done" in run()
    assert audit().returncode == 0
    tags = raw / "train/Adenovirus/tags/Ade_train_1.tif_tags.csv"
    before = tags.stat()
    tags.write_text(tags.read_text().replace("xscale;4,5", "xscale;55;Å").replace("yscale;4,5", "yscale;55;Å"))
    os.utime(tags, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime: only the content tells
    plan = subprocess.run(
        snakemake_cmd(workdir, "-n", "results/raw/images.csv", "--configfile", str(override)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "raw_tables" in plan.stdout and ",5.5," not in images_csv.read_text()  # 55 Å = 5.5 nm
    stale = audit()  # results not redone yet: the audit sees the changed source, not PASSED
    assert stale.returncode == 1 and "local_manifest.json" in stale.stdout, stale.stdout[-2000:]
    assert "raw_tables" in run()
    assert ",5.5," in images_csv.read_text()
    assert audit().returncode == 0
    os.utime(tags)  # a newer mtime, same content
    (raw / "train/Adenovirus/._Ade_train_1.tif").write_bytes(b"\0\5\26\7")
    assert "Nothing to be done" in run()
    folder = raw / "train/Adenovirus"
    shutil.copy(folder / "Ade_train_1.tif", folder / "Ade_train_9.tif")
    shutil.copy(tags, folder / "tags/Ade_train_9.tif_tags.csv")
    shutil.copy(
        folder / "particle_positions/Ade_train_1_particlepositions.txt",
        folder / "particle_positions/Ade_train_9_particlepositions.txt",
    )
    assert "raw_tables" in run() and len(images_csv.read_text().splitlines()) == 6
    for path in [
        folder / "Ade_train_9.tif",
        folder / "tags/Ade_train_9.tif_tags.csv",
        folder / "particle_positions/Ade_train_9_particlepositions.txt",
    ]:
        path.unlink()
    assert "raw_tables" in run() and len(images_csv.read_text().splitlines()) == 5
    manifest = json.loads((workdir / "resources/dataset/local_manifest.json").read_text())
    assert manifest["root"] == str(raw.resolve()) and len(manifest["files"]) == 12


def test_cli_read_finds_the_raw_layout_in_the_published_folder(tmp_path, capsys):
    from temvirus.cli import main

    top = published_tree(tmp_path)
    assert main(["read", str(top)]) == 0
    out = capsys.readouterr().out
    assert f"raw layout found in {top / 'context_virus_RAW'}" in out and ": 4 images, 10 particles, 2 classes" in out
    archive = published_zip(tmp_path / "zips")
    assert main(["read", str(archive)]) == 1
    assert f"{archive}: an archive, not a folder: extract it" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    "where", ["zip", "folder holding the zip", "extracted folder", "folder holding both", "both, extraction cut"]
)
def test_snakemake_plans_the_published_archive(tmp_path, where):
    """dataset.local.path at the zip or a folder holding it: extraction; at the extracted folder: in place;
    at a folder holding the zip and a cut extraction of it: refused."""
    zips = tmp_path / "zips"
    archive = published_zip(zips)
    top = published_tree(tmp_path / "extracted")
    if where.startswith(("folder holding both", "both")):
        (tmp_path / "extracted" / archive.name).write_bytes(archive.read_bytes())
    if where == "both, extraction cut":
        shutil.rmtree(top / "context_virus_RAW" / "train" / "Rift Valley")
    path = {
        "zip": archive,
        "folder holding the zip": zips,
        "extracted folder": top,
        "folder holding both": tmp_path / "extracted",
        "both, extraction cut": tmp_path / "extracted",
    }[where]
    workdir, override = _workdir(tmp_path, {"source": "local", "local": {"path": str(path)}})
    run = subprocess.run(
        snakemake_cmd(workdir, "-n", "results/raw/images.csv", "--configfile", str(override)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if where == "both, extraction cut":
        assert run.returncode == 1
        assert f"Error: dataset.local.path {str(path)!r}: {top / 'context_virus_RAW'}: differs from" in run.stderr
        assert "3 missing from the folder" in run.stderr and "Traceback" not in run.stderr
        return
    assert run.returncode == 0, run.stderr[-3000:]
    if where in ("zip", "folder holding the zip"):
        assert "extract_local_dataset" in run.stdout
        assert f"input: {archive}, resources/dataset/local_archives.json\n" in run.stdout
        if where == "folder holding the zip":  # and for real: extracted, recorded, read
            done = subprocess.run(
                snakemake_cmd(workdir, "results/raw/images.csv", "--configfile", str(override)),
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            record = json.loads((workdir / "resources/dataset/local_record.json").read_text())
            assert record["raw_root_in_archive"] == "TEM virus dataset/context_virus_RAW" and record["images"] == 4
            assert [f["path"] for f in record["files"]] == [str(archive.resolve())]
            assert len((workdir / "results/raw/images.csv").read_text().splitlines()) == 5
    else:
        assert "extract_local_dataset" not in run.stdout
        assert f"input: {top / 'context_virus_RAW'}, resources/dataset/local_manifest.json\n" in run.stdout


def test_two_raw_layouts_are_not_guessed_between(tmp_path):
    make_raw_tree(tmp_path / "a" / "context_virus_RAW")
    make_raw_tree(tmp_path / "b" / "copy")
    with pytest.raises(DownloadError, match=r"several raw-layout folders found: .*context_virus_RAW.*copy"):
        find_raw_root(tmp_path)


# -- archives and folders as users have them (issue 12, second pass) ----------------------------


def test_zip_made_on_windows_with_backslashes_is_extracted(tmp_path):
    """Old Windows zip tools store member paths with '\\': the layout inside is still found."""
    tree = make_raw_tree(tmp_path / "tree")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                zf.writestr(
                    "TEM virus dataset\\context_virus_RAW\\" + str(path.relative_to(tree)).replace("/", "\\"),
                    path.read_bytes(),
                )
    (tmp_path / "win.zip").write_bytes(buffer.getvalue())
    summary = extract_archives([tmp_path / "win.zip"], tmp_path / "out" / "raw")
    assert summary["raw_root_in_archive"] == "TEM virus dataset/context_virus_RAW"
    assert read_dataset(tmp_path / "out" / "raw")[0].equals(read_dataset(tree)[0])


def _damaged(tmp_path: Path, how: str) -> Path:
    tree = make_raw_tree(tmp_path / "tree")
    data = zip_tree(tree)
    if how == "crc":  # one byte of a stored member changed: zip's CRC check fails on extraction
        data = bytearray(data)
        data[data.index(b"II*\0") + 100] ^= 0xFF
        return _write(tmp_path / "in" / "a.zip", bytes(data))
    if how == "truncated zip":
        return _write(tmp_path / "in" / "a.zip", data[: len(data) // 2])
    if how == "truncated tar.gz":
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
            tf.add(tree, arcname="context_virus_RAW")
        return _write(tmp_path / "in" / "a.tar.gz", buffer.getvalue()[: len(buffer.getvalue()) // 2])
    if how.startswith("tar cut"):  # at a member's header, or inside one: tarfile stopped there without a word
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tf:
            tf.add(tree, arcname="context_virus_RAW")
        with tarfile.open(fileobj=io.BytesIO(buffer.getvalue())) as tf:
            at = next(m.offset for m in tf.getmembers() if m.name.endswith("Rift Valley"))
        data = buffer.getvalue()[: at + (100 if how.endswith("header") else 0)]
        if how.endswith("gzip"):
            return _write(tmp_path / "in" / "a.tar.gz", gzip.compress(data))
        return _write(tmp_path / "in" / "a.tar", data)
    return _write(tmp_path / "in" / "a.7z", b"7z\xbc\xaf\x27\x1c\0\4")


class Cp1252Info(zipfile.ZipInfo):
    """A zip member whose name is stored as a Western-European Windows stores it: cp1252, no UTF-8 flag."""

    def _encodeFilenameFlags(self):
        return self.filename.encode("cp1252"), self.flag_bits


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "how,reason",
    [
        ("crc", "corrupt or truncated archive \\(BadZipFile: Bad CRC-32"),
        ("truncated zip", "a truncated or corrupt zip"),
        ("truncated tar.gz", "corrupt or truncated archive"),
        # before: a class folder dropped silently (3 images of 4)
        ("tar cut at a member", "truncated tar archive \\(no end-of-archive block after its"),
        ("tar cut at a member, gzip", "truncated tar archive"),
        ("tar cut inside a header", "truncated tar archive"),
        ("7z", "a 7-Zip archive: not supported"),
    ],
)
def test_damaged_archive_is_named_and_leaves_nothing(tmp_path, how, reason):
    archive = _damaged(tmp_path, how)
    target = tmp_path / "out" / "raw"
    with pytest.raises(DownloadError, match=reason) as caught:
        extract_archives([archive], target)
    assert str(caught.value).startswith(f"{archive}: ")
    assert list(target.parent.iterdir()) == []  # no target, no staging folder


def test_two_archives_holding_the_same_files_are_refused(tmp_path):
    """A second download ("... (1).zip") beside the first is not silently merged into it."""
    from temvirus.download import locate_local

    tree = make_raw_tree(tmp_path / "tree")
    first = _write(tmp_path / "in" / "TEM virus dataset.zip", zip_tree(tree))
    tags = tree / "train/Adenovirus/tags/Ade_train_1.tif_tags.csv"
    tags.write_text(tags.read_text().replace("4,5", "6"))
    second = _write(tmp_path / "in" / "TEM virus dataset (1).zip", zip_tree(tree))
    root, archives = locate_local(tmp_path / "in")
    assert root is None and sorted(archives) == sorted([first, second])
    with pytest.raises(DownloadError, match="holds 'context_virus_RAW/.*' like .*two copies of the dataset"):
        extract_archives(archives, tmp_path / "out" / "raw")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_file_given_twice_in_an_archive_or_spelt_otherwise_in_two_is_refused(tmp_path):
    """Before: a zip holding one path twice (appended, or once with backslashes) was extracted in turn, the
    last copy winning unseen; a tar made with './' names beside a zip of the same files was not seen as a
    second copy (its tags won: another pixel size)."""
    tree = make_raw_tree(tmp_path / "tree")
    tags = "context_virus_RAW/train/Adenovirus/tags/Ade_train_1.tif_tags.csv"
    changed = b"height;40\nwidth;48\nxscale;9\nyscale;9\n"
    for name in (tags, tags.replace("/", "\\")):
        with warnings.catch_warnings():  # zipfile warns of the duplicate it is asked to write
            warnings.simplefilter("ignore", UserWarning)
            archive = _write(tmp_path / "in" / f"{len(name)}.zip", zip_tree(tree, extra={name: changed}))
        with pytest.raises(DownloadError, match=re.escape(f"'{tags}' (given twice: which copy is meant?)")):
            extract_archives([archive], tmp_path / "out" / "raw")
    first = _write(tmp_path / "two" / "a.zip", zip_tree(tree))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        tf.add(tree, arcname="./context_virus_RAW")
    second = _write(tmp_path / "two" / "b.tar.gz", buffer.getvalue())
    with pytest.raises(DownloadError, match="holds 'context_virus_RAW/.*' like .*two copies of the dataset"):
        extract_archives([first, second], tmp_path / "out" / "raw")
    assert list((tmp_path / "out").iterdir()) == []


def test_utf8_names_of_a_zip_without_its_utf8_flag_are_read_as_utf8(tmp_path):
    """macOS' Archive Utility and Windows' zipper write UTF-8 names without the UTF-8 flag; zipfile reads
    them as cp437. Before: the image 'Ade_ä_1' was extracted and read as 'Ade_├ñ_1', and the same folder
    extracted by unzip beside the zip was refused as differing from it."""
    from temvirus.download import locate_local

    tree = make_raw_tree(tmp_path / "tree")
    folder = tree / "train" / "Adenovirus"
    for path in [*folder.glob("*.tif"), *folder.glob("*/*")]:  # 'QQ': as long as 'ä' in UTF-8
        path.rename(path.with_name(path.name.replace("Ade_train_1", "Ade_QQ_1")))
    data = zip_tree(tree).replace(b"Ade_QQ_1", "Ade_ä_1".encode())
    assert not any(info.flag_bits & 0x800 for info in zipfile.ZipFile(io.BytesIO(data)).infolist())
    archive = _write(tmp_path / "in" / "TEM virus dataset.zip", data)
    extract_archives([archive], tmp_path / "out" / "raw")
    images, _ = read_dataset(tmp_path / "out" / "raw")
    assert "Ade_ä_1" in set(images.image_id)
    shutil.copytree(tmp_path / "out" / "raw", tmp_path / "in" / "TEM virus dataset")  # as extracted by unzip
    assert locate_local(tmp_path / "in") == (tmp_path / "in" / "TEM virus dataset", [])


def test_names_in_a_code_page_that_the_archive_does_not_record_are_refused_naming_two_readings(tmp_path):
    """A zip made on a Western-European Windows holds its names in cp1252 without saying so, a tar made on
    such a machine too. Before: 'Ade_é_1' (cp1252) was extracted as 'Ade_Θ_1' (zipfile's cp437), another
    image id, with no word; from the tar, as a name with a lone surrogate."""
    tree = make_raw_tree(tmp_path / "tree")
    folder = tree / "train" / "Adenovirus"
    for path in [*folder.glob("*.tif"), *folder.glob("*/*")]:  # 'Q': as long as 'é' in cp1252
        path.rename(path.with_name(path.name.replace("Ade_train_1", "Ade_Q_1")))
    zipped = _write(tmp_path / "in" / "a.zip", zip_tree(tree).replace(b"Ade_Q_1", "Ade_é_1".encode("cp1252")))
    assert any("Ade_Θ_1" in name for name in zipfile.ZipFile(zipped).namelist())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT, encoding="cp1252") as tf:
        for path in sorted(tree.rglob("*")):
            name = f"context_virus_RAW/{path.relative_to(tree)}".replace("Ade_Q_1", "Ade_é_1")
            tf.add(path, arcname=name, recursive=False)
    tarred = _write(tmp_path / "in" / "b.tar", buffer.getvalue())
    for archive in (zipped, tarred):
        with pytest.raises(DownloadError) as caught:
            extract_archives([archive], tmp_path / "out" / "raw")
        assert str(caught.value).startswith(f"{archive}: 3 member name(s) in a code page that the archive does not")
        assert "as cp437, 'context_virus_RAW/train/Adenovirus/" in str(caught.value)
        assert "Ade_é_1" in str(caught.value) and "as cp1252" in str(caught.value)
        assert ("unzip -O cp1252" in str(caught.value)) == (archive == zipped)  # a tar: tar -xf, then convmv
        assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    # names flagged UTF-8 that are not: before, a bare UnicodeDecodeError naming no archive
    flagged = bytearray(zipped.read_bytes())
    for at in (m.start() for m in re.finditer(b"PK\x01\x02", flagged)):  # each central directory record
        flagged[at + 9] |= 0x08  # the general purpose flags' bit 11 (the high byte's bit 3)
    flagged_zip = _write(tmp_path / "in" / "flagged.zip", bytes(flagged))
    with pytest.raises(DownloadError, match=re.escape(f"{flagged_zip}: a member name is marked UTF-8 (the zip's")):
        extract_archives([flagged_zip], tmp_path / "out" / "raw")

    # a legacy name with its UTF-8 in an Info-ZIP Unicode Path extra field (APPNOTE 4.6.9) goes in by that name
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(p for p in tree.rglob("*") if p.is_file()):
            name = f"context_virus_RAW/{path.relative_to(tree).as_posix()}".replace("Ade_Q_1", "Ade_é_1")
            info = Cp1252Info(name, (2021, 1, 1, 0, 0, 0))
            if not name.isascii():
                field = struct.pack("<BI", 1, zlib.crc32(name.encode("cp1252"))) + name.encode("utf-8")
                info.extra = struct.pack("<HH", 0x7075, len(field)) + field
            zf.writestr(info, path.read_bytes())
    extract_archives([_write(tmp_path / "in" / "upath.zip", buffer.getvalue())], tmp_path / "out3" / "raw")
    assert "Ade_é_1" in set(read_dataset(tmp_path / "out3" / "raw")[0].image_id)
    # the same names in UTF-8 (the flag set, as zipfile writes them) go in as they are
    utf8 = tmp_path / "utf8"
    shutil.copytree(tree, utf8 / "context_virus_RAW")
    for path in sorted(utf8.rglob("*Ade_Q_1*")):
        path.rename(path.with_name(path.name.replace("Ade_Q_1", "Ade_é_1")))
    extract_archives(
        [_write(tmp_path / "in" / "c.zip", zip_tree(utf8 / "context_virus_RAW"))], tmp_path / "out2" / "raw"
    )
    images, _ = read_dataset(tmp_path / "out2" / "raw")
    assert "Ade_é_1" in set(images.image_id)


def test_legacy_names_of_members_the_reader_skips_do_not_refuse_the_archive(tmp_path):
    """Before: a zip or tar whose only names in a legacy code page were under ``__MACOSX/`` (macOS'
    resource forks) or of hidden files or folders, none of which the reader looks at, was refused whole."""
    tree = make_raw_tree(tmp_path / "tree")
    top = "context_virus_RAW/train/Adenovirus"
    skipped = [f"__MACOSX/{top}/._Adé.tif", f"{top}/.Adé_notes.txt", "context_virus_RAW/.cacheé/x.bin"]

    def archives(names: list[str]) -> list[Path]:
        """The tree and ``names`` (one byte each) as a zip and a tar, the names in cp1252 without saying so."""
        zipped, buffer = tmp_path / "in" / f"{len(names)}.zip", io.BytesIO()
        with zipfile.ZipFile(zipped.parent.mkdir(parents=True, exist_ok=True) or zipped, "w") as zf:
            for path in sorted(p for p in tree.rglob("*") if p.is_file()):
                zf.write(path, f"context_virus_RAW/{path.relative_to(tree).as_posix()}")
            for name in names:
                zf.writestr(Cp1252Info(name), b"x")
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT, encoding="cp1252") as tf:
            for path in sorted(tree.rglob("*")):
                tf.add(path, arcname=f"context_virus_RAW/{path.relative_to(tree)}", recursive=False)
            for name in names:
                info = tarfile.TarInfo(name)
                info.size = 1
                tf.addfile(info, io.BytesIO(b"x"))
        return [zipped, _write(tmp_path / "in" / f"{len(names)}.tar", buffer.getvalue())]

    for archive in archives(skipped):
        out = tmp_path / f"out_{archive.suffix[1:]}" / "raw"
        extract_archives([archive], out)
        assert sorted(read_dataset(out)[0].image_id) == sorted(read_dataset(tree)[0].image_id)
    for archive in archives([*skipped, f"{top}/notes_é.txt"]):  # one where the reader looks: refused
        with pytest.raises(DownloadError, match=r": 1 member name\(s\) in a code page .*notes_"):
            extract_archives([archive], tmp_path / "refused" / "raw")


def test_a_zip_holding_a_file_and_a_folder_of_one_name_is_refused_before_extraction(tmp_path):
    """Before: a FileExistsError naming the temporary folder, with a traceback, half-way through."""
    tree = make_raw_tree(tmp_path / "tree")
    for extra in (
        {"context_virus_RAW/notes": b"x", "context_virus_RAW/notes/a.txt": b"y"},
        {"context_virus_RAW/notes": b"x", "context_virus_RAW/notes/": b""},
    ):
        archive = _write(tmp_path / "in" / "a.zip", zip_tree(tree, extra=extra))
        with pytest.raises(
            DownloadError, match=re.escape("'context_virus_RAW/notes' (both a file and a folder)")
        ) as caught:
            extract_archives([archive], tmp_path / "out" / "raw")
        assert str(caught.value).startswith(f"{archive}: refusing to extract")
        assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_local_archive_is_tracked_by_content(real_crops, tmp_path):
    """An archive at dataset.local.path replaced by another one with an older time stamp (a backup
    restored with cp -p) is extracted again and its data read: Snakemake compares times only, and
    kept the tables of the archive it replaced ("Nothing to be done")."""
    import os

    tree = tmp_path / "tree"
    for subset in ("train", "test"):
        for cls in ("Adenovirus", "Rift Valley"):
            source, target = real_crops / subset / cls, tree / subset / cls
            copy_real_image(sorted(source.glob("*.jpg"))[0], target)
    first = zip_tree(tree)
    (positions,) = (tree / "train" / "Adenovirus" / "particle_positions").iterdir()
    positions.write_text(positions.read_text() + "particleposition\n300;300\n")  # one particle more
    second = zip_tree(tree)
    archive = tmp_path / "data" / "TEM virus dataset.zip"
    archive.parent.mkdir()
    archive.write_bytes(second)
    old = archive.stat()
    archive.write_bytes(first)
    os.utime(archive, ns=(old.st_atime_ns, old.st_mtime_ns - 10**9))
    workdir, override = _workdir(tmp_path, {"source": "local", "local": {"path": str(archive)}})
    images_csv = workdir / "results" / "raw" / "images.csv"

    def run() -> str:
        cmd = snakemake_cmd(workdir, "results/raw/images.csv", "--configfile", str(override))
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    def particles() -> int:
        return int(pd.read_csv(images_csv).n_particles.sum())

    assert "extract_local_dataset" in run()
    before = particles()
    assert "Nothing to be done" in run()
    archive.write_bytes(second)  # the other archive, with a time stamp older than the extraction
    os.utime(archive, ns=(old.st_atime_ns, old.st_mtime_ns))
    log = run()
    assert "extract_local_dataset" in log and "raw_tables" in log
    assert particles() == before + 1
    record = json.loads((workdir / "resources" / "dataset" / "local_record.json").read_text())
    assert record["files"][0]["sha256"] == sha(second)
    assert "Nothing to be done" in run()


def test_linked_folders_are_found_and_tracked(tmp_path):
    """A raw folder linked into dataset.local.path is found; the manifest lists the files of linked
    folders, and a broken link by its target instead of stopping the workflow's start."""
    from temvirus.download import locate_local
    from temvirus.raw import update_manifest

    tree = make_raw_tree(tmp_path / "elsewhere" / "raw")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw").symlink_to(tree, target_is_directory=True)
    (tmp_path / "data" / "loop").symlink_to(tmp_path / "data", target_is_directory=True)
    assert locate_local(tmp_path / "data") == (tmp_path / "data" / "raw", [])
    root = tmp_path / "inplace"
    (root / "train").mkdir(parents=True)
    (root / "train" / "Adenovirus").symlink_to(tree / "train" / "Adenovirus", target_is_directory=True)
    (root / "train" / "back").symlink_to(root, target_is_directory=True)
    (root / "train" / "gone.tif").symlink_to(tmp_path / "nowhere.tif")
    update_manifest(root, tmp_path / "manifest.json")
    files = {f["path"]: f for f in json.loads((tmp_path / "manifest.json").read_text())["files"]}
    assert "train/Adenovirus/Ade_train_1.tif" in files and "train/Adenovirus/tags/Ade_train_1.tif_tags.csv" in files
    assert files["train/gone.tif"]["sha256"] == f"broken link to {tmp_path / 'nowhere.tif'}"
    assert not any(path.startswith("train/back/") for path in files)


def test_a_named_pipe_in_the_local_folder_is_named_not_waited_on(real_crops, tmp_path):
    """A named pipe among real crops (a local folder used in place): the content manifest, made
    when the workflow starts, waited forever to read it; now it is listed by its type and the
    reader refuses it by name."""
    import os
    import sys

    raw = tmp_path / "raw"
    for subset in ("train", "test"):
        source, target = real_crops / subset / "Orf", raw / subset / "Orf"
        copy_real_image(sorted(source.glob("*.jpg"))[0], target)
    os.mkfifo(raw / "train" / "Orf" / "stream.tif")
    manifest = tmp_path / "manifest.json"
    code = f"from temvirus.raw import update_manifest; update_manifest({str(raw)!r}, {str(manifest)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    listed = {f["path"]: f for f in json.loads(manifest.read_text())["files"]}
    assert listed["train/Orf/stream.tif"]["sha256"].startswith("not a regular file") and len(listed) == 7
    with pytest.raises(RawDataError, match=r"stream\.tif: not a regular file"):
        read_dataset(raw)


def test_local_path_with_home_and_variables(tmp_path, monkeypatch):
    """dataset.local.path written as in a shell ("~/...", "$SCRATCH/...") is found."""
    from temvirus.download import locate_local

    tree = make_raw_tree(tmp_path / "home" / "data" / "raw")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SCRATCH", str(tmp_path / "home" / "data"))
    assert locate_local("~/data") == (tree, [])
    assert locate_local("$SCRATCH/raw") == (tree, [])


def test_listing_sizes_given_as_text(file_server, tmp_path, raw_zip):
    """A listing giving sizes as JSON strings is read as numbers; a size that is no number is named."""
    from temvirus.download import mendeley_files

    entry = {"filename": "a.zip", "size": str(len(raw_zip)), "content_details": {"download_url": "u"}}
    file_server.files["/api/datasets/x/files?folder_id=root&version=1"] = json.dumps([entry]).encode()
    settings = {"id": "x", "version": 1, "api_url": file_server.url("/api"), "include": "*.zip", "files": []}
    assert mendeley_files(settings)[0][0]["size"] == len(raw_zip)
    entry["size"] = "12 MB"
    file_server.files["/api/datasets/x/files?folder_id=root&version=1"] = json.dumps([entry]).encode()
    with pytest.raises(DownloadError, match="size that is not a number: .*12 MB"):
        mendeley_files(settings)


def test_a_body_sent_content_encoded_is_refused_unless_the_file_is_stored_so(file_server, tmp_path):
    """A server that gzips the body (``Content-Encoding: gzip``) though none was asked: the gzip
    stream was saved as the file, exit 0 without --sha256. Now ``identity`` is asked, and such a
    body refused naming the URL and the coding, nothing saved; a ``.tar.gz`` sent with ``gzip`` (a
    server labelling its .gz files so) is its gzip bytes, and is kept as served."""
    import gzip

    body = np.random.default_rng(1).bytes(50_000)
    for name in ("/a.bin", "/a.tar.gz"):
        file_server.files[name] = gzip.compress(body)
        file_server.content_encodings[name] = "gzip"
    with pytest.raises(DownloadError, match=r"a.bin: the server sent the file with Content-Encoding 'gzip'"):
        fetch(file_server.url("/a.bin"), tmp_path / "a.bin", **FAST)
    assert list(tmp_path.iterdir()) == []
    assert all(headers["Accept-Encoding"] == "identity" for headers in file_server.headers)
    fetch(file_server.url("/a.tar.gz"), tmp_path / "a.tar.gz", **FAST)
    assert gzip.decompress((tmp_path / "a.tar.gz").read_bytes()) == body
    # the name that decides is the one of the URL that served it, after redirects
    file_server.files["/plain.tar"] = file_server.files["/real.tar.gz"] = gzip.compress(body)
    file_server.content_encodings.update({"/plain.tar": "gzip", "/real.tar.gz": "gzip"})
    file_server.redirects.update({"/data.tar.gz": "/plain.tar", "/download?id=1": "/real.tar.gz"})
    with pytest.raises(DownloadError, match=r"plain.tar: the server sent the file with Content-Encoding 'gzip'"):
        fetch(file_server.url("/data.tar.gz"), tmp_path / "data.tar.gz", **FAST)
    fetch(file_server.url("/download?id=1"), tmp_path / "real.tar.gz", **FAST)
    assert gzip.decompress((tmp_path / "real.tar.gz").read_bytes()) == body
    # with a published hash, the hash decides (before: refused, though the bytes were the file's)
    file_server.files["/files/3f2a"] = gzip.compress(body)
    file_server.content_encodings["/files/3f2a"] = "gzip"
    fetch(file_server.url("/files/3f2a"), tmp_path / "v.tar.gz", sha256=sha(gzip.compress(body)), **FAST)
    assert gzip.decompress((tmp_path / "v.tar.gz").read_bytes()) == body
    for known in ({"sha256": sha(body)}, {"size": len(body), "sha256": sha(body)}):  # the file's own, not the coding's
        with pytest.raises(DownloadError, match=r"3f2a: .* \(sent with Content-Encoding 'gzip' although"):
            fetch(file_server.url("/files/3f2a"), tmp_path / "w.bin", **known, **FAST)
    assert not (tmp_path / "w.bin").exists()
    # a transfer coding urllib3 does not undo was saved as the file too
    file_server.files["/t.bin"] = body
    file_server.faults["/t.bin"] = {"transfer_gzip"}
    with pytest.raises(DownloadError, match=r"t.bin: the server sent the file with Transfer-Encoding 'gzip, chunked'"):
        fetch(file_server.url("/t.bin"), tmp_path / "t.bin", **FAST)
    assert not (tmp_path / "t.bin").exists()


def test_a_resumed_range_that_is_no_part_of_the_file_is_dropped_and_the_file_fetched_whole(file_server, tmp_path):
    """A server that gzips each 206 range (Content-Encoding gzip, the compressed length) of a
    .tar.gz: its pieces were appended, and a later run completed a corrupt file (exit 0 without
    --sha256). A 206 whose length is not its range's span is no part of the file: the partial file
    is dropped and the next attempt fetches the file whole."""
    body = np.random.default_rng(2).bytes(40_000)
    file_server.files["/r.tar.gz"] = body
    file_server.faults["/r.tar.gz"] = {"drop_once", "encoded_range"}
    fetch(file_server.url("/r.tar.gz"), tmp_path / "r.tar.gz", **FAST)
    assert (tmp_path / "r.tar.gz").read_bytes() == body
    assert [rng is not None for _, rng in file_server.requests] == [False, True, False]


# -- archives as a new user's probe had them (session 42) -----------------------------------------


def test_a_zip_of_one_zip_per_subset_goes_in_as_the_folder_of_them_does(tmp_path):
    """Before: refused ("several raw-layout folders found ... point at one of them", which read one
    subset without a word); the same zips in a folder went in. Now both give the whole layout."""
    from temvirus.download import locate_local

    tree = make_raw_tree(tmp_path / "made")
    parts = tmp_path / "parts"
    parts.mkdir()
    for subset in ("train", "test"):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            for path in sorted((tree / subset).rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(tree).as_posix())
        (parts / f"context_virus_RAW_{subset}.zip").write_bytes(buffer.getvalue())
    outer = tmp_path / "outer" / "all.zip"
    outer.parent.mkdir()
    with zipfile.ZipFile(outer, "w") as zf:
        for part in sorted(parts.iterdir()):
            zf.write(part, part.name)
    reference = read_dataset(tree)[0]
    for given, out in ((parts, "from_folder"), (outer, "from_outer")):
        summary = extract_archives(locate_local(given)[1], tmp_path / out)
        assert summary["images"] == 4
        assert read_dataset(tmp_path / out)[0].equals(reference)


@pytest.mark.parametrize(
    "how, message",
    [
        ("encrypted", "'context_virus_RAW/.*' \\(encrypted: a password is needed\\)"),
        ("deflate64", "\\(compressed with Deflate64 \\(Windows Explorer's for large archives\\)\\)"),
    ],
)
def test_zip_members_zipfile_cannot_read_are_refused_naming_the_archive(tmp_path, raw_zip, how, message):
    """Before: a raw RuntimeError ("... is encrypted, password required") or NotImplementedError ("That
    compression method is not supported") from the extraction, naming neither the archive nor what to do."""
    data = bytearray(raw_zip)
    for magic, flags_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = data.find(magic)
        while at >= 0:
            if how == "encrypted":
                data[at + flags_at] |= 0x1
            else:
                data[at + method_at] = 9
            at = data.find(magic, at + 4)
    archive = _write(tmp_path / "in" / "a.zip", bytes(data))
    with pytest.raises(DownloadError, match=message) as caught:
        extract_archives([archive], tmp_path / "out" / "raw")
    assert str(caught.value).startswith(f"{archive}: Python's zipfile cannot extract ")
    assert str(caught.value).endswith(
        "extract the archive with 7-Zip or unzip and point dataset.local.path at the extracted folder"
    )
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("parts", [["a.zip", "a.z01"], ["a.zip.001", "a.zip.002"]])
def test_the_parts_of_a_split_archive_are_named_so(tmp_path, raw_zip, parts):
    """Before: "corrupt or truncated archive (BadZipFile: Bad magic number ...)" or "no end-of-archive
    record: copy or download it again", which downloading again does not mend."""
    from temvirus.download import locate_local

    half = len(raw_zip) // 2
    for name, data in zip(parts, (raw_zip[:half], raw_zip[half:]) if parts[0].endswith("001") else (raw_zip, b"x")):
        _write(tmp_path / "in" / name, data)
    with pytest.raises(DownloadError, match="part of a split \\(multi-part\\) archive: join the parts first"):
        locate_local(tmp_path / "in" / parts[0])
    if parts[0].endswith("001"):  # a folder of numbered parts: found as parts
        with pytest.raises(DownloadError, match="parts of a split archive \\(join them first\\)"):
            locate_local(tmp_path / "in")


@pytest.mark.parametrize(
    "data, message", [(b"", "an empty file \\(0 bytes\\)"), (b"\x28\xb5\x2f\xfd\0\0", "a Zstandard-compressed")]
)
def test_an_empty_file_and_a_zstandard_archive_are_named_so(tmp_path, data, message):
    from temvirus.download import locate_local

    with pytest.raises(DownloadError, match=message):
        locate_local(_write(tmp_path / "a.tar.zst", data))


def test_two_subset_folders_of_one_name_outside_the_raw_layout_are_not_judged(tmp_path):
    """Before: ``old_project/Test`` beside ``old_project/test`` anywhere in the folder stopped the
    workflow with a traceback (a RawDataError escaped while the raw layout was searched for)."""
    raw = make_raw_tree(tmp_path / "data" / "context_virus_RAW")
    for name in ("Test", "test"):
        (tmp_path / "data" / "old_project" / name).mkdir(parents=True)
    assert find_raw_root(tmp_path / "data") == raw
    shutil.rmtree(raw)
    with pytest.raises(RawDataError, match="two folders for the test subset: Test/ and test/"):
        find_raw_root(tmp_path / "data")


def test_a_folder_in_another_unicode_form_than_its_archive_is_the_same_data(tmp_path):
    """Before: a folder copied from macOS (names in NFD) beside its zip (NFC) was refused, the same
    names listed as missing from the folder and as not in the archive."""
    import unicodedata

    from temvirus.download import locate_local

    tree = make_raw_tree(tmp_path / "made")
    image = next(tree.glob("train/Adenovirus/*.tif"))
    named = image.with_name("Probe_\u00e4_1.tif")
    image.rename(named)
    positions = next(tree.glob("train/Adenovirus/particle_positions/*"))
    positions.rename(positions.with_name("Probe_\u00e4_1_particlepositions.txt"))
    tags = next(tree.glob("train/Adenovirus/tags/*"))
    tags.rename(tags.with_name("Probe_\u00e4_1.tif_tags.csv"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.zip").write_bytes(zip_tree(tree))  # NFC names
    copy = tmp_path / "data" / "context_virus_RAW"
    shutil.copytree(tree, copy)
    for path in sorted(copy.rglob("*\u00e4*")):
        path.rename(path.with_name(unicodedata.normalize("NFD", path.name)))
    assert locate_local(tmp_path / "data") == (copy, [])


def test_a_relative_path_that_is_not_there_names_the_folder_it_is_taken_from(tmp_path, monkeypatch):
    from temvirus.download import locate_local

    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        DownloadError, match=f"no such file or folder \\(relative to the working directory {tmp_path}\\)"
    ):
        locate_local("data/raw.zip")


def test_a_download_that_is_no_whole_archive_is_removed_when_no_hash_vouched_for_it(file_server, tmp_path, raw_zip):
    """Before: kept as downloaded (the server's Content-Length matched the short body), and every rerun
    reused it ("already downloaded"), failing the same way."""
    file_server.files["/f/raw.zip"] = raw_zip[: len(raw_zip) - 1000]
    entry = {"name": "raw.zip", "url": file_server.url("/f/raw.zip"), "size": None, "sha256": None}
    settings = {"id": "x4dwwfwtw3", "version": 3, "api_url": "", "include": "*", "files": [entry]}
    root, record, downloads = tmp_path / "ds" / "raw", tmp_path / "ds" / "record.json", tmp_path / "ds" / "downloads"
    with pytest.raises(
        DownloadError, match="truncated or corrupt zip.*; it was removed, so the next run downloads it again"
    ):
        download_dataset(settings, root, record, downloads)
    assert not (downloads / "raw.zip").exists() and not root.exists()
    file_server.files["/f/raw.zip"] = raw_zip  # the server mended
    download_dataset(settings, root, record, downloads)
    assert len(read_dataset(root)[0]) == 4


def test_a_whole_download_whose_members_cannot_be_extracted_here_is_kept(file_server, tmp_path, raw_zip):
    """Only a damaged download is removed: one with encrypted members is whole (downloading it again
    would not help), so it stays, with the advice to extract it elsewhere."""
    data = bytearray(raw_zip)
    for magic, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(magic)
        while at >= 0:
            data[at + flags_at] |= 0x1
            at = data.find(magic, at + 4)
    file_server.files["/f/raw.zip"] = bytes(data)
    entry = {"name": "raw.zip", "url": file_server.url("/f/raw.zip"), "size": None, "sha256": None}
    settings = {"id": "x4dwwfwtw3", "version": 3, "api_url": "", "include": "*", "files": [entry]}
    downloads = tmp_path / "ds" / "downloads"
    with pytest.raises(DownloadError, match="encrypted: a password is needed") as caught:
        download_dataset(settings, tmp_path / "ds" / "raw", tmp_path / "ds" / "record.json", downloads)
    assert "removed" not in str(caught.value) and (downloads / "raw.zip").read_bytes() == bytes(data)


def test_a_folder_of_archives_beside_an_unclear_folder_falls_back_to_the_archives(tmp_path, raw_zip):
    from temvirus.download import locate_local

    archive = _write(tmp_path / "src" / "data.zip", raw_zip)
    for name in ("Test", "test"):
        (tmp_path / "src" / "other" / name).mkdir(parents=True)
    assert locate_local(tmp_path / "src") == (None, [archive])


def test_split_archive_parts_in_upper_case_are_named_so(tmp_path, raw_zip):
    from temvirus.download import locate_local

    _write(tmp_path / "in" / "DATA.ZIP", raw_zip)
    _write(tmp_path / "in" / "DATA.Z01", b"x")
    with pytest.raises(DownloadError, match="part of a split \\(multi-part\\) archive"):
        locate_local(tmp_path / "in" / "DATA.ZIP")
