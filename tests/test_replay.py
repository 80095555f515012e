"""The replay client against a real server: frames at a real rate, questions, WAV audio."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import pytest
from PIL import Image

import protocol as p
from seealoud_cli import main
from seealoud_client.frames import FrameSourceError, iter_images
from seealoud_client.replay import ReplayClient, ReplayError, load_frames
from tests.conftest import SHARED_DATA, Accounts, ServerFactory, ws_url
from tests.doubles import GatedAnalyzerDouble


def image_folder(tmp_path: Path, count: int = 6) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(count):
        Image.new("RGB", (320, 240), (i * 30, 80, 160)).save(folder / f"{i:03d}.png")
    return folder


async def test_replay_folder_with_question(
    make_server: ServerFactory, accounts: Accounts, tmp_path: Path
) -> None:
    analyzer = GatedAnalyzerDouble()
    analyzer.release()
    server = await make_server(analyzer)
    frames = load_frames(image_folder(tmp_path))
    assert (frames[0].width, frames[0].height) == (320, 240)  # small enough: as it is
    assert frames[0].jpeg[:2] == b"\xff\xd8"
    client = ReplayClient(ws_url(server), accounts.user_token)
    ready = await client.connect()
    assert ready.user == "alice" and client.stats.hello_to_ready_ms > 0
    await client.stream(frames, fps=30, questions={0.1: "what is ahead?"})
    await client.close()
    assert client.stats.frames_sent == 6
    assert server.metrics.frames_received == 6
    assert any(r.question == "what is ahead?" for r in analyzer.requests)


def test_frames_keep_their_shape_with_the_long_side_at_most_640(tmp_path: Path) -> None:
    """As the phone page sends them: a video shot upright stays upright (stretched
    to 640x480, the detector never saw a turn and the model saw squashed people)."""
    folder = tmp_path / "upright"
    folder.mkdir()
    Image.new("RGB", (720, 1280), (90, 120, 60)).save(folder / "000.png")
    Image.new("RGB", (1920, 1080), (90, 120, 60)).save(folder / "001.png")
    sizes = [(f.width, f.height) for f in load_frames(folder)]
    assert sizes == [(360, 640), (640, 360)]
    with Image.open(io.BytesIO(load_frames(folder)[0].jpeg)) as img:
        assert img.size == (360, 640)


async def test_replay_sends_wav_as_audio_messages(
    make_server: ServerFactory, accounts: Accounts, tmp_path: Path
) -> None:
    server = await make_server()
    wav_path = tmp_path / "q.wav"
    with wave.open(str(wav_path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\x00\x01" * 16000)  # one second
    client = ReplayClient(ws_url(server), accounts.user_token)
    await client.connect()
    await client.send_wav(wav_path, realtime=False)
    await client.send(p.Ping(t=1))
    await client.close()
    errors = client.stats.of_type(p.Error)
    # This server has no speech input: one clear error for the utterance, not one per chunk.
    assert [e.code for e in errors] == ["capability-unavailable"]  # type: ignore[attr-defined]


async def test_replay_refused_with_bad_token(make_server: ServerFactory) -> None:
    server = await make_server()
    with pytest.raises(ReplayError, match="auth-failed"):
        await ReplayClient(ws_url(server), "nope").connect()


async def test_cli_replay_of_shared_video(
    make_server: ServerFactory, accounts: Accounts, capsys: pytest.CaptureFixture[str]
) -> None:
    video = SHARED_DATA / "video" / "tree.avi"
    if not video.exists():
        pytest.skip(f"benchmark data not present at {video} (only in the project's checkout)")
    server = await make_server()
    import asyncio

    code = await asyncio.to_thread(
        main,
        [
            "replay",
            str(video),
            "--server",
            ws_url(server),
            "--token",
            accounts.user_token,
            "--duration",
            "1",
            "--linger",
            "0",
        ],
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "ready: session" in out and "sent " in out
    assert server.metrics.frames_received >= 5


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(FrameSourceError):
        list(iter_images(tmp_path / "nothing.avi"))
    with pytest.raises(FrameSourceError):
        list(iter_images(tmp_path))
