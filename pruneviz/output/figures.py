"""Plotly figures of a pruning session's layers, and the style every figure shares.

The figures of one layer or of all of them: weight histograms, structure scores,
the parameters kept per layer, kernel grids and where criteria disagree. The shared
colours, template, layout and input checks here are used by the trade-off figures
(tradeoff_figures.py) and the figures of the long runs (run_figures.py) too.
Inputs are numpy arrays and plain Python values (callers convert tensors with
`.numpy()`), so every figure can be built and checked without torch or a browser.
Each figure stores the numbers it was drawn from in `fig.layout.meta`, for tests and
for callers that want to read them back. Builders run on every slider move, so they
avoid per-point Python loops and draw big score series downsampled.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go
import plotly.io as pio

from pruneviz.core.explain import criterion_label, unit_label
from pruneviz.i18n import _

KEPT = "#4C78A8"
PRUNED = "#E45756"
THRESHOLD = "#444444"
PARETO = "#F58518"
TUNED = "#54A24B"  # fine-tuned weights
BASELINE = "#222222"
MISSING = "#C8C8C8"  # heatmap cells with no value
DIMMED = (221, 221, 221)  # #DDDDDD: pruned kernels are blended 75% toward it
TEMPLATE = "plotly_white"
HEIGHT = 350

# Diverging kernel colours: negative -> blue, 0 -> white, positive -> red.
_NEGATIVE = np.array([33.0, 102.0, 172.0])  # #2166AC
_WHITE = np.array([255.0, 255.0, 255.0])
_POSITIVE = np.array([178.0, 24.0, 43.0])  # #B2182B
_GAP = np.array([150, 150, 150], dtype=np.uint8)  # frames tiles, near-white ones too

MAX_BARS = 600  # score_bars draws bars up to this many structures, a filled line beyond
LINE_POINTS = 600  # points kept when the filled line is downsampled
UNITS = ("filter", "channel", "weight", "head", "hidden unit")  # what one scored structure is

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


# -- shared helpers -------------------------------------------------------------------------
_TEMPLATE_LAYOUT = (
    "autotypenumbers", "font", "hovermode", "hoverlabel", "paper_bgcolor", "plot_bgcolor",
    "xaxis", "yaxis", "colorway", "shapedefaults", "annotationdefaults", "title",
)
_TEMPLATE_TRACES = ("bar", "scatter", "scattergl", "heatmap", "image")


@functools.cache
def _template_parts() -> dict[str, Any]:
    full = pio.templates[TEMPLATE].to_plotly_json()
    return {
        "layout": {k: full["layout"][k] for k in _TEMPLATE_LAYOUT if k in full["layout"]},
        "data": {k: full["data"][k] for k in _TEMPLATE_TRACES if k in full["data"]},
    }


def template() -> dict[str, Any]:
    """plotly_white cut to the parts a 2-D cartesian figure uses.

    Every figure gets its own copy of its template, and copying the whole plotly_white
    (geo, polar, 3-D, 24 trace types) costs about 9 ms, most of a figure's build time;
    the cut looks the same on these figures and copies in about 1 ms.
    """
    return copy.deepcopy(_template_parts())


def _layout(
    title: str,
    x_title: str,
    y_title: str,
    *,
    xaxis: Mapping[str, Any] | None = None,
    yaxis: Mapping[str, Any] | None = None,
    subtitle: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The layout every figure shares: template, title, axis titles, compact margins."""
    title_spec: dict[str, Any] = {"text": title, "x": 0.01, "xanchor": "left"}
    if subtitle:
        title_spec["subtitle"] = {"text": subtitle}
    return {
        "template": template(),
        "title": title_spec,
        "height": HEIGHT,
        "margin": {"l": 60, "r": 20, "t": 70 if subtitle else 56, "b": 50},
        "xaxis": {"title": {"text": x_title}, **(xaxis or {})},
        "yaxis": {"title": {"text": y_title}, **(yaxis or {})},
        "legend": {"orientation": "h", "x": 1.0, "xanchor": "right", "y": 1.02,
                   "yanchor": "bottom"},
        **extra,
    }


