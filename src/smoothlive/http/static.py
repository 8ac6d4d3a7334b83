"""The demo player page, its vendored players, and the clock players sync to.

Plain ASGI helpers that ``App.http`` calls for ``/web/...`` and ``/time``:

- ``serve_web`` sends a file of the package's ``web/`` directory (the player
  page, its script, and the dash.js / hls.js builds that ``make web`` copies
  into ``web/vendor/``). Anything that is not a plain file inside that
  directory is a 404: no ``..``, no absolute path, no NUL, no backslash, no
  percent sign left after the server's decoding (double encoding), no hidden
  file, no symlink out. Files go without passing through Python when the
  server offers it: ``http.response.pathsend`` (granian, the default server)
  or ``http.response.zerocopysend``; else (uvicorn) from an in-memory copy
  made once per file version (they are small).
- ``serve_time`` answers with the current UTC time in ISO 8601 with
  milliseconds, the form of dash.js's ``urn:mpeg:dash:utc:http-iso:2014``
  timing source, so players sync their clock with the origin and nothing else.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

from smoothlive.http.messages import Headers, Receive, Scope, Send, respond

WEB_ROOT = (Path(__file__).resolve().parent.parent / "web").resolve()

# Only these kinds of file are served; anything else in web/ is a 404.
CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".mjs": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".map": b"application/json; charset=utf-8",
    ".json": b"application/json; charset=utf-8",
    ".txt": b"text/plain; charset=utf-8",
    ".md": b"text/plain; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
}
# Files named like LICENSE (no extension), as the vendored players ship them.
PLAIN_NAMES = {"LICENSE", "COPYING", "NOTICE"}

VENDOR_CACHE = b"public, max-age=300"
PAGE_CACHE = b"no-cache"
PATHSEND = "http.response.pathsend"
ZEROCOPY = "http.response.zerocopysend"
TEXT = b"text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class _Entry:
    key: tuple[int, int, int]  # (inode, size, mtime_ns): the file version
    etag: bytes
    last_modified: bytes
    mtime: int  # whole seconds, for If-Modified-Since
    body: bytes | None


# path -> the last version served; bodies are kept only when read (no pathsend).
_cache: dict[Path, _Entry] = {}


def resolve_web_path(relative_path: str, root: Path = WEB_ROOT) -> Path | None:
    """The file ``relative_path`` names inside ``root``, or None if it may not be served."""
    if not relative_path or len(relative_path) > 512:
        return None
    if any(c in relative_path for c in ("\x00", "\\", "%")) or relative_path.startswith("/"):
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in relative_path):
        return None
    parts = relative_path.split("/")
    # No empty, '.', '..' or hidden segment ('.' covers all three with startswith).
    if any(not part or part.startswith(".") for part in parts):
        return None
    name = parts[-1]
    suffix = os.path.splitext(name)[1].lower()
    if suffix not in CONTENT_TYPES and name not in PLAIN_NAMES:
        return None
    candidate = root.joinpath(*parts)
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(root):
        return None
    return real


def content_type(path: Path) -> bytes:
    return CONTENT_TYPES.get(path.suffix.lower(), TEXT)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _not_modified(scope: Scope, entry: _Entry) -> bool:
    """RFC 9110 13.1.2/13.1.3: If-None-Match wins over If-Modified-Since."""
    inm = _header(scope, b"if-none-match")
    if inm is not None:
        if inm.strip() == "*":
            return True
        etag = entry.etag.decode()
        for tag in inm.split(","):
            tag = tag.strip()
            if tag.startswith("W/"):
                tag = tag[2:]
            if tag == etag:
                return True
        return False
    ims = _header(scope, b"if-modified-since")
    if ims is not None:
        try:
            since = parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        return entry.mtime <= since
    return False


def _entry_for(path: Path, st: os.stat_result) -> _Entry:
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    cached = _cache.get(path)
    if cached is not None and cached.key == key:
        return cached
    entry = _Entry(
        key=key,
        etag=f'"{st.st_size:x}-{st.st_mtime_ns:x}"'.encode(),
        last_modified=formatdate(st.st_mtime, usegmt=True).encode(),
        mtime=int(st.st_mtime),
        body=None,
    )
    _cache[path] = entry
    return entry


async def serve_web(scope: Scope, receive: Receive, send: Send, relative_path: str) -> None:
    """Send ``web/<relative_path>`` (GET or HEAD), or 404/405."""
    del receive  # GET and HEAD have no body worth reading
    method = scope.get("method", "GET")
    head = method == "HEAD"
    if method not in ("GET", "HEAD"):
        await respond(send, 405, b"method not allowed\n", TEXT, [(b"allow", b"GET, HEAD")],
                      head=head)
        return
    path = resolve_web_path(relative_path)
    st: os.stat_result | None = None
    if path is not None:
        try:
            st = path.stat()
        except OSError:
            st = None
    if path is None or st is None or not stat.S_ISREG(st.st_mode):
        await respond(send, 404, b"not found\n", TEXT, head=head)
        return

    entry = _entry_for(path, st)
    vendor = path.parent != WEB_ROOT
    headers: Headers = [
        (b"etag", entry.etag),
        (b"last-modified", entry.last_modified),
        (b"cache-control", VENDOR_CACHE if vendor else PAGE_CACHE),
        (b"x-content-type-options", b"nosniff"),
    ]
    if _not_modified(scope, entry):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return

    kind = content_type(path)
    full: Headers = [(b"content-length", str(st.st_size).encode()),
                     (b"content-type", kind), *headers]
    if head:
        await send({"type": "http.response.start", "status": 200, "headers": full})
        await send({"type": "http.response.body", "body": b""})
        return

    extensions = scope.get("extensions") or {}
    if PATHSEND in extensions:
        await send({"type": "http.response.start", "status": 200, "headers": full})
        await send({"type": PATHSEND, "path": str(path)})
        return
    if ZEROCOPY in extensions and entry.body is None:
        try:
            file = open(path, "rb")  # noqa: SIM115 - closed below, after the send
        except OSError:
            file = None
        if file is not None:
            try:
                await send({"type": "http.response.start", "status": 200, "headers": full})
                await send({"type": ZEROCOPY, "file": file, "offset": 0,
                            "count": st.st_size, "more_body": False})
            finally:
                file.close()
            return

    body = entry.body
    if body is None:
        try:
            body = path.read_bytes()
        except OSError:
            await respond(send, 404, b"not found\n", TEXT)
            return
        if len(body) != st.st_size:  # changed while we looked: serve what we read
            full[0] = (b"content-length", str(len(body)).encode())
        else:
            _cache[path] = _Entry(entry.key, entry.etag, entry.last_modified, entry.mtime, body)
    await send({"type": "http.response.start", "status": 200, "headers": full})
    await send({"type": "http.response.body", "body": body})


def utc_now_iso(now: float | None = None) -> str:
    """``2026-11-25T13:05:16.193Z``: UTC, milliseconds, the http-iso timing form."""
    ns = time.time_ns() if now is None else int(now * 1_000_000_000)
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1_000_000:03d}Z"


TIME_HEADERS: Headers = [
    (b"cache-control", b"no-store"),
    (b"access-control-allow-origin", b"*"),
]


async def serve_time(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /time``: the origin's clock for players (dash.js http-iso)."""
    del receive
    method = scope.get("method", "GET")
    if method not in ("GET", "HEAD"):
        await respond(send, 405, b"method not allowed\n", TEXT,
                      [(b"allow", b"GET, HEAD"), *TIME_HEADERS])
        return
    await respond(send, 200, utc_now_iso().encode(), TEXT, TIME_HEADERS, head=method == "HEAD")
