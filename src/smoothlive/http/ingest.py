"""Live ingest: ``POST /<path>.isml/Streams(<id>)``, fragmented MP4 as it arrives.

An encoder sends one long chunked POST per output: ftyp, the live server
manifest, moov, then moof+mdat pairs, and mfra at the end. The body is
parsed as it arrives (``media.ingest.IngestParser``: bounded memory) and
each fragment is stored and published the moment its mdat is complete.

Who may push: the direct loopback peer without credentials (a request that
came through a proxy, i.e. carries X-Forwarded-For or Forwarded, is not
"direct"), anyone else with Basic or Digest credentials of a user with
write access to the point. The 401 goes out before any of the body is read.

A corrupt or truncated stream ends that stream alone, with a 400 and a log
line; the other streams and points go on.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from dataclasses import dataclass, field

from smoothlive.auth.authenticator import Authenticator
from smoothlive.auth.grants import allows
from smoothlive.http.messages import BodyTimeout, Request, Send, respond
from smoothlive.management.errors import ManagementError, MgmtError, error_body
from smoothlive.media.boxes import BoxError
from smoothlive.media.ingest import EndOfStream, Fragment, IngestParser, Movie
from smoothlive.metrics import ERRORS, INGEST, observe_request
from smoothlive.pubpoint.paths import InvalidPointPath, point_path
from smoothlive.pubpoint.registry import Registry

log = logging.getLogger("smoothlive.ingest")

_STREAMS = re.compile(
    r"^(?P<point>/.+?\.isml)(?:/events\((?P<event>[^)/]*)\))?/streams\((?P<stream>[^)/]*)\)/?$",
    re.I,
)
ERROR_TYPE = b"application/xml; charset=utf-8"


@dataclass(frozen=True, slots=True)
class IngestRoute:
    point: str
    stream_id: str
    event_id: str | None


def ingest_route(path: str) -> IngestRoute | None:
    match = _STREAMS.match(path)
    if not match:
        return None
    return IngestRoute(match["point"], match["stream"], match["event"] or None)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@dataclass
class StreamStats:
    """What the statistics of an input stream report."""

    stream_id: str
    source_ip: str
    started: float = field(default_factory=time.monotonic)
    bytes: int = 0
    fragments: int = 0
    state: str = "Started"


class IngestService:
    def __init__(self, registry: Registry, authenticator: Authenticator,
                 trusted_proxies: frozenset[str] = frozenset()) -> None:
        self.registry = registry
        self.authenticator = authenticator
        self.trusted_proxies = trusted_proxies

    def client_address(self, request: Request) -> str:
        """The encoder's address: the peer, or X-Forwarded-For's last hop from a trusted proxy."""
        peer = request.client_host
        forwarded = request.header("x-forwarded-for")
        if forwarded and peer in self.trusted_proxies:
            return forwarded.split(",")[-1].strip()
        return peer

    async def _authorize(self, request: Request, path: str) -> None:
        direct = request.header("x-forwarded-for") is None and request.header("forwarded") is None
        if direct and is_loopback(request.client_host) and not request.header("authorization"):
            return
        outcome = await self.authenticator.authenticate(
            request.method, request.header("authorization"), request.client_host)
        if outcome.user is None:
            raise ManagementError(
                MgmtError.AUTHENTICATION_IS_REQUIRED, "stale" if outcome.stale else outcome.reason)
        if not allows(outcome.user.grants, "write", path):
            raise ManagementError(MgmtError.ACCESS_DENIED, f"{outcome.user.name} push {path}")

    async def __call__(self, request: Request, send: Send, found: IngestRoute) -> None:
        started = time.monotonic()
        status = 500
        try:
            status = await self._serve(request, send, found)
        finally:
            observe_request(INGEST, status, time.monotonic() - started)

    async def _serve(self, request: Request, send: Send, found: IngestRoute) -> int:
        """The push; returns the status answered."""
        if request.method != "POST":
            ERRORS.inc((MgmtError.METHOD_NOT_ALLOWED.symbol,))
            await respond(send, 405, error_body(MgmtError.METHOD_NOT_ALLOWED), ERROR_TYPE,
                          [(b"allow", b"POST")])
            return 405
        try:
            path = point_path(found.point, decode=False)
        except InvalidPointPath:
            return await self._refuse(
                send, ManagementError(MgmtError.PUBLISHING_POINT_NOT_FOUND))
        try:
            await self._authorize(request, path)
            point = await self.registry.open_ingest(path, found.stream_id, found.event_id)
        except ManagementError as exc:
            log.warning("push to %s Streams(%s) from %s refused: %s %s", path, found.stream_id,
                        self.client_address(request), exc.error.symbol, exc.detail)
            return await self._refuse(send, exc)
        return await self._receive(request, send, path, found, point)

    async def _refuse(self, send: Send, exc: ManagementError) -> int:
        ERRORS.inc((exc.error.symbol,))
        # Refused before any of the body is read: the connection cannot carry another
        # request after it, and a client not told so sends its next one there (to find
        # it closed by the server, without an answer).
        headers = [(b"connection", b"close")]
        if exc.error is MgmtError.AUTHENTICATION_IS_REQUIRED:
            headers += self.authenticator.challenge_headers(stale=exc.detail == "stale")
        await respond(send, exc.error.status, error_body(exc.error, exc.internal), ERROR_TYPE,
                      headers)
        return exc.error.status

    async def _receive(self, request: Request, send: Send, path: str, found: IngestRoute,
                       point) -> int:
        source = self.client_address(request)
        stream = point.open_stream(found.stream_id, source, found.event_id)
        parser = IngestParser()
        ended = False
        failure: str | None = None
        try:
            while True:
                message = await request.next_body()
                if message["type"] == "http.disconnect":
                    break
                chunk = message.get("body", b"")
                if chunk:
                    arrived = time.monotonic()  # the last byte of any fragment this completes
                    stream.bytes += len(chunk)
                    stream.chunks += 1
                    try:
                        events = parser.feed(chunk)
                    except BoxError as exc:
                        # The fragments this chunk completed before the fault are stored
                        # all the same: what is kept must not depend on the chunking.
                        events, failure = getattr(exc, "events", []), str(exc)
                    for event in events:
                        if isinstance(event, Fragment):
                            await point.fragment(stream, event.data, arrived)
                        elif isinstance(event, Movie):
                            point.movie(stream, event.tracks)
                        elif isinstance(event, EndOfStream):
                            ended = True
                    if failure is not None or stream.stopped:
                        break
                if not message.get("more_body"):
                    parser.close()
                    ended = True  # the POST completed normally: an end of stream
                    break
        except BodyTimeout as exc:
            # Silent but connected (a hung encoder, a lost path the kernel has not
            # noticed): a lost connection, so the reconnect grace applies.
            log.warning("%s Streams(%s) from %s: %s, ended as a lost connection",
                        path, found.stream_id, source, exc)
            await point.close_stream(stream, ended=False)
            await respond(send, 408, f"{exc}\n".encode(), b"text/plain; charset=utf-8",
                          [(b"connection", b"close")])
            return 408
        except BoxError as exc:
            failure = str(exc)
        except ValueError as exc:  # a track the presentation cannot take
            failure = str(exc)
        except Exception:
            # A fault of ours, not of the stream (logged with its traceback by the server,
            # a 500): the stream is closed all the same, or the point would wait for it
            # forever (never Stopped, its chunks never listed while it "feeds" a level).
            await point.close_stream(stream, ended=False)
            raise
        if failure is not None:
            failure = _one_line(failure)
            log.error("%s Streams(%s) from %s: corrupt stream, ended: %s",
                      path, found.stream_id, source, failure)
            await point.close_stream(stream, ended=False)
            # The rest of the body is left unread: the connection cannot carry another
            # request, and the client must be told so, or it sends its next one there.
            await respond(send, 400, f"corrupt stream: {failure}\n".encode(),
                          b"text/plain; charset=utf-8", [(b"connection", b"close")])
            return 400
        await point.close_stream(stream, ended=ended)
        log.info("%s Streams(%s) from %s: %s after %d fragments, %d bytes in %d chunks",
                 path,
                 found.stream_id, source, "ended" if ended else "connection lost",
                 stream.fragments, stream.bytes, stream.chunks)
        await respond(send, 200)
        return 200


def _one_line(text: str, limit: int = 300) -> str:
    """An error message fit for one log line and a short 400 body: what came from the
    stream (box types, manifest names) may hold line breaks and controls, or be long."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
