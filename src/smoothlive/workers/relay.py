"""Relaying one request to the owner over its Unix socket, as HTTP/1.1.

A front's requests that it cannot answer from its cache go to the owner
unchanged but for the hop-by-hop headers, with the client's address in
``x-smoothlive-peer`` (believed only on the owner's Unix socket). Request
bodies stream through as they come (an encoder's POST lasts as long as the
event), chunked; the answer streams back. The owner may answer before it
has read the body (401, 404): then the rest of the body is not sent and
the connection is not reused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from smoothlive.http.messages import Receive, Scope, Send
from smoothlive.workers.board import HEADER

PEER = b"x-smoothlive-peer"
BOARD = HEADER
# Not forwarded in either direction: they describe one connection, or are ours.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"trailer",
    b"proxy-connection", b"expect", PEER,
})
HEAD_TIMEOUT = 60.0  # seconds for the owner to answer a request without a body
READ_SIZE = 256 * 1024
IDLE_CONNECTIONS = 64


class OwnerUnavailable(Exception):
    """The owner's socket refused or dropped the exchange before an answer."""


class Upstream:
    """Keep-alive connections to the owner's Unix socket."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection."""
        try:
            return await asyncio.open_unix_connection(self.path, limit=1 << 20)
        except OSError as exc:
            raise OwnerUnavailable(str(exc)) from None

    async def ask(self, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                              int, list[tuple[bytes, bytes]]]:
        """Send a request without a body and read the head of the answer, on a
        kept-alive connection if there is one; if the owner had closed that one
        meanwhile, once more on a new connection."""
        while self._idle:
            reader, writer = self._idle.pop()
            if writer.is_closing() or reader.at_eof():
                writer.close()
                continue
            try:
                writer.write(head)
                status, headers = await asyncio.wait_for(_read_head(reader), HEAD_TIMEOUT)
                return reader, writer, status, headers
            except (OSError, asyncio.IncompleteReadError, OwnerUnavailable):
                writer.close()  # closed by the owner while idle: the next one
        reader, writer = await self.open()
        try:
            writer.write(head)
            status, headers = await asyncio.wait_for(_read_head(reader), HEAD_TIMEOUT)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            writer.close()
            raise OwnerUnavailable(str(exc) or "no answer") from None
        except OwnerUnavailable:
            writer.close()
            raise
        return reader, writer, status, headers

    def release(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._idle) < IDLE_CONNECTIONS and not writer.is_closing():
            self._idle.append((reader, writer))
        else:
            writer.close()

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def _request_head(scope: Scope, chunked: bool) -> bytes:
    target = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string") or b""
    if query:
        target += b"?" + query
    lines = [b"%s %s HTTP/1.1" % (scope["method"].encode(), target)]
    for name, value in scope["headers"]:
        name = name.lower()
        if name in HOP_BY_HOP or (chunked and name == b"content-length"):
            continue
        lines.append(name + b": " + value)
    if chunked and _expects_continue(scope):
        lines.append(b"expect: 100-continue")
    client = scope.get("client")
    lines.append(PEER + b": " + (client[0] if client else "").encode("latin-1"))
    if chunked:
        lines.append(b"transfer-encoding: chunked")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _expects_continue(scope: Scope) -> bool:
    return any(name.lower() == b"expect" and b"100-continue" in value.lower()
               for name, value in scope["headers"])


async def _pump(receive: Receive, writer: asyncio.StreamWriter) -> bool:
    """The request body, chunked; False if the client went away first."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            writer.close()  # the owner sees its client go, as it would directly
            return False
        body = message.get("body", b"")
        if body:
            writer.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
            await writer.drain()
        if not message.get("more_body"):
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, list[tuple[bytes, bytes]]]:
    status_line = await reader.readline()
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise OwnerUnavailable("no answer")
    headers: list[tuple[bytes, bytes]] = []
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            break
        if not line:
            raise OwnerUnavailable("answer cut short")
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return int(parts[1]), headers


async def _body(reader: asyncio.StreamReader, headers: list[tuple[bytes, bytes]],
                bodiless: bool):
    """The answer's body in pieces; the last piece is followed by a None when the
    framing let the connection be reused."""
    if bodiless:
        yield None
        return
    length = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"x", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                yield None
                return
            yield await reader.readexactly(size)
            await reader.readline()
    elif length is not None:
        while length > 0:
            piece = await reader.read(min(length, READ_SIZE))
            if not piece:
                raise OwnerUnavailable("answer cut short")
            length -= len(piece)
            yield piece
        yield None
    else:
        while piece := await reader.read(READ_SIZE):
            yield piece


# Given a 200 answer's headers, where to put its body for the cache, or None.
Keep = Callable[[list[tuple[bytes, bytes]]], Callable[[bytes], None] | None]


async def relay(upstream: Upstream, scope: Scope, receive: Receive, send: Send,
                keep: Keep | None = None) -> int:
    """Send the request to the owner and its answer to the client; returns the
    status. ``keep`` sees the headers of a 200 answer; if it names a store, the
    body is read whole, sent, then stored (the cache). OwnerUnavailable before anything was
    sent; a failure after that cuts the answer (the client sees it short)."""
    chunked = _has_body(scope)
    reusable = False
    started = False
    headers: list[tuple[bytes, bytes]] = []
    pump: asyncio.Task[bool] | None = None
    if chunked:  # a body is sent once: on a new connection, never retried
        reader, writer = await upstream.open()
    else:
        reader, writer, status, headers = await upstream.ask(_request_head(scope, False))
    try:
        if chunked:
            writer.write(_request_head(scope, chunked))
            # With Expect: 100-continue the body waits for the owner's 100, so that
            # a refusal (401) still goes out before the client sends its body.
            if not _expects_continue(scope):
                pump = asyncio.create_task(_pump(receive, writer))
            status, headers = await _read_head(reader)
            if status == 100:
                if pump is None:
                    pump = asyncio.create_task(_pump(receive, writer))
                status, headers = await _read_head(reader)
        out = [(name, value) for name, value in headers
               if name not in HOP_BY_HOP and name != BOARD]
        bodiless = scope["method"] == "HEAD" or status in (204, 304) or status < 200
        pieces = _body(reader, headers, bodiless)
        store = keep(headers) if keep is not None and status == 200 else None
        if store is not None:
            parts = [piece async for piece in pieces if piece is not None]
            body = b"".join(parts)
            reusable = True
            started = True
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": body})
            store(body)
            return status
        started = True
        await send({"type": "http.response.start", "status": status, "headers": out})
        async for piece in pieces:
            if piece is None:
                reusable = True
                break
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return status
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        if started:
            raise
        raise OwnerUnavailable(str(exc)) from None
    finally:
        if chunked and pump is None:
            reusable = False  # the body was never sent
        if pump is not None:
            if not pump.done():
                pump.cancel()
                reusable = False
            with contextlib.suppress(BaseException):
                reusable = reusable and await pump
        if reusable and not any(n == b"connection" and v.lower() == b"close"
                                for n, v in headers):
            upstream.release(reader, writer)
        else:
            writer.close()


async def post(upstream: Upstream, target: str, body: bytes) -> int:
    """A small POST of the front's own to the owner (its cache hits); the status."""
    head = (b"POST %s HTTP/1.1\r\nhost: owner\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % (target.encode(), len(body)) + body)
    reader, writer, status, headers = await upstream.ask(head)
    try:
        async for piece in _body(reader, headers, status in (204, 304) or status < 200):
            if piece is None:
                upstream.release(reader, writer)
                return status
        writer.close()
        return status
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        writer.close()
        raise OwnerUnavailable(str(exc)) from None
