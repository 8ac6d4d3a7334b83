"""HLS segments: whole fragments grouped to SegmentLength, on one shared timeline.

Smooth and DASH list every fragment; HLS lists segments of about
SegmentLength (IIS default 10 s), each made of whole fragments so that it
starts on a keyframe (every Smooth fragment does: MS-SSTR requires it, and
encoders pushing with ``frag_keyframe`` do). The cut points come from one
reference StreamIndex (the first video one): a fragment starts a new segment
when the open segment already lasts SegmentLength, when the timeline jumps
(an encoder restart: a discontinuity), or when there is a gap (also a
discontinuity: RFC 8216 §4.3.2.3 requires one where timestamps are not
continuous). Every other StreamIndex (audio renditions) takes, for each
segment, its chunks that start within the segment's span, so all media
playlists share sequence numbers and boundaries.

Sequence numbers count from the first segment of the presentation and never
change; ``trim`` drops segments that left the DVR window and counts the
discontinuities that went with them (EXT-X-DISCONTINUITY-SEQUENCE). A live
segment is listed only once closed (the next segment has begun), so a
playlist never lists a segment that can still grow. Sans-IO, fed once per
published fragment.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Segment:
    sequence: int
    start: int  # ticks of the reference StreamIndex's timescale
    end: int  # where its last fragment ends
    discontinuity: bool = False  # EXT-X-DISCONTINUITY before it

    @property
    def duration(self) -> int:
        return self.end - self.start


class Segmenter:
    """Cuts the reference timeline into segments as its chunks are published."""

    def __init__(self, target: int, timescale: int) -> None:
        if target <= 0:
            raise ValueError("segment length must be positive")
        self.target = target
        self.timescale = timescale
        self.tolerance = max(1, timescale // 100)  # 10 ms: rounding, not a gap
        self.closed: list[Segment] = []
        self._open: tuple[int, int, bool] | None = None  # start, end, discontinuity
        self._next = 0
        self.dropped_discontinuities = 0
        self._last_time = -1

    def add(self, time: int, duration: int, discontinuity: bool = False) -> None:
        """A chunk of the reference StreamIndex was published (in time order)."""
        if time <= self._last_time:
            return  # already seen
        self._last_time = time
        if self._open is None:
            first = not self.closed and self._next == 0
            self._open = (time, time + duration, discontinuity and not first)
            return
        start, end, flagged = self._open
        gap = abs(time - end) > self.tolerance
        if discontinuity or gap or time - start >= self.target - self.tolerance:
            self._close()
            self._open = (time, time + duration, discontinuity or gap)
        else:
            self._open = (start, time + duration, flagged)

    def extend(self, chunks: Iterable[tuple[int, int]], discontinuities: frozenset[int] | set[int]
               = frozenset()) -> None:
        for time, duration in chunks:
            self.add(time, duration, time in discontinuities)

    def _close(self) -> None:
        if self._open is None:
            return
        start, end, flagged = self._open
        self.closed.append(Segment(self._next, start, end, flagged))
        self._next += 1
        self._open = None

    def finish(self) -> None:
        """The presentation stopped: the open segment is whole."""
        self._close()

    def trim(self, before: int) -> None:
        """Drop segments that start before ``before`` (they left the DVR window)."""
        cut = 0
        while cut < len(self.closed) and self.closed[cut].start < before:
            cut += 1
        if cut:
            self.dropped_discontinuities += sum(s.discontinuity for s in self.closed[:cut])
            del self.closed[:cut]

    def segments(self) -> list[Segment]:
        return list(self.closed)

    def find(self, start: int) -> Segment | None:
        """The closed segment that starts at ``start``."""
        index = bisect.bisect_left(self.closed, start, key=lambda segment: segment.start)
        if index < len(self.closed) and self.closed[index].start == start:
            return self.closed[index]
        return None


def segments_of(chunks: Sequence[tuple[int, int]], target: int, timescale: int,
                discontinuities: frozenset[int] | set[int] = frozenset(),
                finished: bool = True) -> Segmenter:
    """A segmenter fed a whole timeline at once (on-demand presentations)."""
    segmenter = Segmenter(target, timescale)
    segmenter.extend(chunks, discontinuities)
    if finished:
        segmenter.finish()
    return segmenter


def chunks_within(chunks: Sequence[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The chunks of a StreamIndex that start in ``[start, end)`` (same timescale)."""
    times = _Times(chunks)
    first = bisect.bisect_left(times, start)
    last = bisect.bisect_left(times, end)
    return list(chunks[first:last])


def rescale(value: int, source: int, target: int) -> int:
    """A time from one timescale to another, exact for equal scales."""
    return value if source == target else value * target // source


class _Times(Sequence[int]):
    """The start times of a chunk list, as a sequence bisect can search without a copy."""

    __slots__ = ("_chunks",)

    def __init__(self, chunks: Sequence[tuple[int, int]]) -> None:
        self._chunks = chunks

    def __len__(self) -> int:
        return len(self._chunks)

    def __getitem__(self, index):  # type: ignore[override]
        return self._chunks[index][0]
