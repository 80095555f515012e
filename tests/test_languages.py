"""Every language a caregiver may choose is complete: phrases, hazard words, edges,
a voice that speaks it and a name the vision prompt can use. Adding a language is
adding a row to ``server/languages.py``; this test says what the row still lacks."""

from __future__ import annotations

import re

import pytest

from server.languages import CATEGORIES, EDGES, LANGUAGES, PHRASE_KEYS, settings_summary
from server.narrator import category_of
from server.settings import LANGUAGES as OFFERED
from vision.prompts import LANGUAGES as PROMPT_LANGUAGES

PLACEHOLDERS = re.compile(r"\{(\w+)\}")


def test_every_offered_language_has_a_row() -> None:
    assert set(OFFERED) == set(LANGUAGES)


@pytest.mark.parametrize("code", sorted(LANGUAGES))
def test_the_row_is_complete(code: str) -> None:
    row = LANGUAGES[code]
    english = LANGUAGES["en"]
    assert set(row.phrases) == set(PHRASE_KEYS)
    for key, text in row.phrases.items():
        assert text.strip(), key
        # the same blanks to fill as the English phrase, so no value is lost
        assert set(PLACEHOLDERS.findall(text)) == set(PLACEHOLDERS.findall(english.phrases[key])), (
            key
        )
    assert set(row.category_words) == set(CATEGORIES)
    assert all(row.category_words[c] for c in CATEGORIES)
    assert set(row.edges) == set(EDGES)
    assert code in PROMPT_LANGUAGES  # the vision model is told to answer in it


@pytest.mark.parametrize("code", sorted(LANGUAGES))
def test_a_voice_speaks_it(code: str) -> None:
    pytest.importorskip("pyttsx3", reason="the speech extra is not installed")
    from speech.voices import default_voice

    assert default_voice(code) is not None


@pytest.mark.parametrize(
    ("label", "category"),
    [
        ("stairs going down", "steps"),
        ("escalier", "steps"),
        ("Fahrrad", "vehicles"),
        ("bicicleta", "vehicles"),
        ("台阶", "steps"),
        ("porte ouverte", "doors"),
        ("a bin", "obstacles"),
    ],
)
def test_hazard_words_in_every_language_find_their_category(label: str, category: str) -> None:
    assert category_of(label) == category


def test_settings_summary_says_what_changed_in_the_users_language() -> None:
    values = {"speech_rate": 150, "verbosity": "hazards-only", "volume": 0.8, "quiet": True}
    assert (
        settings_summary(values, ["speech_rate", "verbosity"], "en")
        == "Speech rate 150. Warnings only."
    )
    assert settings_summary(values, ["volume", "quiet"], "fr") == (
        "Volume 80 pour cent. Mode silencieux activé."
    )
    assert settings_summary(values, ["memory"], "en") == "Your settings changed."
