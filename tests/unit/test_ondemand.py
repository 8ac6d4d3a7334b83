"""On-demand presentations (sans-IO): the .ism, fragment indexes, the client manifest.

The media are slices of a real ffmpeg capture (tests/fixtures/ingest): its
head (ftyp, Live Server Manifest, moov) and moof/mdat pairs, one video and
one audio track, the first audio fragment starting 21 ms before zero as
ffmpeg's AAC priming makes it. Files that are torn, growing or finished are
made by cutting and appending those bytes, and indexed through a reader
that records what it reads.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import struct
from array import array
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from smoothlive.archive.ondemand import (
    IsmDocument,
    IsmTrack,
    OnDemandPresentation,
    TrackFragments,
    index_file,
    listed_time,
    manifest_view,
    parse_ism,
    read_tfra,
    render_ism,
    timeline,
)
from smoothlive.http import ondemand as http_ondemand
from smoothlive.http.messages import Request
from smoothlive.http.ondemand import OnDemandRoute, OnDemandService, ondemand_route, resolve_ism
from smoothlive.media.boxes import box, full_box, iter_boxes
from smoothlive.media.fragments import read_moof, retimed
from smoothlive.media.model import TrackInfo
from smoothlive.outputs.smooth import render_client_manifest

CAPTURE = (Path(__file__).parents[1] / "fixtures" / "ingest" / "ch1-300k.ismv").read_bytes()
BOXES = list(iter_boxes(CAPTURE))
# (moof offset, mdat offset, end) of every fragment, in file order (video, audio, ...)
PAIRS = [(a.offset, b.offset, b.end) for a, b in itertools.pairwise(BOXES)
         if a.type == b"moof" and b.type == b"mdat"]
HEAD = CAPTURE[: PAIRS[0][0]]  # ftyp, Live Server Manifest, moov
BODY_END = PAIRS[-1][2]
VIDEO, AUDIO = 1, 2
VIDEO_TIMES = [0, 10_000_000, 20_000_000, 30_000_000]
AUDIO_TIMES = [0, 10_026_667, 20_053_333, 30_080_000]  # the first starts at -213333 in the file


def moof_of(pair: int) -> bytes:
    start, mdat, _ = PAIRS[pair]
    return CAPTURE[start:mdat]


def fragments_of(track_id: int) -> list[int]:
    """The indexes into PAIRS of one track's fragments."""
    return [i for i in range(len(PAIRS)) if read_moof(moof_of(i)).track_id == track_id]


class Reader:
    """A Reader over bytes that keeps the offsets it was asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    def __call__(self, offset: int, size: int) -> bytes:
        self.reads.append((offset, size))
        return self.data[offset : offset + size]


def index_of(data: bytes, previous=None):
    return index_file(Reader(data), len(data), previous)


# -- the .ism ---------------------------------------------------------------------------------


def test_an_ism_survives_rendering_and_parsing() -> None:
    document = IsmDocument(
        (
            IsmTrack("video", "v 1&2 <hd>.ismv", 3_000_000, 1, name="video"),
            IsmTrack("video", 'v"low".ismv', 300_000, 1, name="video"),
            IsmTrack("audio", "a.ismv", 64_000, 2, name="audio_fr", language="fr",
                     timescale=48_000),
            IsmTrack("text", "t.ismv", 1_000, 3, name="textstream"),
        ),
        client_manifest="clip.ismc",
    )
    rendered = render_ism(document)
    assert parse_ism(rendered) == document
    root = etree.fromstring(rendered)
    assert root.tag == "{http://www.w3.org/2001/SMIL20/Language}smil"
    assert [etree.QName(e).localname for e in root.find("*/{*}switch")] == [
        "video", "video", "audio", "textstream"]


def test_an_ism_without_names_gets_the_iis_defaults() -> None:
    rendered = render_ism(IsmDocument((IsmTrack("audio", "a.ismv", 64_000, 2),)))
    assert b'<param name="trackName" value="audio" valuetype="data"/>' in rendered
    assert b"timescale" not in rendered and b"systemLanguage" not in rendered
    (track,) = parse_ism(rendered).tracks
    assert (track.name, track.timescale, track.language) == ("audio", None, None)


def test_an_ism_is_read_as_iis_writes_it_whatever_the_case() -> None:
    document = b"""<?xml version="1.0" encoding="utf-8"?>
