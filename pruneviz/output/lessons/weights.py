"""Lesson 1's charts: a layer's weights as an image and a histogram (the zeroed ones
shown), and the model's accuracy against the fraction of all weights zeroed, with Han et
al. 2015 drawn beside it as a reference shape."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go

from pruneviz.i18n import _
from pruneviz.output.figures import (
    BASELINE,
    KEPT,
    PARETO,
    PRUNED,
    _band,
    _layout,
    _unchecked,
    _vertical_line,
)
from pruneviz.workflows.lessons.published import HAN_2015, HAN_2015_DROP_WITHOUT_RETRAINING

HEIGHT = 320
MAX_CELLS = 40_000  # a bigger weight matrix is drawn by its first rows
ZEROED = "#222222"  # zeroed weights in the image


def weight_matrix(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """A layer's weights as a 2-D matrix: one row per output (filter or neuron)."""
    array = np.asarray(values, dtype=np.float64)
    matrix = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(1, -1)
    rows = max(1, MAX_CELLS // max(1, matrix.shape[1]))
    return matrix[:rows]


def weight_image(values: npt.ArrayLike, layer: str,
                 kept: npt.ArrayLike | None = None) -> go.Figure:
    """The weight matrix as a heatmap (blue negative, white zero, red positive); with
    `kept`, the zeroed weights drawn black."""
    matrix = weight_matrix(values)
    shown = matrix.copy()
    title = _("{layer}: each row is one output's weights").format(layer=layer)
    if kept is not None:
        keep = weight_matrix(np.asarray(kept, dtype=np.float64)) > 0.5
        shown[~keep] = np.nan
        title = _("{layer} after zeroing: black = zeroed weights").format(layer=layer)
    limit = float(np.abs(matrix).max()) or 1.0
    trace: dict[str, Any] = {
        "type": "heatmap", "z": shown, "zmin": -limit, "zmax": limit, "colorscale": "RdBu",
        "reversescale": True, "colorbar": {"thickness": 10},
        "hovertemplate": _("output %{y}, input %{x}: %{z:.4f}") + "<extra></extra>",
    }
    layout = _layout(title, _("inputs (weights of one output)"), _("outputs"),
                     yaxis={"autorange": "reversed"}, plot_bgcolor=ZEROED,
                     meta={"rows": int(matrix.shape[0]), "columns": int(matrix.shape[1]),
                           "zeroed": int(np.isnan(shown).sum())})
    layout["height"] = HEIGHT
    layout["xaxis"]["showgrid"] = False
    layout["yaxis"]["showgrid"] = False
    return _unchecked([trace], layout)


def weight_histogram(values: npt.ArrayLike, layer: str, kept: npt.ArrayLike | None = None,
                     threshold: float | None = None, bins: int = 60) -> go.Figure:
    """The histogram of a layer's weights; with `kept`, stacked kept / zeroed, and the
    band |w| <= threshold shaded."""
    w = np.asarray(values, dtype=np.float64).ravel()
    keep = (np.ones_like(w, dtype=bool) if kept is None
            else np.asarray(kept, dtype=bool).ravel())
    edges = np.histogram_bin_edges(w, bins=bins)
    zeroed = np.histogram(w[~keep], edges)[0]
    remaining = np.histogram(w, edges)[0] - zeroed
    centers = (edges[:-1] + edges[1:]) / 2
    widths = np.diff(edges)

    def bars(counts: npt.NDArray[np.int64], name: str, color: str) -> dict[str, Any]:
        return {"type": "bar", "x": centers, "y": counts, "width": widths, "name": name,
                "marker": {"color": color, "line": {"width": 0}},
                "hovertemplate": name + ": %{y:,}<extra></extra>"}

    data = [bars(remaining, _("kept"), KEPT)]
    shapes: list[dict[str, Any]] = []
    if kept is not None:
        data.append(bars(zeroed, _("zeroed"), PRUNED))
        if threshold is not None:
            shapes = [_band(-threshold, threshold), _vertical_line(-threshold),
                      _vertical_line(threshold)]
    layout = _layout(_("{layer}: how the weights are distributed").format(layer=layer),
                     _("weight value"), _("number of weights"), barmode="stack", bargap=0,
                     shapes=shapes, meta={"zeroed": int((~keep).sum()), "threshold": threshold})
    layout["height"] = HEIGHT
    # inside the plot's top right, where the tails are empty: above it, it met the title
    layout["legend"] = {"orientation": "v", "x": 0.99, "xanchor": "right", "y": 0.98,
                        "yanchor": "top", "bgcolor": "rgba(255,255,255,0.7)"}
    return _unchecked(data, layout)


def accuracy_curve(levels: tuple[float, ...], accuracies: tuple[float, ...],
                   prediction: float | None = None) -> go.Figure:
    """Measured accuracy against the fraction of all weights zeroed (percent), with Han et
    al. 2015's points and their drop marker as a reference (another model, other data)."""
    x = [100 * level for level in levels]
    y = [100 * a for a in accuracies]
    data: list[dict[str, Any]] = [{
        "type": "scatter", "mode": "lines+markers", "x": x, "y": y,
        "name": _("this model, measured"), "line": {"color": KEPT, "width": 2.5},
        "hovertemplate": _("%{x:.0f}% zeroed: %{y:.1f}% accuracy") + "<extra></extra>",
    }]
    han_x = [100 * (1 - (p.weights_kept if p.weights_kept is not None else 1.0))
             for p in HAN_2015.points]
    data.append({
        "type": "scatter", "mode": "markers", "x": han_x,
        "y": [100 * p.accuracy for p in HAN_2015.points],
        "name": _("Han et al. 2015 ({model}; reference)").format(model=_(HAN_2015.model)),
        "marker": {"color": PARETO, "symbol": "diamond-open", "size": 11,
                   "line": {"width": 2}},
        "text": [_(p.stage) for p in HAN_2015.points],
        "hovertemplate": "%{text}: %{y:.2f}%<extra>Han et al. 2015</extra>",
    })
    if prediction is not None:
        data.append({
            "type": "scatter", "mode": "markers", "x": [100 * HAN_2015_DROP_WITHOUT_RETRAINING],
            "y": [prediction], "name": _("your prediction"),
            "marker": {"color": BASELINE, "symbol": "x", "size": 11},
            "hovertemplate": _("your prediction: %{y:.0f}%") + "<extra></extra>",
        })
    drop = 100 * HAN_2015_DROP_WITHOUT_RETRAINING
    shapes = [{**_vertical_line(drop), "line": {"color": PARETO, "width": 1.5, "dash": "dot"}}]
    annotations = [{
        "text": _("accuracy starts to drop, Han et al."), "x": drop, "xref": "x",
        "y": 0.4, "yref": "y domain", "xanchor": "left", "yanchor": "bottom",
        "showarrow": False, "font": {"color": PARETO, "size": 11},
    }]
    layout = _layout(_("Accuracy as more weights are zeroed (no retraining)"),
                     _("weights zeroed in every layer (%)"), _("accuracy (%)"),
                     yaxis={"range": [0, 101]}, xaxis={"range": [-2, 100]}, shapes=shapes,
                     annotations=annotations, meta={"levels": list(levels),
                                                    "accuracies": list(accuracies)})
    layout["height"] = HEIGHT
    layout["legend"] = {"orientation": "v", "x": 0.01, "y": 0.02, "yanchor": "bottom",
                        "bgcolor": "rgba(255,255,255,0.8)"}
    return _unchecked(data, layout)


__all__ = ["accuracy_curve", "weight_histogram", "weight_image", "weight_matrix"]
