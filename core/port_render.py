"""How a ``PortReport`` looks: the terminal report, and a self-contained HTML page with a Pareto plot.

The plot is drawn as inline SVG here (no plotting library, no script): one
point per measured device x precision, p50 latency across and the report's
accuracy metric up, the Pareto front (rows no other row beats on both) joined,
the accuracy budget as a dashed line and the recommendation ringed.  Every
point carries a tooltip with its figures.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .porting import METRICS, PREPROCESS_TEXT, UNITS, _pct, drop_text, format_size

if TYPE_CHECKING:
    from .porting import PortCell, PortReport

BACKEND_COLORS = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
]
PRECISION_MARKS = {"fp32": "circle", "fp16": "square", "int8": "triangle"}
STATUS_COLORS = {
    "ok": "#ffffff",
    "unsupported": "#eeeeee",
    "error": "#f8c8c8",
    "interrupted": "#f5e2a8",
    "not run": "#f0f0f0",
}


# -- shared figures ------------------------------------------------------------------------------


def score_text(report: PortReport, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.5f}" if report.metric == "cosine" else f"{100 * value:.2f}%"


def metric_header(report: PortReport) -> str:
    return {"labels": "top-1", "agreement": "top-1 agr.", "cosine": "min cosine"}[report.metric]


def _num(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _compile(cell: PortCell) -> str:
    if cell.compile_cold_s is None:
        return "-"
    warm = _num(cell.compile_warm_s, ".3g") + ("" if cell.compile_warm_cache_hit is not False else "*")
    return f"{cell.compile_cold_s:.3g} / {warm}"


def _energy(cell: PortCell) -> str:
    if cell.energy_per_inference_mj is not None:
        return f"{cell.energy_per_inference_mj:.3g}"
    return "unavailable" if cell.status == "ok" else "-"


def _top5(cell: PortCell) -> str:
    if cell.labels is None or cell.labels.top5 is None:
        return ""
    return f"{100 * cell.labels.top5:.1f}%"


def row_values(report: PortReport, cell: PortCell) -> list[str]:
    """The main table's cells for one row (shared by the terminal and HTML reports)."""
    budget = "" if cell.within_budget is None else ("" if cell.within_budget else " over")
    return [
        cell.device,
        cell.precision,
        cell.status if cell.status != "error" or not cell.stage else f"error ({cell.stage})",
        score_text(report, cell.score),
        (_drop_cell(report, cell.accuracy_drop) + budget) if cell.accuracy_drop is not None else "-",
        _num(cell.latency_p50_ms, ".3g"),
        _num(cell.latency_p99_ms, ".3g"),
        _num(cell.throughput_ips, ".4g"),
        _num(cell.peak_rss_mib, ".0f"),
        _energy(cell),
        format_size(cell.size.size_bytes) if cell.size else "-",
        _compile(cell),
    ]


def _drop_cell(report: PortReport, drop: float) -> str:
    if report.metric == "cosine":
        return drop_text(report, drop)
    return f"{100 * drop:+.2f}" if abs(drop) >= 5e-5 else "0"


def headers(report: PortReport) -> list[str]:
    extra = " (labels)" if report.metric == "labels" else ""
    return [
        "device",
        "precision",
        "status",
        metric_header(report) + extra,
        "drop" if report.metric == "cosine" else "drop (pts)",
        "p50 ms",
        "p99 ms",
        "inf/s",
        "peak MiB",
        "mJ/inf",
        "size",
        "compile s (cold/warm)",
    ]


def _recommended(report: PortReport, cell: PortCell) -> str:
    rec = report.recommendation
    if rec is None:
        return ""
    if (cell.device, cell.precision) == (rec.best.device, rec.best.precision):
        return "recommended"
    if rec.runner_up is not None and (cell.device, cell.precision) == (rec.runner_up.device, rec.runner_up.precision):
        return "runner-up"
    return ""