def _unchecked(data: list[dict[str, Any]], layout: dict[str, Any]) -> go.Figure:
    """A figure from plain trace and layout specs, built without plotly's check of every
    property. That check costs 5-8 ms a figure, and a Prune page run draws two on every
    slider move: with eight tabs moving sliders it was a third of the server's CPU
    (benchmarks/classroom.py). The builders using this are run through the check in
    tests/test_figures.py instead, once per kind of figure they draw. Empty lists (no
    shapes, no annotations) are left out, as the check would."""
    layout = {key: value for key, value in layout.items() if not (
        isinstance(value, list) and not value)}
    return go.Figure({"data": data, "layout": layout}, _validate=False)


def _floats(values: npt.ArrayLike, name: str) -> FloatArray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be numeric: {exc}") from None


def _bools(values: npt.ArrayLike, name: str) -> BoolArray:
    array = np.asarray(values)
    if array.dtype != np.bool_:
        raise TypeError(f"{name} must be a boolean mask, got dtype {array.dtype}")
    return array


def _validate_threshold(threshold: float | None) -> float | None:
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    return float(threshold)


def _validate_unit(unit: str) -> None:
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; allowed: {', '.join(UNITS)}")


def _vertical_line(x: float) -> dict[str, Any]:
    return {
        "type": "line", "xref": "x", "yref": "y domain", "x0": x, "x1": x, "y0": 0, "y1": 1,
        "line": {"color": THRESHOLD, "width": 1.5, "dash": "dash"},
    }


def _horizontal_line(y: float) -> dict[str, Any]:
    return {
        "type": "line", "xref": "x domain", "yref": "y", "x0": 0, "x1": 1, "y0": y, "y1": y,
        "line": {"color": THRESHOLD, "width": 1.5, "dash": "dash"},
    }


def _band(x0: float, x1: float) -> dict[str, Any]:
    """A light red vertical band over the whole plot height (what add_vrect draws)."""
    return {
        "type": "rect", "xref": "x", "yref": "y domain", "x0": x0, "x1": x1, "y0": 0, "y1": 1,
        "fillcolor": PRUNED, "opacity": 0.15, "line": {"width": 0}, "layer": "below",
    }


def _band_label(x: float, text: str) -> dict[str, Any]:
    return {
        "text": text, "xref": "x", "yref": "y domain", "x": x, "y": 1, "xanchor": "center",
        "yanchor": "top", "showarrow": False, "font": {"color": "#B03A39", "size": 11},
    }


# -- 1. weight histogram ----------------------------------------------------------------------
def weight_histogram(
    weights: npt.ArrayLike,
    kept: npt.ArrayLike,
    *,
    layer: str,
    threshold: float | None = None,
    log_y: bool = False,
    bins: int = 80,
) -> go.Figure:
    """Histogram of a layer's original weights, stacked as kept and pruned.

    `kept` is the keep-mask (same shape as `weights`); `threshold` (magnitude pruning,
    |w| < t pruned) draws dashed lines at -t and +t and shades the band between.
    """
    w = _floats(weights, "weights").ravel()
    keep = _bools(kept, "kept").ravel()
    if keep.shape != w.shape:
        raise ValueError(f"kept has {keep.size} entries but weights has {w.size}")
    if w.size == 0:
        raise ValueError("weights is empty: nothing to draw")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    t = _validate_threshold(threshold)
    if t is not None and t < 0:
        raise ValueError(f"a magnitude threshold must be >= 0, got {t!r}")

    edges = np.histogram_bin_edges(w, bins=bins)
    total = np.histogram(w, edges)[0]
    pruned_counts = np.histogram(w[~keep], edges)[0]
    kept_counts = total - pruned_counts
    centers = (edges[:-1] + edges[1:]) / 2
    widths = np.diff(edges)
    ranges = np.column_stack([edges[:-1], edges[1:]])

    def bars(counts: npt.NDArray[np.int64], name: str, color: str) -> dict[str, Any]:
        return {
            "type": "bar", "x": centers, "y": counts, "width": widths, "name": name,
            "marker": {"color": color, "line": {"width": 0}}, "customdata": ranges,
            "hovertemplate": _("{name}: %{{y:,}}<br>w in [%{{customdata[0]:.4g}}, "
                               "%{{customdata[1]:.4g}}]<extra></extra>").format(name=name),
        }

    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    if t is not None:
        shapes = [_band(-t, t), _vertical_line(-t), _vertical_line(t)]
        annotations = [_band_label(0.0, _("pruned: |w| < {threshold}").format(
            threshold=f"{t:.3g}"))]
    n_pruned = int(w.size - np.count_nonzero(keep))
    layout = _layout(
        _("{layer}: weight distribution").format(layer=layer),
        _("weight value"),
        _("count (weights)"),
        yaxis={"type": "log"} if log_y else None,
        barmode="stack",
        bargap=0,
        shapes=shapes,
        annotations=annotations,
        meta={"threshold": t, "pruned": n_pruned},
    )
    return _unchecked([bars(kept_counts, _("kept"), KEPT),
                       bars(pruned_counts, _("pruned"), PRUNED)], layout)


