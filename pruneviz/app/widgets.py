"""Reusable Streamlit pieces for the pages: error boundary, live metrics, honesty note."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import streamlit as st

from pruneviz.core.criteria import iter_criteria
from pruneviz.core.explain import criterion_label
from pruneviz.core.granularity import Granularity
from pruneviz.data.tensors import TensorData
from pruneviz.errors import PrunevizError, shortened
from pruneviz.i18n import N_, _, language, use_language
from pruneviz.measure.meter import Report
from pruneviz.measure.metrics import EvalResult, Latency
from pruneviz.measure.timing import FASTER, WITHIN_NOISE, Speedup
from pruneviz.workflows.experiments import Experiment
from pruneviz.workflows.workspace import Workspace

HONESTY_NOTE = N_(
    "**What masking changes, honestly.** A slider writes zeros into the weights. "
    "The *dense* file and the *dense* latency stay the same: the same tensors are still "
    "stored and multiplied. What changes is the accuracy, the number of non-zero "
    "parameters, the *effective* MACs (what a kernel that skips zeros would do) and the "
    "*sparse* file. Real speed-ups need the structure removed or sparse kernels."
)


@contextmanager
def user_errors(what: str) -> Iterator[None]:
    """Show problems as st.error with what to do, never a traceback; then stop the page.
    `what` says what went wrong ("The export failed"): the message is `what: why`."""
    try:
        yield
    except PrunevizError as exc:
        st.error(what + _(": ") + shortened(str(exc)))
        st.stop()
    except MemoryError:
        st.error(_("{what}: this machine ran out of memory. Nothing was changed; close other "
                   "tabs or programs, or work on a smaller model or evaluation set.")
                 .format(what=what))
        st.stop()
    except (ValueError, RuntimeError) as exc:
        st.error(_("{what}: {why}. Try another setting, or reset the plan on the Prune page.")
                 .format(what=what, why=shortened(str(exc))))
        st.stop()
    except Exception as exc:  # noqa: BLE001 - the app's last guard: a message, not a traceback
        # (st.rerun / st.stop are BaseExceptions: they pass through.) Most likely the
        # user's own model or data code raised something unexpected.
        st.error(_("{what}: {kind}: {why}. If this is your own model or data, check its code; "
                   "otherwise reset the plan on the Prune page.")
                 .format(what=what, kind=type(exc).__name__, why=shortened(str(exc))))
        st.stop()


DeltaColor = Literal["normal", "inverse", "off"]


def _kib(n: int) -> str:
    kib = n / 1024
    return f"{kib:,.1f} KiB" if kib < 100 else f"{kib:,.0f} KiB"




def relative_delta(now: float, then: float) -> tuple[str | None, Literal["inverse", "off"]]:
    """A percentage change for st.metric; grey when there is no change."""
    if not then:
        return None, "off"
    change = (now / then - 1) * 100
    if abs(change) < 0.05:
        return _("no change"), "off"
    return f"{change:+.1f}%", "inverse"


def count_delta(now: int, then: int) -> tuple[str | None, Literal["inverse", "off"]]:
    """The change of an exact count (parameters, MACs, bytes) for st.metric: "no change"
    only when the counts are equal, so that pruning a few weights of a large model still
    shows; the difference itself when it is under 0.05% of the count."""
    if not then:
        return None, "off"
    if now == then:
        return _("no change"), "off"
    change = (now / then - 1) * 100
    if abs(change) < 0.05:
        return f"{now - then:+,}", "inverse"
    return f"{change:+.1f}%", "inverse"


def latency_delta(gain: Speedup) -> tuple[str, DeltaColor]:
    """A latency change for st.metric, from the speed-up over the reference timed in the same
    rounds: "1.73x faster (CI 1.62-1.81)" in green or "1.20x slower (CI ...)" in red only
    when the 95% interval excludes 1x; else "within noise" in grey."""
    if not gain.measured:
        return _(WITHIN_NOISE), "off"
    if gain.verdict == FASTER:
        return _("{ratio}x faster (CI {low}-{high})").format(
            ratio=f"{gain.ratio:.2f}", low=f"{gain.low:.2f}", high=f"{gain.high:.2f}"), "normal"
    return _("{ratio}x slower (CI {low}-{high})").format(
        ratio=f"{1 / gain.ratio:.2f}", low=f"{1 / gain.high:.2f}",
        high=f"{1 / gain.low:.2f}"), "inverse"


def machine_busy(latency: Latency | None) -> None:
    """Say so when the machine was too busy for `latency` (and the figures timed with it)
    to be trusted: its runs varied widely, or the load was high (`Latency.busy`)."""
    if latency is not None and (reason := latency.busy()) is not None:
        st.warning(reason, icon=":material/speed:")


def changed_metric(col: Any, label: str, value: str, delta: str | None, color: DeltaColor, *,
                   help: str | None = None, arrow: bool = True) -> None:
    """st.metric with its change against a reference. A change without a direction ("no
    change", "within noise": drawn grey) gets no arrow; an arrow would say it went up.
    `arrow=False`: none either (a speed-up's "1.7x faster" says its direction itself)."""
    col.metric(label, value, delta, delta_color=color,
               delta_arrow="off" if color == "off" or not arrow else "auto", help=help)


def localized(label: Callable[[Any], str]) -> Callable[[Any], str]:
    """A format_func that shows options in the language of this run, whenever it is called
    (Streamlit's AppTest calls format_funcs again from the test's own thread, which has no
    tab and so no language: the options would no longer match)."""
    code = language()

    def show(value: Any) -> str:
        with use_language(code):
            return label(value)

    return show


def criteria_for(granularity: str) -> list[str]:
    """Criteria that can rank structures of this granularity."""
    return [spec.name for spec in iter_criteria(Granularity(granularity))]


def criterion_select(container: Any, granularity: str, key: str,
                     preferred: str | None = None) -> str:
    """A criterion picker offering what fits `granularity`; when the granularity changes
    and the chosen criterion no longer fits, `preferred` (if it fits) or the first one."""
    options = criteria_for(granularity)
    if st.session_state.get(key) not in options:
        st.session_state[key] = preferred if preferred in options else options[0]
    return str(container.selectbox(_("Criterion"), options, format_func=localized(criterion_label),
                                   key=key))


def shows_percent(data: TensorData) -> bool:
    """Whether the data's metric is an accuracy: shown in %, its changes in points."""
    return data.metric_name.endswith("accuracy") and data.higher_is_better


def experiment_rows(experiments: Iterable[Experiment], data: TensorData) -> list[dict[str, Any]]:
    """The experiments as table rows, an accuracy in % (column "accuracy %") as on every
    other part of the pages, not as a fraction beside them."""
    rows = [e.to_row() for e in experiments]
    if not shows_percent(data):
        return rows
    column = f"{data.metric_name} %"
    return [{(column if k == "metric" else k): (100 * v if k == "metric" and v is not None
                                                 else v) for k, v in row.items()}
            for row in rows]


def metric_label(name: str) -> str:
    """A metric's name as the pages show it: accuracy and top-k accuracy translated; mse
    and the name of a user's metric function as they are."""
    if name == "accuracy":
        return _("accuracy")
    if name.endswith(" accuracy"):
        return _("{kind} accuracy").format(kind=name.removesuffix(" accuracy"))
    return name


def show_metric(value: float, percent: bool) -> str:
    """A metric value as the pages show it."""
    return f"{value:.2%}" if percent else f"{value:.5g}"


MEASURING = N_("measuring…")


def compared(report: Report, baseline: Report) -> tuple[EvalResult, EvalResult]:
    """The evaluations to show and compare, like with like: both on the whole evaluation
    set when both are measured there, else both on the live subset."""
    if report.evaluation_full is not None and baseline.evaluation_full is not None:
        return report.evaluation_full, baseline.evaluation_full
    return report.evaluation, baseline.evaluation


def evaluation_text(ev: EvalResult, population: int | None) -> tuple[str, str]:
    """How sure the metric `ev` (drawn from `population` samples) is: a short suffix for
    the value ("±1.2 pts", "" on the whole set) and a sentence for its help."""
    percent = ev.metric_name.endswith("accuracy")
    if population is None or ev.samples >= population:
        return "", _("Measured on the whole evaluation set ({samples} samples).").format(
            samples=f"{ev.samples:,}")
    interval = ev.interval(population)
    if interval is None:
        return "", _("Live: measured on a fixed subset of {samples} of the {population} "
                     "evaluation samples; this metric gives no per-sample values, so no "
                     "interval.").format(samples=f"{ev.samples:,}", population=f"{population:,}")
    half = (interval[1] - interval[0]) / 2
    shown = (_("±{half} pts").format(half=f"{half * 100:.1f}") if percent
             else f"±{half:.3g}")
    method = _("Wilson interval") if ev.proportion else _("standard error")
    return shown, _("Live: measured on a fixed subset of {samples} of the {population} "
                    "evaluation samples; the whole set's value is within {low} to {high} with "
                    "~95% confidence (finite-population {method}). The whole set is measured "
                    "in the background.").format(
        samples=f"{ev.samples:,}", population=f"{population:,}", low=f"{interval[0]:.4g}",
        high=f"{interval[1]:.4g}", method=method)


def metrics_row(report: Report, baseline: Report, data: TensorData, *,
                measuring: bool = False) -> None:
    """The live metrics, each with its change against the unpruned baseline. Figures not
    measured yet show `MEASURING` while a background refinement runs (`measuring`)."""
    ev, base = compared(report, baseline)
    plus, sure = evaluation_text(ev, report.population)
    cols = st.columns(4) + st.columns(4)[:3]
    higher_is_better = data.higher_is_better
    if shows_percent(data):
        change = (ev.metric - base.metric) * 100
        changed_metric(
            cols[0], metric_label(ev.metric_name), f"{ev.metric:.2%} {plus}".strip(),
            _("{change} pts").format(change=f"{change:+.2f}") if abs(change) >= 0.005
            else _("no change"),
            "normal" if abs(change) >= 0.005 else "off",
            help=_("{sure} The change is against the unpruned model on the same samples.")
            .format(sure=sure),
        )
    else:
        change = ev.metric - base.metric
        changed_metric(
            cols[0], metric_label(ev.metric_name), f"{ev.metric:.5g} {plus}".strip(),
            f"{change:+.5g}" if change else _("no change"),
            ("normal" if higher_is_better else "inverse") if change else "off",
            help=(_("{sure} Higher is better; the change is against the unpruned model on "
                    "the same samples.") if higher_is_better
                  else _("{sure} Lower is better; the change is against the unpruned model on "
                         "the same samples.")).format(sure=sure),
        )
    delta, color = count_delta(report.params_nonzero, baseline.params_nonzero)
    changed_metric(
        cols[1], _("non-zero params"), f"{report.params_nonzero:,}", delta, color,
        help=_("of {total} parameters ({zero} zero)").format(
            total=f"{report.params_total:,}", zero=f"{report.sparsity:.1%}"),
    )
    delta, color = count_delta(report.macs_effective, baseline.macs_effective)
    changed_metric(
        cols[2], _("effective MACs"), f"{report.macs_effective:,}", delta, color,
        help=_("Weight multiply-accumulates per sample if zero weights were skipped. "
               "Dense: {dense}.").format(dense=f"{report.macs_dense:,}"),
    )
    for col, label, now, then, tip in (
        (cols[4], _("dense file"), report.sizes.dense, baseline.sizes.dense,
         _("fp32 safetensors, as saved: masking does not shrink it")),
        (cols[5], _("sparse file"), report.sizes.sparse, baseline.sizes.sparse,
         _("values + 1-bit mask or CSR per tensor, whichever is smaller")),
        (cols[6], _("gzip file"), report.sizes.gzip, baseline.sizes.gzip,
         _("gzip of the dense file")),
    ):
        if now is None:
            col.metric(label, _(MEASURING) if measuring else _("not measured"),
                       help=_("{tip}; compressing the whole file is slow, so it is measured "
                              "in the background after the plan settles").format(tip=tip))
            continue
        in_bytes = _("{tip}; {count} bytes").format(tip=tip, count=f"{now:,}")
        if then is None:  # the unpruned model's is not measured yet: nothing to compare
            col.metric(label, _kib(now), help=in_bytes)
            continue
        delta, color = count_delta(now, then)
        changed_metric(col, label, _kib(now), delta, color, help=in_bytes)
    base_lat = report.latency_reference or baseline.latency
    if report.latency is None:
        cols[3].metric(_("latency"), _(MEASURING) if measuring else _("not measured"),
                       help=_("Timed in the background once the plan settles, interleaved "
                              "with the unpruned model, so that a slider move never waits for "
                              "it."))
    elif base_lat is not None:
        lat, gain = report.latency, report.latency_speedup
        lat_delta: str | None = None
        lat_color: DeltaColor = "off"
        if gain is not None:
            lat_delta, lat_color = latency_delta(gain)
        base_ms = f"{base_lat.median_ms:.2f}"
        against = (_("Against the unpruned model timed in the same rounds, interleaved "
                     "({ms} ms): {speedup}").format(ms=base_ms, speedup=gain.text())
                   if gain is not None
                   else _("The unpruned model: {ms} ms, not timed in the same rounds, so no "
                          "change is claimed").format(ms=base_ms))
        changed_metric(
            cols[3], _("latency"), f"{lat.median_ms:.2f} ms", lat_delta, lat_color, arrow=False,
            help=_("Median {conditions} (p10 {p10} ms, p90 {p90} ms). {against}. A change is "
                   "shown only when its 95% interval excludes 1x.").format(
                conditions=lat.conditions(), p10=f"{lat.p10_ms:.2f}", p90=f"{lat.p90_ms:.2f}",
                against=against),
        )
        machine_busy(base_lat)


def run_and_cancel(run_label: str, *, running: bool, run_key: str, cancel_key: str,
                   cancel: Callable[[], None], cancel_help: str) -> bool:
    """A background job's two buttons side by side: start it (off while it runs) and
    cancel it (on only while it runs). Returns whether the start button was clicked."""
    cols = st.columns([1, 1, 5])
    clicked = cols[0].button(run_label, type="primary", disabled=running, key=run_key,
                             width="stretch")
    cols[1].button(_("Cancel"), disabled=not running, key=cancel_key, on_click=cancel,
                   width="stretch", help=cancel_help)
    return bool(clicked)


def compact_count(n: int) -> str:
    """A large count short enough for a metric card (the exact one goes in its help)."""
    for size, unit in ((1e9, "G"), (1e6, "M")):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,}"


def file_size(n: int) -> str:
    """Bytes as KiB or MiB."""
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 1024:,.1f} KiB"


