"""The export's report: one self-contained HTML page and a Markdown summary.

`ReportContent` holds what the report says — every number in it measured — and
`render_html` / `render_markdown` turn it into text. The HTML page carries plotly.js
inline, once, before the first chart, so it opens offline, from a file, with no network;
every string that came from the user (model, data and layer names, labels, notes) is
escaped. The builders below turn a session's measurements into the report's rows.
"""

from __future__ import annotations

import html
import importlib.metadata
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import plotly.graph_objects as go
import torch

from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.session import PruningSession
from pruneviz.i18n import _
from pruneviz.measure.meter import Report
from pruneviz.measure.metrics import Latency
from pruneviz.output.figures import KEPT, PRUNED, template


@dataclass(frozen=True)
class Check:
    """One verification of an export: what was checked, whether it held, and the detail."""

    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class LayerRow:
    """One prunable layer in the report's plan table."""

    layer: str
    type: str
    granularity: str
    criterion: str
    amount: str  # what the plan asked for ("50%", "t<0.02", "global 80%", "coupled", "-")
    sparsity: float  # achieved: fraction of the layer's weights that are zero
    pruned: str  # structures pruned, "8 / 16"


@dataclass(frozen=True)
class MetricRow:
    """One measured quantity: unpruned, pruned, and the change between them."""

    name: str
    baseline: str
    pruned: str
    change: str


@dataclass(frozen=True)
class FileRow:
    """One file of the export."""

    name: str
    size: int | None  # bytes (None: the report files, written last; a file not written)
    what: str
    check: str = ""  # a deployment file's check: "passed: ...", "failed: ...", "skipped: ..."


