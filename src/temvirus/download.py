"""Fetching files over HTTP(S), safe archive extraction, and the published dataset.

:func:`fetch` downloads one URL into a file: it keeps a ``{dest}.part`` file between attempts
and resumes it with ``Range: bytes=N-`` (a server that answers ``200`` instead of ``206``
makes it start over) only for the URL and the version (``ETag``, else ``Last-Modified``, sent
as ``If-Range`` and compared with a ``206``'s) that began it, recorded in ``{dest}.part.json``,
so that two files are never spliced (a file served with neither starts over); it retries
network failures and 5xx answers with urllib3's ``Retry`` (exponential backoff, ``Retry-After``
honoured), logs its progress, verifies the size and the sha256 (or a sha256 prefix), and only
then renames the ``.part`` file to ``dest``.

:func:`extract_archives` unpacks zip or tar archives after checking every member (no absolute
paths, no ``..``, no links, nothing resolving outside the target) into a temporary folder,
which is renamed into place only once the raw layout inside it has been found (by content,
:func:`find_raw_root`; archives inside the archive are extracted once when it has none) and
read by :func:`temvirus.raw.read_dataset`. The published archive is ``TEM virus dataset.zip``,
holding ``TEM virus dataset/context_virus_RAW/`` (the raw layout) beside
``context_virus_1nm_256x256/`` (the published patches, no tags): the first is found, the
second is not mistaken for it. :func:`locate_local` resolves ``dataset.local.path``.

Mendeley Data public API (no authentication), as used by datahugger
(github.com/J535D165/datahugger, ``datahugger/services.py``, class ``MendeleyDataset``)::

    GET https://data.mendeley.com/public-api/datasets/{id}/files?folder_id=root&version={v}

returns a JSON list of the files in the dataset's root folder, each with ``filename``,
``size`` and ``content_details`` holding ``download_url`` and ``sha256_hash``. The file names
of doi:10.17632/x4dwwfwtw3.3 could not be confirmed offline: files are selected from the
listing by globs tried in order (``dataset.mendeley.include``, default matching ``TEM virus
dataset.zip``, then ``*RAW*``), or pinned in ``dataset.mendeley.files``, which bypasses the
listing.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import lzma
import os
import posixpath
import re
import shutil
import stat
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urlencode, urljoin, urlsplit

import urllib3
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError
from urllib3.util import Retry

from temvirus.io import check_file_destination, sha256_file, shell_path, temporary_dir, write_json, write_target
from temvirus.raw import (
    COMPANION_FOLDERS,
    SUBSETS,
    RawDataError,
    changed_since_manifest,
    companion_folder,
    ignored,
    is_archive,
    read_dataset,
    subset_folders,
    tree_files,
    update_manifest,
)

log = logging.getLogger(__name__)

USER_AGENT = "temvirus-workflow (+https://doi.org/10.17632/x4dwwfwtw3.3)"
RETRIES = 5  # tries per file (a try follows its redirects)
MAX_REDIRECTS = 10  # per try
BACKOFF_S = 2.0  # urllib3's backoff factor: no wait before the 2nd request, then 2x, 4x, 8x... this
MAX_BACKOFF_S = 60.0  # longest wait between two requests, a server's Retry-After included
TIMEOUT_S = 60.0  # per socket operation
_CHUNK = 1 << 20
_PROGRESS_EVERY = 64 << 20  # bytes between progress lines
#: response headers that identify the version of what was served
VERSION_HEADERS = ("ETag", "Last-Modified", "Content-Length", "Content-Type")
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
#: a sha256 (lower case), and a prefix of one as in torchvision's weights file names
SHA256, SHA256_PREFIX = re.compile(r"[0-9a-f]{64}"), re.compile(r"[0-9a-f]{6,64}")
#: content codings and the file-name endings of a file that is stored so (``x.tar.gz`` served with
#: ``Content-Encoding: gzip`` by a server that labels its .gz files so): its encoded bytes are the file
ENCODED_SUFFIXES = {
    "gzip": (".gz", ".tgz"),
    "x-gzip": (".gz", ".tgz"),
    "bzip2": (".bz2", ".tbz2"),
    "xz": (".xz", ".txz"),
    "zstd": (".zst",),
    "br": (".br",),
}
#: the media types of an HTML page: a login or error page served with 200 where a data file is expected
HTML_TYPES = ("text/html", "application/xhtml+xml")
#: folders below a searched tree looked into for a raw layout or an archive
MAX_DEPTH = 4
OFFLINE_HINT = (
    "; without internet, copy the published archive to this machine and set dataset.source: local "
    "with dataset.local.path pointing at it"
)


class DownloadError(RuntimeError):
    """A download or an archive that cannot be used; the message starts with the URL or file."""


class _Resume(Exception):
    """The body of an attempt did not complete or continue the partial file: another attempt
    resumes it (or starts it over)."""


class _LoggedRetry(Retry):
    """urllib3's ``Retry`` that logs each retry of ``url`` with its cause and wait (urllib3
    logs a retried status at DEBUG only, and names the path alone)."""

    def __init__(self, *args, url: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.url = url

    def new(self, **kwargs) -> _LoggedRetry:
        return super().new(url=self.url, **kwargs)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        # a redirect is bounded by ``redirect`` alone (the rest of one try): ``total`` counts failed tries
        redirect = error is None and response is not None and bool(response.get_redirect_location())
        state = self
        if redirect and isinstance(response.retries, Retry) and len(response.retries.history) > len(self.history):
            # PoolManager follows a redirect from the state it had before the hop, dropping the failures
            # that the connection pool retried at this hop (urllib3 2.x): they count
            state = response.retries
        counted = state.new(total=state.total + 1) if redirect else state
        retry = super(_LoggedRetry, counted).increment(method, url, response, error, _pool, _stacktrace)
        if redirect:  # (MaxRetryError above once spent)
            return retry
        retry = retry.new(redirect=MAX_REDIRECTS)  # the next try may follow as many
        wait = (response is not None and retry.get_retry_after(response)) or retry.get_backoff_time()
        reason = error or f"HTTP {response.status} {response.reason}"
        done = sum(not entry.redirect_location for entry in retry.history)
        log.warning(
            "%s: attempt %d/%d failed (%s); retrying in %.1f s", self.url, done, done + retry.total + 1, reason, wait
        )
        return retry


def _given_up(exc: MaxRetryError, retries: int) -> str:
    """Why :func:`_retry`'s tries ran out, for a message: the redirects of one try, or ``retries`` tries."""
    if "too many redirects" in str(exc.reason):
        return f"failed: more than {MAX_REDIRECTS} redirects in one try (a redirect loop?), the last from {exc.url}"
    return f"failed after {retries} attempts ({exc.reason})"


