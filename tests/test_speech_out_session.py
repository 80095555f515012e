"""Speech out as the session meets it: a synthesiser that hangs costs one utterance,
a voice that falls back is shown to the caregiver, what is said is counted in
``/metrics``; quiet mode looks only when something changes."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import AsyncGenerator, Callable

import protocol as p
from server.settings import UserSettings
from server.user_session import detector_options
from speech.tts import SpeechSynthesizer, VoiceOptions
from speech.voices import VoiceFallback
from tests.conftest import Accounts, ServerFactory, ws_url
from tests.doubles import ScriptedAnalyzerDouble
from tests.phone import Phone, observation, stopped


class HangingSynthesizerDouble(SpeechSynthesizer):
    """Test double for espeak-ng: a text containing "hang" never produces audio (a
    wedged native call); any other text gives 0.3 s of silence in 100 ms chunks. A
    voice named "broken" falls back to the default, as the real one reports it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def load(self) -> None:
        return None

    async def stream(
        self,
        text: str,
        *,
        voice: VoiceOptions | None = None,
        cancel: threading.Event | None = None,
        priority: int = 5,
        on_fallback: Callable[[VoiceFallback], None] | None = None,
    ) -> AsyncGenerator[bytes, None]:
        if voice is not None and voice.voice == "broken" and on_fallback is not None:
            on_fallback(VoiceFallback(requested="broken", used="gmw/en", reason="test double"))
        if "hang" in text:
            await asyncio.to_thread(self.release.wait, 30)  # wedged until the test ends
        for _ in range(3):
            yield bytes(3200)


async def test_a_hung_synthesiser_fails_one_utterance_and_speech_goes_on(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    tts = HangingSynthesizerDouble()
    vision = ScriptedAnalyzerDouble(
        [(observation(answer="Please hang on."), 0.0), (observation(answer="Yes."), 0.0)]
    )
    server = await make_server(vision, tts=tts, speech_stall_s=0.5)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.frame()
    await phone.send(p.Question(text="first?", id="q1"))
    first = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart))
    started = time.monotonic()
    stop = await phone.wait_for(stopped(first.utterance), timeout=5)  # type: ignore[attr-defined]
    assert stop.reason == "failed"  # type: ignore[attr-defined]
    assert time.monotonic() - started < 2.0
    await phone.send(p.Ping(t=1, id="alive"))
    await phone.wait_for(lambda m: isinstance(m, p.Pong) and m.id == "alive")
    await phone.send(p.Question(text="second?", id="q2"))
    second = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart) and m.text == "Yes.")
    done = await phone.wait_for(stopped(second.utterance), timeout=5)  # type: ignore[attr-defined]
    assert done.reason == "done"  # type: ignore[attr-defined]
    utterance = second.utterance  # type: ignore[attr-defined]
    assert len([c for c in phone.of(p.SpeechChunk) if c.utterance == utterance]) == 3
    tts.release.set()
    await phone.close()


async def test_a_voice_that_falls_back_is_shown_to_the_caregiver(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    tts = HangingSynthesizerDouble()
    vision = ScriptedAnalyzerDouble([(observation(answer="Yes."), 0.0)])
    server = await make_server(vision, tts=tts)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    # Set on the live session: the settings store would refuse a voice espeak-ng does not
    # list; this one is listed but fails to load (the double says so).
    phone_session = server.user_session("alice")
    phone_session.settings = UserSettings(**{**vars(phone_session.settings), "voice": "broken"})
    await phone.frame()
    await phone.send(p.Question(text="anything?", id="q"))
    start = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart))
    await phone.wait_for(stopped(start.utterance))  # type: ignore[attr-defined]
    carer = await Phone.open(ws_url(server), accounts.caregiver_token)
    await carer.send(p.SettingsGet(user="alice", id="g"))
    shown = await carer.wait_for(lambda m: isinstance(m, p.Settings) and m.id == "g")
    assert any("'broken'" in w and "default voice" in w for w in shown.warnings)  # type: ignore[attr-defined]
    await carer.close()
    await phone.close()


async def test_what_is_said_is_counted_in_metrics(
    make_server: ServerFactory, accounts: Accounts
) -> None:
    tts = HangingSynthesizerDouble()
    vision = ScriptedAnalyzerDouble([(observation(answer="Yes."), 0.0)])
    server = await make_server(vision, tts=tts)
    phone = await Phone.open(ws_url(server), accounts.user_token)
    await phone.frame()
    await phone.send(p.Question(text="anything?", id="q"))
    start = await phone.wait_for(lambda m: isinstance(m, p.SpeechStart))
    await phone.wait_for(stopped(start.utterance))  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{server.port}/metrics"
    text = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())).decode()
    assert 'seealoud_utterances_total{lane="answer"} 1.0' in text
    assert 'seealoud_model_seconds_count{backend="espeak-ng",task="tts"} 1.0' in text
    assert 'task="vision"' in text
    await phone.close()


def test_quiet_mode_has_no_heartbeat_at_all() -> None:
    quiet = detector_options(UserSettings(quiet=True))
    assert quiet.heartbeat_s is None and quiet.blind_heartbeat_s is None
    normal = detector_options(UserSettings(heartbeat_s=12.0))
    assert normal.heartbeat_s == 12.0 and normal.blind_heartbeat_s is not None
