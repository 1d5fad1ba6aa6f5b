"""The Fine-tune page in Simplified Chinese beyond its first render: after a short run has
finished (live curves, the measured result, the weights' buttons) and when a recipe cannot
run. The page's own text is all Chinese, and every message it looks up is in the catalogue.

Widgets with a format_func are read back by AppTest in the test's own thread, so the test
runs inside use_language("zh-CN") to find the options as the page drew them."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from pruneviz import i18n
from pruneviz.app.keys import BENCH_ID_KEY, FINETUNE_WORKERS_KEY
from pruneviz.app.worker import FinetuneWorker
from pruneviz.i18n import CHINESE, use_language
from tests.fixtures.apptest import bench_of, figure, rerun_while_running, start
from tests.fixtures.i18n import english_left

PAGE = "app_pages/finetune.py"
MODEL = "sample:digits_mlp"
SPARSITY = "稀疏度（全部参数）"  # noqa: RUF001 (Chinese punctuation)
WAIT = 60.0  # seconds a short run of digits_mlp may take, at most
# shown on the page but written elsewhere (shared widgets, the sidebar, the sample list)
ELSEWHERE = {"Criterion", "random", "Cancel", "Language · 语言", "English",
             "Digits autoencoder"}


def worker_of(at: AppTest) -> FinetuneWorker:
    worker = at.session_state[FINETUNE_WORKERS_KEY][str(at.session_state[BENCH_ID_KEY])]
    assert isinstance(worker, FinetuneWorker)
    return worker


def english_of_the_page(at: AppTest) -> dict[str, list[str]]:
    names = ["digits_mlp", "Digits", "MLP", *bench_of(at).session.layer_names]
    return {text: words for text, words in english_left(at, names).items()
            if text not in ELSEWHERE}


def missing() -> list[str]:
    return sorted(message for lang, message in i18n.MISSING if lang == CHINESE)


@pytest.mark.slow
def test_a_finished_run_and_its_weights_in_chinese() -> None:
    i18n.MISSING.clear()
    at = start(MODEL, PAGE, lang="zh-CN")
    with use_language("zh-CN"):
        at.radio(key="pv_ft_recipe").set_value("iterative").run()
        at.number_input(key="pv_ft_epochs").set_value(2)
        at.number_input(key="pv_ft_max_steps").set_value(24)
        at.run()
        at.button(key="pv_ft_run").click().run()
        assert not at.exception, at.exception
        rerun_while_running(at, worker_of(at), WAIT)
        assert worker_of(at).snapshot().outcome is not None
        (bar,) = at.get("progress")
        assert str(bar.proto.text).startswith("第 24 步 / 共 24 步——")
        assert english_of_the_page(at) == {}
        (table,) = [d.value for d in at.dataframe if "阶段" in d.value.columns]
        assert list(table.columns) == ["阶段", "准确率", "变化", SPARSITY, "非零参数", "延迟",
                                       "相对未剪枝模型的延迟", "实验"]
        assert table["阶段"].iloc[2] == "微调后（微调版 #1）"  # noqa: RUF001
        curves = figure(at, "ft_curves")
        assert {t.name for t in curves.data} >= {"训练损失", "验证集准确率", SPARSITY}
        assert curves.layout.title.text.startswith("目前的训练情况")

        at.button(key="pv_ft_use").click().run()
        at.run()  # the action's message is shown once
        assert not at.exception, at.exception
        assert "回到原始权重" in [b.label for b in at.button]
        assert any("**微调版 #1**" in i.value for i in at.info)
        assert english_of_the_page(at) == {}
    assert missing() == []


@pytest.mark.slow
def test_a_recipe_that_cannot_run_says_so_in_chinese() -> None:
    i18n.MISSING.clear()
    at = start(MODEL, PAGE, lang="zh-CN")
    with use_language("zh-CN"):
        at.radio(key="pv_ft_recipe").set_value("poly").run()
        at.number_input(key="pv_ft_final").set_value(100.0).run()
        assert not at.exception, at.exception
    (error,) = at.error
    assert error.value.startswith("该微调方案无法运行：")  # noqa: RUF001 (its reason: English)
    assert "多项式调度" in at.radio(key="pv_ft_recipe").options
    assert missing() == []
