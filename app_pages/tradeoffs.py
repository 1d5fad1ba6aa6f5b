"""Trade-offs: every configuration evaluated in this tab, on measured-metric charts."""

from functools import reduce

import streamlit as st

from pruneviz.app import keys, state, sweep_view
from pruneviz.app.sweep_view import metric_label
from pruneviz.app.widgets import experiment_rows, shows_percent, user_errors
from pruneviz.app.worker import record_finished_run, record_sweep_points
from pruneviz.i18n import N_, _
from pruneviz.measure.compression import INT4, INT8, INT8_STATIC, SVD
from pruneviz.output.tradeoff_figures import (
    best_form_scatter,
    history_tree,
    recovery_figure,
    recovery_plans,
    tradeoff_scatter,
)
from pruneviz.workflows.experiments import describe_plan, technique_name, weights_name
from pruneviz.workflows.techniques import APPLY_TO, BOTH, CURRENT_PLAN, ORIGINAL_MODEL

APPLY_NAMES = {ORIGINAL_MODEL: N_("original model"), CURRENT_PLAN: N_("current pruned plan"),
               BOTH: N_("both")}


def apply_name(choice: str) -> str:
    """What a technique applies to, in the tab's language."""
    return _(APPLY_NAMES.get(choice, choice))


st.title(_("Trade-offs"))
with user_errors(_("The model could not be loaded")):
    bench = state.workbench()
record_finished_run(bench)  # a fine-tuning run that ended while another page was shown
record_sweep_points()  # configurations a background sweep measured since the last run
log = state.experiment_log()
experiments = list(log)
baseline = experiments[0]
metric_name = baseline.metric_name
shown_metric = metric_label(metric_name)
higher = bench.eval_data.higher_is_better

st.caption(_(
    "{count} configuration(s) measured in this tab: every slider position you "
    "stopped at on the Prune page, plus any sweep below and every fine-tuning run (diamonds, "
    "joined to the same plan without retraining). The Pareto front joins the "
    "configurations that no other one beats on both axes, whatever their technique. Sizes "
    "and latency are of the masked model saved and run densely, except 'sparse file', the "
    "best form for masked weights; int8, int4 and low-rank points are their own models' "
    "files and timings (int4: storage only, not timed).").format(count=len(experiments))
)
sweep_view.sweep_section(bench, expanded=len(experiments) < 3)
with st.expander(_("Combine with other techniques: int8 and int4 quantization, low-rank "
                   "factorization"),
                 expanded=bool(state.last_compression())):
    st.caption(_("Each applies to a copy of the unpruned model, of the model with the current "
               "plan ({plan}), or both; every resulting model "
               "is measured like a pruned one (metric on the evaluation data, its weight "
               "file's bytes, latency against the unpruned model) and becomes a point on the "
               "charts below: squares for dynamic int8, hexagons for static int8, "
               "triangles down for int4, triangles up for SVD, stars on a pruned "
                 "model.").format(plan=describe_plan(bench.session.plan)))
    int8_col, svd_col = st.columns(2)
    with int8_col.form(keys.INT8_FORM_KEY):
        st.markdown(_("**Dynamic int8 quantization**"))
        st.caption(_("Linear and LSTM/GRU weights stored as 8-bit integers with a scale; "
                     "activations quantized on the fly. The numbers shown are measured on the "
                     "int8 model."))
        int8_on = st.radio(_("apply to"), APPLY_TO, index=2, key=keys.INT8_ON_KEY,
                           format_func=apply_name)
        if st.form_submit_button(_("Quantize and measure"), key=keys.INT8_GO_KEY):
            with st.spinner(_("Quantizing, evaluating and timing ...")), \
                    user_errors(_("The int8 model could not be measured")):
                state.record_compression(INT8, int8_on)
            st.rerun()
    with svd_col.form(keys.SVD_FORM_KEY):
        st.markdown(_("**Low-rank (SVD) of linear layers**"))
        st.caption(_("Each Linear becomes two thinner ones from its weight's truncated SVD, "
                     "where that stores fewer weights. The numbers shown are measured on the "
                     "factorized model."))
        svd_rank = st.slider(_("rank kept (% of each layer's full rank)"), 10, 100, 50, step=5,
                             key=keys.SVD_RANK_KEY)
        svd_on = st.radio(_("apply to"), APPLY_TO, index=2, key=keys.SVD_ON_KEY,
                          format_func=apply_name)
        if st.form_submit_button(_("Factorize and measure"), key=keys.SVD_GO_KEY):
            with st.spinner(_("Factorizing, evaluating and timing ...")), \
                    user_errors(_("The low-rank model could not be measured")):
                state.record_compression(SVD, svd_on, svd_rank / 100)
            st.rerun()
    static_col, int4_col = st.columns(2)
    with static_col.form(keys.INT8_STATIC_FORM_KEY):
        st.markdown(_("**Static int8 quantization (Conv + Linear)**"))
        st.caption(_("Convolutions and Linears run int8 kernels: activation ranges calibrated "
                     "on the calibration data, weights per output channel (a pruned weight "
                     "stays 0). Measured on its saved file, reloaded; layers left float are "
                     "named."))
        static_on = st.radio(_("apply to"), APPLY_TO, index=2, key=keys.INT8_STATIC_ON_KEY,
                             format_func=apply_name)
        if st.form_submit_button(_("Quantize and measure"), key=keys.INT8_STATIC_GO_KEY):
            with st.spinner(_("Calibrating, quantizing, saving, evaluating and timing ...")), \
                    user_errors(_("The static int8 model could not be measured")):
                state.record_compression(INT8_STATIC, static_on)
            st.rerun()
    with int4_col.form(keys.INT4_FORM_KEY):
        st.markdown(_("**Weight-only int4 (group-wise)**"))
        st.caption(_("Linear and Conv weights stored as 4-bit integers, a scale per group. "
                     "Storage only: no int4 kernel on CPU, so its latency is not measured."))
        int4_group = st.select_slider(_("weights per group (at most)"), [32, 64, 128, 256],
                                      value=128, key=keys.INT4_GROUP_KEY)
        int4_on = st.radio(_("apply to"), APPLY_TO, index=2, key=keys.INT4_ON_KEY,
                           format_func=apply_name)
        if st.form_submit_button(_("Quantize and measure"), key=keys.INT4_GO_KEY):
            with st.spinner(_("Quantizing, saving and evaluating ...")), \
                    user_errors(_("The int4 model could not be measured")):
                state.record_compression(INT4, int4_on, group_size=int(int4_group))
            st.rerun()
    for line, notes in state.last_compression():
        st.caption(f":material/check: {line}")
        for note in notes:
            st.caption(f":material/info: {note}")
