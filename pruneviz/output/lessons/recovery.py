"""Lesson 5's charts: accuracy unpruned -> pruned at once -> retrained, beside a gradual
schedule and the published points; and the per-epoch training curves."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from pruneviz.i18n import _
from pruneviz.output.figures import BASELINE, KEPT, PRUNED, TUNED, template
from pruneviz.workflows.lessons.published import HAN_2015, NETWORK_SLIMMING

HEIGHT = 330
PUBLISHED = "#9D755D"


def _layout(title: str, x_title: str, **extra: object) -> dict[str, object]:
    return {"template": template(), "height": HEIGHT,
            "title": {"text": title, "x": 0.01, "xanchor": "left"},
            "margin": {"l": 55, "r": 15, "t": 50, "b": 40},
            "xaxis": {"title": {"text": x_title}},
            "yaxis": {"title": {"text": _("accuracy (%)")}, "range": [0, 102]},
            "legend": {"orientation": "h", "y": -0.22, "x": 0, "font": {"size": 11}},
            **extra}


def recovery_chart(baseline: float, pruned: float, retrained: float | None,
                   gradual: float | None = None) -> go.Figure:
    """This model's accuracy at each stage (fractions in, percent drawn), with Network
    Slimming's three points and Han et al.'s retrained point, labelled as other models."""
    stages = [_("unpruned"), _("pruned at once"), _("retrained")]
    fig = go.Figure()
    ours = [baseline, pruned] + ([retrained] if retrained is not None else [])
    fig.add_trace(go.Scatter(x=stages[:len(ours)], y=[100 * v for v in ours],
                             mode="lines+markers+text", name=_("this model: one-shot"),
                             text=[f"{100 * v:.1f}" for v in ours], textposition="top right",
                             line={"color": PRUNED, "width": 3}, marker={"size": 10}))
    if gradual is not None:
        fig.add_trace(go.Scatter(x=[stages[0], stages[2]], y=[100 * baseline, 100 * gradual],
                                 mode="lines+markers+text", name=_("this model: gradual (AGP)"),
                                 text=["", f"{100 * gradual:.1f}"], textposition="bottom right",
                                 line={"color": TUNED, "width": 3, "dash": "dash"},
                                 marker={"size": 10}))
    slim = [100 * p.accuracy for p in NETWORK_SLIMMING.points]
    fig.add_trace(go.Scatter(
        x=stages, y=slim, mode="lines+markers", line={"color": PUBLISHED, "dash": "dot"},
        name=_("Liu et al. 2017 (Network Slimming): another model, other data"),
        hovertemplate=_(NETWORK_SLIMMING.model) + ": %{y:.2f}%<extra></extra>"))
    han = HAN_2015.points[-1]
    fig.add_trace(go.Scatter(
        x=[stages[2]], y=[100 * han.accuracy], mode="markers",
        marker={"symbol": "diamond", "size": 11, "color": KEPT},
        name=_("Han et al. 2015, retrained: another model, other data"),
        hovertemplate=_(HAN_2015.model) + ": %{y:.2f}%<extra></extra>"))
    return go.Figure(fig.data, _layout(_("Accuracy: unpruned, pruned, retrained"), "",
                                       meta={"ours": ours, "gradual": gradual}))


def training_curves(runs: Sequence[tuple[str, Sequence[float], Sequence[float]]]
                    ) -> go.Figure:
    """Validation accuracy per epoch of each recipe: (name, epochs, accuracies)."""
    colours = [PRUNED, TUNED, BASELINE]
    data = [go.Scatter(x=list(epochs), y=[100 * v for v in values], mode="lines+markers",
                       name=name, line={"color": colours[i % len(colours)]})
            for i, (name, epochs, values) in enumerate(runs)]
    layout = _layout(_("Validation accuracy while retraining"), _("epoch"),
                     meta={"runs": [list(values) for _n, _e, values in runs]})
    return go.Figure(data, layout)
