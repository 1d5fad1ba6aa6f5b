"""Prune: a slider per layer (or one global ranking), live measured metrics."""

import streamlit as st

from pruneviz.app import state
from pruneviz.app.keys import (
    PRUNE_HIST_KEY,
    PRUNE_RESET_KEY,
    PRUNE_SCORES_KEY,
    SELECTED_LAYER_KEY,
    widget_key,
)
from pruneviz.app.state import seed
from pruneviz.app.widgets import HONESTY_NOTE, criteria_for, metrics_row, user_errors
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import GlobalPlan, LayerPlan, Plan
from pruneviz.output.figures import score_bars, weight_histogram
from pruneviz.workflows.experiments import ORIGINAL

SCOPES = ["Per layer", "Global ranking"]
MODES = ["sparsity %", "|score| threshold"]
GRANULARITIES = [g.value for g in Granularity]

st.title("Prune")
with user_errors("The model could not be loaded"):
    bench = state.workbench()
session = bench.session
plan_now = session.plan


# -- seed widgets from the current plan (after a page switch or a restored experiment) ---
seed(widget_key("scope"), SCOPES[1] if plan_now.global_ is not None else SCOPES[0])
uses_threshold = any(e.threshold is not None for e in plan_now.layers.values())
seed(widget_key("mode"), MODES[1] if uses_threshold else MODES[0])
for layer in session.layers:
    entry = plan_now.layers.get(layer.name)
    seed(widget_key("gran", layer.name), entry.granularity.value if entry else "unstructured")
    seed(widget_key("crit", layer.name), entry.criterion if entry else "l1")
    sparsity = entry.sparsity if entry and entry.sparsity is not None else 0.0
    seed(widget_key("sp", layer.name), round(sparsity * 100))
section = plan_now.global_
seed(widget_key("g_sp"), round((section.sparsity or 0.0) * 100) if section else 50)
seed(widget_key("g_gran"), section.granularity.value if section else "unstructured")
seed(widget_key("g_crit"), section.criterion if section else "l1")
seed(widget_key("g_cap"), round((section.max_layer_sparsity or 1.0) * 100) if section else 95)


def layer_amount(name: str, gran: str, crit: str, percent: int) -> float:
    """The sparsity a layer's slider stands for: the current plan's own value when the
    slider still shows it rounded (a proposed 85.87% stays 85.87% until the slider
    moves), else the slider's whole percent."""
    entry = plan_now.layers.get(name)
    if entry is not None and entry.sparsity is not None and entry.granularity.value == gran \
            and entry.criterion == crit and round(entry.sparsity * 100) == percent:
        return entry.sparsity
    return percent / 100


def set_all_layers() -> None:
    """Uniform: copy the 'all layers' slider to every layer's slider."""
    value = st.session_state[widget_key("all")]
    for layer in session.layers:
        st.session_state[widget_key("sp", layer.name)] = value


def follow(layer: str) -> None:
    """Show the layer whose control just moved; move the layers coupled to it too."""
    st.session_state[SELECTED_LAYER_KEY] = layer
    ss = st.session_state
    granularity = Granularity(ss[widget_key("gran", layer)])
    group = session.group_of(layer, granularity) if granularity.structured else None
    if group is None:
        return
    for other in session.layer_names:
        other_gran = Granularity(ss.get(widget_key("gran", other), "unstructured"))
        if other != layer and other_gran.structured and \
                session.group_of(other, other_gran) is group:
            ss[widget_key("sp", other)] = ss.get(widget_key("sp", layer), 0)
            ss[widget_key("crit", other)] = ss[widget_key("crit", layer)]


def reset() -> None:
    """Back to the unpruned model."""
    state.restore_plan(Plan())


if state.current_weights() != ORIGINAL:
    st.caption(f":material/model_training: This tab prunes the **{state.current_weights()}** "
               "weights, whose pruned entries are already zero: *Reset to unpruned* keeps them. "
               "The original weights are one click away on the Fine-tune page.")
metrics_box = st.container()
st.info(HONESTY_NOTE)
top = st.columns([2, 2, 1])
scope = top[0].radio("Scope", SCOPES, key=widget_key("scope"), horizontal=True,
                     help="Per layer: each layer its own amount. Global ranking: one ranking of "
                     "all layers' structures, pruned to a total amount.")
mode = top[1].radio("Sliders set", MODES, key=widget_key("mode"), horizontal=True,
                    disabled=scope == SCOPES[1],
                    help="The fraction of structures removed, or an absolute importance score "
                    "below which structures are removed.")
top[2].button("Reset to unpruned", on_click=reset, width="stretch", key=PRUNE_RESET_KEY)

