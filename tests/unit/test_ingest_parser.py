"""The incremental parser of an encoder POST, on the bytes two ffmpeg encoders sent."""

from __future__ import annotations

import itertools
import struct
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smoothlive.media.boxes import (
    MFHD,
    TFDT,
    TREX,
    BoxError,
    TrackFragmentHeader,
    TrackRun,
    box,
    find,
    find_all,
    iter_boxes,
    uuid_box,
)
from smoothlive.media.fragments import read_moof
from smoothlive.media.ingest import (
    EndOfStream,
    Event,
    Fragment,
    IngestParser,
    Movie,
    ServerManifest,
    StreamHeader,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ingest"
STREAMS = {name: (FIXTURES / f"{name}.ismv").read_bytes() for name in ("ch1-300k", "ch1-150k")}
S300, S150 = STREAMS["ch1-300k"], STREAMS["ch1-150k"]
VIDEO_BITRATES = {"ch1-300k": 300_000, "ch1-150k": 150_000}
SIZES = {"ch1-300k": (320, 180), "ch1-150k": (160, 90)}


def _boxes(stream: bytes) -> list[bytes]:
    return [stream[h.offset : h.end] for h in iter_boxes(stream)]


def _parse(data: bytes, **limits: int) -> list[Event]:
    parser = IngestParser(**limits)
    events = parser.feed(data)
    assert parser.close() == []
    return events


def _parse_chunked(data: bytes, sizes: list[int]) -> list[Event]:
    parser = IngestParser()
    events: list[Event] = []
    position = 0
    for size in itertools.cycle(sizes):
        if position >= len(data):
            break
        events += parser.feed(data[position : position + size])
        position += size
    assert parser.close() == []
    assert parser.bytes_seen == len(data)
    return events


WHOLE = {name: _parse(stream) for name, stream in STREAMS.items()}


@pytest.mark.parametrize("name", STREAMS)
def test_event_sequence(name: str) -> None:
    events = WHOLE[name]
    kinds = [type(e) for e in events]
    assert kinds == [StreamHeader, ServerManifest, Movie] + [Fragment] * 8 + [EndOfStream]
    assert events[0].ftyp == STREAMS[name][:24]
    assert events[1].smil.startswith('<?xml version="1.0" encoding="utf-8"?>\n<smil')
    assert events[1].smil.rstrip().endswith("</smil>")
    assert events[-1] == EndOfStream(b"\0\0\0\x08mfra")  # ffmpeg's live mfra is empty


@pytest.mark.parametrize("name", STREAMS)
def test_tracks_match_the_server_manifest(name: str) -> None:
    movie = WHOLE[name][2]
    assert movie.moov == _boxes(STREAMS[name])[2]
    video, audio = movie.tracks
    width, height = SIZES[name]
    assert (video.kind, video.name, video.track_id, video.bitrate) == (
        "video", "video", 1, VIDEO_BITRATES[name],
    )  # fmt: skip
    assert (video.fourcc, video.max_width, video.max_height) == ("H264", width, height)
    assert (video.display_width, video.display_height) == (width, height)
    assert video.codec_private_data.startswith("000000016742C00")
    assert (audio.kind, audio.name, audio.track_id, audio.bitrate) == ("audio", "audio", 2, 64000)
    assert (audio.fourcc, audio.codec_private_data) == ("AACL", "118856E500")
    assert (audio.sampling_rate, audio.channels, audio.bits_per_sample) == (48000, 1, 16)
    assert (audio.audio_tag, audio.packet_size) == (255, 4)
    assert video.timescale == audio.timescale == 10_000_000
    assert video.language is audio.language is None  # "und"
    assert video.trak and video.trex and audio.trak and audio.trex


@pytest.mark.parametrize("name", STREAMS)
def test_fragments_are_contiguous(name: str) -> None:
    fragments = [e.data for e in WHOLE[name] if isinstance(e, Fragment)]
    video = [f for f in fragments if f.track_id == 1]
    audio = [f for f in fragments if f.track_id == 2]
    assert len(video) == len(audio) == 4
    assert video[0].time == 0
    assert all(f.duration == 10_000_000 for f in video)
    assert -250_000 < audio[0].time < -200_000  # AAC priming: 1024 samples at 48 kHz
    assert audio[0].time == -213_333
    for track in (video, audio):
        for before, after in itertools.pairwise(track):
            assert after.time == before.time + before.duration
        assert all(f.keyframe for f in track)
    # the fragments are the encoder's boxes, whole
    pairs = [b for b in _boxes(STREAMS[name]) if b[4:8] in (b"moof", b"mdat")]
    assert [p for f in fragments for p in (f.moof, f.mdat)] == pairs


def test_counters() -> None:
    parser = IngestParser()
    parser.feed(S300[:60_000])  # the first moof and mdat, and some of the second moof
    assert parser.bytes_seen == 60_000
    assert parser.fragments_seen == 1
    parser.feed(S300[60_000:])
    assert (parser.bytes_seen, parser.fragments_seen) == (len(S300), 8)
    assert parser.tracks == WHOLE["ch1-300k"][2].tracks


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(STREAMS)),
    sizes=st.lists(
        st.one_of(st.integers(1, 16), st.integers(17, 4096), st.integers(4097, 200_000)),
        min_size=1,
        max_size=30,
    ),
)
def test_any_chunking_gives_the_same_events(name: str, sizes: list[int]) -> None:
    if sum(sizes) / len(sizes) < 64:  # keep each example quick: mostly tiny chunks elsewhere
        sizes = [*sizes, 50_000]
    assert _parse_chunked(STREAMS[name], sizes) == WHOLE[name]


