"""The app speaks English and Simplified Chinese: every marked message is in the zh-CN
catalogue, and every page rendered with ?lang=zh-CN leaves no English behind (beyond model
and layer names, units, numbers and standard technical names)."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from pruneviz import i18n
from pruneviz.app.keys import LANGUAGE_KEY, LANGUAGE_WIDGET_KEY
from pruneviz.i18n import CHINESE, _, catalogue_files, ngettext, use_language
from pruneviz.i18n.extract import messages_in, placeholders
from tests.fixtures.apptest import bench_of, start
from tests.fixtures.i18n import english_left, english_words

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "app.py", *sorted((ROOT / "app_pages").glob("*.py")),
           *sorted((ROOT / "pruneviz").rglob("*.py"))]
PAGES = ["learn", "model", "inspect", "sensitivity", "prune", "finetune", "deploy",
         "tradeoffs", "export", "workspaces"]


def _entries() -> dict[str, list[tuple[Path, str]]]:
    """{msgid: [(file, translation), ...]} over every zh-CN catalogue file."""
    found: dict[str, list[tuple[Path, str]]] = {}
    for path in catalogue_files(CHINESE):
        with path.open("rb") as file:
            for message in read_po(file):
                if not message.id:
                    continue
                msgid = message.id if isinstance(message.id, str) else message.id[0]
                text = message.string if isinstance(message.string, str) else message.string[0]
                found.setdefault(msgid, []).append((path, text or ""))
    return found


def test_every_marked_message_is_translated() -> None:
    entries = _entries()
    missing = sorted({f"{m.path.relative_to(ROOT)}:{m.line}: {m.message!r}"
                      for m in messages_in(SOURCES)
                      if not any(text for _, text in entries.get(m.message, []))})
    assert missing == []


def test_translations_keep_placeholders_and_agree() -> None:
    problems = []
    for msgid, places in _entries().items():
        texts = {text for _, text in places if text}
        if len(texts) > 1:
            problems.append(f"{msgid!r} is translated differently in {[p.name for p, _ in places]}")
        for text in texts:
            if placeholders(text) != placeholders(msgid):
                problems.append(f"{msgid!r}: placeholders {placeholders(msgid)} became "
                                f"{placeholders(text)}")
    assert problems == []


def test_no_catalogue_entry_is_stale() -> None:
    used = {m.message for m in messages_in(SOURCES)}
    assert sorted(set(_entries()) - used) == []


def test_translations_are_chinese() -> None:
    """A translation says it in Chinese (a message that is only a name or a unit is kept)."""
    english = {msgid: text for msgid, places in _entries().items() for _, text in places
               if text and english_words(text) and not any("\u4e00" <= c <= "\u9fff"
                                                          for c in text)}
    assert english == {}


def test_lookup_follows_the_language() -> None:
    assert _("Prune") == "Prune"
    assert ngettext("{n} layer", "{n} layers", 3) == "{n} layers"
    with use_language("zh-CN"):
        assert _("Prune") == "剪枝"
        assert _("Reopen {name}").format(name="a") == "重新打开 a"
    with use_language("zh_CN"):
        assert _("Prune") == "剪枝"
    with pytest.raises(ValueError, match="unknown language"), use_language("xx"):
        pass


def test_an_unknown_message_is_recorded_and_shown_in_english() -> None:
    i18n.MISSING.discard((CHINESE, "no such message here"))
    with use_language("zh-CN"):
        assert _("no such message here") == "no such message here"
    assert (CHINESE, "no such message here") in i18n.MISSING
    i18n.MISSING.discard((CHINESE, "no such message here"))


def test_the_detector_finds_english() -> None:
    """The page check bites: an English sentence is found, names and units are not."""
    assert english_words("Prune the model") == ["Prune", "the", "model"]
    assert english_words("剪枝 `conv1` 50% 1.2 MiB 3x3 MACs", names=["digits_cnn"]) == []
    assert english_words("digits_cnn 的 conv1", names=["digits_cnn", "conv1"]) == []
    assert english_words(":gray[剪枝] 32x1x3x3 BasicBlock summary.md") == []
    assert english_words(":gray[left alone]") == ["left", "alone"]


def test_lang_in_the_address_and_the_sidebar_choose_and_remember() -> None:
    at = start("sample:digits_cnn", lang="zh-CN")
    assert at.session_state[LANGUAGE_KEY] == "zh-CN"
    assert "模型" in [s.label for s in at.sidebar.selectbox]
    at.sidebar.selectbox(key=LANGUAGE_WIDGET_KEY).set_value("en").run()
    assert at.session_state[LANGUAGE_KEY] == "en"
    assert at.query_params["lang"] in ("en", ["en"])
    assert "Model" in [s.label for s in at.sidebar.selectbox]
    at.switch_page("app_pages/prune.py").run()  # remembered for the tab, page to page
    assert at.session_state[LANGUAGE_KEY] == "en"
    unknown = start("sample:digits_cnn", lang="klingon")
    assert unknown.session_state[LANGUAGE_KEY] == "en"


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_a_page_in_chinese_has_no_english_left(page: str) -> None:
    i18n.MISSING.clear()
    at = start("sample:digits_cnn", f"app_pages/{page}.py", lang="zh-CN")
    session = bench_of(at).session
    names = ["digits_cnn", "Digits", "CNN", *session.layer_names]
    assert english_left(at, names) == {}
    assert sorted(msg for lang, msg in i18n.MISSING if lang == CHINESE) == []
