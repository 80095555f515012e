"""Text read aloud through real sockets with the real OCR reader and the scripted vision
double: signs in the reader's words, "read this", blur refused, Stop and "go on"; and
what one reading queues (``read_aloud``) in each language."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest

import protocol as p
from benchmarks.text_signs import SignScene, page_scene, render
from server.narrator import Narrator
from server.reading import read_aloud
from server.settings import UserSettings
from tests.conftest import Accounts, ServerFactory, ws_url
from tests.doubles import ScriptedAnalyzerDouble
from tests.phone import Phone, observation
from vision.reading import TextLine, TextReading


def jpeg(scene: SignScene) -> bytes:
    buf = io.BytesIO()
    render(scene).convert("RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def said(phone: Phone, priority: str) -> list[str]:
    return [m.text for m in phone.of(p.SpeechStart) if m.priority == priority]


async def test_a_sign_is_spoken_in_the_readers_words(
    make_server: ServerFactory, accounts: Accounts, text_reader: Any
) -> None:
    # The model paraphrases ("exit sign"); the words spoken are the ones printed.
    vision = ScriptedAnalyzerDouble([(observation(signs=["exit sign"]), 0.0)])
    server = await make_server(vision, text=text_reader)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    scene = SignScene(
        name="exit", lines=["EXIT"], font="sans-bold", size=72, fg=(255, 255, 255), bg=(0, 120, 60)
    )
    await phone.jpeg(jpeg(scene), 640, 480)
    start = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.priority == "sign")
    assert start.text == "Sign: EXIT"  # type: ignore[attr-defined]
    await phone.close()


async def test_a_sign_the_reader_cannot_confirm_is_not_spoken_as_words(
    make_server: ServerFactory, accounts: Accounts, text_reader: Any
) -> None:
    vision = ScriptedAnalyzerDouble([(observation(signs=["Platform 4"]), 0.0)])
    server = await make_server(vision, text=text_reader)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    scene = SignScene(name="p5", lines=["Platform 5"], font="sans", size=44)
    await phone.jpeg(jpeg(scene), 640, 480)
    start = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.priority == "sign")
    assert start.text == "A sign I can't read."  # type: ignore[attr-defined]
    assert not any("4" in t for t in said(phone, "sign"))
    await phone.close()


async def test_read_this_reads_the_page_verbatim_in_order(
    make_server: ServerFactory, accounts: Accounts, text_reader: Any
) -> None:
    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]), text=text_reader)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.jpeg(jpeg(page_scene()), 640, 480)
    await phone.send(p.Question(text="Could you read this for me?", id="r"))
    start = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.priority == "reading")
    assert start.text == (  # type: ignore[attr-defined]
        "Take one tablet twice a day. Do not exceed the stated dose. Keep out of reach of children."
    )
    await phone.close()


async def test_blurred_text_is_refused_with_no_words(
    make_server: ServerFactory, accounts: Accounts, text_reader: Any
) -> None:
    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]), text=text_reader)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    blurred = SignScene(**{**vars(page_scene()), "name": "blurred", "blur": 6.0})
    await phone.jpeg(jpeg(blurred), 640, 480)
    await phone.send(p.Question(text="read", intent="read", id="r"))
    start = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.text != "Reading.")
    assert start.text == (  # type: ignore[attr-defined]
        "There is text, but it is too blurred to read. Hold the phone still."
    )
    assert said(phone, "reading") == []
    await phone.close()


async def test_an_unreadable_sign_is_said_once_whatever_the_model_calls_it(
    make_server: ServerFactory, accounts: Accounts, text_reader: Any
) -> None:
    # Three looks: the model words the same unreadable sign two ways, then a readable
    # sign comes into view. Every frame goes to the model (no change detector).
    vision = ScriptedAnalyzerDouble(
        [
            (observation(signs=["Platform 4"]), 0.0),
            (observation(signs=["platform four sign"]), 0.0),
            (observation(signs=["exit"]), 0.0),
        ]
    )
    server = await make_server(vision, text=text_reader, change_detection=False)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    platform = jpeg(SignScene(name="p5", lines=["Platform 5"], font="sans", size=44))
    exit_sign = SignScene(
        name="exit", lines=["EXIT"], font="sans-bold", size=72, fg=(255, 255, 255), bg=(0, 120, 60)
    )
    await phone.jpeg(platform, 640, 480)
    await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.priority == "sign")
    second = await phone.jpeg(platform, 640, 480)
    await phone.wait_for(lambda m: isinstance(m, p.ObservationMsg) and m.frame_seq == second)
    # Signs are read one look at a time, in order: anything the second look queued in the
    # sign lane is spoken before the third look's sign.
    await phone.jpeg(jpeg(exit_sign), 640, 480)
    await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.text == "Sign: EXIT")
    assert said(phone, "sign") == ["A sign I can't read.", "Sign: EXIT"]
    await phone.close()


def _line(text: str, box: tuple[float, float, float, float]) -> TextLine:
    return TextLine(text=text, confidence=0.95, box=box)


def _queued(n: Narrator, reading: TextReading) -> list[tuple[str, str]]:
    return [(u.wire, u.text) for u in read_aloud(n, reading)]


def test_a_partly_blurred_page_says_so_and_reads_the_sharp_lines() -> None:
    n = Narrator(UserSettings())
    reading = TextReading(
        lines=[_line("Take one tablet twice a day.", (0.1, 0.1, 0.9, 0.2))],
        status="partial",
        blurred_regions=2,
    )
    assert _queued(n, reading) == [
        ("notice", "Some text was too blurred to read."),
        ("reading", "Take one tablet twice a day."),
    ]
    fr = Narrator(UserSettings(language="fr"))
    assert _queued(fr, reading)[0] == (
        "notice",
        "Une partie du texte était trop floue pour être lue.",
    )


@pytest.mark.parametrize(
    ("code", "said"),
    [
        ("en", "The text runs off the left and bottom. Move the phone that way."),
        ("zh", "文字超出了画面的左边和下边。请把手机往那边移。"),
        ("de", "Der Text geht über den Rand: links und unten. Beweg das Telefon dorthin."),
    ],
)
def test_edges_are_joined_with_and_never_a_slash(code: str, said: str) -> None:
    n = Narrator(UserSettings(language=code))
    reading = TextReading(
        lines=[_line("Dear Sam,", (0.0, 0.5, 0.6, 1.0))], status="ok", cut_off=["left", "bottom"]
    )
    queued = _queued(n, reading)
    assert queued[-1] == ("notice", said)
    assert all("/" not in text for _, text in queued)


def test_blurred_or_empty_text_is_a_notice_and_no_words() -> None:
    n = Narrator(UserSettings())
    assert _queued(n, TextReading(status="blurred", cut_off=["top"])) == [
        ("notice", "There is text, but it is too blurred to read. Hold the phone still.")
    ]
    assert _queued(n, TextReading(status="none")) == [("notice", "I see no text.")]
    assert _queued(n, TextReading(status="partial", cut_off=["left"])) == [
        ("notice", "There is text, but it is too blurred to read. Hold the phone still.")
    ]


class FailingTextReaderDouble:
    """Test double for the text reader: its reading fails as the real one did on a dense
    page here (the OCR worker ran past its 20 s and was abandoned)."""

    def load(self) -> None:
        return None

    def read_jpeg(self, data: bytes) -> TextReading:
        raise RuntimeError("the text reader failed")


async def test_a_failed_reading_is_said_as_a_failure_not_as_an_answer(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    """A blind-user pass heard "I'm not sure." after a dense page's reading failed: it
    sounded like an answer about the text. It says that reading failed."""
    reader = FailingTextReaderDouble()
    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]), text=reader)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.jpeg(jpeg(page_scene()), 640, 480)
    await phone.send(p.Question(text="read", intent="read", id="r"))
    start = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart))
    assert start.text == "I could not read the text this time. Try again."  # type: ignore[attr-defined]
    error = await phone.wait_for(lambda m: isinstance(m, p.Error))
    assert error.code == p.ErrorCode.MODEL_FAILED  # type: ignore[attr-defined]
    await phone.close()


async def test_read_this_with_the_lens_covered_says_the_camera_sees_nothing(
    make_server: ServerFactory, accounts: Accounts, text_reader: Any
) -> None:
    """Found by a blind-user pass: "read this" with the camera covered said "I see no
    text", as if there were a page with nothing on it."""
    import asyncio

    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]), text=text_reader)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    for _ in range(15):  # 1.5 s of a covered lens, at a camera's 10 fps
        await phone.frame(colour=(2, 2, 2))
        await asyncio.sleep(0.1)  # the camera's frame interval
    notice = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart))
    assert notice.text.startswith("The camera sees nothing")  # type: ignore[attr-defined]
    await phone.wait_for(
        lambda m: isinstance(m, p.SpeechStop) and m.utterance == notice.utterance  # type: ignore[attr-defined]
    )
    await phone.send(p.Question(text="read", intent="read", id="r"))
    answer = await phone.wait_for(
        lambda m: isinstance(m, p.SpeechStart) and m.utterance != notice.utterance  # type: ignore[attr-defined]
    )
    assert answer.text == "Still nothing to see."  # type: ignore[attr-defined]
    assert said(phone, "reading") == []
    await phone.close()