def test_one_byte_at_a_time() -> None:
    assert _parse_chunked(S150, [1]) == WHOLE["ch1-150k"]


def test_memoryviews_and_mutable_buffers_are_copied() -> None:
    parser = IngestParser()
    events: list[Event] = []
    scratch = bytearray(100_000)
    for position in range(0, len(S300), len(scratch)):
        chunk = S300[position : position + len(scratch)]
        scratch[: len(chunk)] = chunk
        events += parser.feed(memoryview(scratch)[: len(chunk)])
        scratch[:] = bytes(len(scratch))  # the server reuses its buffer
    assert events == WHOLE["ch1-300k"]
    wide = memoryview(S150).cast("B", (len(S150),))
    assert _parse(bytes(wide)) == WHOLE["ch1-150k"]


@pytest.mark.parametrize("name", STREAMS)
def test_truncated_streams_fail_on_close(name: str) -> None:
    stream = STREAMS[name]
    headers = list(iter_boxes(stream))
    clean = {h.end for h in headers if h.type != b"moof"}
    ends = {h.end for h in headers}
    cuts = sorted(set(range(1, len(stream), 997)) | ends | {end + 3 for end in ends})
    for cut in cuts:
        if cut >= len(stream):
            continue
        parser = IngestParser()
        parser.feed(stream[:cut])
        if cut in clean:
            assert parser.close() == []
        else:
            with pytest.raises(BoxError, match="stream ended"):
                parser.close()


def _moof_with_track(moof: bytes, track_id: int) -> bytes:
    tfhd = find(moof, b"moof/traf/tfhd")
    data = bytearray(moof)
    struct.pack_into(">I", data, tfhd.payload_offset + 4, track_id)
    return bytes(data)


def _fails(data: bytes, match: str, **limits: int) -> None:
    parser = IngestParser(**limits)
    with pytest.raises(BoxError, match=match):
        parser.feed(data)
        parser.close()
    with pytest.raises(BoxError):  # and stays failed
        parser.feed(b"")
    with pytest.raises(BoxError):
        parser.close()


BOXES = _boxes(S300)
FTYP, LSM, MOOV, MOOF1, MDAT1, MOOF2, MDAT2 = BOXES[:7]
MFRA = BOXES[-1]


def test_order_rules() -> None:
    _fails(FTYP + MOOF1 + MDAT1, "moof before the moov")
    _fails(FTYP + LSM + MOOV + MDAT1, "mdat without a moof")
    _fails(FTYP + LSM + MOOV + MOOF1 + MOOF2, "moof after a moof without its mdat")
    _fails(FTYP + LSM + MOOV + MOOF1 + MFRA, "mfra after a moof")
    _fails(FTYP + LSM + MOOV + _moof_with_track(MOOF1, 9) + MDAT1, "track 9")
    other_moov = _boxes(S150)[2]
    _fails(FTYP + LSM + MOOV + other_moov, "second moov with different tracks")
    _fails(FTYP + LSM + MOOV + MOOF1, "stream ended after a moof without its mdat")


def test_a_repeated_identical_moov_is_accepted_once() -> None:
    events = _parse(FTYP + LSM + MOOV + MOOF1 + MDAT1 + MOOV + MOOF2 + MDAT2)
    assert [type(e) for e in events] == [StreamHeader, ServerManifest, Movie, Fragment, Fragment]


def test_one_track_per_moof() -> None:
    fragment = read_moof(MOOF1)
    traf = MOOF1[fragment.traf.offset : fragment.traf.end]
    two = box(b"moof", [MOOF1[8 : fragment.traf.offset], traf, traf])
    _fails(FTYP + LSM + MOOV + two + MDAT1, "one track per moof is required")


