"""Model (home): the chosen model, its measured baseline, its layers, and how pruning works;
upload other weights for the same architecture, and evaluation or training data; choose the
live evaluation subset."""

import streamlit as st

from pruneviz.app import data_view, state, widgets
from pruneviz.app.keys import (
    UPLOAD_WIDGET_KEY,
)
from pruneviz.app.widgets import user_errors
from pruneviz.core.layers import model_summary
from pruneviz.data.sources import DEFAULT_EVAL_SUBSET, LIVE_BUDGET_S, MIN_LIVE_SUBSET
from pruneviz.i18n import _

st.title(_("pruneviz — see what pruning does to a real model"))
with user_errors(_("The model could not be loaded")):
    loaded = state.current_loaded()
    bench = state.workbench()
    summary = model_summary(bench.session.model, bench.session.example_input)

upload = state.current_upload()
title, description = loaded.title, loaded.description
if loaded.source.is_sample:  # the sample cards are in the catalogues; a user's model is not
    title, description = _(title), _(description)
st.markdown(f"**{title}** — {description}")
for note in loaded.notes:
    st.caption(f":material/info: {note}")
if bench.session.graph_note:
    st.warning(_("Coupled layers could not be found: {reason}. Filter and channel pruning "
                 "still zero whole structures, layer by layer, but nothing can be removed for "
                 "real (Deploy cannot slim). The graph is traced with Torch-Pruning: a model "
                 "it cannot trace fails the same way there.")
               .format(reason=bench.session.graph_note))
if upload is not None:
    st.info(_("This tab prunes the weights you uploaded, **{name}** (values hash {digest}). "
              "The model's own weights are untouched.")
            .format(name=upload.name, digest=upload.digest))
    for note in upload.notes:
        st.caption(f":material/info: {note}")

widgets.baseline_metrics(state.workspace())
ev = bench.baseline.evaluation
full = bench.full_data
if loaded.source.is_sample and loaded.source.data is None and \
        state.current_data_upload("evaluation") is None:
    where = _("held-out test samples of scikit-learn's bundled handwritten digits (8x8 "
              "images, never seen in training)")
else:
    where = _("samples of {data}").format(data=full.name)
shown = (_("{count} {where}").format(count=f"{ev.samples:,}", where=where)
         if bench.eval_full is None
         else _("a fixed class-balanced subset of {count} of the {total} {where}")
         .format(count=f"{ev.samples:,}", total=f"{len(full):,}", where=where))
memory = bench.session.memory()
st.caption(_("Measured just now on this machine: {shown}. This tab's pruning session holds "
             "{total} MiB: its copy of the model ({model} MiB) and the score tables of the "
             "criteria tried ({tables} MiB, at most {budget} MiB beyond those the current plan "
             "uses); the original weights are shared, not copied.")
           .format(shown=shown, total=f"{memory.total / 2**20:,.1f}",
                   model=f"{memory.model / 2**20:,.1f}", tables=f"{memory.tables / 2**20:,.1f}",
                   budget=f"{memory.tables_budget / 2**20:,.1f}"))
st.caption(_(":material/memory: This tab runs on **{device}**: masks, scores, evaluation and "
             "latency (start the app with `-- --device cpu` or `-- --device cuda` to choose).")
           .format(device=state.device_label(loaded.device)))

with st.expander(_("Other weights, live evaluation subset"), expanded=upload is not None):
    st.markdown(_(
        "**Use other weights for this architecture.** A `.safetensors` file, or a `.pt` / "
        "`.pth` *state dict* (read with `torch.load(weights_only=True)`). Nothing is "
        "unpickled: whole pickled models, TorchScript and `.pt2` programs are refused, "
        "because loading them can run code."))
    file = st.file_uploader(_("Weights file"), type=["safetensors", "pt", "pth", "bin"],
                            key=UPLOAD_WIDGET_KEY)
    left_b, right_b = st.columns(2)
    if left_b.button(_("Use these weights"), disabled=file is None, type="primary"):
        assert file is not None
        try:
            with st.spinner(_("Checking the weights ...")):
                taken = state.upload_weights(file.name, file.getvalue())
            if taken is not None:
                st.rerun()
            st.info(_("**{name}** holds the weights this tab already prunes, bit for bit: "
                      "nothing changed, and the plan and results are kept.")
                    .format(name=file.name))
        except Exception as exc:  # noqa: BLE001 - any failure is shown, the tab stays usable
            st.error(_("Not used. {reason}").format(reason=exc))
    if right_b.button(_("Back to the model's own weights"), disabled=upload is None):
        state.forget_upload()
        st.rerun()
    if len(full) > 200:
        st.markdown(_("**Live evaluation subset.** Every slider move re-measures the metric; "
                      "on a large evaluation set a fixed subset keeps that fast. The Prune "
                      "page measures the whole set on demand."))
        current = min(state.eval_subset_size() or len(full), len(full))
        n = st.number_input(_("Samples per live update"), min_value=min(100, current),
                            max_value=len(full), value=current, step=100)
        if st.button(_("Apply subset size")) and int(n) != current:
            state.set_eval_subset(None if int(n) >= len(full) else int(n))
            st.rerun()
        st.caption(_("Default: as many samples as one forward pass handles in about {budget} s "
                     "here ({ms} ms per sample, measured), between {low} and {high}. Changing "
                     "it re-measures the baseline and starts a new experiment log.")
                   .format(budget=f"{LIVE_BUDGET_S:g}",
                           ms=f"{loaded.seconds_per_sample * 1000:.2g}",
                           low=MIN_LIVE_SUBSET, high=f"{DEFAULT_EVAL_SUBSET:,}"))

with st.expander(_("Your own evaluation and training data"), icon=":material/upload_file:",
                 expanded=data_view.any_uploaded() or bench.train_data is None):
    data_view.data_section()

left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader(_("Layers (torchinfo summary, one sample)"))
    st.dataframe(
        [
            {
                "layer": ("  " * (row.depth - 1)) + row.name,
                "type": row.type,
                "output shape": str(list(row.output_shape)),
                "params": row.params,
                "MACs": row.macs,
                "prunable": _("yes") if row.name in bench.session.layer_by_name
                or any(p.module_name == row.name for p in bench.session.layers) else "",
            }
            for row in summary
        ],
        hide_index=True,
        column_config={"layer": _("layer"), "type": _("type"),
                       "output shape": _("output shape"), "params": _("params"),
                       "prunable": _("prunable")},
    )
    st.caption(_("MACs here are torchinfo's (bias additions included)."))
with right:
    st.subheader(_("What pruning is"))
    st.markdown(_(
        """
A trained network has many weights that barely matter. **Pruning** removes them:

- **unstructured** — single weights, the smallest first (*magnitude pruning*);
- **N:M** — keep N of every M neighbouring weights (hardware-friendly, e.g. 2:4);
- **structured** — whole filters, channels or neurons, so the layer really shrinks.

Which ones go is decided by an **importance criterion**: weight size (L1/L2), a gradient
estimate (Taylor), how often a unit is silent (APoZ), its BatchNorm scale, how redundant
it is (FPGM, LSH duplicates) — or chance (random), the baseline every paper compares to.

**The workflow here:** look at the layers (*Inspect*), prune them with sliders and watch
the measured accuracy, size and latency (*Prune*), turn the plan into what really ships —
channels removed, or sparse kernels — and measure that (*Deploy*), then compare every
configuration you tried (*Trade-offs*). Zeroed weights alone do not make a dense model
smaller or faster — the app shows which numbers move and which do not.
"""
    ))