class GatedTextReaderDouble:
    """Test double for the text reader: the real reader, held until the test lets it
    go (a dense page on a slow machine); after that, that reading again at once (a
    quick reader), so no machine's speed decides what the test sees."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.go = threading.Event()
        self.done: TextReading | None = None

    def load(self) -> None:
        self.reader.load()

    def read_jpeg(self, data: bytes) -> TextReading:
        if self.done is None:
            self.go.wait(10)
            self.done = self.reader.read_jpeg(data)
        return self.done


async def test_a_slow_reading_says_reading_first_and_a_quick_one_does_not(
    make_server: ServerFactory, accounts: Accounts, text_reader: Any
) -> None:
    """Found by a blind-user pass: Read text was silent for 12 s on a busy machine."""
    reader = GatedTextReaderDouble(text_reader)
    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]), text=reader)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.jpeg(jpeg(page_scene()), 640, 480)
    asked = time.monotonic()
    await phone.send(p.Question(text="read", intent="read", id="r"))
    cue = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart))
    assert cue.text == "Reading." and time.monotonic() - asked < 2.0  # type: ignore[attr-defined]
    reader.go.set()
    text = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.priority == "reading")
    assert text.text.startswith("Take one tablet")  # type: ignore[attr-defined]
    phone.seen.clear()
    await phone.send(p.Question(text="read", intent="read", id="r2"))  # a quick reading now
    again = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.priority == "reading")
    assert again.text.startswith("Take one tablet")  # type: ignore[attr-defined]
    assert "Reading." not in [m.text for m in phone.of(p.SpeechStart)]
    await phone.close()


async def test_one_reading_at_a_time_per_account_and_nobody_elses_is_refused(
    make_server: ServerFactory, accounts: Accounts, text_reader: Any
) -> None:
    """Found by an attacker pass: three sessions of one account asking "read" every half
    second kept the reader's queue full, and another user's "read this" failed. An
    account has one reading at a time (its second session is told busy, in words);
    Bob's reading waits its turn and is read."""
    reader = GatedTextReaderDouble(text_reader)
    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]), text=reader)
    first = await Phone.open(ws_url(server), accounts.user_token)
    second = await Phone.open(ws_url(server), accounts.user_token)
    bob = await Phone.open(ws_url(server), accounts.other_token)
    for phone in (first, second, bob):
        await phone.jpeg(jpeg(page_scene()), 640, 480)
    await first.send(p.Question(text="read", intent="read", id="r1"))
    await first.wait_for(lambda m: isinstance(m, p.SpeechStart))  # "Reading.": it is on
    await second.send(p.Question(text="read", intent="read", id="r2"))
    busy = await second.wait_for(lambda m: isinstance(m, p.Error) and m.ref == "r2")
    assert busy.code == p.ErrorCode.BUSY  # type: ignore[attr-defined]
    told = await second.wait_for(lambda m: isinstance(m, p.SpeechStart))
    assert told.text == "I'm busy; ask again in a moment."  # type: ignore[attr-defined]
    await bob.send(p.Question(text="read", intent="read", id="r3"))
    await bob.wait_for(lambda m: isinstance(m, p.SpeechStart))  # "Reading.": waiting, not refused
    reader.go.set()
    for phone in (first, bob):
        text = await phone.wait_for(
            lambda m: isinstance(m, p.SpeechStart) and m.priority == "reading"
        )
        assert text.text.startswith("Take one tablet")  # type: ignore[attr-defined]
    assert not bob.of(p.Error)
    for phone in (first, second, bob):
        await phone.close()


