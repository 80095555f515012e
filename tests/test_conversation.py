"""Whole sessions over real sockets with a scripted vision double: what is said, in which
order, what is interrupted, dropped as stale or deduplicated, per verbosity and settings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

import protocol as p
from protocol import ErrorCode, HazardInfo
from speech.tts import SpeechSynthesizer
from tests.conftest import Accounts, ServerFactory, ws_url
from tests.doubles import ScriptedAnalyzerDouble
from tests.phone import Phone, observation, stopped

T = TypeVar("T")

CHAIR = HazardInfo(label="chair", direction="ahead", distance_m=1.0, urgency="high")
LONG_SCENE = " ".join(f"Part {n} of a long description of a busy square." for n in range(12))


async def test_order_of_speech_and_question_skips_the_detector(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    vision = ScriptedAnalyzerDouble(
        [
            (observation(CHAIR, signs=["EXIT"], scene="A hallway."), 0.0),
            (observation(CHAIR, signs=["EXIT"], answer="Yes, the door is open."), 0.0),
        ]
    )
    server = await make_server(vision)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.frame()
    await phone.wait_for(lambda m: isinstance(m, p.SpeechStop))
    await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.priority == "sign")
    for _ in range(3):
        await phone.frame()  # the same view: the detector does not fire
    await phone.send(p.Question(text="Is the door open?", id="q1"))
    answer = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.priority == "answer")
    assert answer.text == "Yes, the door is open."  # type: ignore[attr-defined]
    assert [r.reason for r in vision.requests] == ["first-frame", "question"]
    assert vision.requests[1].frame.frame.seq == 3  # the newest frame
    assert phone.spoken() == [
        ("hazard", "Chair, one metre, ahead."),
        ("sign", "A sign I can't read."),  # no text reader here: never the model's guess
        ("answer", "Yes, the door is open."),
    ]  # chair and EXIT not repeated
    await phone.close()


async def test_stale_warning_is_dropped_and_counted(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    vision = ScriptedAnalyzerDouble([(observation(CHAIR), 0.6)])  # the model takes 600 ms
    server = await make_server(vision, frame_age_budget_ms=300)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    obs = await phone.look()
    assert obs.hazards  # the client still sees the observation
    session = server.user_session("alice")
    await phone.send(p.Ping(t=1))
    await phone.wait_for(lambda m: isinstance(m, p.Pong))
    assert session.narrator.stats.stale_dropped == 1 and phone.spoken() == []
    await phone.close()


async def test_user_interrupt_stops_speech_at_once(
    make_server: ServerFactory, accounts: Accounts, tts_model: SpeechSynthesizer
) -> None:
    vision = ScriptedAnalyzerDouble([(observation(scene=LONG_SCENE), 0.0)])
    server = await make_server(vision, tts=tts_model)
    await server.settings_store_update("alice", {"verbosity": "detailed"})
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.frame()
    start = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart))
    await phone.wait_for(lambda m: isinstance(m, p.SpeechChunk))
    await phone.send(p.Interrupt(id="i1"))
    ack = await phone.wait_for(lambda m: isinstance(m, p.Interrupt) and m.id == "i1")
    stop = await phone.wait_for(stopped(start.utterance))  # type: ignore[attr-defined]
    assert stop.reason == "interrupted" and ack is not None  # type: ignore[attr-defined]
    chunks = phone.of(p.SpeechChunk)
    # A 12-sentence description is about 30 s of audio; only the start was sent.
    assert sum(len(c.payload) for c in chunks) < 32_000 * 10
    await phone.close()


async def test_hazard_interrupts_a_description(
    make_server: ServerFactory, accounts: Accounts, tts_model: SpeechSynthesizer
) -> None:
    vision = ScriptedAnalyzerDouble(
        [(observation(scene=LONG_SCENE), 0.0), (observation(CHAIR), 0.0)]
    )
    server = await make_server(vision, tts=tts_model)
    await server.settings_store_update("alice", {"verbosity": "detailed"})
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.frame((200, 200, 200))
    scene = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.priority == "scene")
    await phone.wait_for(lambda m: isinstance(m, p.SpeechChunk))
    await phone.send(p.Question(text="anything ahead?"))  # the next look finds the chair
    hazard = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.priority == "hazard")
    kinds = [type(m).__name__ for _, m in phone.seen]
    cut = phone.of(p.SpeechStop)[0]
    assert cut.utterance == scene.utterance and cut.reason == "interrupted"  # type: ignore
    flush = kinds.index("Interrupt")
    assert flush < kinds.index("SpeechStop") < len(kinds) - 1
    assert hazard.text == "Chair, one metre, ahead."  # type: ignore[attr-defined]
    await phone.wait_for(lambda m: isinstance(m, p.SpeechChunk) and m.utterance == hazard.utterance)  # type: ignore
    await phone.close()


@pytest.mark.parametrize(
    ("verbosity", "expected"),
    [
        ("hazards-only", ["hazard"]),
        ("standard", ["hazard", "sign"]),
        ("detailed", ["hazard", "sign", "scene"]),
    ],
)
async def test_verbosity_levels(
    make_server: ServerFactory, accounts: Accounts, verbosity: str, expected: list[str]
) -> None:
    vision = ScriptedAnalyzerDouble([(observation(CHAIR, signs=["EXIT"], scene="A hall."), 0.0)])
    server = await make_server(vision)
    await server.settings_store_update("alice", {"verbosity": verbosity})
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.look()
    await phone.send(p.Ping(t=1))
    await phone.wait_for(lambda m: isinstance(m, p.Pong))
    await asyncio.wait_for(_until(lambda: len(phone.of(p.SpeechStop)) == len(expected)), 5)
    assert [prio for prio, _ in phone.spoken()] == expected
    await phone.close()


async def test_empty_answer_says_not_sure(make_server: ServerFactory, accounts: Accounts) -> None:
    vision = ScriptedAnalyzerDouble([(observation(), 0.0)])
    server = await make_server(vision)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.frame()
    await phone.send(p.Question(text="What colour is the door?"))
    said = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart))
    assert said.text == "I'm not sure." and said.priority == "answer"  # type: ignore
    await phone.close()


async def test_caregiver_changes_settings_live(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    vision = ScriptedAnalyzerDouble(
        [
            (observation(CHAIR, signs=["EXIT"]), 0.0),
            (observation(HazardInfo(label="bin", direction="left"), signs=["BUS STOP"]), 0.0),
        ]
    )
    server = await make_server(vision)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    carer = await Phone.open(ws_url(server), accounts.caregiver_token)
    await phone.frame()
    await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.priority == "sign")

    await carer.send(p.SettingsGet(user="alice", id="g"))
    current = await carer.wait_for(lambda m: isinstance(m, p.Settings) and m.id == "g")
    assert current.values["verbosity"] == "standard"  # type: ignore[attr-defined]
    await carer.send(
        p.SettingsUpdate(
            user="alice", values={"verbosity": "hazards-only", "speech_rate": 150}, id="u"
        )
    )
    updated = await carer.wait_for(lambda m: isinstance(m, p.Settings) and m.id == "u")
    assert updated.values["verbosity"] == "hazards-only"  # type: ignore[attr-defined]
    pushed = await phone.wait_for(lambda m: isinstance(m, p.Settings))
    assert pushed.values["speech_rate"] == 150  # type: ignore[attr-defined]

    await phone.send(p.Question(text="What now?"))  # the next observation: bin and BUS STOP
    await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.text.startswith("Bin"))
    await phone.wait_for(
        lambda m: (
            isinstance(m, p.SpeechStop) and m.utterance == phone.of(p.SpeechStart)[-1].utterance
        )
    )
    assert "Sign: BUS STOP" not in [t for _, t in phone.spoken()]

    # Invalid values change nothing; only assigned users; users cannot change settings.
    await carer.send(
        p.SettingsUpdate(user="alice", values={"verbosity": "chatty", "speech_rate": 200}, id="bad")
    )
    bad = await carer.wait_for(lambda m: isinstance(m, p.Error) and m.ref == "bad")
    assert bad.code == ErrorCode.INVALID_SETTINGS and "verbosity" in bad.message  # type: ignore
    assert server.settings_store.get("alice").speech_rate == 150
    await carer.send(p.SettingsUpdate(user="bob", values={"quiet": True}, id="bob"))
    assert (
        await carer.wait_for(lambda m: isinstance(m, p.Error) and m.ref == "bob")
    ).code == ErrorCode.FORBIDDEN  # type: ignore[attr-defined]
    await carer.send(p.SettingsGet(user="nobody", id="nobody"))
    unknown = await carer.wait_for(lambda m: isinstance(m, p.Error) and m.ref == "nobody")
    # The same answer as for a real but unassigned name: names cannot be enumerated.
    assert unknown.code == ErrorCode.FORBIDDEN  # type: ignore[attr-defined]
    await phone.send(p.SettingsUpdate(values={"quiet": True}, id="self"))
    assert (
        await phone.wait_for(lambda m: isinstance(m, p.Error) and m.ref == "self")
    ).code == ErrorCode.FORBIDDEN  # type: ignore[attr-defined]
    history = server.settings_store.history("alice")
    assert {(c.key, c.old, c.new, c.changed_by) for c in history} == {
        ("verbosity", "standard", "hazards-only", "carol"),
        ("speech_rate", 175, 150, "carol"),
    }
    await phone.close()
    await carer.close()


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.01)  # polling recorded messages, bounded by wait_for


async def test_settings_changed_by_the_cli_reach_the_running_session(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    from server.settings import SettingsStore

    server = await make_server(ScriptedAnalyzerDouble([(observation(), 0.0)]))
    phone = await Phone.open(ws_url(server), accounts.user_token)
    # Another process (the CLI) writes to the same database file.
    other = SettingsStore(accounts.store.connection)
    other.update("alice", {"language": "zh"}, changed_by="cli:root")
    pushed = await phone.wait_for(lambda m: isinstance(m, p.Settings), timeout=5)
    assert pushed.values["language"] == "zh"  # type: ignore[attr-defined]
    assert server.user_session("alice").settings.language == "zh"
    await phone.close()


async def test_hands_free_keeps_listening(
    make_server: ServerFactory, accounts: Accounts, tts_model: SpeechSynthesizer, asr_model: Any
) -> None:
    vision = ScriptedAnalyzerDouble([(observation(answer="Yes."), 0.0)])
    server = await make_server(vision, asr=asr_model)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.frame()
    first = await tts_model.synthesize("Is the door open?")
    second = await tts_model.synthesize("Where is the exit?")
    silence = bytes(32_000)  # one second
    await phone.send(p.AudioStart(rate=16_000, mode="hands-free"))
    await phone.speak(silence + first + silence + second + silence, speed=1.4)
    await phone.wait_for(
        lambda m: isinstance(m, p.TranscriptMsg) and "exit" in m.text.lower(), timeout=30
    )
    heard = [t.text for t in phone.of(p.TranscriptMsg)]
    assert len(heard) == 2 and "door" in heard[0].lower()  # two questions, no audio-stop
    assert not [e for e in phone.of(p.Error)]
    await phone.close()


async def test_warning_cuts_an_answer_which_is_then_said_again(
    make_server: ServerFactory, accounts: Accounts, tts_model: SpeechSynthesizer
) -> None:
    long_answer = " ".join(f"Detail number {n} about the shop window." for n in range(10))
    vision = ScriptedAnalyzerDouble(
        [(observation(), 0.0), (observation(answer=long_answer), 0.0), (observation(CHAIR), 0.0)]
    )
    server = await make_server(vision, tts=tts_model)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.frame((60, 70, 80))
    await phone.wait_for(lambda m: isinstance(m, p.ObservationMsg))
    await phone.send(p.Question(text="What is in the window?"))
    first = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.priority == "answer")
    await phone.wait_for(lambda m: isinstance(m, p.SpeechChunk))
    # A new view, streamed as a phone does: the detector fires (after its cooldown) and the
    # model sees a chair.
    streaming = asyncio.create_task(_stream(phone, (250, 250, 250)))
    await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.priority == "hazard")
    streaming.cancel()
    assert isinstance(first, p.SpeechStart)
    again = await phone.wait_for(
        lambda m: (
            isinstance(m, p.SpeechStart)
            and m.priority == "answer"
            and m.utterance != first.utterance
        )
    )
    assert isinstance(again, p.SpeechStart) and again.text == first.text
    # cut to max_words (the rest kept for "go on"), said again in full
    assert first.text.endswith(" Say go on for more.")
    assert long_answer.startswith(first.text.removesuffix(" Say go on for more."))
    cut = phone.of(p.SpeechStop)[0]
    assert cut.utterance == first.utterance and cut.reason == "interrupted"
    assert [prio for prio, _ in phone.spoken()] == ["answer", "hazard", "answer"]
    await phone.close()


async def _stream(phone: Phone, colour: tuple[int, int, int]) -> None:
    while True:
        await phone.frame(colour)
        await asyncio.sleep(0.1)  # the camera's frame interval
