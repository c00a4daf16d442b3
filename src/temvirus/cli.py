"""Command line: ``temvirus <command> ...``, the package's functions without Snakemake.

Each command is a ``(help, add_arguments, run)`` entry of :data:`COMMANDS`; a new command
adds one entry. ``run(args)`` returns the exit status; errors in the input data
(:class:`temvirus.raw.RawDataError`, missing or existing files, bad values) print one line
and exit with status 1. Ctrl-C (SIGINT) and SIGTERM (``kill``, a scheduler's stop) unwind the
command the same way: its temporaries are removed (:mod:`temvirus.io`), one line says which
signal stopped it, and the exit status is 128 + the signal's number (130, 143), as a shell
reports a process killed by it; from the moment the arguments are parsed, before the package's
imports. A reader of the summary that goes away (``temvirus read DIR | head -1``) ends the
command with status 141 (SIGPIPE's) and no message: the outputs were complete before it.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from pathlib import Path

from temvirus import __version__


def _csv_to_write(text: str) -> Path:
    """An argparse ``type=`` for a CSV table a command writes: what
    :func:`temvirus.io.check_file_destination` refuses (a name ending in ``/``, a folder, a
    device, a FIFO), and a name not ending in ``.csv`` (any case: a slip of the shell such as
    ``--truth raw/A.jpg`` would replace an image), is an argparse error naming the option, before
    the command runs."""
    from temvirus.io import check_file_destination

    try:
        check_file_destination(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if Path(text).suffix.lower() != ".csv":
        raise argparse.ArgumentTypeError(
            f"{text}: a CSV table is written here, replacing what is there: give a name ending in .csv"
        )
    return Path(text)


#: the most CPU threads an option takes (more fail as "cannot map shared object", blaming the image)
MAX_THREADS = 1024


def number_in_range(kind: type, low: float, high: float | None = None, *, above: bool = False):
    """An argparse ``type=``: a finite ``kind`` (int or float) from ``low`` (excluded if ``above``)
    to ``high`` (included; None: no bound). Anything else raises argparse.ArgumentTypeError
    saying the allowed range and the value given; argparse prefixes the option's name and exits
    with status 2 before the command runs."""
    what = "a whole number" if kind is int else "a number"
    if high is not None:
        bound = f"in {'(' if above else '['}{low}, {high}]"
    else:
        bound = f"above {low}" if above else f"at least {low}"

    def parse(text: str):
        # Python's int() and float() take '1_0' and other scripts' digits ('１'); the tags and
        # config readers do not, nor do people mean them
        plain = text.strip().isascii() and "_" not in text
        try:
            value = kind(text) if plain else None
        except (ValueError, OverflowError):
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"must be {what}, {bound}, got {text!r}")
        if not math.isfinite(value):  # nan, inf, 1e400
            raise argparse.ArgumentTypeError(f"must be a finite number, {bound}, got {text!r}")
        inside = (value > low if above else value >= low) and (high is None or value <= high)
        if not inside:
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def _synth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="raw-layout folder to create (must not exist or be empty)")
    p.add_argument("--truth", required=True, type=_csv_to_write, help="CSV of the planted overlapping images")
    p.add_argument(
        "--scale",
        type=number_in_range(float, 0, 1, above=True),
        default=0.03,
        help="fraction of Table 1's images per class, in (0, 1] (1 = Table 1)",
    )
    p.add_argument("--seed", type=number_in_range(int, 0), default=7, help="random seed, at least 0")
    p.add_argument(
        "--overlaps", type=number_in_range(int, 0), default=6, help="planted images re-imaging part of another image"
    )
    p.add_argument("--binning", type=int, default=1, choices=(1, 2), help="camera binning (2: quarter-size frames)")
    p.add_argument("--classes", nargs="+", metavar="CLASS", help="only these classes (default: all 22)")
    p.add_argument("--table1", type=Path, help="the paper's Table 1 (CSV; default: the package's copy)")


def _synth(args: argparse.Namespace) -> int:
    from temvirus.classes import paper_file
    from temvirus.synth import generate_dataset

    truth = generate_dataset(
        args.out,
        args.truth,
        table1=args.table1 or paper_file("table1_dataset.csv"),
        scale=args.scale,
        seed=args.seed,
        overlaps=args.overlaps,
        binning=args.binning,
        classes=args.classes,
    )
    print(f"{args.out}: generated; {len(truth)} planted overlaps in {args.truth}")
    return 0


def _read_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "root", type=Path, help="raw-layout folder ({train,validation,test}/{Class}/...), or a folder holding one"
    )
    p.add_argument("--images", type=_csv_to_write, help="write the image table (CSV) here")
    p.add_argument("--particles", type=_csv_to_write, help="write the particle table (CSV) here")
    p.set_defaults(usage_problem=_read_usage_problem)


def _read_usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``temvirus read``'s arguments that argparse cannot say (a usage error: exit 2)."""
    if (args.images is None) != (args.particles is None):
        return "give both --images and --particles, or neither"
    return None


