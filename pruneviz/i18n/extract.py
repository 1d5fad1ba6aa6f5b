"""Find the messages marked for translation in the source, and add new ones to a catalogue.

    python -m pruneviz.i18n.extract pruneviz/i18n/zh_CN/prune.po app_pages/prune.py ...

adds every message of the named source files that no zh-CN catalogue has yet to the given
`.po` file, with an empty translation for a translator to fill in (the catalogue test fails
until it is). Uses Babel's Python extractor, with the keywords `_`, `N_` and `ngettext`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po, write_po

KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:[:!][^{}]*)?\}")


@dataclass(frozen=True)
class Found:
    """One marked message: its text (and plural), and where it is."""

    message: str
    plural: str | None
    path: Path
    line: int


def messages_in(paths: Iterable[Path]) -> list[Found]:
    """Every marked message in the given Python files, in order."""
    found: list[Found] = []
    for path in paths:
        for line, message, _comments, _context in extract_from_file(
                "python", str(path), keywords=KEYWORDS, comment_tags=()):
            if isinstance(message, tuple):
                found.append(Found(message[0], message[1], path, line))
            elif message:
                found.append(Found(message, None, path, line))
    return found


def placeholders(text: str) -> set[str]:
    """The `{name}` fields of a message."""
    return set(PLACEHOLDER.findall(text))


def add_new(po_path: Path, sources: list[Path], known: set[str]) -> int:
    """Append the sources' messages missing from `known` to `po_path`; how many were added."""
    locale = po_path.parent.name
    if po_path.exists():
        with po_path.open("rb") as file:
            catalog = read_po(file, locale=locale)
    else:
        catalog = Catalog(locale=locale, project="pruneviz")
    added = 0
    for item in messages_in(sources):
        if item.message in known or item.message in catalog:
            continue
        msgid: str | tuple[str, str] = (item.message, item.plural) if item.plural else item.message
        catalog.add(msgid, string="" if item.plural is None else ("",),
                    locations=[(str(item.path), item.line)])
        added += 1
    with po_path.open("wb") as file:
        write_po(file, catalog, width=100, omit_header=False, no_location=True)
    return added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("po", type=Path, help="the .po file new messages go to")
    parser.add_argument("sources", type=Path, nargs="+", help="Python files to read")
    args = parser.parse_args(argv)
    known: set[str] = set()
    for other in args.po.parent.glob("*.po"):
        if other.resolve() == args.po.resolve():
            continue
        with other.open("rb") as file:
            known |= {m.id if isinstance(m.id, str) else m.id[0]
                      for m in read_po(file) if m.id and m.string}
    added = add_new(args.po, args.sources, known)
    print(f"{added} new message(s) added to {args.po}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
