"""Lesson 2: masking versus removing. Half the filters zeroed (masked) and really removed
(slimmed), measured side by side with the unpruned model; then the masked model's sparse
file."""

from __future__ import annotations

import math

import streamlit as st

from pruneviz.app.lessons.frame import Lesson, compare, mark_done, predict_then_reveal
from pruneviz.i18n import N_, _
from pruneviz.measure.forms import TOLERANCE
from pruneviz.measure.timing import FASTER, SLOWER, Speedup
from pruneviz.output.lessons.masking import forms_bars
from pruneviz.workflows.lessons import TEACHING_SAMPLE
from pruneviz.workflows.lessons.masking import (
    FILTER_FRACTION,
    Form,
    MaskingResult,
    SparseFile,
    masking_vs_removing,
    sparse_file,
)

KEY = "masking"
SAME_SIZE = 0.99  # a file at least this share of the unpruned one's is "the same size"
BOTH, SMALLER, FASTER_ONLY, NEITHER = "both", "smaller", "faster", "neither"
NOTHING = N_("nothing chosen")
CHOICES = {
    BOTH: N_("Both shrink: a smaller file, and it runs faster"),
    SMALLER: N_("Only the file shrinks; the speed stays the same"),
    FASTER_ONLY: N_("Only the speed changes; the file stays the same size"),
    NEITHER: N_("Neither changes: same file size, same speed"),
}


def speed_text(gain: Speedup | None) -> str:
    """A speed-up against the unpruned model, with its interval and verdict."""
    if gain is None:
        return _("the reference")
    if not math.isfinite(gain.high):
        return _("too few runs to tell ({ratio:.2f}x)").format(ratio=gain.ratio)
    if gain.verdict == FASTER:
        return _("{ratio:.2f}x faster (95% CI {low:.2f}-{high:.2f}x)").format(
            ratio=gain.ratio, low=gain.low, high=gain.high)
    if gain.verdict == SLOWER:
        return _("{ratio:.2f}x slower (95% CI {low:.2f}-{high:.2f}x)").format(
            ratio=1 / gain.ratio, low=1 / gain.high, high=1 / gain.low)
    return _("within noise ({ratio:.2f}x, 95% CI {low:.2f}-{high:.2f}x)").format(
        ratio=gain.ratio, low=gain.low, high=gain.high)


def measured_choice(form: Form, unpruned: Form) -> str:
    """Which of the choices the measurement of `form` says is true."""
    smaller = form.file_bytes < SAME_SIZE * unpruned.file_bytes
    faster = form.speedup is not None and form.speedup.verdict == FASTER
    if smaller and faster:
        return BOTH
    if smaller:
        return SMALLER
    return FASTER_ONLY if faster else NEITHER


def _name(form: Form) -> str:
    return {"unpruned": _("unpruned"), "masked": _("masked"),
            "slimmed": _("slimmed")}[form.name]


def _ask(key: str) -> str:
    choice = st.radio(_("Your prediction: what happens to the masked model's file and "
                        "speed?"), list(CHOICES), format_func=lambda c: _(CHOICES[c]),
                      key=key, index=None)
    return str(choice) if choice is not None else ""


def _verdict(gain: Speedup | None) -> str:
    if gain is None:
        return _("the reference")
    return {FASTER: _("faster"), SLOWER: _("slower")}.get(gain.verdict, _("within noise"))


def _interval(gain: Speedup | None) -> str:
    if gain is None:
        return "—"
    if not math.isfinite(gain.high):
        return _("too few runs")
    return f"{gain.low:.2f}-{gain.high:.2f}x"


def _table(result: MaskingResult) -> str:
    forms = (result.unpruned, result.masked, result.slimmed)
    rows = ["| | " + " | ".join(_name(f) for f in forms) + " |", "|---|---:|---:|---:|"]
    measures = [
        (_("file (KiB)"), [f"{f.file_bytes / 1024:,.1f}" for f in forms]),
        (_("parameters"), [f"{f.params:,}" for f in forms]),
        (_("non-zero"), [f"{f.nonzero:,}" for f in forms]),
        (_("MACs"), [f"{f.macs:,}" for f in forms]),
        (_("latency (ms)"), [f"{f.latency_ms:.2f}" for f in forms]),
        (_("speed-up"), [f"{f.speedup.ratio:.2f}x" if f.speedup else "1x" for f in forms]),
        (_("95% CI"), [_interval(f.speedup) for f in forms]),
        (_("verdict"), [_verdict(f.speedup) for f in forms]),
        (_("accuracy"), [f"{100 * f.accuracy:.1f}%" for f in forms]),
    ]
    rows += [f"| {label} | " + " | ".join(values) + " |" for label, values in measures]
    return "\n".join(rows)


