"""A running publishing point: its encoder streams and its presentation.

``LivePoint`` is what the ingest handler talks to: it maps each encoder
stream's tracks to QualityLevels, hands fragments to the presentation, and
tells the registry when the point's state must move: the first fragment
(Starting -> Started), every stream ended with an end of stream (-> Stopped),
or every stream lost without one for longer than the reconnect grace period
(-> Stopped: a network blip does not end an event).

With Archive enabled it also writes every stored fragment to the archive
(:mod:`smoothlive.archive.writer`) as it is stored, flushes it to disk once a
second from a worker thread, and finishes it when the point stops.

A write that fails (full disk, file too large, folder not writable, I/O
error), to the archive or to the spool, at the first write, mid-event, at the
once-a-second fsync or when the archive is finished, moves the point to Error
with the OS error as LastError, logged once. A point in Error takes no input:
its encoders' POSTs are ended, and the presentation stays watchable as it was
(no longer live), from memory and from the files already written. The archive
is finished as far as it was written; if even that fails, it is finished again
when the point is shut down (Error -> Idle, once space is back), else repaired
at the next start of the server.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import shutil
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from smoothlive.archive.restore import read_window
from smoothlive.archive.writer import (
    ArchiveError,
    ArchiveJournal,
    SegmentedArchive,
    file_name,
    recover,
)
from smoothlive.management.durations import Duration
from smoothlive.management.errors import E_FAIL
from smoothlive.management.settings import (
    HLS_SEGMENT_LENGTH_DEFAULT,
    SINK_NAMES,
    Settings,
    hls_module,
    outputs_of,
)
from smoothlive.management.statistics import (
    InputStreamStatistics,
    OutputStreamStatistics,
    RateMeter,
    TrackStatistics,
)
from smoothlive.media.model import FragmentData, TrackInfo
from smoothlive.metrics import (
    ARCHIVE_FLUSH,
    INGEST_BYTES,
    INGEST_DUPLICATES,
    INGEST_FRAGMENTS,
    INGEST_LATE,
    PUBLISH_LATENCY,
    LatencySummary,
    summarize,
)
from smoothlive.pubpoint.presentation import (
    ManifestSettings,
    Presentation,
    QualityLevel,
    SpoolError,
)
from smoothlive.pubpoint.states import Event

log = logging.getLogger("smoothlive.live")

ARCHIVE_FLUSH_SECONDS = 1.0
LATENCY_WINDOW = 1024  # publish latencies kept per point for its p50/p99/max
# HRESULT_FROM_WIN32 for the OS error that broke the archive: what IIS reports as LastError.
# ENOSPC, EDQUOT: ERROR_DISK_FULL; EACCES, EPERM, EISDIR: ERROR_ACCESS_DENIED;
# EROFS: ERROR_WRITE_PROTECT; ENOENT, ENOTDIR: ERROR_PATH_NOT_FOUND;
# EFBIG (over the file system's or the process's file size limit): ERROR_FILE_TOO_LARGE;
# EIO: ERROR_IO_DEVICE.
_WIN32_ERRORS = {28: 112, 122: 112, 13: 5, 1: 5, 21: 5, 30: 19, 2: 3, 20: 3, 27: 223,
                 5: 1117}


def hresult_of(exc: OSError) -> int:
    """An OSError as an HRESULT (``0x8007xxxx``), as LastError reports it."""
    code = _WIN32_ERRORS.get(exc.errno or 0, 0x1F)  # ERROR_GEN_FAILURE
    return 0x80070000 | code

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
    chunks: int = 0  # body messages received: their size tells the cost per byte
    fragments: int = 0
    last_fragment_at: float = 0.0
    ended: bool = False
    open: bool = True
    stopped: bool = False  # the point was stopped: the handler ends the POST
    event_id: str | None = None  # Events(<EventID>) of the ingest URL


def manifest_settings(settings: Settings) -> ManifestSettings:
    client = settings.client_connections
    return ManifestSettings(
        version=client.client_manifest_version,
        lookahead=settings.look_ahead_chunks,
        window=client.window_length.ticks,
        live_cache=client.live_cache_length.ticks or 120 * 10_000_000,
        duration=settings.estimated_duration.ticks,
        hls_segment=_hls_segment_length(settings).ticks,
    )


def _hls_segment_length(settings: Settings) -> Duration:
    module = hls_module(settings)
    hls = module.hls if module is not None else None
    return hls.segment_length if hls is not None else HLS_SEGMENT_LENGTH_DEFAULT


class LivePoint:
    def __init__(
        self,
        path: str,
        settings: Settings,
        spool_dir: Path,
        on_event: Callable[[Event, int | None], Awaitable[None]],
        reconnect_grace: float = 30.0,
        archive_base: Path | None = None,
        journal: ArchiveJournal | None = None,
        on_change: Callable[[], None] | None = None,
        on_archive: Callable[[Path], None] | None = None,
    ) -> None:
        self.path = path
        # Told the folder of each archive opened (the registry keeps it, to read the
        # DVR window back from it after a restart).
        self.on_archive = on_archive or (lambda folder: None)
        # Told whenever what players read may have changed (see Registry.on_change).
        self.on_change = on_change or (lambda: None)
        self.settings = settings
        self.outputs = outputs_of(settings)  # Smooth, HLS, DASH: which are on
        self.spool_dir = spool_dir
        self.presentation = Presentation(manifest_settings(settings), spool_dir)
        self.streams: dict[int, IngestStream] = {}
        self.history: list[IngestStream] = []  # every stream since the start, for statistics
        self._on_event = on_event
        self.reconnect_grace = reconnect_grace
        self._grace: asyncio.TimerHandle | None = None
        self.started_live = False
        self.waiters: set[asyncio.Future[None]] = set()
        # The archive: its base folder (<archives>/<point path>), the one being written.
        self._archive_home = archive_base if settings.archive.enabled else None
        self.archive_base = self._archive_home
        # The last finish of an archive: its folder if it was left unfinished, else None.
        self.archive_done: asyncio.Task[Path | None] | None = None
        self._finishing: list[asyncio.Task[Path | None]] = []  # every finish started
        self.archive_retry: asyncio.Task[None] | None = None  # at shut down, after a failure
        # A write failed: the error (the first one), and the move to Error.
        self.failure: Exception | None = None
        self.archive_failure: asyncio.Task[None] | None = None
        self._halted = False
        self.journal = journal
        self.archive: SegmentedArchive | None = None
        self._flusher: asyncio.Task[None] | None = None
        # Metrics: the label values of each level's series, made once per level.
        self._track_keys: dict[QualityLevel, tuple[str, str, int]] = {}
        self.publish_latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    # -- streams ---------------------------------------------------------------

    def open_stream(self, stream_id: str, source_ip: str,
                    event_id: str | None = None) -> IngestStream:
        stream = IngestStream(stream_id, source_ip, event_id=event_id)
        stream.stopped = self._halted  # in Error, before the registry says so: no input
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
            if self.failure is not None:
                break
            try:
                level = self.presentation.level_for(info)
            except SpoolError as exc:
                self._fail(exc)
                break
            level.feeders += 1
            stream.levels[info.track_id] = level
            if level not in self._track_keys:  # its series exist from now on, at zero
                key = self._track_keys[level] = (self.path, level.stream_index, level.bitrate)
                for counter in (INGEST_FRAGMENTS, INGEST_BYTES, INGEST_DUPLICATES, INGEST_LATE):
                    counter.inc(key, 0)
            self._archive_track(stream, level)
        self._halt_if_failed()

    async def fragment(self, stream: IngestStream, data: FragmentData,
                       arrived: float | None = None) -> None:
        """One fragment of ``stream``; ``arrived`` is when its last byte was received
        (``time.monotonic()``; now if not given), for the publish latency."""
        if self.failure is not None:
            return  # in Error: no input is taken, the POST is being ended
        level = stream.levels.get(data.track_id)
        if level is None:
            raise ValueError(f"fragment of track {data.track_id}, which the moov did not declare")
        first = data.track_id not in stream.first_seen
        stream.first_seen.add(data.track_id)
        offset = self.presentation.admit_time(level, data.time, first)
        version = self.presentation.version
        duplicates, late = level.duplicates, level.late
        try:
            stored = self.presentation.add_fragment(
                level, data, offset, time.monotonic() if arrived is None else arrived)
        except SpoolError as exc:  # nothing was stored
            self._fail(exc)
            self._halt_if_failed()
            return
        if self.presentation.published:
            self._observe_published()
        key = self._track_keys[level]
        INGEST_FRAGMENTS.inc(key)
        INGEST_BYTES.inc(key, data.size)
        if level.duplicates != duplicates:
            INGEST_DUPLICATES.inc(key)
        if level.late != late:
            INGEST_LATE.inc(key)
        if self.presentation.version != version:
            self._published(self.presentation.index_of(level))
            self.on_change()  # before any await: no cache may serve the old list after this
        now = time.monotonic()
        stream.fragments += 1
        stream.last_fragment_at = now
        meter = stream.meters.setdefault(data.track_id, TrackMeter())
        meter.last_time = stored.time if stored is not None else data.time + offset
        meter.last_duration = data.duration
        meter.last_arrival = now
        meter.incoming.hit(now, data.size)
        if self.failure is not None:  # the archive failed while taking this fragment
            self._halt_if_failed()
            return
        if stored is not None and not self.started_live and self._any_published():
            self.started_live = True
            await self._on_event(Event.FIRST_FRAGMENT, None)
        self._wake()

    def _published(self, index) -> None:
        """Tie media time to the wall clock (DASH availability, HLS PROGRAM-DATE-TIME):
        the first published chunk ended now."""
        now = time.time()
        presentation = self.presentation
        presentation.published_at = now
        if presentation.anchor is None and index.chunks:
            edge = presentation.live_edge(index)
            presentation.anchor = now - edge / index.timescale

    def _observe_published(self) -> None:
        """The fragments whose chunks were just listed: their ingest-to-publish latency."""
        now = time.monotonic()
        latencies = self.publish_latencies
        for _level, arrived in self.presentation.published:
            latency = now - arrived
            PUBLISH_LATENCY.observe((), latency)
            latencies.append(latency)
        self.presentation.published.clear()

    def latency_summary(self) -> LatencySummary | None:
        """p50/p99/max of the last LATENCY_WINDOW publish latencies (None before any)."""
        return summarize(self.publish_latencies)

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
        if not self._halted:  # in Error what is listed stays as it was: no chunk that
            self.presentation.refresh()  # a level failed to store gets listed now
        if self.presentation.published:
            self._observe_published()
        self._wake()
        if self.streams or stream.stopped:
            return
        if ended:
            await self._on_event(Event.SOURCE_ENDED, None)
        else:
            loop = asyncio.get_running_loop()
            self._grace = loop.call_later(
                self.reconnect_grace, lambda: asyncio.ensure_future(self._grace_over()))

    async def _grace_over(self) -> None:
        self._grace = None
        if not self.streams:
            log.info("%s: no encoder came back within %.0f s: stopping", self.path,
                     self.reconnect_grace)
            await self._on_event(Event.SOURCE_ENDED, None)

    # -- statistics --------------------------------------------------------------

    def statistics(self, now: float) -> tuple[list, list]:
        """InputStreams and OutputStreams as measured now."""
        outputs = self.outputs
        switches = {"smooth": outputs.smooth, "hls": outputs.hls is not None,
                    "dash": outputs.dash}
        sinks = tuple(SINK_NAMES[name] for name, on in switches.items() if on) \
            if self.settings.client_connections.enabled else ()
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
        """The archive file of a QualityLevel (empty when not archiving), within its
        archive folder (``20261202T101500Z/video_300000.ismv``): never a server path."""
        if level is None or self.archive is None:
            return ""
        return f"{self.archive.folder.name}/{file_name(level.stream_index, level.bitrate)}"

    # -- the archive -------------------------------------------------------------

    def restore_window(self, folders: list[Path], live: bool = True) -> int:
        """Read the DVR window back from the archives this point was writing before the
        server restarted (blocking: at start); how many fragments. ``live`` False: the
        point had stopped, its presentation stays watchable as it was."""
        window = read_window(folders, self.presentation.settings.window)
        presentation = self.presentation
        count = presentation.restore(window.tracks)
        if not count:
            return 0
        reference = presentation.stream_indexes.get(presentation.reference or "")
        if reference is not None and reference.chunks:
            # Media time tied to the wall clock again: the newest fragment came when the
            # archive was last written (DASH availability, HLS PROGRAM-DATE-TIME).
            presentation.anchor = (window.written
                                   - presentation.live_edge(reference) / reference.timescale)
            presentation.published_at = window.written
        if not live:
            presentation.end_live()
        self.on_change()
        log.info("%s: %d fragments of the DVR window read back from its archive",
                 self.path, count)
        return count

    def _archive_track(self, stream: IngestStream, level: QualityLevel) -> None:
        if self.archive_base is None:
            return
        try:
            if self.archive is None:
                self._open_archive(stream.event_id)
            assert self.archive is not None
            self.archive.add_track(level.stream_index, level.info)
            level.store = self._archive_store(level)
        except (OSError, ValueError) as exc:  # OSError: the journal's entry too
            self._archive_failed(exc)

    def _open_archive(self, event_id: str | None) -> None:
        assert self.archive_base is not None
        archive = self.settings.archive
        if archive.use_event_id_on_path and event_id:
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in event_id)[:100]
            name = name.lstrip(".") or "event"
        else:
            name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        folder = self.archive_base / name
        serial = 1
        while folder.exists():  # a restart, a second event of the same second or EventID
            serial += 1
            folder = self.archive_base / f"{name}-{serial}"
        self.archive = SegmentedArchive(folder, _stem(self.path), archive.segment_length.ticks)
        if self.journal is not None:
            self.journal.opened(folder)
        self.on_archive(folder)
        self._flusher = asyncio.get_running_loop().create_task(self._flush_archive())
        log.info("%s: archiving to %s", self.path, folder)

    def _archive_store(self, level: QualityLevel
                       ) -> Callable[[int, bytes, bytes], tuple[Path, int] | None]:
        """Where ``level`` writes a new fragment: the archive, which then also serves the
        DVR window from disk (no spool copy); None falls back to the spool."""
        def store(at: int, moof: bytes, mdat: bytes) -> tuple[Path, int] | None:
            archive = self.archive
            if archive is None:
                return None
            try:
                return archive.add_fragment(level.stream_index, level.bitrate, at,
                                            level.info.timescale, moof, mdat)
            except ArchiveError as exc:
                self._archive_failed(exc)
                return None
        return store

    def _archive_failed(self, exc: Exception) -> None:
        """Stop archiving: the archive is finished as far as it was written. An OSError
        (a write that failed) moves the point to Error (see ``_fail``); a track the
        archive cannot describe (ValueError) only stops archiving: the spool takes
        over and the event goes on."""
        archive, self.archive = self.archive, None
        for index in self.presentation.stream_indexes.values():
            for level in index.levels:
                level.store = None  # the spool again, from the next fragment
        self.archive_base = None
        if self._flusher is not None and self._flusher is not asyncio.current_task():
            self._flusher.cancel()
        self._flusher = None
        if isinstance(exc, OSError):
            self._fail(exc)
        else:
            log.error("%s: archiving stopped: %s", self.path, exc)
        if archive is not None:
            self._finish(archive, report=False, retried=True)

    def _fail(self, exc: Exception) -> None:
        """A write failed: log it once and move the point to Error with the OS error as
        LastError. The caller ends the inputs (``_halt_if_failed``) when it is safe to
        (never from inside the presentation)."""
        if self.failure is not None:
            return  # one line per failure, not one per fragment
        self.failure = exc
        hresult = hresult_of(exc) if isinstance(exc, OSError) else E_FAIL
        log.error("%s: %s; ingest stopped, the point is in Error (LastError 0x%08X), "
                  "players keep what was published", self.path, _cause(exc), hresult)
        self.archive_failure = asyncio.get_running_loop().create_task(
            self._on_event(Event.FAILED, hresult))

    def _halt_if_failed(self) -> None:
        """In Error a point takes no input: end its encoders' POSTs (at their next chunk),
        keep the presentation watchable, no longer live, and finish the archive."""
        if self.failure is None or self._halted:
            return
        self._halted = True
        self.stop_inputs()

    async def _flush_archive(self) -> None:
        """fsync the archive once a second: what a power cut may lose is that second."""
        while True:
            await asyncio.sleep(ARCHIVE_FLUSH_SECONDS)
            archive = self.archive
            if archive is None:
                return
            started = time.monotonic()
            try:
                await asyncio.to_thread(archive.flush)
            except OSError as exc:
                if self.archive is archive:  # not finished or failed meanwhile
                    self._archive_failed(exc)
                    self._halt_if_failed()
                return
            ARCHIVE_FLUSH.observe((), time.monotonic() - started)

    def finish_archive(self, report: bool = True) -> None:
        """The event is over: finish the archive (mfra, .ismc) off the event loop. With
        ``report``, a failure to finish moves the point to Error; without (the point
        is shutting down, the server is stopping), it is logged."""
        archive, self.archive = self.archive, None
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if archive is not None:
            self._finish(archive, report, retried=report)

    def _finish(self, archive: SegmentedArchive, report: bool, retried: bool = False) -> None:
        """Finish ``archive`` in a worker thread; ``archive_done`` gives its folder if it
        was left unfinished (it stays in the journal), else None. ``retried``: a failure
        is tried again when the point is shut down (see ``close``), else at the next
        start of the server only."""
        async def finish() -> Path | None:
            error = await asyncio.to_thread(_finish_archive, archive, self.journal)
            if error is None:
                return None
            if report and self.failure is None:
                self._fail(error)
                self._halt_if_failed()
            else:
                log.warning("%s: archive %s left unfinished (%s): it is %s", self.path,
                            archive.folder, _cause(error),
                            "finished when the point is shut down, or repaired at the next "
                            "start" if retried else "repaired at the next start")
            return archive.folder

        task = self.archive_done = _keep(asyncio.get_running_loop().create_task(finish()))
        self._finishing.append(task)

    async def _finish_again(self, earlier: list[asyncio.Task[Path | None]]) -> None:
        """Shut down after a failure: finish the archives that could not be (space may be
        back), as a restart would; one that still cannot be is left to the next start."""
        results = await asyncio.gather(*earlier, return_exceptions=True)
        for folder in results:
            if not isinstance(folder, Path):
                continue
            error = await asyncio.to_thread(_finish_folder, folder, self.journal)
            if error is None:
                log.info("%s: archive %s finished", self.path, folder)
            else:
                log.warning("%s: archive %s still unfinished (%s): it is repaired at the "
                            "next start", self.path, folder, _cause(error))

    # -- the state machine's work --------------------------------------------------

    def end_inputs(self) -> None:
        """The server is stopping: end every encoder POST at its next chunk, and
        leave the point's state as it is (it comes back Starting after a restart,
        and the encoders' reconnects continue it)."""
        for stream in self.streams.values():
            stream.stopped = True
        self._wake()

    def stop_inputs(self, report: bool = True) -> None:
        """Stopping: end every input, keep the presentation (DVR-only)."""
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        for stream in self.streams.values():
            stream.stopped = True
        self.presentation.end_live()
        self.finish_archive(report)
        self._wake()

    def resume(self) -> None:
        """An encoder came back to a Stopped point (AutoRestartOnEncoderReconnect)."""
        self.presentation.is_live = True
        self.presentation.version += 1
        self.on_change()
        self.started_live = False
        # The next stream's tracks start a new archive presentation (the last
        # one was finished at Stop), and one that failed is tried again.
        self.archive_base = self._archive_home

    def close(self) -> None:
        """ShuttingDown: drop the live presentation and its spool (an archive stays).
        Archives whose finishing failed before are tried again."""
        earlier = list(self._finishing)
        self.stop_inputs(report=False)
        if earlier:
            self.archive_retry = _keep(
                asyncio.get_running_loop().create_task(self._finish_again(earlier)))
        self.presentation.close()
        shutil.rmtree(self.spool_dir, ignore_errors=True)
        for key in self._track_keys.values():  # its series go with its presentation
            for counter in (INGEST_FRAGMENTS, INGEST_BYTES, INGEST_DUPLICATES, INGEST_LATE):
                counter.remove(key)
        self._track_keys.clear()


    # -- waiting for fragments ---------------------------------------------------

    def _wake(self) -> None:
        self.on_change()
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()