def _retry(url: str, retries: int, backoff_s: float) -> Retry:
    """At most ``retries`` tries of ``url``, each following at most :data:`MAX_REDIRECTS` redirects (not
    counted as tries: a host that redirects each request to storage would otherwise spend the budget);
    connection and read errors and :data:`_RETRY_STATUS` answers are retried after the server's
    ``Retry-After`` or an exponential backoff (``backoff_s`` is its factor), each wait at most
    :data:`MAX_BACKOFF_S`."""
    return _LoggedRetry(
        total=retries - 1,
        redirect=MAX_REDIRECTS,
        status_forcelist=_RETRY_STATUS,
        backoff_factor=backoff_s,
        backoff_max=MAX_BACKOFF_S,
        retry_after_max=MAX_BACKOFF_S,
        url=url,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".record.json")


def _origin_path(part: Path) -> Path:
    """``{dest}.part.json``: the URL and version headers of the response that began ``part``."""
    return part.with_name(part.name + ".json")


def _drop_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    _origin_path(part).unlink(missing_ok=True)


def _part_origin(url: str, part: Path) -> dict | None:
    """The origin record of a partial download that may be resumed for ``url``; else ``None``,
    the partial file removed: one begun from another URL, or without a record (its source is
    unknown), would be completed with another file's bytes."""
    if not part.exists():
        return None
    try:
        origin = json.loads(_origin_path(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        origin = {}
    if origin.get("url") == url:
        return origin
    log.info("%s: %s was begun from %s; starting over", url, part, origin.get("url") or "an unknown source")
    _drop_part(part)
    return None


def _validator(headers: dict) -> tuple[str, str] | None:
    """The header that tells a version of the file from another: ``ETag``, else
    ``Last-Modified`` (the one If-Range may carry then, RFC 9110 section 13.1.5), else None."""
    name = next((name for name in ("ETag", "Last-Modified") if headers.get(name)), None)
    return (name, headers[name]) if name else None


def _total_from_content_range(value: str | None, start: int, length: str | None) -> int | None:
    """Total size from ``Content-Range: bytes start-end/total``; raises _Resume if start differs, or
    if the body's ``Content-Length`` (``length``) is not the range's span (a range sent encoded: its
    bytes are no part of the file)."""
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", (value or "").strip())
    if not match or int(match.group(1)) != start:
        raise _Resume(f"206 with Content-Range {value!r} does not continue at byte {start}")
    span = int(match.group(2)) - start + 1
    if length is not None and length.strip() != str(span):
        raise _Resume(f"206 of {length} bytes for the {span} bytes of its Content-Range {value!r}")
    return None if match.group(3) == "*" else int(match.group(3))


def _final_url(url: str, history) -> str:
    """``url`` after the redirects among urllib3's retry ``history`` of one request."""
    for step in history:
        if step.redirect_location:
            url = urljoin(url, step.redirect_location)
    return url


def _attempt(
    pool: urllib3.PoolManager, url: str, part: Path, retry: Retry, vouched: bool = False
) -> tuple[dict | None, Retry | None]:
    """One GET of ``url`` appended to (206) or replacing (200) ``part``: ``(response info, None)``;
    ``vouched``: a hash will check the file (:func:`_receive`).

    urllib3 retries (by ``retry``) what fails before the body, and raises MaxRetryError once
    ``retry`` is spent. It does not retry a body that fails after the headers (a connection
    dropped mid-body): that gives ``(None, retry for the next attempt)``, which resumes from
    the bytes written, so the bound of ``retry`` covers these attempts too.
    """
    origin = _part_origin(url, part) or {}
    have = part.stat().st_size if part.exists() else 0
    validator = _validator(origin)
    if have and validator is None:
        log.info("%s: %s was served without ETag or Last-Modified, so it cannot be resumed; starting over", url, part)
        _drop_part(part)
        have = 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}  # the file's bytes, as Range counts them
    if have:
        headers["Range"] = f"bytes={have}-"
        if not validator[1].startswith("W/"):  # a changed file is then sent whole (200)
            headers["If-Range"] = validator[1]
    earlier = len(retry.history)
    response = pool.request("GET", url, headers=headers, retries=retry, preload_content=False)
    final_url = _final_url(url, response.retries.history[earlier:])
    with response:
        try:
            info = _receive(url, part, response, origin, have, final_url, vouched)
        except (_Resume, ProtocolError, ReadTimeoutError) as exc:
            return None, response.retries.increment("GET", url, error=exc)
    return {**info, "final_url": final_url}, None


def _coding(header: str | None) -> str:
    """A ``Content-Encoding`` header's coding, lower case; ``identity`` where none was given."""
    return (header or "identity").strip().lower()


def _check_content_encoding(url: str, coding: str | None) -> None:
    """Refuse a body sent with a ``Content-Encoding`` (``coding``) although ``identity`` was asked:
    its bytes would be saved encoded (they are saved as served, for Range to resume them), not the
    file, unnoticed without a sha256 to check. A file stored so (``x.tar.gz`` sent with ``gzip``,
    :data:`ENCODED_SUFFIXES`; the name of ``url``, the URL that served it after redirects) is its
    encoded bytes and is kept. Raises :class:`DownloadError` naming the URL and the coding."""
    coding = _coding(coding)
    name = urlsplit(url).path.lower()
    if coding != "identity" and not name.endswith(ENCODED_SUFFIXES.get(coding, ())):
        raise DownloadError(
            f"{url}: the server sent the file with Content-Encoding {coding!r} although 'identity' was asked: "
            "its encoded bytes are not the file; fetch it from another server, or decode it yourself and put "
            "the file where it is expected"
        )


def _receive(
    url: str,
    part: Path,
    response: urllib3.BaseHTTPResponse,
    origin: dict,
    have: int,
    final_url: str,
    vouched: bool = False,
) -> dict:
    """The body of ``response`` (from ``final_url``, after redirects) appended to (206) or replacing
    (200) ``part``; returns the response's status, version headers and ``Content-Encoding``. A body
    content-encoded is refused (:func:`_check_content_encoding`) unless ``vouched`` (a sha256 or a
    prefix of one will check the bytes as served: the file stored so is kept, any other refused)."""
    if response.status == 416 and have:  # nothing left after `have` bytes: complete or too long
        total = (response.headers.get("Content-Range") or "").rpartition("/")[2]
        if total == str(have):
            return {"status": 416, "headers": {}, "coding": None}
        _drop_part(part)
        raise _Resume(f"HTTP 416 for a {have}-byte partial file; starting over")
    if response.status in (200, 206):
        if not vouched:
            _check_content_encoding(final_url, response.headers.get("Content-Encoding"))
        codings = [c.strip().lower() for c in (response.headers.get("Transfer-Encoding") or "").split(",")]
        if set(codings) - {"", "chunked", "identity"}:  # urllib3 undoes chunked alone
            raise DownloadError(
                f"{final_url}: the server sent the file with Transfer-Encoding "
                f"{response.headers.get('Transfer-Encoding')!r}: its bytes as received are not the file"
            )
    if response.status == 206:
        try:
            total = _total_from_content_range(
                response.headers.get("Content-Range"), have, response.headers.get("Content-Length")
            )
        except _Resume:  # no part of the file to append: the next attempt fetches it whole
            _drop_part(part)
            raise
        name, began = _validator(origin) or (None, None)  # None: a 206 from byte 0, nothing to continue
        if name and response.headers.get(name) != began:  # a server that ignores If-Range
            _drop_part(part)
            raise _Resume(
                f"changed on the server ({name} {began} -> {response.headers.get(name)}) since {part} was begun"
            )
        mode = "ab"
        log.info("%s: resuming at byte %d", url, have)
    elif response.status == 200:
        if have:
            log.info("%s: the whole file was sent (Range ignored, or the file changed); starting over", url)
        have, mode = 0, "wb"
        version = {name: response.headers[name] for name in VERSION_HEADERS if response.headers.get(name)}
        write_json(_origin_path(part), {"url": url, **version})
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
    else:
        raise DownloadError(f"{url}: HTTP {response.status} {response.reason}")
    done, next_report = have, have + _PROGRESS_EVERY
    with open(part, mode) as fh:
        for block in response.stream(_CHUNK, decode_content=False):  # the bytes as served, as Range counts them
            fh.write(block)
            done += len(block)
            if done >= next_report:
                share = f" ({100 * done / total:.0f}%)" if total else ""
                log.info("%s: %.1f MiB%s", url, done / 2**20, share)
                next_report = done + _PROGRESS_EVERY
    if total is not None and done < total:
        raise _Resume(f"connection closed after {done} of {total} bytes")
    headers = {name: response.headers[name] for name in VERSION_HEADERS if response.headers.get(name) is not None}
    if response.status == 206:  # its Content-Length is the rest's: give the whole file's, if known
        headers.pop("Content-Length", None)
        headers.update({"Content-Length": str(total)} if total is not None else {})
    return {"status": response.status, "headers": headers, "coding": response.headers.get("Content-Encoding")}


def _verify(
    url: str,
    path: Path,
    size: int | None,
    sha256: str | None,
    sha256_prefix: str | None,
    content_type: str | None = None,
    content_encoding: str | None = None,
) -> str:
    """Check size and hash of ``path``; returns its sha256 or raises DownloadError naming ``url``.

    With no hash or prefix to check, what cannot be a data file is refused: an empty file (unless
    ``size`` is 0) and an HTML page (``content_type``, the response's Content-Type, one of
    :data:`HTML_TYPES`, or :func:`_is_html`); a size or hash that differs says so too where the body is
    such a page, or one sent with a ``content_encoding`` (its encoded bytes are not the file).
    """
    got = path.stat().st_size
    media = (content_type or "").partition(";")[0].strip().lower()
    html = (
        f"the server sent an HTML page ({got} bytes, Content-Type {content_type or 'not given'}) where a data file "
        "is expected: a login or error page? Check the URL"
        if media in HTML_TYPES or _is_html(path)
        else None
    )
    coding = _coding(content_encoding)
    why = f": {html}" if html else ""
    if coding != "identity":
        why += f" (sent with Content-Encoding {coding!r} although 'identity' was asked: its encoded bytes are not the file)"
    if size is not None and got != size:
        raise DownloadError(f"{url}: expected {size} bytes, got {got}{why}")
    if sha256 is None and sha256_prefix is None:
        if got == 0 and size is None:
            raise DownloadError(f"{url}: the server sent an empty body (0 bytes) where a data file is expected")
        if html:
            raise DownloadError(f"{url}: {html}")
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256.lower():
        raise DownloadError(f"{url}: sha256 mismatch: expected {sha256}, got {digest}{why}")
    if sha256_prefix is not None and not digest.startswith(sha256_prefix.lower()):
        raise DownloadError(f"{url}: sha256 {digest} does not start with {sha256_prefix!r} (from its file name){why}")
    return digest


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    retries: int = RETRIES,
    backoff_s: float = BACKOFF_S,
    timeout_s: float = TIMEOUT_S,
    hint: str = "",
) -> dict:
    """Download ``url`` to ``dest`` (resumable, retried, verified, atomic); returns its record.

    An existing ``dest`` that passes the checks is kept (its earlier record is reused); without
    a hash or prefix to check it against, only when its record names this URL and its sha256 (a
    file of another URL, or of unknown origin, is downloaded again). An existing ``dest`` and
    its record are replaced only by a completed, verified download: a failed one leaves them as
    they were. A download that fails a check is deleted (its ``.part``) and
    :class:`DownloadError` is raised: the size, the hash or prefix, or, with neither hash nor
    prefix, an empty body or an HTML page (a login or error page served with 200; see
    :func:`_verify`); a body shorter than its Content-Length is resumed, never saved as it is; a
    network failure that outlasts ``retries`` tries (:func:`_retry`: resumes included, redirects
    not, ``backoff_s`` the backoff factor, ``timeout_s`` per socket operation) keeps the
    ``.part`` file for next time.
    The record holds ``url``, ``final_url`` (after redirects), ``size``, ``sha256``,
    ``sha256_verified`` (False when no hash or prefix was known: the hash was computed, not
    checked), ``headers`` (:data:`VERSION_HEADERS` of the last response) and ``downloaded_at``.
    ``hint`` is appended to the message of a network failure (what to do offline). A URL
    that is not http(s), or names no host, a ``sha256`` that is not 64 hex digits or a
    ``sha256_prefix`` that is not 6 to 64, a ``dest`` that
    :func:`temvirus.io.check_file_destination` refuses (a folder's name, a folder, a device, a
    FIFO) is a DownloadError before anything is read or written.
    """
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise DownloadError(
            f"{url}: not an http or https URL (a file already on this machine is not fetched: the dataset is "
            "used with dataset.source: local, weights files are placed in weights.dir)"
        )
    checks = (("sha256", sha256, SHA256, "64"), ("sha256_prefix", sha256_prefix, SHA256_PREFIX, "6 to 64"))
    for option, value, rule, digits in checks:
        if value is not None and not rule.fullmatch(value.lower()):
            raise DownloadError(f"{url}: {option} {value!r} is not {digits} hex digits")
    try:  # a folder, a device or a FIFO: refused, never read or replaced by a file
        check_file_destination(dest)
    except ValueError as exc:
        raise DownloadError(str(exc)) from None
    dest, expected = write_target(dest), sha256 or sha256_prefix  # a link: its target, the link kept
    part = _part_path(dest)
    if dest.exists():
        try:
            digest = _verify(f"{dest} (from {url})", dest, size, sha256, sha256_prefix)
        except DownloadError as exc:
            log.warning("%s; downloading it again", exc)
        else:
            previous = _record_path(dest)
            record = json.loads(previous.read_text(encoding="utf-8")) if previous.exists() else {}
            ours = record.get("sha256") == digest and record.get("url") == url
            if expected or ours:
                if not ours:
                    record = {"url": url, "final_url": None, "headers": {}, "downloaded_at": None}
                log.info("%s: already downloaded to %s (sha256 %s)", url, dest, digest)
                size_now = dest.stat().st_size
                return {
                    **record,
                    "size": size_now,
                    "sha256": digest,
                    "sha256_verified": bool(expected),
                    "path": str(dest),
                }
            log.warning(
                "%s: %s was not recorded as downloaded from this URL (%s) and no hash can tell; downloading it again",
                url,
                dest,
                f"recorded from {record['url']}" if record.get("url") else "no record of its origin",
            )
    dest.parent.mkdir(parents=True, exist_ok=True)
    info, retry = None, _retry(url, retries, backoff_s)
    with urllib3.PoolManager(timeout=timeout_s) as pool:
        while info is None:
            if size is not None and part.exists() and part.stat().st_size > size:
                _drop_part(part)
            try:
                info, retry = _attempt(pool, url, part, retry, vouched=bool(expected))
            except MaxRetryError as exc:
                kept = (
                    f"{part.stat().st_size} bytes kept in {part} for a resume" if part.exists() else "nothing received"
                )
                raise DownloadError(f"{url}: download {_given_up(exc, retries)}; {kept}{hint}") from None
            if info is None:
                retry.sleep()
    try:
        digest = _verify(url, part, size, sha256, sha256_prefix, info["headers"].get("Content-Type"), info["coding"])
    except DownloadError:
        _drop_part(part)
        raise
    _record_path(dest).unlink(missing_ok=True)  # the earlier file's: never beside the new one
    os.replace(part, dest)
    _origin_path(part).unlink(missing_ok=True)
    record = {
        "url": url,
        **info,
        "size": dest.stat().st_size,
        "sha256": digest,
        "sha256_verified": bool(expected),
        "downloaded_at": _now(),
        "path": str(dest),
    }
    del record["status"], record["coding"]
    write_json(_record_path(dest), record)
    log.info(
        "%s: %d bytes saved to %s (sha256 %s%s)",
        url,
        record["size"],
        dest,
        digest,
        "" if expected else ", computed: nothing published to check it against",
    )
    return record


