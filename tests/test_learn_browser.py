"""A lesson in a real browser: the Learn page in Chinese at 1280x720 in the classroom view,
lesson 2 (masking versus removing) predicted, measured and revealed."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from pruneviz.i18n import CHINESE, use_language
from pruneviz.i18n import _ as translate
from pruneviz.workflows.lessons import TEACHING_SAMPLE
from pruneviz.workflows.lessons.masking import masking_vs_removing
from tests.fixtures.browser import CHROMIUM, LessonWalk, serve, walk_lesson

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"Chromium is not installed at {CHROMIUM} "
                       "(Debian package 'chromium'; .ci/run installs it)"),
    pytest.mark.slow,
]
HAN = re.compile(r"[\u4e00-\u9fff]")


def test_lesson_2_in_chinese_at_1280x720_reveals_the_measured_forms() -> None:
    with use_language(CHINESE):
        neither = translate("Neither changes: same file size, same speed")
        button = translate("Lock in my prediction and measure")
        slimmed = translate("slimmed")
        # the step's lead-in, just above the reveal
        lead_in = translate("Pruning tools usually **mask**: they write zeros into the "
                            "weights and keep every tensor's shape. Here {fraction:.0%} of "
                            "the filters of each layer that has them are zeroed (the smallest "
                            "by l1 norm), and the same filters are also really **removed** "
                            "(the slimmed model).").split("**")[0]
        # the frame's caption under a revealed step, up to its number
        revealed = translate("Measured on the real model in {seconds:.1f} s.").split("{")[0]

    def predict(page: Any) -> None:
        page.get_by_text(neither, exact=True).click()

    walk = LessonWalk(2, CHINESE, predict, button, revealed=revealed.strip(),
                      name="learn_lesson2_zh", top=lead_in)
    expected = masking_vs_removing(TEACHING_SAMPLE, runs=6)
    with serve() as url:
        walked = walk_lesson(url, walk)
    assert neither in walked.before
    assert "掩码" in walked.before
    assert len(HAN.findall(walked.after)) > 200  # the reveal's sentences are in Chinese
    assert slimmed in walked.after
    for form in (expected.unpruned, expected.masked, expected.slimmed):
        assert f"{form.file_bytes / 1024:,.1f}" in walked.after
        assert f"{form.params:,}" in walked.after
        assert f"{100 * form.accuracy:.1f}%" in walked.after
    assert walked.before_png.stat().st_size > 10_000
    assert walked.after_png.stat().st_size > 10_000
