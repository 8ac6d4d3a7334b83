"""The DVR window read back from an archive (after a restart): what was stored comes
back, cut to the window, served from the archive files byte for byte."""

from __future__ import annotations

import dataclasses

from smoothlive.archive.restore import _as_sent, read_window
from smoothlive.archive.writer import SegmentedArchive
from smoothlive.pubpoint.presentation import ManifestSettings, Presentation
from tests.unit.test_archive_writer import FRAGMENTS, TRACKS, _write

SECOND = 10_000_000


def _archived(tmp_path, segment_ticks=0):
    folder = tmp_path / "20261202T000000Z"
    archive = SegmentedArchive(folder, "live", segment_ticks)
    _write(archive)
    archive.flush()
    archive.close()
    return folder


def test_the_whole_archive_comes_back_and_reads_the_same(tmp_path):
    folder = _archived(tmp_path, 2 * SECOND)  # in segments: each its own .ism
    window = read_window([folder], 0)
    assert {info.kind for info, _ in window.tracks} == {info.kind for info in TRACKS}
    presentation = Presentation(ManifestSettings(), tmp_path / "spool")
    assert presentation.restore(window.tracks) == len(FRAGMENTS)
    for data in FRAGMENTS:
        info = next(i for i in TRACKS if i.track_id == data.track_id)
        level, fragment = presentation.find(info.name, info.bitrate, data.time)
        assert fragment is not None and fragment.mdat is None  # on disk only
        received, _, mdat = level.read_back(fragment, level.following(data.time))
        assert (received, mdat) == (data.moof, data.mdat)
    video = presentation.stream_indexes["video"]
    times = sorted(d.time for d in FRAGMENTS if d.track_id == video.levels[0].info.track_id)
    assert [t for t, _ in video.chunks] == times
    # The newest fragments name no successor yet: they wait for the encoder (412).
    newest = video.levels[0].fragments[times[-1]]
    assert not newest.has_successor and not newest.complete
    assert video.levels[0].fragments[times[0]].complete


def test_only_the_window_comes_back(tmp_path):
    folder = _archived(tmp_path)
    window = read_window([folder], 2 * SECOND)
    for _, fragments in window.tracks:
        end = max(f.time for f in fragments)
        assert fragments and all(f.time >= end - 2 * SECOND for f in fragments)
        assert len(fragments) < len([d for d in FRAGMENTS])


def test_a_track_comes_back_as_its_encoder_names_it():
    audio = next(i for i in TRACKS if i.kind == "audio")
    archived = dataclasses.replace(audio, name="audio_eng", language="eng")
    assert _as_sent(archived).name == "audio"
    assert _as_sent(audio) == audio


def test_no_archive_no_window(tmp_path):
    assert read_window([tmp_path / "gone"], 0).tracks == []
