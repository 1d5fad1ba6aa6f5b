"""The Prune page's sections: the layer rows, the global controls, block removal, the
layer view and the metrics box. Which plan the widgets stand for is decided in
`controls`; these functions only lay widgets out and draw."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import streamlit as st

from pruneviz.app import controls, state
from pruneviz.app.keys import (
    PRUNE_HIST_KEY,
    PRUNE_SCORES_KEY,
    SCOPE_NOTE_KEY,
    SELECTED_LAYER_KEY,
    widget_key,
)
from pruneviz.app.state import seed
from pruneviz.app.widgets import criteria_for, metrics_row, show_metric, shows_percent
from pruneviz.core.criteria import compares_rows, criterion_label
from pruneviz.core.granularity import Granularity, granularity_label, parse_granularity
from pruneviz.core.session import PruningSession
from pruneviz.i18n import _
from pruneviz.output.figures import score_bars, weight_histogram
from pruneviz.workflows.experiments import describe_plan
from pruneviz.workflows.sensitivity import SensitivityResult
from pruneviz.workflows.workbench import Workbench


def widget_values() -> dict[str, Any]:
    """This tab's session state as plain values, for `controls`."""
    return {str(key): value for key, value in st.session_state.items()}


def set_values(values: Mapping[str, Any]) -> None:
    """Put widget values (from `controls`) in this tab's session state."""
    for key, value in values.items():
        st.session_state[key] = value


def set_all_layers(session: PruningSession) -> None:
    """Uniform: copy the 'all layers' slider to every layer's slider."""
    set_values(controls.set_all_layers(st.session_state[widget_key("all")],
                                       session.layer_names))


def follow(session: PruningSession, layer: str) -> None:
    """Show the layer whose control just moved; move the layers coupled to it too."""
    st.session_state[SELECTED_LAYER_KEY] = layer
    set_values(controls.coupled_moves(layer, widget_values(), session.layer_names,
                                      session.group_of))


def say_where_kept(session: PruningSession) -> None:
    """The plan is about to be replaced (the scope changed, and with it the controls the
    plan is set with; or the plan is reset): it stays in the tab's experiments; say which
    one, to restore it from there (shown once, above the controls)."""
    plan = session.stamp(session.plan)
    space = state.workspace()
    found = None if plan.is_empty else space.log.find(plan, space.weights)
    if found is not None:
        st.session_state[SCOPE_NOTE_KEY] = _(
            "The plan you had ({plan}) is kept: it is experiment #{id} on the Trade-offs "
            "page, where it can be restored.").format(plan=describe_plan(plan, max_parts=3),
                                                      id=found.id)


def coupled_now(session: PruningSession) -> set[str]:
    """The layers whose filters move together with the selected layer's (empty if none)."""
    seed(SELECTED_LAYER_KEY, session.layer_names[0])
    focus = st.session_state[SELECTED_LAYER_KEY]
    focus_gran = Granularity(st.session_state.get(widget_key("gran", focus),
                                                  controls.DEFAULT_GRANULARITY))
    coupled = set(session.coupled_with(focus)) if focus_gran is Granularity.FILTER else set()
    return coupled if len(coupled) >= 2 else set()


def many_layers(session: PruningSession) -> bool:
    """Whether the model has too many layers for a row of controls each: then a compact
    table lists them all and the rows picked from it are edited."""
    return len(session.layers) > state.MANY_LAYERS


def layer_rows(session: PruningSession, mode: controls.Mode, coupled: set[str]) -> list[str]:
    """One row of controls per layer shown (the picked ones when there are many); returns
    the names of the layers shown."""
    if mode is controls.Mode.SPARSITY:
        seed(widget_key("all"), 0)
        st.slider(_("Set all layers to (sparsity %)"), 0, 100, key=widget_key("all"),
                  on_change=set_all_layers, args=(session,),
                  help=_("Moves every layer's slider to this value (uniform pruning)."))
    if many_layers(session):
        seed(widget_key("edit_layers"), session.layer_names[:1])
        shown = st.multiselect(
            _("Layers to edit"), session.layer_names, key=widget_key("edit_layers"),
            help=_("Their controls appear below; every other layer keeps its amount."))
    else:
        shown = session.layer_names
    values = widget_values()
    for name in shown:
        layer_row(session, name, mode, coupled, values)
    return shown


