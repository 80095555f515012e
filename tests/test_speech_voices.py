"""Voices: only what espeak-ng lists reaches espeak-ng; a voice that fails falls back, reported."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest

from speech import voices
from speech.tts import SpeechSynthesizer, VoiceOptions
from speech.voices import (
    VoiceFallback,
    default_voice,
    find_voice,
    is_valid_voice,
    list_voices,
    parse_voice_list,
    resolve_voice,
)

pytest.importorskip("pyttsx3", reason="the speech extra is not installed")

HOSTILE = [
    "nonexistent-voice",
    "../../../../../dev/zero",
    "../../etc/shadow",
    "/dev/zero",
    "en\n",
    "gmw/en\n",
    "gmw/en ",
    "ſit/cmn",  # casefolds to "sit/cmn"
    "",
]


def espeak_lists() -> set[str]:
    out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, check=True)
    return {line.split()[4] for line in out.stdout.splitlines()[1:] if line.strip()}


@pytest.fixture(scope="module")
def tts() -> SpeechSynthesizer:
    synth = SpeechSynthesizer()
    synth.load()
    return synth


def test_the_list_is_what_espeak_ng_lists() -> None:
    assert {v.id for v in list_voices()} == espeak_lists()
    english = list_voices("en")
    assert english[0].id == "gmw/en" and all(v.rank_for("en") is not None for v in english)
    assert "sit/cmn" in {v.id for v in list_voices("zh")}
    assert find_voice("gmw/en-GB-x-rp") == find_voice("GMW/EN-gb-X-RP")
    assert find_voice("gmw/en-GB-x-rp").name == "English (Received Pronunciation)"  # type: ignore[union-attr]


def test_defaults_per_language() -> None:
    assert default_voice("en") == "gmw/en" and default_voice("zh") == "sit/cmn"
    assert default_voice("fr") == "roa/fr" and default_voice("ja") == "jpx/ja"
    assert default_voice("xx") is None


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_are_refused(value: str) -> None:
    assert not is_valid_voice(value) and not is_valid_voice(value, "en")
    used, fallback = resolve_voice(value, "en")
    assert used == "gmw/en" and fallback is not None and fallback.requested == value


def test_a_voice_of_another_language_is_refused_for_it() -> None:
    assert is_valid_voice("roa/fr") and is_valid_voice("roa/fr", "fr")
    assert not is_valid_voice("roa/fr", "en")
    assert resolve_voice("roa/fr", "en")[1] is not None


def test_parser_reads_other_languages() -> None:
    text = (
        "Pty Language       Age/Gender VoiceName          File                 Other Languages\n"
        " 5  cmn             --/M      Chinese_(Mandarin) sit/cmn              (zh-cmn 5)(zh 5)\n"
    )
    [info] = parse_voice_list(text)
    assert info.id == "sit/cmn" and info.also == (("zh-cmn", 5), ("zh", 5))
    assert info.rank_for("zh") == 5 and info.rank_for("en") is None


async def test_hostile_voices_never_reach_espeak(
    tts: SpeechSynthesizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every voice id sent to the espeak-ng process is one espeak-ng lists (the child
    sets no other: that id, or the language's listed default); /dev/zero cannot hang
    the synthesiser (the next utterance is spoken)."""
    seen: list[str | None] = []
    real = tts.worker.submit

    def spy(payload: Any, **kwargs: Any) -> Any:
        seen.append(payload.espeak_voice)
        return real(payload, **kwargs)

    monkeypatch.setattr(tts.worker, "submit", spy)
    normal = await tts.synthesize("Door ahead.")
    for value in HOSTILE:
        reports: list[VoiceFallback] = []
        pcm = await asyncio.wait_for(
            tts.synthesize(
                "Door ahead.", voice=VoiceOptions(voice=value), on_fallback=reports.append
            ),
            timeout=10,
        )
        assert abs(len(pcm) - len(normal)) < 0.03 * len(normal), value
        assert [r.requested for r in reports] == [value]
    listed = {v.id for v in list_voices()}
    sent = {v for v in seen if v is not None}
    assert len(seen) == len(HOSTILE) + 1 and sent and sent <= listed, sent - listed


async def test_a_listed_voice_that_fails_to_load_falls_back(
    tts: SpeechSynthesizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MBROLA voice is listed by ``espeak-ng --voices=mb`` but needs the mbrola program,
    absent here: espeak-ng refuses to load it at run time. Put it in the list as if
    espeak-ng offered it: the English default must speak and the failure be reported."""
    out = subprocess.run(["espeak-ng", "--voices=mb"], capture_output=True, text=True).stdout
    mbrola = [v for v in parse_voice_list(out) if v.id == "mb/mb-en1"]
    if not mbrola or subprocess.run(["which", "mbrola"], capture_output=True).returncode == 0:
        pytest.skip("needs espeak-ng's mb/mb-en1 listed and mbrola not installed")
    real = voices._catalogue()
    monkeypatch.setattr(voices, "_catalogue", lambda: (*real, *mbrola))
    assert is_valid_voice("mb/mb-en1", "en")
    normal = await tts.synthesize("Door ahead.")
    reports: list[VoiceFallback] = []
    pcm = await tts.synthesize(
        "Door ahead.", voice=VoiceOptions(voice="mb/mb-en1"), on_fallback=reports.append
    )
    assert abs(len(pcm) - len(normal)) < 0.03 * len(normal)
    assert len(reports) == 1 and reports[0].used == "gmw/en"
    assert "could not load" in reports[0].reason
    after = await tts.synthesize("Door ahead.")  # the default voice is back for others
    assert abs(len(after) - len(normal)) < 0.03 * len(normal)
