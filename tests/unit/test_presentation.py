"""The live store: memory bounded by LiveCacheLength, the DVR window, late resends.

Fed with the video track of a real ffmpeg ingest capture (1-second fragments).
"""

from __future__ import annotations

from pathlib import Path

from smoothlive.pubpoint.presentation import ManifestSettings, Presentation
from tests.unit.test_archive_writer import FRAGMENTS, TRACKS

SECOND = 10_000_000
VIDEO = next(info for info in TRACKS if info.kind == "video")
VIDEO_FRAGMENTS = [d for d in FRAGMENTS if d.track_id == VIDEO.track_id]


def _fed(tmp_path: Path, **settings):
    presentation = Presentation(ManifestSettings(**settings), tmp_path / "spool")
    level = presentation.level_for(VIDEO)
    level.feeders = 1
    return presentation, level


def test_memory_holds_only_the_live_cache_and_the_rest_reads_from_the_spool(tmp_path):
    presentation, level = _fed(tmp_path, live_cache=2 * SECOND)
    for data in VIDEO_FRAGMENTS:
        assert presentation.add_fragment(level, data, 0) is not None
    edge = presentation.live_edge(presentation.index_of(level))
    in_memory = [t for t in level.times if level.fragments[t].mdat is not None]
    assert in_memory == [t for t in level.times if t >= edge - 2 * SECOND]
    assert len(in_memory) < len(level.times)
    for data in VIDEO_FRAGMENTS:
        fragment = level.fragments[data.time]
        mdat = fragment.mdat if fragment.mdat is not None else level.read_mdat(fragment)
        assert mdat == data.mdat


def test_the_window_slides_and_a_resend_from_before_it_is_dropped(tmp_path):
    presentation, level = _fed(tmp_path, window=3 * SECOND, live_cache=SECOND)
    for data in VIDEO_FRAGMENTS:
        presentation.add_fragment(level, data, 0)
    index = presentation.index_of(level)
    first = index.chunks[0][0]
    assert first > 0 and level.times[0] == first
    assert presentation.live_edge(index) - first <= 4 * SECOND
    before = level.duplicates
    assert presentation.add_fragment(level, VIDEO_FRAGMENTS[0], 0) is None
    assert level.duplicates == before + 1
    assert VIDEO_FRAGMENTS[0].time not in level.fragments


def test_a_late_fragment_is_stored_and_readable(tmp_path):
    presentation, level = _fed(tmp_path, live_cache=SECOND)
    late = VIDEO_FRAGMENTS[2]
    for data in VIDEO_FRAGMENTS:
        if data is not late:
            presentation.add_fragment(level, data, 0)
    stored = presentation.add_fragment(level, late, 0)
    assert stored is not None and level.times == sorted(level.times)
    mdat = stored.mdat if stored.mdat is not None else level.read_mdat(stored)
    assert mdat == late.mdat


def test_beyond_the_live_cache_only_the_index_stays_and_moofs_read_back_the_same(tmp_path):
    """Past LiveCacheLength a fragment keeps neither media nor moof in memory; read
    back, it is byte for byte what was served while it was in memory."""
    served = {}
    presentation, level = _fed(tmp_path, live_cache=2 * SECOND, lookahead=1)
    for data in VIDEO_FRAGMENTS:
        presentation.add_fragment(level, data, 0)
        for time, fragment in level.fragments.items():
            if fragment.complete and fragment.served_moof:
                served[time] = fragment.served_moof
    evicted = [t for t in level.times if level.fragments[t].mdat is None]
    assert evicted
    for time in evicted:
        fragment = level.fragments[time]
        assert fragment.moof == b"" and fragment.served_moof == b""
        received, moof, mdat = level.read_back(fragment, level.following(time))
        assert moof == served[time]
        data = next(d for d in VIDEO_FRAGMENTS if d.time == time)
        assert mdat == data.mdat and received == data.moof