def _get_json(
    url: str, retries: int = RETRIES, backoff_s: float = BACKOFF_S, timeout_s: float = TIMEOUT_S, hint: str = ""
):
    """GET a JSON document, retried like :func:`fetch` (urllib3 reads the whole body before
    returning, so a body cut short is retried too)."""
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    try:
        response = urllib3.request(
            "GET", url, headers=headers, retries=_retry(url, retries, backoff_s), timeout=timeout_s
        )
    except MaxRetryError as exc:
        raise DownloadError(f"{url}: request {_given_up(exc, retries)}{hint}") from None
    if response.status != 200:
        raise DownloadError(f"{url}: HTTP {response.status} {response.reason}")
    try:
        return json.loads(response.data)
    except ValueError as exc:
        raise DownloadError(f"{url}: response is not JSON ({exc})") from None


def mendeley_listing_url(api_url: str, dataset_id: str, version: int) -> str:
    """URL of the root-folder file listing of a published Mendeley Data dataset version."""
    query = urlencode({"folder_id": "root", "version": version})
    return f"{api_url.rstrip('/')}/datasets/{dataset_id}/files?{query}"


def mendeley_files(settings: dict) -> tuple[list[dict], str]:
    """The files to fetch as ``{name, url, size, sha256}`` and where that list came from.

    ``settings`` is ``config["dataset"]["mendeley"]``: pinned ``files`` win (source
    ``"config"``); otherwise the listing is queried and filtered by ``include``, a glob or a
    list of globs matched case-insensitively and tried in order: the files matching the first
    glob that matches any are fetched (source: the listing URL). When none matches, the error
    lists every file name the listing gave.
    """
    if settings.get("files"):
        return [dict(entry) for entry in settings["files"]], "config"
    url = mendeley_listing_url(settings["api_url"], settings["id"], settings["version"])
    listing = _get_json(url, hint=OFFLINE_HINT)
    if not isinstance(listing, list):
        raise DownloadError(f"{url}: expected a JSON list of files, got {type(listing).__name__}")
    files, names = [], []
    for entry in listing:
        try:
            name, details = entry["filename"], entry["content_details"]
            size, digest = entry.get("size", details.get("size")), details.get("sha256_hash") or None
            size = None if size in (None, "") else int(size)  # a JSON string "123" is 123 bytes, not a mismatch
            files.append({"name": name, "url": details["download_url"], "size": size, "sha256": digest})
        except (KeyError, TypeError, ValueError):
            raise DownloadError(
                f"{url}: file entry lacks filename/content_details.download_url or has a size that is not a "
                f"number: {entry!r}"
            ) from None
        names.append(name)
    patterns = [settings["include"]] if isinstance(settings["include"], str) else list(settings["include"])
    for pattern in patterns:  # the first pattern that matches anything selects the files
        chosen = [f for f in files if fnmatch.fnmatchcase(f["name"].lower(), pattern.lower())]
        if chosen:
            log.info(
                "%s: %s selected by dataset.mendeley.include pattern %r", url, [f["name"] for f in chosen], pattern
            )
            return chosen, url
    raise DownloadError(
        f"{url}: no listed file matches dataset.mendeley.include={patterns!r}; listed: {names}; "
        "adjust the patterns or pin the files in dataset.mendeley.files"
    )


