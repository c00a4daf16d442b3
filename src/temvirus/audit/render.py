"""The audit report: Markdown, HTML (verdict coloured, dated) and JSON, and a one-line-per-check summary.

Part of :mod:`temvirus.audit`.
"""

from __future__ import annotations

import html
import json
import re

from temvirus.audit.lineage import AuditResult
from temvirus.io import write_json, write_text


def _cpus(cpus: list[dict]) -> str:
    """``model (capability[, pinned variables])`` of each CPU, or 'none recorded'."""
    words = []
    for cpu in cpus:
        pins = ", ".join(f"{k}={v}" for k, v in sorted(cpu.get("variables", {}).items()))
        words.append(f"{cpu.get('model')} ({cpu.get('capability')}{', ' + pins if pins else ''})")
    return "; ".join(words) or "none recorded"


def _blocks(result: AuditResult) -> list[tuple]:
    """The report as blocks (``h``, ``p``, ``table``), rendered to Markdown and HTML."""
    verdict = "PASSED" if result.passed else "FAILED"
    lin = result.lineage
    blocks = [
        ("h", 1, f"Audit of {result.results_dir}: {verdict}"),
        (
            "p",
            f"Audited {result.date}. {lin['jobs']} job records; audit took {result.seconds:.1f} s. Records digest (sha256 over every record file): `{lin['records_sha256']}`.",
        ),
        (
            "table",
            ["check", "status", "covered", "findings", "notes"],
            [
                [c.title, c.status, c.skipped or c.covered, str(len(c.findings)), str(len(c.notes))]
                for c in result.checks
            ],
        ),
        ("h", 2, "Findings"),
    ]
    findings = [[c.name, f["kind"], f["path"], f["detail"]] for c in result.checks for f in c.findings]
    blocks.append(("table", ["check", "kind", "file", "detail"], findings) if findings else ("p", "None."))
    notes = [[c.name, n["kind"], n["path"], n["detail"]] for c in result.checks for n in c.notes]
    if notes:
        blocks += [("h", 2, "Notes (not failures)"), ("table", ["check", "kind", "file", "detail"], notes)]
    blocks += [
        ("h", 2, "Who made these results"),
        ("table", ["rule", "jobs"], [[k, str(v)] for k, v in lin["rules"].items()]),
        (
            "table",
            ["git commit", "dirty", "code sha256", "files"],
            [
                [
                    str(c.get("git_commit")),
                    str(c.get("git_dirty")),
                    str(c.get("code_sha256")),
                    str(c.get("n_code_files")),
                ]
                for c in lin["code"]
                if c
            ],
        ),
        (
            "table",
            ["package", "versions"],
            [
                [k, ", ".join(sorted({str(p.get(k)) for p in lin["packages"] if p}))]
                for k in sorted({k for p in lin["packages"] if p for k in p})
            ],
        ),
        (
            "p",
            f"Python {', '.join(lin['python'])}; hosts {', '.join(lin['hosts'])}; "
            f"CPUs of the torch jobs {_cpus(lin['cpus'])}; "
            f"GPUs {json.dumps(lin['gpus']) if lin['gpus'] else 'none used'}; "
            f"jobs ran from {lin['first_start']} to {lin['last_end']}.",
        ),
        (
            "table",
            ["seed", "values"],
            [
                [k, ", ".join(sorted({str(s[k]) for s in lin["seeds"] if k in s}))]
                for k in sorted({k for s in lin["seeds"] for k in s})
            ],
        ),
    ]
    return blocks


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(result: AuditResult) -> str:
    out = []
    for block in _blocks(result):
        if block[0] == "h":
            out.append("#" * block[1] + " " + block[2])
        elif block[0] == "p":
            out.append(block[1])
        elif block[2]:
            out.append(
                "\n".join(
                    [
                        "| " + " | ".join(map(_md_cell, row)) + " |"
                        for row in [block[1], ["---"] * len(block[1]), *block[2]]
                    ]
                )
            )
    return "\n\n".join(out) + "\n"


def _html_text(text) -> str:
    """Escaped text with Markdown's `code` spans as <code> (the blocks are written for Markdown)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(text)))


def to_html(result: AuditResult) -> str:
    """The report as a self-contained HTML page, its verdict in a green (passed) or red (failed) bar."""
    colour = "#1b7a2f" if result.passed else "#b3261e"
    verdict = "PASSED" if result.passed else "FAILED"
    out = [f"<p class='verdict' style='background:{colour}'>Audit {verdict}, {html.escape(result.date)}</p>"]
    for block in _blocks(result):
        if block[0] == "h":
            out.append(f"<h{block[1]}>{_html_text(block[2])}</h{block[1]}>")
        elif block[0] == "p":
            out.append(f"<p>{_html_text(block[1])}</p>")
        elif block[2]:
            head = "".join(f"<th>{_html_text(c)}</th>" for c in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{_html_text(c)}</td>" for c in row) + "</tr>" for row in block[2])
            out.append(f"<table><tr>{head}</tr>{rows}</table>")
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:auto}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #999;padding:2px 6px;text-align:left;font-size:90%}"
        ".verdict{color:white;font-weight:bold;padding:6px 10px}"
    )
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Audit</title><style>{style}</style></head><body>{''.join(out)}</body></html>\n"


def write_report(result: AuditResult, report_md, report_html, report_json) -> None:
    write_text(report_md, to_markdown(result))
    write_text(report_html, to_html(result))
    write_json(report_json, result.to_json())


#: notes printed by :func:`summary` (all are in the report)
SUMMARY_NOTES = 5


def summary(result: AuditResult) -> str:
    """One line per check, then one per failing finding, then the first :data:`SUMMARY_NOTES` notes."""
    lines = [f"audit {'PASSED' if result.passed else 'FAILED'} in {result.seconds:.1f} s"]
    lines += [f"  {c.status:11s} {c.title}: {c.skipped or c.covered}" for c in result.checks]
    lines += [f"  FAIL {c.name}: {f['kind']}: {f['path']} {f['detail']}" for c in result.checks for f in c.findings]
    notes = [f"  note {c.name}: {n['kind']}: {n['path']} {n['detail']}" for c in result.checks for n in c.notes]
    lines += notes[:SUMMARY_NOTES]
    if len(notes) > SUMMARY_NOTES:
        lines.append(f"  ({len(notes) - SUMMARY_NOTES} more notes in the report)")
    return "\n".join(lines)
