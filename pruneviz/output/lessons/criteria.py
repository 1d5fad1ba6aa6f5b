"""Lesson 4's chart: which filters each criterion removes (filters x criteria, removed
cells dimmed, kept ones coloured by the filter's score rank under that criterion)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from pruneviz.i18n import _
from pruneviz.output.figures import template

HEIGHT = 320
KEPT_SCALE = [[0.0, "#C6DBEF"], [1.0, "#08306B"]]  # light: low score, dark: high


def criteria_grid(criteria: Sequence[str], scores: Sequence[Sequence[float]],
                  removed: Sequence[Sequence[int]], layer: str) -> go.Figure:
    """One row per criterion (in the given order, top down), one column per filter: a kept
    filter coloured by its score rank within its row (darker: higher), a removed one grey."""
    rows = []
    for row_scores, row_removed in zip(scores, removed, strict=True):
        values = np.asarray(row_scores, dtype=np.float64)
        rank = values.argsort().argsort() / max(len(values) - 1, 1)  # 0 lowest, 1 highest
        rank[list(row_removed)] = np.nan
        rows.append(rank)
    z = np.vstack(rows)
    count = z.shape[1]
    text = [[_("removed") if np.isnan(v) else _("kept") for v in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(count)), y=list(criteria), colorscale=KEPT_SCALE, zmin=0, zmax=1,
        text=text, hovertemplate=_("filter %{x}, %{y}: %{text}") + "<extra></extra>",
        showscale=False, xgap=1, ygap=2, hoverongaps=True))
    fig.update_layout(
        template=template(), height=HEIGHT, plot_bgcolor="#DDDDDD",
        title={"text": _("Filters of {layer} each criterion removes (grey)").format(
            layer=layer), "x": 0.01, "xanchor": "left"},
        margin={"l": 70, "r": 20, "t": 50, "b": 45},
        xaxis={"title": {"text": _("filter")}, "showgrid": False, "zeroline": False},
        yaxis={"title": {"text": _("criterion")}, "autorange": "reversed", "showgrid": False},
        meta={"removed": [list(r) for r in removed]})
    return fig