def _read(args: argparse.Namespace) -> int:
    from temvirus.download import check_folder_against_archives, find_raw_root
    from temvirus.raw import read_dataset, subset_folders, subset_gaps, write_tables

    if args.root.is_dir() and not subset_folders(args.root):  # e.g. "TEM virus dataset/"
        tree, args.root = args.root, find_raw_root(args.root)
        check_folder_against_archives(args.root, tree)
        print(f"raw layout found in {args.root}")
    if args.images is None:
        images, _ = read_dataset(args.root)
    else:
        images, _ = write_tables(args.root, args.images, args.particles)
    summary = images.groupby(["class", "folder_subset"]).agg(
        images=("image_id", "size"), particles=("n_particles", "sum")
    )
    print(summary.unstack("folder_subset", fill_value=0).to_string())
    for gap in subset_gaps(images):
        print(f"warning: {args.root}: {gap}", file=sys.stderr)
    print(
        f"{args.root}: {len(images)} images, {int(images.n_particles.sum())} particles, {images['class'].nunique()} classes"
    )
    return 0


def _audit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results_dir", type=Path, help="the results folder to audit (with its provenance/ records)")
    p.add_argument(
        "--out",
        type=Path,
        help="write audit_report.md/.html and audit.json here, outside RESULTS_DIR (default: RESULTS_DIR-audit beside it)",
    )
    p.add_argument(
        "--near-bits",
        type=number_in_range(int, 0, 64),
        help="near-duplicate patches: at most this many of 64 perceptual-hash bits apart (default 4)",
    )
    p.add_argument(
        "--leak-ncc",
        type=number_in_range(float, 0, 1, above=True),
        help="a leak: max normalised cross-correlation at least this (default 0.85; docs/lineage.md)",
    )
    p.add_argument(
        "--accepted-leaks",
        type=Path,
        help="CSV of reviewed pairs that are not leaks (method, patch_id, train_patch_id, reason)",
    )
    p.add_argument(
        "--partial",
        action="store_true",
        help="a partial run's folder (the workflow's audit job did not run): do not require its targets",
    )


def _audit(args: argparse.Namespace) -> int:
    """Refuses, before writing anything, a folder without lineage records (not a results folder), and an
    ``--out`` inside the results folder or naming a file."""
    from temvirus.audit import command, default_out
    from temvirus.audit.lineage import Folder
    from temvirus.provenance import read_records

    Folder(args.results_dir)  # a folder: none, or a file, refused naming it
    out = (args.out or default_out(args.results_dir)).resolve()
    if out.is_relative_to(args.results_dir.resolve()):
        # before: written into the folder it audits (the default, results/audit/): the workflow then took the
        # files for its own audit job's, and its front page showed this audit's verdict, not the job's
        raise ValueError(
            f"{args.out or out}: --out inside the audited folder {args.results_dir}: the audit would change what it "
            "audits (results/audit/ is the workflow's own audit job's); give a folder outside it"
        )
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{args.out or out}: --out is a file, not a folder; nothing written")
    if not any(read_records(args.results_dir / "provenance")):  # a malformed record is a finding
        raise ValueError(
            f"{args.results_dir}: no lineage records in provenance/: not a results folder of this workflow; nothing written"
        )
    return command(args)


def _download_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--url", help="a file to fetch (resumable, retried, verified, written atomically)")
    what.add_argument(
        "--weights",
        metavar="ARCH",
        help="the ImageNet weights of a transfer model (torchvision's, or timm's for resnet50v2 and xception), e.g. densenet201",
    )
    p.add_argument(
        "--out",
        required=True,  # a str: the trailing '/' of a folder's name, which Path drops, reaches fetch
        help="with --url: the file to write (not a folder); with --weights: the weights folder",
    )
    p.add_argument("--sha256", type=_sha256, help="with --url: the expected sha256 (else the computed one is recorded)")
    p.add_argument("--base-url", help="with --weights: fetch from this server instead of torchvision's")


def _sha256(text: str) -> str:
    """--sha256: 64 hex digits, either case, refused before anything is fetched."""
    from temvirus.download import SHA256

    if not SHA256.fullmatch(text.lower()):
        raise argparse.ArgumentTypeError(f"must be 64 hex digits (a sha256), got {text!r}")
    return text


def _download(args: argparse.Namespace) -> int:
    if args.weights:
        from temvirus.weights import download_weights

        print(download_weights(args.weights, args.out, args.base_url))
    else:
        from temvirus.download import fetch

        record = fetch(args.url, args.out, sha256=args.sha256)
        print(f"{record['path']}: {record['size']} bytes, sha256 {record['sha256']}")
    return 0


