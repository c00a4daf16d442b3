"""The one way a Snakemake script runs project code.

Every script in ``workflow/scripts/`` unpacks the ``snakemake`` object into the explicit
arguments of one plain function of this package (no package function takes the ``snakemake``
object) and hands that call to :func:`run_rule`::

    run_rule(snakemake, lambda smk: write_split(smk.input.kept, smk.output.split, smk.wildcards.method))

``run_rule`` sends logging and
warnings (one line each) to the rule's log file (and stderr), logs a failure with its traceback
once, and exits with a one-line error so that Snakemake marks the job failed and removes its
outputs. Once the function has
succeeded, ``run_rule`` writes the job's lineage record (:mod:`temvirus.provenance`): this is
the one place where records are made, so every rule that runs through it gets one.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import warnings
from collections.abc import Callable, Sequence

from temvirus import provenance

log = logging.getLogger("temvirus")


def applied_config_sources(configfiles: Sequence[str], given: Sequence[str], config_args: Sequence[str]) -> list[str]:
    """A run's config sources in the order Snakemake applies them, each over those before it.

    ``configfiles`` is Snakemake's ``workflow.configfiles``, which lists the ``--configfile``
    files (``given``) first and the Snakefile's ``configfile:`` after them, although the latter
    is applied first and the command line's over it; ``config_args`` are the ``--config
    KEY=VALUE`` items, applied last. Returns the Snakefile's files, then ``given`` as given,
    then ``"--config KEY=VALUE ..."`` when there are any.
    """
    sources = [f for f in configfiles if f not in given] + list(given)
    return sources + ([f"--config {' '.join(config_args)}"] if config_args else [])


def configure_logging(logfile: str | None = None, level: int = logging.INFO) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile:
        handlers.append(logging.FileHandler(logfile, mode="w", encoding="utf-8"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    # warnings to the log as one line, "Category: message" (logging.captureWarnings would add the
    # file, line and source of the call); the job's process ends with the job
    warnings.showwarning = _log_warning


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    logging.getLogger("py.warnings").warning("%s: %s", category.__name__, message)


def run_rule(smk, main: Callable[[object], None]) -> None:
    """Run ``main(smk)`` for a Snakemake job with logging to ``smk.log[0]``, then record it.

    The lineage record (``results/provenance/{rule}/...json``) is written only after ``main``
    succeeded; a failure to write it fails the job too, so no output goes unrecorded.
    """
    configure_logging(smk.log[0] if len(smk.log) else None)
    provenance.reset()
    started = dt.datetime.now(dt.UTC)
    log.info("rule %s wildcards=%s", smk.rule, dict(smk.wildcards.items()))
    try:
        main(smk)
        ended = dt.datetime.now(dt.UTC)
        record = provenance.write_record(smk, started, ended)
    except Exception as exc:
        log.exception("rule %s failed", smk.rule)  # the traceback: to the log file and stderr, once
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # a short message on one line; a long one (the audit's findings) one finding per line, readable
        message = " / ".join(lines) if len(lines) <= 3 else "\n  ".join(lines)
        raise SystemExit(f"rule {smk.rule} failed: {type(exc).__name__}: {message}") from None
    log.info("rule %s done in %.1f s; lineage record %s", smk.rule, (ended - started).total_seconds(), record)
