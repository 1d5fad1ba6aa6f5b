# ruff: noqa: RUF001  (the Chinese texts checked have full-width punctuation)
"""The Sensitivity and Trade-offs pages in Chinese beyond their first render: a finished
analysis with a budget comparison, and trade-offs with pruned, int8 and SVD points. The
texts these pages and their figures make are Chinese; the experiments they record are
labelled in the tab's language. (Widgets are driven inside `use_language`, because AppTest
formats a picked option in the test's own thread.)"""

from __future__ import annotations

import json

import pytest
from fixtures.apptest import bench_of, figure, rerun_while_running, start
from fixtures.i18n import _chart_strings, english_words

from pruneviz import i18n
from pruneviz.app import keys
from pruneviz.app.keys import BENCH_ID_KEY, WORKERS_KEY, WORKSPACE_KEY, widget_key
from pruneviz.i18n import CHINESE, use_language

pytestmark = pytest.mark.slow


def english_in(texts: list[str], names: list[str]) -> dict[str, list[str]]:
    """{text: its English words} for the texts that have some."""
    return {t[:120]: w for t in texts if (w := english_words(t, names))}


def test_a_finished_analysis_and_a_budget_comparison_read_in_chinese() -> None:
    i18n.MISSING.clear()
    at = start("sample:digits_mlp", "app_pages/sensitivity.py", lang="zh-CN", timeout=120)
    names = ["digits_mlp", "Yin", *bench_of(at).session.layer_names]  # Yin: OWL's author
    with use_language("zh-CN"):
        at.button(key="pv_sens_run").click().run()
        worker = at.session_state[WORKERS_KEY][str(at.session_state[BENCH_ID_KEY])]
        rerun_while_running(at, worker, 60)
        at.button(key="pv_sens_compare").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]

    (bar,) = at.get("progress")
    assert bar.proto.text.endswith("— 已完成"), bar.proto.text
    texts = [bar.proto.text, *(e.value for e in at.subheader), *(e.value for e in at.caption),
             *(e.value for e in at.info), *(e.value for e in at.warning)]
    assert english_in(texts, names) == {}
    ranking, compared = at.dataframe[0].value, at.dataframe[1].value
    assert list(ranking.columns)[:3] == ["排名", "层或层组", "单元"]
    assert set(ranking["单元"]) == {"权重"}
    assert list(compared["方法"]) == ["均匀", "全局", "敏感度", "离群加权（OWL）"]
    assert list(compared["是否达到"]) == ["是", "是", "是", "是"]
    assert english_in([*compared.columns], names) == {}
    # the four plans are recorded under Chinese labels, in the methods' order
    labels = [e.label for e in list(at.session_state[WORKSPACE_KEY].log)[1:]]
    assert [label.split("方法")[0] for label in labels] == [
        "均匀", "全局", "敏感度", "离群加权（OWL）"]
    assert all("预算 80% 稀疏度（非结构化，l1）" in label for label in labels), labels
    assert sorted(msg for lang, msg in i18n.MISSING if lang == CHINESE) == []


def test_trade_offs_with_pruned_int8_and_svd_points_read_in_chinese() -> None:
    i18n.MISSING.clear()
    at = start("sample:digits_cnn", "app_pages/prune.py", lang="zh-CN", timeout=240)
    names = ["digits_cnn", *bench_of(at).session.layer_names]
    with use_language("zh-CN"):
        at.slider(key=widget_key("sp", "conv2")).set_value(50).run()
        at.switch_page("app_pages/tradeoffs.py").run()
        at.radio(key=keys.INT8_ON_KEY).set_value("both")
        at.button(key=keys.INT8_GO_KEY).click().run()
        at.radio(key=keys.SVD_ON_KEY).set_value("current pruned plan")
        at.button(key=keys.SVD_GO_KEY).click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]

    log = list(at.session_state[WORKSPACE_KEY].log)
    assert [e.technique for e in log] == ["prune", "prune", "int8", "prune+int8",
                                          "prune+svd r=50%"]
    assert log[3].label == "剪枝+int8: conv2 非结构化 l1 50%"
    (done,) = [c.value for c in at.caption if c.value.startswith(":material/check:")]
    assert "#4 剪枝+svd r=50%（原始 权重）已测量：准确率" in done, done
    assert list(at.radio(key=keys.INT8_ON_KEY).options) == [
        "原始模型", "当前剪枝方案", "两者"]
    for field in ("size_sparse_bytes", "latency_ms"):
        chart = figure(at, keys.tradeoff_chart_key(field))
        strings = list(_chart_strings(json.loads(chart.to_json())))
        assert english_in(strings, names) == {}
        assert {t.name for t in chart.data} >= {"剪枝", "帕累托前沿", "基线（未剪枝）",
                                                "int8（未剪枝）", "剪枝 + int8",
                                                "剪枝 + 低秩 SVD"}
    history = figure(at, keys.HISTORY_TREE_KEY)
    assert "本标签页的实验历史" in history.layout.title.text
    assert sorted(msg for lang, msg in i18n.MISSING if lang == CHINESE) == []
