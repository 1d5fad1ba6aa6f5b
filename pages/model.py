"""Model (home): the chosen model, its measured baseline, its layers, and how pruning works."""

import streamlit as st

from pruneviz.layers import model_summary
from pruneviz.models.samples import SAMPLES
from pruneviz.ui import state
from pruneviz.ui.navigation import run_through_app
from pruneviz.ui.widgets import user_errors

run_through_app()
st.title("pruneviz — see what pruning does to a real model")
with user_errors("The model could not be loaded"):
    bench = state.workbench()
    summary = model_summary(bench.session.model, bench.session.example_input)

spec = SAMPLES.get(bench.name.removeprefix("sample:"))
if spec is not None:
    st.markdown(f"**{spec.title}** — {spec.description}")

base = bench.baseline
ev = base.evaluation
cols = st.columns(5)
if ev.metric_name == "accuracy":
    cols[0].metric("accuracy", f"{ev.metric:.2%}")
else:
    cols[0].metric(ev.metric_name, f"{ev.metric:.5f}", help="Lower is better.")
cols[1].metric("parameters", f"{base.params_total:,}")
cols[2].metric("weight MACs / sample", f"{base.macs_dense:,}")
cols[3].metric("file (safetensors)", f"{base.sizes.dense / 1024:,.1f} KiB")
if base.latency is not None:
    cols[4].metric("latency", f"{base.latency.median_ms:.2f} ms",
                   help=f"Median of {base.latency.runs} runs, batch {base.latency.batch_size}, "
                   f"{base.latency.threads} CPU threads.")
st.caption(
    f"Measured just now on this machine: {ev.samples} held-out test samples of "
    "scikit-learn's bundled handwritten digits (8x8 images, never seen in training)."
)

left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader("Layers (torchinfo summary, one sample)")
    st.dataframe(
        [
            {
                "layer": ("  " * (row.depth - 1)) + row.name,
                "type": row.type,
                "output shape": str(list(row.output_shape)),
                "params": row.params,
                "MACs": row.macs,
                "prunable": "yes" if row.name in bench.session.layer_by_name
                or any(p.module_name == row.name for p in bench.session.layers) else "",
            }
            for row in summary
        ],
        hide_index=True,
    )
    st.caption("MACs here are torchinfo's (bias additions included).")
with right:
    st.subheader("What pruning is")
    st.markdown(
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
    )
