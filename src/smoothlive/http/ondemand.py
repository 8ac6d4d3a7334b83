"""On-demand Smooth Streaming: ``.ism`` presentations under the content root.

URLs, keywords case-insensitive as in IIS (the live ones end in ``.isml``):

* ``GET /<path>.ism/Manifest``: the client manifest (IsLive absent, gzip
  when accepted, ETag). Short-lived while an archive is still being written
  (a growing archive shows its new fragments), long once every file has its
  mfra;
* ``GET /<path>.ism/QualityLevels(<bitrate>)/Fragments(<name>=<time>)``:
  the fragment as it sits in its ``.ismv`` (moof, then the mdat read from
  the file), immutable; ``FragmentInfo(...)`` is the moof alone.

``<path>.ism`` names a file under the content root; no spelling may name
one outside it (dot segments in any encoding, backslashes, NUL, absolute
paths, a symlink out): those are 404. Indexing and reading are disk I/O,
so they run in worker threads (``asyncio.to_thread``): the ASGI
``pathsend`` extension sends whole files only, and a fragment is a range.
One refresh per presentation runs at a time; concurrent requests share it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from smoothlive.archive.ondemand import OnDemandPresentation, OnDemandState
from smoothlive.http.delivery import (
    CORS,
    IMMUTABLE,
    MANIFEST_TYPE,
    NO_STORE,
    answer_other_methods,
)
from smoothlive.http.messages import Request, Send, respond
from smoothlive.metrics import ONDEMAND_FRAGMENT, ONDEMAND_MANIFEST, observe_request

log = logging.getLogger("smoothlive.ondemand")

_MANIFEST = re.compile(r"^/(?P<path>.+?\.ism)/manifest/?$", re.I)
_FRAGMENT = re.compile(
    r"^/(?P<path>.+?\.ism)/qualitylevels\((?P<bitrate>\d{1,10})\)"
    r"/(?P<kind>fragments|fragmentinfo)\((?P<name>[^=)/]+)=(?P<time>\d{1,19})\)/?$",
    re.I,
)
_SEGMENT_OK = re.compile(r"^[^\x00-\x1f\x7f/\\:*?\"<>|]{1,255}$")
MAX_PATH_LENGTH = 1024

FRAGMENT_TYPE = {"video": b"video/mp4", "audio": b"audio/mp4", "text": b"application/mp4"}
GROWING = b"public, max-age=2"  # a player re-reading the manifest sees new fragments soon
FINISHED = b"public, max-age=86400"  # every file has its mfra; the ETag revalidates
READ_CHUNK = 4 << 20  # mdat bytes per read: one read for any usual fragment


@dataclass(frozen=True, slots=True)
class OnDemandRoute:
    kind: str  # manifest | fragment | fragmentinfo
    path: str  # the .ism, relative to the content root as sent: "vod/clip/clip.ism"
    bitrate: int = 0
    name: str = ""
    time: int = 0


def ondemand_route(path: str) -> OnDemandRoute | None:
    """The on-demand request ``path`` (ASGI, percent-decoded) makes, or None."""
    match = _FRAGMENT.match(path)
    if match:
        kind = "fragment" if match["kind"].lower() == "fragments" else "fragmentinfo"
        return OnDemandRoute(kind, match["path"], int(match["bitrate"]), match["name"],
                             int(match["time"]))
    match = _MANIFEST.match(path)
    if match:
        return OnDemandRoute("manifest", match["path"])
    return None


def resolve_ism(root: str, relative: str) -> Path | None:
    """The real path of the ``.ism`` file ``relative`` names inside ``root`` (a realpath).

    None when the spelling is refused (empty, dot or hidden segments,
    backslash, NUL or control characters, absolute or drive paths), when it
    is not a regular file, or when its real path (symlinks followed) is not
    inside ``root``. Blocking (stat): call it from a worker thread.
    """
    if not relative or len(relative) > MAX_PATH_LENGTH or relative.startswith("/"):
        return None
    parts = relative.split("/")
    for part in parts:
        # '.' covers '', '.', '..' and hidden names; the pattern, \\ NUL : and controls.
        if part.startswith(".") or part.endswith((" ", ".")) or not _SEGMENT_OK.match(part):
            return None
    real = os.path.realpath(os.path.join(root, *parts))
    if not real.startswith(root + os.sep) or not os.path.isfile(real):
        return None
    return Path(real)


def _etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2 If-None-Match, weak comparison."""
    if header is None:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