# -- 2. sorted scores ---------------------------------------------------------------------------
def _downsample(n: int, points: int, must: Sequence[int]) -> npt.NDArray[np.int64]:
    """About `points` evenly spaced indices of 0..n-1, always with 0, n-1 and `must`."""
    index = np.linspace(0, n - 1, num=min(n, points)).round().astype(np.int64)
    extra = np.asarray([i for i in must if 0 <= i < n], dtype=np.int64)
    return np.unique(np.concatenate([index, extra]))


def score_bars(
    sorted_scores: npt.ArrayLike,
    pruned: int,
    *,
    layer: str,
    criterion: str,
    unit: str,
    threshold: float | None = None,
) -> go.Figure:
    """Scores of a layer's structures in ascending order; the `pruned` lowest in red.

    Up to MAX_BARS structures are drawn as bars; more are drawn as two filled lines
    (pruned and kept part) over a downsampled copy that keeps the first, last and
    boundary points.
    """
    s = _floats(sorted_scores, "sorted_scores").ravel()
    _validate_unit(unit)
    n = s.size
    if isinstance(pruned, bool) or not isinstance(pruned, int | np.integer) or not (
        0 <= pruned <= n
    ):
        raise ValueError(f"pruned must be an integer in [0, {n}], got {pruned!r}")
    pruned = int(pruned)
    if n > 1 and bool(np.any(s[1:] < s[:-1])):
        raise ValueError("sorted_scores must be sorted ascending (lowest score first)")
    t = _validate_threshold(threshold)

    shown = criterion_label(criterion)
    hover = _("rank %{{x:,}}<br>{criterion} score: %{{y:.4g}}<extra>%{{fullData.name}}</extra>"
              ).format(criterion=shown)
    pruned_name, kept_name = _("pruned"), _("kept")
    traces: list[dict[str, Any]]
    if n <= MAX_BARS:
        ranks = np.arange(n)
        traces = [
            {"type": "bar", "x": ranks[:pruned], "y": s[:pruned], "name": pruned_name,
             "marker": {"color": PRUNED}, "hovertemplate": hover},
            {"type": "bar", "x": ranks[pruned:], "y": s[pruned:], "name": kept_name,
             "marker": {"color": KEPT}, "hovertemplate": hover},
        ]
    else:
        index = _downsample(n, LINE_POINTS, (pruned - 1, pruned))
        low, high = index[index < pruned], index[index >= pruned]
        traces = [
            {"type": "scattergl", "x": i, "y": s[i], "name": name, "mode": "lines",
             "fill": "tozeroy", "line": {"color": color, "width": 1.5}, "hovertemplate": hover}
            for i, name, color in ((low, pruned_name, PRUNED), (high, kept_name, KEPT))
        ]
    shapes: list[dict[str, Any]] = []
    if pruned > 0:
        shapes.append(_band(-0.5, pruned - 0.5))
    if t is not None:
        shapes.append(_horizontal_line(t))
    layout = _layout(
        _("{layer}: {criterion} score per {unit}").format(
            layer=layer, criterion=shown, unit=unit_label(unit)),
        _("structure rank (lowest score first)"),
        _("{criterion} score").format(criterion=shown),
        xaxis={"range": [-0.5, n - 0.5]} if n else None,
        bargap=0.1 if n <= 64 else 0,
        shapes=shapes,
        meta={"threshold": t, "pruned": pruned, "count": n},
    )
    return _unchecked(traces, layout)


