"""Shared output of the verbs: a measured model's report as text or JSON, budget lines, and
writing files into the output folder."""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pruneviz.data.sources import input_files
from pruneviz.errors import PrunevizError
from pruneviz.measure.meter import Report
from pruneviz.measure.timing import Speedup
from pruneviz.output.folders import MANIFEST, check_target, manifest_bytes
from pruneviz.output.json_safe import safe_json
from pruneviz.output.model_files import write_atomic
from pruneviz.workflows.allocation import (
    BudgetKind,
    Outcome,
    format_quantity,
)
from pruneviz.workflows.floor import FloorResult
from pruneviz.workflows.workbench import Workbench


def _print_report(report: Report, baseline: Report, skipped: dict[str, str]) -> None:
    ev, base = report.evaluation, baseline.evaluation
    print(f"model     {report.model}")
    print(f"{ev.metric_name:<9} {ev.metric:.4f}  (baseline {base.metric:.4f}, "
          f"{ev.samples} eval samples)")
    print(f"loss      {ev.loss:.4f}  (baseline {base.loss:.4f})")
    print(f"params    {report.params_nonzero:,} non-zero of {report.params_total:,} "
          f"({report.sparsity:.1%} sparse)")
    print(f"MACs      {report.macs_effective:,} effective of {report.macs_dense:,} dense "
          "(weight MACs per sample)")
    print(f"file      dense {report.sizes.dense:,} B | sparse {report.sizes.sparse:,} B | "
          f"gzip {report.sizes.gzip:,} B")
    if report.latency is not None:
        lat = report.latency
        print(f"latency   {lat.median_ms:.2f} ms median ({lat.conditions()}; p10-p90 "
              f"{lat.p10_ms:.2f}-{lat.p90_ms:.2f} ms)")
        if report.latency_speedup is not None and report.latency_reference is not None:
            print(f"          vs unpruned {report.latency_reference.median_ms:.2f} ms in the "
                  f"same rounds: {report.latency_speedup.text()}")
        if (busy := (report.latency_reference or lat).busy()) is not None:
            print(f"warning: {busy}")
    print()
    print(f"{'layer':<28} {'type':<10} {'params':>9} {'nonzero':>9} {'sparsity':>8}  threshold")
    for layer in report.layers:
        threshold = "-" if layer.threshold is None else f"{layer.threshold:.4g}"
        print(f"{layer.name:<28} {layer.type:<10} {layer.params:>9,} {layer.nonzero:>9,} "
              f"{layer.sparsity:>8.1%}  {threshold}")
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    for note in report.notes:
        print(f"note: {note}")


def emit(args: argparse.Namespace, report: Report, baseline: Report,
          skipped: dict[str, str], extra: dict[str, Any] | None = None,
          summary: Sequence[str] = ()) -> None:
    """Print the report; `extra` joins the JSON object, `summary` lines the text."""
    if args.json:
        out = report.to_dict()
        out["baseline"] = {k: v for k, v in baseline.to_dict().items()
                           if k not in ("layers", "plan")}
        out["skipped_layers"] = skipped
        out.update(extra or {})
        print(safe_json(out))
    else:
        _print_report(report, baseline, skipped)
        for line in summary:
            print(line)
        for key, value in (extra or {}).items():
            if key in ("allocation", "criterion_notes", "floor", "refit"):  # in `summary`
                continue
            if key in ("slim", "sparse_deployed") and isinstance(value, dict):
                print(form_line(key, value))
                if "metric" in value:  # measured on its own: not the masked model
                    print(f"{key}: {value['note']}")
            elif key == "fastest_form":
                print("fastest form: " + (value or "none: no form is measurably faster than "
                                          "all the others (within noise)"))
            elif key == "machine_busy":
                print(f"warning: {value}")
            elif key == "slim_differs":
                print("note: the slimmed model is by design not the masked one: "
                      + "; ".join(value))
            else:
                print(f"{key}: {value}")


