"""Plotly figures of a pruning session: pure functions from numbers to `go.Figure`.

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
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go
import plotly.io as pio

from pruneviz.workflows.experiments import (
    ORIGINAL,
    PRUNE,
    TECHNIQUES,
    Experiment,
    check_cost_field,
    pareto_front,
    technique_family,
)

if TYPE_CHECKING:  # only read for its attributes: figures need no torch through this module
    from pruneviz.workflows.finetune import Record
    from pruneviz.workflows.sensitivity import SensitivityResult

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
UNITS = ("filter", "channel", "weight")

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

    def bars(counts: npt.NDArray[np.int64], name: str, color: str) -> go.Bar:
        return go.Bar(
            x=centers, y=counts, width=widths, name=name, marker={"color": color,
            "line": {"width": 0}}, customdata=ranges,
            hovertemplate=f"{name}: %{{y:,}}<br>w in [%{{customdata[0]:.4g}}, "
            "%{customdata[1]:.4g}]<extra></extra>",
        )

    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    if t is not None:
        shapes = [_band(-t, t), _vertical_line(-t), _vertical_line(t)]
        annotations = [_band_label(0.0, f"pruned: |w| < {t:.3g}")]
    n_pruned = int(w.size - np.count_nonzero(keep))
    layout = _layout(
        f"{layer}: weight distribution",
        "weight value",
        "count (weights)",
        yaxis={"type": "log"} if log_y else None,
        barmode="stack",
        bargap=0,
        shapes=shapes,
        annotations=annotations,
        meta={"threshold": t, "pruned": n_pruned},
    )
    return go.Figure(
        [bars(kept_counts, "kept", KEPT), bars(pruned_counts, "pruned", PRUNED)], layout
    )


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

    hover = f"rank %{{x:,}}<br>{criterion} score: %{{y:.4g}}<extra>%{{fullData.name}}</extra>"
    traces: list[Any]
    if n <= MAX_BARS:
        ranks = np.arange(n)
        traces = [
            go.Bar(x=ranks[:pruned], y=s[:pruned], name="pruned", marker_color=PRUNED,
                   hovertemplate=hover),
            go.Bar(x=ranks[pruned:], y=s[pruned:], name="kept", marker_color=KEPT,
                   hovertemplate=hover),
        ]
    else:
        index = _downsample(n, LINE_POINTS, (pruned - 1, pruned))
        low, high = index[index < pruned], index[index >= pruned]
        traces = [
            go.Scattergl(x=i, y=s[i], name=name, mode="lines", fill="tozeroy",
                         line={"color": color, "width": 1.5}, hovertemplate=hover)
            for i, name, color in ((low, "pruned", PRUNED), (high, "kept", KEPT))
        ]
    shapes: list[dict[str, Any]] = []
    if pruned > 0:
        shapes.append(_band(-0.5, pruned - 0.5))
    if t is not None:
        shapes.append(_horizontal_line(t))
    layout = _layout(
        f"{layer}: {criterion} score per {unit}",
        "structure rank (lowest score first)",
        f"{criterion} score",
        xaxis={"range": [-0.5, n - 0.5]} if n else None,
        bargap=0.1 if n <= 64 else 0,
        shapes=shapes,
        meta={"threshold": t, "pruned": pruned, "count": n},
    )
    return go.Figure(traces, layout)


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
    hover = (
        "<b>%{x}</b><br>%{fullData.name}: %{y:,}<br>sparsity: %{customdata[0]:.1f}%"
        "<br>MACs share: %{customdata[1]:.1f}%<br>parameters: %{customdata[2]:,}<extra></extra>"
    )
    x = list(names)
    traces = [
        go.Bar(x=x, y=kept, name="kept (non-zero)", marker_color=KEPT, customdata=custom,
               hovertemplate=hover),
        go.Bar(x=x, y=zeroed, name="zeroed", marker_color=PRUNED, customdata=custom,
               hovertemplate=hover),
    ]
    layout = _layout(
        "Parameters per layer (kept vs zeroed)",
        "layer",
        "parameters",
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
        f"{layer}: kernels ({len(indices)} of {n} filters pruned, dimmed)",
        "filter index: row start + column offset",
        "row start",
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
    heatmap = go.Heatmap(
        z=matrix.astype(np.int8),
        x=np.arange(n),
        y=names,
        zmin=0,
        zmax=1,
        colorscale=[[0.0, KEPT], [0.5, KEPT], [0.5, PRUNED], [1.0, PRUNED]],
        xgap=1 if n <= 128 else 0,
        ygap=2,
        colorbar={"tickvals": [0.25, 0.75], "ticktext": ["kept", "pruned"], "thickness": 12,
                  "len": 0.6},
        hovertemplate=f"%{{y}}<br>{unit} %{{x}}: %{{z}}<extra>1 = pruned, 0 = kept</extra>",
    )
    layout = _layout(
        f"{layer}: which {unit}s each criterion prunes",
        f"{unit} index",
        "criterion",
        subtitle=f"{disagreements} of {n} {unit}s pruned by some criteria and kept by others",
        yaxis={"type": "category", "autorange": "reversed"},
        meta={"disagreements": disagreements},
    )
    return go.Figure([heatmap], layout)


# -- 6. trade-off scatter -----------------------------------------------------------------------
# How each technique family is drawn: (legend name, marker symbol, colour). A technique
# on a pruned model is its own symbol's star version.
TECHNIQUE_STYLES: dict[str, tuple[str, str, str]] = {
    "prune": ("pruning", "circle", KEPT),
    "int8": ("int8 (unpruned)", "square", "#B279A2"),
    "prune+int8": ("pruning + int8", "star-square", "#B279A2"),
    "svd": ("low-rank SVD (unpruned)", "triangle-up", "#72B7B2"),
    "prune+svd": ("pruning + low-rank SVD", "star-triangle-up", "#72B7B2"),
}
_OTHER_STYLE = ("other technique", "x", "#9D9D9D")


def tradeoff_scatter(
    points: Sequence[Experiment],
    *,
    x_field: str,
    x_title: str,
    metric_name: str,
    higher_is_better: bool,
    baseline: Experiment | None,
    selected_id: int | None = None,
) -> go.Figure:
    """Metric against a cost (`x_field`, see experiments.COST_FIELDS), Pareto front marked.

    Points without a value for `x_field` (latency not measured) are left out; the
    baseline takes part in the front even if it is not among `points`. Each technique
    has its own marker and legend entry (circle: pruning, square: int8, triangle:
    low-rank SVD, a star of the same shape: that technique on a pruned model); the
    Pareto front is over every point, whatever its technique. Pruning experiments on
    fine-tuned weights are diamonds, each joined by a dotted line to its twin (the same
    plan on the original weights) when that is among the points: collapse and recovery.
    """
    check_cost_field(x_field)
    candidates = list(points)
    if baseline is not None and all(p.id != baseline.id for p in candidates):
        candidates.append(baseline)
    shown = [p for p in candidates if p.cost(x_field) is not None]
    skipped = len(candidates) - len(shown)
    xs = [float(getattr(p, x_field)) for p in shown]
    ys = [p.metric for p in shown]
    front = [shown[i] for i in pareto_front(xs, ys, higher_is_better)]

    def custom(group: Sequence[Experiment]) -> list[list[Any]]:
        return [[p.id, p.label, p.technique, p.weights] for p in group]

    hover = (
        f"<b>%{{customdata[1]}}</b><br>{metric_name}: %{{y:.4g}}<br>{x_title}: %{{x:,.4g}}"
        "<br>technique: %{customdata[2]}<extra>#%{customdata[0]}</extra>"
    )
    with_weights = hover.replace("<extra>", "<br>weights: %{customdata[3]}<extra>")

    def x_of(group: Sequence[Experiment]) -> list[float]:
        return [float(getattr(p, x_field)) for p in group]

    pruning = [p for p in shown if p.technique == PRUNE]
    plain = [p for p in pruning if p.weights == ORIGINAL]
    tuned = [p for p in pruning if p.weights != ORIGINAL]
    name, symbol, colour = TECHNIQUE_STYLES[PRUNE]
    traces: list[Any] = [
        go.Scatter(x=x_of(plain), y=[p.metric for p in plain], mode="markers", name=name,
                   customdata=custom(plain), hovertemplate=hover,
                   marker={"color": colour, "size": 8, "opacity": 0.8, "symbol": symbol}),
        go.Scatter(x=x_of(front), y=[p.metric for p in front],
                   mode="lines+markers", name="Pareto front", customdata=custom(front),
                   line={"color": PARETO, "width": 2, "shape": "hv"},
                   marker={"color": PARETO, "size": 11}, hovertemplate=with_weights),
    ]
    families: dict[str, list[Experiment]] = {}
    for p in shown:
        if p.technique != PRUNE:
            families.setdefault(technique_family(p.technique), []).append(p)
    order = [f for f in TECHNIQUES if f in families]
    for family in order + sorted(set(families) - set(order)):
        group = families[family]
        name, symbol, colour = TECHNIQUE_STYLES.get(family, _OTHER_STYLE)
        traces.append(go.Scatter(
            x=x_of(group), y=[p.metric for p in group], mode="markers", name=name,
            customdata=custom(group), hovertemplate=with_weights,
            marker={"color": colour, "size": 13 if symbol.startswith("star") else 10,
                    "symbol": symbol, "line": {"color": "white", "width": 1}}))
    if tuned:  # drawn over the front, each joined to its twin (same plan, original weights)
        twins = {p.plan_key: p for p in plain}
        xs_join: list[float | None] = []
        ys_join: list[float | None] = []
        for p in tuned:
            twin = twins.get(p.plan_key)
            if twin is not None:
                xs_join += [float(getattr(twin, x_field)), float(getattr(p, x_field)), None]
                ys_join += [twin.metric, p.metric, None]
        if xs_join:
            traces.append(go.Scatter(
                x=xs_join, y=ys_join, mode="lines", name="pruned → fine-tuned",
                line={"color": TUNED, "width": 1.5, "dash": "dot"}, hoverinfo="skip"))
        traces.append(go.Scatter(
            x=x_of(tuned), y=[p.metric for p in tuned],
            mode="markers", name="fine-tuned weights", customdata=custom(tuned),
            marker={"color": TUNED, "size": 12, "symbol": "diamond",
                    "line": {"color": "white", "width": 1}},
            hovertemplate=with_weights))
    if baseline is not None and baseline.cost(x_field) is not None:
        traces.append(go.Scatter(
            x=[float(getattr(baseline, x_field))], y=[baseline.metric], mode="markers",
            name="baseline (unpruned)", customdata=custom([baseline]), hovertemplate=hover,
            marker={"symbol": "star", "size": 16, "color": BASELINE},
        ))
    selected = [p for p in shown if p.id == selected_id]
    if selected:
        traces.append(go.Scatter(
            x=[float(getattr(selected[0], x_field))], y=[selected[0].metric], mode="markers",
            name="selected", customdata=custom(selected), hovertemplate=with_weights,
            marker={"symbol": "circle-open", "size": 20, "color": BASELINE,
                    "line": {"width": 2}},
        ))
    better = "higher" if higher_is_better else "lower"
    layout = _layout(
        f"{metric_name} vs {x_title}",
        x_title,
        f"{metric_name} ({better} is better)",
        subtitle=f"{skipped} experiment(s) without {x_field} not shown" if skipped else None,
        xaxis={"type": "linear"},
        meta={"pareto_ids": [p.id for p in front],
              "techniques": {str(p.id): p.technique for p in shown}},
    )
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
    "schedule_chart",
    "score_bars",
    "sensitivity_curves",
    "sensitivity_heatmap",
    "TECHNIQUE_STYLES",
    "tradeoff_scatter",
    "training_curves",
    "weight_histogram",
]


FORM_COLOURS = {"masked": "#9D9D9D", "slimmed": "#54A24B", "sparse-deployed": "#B279A2"}


def best_form_scatter(
    labels: Sequence[str],
    latency_ms: Sequence[float],
    metric: Sequence[float],
    forms: Sequence[str],
    *,
    metric_name: str,
) -> go.Figure:
    """Each configuration at the latency of its fastest correct deployable form, coloured
    by which form that is (masked, slimmed, sparse-deployed)."""
    if not len(labels) == len(latency_ms) == len(metric) == len(forms):
        raise ValueError("labels, latency_ms, metric and forms must have the same length")
    traces = []
    for form, colour in FORM_COLOURS.items():
        picked = [i for i, f in enumerate(forms) if f == form]
        if picked:
            traces.append(go.Scatter(
                x=[latency_ms[i] for i in picked], y=[metric[i] for i in picked],
                mode="markers", name=f"fastest form: {form}",
                marker={"color": colour, "size": 10},
                text=[labels[i] for i in picked],
                hovertemplate="%{text}<br>%{x:.2f} ms<br>%{y:.4f}<extra>" + form + "</extra>",
            ))
    return go.Figure(
        data=traces,
        layout=_layout(f"{metric_name} vs latency of the fastest deployable form",
                       "latency (ms, batch 64)", metric_name,
                       meta={"forms": list(forms)}),
    )


# -- 8. sensitivity -----------------------------------------------------------------------------
def _level_text(level: float) -> str:
    """A sparsity level as a column label: 0.1 -> "10%", 0.025 -> "2.5%"."""
    return f"{level * 100:.4g}%"


def sensitivity_curves(result: SensitivityResult) -> go.Figure:
    """The model's metric with each item (layer or coupled group) pruned alone, against
    that item's sparsity: one line per item that has points, a dashed line at the
    unpruned model's metric. Items not measured yet (a running or stopped analysis) are
    left out."""
    metric = result.metric_name
    hover = (
        f"<b>%{{fullData.name}}</b><br>sparsity: %{{x:.4g}}%<br>{metric}: %{{y:.4g}}"
        "<br>loss: %{customdata[0]:.4g}<br>%{customdata[1]:,} %{customdata[2]}(s) pruned"
        "<extra></extra>"
    )
    traces: list[Any] = []
    for item in result.items:
        curve = result.curve(item.key)
        if not curve:
            continue
        traces.append(go.Scatter(
            x=[p.level * 100 for p in curve], y=[p.metric for p in curve],
            mode="lines+markers", name=item.label, hovertemplate=hover,
            customdata=[[p.loss, p.structures_pruned, item.unit] for p in curve],
        ))
    base = result.baseline.metric
    better = "higher" if result.higher_is_better else "lower"
    unit = "layer or group" if result.granularity.structured else "layer"
    shown = len(traces)
    layout = _layout(
        f"{metric} with one {unit} pruned alone",
        f"sparsity of that {unit} ({result.granularity.value}, {result.criterion})",
        f"{metric} ({better} is better)",
        subtitle=None if result.complete else
        f"incomplete: {shown} of {len(result.items)} items measured",
        xaxis={"ticksuffix": "%"},
        shapes=[_horizontal_line(base)],
        annotations=[{"text": f"unpruned: {base:.4g}", "xref": "x domain", "yref": "y",
                      "x": 0.0, "y": base, "xanchor": "left", "yanchor": "bottom",
                      "showarrow": False, "font": {"color": THRESHOLD, "size": 11}}],
        legend={"orientation": "v", "x": 1.01, "xanchor": "left", "y": 1.0, "yanchor": "top"},
        meta={"baseline": base, "items": [t.name for t in traces], "complete": result.complete},
    )
    return go.Figure(traces, layout)


def sensitivity_heatmap(result: SensitivityResult) -> go.Figure:
    """Items (rows, in model order) by sparsity level (columns), coloured by how much the
    metric drops from the unpruned model's (`result.drop`): red worse, blue better, white
    unchanged (light grey). Cells not measured yet are darker grey."""
    levels = list(result.levels)
    column = {f"{level:.6f}": j for j, level in enumerate(levels)}
    shape = (len(result.items), len(levels))
    drop = np.full(shape, np.nan)
    metric = np.full(shape, np.nan)
    loss = np.full(shape, np.nan)
    for i, item in enumerate(result.items):
        for point in result.curve(item.key):
            j = column[f"{point.level:.6f}"]
            drop[i, j] = result.drop(point)
            metric[i, j] = point.metric
            loss[i, j] = point.loss
    labels = [item.label for item in result.items]
    name = result.metric_name
    unit = "layer or group" if result.granularity.structured else "layer"
    columns = [_level_text(level) for level in levels]
    heatmap = go.Heatmap(
        z=drop, x=columns, y=labels, name="drop",
        customdata=np.dstack([metric, loss]),
        colorscale=[[0.0, "#2166AC"], [0.5, "#F2F2F2"], [1.0, "#B2182B"]],
        zmid=0.0,
        xgap=1, ygap=1, hoverongaps=False,
        colorbar={"title": {"text": f"{name} drop"}, "thickness": 12},
        hovertemplate=f"<b>%{{y}}</b> at %{{x}}<br>{name}: %{{customdata[0]:.4g}}"
        "<br>drop: %{z:.4g}<br>loss: %{customdata[1]:.4g}<extra></extra>",
    )
    layout = _layout(
        f"{name} drop with each {unit} pruned alone",
        f"sparsity of that {unit} ({result.granularity.value}, {result.criterion})",
        "layer or coupled group" if result.granularity.structured else "layer",
        subtitle=f"drop from the unpruned model's {name} ({result.baseline.metric:.4g}): "
        "red is worse, blue better; dark grey cells are not measured (yet)",
        xaxis={"type": "category", "showgrid": False},
        yaxis={"type": "category", "autorange": "reversed", "showgrid": False},
        meta={"items": labels, "levels": levels, "baseline": result.baseline.metric},
    )
    missing = go.Heatmap(  # grey cells where drop has no value (yet)
        z=np.where(np.isnan(drop), 1.0, np.nan), x=columns, y=labels, name="not measured",
        colorscale=[[0.0, MISSING], [1.0, MISSING]], showscale=False, xgap=1, ygap=1,
        hoverinfo="skip",
    )
    layout["height"] = max(HEIGHT, 150 + 28 * len(labels))
    return go.Figure([heatmap, missing], layout)


# -- 9. fine-tuning -----------------------------------------------------------------------------
REGULARIZE = "#B279A2"  # the regularisation phase of regularize-then-prune
LOSS = "#4C78A8"
METRIC = "#F58518"
SPARSITY = "#E45756"
MANY_POINTS = 60  # validation points drawn as a line only, beyond this many
MANY_EVENTS = 30  # pruning events not drawn as vertical lines, beyond this many


def schedule_chart(
    curve: Sequence[float],
    *,
    events: Sequence[tuple[int, float]] = (),
    regularize_until: int | None = None,
    title: str = "Sparsity schedule",
) -> go.Figure:
    """The target sparsity at every training step (`Schedule.curve`), drawn before training:
    `curve[i]` at step i, pruning `events` (step, sparsity) as markers, and the steps of a
    regulariser (0 .. `regularize_until`) shaded."""
    y = _floats(curve, "curve").ravel()
    if y.size == 0:
        raise ValueError("the curve is empty: the recipe has no training steps")
    if bool(np.any((y < 0) | (y > 1))):
        raise ValueError("sparsities must be fractions in [0, 1]")
    steps = np.arange(y.size)
    traces: list[Any] = [go.Scatter(
        x=steps, y=y, mode="lines", name="target sparsity", line={"color": SPARSITY,
        "width": 2, "shape": "hv"}, hovertemplate="step %{x}: %{y:.1%}<extra></extra>",
    )]
    if events:
        traces.append(go.Scatter(
            x=[s for s, _ in events], y=[v for _, v in events], mode="markers",
            name="pruning event", marker={"color": SPARSITY, "size": 8, "symbol": "triangle-up"},
            hovertemplate="pruned at step %{x} to %{y:.1%}<extra></extra>",
        ))
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    if regularize_until:
        shapes.append({**_band(0, regularize_until), "fillcolor": REGULARIZE})
        annotations.append({**_band_label(regularize_until / 2, "regularisation"),
                            "font": {"color": REGULARIZE, "size": 11}})
    last = float(y[-1])
    layout = _layout(
        title, "training step", "sparsity of the pruned layers",
        subtitle=f"{y.size} steps, {len(events)} pruning event(s), ending at {last:.1%}",
        xaxis={"range": [-0.5, y.size - 0.5]},
        yaxis={"range": [0, 1.02], "tickformat": ".0%"},
        shapes=shapes, annotations=annotations, showlegend=bool(events),
        meta={"steps": int(y.size), "events": [[int(s), float(v)] for s, v in events],
              "regularize_until": regularize_until},
    )
    return go.Figure(traces, layout)


def training_curves(
    records: Sequence[Record],
    *,
    total_steps: int,
    metric_name: str,
    planned: Sequence[float] | None = None,
    best_step: int | None = None,
) -> go.Figure:
    """A fine-tuning run so far, three panels over one step axis: the training loss, the
    validation metric (evaluated each epoch) and the measured sparsity of all parameters
    (with the `planned` schedule dashed). Pruning events are dotted vertical lines (up to
    MANY_EVENTS of them); the step whose weights were kept (`best_step`) is a star on the
    metric."""
    loss = [(r.step, r.loss) for r in records if r.step > 0 and math.isfinite(r.loss)]
    metric = [(r.step, r.metric) for r in records if r.metric is not None]
    sparsity = [(r.step, r.sparsity) for r in records]
    events = [(r.step, r.event) for r in records if r.event]
    pruned = [(s, e) for s, e in events if e.startswith("pruned")]

    def xy(points: Sequence[tuple[int, Any]]) -> dict[str, list[Any]]:
        return {"x": [p[0] for p in points], "y": [p[1] for p in points]}

    traces: list[Any] = [
        go.Scatter(**xy(loss), mode="lines", name="training loss", xaxis="x", yaxis="y",
                   line={"color": LOSS, "width": 1.5},
                   hovertemplate="step %{x}: loss %{y:.4g}<extra></extra>"),
        go.Scatter(**xy(metric), mode="lines+markers" if len(metric) <= MANY_POINTS else "lines",
                   name=f"validation {metric_name}",
                   xaxis="x2", yaxis="y2", line={"color": METRIC, "width": 2},
                   hovertemplate=f"step %{{x}}: {metric_name} %{{y:.4g}}<extra></extra>"),
    ]
    if planned is not None:
        target = _floats(planned, "planned").ravel()
        traces.append(go.Scatter(
            x=np.arange(target.size), y=target, mode="lines", name="planned sparsity",
            xaxis="x3", yaxis="y3", line={"color": THRESHOLD, "width": 1, "dash": "dash",
                                          "shape": "hv"},
            hovertemplate="step %{x}: planned %{y:.1%} of the pruned layers<extra></extra>"))
    traces.append(go.Scatter(
        **xy(sparsity), mode="lines", name="sparsity (all parameters)", xaxis="x3", yaxis="y3",
        line={"color": SPARSITY, "width": 2, "shape": "hv"},
        hovertemplate="step %{x}: %{y:.1%} zero<extra></extra>"))
    best = [(s, m) for s, m in metric if s == best_step]
    if best:
        traces.append(go.Scatter(
            x=[best[-1][0]], y=[best[-1][1]], mode="markers", name="weights kept (best)",
            xaxis="x2", yaxis="y2", marker={"symbol": "star", "size": 14, "color": BASELINE},
            hovertemplate=f"kept: step %{{x}}, {metric_name} %{{y:.4g}}<extra></extra>"))
    # a line per pruning event, unless there are so many that the steps of the sparsity
    # trace say it better
    shapes = [{"type": "line", "xref": "x3", "yref": "paper", "x0": s, "x1": s, "y0": 0,
               "y1": 1, "line": {"color": SPARSITY, "width": 1, "dash": "dot"},
               "layer": "below"} for s, _ in pruned] if len(pruned) <= MANY_EVENTS else []
    stop = [(s, e) for s, e in events if not e.startswith("pruned")]
    shapes += [{**_vertical_line(s), "xref": "x3", "yref": "paper", "y0": 0, "y1": 1}
               for s, _ in stop]
    end = max(total_steps, 1)
    steps = [-0.01 * end, 1.02 * end]  # room for the markers at both ends
    span = {"range": steps, "matches": "x3", "showticklabels": False}
    layout = _layout(
        "Training so far", "", "training loss",
        xaxis={**span, "anchor": "y"},
        yaxis={"domain": [0.72, 1.0]},
        xaxis2={**span, "anchor": "y2"},
        yaxis2={"domain": [0.38, 0.66], "title": {"text": f"validation {metric_name}"}},
        xaxis3={"range": steps, "anchor": "y3",
                "title": {"text": "training step"}},
        yaxis3={"domain": [0.0, 0.32], "title": {"text": "sparsity"}, "tickformat": ".0%",
                "range": [0, 1.02]},
        shapes=shapes,
        meta={"pruned_at": [s for s, _ in pruned], "best_step": best_step,
              "total_steps": total_steps},
    )
    layout["height"] = 560
    return go.Figure(traces, layout)
