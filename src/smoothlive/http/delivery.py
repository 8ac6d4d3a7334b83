"""Smooth Streaming delivery: the client manifest and fragments, for players.

URLs, keywords case-insensitive as in IIS:

* ``GET /<path>.isml/Manifest``: the client manifest (gzip when accepted);
* ``GET /<path>.isml/QualityLevels(<bitrate>)/Fragments(<stream>=<time>)``:
  a fragment as stored, its moof carrying a TfrfBox of the following
  fragments. A fragment that names LookAheadChunks successors never changes
  again and is cacheable for a year; until then it gets a short max-age. A
  fragment not there yet but due within a few fragment durations is 412 (as
  IIS answered), one outside the window or never coming is 404, both
  ``no-store`` so that no cache keeps the miss.

Everything a request sends was prepared when the fragment arrived: the
handler looks up, then writes two buffers (moof, mdat) without joining them.
Browser players fetch from other origins: every answer carries CORS headers
and preflights are answered; ``/clientaccesspolicy.xml`` and
``/crossdomain.xml`` are served as IIS sites did for Silverlight and Flash.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import logging
import re
import time
from dataclasses import dataclass

from smoothlive.http.messages import Request, Send, respond
from smoothlive.metrics import (
    SMOOTH_FRAGMENT,
    SMOOTH_MANIFEST,
    observe_request,
    observe_requests,
)
from smoothlive.pubpoint.paths import InvalidPointPath, point_path
from smoothlive.pubpoint.presentation import QualityLevel, StoredFragment
from smoothlive.pubpoint.registry import Registry
from smoothlive.workers.board import ChangeBoard, board_header

log = logging.getLogger("smoothlive.delivery")

_MANIFEST = re.compile(r"^(?P<point>/.+?\.isml)/manifest/?$", re.I)
_FRAGMENT = re.compile(
    r"^(?P<point>/.+?\.isml)/qualitylevels\((?P<bitrate>\d{1,10})\)"
    r"/(?P<kind>fragments|fragmentinfo)\((?P<name>[^=)/]+)=(?P<time>\d{1,20})\)/?$",
    re.I,
)

CORS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"content-length, date, etag"),
]
PREFLIGHT = [
    *CORS,
    (b"access-control-allow-methods", b"GET, HEAD, OPTIONS"),
    (b"access-control-allow-headers", b"*"),
    (b"access-control-max-age", b"86400"),
]
NO_STORE = [(b"cache-control", b"no-store")]
MANIFEST_TYPE = b"text/xml; charset=utf-8"
FRAGMENT_TYPE = {"video": b"video/mp4", "audio": b"audio/mp4"}
IMMUTABLE = b"public, max-age=31536000, immutable"
SHORT = b"public, max-age=1"

CLIENT_ACCESS_POLICY = b"""<?xml version="1.0" encoding="utf-8"?>
<access-policy>
  <cross-domain-access>
    <policy>
      <allow-from http-request-headers="*">
        <domain uri="*" />
      </allow-from>
      <grant-to>
        <resource path="/" include-subpaths="true" />
      </grant-to>
    </policy>
  </cross-domain-access>
</access-policy>
"""
CROSSDOMAIN = b"""<?xml version="1.0"?>
<!DOCTYPE cross-domain-policy SYSTEM "http://www.adobe.com/xml/dtds/cross-domain-policy.dtd">
<cross-domain-policy>
  <allow-access-from domain="*" />
  <allow-http-request-headers-from domain="*" headers="*" />
