"""Reports of a conformance run: terminal matrix, JSON, JUnit XML, HTML, baseline check.

The JSON report is the source of truth (``SCHEMA`` names its version); JUnit
XML (one ``testsuite`` per device, one ``testcase`` per case) is what CI
systems display; the HTML page is the cases x devices matrix with every
reason one hover away.  ``new_failures(report, baseline)`` lists the
(case, device) pairs failing now that did not fail in an earlier JSON report.
"""

from __future__ import annotations

import html
import json
import math
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from .runner import FAILING, STATUSES, Report, Result

SCHEMA = "nnport.conformance/1"

SYMBOLS = {
    "pass": "pass",
    "fail": "FAIL",
    "xfail": "xfail",
    "xpass": "XPASS",
    "skip": "skip",
    "crash": "CRASH",
    "timeout": "TIMEOUT",
    "lost": "LOST",
}
COLORS = {
    "pass": "32",
    "fail": "31;1",
    "xfail": "33",
    "xpass": "35;1",
    "skip": "2",
    "crash": "31;1",
    "timeout": "31;1",
    "lost": "31;1",
}
HTML_COLORS = {
    "pass": "#c8f0c8",
    "fail": "#f4a6a6",
    "xfail": "#f5e2a8",
    "xpass": "#e0b8f0",
    "skip": "#e8e8e8",
    "crash": "#e06666",
    "timeout": "#f08c5a",
    "lost": "#c9a0dc",
}


# -- JSON ----------------------------------------------------------------------------------


def to_json(report: Report) -> dict[str, Any]:
    """The JSON document (``SCHEMA``): summary per device, then every result."""
    return {
        "schema": SCHEMA,
        "started": report.started,
        "wall_s": round(report.wall_s, 3),
        "jobs": report.jobs,
        "precision": report.precision,
        "ok": report.ok,
        "nothing_ran": report.nothing_ran,
        "untested": report.untested(),
        "tolerances": report.tolerances,
        "environment": report.environment,
        "devices": report.devices,
        "cases": report.cases,
        "summary": report.counts(),
        "results": [r.to_dict() for r in report.results],
    }


def write_json(report: Report, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_json(report), indent=1, default=str) + "\n")


def validate_json(doc: Mapping[str, Any]) -> list[str]:
    """Problems with a report document (empty when it matches ``SCHEMA``)."""
    problems = []
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    for key, kind in (
        ("devices", list),
        ("cases", list),
        ("results", list),
        ("summary", dict),
        ("wall_s", (int, float)),
        ("ok", bool),
    ):
        if not isinstance(doc.get(key), kind):
            problems.append(f"{key!r} missing or not a {kind}")
    for i, r in enumerate(doc.get("results") or []):
        for key in ("case", "device", "backend", "status", "reason", "duration_s", "outputs"):
            if key not in r:
                problems.append(f"results[{i}] lacks {key!r}")
        if r.get("status") not in STATUSES:
            problems.append(f"results[{i}] has unknown status {r.get('status')!r}")
    return problems


def load_json(path: str | Path) -> dict[str, Any]:
    from nnport.errors import InputError

    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read conformance report {str(path)!r}: {exc}") from exc
    problems = validate_json(doc)
    if problems:
        raise InputError(f"{str(path)!r} is not a conformance report: {'; '.join(problems[:5])}")
    return doc


def new_failures(report: Report, baseline: Mapping[str, Any]) -> list[Result]:
    """Results failing now whose (case, device) did not fail in ``baseline`` (absent counts as not failing)."""
    before = {(r["case"], r["device"]): r["status"] for r in baseline.get("results", [])}
    return [r for r in report.results if r.failing and before.get((r.case, r.device)) not in FAILING]


# -- tolerances ---------------------------------------------------------------------------------


def tolerance_policy(report: Report) -> str:
    """One line: which tolerances the run judged with (each output's own is in its result)."""
    given = ", ".join(
        f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in sorted(report.tolerances.items())
    )
    if given:
        return f"tolerances: {given} given for every case (others: {report.precision} defaults where a case sets none)"
    return f"tolerances: each case's own, else the {report.precision} defaults (per output, below each result)"


def output_tolerances(result: Result) -> list[str]:
    """``name: effective tolerance`` per output of ``result`` (empty when it compared nothing)."""
    return [f"{o.get('name')}: {o['tolerance']}" for o in result.outputs if o.get("tolerance")]


# -- JUnit -----------------------------------------------------------------------------------


def to_junit(report: Report) -> ET.Element:
    suites = ET.Element(
        "testsuites", name="nnport conformance", tests=str(len(report.results)), time=f"{report.wall_s:.3f}"
    )
    for device in report.devices:
        rows = [r for r in report.results if r.device == device]
        counts = {s: sum(1 for r in rows if r.status == s) for s in STATUSES}
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=device,
            tests=str(len(rows)),
            failures=str(counts["fail"]),
            errors=str(counts["crash"] + counts["timeout"] + counts["lost"]),
            skipped=str(counts["skip"] + counts["xfail"]),
            time=f"{sum(r.duration_s for r in rows):.3f}",
            timestamp=report.started,
        )
        for r in rows:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"{device}.{r.case.rsplit('/', 1)[0].replace('/', '.')}",
                name=r.case,
                time=f"{r.duration_s:.3f}",
            )
            if r.status == "fail":
                ET.SubElement(case, "failure", message=r.reason[:500], type="mismatch").text = r.reason
            elif r.status in ("crash", "timeout", "lost"):
                ET.SubElement(case, "error", message=r.reason[:500], type=r.status).text = r.reason
            elif r.status in ("skip", "xfail"):
                ET.SubElement(case, "skipped", message=f"{r.status}: {r.reason}"[:500])
            elif r.status == "xpass":
                ET.SubElement(case, "system-out").text = f"XPASS: {r.reason}"
    return suites


def write_junit(report: Report, path: str | Path) -> None:
    tree = ET.ElementTree(to_junit(report))
    ET.indent(tree)
    tree.write(str(path), encoding="utf-8", xml_declaration=True)


# -- HTML --------------------------------------------------------------------------------------


HEAT = ((0.0, "#9fdf9f", "exact"), (1e-6, "#c8f0c8", "<= 1e-6"), (1e-4, "#e2f4bc", "<= 1e-4"),
        (1e-2, "#f6eeaa", "<= 1e-2"), (math.inf, "#f6d29c", "> 1e-2"))  # fmt: skip
"""Background of a passing cell by its worst error relative to the reference's range (``worst_error``)."""


def worst_error(result: Result) -> tuple[float, float, str] | None:
    """(max |error|, that relative to the output's max |reference|, output name) of the worst output, or None."""
    worst: tuple[float, float, str] | None = None
    for o in result.outputs:
        err = o.get("max_abs_error")
        if not isinstance(err, (int, float)) or not math.isfinite(err):
            continue
        scale = o.get("ref_scale")
        rel = err / scale if isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0 else err
        if worst is None or rel > worst[1]:
            worst = (float(err), float(rel), str(o.get("name", "")))
    return worst


def _heat(rel: float) -> str:
    return next(color for limit, color, _ in HEAT if rel <= limit)


def _figures(result: Result) -> list[str]:
    """One hover line per output: its errors and cosine beside the tolerance it was judged with."""
    lines = []
    for o in result.outputs:
        figures = ", ".join(
            f"{label} {o[key]:.3g}"
            for key, label in (("max_abs_error", "max|err|"), ("max_rel_error", "max rel"), ("cosine", "cosine"))
            if isinstance(o.get(key), (int, float)) and math.isfinite(o[key])
        )
        lines.append(f"{o.get('name')}: {figures or 'no figures'}; {o.get('tolerance', '')}".rstrip("; "))
    return lines