@dataclass(frozen=True)
class ReportContent:
    """Everything the report says."""

    title: str
    model: str
    data: str
    weights: str
    plan_text: str
    plan_json: str
    metrics: Sequence[MetricRow]
    layers: Sequence[LayerRow]
    checks: Sequence[Check]
    files: Sequence[FileRow]
    slim_note: str
    command: str
    environment: Sequence[tuple[str, str]]
    eval_samples: int = 0  # samples the outputs were compared on
    notes: Sequence[str] = ()
    figures: Sequence[tuple[str, go.Figure]] = field(default_factory=tuple)

    @property
    def verified(self) -> bool:
        """True when there were checks and every one passed."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def status(self) -> str:
        """One line: verified (with what) or FAILED (with which checks)."""
        return status_line(self.checks, self.eval_samples)


def status_line(checks: Sequence[Check], eval_samples: int) -> str:
    """"verified: outputs identical on N eval samples; ..." or "FAILED: ..."."""
    if checks and all(c.passed for c in checks):
        return _("verified: outputs identical on {samples} eval samples; all {count} checks "
                 "passed").format(samples=f"{eval_samples:,}", count=len(checks))
    if not checks:
        return _("FAILED: nothing was verified")
    failed = [c.name for c in checks if not c.passed]
    return _("FAILED: {failed} of {count} checks failed ({names})").format(
        failed=len(failed), count=len(checks), names="; ".join(failed))


# -- builders ---------------------------------------------------------------------------------
def _ratio(now: float | None, then: float | None) -> str:
    if not then or now is None:
        return ""
    change = (now / then - 1) * 100
    return "no change" if abs(change) < 0.05 else f"{change:+.1f}%"


def _bytes(n: int | None) -> str:
    if n is None:
        return "not measured"
    if n < 1024:
        return f"{n:,} B"
    if n < 1024 * 1024:
        return f"{n / 1024:,.1f} KiB"
    return f"{n / 1024 / 1024:,.2f} MiB"


def _latency(latency: Latency | None) -> str:
    if latency is None:
        return "not measured"
    return (f"{latency.median_ms:.3f} ms (p10-p90 {latency.p10_ms:.3f}-{latency.p90_ms:.3f}; "
            f"{latency.conditions()})")


def metric_rows(baseline: Report, pruned: Report) -> list[MetricRow]:
    """The metrics table: the unpruned baseline against the pruned model, as measured.

    The baseline's latency is the unpruned model timed interleaved with the pruned one
    when the pruned report has that reference, else the baseline's own (if measured); the
    change is the speed-up from those interleaved rounds (`latency_change`)."""
    b_ev, p_ev = baseline.evaluation, pruned.evaluation
    percent = p_ev.metric_name in ("accuracy",) or p_ev.metric_name.startswith("top")

    def metric(v: float) -> str:
        return f"{v:.2%}" if percent else f"{v:.6g}"

    metric_change = (f"{(p_ev.metric - b_ev.metric) * 100:+.2f} pts" if percent
                     else _ratio(p_ev.metric, b_ev.metric))
    rows = [
        MetricRow(f"{p_ev.metric_name} ({p_ev.samples:,} eval samples)", metric(b_ev.metric),
                  metric(p_ev.metric), metric_change),
        MetricRow("loss", f"{b_ev.loss:.6g}", f"{p_ev.loss:.6g}",
                  _ratio(p_ev.loss, b_ev.loss)),
        MetricRow("parameters (total)", f"{baseline.params_total:,}", f"{pruned.params_total:,}",
                  _ratio(pruned.params_total, baseline.params_total)),
        MetricRow("parameters (non-zero)", f"{baseline.params_nonzero:,}",
                  f"{pruned.params_nonzero:,}",
                  _ratio(pruned.params_nonzero, baseline.params_nonzero)),
        MetricRow("sparsity (zero parameters)", f"{baseline.sparsity:.2%}",
                  f"{pruned.sparsity:.2%}",
                  f"{(pruned.sparsity - baseline.sparsity) * 100:+.2f} pts"),
        MetricRow("weight MACs / sample (dense)", f"{baseline.macs_dense:,}",
                  f"{pruned.macs_dense:,}", _ratio(pruned.macs_dense, baseline.macs_dense)),
        MetricRow("weight MACs / sample (effective: zeros skipped)",
                  f"{baseline.macs_effective:,}", f"{pruned.macs_effective:,}",
                  _ratio(pruned.macs_effective, baseline.macs_effective)),
    ]
    for label, b_size, p_size in (
        ("file size: dense safetensors", baseline.sizes.dense, pruned.sizes.dense),
        ("file size: sparse encoding", baseline.sizes.sparse, pruned.sizes.sparse),
        ("file size: dense, gzipped", baseline.sizes.gzip, pruned.sizes.gzip),
    ):
        rows.append(MetricRow(label, _bytes(b_size), _bytes(p_size), _ratio(p_size, b_size)))
    b_lat = pruned.latency_reference or baseline.latency
    rows.append(MetricRow("CPU latency (median)", _latency(b_lat), _latency(pruned.latency),
                          latency_change(pruned)))
    return rows


def latency_change(pruned: Report) -> str:
    """The latency cell of the change column: the speed-up over the unpruned model timed in
    the same rounds with its interval, a verdict only when the interval excludes 1x; never
    a change between timings made at different moments (they differ by machine load)."""
    gain, reference = pruned.latency_speedup, pruned.latency_reference
    if pruned.latency is None:
        return ""
    if gain is None or reference is None:
        return "not compared: the unpruned model was not timed in the same rounds"
    said = gain.text()
    busy = reference.busy()
    return said if busy is None else f"{said}; timed on a busy machine, unreliable"


def _amount(entry: LayerPlan) -> str:
    if entry.granularity.n_m is not None:
        n, m = entry.granularity.n_m
        return f"{n}:{m} (fixed {1 - n / m:.0%})"
    if entry.sparsity is not None:
        return f"{entry.sparsity * 100:.4g}%"
    return f"score < {entry.threshold:.4g}"


def layer_rows(session: PruningSession) -> list[LayerRow]:
    """The plan table: every prunable layer, what the plan asked of it and what it got."""
    plan = session.plan
    rows = []
    for result in session.results():
        entry = plan.layers.get(result.name)
        in_global = plan.global_ is not None and (
            plan.global_.layers is None or result.name in plan.global_.layers)
        if result.granularity == "removed":
            amount = "block removed"
        elif entry is not None:
            amount = _amount(entry)
        elif in_global and plan.global_ is not None:
            g = plan.global_
            part = (f"{g.sparsity * 100:.4g}%" if g.sparsity is not None
                    else f"score < {g.threshold:.4g}")
            amount = f"global {part}"
        elif result.granularity is not None:
            amount = "coupled (pruned with its group)"
        else:
            amount = "-"
        pruned = (f"{result.structures_pruned:,} / {result.structures:,}"
                  if result.granularity is not None else "-")
        rows.append(LayerRow(result.name, result.type, result.granularity or "-",
                             result.criterion or "-", amount, result.sparsity, pruned))
    return rows


def sparsity_chart(rows: Sequence[LayerRow]) -> go.Figure:
    """Achieved sparsity per layer, in model order (pruned layers red, others blue)."""
    names = [r.layer for r in rows]
    values = [r.sparsity * 100 for r in rows]
    colours = [PRUNED if r.sparsity > 0 else KEPT for r in rows]
    bar = go.Bar(
        x=names, y=values, marker_color=colours, name="achieved sparsity",
        customdata=[[r.granularity, r.criterion, r.amount] for r in rows],
        hovertemplate=("<b>%{x}</b><br>sparsity: %{y:.2f}%<br>%{customdata[0]} "
                       "%{customdata[1]}, asked: %{customdata[2]}<extra></extra>"),
    )
    layout = {
        "template": template(),
        "title": {"text": "Achieved sparsity per layer (zero weights)", "x": 0.01,
                  "xanchor": "left"},
        "height": 350,
        "margin": {"l": 60, "r": 20, "t": 56, "b": 80},
        "xaxis": {"title": {"text": "layer"}, "type": "category"},
        "yaxis": {"title": {"text": "sparsity (%)"}, "range": [0, 100]},
        "meta": {"sparsity_percent": values},
    }
    return go.Figure([bar], layout)


def environment() -> list[tuple[str, str]]:
    """Where the numbers were measured: versions, machine, date."""
    try:
        version = importlib.metadata.version("pruneviz")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    return [
        ("pruneviz", version),
        ("python", f"{platform.python_version()} ({sys.implementation.name})"),
        ("torch", torch.__version__),
        ("platform", platform.platform()),
        ("processor", platform.machine() or "unknown"),
        ("CPU count", str(os.cpu_count() or "unknown")),
        ("torch threads", str(torch.get_num_threads())),
        ("date (UTC)", datetime.now(UTC).isoformat(timespec="seconds")),
    ]


def plan_text(plan: Plan) -> str:
    """The plan as pretty JSON (what plan.json holds)."""
    return plan.to_json()


# -- HTML ------------------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { margin-top: 2rem; font-size: 1.2rem; }
.meta { color: #555; margin: 0.1rem 0; }
.status { padding: 0.7rem 1rem; border-radius: 6px; font-weight: 600; margin: 1rem 0; }
.ok { background: #e6f4ea; color: #1e6b34; border: 1px solid #a8d5b5; }
.failed { background: #fdecea; color: #9b1c1c; border: 1px solid #f1a9a0; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; margin: 0.5rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.5rem; text-align: left;
         vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.pass { color: #1e6b34; font-weight: 700; white-space: nowrap; }
td.fail { color: #9b1c1c; font-weight: 700; white-space: nowrap; }
pre, code { background: #f6f6f6; border-radius: 4px; font-size: 0.85rem; }
pre { padding: 0.6rem; overflow-x: auto; }
.figure { margin: 1rem 0; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]],
           numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
            for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _check_table(checks: Sequence[Check]) -> str:
    rows = []
    for c in checks:
        mark, cls = ("✓ passed", "pass") if c.passed else ("✗ FAILED", "fail")
        rows.append(f'<tr><td class="{cls}">{mark}</td><td>{_e(c.name)}</td>'
                    f"<td>{_e(c.detail)}</td></tr>")
    return ("<table><thead><tr><th>result</th><th>check</th><th>detail</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _figures_html(figures: Sequence[tuple[str, go.Figure]]) -> str:
    parts = []
    for i, (caption, fig) in enumerate(figures):
        # plotly.js goes inline once, with the first chart; the others reuse it.
        div = fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"pv-figure-{i}",
                          config={"displaylogo": False, "responsive": True})
        parts.append(f'<div class="figure">{div}<p class="meta">{_e(caption)}</p></div>')
    return "\n".join(parts)


def render_html(content: ReportContent) -> str:
    """One self-contained HTML page (plotly.js inline, no network needed)."""
    ok = content.verified
    status = f'<div class="status {"ok" if ok else "failed"}">{_e(content.status)}</div>'
    layers = _table(
        ["layer", "type", "granularity", "criterion", "plan asked", "achieved sparsity",
         "structures pruned"],
        [[r.layer, r.type, r.granularity, r.criterion, r.amount, f"{r.sparsity:.2%}",
          r.pruned] for r in content.layers],
        numeric=(5, 6))
    metrics = _table(["measured", "unpruned", "pruned", "change"],
                     [[m.name, m.baseline, m.pruned, m.change] for m in content.metrics],
                     numeric=(1, 2, 3))
    files = _table(["file", "size", "what", "check"],
                   [[f.name, "" if f.size is None else f"{f.size:,} B", f.what, f.check]
                    for f in content.files], numeric=(1,))
    notes = "".join(f"<li>{_e(n)}</li>" for n in content.notes)
    env = _table(["", ""], [list(pair) for pair in content.environment])
    figures = _figures_html(content.figures) if content.figures else \
        "<p>No charts.</p>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(content.title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_e(content.title)}</h1>
<p class="meta"><b>model</b> {_e(content.model)} &middot; <b>weights</b> {_e(content.weights)}
&middot; <b>data</b> {_e(content.data)}</p>
<p class="meta"><b>plan</b> {_e(content.plan_text)}</p>
{status}
<h2>Measured: unpruned vs pruned</h2>
{metrics}
{f"<p>Notes from applying the plan:</p><ul>{notes}</ul>" if notes else ""}
<h2>Plan, per layer</h2>
{layers}
<h2>Charts</h2>
{figures}
<h2>Verification</h2>
{_check_table(content.checks)}
<h2>Files</h2>
{files}
<p>{_e(content.slim_note)}</p>
<p>Reproduce <code>weights.safetensors</code> from the plan:</p>
<pre>{_e(content.command)}</pre>
<details><summary>plan.json</summary><pre>{_e(content.plan_json)}</pre></details>
<h2>Environment</h2>
{env}
</body>
</html>
"""