def _check_file_entry(entry: dict) -> None:
    name = entry.get("name") or ""
    if PurePosixPath(name).name != name or name in ("", ".", ".."):
        raise DownloadError(f"{entry.get('url')}: unsafe file name {name!r}")
    if entry.get("sha256") is not None and not SHA256.fullmatch(str(entry["sha256"]).lower()):
        raise DownloadError(f"{entry.get('url')}: sha256 {entry['sha256']!r} is not 64 hex digits")


# -- archives ---------------------------------------------------------------------------


def _unsafe_reason(name: str, target: Path) -> str | None:
    """Why an archive member name may not be extracted under ``target`` (None when it may)."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "'..' in path"
    if not (target / name).resolve().is_relative_to(target.resolve()):
        return "resolves outside the target"
    return None


def _member_name(name: str) -> str:
    """An archive member's path with ``/`` separators: zips made on Windows may use backslashes."""
    return name.replace("\\", "/")


#: the flag of a zip member whose name is UTF-8 (APPNOTE 4.4.4, bit 11); without it zipfile reads cp437
_ZIP_UTF8_FLAG = 0x800


def _zip_name(info: zipfile.ZipInfo) -> str:
    """A zip member's path (:func:`_member_name`), its name bytes read as UTF-8 where they are UTF-8 but the
    member lacks the UTF-8 flag (macOS' Archive Utility and Windows' built-in zipper write them so; zipfile
    reads them as cp437, ``Probe_ä_1`` as ``Probe_├ñ_1``, as Info-ZIP and 7-Zip do not); else as zipfile
    reads them (cp437, the format's own, for ASCII names; others are refused: :func:`_legacy_name`)."""
    name = info.filename
    if not info.flag_bits & _ZIP_UTF8_FLAG and not name.isascii():
        try:
            name = _unicode_path(info) or name.encode("cp437").decode("utf-8")
        except UnicodeError:
            pass
    return _member_name(name)