class OnDemandService:
    """Serves ``.ism`` presentations, keeping the most recently used ones open."""

    def __init__(self, root: Path, *, capacity: int = 256, ttl: float = 1.0) -> None:
        self.root = os.path.realpath(root)
        self.capacity = capacity
        self.ttl = ttl
        self._open: OrderedDict[str, OnDemandPresentation] = OrderedDict()
        self._pending: dict[str, asyncio.Future[OnDemandPresentation | None]] = {}

    async def __call__(self, request: Request, send: Send, found: OnDemandRoute) -> None:
        began = time.monotonic()
        status = 500
        try:
            status = await self._serve(request, send, found)
        finally:
            observe_request(ONDEMAND_MANIFEST if found.kind == "manifest" else ONDEMAND_FRAGMENT,
                            status, time.monotonic() - began)

    async def _serve(self, request: Request, send: Send, found: OnDemandRoute) -> int:
        """The answer; returns its status (for the metrics)."""
        refused = await answer_other_methods(request, send)
        if refused:
            return refused
        head = request.method == "HEAD"
        started = False
        status = 500

        async def tracked(message: dict) -> None:
            nonlocal started, status
            if not started:  # the first message is http.response.start
                started = True
                status = message["status"]
            await send(message)

        try:
            presentation = await self._presentation(found.path)
            if presentation is None or not presentation.state.playable:
                await respond(tracked, 404, b"no such on-demand presentation\n", b"text/plain",
                              [*CORS, *NO_STORE], head=head)
            elif found.kind == "manifest":
                await self._manifest(request, tracked, presentation.state, head)
            else:
                await self._fragment(request, tracked, presentation, found, head)
        except Exception as exc:
            # One clear line for the operator; the client gets a plain 500 (or,
            # once the body has begun, a cut connection), never a trace.
            log.error("on-demand %s %s failed: %s: %s", request.method, request.path,
                      type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            if started:
                raise
            await respond(send, 500, b"internal error\n", b"text/plain", [*CORS, *NO_STORE],
                          head=head)
        return status

    # -- presentations ----------------------------------------------------------------------

    async def open(self, relative: str) -> OnDemandPresentation | None:
        """The presentation of the ``.ism`` at ``relative`` (to the content root, no leading
        slash), refreshed when due; None when there is none. For the HLS/DASH outputs."""
        return await self._presentation(relative)

    async def _presentation(self, relative: str) -> OnDemandPresentation | None:
        """The open presentation of ``relative``, refreshed when due; None if there is none."""
        current = self._open.get(relative)
        if current is not None:
            self._open.move_to_end(relative)
            if not current.due:
                return current
        pending = self._pending.get(relative)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(self._load, relative, current))
            self._pending[relative] = pending
            pending.add_done_callback(lambda _: self._settle(relative, pending))
        # Shielded: a client that goes away does not cancel a load others wait for.
        return await asyncio.shield(pending)

    def _settle(self, relative: str, done: asyncio.Future) -> None:
        if self._pending.get(relative) is done:
            del self._pending[relative]
        result = None if done.cancelled() or done.exception() else done.result()
        if result is None:
            self._open.pop(relative, None)
            return
        self._open[relative] = result
        self._open.move_to_end(relative)
        while len(self._open) > self.capacity:
            self._open.popitem(last=False)

    def _load(self, relative: str, current: OnDemandPresentation | None
              ) -> OnDemandPresentation | None:
        """(Worker thread) ``current`` refreshed, or the .ism opened; None when it is gone.

        The path is resolved again each time: a symlink changed to point
        outside the root, or the file removed, closes the presentation.
        """
        real = resolve_ism(self.root, relative)
        if real is None:
            return None
        try:
            if current is not None and current.path == real:
                current.refresh()
                return current
            return OnDemandPresentation(real, ttl=self.ttl)
        except OSError as exc:
            log.info("on-demand presentation %s closed: %s", relative, exc)
            return None

    # -- responses --------------------------------------------------------------------------

    async def _manifest(self, request: Request, send: Send, state: OnDemandState,
                        head: bool) -> None:
        headers = [
            *CORS,
            (b"cache-control", FINISHED if state.finished else GROWING),
            (b"etag", state.etag.encode()),
            (b"vary", b"accept-encoding"),
        ]
        if _etag_matches(request.header("if-none-match"), state.etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        body = state.manifest
        if "gzip" in (request.header("accept-encoding") or ""):
            body = state.manifest_gzip
            headers.append((b"content-encoding", b"gzip"))
        await respond(send, 200, body, MANIFEST_TYPE, headers, head=head)

    async def _fragment(self, request: Request, send: Send, presentation: OnDemandPresentation,
                        found: OnDemandRoute, head: bool) -> None:
        level = presentation.state.levels.get((found.name, found.bitrate))
        offset = level.fragments.find(found.time) if level is not None else None
        if level is None or offset is None:
            await respond(send, 404, b"no such fragment\n", b"text/plain", [*CORS, *NO_STORE],
                          head=head)
            return
        # Known from the index alone: a revalidation costs no disk read.
        etag = f'"{level.inode:x}-{offset:x}-{found.time:x}"'
        headers = [
            *CORS,
            (b"content-type", FRAGMENT_TYPE.get(level.info.kind, b"video/mp4")),
            (b"cache-control", IMMUTABLE),
            (b"etag", etag.encode()),
        ]
        if _etag_matches(request.header("if-none-match"), etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        info_only = found.kind == "fragmentinfo"
        first = 0 if head or info_only else READ_CHUNK
        loaded = await asyncio.to_thread(
            _load_fragment, presentation, found.name, found.bitrate, found.time, first)
        if loaded is None:  # the file changed under the index; it is re-read next time
            await respond(send, 404, b"no such fragment\n", b"text/plain", [*CORS, *NO_STORE],
                          head=head)
            return
        moof, (path, mdat_offset, mdat_size), data = loaded
        size = len(moof) + (0 if info_only else mdat_size)
        headers.append((b"content-length", str(size).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if head or info_only:
            await send({"type": "http.response.body", "body": b"" if head else moof})
            return
        await send({"type": "http.response.body", "body": moof, "more_body": True})
        done = len(data)
        await send({"type": "http.response.body", "body": data, "more_body": done < mdat_size})
        while done < mdat_size:  # only fragments larger than READ_CHUNK
            count = min(READ_CHUNK, mdat_size - done)
            data = await asyncio.to_thread(
                OnDemandPresentation.read, (path, mdat_offset + done, count))
            done += count
            await send({"type": "http.response.body", "body": data,
                        "more_body": done < mdat_size})


def _load_fragment(
    presentation: OnDemandPresentation, name: str, bitrate: int, time: int, first: int
) -> tuple[bytes, tuple[Path, int, int], bytes] | None:
    """(Worker thread) the moof, the mdat's range and its first ``first`` bytes; or None.

    One thread hop for the common fragment: the moof and the whole mdat are
    read before the response starts, so a file cut short is a clean 404.
    """
    found = presentation.fragment(name, bitrate, time)
    if found is None:
        return None
    moof, (path, offset, size) = found
    if not first:
        return moof, (path, offset, size), b""
    try:
        data = OnDemandPresentation.read((path, offset, min(first, size)))
    except OSError as exc:
        log.info("fragment %s=%d of %s unreadable: %s", name, time, path, exc)
        presentation.invalidate()
        return None
    return moof, (path, offset, size), data