def safe_amounts(result: SensitivityResult | None) -> dict[str, float]:
    """Per layer: the highest sparsity its sensitivity curve took within tolerance (a
    coupled item's for each of its layers); empty when no analysis has run."""
    if result is None:
        return {}
    return {layer: row["safe_sparsity"] for row in result.ranking() for layer in row["layers"]}


def compact_table(session: PruningSession) -> None:
    """One row per prunable layer, for models with many: what it costs, what it is
    coupled with, how pruned it is now (coupled members as they really are) and how
    much its sensitivity analysis says it takes."""
    total_macs = sum(layer.macs for layer in session.layers) or 1
    safe = safe_amounts(state.sensitivity_result())
    rows = []
    for result in session.results():
        layer = session.layer_by_name[result.name]
        group = session.group_of(result.name)
        rows.append({
            _("layer"): result.name,
            _("type"): f"{layer.type} {'x'.join(map(str, layer.shape))}",
            "MACs": 100 * layer.macs / total_macs,
            _("coupled"): "" if group is None else _("group {id} ({count})").format(
                id=group.id, count=len(group.layers)),
            _("sparsity"): 100 * result.sparsity,
            _("pruned by"): f"{granularity_label(result.granularity)} "
            f"{criterion_label(result.criterion) if result.criterion else ''}".strip()
            if result.granularity else "",
        })
        if safe:
            rows[-1][_("safe up to")] = (100 * safe[result.name] if result.name in safe
                                         else None)
    st.dataframe(
        rows, hide_index=True, height=min(36 * (len(rows) + 1), 300),
        column_config={
            "MACs": st.column_config.ProgressColumn(
                "MACs", format="%.1f%%", min_value=0, max_value=100,
                help=_("The layer's share of the model's weight MACs")),
            _("sparsity"): st.column_config.ProgressColumn(
                _("sparsity"), format="%.1f%%", min_value=0, max_value=100,
                help=_("Zero weights in the layer now (coupled pruning included)")),
            _("safe up to"): st.column_config.NumberColumn(
                _("safe up to"), format="%.0f%%",
                help=_("The highest sparsity the last sensitivity analysis found within "
                       "tolerance (Sensitivity page)")),
        })
    if not safe:
        st.caption(_("A sensitivity analysis (Sensitivity page) adds how much each layer "
                     "takes to this table."))


def layer_row(session: PruningSession, name: str, mode: controls.Mode,
              coupled: Collection[str], values: Mapping[str, Any]) -> None:
    """A layer's granularity, criterion and amount; and, when its inputs are channels
    another layer's filter control removes, how many (`values`: the widgets' now)."""
    cols = st.columns([2.1, 2.3, 1.5, 3.6], vertical_alignment="center")
    info = session.layer_by_name[name]
    label = f":orange[:material/link: **{name}**]" if name in coupled else f"**{name}**"
    cols[0].markdown(f"{label}  \n:gray[{info.type} {'x'.join(map(str, info.shape))}]")
    gran = cols[1].selectbox(_("granularity"), controls.GRANULARITIES,
                             key=widget_key("gran", name), on_change=follow,
                             args=(session, name), label_visibility="collapsed",
                             format_func=granularity_label)
    granularity = parse_granularity(gran, name)
    options = criteria_for(gran)
    if st.session_state[widget_key("crit", name)] not in options:
        st.session_state[widget_key("crit", name)] = options[0]
    crit = cols[2].selectbox(_("criterion"), options, key=widget_key("crit", name),
                             on_change=follow, args=(session, name),
                             label_visibility="collapsed", format_func=criterion_label)
    amount_control(cols[3], session, name, granularity, crit, mode)
    reads = controls.coupled_inputs(name, values, session.layer_names, session.group_of)
    if reads is not None:  # under the row: the coupled group prunes this layer's inputs
        st.caption(_(":orange[:material/link: {percent}% of {layer}'s inputs go with "
                     "{other}'s filters (they read the channels those filters make)]").format(
            percent=reads[1], layer=name, other=reads[0]))