#: the Info-ZIP Unicode Path extra field of a zip member (APPNOTE 4.6.9): its name in UTF-8
_ZIP_UNICODE_PATH = 0x7075


def _unicode_path(info: zipfile.ZipInfo) -> str | None:
    """The UTF-8 name that a zip member's Unicode Path extra field records (Info-ZIP's zip and 7-Zip write it
    beside a name in a legacy code page), where the field's CRC-32 is that of the name as stored (else it is
    stale: the name was changed since); else None. zipfile does not read the field."""
    extra, at = info.extra, 0
    while at + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, at)
        body = extra[at + 4 : at + 4 + size]
        if tag == _ZIP_UNICODE_PATH and len(body) > 5 and body[0] == 1:
            if struct.unpack_from("<I", body, 1)[0] == zlib.crc32(info.filename.encode("cp437")):
                try:
                    return body[5:].decode("utf-8")
                except UnicodeError:
                    return None
        at += 4 + size
    return None


def _legacy_name(info: zipfile.ZipInfo | tarfile.TarInfo) -> str | None:
    """How two code pages read an archive member's name where it is in a legacy code page, else None.

    A zip member's name that is neither marked UTF-8 (APPNOTE 4.4.4, bit 11) nor UTF-8, and not ASCII, is
    in the code page of the machine that made the archive, which a zip does not record: zipfile reads it
    as cp437 (the format's own), but a zip made on a Western-European Windows holds cp1252 or cp850, and
    ``Probe_é_1`` (cp1252) would become ``Probe_Θ_1``, another image id, unseen; unless a Unicode Path
    extra field records it in UTF-8 (:func:`_unicode_path`). A tar member's name that is not UTF-8
    (tarfile keeps such bytes as surrogates) is the same."""
    if isinstance(info, tarfile.TarInfo):
        raw = info.name.encode("utf-8", "surrogateescape")
    elif info.flag_bits & _ZIP_UTF8_FLAG or info.filename.isascii() or _unicode_path(info) is not None:
        return None
    else:
        raw = info.filename.encode("cp437")
    try:
        raw.decode("utf-8")
        return None
    except UnicodeError:
        return f"{raw.decode('cp437')!r} as cp437, {raw.decode('cp1252', 'replace')!r} as cp1252"


#: suffixes of archive formats that cannot be extracted here (named when no raw layout is found)
UNSUPPORTED_ARCHIVES = (".7z", ".rar", ".zst", ".tzst")
#: leading bytes of archive formats that cannot be extracted here, for a clear message
_OTHER_ARCHIVES = {
    b"7z\xbc\xaf\x27\x1c": "7-Zip",
    b"Rar!": "RAR",
    b"\x28\xb5\x2f\xfd": "Zstandard-compressed (a .tar.zst?)",
}
#: names of the parts of a split archive: Info-ZIP's ``zip -s`` (``.z01``...) and 7-Zip's or ``split``'s
#: (``.zip.001``..., ``.tar.gz.001``...)
_PART = re.compile(r"\.(z\d{2,}|(zip|tar(\.\w+)?|tgz|7z)\.\d{3,})$", re.IGNORECASE)
#: zip compression methods that Python's zipfile reads (stored, deflate, bzip2, LZMA)
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_ZIP_METHOD_NAMES = {9: "Deflate64 (Windows Explorer's for large archives)", 93: "Zstandard", 95: "xz", 98: "PPMd"}


def multipart(path: Path) -> str | None:
    """What to do when ``path`` is part of a split archive (a ``.z01``/``.001`` part, or a ``.zip`` with
    ``.z01`` beside it: ``zip -s``), else None: such parts are read only joined."""
    first_part = f"{path.stem}.z01".lower()
    if _PART.search(path.name) or (
        path.suffix.lower() == ".zip" and any(p.name.lower() == first_part for p in path.parent.iterdir())
    ):
        return (
            "part of a split (multi-part) archive: join the parts first (zip -s 0 NAME.zip --out whole.zip for "
            ".z01 parts; cat NAME.001 NAME.002 ... > NAME for numbered ones) and give the whole archive"
        )
    return None


def _is_html(path: Path) -> bool:
    """Whether the first 512 bytes of ``path`` hold an HTML page's tag (any case)."""
    with open(path, "rb") as fh:
        head = fh.read(512).lower()
    return b"<html" in head or b"<!doctype html" in head


class DamagedArchiveError(DownloadError):
    """An archive file cut short or corrupt (or no archive at all): a download that shows this is no
    good copy; one whose members merely cannot be extracted here is."""


def _not_an_archive(archive: Path) -> DownloadError:
    """The error for a file that zipfile and tarfile refuse, saying what it looks like."""
    with open(archive, "rb") as fh:
        head = fh.read(512)
    if multipart(archive):
        why = multipart(archive)
    elif not head:
        why = "an empty file (0 bytes): copy or download it again"
    elif _is_html(archive):
        why = "an HTML page (a login, error or redirect page?), not an archive"
    elif head.startswith(b"PK"):
        why = "a truncated or corrupt zip (no end-of-archive record): copy or download it again"
    elif head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ")):
        why = "a compressed file that is not a readable tar archive (truncated or corrupt?)"
    else:
        kind = next((kind for magic, kind in _OTHER_ARCHIVES.items() if head.startswith(magic)), None)
        why = f"a {kind} archive: not supported, extract it yourself" if kind else "not a zip or tar archive"
    return DamagedArchiveError(f"{archive}: {why}")


def _looked_at(name: str) -> bool:
    """Whether the reader looks at an archive member (``/``-separated path): not under ``__MACOSX`` or a hidden
    folder, and not a hidden or system file (:func:`temvirus.raw.ignored`), whose names may be in any code page."""
    return not any(ignored(part) for part in posixpath.normpath(name).split("/"))