def summary_lines(report: PortReport) -> list[str]:
    d = report.data
    if d.kind == "random":
        data = f"{d.samples} seeded random inputs (no --data)"
    elif d.kind == "images":
        data = (
            f"{d.samples} images from {d.source}, --preprocess {d.preprocess} "
            f"({PREPROCESS_TEXT.get(d.preprocess or '', '')})"
        )
    elif d.kind == "samples":
        data = f"{d.samples} samples from {d.source}"
    else:
        data = f"{d.samples} feed dicts given"
    if d.labels:
        data += f"; labels {d.labels}"
    ref = f"fp32 on {report.reference_device}"
    if report.metric == "labels":
        ref += f": top-1 {score_text(report, report.reference_score)}"
    lines = [
        f"model: {report.model} (sha256 {report.model_hash[:12]})",
        f"objective: {report.objective} ({UNITS[report.objective]}), accuracy budget: at most "
        f"{_pct(report.max_accuracy_drop)} below the reference",
        f"accuracy: {METRICS[report.metric]}; reference: {ref}",
        f"data: {data}",
        f"int8 calibration: {d.calibration}",
    ]
    if d.shapes:
        lines.append("shapes: " + ", ".join(f"{k} {list(v)}" for k, v in d.shapes.items()))
    s = report.settings
    lines.append(
        f"measurement: single-stream, {s.get('warmup')} warm-up runs, then >= {s.get('min_iterations')} "
        f"runs and >= {s.get('min_duration_s')} s "
        f"(<= {s.get('max_duration_s')} s) per row; threads {s.get('threads') or 'runtime default'}; "
        f"{report.context.get('cpu_model', '?')}, {report.context.get('cpu_cores_usable', '?')} usable cores"
    )
    return lines


def recommendation_lines(report: PortReport) -> list[str]:
    rec = report.recommendation
    if rec is None:
        return [f"no recommendation: {report.no_recommendation}"]
    lines = [f"recommended for {rec.objective}: {rec.best.device} {rec.best.precision}: {rec.best.why}"]
    if rec.runner_up is not None:
        lines.append(f"runner-up: {rec.runner_up.device} {rec.runner_up.precision}: {rec.runner_up.why}")
    else:
        lines.append("runner-up: none (no other row is within the accuracy budget)")
    lines += [f"ruled out: {text}" for text in rec.over_budget]
    return lines


def reasons(report: PortReport) -> list[str]:
    """Why each row that is not ok is not, and each row's warnings."""
    lines = []
    for c in report.cells:
        if c.status != "ok" and c.reason:
            lines.append(f"{c.label}: {c.status}: {c.reason}")
    for device, why in report.skipped_devices.items():
        lines.append(f"{device}: not used: {why}")
    return lines


def energy_line(report: PortReport) -> str | None:
    missing = {c.energy_unavailable for c in report.cells if c.status == "ok" and c.energy_unavailable}
    if not missing:
        return None
    return "energy: unavailable (nothing is estimated): " + " | ".join(sorted(missing))


def detail_rows(report: PortReport) -> list[list[str]]:
    """Per output and per part: max/mean |error|, cosine, top-1/top-5 agreement with fp32."""
    rows = []
    for c in report.cells:
        for a in c.accuracy:
            rows.append(
                [
                    c.device,
                    c.precision,
                    a.label,
                    _num(a.max_abs_error, ".3g"),
                    _num(a.mean_abs_error, ".3g"),
                    f"{a.cosine:.6f}",
                    "-" if a.top1 is None else f"{100 * a.top1:.1f}%",
                    "-" if a.top5 is None else f"{100 * a.top5:.1f}%",
                    _top5(c) if a.part is None and c.labels is not None and a.output == c.labels.output else "",
                    _flag(c.precision, a),
                ]
            )
    return rows


DETAIL_HEADERS = [
    "device",
    "precision",
    "output / part",
    "max |err|",
    "mean |err|",
    "cosine",
    "top-1 agr.",
    "top-5 agr.",
    "top-5 (labels)",
    "compression threshold",
]


def _flag(precision: str, delta: Any) -> str:
    """``LOW: cosine 0.9698 < 0.98`` where an fp16/int8 output or part misses the compression report's threshold."""
    from .compress_report import THRESHOLDS

    threshold = THRESHOLDS.get(precision)
    why = delta.below(threshold) if threshold is not None else []
    return "LOW: " + "; ".join(why) if why else ("ok" if threshold is not None else "")


def measurement_lines(report: PortReport, cv_threshold: float = 10.0) -> list[str]:
    """The measurements' caveats, one line each: wide latency spread, few timed iterations."""
    lines = []
    wide = [
        f"{c.label} {c.latency_cv_percent:.0f}%"
        for c in report.cells
        if c.latency_cv_percent is not None and c.latency_cv_percent > cv_threshold
    ]
    if wide:
        lines.append(
            f"latency spread above {cv_threshold:g}% (coefficient of variation; other load on the machine "
            "or a short run): " + ", ".join(wide) + "; p50 is robust to it, the mean and p99 are not"
        )
    few = [f"{c.label} {c.iterations}" for c in report.cells if c.iterations is not None and c.iterations < 100]
    if few:
        lines.append(
            "fewer than 100 timed iterations, so p99 is interpolated between the largest samples: " + ", ".join(few)
        )
    return lines


