"""A small HTTP/1.1 server: ASGI for the application, plus answers written
where the request is parsed.

The front processes (workers/front.py) answer most requests from a cache.
Through an ASGI server each of those costs a task and two messages, and
through granian also hand-overs between its Rust threads and Python, which
on some machines cost more than the answer; and a body handed over as
bytes is copied into the kernel once more than a file sent with
sendfile(2). Here a ``quick`` function sees each GET or HEAD as soon as it is
parsed and may return the whole answer, written at once: its head, then
its body from memory or, when it is kept in a file (a memfd), with
sendfile. Everything else runs the ASGI application: request bodies
stream (an encoder's POST lasts the event), with ``Expect: 100-continue``
honoured when the application first asks for the body, and answers stream
with flow control.

Limits, as the owner's granian server applies them: a head must arrive
within the header timeout (from the opening of the connection and from the
end of each answer, so also the idle timeout of kept-alive connections), a
head larger than ``max_header_kb`` gets 431, at most ``max_connections`` are
held (more wait in the listen queue), and TCP_USER_TIMEOUT ends a connection whose
answer stays unread for the send timeout. HTTP/1.1 (and 1.0) only: no
upgrades, no HTTP/2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import unquote

import httptools

from smoothlive.http.messages import Message, Scope

log = logging.getLogger("smoothlive.http")

READ_HIGH = 1 << 20  # bytes of request body held before reading pauses
QUEUE_HIGH = 16  # pipelined requests held before reading pauses
SWEEP_EVERY = 1.0  # seconds between checks of the header timeout
STOP_GRACE = 5.0  # seconds requests in progress get to finish at shutdown
CORK = getattr(socket, "TCP_CORK", None)  # Linux
JOIN_BELOW = 16 << 10  # bytes of body below which head and body are written as one
CORK_FROM = 256 << 10  # bytes of body from which a file answer is corked


@dataclass(slots=True)
class Quick:
    """A whole answer, written without the application: ``head`` is the status
    line and headers up to the blank line; the body is ``body``, or ``size``
    bytes of the file ``fd`` from its start."""

    head: bytes
    body: bytes = b""
    fd: int = -1
    size: int = 0


# (method, target as sent, headers) -> a Quick answer, or None for the application.
QuickFn = Callable[[bytes, bytes, list[tuple[bytes, bytes]]], "Quick | None"]

_STATUS = {100: b"Continue", 200: b"OK", 204: b"No Content", 206: b"Partial Content",
           301: b"Moved Permanently", 302: b"Found", 304: b"Not Modified",
           400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
           405: b"Method Not Allowed", 408: b"Request Timeout", 409: b"Conflict",
           411: b"Length Required", 412: b"Precondition Failed", 413: b"Content Too Large",
           416: b"Range Not Satisfiable", 431: b"Request Header Fields Too Large",
           499: b"Client Closed Request", 500: b"Internal Server Error",
           502: b"Bad Gateway", 503: b"Service Unavailable", 507: b"Insufficient Storage"}


def status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _STATUS.get(status, b"Status"))


_DATE = [0, b""]  # the second and its Date value, made once a second


def http_date() -> bytes:
    """The Date header's value for now (RFC 9110: an origin with a clock sends it)."""
    second = int(time.time())
    if second != _DATE[0]:
        _DATE[0], _DATE[1] = second, formatdate(second, usegmt=True).encode()
    return _DATE[1]