controls, view = st.columns([3.3, 2], gap="large")
seed(SELECTED_LAYER_KEY, session.layer_names[0])
_focus = st.session_state[SELECTED_LAYER_KEY]
_focus_gran = Granularity(st.session_state.get(widget_key("gran", _focus), "unstructured"))
coupled_now = set(session.coupled_with(_focus)) if _focus_gran is Granularity.FILTER else set()
if len(coupled_now) < 2:
    coupled_now = set()
warnings: list[str] = []
with controls:
    if scope == SCOPES[0]:
        if mode == MODES[0]:
            seed(widget_key("all"), 0)
            st.slider("Set all layers to (sparsity %)", 0, 100, key=widget_key("all"),
                      on_change=set_all_layers,
                      help="Moves every layer's slider to this value (uniform pruning).")
        layers_plan: dict[str, LayerPlan] = {}
        many = len(session.layers) > state.MANY_LAYERS
        if many:
            st.caption(f"{len(session.layers)} layers: pick one to edit; the table lists all.")
            shown = [st.selectbox("Layer to edit", session.layer_names,
                                  key=widget_key("edit_layer"))]
        else:
            shown = session.layer_names
        for name in session.layer_names:
            gran = st.session_state[widget_key("gran", name)]
            crit = st.session_state[widget_key("crit", name)]
            if name in shown:
                cols = st.columns([2.1, 2.3, 1.5, 3.6], vertical_alignment="center")
                layer_info = session.layer_by_name[name]
                label = f":orange[:material/link: **{name}**]" if name in coupled_now \
                    else f"**{name}**"
                cols[0].markdown(f"{label}  \n:gray[{layer_info.type} "
                                 f"{'x'.join(map(str, layer_info.shape))}]")
                gran = cols[1].selectbox("granularity", GRANULARITIES,
                                         key=widget_key("gran", name), on_change=follow,
                                         args=(name,), label_visibility="collapsed")
                options = criteria_for(gran)
                if st.session_state[widget_key("crit", name)] not in options:
                    st.session_state[widget_key("crit", name)] = options[0]
                crit = cols[2].selectbox("criterion", options, key=widget_key("crit", name),
                                         on_change=follow, args=(name,),
                                         label_visibility="collapsed")
                reason = session.unsupported(name, Granularity(gran), crit)
                if reason is not None:
                    cols[3].warning(reason)
                    continue
                n_m = Granularity(gran).n_m
                if n_m is not None:
                    cols[3].caption(f"{gran}: keeps {n_m[0]} of every {n_m[1]} consecutive "
                                    f"input weights ({1 - n_m[0] / n_m[1]:.0%} sparsity)")
                    layers_plan[name] = LayerPlan(gran, crit)
                    continue
                if mode == MODES[0]:
                    value = cols[3].slider(f"{name} sparsity %", 0, 100,
                                           key=widget_key("sp", name), on_change=follow,
                                           args=(name,), label_visibility="collapsed")
                    if value:
                        layers_plan[name] = LayerPlan(
                            gran, crit, sparsity=layer_amount(name, gran, crit, value))
                else:
                    table = session.scores(name, Granularity(gran), crit)
                    top_score = float(table.sorted[-1]) if table.count else 0.0
                    current = session.result(name).threshold
                    seed(widget_key("th", name), min(current or 0.0, top_score))
                    if st.session_state[widget_key("th", name)] > top_score:
                        st.session_state[widget_key("th", name)] = top_score
                    threshold = cols[3].slider(
                        f"{name} |score| threshold", 0.0, max(top_score, 1e-12),
                        step=max(top_score, 1e-12) / 200, format="%.4g",
                        key=widget_key("th", name), on_change=follow, args=(name,),
                        label_visibility="collapsed")
                    if threshold > 0:
                        layers_plan[name] = LayerPlan(gran, crit, threshold=threshold)
            else:
                value = st.session_state.get(widget_key("sp", name), 0)
                if value and session.unsupported(name, Granularity(gran), crit) is None:
                    layers_plan[name] = LayerPlan(
                        gran, crit, sparsity=layer_amount(name, gran, crit, value))
        plan = Plan(layers_plan)
    else:
        cols = st.columns(2)
        g_gran = cols[0].selectbox("granularity", [g for g in GRANULARITIES if ":" not in g],
                                   key=widget_key("g_gran"))
        g_options = criteria_for(g_gran)
        if st.session_state[widget_key("g_crit")] not in g_options:
            st.session_state[widget_key("g_crit")] = g_options[0]
        g_crit = cols[1].selectbox("criterion", g_options, key=widget_key("g_crit"))
        g_sp = st.slider("Total sparsity of all layers (%)", 0, 100, key=widget_key("g_sp"))
        g_cap = st.slider("No layer above (%)", 1, 100, key=widget_key("g_cap"),
                          help="A cap so the global ranking cannot empty a layer.")
        skipped = {n: r for n in session.layer_names
                   if (r := session.unsupported(n, Granularity(g_gran), g_crit)) is not None}
        for name, reason in skipped.items():
            warnings.append(f"{name} left out: {reason}")
        members = tuple(n for n in session.layer_names if n not in skipped)
        plan = Plan(global_=GlobalPlan(g_gran, g_crit, sparsity=g_sp / 100, layers=members,
                                       max_layer_sparsity=g_cap / 100)) if g_sp else Plan()

    blocks = session.blocks()
    if blocks:
        with st.expander(f"Remove whole blocks or layers ({len(blocks)} removable)",
                         expanded=bool(plan_now.blocks)):
            importance = {b.name: b for b in blocks}
            seed(widget_key("blocks"), list(plan_now.blocks))

            def remove_least() -> None:
                count = st.session_state[widget_key("blocks_k")]
                st.session_state[widget_key("blocks")] = [b.name for b in blocks[:count]]

            seed(widget_key("blocks_k"), len(plan_now.blocks))
            st.slider("Remove the least important", 0, len(blocks), key=widget_key("blocks_k"),
                      on_change=remove_least,
                      help="Importance: how much the block changes what flows through it, "
                      "||f(x) - x|| / ||x|| on calibration data.")
            chosen = st.multiselect(
                "Replaced by the identity", [b.name for b in blocks], key=widget_key("blocks"),
                format_func=lambda n: f"{n} ({importance[n].type}, "
                f"{importance[n].params:,} params, change {importance[n].importance:.2f})",
            )
            plan = plan.with_blocks(chosen)

