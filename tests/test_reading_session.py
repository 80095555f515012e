"""Text read aloud through real sockets with the real OCR reader and the scripted vision
double: signs in the reader's words, "read this", blur refused, Stop and "go on"."""

from __future__ import annotations

import io
from typing import Any

import protocol as p
from benchmarks.text_signs import SignScene, page_scene, render
from tests.conftest import Accounts, ServerFactory, ws_url
from tests.doubles import ScriptedAnalyzerDouble
from tests.phone import Phone, observation


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
    start = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart))
    assert start.text == (  # type: ignore[attr-defined]
        "There is text, but it is too blurred to read. Hold the phone still."
    )
    assert said(phone, "reading") == []
    await phone.close()
