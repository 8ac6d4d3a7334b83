"""The archive writer: files the on-demand reader plays, and repair after a crash.

Fed with the tracks and fragments of a real ffmpeg ingest capture.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from lxml import etree

from smoothlive.archive.ondemand import OnDemandPresentation, parse_ism, read_tfra
from smoothlive.archive.writer import (
    ArchiveError,
    ArchiveJournal,
    ArchiveWriter,
    SegmentedArchive,
    file_name,
    recover,
)
from smoothlive.media.fragments import read_moof
from smoothlive.media.ingest import Fragment, IngestParser, Movie
from smoothlive.media.model import FragmentData, TrackInfo

CAPTURE = Path(__file__).parent.parent / "fixtures" / "ingest" / "ch1-300k.ismv"


def _capture() -> tuple[list[TrackInfo], list[FragmentData]]:
    parser = IngestParser()
    tracks: list[TrackInfo] = []
    fragments: list[FragmentData] = []
    for event in [*parser.feed(CAPTURE.read_bytes()), *parser.close()]:
        if isinstance(event, Movie):
            tracks = list(event.tracks)
        elif isinstance(event, Fragment) and event.data.time >= 0:
            # (ffmpeg's first audio fragment starts before zero: the live
            # presentation re-stamps or drops it before anything is archived)
            fragments.append(event.data)
    return tracks, fragments


TRACKS, FRAGMENTS = _capture()


def _key(info: TrackInfo) -> str:
    return info.name


def _write(writer, fragments=FRAGMENTS) -> None:
    by_id = {info.track_id: info for info in TRACKS}
    for info in TRACKS:
        writer.add_track(_key(info), info)
    for data in fragments:
        info = by_id[data.track_id]
        if isinstance(writer, SegmentedArchive):
            writer.add_fragment(_key(info), info.bitrate, data.time, info.timescale,
                                data.moof, data.mdat)
        else:
            writer.add_fragment(_key(info), info.bitrate, data.time, data.moof, data.mdat)


def _chunks(manifest: bytes) -> dict[str, list[int]]:
    root = etree.fromstring(manifest)
    found = {}
    for si in root.findall("StreamIndex"):
        times, current = [], 0
        for c in si.findall("c"):
            current = int(c.get("t", current))
            times.append(current)
            current += int(c.get("d"))
        found[si.get("Name")] = times
    return found


def test_a_finished_archive_plays_every_fragment_as_ingested(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path / "a", "ch1")
    _write(writer)
    writer.flush()
    writer.close()
    ism = tmp_path / "a" / "ch1.ism"
    document = parse_ism(ism.read_bytes())
    assert {t.src for t in document.tracks} == {
        file_name(info.name, info.bitrate) for info in TRACKS}
    assert document.client_manifest == "ch1.ismc"
    presentation = OnDemandPresentation(ism)
    assert presentation.state.finished
    # The .ismc left beside the .ism is what the reader serves.
    assert (tmp_path / "a" / "ch1.ismc").read_bytes() == presentation.manifest
    listed = _chunks(presentation.manifest)
    by_id = {info.track_id: info for info in TRACKS}
    for data in FRAGMENTS:
        info = by_id[data.track_id]
        assert data.time in listed[info.name]
        moof, where = presentation.fragment(info.name, info.bitrate, data.time)
        assert moof == data.moof
        assert OnDemandPresentation.read(where) == data.mdat


def test_the_mfra_indexes_every_fragment(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, "ch1")
    _write(writer)
    writer.close()
    video = next(info for info in TRACKS if info.kind == "video")
    data = (tmp_path / file_name(video.name, video.bitrate)).read_bytes()
    (mfra_size,) = struct.unpack(">I", data[-4:])
    entries = read_tfra(data[-mfra_size:])
    assert entries is not None
    times = [t for t, _ in entries[video.track_id]]
    assert times == [d.time for d in FRAGMENTS if d.track_id == video.track_id]
    for _, offset in entries[video.track_id]:
        assert data[offset + 4:offset + 8] == b"moof"


def test_a_late_fragment_is_indexed_in_time_order(tmp_path: Path) -> None:
    """Fragments written out of order (a late one): the tfra lists them by time, each at
    its own moof, as players and the on-demand reader need."""
    video = next(info for info in TRACKS if info.kind == "video")
    fragments = [d for d in FRAGMENTS if d.track_id == video.track_id]
    late = fragments.pop(1)
    writer = ArchiveWriter(tmp_path, "ch1")
    _write(writer, [*fragments, late])
    writer.close()
    data = (tmp_path / file_name(video.name, video.bitrate)).read_bytes()
    (mfra_size,) = struct.unpack(">I", data[-4:])
    entries = read_tfra(data[-mfra_size:])[video.track_id]
    assert [t for t, _ in entries] == sorted(d.time for d in [*fragments, late])
    for time, offset in entries:
        moof_size = struct.unpack(">I", data[offset:offset + 4])[0]
        assert read_moof(data[offset:offset + moof_size]).tfxd_time == time


def test_an_archive_being_written_is_already_playable(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, "ch1")
    _write(writer, FRAGMENTS[:4])
    presentation = OnDemandPresentation(tmp_path / "ch1.ism", ttl=0)
    before = sum(len(t) for t in _chunks(presentation.manifest).values())
    assert before >= 1 and not presentation.state.finished
    _write(writer, FRAGMENTS[4:])
    assert presentation.refresh()
    assert sum(len(t) for t in _chunks(presentation.manifest).values()) > before
    writer.close()


def test_duplicates_are_not_written_twice(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, "ch1")
    _write(writer, FRAGMENTS[:6])
    info = next(i for i in TRACKS if i.track_id == FRAGMENTS[0].track_id)
    size = (tmp_path / file_name(info.name, info.bitrate)).stat().st_size
    assert not writer.add_fragment(info.name, info.bitrate, FRAGMENTS[0].time,
                                   FRAGMENTS[0].moof, FRAGMENTS[0].mdat)
    assert (tmp_path / file_name(info.name, info.bitrate)).stat().st_size == size
    writer.close()


@pytest.mark.parametrize("cut", [1, 7, 100, 1000])
def test_recover_cuts_a_torn_tail_and_finishes_the_files(tmp_path: Path, cut: int) -> None:
    writer = ArchiveWriter(tmp_path, "ch1")
    _write(writer)
    writer.flush()
    # A crash: no mfra, no .ismc, and the last fragment of one file half written.
    video = next(info for info in TRACKS if info.kind == "video")
    path = tmp_path / file_name(video.name, video.bitrate)
    last = next(d for d in reversed(FRAGMENTS) if d.track_id == video.track_id)
    with open(path, "ab") as handle:
        handle.write((last.moof + last.mdat)[:cut])
    whole = path.stat().st_size - cut
    repaired = recover(tmp_path)
    assert str(path) in repaired
    data = path.read_bytes()
    (mfra_size,) = struct.unpack(">I", data[-4:])
    assert len(data) == whole + mfra_size  # the torn bytes are gone, an mfra follows
    presentation = OnDemandPresentation(tmp_path / "ch1.ism")
    assert presentation.state.finished
    assert (tmp_path / "ch1.ismc").read_bytes() == presentation.manifest
    times = _chunks(presentation.manifest)[video.name]
    assert times == [d.time for d in FRAGMENTS if d.track_id == video.track_id]
    assert recover(tmp_path) == []  # finished files are left alone
    writer.close()


def test_recover_a_file_cut_inside_the_header(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, "ch1")
    _write(writer, [])
    video = next(info for info in TRACKS if info.kind == "video")
    path = tmp_path / file_name(video.name, video.bitrate)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 10)  # moov torn
    recover(tmp_path)
    presentation = OnDemandPresentation(tmp_path / "ch1.ism")
    assert video.name not in _chunks(presentation.manifest)
    writer.close()


def test_segments_are_separate_presentations(tmp_path: Path) -> None:
    times = sorted({d.time for d in FRAGMENTS})
    span = times[-1] - times[0]
    archive = SegmentedArchive(tmp_path, "ch1", segment_ticks=span // 2 or 1)
    _write(archive)
    archive.flush()
    archive.close()
    segments = sorted(p.name for p in tmp_path.iterdir())
    assert segments[:2] == ["Segment0001", "Segment0002"]
    seen: list[int] = []
    for name in segments:
        presentation = OnDemandPresentation(tmp_path / name / "ch1.ism")
        assert presentation.state.finished
        seen += _chunks(presentation.manifest).get("video", [])
    video_id = next(info.track_id for info in TRACKS if info.kind == "video")
    assert seen == [d.time for d in FRAGMENTS if d.track_id == video_id]


def test_an_unwritable_folder_is_an_archive_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ArchiveError):
        ArchiveWriter(tmp_path / "file" / "below", "ch1")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_an_archive_error_and_leaves_the_file_whole(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, "ch1")
    _write(writer, FRAGMENTS[:2])
    file = next(iter(writer._files.values()))
    size = file.size
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, file.fd)  # the next write fails with ENOSPC
    os.close(full)
    info = file.info
    data = next(d for d in FRAGMENTS[2:] if d.track_id == info.track_id)
    with pytest.raises(ArchiveError) as raised:
        writer.add_fragment(info.name, info.bitrate, data.time, data.moof, data.mdat)
    assert raised.value.errno == 28
    assert file.size == size and file.fragments.find(data.time) is None


def test_the_journal_repairs_what_was_left_open(tmp_path: Path) -> None:
    journal = ArchiveJournal(tmp_path / "journal")
    folder = tmp_path / "archives" / "ev"
    writer = ArchiveWriter(folder, "ch1")
    journal.opened(folder)
    _write(writer)
    assert not (folder / "ch1.ismc").exists()
    assert journal.recover_all() == [folder]
    assert (folder / "ch1.ismc").exists()
    assert OnDemandPresentation(folder / "ch1.ism").state.finished
    assert journal.recover_all() == []
    journal.opened(folder)
    journal.closed(folder)
    assert journal.recover_all() == []