# -- 3. layer overview --------------------------------------------------------------------------
def layer_overview(
    names: Sequence[str],
    params: Sequence[int],
    nonzero: Sequence[int],
    macs_share: Sequence[float],
) -> go.Figure:
    """Stacked bars per layer, in the given order: non-zero (kept) and zeroed parameters."""
    if not len(names) == len(params) == len(nonzero) == len(macs_share):
        raise ValueError(
            f"names, params, nonzero and macs_share differ in length: {len(names)}, "
            f"{len(params)}, {len(nonzero)}, {len(macs_share)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"layer names must be unique, got {list(names)!r}")
    total = np.asarray(params, dtype=np.int64)
    kept = np.asarray(nonzero, dtype=np.int64)
    if bool(np.any(kept < 0)) or bool(np.any(kept > total)):
        raise ValueError("every nonzero count must be in [0, params] of its layer")
    zeroed = total - kept
    sparsity = np.divide(zeroed, total, out=np.zeros(len(total)), where=total > 0) * 100
    share = np.asarray(macs_share, dtype=np.float64) * 100
    custom = np.column_stack([sparsity, share, total])
    hover = _(
        "<b>%{x}</b><br>%{fullData.name}: %{y:,}<br>sparsity: %{customdata[0]:.1f}%"
        "<br>MACs share: %{customdata[1]:.1f}%<br>parameters: %{customdata[2]:,}<extra></extra>"
    )
    x = list(names)
    traces = [
        go.Bar(x=x, y=kept, name=_("kept (non-zero)"), marker_color=KEPT, customdata=custom,
               hovertemplate=hover),
        go.Bar(x=x, y=zeroed, name=_("zeroed"), marker_color=PRUNED, customdata=custom,
               hovertemplate=hover),
    ]
    layout = _layout(
        _("Parameters per layer (kept vs zeroed)"),
        _("layer"),
        _("parameters"),
        xaxis={"type": "category", "categoryorder": "array", "categoryarray": x},
        barmode="stack",
        meta={"sparsity_percent": sparsity.tolist()},
    )
    return go.Figure(traces, layout)


# -- 4. kernel grid -----------------------------------------------------------------------------
def kernel_pixel(kh: int, kw: int) -> int:
    """Screen pixels per kernel pixel: 8, more for tiny kernels so each tile is >= 24 px."""
    return max(8, -(-24 // max(kh, kw, 1)))


def kernel_rgb(kernels: npt.ArrayLike, pruned: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Kernels (out, kh, kw) as RGB (out, kh, kw, 3): blue < 0 < red, pruned ones dimmed."""
    k = _floats(kernels, "kernels")
    scale = float(np.abs(k).max()) if k.size else 0.0
    v = k / scale if scale > 0 else np.zeros_like(k)
    target = np.where((v < 0)[..., None], _NEGATIVE, _POSITIVE)
    rgb: FloatArray = _WHITE + np.abs(v)[..., None] * (target - _WHITE)
    dim = _bools(pruned, "pruned")
    rgb[dim] = 0.25 * rgb[dim] + 0.75 * np.asarray(DIMMED, dtype=np.float64)
    out: npt.NDArray[np.uint8] = np.rint(rgb).astype(np.uint8)
    return out


def kernel_grid(
    kernels: npt.ArrayLike, pruned: npt.ArrayLike, *, layer: str, columns: int = 8
) -> go.Figure:
    """Kernels (out, kh, kw) tiled into one image, coloured by sign, pruned filters dimmed.

    `pruned` is a boolean mask over the filters. The colour scale is symmetric, from the
    largest |w| over all kernels. 1-D kernels (out, k) are drawn as one row each.
    Filter `i` is at row `i // columns`, column `i % columns` (labelled on the axes).
    """
    k = _floats(kernels, "kernels")
    if k.ndim == 2:
        k = k[:, None, :]
    if k.ndim != 3 or k.shape[0] == 0:
        raise ValueError(f"kernels must have shape (out, kh, kw) with out > 0, got {k.shape}")
    dim = _bools(pruned, "pruned").ravel()
    n, kh, kw = k.shape
    if dim.shape != (n,):
        raise ValueError(f"pruned has {dim.size} entries but there are {n} kernels")
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive integer, got {columns!r}")

    cols = min(columns, n)
    rows = -(-n // cols)
    px = kernel_pixel(kh, kw)
    gap = max(1, px // 4)
    th, tw = kh * px, kw * px
    tiles = np.full((rows * cols, th + gap, tw + gap, 3), 255, dtype=np.uint8)
    tiles[:n] = _GAP
    rgb = kernel_rgb(k, dim)
    tiles[:n, :th, :tw] = rgb.repeat(px, axis=1).repeat(px, axis=2)
    step_x, step_y = tw + gap, th + gap
    # Every tile owns the frame below and right of it; the image adds the top and left.
    image = np.empty((gap + rows * step_y, gap + cols * step_x, 3), dtype=np.uint8)
    image[:] = _GAP
    image[gap:, gap:] = (
        tiles.reshape(rows, cols, step_y, step_x, 3)
        .transpose(0, 2, 1, 3, 4)
        .reshape(rows * step_y, cols * step_x, 3)
    )
    indices = np.flatnonzero(dim).tolist()
    layout = _layout(
        _("{layer}: kernels ({pruned} of {total} filters pruned, dimmed)").format(
            layer=layer, pruned=len(indices), total=n),
        _("filter index: row start + column offset"),
        _("row start"),
        xaxis={"tickvals": [gap + c * step_x + (tw - 1) / 2 for c in range(cols)],
               "ticktext": [f"+{c}" for c in range(cols)], "ticks": "", "showgrid": False,
               "zeroline": False},
        yaxis={"tickvals": [gap + r * step_y + (th - 1) / 2 for r in range(rows)],
               "ticktext": [str(r * cols) for r in range(rows)], "ticks": "",
               "showgrid": False, "zeroline": False},
        meta={"pruned": indices, "pixel": px, "gap": gap, "rows": rows, "columns": cols},
    )
    layout["height"] = 380
    return go.Figure([go.Image(z=image, hoverinfo="skip")], layout)


# -- 5. criteria disagreement -------------------------------------------------------------------
def _pruned_matrix(pruned_by_criterion: Mapping[str, npt.ArrayLike]) -> npt.NDArray[np.bool_]:
    if not pruned_by_criterion:
        raise ValueError("no criteria given: pass at least one name -> pruned mask")
    rows = [_bools(m, f"mask of {name!r}").ravel() for name, m in pruned_by_criterion.items()]
    sizes = {row.size for row in rows}
    if len(sizes) != 1:
        shown = {name: row.size for name, row in zip(pruned_by_criterion, rows, strict=True)}
        raise ValueError(f"the masks differ in length: {shown}")
    return np.stack(rows)


def disagreement_count(pruned_by_criterion: Mapping[str, npt.ArrayLike]) -> int:
    """How many structures some criteria prune and others keep."""
    matrix = _pruned_matrix(pruned_by_criterion)
    return int(np.count_nonzero(matrix.any(axis=0) & ~matrix.all(axis=0)))


def criteria_disagreement(
    pruned_by_criterion: Mapping[str, npt.ArrayLike], *, layer: str, unit: str
) -> go.Figure:
    """One row per criterion, one column per structure: which structures each one prunes."""
    _validate_unit(unit)
    matrix = _pruned_matrix(pruned_by_criterion)
    names = list(pruned_by_criterion)
    n = matrix.shape[1]
    disagreements = int(np.count_nonzero(matrix.any(axis=0) & ~matrix.all(axis=0)))
    shown = unit_label(unit)
    heatmap = go.Heatmap(
        z=matrix.astype(np.int8),
        x=np.arange(n),
        y=[criterion_label(name) for name in names],
        zmin=0,
        zmax=1,
        colorscale=[[0.0, KEPT], [0.5, KEPT], [0.5, PRUNED], [1.0, PRUNED]],
        xgap=1 if n <= 128 else 0,
        ygap=2,
        colorbar={"tickvals": [0.25, 0.75], "ticktext": [_("kept"), _("pruned")],
                  "thickness": 12, "len": 0.6},
        hovertemplate=_("%{{y}}<br>{unit} %{{x}}: %{{z}}<extra>1 = pruned, 0 = kept</extra>")
        .format(unit=shown),
    )
    layout = _layout(
        _("{layer}: which {unit}s each criterion prunes").format(layer=layer, unit=shown),
        _("{unit} index").format(unit=shown),
        _("criterion"),
        subtitle=_("{count} of {total} {unit}s pruned by some criteria and kept by others")
        .format(count=disagreements, total=n, unit=shown),
        yaxis={"type": "category", "autorange": "reversed"},
        meta={"disagreements": disagreements},
    )
    return go.Figure([heatmap], layout)


# -- 6. outlier ratio per layer (OWL) -----------------------------------------------------------
def outlier_ratio_bars(
    names: Sequence[str],
    ratios: Sequence[float],
    sparsities: Sequence[float] | None = None,
    *,
    m: float = 5.0,
) -> go.Figure:
    """Bars: each layer's outlier ratio (share of its Wanda scores above `m` times their
    mean), in model order; with `sparsities`, the sparsity OWL gave each layer as markers
    on a second axis (more outliers, less pruned). Shares are fractions, drawn in %."""
    if len(names) != len(ratios) or (sparsities is not None and len(sparsities) != len(names)):
        raise ValueError(
            f"names, ratios and sparsities differ in length: {len(names)}, {len(ratios)}, "
            f"{'-' if sparsities is None else len(sparsities)}")
    if len(set(names)) != len(names):
        raise ValueError(f"layer names must be unique, got {list(names)!r}")
    r = _floats(ratios, "ratios") * 100
    if bool(np.any((r < 0) | (r > 100))) or not bool(np.all(np.isfinite(r))):
        raise ValueError("every outlier ratio must be a fraction in [0, 1]")
    x = list(names)
    traces: list[go.BaseTraceType] = [go.Bar(
        x=x, y=r, name=_("outlier ratio (scores > {m}x mean)").format(m=f"{m:g}"),
        marker_color=PARETO,
        hovertemplate=_("<b>%{x}</b><br>outlier ratio: %{y:.3f}%<extra></extra>"))]
    extra: dict[str, Any] = {}
    if sparsities is not None:
        sp = _floats(sparsities, "sparsities") * 100
        traces.append(go.Scatter(
            x=x, y=sp, name=_("owl sparsity"), mode="markers+lines", yaxis="y2",
            marker={"color": PRUNED, "size": 9}, line={"color": PRUNED, "dash": "dot"},
            hovertemplate=_("<b>%{x}</b><br>owl sparsity: %{y:.1f}%<extra></extra>")))
        extra["yaxis2"] = {"title": {"text": _("sparsity OWL gives the layer (%)")},
                           "overlaying": "y", "side": "right", "range": [0, 100],
                           "showgrid": False}
    layout = _layout(
        _("Outlier ratio per layer"),
        _("layer"),
        _("outlier ratio (% of the layer's wanda scores)"),
        xaxis={"type": "category", "categoryorder": "array", "categoryarray": x},
        subtitle=_("layers with more outliers are pruned less (OWL)"),
        meta={"ratios_percent": r.tolist(),
              "sparsity_percent": None if sparsities is None else sp.tolist()},
        **extra,
    )
    if sparsities is not None:
        layout["margin"]["r"] = 60
    return go.Figure(traces, layout)


__all__ = [
    "KEPT",
    "PRUNED",
    "template",
    "criteria_disagreement",
    "disagreement_count",
    "kernel_grid",
    "kernel_pixel",
    "kernel_rgb",
    "layer_overview",
    "outlier_ratio_bars",
    "score_bars",
    "weight_histogram",
]
