"""Lesson 2's chart: the masked and slimmed models beside the unpruned one, each measure
as a percentage of the unpruned model's."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from pruneviz.i18n import _
from pruneviz.output.figures import BASELINE, KEPT, PRUNED, _horizontal_line, _layout, _unchecked

HEIGHT = 320


def forms_bars(names: list[str], measures: list[str], percent: list[list[float]],
               shown: list[list[str]]) -> go.Figure:
    """Grouped bars: for each measure (x), one bar per form (`names`), its value as a
    percentage of the unpruned model's (`percent[form][measure]`), the measured value as
    `shown[form][measure]` on hover. The first form is the unpruned one (100%)."""
    colours = [BASELINE, PRUNED, KEPT]
    data: list[dict[str, Any]] = [{
        "type": "bar", "x": measures, "y": values, "name": name,
        "marker": {"color": colours[i % len(colours)]}, "customdata": shown[i],
        "hovertemplate": name + ": %{customdata} (%{y:.0f}%)<extra></extra>",
    } for i, (name, values) in enumerate(zip(names, percent, strict=True))]
    top = max(max(values) for values in percent)
    layout = _layout(_("Each measure as a share of the unpruned model's"), "",
                     _("% of the unpruned model"), barmode="group",
                     yaxis={"range": [0, max(120.0, top * 1.15)]},
                     shapes=[_horizontal_line(100.0)], meta={"percent": percent})
    layout["height"] = HEIGHT
    layout["legend"] = {"orientation": "h", "x": 0, "y": -0.15, "yanchor": "top"}
    layout["margin"]["b"] = 70
    return _unchecked(data, layout)
