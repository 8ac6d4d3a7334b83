"""Plain ASGI requests and responses, without a framework on the path.

A ``Request`` is a thin view over the ASGI scope: headers are decoded
lazily and only the ones asked for. The body is read only when a handler
asks for it, and with a limit, so that a 401 goes out before any of the body
is read (clients that send ``Expect: 100-continue`` get no 100 until then).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Message = dict[str, Any]
Headers = list[tuple[bytes, bytes]]


class BodyTooLarge(Exception):
    """The request body is larger than the handler accepts."""


class BodyTimeout(Exception):
    """The request body made no progress within the body timeout."""


class Request:
    __slots__ = ("_headers", "body_timeout", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive, body_timeout: float = 0.0) -> None:
        self.scope = scope
        self.receive = receive
        # Seconds a streamed body may go without a byte, and a whole body may take
        # (0: no limit): a client that stalls must not hold its request forever.
        self.body_timeout = body_timeout
        self._headers: dict[str, str] | None = None

    @property
    def method(self) -> str:
        return self.scope["method"]

    @property
    def path(self) -> str:
        return self.scope["path"]

    @property
    def target(self) -> str:
        """The request target as sent (path and query), for Digest's uri check."""
        raw = self.scope.get("raw_path") or self.scope["path"].encode()
        query = self.scope.get("query_string") or b""
        text = raw.decode("latin-1")
        return f"{text}?{query.decode('latin-1')}" if query else text

    def header(self, name: str) -> str | None:
        if self._headers is None:
            headers: dict[str, str] = {}
            for key, value in self.scope["headers"]:
                k = key.decode("latin-1").lower()
                v = value.decode("latin-1")
                headers[k] = f"{headers[k]}, {v}" if k in headers else v
            self._headers = headers
        return self._headers.get(name)

    @property
    def client_host(self) -> str:
        client = self.scope.get("client")
        return client[0] if client else ""

    @property
    def scheme(self) -> str:
        return self.scope.get("scheme", "http")

    @property
    def host(self) -> str:
        """The Host header (as sent), else the server's address."""
        host = self.header("host")
        if host:
            return host
        server = self.scope.get("server")
        return f"{server[0]}:{server[1]}" if server else "localhost"

    async def body(self, limit: int) -> bytes:
        """The whole body, or BodyTooLarge once more than ``limit`` bytes came."""
        declared = self.header("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(declared)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout or None):
                while True:
                    message = await self.receive()
                    if message["type"] == "http.disconnect":
                        break
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise BodyTooLarge(str(size))
                    chunks.append(chunk)
                    if not message.get("more_body"):
                        break
        except TimeoutError:
            raise BodyTimeout(f"body not received within {self.body_timeout:g} s") from None
        return b"".join(chunks)

    async def next_body(self) -> Message:
        """The next message of a streamed body; BodyTimeout when no byte came for the
        body timeout (an encoder gone silent without closing its connection)."""
        if not self.body_timeout:
            return await self.receive()
        try:
            async with asyncio.timeout(self.body_timeout):
                return await self.receive()
        except TimeoutError:
            raise BodyTimeout(f"no data for {self.body_timeout:g} s") from None


async def respond(
    send: Send,
    status: int,
    body: bytes = b"",
    content_type: bytes | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    head: bool = False,
) -> None:
    """Send a complete response in two ASGI messages."""
    out: Headers = [(b"content-length", str(len(body)).encode())]
    if content_type:
        out.append((b"content-type", content_type))
    out.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": b"" if head else body})
