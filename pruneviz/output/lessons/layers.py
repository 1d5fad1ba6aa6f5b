"""Lesson 3's chart: each layer's accuracy when it alone is pruned, at each level, the
first and last layers drawn bold."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from pruneviz.i18n import _
from pruneviz.output.figures import KEPT, PARETO, PRUNED, _layout, _unchecked

HEIGHT = 330
OTHERS = "#9AA5B1"


def sensitivity_curves(layers: list[str], levels: list[float], accuracies: list[list[float]],
                       params: list[int]) -> go.Figure:
    """Accuracy (%) against the share of one layer's weights zeroed (%), one line per
    layer in model order; the first (blue) and last (red) layers highlighted."""
    data: list[dict[str, Any]] = []
    last = len(layers) - 1
    for i, (layer, curve, count) in enumerate(zip(layers, accuracies, params, strict=True)):
        if i == 0:
            colour, width = KEPT, 3.5
        elif i == last:
            colour, width = PRUNED, 3.5
        else:
            colour, width = (OTHERS if len(layers) > 3 else PARETO), 1.5
        data.append({
            "type": "scatter", "mode": "lines+markers", "x": [100 * v for v in levels],
            "y": [100 * a for a in curve],
            "name": _("{layer} ({count:,} weights)").format(layer=layer, count=count),
            "line": {"color": colour, "width": width},
            "hovertemplate": layer + ": %{x:.0f}% → %{y:.1f}%<extra></extra>",
        })
    layout = _layout(_("Each layer pruned alone"), _("share of that layer's weights zeroed (%)"),
                     _("accuracy (%)"), yaxis={"range": [0, 101]},
                     meta={"layers": layers, "levels": levels, "accuracies": accuracies})
    layout["height"] = HEIGHT
    layout["legend"] = {"orientation": "v", "x": 0.01, "y": 0.02, "yanchor": "bottom"}
    return _unchecked(data, layout)
