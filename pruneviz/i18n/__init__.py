"""Translations: the text the app shows, in English and Simplified Chinese (gettext catalogues).

Text is written in English in the code and marked for translation:

    from pruneviz.i18n import _
    st.button(_("Reset to unpruned"))
    st.caption(_("{count} layers pruned").format(count=n))   # placeholders by name

`N_("...")` marks a module-level constant whose translation is looked up where it is shown,
`_(CONSTANT)`. The catalogues are gettext `.po` files, one per part of the app, in
`pruneviz/i18n/<locale>/` (a translator edits them with any PO editor); they are compiled in
memory with Babel when first needed, and looked up with the standard library's gettext.

The language is per caller: `use_language("zh-CN")` for a block of code (tests, scripts),
or a provider the app registers that reads the browser tab's choice. Anything else, the CLI
and background workers included, gets English.
"""

from __future__ import annotations

import gettext
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

ENGLISH = "en"
CHINESE = "zh-CN"
LANGUAGES = {ENGLISH: "English", CHINESE: "简体中文"}  # code -> the language's own name
CATALOGUE_DIR = Path(__file__).resolve().parent
_LOCALE_DIRS = {CHINESE: "zh_CN"}  # language code -> catalogue folder (gettext locale name)

_chosen: ContextVar[str | None] = ContextVar("pruneviz_language", default=None)
_provider: Callable[[], str | None] | None = None
MISSING: set[tuple[str, str]] = set()  # (language, msgid) looked up but not in its catalogue


def N_(message: str) -> str:  # the gettext convention's name for a deferred mark
    """Mark `message` for the catalogues without translating it now."""
    return message


def normalise(code: str | None) -> str | None:
    """A language code as the app names it ("zh-CN", "en"), or None when unknown."""
    if not code:
        return None
    key = code.strip().replace("_", "-").lower()
    for known in LANGUAGES:
        if key == known.lower() or key.split("-")[0] == known.lower():
            return known
    if key in ("zh", "zh-hans", "zh-sg"):
        return CHINESE
    return None


def set_language_provider(provider: Callable[[], str | None] | None) -> None:
    """Where the language comes from when no `use_language` block is active (the app's
    browser tab); the provider returns a code or None for English."""
    global _provider
    _provider = provider


def language() -> str:
    """The language text is being produced in now."""
    chosen = _chosen.get()
    if chosen is None and _provider is not None:
        chosen = _provider()
    return normalise(chosen) or ENGLISH


@contextmanager
def use_language(code: str) -> Iterator[None]:
    """Produce text in `code` inside the block."""
    known = normalise(code)
    if known is None:
        raise ValueError(f"unknown language {code!r}: use one of {', '.join(LANGUAGES)}")
    token = _chosen.set(known)
    try:
        yield
    finally:
        _chosen.reset(token)


def catalogue_files(code: str) -> list[Path]:
    """The `.po` files of a language, in a fixed order."""
    folder = _LOCALE_DIRS.get(code)
    return sorted((CATALOGUE_DIR / folder).glob("*.po")) if folder else []


@dataclass(frozen=True)
class Catalogue:
    """A language's messages: the compiled gettext table and the ids it translates."""

    table: gettext.NullTranslations
    ids: frozenset[str]


@cache
def catalogue(code: str) -> Catalogue:
    """A language's catalogue: every `.po` file of it, merged and compiled (a message in two
    files must say the same in both; the catalogue test checks)."""
    merged = Catalog(locale=_LOCALE_DIRS[code]) if code in _LOCALE_DIRS else None
    if merged is None:
        return Catalogue(gettext.NullTranslations(), frozenset())
    for path in catalogue_files(code):
        with path.open("rb") as file:
            for message in read_po(file, locale=_LOCALE_DIRS[code]):
                if message.id and message.string and not message.fuzzy:
                    merged[message.id] = message
    buffer = io.BytesIO()
    write_mo(buffer, merged)
    buffer.seek(0)
    ids = {message.id if isinstance(message.id, str) else message.id[0]
           for message in merged if message.id}
    return Catalogue(gettext.GNUTranslations(buffer), frozenset(ids))


def _(message: str) -> str:
    """`message` in the current language (itself in English, or when untranslated)."""
    code = language()
    if code == ENGLISH or not message:
        return message
    found = catalogue(code)
    if message not in found.ids:
        MISSING.add((code, message))
        return message
    return found.table.gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of a message for a count `n`."""
    code = language()
    if code == ENGLISH:
        return singular if n == 1 else plural
    found = catalogue(code)
    if singular not in found.ids:
        MISSING.add((code, singular))
        return singular if n == 1 else plural
    return found.table.ngettext(singular, plural, n)


__all__ = ["CHINESE", "ENGLISH", "LANGUAGES", "MISSING", "N_", "Catalogue", "_", "catalogue",
           "catalogue_files", "language", "ngettext", "normalise", "set_language_provider",
           "use_language"]