def _plain(status: int, text: bytes) -> bytes:
    """A complete answer of the server's own, after which the connection closes."""
    return (status_line(status) + b"content-type: text/plain\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % len(text) + text)


class _Request:
    __slots__ = ("body_done", "buffered", "chunked", "chunks", "complete", "continued",
                 "event", "expect", "finished", "gone", "has_body", "head_only", "headers",
                 "keep_alive", "method", "out", "sent_head", "status", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.keep_alive = True
        self.has_body = False
        self.expect = False
        self.continued = False
        self.chunks: list[bytes] = []
        self.buffered = 0  # bytes in chunks
        self.complete = False  # the whole request (its body) has been parsed
        self.body_done = False  # the application was given the end of the body
        self.gone = False  # the connection was lost
        self.event = asyncio.Event()
        self.status = 0
        self.out: list[tuple[bytes, bytes]] = []
        self.sent_head = False
        self.chunked = False
        self.head_only = False
        self.finished = False


class _Protocol(asyncio.Protocol):
    """One client connection: requests answered in the order they came."""

    def __init__(self, server: H1Server) -> None:
        self.server = server
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.fd = -1  # the socket, for sendfile; -1 over TLS
        self.sock: socket.socket | None = None  # the transport's, for TCP_CORK
        self.corked = False
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self.parsing: _Request | None = None
        self.current: _Request | None = None
        self.queue: deque[_Request] = deque()
        self.head_bytes = 0
        self.too_large = False
        self.idle_since: float | None = self.loop.time()
        self.read_paused = False
        # Set while answers may be written: the transport's buffer is below its
        # high-water mark and no sendfile is waiting for the socket.
        self.writable = asyncio.Event()
        self.writable.set()
        self.paused = False  # by the transport (pause_writing)
        self.sending: tuple[int, int, int] | None = None  # (file, offset, end) not sent yet
        self.watch = -1  # a duplicate of the socket, watched for room while sending
        self.closed = False

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        server.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self.fd = sock.fileno()
            self.sock = sock if CORK is not None else None
            if server.send_timeout > 0 and hasattr(socket, "TCP_USER_TIMEOUT"):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                                    round(server.send_timeout * 1000))
        peer = transport.get_extra_info("peername")
        self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        here = transport.get_extra_info("sockname")
        self.local = (here[0], here[1]) if isinstance(here, tuple) else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self.server.ended()
        for request in (self.current, *self.queue):
            if request is not None:
                request.gone = True
                request.event.set()
        self.queue.clear()
        self._stop_sending()
        self.writable.set()

    def pause_writing(self) -> None:
        self.paused = True
        self.writable.clear()

    def resume_writing(self) -> None:
        self.paused = False
        if self.sending is None:
            self.writable.set()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, b"upgrades are not supported\n")
            return
        except httptools.HttpParserError:
            self._refuse(400, b"malformed request\n")
            return
        if self.too_large:
            self._refuse(431, b"request head too large\n")

    def _refuse(self, status: int, text: bytes) -> None:
        """The server's own answer to a request it cannot parse; the connection ends."""
        if self.closed:
            return
        if self.current is None and not self.queue:
            self._last_words(status, text)
        log.info("%d %s from %s", status, text.decode().strip(), self.client)
        self.close()

    def _last_words(self, status: int, text: bytes) -> None:
        """The server's own answer before it closes, unless a file answer is still
        going out (then the connection just closes: the client sees it short)."""
        if self.sending is None and not self.closed:
            self.transport.write(_plain(status, text))

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.parsing = _Request()
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.head_bytes += len(url)
        if self.head_bytes > self.server.max_head:
            self.too_large = True
            return
        self.parsing.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.server.max_head:
            self.too_large = True
            return
        name = name.lower()
        request = self.parsing
        request.headers.append((name, value))
        if name == b"content-length" or name == b"transfer-encoding":
            request.has_body = request.has_body or value.strip() != b"0"
        elif name == b"expect" and value.lower() == b"100-continue":
            request.expect = True

    def on_headers_complete(self) -> None:
        if self.too_large:
            return
        request = self.parsing
        request.method = self.parser.get_method()
        request.keep_alive = self.parser.should_keep_alive()
        self.idle_since = None
        if request.has_body or request.method not in (b"GET", b"HEAD"):
            self._dispatch(request)  # its body streams to the application

    def on_body(self, body: bytes) -> None:
        request = self.parsing
        request.chunks.append(body)
        request.buffered += len(body)
        request.event.set()
        if not self.read_paused and request.buffered > READ_HIGH:
            self.read_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.too_large:
            return
        request = self.parsing
        request.complete = True
        request.event.set()
        if request.has_body or request.method not in (b"GET", b"HEAD"):
            return  # dispatched at its head
        # Quick answers are written without waiting: only while the client reads
        # them. Otherwise the request takes the ASGI path, whose answers wait for
        # the buffer to drain and whose queue pauses reading (a client that
        # pipelines requests and never reads is held to a bounded buffer).
        if self.current is None and not self.queue and self.writable.is_set() \
                and self.server.quick is not None:
            answer = self.server.quick(request.method, request.url, request.headers)
            if answer is not None:
                self._write_quick(answer, request.method == b"HEAD")
                if not request.keep_alive:
                    self.close()
                else:
                    self.idle_since = self.loop.time()
                return
        self._dispatch(request)

    # -- answers ------------------------------------------------------------------------------

    def _write_quick(self, answer: Quick, head_only: bool) -> None:
        transport = self.transport
        if head_only:
            transport.write(answer.head)
            return
        if answer.fd < 0:
            self._write_head_and_body(answer.head, answer.body)
            return
        if self.fd >= 0 and transport.get_write_buffer_size() == 0:
            # Large bodies corked: the head and the pages leave in full segments, as
            # with nginx's tcp_nopush (BENCHMARKS.md: a fifth more 750 KB answers a
            # second; for 100 KB the two more system calls cost more than it gains).
            corked = answer.size >= CORK_FROM
            if corked:
                self._cork(True)
            transport.write(answer.head)
            if transport.get_write_buffer_size() == 0:
                self._send_file(answer.fd, 0, answer.size, owned=False)
                return
            if corked:
                self._cork(False)
            transport.write(os.pread(answer.fd, answer.size, 0))
        else:  # TLS, or answers still queued: the body follows them from memory
            transport.write(answer.head)
            transport.write(os.pread(answer.fd, answer.size, 0))

    def _write_head_and_body(self, head: bytes, body: bytes) -> None:
        """One write for a small answer (one segment); two for a large one, whose
        body is not copied to be joined."""
        if len(body) < JOIN_BELOW:
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            self.transport.write(body)

    def _cork(self, on: bool) -> None:
        if self.sock is not None and self.corked != on:
            self.corked = on
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, CORK, 1 if on else 0)

    def _send_file(self, fd: int, offset: int, end: int, owned: bool) -> None:
        """sendfile(2) from ``fd`` until ``end``. When the socket is full the rest
        goes when it has room (a duplicate of the socket is watched: the transport
        owns its descriptor), and nothing else is written meanwhile. ``owned``:
        ``fd`` is this connection's duplicate, closed when done (the cache may
        close its own while the rest waits)."""
        while offset < end:
            try:
                sent = os.sendfile(self.fd, fd, offset, end - offset)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # the client is gone: connection_lost follows
                sent = 0
            if sent == 0:
                if owned and (self.sending is None or self.sending[0] != fd):
                    os.close(fd)
                self._stop_sending()
                self.close()
                return
            offset += sent
        if offset >= end:
            self._cork(False)
            if self.sending is not None:
                self._stop_sending()
                if not self.paused:
                    self.writable.set()
                self._answered()
            elif owned:
                os.close(fd)
            return
        if not owned:
            fd = os.dup(fd)
        if self.sending is None:
            self.watch = os.dup(self.fd)
            self.loop.add_writer(self.watch, self._more_file)
            self.writable.clear()
        self.sending = (fd, offset, end)

    def _more_file(self) -> None:
        if self.sending is not None:
            self._send_file(*self.sending, owned=True)

    def _stop_sending(self) -> None:
        """Ends a file answer waiting for room: its descriptors closed."""
        if self.sending is not None:
            os.close(self.sending[0])
            self.sending = None
        if self.watch >= 0:
            self.loop.remove_writer(self.watch)
            os.close(self.watch)
            self.watch = -1

    def _answered(self) -> None:
        """A file answer finished after waiting: requests that came meanwhile go on."""
        if self.current is None and self.queue:
            self._start(self.queue.popleft())

    def _dispatch(self, request: _Request) -> None:
        if self.current is None:
            self._start(request)
            return
        self.queue.append(request)
        if len(self.queue) > QUEUE_HIGH and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _start(self, request: _Request) -> None:
        self.current = request
        target = request.url
        path, _, query = target.partition(b"?")
        path = path.partition(b"#")[0]
        scope: Scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": self.parser.get_http_version(), "method": request.method.decode(),
            "scheme": "https" if self.server.ssl is not None else "http",
            "path": unquote(path.decode("latin-1")), "raw_path": path, "query_string": query,
            "root_path": "", "headers": request.headers, "client": self.client,
            "server": self.local,
        }
        request.head_only = request.method == b"HEAD"
        self.loop.create_task(self._run(request, scope))

    async def _run(self, request: _Request, scope: Scope) -> None:
        async def receive() -> Message:
            return await self._receive(request)

        async def send(message: Message) -> None:
            await self._send(request, message)

        try:
            await self.server.app(scope, receive, send)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not request.sent_head:
                self._last_words(500, b"internal error\n")
            self.close()
        if not request.finished and not self.closed:
            if not request.sent_head:
                self._last_words(500, b"no answer\n")
            self.close()
        self._done(request)

    def _done(self, request: _Request) -> None:
        self.current = None
        if self.closed:
            return
        if not request.keep_alive or not request.complete or \
                (request.has_body and not request.body_done):
            self.close()  # the rest of the body is not read: the connection cannot go on
            return
        if self.queue:
            self._start(self.queue.popleft())
        else:
            self.idle_since = self.loop.time()
        if self.read_paused and len(self.queue) <= QUEUE_HIGH:
            self.read_paused = False
            self.transport.resume_reading()

    async def _receive(self, request: _Request) -> Message:
        if request.gone:
            return {"type": "http.disconnect"}
        if request.body_done:  # as ASGI says: then only the disconnect
            while not request.gone:
                request.event.clear()
                await request.event.wait()
            return {"type": "http.disconnect"}
        if request.expect and not request.continued and not request.complete \
                and not request.sent_head:
            if not self.writable.is_set():  # an earlier answer is still going out
                await self.writable.wait()
                if request.gone or self.closed:
                    return {"type": "http.disconnect"}
            request.continued = True
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while not request.chunks and not request.complete and not request.gone:
            request.event.clear()
            await request.event.wait()
        if request.gone and not request.chunks:
            return {"type": "http.disconnect"}
        body = b"".join(request.chunks) if len(request.chunks) != 1 else request.chunks[0]
        request.chunks.clear()
        request.buffered = 0
        if self.read_paused and request is self.parsing and len(self.queue) <= QUEUE_HIGH:
            self.read_paused = False
            self.transport.resume_reading()
        more = not request.complete
        request.body_done = not more
        return {"type": "http.request", "body": body, "more_body": more}

    async def _send(self, request: _Request, message: Message) -> None:
        if request.gone or self.closed or request.finished:
            return
        kind = message["type"]
        if kind == "http.response.start":
            request.status = message["status"]
            request.out = list(message.get("headers", ()))
            return
        if kind != "http.response.body":
            return
        if not self.writable.is_set():  # a file answer before this one is still going out
            await self.writable.wait()
            if request.gone or self.closed:
                return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        write = self.transport.write
        if not request.sent_head:
            request.sent_head = True
            status = request.status
            lines = [status_line(status)]
            length = False
            for name, value in request.out:
                name = name.lower()
                if name == b"content-length":
                    length = True
                elif name in (b"connection", b"transfer-encoding"):
                    continue
                lines.append(b"%s: %s\r\n" % (name, value))
            bodiless = request.head_only or status in (204, 304) or status < 200
            if not length and not bodiless and status >= 200:
                if more:
                    request.chunked = True
                    lines.append(b"transfer-encoding: chunked\r\n")
                else:
                    lines.append(b"content-length: %d\r\n" % len(body))
            if not request.keep_alive or (request.has_body and not request.complete):
                # The body is not all read: this connection ends with this answer.
                request.keep_alive = False
                lines.append(b"connection: close\r\n")
            lines.append(b"\r\n")
            head = b"".join(lines)
            if bodiless:
                write(head)
                body = b""
            elif not request.chunked:
                self._write_head_and_body(head, body)
                body = b""
            else:
                write(head)
        if body and not request.head_only:
            if request.chunked:
                write(b"%x\r\n" % len(body))
                write(body)
                write(b"\r\n")
            else:
                write(body)
        if not more:
            request.finished = True
            if request.chunked:
                write(b"0\r\n\r\n")
        if not self.writable.is_set():
            await self.writable.wait()


