"""The Trade-offs page's static int8 and int4 forms: measured points, drawn, int4 untimed."""

from __future__ import annotations

from fixtures import apptest
from fixtures.apptest import bench_of, figure

from pruneviz.app.keys import (
    INT4_GO_KEY,
    INT4_GROUP_KEY,
    INT4_ON_KEY,
    INT8_STATIC_GO_KEY,
    INT8_STATIC_ON_KEY,
    WORKSPACE_KEY,
    widget_key,
)
from pruneviz.core.plan import Plan
from pruneviz.workflows.experiments import STORAGE_ONLY

TIMEOUT = 180


def test_static_int8_and_int4_forms_add_points_alone_and_on_the_pruned_plan() -> None:
    at = apptest.start("sample:digits_cnn", timeout=TIMEOUT)
    at.switch_page("app_pages/prune.py").run()
    at.slider(key=widget_key("sp", "conv2")).set_value(50).run()
    assert not at.exception, at.exception
    pruned_plan = bench_of(at).session.plan
    assert not pruned_plan.is_empty
    at.switch_page("app_pages/tradeoffs.py").run()
    assert not at.exception, at.exception

    at.radio(key=INT8_STATIC_ON_KEY).set_value("both")
    at.button(key=INT8_STATIC_GO_KEY).click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    at.select_slider(key=INT4_GROUP_KEY).set_value(64)
    at.radio(key=INT4_ON_KEY).set_value("both")
    at.button(key=INT4_GO_KEY).click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]

    log = list(at.session_state[WORKSPACE_KEY].log)
    assert [e.technique for e in log] == [
        "prune", "prune", "int8-static", "prune+int8-static", "int4-w g=64",
        "prune+int4-w g=64"]
    assert Plan.from_json(log[3].plan_json).key() == pruned_plan.key()
    assert log[2].latency_ms is not None
    assert log[2].size_dense_bytes <= 0.3 * log[0].size_dense_bytes
    assert [e.latency_device for e in log[4:]] == [STORAGE_ONLY, STORAGE_ONLY]
    shown = " ".join(c.value for c in at.caption)
    assert "#5 prune+int4-w g=64 (original weights) measured" in shown
    assert "latency: storage only" in shown
    assert "storage only: no int4 kernel on CPU torch" in shown  # the notes
    assert bench_of(at).session.plan.key() == pruned_plan.key()

    size = figure(at, "tradeoff_size_dense_bytes")
    names = {t.name for t in size.data}
    assert {"static int8, Conv + Linear (unpruned)", "pruning + static int8",
            "int4 weight-only, storage only (unpruned)",
            "pruning + int4 weight-only, storage only"} <= names
    assert size.layout.meta["storage_only_ids"] == [4, 5]
    latency = figure(at, "tradeoff_latency_ms")
    assert "int4 weight-only point(s) not shown: storage only" in \
        latency.layout.title.subtitle.text