def amount_control(col: Any, session: PruningSession, name: str, granularity: Granularity,
                   crit: str, mode: controls.Mode) -> None:
    """A layer's amount: its sparsity or threshold slider, what N:M keeps, or why the
    layer cannot take this granularity and criterion."""
    gran = granularity.value
    reason = session.unsupported(name, granularity, crit)
    if reason is not None:
        col.warning(reason)
        return
    n_m = granularity.n_m
    if n_m is not None:
        col.caption(_("{granularity}: keeps {n} of every {m} consecutive input weights "
                      "({sparsity} sparsity)").format(granularity=gran, n=n_m[0], m=n_m[1],
                                                      sparsity=f"{1 - n_m[0] / n_m[1]:.0%}"))
    elif mode is controls.Mode.SPARSITY or compares_rows(crit, granularity):
        col.slider(_("{layer} sparsity %").format(layer=name), 0, 100,
                   key=widget_key("sp", name),
                   on_change=follow, args=(session, name), label_visibility="collapsed")
        if mode is controls.Mode.THRESHOLD:
            col.caption(_("{criterion} ranks the weights of each output row on their own: "
                          "there is no one threshold for the layer, so it takes a "
                          "sparsity").format(criterion=criterion_label(crit)))
    else:
        table = session.scores(name, granularity, crit)
        top_score = float(table.sorted[-1]) if table.count else 0.0
        current = session.result(name).threshold
        seed(widget_key("th", name), min(current or 0.0, top_score))
        if st.session_state[widget_key("th", name)] > top_score:
            st.session_state[widget_key("th", name)] = top_score
        col.slider(_("{layer} |score| threshold").format(layer=name), 0.0,
                   max(top_score, 1e-12),
                   step=max(top_score, 1e-12) / 200, format="%.4g",
                   key=widget_key("th", name), on_change=follow, args=(session, name),
                   label_visibility="collapsed")


def global_controls() -> None:
    """Granularity, criterion, total amount and cap of one global ranking."""
    cols = st.columns(2)
    g_gran = cols[0].selectbox(_("granularity"), controls.GLOBAL_GRANULARITIES,
                               key=widget_key("g_gran"), format_func=granularity_label)
    g_options = criteria_for(g_gran)
    if st.session_state[widget_key("g_crit")] not in g_options:
        st.session_state[widget_key("g_crit")] = g_options[0]
    cols[1].selectbox(_("criterion"), g_options, key=widget_key("g_crit"),
                      format_func=criterion_label)
    st.slider(_("Total sparsity of all layers (%)"), 0, 100, key=widget_key("g_sp"))
    st.slider(_("No layer above (%)"), 1, 100, key=widget_key("g_cap"),
              help=_("A cap so the global ranking cannot empty a layer."))


def block_controls(session: PruningSession) -> None:
    """Whole blocks or layers replaced by the identity, if the model has any."""
    blocks = session.blocks()
    if not blocks:
        return
    with st.expander(_("Remove whole blocks or layers ({count} removable)").format(
            count=len(blocks)),
                     expanded=bool(session.plan.blocks)):
        importance = {b.name: b for b in blocks}

        def remove_least() -> None:
            count = st.session_state[widget_key("blocks_k")]
            st.session_state[widget_key("blocks")] = [b.name for b in blocks[:count]]

        st.slider(_("Remove the least important"), 0, len(blocks),
                  key=widget_key("blocks_k"), on_change=remove_least,
                  help=_("Importance: how much the block changes what flows through it, "
                         "||f(x) - x|| / ||x|| on calibration data."))
        st.multiselect(
            _("Replaced by the identity"), [b.name for b in blocks], key=widget_key("blocks"),
            format_func=lambda n: _("{name} ({type}, {params} params, change {change})").format(
                name=n, type=importance[n].type, params=f"{importance[n].params:,}",
                change=f"{importance[n].importance:.2f}"),
        )
        if session.plan.blocks:
            st.caption(_("The rest of the network has to learn to do without them: fine-tune "
                         "this plan on the Fine-tune page (the blocks stay removed while it "
                         "trains; distillation learns from the model with every block)."))


