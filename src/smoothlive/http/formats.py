"""HLS and MPEG-DASH for live points and archives, from the fragments already stored.

The documents come from :mod:`smoothlive.outputs.formats` (rendered once per
presentation version and cached); media is converted once per fragment and
cached: a TS rendition of the fragment (:mod:`smoothlive.media.ts`, its
continuity counters laid out so any run of fragments concatenates into a
valid stream) or a CMAF moof (the stored moof with a tfdt, as ffmpeg's
ingest has only tfxd). A segment is a few cached pieces sent one after the
other; an encrypted one is encrypted once and cached.

AES-128 keys (HLS Encryption) are served at ``Keys(N).key`` only with a
token the playlist hands out: an HMAC of the point, the key number and an
expiry, with the server's secret. It stops a key URL from being passed
around or hot-linked after it expires; it does not stop a viewer who can
fetch the playlist from fetching the key (anyone who can play can copy).
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from smoothlive.archive.ondemand import OnDemandPresentation
from smoothlive.http.delivery import (
    CORS,
    IMMUTABLE,
    NO_STORE,
    DeliveryService,
    answer_other_methods,
)
from smoothlive.http.messages import Request, Send, respond
from smoothlive.http.ondemand import OnDemandService
from smoothlive.management.settings import HlsSettings, Settings
from smoothlive.media.boxes import BoxError
from smoothlive.media.fragments import read_moof, with_lookahead, with_tfdt
from smoothlive.media.init import init_segment
from smoothlive.media.model import TrackInfo
from smoothlive.media.ts import (
    encrypt_segment,
    fragment_packets,
    psi_packets,
    sequence_iv,
    ts_tracks,
)
from smoothlive.metrics import (
    DASH_MPD,
    DASH_SEGMENT,
    HLS_PLAYLIST,
    HLS_SEGMENT,
    KEY,
    observe_request,
    observe_requests,
)
from smoothlive.outputs.formats import (
    CONTENT_TYPES,
    DASH_FORMATS,
    HLS_TS,
    HlsOptions,
    NoSegments,
    OutputRoute,
    hls_segments_of,
    key_of,
    reference_of,
    render_dash,
    render_hls_media,
    render_hls_multivariant,
)
from smoothlive.outputs.segments import Segmenter, segments_of
from smoothlive.outputs.smooth import ManifestView
from smoothlive.pubpoint.live import LivePoint
from smoothlive.workers.board import board_header

log = logging.getLogger("smoothlive.formats")

TOKEN_PERIOD = 600  # key tokens are valid for 10 to 20 minutes
CACHE_BYTES = 256 << 20  # converted fragments and encrypted segments
SHORT_LIVE = b"public, max-age=1"
DOCUMENTS = 2048  # cached playlists and MPDs (one per presentation and document)
STOPPED = b"public, max-age=60"


@dataclass
class _Source:
    """What a request reads of an archive; live points are read through ``_LiveSource``,
    which has the same attributes."""

    key: tuple  # identity for caches
    view: ManifestView
    live: bool
    version: object  # changes whenever the view does
    segmenter: Segmenter | None
    anchor: float | None
    published_at: float | None
    settings: Settings
    hls: HlsSettings | None
    dash: bool
    window: float | None
    fetch: Callable[[str, int, int], Awaitable[tuple[bytes, bytes] | None]]
    hit: Callable[[str, int], None]
    first_moof: Callable[[str], bytes | None] = lambda name: None


class _LiveSource:
    """A live point as the outputs read it; the same attributes as ``_Source``."""

    dash: bool
    hls: HlsSettings | None

    def __init__(self, point: LivePoint) -> None:
        self.point = point
        self.presentation = presentation = point.presentation
        self.key = ("live", id(presentation))
        self.settings = point.settings
        self.hls = point.outputs.hls
        self.dash = point.outputs.dash
        window = presentation.settings.window
        self.window = window / 10_000_000 if window else None

    @property
    def view(self) -> ManifestView:
        return self.presentation.view()

    @property
    def live(self) -> bool:
        return self.presentation.is_live

    @property
    def version(self) -> int:
        return self.presentation.version

    @property
    def segmenter(self) -> Segmenter | None:
        return self.presentation.segmenter

    @property
    def anchor(self) -> float | None:
        return self.presentation.anchor

    @property
    def published_at(self) -> float | None:
        return self.presentation.published_at

    async def fetch(self, name: str, bitrate: int, at: int) -> tuple[bytes, bytes] | None:
        """The fragment's moof (without TfrfBox) and mdat, from memory or disk."""
        try:
            level, fragment = self.presentation.find(name, bitrate, at)
        except KeyError:
            return None
        if fragment is None:
            return None
        if not (fragment.moof or fragment.served_moof):  # on disk only
            moof, _, mdat = await asyncio.to_thread(level.read_back, fragment, [])
            return moof, mdat
        mdat = fragment.mdat
        if mdat is None:
            mdat = await asyncio.to_thread(level.read_mdat, fragment)
        return fragment.moof or with_lookahead(fragment.served_moof, []), mdat

    def hit(self, name: str, bitrate: int) -> None:
        index = self.presentation.stream_indexes.get(name)
        level = index.level(bitrate) if index is not None else None
        if level is not None:
            level.requests.hit(time.monotonic())

    def first_moof(self, name: str) -> bytes | None:
        index = self.presentation.stream_indexes.get(name)
        level = index.levels[0] if index is not None and index.levels else None
        if level is None or not level.times:
            return None
        for at in (level.times[0], level.times[-1]):  # the first may be on disk only
            fragment = level.fragments[at]
            if fragment.moof or fragment.served_moof:
                return fragment.moof or fragment.served_moof
        return None