tabs = st.tabs([_("vs sparse file size"), _("vs latency"), _("vs effective MACs"),
               _("vs dense file size")])
for tab, (field, title) in zip(
    tabs,
    [("size_sparse_bytes", _("sparse file size (bytes)")),
     ("latency_ms", _("latency (ms, batch 64)")),
     ("macs_effective", _("effective MACs per sample")),
     ("size_dense_bytes", _("dense file size (bytes)"))],
    strict=True,
):
    # storage-only points (int4) go in too: the latency chart says why they are not drawn
    points = [e for e in experiments if getattr(e, field) is not None or e.storage_only]
    tab.plotly_chart(
        tradeoff_scatter(points, x_field=field, x_title=title, metric_name=shown_metric,
                         higher_is_better=higher, baseline=baseline),
        key=keys.tradeoff_chart_key(field),
    )
    if field == "latency_ms":
        tab.caption(_("Each configuration was timed at its own moment, interleaved with the "
                      "unpruned model: compare it with the unpruned model by the table's "
                      "'latency_vs_unpruned' column, which names a change only when its 95% "
                      "interval excludes 1x; differences between points within their spread "
                      "are machine noise."))
    devices = sorted({e.latency_device for e in points if e.latency_ms is not None
                      and e.latency_device})
    if field == "latency_ms" and len(devices) > 1:
        tab.caption(":material/info: " + _(
            "These latencies were timed on {devices} (int8 models run on the CPU only): "
            "compare points timed on one device; the experiments table says where each "
            "was.").format(devices=reduce(
                lambda first, second: _("{first} and {second}").format(first=first,
                                                                       second=second),
                devices)))

recoverable = recovery_plans(experiments)
if st.checkbox(_("Show one plan recovered by reconstruction and by training, side by side"),
               key=keys.RECOVERY_SHOW_KEY, disabled=not recoverable,
               help=_("One-shot, one-shot + refit (Prune page: 'Refit the kept weights') and "
                      "fine-tuned (Fine-tune page) for the same plan.") + (
                   "" if recoverable else _(" Refit or fine-tune a plan first."))):
    chosen_plan = st.selectbox(
        _("Plan"), [e.id for e in recoverable], key=keys.RECOVERY_PLAN_KEY,
        format_func=lambda i: f"#{i}: {log.get(i).label}")
    st.plotly_chart(
        recovery_figure(experiments, plan_key=log.get(chosen_plan).plan_key,
                        baseline=baseline, metric_name=shown_metric,
                        higher_is_better=higher),
        key=keys.RECOVERY_CHART_KEY)
    st.caption(_("Refit: the kept weights solved to reproduce each unpruned layer's outputs "
                 "on calibration samples (seconds, no training). Fine-tuned: the pruned model "
                 "retrained with the pruned weights held at zero."))

