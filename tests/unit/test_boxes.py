"""ISO BMFF box primitives and box layouts (ISO/IEC 14496-12 §4.2, §8.8; MS-SSTR §2.2.4)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smoothlive.media.boxes import (
    DEFAULT_BASE_IS_MOOF,
    MDHD,
    TFDT,
    TFRF_UUID,
    TFXD,
    TFXD_UUID,
    TKHD,
    TREX,
    BoxError,
    BoxHeader,
    TrackFragmentHeader,
    TrackRun,
    box,
    box_header_bytes,
    build_tfrf,
    children,
    find,
    find_all,
    find_uuid,
    full_box,
    header_length,
    iter_boxes,
    payload,
    read_box_header,
    read_tfrf,
    read_version_flags,
    uuid_box,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ingest"
STREAM = (FIXTURES / "ch1-300k.ismv").read_bytes()
LSM_UUID = bytes.fromhex("a5d40b30e81411ddba2f0800200c9a66")


def test_header_plain() -> None:
    header = read_box_header(b"\0\0\0\x10free12345678")
    assert header == BoxHeader(b"free", 16, 8, None, 0)
    assert (header.end, header.payload_offset, header.payload_size) == (16, 8, 8)


def test_header_largesize() -> None:
    data = struct.pack(">I4sQ", 1, b"mdat", 20) + b"abcd"
    header = read_box_header(data)
    assert (header.type, header.size, header.header_size) == (b"mdat", 20, 16)
    assert header_length(data) == 16


def test_header_size_zero_runs_to_the_end() -> None:
    data = b"xxxx" + struct.pack(">I4s", 0, b"mdat") + b"payload"
    assert read_box_header(data, 4).size == len(data) - 4
    assert read_box_header(data, 4, end=12).size == 8


def test_header_uuid() -> None:
    data = uuid_box(TFXD_UUID, b"\1\0\0\0" + bytes(16))
    header = read_box_header(data)
    assert (header.type, header.usertype, header.header_size) == (b"uuid", TFXD_UUID, 24)
    assert header_length(data) == 24
    large = box_header_bytes(b"uuid", 40, usertype=TFXD_UUID, large=True) + bytes(8)
    assert read_box_header(large).header_size == 32
    assert header_length(large) == 32


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\0\0\0\x10fre",  # truncated header
        b"\0\0\0\x04free",  # size smaller than the header
        struct.pack(">I4sQ", 1, b"mdat", 8),  # largesize smaller than its header
        struct.pack(">I4s", 1, b"mdat") + b"\0\0",  # truncated largesize
        struct.pack(">I4sQ", 1, b"mdat", 1 << 62),  # absurd
        struct.pack(">I4s", 30, b"uuid") + bytes(10),  # truncated usertype
        struct.pack(">I4s", 20, b"uuid") + bytes(16),  # smaller than its uuid header
    ],
)
def test_header_errors(data: bytes) -> None:
    with pytest.raises(BoxError):
        read_box_header(data)


def test_iter_boxes_over_the_fixture() -> None:
    kinds = [h.type for h in iter_boxes(STREAM)]
    assert kinds[:3] == [b"ftyp", b"uuid", b"moov"]
    assert kinds[3:-1] == [b"moof", b"mdat"] * 8
    assert kinds[-1] == b"mfra"
    assert sum(h.size for h in iter_boxes(STREAM)) == len(STREAM)


def test_iter_boxes_refuses_a_box_past_its_container() -> None:
    with pytest.raises(BoxError, match="runs past"):
        list(iter_boxes(STREAM[:-10]))
    with pytest.raises(BoxError):
        list(iter_boxes(b"\0\0\0\x10free\0\0"))


def test_find_nested() -> None:
    traks = list(find_all(STREAM, b"moov/trak"))
    assert len(traks) == 2
    mdhds = list(find_all(STREAM, "moov/trak/mdia/mdhd"))
    assert [MDHD.read(STREAM, h)[2].timescale for h in mdhds] == [10_000_000, 10_000_000]
    assert find(STREAM, b"moov/trak/mdia/minf/stbl/stsd") is not None
    assert find(STREAM, b"moov/nothing") is None
    assert find(STREAM, b"") is None
    assert find_uuid(STREAM, LSM_UUID).offset == 24
    moof = find(STREAM, b"moof")
    traf = find(STREAM, b"traf", moof.payload_offset, moof.end)
    assert [c.type for c in children(STREAM, traf)] == [b"tfhd", b"trun", b"uuid"]
    assert find_uuid(STREAM, TFXD_UUID, traf.payload_offset, traf.end) is not None
    assert bytes(payload(STREAM, find(STREAM, b"ftyp")))[:4] == b"isml"


def test_builders() -> None:
    assert box(b"free", b"abc") == b"\0\0\0\x0bfreeabc"
    assert box(b"free", [b"ab", memoryview(b"c")]) == b"\0\0\0\x0bfreeabc"
    assert full_box(b"tfdt", 1, 0x123, b"") == b"\0\0\0\x0ctfdt\x01\x00\x01\x23"
    made = uuid_box(TFRF_UUID, b"x", version=1, flags=2)
    header = read_box_header(made)
    assert (header.size, header.usertype) == (len(made), TFRF_UUID)
    assert read_version_flags(made, header) == (1, 2)
    assert uuid_box(LSM_UUID, b"<smil/>")[24:] == b"<smil/>"
    with pytest.raises(BoxError):
        full_box(b"tfdt", 256, 0)
    with pytest.raises(BoxError):
        box_header_bytes(b"uuid", 30, usertype=b"short")


def test_layouts_read_the_fixture() -> None:
    tkhds = list(find_all(STREAM, b"moov/trak/tkhd"))
    version, flags, video = TKHD.read(STREAM, tkhds[0])
    assert (version, flags, video.track_id) == (1, 3, 1)
    assert (video.width >> 16, video.height >> 16) == (320, 180)
    trexes = list(find_all(STREAM, b"moov/mvex/trex"))
    assert [TREX.read(STREAM, t)[2].track_id for t in trexes] == [1, 2]
    moof = find(STREAM, b"moof")
    tfxd = find_uuid(STREAM, TFXD_UUID, *_traf_span(moof))
    assert TFXD.read(STREAM, tfxd) == (1, 0, (0, 10_000_000))


def _traf_span(moof: BoxHeader) -> tuple[int, int]:
    traf = find(STREAM, b"traf", moof.payload_offset, moof.end)
    return traf.payload_offset, traf.end


@given(
    time=st.integers(-(1 << 63), (1 << 63) - 1),
    duration=st.integers(0, (1 << 64) - 1),
)
def test_tfxd_round_trip(time: int, duration: int) -> None:
    made = TFXD.build(time, duration, version=1)
    assert len(made) == TFXD.size(1) == 44
    assert TFXD.read(made, read_box_header(made)) == (1, 0, (time, duration))


def test_layout_errors() -> None:
    with pytest.raises(BoxError):
        TFDT.build(-1, version=1)
    with pytest.raises(BoxError):
        TFDT.build(1, version=7)
    made = TFDT.build(5, version=1)
    with pytest.raises(BoxError, match="truncated"):
        TFDT.read(made[:-1], read_box_header(made[:-1]))
    bad = bytearray(made)
    bad[8] = 3  # version 3
    with pytest.raises(BoxError, match="version"):
        TFDT.read(bad, read_box_header(bad))


def test_tfhd_and_trun_round_trip_the_fixture() -> None:
    for moof in find_all(STREAM, b"moof"):
        tfhd_box = find(STREAM, b"traf/tfhd", moof.payload_offset, moof.end)
        trun_box = find(STREAM, b"traf/trun", moof.payload_offset, moof.end)
        tfhd = TrackFragmentHeader.read(STREAM, tfhd_box)
        assert tfhd.build() == STREAM[tfhd_box.offset : tfhd_box.end]
        run = TrackRun.read(STREAM, trun_box)
        rebuilt = TrackRun.build(
            version=run.version,
            data_offset=run.data_offset,
            first_sample_flags=run.first_sample_flags,
            durations=run.column("durations"),
            sizes=run.column("sizes"),
            flags=run.column("flags"),
            composition_offsets=run.column("composition_offsets"),
        )
        assert rebuilt == STREAM[trun_box.offset : trun_box.end]
        assert run.data_offset == moof.size + 8
        assert STREAM[trun_box.offset + run.data_offset_at :][:4] == struct.pack(
            ">i", run.data_offset
        )


def test_trun_columns_and_first_flags() -> None:
    made = TrackRun.build(
        version=1,
        data_offset=-4,
        durations=[10, 20, 30],
        flags=[0x02000000, 0x01010000, 0x01010000],
        composition_offsets=[0, -5, 7],
    )
    run = TrackRun.read(made, read_box_header(made))
    assert run.sample_count == 3
    assert run.data_offset == -4
    assert run.column("durations") == (10, 20, 30)
    assert run.column("composition_offsets") == (0, -5, 7)
    assert run.column("sizes") is None
    assert run.first_flags() == 0x02000000
    with pytest.raises(BoxError, match="length"):
        TrackRun.build(durations=[1, 2], sizes=[1])
    short = _resized(made[:-4])
    with pytest.raises(BoxError, match="run past"):
        TrackRun.read(short, read_box_header(short))


def _resized(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data[4:]


def test_tfhd_presence_follows_the_fields() -> None:
    tfhd = TrackFragmentHeader(7, DEFAULT_BASE_IS_MOOF, default_sample_duration=1000)
    made = tfhd.build()
    assert read_version_flags(made, read_box_header(made)) == (0, DEFAULT_BASE_IS_MOOF | 0x8)
    assert TrackFragmentHeader.read(made, read_box_header(made)) == tfhd
    assert tfhd.moof_relative
    assert not TrackFragmentHeader(7, base_data_offset=0).moof_relative


@given(
    st.lists(
        st.tuples(st.integers(-(1 << 63), (1 << 63) - 1), st.integers(0, (1 << 64) - 1)),
        max_size=255,
    )
)
def test_tfrf_round_trip(entries: list[tuple[int, int]]) -> None:
    made = build_tfrf(entries)
    assert len(made) == 24 + 4 + 1 + 16 * len(entries)
    assert read_tfrf(made, read_box_header(made)) == entries


def test_tfrf_version_0_and_limits() -> None:
    made = build_tfrf([(1, 2), (3, 4)], version=0)
    assert len(made) == 24 + 4 + 1 + 16
    assert read_tfrf(made, read_box_header(made)) == [(1, 2), (3, 4)]
    with pytest.raises(BoxError):
        build_tfrf([(0, 0)] * 256)
    with pytest.raises(BoxError):
        build_tfrf([(-1, 0)], version=0)
    short = _resized(made[:-1])
    with pytest.raises(BoxError):
        read_tfrf(short, read_box_header(short))


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_garbage_raises_only_box_errors(data: bytes) -> None:
    try:
        for header in iter_boxes(data):
            list(iter_boxes(data, header.payload_offset, header.end))
    except BoxError:
        pass