<SMIL xmlns="http://www.w3.org/2001/SMIL20/Language">
  <head><meta name="ClientManifestRelativePath" content="x.ismc"/></head>
  <body><switch>
    <VIDEO src=" x.ismv " systemBitrate="230000">
      <param name="TrackID" value=" 2 " valuetype="data"/>
    </VIDEO>
    <audio src="x.ismv" systemBitrate="64000" systemLanguage="eng">
      <param name="trackID" value="1"/><param name="trackName" value="audio_eng"/>
    </audio>
  </switch></body>
</SMIL>"""
    parsed = parse_ism(document)
    assert parsed.client_manifest == "x.ismc"
    assert parsed.tracks == (
        IsmTrack("video", "x.ismv", 230_000, 2),
        IsmTrack("audio", "x.ismv", 64_000, 1, name="audio_eng", language="eng"),
    )


@pytest.mark.parametrize("document", [
    b'<?xml version="1.0"?><!DOCTYPE smil [<!ENTITY a "aaaaaaaa">]>'
    b'<smil><body><switch><video src="&a;" systemBitrate="1">'
    b'<param name="trackID" value="1"/></video></switch></body></smil>',
    b'<?xml version="1.0"?><!DOCTYPE smil SYSTEM "file:///etc/passwd"><smil/>',
    b'<?xml version="1.0"?><!DOCTYPE smil [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<smil>&x;</smil>",
    b"<smil><body>",
    b"",
    b"not xml at all",
    b"<html><body/></html>",
    b"<smil>" + b"<a>" * 100 + b"</a>" * 100 + b"</smil>",
], ids=["entity", "external-dtd", "external-entity", "truncated", "empty", "text", "not-smil",
        "too-deep"])
def test_a_hostile_or_broken_ism_is_refused(document: bytes) -> None:
    with pytest.raises(ValueError):
        parse_ism(document)


def test_elements_iis_could_not_serve_are_left_out() -> None:
    def element(attributes: str, params: str = '<param name="trackID" value="1"/>') -> str:
        return f"<video {attributes}>{params}</video>"

    document = "<smil><body><switch>" + "".join([
        element('systemBitrate="1000"'),  # no src
        element('src="a.ismv"'),  # no bitrate
        element('src="a.ismv" systemBitrate="fast"'),
        element('src="a.ismv" systemBitrate="-5"'),
        element('src="a.ismv" systemBitrate="1000"', ""),  # no trackID
        element('src="a.ismv" systemBitrate="1000"', '<param name="trackID" value="0"/>'),
        element('src="a.ismv" systemBitrate="1000"', '<param name="trackID" value="x"/>'),
        '<img src="a.ismv" systemBitrate="1000"><param name="trackID" value="1"/></img>',
        element('src="ok.ismv" systemBitrate="1000"'),
    ]) + "</switch></body></smil>"
    assert parse_ism(document.encode()).tracks == (IsmTrack("video", "ok.ismv", 1000, 1),)


# -- fragment indexes ---------------------------------------------------------------------------


def test_a_whole_capture_is_indexed_from_its_boxes() -> None:
    index = index_of(CAPTURE)
    assert list(index.tracks[VIDEO].times) == VIDEO_TIMES
    assert list(index.tracks[AUDIO].times) == AUDIO_TIMES
    assert list(index.tracks[VIDEO].offsets) == [PAIRS[i][0] for i in fragments_of(VIDEO)]
    assert list(index.tracks[AUDIO].offsets) == [PAIRS[i][0] for i in fragments_of(AUDIO)]
    assert (index.tracks[VIDEO].last_duration, index.tracks[AUDIO].last_duration) == (
        10_000_000, 9_920_000)
    # The capture ends with an (empty) mfra: the file is finished.
    assert index.finished and index.tail == 0 and index.end == BODY_END
    # The Live Server Manifest names the tracks and their bitrates.
    assert {i.track_id: (i.kind, i.name, i.bitrate) for i in index.infos.values()} == {
        VIDEO: ("video", "video", 300_000), AUDIO: ("audio", "audio", 64_000)}


def test_a_fragment_before_zero_is_listed_from_zero() -> None:
    assert listed_time(-213_333, 10_240_000) == (0, 10_026_667)
    assert listed_time(-5, 5) is None and listed_time(-5, 3) is None
    assert listed_time(0, 7) == (0, 7) and listed_time(40, 7) == (40, 7)
    first_audio = read_moof(moof_of(fragments_of(AUDIO)[0]))
    assert (first_audio.tfxd_time, first_audio.tfxd_duration) == (-213_333, 10_240_000)


@pytest.mark.parametrize("cut", [
    lambda last: last[1] + 100,  # in the last mdat
    lambda last: last[1] + 4,  # in the last mdat's header
    lambda last: last[1],  # the moof whole, no mdat
    lambda last: last[0] + 100,  # in the last moof
    lambda last: last[0] + 3,  # in the last moof's header
], ids=["mdat", "mdat-header", "moof-only", "moof", "moof-header"])
def test_a_torn_tail_is_indexed_up_to_the_last_whole_pair(cut) -> None:
    last = PAIRS[-1]
    torn = CAPTURE[: cut(last)]
    index = index_of(torn)
    assert index.end == last[0] and index.tail == len(torn) - last[0] > 0
    assert not index.finished
    assert list(index.tracks[VIDEO].times) == VIDEO_TIMES
    assert list(index.tracks[AUDIO].times) == AUDIO_TIMES[:-1]


def test_an_unsized_box_ends_the_walk() -> None:
    """A box header written as zeros (space reserved, never filled) is a torn tail too."""
    data = CAPTURE[:BODY_END] + b"\0" * 64
    index = index_of(data)
    assert index.end == BODY_END and index.tail == 64 and not index.finished


def test_a_growing_file_is_indexed_from_where_the_last_walk_stopped() -> None:
    whole = index_of(CAPTURE)
    first = CAPTURE[: PAIRS[3][1] + 10]  # three whole pairs and a torn fourth
    before = index_of(first)
    assert before.fragment_count() == 3 and before.tail > 0
    kept = (array("q", before.tracks[VIDEO].times), array("q", before.tracks[AUDIO].times))
    for grown in (CAPTURE[: PAIRS[5][2]], CAPTURE[:BODY_END], CAPTURE):
        reader = Reader(grown)
        after = index_file(reader, len(grown), before)
        # Only what was not read before is read: the walk resumes at the torn pair.
        assert min(offset for offset, _ in reader.reads) == before.end
        assert not any(offset < PAIRS[3][0] for offset, _ in reader.reads)
        before = after
    assert before.finished and before.tail == 0
    for track in (VIDEO, AUDIO):
        assert before.tracks[track] == whole.tracks[track]
    # The earlier index is a snapshot that the resumed walks did not touch.
    assert (index_of(first).tracks[VIDEO].times, index_of(first).tracks[AUDIO].times) == kept


def test_a_file_that_shrank_is_indexed_again() -> None:
    whole = index_of(CAPTURE[:BODY_END])
    shorter = CAPTURE[: PAIRS[2][0]]
    index = index_of(shorter, previous=whole)
    assert index.fragment_count() == 2 and index.end == PAIRS[2][0]


# -- mfra/tfra ----------------------------------------------------------------------------------


def tfra(track_id: int, entries, *, version: int = 1, numbers=(1, 1, 1), count=None) -> bytes:
    """A tfra with one-byte traf/trun/sample numbers (length_size_of_* = 0)."""
    layout = ">QQ" if version == 1 else ">II"
    body = struct.pack(">III", track_id, 0, len(entries) if count is None else count)
    body += b"".join(struct.pack(layout, time & (1 << 64) - 1 if version == 1 else time, offset)
                     + bytes(numbers) for time, offset in entries)
    return full_box(b"tfra", version, 0, body)


def mfra(*tfras: bytes) -> bytes:
    size = 8 + sum(len(t) for t in tfras) + 16
    return box(b"mfra", [*tfras, full_box(b"mfro", 0, 0, struct.pack(">I", size))])


def finished_file(tfras=None) -> bytes:
    """The capture as ffmpeg writes a file: its pairs, then an mfra whose tfra says 0
    for the first audio fragment (whose TfxdBox says -213333)."""
    if tfras is None:
        tfras = [
            tfra(VIDEO, [(t, PAIRS[i][0]) for t, i in zip(VIDEO_TIMES, fragments_of(VIDEO),
                                                           strict=True)]),
            tfra(AUDIO, [(t, PAIRS[i][0]) for t, i in zip(AUDIO_TIMES, fragments_of(AUDIO),
                                                           strict=True)]),
        ]
    return CAPTURE[:BODY_END] + mfra(*tfras)


def test_read_tfra() -> None:
    data = mfra(tfra(1, [(0, 100), (20, 200)]), tfra(2, [(-5, 150)]),
                tfra(3, [(7, 300)], version=0))
    assert read_tfra(data) == {1: [(0, 100), (20, 200)], 2: [(-5, 150)], 3: [(7, 300)]}


@pytest.mark.parametrize("data", [
    mfra(tfra(1, [(0, 100)], count=2)),  # more entries than the box holds
    mfra(tfra(1, [(0, 100)], numbers=(1, 2, 1))),  # not the first trun: not a fragment index
    mfra(tfra(1, [(0, 100)], numbers=(2, 1, 1))),
    mfra(tfra(1, [(0, 100)], version=2)),
    mfra(tfra(1, [(0, 100)]))[:-3],  # cut short
    mfra(tfra(1, [(0, 100)])) + b"\0",  # size does not match
    box(b"free", tfra(1, [(0, 100)])),  # not an mfra
    mfra(box(b"tfra", b"\0\0")),  # a tfra too short for its header
], ids=["count", "trun", "traf", "version", "short", "long", "not-mfra", "tiny-tfra"])
def test_a_corrupt_tfra_is_not_trusted(data: bytes) -> None:
    assert read_tfra(data) is None


def test_a_finished_file_is_indexed_from_its_tfra() -> None:
    data = finished_file()
    reader = Reader(data)
    index = index_file(reader, len(data))
    assert index.finished and index.end == BODY_END and index.tail == 0
    assert index.tracks == index_of(CAPTURE).tracks
    # Four moofs are checked (each track's first and last), the others never read.
    moofs = {p[0] for p in PAIRS}
    assert {offset for offset, _ in reader.reads} & moofs == {
        PAIRS[fragments_of(track)[i]][0] for track in (VIDEO, AUDIO) for i in (0, -1)}


@pytest.mark.parametrize("tfras", [
    [tfra(VIDEO, [(0, PAIRS[0][0]), (5, PAIRS[2][0])])],  # a time the moof does not have
    [tfra(VIDEO, [(0, PAIRS[1][0])])],  # another track's moof
    [tfra(VIDEO, [(0, PAIRS[0][0] + 8)])],  # not a moof
    [tfra(VIDEO, [(0, BODY_END + 4)])],  # inside the mfra
    [tfra(VIDEO, [(0, 10)])],  # inside the head
    [tfra(VIDEO, [(0, PAIRS[0][0]), (0, PAIRS[2][0])])],  # the same time twice
    [tfra(AUDIO, [(-213_333, PAIRS[1][0])])],  # before zero
], ids=["time", "track", "offset", "in-mfra", "in-head", "twice", "negative"])
def test_a_tfra_that_disagrees_with_the_file_is_not_used(tfras) -> None:
    data = finished_file(tfras)
    index = index_of(data)
    assert index.finished
    assert index.tracks == index_of(CAPTURE).tracks  # walked instead


_FINISHED = finished_file()
# Box headers and the mfra/mfro are where corruption bites: flips go there.
_HOT = sorted({b.offset + k for b in iter_boxes(_FINISHED) for k in range(48)}
              | {len(_FINISHED) - k for k in range(1, 120)})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.sampled_from(_HOT), st.integers(0, 255)), max_size=4),
       cut=st.integers(0, len(_FINISHED)))
def test_a_corrupt_file_is_indexed_without_error(flips, cut) -> None:
    """Whatever a crash or a bad disk leaves, indexing ends, and only within the file."""
    data = bytearray(_FINISHED)
    for at, value in flips:
        data[at] = value
    data = bytes(data[:cut])
    index = index_of(data)
    assert index.end + index.tail <= len(data)
    for track in index.tracks.values():
        assert all(0 <= offset < len(data) for offset in track.offsets)
        assert list(track.times) == sorted(track.times)


# -- the client manifest -----------------------------------------------------------------------


def level(times, last_duration: int = 10) -> TrackFragments:
    return TrackFragments(array("q", times), array("q", range(len(times))), last_duration)


def test_timeline_of_one_level_runs_each_chunk_to_the_next() -> None:
    assert timeline([level([0, 10, 30], 5)]) == [(0, 10), (10, 20), (30, 5)]
    assert timeline([]) == [] and timeline([level([])]) == []


def test_timeline_lists_a_time_only_when_every_level_covering_it_has_it() -> None:
    high = level([0, 10, 20, 30, 40])
    low = level([0, 10, 30, 40])  # lost its fragment at 20
    assert timeline([high, low]) == [(0, 10), (10, 20), (30, 10), (40, 10)]
    # Outside a level's span (it started late, or ended early) the others decide.
    late = level([20, 30, 40])
    early = level([0, 10], last_duration=10)
    assert timeline([high, late]) == [(0, 10), (10, 10), (20, 10), (30, 10), (40, 10)]
    assert timeline([high, early]) == timeline([high])
    # Both with a hole at the same place: the chunk before it runs over it.
    assert timeline([level([0, 10, 30]), level([0, 10, 30], 7)]) == [(0, 10), (10, 20), (30, 10)]


def test_a_level_cut_one_fragment_short_by_a_crash_hides_the_last_chunk() -> None:
    """After a crash each file ends at its own last whole fragment: the chunk only
    some levels have at the very end is not listed (every listed chunk plays at
    every level), while a level that stopped long before does not hide the rest."""
    high = level([0, 10, 20, 30, 40])
    cut = level([0, 10, 20, 30])  # its fragment at 40 was being written
    assert timeline([high, cut]) == [(0, 10), (10, 10), (20, 10), (30, 10)]
    assert timeline([high, level([0, 10])]) == timeline([high])


def test_the_last_chunk_lasts_as_long_as_the_longest_last_fragment() -> None:
    assert timeline([level([0, 10], 8), level([0, 10], 12)])[-1] == (10, 12)
    assert timeline([level([0, 10], 0)])[-1] == (10, 10)  # unknown: as long as the one before


def info(kind: str, name: str, bitrate: int, track_id: int = 1) -> TrackInfo:
    return TrackInfo(kind=kind, name=name, track_id=track_id, bitrate=bitrate,  # type: ignore[arg-type]
                     fourcc="H264" if kind == "video" else "AACL", codec_private_data="",
                     max_width=320 if kind == "video" else 0, sampling_rate=48000)


def test_manifest_view() -> None:
    low, high = level([0, 20_000_000], 20_000_000), level([0, 20_000_000], 20_000_000)
    audio = level([0, 10_000_000, 20_000_000], 21_000_000)
    view = manifest_view([
        (info("video", "video", 300_000), low),
        (info("audio", "audio", 64_000, 2), audio),
        (info("video", "video", 900_000), high),
        (info("video", "video", 300_000, 3), high),  # same name and bitrate: left out
        (info("audio", "video", 1), audio),  # another kind under the video name: left out
        (info("audio", "audio_fr", 64_000, 4), level([])),  # no fragments: left out
    ])
    assert not view.is_live and view.duration == 41_000_000
    assert [(s.name, [t.bitrate for t in s.tracks]) for s in view.stream_indexes] == [
        ("video", [900_000, 300_000]), ("audio", [64_000])]
    assert view.stream_indexes[1].chunks == [(0, 10_000_000), (10_000_000, 10_000_000),
                                             (20_000_000, 21_000_000)]
    root = etree.fromstring(render_client_manifest(view))
    assert root.get("IsLive") is None and root.get("Duration") == "41000000"
    assert [len(s.findall("c")) for s in root.findall("StreamIndex")] == [2, 3]


def test_the_duration_counts_from_the_first_fragment() -> None:
    """An archive of a live event that began at 100 s lasts as long as it was archived."""
    start = 1_000_000_000
    view = manifest_view([(info("video", "video", 1), level([start, start + 10], 10))])
    assert view.duration == 20
    assert view.stream_indexes[0].chunks[0] == (start, 10)


def test_a_track_in_its_own_timescale() -> None:
    track = TrackInfo(kind="audio", name="audio", track_id=1, bitrate=1, fourcc="AACL",
                      codec_private_data="", timescale=48_000)
    view = manifest_view([(track, level([0, 48_000], 48_000))])
    assert view.duration == 20_000_000 and view.stream_indexes[0].timescale == 48_000


# -- a presentation on disk -------------------------------------------------------------------


def write_presentation(folder: Path, data: bytes, **ism) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clip.ismv").write_bytes(data)
    tracks = ism.get("tracks") or (IsmTrack("video", "clip.ismv", 350_000, VIDEO),
                                   IsmTrack("audio", "clip.ismv", 96_000, AUDIO))
    path = folder / "clip.ism"
    path.write_bytes(render_ism(IsmDocument(tuple(tracks))))
    return path


def chunk_count(manifest: bytes) -> dict[str, int]:
    root = etree.fromstring(manifest)
    return {s.get("Name"): int(s.get("Chunks")) for s in root.findall("StreamIndex")}


def test_a_presentation_serves_what_its_files_hold(tmp_path: Path) -> None:
    path = write_presentation(tmp_path, CAPTURE)
    presentation = OnDemandPresentation(path)
    state = presentation.state
    assert state.playable and state.finished
    root = etree.fromstring(state.manifest)
    assert root.get("Duration") == "40000000" and root.get("IsLive") is None
    assert [q.get("Bitrate") for q in root.iter("QualityLevel")] == ["350000", "96000"]
    # A fragment is its moof as in the file, and where its mdat is.
    second = fragments_of(VIDEO)[1]
    moof, (file, offset, size) = presentation.fragment("video", 350_000, VIDEO_TIMES[1])
    assert moof == moof_of(second) and file == tmp_path / "clip.ismv"
    assert (offset, offset + size) == PAIRS[second][1:]
    assert presentation.read((file, offset, size)) == CAPTURE[offset : offset + size]
    # The audio fragment listed at 0 says so: re-stamped, same size, same samples.
    first = fragments_of(AUDIO)[0]
    moof, (_, offset, _) = presentation.fragment("audio", 96_000, 0)
    assert moof == retimed(moof_of(first), 0, 10_026_667) and len(moof) == len(moof_of(first))
    assert offset == PAIRS[first][1]
    assert presentation.fragment("video", 350_000, 5) is None
    assert presentation.fragment("video", 300_000, 0) is None  # the .ism's bitrate counts
    assert presentation.fragment("Video", 350_000, 0) is None


def test_a_growing_presentation_shows_new_fragments(tmp_path: Path) -> None:
    path = write_presentation(tmp_path, CAPTURE[: PAIRS[1][2] + 30])
    presentation = OnDemandPresentation(path, ttl=0)
    assert chunk_count(presentation.manifest) == {"video": 1, "audio": 1}
    assert not presentation.state.finished
    etag = presentation.state.etag
    with open(tmp_path / "clip.ismv", "ab") as handle:
        handle.write(CAPTURE[PAIRS[1][2] + 30 : PAIRS[5][2]])
    assert presentation.due and presentation.refresh()
    assert chunk_count(presentation.manifest) == {"video": 3, "audio": 3}
    assert presentation.state.etag != etag and not presentation.state.finished
    assert presentation.fragment("video", 350_000, VIDEO_TIMES[2]) is not None
    assert not presentation.refresh()  # nothing changed
    with open(tmp_path / "clip.ismv", "ab") as handle:
        handle.write(CAPTURE[PAIRS[5][2] :])
    assert presentation.refresh()
    assert chunk_count(presentation.manifest) == {"video": 4, "audio": 4}
    assert presentation.state.finished


def test_a_presentation_waits_for_its_ttl(tmp_path: Path) -> None:
    presentation = OnDemandPresentation(write_presentation(tmp_path, CAPTURE), ttl=3600)
    assert not presentation.due and not presentation.refresh()
    presentation.invalidate()
    assert presentation.due


def test_an_ism_that_vanished_or_broke(tmp_path: Path, caplog) -> None:
    path = write_presentation(tmp_path, CAPTURE)
    presentation = OnDemandPresentation(path, ttl=0)
    path.write_bytes(b"<smil><body>")
    with caplog.at_level(logging.WARNING, "smoothlive.ondemand"):
        assert presentation.refresh()
        assert not presentation.refresh()  # said once
    assert not presentation.state.playable
    (said,) = [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()]
    assert said.startswith(f"server manifest {path} is unusable: ")
    path.unlink()
    with pytest.raises(OSError):
        presentation.refresh()


@pytest.mark.parametrize("src", ["../clip.ismv", "/etc/passwd", "sub/../clip.ismv",
                                 "C:/clip.ismv", "a\\clip.ismv", "outside.ismv", "", "./clip.ismv"])
def test_a_src_outside_the_folder_is_not_read(tmp_path: Path, src: str) -> None:
    outside = tmp_path / "clip.ismv"
    outside.write_bytes(CAPTURE)
    folder = tmp_path / "vod"
    path = write_presentation(folder, b"", tracks=[IsmTrack("video", src, 1, VIDEO)])
    (folder / "outside.ismv").symlink_to(outside)
    assert not OnDemandPresentation(path).state.playable


@pytest.mark.parametrize("in_place", [False, True], ids=["renamed-over", "rewritten"])
def test_a_file_replaced_under_the_index_is_indexed_again(tmp_path: Path, in_place) -> None:
    path = write_presentation(tmp_path, CAPTURE)
    presentation = OnDemandPresentation(path, ttl=3600)
    # The first two pairs gone: another fragment now sits where the first was.
    if in_place:
        (tmp_path / "clip.ismv").write_bytes(HEAD + CAPTURE[PAIRS[2][0] :])
    else:
        replacement = tmp_path / "new.ismv"
        replacement.write_bytes(HEAD + CAPTURE[PAIRS[2][0] :])
        os.replace(replacement, tmp_path / "clip.ismv")
    # The index still names the old offsets: the fragment is missing, and the
    # presentation looks at its files again at the next refresh.
    assert presentation.fragment("video", 350_000, 0) is None and presentation.due
    presentation.refresh()
    assert chunk_count(presentation.manifest) == {"video": 3, "audio": 3}


# -- URLs and paths (http.ondemand) -----------------------------------------------------------


def test_ondemand_routes() -> None:
    assert ondemand_route("/vod/clip.ism/Manifest") == OnDemandRoute("manifest", "vod/clip.ism")
    assert ondemand_route("/a/b.ISM/MANIFEST/") == OnDemandRoute("manifest", "a/b.ISM")
    assert ondemand_route("/clip.ism/qualitylevels(300000)/fragments(video=0)") == (
        OnDemandRoute("fragment", "clip.ism", 300_000, "video", 0))
    assert ondemand_route("/clip.ism/QualityLevels(1)/FragmentInfo(audio_eng=123)") == (
        OnDemandRoute("fragmentinfo", "clip.ism", 1, "audio_eng", 123))
    for path in ("/clip.isml/Manifest", "/clip.ism", "/clip.ism/Manifest/x",
                 "/clip.ism/QualityLevels(1)/Fragments(video=-1)",
                 "/clip.ism/QualityLevels(1)/Fragments(video=99999999999999999999)",
                 "/clip.ism/QualityLevels(x)/Fragments(video=1)", "/.ism/Manifest"):
        assert ondemand_route(path) is None, path


def test_resolve_ism(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "vod").mkdir(parents=True)
    (root / "vod" / "a.ism").write_bytes(b"")
    (root / "vod" / "folder.ism").mkdir()
    (tmp_path / "secret.ism").write_bytes(b"")
    (root / "vod" / "out.ism").symlink_to(tmp_path / "secret.ism")
    (root / "vod" / "in.ism").symlink_to(root / "vod" / "a.ism")
    (root / "link").symlink_to(tmp_path)
    real = os.path.realpath(root)
    assert resolve_ism(real, "vod/a.ism") == Path(real, "vod", "a.ism")
    assert resolve_ism(real, "vod/in.ism") == Path(real, "vod", "a.ism")
    for refused in ("vod/../vod/a.ism", "../secret.ism", "/vod/a.ism", "vod//a.ism",
                    "./vod/a.ism", "vod/.a.ism", "vod\\a.ism", "vod/a.ism\x00", "C:/a.ism",
                    "vod/out.ism", "link/secret.ism", "vod/folder.ism", "vod/none.ism", "",
                    "vod/a.ism."):
        assert resolve_ism(real, refused) is None, refused


# -- the service (http.ondemand), driven as an ASGI server drives it -----------------------------


async def call(service, path: str, method: str = "GET", headers=()
               ) -> tuple[int, dict, bytes, list]:
    """Status, headers, body and the body messages of one request."""
    scope = {"type": "http", "method": method, "path": path,
             "headers": [(k.encode(), v.encode()) for k, v in headers]}

    async def receive():
        return {"type": "http.request", "body": b""}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await service(Request(scope, receive), send, ondemand_route(path))
    start, *bodies = sent
    return (start["status"], {k.decode(): v.decode() for k, v in start["headers"]},
            b"".join(m["body"] for m in bodies), bodies)


@pytest.fixture
def content(tmp_path: Path) -> Path:
    for name in ("a", "b"):
        write_presentation(tmp_path / name, CAPTURE)
    return tmp_path


async def test_the_service_keeps_the_most_recently_used_presentations(content: Path) -> None:
    service = OnDemandService(content, capacity=1)
    assert (await call(service, "/a/clip.ism/Manifest"))[0] == 200
    assert (await call(service, "/b/clip.ism/Manifest"))[0] == 200
    assert list(service._open) == ["b/clip.ism"]


async def test_concurrent_requests_share_one_load(content: Path, monkeypatch) -> None:
    opened: list[Path] = []

    class Counting(OnDemandPresentation):
        def __init__(self, path: Path, **kwargs) -> None:
            opened.append(path)
            super().__init__(path, **kwargs)

    monkeypatch.setattr(http_ondemand, "OnDemandPresentation", Counting)
    service = OnDemandService(content)
    answers = await asyncio.gather(*(call(service, "/a/clip.ism/Manifest") for _ in range(20)))
    assert {status for status, *_ in answers} == {200} and len(opened) == 1


async def test_a_vanished_ism_closes_its_presentation(content: Path) -> None:
    service = OnDemandService(content, ttl=0)
    assert (await call(service, "/a/clip.ism/Manifest"))[0] == 200
    (content / "a" / "clip.ism").unlink()
    status, headers, _, _ = await call(service, "/a/clip.ism/Manifest")
    assert status == 404 and headers["cache-control"] == "no-store"
    assert "a/clip.ism" not in service._open


async def test_a_large_fragment_is_read_and_sent_in_parts(content: Path, monkeypatch) -> None:
    monkeypatch.setattr(http_ondemand, "READ_CHUNK", 10_000)
    service = OnDemandService(content)
    pair = fragments_of(VIDEO)[0]
    status, headers, body, messages = await call(
        service, "/a/clip.ism/QualityLevels(350000)/Fragments(video=0)")
    assert status == 200 and body == CAPTURE[PAIRS[pair][0] : PAIRS[pair][2]]
    assert int(headers["content-length"]) == len(body)
    mdat = PAIRS[pair][2] - PAIRS[pair][1]
    assert len(messages) == 1 + -(-mdat // 10_000)  # the moof, then the mdat in parts
    assert [m.get("more_body", False) for m in messages][-2:] == [True, False]


async def test_an_error_is_a_plain_500_and_one_log_line(content: Path, monkeypatch,
                                                        caplog) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(OnDemandPresentation, "fragment", broken)
    service = OnDemandService(content)
    with caplog.at_level(logging.INFO, "smoothlive.ondemand"):
        status, headers, body, _ = await call(
            service, "/a/clip.ism/QualityLevels(350000)/Fragments(video=0)")
    assert (status, body, headers["cache-control"]) == (500, b"internal error\n", "no-store")
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == (
        "on-demand GET /a/clip.ism/QualityLevels(350000)/Fragments(video=0) failed: "
        "RuntimeError: disk on fire")
    assert not record.exc_info  # no trace unless debugging
