"""The Trade-offs page's int8 and low-rank forms: measured points, on the chart, restorable."""

from __future__ import annotations

from fixtures import apptest
from fixtures.apptest import bench_of, figure
from streamlit.testing.v1 import AppTest

from pruneviz.app.keys import WORKSPACE_KEY, widget_key
from pruneviz.core.plan import Plan

TIMEOUT = 120


def _start(sample: str) -> AppTest:
    return apptest.start(f"sample:{sample}", timeout=TIMEOUT)


def _techniques(at: AppTest) -> list[str]:
    return [e.technique for e in at.session_state[WORKSPACE_KEY].log]


def test_both_forms_add_measured_points_for_each_combination() -> None:
    at = _start("digits_mlp")
    at.switch_page("app_pages/prune.py").run()
    at.slider(key=widget_key("sp", "fc1")).set_value(50).run()
    assert not at.exception, at.exception
    pruned_plan = bench_of(at).session.plan
    assert not pruned_plan.is_empty
    at.switch_page("app_pages/tradeoffs.py").run()
    assert not at.exception, at.exception
    assert _techniques(at) == ["prune", "prune"]  # the baseline and the slider position

    at.radio(key="pv_int8_on").set_value("both")
    at.button(key="pv_int8_go").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert _techniques(at) == ["prune", "prune", "int8", "prune+int8"]

    at.slider(key="pv_svd_rank").set_value(50)
    at.radio(key="pv_svd_on").set_value("both")
    at.button(key="pv_svd_go").click().run()
    assert not at.exception, at.exception
    assert _techniques(at) == ["prune", "prune", "int8", "prune+int8", "svd r=50%",
                               "prune+svd r=50%"]
    log = list(at.session_state[WORKSPACE_KEY].log)
    assert all(e.latency_ms is not None and e.latency_ms > 0 for e in log)
    assert log[2].size_dense_bytes < log[0].size_dense_bytes / 3.5  # int8: about 4x smaller
    assert Plan.from_json(log[3].plan_json).key() == pruned_plan.key()
    assert Plan.from_json(log[2].plan_json).is_empty
    # the page says what it measured
    shown = " ".join(c.value for c in at.caption)
    assert "#4 svd r=50% (original weights) measured" in shown
    assert "#5 prune+svd r=50% (original weights) measured" in shown
    # the session is still on the plan the Prune page made
    assert bench_of(at).session.plan.key() == pruned_plan.key()

    for key in ("tradeoff_size_sparse_bytes", "tradeoff_latency_ms"):
        fig = figure(at, key)
        by_name = {t.name: t for t in fig.data}
        for name, ids in [("pruning", [0, 1]), ("int8 (unpruned)", [2]),
                          ("pruning + int8", [3]), ("low-rank SVD (unpruned)", [4]),
                          ("pruning + low-rank SVD", [5])]:
            assert [row[0] for row in by_name[name].customdata] == ids, (key, name)
        assert set(fig.layout.meta["techniques"].values()) == set(_techniques(at))

    # a combined point restores its pruning plan only, and the page says so
    at.selectbox(key="pv_tradeoff_choice").set_value(3).run()
    assert any("restoring it puts its pruning plan on the Prune page, without the int8"
               in c.value for c in at.caption)
    bench_of(at).session.apply(bench_of(at).session.stamp(Plan()))
    at.button(key="pv_restore").click().run()
    assert not at.exception, at.exception
    assert bench_of(at).session.plan.key() == pruned_plan.key()


def test_a_model_without_linear_layers_gets_a_message_not_a_traceback() -> None:
    at = _start("digits_autoencoder")
    at.switch_page("app_pages/tradeoffs.py").run()
    at.button(key="pv_int8_go").click().run()
    assert not at.exception, at.exception
    assert any("no nn.Linear, nn.LSTM or nn.GRU" in e.value for e in at.error)
    assert _techniques(at) == ["prune"]