class H1Server:
    """Serves ``app`` (ASGI, with its lifespan) and ``quick`` answers."""

    def __init__(self, app, *, quick: QuickFn | None = None, header_timeout: float = 30.0,
                 max_header_kb: int = 32, max_connections: int = 8192,
                 send_timeout: float = 60.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.quick = quick
        self.header_timeout = header_timeout
        self.max_head = max_header_kb << 10
        self.max_connections = max_connections
        self.send_timeout = send_timeout
        self.ssl = ssl_context
        self.connections: set[_Protocol] = set()
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._stopping: asyncio.Event | None = None
        self._listening: socket.socket | None = None
        self._accepting = False  # serving (not stopping)
        self._reading = True  # the listening socket is watched
        self._opening = 0  # accepted, transport not made yet

    async def serve(self, sock: socket.socket) -> None:
        """Serve on the listening ``sock`` until ``stop``."""
        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._listening = sock
        lifespan = _Lifespan(self.app)
        await lifespan.startup()
        self._accepting = True
        self.loop.add_reader(sock.fileno(), self._accept)
        sweeper = self.loop.create_task(self._sweep())
        try:
            await self._stopping.wait()
        finally:
            sweeper.cancel()
            self._pause_accepting()
            self._accepting = False
            for connection in list(self.connections):
                if connection.current is None:
                    connection.close()
            deadline = self.loop.time() + STOP_GRACE
            while any(c.current is not None for c in self.connections) \
                    and self.loop.time() < deadline:
                await asyncio.sleep(0.05)
            for connection in list(self.connections):
                if connection.transport is not None:
                    connection.transport.abort()
            await lifespan.shutdown()

    def _accept(self) -> None:
        """New connections, as many as the limit lets in; the others stay in the
        listen queue (accepting pauses until a connection ends)."""
        while len(self.connections) + self._opening < self.max_connections:
            try:
                client, _ = self._listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: wait for a connection to end
                log.warning("accept failed: %s", exc)
                break
            client.setblocking(False)
            self._opening += 1
            self.loop.create_task(self._open(client))
        self._pause_accepting()

    async def _open(self, client: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(
                lambda: _Protocol(self), client, ssl=self.ssl,
                ssl_handshake_timeout=self.header_timeout if self.ssl else None)
        except Exception as exc:  # a TLS handshake that failed, a client gone
            log.debug("connection not opened: %s", exc)
            client.close()
        finally:
            self._opening -= 1

    def _pause_accepting(self) -> None:
        if self._reading:
            self._reading = False
            self.loop.remove_reader(self._listening.fileno())

    def ended(self) -> None:
        """A connection ended: accept again if the limit had paused it."""
        if self._accepting and not self._reading and \
                len(self.connections) + self._opening < self.max_connections:
            self._reading = True
            self.loop.add_reader(self._listening.fileno(), self._accept)

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def _sweep(self) -> None:
        """Closes connections whose head has not come within the header timeout."""
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            limit = self.loop.time() - self.header_timeout
            for connection in list(self.connections):
                since = connection.idle_since
                if since is not None and since < limit and not connection.paused \
                        and connection.sending is None:  # not while an answer goes out
                    connection.close()


class _Lifespan:
    """The ASGI lifespan of the application: started before serving, ended after."""

    def __init__(self, app) -> None:
        self.app = app
        self.task: asyncio.Task[None] | None = None
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.started = asyncio.Event()
        self.ended = asyncio.Event()

    async def startup(self) -> None:
        async def send(message: Message) -> None:
            if message["type"].startswith("lifespan.startup"):
                self.started.set()
            elif message["type"].startswith("lifespan.shutdown"):
                self.ended.set()

        async def run() -> None:
            try:
                await self.app({"type": "lifespan", "asgi": {"version": "3.0"}},
                               self.inbox.get, send)
            except Exception:
                log.exception("lifespan of the application failed")
            finally:
                self.started.set()
                self.ended.set()

        self.task = asyncio.get_running_loop().create_task(run())
        await self.inbox.put({"type": "lifespan.startup"})
        await self.started.wait()

    async def shutdown(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.ended.wait(), STOP_GRACE)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host``:``port`` beside the owner's (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock
