"""A front process: answers players from its cache, relays the rest to the owner.

What a front may keep is what the owner's answers say:

* a 200 whose Cache-Control says ``immutable`` (a fragment that names its
  successors, an HLS or DASH segment, an archived fragment) until the cache
  is full (least recently used goes first), and a live one only while its
  point's epoch on the board holds (a new presentation reuses URLs);
* a 200 that carries the owner's ``x-smoothlive-board`` token (a live
  manifest, playlist or MPD) while the point's slot on the change board
  still holds that token and its max-age has not passed.

Everything else (ingest, management, a fragment not complete yet, a 412,
Range requests) goes to the owner. Answers vary only by Accept-Encoding,
which is part of the key; If-None-Match is answered from the kept ETag.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import re
import signal
import ssl
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from smoothlive.config import SETTINGS
from smoothlive.http.h1 import H1Server, Quick, http_date, listening_socket, status_line
from smoothlive.http.messages import Receive, Scope, Send, respond
from smoothlive.workers.board import BoardReader
from smoothlive.workers.owner import HITS_PATH
from smoothlive.workers.relay import (
    BOARD,
    HOP_BY_HOP,
    OwnerUnavailable,
    Upstream,
    post,
    relay,
)

log = logging.getLogger("smoothlive.front")

HITS_EVERY = 1.0  # seconds between reports of cache hits to the owner
MAX_ENTRY = 16 << 20  # bytes: larger answers are relayed, not kept
# Bodies from this size are kept in a memory file of their own and sent with
# sendfile(2): one copy into the kernel fewer than writing them from Python.
FILE_ENTRY = 16 << 10
MAX_FILES = 4096  # memory files held at once (each a descriptor)
_MAX_AGE = re.compile(rb"max-age=(\d+)")
FOREVER = float("inf")
# The owner's settings a front applies too (the owner passes them: Fronts in owner.py).
LIMITS = ("header_timeout", "max_header_kb", "max_connections", "send_timeout")


@dataclass(slots=True)
class Entry:
    headers: list[tuple[bytes, bytes]]  # as sent, with content-length
    body: bytes  # b"" when the body is kept in ``fd``
    etag: bytes | None
    slot: int  # -1: immutable
    value: int
    expires: float  # monotonic
    size: int = 0
    fd: int = -1  # a memory file holding the body, sent with sendfile
    head: bytes = b""  # the 200 answer's status line and headers but Date, as written

    def content(self) -> bytes:
        return self.body if self.fd < 0 else os.pread(self.fd, self.size, 0)

    def unchanged(self, etag_asked: bytes | None) -> bool:
        """The client's If-None-Match names this answer: a 304."""
        return etag_asked is not None and self.etag is not None and etag_asked == self.etag

    def not_modified_headers(self) -> list[tuple[bytes, bytes]]:
        return [(n, v) for n, v in self.headers if n != b"content-length"]


class FrontCache:
    """Answers by (path, query, gzip accepted), bounded in bytes."""

    def __init__(self, limit: int, board: BoardReader) -> None:
        self.limit = limit
        self.board = board
        self.size = 0
        self._entries: OrderedDict[tuple[bytes, bytes, bool], Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.files = 0

    def get(self, key: tuple[bytes, bytes, bool], now: float) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.slot >= 0 and (entry.expires < now or
                                self.board.value(entry.slot) != entry.value):
            self._drop(key)
            return None
        if entry.expires == FOREVER:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[bytes, bytes, bool], entry: Entry) -> None:
        size = len(entry.body)
        if size > MAX_ENTRY or size > self.limit:
            return
        if key in self._entries:
            self._drop(key)
        entry.size = size
        entry.head = b"HTTP/1.1 200 OK\r\n" + b"".join(
            b"%s: %s\r\n" % pair for pair in entry.headers)
        if size >= FILE_ENTRY and self.files < MAX_FILES:
            entry.fd = _memory_file(entry.body)
            if entry.fd >= 0:
                entry.body = b""
                self.files += 1
        self._entries[key] = entry
        self.size += size
        while self.size > self.limit:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple[bytes, bytes, bool]) -> None:
        entry = self._entries.pop(key)
        self.size -= entry.size
        if entry.fd >= 0:
            os.close(entry.fd)
            self.files -= 1

    def __len__(self) -> int:
        return len(self._entries)