def test_unknown_top_level_boxes_are_skipped() -> None:
    extras = [
        box(b"free", b"x" * 100),
        box(b"skip", b""),
        box(b"styp", b"msdh\0\0\0\0msdh"),
        box(b"sidx", bytes(40)),
        box(b"emsg", bytes(30)),
        uuid_box(bytes(16), b"vendor"),
        struct.pack(">I4sQ", 1, b"free", 20) + b"abcd",  # largesize
    ]
    stream = b"".join(b + extras[i % len(extras)] for i, b in enumerate(BOXES))
    assert _parse(stream) == WHOLE["ch1-300k"]
    assert _parse_chunked(stream, [7, 3000]) == WHOLE["ch1-300k"]


def test_without_the_server_manifest_the_moov_describes_the_tracks() -> None:
    events = _parse(b"".join(b for b in BOXES if b is not LSM))
    assert [type(e) for e in events][:2] == [StreamHeader, Movie]
    with_lsm = WHOLE["ch1-300k"][2].tracks
    tracks = events[1].tracks
    assert tracks[0] == replace(with_lsm[0], bitrate=0)  # no btrt: only the LSM knows
    assert tracks[1] == with_lsm[1]  # the esds avgBitrate is 64000 too
    assert [e.data for e in events if isinstance(e, Fragment)] == [
        e.data for e in WHOLE["ch1-300k"] if isinstance(e, Fragment)
    ]


def test_limits() -> None:
    big_mdat = struct.pack(">I4s", 1000, b"mdat")
    _fails(FTYP + LSM + MOOV + MOOF1 + big_mdat, "over the 999 byte limit", max_mdat_size=999)
    _fails(FTYP + MOOV, "moov box of 1249 bytes is over", max_box_size=1000)
    _fails(FTYP + LSM, "uuid a5d40b30e81411ddba2f0800200c9a66 box of 1571", max_box_size=1000)
    huge = struct.pack(">I4sQ", 1, b"mdat", 1 << 40)
    _fails(FTYP + LSM + MOOV + MOOF1 + huge, "over the")
    _fails(FTYP + struct.pack(">I4s", 0, b"mdat"), "size 0")
    _fails(struct.pack(">I4s", 3, b"ftyp"), "size 3")
    _fails(struct.pack(">I4sQ", 1, b"free", 1 << 60), "absurd|over the")
    assert _parse(S300, max_mdat_size=50_823, max_box_size=1571) == WHOLE["ch1-300k"]


def test_refused_early_without_buffering() -> None:
    parser = IngestParser()
    with pytest.raises(BoxError):
        parser.feed(struct.pack(">I4s", 0xFFFFFFFF, b"mdat"))  # refused on the header alone
    assert parser.buffered == 0


def test_memory_stays_near_the_box_size() -> None:
    size = 4 << 20
    mdat = struct.pack(">I4s", size, b"mdat") + bytes(size - 8)
    head = FTYP + LSM + MOOV + MOOF1
    for chunk in (100, 70_000):
        parser = IngestParser()
        parser.feed(head)
        tracemalloc.start()
        try:
            for position in range(0, len(mdat), chunk):
                parser.feed(mdat[position : position + chunk])
                assert parser.buffered <= size
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # the pieces, the joined mdat, and small change; chunks are sliced copies here
        assert peak < 2.2 * size + (1 << 20), (chunk, peak)


def _no_tfxd(
    moof: bytes,
    *,
    tfdt: int | None = None,
    tfhd: TrackFragmentHeader | None = None,
    **trun_changes: object,
) -> bytes:
    """The moof rebuilt without its TfxdBox, with a tfdt of ``tfdt`` and trun changes."""
    fragment = read_moof(moof)
    run = fragment.truns[0][1]
    columns = {
        "durations": run.column("durations"),
        "sizes": run.column("sizes"),
        "flags": run.column("flags"),
        "first_sample_flags": run.first_sample_flags,
        "sample_count": run.sample_count,
    }
    columns.update(trun_changes)
    tfhd_box = (tfhd or fragment.tfhd).build()
    tfdt_box = TFDT.build(tfdt, version=1) if tfdt is not None else b""

    def build(data_offset: int) -> bytes:
        trun = TrackRun.build(data_offset=data_offset, **columns)  # type: ignore[arg-type]
        return box(b"moof", [MFHD.build(1), box(b"traf", [tfhd_box, tfdt_box, trun])])

    return build(len(build(0)) + 8)


