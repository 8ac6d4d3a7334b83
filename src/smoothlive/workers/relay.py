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
import socket
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
MAX_LINE = 64 * 1024  # a status or header line of the owner's answer
IDLE_CONNECTIONS = 64
CLIENT_GONE = 499  # the status relay() returns when the client left mid-body (as nginx logs it)


class OwnerUnavailable(Exception):
    """The owner's socket refused or dropped the exchange before an answer."""


class Connection:
    """One connection to the owner, on a plain non-blocking socket.

    Not asyncio's streams: when the owner answers early (401, a body too
    large) and closes, the next write fails, and a stream transport would
    then close itself and drop the answer still unread. Here a failed write
    leaves the socket open for the answer to be read."""

    __slots__ = ("_buffer", "_loop", "closed", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self.closed = False

    @classmethod
    async def open(cls, path: str) -> Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, path)
        except OSError:
            sock.close()
            raise
        return cls(sock)

    async def write(self, *parts: bytes) -> None:
        for part in parts:
            await self._loop.sock_sendall(self.sock, part)

    async def _fill(self) -> bool:
        data = await self._loop.sock_recv(self.sock, READ_SIZE)
        self._buffer += data
        return bool(data)

    async def readline(self) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > MAX_LINE:
                raise ValueError("line too long")
            if not await self._fill():
                line, self._buffer = bytes(self._buffer), bytearray()
                return line

    async def readexactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not await self._fill():
                raise asyncio.IncompleteReadError(bytes(self._buffer), size)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; b"" at the end."""
        if not self._buffer:
            data = await self._loop.sock_recv(self.sock, min(size, READ_SIZE))
            return data
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()


class Upstream:
    """Kept-alive connections to the owner's Unix socket."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._idle: list[Connection] = []

    async def open(self) -> Connection:
        """A new connection."""
        try:
            return await Connection.open(self.path)
        except OSError as exc:
            raise OwnerUnavailable(str(exc)) from None

    async def ask(self, head: bytes) -> tuple[Connection, int, list[tuple[bytes, bytes]]]:
        """Send a request without a body and read the head of the answer, on a
        kept-alive connection if there is one; if the owner had closed that one
        meanwhile, once more on a new connection."""
        while self._idle:
            connection = self._idle.pop()
            try:
                await connection.write(head)
                status, headers = await asyncio.wait_for(_read_head(connection), HEAD_TIMEOUT)
                return connection, status, headers
            except (OSError, OwnerUnavailable, ValueError):
                connection.close()  # closed by the owner while idle: the next one
        connection = await self.open()
        try:
            await connection.write(head)
            status, headers = await asyncio.wait_for(_read_head(connection), HEAD_TIMEOUT)
        except (OSError, ValueError) as exc:  # TimeoutError is an OSError
            connection.close()
            raise OwnerUnavailable(str(exc) or "no answer") from None
        except OwnerUnavailable:
            connection.close()
            raise
        return connection, status, headers

    def release(self, connection: Connection) -> None:
        if len(self._idle) < IDLE_CONNECTIONS and not connection.closed:
            self._idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
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


SENT, GONE, REFUSED = "sent", "gone", "refused"


async def _pump(receive: Receive, connection: Connection) -> str:
    """The request body, chunked: SENT; GONE if the client went away first;
    REFUSED if the owner stopped reading (it answers, or has answered)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # The owner sees its client go, as it would directly.
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
            return GONE
        body = message.get("body", b"")
        try:
            if body:
                await connection.write(b"%x\r\n" % len(body), body, b"\r\n")
            if not message.get("more_body"):
                await connection.write(b"0\r\n\r\n")
                return SENT
        except OSError:
            return REFUSED


async def _read_head(reader: Connection) -> tuple[int, list[tuple[bytes, bytes]]]:
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


async def _body(reader: Connection, headers: list[tuple[bytes, bytes]],
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
    pump: asyncio.Task[str] | None = None
    if chunked:  # a body is sent once: on a new connection, never retried
        reader = await upstream.open()
    else:
        reader, status, headers = await upstream.ask(_request_head(scope, False))
    try:
        if chunked:
            await reader.write(_request_head(scope, chunked))
            # With Expect: 100-continue the body waits for the owner's 100, so that
            # a refusal (401) still goes out before the client sends its body.
            if not _expects_continue(scope):
                pump = asyncio.create_task(_pump(receive, reader))
            status, headers = await _read_head(reader)
            if status == 100:
                if pump is None:
                    pump = asyncio.create_task(_pump(receive, reader))
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
        if pump is not None and pump.done() and not pump.cancelled() \
                and pump.exception() is None and pump.result() == GONE:
            return CLIENT_GONE  # nobody to answer

        raise OwnerUnavailable(str(exc)) from None
    finally:
        if chunked and pump is None:
            reusable = False  # the body was never sent
        if pump is not None:
            if not pump.done():
                pump.cancel()
                reusable = False
            with contextlib.suppress(BaseException):
                reusable = reusable and await pump == SENT
        if reusable and not any(n == b"connection" and v.lower() == b"close"
                                for n, v in headers):
            upstream.release(reader)
        else:
            reader.close()


async def post(upstream: Upstream, target: str, body: bytes) -> int:
    """A small POST of the front's own to the owner (its cache hits); the status."""
    head = (b"POST %s HTTP/1.1\r\nhost: owner\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % (target.encode(), len(body)) + body)
    connection, status, headers = await upstream.ask(head)
    try:
        async for piece in _body(connection, headers, status in (204, 304) or status < 200):
            if piece is None:
                upstream.release(connection)
                return status
        connection.close()
        return status
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        connection.close()
        raise OwnerUnavailable(str(exc)) from None