def layer_view(session: PruningSession, coupled: set[str]) -> None:
    """The selected layer's weights (kept and pruned) and its structures' scores."""
    selected = st.selectbox(_("Layer to look at"), session.layer_names, key=SELECTED_LAYER_KEY)
    result = session.result(selected)
    layer = session.layer_by_name[selected]
    original = session.original(layer.weight).cpu().numpy()
    kept = session.mask(selected).cpu().numpy()
    magnitude = result.granularity == "unstructured" and result.criterion in ("l1", "l2")
    st.plotly_chart(
        weight_histogram(original, kept, layer=selected,
                         threshold=result.threshold
                         if magnitude and result.structures_pruned else None),
        key=PRUNE_HIST_KEY)
    if coupled and selected in coupled:
        group = session.group_of(selected)
        shared = {"head": _("attention heads (query, key and value rows, output-projection "
                            "columns)"),
                  "hidden unit": _("hidden units (gate rows, recurrent columns, readers)")}.get(
            group.unit if group else "", _("channels (the next layer's inputs, a residual sum)"))
        st.caption(_(":material/link: Filters of {layer} are pruned together with {others}: "
                     "they share {shared}, so removing one removes it everywhere.").format(
            layer=selected, shared=shared,
            others=", ".join(n for n in session.coupled_with(selected) if n != selected)))
        if group is not None and group.note:
            st.caption(":material/info: " + _(group.note))
    decided = session.table_for(selected)
    if decided is not None and result.granularity is not None and result.criterion:
        g = Granularity(result.granularity)
        table, pruned_count = decided
        unit = {"filter": "filter", "channel": "channel"}.get(g.value, "weight")
        one_cut = g.n_m is None and table.rows is None  # else no one cut through the scores
        st.plotly_chart(
            score_bars(table.sorted.cpu().numpy(), pruned_count if one_cut else 0,
                       layer=selected, criterion=result.criterion, unit=unit,
                       threshold=result.threshold if pruned_count else None),
            key=PRUNE_SCORES_KEY)
        if table.rows is not None:
            st.caption(_("{criterion} ranks each of the {rows} output rows on its own: the "
                         "same share goes from every row, so the chart shows the layer's "
                         "scores, not one cut through them.").format(
                criterion=criterion_label(result.criterion), rows=table.rows))
    else:
        st.caption(_("{layer} is not pruned: choose a granularity and move its "
                     "slider.").format(layer=selected))


def metrics_box(bench: Workbench) -> None:
    """The live metrics of the current plan. The slow figures (latency, gzip size, the
    whole evaluation set's metric) are measured in the background: while they are, the
    box redraws itself every second, and the page once when they are all in."""
    space = state.workspace()
    every = 1.0 if space.refiner.running() else None

    @st.fragment(run_every=every)
    def refreshed() -> None:
        running = space.refiner.running()
        report = bench.meter.report(gzip=False)  # cached: nothing is measured again here
        metrics_row(report, space.baseline(), bench.eval_data, measuring=running)
        if space.refiner.error is not None:
            st.warning(_("The background measurement failed: {error}").format(
                error=space.refiner.error))
        if bench.eval_full is not None:
            full = report.evaluation_full
            st.caption(
                _("Live numbers: a fixed subset of {subset} of the {total} evaluation "
                  "samples, with their ~95% interval. ").format(
                    subset=f"{len(bench.eval_data):,}", total=f"{len(bench.full_data):,}")
                + (_("Whole set, this plan: **{metric} {value}** (loss {loss}).").format(
                    metric=_(full.metric_name),
                    value=show_metric(full.metric, shows_percent(bench.eval_data)),
                    loss=f"{full.loss:.4g}") if full is not None
                   else _("The whole set is being measured in the background…") if running
                   else ""))
        if every is not None and not running:
            st.rerun()  # all in: redraw the page once (the log and chart have them too)

    refreshed()


def layers_table(session: PruningSession) -> None:
    """Every layer's granularity, criterion and what is pruned."""
    st.subheader(_("All layers"))
    st.dataframe(
        [
            {
                _("layer"): r.name,
                _("type"): r.type,
                _("granularity"): granularity_label(r.granularity) if r.granularity else "-",
                _("criterion"): criterion_label(r.criterion) if r.criterion else "-",
                _("sparsity"): f"{r.sparsity:.1%}",
                _("non-zero"): f"{r.nonzero:,} / {r.params:,}",
                _("pruned structures"): f"{r.structures_pruned:,} / {r.structures:,}",
                _("threshold"): "-" if r.threshold is None else f"{r.threshold:.4g}",
                _("coupled with"): ", ".join(n for n in session.coupled_with(r.name)
                                             if n != r.name),
            }
            for r in session.results()
        ],
        hide_index=True,
    )