def _pairs() -> list[tuple[bytes, bytes]]:
    return [(BOXES[i], BOXES[i + 1]) for i in range(3, len(BOXES) - 1, 2)]


def test_times_from_tfdt_and_trun_durations() -> None:
    body = b"".join(_no_tfxd(m, tfdt=1000 * i) + d for i, (m, d) in enumerate(_pairs()))
    events = _parse(FTYP + LSM + MOOV + body)
    fragments = [e.data for e in events if isinstance(e, Fragment)]
    assert [f.time for f in fragments] == [1000 * i for i in range(8)]
    expected = [e.data.duration for e in WHOLE["ch1-300k"] if isinstance(e, Fragment)]
    assert [f.duration for f in fragments] == expected  # ffmpeg's tfxd = sum of trun durations
    assert all(f.keyframe for f in fragments)


def test_times_run_on_without_tfxd_or_tfdt() -> None:
    body = b"".join(_no_tfxd(m) + d for m, d in _pairs())
    fragments = [e.data for e in _parse(FTYP + LSM + MOOV + body) if isinstance(e, Fragment)]
    for track in (1, 2):
        times = [f for f in fragments if f.track_id == track]
        assert times[0].time == 0
        for before, after in itertools.pairwise(times):
            assert after.time == before.time + before.duration


def _moov_with_trex(duration: int, flags: int) -> bytes:
    moov = bytearray(MOOV)
    trex = next(find_all(moov, b"moov/mvex/trex"))
    _, _, values = TREX.read(moov, trex)
    made = TREX.build(values.track_id, values.default_sample_description_index, duration, 0, flags)
    moov[trex.offset : trex.end] = made
    return bytes(moov)


def test_trex_defaults_give_duration_and_sync() -> None:
    moov = _moov_with_trex(400_000, 0x00010000)  # video: every sample non-sync by default
    moof, mdat = _pairs()[0]
    bare = replace(read_moof(moof).tfhd, default_sample_flags=None)  # so that trex speaks
    plain = _no_tfxd(moof, tfdt=0, tfhd=bare, durations=None, flags=None, first_sample_flags=None)
    (event,) = [e for e in _parse(FTYP + LSM + moov + plain + mdat) if isinstance(e, Fragment)]
    assert event.data.duration == 25 * 400_000
    assert event.data.keyframe is False
    keyed = _no_tfxd(moof, tfdt=0, tfhd=bare, first_sample_flags=0x02000000)
    (event,) = [e for e in _parse(FTYP + LSM + moov + keyed + mdat) if isinstance(e, Fragment)]
    assert event.data.keyframe is True
    by_sample = _no_tfxd(moof, tfdt=0, first_sample_flags=None, flags=[0x01010000] * 25)
    (event,) = [e for e in _parse(FTYP + LSM + moov + by_sample + mdat) if isinstance(e, Fragment)]
    assert event.data.keyframe is False


def test_lsm_that_is_not_xml_is_refused() -> None:
    bad = uuid_box(bytes.fromhex("a5d40b30e81411ddba2f0800200c9a66"), b"\0\0\0\0<smil><oops")
    _fails(FTYP + bad, "not readable XML")


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400), split=st.integers(1, 50))
def test_random_bytes_raise_only_box_errors(data: bytes, split: int) -> None:
    parser = IngestParser(max_box_size=4096, max_mdat_size=8192)
    try:
        for position in range(0, len(data), split):
            parser.feed(data[position : position + split])
            assert parser.buffered <= 8192
        parser.close()
    except BoxError:
        pass


@settings(max_examples=150, deadline=None)
@given(
    mutations=st.lists(
        st.tuples(st.integers(0, len(S300) - 1), st.integers(0, 255)), min_size=1, max_size=8
    ),
    focus=st.sampled_from(["anywhere", "head", "moof"]),
    cut=st.integers(0, 100),
)
def test_mutated_streams_raise_only_box_errors(
    mutations: list[tuple[int, int]], focus: str, cut: int
) -> None:
    data = bytearray(S300)
    moof_start = len(FTYP + LSM + MOOV)
    for position, value in mutations:
        if focus == "head":  # ftyp, the server manifest and the moov
            position %= moof_start
        elif focus == "moof":
            position = moof_start + position % len(MOOF1)
        data[position] = value
    if cut:
        data = data[: len(data) * cut // 100]
    parser = IngestParser(max_box_size=1 << 16, max_mdat_size=1 << 17)
    try:
        parser.feed(bytes(data[:3000]))
        parser.feed(bytes(data[3000:]))
        parser.close()
    except BoxError:
        pass
    assert parser.buffered <= 1 << 17
