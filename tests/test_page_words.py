"""The phone page's own words (``client-demo/web/words.js``): every language the server
offers has every phrase, with the same placeholders, so no French user meets an English
notice because one phrase was forgotten."""

from __future__ import annotations

import re
from pathlib import Path

from server.languages import LANGUAGES

WORDS_JS = Path(__file__).resolve().parents[1] / "client-demo" / "web" / "words.js"


def _tables() -> dict[str, dict[str, str]]:
    text = WORDS_JS.read_text(encoding="utf-8")
    body = text[text.index("export const WORDS = {") : text.index("\n};\n")]
    tables: dict[str, dict[str, str]] = {}
    for code, block in re.findall(r"^  (\w+): \{\n(.*?)^  \},", body, flags=re.M | re.S):
        tables[code] = dict(re.findall(r'^    (\w+): "((?:[^"\\]|\\.)*)",$', block, flags=re.M))
    return tables


def test_every_language_the_server_offers_has_every_phrase_of_the_page() -> None:
    tables = _tables()
    assert set(tables) == set(LANGUAGES)
    english = tables["en"]
    assert len(english) > 50
    for code, table in tables.items():
        assert set(table) == set(english), (code, set(english) ^ set(table))
        for key, text in table.items():
            assert text.strip(), (code, key)
            holes = set(re.findall(r"\{(\w+)\}", text))
            assert holes == set(re.findall(r"\{(\w+)\}", english[key])), (code, key)


def test_the_stop_buttons_spoken_name_holds_its_visible_word() -> None:
    """Found by a blind-user pass: in French, German and Spanish the Stop button read
    "Stop" but was named "Arrêter de parler maintenant": "tap Stop" by voice control
    found nothing. Its accessible name holds the word it shows (label in name)."""
    for code, table in _tables().items():
        assert table["stop"].lower() in table["stop_label"].lower(), (code, table["stop_label"])
