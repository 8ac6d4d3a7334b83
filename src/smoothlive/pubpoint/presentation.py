"""The live presentation of a publishing point: one store of fragments.

Encoder streams feed tracks; each track is a QualityLevel of a StreamIndex
(``video``, ``audio``, ``audio_eng``...). Two streams carrying the same track
(same kind, name, bitrate and codec data: redundant encoders, or the audio a
multi-bitrate ffmpeg sends in every output) feed one QualityLevel, and a
fragment already stored (same QualityLevel, same time) is dropped: the Azure
ingest rule for retries and redundant encoders.

Times are made safe on the way in: a fragment that starts before zero (AAC
priming: ffmpeg's first audio fragment starts about 21 ms early) is
re-stamped to start at zero, one entirely before zero is dropped, and an
encoder whose timestamps jump back (a restart from zero) is moved onto the
end of the timeline with a discontinuity, so no manifest ever carries a
negative, wrapped or backwards time.

A chunk is listed in its StreamIndex once every QualityLevel being fed has
it (so a player may switch bitrate at any listed chunk). A time one fed
QualityLevel skipped (it already has later fragments) is a gap for all, not
a stall; a fragment that arrives late, after later ones were listed, is
listed in place once every fed QualityLevel has it, as long as it fits the
hole it fills (one overlapping listed chunks, from an encoder whose fragment
boundaries differ, is stored but never listed). HLS segments never change
once listed (RFC 8216 §6.2.2), so a late chunk falls between them and HLS
keeps the gap; Smooth and DASH list it. Everything a
request needs is computed once per fragment, not per request: the fragment
as served (its moof with a TfrfBox naming the following fragments), the
client manifest (cached by version). Sans-IO except for the spool, a file
per QualityLevel that keeps the DVR window on disk: memory holds only the
last LiveCacheLength.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from smoothlive.archive.writer import write_all
from smoothlive.management.statistics import RateMeter
from smoothlive.media.fragments import retimed, with_lookahead
from smoothlive.media.model import FragmentData, TrackInfo
from smoothlive.outputs.segments import Segmenter
from smoothlive.outputs.smooth import ManifestView, StreamIndexView, render_client_manifest

if TYPE_CHECKING:
    from smoothlive.archive.restore import RestoredFragment

log = logging.getLogger("smoothlive.presentation")

# How far ahead of the live edge a fragment request is "due" (412) rather
# than "never coming" (404), in fragment durations.
DUE_FRAGMENTS = 3
# A stream whose first timestamp lies this far behind the live edge is an
# encoder that restarted its clock, not a redundant or resending encoder.
RESTART_BEHIND_FRAGMENTS = 5


class SpoolError(OSError):
    """The spool cannot be written (disk full, folder not writable...): the fragment
    was not stored, and the spool still ends after the last fragment that was."""


@dataclass(slots=True)
class StoredFragment:
    time: int
    duration: int
    moof: bytes  # as received (re-stamped if needed); b"" once complete: served_moof says it all
    mdat: bytes | None  # None once evicted from memory: read from the spool
    spool_offset: int
    size: int  # len(moof) + len(mdat)
    served_moof: bytes = b""  # moof with the TfrfBox of its successors
    complete: bool = False  # its TfrfBox names LookAheadChunks successors: immutable
    has_successor: bool = False  # its TfrfBox names at least one following fragment
    moof_size: int = 0  # of the moof as received: where its mdat starts in the spool
    file: Path | None = None  # where moof and mdat were written, when not in the spool
    # When its last byte arrived (the shell's monotonic clock), until it is published;
    # None when not measured or already reported in Presentation.published.
    arrived: float | None = None


class QualityLevel:
    """One track of a StreamIndex: its fragments in time order."""

    def __init__(self, info: TrackInfo, spool: Path | None, lookahead: int) -> None:
        self.info = info
        self.times: list[int] = []
        self.fragments: dict[int, StoredFragment] = {}
        self.lookahead = lookahead
        self.feeders = 0  # encoder streams currently feeding this track
        self.stream_index = info.name  # the key of its StreamIndex
        self.spool_path = spool
        # Unbuffered: a write that fails leaves no bytes behind in a buffer to be
        # flushed later, where they would shift the offsets of the fragments after.
        try:
            self._spool = open(spool, "ab+", buffering=0) if spool else None  # noqa: SIM115
        except OSError as exc:
            raise SpoolError(exc.errno, f"cannot create the spool: {exc.strerror}",
                             str(spool)) from None
        self._spool_size = self._spool.tell() if self._spool else 0
        self.received = 0  # fragments stored
        self.duplicates = 0  # fragments dropped as already stored
        self.late = 0  # fragments stored after a later one of this track
        self.requests = RateMeter()  # fragment requests per second (RequestRate)
        self.forgotten_before = -1  # fragments before this time left the DVR window
        self._in_memory = 0  # position of the oldest fragment whose mdat may be in memory
        # Writes a new fragment somewhere durable instead of the spool (the archive):
        # (time, moof, mdat) -> (file, offset of the moof), or None to use the spool.
        self.store: Callable[[int, bytes, bytes], tuple[Path, int] | None] | None = None

    @property
    def bitrate(self) -> int:
        return self.info.bitrate

    def add(self, time: int, duration: int, moof: bytes, mdat: bytes,
            arrived: float | None = None) -> StoredFragment | None:
        """Store a fragment; None if one with this time is already stored.

        Raises SpoolError, with nothing stored, when the spool cannot take it."""
        if time in self.fragments or time < self.forgotten_before:
            self.duplicates += 1  # stored already, or resent after it left the DVR window
            return None
        # An archive that takes the fragment keeps it on disk for the DVR window
        # too: one copy of the media on disk, not two.
        where = self.store(time, moof, mdat) if self.store is not None else None
        if where is not None:
            file, offset = where
        else:
            file, offset = None, self._spool_size
            if self._spool is not None:
                self._append(moof, mdat)
        stored = StoredFragment(time, duration, moof, mdat, offset, len(moof) + len(mdat),
                                arrived=arrived, moof_size=len(moof), file=file)
        index = bisect.bisect_left(self.times, time)
        if index < len(self.times):
            self.late += 1
        self.times.insert(index, time)
        if index < self._in_memory:  # late, among fragments already evicted: evict it too
            self._in_memory += 1
            if self._spool is not None:
                stored.mdat = None
        self.fragments[time] = stored
        self.received += 1
        # This fragment and the LookAheadChunks before it get new TfrfBoxes.
        for position in range(max(0, index - self.lookahead), index + 1):
            self._refresh_lookahead(position)
        return stored

    def _append(self, moof: bytes, mdat: bytes) -> None:
        """moof and mdat at the end of the spool, whole, or SpoolError and the spool
        cut back to where it ended (a short write is possible near a full disk)."""
        assert self._spool is not None
        fd = self._spool.fileno()
        try:
            write_all(fd, [moof, mdat])
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._spool_size)
            raise SpoolError(exc.errno, f"cannot write the spool: {exc.strerror}",
                             str(self.spool_path)) from None
        self._spool_size += len(moof) + len(mdat)

    def restore(self, fragments: Iterable[RestoredFragment]) -> int:
        """Fragments read back from the archive after a restart: on disk only, as if
        evicted (their moofs are read back with their successors when asked); how many."""
        added = 0
        for restored in fragments:
            if restored.time in self.fragments:
                continue
            self.fragments[restored.time] = StoredFragment(
                restored.time, restored.duration, b"", None, restored.offset, restored.size,
                moof_size=restored.moof_size, file=restored.file)
            added += 1
        self.times = sorted(self.fragments)
        self._in_memory = len(self.times)
        for position in range(len(self.times)):
            self._refresh_lookahead(position)
        return added

    def _refresh_lookahead(self, position: int) -> None:
        fragment = self.fragments[self.times[position]]
        if not (fragment.moof or fragment.served_moof):
            # Evicted (or read back from an archive): its moof is read back, with its
            # successors then, when asked; what it may be cached as is known now.
            count = min(self.lookahead, len(self.times) - position - 1)
            fragment.complete = count >= self.lookahead
            fragment.has_successor = count > 0
            return
        following = [
            (t, self.fragments[t].duration)
            for t in self.times[position + 1: position + 1 + self.lookahead]
        ]
        fragment.served_moof = with_lookahead(fragment.moof or fragment.served_moof, following)
        fragment.complete = len(following) >= self.lookahead
        fragment.has_successor = bool(following)
        if fragment.complete:
            # Its TfrfBox will not change again: keep one moof, not two (the index
            # of a long DVR window is mostly moofs). with_lookahead(served, []) gives
            # the moof as received back, for outputs that want no TfrfBox.
            fragment.moof = b""

    def evict_memory(self, before: int) -> None:
        """Drop the bytes of fragments older than ``before``, media and moof: they stay
        in the spool or the archive, and what is left is the index entry (a few
        hundred bytes), whatever the DVR window."""
        if self._spool is None:
            return
        # From where the last eviction stopped: the cost is per fragment, not per
        # fragment of the event on every publish.
        times, position = self.times, min(self._in_memory, len(self.times))
        while position < len(times) and times[position] < before:
            fragment = self.fragments[times[position]]
            fragment.mdat = None
            if fragment.complete:  # its TfrfBox is final: rebuilt from the index when read
                fragment.served_moof = b""
            position += 1
        self._in_memory = position
        self._spool.flush()

    def forget(self, before: int) -> None:
        """Drop fragments that left the DVR window."""
        cut = bisect.bisect_left(self.times, before)
        for time in self.times[:cut]:
            del self.fragments[time]
        del self.times[:cut]
        self._in_memory = max(0, self._in_memory - cut)
        self.forgotten_before = max(self.forgotten_before, before)

    def following(self, time: int) -> list[tuple[int, int]]:
        """(time, duration) of the LookAheadChunks fragments after ``time``."""
        position = bisect.bisect_right(self.times, time)
        return [(t, self.fragments[t].duration)
                for t in self.times[position: position + self.lookahead]]

    def read_back(self, fragment: StoredFragment, following: list[tuple[int, int]]
                  ) -> tuple[bytes, bytes, bytes]:
        """(moof as received, moof with its TfrfBox, mdat) of a fragment whose bytes
        left memory, from the archive or the spool (blocking: call in a thread;
        ``following`` is taken on the event loop, from :meth:`following`)."""
        path = fragment.file or self.spool_path
        assert path is not None
        with open(path, "rb") as handle:
            data = os.pread(handle.fileno(), fragment.size, fragment.spool_offset)
        moof = data[: fragment.moof_size]
        return moof, with_lookahead(moof, following), data[fragment.moof_size:]

    def read_mdat(self, fragment: StoredFragment) -> bytes:
        """The media bytes of an evicted fragment, from the archive or the spool
        (blocking: call in a thread)."""
        path = fragment.file or self.spool_path
        assert path is not None
        moof_size = fragment.moof_size
        with open(path, "rb") as handle:
            return os.pread(handle.fileno(), fragment.size - moof_size,
                            fragment.spool_offset + moof_size)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


@dataclass
class StreamIndex:
    kind: str
    name: str
    language: str | None
    timescale: int
    levels: list[QualityLevel] = field(default_factory=list)
    chunks: list[tuple[int, int]] = field(default_factory=list)  # published (time, duration)
    discontinuities: set[int] = field(default_factory=set)  # chunk times after a restart
    epoch: int = 0  # the presentation epoch its last fragment belonged to

    def level(self, bitrate: int) -> QualityLevel | None:
        for level in self.levels:
            if level.bitrate == bitrate:
                return level
        return None


@dataclass(frozen=True, slots=True)
class ManifestSettings:
    version: str = "2.0"
    lookahead: int = 2
    window: int = 0  # ticks, 0: the whole event
    live_cache: int = 120 * 10_000_000  # ticks kept in memory
    duration: int = 0  # EstimatedDuration in ticks
    hls_segment: int = 10 * 10_000_000  # HLS SegmentLength in ticks


class Presentation:
    """All StreamIndexes of one publishing point."""

    def __init__(self, settings: ManifestSettings, spool_dir: Path | None) -> None:
        self.settings = settings
        self.spool_dir = spool_dir
        if spool_dir is not None:
            spool_dir.mkdir(parents=True, exist_ok=True)
        self.stream_indexes: dict[str, StreamIndex] = {}
        self.is_live = True
        self.version = 0
        self._manifest: tuple[int, bytes] | None = None
        self.offset = 0  # added to every encoder time (restarts continue the timeline)
        self.epoch = 0  # counts timeline restarts: the first chunk after one is a discontinuity
        self.on_publish: Callable[[], None] | None = None
        self._view: tuple[int, ManifestView] | None = None
        # HLS segments, cut on the reference StreamIndex (the first video one).
        self.reference: str | None = None
        self.segmenter: Segmenter | None = None
        self.anchor: float | None = None  # wall-clock seconds of media time 0 (set by the shell)
        self.published_at: float | None = None  # wall-clock of the last publish (the shell)
        # (level, arrived) of each measured fragment whose chunk was just listed: the shell
        # drains it after add_fragment/refresh to observe the ingest-to-publish latency.
        self.published: list[tuple[QualityLevel, float]] = []

    # -- tracks --------------------------------------------------------------

    def level_for(self, info: TrackInfo) -> QualityLevel:
        """The QualityLevel fed by this track, made on first sight.

        Tracks of one name but different languages are separate StreamIndexes
        (``audio_eng``, ``audio_fra``): a player picks a language, then a bitrate.
        """
        key = f"{info.name}_{info.language}" if info.language else info.name
        index = self.stream_indexes.get(key)
        if index is None:  # listed below, once its first level has its spool
            index = StreamIndex(info.kind, key, info.language, info.timescale)
        for level in index.levels:
            if level.info.identity == info.identity:
                return level
            if level.bitrate == info.bitrate:
                raise ValueError(
                    f"StreamIndex {info.name} already has a different track at {info.bitrate} bps")
        spool = None
        if self.spool_dir is not None:
            spool = self.spool_dir / f"{info.kind}-{_safe(key)}-{info.bitrate}.spool"
            spool.unlink(missing_ok=True)
        level = QualityLevel(info, spool, self.settings.lookahead)  # may raise SpoolError
        level.stream_index = key
        self.stream_indexes.setdefault(key, index)
        index.levels.append(level)
        index.levels.sort(key=lambda ql: -ql.bitrate)
        self.version += 1
        return level

    def index_of(self, level: QualityLevel) -> StreamIndex:
        return self.stream_indexes[level.stream_index]

    # -- fragments -----------------------------------------------------------

    def live_edge(self, index: StreamIndex) -> int:
        if not index.chunks:
            return 0
        time, duration = index.chunks[-1]
        return time + duration

    def admit_time(self, level: QualityLevel, time: int, first_of_stream: bool) -> int:
        """Decide the offset for a stream's fragments; returns the offset to apply.

        On the first fragment of a new encoder stream, a time far behind the
        live edge (an encoder that restarted its clock) moves the timeline
        offset so the stream continues after the live edge, with a
        discontinuity; a time near the edge (a redundant encoder, a resend)
        keeps the offset, and its fragments already stored are dropped.
        """
        if not first_of_stream:
            return self.offset
        index = self.index_of(level)
        edge = self.live_edge(index)
        shifted = time + self.offset
        typical = index.chunks[-1][1] if index.chunks else 0
        if index.chunks and shifted < edge - RESTART_BEHIND_FRAGMENTS * typical:
            self.offset = edge - time
            self.epoch += 1
            log.info("stream %s restarted its timestamps: continuing at %d", level.info.name, edge)
        return self.offset

    def add_fragment(
        self, level: QualityLevel, fragment: FragmentData, offset: int,
        arrived: float | None = None,
    ) -> StoredFragment | None:
        """Store one fragment from an encoder; None when dropped (duplicate, before zero).

        ``arrived`` (the shell's clock when its last byte came) is handed back in
        ``published`` once the fragment's chunk is listed."""
        time = fragment.time + offset
        duration = fragment.duration
        moof = fragment.moof
        if time < 0:
            if time + duration <= 0:
                return None
            duration += time  # starts at zero, ends where it ended: no overlap with the next
            time = 0
        if time != fragment.time or duration != fragment.duration:
            moof = retimed(moof, time, duration)
        index = self.index_of(level)
        stored = level.add(time, duration, moof, fragment.mdat, arrived)
        if stored is None:
            return None
        if index.epoch != self.epoch:
            index.epoch = self.epoch
            index.discontinuities.add(time)
        if index.chunks and time < index.chunks[-1][0]:
            self._list_late(index, time)
        self._publish(index)
        if stored.arrived is not None and index.chunks and time <= index.chunks[-1][0]:
            # Its chunk was listed before this level had it (the level was not fed
            # then): it is fetchable now, or never if its time was never listed.
            listed = bisect.bisect_left(index.chunks, (time,))
            if listed < len(index.chunks) and index.chunks[listed][0] == time:
                self.published.append((level, stored.arrived))
            stored.arrived = None
        return stored

    @staticmethod
    def _fed(index: StreamIndex) -> list[QualityLevel]:
        return [level for level in index.levels if level.feeders > 0] or index.levels

    def _listed(self, index: StreamIndex, time: int) -> None:
        """The chunk at ``time`` was just listed: its fragments count as published."""
        for level in index.levels:
            stored = level.fragments.get(time)
            if stored is not None and stored.arrived is not None:
                self.published.append((level, stored.arrived))
                stored.arrived = None

    def _publish(self, index: StreamIndex) -> None:
        """List, in order, the chunks after the live edge every fed QualityLevel has."""
        fed = self._fed(index)
        chunks = index.chunks
        tolerance = max(1, index.timescale // 100)  # 10 ms: rounding, not an overlap
        last = chunks[-1][0] if chunks else -1
        floor = chunks[-1][0] + chunks[-1][1] - tolerance if chunks else -1
        reference = min(fed, key=lambda level: len(level.times))
        start = bisect.bisect_right(reference.times, last)
        published = False
        for time in reference.times[start:]:
            if time < floor:
                continue  # overlaps the last listed chunk: other fragment boundaries
            missing = [level for level in fed if time not in level.fragments]
            if missing:
                if all(level.times and level.times[-1] > time for level in missing):
                    continue  # skipped by a level that went on: a gap, unless it comes late
                break  # not there yet
            duration = reference.fragments[time].duration
            chunks.append((time, duration))
            floor = time + duration - tolerance
            published = True
            self._listed(index, time)
        if published:
            if self.reference is None and (index.kind == "video" or not any(
                    i.kind == "video" for i in self.stream_indexes.values())):
                self.reference = index.name
                self.segmenter = Segmenter(
                    max(1, self.settings.hls_segment * index.timescale // 10_000_000),
                    index.timescale)
            if index.name == self.reference and self.segmenter is not None:
                new = bisect.bisect_right(index.chunks, (last, 1 << 64))
                for time, duration in index.chunks[new:]:
                    self.segmenter.add(time, duration, time in index.discontinuities)
            self._trim(index)
            self.version += 1
            if self.on_publish is not None:
                self.on_publish()

    def _list_late(self, index: StreamIndex, time: int) -> None:
        """A fragment older than the live edge: list its chunk in place once every fed
        QualityLevel has it and it fits the hole between its listed neighbours."""
        chunks = index.chunks
        position = bisect.bisect_left(chunks, (time,))
        if position < len(chunks) and chunks[position][0] == time:
            return  # listed already (this level was not fed when it was)
        fed = self._fed(index)
        if not all(time in level.fragments for level in fed):
            return
        duration = fed[0].fragments[time].duration
        tolerance = max(1, index.timescale // 100)
        if position > 0 and sum(chunks[position - 1]) - tolerance > time:
            return  # overlaps the chunk before
        if position < len(chunks) and time + duration - tolerance > chunks[position][0]:
            return  # overlaps the chunk after
        window = self.settings.window
        if window and time < self.live_edge(index) - window:
            return  # already out of the DVR window
        chunks.insert(position, (time, duration))
        self._listed(index, time)
        self.version += 1
        if self.on_publish is not None:
            self.on_publish()

    def restore(self, tracks: Iterable[tuple[TrackInfo, list[RestoredFragment]]]) -> int:
        """The DVR window read back from the archive after a restart (see
        smoothlive.archive.restore): listed as the encoders had it, served from disk;
        an encoder that comes back feeds the same QualityLevels. How many fragments."""
        added = 0
        for info, fragments in tracks:
            try:
                level = self.level_for(info)
            except ValueError as exc:  # two archived tracks that cannot both be levels
                log.warning("not read back: %s", exc)
                continue
            added += level.restore(fragments)
        self.refresh()
        return added

    def refresh(self) -> None:
        """Re-check what can be listed (a feeding stream went away)."""
        for index in self.stream_indexes.values():
            self._publish(index)

    def _trim(self, index: StreamIndex) -> None:
        edge = self.live_edge(index)
        window = self.settings.window
        if window and index.chunks and index.chunks[0][0] < edge - window:
            keep = bisect.bisect_left(index.chunks, (edge - window, -1))
            cut_time = index.chunks[keep][0] if keep < len(index.chunks) else edge
            del index.chunks[:keep]
            for level in index.levels:
                level.forget(cut_time)
            if index.name == self.reference and self.segmenter is not None:
                self.segmenter.trim(cut_time)
        for level in index.levels:
            level.evict_memory(edge - self.settings.live_cache)

    # -- reading -------------------------------------------------------------

    def find(
        self, name: str, bitrate: int, time: int
    ) -> tuple[QualityLevel, StoredFragment | None]:
        index = self.stream_indexes.get(name)
        if index is None:
            raise KeyError(name)
        level = index.level(bitrate)
        if level is None:
            raise KeyError(bitrate)
        return level, level.fragments.get(time)

    def is_due(self, name: str, time: int) -> bool:
        """A fragment not there yet but expected soon (412) rather than never (404)."""
        index = self.stream_indexes.get(name)
        if index is None or not index.chunks or not self.is_live:
            return False
        edge = self.live_edge(index)
        typical = index.chunks[-1][1]
        return edge <= time < edge + DUE_FRAGMENTS * max(typical, 1)

    def manifest(self) -> bytes:
        cached = self._manifest
        if cached is not None and cached[0] == self.version:
            return cached[1]
        body = render_client_manifest(self.view())
        self._manifest = (self.version, body)
        return body

    def view(self) -> ManifestView:
        """What every output renders from, made once per version."""
        cached = self._view
        if cached is not None and cached[0] == self.version:
            return cached[1]
        views = tuple(
            StreamIndexView(
                kind=index.kind,  # type: ignore[arg-type]
                name=index.name,
                tracks=tuple(level.info for level in index.levels),
                chunks=tuple(index.chunks),
                language=index.language,
                timescale=index.timescale,
                discontinuities=frozenset(index.discontinuities),
            )
            for index in self.stream_indexes.values()
            if index.chunks
        )
        view = ManifestView(
            stream_indexes=views,
            is_live=self.is_live,
            version=self.settings.version,
            duration=self.settings.duration if self.is_live else _total(views),
            lookahead_count=self.settings.lookahead,
            dvr_window_length=self.settings.window,
        )
        self._view = (self.version, view)
        return view

    def end_live(self) -> None:
        """Stopped: the presentation stays watchable, no longer live."""
        self.is_live = False
        if self.segmenter is not None:
            self.segmenter.finish()
        self.version += 1

    def close(self) -> None:
        for index in self.stream_indexes.values():
            for level in index.levels:
                level.close()


def _total(views: tuple[StreamIndexView, ...]) -> int:
    ends = [v.chunks[-1][0] + v.chunks[-1][1] - v.chunks[0][0] for v in views if v.chunks]
    return max(ends, default=0)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:64]