def _reveal(prediction: str, result: MaskingResult) -> None:
    truth = measured_choice(result.masked, result.unpruned)
    left, right = st.columns([3, 2])
    with left:
        if prediction == truth:
            st.success(_("Your prediction matches the measurement: {choice}.").format(
                choice=_(CHOICES[truth])), icon=":material/check:")
        else:
            st.warning(_("You predicted: {guess}. Measured: {choice}.").format(
                guess=_(CHOICES.get(prediction, NOTHING)),
                choice=_(CHOICES[truth])), icon=":material/close:")
        st.markdown(_table(result))
        st.caption(_("Filters zeroed: {fraction:.0%} in {layers}. Latency: {runs} rounds "
                     "on a batch of {batch}, the three models timed in turn in each round; "
                     "accuracy on {samples:,} samples.").format(
                         fraction=result.fraction, layers=", ".join(result.layers),
                         runs=result.latency.runs, batch=result.latency.batch_size,
                         samples=result.samples))
    with right:
        forms = (result.unpruned, result.masked, result.slimmed)
        base = result.unpruned
        measures = [_("file"), _("parameters"), _("MACs"), _("latency")]
        # latency: the time per pass as a share of the unpruned model's, from the ratios
        # of the rounds that timed them together (1 / the speed-up)
        percent = [[100 * f.file_bytes / base.file_bytes, 100 * f.params / base.params,
                    100 * f.macs / base.macs,
                    100 / f.speedup.ratio if f.speedup is not None else 100.0]
                   for f in forms]
        shown = [[f"{f.file_bytes / 1024:,.1f} KiB", f"{f.params:,}", f"{f.macs:,}",
                  f"{f.latency_ms:.2f} ms"] for f in forms]
        st.plotly_chart(forms_bars([_name(f) for f in forms], measures, percent, shown),
                        key=f"pv_{KEY}_bars")
    masked_same = result.masked.file_bytes >= SAME_SIZE * base.file_bytes
    st.markdown(_("**Why.** The masked model keeps every tensor at its full shape and "
                  "writes zeros into it: a zero takes as many bytes as any other number, "
                  "and the processor multiplies by it all the same, so its file "
                  "is {masked_kib:,.1f} KiB against {base_kib:,.1f} KiB and its speed is "
                  "{masked_speed}.").format(
                      masked_kib=result.masked.file_bytes / 1024,
                      base_kib=base.file_bytes / 1024,
                      masked_speed=speed_text(result.masked.speedup))
                if masked_same else
                _("**Why.** The masked model's file measured {masked_kib:,.1f} KiB against "
                  "{base_kib:,.1f} KiB, and its speed is {masked_speed}.").format(
                      masked_kib=result.masked.file_bytes / 1024,
                      base_kib=base.file_bytes / 1024,
                      masked_speed=speed_text(result.masked.speedup)))
    same = result.max_abs_diff <= TOLERANCE
    st.markdown((_("The slimmed model really has fewer filters: smaller tensors hold "
                   "{params:.0%} of the parameters and compute {macs:.0%} of the MACs, so "
                   "its file is {kib:,.1f} KiB and its speed is {speed}. Its accuracy "
                   "equals the masked model's ({masked:.1f}% and {slim:.1f}%): it computes "
                   "the same function (largest output difference {diff:.1e}).") if same else
                 _("The slimmed model really has fewer filters: smaller tensors hold "
                   "{params:.0%} of the parameters and compute {macs:.0%} of the MACs, so "
                   "its file is {kib:,.1f} KiB and its speed is {speed}. Its outputs differ "
                   "from the masked model's by up to {diff:.1e} (accuracy {slim:.1f}% "
                   "against {masked:.1f}%).")).format(
                      params=result.slimmed.params / base.params,
                      macs=result.slimmed.macs / base.macs,
                      kib=result.slimmed.file_bytes / 1024,
                      speed=speed_text(result.slimmed.speedup),
                      masked=100 * result.masked.accuracy, slim=100 * result.slimmed.accuracy,
                      diff=result.max_abs_diff))


def _ask_sparse(key: str) -> float:
    return float(st.slider(_("Your prediction: the masked model saved as a sparse file "
                             "(only the non-zero values and where they are), as a share "
                             "of the dense file (%)"), 0, 100, 50, key=key))


def _reveal_sparse(prediction: float, result: SparseFile) -> None:
    share = 100 * result.sparse_bytes / result.dense_bytes
    left, right = st.columns([1, 1])
    left.metric(_("Sparse file"), f"{result.sparse_bytes / 1024:,.1f} KiB",
                delta=_("{share:.0f}% of the dense {dense:,.1f} KiB").format(
                    share=share, dense=result.dense_bytes / 1024), delta_color="off")
    with right:
        st.markdown(compare(prediction, share))
        st.markdown(_("Storing only the {nonzero:,} non-zero values of {params:,}, with a "
                      "bitmask or index of where each sits, makes the zeros cheap on disk; "
                      "to run, the weights are unpacked into dense tensors again, so the "
                      "speed is the masked model's.").format(nonzero=result.nonzero,
                                                              params=result.params))


def render() -> None:
    """Step 1: masked vs slimmed vs unpruned; step 2: the sparse file."""
    st.markdown(_("Pruning tools usually **mask**: they write zeros into the weights and "
                  "keep every tensor's shape. Here {fraction:.0%} of the filters of each "
                  "layer that has them are zeroed (the smallest by l1 norm), and the same "
                  "filters are also really **removed** (the slimmed model).").format(
                      fraction=FILTER_FRACTION))
    first = predict_then_reveal(KEY, "forms", ask=_ask,
                                run=lambda: masking_vs_removing(TEACHING_SAMPLE),
                                reveal=_reveal)
    if first is None:
        return
    st.markdown(_("**Step 2.** Zeros do not shrink a dense file. What if the file stores "
                  "only the non-zero weights?"))
    second = predict_then_reveal(KEY, "sparse", ask=_ask_sparse,
                                 run=lambda: sparse_file(TEACHING_SAMPLE),
                                 reveal=_reveal_sparse)
    if second is not None:
        mark_done(KEY)


LESSON = Lesson(
    key="masking",
    title=N_("Masking versus removing"),
    question=N_("If half of a model's weights are zero, is its file half the size "
                "and is it twice as fast?"),
    render=render,
    further_page="app_pages/deploy.py",
    further_label=N_("Compare masked and slimmed models on the Deploy page"),
)
