"""`seealoud watch`: a live stream in (MJPEG over HTTP on loopback, read by OpenCV),
timestamped JSON results out, against a real server with a scripted vision double;
and the `seealoud` command dispatching without the server importing the client."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

import protocol as p
from seealoud_cli import main
from seealoud_client.events import to_event
from seealoud_client.sources import SourceSpec
from tests.conftest import Accounts, ServerFactory, ws_url
from tests.doubles import ScriptedAnalyzerDouble

pytest.importorskip("cv2", reason="the replay extra (OpenCV) is not installed")

STREAM_FPS = 10
STREAM_FRAMES = 25


class MjpegStream:
    """A camera stand-in on 127.0.0.1:0: multipart JPEG over HTTP, as IP cameras and
    phone webcam apps serve it, at ``STREAM_FPS`` (each frame a different picture)."""

    def __init__(self) -> None:
        frames = [_jpeg(i) for i in range(STREAM_FRAMES)]
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                start = time.monotonic()
                for index, data in enumerate(frames):
                    delay = start + index / STREAM_FPS - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)  # a camera's frame interval, not synchronisation
                    head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}"
                    try:
                        self.wfile.write(head.encode() + b"\r\n\r\n" + data + b"\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        return

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _jpeg(index: int) -> bytes:
    image = Image.new("RGB", (320, 240), (20, 20, 20))
    image.paste((200, 180, 40), (10 * index, 60, 10 * index + 80, 180))  # a moving box
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@pytest.fixture
def mjpeg_stream() -> Iterator[MjpegStream]:
    stream = MjpegStream()
    yield stream
    stream.close()


CHAIR = p.ObservationMsg(
    hazards=[p.HazardInfo(label="chair", direction="ahead", distance_m=1.0)],
    signs=["EXIT"],
    scene="A hallway.",
    latency_ms=120,
)


def test_source_argument_kinds(tmp_path: Path) -> None:
    assert SourceSpec.parse("0").kind == "camera"
    assert SourceSpec.parse("rtsp://user:pw@cam.local/live").kind == "stream"
    assert (
        SourceSpec.parse("rtsp://user:pw@cam.local/live").describe() == "rtsp://***@cam.local/live"
    )
    assert SourceSpec.parse("http://10.0.0.5:8080/video").live
    assert SourceSpec.parse("clip.mp4").kind == "recording"
    (tmp_path / "0").mkdir()  # a folder named 0 is a folder, not a camera
    assert SourceSpec.parse(str(tmp_path / "0")).kind == "recording"


async def test_watch_a_live_stream_prints_jsonl_events(
    make_server: ServerFactory,
    accounts: Accounts,
    mjpeg_stream: MjpegStream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    analyzer = ScriptedAnalyzerDouble([(CHAIR, 0.05)])
    server = await make_server(analyzer, change_detection=False)
    code = await asyncio.to_thread(
        main,
        [
            "watch",
            mjpeg_stream.url,
            "--server",
            ws_url(server),
            "--token",
            accounts.user_token,
            "--linger",
            "0.5",
            "--jsonl",
        ],
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "ready: session" in captured.err and "http://127.0.0.1" in captured.err
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert events, captured.err
    keys = set(events[0])
    assert all(set(e) == keys for e in events)  # one schema for every line
    assert {"t", "time", "frame_age_ms", "lane", "text", "hazards", "signs", "reason"} <= keys
    observations = [e for e in events if e["event"] == "observation"]
    assert observations
    first = observations[0]
    assert first["hazards"][0]["label"] == "chair" and first["signs"] == ["EXIT"]
    assert first["reason"] and first["latency_ms"] == 120
    # The frame's age at arrival: at least the scripted model time, well under a second.
    assert all(50 <= o["frame_age_ms"] < 1500 for o in observations)
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)
    # Live pacing: the stream's 25 frames at 10 fps take 2.5 s to arrive, and the server
    # got them as they came (newest wins on the client, so at most that many).
    assert 5 <= server.metrics.frames_received <= STREAM_FRAMES
    assert mjpeg_stream.requests == 1


async def test_watch_human_output_is_the_default(
    make_server: ServerFactory,
    accounts: Accounts,
    mjpeg_stream: MjpegStream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = await make_server(ScriptedAnalyzerDouble([(CHAIR, 0.0)]), change_detection=False)
    args = ["replay", mjpeg_stream.url, "--server", ws_url(server), "--token"]
    code = await asyncio.to_thread(
        main, [*args, accounts.user_token, "--duration", "1", "--linger", "0.3"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "ready: session" in out and " observation {" in out and "sent " in out


def test_unopenable_stream_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = main(["watch", f"http://127.0.0.1:{port}/none.mjpg", "--token", "x"])
    assert code == 1
    assert "cannot open http://127.0.0.1" in capsys.readouterr().err


def test_events_for_speech_and_errors() -> None:
    speech = to_event(p.SpeechStart(utterance="u1", priority="hazard", text="Chair ahead."), at=1)
    assert speech is not None and (speech.event, speech.lane, speech.text) == (
        "speech",
        "hazard",
        "Chair ahead.",
    )
    obs = to_event(p.ObservationMsg(frame_seq=3), at=2, captured_ms=1000, now_ms=1250)
    assert obs is not None and obs.frame_age_ms == 250 and obs.time.endswith("Z")
    assert to_event(p.Pong(t=1), at=3) is None


def test_the_server_cli_does_not_import_the_client() -> None:
    """`server.cli` (and the `seealoud serve` path through the entry module) never
    loads seealoud_client; `seealoud watch` does."""
    probe = (
        "import sys, server.cli, seealoud_cli\n"
        "assert 'seealoud_client' not in sys.modules, 'server.cli imported the client'\n"
        "try:\n"
        "    seealoud_cli.main(['users', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'seealoud_client' not in sys.modules, 'seealoud users imported the client'\n"
        "try:\n"
        "    seealoud_cli.main(['watch', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'seealoud_client' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    assert "--jsonl" in result.stdout and "stream URL" in result.stdout


class SilentHost:
    """A stream host that accepts connections on 127.0.0.1:0 and never says a word
    (a hung camera, a firewall that black-holes after the handshake)."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[object] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.sock.accept()[0])

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("scheme", ["http", "rtsp"])
def test_an_unresponsive_stream_host_fails_in_bounded_time(scheme: str) -> None:
    """FFmpeg's own default would wait 30 s (measured); the open timeout is passed."""
    from seealoud_client.frames import FrameSourceError
    from seealoud_client.sources import LiveSource

    host = SilentHost()
    try:
        started = time.monotonic()
        with pytest.raises(FrameSourceError, match="no answer within 1 s"):
            LiveSource(SourceSpec.parse(f"{scheme}://127.0.0.1:{host.port}/live"), open_timeout_s=1)
        assert time.monotonic() - started < 5
    finally:
        host.close()


async def test_a_stream_that_goes_quiet_ends_after_the_read_timeout() -> None:
    """Two frames, then the camera stops sending (connection open): the source ends
    within the read timeout instead of blocking its reader for FFmpeg's 30 s."""
    from seealoud_client.sources import LiveSource

    quiet = threading.Event()
    frames = [_jpeg(0), _jpeg(5)]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for data in frames:
                head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}"
                self.wfile.write(head.encode() + b"\r\n\r\n" + data + b"\r\n")
            self.wfile.flush()
            quiet.wait(30)  # connection held open, nothing more sent

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    source = await asyncio.to_thread(
        LiveSource, SourceSpec.parse(url), open_timeout_s=5, read_timeout_s=1
    )
    try:
        source.start()
        started = time.monotonic()
        async with asyncio.timeout(10):
            while await source.next_frame() is not None:
                pass
        assert time.monotonic() - started < 5 and source.frames >= 1
    finally:
        quiet.set()
        await source.close()
        server.shutdown()
        server.server_close()
