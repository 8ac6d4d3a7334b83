"""A running publishing point: its encoder streams and its presentation.

``LivePoint`` is what the ingest handler talks to: it maps each encoder
stream's tracks to QualityLevels, hands fragments to the presentation, and
tells the registry when the point's state must move: the first fragment
(Starting -> Started), every stream ended with an end of stream (-> Stopped),
or every stream lost without one for longer than the reconnect grace period
(-> Stopped: a network blip does not end an event).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from smoothlive.management.settings import Settings
from smoothlive.management.statistics import (
    InputStreamStatistics,
    OutputStreamStatistics,
    RateMeter,
    TrackStatistics,
)
from smoothlive.media.model import FragmentData, TrackInfo
from smoothlive.pubpoint.presentation import ManifestSettings, Presentation, QualityLevel
from smoothlive.pubpoint.states import Event

log = logging.getLogger("smoothlive.live")

_serials = itertools.count(1)


@dataclass
class TrackMeter:
    """What the statistics report of one track of one input stream."""

    last_time: int = 0
    last_duration: int = 0
    last_arrival: float = 0.0
    incoming: RateMeter = field(default_factory=RateMeter)  # bytes per second


@dataclass(eq=False)
class IngestStream:
    """One encoder POST: ``Streams(<id>)`` from one source."""

    stream_id: str
    source_ip: str
    serial: int = field(default_factory=lambda: next(_serials))
    started: float = field(default_factory=time.monotonic)
    levels: dict[int, QualityLevel] = field(default_factory=dict)  # track_id -> level
    first_seen: set[int] = field(default_factory=set)  # track_ids that sent a fragment
    meters: dict[int, TrackMeter] = field(default_factory=dict)  # track_id -> meter
    bytes: int = 0
    fragments: int = 0
    last_fragment_at: float = 0.0
    ended: bool = False
    open: bool = True
    stopped: bool = False  # the point was stopped: the handler ends the POST


def manifest_settings(settings: Settings) -> ManifestSettings:
    client = settings.client_connections
    return ManifestSettings(
        version=client.client_manifest_version,
        lookahead=settings.look_ahead_chunks,
        window=client.window_length.ticks,
        live_cache=client.live_cache_length.ticks or 120 * 10_000_000,
        duration=settings.estimated_duration.ticks,
    )


class LivePoint:
    def __init__(
        self,
        path: str,
        settings: Settings,
        spool_dir: Path,
        on_event: Callable[[Event], Awaitable[None]],
        reconnect_grace: float = 30.0,
    ) -> None:
        self.path = path
        self.settings = settings
        self.spool_dir = spool_dir
        self.presentation = Presentation(manifest_settings(settings), spool_dir)
        self.streams: dict[int, IngestStream] = {}
        self.history: list[IngestStream] = []  # every stream since the start, for statistics
        self._on_event = on_event
        self.reconnect_grace = reconnect_grace
        self._grace: asyncio.TimerHandle | None = None
        self.started_live = False
        self.waiters: set[asyncio.Future[None]] = set()

    # -- streams ---------------------------------------------------------------

    def open_stream(self, stream_id: str, source_ip: str) -> IngestStream:
        stream = IngestStream(stream_id, source_ip)
        self.streams[stream.serial] = stream
        self.history.append(stream)
        if len(self.history) > 256:
            self.history = [s for s in self.history if s.open][-256:]
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        return stream

    def movie(self, stream: IngestStream, tracks: list[TrackInfo]) -> None:
        """The stream's moov: each of its tracks feeds a QualityLevel."""
        for level in stream.levels.values():
            level.feeders -= 1
        stream.levels = {}
        for info in tracks:
            level = self.presentation.level_for(info)
            level.feeders += 1
            stream.levels[info.track_id] = level

    async def fragment(self, stream: IngestStream, data: FragmentData) -> None:
        level = stream.levels.get(data.track_id)
        if level is None:
            raise ValueError(f"fragment of track {data.track_id}, which the moov did not declare")
        first = data.track_id not in stream.first_seen
        stream.first_seen.add(data.track_id)
        offset = self.presentation.admit_time(level, data.time, first)
        stored = self.presentation.add_fragment(level, data, offset)
        now = time.monotonic()
        stream.fragments += 1
        stream.last_fragment_at = now
        meter = stream.meters.setdefault(data.track_id, TrackMeter())
        meter.last_time = stored.time if stored is not None else data.time + offset
        meter.last_duration = data.duration
        meter.last_arrival = now
        meter.incoming.hit(now, data.size)
        if stored is not None and not self.started_live and self._any_published():
            self.started_live = True
            await self._on_event(Event.FIRST_FRAGMENT)
        self._wake()

    def _any_published(self) -> bool:
        return any(index.chunks for index in self.presentation.stream_indexes.values())

    async def close_stream(self, stream: IngestStream, ended: bool) -> None:
        if not stream.open:
            return
        stream.open = False
        stream.ended = ended
        self.streams.pop(stream.serial, None)
        for level in stream.levels.values():
            level.feeders -= 1
        self.presentation.refresh()
        self._wake()
        if self.streams or stream.stopped:
            return
        if ended:
            await self._on_event(Event.SOURCE_ENDED)
        else:
            loop = asyncio.get_running_loop()
            self._grace = loop.call_later(
                self.reconnect_grace, lambda: asyncio.ensure_future(self._grace_over()))

    async def _grace_over(self) -> None:
        self._grace = None
        if not self.streams:
            log.info("%s: no encoder came back within %.0f s: stopping", self.path,
                     self.reconnect_grace)
            await self._on_event(Event.SOURCE_ENDED)

    # -- statistics --------------------------------------------------------------

    def statistics(self, now: float) -> tuple[list, list]:
        """InputStreams and OutputStreams as measured now."""
        sinks = ("IIS Smooth Streaming",) if self.settings.client_connections.enabled else ()
        inputs = []
        for stream in self.history:
            tracks = []
            for track_id, level in sorted(stream.levels.items()):
                meter = stream.meters.get(track_id, TrackMeter())
                tracks.append(TrackStatistics(
                    track_id=track_id,
                    name=level.info.kind,
                    encoded_bitrate=level.info.bitrate,
                    incoming_bitrate=int(meter.incoming.rate(now) * 8),
                    wait_seconds=now - meter.last_arrival if meter.last_arrival else 0.0,
                    fragment_timestamp=meter.last_time,
                    fragment_duration=meter.last_duration,
                    request_rate=level.requests.rate(now),
                ))
            first_level = next(iter(stream.levels.values()), None)
            inputs.append(InputStreamStatistics(
                stream_id=stream.stream_id,
                state="Started" if stream.open else "Stopped",
                archive_file_name=self.archive_file_name(first_level),
                source_ip=stream.source_ip,
                sinks=sinks,
                tracks=tuple(tracks),
            ))
        outputs = [
            OutputStreamStatistics(index.name, index.chunks[-1][0])
            for index in self.presentation.stream_indexes.values() if index.chunks
        ]
        return inputs, outputs

    def archive_file_name(self, level: QualityLevel | None) -> str:
        """The archive file of a QualityLevel (empty when not archiving)."""
        if level is None or not self.settings.archive.enabled:
            return ""
        return f"{level.stream_index}_{level.bitrate}.ismv"

    # -- the state machine's work --------------------------------------------------

    def stop_inputs(self) -> None:
        """Stopping: end every input, keep the presentation (DVR-only)."""
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        for stream in self.streams.values():
            stream.stopped = True
        self.presentation.end_live()
        self._wake()

    def resume(self) -> None:
        """An encoder came back to a Stopped point (AutoRestartOnEncoderReconnect)."""
        self.presentation.is_live = True
        self.presentation.version += 1
        self.started_live = False

    def close(self) -> None:
        """ShuttingDown: drop the live presentation and its spool (an archive stays)."""
        self.stop_inputs()
        self.presentation.close()
        shutil.rmtree(self.spool_dir, ignore_errors=True)

    # -- waiting for fragments ---------------------------------------------------

    def _wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()
