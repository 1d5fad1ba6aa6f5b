"""Wanda, OWL and the criterion notes in the app (Streamlit's AppTest): the Prune page
offers wanda and prunes each output row its share; the Inspect page says when lsh found
no near-duplicates. (The Sensitivity page's OWL comparison: test_sensitivity_page.py.)"""

from __future__ import annotations

from fixtures import apptest
from fixtures.apptest import bench_of

from pruneviz.app.keys import INSPECT_GRAN_KEY, SELECTED_LAYER_KEY, widget_key


def test_the_prune_page_offers_wanda_and_prunes_row_by_row() -> None:
    at = apptest.start("sample:digits_mlp", "app_pages/prune.py", no_errors=True)
    picker = at.selectbox(key=widget_key("crit", "fc1"))
    assert "wanda" in picker.options
    picker.set_value("wanda").run()
    at.slider(key=widget_key("sp", "fc1")).set_value(50).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    session = bench_of(at).session
    entry = session.plan.layers["fc1"]
    assert entry.criterion == "wanda"
    assert entry.sparsity == 0.5
    pruned = (~session.mask("fc1")).sum(dim=1)
    assert (pruned == session.layer_by_name["fc1"].shape[1] // 2).all()
    # the threshold mode gives wanda its sparsity slider (no one threshold in a layer)
    at.radio(key=widget_key("mode")).set_value("|score| threshold").run()
    assert not at.exception, at.exception
    assert any("no one threshold" in c.value for c in at.caption)
    assert session.plan.layers["fc1"].criterion == "wanda"


def test_the_inspect_page_says_lsh_ranked_like_l2() -> None:
    at = apptest.start("sample:digits_cnn", "app_pages/inspect.py", no_errors=True)
    at.selectbox(key=SELECTED_LAYER_KEY).set_value("conv2").run()
    at.selectbox(key=INSPECT_GRAN_KEY).set_value("filter").run()
    assert not at.exception, at.exception
    infos = [i.value for i in at.info]
    assert any("conv2: lsh found no near-duplicate filters among its 64" in i
               and "exactly as l2 does" in i for i in infos), infos
    assert any("remove the same" in i and "lsh" in i and "l2" in i for i in infos), infos