async def test_stop_while_the_page_is_being_read_means_never_mind(
    make_server: ServerFactory, accounts: Accounts, text_reader: Any
) -> None:
    """Found by a blind-user pass: Stop after "Reading." silenced the cue, and 14 s later
    the page was read aloud anyway. The reading still with the reader is dropped at
    Stop: the account's one reading at a time is free again at once, so its other
    phone's "read this" is read, where it was told busy while the dropped one ran."""
    reader = GatedTextReaderDouble(text_reader)
    server = await make_server(ScriptedAnalyzerDouble([(None, 0.0)]), text=reader)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    other = await Phone.open(ws_url(server), accounts.user_token)
    for each in (phone, other):
        await each.jpeg(jpeg(page_scene()), 640, 480)
    await phone.send(p.Question(text="read", intent="read", id="r1"))
    cue = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart))
    assert cue.text == "Reading."  # type: ignore[attr-defined]
    await phone.send(p.Interrupt(reason="tap"))
    await phone.wait_for(lambda m: isinstance(m, p.Interrupt))
    await other.send(p.Question(text="read", intent="read", id="r2"))
    told = await other.wait_for(lambda m: isinstance(m, p.SpeechStart))
    assert told.text != "I'm busy; ask again in a moment.", told  # type: ignore[attr-defined]
    reader.go.set()
    text = await other.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.priority == "reading")
    assert text.text.startswith("Take one tablet")  # type: ignore[attr-defined]
    assert not other.of(p.Error)
    for each in (phone, other):
        await each.close()