def _analyse_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="micrographs (TIFF, PNG, JPEG...) of any size")
    p.add_argument(
        "--model", required=True, type=Path, help="a trained model: results/models/{model}/{init}/{method}/best.pt"
    )
    p.add_argument("--out", required=True, type=Path, help="folder to write (must not exist or be empty)")
    p.add_argument(
        "--pixel-size",
        type=number_in_range(float, 0, above=True),
        metavar="NM",
        help="pixel size (nm) of the images without a tags file (tags/{file}_tags.csv or {file}_tags.csv, {file} the "
        "image file name); without either, the image's own calibration (ImageJ, OME, FEI, TIFF or PNG resolution)",
    )
    p.add_argument(
        "--detector",
        type=Path,
        help="the micrograph detector calibrated for the model (default: "
        "results/micrographs/detector/{model}/{init}/{method}.json beside the model's results)",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--threads", type=number_in_range(int, 1, MAX_THREADS), default=2, help=f"CPU threads (torch), 1-{MAX_THREADS}"
    )


def _analyse(args: argparse.Namespace) -> int:
    """Checks every input before anything is written; the output folder appears only when complete."""
    from temvirus.micrographs import analyse_files

    metrics, summary = analyse_files(
        args.images, args.model, args.out, args.pixel_size, args.detector, args.device, args.threads
    )
    print(summary.to_string(index=False))
    print(f"{args.out}: {len(summary)} images analysed")
    return 0


#: command name -> (help, add_arguments, run)
COMMANDS = {
    "synth": ("generate the synthetic raw dataset", _synth_arguments, _synth),
    "read": ("read a raw-layout folder: print a summary, optionally write the tables", _read_arguments, _read),
    "download": ("fetch a file or a model's ImageNet weights, resumably and verified", _download_arguments, _download),
    "analyse": (
        "find, classify, count and measure the particles of whole micrographs with a trained model",
        _analyse_arguments,
        _analyse,
    ),
    "audit": (
        "check a results folder against its lineage records and its splits for leakage (exit 1 on any finding)",
        _audit_arguments,
        _audit,
    ),
}


class Stopped(KeyboardInterrupt):
    """Raised by the SIGTERM handler of :func:`main`, so that SIGTERM unwinds like Ctrl-C."""

    signum = signal.SIGTERM


def _stop(signum: int, _frame) -> None:
    raise Stopped


def _run(args: argparse.Namespace) -> int:
    """Run ``args.command``; an error in the input data prints one line naming it and gives 1."""
    from temvirus.download import DownloadError
    from temvirus.raw import RawDataError
    from temvirus.smk import configure_logging

    configure_logging(level=logging.DEBUG if args.verbose else logging.INFO)
    try:
        status = COMMANDS[args.command][2](args)
        sys.stdout.flush()  # a closed pipe shows here, not after main has returned
        return status
    except BrokenPipeError:
        raise
    except (RawDataError, DownloadError, OSError, ValueError) as exc:
        problem = os_error(exc) if isinstance(exc, OSError) and exc.filename is not None else exc
        print(f"temvirus {args.command}: error: {problem}", file=sys.stderr)
        return 1


def os_error(exc: OSError) -> str:
    """An operating-system error as ``PATH: what is wrong`` (Python's own words, ``[Errno 17] File exists:
    'x'``, name the error number first and the path last): a file where a folder is needed (an ``--out``
    that names a file, or a path through one) is said so."""
    import errno

    path = Path(os.fsdecode(exc.filename))
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        blocking = next((p for p in [path, *path.parents] if p.is_file()), None)
        if blocking is not None:
            return f"{blocking}: a file is there, where a folder is needed"
    other = f" (and {os.fsdecode(exc.filename2)})" if exc.filename2 is not None else ""
    return f"{path}{other}: {exc.strerror or exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="temvirus", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    parsers = {name: sub.add_parser(name, help=help_, description=help_) for name, (help_, _, _) in COMMANDS.items()}
    for name, (_, add_arguments, _) in COMMANDS.items():
        add_arguments(parsers[name])
    args = parser.parse_args(argv)
    problem = getattr(args, "usage_problem", lambda _: None)(args)
    if problem:
        parsers[args.command].error(problem)  # the usage and the problem; exit 2, as argparse's own
    previous = signal.signal(signal.SIGTERM, _stop)
    try:  # from before the package's imports: a Ctrl-C in their first second gives no traceback either
        return _run(args)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Stopped): the temporaries are gone by now
        stopped_by = signal.Signals(getattr(exc, "signum", signal.SIGINT))
        print(f"temvirus {args.command}: stopped by {stopped_by.name}", file=sys.stderr)
        return 128 + stopped_by
    except BrokenPipeError:
        # the reader of the summary went away (`temvirus read DIR | head -1`): the outputs were
        # complete before it was printed; the rest goes nowhere, and the status is a pipe
        # writer's killed by SIGPIPE, as a shell reports for `cat`, without a message
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
