# ruff: noqa: RUF001 - the Chinese texts asserted here use full-width punctuation
"""The Model and Inspect pages, the shared metric cards' texts and the classroom login in
Simplified Chinese, in states the default render does not reach: a pruned plan, the
criteria compared on whole filters, a wrong access code."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

from pruneviz import i18n
from pruneviz.app import state
from pruneviz.app.keys import INSPECT_GRAN_KEY, UPLOAD_WIDGET_KEY, data_widget_key
from pruneviz.app.widgets import latency_delta, metric_label
from pruneviz.core.explain import criterion_label, granularity_label
from pruneviz.data.access import SECRET_ENV
from pruneviz.data.tensors import load_digits
from pruneviz.i18n import CHINESE, use_language
from pruneviz.measure.timing import Speedup
from tests.fixtures.apptest import APP, bench_of, start
from tests.fixtures.i18n import english_left

# the app's sidebar (app.py, language.py) is translated with the navigation, not here
SIDEBAR = {"Language · 语言", "English", "Digits autoencoder"}
CRITERIA = ["apoz", "bn_scale", "fpgm", "lsh"]  # criterion ids stay as they are


def _english_on_page(at: AppTest) -> dict[str, list[str]]:
    session = bench_of(at).session
    names = ["digits_cnn", "Digits", "CNN", *CRITERIA, *session.layer_names]
    return {text: words for text, words in english_left(at, names).items()
            if text not in SIDEBAR}


def _missing() -> list[str]:
    return sorted(msg for lang, msg in i18n.MISSING if lang == CHINESE)


@pytest.mark.slow
def test_inspect_with_a_pruned_plan_and_filters_compared_is_chinese() -> None:
    i18n.MISSING.clear()
    at = start("sample:digits_cnn", "app_pages/inspect.py", lang="zh-CN",
               plan=(0.5, "filter"), no_errors=True)
    at.selectbox(key=INSPECT_GRAN_KEY).set_value("filter").run()
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader][:2] == ["剪枝准则的分歧之处", "所有层"]
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"]
              for c in at.get("plotly_chart")]
    assert "conv1：各剪枝准则剪去哪些通道" in titles  # conv1 filters: a channel group
    assert _english_on_page(at) == {}
    assert _missing() == []


@pytest.mark.slow
def test_the_model_page_of_a_pruned_plan_is_chinese() -> None:
    i18n.MISSING.clear()
    at = start("sample:digits_cnn", "app_pages/model.py", lang="zh-CN", plan=(0.3, "channel"),
               no_errors=True)
    assert at.title[0].value == "pruneviz — 看看剪枝对真实模型做了什么"
    assert "准确率" in [m.label for m in at.metric]
    assert _english_on_page(at) == {}
    assert _missing() == []


def test_shared_labels_follow_the_language_and_stay_english_outside_it() -> None:
    gain = Speedup(ratio=1.5, low=1.4, high=1.6, pairs=20)
    assert latency_delta(gain) == ("1.50x faster (CI 1.40-1.60)", "normal")
    assert (metric_label("top-5 accuracy"), criterion_label("random")) == ("top-5 accuracy",
                                                                           "random")
    with use_language("zh-CN"):
        assert latency_delta(gain) == ("快 1.50x（置信区间 1.40-1.60）", "normal")
        assert metric_label("top-5 accuracy") == "top-5 准确率"
        assert metric_label("mse") == "mse"
        assert criterion_label("random") == "随机"
        assert criterion_label("taylor") == "taylor"
        assert granularity_label("unstructured") == "非结构化"
        assert gain.text() == "快 1.50x（95% 置信区间 1.40-1.60x）"
    assert gain.text() == "1.50x faster (95% CI 1.40-1.60x)"


def test_the_classroom_login_is_chinese(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "LAUNCH_ARGV", ["app.py", "--classroom"])
    monkeypatch.setenv(SECRET_ENV, "correct-horse-battery")
    i18n.MISSING.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["lang"] = "zh-CN"
    at.query_params["token"] = "wrong-horse-battery"
    at.run()
    assert not at.exception, at.exception
    assert [t.label for t in at.text_input] == ["你的名字", "访问码"]
    assert [e.value for e in at.error] == ["此链接中的访问码不正确：请向老师重新索取链接。"]
    at.text_input[0].input("Ada")
    at.text_input[1].input("not-the-code-at-all")
    at.button[0].click().run()
    assert "访问码不正确。" in [e.value for e in at.error]
    left = {text: words for text, words in english_left(at).items() if text not in SIDEBAR}
    assert left == {}
    assert _missing() == []


@pytest.mark.slow
def test_uploaded_evaluation_data_is_announced_in_chinese() -> None:
    i18n.MISSING.clear()
    at = start("sample:digits_cnn", "app_pages/model.py", lang="zh-CN", no_errors=True)
    test = load_digits("test")
    buffer = io.BytesIO()
    np.savez(buffer, x=test.x[:150].numpy(), y=test.y[:150].numpy())
    at.file_uploader(key=data_widget_key("file", "evaluation")).upload("mine.npz",
                                                                       buffer.getvalue())
    at.run()
    at.button(key=data_widget_key("use", "evaluation")).click().run()
    assert not at.exception, at.exception
    assert [s.value for s in at.success] == [
        "此标签页现在使用 **mine.npz** 作为评估数据（150 个样本）：已在其上测量基线，"
        "并开始了新的实验记录。"]
    assert any(m.value.startswith("正在使用：上传的 **mine.npz**") for m in at.markdown)
    assert _english_on_page(at) == {}
    assert _missing() == []


@pytest.mark.slow
def test_uploaded_weights_are_announced_in_chinese() -> None:
    i18n.MISSING.clear()
    at = start("sample:digits_cnn", "app_pages/model.py", lang="zh-CN", no_errors=True)
    own = {k: v.detach().clone() for k, v in bench_of(at).session.model.state_dict().items()}
    halved = {k: v / 2 if v.is_floating_point() else v for k, v in own.items()}
    uploader = at.file_uploader(key=UPLOAD_WIDGET_KEY)
    uploader.upload("halved.safetensors", save(halved))
    at.run()
    at.button[0].click().run()  # "Use these weights": the first button of the page
    assert not at.exception, at.exception
    said = at.info[0].value
    assert said.startswith("此标签页剪枝的是你上传的权重 **halved.safetensors**（数值哈希 `")
    assert said.endswith("`）。模型自带的权重保持不变。")
    assert _english_on_page(at) == {}
    assert _missing() == []


@pytest.mark.slow
def test_inspect_names_an_lstms_hidden_units_in_chinese() -> None:
    """An LSTM's rows are pruned as hidden units: the score chart draws them (it refused
    the unit before) and names them."""
    i18n.MISSING.clear()
    at = start("sample:digits_lstm", "app_pages/inspect.py", lang="zh-CN", no_errors=True)
    at.selectbox(key=INSPECT_GRAN_KEY).set_value("filter").run()
    assert not at.exception, at.exception
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"]
              for c in at.get("plotly_chart")]
    assert any(title.endswith("每个隐藏单元的 l1 得分") for title in titles), titles
    assert _english_on_page(at) == {}
    assert _missing() == []