</cross-domain-policy>
"""
POLICY_FILES = {
    "/clientaccesspolicy.xml": CLIENT_ACCESS_POLICY,
    "/crossdomain.xml": CROSSDOMAIN,
}


@dataclass(frozen=True, slots=True)
class DeliveryRoute:
    kind: str  # manifest | fragment | fragmentinfo
    point: str
    bitrate: int = 0
    name: str = ""
    time: int = 0


# A pure function of the path: players ask for the same URLs again and again.
@functools.lru_cache(maxsize=8192)
def delivery_route(path: str) -> DeliveryRoute | None:
    match = _FRAGMENT.match(path)
    if match:
        kind = "fragment" if match["kind"].lower() == "fragments" else "fragmentinfo"
        return DeliveryRoute(kind, match["point"], int(match["bitrate"]), match["name"],
                             int(match["time"]))
    match = _MANIFEST.match(path)
    if match:
        return DeliveryRoute("manifest", match["point"])
    return None


async def answer_other_methods(request: Request, send: Send) -> int:
    """What players' resources answer besides GET and HEAD: a CORS preflight (204)
    or 405; 0 when the method is GET or HEAD and the caller answers."""
    method = request.method
    if method == "OPTIONS":
        await respond(send, 204, headers=PREFLIGHT)
        return 204
    if method not in ("GET", "HEAD"):
        await respond(send, 405, b"method not allowed\n", b"text/plain",
                      [(b"allow", b"GET, HEAD, OPTIONS"), *CORS])
        return 405
    return 0


class DeliveryService:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._gzipped: dict[int, tuple[int, bytes]] = {}  # id(presentation) -> (version, body)
        self.board: ChangeBoard | None = None  # with --workers: what fronts may keep

    async def __call__(self, request: Request, send: Send, found: DeliveryRoute) -> None:
        started = time.monotonic()
        status = 500
        try:
            status = await self._serve(request, send, found)
        finally:
            observe_request(SMOOTH_MANIFEST if found.kind == "manifest" else SMOOTH_FRAGMENT,
                            status, time.monotonic() - started)

    def account(self, found: DeliveryRoute, count: int, seconds: float) -> None:
        """Requests a front answered from its cache: counted as if answered here."""
        output = SMOOTH_MANIFEST if found.kind == "manifest" else SMOOTH_FRAGMENT
        observe_requests(output, 200, count, seconds)
        if found.kind != "manifest":
            self.count_hits(found.point, found.name, found.bitrate, count)

    def count_hits(self, point: str, name: str, bitrate: int, count: int) -> None:
        """``count`` requests for media of a QualityLevel (its RequestRate), answered
        by a front; nothing if the point or level is gone meanwhile."""
        try:
            live = self.registry.live(point_path(point, decode=False))
        except InvalidPointPath:
            return
        index = live.presentation.stream_indexes.get(name) if live is not None else None
        level = index.level(bitrate) if index is not None else None
        if level is not None:
            level.requests.hit(time.monotonic(), count)

    async def _serve(self, request: Request, send: Send, found: DeliveryRoute) -> int:
        """The answer; returns its status (for the metrics)."""
        refused = await answer_other_methods(request, send)
        if refused:
            return refused
        head = request.method == "HEAD"
        live = await self.find_live(found.point)
        if live is not None and not live.outputs.smooth:
            live = None
        if live is None:
            await respond(send, 404, b"no such live presentation\n", b"text/plain",
                          [*CORS, *NO_STORE], head=head)
            return 404
        if found.kind == "manifest":
            return await self._manifest(request, send, live, head)
        return await self._fragment(request, send, live, found, head)

    async def find_live(self, raw_point: str):
        """The live point players may read at ``raw_point``, started if AutoStart says so."""
        try:
            path = point_path(raw_point, decode=False)
        except InvalidPointPath:
            return None
        live = self.registry.live(path)
        if live is None:
            try:
                await self.registry.autostart_for_player(path)
            except Exception:  # not found, unreadable: a plain 404 for players
                return None
            live = self.registry.live(path)
        if live is None or not live.settings.client_connections.enabled:
            return None
        return live

    async def _manifest(self, request: Request, send: Send, live, head: bool) -> int:
        presentation = live.presentation
        body = presentation.manifest()
        if not presentation.stream_indexes or b"<StreamIndex" not in body:
            # Started but nothing published yet: nothing a player can use.
            await respond(send, 404, b"no fragments yet\n", b"text/plain",
                          [*CORS, *NO_STORE], head=head)
            return 404
        headers = [*CORS, (b"cache-control", SHORT if presentation.is_live else
                           b"public, max-age=60"), (b"vary", b"accept-encoding"),
                   *board_header(self.board, request.scope, live.path, presentation)]
        if "gzip" in (request.header("accept-encoding") or ""):
            key = id(presentation)
            cached = self._gzipped.get(key)
            if cached is None or cached[0] != presentation.version:
                cached = (presentation.version, gzip.compress(body, 6))
                self._gzipped[key] = cached
                if len(self._gzipped) > 1024:
                    self._gzipped.pop(next(iter(self._gzipped)))
            body = cached[1]
            headers.append((b"content-encoding", b"gzip"))
        await respond(send, 200, body, MANIFEST_TYPE, headers, head=head)
        return 200

    async def _fragment(self, request: Request, send: Send, live, found: DeliveryRoute,
                        head: bool) -> int:
        presentation = live.presentation
        try:
            level, fragment = presentation.find(found.name, found.bitrate, found.time)
        except KeyError:
            level, fragment = None, None
        # While live, the newest fragment waits for its first successor: a live
        # fragment must name at least one following fragment in its TfrfBox,
        # because players (dash.js's MSS plugin among them) grow their timeline
        # only from those and never re-read the manifest. So it is "due" (412).
        waiting = (fragment is not None and presentation.is_live and level.lookahead > 0
                   and not fragment.has_successor)
        if fragment is None or waiting:
            due = level is not None and (waiting or
                                         presentation.is_due(level.stream_index, found.time))
            await respond(send, 412 if due else 404,
                          b"fragment not available yet\n" if due else b"no such fragment\n",
                          b"text/plain", [*CORS, *NO_STORE], head=head)
            return 412 if due else 404
        level.requests.hit(time.monotonic())
        return await self._send_fragment(request, send, live, level, fragment, head,
                                         info_only=found.kind == "fragmentinfo")

    async def _send_fragment(self, request: Request, send: Send, live, level: QualityLevel,
                             fragment: StoredFragment, head: bool, info_only: bool = False
                             ) -> int:
        """The fragment (moof then mdat), or with ``info_only`` its moof alone
        (MS-SSTR FragmentInfo: what players ask for when seeking or paused)."""
        moof = fragment.served_moof or fragment.moof
        mdat = fragment.mdat
        if not moof:  # an old fragment of a long DVR window: its bytes are on disk only
            _, moof, mdat = await asyncio.to_thread(
                level.read_back, fragment, level.following(fragment.time))
        etag = f'"{fragment.time:x}-{level.bitrate:x}-{len(moof):x}"'.encode()
        headers = [
            *CORS,
            (b"content-type", FRAGMENT_TYPE.get(level.info.kind, b"video/mp4")),
            (b"cache-control", IMMUTABLE if fragment.complete else SHORT),
            (b"etag", etag),
            *board_header(self.board, request.scope, live.path, live.presentation,
                          fragment=True),
        ]
        if request.header("if-none-match") == etag.decode():
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return 304
        if info_only:
            headers.append((b"content-length", str(len(moof)).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if head else moof})
            return 200
        if mdat is None and not head:
            mdat = await asyncio.to_thread(level.read_mdat, fragment)
        size = len(moof) + (fragment.size - fragment.moof_size)
        headers.append((b"content-length", str(size).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if head:
            await send({"type": "http.response.body", "body": b""})
            return 200
        await send({"type": "http.response.body", "body": moof, "more_body": True})
        await send({"type": "http.response.body", "body": mdat})
        return 200
