"""At the user's ear: what the phone page actually plays, recorded inside the page.

With ``?test=1`` the page plays each utterance through its own recorder node (an
AudioContext at the speech rate, so samples compare one to one) and counts the
non-silent samples that reached the speaker. The server runs in this process with
the real espeak-ng voice and a controlled vision double (the test decides what the
model "sees"), and the real change detector on the fake camera's footage.
"""

from __future__ import annotations

import asyncio
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
from tests.test_browser import CHROMEDRIVER, CHROMIUM, shot, wait, write_y4m

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Chromium and chromedriver are not installed (scripts/install.sh test installs them)",
)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

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
    vision = ControlledVisionDouble()
    port: queue.Queue[int] = queue.Queue()
    stop = threading.Event()

    def serve() -> None:
        async def main() -> None:
            cfg = ServerConfig(host="127.0.0.1", port=0, db_path=db)
            server = SeeAloudServer(
                cfg, store=UserStore(connect(db)), analyzer=vision, tts=SpeechSynthesizer()
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
    base = f"http://127.0.0.1:{port.get(timeout=60)}"
    y4m = tmp / "camera.y4m"
    write_y4m(y4m, frames=150)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={tmp / 'profile'}",
        "--window-size=390,844",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER)
    )
    driver.set_window_size(390, 844)
    driver.get(f"{base}/?test=1&fps=5#token={token}")
    wait(driver, "window.seealoud && window.seealoud.state === 'live'")
    wait(driver, "window.seealoud.framesSent >= 5")  # questions are about the newest frame
    try:
        yield {"driver": driver, "vision": vision}
    finally:
        driver.quit()
        stop.set()
        thread.join(10)


def utterance(driver: Any, priority: str, after: int) -> str:
    """The id of the first utterance of ``priority`` after the first ``after`` ones."""
    return str(
        wait(
            driver,
            f"(window.seealoud.utterances.slice({after}).find(u => u.priority === '{priority}')"
            " || {}).id",
        )
    )


def ear(driver: Any, u: str) -> dict[str, float]:
    return dict(driver.execute_script(f"return window.seealoud.ear[{u!r}] || {{}}"))


def count(driver: Any) -> int:
    return int(driver.execute_script("return window.seealoud.utterances.length"))


def test_a_finished_utterance_plays_in_full(page: dict[str, Any]) -> None:
    driver, vision = page["driver"], page["vision"]
    vision.answers.put(ObservationMsg(answer="The door ahead is open and the corridor is clear."))
    before = count(driver)
    driver.find_element("id", "describe").click()
    u = utterance(driver, "answer", before)
    wait(driver, f"window.seealoud.stops[{u!r}] === 'done'", timeout=20)
    # Playback runs about half a second behind the server: wait until it went quiet.
    wait(driver, "window.seealoud.playing === 0", timeout=10)
    heard = ear(driver, u)
    assert heard["sent"] > 16_000  # over a second of speech
    assert heard["heard"] >= 0.99 * heard["sent"], heard
    assert driver.execute_script("return window.seealoud.flushes") == 0  # nothing thrown away


def test_stop_silences_playback_within_100_ms(page: dict[str, Any]) -> None:
    driver, vision = page["driver"], page["vision"]
    vision.answers.put(ObservationMsg(answer=LONG))
    before = count(driver)
    driver.find_element("id", "describe").click()
    u = utterance(driver, "answer", before)
    wait(driver, f"(window.seealoud.ear[{u!r}] || {{}}).heard > 8000", timeout=20)  # 0.5 s heard
    driver.find_element("id", "stop").click()
    wait(driver, f"window.seealoud.stops[{u!r}] === 'interrupted'", timeout=5)
    settled = driver.execute_script(
        "return new Promise(r => setTimeout(() => r(window.seealoud.ear[arguments[0]]), 400))", u
    )
    clicked = driver.execute_script("return window.seealoud.stopClickedAt")
    assert settled["lastHeardAt"] - clicked < 100, (settled, clicked)
    assert settled["heard"] < settled["sent"]  # the rest was never played


def test_a_warning_cuts_a_description_and_plays_whole(page: dict[str, Any]) -> None:
    driver, vision = page["driver"], page["vision"]
    vision.looks.put(ObservationMsg(scene=LONG))
    before = count(driver)
    scene = utterance(driver, "scene", before)  # the detector fires on the moving footage
    wait(driver, f"(window.seealoud.ear[{scene!r}] || {{}}).heard > 8000", timeout=30)
    vision.looks.put(
        ObservationMsg(
            hazards=[HazardInfo(label="bicycle", direction="left", distance_m=1.0, urgency="high")]
        )
    )
    hazard = utterance(driver, "hazard", before)
    wait(driver, f"window.seealoud.stops[{hazard!r}] === 'done'", timeout=30)
    wait(driver, "window.seealoud.playing === 0", timeout=10)
    cut, warning = ear(driver, scene), ear(driver, hazard)
    full = asyncio.run(_samples(LONG))
    assert driver.execute_script(f"return window.seealoud.stops[{scene!r}]") == "interrupted"
    assert cut["heard"] < 0.6 * full  # the rest of the description was not played
    assert warning["heard"] >= 0.99 * warning["sent"], warning
    shot(driver, "phone-warning.png")


async def _samples(text: str) -> int:
    import numpy as np

    pcm = b"".join([c async for c in SpeechSynthesizer().stream(text)])
    return int(np.count_nonzero(np.abs(np.frombuffer(pcm, dtype="<i2")) >= 4))