def _stem(path: str) -> str:
    """The name archive files take from the point: ``/live/ch1.isml`` -> ``ch1``."""
    name = path.rsplit("/", 1)[-1]
    return name[: -len(".isml")] if name.lower().endswith(".isml") else name


def _finish_archive(archive: SegmentedArchive, journal: ArchiveJournal | None
                    ) -> Exception | None:
    """Finish an archive (in a worker thread): None, or the error that left it
    unfinished (the journal keeps it listed, so the next start repairs it)."""
    try:
        archive.close()
        if journal is not None:
            journal.closed(archive.folder)
    except (OSError, ValueError) as exc:
        return exc
    return None


def _finish_folder(folder: Path, journal: ArchiveJournal | None) -> Exception | None:
    """Finish an archive left unfinished, as the repair after a crash does (in a worker
    thread): None, or the error that still prevents it."""
    try:
        recover(folder, strict=True)
        if journal is not None:
            journal.closed(folder)
    except (OSError, ValueError) as exc:
        return exc
    return None


def _cause(exc: Exception) -> str:
    """An error as the log says it: ``cannot append to archive: No space left on device
    (ENOSPC): /path/video_300000.ismv``."""
    if not isinstance(exc, OSError) or exc.strerror is None:
        return str(exc)
    name = errno.errorcode.get(exc.errno or 0)
    text = f"{exc.strerror} ({name})" if name else exc.strerror
    return f"{text}: {exc.filename}" if exc.filename else text


_tasks: set[asyncio.Task] = set()


def _keep(task: asyncio.Task) -> asyncio.Task:
    """Keep a background task referenced until it is done (the loop holds weak ones)."""
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task
