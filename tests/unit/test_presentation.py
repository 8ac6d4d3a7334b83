"""The live store: memory bounded by LiveCacheLength, the DVR window, late resends.

Fed with the video track of a real ffmpeg ingest capture (1-second fragments).
"""

from __future__ import annotations

import itertools
from dataclasses import replace
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


def _two_bitrates(tmp_path: Path):
    """One point fed two video bitrates at once (the same capture at both)."""
    presentation = Presentation(ManifestSettings(), tmp_path / "spool")
    high = presentation.level_for(VIDEO)
    low = presentation.level_for(replace(VIDEO, bitrate=VIDEO.bitrate // 2))
    high.feeders = low.feeders = 1
    return presentation, high, low


def _listed(presentation: Presentation, level) -> list[int]:
    return [time for time, _ in presentation.index_of(level).chunks]


ALL = [d.time for d in VIDEO_FRAGMENTS]


def test_a_fragment_that_comes_late_is_listed_in_place(tmp_path):
    presentation, level = _fed(tmp_path)
    first, second, *rest = VIDEO_FRAGMENTS
    for data in [first, *rest]:
        presentation.add_fragment(level, data, 0)
    assert second.time not in _listed(presentation, level)  # a gap while it is missing
    version = presentation.version
    presentation.add_fragment(level, second, 0)
    assert _listed(presentation, level) == ALL
    assert presentation.version > version  # every cached document renders again
    assert level.late == 1
    # The fragment before it now names it as its successor.
    assert level.following(first.time)[0] == (second.time, second.duration)
    assert b'<c t="0"' in presentation.manifest() and b' t="' not in presentation.manifest()[
        presentation.manifest().index(b'<c t="0"') + 8:]


def test_a_missing_fragment_is_a_gap_and_the_next_one_carries_its_time(tmp_path):
    presentation, level = _fed(tmp_path)
    missing = VIDEO_FRAGMENTS[2]
    for data in VIDEO_FRAGMENTS:
        if data is not missing:
            presentation.add_fragment(level, data, 0)
    assert _listed(presentation, level) == [t for t in ALL if t != missing.time]
    after = VIDEO_FRAGMENTS[3].time
    assert f'<c t="{after}"'.encode() in presentation.manifest()


def test_a_time_one_bitrate_skipped_is_a_gap_for_all_not_a_stall(tmp_path):
    presentation, high, low = _two_bitrates(tmp_path)
    skipped = VIDEO_FRAGMENTS[1]
    for data in VIDEO_FRAGMENTS:
        presentation.add_fragment(high, data, 0)
        if data is not skipped:
            presentation.add_fragment(low, data, 0)
    assert _listed(presentation, high) == [t for t in ALL if t != skipped.time]
    presentation.add_fragment(low, skipped, 0)  # it was only late
    assert _listed(presentation, high) == ALL


def test_a_chunk_waits_for_a_bitrate_that_has_not_reached_it(tmp_path):
    presentation, high, low = _two_bitrates(tmp_path)
    for data in VIDEO_FRAGMENTS:
        presentation.add_fragment(high, data, 0)
    presentation.add_fragment(low, VIDEO_FRAGMENTS[0], 0)
    assert _listed(presentation, high) == ALL[:1]


def test_a_fragment_overlapping_listed_chunks_is_stored_but_never_listed(tmp_path):
    """A redundant encoder whose fragment boundaries differ (half a fragment off)."""
    presentation, level = _fed(tmp_path)
    off = VIDEO_FRAGMENTS[1]
    for data in VIDEO_FRAGMENTS:
        presentation.add_fragment(level, data, 0)
        if data is off:  # ahead of the live edge, and behind it
            assert presentation.add_fragment(level, off, off.duration // 2) is not None
    assert presentation.add_fragment(level, VIDEO_FRAGMENTS[0], off.duration // 2) is not None
    assert _listed(presentation, level) == ALL
    chunks = presentation.index_of(level).chunks
    assert all(a[0] + a[1] <= b[0] for a, b in itertools.pairwise(chunks))


def test_a_late_fragment_out_of_the_dvr_window_is_not_listed(tmp_path):
    presentation, level = _fed(tmp_path, window=2 * SECOND)
    first, *rest = VIDEO_FRAGMENTS
    for data in rest:
        presentation.add_fragment(level, data, 0)
    presentation.add_fragment(level, first, 0)
    assert first.time not in _listed(presentation, level)
