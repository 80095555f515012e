"""``seealoud watch`` (alias ``replay``): any video source in, timestamped results out.

The ``seealoud`` entry point (``seealoud_cli``) hands these subcommands here, so
the server package never imports the client. Exit codes: 0 success, 1 the source
or the server failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from seealoud_client.frames import FrameSourceError
from seealoud_client.replay import ReplayError, run_watch

COMMANDS = ("watch", "replay")


def build_parser(command: str = "watch") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"seealoud {command}",
        description=(
            "Stream a video source to a SeeAloud server as a phone would, and print what "
            "comes back with timings. A file or folder is sent at its own frame rate; a "
            "camera or stream as its frames come (newest frame wins)."
        ),
    )
    parser.add_argument(
        "source",
        help="video file, image, folder of images, camera index (0) "
        "or stream URL (rtsp://..., http://.../stream.mjpg)",
    )
    parser.add_argument("--server", default="ws://127.0.0.1:8765/ws", help="websocket URL")
    parser.add_argument("--token", required=True, help="a user token (seealoud users add)")
    parser.add_argument(
        "--fps",
        type=float,
        help="frame rate (recordings: default their own; live: an upper bound)",
    )
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--loop", action="store_true", help="repeat a recording")
    parser.add_argument(
        "--ask",
        action="append",
        default=[],
        metavar="SECONDS:TEXT",
        help="ask a typed question at a time, e.g. '2:what is ahead?'",
    )
    parser.add_argument("--wav", type=Path, help="a spoken question (mono PCM16 WAV)")
    parser.add_argument(
        "--linger", type=float, default=3.0, help="seconds to wait for answers after the last frame"
    )
    parser.add_argument(
        "--jsonl",
        action="store_true",
        help="print one JSON object per result (observation, speech, transcript, error) "
        "on stdout, session lines on stderr",
    )
    return parser


def main(argv: list[str]) -> int:
    """``argv`` starts with the subcommand (``watch`` or ``replay``)."""
    command, rest = argv[0], argv[1:]
    args = build_parser(command).parse_args(rest)
    questions: dict[float, str] = {}
    for item in args.ask:
        at, sep, text = item.partition(":")
        try:
            questions[float(at)] = text
        except ValueError:
            sep = ""
        if not sep or not text:
            print(f"seealoud: --ask wants SECONDS:TEXT, got {item!r}", file=sys.stderr)
            return 2
    try:
        asyncio.run(
            run_watch(
                args.source,
                url=args.server,
                token=args.token,
                fps=args.fps,
                questions=questions,
                duration_s=args.duration,
                wav=args.wav,
                loop=args.loop,
                linger_s=args.linger,
                jsonl=args.jsonl,
                printer=lambda line: print(line, flush=True),
            )
        )
    except (FrameSourceError, ReplayError, OSError) as exc:
        print(f"seealoud {command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
