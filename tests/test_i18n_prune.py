"""The Prune, Deploy and Export pages in Simplified Chinese, in states the default render
does not reach: a filter plan applied with a coupled layer selected, the refit switch on,
the Deploy page after a slim, the Export page's preview; and the library text they show."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pruneviz import i18n
from pruneviz.app.keys import widget_key
from pruneviz.core.criteria import criterion_label
from pruneviz.core.granularity import granularity_label
from pruneviz.i18n import CHINESE, use_language
from pruneviz.i18n.extract import messages_in
from pruneviz.output.html_report import Check, status_line
from tests.fixtures.apptest import bench_of, start
from tests.fixtures.i18n import english_left, visible_texts

ROOT = Path(__file__).resolve().parents[1]
MINE = [ROOT / p for p in (
    "app_pages/prune.py", "app_pages/deploy.py", "app_pages/export.py",
    "pruneviz/app/prune_view.py", "pruneviz/app/controls.py", "pruneviz/app/refit_view.py",
    "pruneviz/app/export_view.py", "pruneviz/core/criteria.py", "pruneviz/core/granularity.py",
    "pruneviz/output/bundle.py", "pruneviz/output/html_report.py",
    "pruneviz/output/deploy_files.py")]
# English these pages' own code used to show (text of other modules is checked elsewhere)
ENGLISH_OF_THESE_PAGES = ("Scope", "Sliders set", "Per layer", "Reset to unpruned",
                          "Filters of", "inputs go with", "Layer to look at", "All layers",
                          "Remove whole blocks", "Refit the kept", "weights, one-shot",
                          "with refit", "refit took", "parameters stored", "weight MACs",
                          "latency (batch", "largest output difference", "(fastest)",
                          "Download the slimmed", "Everything about", "Nothing is pruned",
                          "Also keep a copy", "Reproduce the weights", "No slimmed model",
                          "slim/ holds", "Slimming cut")


def _missing_of_these_pages() -> list[str]:
    mine = {m.message for m in messages_in(MINE)}
    return sorted(msg for lang, msg in i18n.MISSING if lang == CHINESE and msg in mine)


def _english_of_these_pages(at: AppTest) -> list[str]:
    names = bench_of(at).session.layer_names
    return [text for text in english_left(at, names)
            if any(phrase in text for phrase in ENGLISH_OF_THESE_PAGES)]


def test_display_names_follow_the_language_and_ids_stay_in_english() -> None:
    assert granularity_label("filter") == "filter"
    assert criterion_label("random") == "random"
    with use_language("zh-CN"):
        assert [granularity_label(g) for g in ("unstructured", "2:4", "filter", "channel")] \
            == ["非结构化", "2:4", "过滤器", "通道"]
        assert [criterion_label(c) for c in ("l1", "taylor", "random", "fpgm")] \
            == ["l1", "taylor", "随机", "几何中位数"]
    checks = [Check("a", True, ""), Check("b", True, "")]
    assert status_line(checks, 450) == ("verified: outputs identical on 450 eval samples; "
                                        "all 2 checks passed")
    with use_language("zh-CN"):
        verified = status_line(checks, 450)
        failed = status_line([Check("a", False, "")], 1)
    assert verified.startswith("已验证")
    assert "在 450 个评估样本上输出完全相同" in verified
    assert failed.startswith("失败")
    assert "1 项检查中有 1 项未通过" in failed


@pytest.mark.slow
def test_prune_page_with_a_filter_plan_and_a_coupled_layer_in_chinese() -> None:
    i18n.MISSING.clear()
    at = start("sample:digits_resnet", "app_pages/prune.py", plan=(0.5, "filter"),
               lang="zh-CN", timeout=300)
    with use_language("zh-CN"):  # AppTest formats the options in this thread
        at.selectbox(key="pv_selected_layer").set_value("layer1.conv1").run(timeout=300)
        assert not at.exception, at.exception
        assert [r.options for r in at.radio][:2] == [["逐层", "全局排序"],
                                                     ["稀疏度 %", "|分数| 阈值"]]
        assert "过滤器" in at.selectbox(key=widget_key("gran", "layer1.conv1")).options
        texts = visible_texts(at)
        assert any(t.startswith(":material/link: layer1.conv1 的过滤器与 ") for t in texts)
        assert any("layer1.conv1 的输入中有 50% 随 stem.conv 的过滤器一起被剪掉" in t
                   for t in texts)
        at.toggle(key="pv_refit_switch").set_value(True).run(timeout=300)
        assert not at.exception, at.exception
    labels = [m.label for m in at.metric]
    assert any(label.startswith("准确率") and label.endswith("一次性剪枝") for label in labels)
    assert any(label.startswith("准确率") and label.endswith("重新拟合后") for label in labels)
    assert _english_of_these_pages(at) == []
    assert _missing_of_these_pages() == []


@pytest.mark.slow
def test_deploy_page_after_a_slim_in_chinese() -> None:
    i18n.MISSING.clear()
    at = start("sample:digits_resnet", "app_pages/deploy.py", plan=(0.5, "filter"),
               lang="zh-CN", timeout=300)
    heads = [h.value for h in at.subheader]
    assert heads[0].startswith("掩码后")
    assert heads[1].startswith("瘦身后")
    assert "下载瘦身后的模型" in heads
    assert "存储的参数" in [m.label for m in at.metric]
    assert _english_of_these_pages(at) == []
    assert _missing_of_these_pages() == []


@pytest.mark.slow
def test_export_preview_of_a_slim_in_chinese() -> None:
    i18n.MISSING.clear()
    at = start("sample:digits_resnet", "app_pages/export.py", plan=(0.5, "filter"),
               lang="zh-CN", timeout=300)
    (table,) = at.dataframe
    assert list(table.value.columns) == ["文件", "内容"]
    assert any(c.value.startswith("`slim/` 中是瘦身后的模型") for c in at.caption)
    assert _english_of_these_pages(at) == []
    assert _missing_of_these_pages() == []