def notes(report: PortReport) -> list[str]:
    """Everything below the tables: reasons, energy, sizes, data, measurement caveats, row warnings."""
    found = reasons(report)
    energy = energy_line(report)
    if energy:
        found.append(energy)
    found += size_lines(report)
    if any(c.compile_warm_cache_hit is False for c in report.cells):
        found.append("* the backend reported no compile-cache hit on the warm compile (see the row's warning)")
    if any(c.accuracy for c in report.cells if c.precision in ("fp16", "int8")):
        from .compress_report import THRESHOLDS

        floors = "; ".join(
            f"{p}: cosine >= {t.min_cosine}, top-1 agreement >= {100 * (t.min_top1 or 0):g}%"
            for p, t in THRESHOLDS.items()
        )
        found.append(
            f"compression threshold: the compression report's floors on every output and part ({floors}); "
            "shown, not used: the recommendation uses the accuracy budget"
        )
    found += list(report.data.warnings) + list(report.notes) + measurement_lines(report)
    for c in report.cells:
        found += [f"{c.label}: {w}" for w in c.warnings]
    return found


def size_lines(report: PortReport) -> list[str]:
    seen: dict[str, list[str]] = {}
    for c in report.cells:
        if c.size is not None:
            seen.setdefault(c.size.what, []).append(c.label)
    return [f"size of {', '.join(labels)}: {what}" for what, labels in seen.items()]


# -- terminal ------------------------------------------------------------------------------------


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def text_report(report: PortReport) -> str:
    title = f"nnport port: {report.model}" + (" (PARTIAL: interrupted)" if report.interrupted else "")
    lines = [title, *("  " + s for s in summary_lines(report)), ""]
    rows = [[*row_values(report, c), _recommended(report, c)] for c in report.cells]
    lines.append(_table(rows, [*headers(report), ""]))
    lines.append("")
    lines += recommendation_lines(report)
    details = detail_rows(report)
    if details:
        lines += [
            "",
            "accuracy per output and part, against fp32 on " + report.reference_device + ":",
            _table(details, DETAIL_HEADERS),
        ]
    found = notes(report)
    if found:
        lines += ["", "notes:", *("  " + n for n in found)]
    lines.append(f"\nwall time: {report.wall_s:.1f} s")
    return "\n".join(lines)


