"""Model page: the chosen model, its baseline metrics and its prunable layers."""

import streamlit as st

from pruneviz.errors import PrunevizError
from pruneviz.ui.state import workbench

st.title("pruneviz — see what pruning does to a real model")

try:
    bench = workbench()
except PrunevizError as exc:
    st.error(f"The model could not be loaded: {exc}")
    st.stop()

base = bench.baseline
cols = st.columns(4)
cols[0].metric(base.evaluation.metric_name, f"{base.evaluation.metric:.4f}")
cols[1].metric("parameters", f"{base.params_total:,}")
cols[2].metric("weight MACs / sample", f"{base.macs_dense:,}")
cols[3].metric("file (safetensors)", f"{base.sizes.dense / 1024:.1f} KiB")
st.caption(
    f"Measured on {base.evaluation.samples} held-out test images of the bundled digits."
)

st.subheader("Prunable layers")
st.dataframe(
    [
        {
            "layer": layer.name,
            "type": layer.type,
            "weight shape": str(layer.shape),
            "params": layer.params,
            "MACs share": f"{layer.macs_share:.1%}",
        }
        for layer in bench.session.layers
    ],
    hide_index=True,
)
