"""Parsing model output into observations: a corpus of realistic good and bad outputs."""

from __future__ import annotations

import pytest

from vision.observation import Hazard, complete_hazards, parse_model_output
from vision.prompts import PROMPT_VERSION, SCHEMA, build_prompt

GOOD = [
    (
        '{"hazards":[{"label":"chair","direction":"11 o\'clock","distance_m":1.5,'
        '"urgency":"high"}],"signs":["EXIT"],"scene":"An office corridor."}',
        "json",
        ["chair"],
        ["EXIT"],
        "An office corridor.",
    ),
    (
        '```json\n{"hazards": [], "signs": ["Platform 2"], "scene": "A station."}\n```',
        "json",
        [],
        ["Platform 2"],
        "A station.",
    ),
    (
        'Here is the JSON:\n{"hazards": [{"label": "pole", "direction": "left", '
        '"distance_m": "3 steps"}], "signs": [], "scene": "A pavement."}\nStay safe!',
        "json",
        ["pole"],
        [],
        "A pavement.",
    ),
    (
        '{"hazards": [{"label": "bin", "direction": "right", "urgency": "low"}, '
        '{"label": "stairs down", "direction": "ahead", "distance_m": 2, "urgency": "high"},],'
        ' "signs": [], "scene": "Top of a staircase.",}',
        "repaired-json",
        ["stairs down", "bin"],
        [],
        "Top of a staircase.",
    ),
    (
        "{'hazards': [{'label': 'bicycle', 'direction': 'right', 'distance_m': None}], "
        "'signs': [], 'scene': 'A street.'}",
        "repaired-json",
        ["bicycle"],
        [],
        "A street.",
    ),
    (
        '{"hazards": [{"label": "car", "direction": "ahead", "distance_m": 4}], "signs": '
        '["STOP", "NO ENT',
        "repaired-json",
        ["car"],
        ["STOP"],
        "",
    ),
    (
        '{"hazards": ["wet floor"], "signs": [{"text": "CAUTION"}], "description": "A hall."}',
        "json",
        ["wet floor"],
        ["CAUTION"],
        "A hall.",
    ),
    (
        "A quiet corridor with a door at the end.",
        "text",
        [],
        [],
        "A quiet corridor with a door at the end.",
    ),
    (
        "前方是一条安静的走廊，尽头有一扇门。",
        "text",
        [],
        [],
        "前方是一条安静的走廊，尽头有一扇门。",
    ),
]


@pytest.mark.parametrize(("raw", "how", "hazards", "signs", "scene"), GOOD)
def test_good_outputs(raw: str, how: str, hazards: list[str], signs: list[str], scene: str) -> None:
    obs = parse_model_output(raw)
    assert obs.parsed_as == how
    assert [h.label for h in obs.hazards] == hazards
    assert obs.signs == signs and obs.scene == scene
    assert obs.empty_reason is None and obs.raw == raw


def test_distances_and_urgency_are_normalised() -> None:
    obs = parse_model_output(
        '{"hazards": [{"label": "pole", "distance_m": "3 steps", "urgency": "HIGH"}, '
        '{"label": "kerb", "distance_m": "1,5 m", "urgency": "extreme"}, '
        '{"label": "tree", "distance_m": 1000}]}'
    )
    assert [(h.label, h.distance_m, h.urgency) for h in obs.hazards] == [
        ("pole", 2.1, "high"),
        ("kerb", 1.5, "normal"),
        ("tree", None, "normal"),
    ]


BAD = [
    ("", "empty"),
    ("   \n ", "empty"),
    ("\x10 c cross\x10 c cross cross cross\x10 c cross\x10 wall The c cross", "garbled"),
    ("cross cross cross cross cross cross", "garbled"),
    ("}}]]{{::,,", "garbled"),
    ("1234 5678 !!!! ????", "garbled"),
    ("\ufffd goingCha do\ufffdwoha says\ufffd\ufffd says EXITyyyyyyyyyyyyyyyy", "garbled"),
    ("the door isssssssssss open", "garbled"),
    ("Supercalifragilisticexpialidocious antidisestablishmentarianism", "garbled"),
    ('{"hazards": [{"lab', "empty"),
    ('{"hazards": [], "signs": [], "scene": ""}', "empty"),
    ('{"hazards": [{"label": ""}], "signs": [null, 5], "scene": null}', "empty"),
    ('{"foo": "bar"}', "empty"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD)
def test_bad_outputs_say_nothing(raw: str, reason: str) -> None:
    obs = parse_model_output(raw)
    assert obs.empty and obs.empty_reason == reason
    assert obs.hazards == [] and obs.signs == [] and obs.scene == "" and obs.answer is None


def test_question_answers() -> None:
    obs = parse_model_output(
        '{"hazards": [], "signs": [], "scene": "A door.", "answer": "Yes, the door is open."}',
        question=True,
    )
    assert obs.answer == "Yes, the door is open."
    assert parse_model_output("I cannot tell from this picture.", question=True).answer == (
        "I cannot tell from this picture."
    )
    # An answer field is ignored when nobody asked.
    assert parse_model_output('{"scene": "x y z", "answer": "made up"}').answer is None


def test_hazards_stream_out_as_soon_as_complete() -> None:
    text = (
        '{"hazards": [{"label": "chair", "direction": "ahead", "distance_m": 1}, '
        '{"label": "stairs", "direction": "left"}], "signs": ["EXIT"]}'
    )
    seen = [len(complete_hazards(text[:n])) for n in range(len(text) + 1)]
    first = seen.index(1)
    assert text[:first].endswith("1}") and seen[-1] == 2
    assert complete_hazards(text)[0] == Hazard(label="chair", direction="ahead", distance_m=1.0)
    assert complete_hazards('{"signs": ["{not a hazard}"]}') == []


def test_prompts_carry_language_question_and_memory() -> None:
    scene = build_prompt()
    assert "English" in scene.system and SCHEMA in scene.system and "answer" in scene.user
    zh = build_prompt(question="门开着吗？", language="zh", memory=["A door on the left."])
    assert "Mandarin Chinese" in zh.system and "门开着吗？" in zh.user
    assert "A door on the left." in zh.user and zh.version == PROMPT_VERSION