st.subheader(_("What would really ship"))
found = state.best_forms()
if st.button(_("Measure the deployable forms of every configuration"), key=keys.FORMS_ALL_KEY,
             help=_("Builds each configuration's slimmed and sparse-deployed models and times "
                    "them together with the masked model; a form other than masked is kept "
                    "only when it reproduces the masked outputs and measured faster (95% "
                    "interval).")):
    with st.spinner(_("Slimming, deploying and timing every configuration ...")), \
            user_errors(_("The deployable forms could not be measured")):
        state.measure_best_forms()
    found = state.best_forms()
if found:
    # forms are of masked models: an int8 or factorized point has none of its own
    shown = [e for e in experiments if e.id in found and e.is_pruning]
    st.plotly_chart(
        best_form_scatter(
            [f"#{e.id} {e.label} ({found[e.id].size_bytes:,} B)" for e in shown],
            [found[e.id].latency_ms or 0.0 for e in shown], [e.metric for e in shown],
            [found[e.id].form or "" for e in shown], metric_name=shown_metric),
        key=keys.BEST_FORMS_TABLE_KEY)
    st.caption(_("Each point is drawn at the form to ship for speed: slimmed or "
                 "sparse-deployed when it reproduces the masked model's outputs and measured "
                 "faster than masked (a 95% interval excluding 1x), else masked; the legend "
                 "says which."))
    busy = next((r.latency.busy() for r in found.values()
                 if r.latency is not None and r.latency.busy() is not None), None)
    if busy is not None:
        st.warning(busy, icon=":material/speed:")
else:
    st.caption(_("The charts above use the masked model as it is. Measure the deployable "
                 "forms to see each configuration at the real form to ship."))

st.subheader(_("History"))
st.plotly_chart(history_tree(experiments, metric_name=shown_metric,
                             current=state.workspace().head, percent=shows_percent(
                                 bench.eval_data)), key=keys.HISTORY_TREE_KEY)
st.caption(_("Each configuration is joined to the one it came from: moving a slider "
             "continues a line; restoring an earlier configuration below and changing it "
             "starts a branch. Sweeps, budgets and int8 / SVD of the unpruned model come from "
             "#0. The ring is the plan on the Prune page now."))

st.subheader(_("Experiments"))
st.dataframe(experiment_rows(experiments, bench.eval_data), hide_index=True,
             column_config={f"{metric_name} %": st.column_config.NumberColumn(format="%.2f")})

labels = {e.id: f"#{e.id}: {e.label}" for e in experiments}
chosen = st.selectbox(_("Experiment"), list(labels), format_func=labels.__getitem__,
                      index=len(experiments) - 1, key=keys.TRADEOFF_CHOICE_KEY)
chosen_weights = log.get(chosen).weights
if not log.get(chosen).is_pruning:
    st.caption(":material/info: " + _(
        "#{id} is **{technique}**: restoring it puts its pruning plan on the Prune page, "
        "without the {step} step (the Prune page edits masks only).").format(
        id=chosen, technique=technique_name(log.get(chosen).technique),
        step=log.get(chosen).technique.removeprefix("prune+")))
if chosen_weights != state.current_weights():
    st.caption(":material/model_training: " + _(
        "#{id} was measured on the **{weights}** weights: restoring it puts those weights in "
        "this tab, with its plan.").format(id=chosen, weights=weights_name(chosen_weights)))
cols = st.columns(3)
if cols[0].button(_("Restore this plan on the Prune page"), key=keys.RESTORE_KEY):
    with user_errors(_("The plan could not be restored")):
        state.restore_experiment(chosen)
    st.switch_page("app_pages/prune.py")
cols[1].download_button(_("Download experiments (CSV)"), log.to_csv(),
                        file_name="pruneviz-experiments.csv", mime="text/csv")
cols[2].download_button(_("Download this plan (JSON)"), log.plan(chosen).to_json(),
                        file_name=f"pruneviz-plan-{chosen}.json", mime="application/json")
