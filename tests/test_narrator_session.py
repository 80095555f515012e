"""The narrator at the user's ear, through real sockets: an unsure transcript is answered
with what was heard *and* the whole answer; "stop" typed or spoken stops speech and is
never sent to the vision model as a question; a warning is not heard twice in a row
because the same hazard was seen again while it played."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import protocol as p
from protocol import HazardInfo
from speech.asr import Transcript
from speech.tts import SpeechSynthesizer
from tests.conftest import Accounts, ServerFactory, ws_url
from tests.doubles import ScriptedAnalyzerDouble
from tests.phone import Phone, observation, observed

QUESTION_18 = (
    "could you tell me whether the door in front of me is open or closed right now please."
)


class UnsureRecognizerDouble:
    """Test double for ``speech.asr.SpeechRecognizer``: every utterance is heard as the
    given text with low confidence (the real model's confidence on a given recording is
    not something a test can choose)."""

    name = "unsure-recognizer-double"
    english_only = False

    def __init__(self, text: str) -> None:
        self.text = text
        self.heard: list[int] = []

    def load(self) -> None:
        pass

    def can_hear(self, language: str | None) -> bool:
        return True

    def cannot_hear_reason(self, language: str, name: str | None = None) -> str | None:
        return None

    async def transcribe_async(
        self, samples: np.ndarray, *, language: str | None = None
    ) -> Transcript | None:
        self.heard.append(samples.size)
        return Transcript(
            text=self.text,
            language="en",
            confidence=0.3,
            audio_ms=samples.size / 16,
            speech_ms=samples.size / 16,
            transcribe_ms=1.0,
            unsure=True,
        )

    def close(self) -> None:
        pass


async def test_an_unsure_question_is_answered_with_what_was_heard_and_the_answer(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    vision = ScriptedAnalyzerDouble([(observation(answer="The door is open."), 0.0)])
    asr = UnsureRecognizerDouble(QUESTION_18)
    server = await make_server(vision, asr=asr)  # type: ignore[arg-type]
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.look()
    await phone.send(p.AudioStart(mode="push-to-talk", rate=16_000, id="q"))
    await phone.speak(np.zeros(8000, dtype="<i2").tobytes())
    await phone.send(p.AudioStop(id="q"))
    answer = await phone.wait_for(
        lambda m: isinstance(m, p.SpeechStart) and m.text == "The door is open."
    )
    answers = [m.text for m in phone.of(p.SpeechStart) if m.priority == "answer"]
    assert answers == [
        "I heard: could you tell me whether the door in front of me is open or closed.",
        "The door is open.",
    ]
    assert all(".." not in text for text in answers)
    assert answer.priority == "answer"  # type: ignore[attr-defined]
    assert asr.heard and vision.requests[-1].question == QUESTION_18
    await phone.close()


def _interrupt_ack(ref: str) -> Callable[[p.Message], bool]:
    return lambda m: isinstance(m, p.Interrupt) and m.id == ref


async def test_stop_typed_or_spoken_is_stop_not_a_question(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    vision = ScriptedAnalyzerDouble([(observation(answer="A door."), 0.0)])
    server = await make_server(vision)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.look()
    asked = len(vision.requests)
    for n, text in enumerate(["Stop.", "停！", "Stop, please", "arrête"]):
        await phone.send(p.Question(text=text, id=f"s{n}"))
        ack = await phone.wait_for(_interrupt_ack(f"s{n}"))
        assert ack.reason == "user"  # type: ignore[attr-defined]
    # a question that mentions stopping is still a question
    await phone.send(p.Question(text="Is there a stop sign?", id="q"))
    await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.text == "A door.")
    assert [r.question for r in vision.requests[asked:]] == ["Is there a stop sign?"]
    assert not [e for e in phone.of(p.Error) if (e.ref or "").startswith("s")]
    await phone.close()


async def test_a_warning_is_not_heard_twice_because_it_was_seen_again_while_it_played(
    make_server: ServerFactory, accounts: Accounts, tts_model: SpeechSynthesizer
) -> None:
    chair = HazardInfo(label="chair", direction="ahead", distance_m=2.0)
    vision = ScriptedAnalyzerDouble([(observation(chair, answer="A chair."), 0.0)])
    # Every frame goes to the model; a budget long enough that a second warning queued
    # behind the first could not go stale before it is played (it would be heard).
    server = await make_server(
        vision, tts=tts_model, change_detection=False, frame_age_budget_ms=5_000
    )
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.frame()
    warning = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart))
    assert warning.priority == "hazard"  # type: ignore[attr-defined]
    for _ in range(3):  # the same chair, seen on the next frames while the warning plays
        seq = await phone.frame()
        await phone.wait_for(observed(seq))
    assert not phone.of(p.SpeechStop)  # still playing: these frames came in during it
    await phone.wait_for(lambda m: isinstance(m, p.SpeechStop))
    await phone.send(p.Question(text="What is ahead?", id="q"))
    await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.priority == "answer")
    assert phone.spoken() == [("hazard", "Chair, 2 metres, ahead."), ("answer", "A chair.")]
    await phone.close()