def _check_members(archive: Path, target: Path) -> tuple[str, dict[str, int]]:
    """Check every member of ``archive`` before anything is extracted; returns 'zip' or 'tar' and
    the paths of its file members (``/``-separated) with their sizes in bytes."""
    problems, files, names, unreadable = [], [], [], []  # names: of every member, folders too
    legacy = []  # per member: how two code pages read its name where it is in one (_legacy_name)
    try:
        if multipart(archive):
            raise DownloadError(f"{archive}: {multipart(archive)}")
        if zipfile.is_zipfile(archive):
            kind = "zip"
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    name = _zip_name(info)
                    names.append(name)
                    legacy.append(_legacy_name(info) if _looked_at(name) else None)
                    reason = _unsafe_reason(name, target)
                    if reason is None and stat.S_ISLNK(info.external_attr >> 16):
                        reason = "symbolic link"
                    if reason:
                        problems.append(f"{info.filename!r} ({reason})")
                    elif not name.endswith("/"):
                        files.append((posixpath.normpath(name), info.file_size))
                        if info.flag_bits & 0x1:  # APPNOTE 4.4.4 bit 0
                            unreadable.append(f"{name!r} (encrypted: a password is needed)")
                        elif info.compress_type not in _ZIP_METHODS:
                            method = _ZIP_METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
                            unreadable.append(f"{name!r} (compressed with {method})")
        elif tarfile.is_tarfile(archive):
            kind = "tar"
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                # tarfile stops silently where the data end at a member's header (a copy cut there): a whole
                # archive ends in a zero block, read just before it stopped
                if tf.fileobj.tell() - tf.offset != tarfile.BLOCKSIZE:
                    raise DamagedArchiveError(
                        f"{archive}: truncated tar archive (no end-of-archive block after its {len(members)} "
                        f"members, at byte {tf.offset} of the tar data): copy or download it again"
                    )
                for member in members:
                    names.append(_member_name(member.name) + ("/" if member.isdir() else ""))
                    legacy.append(_legacy_name(member) if _looked_at(names[-1]) else None)
                    reason = _unsafe_reason(member.name, target)
                    if reason is None and (member.issym() or member.islnk()):
                        reason = f"link to {member.linkname!r}"
                    elif reason is None and not (member.isfile() or member.isdir()):
                        reason = "special file"
                    if reason:
                        problems.append(f"{member.name!r} ({reason})")
                    elif member.isfile():  # './a//b' is 'a/b'
                        files.append((posixpath.normpath(_member_name(member.name)), member.size))
        else:
            raise _not_an_archive(archive)
        twice = sorted(name for name, count in Counter(name for name, _ in files).items() if count > 1)
        if twice:  # extracted in turn, the last copy would win unseen
            problems += [f"{name!r} (given twice: which copy is meant?)" for name in twice]
        # 'a/notes' and 'a/notes/' (or 'a/notes/b'): one would fail to extract, mid-way
        paths = [(posixpath.normpath(name).split("/"), name.endswith("/")) for name in names]
        folders = {"/".join(parts[:i]) for parts, folder in paths for i in range(1, len(parts) + folder)}
        problems += [f"{name!r} (both a file and a folder)" for name in sorted({n for n, _ in files} & folders)]
    except UnicodeDecodeError as exc:  # zipfile, at a name flagged UTF-8 that is not
        raise DownloadError(
            f"{archive}: a member name is marked UTF-8 (the zip's UTF-8 flag) but is not UTF-8 "
            f"({exc.object[max(0, exc.start - 30) : exc.end + 10]!r}): the zip was made wrongly; extract it with "
            "7-Zip or unzip and point dataset.local.path at the extracted folder"
        ) from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        raise DamagedArchiveError(f"{archive}: corrupt or truncated archive ({type(exc).__name__}: {exc})") from None
    if problems:
        raise DownloadError(f"{archive}: refusing to extract unsafe members: {', '.join(problems[:10])}")
    legacy = [readings for readings in legacy if readings]
    if legacy:
        raise DownloadError(
            f"{archive}: {len(legacy)} member name(s) in a code page that the archive does not record (not "
            f"UTF-8), so their letters, and the image ids made of them, would be a guess: {legacy[0]}; "
            + (
                "extract it with the code page it was made in (unzip -O cp1252, or 7-Zip)"
                if kind == "zip"
                else "extract it (tar -xf) and convert the names to UTF-8 (convmv -f cp1252 -t utf-8 -r --notest "
                "FOLDER)"
            )
            + " and point dataset.local.path at the extracted folder"
        )
    if unreadable:
        listed = ", ".join(unreadable[:3]) + (f" ... ({len(unreadable)} in all)" if len(unreadable) > 3 else "")
        raise DownloadError(
            f"{archive}: Python's zipfile cannot extract {listed}; extract the archive with 7-Zip or unzip and "
            "point dataset.local.path at the extracted folder"
        )
    return kind, dict(files)


def is_raw_root(folder: Path) -> bool:
    """Whether ``folder`` holds the raw layout, by content: a subset folder with a class folder
    holding ``tags/`` and ``particle_positions/`` (the published patches have neither)."""
    for subset_dir in subset_folders(folder).values():
        for cls in subset_dir.iterdir():
            if not ignored(cls.name) and all(companion_folder(cls, f).is_dir() for f in COMPANION_FOLDERS):
                return True
    return False


def _walk(tree: Path):
    """Folders under ``tree`` (itself first), breadth first, to :data:`MAX_DEPTH`; hidden and
    ``__MACOSX`` folders skipped; a linked folder is followed, each real folder visited once."""
    level, seen = [tree], set()
    for _ in range(MAX_DEPTH + 1):
        level = [f for f in level if f.resolve() not in seen]
        seen.update(f.resolve() for f in level)
        yield from level
        level = sorted(
            child for folder in level for child in folder.iterdir() if child.is_dir() and not ignored(child.name)
        )


def find_archives(tree: str | os.PathLike) -> list[Path]:
    """Archive files (:data:`temvirus.raw.ARCHIVE_SUFFIXES`) under ``tree``, to :data:`MAX_DEPTH`."""
    return [
        f
        for folder in _walk(Path(tree))
        for f in sorted(folder.iterdir())
        if f.is_file() and not ignored(f.name) and is_archive(f)
    ]


def find_raw_root(tree: str | os.PathLike) -> Path:
    """The one raw-layout folder under ``tree`` (itself included), recognised by :func:`is_raw_root`.

    Raises :class:`DownloadError` when there are several, or none (naming the folders with
    subset folders but no tags/positions, and the archives found, if any).
    """
    tree = Path(tree)
    hits, lookalikes, unclear = [], [], []
    for folder in _walk(tree):
        if any(folder.is_relative_to(hit) for hit in hits):
            continue
        try:
            if is_raw_root(folder):
                hits.append(folder)
            elif subset_folders(folder):
                lookalikes.append(folder)
        except RawDataError as exc:  # Test/ beside test/: judged only if no raw layout is found elsewhere
            unclear.append(exc)
    if len(hits) > 1:
        raise DownloadError(
            f"{tree}: several raw-layout folders found: {[str(h) for h in hits]}; point dataset.local.path at "
            "one of them (in an archive: extract it first), or keep only one there"
        )
    if hits:
        return hits[0]
    if unclear:
        raise unclear[0]
    detail = (
        f"; folders with {'/'.join(SUBSETS)} but no tags/ and particle_positions/ (not the raw layout): {[str(f) for f in lookalikes]}"
        if lookalikes
        else ""
    )
    archives = find_archives(tree)
    detail += f"; archives inside, not looked into: {[str(a) for a in archives]}" if archives else ""
    others = [
        str(f) for folder in _walk(tree) for f in sorted(folder.iterdir()) if f.suffix.lower() in UNSUPPORTED_ARCHIVES
    ]
    detail += f"; archives of a format not supported (extract them yourself): {others}" if others else ""
    parts = [str(f) for folder in _walk(tree) for f in sorted(folder.iterdir()) if f.is_file() and multipart(f)]
    detail += f"; parts of a split archive (join them first): {parts[:5]}" if parts else ""
    raise DownloadError(
        f"{tree}: no raw-layout folder ({'/'.join(SUBSETS)} with class folders holding tags/ and "
        f"particle_positions/) found, searching {MAX_DEPTH} folder levels down{detail}"
    )


