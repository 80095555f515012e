"""Every language a caregiver may choose is complete: phrases, hazard words, edges,
side words and clock positions, the word that joins a list, stop words, a voice that
speaks it and a name the vision prompt can use. Adding a language is
adding a row to ``server/languages.py``; this test says what the row still lacks."""

from __future__ import annotations

import re

import pytest

from server.languages import (
    CATEGORIES,
    EDGES,
    LANGUAGES,
    PHRASE_KEYS,
    SIDES,
    clock_hour,
    is_stop_request,
    join_words,
    settings_summary,
)
from server.narrator import category_of, side_of
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
    assert all(row.edges[e].strip() for e in EDGES)
    assert code in PROMPT_LANGUAGES  # the vision model is told to answer in it
    # directions: every side has words, and each word puts a direction on its side
    assert set(row.side_words) == set(SIDES)
    for side in SIDES:
        assert row.side_words[side], side
        for word in row.side_words[side]:
            assert side_of(word) == side, word
    assert row.clock and re.compile(row.clock).groups >= 1
    assert row.and_word.strip() and row.list_sep
    assert row.stop_words and all(is_stop_request(w) for w in row.stop_words)


# A clock position as the vision model writes it in each language, and its side.
CLOCKS = {
    "en": ("at 3 o'clock", "right"),
    "zh": ("九点钟方向", "left"),
    "fr": ("à 3 heures", "right"),
    "de": ("auf 9 Uhr", "left"),
    "es": ("a las 12", "ahead"),
}
# "Left and bottom" in each language: the joining word, never a slash.
JOINED = {
    "en": "left and bottom",
    "zh": "左边和下边",
    "fr": "gauche et bas",
    "de": "links und unten",
    "es": "la izquierda y abajo",
}
STOPS = {"en": "Stop!", "zh": "停", "fr": "Arrête !", "de": "Stopp", "es": "¡Para!"}


@pytest.mark.parametrize("code", sorted(LANGUAGES))
def test_every_language_has_its_examples(code: str) -> None:
    # a new row fails here until its examples are written down too
    assert code in CLOCKS and code in JOINED and code in STOPS
    direction, side = CLOCKS[code]
    assert clock_hour(direction) is not None and side_of(direction) == side
    edges = LANGUAGES[code].edges
    assert join_words(code, [edges["left"], edges["bottom"]]) == JOINED[code]
    assert is_stop_request(STOPS[code])


def test_lists_are_joined_in_the_users_language() -> None:
    assert join_words("en", ["left"]) == "left"
    assert join_words("en", ["left", "top", "bottom"]) == "left, top and bottom"
    assert join_words("zh", ["左边", "上边", "下边"]) == "左边、上边和下边"


@pytest.mark.parametrize(
    "text",
    ["stop", "Stop.", "stop please", "OK stop", "stop, stop!", "停！", "请停下", "别说了",
     "tais-toi", "hör auf", "ya basta"],
)  # fmt: skip
def test_stop_in_any_language_is_stop(text: str) -> None:
    assert is_stop_request(text)


@pytest.mark.parametrize(
    "text",
    ["Is there a stop sign?", "Where is the bus stop?", "stop sign", "停车场在哪里",
     "", "Para qué sirve esto?", "Read this"],
)  # fmt: skip
def test_a_question_about_stopping_is_still_a_question(text: str) -> None:
    assert not is_stop_request(text)


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
        "Volume 80 pour cent. Mode silencieux activé : alertes et réponses seulement."
    )
    # Quiet mode turned on with another verbosity: no contradiction in one sentence.
    assert settings_summary(
        {"quiet": True, "verbosity": "detailed"}, ["quiet", "verbosity"], "en"
    ) == ("Quiet mode on: warnings and answers only.")
    assert settings_summary(values, ["memory"], "en") == "Your settings changed."