# -- HTML ----------------------------------------------------------------------------------------


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 4px; } h2 { font-size: 1.1em; margin-top: 28px; }
.summary { color: #444; font-size: 0.92em; line-height: 1.5; }
.rec { background: #e6f4e6; border: 1px solid #9c9; border-radius: 6px; padding: 10px 14px; margin: 14px 0;
       max-width: 1100px; }
.norec { background: #fbeaea; border: 1px solid #d99; border-radius: 6px; padding: 10px 14px; margin: 14px 0; }
.partial { background: #fff3cd; border: 1px solid #e0c060; padding: 8px 12px; border-radius: 6px; }
table { border-collapse: collapse; font-size: 0.88em; margin-top: 6px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
tr.recommended td { background: #d8f0d8 !important; font-weight: 600; }
tr.runnerup td { background: #eef8ee !important; }
td.over { color: #b00; }
.why { white-space: normal; max-width: 300px; text-align: left; font-size: 0.9em; color: #555; }
ul.notes { font-size: 0.88em; color: #444; }
svg text { font-family: system-ui, sans-serif; }
"""


def html_report(report: PortReport) -> str:
    e = html.escape
    title = f"nnport port: {report.model}"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta "
        f"charset='utf-8'><title>{e(title)}</title><style>{CSS}</style></head><body>"
    ]
    parts.append(f"<h1>{e(title)}</h1>")
    if report.interrupted:
        parts.append(
            "<p class='partial'>Partial report: the run was interrupted (Ctrl-C); rows marked <em>not "
            "run</em> were not reached.</p>"
        )
    parts.append("<div class='summary'>" + "<br>".join(e(s) for s in summary_lines(report)) + "</div>")
    rec_lines = recommendation_lines(report)
    css = "rec" if report.recommendation else "norec"
    parts.append(f"<div class='{css}' id='recommendation'>" + "<br>".join(e(s) for s in rec_lines) + "</div>")
    parts.append("<h2>Latency against accuracy (Pareto plot)</h2>")
    parts.append(pareto_svg(report))
    parts.append("<h2>Every device x precision</h2>")
    parts.append(_main_table(report))
    details = detail_rows(report)
    if details:
        parts.append(f"<h2>Accuracy per output and part, against fp32 on {e(report.reference_device)}</h2>")
        parts.append(_html_table(details, DETAIL_HEADERS, left=3))
    found = notes(report)
    if found:
        parts.append("<h2>Notes</h2><ul class='notes'>" + "".join(f"<li>{e(n)}</li>" for n in found) + "</ul>")
    ctx = report.context
    parts.append(
        "<p class='summary'>"
        + e(
            f"nnport {ctx.get('nnport_version', '?')}, Python {ctx.get('python', '?')}, "
            f"{ctx.get('platform', '?')}; wall time {report.wall_s:.1f} s"
        )
        + "</p>"
    )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _html_table(
    rows: Sequence[Sequence[str]], header: Sequence[str], left: int = 0, classes: Sequence[str] | None = None
) -> str:
    e = html.escape
    out = [
        "<table><thead><tr>"
        + "".join(f"<th class='{'l' if i < left else ''}'>{e(h)}</th>" for i, h in enumerate(header))
        + "</tr></thead><tbody>"
    ]
    for n, row in enumerate(rows):
        cls = f" class='{classes[n]}'" if classes and classes[n] else ""
        out.append(
            f"<tr{cls}>"
            + "".join(
                f"<td class='{'l' if i < left else 'over' if str(v).startswith('LOW') else ''}'>{e(str(v))}</td>"
                for i, v in enumerate(row)
            )
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _main_table(report: PortReport) -> str:
    e = html.escape
    head = [*headers(report), "", "why / size"]
    out = [
        "<table id='rows'><thead><tr>"
        + "".join(f"<th class='{'l' if i < 3 else ''}'>{e(h)}</th>" for i, h in enumerate(head))
        + "</tr></thead><tbody>"
    ]
    for c in report.cells:
        marker = _recommended(report, c)
        cls = {"recommended": "recommended", "runner-up": "runnerup"}.get(marker, "")
        bg = STATUS_COLORS.get(c.status, "#fff")
        values = row_values(report, c)
        cells = []
        for i, v in enumerate(values):
            klass = "l" if i < 3 else ("over" if i == 4 and c.within_budget is False else "")
            cells.append(f"<td class='{klass}' style='background:{bg}'>{e(v)}</td>")
        why = (c.reason if c.status != "ok" else (c.size.what if c.size else "")) or ""
        short = why if len(why) <= 90 else why[:87] + "..."
        cells.append(f"<td class='l' style='background:{bg}'>{e(marker)}</td>")
        cells.append(f"<td class='why' style='background:{bg}' title='{e(why)}'>{e(short)}</td>")
        out.append(
            f"<tr class='{cls}' data-device='{e(c.device)}' data-precision='{e(c.precision)}'>"
            + "".join(cells)
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


# -- the Pareto plot -------------------------------------------------------------------------------


def pareto_front(cells: Sequence[PortCell]) -> list[PortCell]:
    """Rows no other row beats on both latency (lower) and accuracy (higher), by latency."""
    points = sorted((c for c in cells if c.measured), key=lambda c: (c.latency_p50_ms, -(c.score or 0.0)))
    front: list[PortCell] = []
    best = -math.inf
    for c in points:
        if (c.score or 0.0) > best + 1e-12:
            front.append(c)
            best = c.score or 0.0
    return front


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10**k
            if lo <= v <= hi:
                ticks.append(v)
    return ticks or [lo, hi]


def _fmt_tick(v: float) -> str:
    return f"{v:.4g}"


def pareto_svg(report: PortReport, width: int = 760, height: int = 440) -> str:
    """Inline SVG: p50 latency across, the accuracy metric up; front joined, budget dashed, recommendation ringed."""
    e = html.escape
    cells = [c for c in report.cells if c.measured]
    if not cells:
        return "<p class='norec'>No row was measured: nothing to plot.</p>"
    left, right, top, bottom = 78, 190, 24, 54
    pw, ph = width - left - right, height - top - bottom
    lat = [c.latency_p50_ms or 0.0 for c in cells]  # measured rows have a latency
    lo_x, hi_x = min(lat), max(lat)
    log_x = hi_x / lo_x > 20 if lo_x > 0 else False
    if log_x:
        x0, x1 = math.log10(lo_x) - 0.1, math.log10(hi_x) + 0.1
        xticks = _log_ticks(10**x0, 10**x1)

        def fx(v: float) -> float:
            return left + (math.log10(v) - x0) / (x1 - x0) * pw
    else:
        span = (hi_x - lo_x) or max(hi_x, 1e-3) * 0.2
        x0, x1 = max(0.0, lo_x - 0.12 * span), hi_x + 0.12 * span
        xticks = _nice_ticks(x0, x1)

        def fx(v: float) -> float:
            return left + (v - x0) / (x1 - x0) * pw

    scale = 1.0 if report.metric == "cosine" else 100.0
    scores = [scale * (c.score or 0.0) for c in cells]
    budget = None if report.reference_score is None else scale * (report.reference_score - report.max_accuracy_drop)
    ys = (
        scores
        + ([scale * report.reference_score] if report.reference_score is not None else [])
        + ([budget] if budget is not None else [])
    )
    lo_y, hi_y = min(ys), max(ys)
    span_y = (hi_y - lo_y) or max(abs(hi_y) * 0.01, 1e-6)
    y0, y1 = lo_y - 0.12 * span_y, hi_y + 0.12 * span_y
    yticks = _nice_ticks(y0, y1)

    def fy(v: float) -> float:
        return top + (1 - (v - y0) / (y1 - y0)) * ph

    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} "
        f"{height}' role='img' aria-label='Pareto plot'>"
    ]
    out.append(f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='#fbfbfb' stroke='#999'/>")
    for t in xticks:
        if x0 <= (math.log10(t) if log_x else t) <= x1:
            x = fx(t)
            out.append(f"<line x1='{x:.1f}' y1='{top}' x2='{x:.1f}' y2='{top + ph}' stroke='#e4e4e4'/>")
            out.append(
                f"<text x='{x:.1f}' y='{top + ph + 16}' font-size='11' text-anchor='middle'>{_fmt_tick(t)}</text>"
            )
    for t in yticks:
        if y0 <= t <= y1:
            y = fy(t)
            out.append(f"<line x1='{left}' y1='{y:.1f}' x2='{left + pw}' y2='{y:.1f}' stroke='#e4e4e4'/>")
            label = f"{t:.4g}" if report.metric == "cosine" else f"{t:.4g}%"
            out.append(f"<text x='{left - 6}' y='{y + 4:.1f}' font-size='11' text-anchor='end'>{label}</text>")
    xlabel = "p50 latency (ms" + (", log scale)" if log_x else ")") + " - lower is better"
    out.append(
        f"<text x='{left + pw / 2:.1f}' y='{height - 14}' font-size='12' text-anchor='middle'>{e(xlabel)}</text>"
    )
    ylabel = {
        "labels": "top-1 accuracy (labels)",
        "agreement": "top-1 agreement with fp32",
        "cosine": "min cosine to fp32",
    }[report.metric]
    out.append(
        f"<text x='16' y='{top + ph / 2:.1f}' font-size='12' text-anchor='middle' transform='rotate(-90 16 "
        f"{top + ph / 2:.1f})'>{e(ylabel)} - higher is better</text>"
    )
    if budget is not None and y0 <= budget <= y1:
        y = fy(budget)
        out.append(
            f"<line x1='{left}' y1='{y:.1f}' x2='{left + pw}' y2='{y:.1f}' stroke='#c33' stroke-dasharray='6 4'/>"
        )
        out.append(
            f"<text x='{left + pw - 4}' y='{y - 4:.1f}' font-size='10' fill='#c33' "
            f"text-anchor='end'>accuracy budget (-{_pct(report.max_accuracy_drop)})</text>"
        )
    front = pareto_front(cells)
    if len(front) > 1:
        pts = " ".join(f"{fx(c.latency_p50_ms or 0.0):.1f},{fy(scale * (c.score or 0.0)):.1f}" for c in front)
        out.append(f"<polyline points='{pts}' fill='none' stroke='#888' stroke-width='1.5' stroke-dasharray='3 3'/>")
    backends = sorted({c.backend for c in report.cells})
    color = {b: BACKEND_COLORS[i % len(BACKEND_COLORS)] for i, b in enumerate(backends)}
    rec = report.recommendation
    placed: list[tuple[float, float, float, float]] = []  # label boxes, so that labels never overlap
    for c in cells:
        x, y = fx(c.latency_p50_ms or 0.0), fy(scale * (c.score or 0.0))
        is_best = rec is not None and (c.device, c.precision) == (rec.best.device, rec.best.precision)
        if is_best:
            placed.append((x + 14, y - 22, x + 100, y - 6))
    for c in cells:
        x, y = fx(c.latency_p50_ms or 0.0), fy(scale * (c.score or 0.0))
        tip = (
            f"{c.label}: p50 {c.latency_p50_ms:.4g} ms, {metric_header(report)} {score_text(report, c.score)}, "
            f"drop {drop_text(report, c.accuracy_drop)}"
        )
        fill = color[c.backend] if c.within_budget is not False else "#ffffff"
        out.append(
            "<g class='point' "
            f"data-row='{e(c.label)}'><title>{e(tip)}</title>{_mark(c.precision, x, y, 6, fill, color[c.backend])}</g>"
        )
        if rec is not None and (c.device, c.precision) == (rec.best.device, rec.best.precision):
            out.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='13' fill='none' stroke='#2a2' stroke-width='2.5'/>")
            out.append(
                f"<text x='{x + 16:.1f}' y='{y - 10:.1f}' font-size='12' font-weight='bold' "
                "fill='#2a2'>recommended</text>"
            )
        text = f"{c.device} {c.precision}"
        box = (x + 9, y + 8, x + 9 + 6.2 * len(text), y + 20)
        if box[2] <= left + pw and not any(
            box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed
        ):
            placed.append(box)
            out.append(f"<text x='{box[0]:.1f}' y='{box[3] - 2:.1f}' font-size='10' fill='#555'>{e(text)}</text>")
    lx, ly = left + pw + 16, top + 6
    out.append(f"<text x='{lx}' y='{ly + 6}' font-size='12' font-weight='bold'>backend</text>")
    for i, b in enumerate(backends):
        yy = ly + 24 + 18 * i
        out.append(
            f"<circle cx='{lx + 6}' cy='{yy - 4}' r='5' fill='{color[b]}'/><text x='{lx + 16}' y='{yy}' "
            f"font-size='11'>{e(b)}</text>"
        )
    ly2 = ly + 24 + 18 * len(backends) + 10
    out.append(f"<text x='{lx}' y='{ly2}' font-size='12' font-weight='bold'>precision</text>")
    for i, p in enumerate(PRECISION_MARKS):
        yy = ly2 + 18 + 18 * i
        out.append(
            _mark(p, lx + 6, yy - 4, 5, "#666", "#666") + f"<text x='{lx + 16}' y='{yy}' font-size='11'>{p}</text>"
        )
    ly3 = ly2 + 18 + 18 * len(PRECISION_MARKS) + 10
    out.append(
        f"<circle cx='{lx + 6}' cy='{ly3 - 4}' r='5' fill='#fff' stroke='#666'/><text x='{lx + 16}' "
        f"y='{ly3}' font-size='11'>over budget</text>"
    )
    out.append(
        f"<line x1='{lx}' y1='{ly3 + 14}' x2='{lx + 12}' y2='{ly3 + 14}' stroke='#888' stroke-dasharray='3 "
        f"3'/><text x='{lx + 16}' y='{ly3 + 18}' font-size='11'>Pareto front</text>"
    )
    out.append("</svg>")
    return "\n".join(out)


def _mark(precision: str, x: float, y: float, r: float, fill: str, stroke: str) -> str:
    shape = PRECISION_MARKS.get(precision, "circle")
    if shape == "square":
        return (
            f"<rect x='{x - r:.1f}' y='{y - r:.1f}' width='{2 * r}' height='{2 * r}' fill='{fill}' "
            f"stroke='{stroke}' stroke-width='1.5'/>"
        )
    if shape == "triangle":
        pts = f"{x:.1f},{y - r * 1.2:.1f} {x - r * 1.1:.1f},{y + r * 0.8:.1f} {x + r * 1.1:.1f},{y + r * 0.8:.1f}"
        return f"<polygon points='{pts}' fill='{fill}' stroke='{stroke}' stroke-width='1.5'/>"
    return f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{r}' fill='{fill}' stroke='{stroke}' stroke-width='1.5'/>"