def check_folder_against_archives(root: Path, tree: Path) -> None:
    """Refuse a raw-layout folder that differs from an archive beside it holding the same layout.

    ``root`` (found in ``tree`` by :func:`find_raw_root`) is compared with the archives of
    ``tree`` outside ``root`` (:func:`find_archives`) that hold any of its files, together (a
    dataset split over several archives, as :func:`extract_archives` takes it): each archive's raw root is the member
    prefix under which most of the folder's paths lie; an archive holding none of them (the
    published patches, another dataset) is passed over, as are archives nested in it. A file of
    that prefix missing from the folder (an extraction interrupted or a file deleted), a file
    of another size, or a file of the folder that the archive lacks means the two are not
    the same data, and the folder would be read without a word about the archive.

    Raises :class:`DownloadError` naming the folder, the archives, the number of each kind of
    difference and the first few paths; or naming an archive that cannot be read (corrupt,
    truncated, unsafe members), which leaves the two uncompared. Listing a compressed tar reads
    it whole, at every start of the workflow (the published archive is a zip: its listing is read
    from its end).
    """
    # names compared in one Unicode form: a folder copied from macOS (NFD) beside its zip (NFC) is the same data
    folder = {
        unicodedata.normalize("NFC", path.relative_to(root).as_posix()): path.stat().st_size
        for path in tree_files(root)
        if path.is_file()
    }
    pooled, sources = {}, []  # a dataset split over several archives is compared as one
    for archive in (a for a in find_archives(tree) if not a.is_relative_to(root)):
        try:
            _, members = _check_members(archive, archive.parent)
        except DownloadError as exc:
            raise DownloadError(
                f"{root}: cannot be compared with {archive} beside it ({exc}); repair or remove the archive, "
                "or point dataset.local.path at the folder itself"
            ) from None
        members = {
            unicodedata.normalize("NFC", name): size
            for name, size in members.items()
            if not any(ignored(part) for part in name.split("/"))
        }
        prefixes = Counter(
            "/".join(parts[:i])
            for parts in (name.split("/") for name in members)
            for i in range(len(parts))
            if "/".join(parts[i:]) in folder
        )
        if not prefixes:
            continue
        prefix = prefixes.most_common(1)[0][0]
        pooled.update(
            (name[len(prefix) + 1 :] if prefix else name, size)
            for name, size in members.items()
            if not prefix or name.startswith(prefix + "/")
        )
        sources.append(f"{archive} beside it ({prefix or '.'} there)")
    missing = sorted(set(pooled) - set(folder))
    extra = sorted(set(folder) - set(pooled)) if sources else []
    resized = sorted(name for name in set(pooled) & set(folder) if pooled[name] != folder[name])
    differences = [
        f"{len(paths)} {what}, e.g. {paths[:3]}"
        for paths, what in (
            (missing, "missing from the folder (an extraction interrupted?)"),
            (resized, "of another size"),
            (extra, "not in the archive"),
        )
        if paths
    ]
    if differences:
        raise DownloadError(
            f"{root}: differs from {', '.join(sources)}: {'; '.join(differences)}; "
            "extract the archive again, or point dataset.local.path at the archive or at the folder alone"
        )


def locate_local(path: str | os.PathLike) -> tuple[Path | None, list[Path]]:
    """``dataset.local.path`` resolved: ``(raw root used in place, [])`` or ``(None, archives)``.

    A file is an archive to extract (a zip or tar file by content, else refused); a folder holding
    the raw layout (by content, at any depth up to :data:`MAX_DEPTH`) is used in place; otherwise
    the archives the folder holds are extracted together. ``~`` and ``$VARIABLES`` in ``path`` are expanded. Raises
    :class:`DownloadError` when there is neither, or when the folder differs from an archive
    of the same layout beside it (:func:`check_folder_against_archives`).
    """
    path = shell_path(path)
    if path.is_file():
        return None, [_archive_file(path)]
    if not path.is_dir():
        where = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        raise DownloadError(
            f"{path}: no such file or folder{where}; give a raw-layout folder, an archive, or a folder holding them"
        )
    try:
        root = find_raw_root(path)
    except (DownloadError, RawDataError):  # no raw layout, or an unclear one: the archives, if any
        archives = find_archives(path)
        if not archives:
            raise
        return None, [_archive_file(archive) for archive in archives]
    check_folder_against_archives(root, path)
    return root, []


def _archive_file(path: Path) -> Path:
    """``path`` if zipfile or tarfile can open it (read from its header or end record, not
    extracted), else :class:`DownloadError` saying what it looks like (:func:`_not_an_archive`): found
    when the workflow starts, not as a traceback of its extraction job."""
    try:
        if not multipart(path) and (zipfile.is_zipfile(path) or tarfile.is_tarfile(path)):
            return path
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError):
        pass
    raise _not_an_archive(path)