def form_line(key: str, form: dict[str, Any]) -> str:
    """One deployable form's latency for people: its speed-up over the masked model timed
    in the same rounds, a verdict only when the interval says so (`Speedup.text`)."""
    gain = form.get("latency_vs_masked")
    if gain is None:
        return f"{key}: latency not measured" if form.get("latency_ms") is None else \
            f"{key}: latency {form['latency_ms']:.2f} ms"
    low, high = gain["ci_low"], gain["ci_high"]
    said = Speedup(gain["speedup"], 0.0 if low is None else low,
                   math.inf if high is None else high, gain["pairs"], gain["confidence"]).text()
    return (f"{key}: latency {form['latency_ms']:.2f} ms, against the masked model in the "
            f"same rounds: {said}")


def show_budget(kind: BudgetKind, value: float) -> str:
    """A budget quantity for people, with what it measures."""
    what = {BudgetKind.SPARSITY: "overall sparsity", BudgetKind.MACS: "of the MACs",
            BudgetKind.SIZE: "sparse file", BudgetKind.LATENCY: "latency"}[kind]
    return f"{format_quantity(kind, value)} {what}"


def allocation_summary(outcome: Outcome, metric_name: str) -> list[str]:
    kind = outcome.budget.kind
    limit = "at least" if kind is BudgetKind.SPARSITY else "at most"
    lines = [
        "",
        f"budget    {limit} {show_budget(kind, outcome.budget.value)}, allocated "
        f"{outcome.method.value}: measured {show_budget(kind, outcome.measured)} "
        f"({'met' if outcome.met else 'NOT met'})",
    ]
    if outcome.predicted_metric is not None:
        lines.append(f"predicted {metric_name} {outcome.predicted_metric:.4f} from the "
                     f"sensitivity curves (measured {outcome.report.evaluation.metric:.4f})")
    if outcome.outlier_ratios is not None:
        lines.append("outliers  share of each layer's wanda scores above 5x their mean (owl "
                     "prunes layers with more of them less): " + ", ".join(
                         f"{name} {ratio:.3%}" for name, ratio in outcome.outlier_ratios.items()))
    lines += [f"note: {note}" for note in outcome.notes]
    return lines


def floor_curve_lines(result: FloorResult) -> list[str]:
    """The plans an accuracy-floor search measured, by knob, as a table."""
    name = result.metric_name
    lines = [f"{'knob':>7} {'phase':<7} {name:>10} {'stderr':>8} {'sparsity':>8} "
             f"{'MACs':>7} {'sparse B':>10}  floor"]
    for p in result.curve:
        stderr = "-" if p.stderr is None else f"{p.stderr:.4f}"
        mark = "chosen" if p is result.chosen else ("meets" if p.passes else "misses")
        lines.append(f"{p.knob:>7.4f} {p.phase:<7} {p.metric:>10.4f} {stderr:>8} "
                     f"{p.sparsity:>8.1%} {p.macs_fraction:>7.1%} {p.size_bytes:>10,}  {mark}")
    return lines


def fmt_metric(value: float, higher_is_better: bool) -> str:
    return f"{value:.4f}" if higher_is_better or abs(value) >= 0.1 else f"{value:.4g}"


def write_files(bench: Workbench, out: Path, files: dict[str, bytes],
                args: argparse.Namespace) -> None:
    """Write `files` into the folder `out` (made if missing), then their manifest: never
    over an input of the run (the source's files, --plan), and into a folder holding
    files pruneviz did not write only with --force (see `output.folders`)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PrunevizError(f"cannot create output folder {out}: {exc.strerror}") from None
    check_out(bench, out, files, args)
    for filename, data in files.items():
        write_atomic(out / filename, data)
    write_atomic(out / MANIFEST, manifest_bytes(files))


def check_out(bench: Workbench, out: Path, names: Iterable[str],
              args: argparse.Namespace) -> None:
    """Refuse, before any work, to write `names` into `out` (see `write_files`)."""
    check_target(out, [*names, MANIFEST], inputs=run_inputs(bench, args),
                 force=bool(getattr(args, "force", False)))


def run_inputs(bench: Workbench, args: argparse.Namespace) -> list[Path]:
    """The files this run reads: the source's (model, weights, data) and --plan."""
    found = list(input_files(bench.source)) if bench.source is not None else []
    plan = getattr(args, "plan", None)
    if plan is not None:
        found.append(Path(plan))
    return found