def _memory_file(body: bytes) -> int:
    """A memory file (memfd) holding ``body``, or -1 where there is none."""
    try:
        fd = os.memfd_create("front-entry", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        return -1
    try:
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        os.close(fd)
        return -1
    return fd


def _asked(headers: list[tuple[bytes, bytes]]) -> tuple[bool, bool, bytes | None]:
    """(gzip accepted, a Range asked, the If-None-Match) of a request's headers
    (names lower-case, as ASGI and http/h1.py give them)."""
    gzip = ranged = False
    etag_asked = None
    for name, value in headers:
        if name == b"accept-encoding":
            gzip = b"gzip" in value
        elif name == b"range":
            ranged = True
        elif name == b"if-none-match":
            etag_asked = value
    return gzip, ranged, etag_asked


def kept_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """What a kept answer is sent with: the owner's headers but the hop-by-hop ones,
    the board token and Date (each answer from the cache gets its own), and
    ``x-cache: hit`` (as CDNs say it: answered by a front)."""
    return [*((n, v) for n, v in headers if n not in HOP_BY_HOP and n != BOARD
              and n != b"date"), (b"x-cache", b"hit")]


def keepable(headers: list[tuple[bytes, bytes]], now: float) -> tuple[int, int, float] | None:
    """(slot, value, expires) if the owner's answer may be kept; slot -1 is immutable.

    A board token is the owner's word to its fronts and wins over what
    Cache-Control tells players (an HLS playlist may say ``no-store`` to
    players; a front is part of the origin): it is kept while the board holds
    the token, and never longer than its max-age, or a second without one."""
    control = b""
    token = None
    for name, value in headers:
        if name == b"cache-control":
            control = value
        elif name == b"x-smoothlive-board":
            token = value
        elif name == b"vary" and value.lower() not in (b"accept-encoding", b"origin"):
            return None
    if token is None:
        if b"no-store" in control or b"private" in control or b"no-cache" in control:
            return None
        return (-1, 0, FOREVER) if b"immutable" in control else None
    parsed = BoardReader.parse(token)
    if parsed is None:
        return None
    if b"immutable" in control:  # a live fragment: as long as its point's epoch holds
        return parsed[0], parsed[1], FOREVER
    age = _MAX_AGE.search(control)
    return parsed[0], parsed[1], now + (int(age.group(1)) if age else 1)


class FrontApp:
    """The ASGI application of a front process."""

    def __init__(self, upstream: Upstream, cache: FrontCache) -> None:
        self.upstream = upstream
        self.cache = cache
        # Cache hits by path since the last report: [count, seconds in all].
        self.hits: dict[str, list] = {}
        self._reporter: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        method = scope["method"]
        key = None
        if method in ("GET", "HEAD"):
            gzip, ranged, etag_asked = _asked(scope["headers"])
            if not ranged:
                key = (scope.get("raw_path") or scope["path"].encode(),
                       scope.get("query_string") or b"", gzip)
                now = time.monotonic()
                entry = self.cache.get(key, now)
                if entry is not None:
                    self.cache.hits += 1
                    await self._send_kept(entry, send, method == "HEAD", etag_asked)
                    self._count_hit(scope["path"], time.monotonic() - now)
                    return
                self.cache.misses += 1
        keep = None
        if key is not None and method == "GET":
            def keep(headers: list[tuple[bytes, bytes]]):
                rule = keepable(headers, time.monotonic())
                if rule is None:
                    return None
                sent = kept_headers(headers)
                etag = next((v for n, v in headers if n == b"etag"), None)

                def store(body: bytes) -> None:
                    self.cache.put(key, Entry(sent, body, etag, *rule))
                return store
        try:
            await relay(self.upstream, scope, receive, send, keep)
        except OwnerUnavailable as exc:
            log.warning("owner unavailable for %s %s: %s", method, scope["path"], exc)
            await respond(send, 502, b"origin owner unavailable\n", b"text/plain",
                          [(b"cache-control", b"no-store"), (b"retry-after", b"1")])

    def quick(self, method: bytes, target: bytes,
              headers: list[tuple[bytes, bytes]]) -> Quick | None:
        """A kept answer, written by the server itself (http/h1.py), or None for
        the ASGI path: the same lookup as ``__call__``'s, without a task."""
        gzip, ranged, etag_asked = _asked(headers)
        if ranged:
            return None
        path, _, query = target.partition(b"?")
        now = time.monotonic()
        entry = self.cache.get((path, query, gzip), now)
        if entry is None:
            return None
        self.cache.hits += 1
        # The writing that follows does not wait: the lookup is the request's time.
        self._count_hit(unquote(path.decode("latin-1")), time.monotonic() - now)
        date = b"date: " + http_date() + b"\r\n\r\n"
        if entry.unchanged(etag_asked):
            return Quick(status_line(304) + b"".join(
                b"%s: %s\r\n" % pair for pair in entry.not_modified_headers()) + date)
        return Quick(entry.head + date, entry.body, entry.fd, entry.size)

    def _count_hit(self, path: str, seconds: float) -> None:
        counted = self.hits.get(path)
        if counted is None:
            self.hits[path] = [1, seconds]
        else:
            counted[0] += 1
            counted[1] += seconds

    async def _send_kept(self, entry: Entry, send: Send, head: bool,
                         etag_asked: bytes | None) -> None:
        if entry.unchanged(etag_asked):
            await send({"type": "http.response.start", "status": 304, "headers": [
                *entry.not_modified_headers(), (b"date", http_date())]})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*entry.headers, (b"date", http_date())]})
        await send({"type": "http.response.body", "body": b"" if head else entry.content()})

    async def _report_hits(self) -> None:
        while True:
            await asyncio.sleep(HITS_EVERY)
            await self.report_hits()

    async def report_hits(self) -> None:
        """Tell the owner what was answered here, so that its metrics and statistics
        count every request; lost (and logged) if the owner cannot take it."""
        if not self.hits:
            return
        hits, self.hits = self.hits, {}
        try:
            status = await post(self.upstream, HITS_PATH, json.dumps(hits).encode())
        except OwnerUnavailable as exc:
            log.warning("cache hits not reported to the owner: %s", exc)
            return
        if status != 204:
            log.warning("cache hits not counted by the owner (%d)", status)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._reporter = asyncio.create_task(self._report_hits())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._reporter is not None:
                    self._reporter.cancel()
                await self.report_hits()
                self.upstream.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the owner dies, however it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def _serve(args: argparse.Namespace) -> None:
    # The owner's limits, applied here by the front's own server (http/h1.py):
    # a front holds its clients' connections and as many to the owner.
    from smoothlive.server import connection_limit

    app = FrontApp(Upstream(Path(args.owner_socket)),
                   FrontCache(args.cache_mb << 20, BoardReader(Path(args.board))))
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key or None)
    server = H1Server(app, quick=app.quick, header_timeout=args.header_timeout,
                      max_header_kb=args.max_header_kb,
                      max_connections=connection_limit(args.max_connections, 2),
                      send_timeout=args.send_timeout, ssl_context=context)
    loop = asyncio.get_running_loop()
    owner = os.getppid()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.stop)

    async def watch_owner() -> None:
        # Where PR_SET_PDEATHSIG is not available: the owner gone, stop.
        while os.getppid() == owner:
            await asyncio.sleep(1.0)
        server.stop()

    watcher = asyncio.create_task(watch_owner())
    sock = listening_socket(args.host, args.port)
    print("front ready", flush=True)
    try:
        await server.serve(sock)
    finally:
        watcher.cancel()
        sock.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m smoothlive.workers.front``: started by the owner, not by hand."""
    _die_with_parent()
    parser = argparse.ArgumentParser(prog="smoothlive-front")
    parser.add_argument("--owner-socket", required=True)
    parser.add_argument("--board", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert", default="")
    parser.add_argument("--tls-key", default="")
    parser.add_argument("--cache-mb", type=int, default=256)
    parser.add_argument("--log-level", default="info")
    for setting in SETTINGS:
        if setting.name in LIMITS:
            parser.add_argument(setting.flag, dest=setting.name, type=setting.type,
                                default=setting.default)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[front]: %(message)s")
    import uvloop

    uvloop.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
