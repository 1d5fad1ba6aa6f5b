"""Lesson 6's charts: the per-layer sparsity of the uniform and sensitivity-guided plans
side by side, and the sensitivity curves the guided plan read."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from pruneviz.i18n import _
from pruneviz.output.figures import KEPT, TUNED, template

HEIGHT = 320


def _layout(title: str, x_title: str, y_title: str, **extra: object) -> dict[str, object]:
    return {"template": template(), "height": HEIGHT,
            "title": {"text": title, "x": 0.01, "xanchor": "left"},
            "margin": {"l": 55, "r": 15, "t": 50, "b": 75},
            "xaxis": {"title": {"text": x_title}}, "yaxis": {"title": {"text": y_title}},
            "legend": {"orientation": "h", "y": -0.32, "x": 0}, **extra}


def plan_bars(layers: Sequence[str], uniform: Sequence[float],
              guided: Sequence[float]) -> go.Figure:
    """Each layer's sparsity (fractions in, percent drawn) under the two plans."""
    data = [go.Bar(x=list(layers), y=[100 * v for v in values], name=name, marker_color=colour,
                   text=[f"{100 * v:.0f}%" for v in values], textposition="outside")
            for name, values, colour in ((_("uniform"), uniform, KEPT),
                                         (_("sensitivity-guided"), guided, TUNED))]
    return go.Figure(data, _layout(_("Share of each layer's weights removed"), _("layer"),
                                   _("sparsity (%)"), barmode="group",
                                   yaxis={"title": {"text": _("sparsity (%)")},
                                          "range": [0, 110]},
                                   meta={"uniform": list(uniform), "guided": list(guided)}))


def sensitivity_lines(curves: Sequence[tuple[str, Sequence[float], Sequence[float]]]
                      ) -> go.Figure:
    """Accuracy with one layer alone pruned, per level: (layer, levels, accuracies)."""
    data = [go.Scatter(x=[100 * v for v in levels], y=[100 * v for v in accuracy],
                       mode="lines+markers", name=layer)
            for layer, levels, accuracy in curves]
    return go.Figure(data, _layout(_("Accuracy with one layer pruned alone"),
                                   _("sparsity of that layer (%)"), _("accuracy (%)")))