def to_html(report: Report, baseline: Mapping[str, Any] | None = None) -> str:
    """The page: summary, the cases x devices matrix, what does not pass, the environment.

    Each matrix cell is coloured by its status; a passing cell by its worst error relative to
    the reference's range (``HEAT``), every output's figures on hover.  With ``baseline`` (an
    earlier JSON report) the failures new since it are marked and listed first.
    """
    counts = report.counts()
    head = "".join(f"<th>{html.escape(d)}</th>" for d in report.devices)
    summary_rows = "".join(
        f"<tr><th>{s}</th>" + "".join(f"<td>{counts[d][s]}</td>" for d in report.devices) + "</tr>" for s in STATUSES
    )
    new = {(r.case, r.device) for r in new_failures(report, baseline)} if baseline is not None else set()
    before = {(r["case"], r["device"]): r["status"] for r in (baseline or {}).get("results", [])}
    by_key = {(r.case, r.device): r for r in report.results}
    rows = []
    for case in report.cases:
        cells = []
        for d in report.devices:
            r = by_key.get((case, d))
            if r is None:
                cells.append("<td></td>")
                continue
            worst = worst_error(r)
            lines = [r.reason or r.status]
            if worst is not None:
                lines.append(f"worst: {worst[2]} max|err| {worst[0]:.3g} ({worst[1]:.3g} of max|ref|)")
            if (case, d) in new:
                lines.append(f"new since the baseline (was {before.get((case, d), 'absent')})")
            tip = html.escape("\n".join(lines + _figures(r)), quote=True)
            style = f' style="background:{_heat(worst[1])}"' if r.status == "pass" and worst is not None else ""
            data = f' data-worst="{worst[1]:.3g}"' if worst is not None else ""
            cls = r.status + (" new" if (case, d) in new else "")
            cells.append(f'<td class="{cls}"{style}{data} title="{tip}">{r.status}</td>')
        rows.append(f"<tr><th>{html.escape(case)}</th>{''.join(cells)}</tr>")
    details = []
    for r in report.results:
        if r.status in ("pass",):
            continue
        tols = "<br>".join(html.escape(t) for t in output_tolerances(r))
        details.append(
            f"<tr><td>{html.escape(r.case)}</td><td>{html.escape(r.device)}</td><td "
            f'class="{r.status}">{r.status}</td><td>{html.escape(r.reason)}</td><td>{tols}</td></tr>'
        )
    baseline_part = ""
    if baseline is not None:
        new_rows = "".join(
            f"<tr><td>{html.escape(r.case)}</td><td>{html.escape(r.device)}</td>"
            f"<td>{html.escape(before.get((r.case, r.device), 'absent'))}</td>"
            f'<td class="{r.status}">{r.status}</td><td>{html.escape(r.reason)}</td></tr>'
            for r in report.results
            if (r.case, r.device) in new
        )
        fixed = sum(1 for r in report.results if not r.failing and before.get((r.case, r.device)) in FAILING)
        baseline_part = (
            f'<h2 id="new">New since the baseline: {len(new)} failure(s), {fixed} fixed</h2>'
            '<table id="new-since-baseline"><tr><th>case</th><th>device</th><th>before</th><th>now</th>'
            f"<th>reason</th></tr>{new_rows}</table>"
        )
    style = "".join(f".{s}{{background:{c}}}" for s, c in HTML_COLORS.items())
    env = html.escape(json.dumps(report.environment, default=str))
    css = (
        "body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse;margin:1em 0} "
        "td,th{border:1px solid #999;padding:2px 6px;text-align:left} td.new{outline:3px solid #c00} "
        ".legend span{padding:1px 6px;margin-right:4px} " + style
    )
    legend = "".join(f'<span style="background:{color}">{text}</span>' for _, color, text in HEAT)
    result = "OK" if report.ok else "FAILED"
    nothing = " (nothing ran: every result is a skip)" if report.nothing_ran else ""
    details_head = (
        "<tr><th>case</th><th>device</th><th>status</th><th>reason</th><th>tolerance per output (effective)</th></tr>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>nnport conformance</title>
<style>{css}</style></head>
<body><h1>nnport conformance</h1>
<p>{html.escape(report.started)}, {report.wall_s:.1f} s wall, {report.jobs} job(s), precision \
{html.escape(report.precision)}; result: <b>{result}</b>{nothing}</p>
<p id="tolerances">{html.escape(tolerance_policy(report))}</p>
{baseline_part}
<h2>Summary</h2><table id="summary"><tr><th>status</th>{head}</tr>{summary_rows}</table>
<h2>Matrix</h2>
<p class="legend">passing cells by worst error relative to the reference's max |value|: {legend}; \
hover a cell for every output's figures</p>
<table id="matrix"><tr><th>case</th>{head}</tr>{"".join(rows)}</table>
<h2>Not passing</h2><table id="details">{details_head}{"".join(details)}</table>
<h2>Environment</h2><pre>{env}</pre>
</body></html>
"""


def write_html(report: Report, path: str | Path, baseline: Mapping[str, Any] | None = None) -> None:
    Path(path).write_text(to_html(report, baseline))


# -- terminal ------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on a terminal, periodic lines elsewhere."""

    def __init__(self, stream: IO[str] | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = width
        self.start = time.monotonic()
        self.last_line = -1.0
        self.bad = 0

    def __call__(self, done: int, total: int, result: Result) -> None:
        if result.failing:
            self.bad += 1
        frac = done / total if total else 1.0
        elapsed = time.monotonic() - self.start
        filled = int(self.width * frac)
        bar = "#" * filled + "-" * (self.width - filled)
        text = (
            f"[{bar}] {done}/{total} {elapsed:5.0f}s failing={self.bad}  {result.status:7} {result.case} @ "
            f"{result.device}"
        )
        if self.tty:
            self.stream.write("\r\x1b[K" + text[:160])
            if done == total:
                self.stream.write("\n")
            self.stream.flush()
        elif done == total or elapsed - self.last_line >= 10 or result.failing:
            self.last_line = elapsed
            self.stream.write(text + "\n")
            self.stream.flush()


def matrix_text(report: Report, *, color: bool = False, only_problems: bool = False) -> str:
    """The cases x devices matrix, then a per-device summary and every reason."""
    by_key = {(r.case, r.device): r for r in report.results}
    cases = report.cases
    if only_problems:
        cases = [c for c in cases if any((r := by_key.get((c, d))) and r.status != "pass" for d in report.devices)]
    labels = report.devices
    cw = max([len("case")] + [len(c) for c in cases])
    widths = [max(len(label), 7) for label in labels]
    lines = ["case".ljust(cw) + "  " + "  ".join(label.ljust(w) for label, w in zip(labels, widths))]
    lines.append("-" * cw + "  " + "  ".join("-" * w for w in widths))
    for case in cases:
        cells = []
        for d, w in zip(labels, widths):
            r = by_key.get((case, d))
            word = SYMBOLS[r.status] if r else ""
            cell = word.ljust(w)
            if color and r:
                cell = f"\x1b[{COLORS[r.status]}m{cell}\x1b[0m"
            cells.append(cell)
        lines.append(case.ljust(cw) + "  " + "  ".join(cells).rstrip())
    lines.append("")
    counts = report.counts()
    for d in labels:
        c = counts[d]
        lines.append(f"{d}: " + ", ".join(f"{c[s]} {s}" for s in STATUSES if c[s]) + f" (of {sum(c.values())})")
    problems = [r for r in report.results if r.status not in ("pass", "skip")]
    skips = [r for r in report.results if r.status == "skip"]
    if problems or skips:
        lines.append("")
    for r in problems + skips:
        lines.append(f"{SYMBOLS[r.status]:7} {r.case} @ {r.device}: {r.reason[:400]}")
        lines += [f"{'':7}   {t}" for t in output_tolerances(r)]
    lines.append("")
    lines.append(tolerance_policy(report))
    untested = report.untested()
    if report.nothing_ran:
        lines.append("nothing ran: every result is a skip, so this run tested nothing")
    elif untested:
        lines.append(f"no case ran on {untested} (every result a skip)")
    verdict = "OK" if report.ok else ("FAILED (nothing ran)" if report.nothing_ran else "FAILED")
    lines.append(f"\n{len(report.results)} result(s) in {report.wall_s:.1f} s with {report.jobs} job(s): {verdict}")
    return "\n".join(lines)