AnySource = _Source | _LiveSource


@dataclass
class _Document:
    version: object
    body: bytes
    gzipped: bytes | None = None


class _Lru:
    """Bytes by key, bounded by their total size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._items: OrderedDict[tuple, bytes] = OrderedDict()

    def get(self, key: tuple) -> bytes | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: tuple, value: bytes) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= len(old)
        self._items[key] = value
        self.size += len(value)
        while self.size > self.limit and self._items:
            _, dropped = self._items.popitem(last=False)
            self.size -= len(dropped)


class FormatsService:
    def __init__(self, delivery: DeliveryService, ondemand: OnDemandService, secret: bytes,
                 clock: Callable[[], float] = time.time) -> None:
        self.delivery = delivery
        self.ondemand = ondemand
        self._secret = hashlib.sha256(b"smoothlive hls keys\n" + secret).digest()
        self._clock = clock
        self._media = _Lru(CACHE_BYTES)
        self._documents: OrderedDict[tuple, _Document] = OrderedDict()
        self._facts: OrderedDict[tuple, object] = OrderedDict()  # frame rates, first moofs
        self._pending: dict[tuple, asyncio.Future[bytes | None]] = {}
        self._segmenters: dict[tuple, Segmenter] = {}
        self._live_sources: dict[int, _LiveSource] = {}

    async def __call__(self, request: Request, send: Send, found: OutputRoute) -> None:
        started = time.monotonic()
        status = 500
        try:
            status = await self._serve(request, send, found)
        finally:
            observe_request(_output_of(found), status, time.monotonic() - started)

    def account(self, found: OutputRoute, count: int, seconds: float) -> None:
        """Requests a front answered from its cache: counted as if answered here."""
        observe_requests(_output_of(found), 200, count, seconds)
        if found.kind == "segment" and not found.archive:
            self.delivery.count_hits(found.point, found.name, found.bitrate, count)

    async def _serve(self, request: Request, send: Send, found: OutputRoute) -> int:
        """The answer; returns its status (for the metrics)."""
        refused = await answer_other_methods(request, send)
        if refused:
            return refused
        head = request.method == "HEAD"
        source = await self._source(found)
        if source is None or not self._enabled(source, found):
            return await self._missing(send, head, b"no such presentation\n")
        try:
            if found.kind == "manifest":
                return await self._manifest(request, send, source, found, head)
            if found.kind == "playlist":
                return await self._playlist(request, send, source, found, head)
            if found.kind == "init":
                return await self._init(send, source, found, head, self._epoch(request, source))
            if found.kind == "segment":
                return await self._segment(send, source, found, head,
                                           self._epoch(request, source))
            return await self._key(request, send, source, found, head)
        except (BoxError, ValueError) as exc:
            log.error("%s %s: cannot convert: %s", request.method, request.path, exc)
            await respond(send, 500, b"cannot convert this media\n", b"text/plain",
                          [*CORS, *NO_STORE], head=head)
            return 500

    @staticmethod
    def _enabled(source: AnySource, found: OutputRoute) -> bool:
        if found.format in DASH_FORMATS:
            return source.dash
        return source.hls is not None

    async def _missing(self, send: Send, head: bool, text: bytes = b"not found\n") -> int:
        await respond(send, 404, text, b"text/plain", [*CORS, *NO_STORE], head=head)
        return 404

    # -- sources -------------------------------------------------------------------------------

    async def _source(self, found: OutputRoute) -> AnySource | None:
        if found.archive:
            return await self._archive_source(found)
        live = await self.delivery.find_live(found.point)
        if live is None:
            return None
        # One source per live point, made once: it reads the presentation's
        # current view, version and segments on each request.
        source = self._live_sources.get(id(live))
        if source is None or source.point is not live:
            source = _LiveSource(live)
            self._live_sources[id(live)] = source
            while len(self._live_sources) > 1024:
                self._live_sources.pop(next(iter(self._live_sources)))
        return source

    async def _archive_source(self, found: OutputRoute) -> _Source | None:
        presentation = await self.ondemand.open(found.point.lstrip("/"))
        if presentation is None or not presentation.state.playable:
            return None
        state = presentation.state
        settings = Settings()
        hls = HlsSettings(allow_caching=True)

        async def fetch(name: str, bitrate: int, at: int) -> tuple[bytes, bytes] | None:
            got = await asyncio.to_thread(presentation.fragment, name, bitrate, at)
            if got is None:
                return None
            moof, where = got
            return moof, await asyncio.to_thread(OnDemandPresentation.read, where)

        key = ("ism", str(presentation.path), id(state))
        view = state.view
        segmenter = self._segmenters.get(key)
        reference = reference_of(view)
        if segmenter is None and reference is not None:
            segmenter = segments_of(reference.chunks, hls.segment_length.ticks
                                    * reference.timescale // 10_000_000, reference.timescale,
                                    reference.discontinuities)
            if len(self._segmenters) > 256:
                self._segmenters.pop(next(iter(self._segmenters)))
            self._segmenters[key] = segmenter
        return _Source(
            key=key, view=view, live=False, version=id(state), segmenter=segmenter,
            anchor=None, published_at=None, settings=settings, hls=hls, dash=True,
            window=None, fetch=fetch, hit=lambda name, bitrate: None)

    # -- documents -----------------------------------------------------------------------------

    async def _manifest(self, request: Request, send: Send, source: AnySource,
                        found: OutputRoute, head: bool) -> int:
        if not source.view.stream_indexes:
            return await self._missing(send, head, b"no fragments yet\n")
        if found.is_hls:
            if found.extension and not source.hls.backward_compatible:
                return await self._missing(send, head)
            body = self._document(source, ("multivariant", found.format), lambda: (
                render_hls_multivariant(source.view, found.format, _options(source.hls),
                                        self._frame_rates(source))))
            return await self._send_document(request, send, source, body, "m3u8", head)
        host = request.header("host") or "localhost"
        scheme = "https" if request.scope.get("scheme") == "https" else "http"
        time_url = f"{scheme}://{host}/time"
        body = self._document(source, ("mpd", found.format, time_url), lambda: render_dash(
            source.view, found.format, live=source.live, anchor=source.anchor,
            published_at=source.published_at, now=self._clock(), time_url=time_url,
            window=source.window, frame_rates=self._frame_rates(source)))
        return await self._send_document(request, send, source, body, "mpd", head)

    async def _playlist(self, request: Request, send: Send, source: AnySource,
                        found: OutputRoute, head: bool) -> int:
        index = next((si for si in source.view.stream_indexes if si.name == found.name), None)
        if (index is None or source.segmenter is None
                or not any(t.bitrate == found.bitrate for t in index.tracks)):
            return await self._missing(send, head)
        options = _options(source.hls)
        expiry = self._expiry() if options.encrypted else 0

        def key_uri(number: int) -> str:
            return f"../Keys({number}).key?token={self._token(found.point, number, expiry)}"

        try:
            body = self._playlist_body(source, found, options, expiry, key_uri)
        except NoSegments:
            return await self._missing(send, head, b"no segment yet\n")
        return await self._send_document(request, send, source, body, "m3u8", head)

    def _playlist_body(self, source: AnySource, found: OutputRoute, options: HlsOptions,
                       expiry: int, key_uri: Callable[[int], str]) -> _Document:
        assert source.segmenter is not None and source.hls is not None
        return self._document(
            source, ("playlist", found.format, found.name, found.bitrate, expiry),
            lambda: render_hls_media(
                source.view, found.name, found.format, source.segmenter, live=source.live,
                options=options, target=source.hls.segment_length.ticks / 10_000_000,
                anchor=source.anchor, key_uri=key_uri))

    def _document(self, source: AnySource, what: tuple, render: Callable[[], bytes]) -> _Document:
        """The document ``what`` of ``source``, rendered once per version. One entry per
        (presentation, document), replaced when the version moves: a long window's
        playlists are large, and old versions are never asked for again."""
        key = (source.key, *what)
        entry = self._documents.get(key)
        if entry is not None and entry.version == source.version:
            self._documents.move_to_end(key)
            return entry
        entry = _Document(source.version, render())
        self._documents[key] = entry
        while len(self._documents) > DOCUMENTS:
            self._documents.popitem(last=False)
        return entry

    async def _send_document(self, request: Request, send: Send, source: AnySource,
                             document: _Document, extension: str, head: bool) -> int:
        hls_no_cache = extension == "m3u8" and not source.hls.allow_caching
        cache = b"no-store" if hls_no_cache else SHORT_LIVE if source.live else STOPPED
        headers = [*CORS, (b"cache-control", cache), (b"vary", b"accept-encoding")]
        if isinstance(source, _LiveSource):
            headers += board_header(self.delivery.board, request.scope, source.point.path,
                                    source.presentation)
        body = document.body
        if "gzip" in (request.header("accept-encoding") or "") and len(body) > 512:
            if document.gzipped is None:
                document.gzipped = gzip.compress(body, 6)
            body = document.gzipped
            headers.append((b"content-encoding", b"gzip"))
        await respond(send, 200, body, CONTENT_TYPES[extension], headers, head=head)
        return 200

    def _frame_rates(self, source: AnySource) -> dict[tuple[str, int], float]:
        """Frames per second of each video QualityLevel, from its first stored fragment."""
        rates: dict[tuple[str, int], float] = {}
        for index in source.view.stream_indexes:
            if index.kind != "video" or not index.chunks:
                continue
            cached = self._facts.get((source.key, "fps", index.name))
            if isinstance(cached, float):
                rate = cached
            else:
                rate = 0.0
                moof = self._first_moof(source, index.name)
                if moof is not None:
                    try:
                        fragment = read_moof(moof)
                        duration = fragment.samples_duration()
                        if duration > 0:
                            rate = fragment.sample_count * index.timescale / duration
                    except BoxError:
                        rate = 0.0
                if rate:
                    self._fact((source.key, "fps", index.name), rate)
            if rate:
                for info in index.tracks:
                    rates[(index.name, info.bitrate)] = round(rate, 3)
        return rates

    def _first_moof(self, source: AnySource, name: str) -> bytes | None:
        found = source.first_moof(name) or self._facts.get((source.key, "firstmoof", name))
        return found if isinstance(found, bytes) else None

    def _fact(self, key: tuple, value: object) -> None:
        self._facts[key] = value
        while len(self._facts) > DOCUMENTS:
            self._facts.popitem(last=False)

    # -- media ---------------------------------------------------------------------------------

    def _track(self, source: AnySource, name: str, bitrate: int) -> TrackInfo | None:
        index = next((si for si in source.view.stream_indexes if si.name == name), None)
        if index is None:
            return None
        return next((t for t in index.tracks if t.bitrate == bitrate), None)

    async def _init(self, send: Send, source: AnySource, found: OutputRoute, head: bool,
                    epoch: list[tuple[bytes, bytes]]) -> int:
        info = self._track(source, found.name, found.bitrate)
        if info is None:
            return await self._missing(send, head)
        body = init_segment(info)
        return await self._send_media(send, [body], "mp4", source, head, epoch)

    async def _segment(self, send: Send, source: AnySource, found: OutputRoute, head: bool,
                       epoch: list[tuple[bytes, bytes]]) -> int:
        info = self._track(source, found.name, found.bitrate)
        if info is None:
            return await self._missing(send, head)
        if found.format in DASH_FORMATS:
            piece = await self._converted(source, info, found.name, found.time, "cmaf")
            if piece is None:
                return await self._missing(send, head, b"no such segment (yet)\n")
            source.hit(found.name, found.bitrate)
            return await self._send_media(send, [piece], "m4s", source, head, epoch)
        segment = None
        listed = source.segmenter.find(found.time) if source.segmenter is not None else None
        if listed is not None:
            found_segments = hls_segments_of(source.view, found.name, source.segmenter,
                                             source.live, only=listed)
            segment = found_segments[0] if found_segments else None
        if segment is None:
            return await self._missing(send, head, b"no such segment (yet)\n")
        start, _end, chunks, _discontinuity, sequence = segment
        kind = "ts" if found.format == HLS_TS else "cmaf"
        pieces = []
        if kind == "ts":
            pieces.append(psi_packets(ts_tracks([info]), sequence % 16))
        for chunk_time, _ in chunks:
            piece = await self._converted(source, info, found.name, chunk_time, kind)
            if piece is None:
                return await self._missing(send, head, b"segment no longer available\n")
            pieces.append(piece)
        source.hit(found.name, found.bitrate)
        options = _options(source.hls)
        if options.encrypted:
            reference = reference_of(source.view)
            assert reference is not None
            number = key_of(start / reference.timescale, options.key_rotation)
            cache_key = (source.key, found.name, found.bitrate, start, found.format, number)
            encrypted = self._media.get(cache_key)
            if encrypted is None:
                key = self._key_bytes(source, found.point, number)
                data = b"".join(pieces)
                encrypted = await asyncio.to_thread(
                    encrypt_segment, data, key, sequence_iv(sequence))
                self._media.put(cache_key, encrypted)
            pieces = [encrypted]
        return await self._send_media(send, pieces, "ts" if kind == "ts" else "m4s", source, head,
                                      epoch)

    async def _converted(self, source: AnySource, info: TrackInfo, name: str, at: int,
                         kind: str) -> bytes | None:
        """The fragment at ``at`` as a TS piece or a CMAF fragment, converted once."""
        key = (source.key, name, info.bitrate, at, kind)
        cached = self._media.get(key)
        if cached is not None:
            return cached
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._convert(source, info, name, at, kind))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        result = await asyncio.shield(pending)
        if result is not None:
            self._media.put(key, result)
        return result

    async def _convert(self, source: AnySource, info: TrackInfo, name: str, at: int,
                       kind: str) -> bytes | None:
        got = await source.fetch(name, info.bitrate, at)
        if got is None:
            return None
        moof, mdat = got
        if self._first_moof(source, name) is None:
            self._fact((source.key, "firstmoof", name), moof)
        if kind == "cmaf":
            return with_tfdt(moof, at) + mdat
        track = ts_tracks([info])[0]
        return await asyncio.to_thread(fragment_packets, track, at, moof, mdat, pcr=True)

    def _epoch(self, request: Request, source: AnySource) -> list[tuple[bytes, bytes]]:
        """The epoch header of a live point's media, when a front asked (workers/board.py)."""
        if isinstance(source, _LiveSource):
            return board_header(self.delivery.board, request.scope, source.point.path,
                                source.presentation, fragment=True)
        return []

    async def _send_media(self, send: Send, pieces: list[bytes], extension: str,
                          source: AnySource, head: bool, epoch: list[tuple[bytes, bytes]]
                          ) -> int:
        hls = extension in ("ts",) or (extension == "m4s" and source.hls is not None)
        cache = IMMUTABLE
        if hls and source.hls is not None and not source.hls.allow_caching and extension == "ts":
            cache = b"no-store"
        headers = [*CORS, (b"cache-control", cache),
                   (b"content-type", CONTENT_TYPES[extension]),
                   (b"content-length", str(sum(len(p) for p in pieces)).encode()), *epoch]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if head:
            await send({"type": "http.response.body", "body": b""})
            return 200
        for position, piece in enumerate(pieces):
            await send({"type": "http.response.body", "body": piece,
                        "more_body": position < len(pieces) - 1})
        return 200

    # -- keys ----------------------------------------------------------------------------------

    def _expiry(self) -> int:
        now = int(self._clock())
        return (now // TOKEN_PERIOD + 2) * TOKEN_PERIOD

    def _token(self, point: str, number: int, expiry: int) -> str:
        message = f"{point.lower()}\n{number}\n{expiry}".encode()
        signature = hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]
        return f"{expiry}-{signature}"

    def _key_bytes(self, source: AnySource, point: str, number: int) -> bytes:
        """Key ``number`` of the point: its configured Key, or one derived from it per
        rotation period (HMAC), so every server process agrees without storing keys."""
        configured = source.hls.key if source.hls is not None else None
        if configured:
            base = bytes.fromhex(configured)
        else:  # encryption on, no key stored (settings written by hand): derive one
            base = hmac.new(self._secret, point.lower().encode(), hashlib.sha256).digest()[:16]
        if number == 0:
            return base  # the first period's key is the Key the settings show
        return hmac.new(base, b"key %d" % number, hashlib.sha256).digest()[:16]

    async def _key(self, request: Request, send: Send, source: AnySource, found: OutputRoute,
                   head: bool) -> int:
        if source.hls is None or not source.hls.encryption_enabled:
            return await self._missing(send, head)
        token = (parse_qs(request.scope.get("query_string", b"").decode("latin-1"))
                 .get("token", [""])[0])
        expiry_text, _, _ = token.partition("-")
        valid = expiry_text.isdigit() and int(expiry_text) >= self._clock() and \
            hmac.compare_digest(token, self._token(found.point, found.key, int(expiry_text)))
        if not valid:
            log.info("key %d of %s refused: %s token", found.key, found.point,
                     "expired" if expiry_text.isdigit() else "bad")
            await respond(send, 403, b"forbidden\n", b"text/plain", [*CORS, *NO_STORE],
                          head=head)
            return 403
        await respond(send, 200, self._key_bytes(source, found.point, found.key),
                      CONTENT_TYPES["key"], [*CORS, (b"cache-control", b"private, no-store")],
                      head=head)
        return 200


def _output_of(found: OutputRoute) -> str:
    """The ``output`` label of a request: the document or media kind asked for."""
    dash = found.format in DASH_FORMATS
    if found.kind in ("manifest", "playlist"):
        return DASH_MPD if dash else HLS_PLAYLIST
    if found.kind == "key":
        return KEY
    return DASH_SEGMENT if dash else HLS_SEGMENT


@functools.lru_cache(maxsize=1024)  # HlsSettings are frozen values
def _options(hls: HlsSettings | None) -> HlsOptions:
    if hls is None:
        return HlsOptions()
    rotation = getattr(hls, "key_rotation", None)
    return HlsOptions(
        max_bit_rate=hls.max_bit_rate, include_codecs=hls.include_codecs,
        allow_caching=hls.allow_caching, encrypted=hls.encryption_enabled,
        key_rotation=rotation.ticks / 10_000_000 if rotation is not None else 0.0)

