"""Deploy: the current plan's three forms — masked, slimmed, sparse-deployed — measured."""

import json

import streamlit as st

from pruneviz.app import state
from pruneviz.app.keys import (
    DEPLOY_CARD_DOWNLOAD_KEY,
    DEPLOY_SLIM_DOWNLOAD_KEY,
    FORMS_CACHE_KEY,
)
from pruneviz.app.widgets import (
    DeltaColor,
    changed_metric,
    latency_delta,
    machine_busy,
    relative_delta,
    user_errors,
)
from pruneviz.i18n import N_, _
from pruneviz.measure.forms import measure_forms, not_equivalent
from pruneviz.measure.meter import latency_batch
from pruneviz.measure.storage import dense_bytes
from pruneviz.output.model_files import architecture_card

# the forms' names as shown (measure.forms names them in English)
FORM_NAMES = {"masked": N_("masked"), "slimmed": N_("slimmed"),
              "sparse-deployed": N_("sparse-deployed")}

st.title(_("Deploy"))
with user_errors(_("The model could not be loaded")):
    bench = state.workbench()
session = bench.session

st.markdown(_(
    "Masking keeps every tensor's shape. Here the current plan is turned into what can "
    "really ship, and each form is **measured**: the **slimmed** model has the pruned "
    "channels removed (filter/channel pruning of coupled layers), the **sparse-deployed** "
    "model runs mostly-zero Linear and 1x1 conv layers as CSR sparse matmul where that "
    "measured faster on this CPU (unstructured pruning)."
))
cache = st.session_state.setdefault(FORMS_CACHE_KEY, {})
key = (state.bench_key(), state.current_weights(), session.plan.key())
if key not in cache:
    with st.spinner(_("Building and timing the three forms ...")), \
            user_errors(_("The deployable forms could not be measured")):
        batch = latency_batch(bench.eval_data, 64)
        # data: a slimmed model that is by design not the masked one (LayerNorm over a
        # pruned width) is evaluated on its own
        measured = measure_forms(session, batch, data=bench.eval_data)
        card = None
        if measured.slim_model is not None:
            base = bench.pristine
            card = (architecture_card(bench.name, base, measured.slim_model),
                    dense_bytes(measured.slim_model.state_dict()))
        cache.clear()
        cache[key] = (measured.reports, measured.fastest(), card)
forms, best, card = cache[key]
masked, slimmed, sparse = forms

if session.plan.is_empty:
    st.info(_("Nothing is pruned yet: set a plan on the Prune page (filter or channel pruning "
              "for slimming, unstructured for sparse deployment), then come back."))
machine_busy(masked.latency)
if best is None and not session.plan.is_empty:
    st.caption(_("No form is measurably faster than all the others: the differences are "
                 "within the timing noise (each form was timed against the masked model in "
                 "the same interleaved rounds; a verdict needs a 95% interval that excludes "
                 "1x)."))
cols = st.columns(3)
for col, form in zip(cols, forms, strict=True):
    with col:
        name = _(FORM_NAMES.get(form.form, form.form))
        st.subheader(_("{form} (fastest)").format(form=name) if form is best else name)
        if form.params == 0 and form.note:
            # A slim that cannot be built, or that was built and did not compute what the
            # masked model computes, is a failure: red, and nothing to download.
            (st.error if form is slimmed else st.warning)(form.note)
            continue
        if not_equivalent(form):
            st.warning(_("Not equivalent: {note}. The numbers below are this model's own, "
                         "measured; it does not reproduce the masked model's "
                         "outputs.").format(note=form.note))
        st.metric(_("parameters stored"), f"{form.params:,}")
        for label, now, then, text in (
            (_("weight MACs / sample"), form.macs, masked.macs, f"{form.macs:,}"),
            (_("file"), form.size_bytes, masked.size_bytes,
             f"{form.size_bytes / 1024:,.1f} KiB"),
        ):
            delta, colour = relative_delta(now, then) if form is not masked else (None, "off")
            changed_metric(st, label, text, delta, colour)
        if form.latency is not None:
            gain = form.latency_speedup
            lat_delta: str | None = None
            lat_colour: DeltaColor = "off"
            if gain is not None:
                lat_delta, lat_colour = latency_delta(gain)
            changed_metric(
                st, _("latency (batch 64)"), f"{form.latency.median_ms:.2f} ms", lat_delta,
                lat_colour, arrow=False,
                help=_("Median {conditions} (p10 {p10} ms, p90 {p90} ms)").format(
                    conditions=form.latency.conditions(), p10=f"{form.latency.p10_ms:.2f}",
                    p90=f"{form.latency.p90_ms:.2f}")
                + (_("; against the masked model in the same rounds: {gain}.").format(
                    gain=gain.text())
                   if gain is not None else _("; the reference the other forms are timed "
                                              "against.")))
        difference = _("largest output difference from masked: {difference}").format(
            difference=f"{form.max_abs_diff:.2e}")
        if form.evaluation.samples:  # by design not the masked model: measured on its own
            st.metric(_("{metric} (this model's own)").format(
                metric=_("accuracy") if form.evaluation.metric_name == "accuracy"
                else form.evaluation.metric_name), f"{form.evaluation.metric:.4g}")
            st.caption(difference)
        else:
            st.caption(difference + (f" — {_(form.note)}" if form.note else ""))

gain = slimmed.latency_speedup
if slimmed.macs and gain is not None and masked.macs > 1.001 * slimmed.macs:
    macs_ratio = masked.macs / slimmed.macs
    measured_text = (_("the measured latency {ratio}x ({interval}; {share} of what the MACs "
                       "promise)").format(ratio=f"{gain.ratio:.2f}",
                                          interval=gain.interval_text(),
                                          share=f"{gain.ratio / macs_ratio:.0%}")
                     if gain.measured else
                     _("the latency change is within noise ({gain})").format(gain=gain.text()))
    st.info(_(
        "Slimming cut the weight MACs {ratio}x; {measured}. Small models and small batches "
        "spend much of their time outside the multiplications, so the measured speed-up "
        "falls short of the MACs ratio — as Torch-Pruning's ResNet-50 did: 3.85x fewer "
        "MACs, 2.19x lower latency.").format(ratio=f"{macs_ratio:.2f}", measured=measured_text))
if card is not None:
    card_json, weights = card
    st.subheader(_("Download the slimmed model"))
    st.caption(_("Safetensors weights plus a JSON architecture card; "
                 "`pruneviz.output.model_files.load_slimmed(card, weights)` rebuilds it in "
                 "these shapes (for your own model, add `base_model=` your model as built by "
                 "its factory)."))
    left, right = st.columns(2)
    left.download_button("slim.safetensors", weights, file_name="slim.safetensors",
                         mime="application/octet-stream", key=DEPLOY_SLIM_DOWNLOAD_KEY)
    right.download_button(_("slim.json (architecture card)"), json.dumps(card_json, indent=2),
                          file_name="slim.json", mime="application/json",
                          key=DEPLOY_CARD_DOWNLOAD_KEY)
