"""The ASGI application: one callable that sends each request to its surface.

The dispatch is a few string comparisons, not a framework router: later the
same callable serves video fragments, and the delivery path must not pay for
middleware on every request. Management URLs go to ``ManagementService``;
live presentations (``.isml``) to ``DeliveryService``, on-demand ones
(``.ism``) to ``OnDemandService``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from pathlib import Path

from smoothlive.auth.authenticator import Authenticator
from smoothlive.auth.users import UserStore
from smoothlive.config import ServerConfig
from smoothlive.http.delivery import POLICY_FILES, DeliveryService, delivery_route
from smoothlive.http.formats import FormatsService
from smoothlive.http.ingest import IngestService, ingest_route
from smoothlive.http.management import ManagementService, route
from smoothlive.http.messages import Receive, Request, Scope, Send, respond
from smoothlive.http.metrics import MetricsService
from smoothlive.http.ondemand import OnDemandService, ondemand_route
from smoothlive.http.static import serve_time, serve_web
from smoothlive.metrics import ONDEMAND_FRAGMENT, ONDEMAND_MANIFEST, observe_requests
from smoothlive.outputs.formats import output_route
from smoothlive.pubpoint.registry import Registry
from smoothlive.pubpoint.store import IsmlStore, atomic_write

log = logging.getLogger("smoothlive.http")


def load_secret(state_dir: Path) -> bytes:
    """The server's secret (Digest nonces), made once and kept in the state dir."""
    path = state_dir / "secret"
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    data = secrets.token_bytes(32)
    atomic_write(path, data, mode=0o600)
    return data


class App:
    """The whole server as one ASGI application."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        config.root.mkdir(parents=True, exist_ok=True)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(config.state_dir, 0o700)
        self.secret = load_secret(config.state_dir)
        self.users = UserStore(config.state_dir / "users.toml", realm=config.realm)
        self.authenticator = Authenticator(
            self.users, self.secret, realm=config.realm)
        self.registry = Registry(
            IsmlStore(config.root), config.state_dir, reconnect_grace=config.reconnect_grace,
            archive_allow=config.archive_allow_paths)
        self.management = ManagementService(self.registry, self.authenticator)
        self.ingest = IngestService(
            self.registry, self.authenticator, config.trusted_proxy_set)
        self.delivery = DeliveryService(self.registry)
        self.ondemand = OnDemandService(config.root)
        self.formats = FormatsService(self.delivery, self.ondemand, self.secret)
        self.metrics = MetricsService(self.registry, config.metrics_token)
        self.started = asyncio.Event()

    def startup(self) -> None:
        self.registry.recover()

    def drain(self) -> None:
        """The first stop signal: end the encoders' POSTs so a graceful stop does not
        wait for events that could run for hours; the lifespan shutdown then
        finishes the archives."""
        self.registry.drain()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
                self.started.set()
            elif message["type"] == "lifespan.shutdown":
                try:
                    await asyncio.wait_for(self.registry.finish_archives(), 10)
                except Exception:  # the journal repairs what was not finished
                    log.exception("archives not finished at shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return

    def account_front_hits(self, hits: dict[str, tuple[int, float]]) -> None:
        """What a front answered from its cache in the last second, by path
        (count, seconds in all): in the metrics and statistics, as if answered here."""
        for path, (count, seconds) in hits.items():
            if count <= 0:
                continue
            played = delivery_route(path)
            if played is not None:
                self.delivery.account(played, count, seconds)
                continue
            output = output_route(path)
            if output is not None:
                self.formats.account(output, count, seconds)
                continue
            archived = ondemand_route(path)
            if archived is not None:
                observe_requests(ONDEMAND_MANIFEST if archived.kind == "manifest"
                                 else ONDEMAND_FRAGMENT, 200, count, seconds)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        # The delivery path first: it is the one players hit many times a second.
        played = delivery_route(path)
        if played is not None:
            await self.delivery(Request(scope, receive), send, played)
            return
        output = output_route(path)
        if output is not None:
            await self.formats(Request(scope, receive), send, output)
            return
        archived = ondemand_route(path)
        if archived is not None:
            await self.ondemand(Request(scope, receive), send, archived)
            return
        pushed = ingest_route(path)
        if pushed is not None:
            await self.ingest(Request(scope, receive, self.config.body_timeout), send,
                              pushed)
            return
        found = route(path)
        if found is not None:
            await self.management(Request(scope, receive, self.config.body_timeout), send,
                                  found)
            return
        policy = POLICY_FILES.get(path.lower())
        if policy is not None:
            await respond(send, 200, policy, b"text/xml; charset=utf-8",
                          [(b"cache-control", b"public, max-age=86400")],
                          head=scope["method"] == "HEAD")
            return
        if path == "/time":
            await serve_time(scope, receive, send)
            return
        if path.startswith("/web/"):
            await serve_web(scope, receive, send, path[len("/web/"):])
            return
        if path == "/metrics":
            await self.metrics(Request(scope, receive), send)
            return
        if path == "/healthz":
            await respond(send, 200, b"ok\n", b"text/plain; charset=utf-8",
                          head=scope["method"] == "HEAD")
            return
        await respond(send, 404, b"not found\n", b"text/plain; charset=utf-8")