def _extract(archive: Path, kind: str, target: Path) -> None:
    """Extract a checked archive (:func:`_check_members`); a member that cannot be read (CRC
    error, truncated data) raises :class:`DownloadError` naming the archive."""
    log.info("extracting %s", archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    name = _zip_name(info)
                    dest = target / name
                    try:
                        if name.endswith("/"):
                            dest.mkdir(parents=True, exist_ok=True)
                            continue
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(info) as source, open(dest, "wb") as out:
                            shutil.copyfileobj(source, out)
                    except OSError as exc:  # named by the member: the staging folder means nothing to the user
                        raise DownloadError(f"{archive}: cannot extract {name!r} ({exc.strerror or exc})") from None
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(target, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise DownloadError(f"{archive}: corrupt or truncated archive ({type(exc).__name__}: {exc})") from None


def _extracted_root(staging: Path) -> Path:
    """The raw root in an extracted tree; archives inside it are extracted (one level deep) when
    the tree has none."""
    try:
        return find_raw_root(staging)
    except DownloadError:
        nested = find_archives(staging)
        if not nested:
            raise
    # the archives of one folder together, as dataset.local.path's folder of archives is (a zip per subset)
    for folder in dict.fromkeys(archive.parent for archive in nested):
        together = [archive for archive in nested if archive.parent == folder]
        inner = folder / (together[0].name + ".extracted" if len(together) == 1 else "archives.extracted")
        _extract_together(together, inner)
        for archive in together:
            archive.unlink()
    return find_raw_root(staging)


def _extract_together(archives: list[Path], target: Path) -> None:
    """Extract ``archives`` into ``target`` once all their members are checked (:func:`_check_members`);
    a path held by two of them is refused (two copies of the dataset, the last one would win unseen)."""
    checked = [_check_members(archive, target) for archive in archives]
    owner: dict[str, Path] = {}
    for archive, (_, files) in zip(archives, checked):
        for name in files:
            if owner.setdefault(name, archive) != archive:
                raise DownloadError(
                    f"{archive}: holds {name!r} like {owner[name]}: two copies of the dataset? keep only one archive there"
                )
    for archive, (kind, _) in zip(archives, checked):
        _extract(archive, kind, target)


def extract_archives(archives: list[Path], target: str | os.PathLike) -> dict:
    """Extract ``archives`` together, locate the raw layout in them and move it to ``target``.

    All members of all archives are checked before anything is written; the extraction goes
    to a temporary folder beside ``target`` that is removed on any failure, so ``target``
    exists only once its tree has been read by :func:`temvirus.raw.read_dataset`. Returns
    the raw root's path inside the archives and the image/particle/class counts.
    """
    target = Path(target)
    if target.exists():
        raise DownloadError(f"{target}: already exists; remove it to extract again")
    # named like temvirus.io's temporaries: the workflow's start removes a killed job's leftover
    staging = temporary_dir(target)
    try:
        _extract_together(archives, staging)
        try:
            root = _extracted_root(staging)
            images, particles = read_dataset(root, hash_files=False)
        except (DownloadError, RawDataError) as exc:  # name the members, not the temporary folder
            names = ", ".join(str(a) for a in archives)
            message = str(exc).replace(f"{staging}: ", "").replace(f"{staging}{os.sep}", "").replace(str(staging), ".")
            raise DownloadError(f"{names}: inside the archive: {message}") from None
        os.replace(root, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    update_manifest(target, extraction_manifest(target))
    summary = {
        "raw_root_in_archive": root.relative_to(staging).as_posix(),
        "images": len(images),
        "particles": int(images.n_particles.sum()),
        "classes": int(images["class"].nunique()),
    }
    log.info(
        "%s: raw layout with %d images, %d particles, %d classes",
        target,
        summary["images"],
        summary["particles"],
        summary["classes"],
    )
    return summary


# -- the two dataset sources that need a rule -----------------------------------------------


def download_dataset(
    settings: dict, root: str | os.PathLike, record: str | os.PathLike, downloads: str | os.PathLike
) -> None:
    """Fetch the published dataset (``config["dataset"]["mendeley"]``) and extract its raw layout.

    Archives are kept (with their ``.part`` files while incomplete) in ``downloads``, so an
    interrupted or repeated run resumes or reuses them; the raw layout goes to ``root`` and the
    download record to ``record``.
    """
    files, listed_by = mendeley_files(settings)
    entries, archives = [], []
    for entry in files:
        _check_file_entry(entry)
        dest = Path(downloads) / entry["name"]
        got = fetch(entry["url"], dest, size=entry.get("size"), sha256=entry.get("sha256"), hint=OFFLINE_HINT)
        got["name"] = entry["name"]
        if entry.get("sha256"):
            got["hash_source"] = "config" if listed_by == "config" else "listing"
        else:
            got["hash_source"] = "computed on download: no published sha256 to verify against"
            _drop_if_unreadable(dest)
        entries.append(got)
        archives.append(Path(got["path"]))
    summary = extract_archives(archives, root)
    doi = f"10.17632/{settings['id']}.{settings['version']}"
    write_json(
        record,
        {
            "source": "mendeley",
            "doi": doi,
            "dataset_id": settings["id"],
            "version": settings["version"],
            "files_from": listed_by,
            "files": entries,
            "extracted_to": str(root),
            **summary,
            "recorded_at": _now(),
        },
    )


def _drop_if_unreadable(dest: Path) -> None:
    """Remove a download that no published sha256 vouched for when it is no whole archive (a server that
    sent a short Content-Length, a body cut short by a proxy): kept, every rerun would take it for done
    and fail the same way. Raises :class:`DownloadError` saying so."""
    try:
        _check_members(_archive_file(dest), dest.parent)
    except DamagedArchiveError as exc:  # not members that cannot be extracted here: the file is whole
        dest.unlink(missing_ok=True)
        _record_path(dest).unlink(missing_ok=True)
        raise DownloadError(f"{exc}; it was removed, so the next run downloads it again") from None


def extraction_manifest(root: str | os.PathLike) -> Path:
    """``{root}/.extracted.json``: the content manifest (every file's size and sha256,
    :func:`temvirus.raw.update_manifest`) of the tree :func:`extract_archives` wrote to ``root``, in
    it as a hidden file (every reader skips those, :func:`temvirus.raw.ignored`), gone with it."""
    return Path(root) / ".extracted.json"


def check_extracted(root: str | os.PathLike) -> None:
    """Refuse an extracted copy of the archive(s) (``root``, of :func:`extract_archives`) whose files
    were edited, added or removed since: the jobs that read it would not run again (a folder's
    time does not change with a file's inside it), and its results would stand for the archive's
    content. Raises :class:`DownloadError` naming the files and what to do. A ``root`` not there
    (to be extracted), or extracted before its manifest was written, passes."""
    manifest = extraction_manifest(root)
    if not (Path(root).is_dir() and manifest.is_file()):
        return
    try:
        changed = changed_since_manifest(root, manifest)
    except OSError as exc:  # a file there that cannot be read (its permissions changed, a link to a device)
        raise DownloadError(
            f"{root}: the copy extracted from the archive cannot be checked: {exc.filename}: {exc.strerror}; "
            f"remove {root} to extract it again"
        ) from None
    if changed:
        listed = ", ".join(changed[:5]) + (f" ... ({len(changed)} in all)" if len(changed) > 5 else "")
        raise DownloadError(
            f"{root}: the copy extracted from the archive was changed since (edited, added or removed: {listed}); "
            f"remove {root} to extract it again, or, to use the changed files, point dataset.local.path at a "
            "copy of the folder (used in place, tracked by content)"
        )


def extract_local_dataset(
    archives: str | os.PathLike | list, root: str | os.PathLike, record: str | os.PathLike
) -> None:
    """Extract the published archive(s) found on disk (``dataset.local.path``, see
    :func:`locate_local`) together to ``root``; the record lists each archive's size and sha256."""
    archives = [Path(a) for a in ([archives] if isinstance(archives, (str, os.PathLike)) else archives)]
    for archive in archives:
        if not archive.is_file():
            raise DownloadError(f"{archive}: archive not found")
    summary = extract_archives(archives, root)
    files = [
        {
            "path": str(a.resolve()),
            "size": a.stat().st_size,
            "sha256": sha256_file(a),
            "hash_source": "computed from the local file",
        }
        for a in archives
    ]
    write_json(record, {"source": "local", "files": files, "extracted_to": str(root), **summary, "recorded_at": _now()})
