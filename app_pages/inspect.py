"""Inspect: one layer's weights and importance scores, all layers at a glance, kernels,
and where the criteria disagree."""

import streamlit as st

from pruneviz.app import state
from pruneviz.app.keys import (
    INSPECT_CRIT_KEY,
    INSPECT_DISAGREE_KEY,
    INSPECT_GRAN_KEY,
    INSPECT_HIST_KEY,
    INSPECT_KERNELS_KEY,
    INSPECT_LOGY_KEY,
    INSPECT_OVERVIEW_KEY,
    INSPECT_SCORES_KEY,
    SELECTED_LAYER_KEY,
    inspect_amount_key,
)
from pruneviz.app.state import seed
from pruneviz.app.widgets import criterion_select, localized, user_errors
from pruneviz.core.explain import compare_criteria, criterion_label, granularity_label, unit_label
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import LayerPlan
from pruneviz.i18n import _
from pruneviz.output.figures import (
    criteria_disagreement,
    kernel_grid,
    layer_overview,
    score_bars,
    weight_histogram,
)

st.title(_("Inspect"))
with user_errors(_("The model could not be loaded")):
    bench = state.workbench()
session = bench.session

seed(SELECTED_LAYER_KEY, session.layer_names[0])
cols = st.columns([2, 1, 1, 2])
name = cols[0].selectbox(_("Layer"), session.layer_names, key=SELECTED_LAYER_KEY)
layer = session.layer_by_name[name]
current = session.result(name)
seed(INSPECT_GRAN_KEY, current.granularity or "unstructured")
granularity = cols[1].selectbox(_("Granularity"), [g.value for g in Granularity],
                                format_func=localized(granularity_label), key=INSPECT_GRAN_KEY)
criterion = criterion_select(cols[2], granularity, INSPECT_CRIT_KEY, current.criterion)
g = Granularity(granularity)
amount = cols[3].slider(
    _("Preview: prune this share (%)"), 0, 100,
    round(current.sparsity * 100) if current.structures_pruned else 50,
    key=inspect_amount_key(name), disabled=g.n_m is not None,
    help=_("Starts at the layer's sparsity on the Prune page (50% if it is not pruned there). "
           "Nothing is applied here."),
)

reason = session.unsupported(name, g, criterion)
if reason is not None:
    st.warning(reason)
else:
    with user_errors(_("The preview failed")):
        entry = LayerPlan(g, criterion, sparsity=None if g.n_m else amount / 100)
        mask, pruned, threshold = session.preview(name, entry)
        group = session.group_of(name, g)
        table = (session.group_scores(group.id, criterion, g) if group is not None
                 else session.scores(name, g, criterion))
    unit = (group.unit if group is not None else g.value) if g.structured else "weight"
    if g.structured and group is not None:
        st.caption(_(":material/link: {layer}'s {kind}s are coupled with {others}: scores are "
                     "the group's, and the preview removes the same {unit}s in all of them.")
                   .format(layer=name, kind=granularity_label(g.value),
                           others=", ".join(n for n in group.layers if n != name),
                           unit=unit_label(group.unit)))
    log_y = st.checkbox(_("log-scale counts"), key=INSPECT_LOGY_KEY)
    left, right = st.columns(2)
    magnitude = not g.structured and g.n_m is None and criterion in ("l1", "l2")
    left.plotly_chart(
        weight_histogram(session.original(layer.weight).cpu().numpy(), mask.cpu().numpy(),
                         layer=name, threshold=threshold if magnitude and pruned else None,
                         log_y=log_y),
        key=INSPECT_HIST_KEY,
    )
    one_cut = g.n_m is None and table.rows is None  # else no one cut through the scores
    right.plotly_chart(
        score_bars(table.sorted.cpu().numpy(), pruned if one_cut else 0, layer=name,
                   criterion=criterion, unit=unit, threshold=threshold if pruned else None),
        key=INSPECT_SCORES_KEY,
    )
    if table.rows is not None:
        right.caption(_("{criterion} ranks each of the {rows} output rows on its own, so the "
                        "same share goes from every row: the chart shows the layer's scores, "
                        "not one cut through them.")
                      .format(criterion=criterion_label(criterion), rows=table.rows))

    if g.structured:
        st.subheader(_("Where the criteria disagree"))
        with user_errors(_("The criteria could not be compared")):
            compared = compare_criteria(session, name, g, amount / 100)
        pruned_by = {c: p.cpu().numpy() for c, p in compared.pruned_by.items()}
        st.plotly_chart(criteria_disagreement(pruned_by, layer=name, unit=unit),
                        key=INSPECT_DISAGREE_KEY)
        for note in compared.notes:  # lsh without duplicates, criteria choosing alike
            st.info(note, icon=":material/info:")
        if compared.skipped:
            st.caption(_("Not applicable to {layer}: {criteria}.").format(
                layer=name, criteria=_(", ").join(criterion_label(c) for c in compared.skipped)))
    else:
        st.caption(_("Choose the filter or channel granularity to compare which structures "
                     "each criterion would remove."))

st.subheader(_("All layers"))
results = session.results()
st.plotly_chart(
    layer_overview([r.name for r in results], [r.params for r in results],
                   [r.nonzero for r in results], [lay.macs_share for lay in session.layers]),
    key=INSPECT_OVERVIEW_KEY,
)
st.dataframe(
    [
        {"layer": r.name, "type": r.type, "params": r.params,
         "MACs share": f"{lay.macs_share:.1%}", "current sparsity": f"{r.sparsity:.1%}",
         "coupled group": "-" if r.group is None else f"#{r.group}",
         "pruned together with": ", ".join(
             n for n in session.coupled_with(r.name) if n != r.name) or "-"}
        for r, lay in zip(results, session.layers, strict=True)
    ],
    hide_index=True,
    column_config={"layer": _("layer"), "type": _("type"), "params": _("params"),
                   "MACs share": _("MACs share"), "current sparsity": _("current sparsity"),
                   "coupled group": _("coupled group"),
                   "pruned together with": _("pruned together with")},
)

convs = [lay for lay in session.layers if lay.type == "Conv2d" and len(lay.shape) == 4]
if convs:
    first = convs[0]
    st.subheader(_("Kernels of the first convolution ({layer})").format(layer=first.name))
    weight = session.original(first.weight)
    kernels = weight[:, 0] if weight.shape[1] == 1 else weight.mean(dim=1)
    filter_pruned = ~session.mask(first.name).flatten(1).any(dim=1)
    st.plotly_chart(kernel_grid(kernels.cpu().numpy(), filter_pruned.cpu().numpy(),
                                layer=first.name), key=INSPECT_KERNELS_KEY)
    tile = (_("Each tile is the filter's single input channel.") if weight.shape[1] == 1
            else _("Each tile is the mean over the filter's input channels."))
    st.caption(_("Pruned filters (all weights zero under the current plan) are dimmed. {tile}")
               .format(tile=tile))
