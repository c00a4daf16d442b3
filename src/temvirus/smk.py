"""The one way a Snakemake script runs project code.

Every script in ``workflow/scripts/`` is three lines: import a function of this package and
hand it to :func:`run_rule` with the ``snakemake`` object. ``run_rule`` sends logging and
warnings to the rule's log file (and stderr), logs a failure with its traceback, and re-raises
it so that Snakemake marks the job failed and removes its outputs.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

log = logging.getLogger("temvirus")


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
    logging.captureWarnings(True)


def run_rule(smk, main: Callable[[object], None]) -> None:
    """Run ``main(smk)`` for a Snakemake job with logging to ``smk.log[0]``."""
    configure_logging(smk.log[0] if len(smk.log) else None)
    started = time.time()
    log.info("rule %s wildcards=%s", smk.rule, dict(smk.wildcards.items()))
    try:
        main(smk)
    except Exception:
        log.exception("rule %s failed", smk.rule)
        raise
    log.info("rule %s done in %.1f s", smk.rule, time.time() - started)