def baseline_metrics(space: Workspace) -> None:
    """The unpruned model's measured figures. Its latency and whole-set metric are
    measured in the background after opening: until they are in, the cards say so and
    redraw themselves every second."""
    space.refiner.start()
    every = 1.0 if space.refiner.running() else None
    data = space.bench.eval_data

    st.html("<style>.st-key-pv_baseline [data-testid='stMetricValue'] "
            "{font-size: 1.6rem;}</style>")

    @st.fragment(run_every=every)
    def draw() -> None:
        running = space.refiner.running()
        base = space.baseline()
        ev = base.best_evaluation
        plus, sure = evaluation_text(ev, base.population)
        cols = st.container(key="pv_baseline").columns(5)
        better = (_("{sure} Higher is better.") if data.higher_is_better
                  else _("{sure} Lower is better.")).format(sure=sure)
        cols[0].metric(metric_label(ev.metric_name),
                       f"{show_metric(ev.metric, shows_percent(data))} {plus}".strip(),
                       help=better)
        cols[1].metric(_("parameters"), compact_count(base.params_total),
                       help=_("{count} parameters").format(count=f"{base.params_total:,}"))
        cols[2].metric(_("weight MACs / sample"), compact_count(base.macs_dense),
                       help=_("{count} multiply-accumulates of the weights")
                       .format(count=f"{base.macs_dense:,}"))
        cols[3].metric(_("file (safetensors)"), file_size(base.sizes.dense),
                       help=_("{count} bytes").format(count=f"{base.sizes.dense:,}"))
        if base.latency is not None:
            lat = base.latency
            cols[4].metric(_("latency"), f"{lat.median_ms:.2f} ms ±{lat.spread / 2:.0%}",
                           help=_("Median {conditions}; its runs spread from {p10} ms (p10) to "
                                  "{p90} ms (p90). Latency timed in another tab at another "
                                  "moment agrees within this spread unless the machine is busy "
                                  "(then this page says so).").format(
                               conditions=lat.conditions(), p10=f"{lat.p10_ms:.2f}",
                               p90=f"{lat.p90_ms:.2f}"))
        else:
            cols[4].metric(_("latency"), _(MEASURING) if running else _("not measured"),
                           help=_("Timed in the background after opening, so that the page "
                                  "never waits for it."))
        machine_busy(base.latency)
        if every is not None and not running:
            st.rerun()  # all in: redraw the page once, without polling

    draw()
