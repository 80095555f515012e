"""At the user's ear: what the phone page actually plays, recorded inside the page.

With ``?test=1`` the page plays each utterance through its own recorder node
(``client-demo/web/ear-worklet.js``, an AudioWorklet on the playback graph, at the
context's own sample rate as in use): every buffer carries a second "playing now"
channel that never reaches the speakers, so the node counts exactly how many of the
utterance's samples were played (silences included) and when, on the audio clock.
The server runs in this process with the real espeak-ng voice, a controlled vision
double (the test decides what the model "sees"), a gated text-reader double (the test
decides when it finishes loading) and the real change detector on the fake camera's
footage. Run with ``-s`` to see the figures measured.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol import HazardInfo, ObservationMsg
from server.analysis import AnalysisRequest
from server.auth import UserStore
from server.db import connect
from server.settings import SettingsStore
from speech.tts import SpeechSynthesizer
from tests.test_browser import (
    ARTIFACTS,
    CHROMEDRIVER,
    CHROMIUM,
    chromium,
    phone_size,
    shot,
    wait,
    write_y4m,
)

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Chromium and chromedriver are not installed (scripts/install.sh test installs them)",
)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

FIGURES: dict[str, float] = {}
"""What the ear tests measured, printed and saved to artifacts/ear.json at the end."""

LONG = " ".join(
    f"Part {n} of a long description of the square and the shops around it." for n in range(12)
)


class ControlledVisionDouble:
    """Test double for the model: answers a question or a look with what the test queued
    for it (thread-safe), and says nothing otherwise."""

    name = "controlled-double"

    def __init__(self) -> None:
        self.answers: queue.Queue[ObservationMsg] = queue.Queue()
        self.looks: queue.Queue[ObservationMsg] = queue.Queue()

    async def analyze(self, request: AnalysisRequest) -> ObservationMsg | None:
        source = self.answers if request.question is not None else self.looks
        try:
            obs = source.get_nowait()
        except queue.Empty:
            return ObservationMsg(answer="Nothing new.") if request.question else None
        obs.frame_seq, obs.reason = request.frame.frame.seq, request.reason
        return obs


class GatedTextReaderDouble:
    """Test double for the text reader: its ``load`` (run on the server's loader thread)
    finishes only when the test calls ``finish``, like a model still downloading."""

    def __init__(self) -> None:
        self._loaded = threading.Event()

    def load(self) -> None:
        if not self._loaded.wait(120):
            raise RuntimeError("the test never let the text reader finish loading")

    def finish(self) -> None:
        self._loaded.set()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from server.app import SeeAloudServer
    from server.config import ServerConfig

    tmp = tmp_path_factory.mktemp("ear")
    db = tmp / "ear.db"
    store = UserStore(connect(db))
    token = store.add("alice")
    # Descriptions as long as settings allow (60 words, about 20 s): time for a warning to cut in.
    SettingsStore(store.connection).update(
        "alice", {"verbosity": "detailed", "max_words": 60}, changed_by="test"
    )
    carer = store.add("carol", role="caregiver")
    store.assign("carol", "alice")
    vision = ControlledVisionDouble()
    reader = GatedTextReaderDouble()
    port: queue.Queue[int] = queue.Queue()
    stop = threading.Event()

    def serve() -> None:
        async def main() -> None:
            cfg = ServerConfig(host="127.0.0.1", port=0, db_path=db)
            server = SeeAloudServer(
                cfg,
                store=UserStore(connect(db)),
                analyzer=vision,
                tts=SpeechSynthesizer(),
                text=reader,  # type: ignore[arg-type]  # test double
            )
            await server.start()
            assert server.tts is not None
            await server.tts.loaded.wait()
            port.put(server.port)
            await asyncio.to_thread(stop.wait)
            await server.close()

        asyncio.run(main())

    thread = threading.Thread(target=serve, name="ear-server", daemon=True)
    thread.start()
    number = port.get(timeout=60)
    base = f"http://127.0.0.1:{number}"
    y4m = tmp / "camera.y4m"
    write_y4m(y4m, frames=150)
    driver = chromium(tmp, y4m)
    phone_size(driver)
    driver.get(f"{base}/?test=1&fps=5#token={token}")
    wait(driver, "window.seealoud && window.seealoud.state === 'live'")
    wait(driver, "window.seealoud.framesSent >= 5")  # questions are about the newest frame
    try:
        yield {
            "driver": driver,
            "vision": vision,
            "reader": reader,
            "carer": carer,
            "port": number,
            "figures": FIGURES,
        }
    finally:
        driver.quit()
        stop.set()
        thread.join(10)
        if FIGURES:
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "ear.json").write_text(json.dumps(FIGURES, indent=2))
            print("\nAt the ear:", json.dumps(FIGURES))


def utterance(driver: Any, priority: str, after: int) -> str:
    """The id of the first utterance of ``priority`` after the first ``after`` ones."""
    return str(
        wait(
            driver,
            f"(window.seealoud.utterances.slice({after}).find(u => u.priority === '{priority}')"
            " || {}).id",
        )
    )


def count(driver: Any) -> int:
    return int(driver.execute_script("return window.seealoud.utterances.length"))


def settled_ear(driver: Any, u: str) -> dict[str, Any]:
    """What the ear heard of ``u`` once the page has nothing left to play and the ear
    has reported a render quantum without it."""
    wait(driver, "window.seealoud.playing === 0", timeout=30)
    return dict(wait(driver, f"window.seealoud.ear[{u!r}].idle && window.seealoud.ear[{u!r}]"))


def played_fraction(rec: dict[str, Any]) -> float:
    """Samples played over samples sent (the ear counts at the context's rate)."""
    return float(rec["played"]) * rec["rate"] / rec["ctxRate"] / rec["sent"]


def test_a_finished_utterance_plays_in_full(page: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    driver, vision = page["driver"], page["vision"]
    text = "The door ahead is open and the corridor is clear."
    vision.answers.put(ObservationMsg(answer=text))
    before = count(driver)
    driver.find_element(By.ID, "describe").click()
    u = utterance(driver, "answer", before)
    # While it plays: "Now saying" at the top shows it, with the speaking indicator.
    wait(driver, "document.getElementById('speaking').dataset.on === 'true'", timeout=20)
    assert driver.find_element(By.ID, "now").text == text
    assert driver.find_element(By.ID, "speaking").text.endswith("Speaking")
    shot(driver, "phone-speaking.png")
    wait(driver, f"window.seealoud.stops[{u!r}] === 'done'", timeout=20)
    rec = settled_ear(driver, u)
    FIGURES["finished_utterance_played_pct"] = round(100 * played_fraction(rec), 2)
    FIGURES["finished_utterance_s"] = round(rec["sent"] / rec["rate"], 2)
    assert rec["sent"] > rec["rate"]  # over a second of speech
    assert played_fraction(rec) >= 0.99, rec
    assert rec["loud"] > 0.5 * rec["played"]  # and it was speech, not silence
    assert driver.execute_script("return window.seealoud.interrupts") == []
    assert driver.execute_script("return window.seealoud.flushes") == 0  # nothing thrown away
    # The list a screen reader reads on demand got what was said, once (it is not a live
    # region: the server's voice already says it, a screen reader would say it twice).
    said = driver.find_element(By.ID, "said")
    items = [li.text for li in said.find_elements(By.TAG_NAME, "li")]
    assert items[0] == text and items.count(text) == 1, items
    wait(driver, "document.getElementById('speaking').dataset.on === 'false'", timeout=5)
    assert driver.find_element(By.ID, "speaking").text == "Last said"  # the indicator went off


def test_stop_silences_playback_within_100_ms(page: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    driver, vision = page["driver"], page["vision"]
    vision.answers.put(ObservationMsg(answer=LONG))
    before = count(driver)
    driver.find_element(By.ID, "describe").click()
    u = utterance(driver, "answer", before)
    # Half a second of it played (the ear counts at the context's rate).
    wait(driver, f"(e => e && e.played > e.ctxRate / 2)(window.seealoud.ear[{u!r}])", timeout=20)
    driver.find_element(By.ID, "stop").click()
    wait(driver, f"window.seealoud.stops[{u!r}] === 'interrupted'", timeout=5)
    wait(driver, "window.seealoud.interrupts.some(i => i.reason === 'user')", timeout=5)
    rec = settled_ear(driver, u)
    clicked = driver.execute_script("return window.seealoud.stopClickedAt")
    # Both on the audio clock: the click, and the last audible sample that was played.
    latency_ms = (rec["lastLoud"] - clicked) * 1000
    FIGURES["stop_to_last_audible_sample_ms"] = round(latency_ms, 2)
    FIGURES["stop_to_last_sample_ms"] = round((rec["lastPlayed"] - clicked) * 1000, 2)
    assert latency_ms < 100, (rec, clicked)
    assert rec["lastPlayed"] - clicked < 0.1, (rec, clicked)  # not even silence went on
    full_s = len(LONG.split()) / 175 * 60  # about 40 s at the default rate
    assert rec["played"] / rec["ctxRate"] < full_s / 2  # the rest was never played
    wait(driver, "document.getElementById('speaking').textContent === 'Stopped'")


def test_a_warning_cuts_a_description_and_plays_whole(page: dict[str, Any]) -> None:
    driver, vision = page["driver"], page["vision"]
    vision.looks.put(ObservationMsg(scene=LONG))
    before = count(driver)
    scene = utterance(driver, "scene", before)  # the detector fires on the moving footage
    wait(driver, f"(e => e && e.played > e.ctxRate / 2)(window.seealoud.ear[{scene!r}])", 30)
    vision.looks.put(
        ObservationMsg(
            hazards=[HazardInfo(label="bicycle", direction="left", distance_m=1.0, urgency="high")]
        )
    )
    hazard = utterance(driver, "hazard", before)
    wait(driver, f"window.seealoud.stops[{hazard!r}] === 'done'", timeout=30)
    warning = settled_ear(driver, hazard)
    cut = settled_ear(driver, scene)
    assert driver.execute_script(f"return window.seealoud.stops[{scene!r}]") == "interrupted"
    barge = driver.execute_script(
        "return window.seealoud.interrupts.filter(i => i.reason === 'barge-in')"
    )
    assert len(barge) == 1, barge
    # Nothing of the description played after the warning's interrupt reached the page...
    FIGURES["description_after_barge_in_ms"] = round((cut["lastPlayed"] - barge[0]["at"]) * 1000, 2)
    assert cut["lastPlayed"] <= barge[0]["at"] + 0.01, (cut, barge)
    full = asyncio.run(_samples(LONG))
    FIGURES["description_played_pct"] = round(100 * played_fraction(cut) * cut["sent"] / full, 1)
    assert played_fraction(cut) * cut["sent"] < 0.5 * full  # ...so the rest was never played
    # ...and the warning played whole.
    FIGURES["warning_played_pct"] = round(100 * played_fraction(warning), 2)
    assert played_fraction(warning) >= 0.99, warning
    assert warning["loud"] > 0.5 * warning["played"]
    shot(driver, "phone-warning.png")


def test_capability_change_is_announced_once(page: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    driver, reader = page["driver"], page["reader"]
    announced = driver.execute_script("return window.seealoud.announced")
    # On connect: one short sentence per unavailable capability (this server has no speech
    # recogniser), never operator text; one still loading is not called unavailable.
    assert any(a.startswith("Spoken questions are unavailable") for a in announced), announced
    assert all(len(a.split()) <= 12 and "hf " not in a for a in announced), announced
    assert not any("Text reading" in a for a in announced), announced
    # ...and said whole: "Connected" used to cancel the page's voice and cut them off.
    cut = driver.execute_script("return window.seealoud.voiceCut")
    assert not any("unavailable" in c for c in cut), cut
    reader.finish()  # the model finished loading on the server while the phone is connected
    wait(driver, "window.seealoud.announced.includes('Text reading is ready.')", timeout=20)
    # The page's own notices are said by the page's own voice, once (and not also by a
    # live region, which would make a screen reader say them a second time).
    wait(driver, "window.seealoud.voiced.includes('Text reading is ready.')")
    voiced = driver.execute_script("return window.seealoud.voiced")
    assert voiced.count("Text reading is ready.") == 1, voiced
    # This headless Chromium has the speech API but no voice: the notice then goes to
    # the live region instead of to nobody.
    if driver.execute_script("return speechSynthesis.getVoices().length") == 0:
        notices = driver.find_element(By.ID, "notices")
        assert notices.get_attribute("aria-live") == "polite"
        # (a notice the same as the one before ends in a no-break space: said again)
        assert notices.get_attribute("textContent").rstrip("\u00a0") == voiced[-1], voiced
    status = driver.find_element(By.ID, "status")
    assert status.get_attribute("aria-live") == "off" and not status.get_attribute("role")
    announced = driver.execute_script("return window.seealoud.announced")
    assert announced.count("Text reading is ready.") == 1, announced


def test_each_caregiver_change_is_announced_once(page: dict[str, Any]) -> None:
    from websockets.sync.client import connect as ws_connect

    driver = page["driver"]
    url = f"ws://127.0.0.1:{page['port']}/ws"
    with ws_connect(url) as carer:
        carer.send(json.dumps({"type": "hello", "data": {"protocol": 1, "token": page["carer"]}}))
        assert json.loads(carer.recv(10))["type"] == "ready"
        for n, values in enumerate(({"speech_rate": 150}, {"quiet": True}, {"quiet": False})):
            carer.send(
                json.dumps(
                    {
                        "type": "settings-update",
                        "id": f"s{n}",
                        "data": {"user": "alice", "values": values},
                    }
                )
            )
            reply = json.loads(carer.recv(10))
            assert reply["type"] == "settings" and reply["data"]["connected"] is True, reply
            wait(driver, f"window.seealoud.summaries.length >= {n + 1}")
    summaries = driver.execute_script("return window.seealoud.summaries")
    assert len(summaries) == 3, summaries  # one per change, not two
    assert "150" in summaries[0] and len(set(summaries)) == 3, summaries
    announced = driver.execute_script("return window.seealoud.announced")
    assert all(announced.count(s) == 1 for s in summaries), announced
    assert "Your settings were updated." not in announced
    assert announced.count("Text reading is ready.") == 1, announced  # still once
    # Each change is said to the user by the server's voice, once, in the list, and not
    # also by the page's voice.
    for summary in summaries:
        wait(driver, f"window.seealoud.utterances.some(u => u.text === {summary!r})")
    spoken = [u["text"] for u in driver.execute_script("return window.seealoud.utterances")]
    assert all(spoken.count(s) == 1 for s in summaries), spoken
    voiced = driver.execute_script("return window.seealoud.voiced")
    assert not any(s in voiced for s in summaries), voiced


def test_a_typed_question_is_answered_and_the_camera_off_is_said(page: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    driver, vision = page["driver"], page["vision"]
    vision.answers.put(ObservationMsg(answer="The door is open."))
    field = driver.find_element(By.ID, "question")
    field.send_keys("Is the door open?")
    driver.find_element(By.CSS_SELECTOR, "#ask button[type=submit]").click()
    wait(driver, "window.seealoud.utterances.some(u => u.text === 'The door is open.')")
    driver.find_element(By.ID, "camera").click()  # off
    assert driver.find_element(By.ID, "status").text == "Connected. Camera off."
    sent_before = driver.execute_script("return window.seealoud.framesSent")
    driver.find_element(By.ID, "describe").click()
    wait(
        driver,
        "window.seealoud.voiced.includes("
        "'The camera is off or sends nothing. Turn it on, then ask again.')",
    )
    voiced = driver.execute_script("return window.seealoud.voiced")
    assert "Camera off: I cannot see anything now." in voiced, voiced
    assert driver.execute_script("return window.seealoud.framesSent") == sent_before
    driver.find_element(By.ID, "camera").click()  # on again
    wait(driver, f"window.seealoud.framesSent > {sent_before}")
    shot(driver, "phone-typed-question.png")


def test_large_text_wraps_and_never_clips_a_button(page: dict[str, Any]) -> None:
    driver = page["driver"]
    driver.execute_script("document.documentElement.style.fontSize = '200%'")
    try:
        clipped = driver.execute_script(
            "return [...document.querySelectorAll('button')].filter(b => b.offsetParent &&"
            " (b.scrollWidth > b.clientWidth + 1)).map(b => b.id || b.textContent)"
        )
        wide = driver.execute_script("return document.documentElement.scrollWidth")
        driver.execute_script("document.getElementById('handsfree').scrollIntoView()")
        shot(driver, "phone-large-text.png")
        driver.execute_script("window.scrollTo(0, 0)")
    finally:
        driver.execute_script("document.documentElement.style.fontSize = ''")
    assert clipped == [] and wide <= 390, (clipped, wide)


def test_a_refused_token_is_forgotten(page: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    driver = page["driver"]
    main = driver.current_window_handle
    driver.switch_to.new_window("tab")
    try:
        # localhost is another origin than 127.0.0.1: its own storage, the phone keeps its token.
        driver.get(f"http://localhost:{page['port']}/?test=1#token=not-a-real-token")
        wait(driver, "window.seealoud && window.seealoud.state === 'down'", timeout=20)
        assert driver.execute_script("return localStorage.getItem('seealoud-token')") is None
        assert driver.find_element(By.ID, "login").is_displayed()
        assert "refused" in driver.find_element(By.ID, "status").text
        # Said, and said again when a typed token is refused too; the field says why.
        refused = "The token was refused. Ask your caregiver for a new one."
        wait(driver, f"window.seealoud.voiced.includes({refused!r})")
        field = driver.find_element(By.ID, "token")
        assert driver.switch_to.active_element == field
        assert field.get_attribute("aria-invalid") == "true"
        assert field.get_attribute("aria-describedby") == "status"
        field.send_keys("another-wrong-token\n")
        wait(driver, f"window.seealoud.voiced.filter(v => v === {refused!r}).length === 2")
    finally:
        driver.close()
        driver.switch_to.window(main)


async def _samples(text: str) -> int:
    pcm = b"".join([c async for c in SpeechSynthesizer().stream(text)])
    return len(pcm) // 2
