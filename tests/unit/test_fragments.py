"""Fragment rewriting: lookahead (TfrfBox), re-stamping (TfxdBox, tfdt), tfdt insertion.

The proof that a rewrite is right is what a player reads: the samples that
trun and data_offset point at in (new moof + original mdat) must be the very
bytes they pointed at before.
"""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smoothlive.media.boxes import (
    DEFAULT_BASE_IS_MOOF,
    MFHD,
    TFDT,
    TFXD,
    BoxError,
    TrackFragmentHeader,
    TrackRun,
    box,
    box_header_bytes,
    children,
    find,
    iter_boxes,
    read_box_header,
    read_tfrf,
)
from smoothlive.media.fragments import (
    read_moof,
    retimed,
    sample_ranges,
    tfrf_box,
    tfxd_box,
    with_lookahead,
    with_tfdt,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ingest"
STREAMS = {name: (FIXTURES / f"{name}.ismv").read_bytes() for name in ("ch1-300k", "ch1-150k")}


def _pairs(stream: bytes) -> list[tuple[bytes, bytes]]:
    boxes = list(iter_boxes(stream))
    pairs = []
    for first, second in itertools.pairwise(boxes):
        if first.type == b"moof" and second.type == b"mdat":
            pairs.append((stream[first.offset : first.end], stream[second.offset : second.end]))
    return pairs


FRAGMENTS = [pair for stream in STREAMS.values() for pair in _pairs(stream)]
LOOKAHEAD = [(10_000_000, 10_000_000), (20_000_000, 10_000_000)]


def _samples(moof: bytes, mdat: bytes) -> list[bytes]:
    """The sample bytes a player reads: trun sizes at data_offset in moof + mdat."""
    fragment = read_moof(moof)
    whole = moof + mdat
    mdat_start = len(moof) + read_box_header(mdat).header_size
    samples = []
    for offset, size in sample_ranges(fragment):
        assert mdat_start <= offset and offset + size <= len(whole), "sample outside the mdat"
        samples.append(whole[offset : offset + size])
    return samples


def _check_sizes(moof: bytes) -> None:
    """Every size field agrees with the bytes: the moof, the traf and their children."""
    header = read_box_header(moof)
    assert header.size == len(moof)
    for child in iter_boxes(moof, header.payload_offset, header.end):
        if child.type == b"traf":
            assert sum(c.size for c in children(moof, child)) == child.payload_size


def test_fixture_fragments_are_what_we_expect() -> None:
    assert len(FRAGMENTS) == 16
    for moof, mdat in FRAGMENTS:
        fragment = read_moof(moof)
        assert fragment.track_id in (1, 2)
        assert fragment.tfxd is not None and fragment.tfdt is None
        samples = _samples(moof, mdat)
        assert sum(map(len, samples)) == len(mdat) - 8  # the samples fill the mdat


def test_tfxd_and_tfrf_boxes() -> None:
    made = tfxd_box(-213_333, 10_240_000)
    assert made[:8] == b"\0\0\0\x2cuuid"
    assert made[8:24] == bytes.fromhex("6d1d9b0542d544e680e2141daff757b2")
    assert made[24:28] == b"\x01\0\0\0"
    assert made[28:] == (-213_333).to_bytes(8, "big", signed=True) + (10_240_000).to_bytes(8, "big")
    made = tfrf_box(LOOKAHEAD)
    assert made[8:24] == bytes.fromhex("d4807ef2ca3946958e5426cb9e46a79f")
    assert made[24:29] == b"\x01\0\0\0\x02"  # version 1, flags, FragmentCount
    assert len(made) == 29 + 32
    assert read_tfrf(made, read_box_header(made)) == LOOKAHEAD


@pytest.mark.parametrize("index", range(len(FRAGMENTS)))
def test_with_lookahead_keeps_the_samples(index: int) -> None:
    moof, mdat = FRAGMENTS[index]
    new = with_lookahead(moof, LOOKAHEAD)
    _check_sizes(new)
    assert len(new) == len(moof) + 61
    assert _samples(new, mdat) == _samples(moof, mdat)
    fragment = read_moof(new)
    assert [c.type for c in children(new, fragment.traf)][-1] == b"uuid"
    assert len(fragment.tfrfs) == 1
    tfrf = fragment.tfrfs[0]
    assert tfrf.end == fragment.traf.end  # the last child of the traf
    assert read_tfrf(new, tfrf) == LOOKAHEAD
    before = read_moof(moof)
    assert (fragment.tfxd_time, fragment.tfxd_duration) == (before.tfxd_time, before.tfxd_duration)
    # everything but the sizes, the data offset and the new box is untouched
    assert (
        new[before.traf.payload_offset : before.truns[0][0].offset]
        == moof[before.traf.payload_offset : before.truns[0][0].offset]
    )


def test_with_lookahead_replaces_an_existing_tfrf() -> None:
    moof, mdat = FRAGMENTS[0]
    once = with_lookahead(moof, LOOKAHEAD)
    twice = with_lookahead(once, LOOKAHEAD[:1])
    assert len(twice) == len(moof) + 45
    assert read_tfrf(twice, read_moof(twice).tfrfs[0]) == LOOKAHEAD[:1]
    assert _samples(twice, mdat) == _samples(moof, mdat)
    assert with_lookahead(once, []) == moof  # no entries: the box is taken out again


@settings(max_examples=40, deadline=None)
@given(
    index=st.integers(0, len(FRAGMENTS) - 1),
    entries=st.lists(
        st.tuples(st.integers(-(1 << 63), (1 << 63) - 1), st.integers(0, (1 << 64) - 1)),
        max_size=40,
    ),
)
def test_with_lookahead_any_entries(index: int, entries: list[tuple[int, int]]) -> None:
    moof, mdat = FRAGMENTS[index]
    new = with_lookahead(moof, entries)
    _check_sizes(new)
    assert _samples(new, mdat) == _samples(moof, mdat)
    tfrfs = read_moof(new).tfrfs
    assert [read_tfrf(new, t) for t in tfrfs] == ([entries] if entries else [])


@pytest.mark.parametrize("index", [0, 1, 6, 7])
def test_retimed(index: int) -> None:
    moof, mdat = FRAGMENTS[index]
    new = retimed(moof, 123_456_789_000)
    assert len(new) == len(moof)  # a version 1 tfxd stays the same size
    fragment, before = read_moof(new), read_moof(moof)
    assert fragment.tfxd_time == 123_456_789_000
    assert fragment.tfxd_duration == before.tfxd_duration
    assert _samples(new, mdat) == _samples(moof, mdat)
    assert read_moof(retimed(moof, 5, duration=7)).tfxd_duration == 7
    # with a tfdt too, both carry the time
    both = retimed(with_tfdt(moof, 1), 42)
    fragment = read_moof(both)
    assert (fragment.tfxd_time, fragment.base_media_decode_time) == (42, 42)
    assert _samples(both, mdat) == _samples(moof, mdat)


def test_retimed_negative_time_refused_in_tfdt_only() -> None:
    moof, _ = FRAGMENTS[1]
    assert read_moof(retimed(moof, -5)).tfxd_time == -5
    with pytest.raises(BoxError, match="negative"):
        retimed(with_tfdt(moof, 0), -5)


@pytest.mark.parametrize("index", range(len(FRAGMENTS)))
def test_with_tfdt(index: int) -> None:
    moof, mdat = FRAGMENTS[index]
    new = with_tfdt(moof, 987_654_321)
    _check_sizes(new)
    assert len(new) == len(moof) + 20
    fragment = read_moof(new)
    kinds = [c.type for c in children(new, fragment.traf)]
    assert kinds[:2] == [b"tfhd", b"tfdt"]
    assert (fragment.tfdt_version, fragment.base_media_decode_time) == (1, 987_654_321)
    assert _samples(new, mdat) == _samples(moof, mdat)
    again = with_tfdt(new, 5)  # replaced where it stands
    assert len(again) == len(new)
    assert read_moof(again).base_media_decode_time == 5


def _synthetic(
    tfhd: TrackFragmentHeader, *, large: bool = False, tfdt_version: int | None = None
) -> tuple[bytes, bytes]:
    """A moof + mdat of three samples, data offsets counted from the moof."""
    sizes = [5, 7, 3]
    mdat = box(b"mdat", b"".join(bytes([65 + i]) * size for i, size in enumerate(sizes)))
    tfdt = TFDT.build(1000, version=tfdt_version) if tfdt_version is not None else b""

    def build(data_offset: int) -> bytes:
        trun = TrackRun.build(data_offset=data_offset, sizes=sizes, durations=[10, 10, 10])
        traf = box(b"traf", [tfhd.build(), tfdt, trun, TFXD.build(0, 30, version=0)])
        body = MFHD.build(1) + traf
        size = len(body) + (16 if large else 8)
        return box_header_bytes(b"moof", size, large=large) + body

    size = len(build(0))
    return build(size + 8), mdat


@pytest.mark.parametrize("flags", [0, DEFAULT_BASE_IS_MOOF])
def test_moof_relative_offsets_move(flags: int) -> None:
    moof, mdat = _synthetic(TrackFragmentHeader(1, flags))
    for new in (
        with_lookahead(moof, LOOKAHEAD),
        with_tfdt(moof, 9),
        retimed(moof, 1 << 40),  # the version 0 tfxd grows to version 1
    ):
        assert len(new) != len(moof)
        assert _samples(new, mdat) == _samples(moof, mdat) == [b"AAAAA", b"BBBBBBB", b"CCC"]


def test_explicit_base_data_offset_is_left_alone() -> None:
    moof, _ = _synthetic(TrackFragmentHeader(1, base_data_offset=4096))
    new = with_lookahead(moof, LOOKAHEAD)
    before, after = read_moof(moof), read_moof(new)
    assert before.truns[0][1].data_offset == after.truns[0][1].data_offset
    with pytest.raises(BoxError, match="absolute"):
        sample_ranges(after)


def test_largesize_headers_are_kept() -> None:
    moof, mdat = _synthetic(TrackFragmentHeader(1), large=True)
    new = with_lookahead(moof, LOOKAHEAD)
    assert read_box_header(new).header_size == 16
    _check_sizes(new)
    assert _samples(new, mdat) == _samples(moof, mdat)


def test_tfdt_version_0_grows_when_the_time_needs_it() -> None:
    moof, mdat = _synthetic(TrackFragmentHeader(1), tfdt_version=0)
    small = retimed(moof, 77)
    assert read_moof(small).tfdt_version == 0
    big = retimed(moof, 1 << 33)
    assert (read_moof(big).tfdt_version, read_moof(big).base_media_decode_time) == (1, 1 << 33)
    assert _samples(big, mdat) == _samples(moof, mdat)


def test_malformed_moofs() -> None:
    moof, _ = FRAGMENTS[0]
    with pytest.raises(BoxError):
        with_lookahead(moof[:-1], LOOKAHEAD)
    with pytest.raises(BoxError, match="expected a moof"):
        read_moof(box(b"free", b""))
    traf = find(moof, b"moof/traf")
    two = box(b"moof", [moof[8 : traf.offset], moof[traf.offset : traf.end] * 2])
    with pytest.raises(BoxError, match="one track per moof is required"):
        with_lookahead(two, LOOKAHEAD)
    with pytest.raises(BoxError, match="no traf"):
        read_moof(box(b"moof", MFHD.build(1)))
    with pytest.raises(BoxError, match="no tfhd"):
        read_moof(box(b"moof", box(b"traf", b"")))
    with pytest.raises(BoxError, match="no tfxd or tfdt"):
        retimed(box(b"moof", box(b"traf", TrackFragmentHeader(1).build())), 5)
    with pytest.raises(BoxError, match="255"):
        with_lookahead(moof, [(0, 0)] * 256)


def _ffmpeg() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:  # pragma: no cover
        pytest.skip("imageio-ffmpeg is not installed")
    return imageio_ffmpeg.get_ffmpeg_exe()


def _framemd5(path: Path) -> list[str]:
    result = subprocess.run(
        [_ffmpeg(), "-v", "error", "-i", str(path), "-f", "framemd5", "-"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return [line for line in result.stdout.decode().splitlines() if not line.startswith("#")]


def test_ffmpeg_decodes_rewritten_fragments_identically(tmp_path: Path) -> None:
    stream = STREAMS["ch1-300k"]
    boxes = list(iter_boxes(stream))
    parts = []
    for header in boxes:
        data = stream[header.offset : header.end]
        if header.type == b"moof":
            fragment = read_moof(data)
            data = with_lookahead(data, LOOKAHEAD)
            if fragment.track_id == 1:  # video times start at 0: a tfdt can carry them
                data = with_tfdt(data, fragment.tfxd_time)
        parts.append(data)
    original, rewritten = tmp_path / "original.ismv", tmp_path / "rewritten.ismv"
    original.write_bytes(stream)
    rewritten.write_bytes(b"".join(parts))
    expected = _framemd5(original)
    assert len(expected) > 100  # 100 video frames and the audio frames
    assert _framemd5(rewritten) == expected
