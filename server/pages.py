"""The HTTP side: pages, ``/healthz``, ``/readyz``, ``/metrics``, and the upgrade gate.

Answered in websockets' ``process_request``, before any websocket exists.
Only GET and HEAD are served (others: 405). Pages carry a strict CSP that
also forbids framing. A websocket upgrade is accepted on ``/ws`` and ``/``;
from a browser, its ``Origin`` must be this server's own page (or a
configured origin) and its ``Host`` a name this server answers to: an IP
address, ``localhost``, this machine's name, or a configured host, so a
DNS-rebinding page cannot pose as same-origin. ``/metrics`` is rendered off
the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http
import importlib.util
import json
import logging
import socket
import time
from collections.abc import Callable
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from runtime import Worker
from server.context import ServerContext
from server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger("seealoud.pages")

WS_PATHS = ("/ws", "/")
METRICS_MAX_AGE_S = 0.5
WEB_DIR = Path(__file__).resolve().parent.parent / "client-demo" / "web"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
_CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; "
    "img-src 'self' data: blob:; style-src 'self'; script-src 'self'; worker-src 'self'; "
    "frame-ancestors 'none'"
)


class Pages:
    """``process_request`` for the server; see the module docstring."""

    def __init__(
        self,
        ctx: ServerContext,
        *,
        tls: bool,
        engine_progress: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.ctx = ctx
        self.tls = tls
        self.engine_progress = engine_progress
        self.pages = load_pages()
        cert = ctx.config.tls_cert
        if cert is not None:
            # The phone downloads this once to trust the laptop (public half only).
            self.pages["/seealoud-ca.pem"] = (cert.read_bytes(), "application/x-x509-ca-cert")
        self._own_names = {"localhost", socket.gethostname().lower()}
        self._own_names |= {f"{n}.local" for n in list(self._own_names)}
        self._own_names |= {h.lower() for h in ctx.config.hosts}
        self._metrics_worker = Worker("metrics", max_pending=2)
        self._metrics_rendering: asyncio.Future[bytes] | None = None
        self._metrics_cached: tuple[float, bytes] | None = None

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = urlsplit(request.path).path
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and path in WS_PATHS:
            return self._gate(connection, request)
        if upgrade:
            return connection.respond(
                http.HTTPStatus.NOT_FOUND, "no websocket here: connect to /ws\n"
            )
        if request.method not in ("GET", "HEAD"):
            response = connection.respond(
                http.HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed\n"
            )
            response.headers["Allow"] = "GET, HEAD"
            return response
        if path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            services = self.ctx.services
            body: dict[str, Any] = {
                "capabilities": dataclasses.asdict(services.capabilities()),
                "details": services.details(),
            }
            if self.engine_progress is not None:
                body["vision_loading"] = self.engine_progress()
            return _json_response(body)
        if path == "/metrics":
            text = await self._metrics_page()
            return _response(text, METRICS_CONTENT_TYPE, cache="no-store")
        if path == "/ws":
            return connection.respond(
                http.HTTPStatus.UPGRADE_REQUIRED,
                "this is the websocket endpoint: connect with ws(s)://\n",
            )
        page = self.pages.get(path)
        if page is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        return _page_response(*page)

    async def _metrics_page(self) -> bytes:
        """The Prometheus page, rendered on its own worker thread (never the event loop,
        never the database's thread, so a flood of scrapes cannot delay a login), at
        most once per ``METRICS_MAX_AGE_S``: scrapers arriving meanwhile share it."""
        now = time.monotonic()
        if self._metrics_cached is not None and now - self._metrics_cached[0] < METRICS_MAX_AGE_S:
            return self._metrics_cached[1]
        if self._metrics_rendering is None or self._metrics_rendering.done():
            self._metrics_rendering = asyncio.ensure_future(
                self._metrics_worker.submit(self.ctx.metrics.render)
            )
        text = await asyncio.shield(self._metrics_rendering)
        self._metrics_cached = (time.monotonic(), text)
        return text

    def close(self) -> None:
        """Stop the metrics thread (server shutdown)."""
        self._metrics_worker.close()

    def _gate(self, connection: ServerConnection, request: Request) -> Response | None:
        origin = request.headers.get("Origin")
        if origin is None or origin in self.ctx.config.origins:
            return None  # not a browser, or an origin the operator allowed
        host = request.headers.get("Host", "")
        scheme = "https" if self.tls else "http"
        if origin == f"{scheme}://{host}" and self.host_allowed(host):
            return None
        log.warning("refused websocket from origin %s", origin[:100])
        return connection.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")

    def host_allowed(self, host: str) -> bool:
        """Whether ``host`` (a Host header) names this server."""
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]").lower()
        try:
            ip_address(name)
            return True
        except ValueError:
            return name in self._own_names


def load_pages() -> dict[str, tuple[bytes, str]]:
    """The phone and caregiver pages and their assets, read once at start-up."""
    web = WEB_DIR
    # Where the installed client package keeps its pages, found without importing it
    # (the server never imports the client).
    spec = importlib.util.find_spec("seealoud_client")
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / "web"
        if installed.is_dir():
            web = installed
    pages: dict[str, tuple[bytes, str]] = {}
    if not web.is_dir():
        log.warning("web pages not found at %s; / and /caregiver will answer 404", web)
        return pages
    for file in web.iterdir():
        if file.suffix in _TYPES:
            pages[f"/static/{file.name}"] = (file.read_bytes(), _TYPES[file.suffix])
    for route, name in (("/", "index.html"), ("/caregiver", "caregiver.html")):
        if f"/static/{name}" in pages:
            pages[route] = pages[f"/static/{name}"]
    return pages


def _response(
    body: bytes,
    content_type: str,
    *,
    cache: str = "no-cache",
    extra: list[tuple[str, str]] | None = None,
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", cache),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            *(extra or []),
        ]
    )
    return Response(200, "OK", headers, body)


def _page_response(body: bytes, content_type: str) -> Response:
    return _response(
        body,
        content_type,
        extra=[
            ("Content-Security-Policy", _CSP),
            ("Referrer-Policy", "no-referrer"),
            ("Permissions-Policy", "camera=(self), microphone=(self)"),
        ],
    )


def _json_response(body: dict[str, Any]) -> Response:
    data = json.dumps(body, separators=(",", ":")).encode()
    return _response(data, "application/json", cache="no-store")