with user_errors("This plan cannot be applied"):
    session.apply(session.stamp(plan))
    report = state.measure_and_record()

for message in warnings:
    st.warning(message)

for note in session.notes:
    st.info(note)

with view:
    selected = st.selectbox("Layer to look at", session.layer_names,
                            key=SELECTED_LAYER_KEY)
    result = session.result(selected)
    layer = session.layer_by_name[selected]
    original = session.original(layer.weight).numpy()
    kept = session.mask(selected).numpy()
    magnitude = result.granularity == "unstructured" and result.criterion in ("l1", "l2")
    st.plotly_chart(
        weight_histogram(original, kept, layer=selected,
                         threshold=result.threshold
                         if magnitude and result.structures_pruned else None),
        key=PRUNE_HIST_KEY)
    if coupled_now and selected in coupled_now:
        group = session.group_of(selected)
        shared = {"head": "attention heads (query, key and value rows, out_proj columns)",
                  "hidden unit": "hidden units (gate rows, recurrent columns, readers)"}.get(
            group.unit if group else "", "channels (the next layer's inputs, a residual sum)")
        st.caption(":material/link: Filters of " + selected + " are pruned together with "
                   + ", ".join(n for n in session.coupled_with(selected) if n != selected)
                   + f": they share {shared}, so removing one removes it everywhere.")
    decided = session.table_for(selected)
    if decided is not None and result.granularity is not None and result.criterion:
        g = Granularity(result.granularity)
        table, pruned_count = decided
        unit = {"filter": "filter", "channel": "channel"}.get(g.value, "weight")
        st.plotly_chart(
            score_bars(table.sorted.numpy(), pruned_count if g.n_m is None else 0,
                       layer=selected, criterion=result.criterion, unit=unit,
                       threshold=result.threshold if pruned_count else None),
            key=PRUNE_SCORES_KEY)
    else:
        st.caption(f"{selected} is not pruned: choose a granularity and move its slider.")

with metrics_box:
    metrics_row(report, bench.baseline, bench.eval_data)
    if bench.eval_full is not None:
        full = state.full_evaluation()
        left, right = st.columns([1, 3], vertical_alignment="center")
        if left.button(f"Measure on all {len(bench.full_data):,} samples",
                       help="Live updates use a fixed subset of the evaluation data "
                       "(set its size on the Model page); this measures the whole set."):
            with st.spinner("Evaluating the whole set ..."), \
                    user_errors("Measuring the whole evaluation set"):
                full = state.evaluate_full()
        right.caption(
            f"Live numbers: a fixed subset of {len(bench.eval_data):,} samples. "
            + ("" if full is None else
               f"Whole set, this plan: **{full.metric_name} {full.metric:.4g}** "
               f"(loss {full.loss:.4g}, {full.samples:,} samples)."))
st.subheader("All layers")
st.dataframe(
    [
        {
            "layer": r.name,
            "type": r.type,
            "granularity": r.granularity or "-",
            "criterion": r.criterion or "-",
            "sparsity": f"{r.sparsity:.1%}",
            "non-zero": f"{r.nonzero:,} / {r.params:,}",
            "pruned structures": f"{r.structures_pruned:,} / {r.structures:,}",
            "threshold": "-" if r.threshold is None else f"{r.threshold:.4g}",
            "coupled with": ", ".join(n for n in session.coupled_with(r.name) if n != r.name),
        }
        for r in session.results()
    ],
    hide_index=True,
)