# -- Markdown --------------------------------------------------------------------------------
def _md(text: object) -> str:
    """A string safe inside a Markdown table cell (no HTML, no pipes, one line)."""
    return (html.escape(str(text), quote=False).replace("\\", "\\\\").replace("|", "\\|")
            .replace("\r", " ").replace("\n", " "))


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |",
             "|" + "|".join("---" for _column in header) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(content: ReportContent) -> str:
    """The same tables and verification results as Markdown."""
    mark = "✅" if content.verified else "❌"
    parts = [
        f"# {_md(content.title)}",
        "",
        f"- **model**: {_md(content.model)}",
        f"- **weights**: {_md(content.weights)}",
        f"- **data**: {_md(content.data)}",
        f"- **plan**: {_md(content.plan_text)}",
        "",
        f"**{mark} {_md(content.status)}**",
        "",
        "## Measured: unpruned vs pruned",
        "",
        _md_table(["measured", "unpruned", "pruned", "change"],
                  [[m.name, m.baseline, m.pruned, m.change] for m in content.metrics]),
        "",
    ]
    if content.notes:
        parts += ["Notes from applying the plan:", "",
                  *(f"- {_md(n)}" for n in content.notes), ""]
    parts += [
        "## Plan, per layer",
        "",
        _md_table(["layer", "type", "granularity", "criterion", "plan asked",
                   "achieved sparsity", "structures pruned"],
                  [[r.layer, r.type, r.granularity, r.criterion, r.amount,
                    f"{r.sparsity:.2%}", r.pruned] for r in content.layers]),
        "",
        "## Verification",
        "",
        _md_table(["result", "check", "detail"],
                  [["✓ passed" if c.passed else "✗ FAILED", c.name, c.detail]
                   for c in content.checks]),
        "",
        "## Files",
        "",
        _md_table(["file", "size", "what", "check"],
                  [[f.name, "" if f.size is None else f"{f.size:,} B", f.what, f.check]
                   for f in content.files]),
        "",
        _md(content.slim_note),
        "",
        "Reproduce `weights.safetensors` from the plan:",
        "",
        "```",
        content.command.replace("```", "'''"),
        "```",
        "",
        "## Environment",
        "",
        _md_table(["", ""], [list(pair) for pair in content.environment]),
        "",
    ]
    return "\n".join(parts)


__all__ = [
    "Check",
    "FileRow",
    "LayerRow",
    "MetricRow",
    "ReportContent",
    "environment",
    "layer_rows",
    "metric_rows",
    "plan_text",
    "render_html",
    "render_markdown",
    "sparsity_chart",
    "status_line",
]
