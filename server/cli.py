"""The ``seealoud`` command: serve, manage accounts and settings, make a certificate.

``seealoud watch`` / ``replay`` belong to the client (``seealoud_client.cli``); the
``seealoud`` entry point (``seealoud_cli``) hands them over, so the server never
imports the client. Exit codes: 0 success, 1 runtime failure, 2 usage or
configuration error.
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
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING

from protocol import Capabilities
from server.auth import Account, AuthError, UserStore
from server.config import ConfigError, ServerConfig
from server.settings import InvalidSettings, SettingsStore, VoiceCheck

if TYPE_CHECKING:
    from server.app import SeeAloudServer

log = logging.getLogger("seealoud")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seealoud",
        description=__doc__,
        epilog=(
            "also: `seealoud watch SOURCE` (alias `replay`) streams a video file, folder, "
            "camera or stream URL to a server and prints what comes back; see "
            "`seealoud watch --help`"
        ),
    )
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
    serve.add_argument(
        "--model",
        help="hub id or local path of the vision-language model "
        "(default: the Qwen3-VL that fits this machine)",
    )
    serve.add_argument("--vlm-url", help="OpenAI-compatible engine, e.g. http://gpu:8000/v1")
    serve.add_argument("--device", help="auto (default), cuda, cuda:1 or cpu")
    serve.add_argument("--quantization", choices=["4bit", "8bit"])
    serve.add_argument(
        "--describe-port",
        type=int,
        help="also serve POST /v1/describe on this port (off by default)",
    )

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

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "users":
            return _users(args)
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
        describe_port=args.describe_port,
    )
    configure_logging(config.log_level)
    store = _store(config)
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
    engine = build_engine(config)
    text = None
    if config.text_reading:
        from vision.text import TextReader

        text = TextReader()
    server = SeeAloudServer(config, store=store, engine=engine, tts=tts, asr=asr, text=text)
    await server.start()
    for line in startup_summary(config, port=server.port, accounts=store.accounts()):
        log.info("%s", line)
    if not store.accounts():
        log.warning(NO_ACCOUNTS)
    models = asyncio.create_task(_log_models_when_loaded(server), name="models-summary")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    models.cancel()
    log.info("shutting down: closing %d sessions", len(server.sessions))
    await server.close()


async def _log_models_when_loaded(server: SeeAloudServer) -> None:
    """One line once every model has loaded or failed: which capabilities are live."""
    waits: list[Awaitable[object]] = [
        s.loaded.wait()
        for s in (server.vision, server.tts, server.asr, server.text)
        if s is not None
    ]
    await asyncio.gather(*waits)
    vision = server.engine.backend.name if server.engine is not None else None
    log.info("%s", models_line(server.ctx.services.capabilities(), vision=vision))


NO_ACCOUNTS = (
    "no accounts yet: create one with `seealoud users add NAME` "
    "(the token it prints goes into the phone)"
)


def configure_logging(level: str) -> None:
    """One handler on the root logger, each record printed once.

    The hub client and transformers bring their own stderr handlers (the hub's also
    propagates, so its lines came out twice); ``vision.vlm.route_library_logs``
    removes them when they are imported. websockets logs every HTTP probe at INFO.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level))
    # Pillow logs every EXIF tag it parses at DEBUG, with the raw bytes of short values
    # (where a photo was taken, a phone's serial): image data, never for the log.
    logging.getLogger("PIL").setLevel(max(logging.INFO, root.level))


def startup_summary(
    config: ServerConfig, *, port: int, accounts: list[Account], lan: list[str] | None = None
) -> list[str]:
    """What the operator does next: the addresses a phone and a caregiver open, whether
    phones can use them (camera and microphone need https), and who can sign in."""
    from server.cert import lan_addresses

    hosts = lan if lan is not None else lan_addresses()
    if config.host not in ("0.0.0.0", "::", ""):
        hosts = [config.host]
    tls = config.tls_cert is not None
    scheme = "https" if tls else "http"
    lines = [
        f"phone page: {scheme}://{h}:{port}/   caregiver page: {scheme}://{h}:{port}/caregiver"
        for h in hosts
    ]
    if tls:
        lines.append(
            f"phones: open the https address above; first install the certificate from "
            f"{scheme}://{hosts[0]}:{port}/seealoud-ca.pem (see the README)"
        )
    else:
        lines.append(
            "TLS is off: a phone's browser allows camera and microphone only over https, "
            "so phones cannot use this yet (a browser on this machine can, at "
            f"http://localhost:{port}/). Run `seealoud cert`, then serve with "
            "--tls-cert and --tls-key"
        )
    users = sum(a.role == "user" for a in accounts)
    if accounts:
        lines.append(f"accounts: {users} user(s), {len(accounts) - users} caregiver(s)")
    return lines


def models_line(caps: Capabilities, *, vision: str | None) -> str:
    """``models: vision live (name), speech in live, speech out unavailable (why), ...``."""
    parts = []
    for attr, label in (
        ("vision", "vision"),
        ("speech_in", "speech in"),
        ("speech_out", "speech out"),
        ("text_reading", "text reading"),
    ):
        if getattr(caps, attr):
            name = f" ({vision.split(':', 1)[-1]})" if attr == "vision" and vision else ""
            parts.append(f"{label} live{name}")
        else:
            why = caps.reasons.get(attr, "off")
            parts.append(f"{label} unavailable ({why if len(why) < 80 else 'see above'})")
    return "models: " + ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
