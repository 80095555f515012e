"""The ``seealoud`` command: serve, manage accounts, replay a video.

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import signal
import sys
from pathlib import Path

from server.auth import AuthError, UserStore
from server.config import ConfigError, ServerConfig
from server.settings import InvalidSettings, SettingsStore, VoiceCheck

log = logging.getLogger("seealoud")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seealoud", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--config", type=Path, help="TOML file with a [server] table")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--db", dest="db_path", type=Path, help="SQLite file (users, settings)")
    serve.add_argument("--tls-cert", type=Path)
    serve.add_argument("--tls-key", type=Path)
    serve.add_argument(
        "--origin",
        dest="origins",
        action="append",
        help="extra allowed browser Origin (repeatable)",
    )
    serve.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.add_argument(
        "--vision",
        dest="vision_backend",
        choices=["transformers", "openai", "none"],
        help="in-process model, an OpenAI-compatible engine, or no vision",
    )
    serve.add_argument("--model", help="hub id or local path of the vision-language model")
    serve.add_argument("--vlm-url", help="OpenAI-compatible engine, e.g. http://gpu:8000/v1")
    serve.add_argument("--device", help="auto, cuda, cuda:1 or cpu")
    serve.add_argument("--quantization", choices=["4bit", "8bit"])

    users = sub.add_parser("users", help="manage accounts and tokens")
    users.add_argument("--config", type=Path)
    users.add_argument("--db", dest="db_path", type=Path)
    usub = users.add_subparsers(dest="users_command", required=True)
    add = usub.add_parser("add", help="create an account and print its token once")
    add.add_argument("name")
    add.add_argument("--role", choices=["user", "caregiver"], default="user")
    usub.add_parser("list", help="list accounts, roles and who manages whom (never tokens)")
    remove = usub.add_parser("remove", help="delete an account; its token stops working")
    remove.add_argument("name")
    reset = usub.add_parser(
        "reset-token",
        help="issue a new token (lost phone); settings and assignments stay, "
        "the old token stops working at once",
    )
    reset.add_argument("name")
    assign = usub.add_parser("assign", help="let a caregiver manage a user's settings")
    assign.add_argument("caregiver")
    assign.add_argument("user")
    unassign = usub.add_parser("unassign", help="stop a caregiver managing a user's settings")
    unassign.add_argument("caregiver")
    unassign.add_argument("user")

    settings = sub.add_parser("settings", help="read or change a user's settings")
    settings.add_argument("--config", type=Path)
    settings.add_argument("--db", dest="db_path", type=Path)
    ssub = settings.add_subparsers(dest="settings_command", required=True)
    sget = ssub.add_parser("get", help="print a user's settings")
    sget.add_argument("user")
    sset = ssub.add_parser("set", help="change settings: KEY=VALUE (JSON values)")
    sset.add_argument("user")
    sset.add_argument("values", nargs="+", metavar="KEY=VALUE")
    slog = ssub.add_parser("log", help="recent changes: who, when, old and new")
    slog.add_argument("user")

    cert = sub.add_parser("cert", help="make a self-signed certificate for the LAN address")
    cert.add_argument("--out", type=Path, help="folder (default: the data folder)")
    cert.add_argument(
        "--name",
        action="append",
        default=[],
        help="extra host name or address to include (repeatable)",
    )

    replay = sub.add_parser("replay", help="stream a video or image folder as a phone would")
    replay.add_argument("source", type=Path, help="video file, image or folder of images")
    replay.add_argument("--server", default="ws://127.0.0.1:8765/ws", help="websocket URL")
    replay.add_argument("--token", required=True, help="a user token (seealoud users add)")
    replay.add_argument("--fps", type=float, help="frame rate (default: the video's own)")
    replay.add_argument("--duration", type=float, help="stop after this many seconds")
    replay.add_argument("--loop", action="store_true", help="repeat the source")
    replay.add_argument(
        "--ask",
        action="append",
        default=[],
        metavar="SECONDS:TEXT",
        help="ask a typed question at a time, e.g. '2:what is ahead?'",
    )
    replay.add_argument("--wav", type=Path, help="a spoken question (mono PCM16 WAV)")
    replay.add_argument(
        "--linger", type=float, default=3.0, help="seconds to wait for answers after the last frame"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "users":
            return _users(args)
        if args.command == "replay":
            return _replay(args)
        if args.command == "settings":
            return _settings(args)
        if args.command == "cert":
            return _cert(args)
    except (ConfigError, AuthError, InvalidSettings) as exc:
        print(f"seealoud: {exc}", file=sys.stderr)
        return 2
    return 2


def _config(args: argparse.Namespace, **extra: object) -> ServerConfig:
    return ServerConfig.load(
        getattr(args, "config", None), db_path=getattr(args, "db_path", None), **extra
    )


def _store(config: ServerConfig) -> UserStore:
    from server.db import connect

    return UserStore(connect(config.db_path))


def _users(args: argparse.Namespace) -> int:
    config = _config(args)
    store = _store(config)
    if args.users_command == "add":
        token = store.add(args.name, role=args.role)
        print(f"created {args.role} {args.name!r}. Token (shown once, keep it secret):")
        print(token)
    elif args.users_command == "list":
        # name, role, created, then whom a caregiver manages / who manages a user
        assignments = store.assignments()
        managers: dict[str, list[str]] = {}
        for caregiver, users in assignments.items():
            for user in users:
                managers.setdefault(user, []).append(caregiver)
        for account in store.accounts():
            if account.role == "caregiver":
                names = assignments.get(account.name, [])
                relation = f"manages: {', '.join(names) if names else '(nobody)'}"
            else:
                names = managers.get(account.name, [])
                relation = f"managed by: {', '.join(names) if names else '(nobody)'}"
            print(f"{account.name}\t{account.role}\t{account.created_at}\t{relation}")
    elif args.users_command == "remove":
        store.remove(args.name)
        print(f"removed {args.name!r}; a running server closes its sessions within a second")
    elif args.users_command == "reset-token":
        token = store.reset_token(args.name)
        print(
            f"new token for {args.name!r} (shown once, keep it secret; the old one no "
            "longer works and a running server closes its sessions within a second):"
        )
        print(token)
    elif args.users_command == "assign":
        store.assign(args.caregiver, args.user)
        print(f"{args.caregiver!r} now manages {args.user!r}")
    elif args.users_command == "unassign":
        store.unassign(args.caregiver, args.user)
        print(f"{args.caregiver!r} no longer manages {args.user!r}")
    return 0


def _cert(args: argparse.Namespace) -> int:
    from server.cert import CertError, lan_addresses, make_certificate
    from server.config import default_data_dir

    try:
        cert, key = make_certificate(args.out or default_data_dir(), names=args.name)
    except CertError as exc:
        print(f"seealoud: {exc}", file=sys.stderr)
        return 1
    address = lan_addresses()[0]
    print(f"certificate: {cert}\nprivate key: {key} (keep it on this machine)\n")
    print(f"serve with:  seealoud serve --tls-cert {cert} --tls-key {key}")
    print(
        f"on the phone: https://{address}:8765/  (install the certificate first: "
        f"https://{address}:8765/seealoud-ca.pem; see the README)"
    )
    return 0


def _voice_check() -> VoiceCheck | None:
    """The speech package's check (only voices espeak-ng itself lists), so the CLI
    accepts exactly what the server does; without it, the conservative id shape."""
    try:
        from speech.voices import is_valid_voice
    except ImportError:
        return None
    return is_valid_voice


def _settings(args: argparse.Namespace) -> int:
    config = _config(args)
    users = _store(config)
    users.get(args.user)  # raises UnknownAccount with a clear message
    store = SettingsStore(users.connection, voice_ok=_voice_check())
    if args.settings_command == "get":
        print(json.dumps(store.get(args.user).to_dict(), indent=2, ensure_ascii=False))
    elif args.settings_command == "set":
        values = {}
        for item in args.values:
            key, sep, raw = item.partition("=")
            if not sep:
                raise InvalidSettings(f"expected KEY=VALUE, got {item!r}")
            try:
                values[key] = json.loads(raw)
            except ValueError:
                values[key] = raw  # a bare word such as hazards-only
        who = f"cli:{getpass.getuser()}"
        applied = store.apply(args.user, values, changed_by=who)
        print(json.dumps(applied.new.to_dict(), indent=2, ensure_ascii=False))
        if applied.changes:
            print(
                f"changed {', '.join(applied.changed_keys)}; a running server applies "
                "this to the user's sessions within a second",
                file=sys.stderr,
            )
        else:
            print("nothing changed: the values were already set", file=sys.stderr)
    else:
        for change in store.history(args.user):
            print(
                f"{change.changed_at}\t{change.changed_by}\t{change.key}\t"
                f"{json.dumps(change.old)} -> {json.dumps(change.new)}"
            )
    return 0


def _serve(args: argparse.Namespace) -> int:
    config = _config(
        args,
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        origins=args.origins,
        log_level=args.log_level,
        vision_backend=args.vision_backend,
        model=args.model,
        vlm_url=args.vlm_url,
        device=args.device,
        quantization=args.quantization,
    )
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # websockets logs every HTTP probe at INFO; our own session lines are enough.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.getLogger().level))
    store = _store(config)
    if not store.accounts():
        log.warning(
            "no accounts yet: create one with `seealoud users add NAME` "
            "(the token it prints goes into the phone)"
        )
    asyncio.run(serve_until_signalled(config, store))
    return 0


async def serve_until_signalled(config: ServerConfig, store: UserStore) -> None:
    """Run the server until SIGTERM or SIGINT, then close every session with 1001."""
    from server.analysis import build_engine
    from server.app import SeeAloudServer
    from speech.asr import AsrOptions, SpeechRecognizer
    from speech.tts import SpeechSynthesizer, TtsOptions

    tts = SpeechSynthesizer(TtsOptions(rate=config.audio_rate)) if config.speech_out else None
    asr = (
        SpeechRecognizer(AsrOptions(model=config.asr_model, device=config.asr_device))
        if config.speech_in
        else None
    )
    server = SeeAloudServer(config, store=store, engine=build_engine(config), tts=tts, asr=asr)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: closing %d sessions", len(server.sessions))
    await server.close()


def _replay(args: argparse.Namespace) -> int:
    from seealoud_client.frames import FrameSourceError
    from seealoud_client.replay import ReplayError, run_replay

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
            run_replay(
                args.source,
                url=args.server,
                token=args.token,
                fps=args.fps,
                questions=questions,
                duration_s=args.duration,
                wav=args.wav,
                loop=args.loop,
                linger_s=args.linger,
            )
        )
    except (FrameSourceError, ReplayError, OSError) as exc:
        print(f"seealoud replay: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
