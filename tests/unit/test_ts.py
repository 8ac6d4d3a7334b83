"""The MPEG-2 TS packetizer for HLS segments, fed with real ffmpeg ingest captures.

Two kinds of proof: the structure read back by a small demuxer here (packet
layout, continuity counters across concatenated fragments and segments, PSI
CRCs, PES timestamps and PCRs), and what the real ffmpeg makes of the
segments (no error at all, the same decoded pictures as the ismv capture).
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from smoothlive.media.boxes import (
    MFHD,
    SAMPLE_IS_NON_SYNC,
    TrackFragmentHeader,
    TrackRun,
    box,
)
from smoothlive.media.ingest import Fragment, IngestParser, Movie
from smoothlive.media.model import FragmentData, TrackInfo
from smoothlive.media.ts import (
    PCR_DELAY,
    PMT_PID,
    TIMESTAMP_OFFSET,
    TsError,
    TsTrack,
    crc32_mpeg2,
    encrypt_segment,
    fragment_packets,
    psi_packets,
    sequence_iv,
    ts_tracks,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ingest"
WRAP = 1 << 33


def _capture(path: Path) -> tuple[list[TrackInfo], list[FragmentData]]:
    parser = IngestParser()
    tracks: list[TrackInfo] = []
    fragments: list[FragmentData] = []
    for event in [*parser.feed(path.read_bytes()), *parser.close()]:
        if isinstance(event, Movie):
            tracks = list(event.tracks)
        elif isinstance(event, Fragment) and event.data.time >= 0:
            fragments.append(event.data)  # (ffmpeg's first audio fragment starts before 0)
    return tracks, fragments


INFOS, FRAGMENTS = _capture(FIXTURES / "ch1-300k.ismv")
TRACKS = ts_tracks(INFOS)
VIDEO, AUDIO = TRACKS
VIDEO_FRAGMENTS = [f for f in FRAGMENTS if f.track_id == VIDEO.info.track_id]
AUDIO_FRAGMENTS = [f for f in FRAGMENTS if f.track_id == AUDIO.info.track_id]
AUDIO_ONLY = ts_tracks([AUDIO.info])


def _packets_of(track: TsTrack, data: FragmentData, *, pcr: bool | None = None) -> bytes:
    if pcr is None:
        pcr = track.info.kind == "video"
    return fragment_packets(track, data.time, data.moof, data.mdat, pcr=pcr)


def _muxed_segment(sequence: int, fragments: list[FragmentData]) -> bytes:
    by_id = {t.info.track_id: t for t in TRACKS}
    parts = [psi_packets(TRACKS, sequence % 16)]
    parts += [_packets_of(by_id[f.track_id], f) for f in fragments]
    return b"".join(parts)


# -- a small demuxer ------------------------------------------------------------------------


@dataclass
class Packet:
    pid: int
    start: bool
    cc: int
    has_payload: bool
    adaptation: bytes
    payload: bytes

    @property
    def pcr(self) -> int | None:
        """The PCR base (90 kHz) when the adaptation field has one."""
        if len(self.adaptation) >= 7 and self.adaptation[0] & 0x10:
            raw = int.from_bytes(self.adaptation[1:7], "big")
            assert raw >> 9 & 0x3F == 0x3F  # reserved bits
            assert raw & 0x1FF == 0  # extension
            return raw >> 15
        return None

    @property
    def random_access(self) -> bool:
        return bool(self.adaptation and self.adaptation[0] & 0x40)


def parse_packets(data: bytes) -> list[Packet]:
    assert len(data) % 188 == 0
    packets = []
    for offset in range(0, len(data), 188):
        raw = data[offset : offset + 188]
        assert raw[0] == 0x47
        assert not raw[1] & 0x80  # transport_error_indicator
        control = raw[3] >> 4 & 3
        assert control != 0 and raw[3] >> 6 == 0  # reserved, not scrambled
        adaptation, position = b"", 4
        if control & 2:
            length = raw[4]
            assert length <= 182 if control & 1 else length == 183
            adaptation = raw[5 : 5 + length]
            position = 5 + length
            if length:
                stuffing_from = 1 + (6 if adaptation[0] & 0x10 else 0)
                assert set(adaptation[stuffing_from:]) <= {0xFF}
        payload = raw[position:] if control & 1 else b""
        if control & 1:
            assert payload, "a packet with payload carries at least one byte"
        packets.append(
            Packet(
                pid=(raw[1] & 0x1F) << 8 | raw[2],
                start=bool(raw[1] & 0x40),
                cc=raw[3] & 0x0F,
                has_payload=bool(control & 1),
                adaptation=adaptation,
                payload=payload,
            )
        )
    return packets


def _timestamp(field: bytes, prefix: int) -> int:
    assert field[0] >> 4 == prefix
    assert field[0] & 1 and field[2] & 1 and field[4] & 1  # marker bits
    return (
        (field[0] >> 1 & 7) << 30 | field[1] << 22 | (field[2] >> 1) << 15 | field[3] << 7
    ) | field[4] >> 1


@dataclass
class Pes:
    pid: int
    stream_id: int
    pts: int
    dts: int
    payload: bytes
    pcr: int | None
    random_access: bool
    packets: list[Packet] = field(repr=False)


def _parse_pes(pid: int, packets: list[Packet]) -> Pes:
    data = b"".join(p.payload for p in packets)
    assert data[:3] == b"\x00\x00\x01"
    stream_id, length = data[3], int.from_bytes(data[4:6], "big")
    assert data[6] >> 6 == 0b10
    flags, header_length = data[7] >> 6, data[8]
    if flags == 0b10:
        pts = dts = _timestamp(data[9:14], 0b0010)
    else:
        assert flags == 0b11
        pts, dts = _timestamp(data[9:14], 0b0011), _timestamp(data[14:19], 0b0001)
    payload = data[9 + header_length :]
    if length:
        assert length == len(data) - 6
    return Pes(pid, stream_id, pts, dts, payload, packets[0].pcr, packets[0].random_access, packets)


def parse_pes(data: bytes) -> dict[int, list[Pes]]:
    """Every PES of the stream by PID (PSI PIDs left out)."""
    current: dict[int, list[Packet]] = {}
    found: dict[int, list[Pes]] = defaultdict(list)
    for packet in parse_packets(data):
        if packet.pid in (0, PMT_PID) or not packet.has_payload:
            continue
        if packet.start:
            if current.get(packet.pid):
                found[packet.pid].append(_parse_pes(packet.pid, current[packet.pid]))
            current[packet.pid] = []
        assert packet.pid in current, "payload before the first payload_unit_start"
        current[packet.pid].append(packet)
    for pid, packets in current.items():
        found[pid].append(_parse_pes(pid, packets))
    return found


def assert_continuous(data: bytes) -> None:
    last: dict[int, int] = {}
    for packet in parse_packets(data):
        if not packet.has_payload:
            continue
        if packet.pid in last:
            assert packet.cc == (last[packet.pid] + 1) % 16, f"CC jump on PID {packet.pid:#x}"
        last[packet.pid] = packet.cc


def parse_sections(data: bytes) -> dict[int, bytes]:
    """The PAT and PMT sections (table_id: whole section), CRC checked."""
    sections = {}
    for packet in parse_packets(data):
        if packet.pid not in (0, PMT_PID):
            continue
        assert packet.start
        pointer = packet.payload[0]
        body = packet.payload[1 + pointer :]
        length = int.from_bytes(body[1:3], "big") & 0x0FFF
        section = body[: 3 + length]
        assert crc32_mpeg2(section[:-4]) == int.from_bytes(section[-4:], "big")
        assert crc32_mpeg2(section) == 0  # the MPEG-2 property: CRC over all is zero
        assert set(body[3 + length :]) <= {0xFF}
        sections[section[0]] = section
    return sections


def annexb_units(data: bytes) -> list[bytes]:
    parts = data.split(b"\x00\x00\x01")
    assert parts[0] in (b"", b"\x00")
    return [p.removesuffix(b"\x00") for p in parts[1:]]


def adts_frames(data: bytes) -> list[tuple[bytes, bytes]]:
    frames, position = [], 0
    while position < len(data):
        header = data[position : position + 7]
        assert header[0] == 0xFF and header[1] & 0xF6 == 0xF0  # syncword, layer 0
        assert header[1] & 1  # no CRC
        length = (header[3] & 3) << 11 | header[4] << 3 | header[5] >> 5
        frames.append((header, data[position + 7 : position + length]))
        position += length
    assert position == len(data)
    return frames


def _to90k(time: int, timescale: int = 10_000_000) -> int:
    return (time * 90_000 + timescale // 2) // timescale


def _sample_sizes(data: FragmentData) -> list[int]:
    from smoothlive.media.fragments import read_moof, sample_ranges

    return [size for _, size in sample_ranges(read_moof(data.moof))]


# -- structure ------------------------------------------------------------------------------


def test_tracks_and_stream_types() -> None:
    assert [(t.pid, t.stream_type) for t in TRACKS] == [(0x100, 0x1B), (0x101, 0x0F)]
    assert [t.pid for t in ts_tracks([INFOS[1], INFOS[0]])] == [0x100, 0x101]


def test_every_packet_is_188_bytes_with_a_sync_byte() -> None:
    for data in FRAGMENTS:
        track = VIDEO if data.track_id == VIDEO.info.track_id else AUDIO
        packets = _packets_of(track, data)
        assert len(packets) % 188 == 0
        assert packets[::188] == b"\x47" * (len(packets) // 188)
        parsed = parse_packets(packets)
        assert {p.pid for p in parsed} == {track.pid}
        assert len(parsed) % 16 == 0
        assert [p.cc for p in parsed] == [i % 16 for i in range(len(parsed))]
        assert all(p.has_payload for p in parsed)


def test_pat_and_pmt() -> None:
    data = psi_packets(TRACKS, 7)
    packets = parse_packets(data)
    assert [(p.pid, p.cc, p.start) for p in packets] == [(0, 7, True), (PMT_PID, 7, True)]
    sections = parse_sections(data)
    pat = sections[0x00]
    assert pat[8:12] == bytes.fromhex("0001F000")  # program 1 -> PID 0x1000
    pmt = sections[0x02]
    assert int.from_bytes(pmt[3:5], "big") == 1  # program_number
    assert int.from_bytes(pmt[8:10], "big") & 0x1FFF == 0x100  # PCR_PID: the video
    streams = pmt[12:-4]
    assert streams == bytes.fromhex("1BE100F0000FE101F000")


def test_pmt_of_an_audio_only_stream_puts_the_pcr_on_the_audio() -> None:
    info = replace(AUDIO.info, language="eng")
    pmt = parse_sections(psi_packets(ts_tracks([info]), 0))[0x02]
    assert int.from_bytes(pmt[8:10], "big") & 0x1FFF == 0x100
    assert pmt[12:-4] == bytes.fromhex("0FE100F006") + b"\x0a\x04eng\x00"


def test_continuity_across_fragments_and_segments() -> None:
    for k in (0, 5, 15):
        first = _muxed_segment(k, FRAGMENTS[:4])
        second = _muxed_segment(k + 1, FRAGMENTS[4:])
        assert_continuous(first)
        assert_continuous(first + second)
        assert [p.cc for p in parse_packets(second)[:2]] == [(k + 1) % 16] * 2


def test_timestamps_follow_the_fragment_times() -> None:
    for data in VIDEO_FRAGMENTS:
        pes = parse_pes(_packets_of(VIDEO, data))[VIDEO.pid]
        moof_durations = 400_000  # 25 fps in 100 ns units, as the capture has it
        assert len(pes) == 25
        for index, packet in enumerate(pes):
            expected = _to90k(data.time + index * moof_durations) + TIMESTAMP_OFFSET
            assert abs(packet.dts - expected) <= 1
            assert packet.pts == packet.dts  # baseline: no reordering
            assert packet.pcr == packet.dts - PCR_DELAY
            assert packet.stream_id == 0xE0


def test_timestamps_pcr_and_random_access_over_a_muxed_segment() -> None:
    segment = _muxed_segment(0, FRAGMENTS)
    streams = parse_pes(segment)
    video, audio = streams[VIDEO.pid], streams[AUDIO.pid]
    dts = [p.dts for p in video]
    assert dts == sorted(dts) and len(set(dts)) == len(dts) == 100
    audio_pts = [p.pts for p in audio]
    assert audio_pts == sorted(audio_pts)
    assert all(p.pcr is not None and p.pcr <= p.dts for p in video)
    assert all(p.pcr is None and p.stream_id == 0xC0 for p in audio)
    assert [p.random_access for p in video] == [i % 25 == 0 for i in range(100)]
    first_audio = AUDIO_FRAGMENTS[0]
    assert abs(audio[0].pts - (_to90k(first_audio.time) + TIMESTAMP_OFFSET)) <= 1
    pcrs = [p.pcr for p in video]
    assert max(b - a for a, b in itertools.pairwise(pcrs)) <= 9000  # 100 ms


def test_the_time_argument_wins_over_the_tfxd() -> None:
    data = VIDEO_FRAGMENTS[1]
    restamped = 123_456_789_000
    pes = parse_pes(fragment_packets(VIDEO, restamped, data.moof, data.mdat, pcr=True))
    assert abs(pes[VIDEO.pid][0].dts - (_to90k(restamped) + TIMESTAMP_OFFSET) % WRAP) <= 1


def test_timestamps_wrap_at_33_bits() -> None:
    data = VIDEO_FRAGMENTS[0]
    near = (WRAP - TIMESTAMP_OFFSET - 45_000) * 10_000_000 // 90_000  # wraps half way
    pes = parse_pes(fragment_packets(VIDEO, near, data.moof, data.mdat, pcr=True))[VIDEO.pid]
    dts = [p.dts for p in pes]
    assert all(0 <= t < WRAP for t in dts)
    assert dts[0] > WRAP - 50_000 and dts[-1] < 50_000
    assert all((b - a) % WRAP == 3600 for a, b in itertools.pairwise(dts))


def test_h264_access_units() -> None:
    parameter_sets = annexb_units(bytes.fromhex(VIDEO.info.codec_private_data))
    for data in VIDEO_FRAGMENTS:
        pes = parse_pes(_packets_of(VIDEO, data))[VIDEO.pid]
        sizes = _sample_sizes(data)
        for index, (packet, size) in enumerate(zip(pes, sizes, strict=True)):
            units = annexb_units(packet.payload)
            assert packet.payload.startswith(b"\x00\x00\x00\x01\x09\xf0")
            kinds = [u[0] & 0x1F for u in units]
            assert kinds[0] == 9 and kinds.count(9) == 1
            if index == 0:
                assert units[1:3] == parameter_sets
                assert 5 in kinds  # the IDR
            else:
                assert 7 not in kinds and 5 not in kinds
            # the sample's own bytes, length prefixes turned into start codes
            added = 6 + (sum(4 + len(u) for u in parameter_sets) if index == 0 else 0)
            assert len(packet.payload) == added + size


def test_aac_in_adts() -> None:
    for data in AUDIO_FRAGMENTS:
        pes = parse_pes(_packets_of(AUDIO, data))[AUDIO.pid]
        frames = [frame for packet in pes for frame in adts_frames(packet.payload)]
        assert [len(body) for _, body in frames] == _sample_sizes(data)
        for header, _ in frames:
            # AAC LC (profile 1), 48 kHz (index 3), mono: from AudioSpecificConfig 1188
            assert header[2] >> 6 == 1 and header[2] >> 2 & 0xF == 3
            assert (header[2] & 1) << 2 | header[3] >> 6 == 1
        assert all(len(p.payload) <= 2930 for p in pes)
        for packet in pes:
            count = len(adts_frames(packet.payload))
            assert count * 1024 / 48_000 <= 0.5


def test_audio_carrying_the_pcr_keeps_it_within_100_ms() -> None:
    segment = psi_packets(AUDIO_ONLY, 0) + b"".join(
        _packets_of(AUDIO_ONLY[0], data, pcr=True) for data in AUDIO_FRAGMENTS
    )
    assert_continuous(segment)
    pes = parse_pes(segment)[0x100]
    pcrs = [p.pcr for p in pes]
    assert all(p is not None for p in pcrs)
    assert all(p.pcr == p.pts - PCR_DELAY for p in pes)
    assert max(b - a for a, b in itertools.pairwise(pcrs)) <= 9000


def test_he_aac_explicit_signalling_gives_the_core_in_adts() -> None:
    # AOT 5 (SBR), core 24 kHz (6), stereo, extension 48 kHz (3), then AOT 2 (LC)
    bits = "0010101100010001100010"
    config = int(bits.ljust(24, "0"), 2).to_bytes(3, "big").hex().upper()
    info = replace(AUDIO.info, fourcc="AACH", codec_private_data=config, channels=2)
    track = ts_tracks([info])[0]
    moof, mdat = _fragment(1, [b"\x21\x10" * 50] * 3, [426_667] * 3)
    pes = parse_pes(fragment_packets(track, 0, moof, mdat, pcr=True))[0x100]
    header, _ = adts_frames(pes[0].payload)[0]
    assert header[2] >> 6 == 1 and header[2] >> 2 & 0xF == 6
    assert (header[2] & 1) << 2 | header[3] >> 6 == 2


# -- synthetic fragments: the padding and the layout for any sizes -------------------------


def _fragment(
    track_id: int,
    samples: list[bytes],
    durations: list[int],
    *,
    flags: list[int] | None = None,
    composition_offsets: list[int] | None = None,
    version: int = 0,
    base_data_offset: int | None = None,
) -> tuple[bytes, bytes]:
    tfhd = TrackFragmentHeader(
        track_id, base_data_offset=base_data_offset, default_sample_flags=SAMPLE_IS_NON_SYNC
    ).build()

    def build(offset: int) -> bytes:
        trun = TrackRun.build(
            version=version,
            data_offset=offset,
            first_sample_flags=0 if flags is None else None,
            durations=durations,
            sizes=[len(s) for s in samples],
            flags=flags,
            composition_offsets=composition_offsets,
        )
        return box(b"moof", [MFHD.build(1), box(b"traf", [tfhd, trun])])

    moof = build(0)
    moof = build(len(moof) + 8)
    return moof, box(b"mdat", b"".join(samples))


def _nal_sample(sizes: list[int], idr: bool) -> bytes:
    out = b""
    for index, size in enumerate(sizes):
        kind = (0x65 if idr else 0x41) if index == len(sizes) - 1 else 0x06  # SEI, then slice
        out += size.to_bytes(4, "big") + bytes([kind]) + b"\xab" * (size - 1)
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(1, 5000), min_size=1, max_size=3), min_size=1, max_size=30),
    st.booleans(),
    st.integers(0, 1 << 40),
)
def test_any_video_fragment_pads_to_16_packets(
    nal_sizes: list[list[int]], pcr: bool, time: int
) -> None:
    samples = [_nal_sample(sizes, index == 0) for index, sizes in enumerate(nal_sizes)]
    moof, mdat = _fragment(1, samples, [333_667] * len(samples))
    data = fragment_packets(VIDEO, time, moof, mdat, pcr=pcr)
    packets = parse_packets(data)
    assert [p.cc for p in packets] == [i % 16 for i in range(len(packets))]
    assert len(packets) % 16 == 0
    pes = parse_pes(data)[VIDEO.pid]
    assert len(pes) == len(samples)
    for packet, sizes in zip(pes, nal_sizes, strict=True):
        assert [len(u) for u in annexb_units(packet.payload)][-len(sizes) :] == sizes
        assert (packet.pcr is not None) is pcr
        # packing: full packets first, the stuffing spread over the last ones only
        payloads = [len(p.payload) for p in packet.packets]
        field = 1 + (6 if pcr else 0) if packet.random_access or pcr else -1  # flags, PCR
        full = [184 - 1 - field] + [184] * (len(payloads) - 1)
        head = 0
        while head < len(payloads) and payloads[head] == full[head]:
            head += 1
        tail = payloads[head:]
        assert not tail or max(tail) - min(tail) <= 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 1500), min_size=1, max_size=60), st.booleans())
def test_any_audio_fragment_pads_to_16_packets(sizes: list[int], pcr: bool) -> None:
    samples = [bytes([index % 251]) * size for index, size in enumerate(sizes)]
    moof, mdat = _fragment(2, samples, [213_333] * len(samples))
    data = fragment_packets(AUDIO, 5_000_000, moof, mdat, pcr=pcr)
    packets = parse_packets(data)
    assert len(packets) % 16 == 0
    assert [p.cc for p in packets] == [i % 16 for i in range(len(packets))]
    frames = [body for p in parse_pes(data)[AUDIO.pid] for _, body in adts_frames(p.payload)]
    assert frames == samples


def test_negative_composition_offsets_move_dts_back() -> None:
    # I P B B as ffmpeg's ismv muxer writes them: trun version 1, B-frames at -1 frame
    samples = [_nal_sample([300], i == 0) for i in range(4)]
    offsets = [0, 800_000, -400_000, -400_000]
    moof, mdat = _fragment(1, samples, [400_000] * 4, composition_offsets=offsets, version=1)
    pes = parse_pes(fragment_packets(VIDEO, 0, moof, mdat, pcr=True))[VIDEO.pid]
    base = TIMESTAMP_OFFSET
    assert [p.dts for p in pes] == [base - 3600 + 3600 * i for i in range(4)]
    assert [p.pts for p in pes] == [base, base + 3 * 3600, base + 3600, base + 2 * 3600]
    assert all(p.pts >= p.dts for p in pes)


def test_sync_samples_from_sample_flags() -> None:
    samples = [_nal_sample([100], idr) for idr in (True, False, True)]
    flags = [0x02000000, SAMPLE_IS_NON_SYNC, 0x02000000]
    moof, mdat = _fragment(1, samples, [400_000] * 3, flags=flags)
    pes = parse_pes(fragment_packets(VIDEO, 0, moof, mdat, pcr=True))[VIDEO.pid]
    with_sps = [7 in {u[0] & 0x1F for u in annexb_units(p.payload)} for p in pes]
    assert with_sps == [True, False, True]
    assert [p.random_access for p in pes] == [True, False, True]


def test_samples_carrying_their_own_parameter_sets_and_delimiter() -> None:
    sps, pps = annexb_units(bytes.fromhex(VIDEO.info.codec_private_data))
    sample = b"".join(len(u).to_bytes(4, "big") + u for u in (b"\x09\x10", sps, pps))
    sample += _nal_sample([50], True)
    moof, mdat = _fragment(1, [sample], [400_000])
    pes = parse_pes(fragment_packets(VIDEO, 0, moof, mdat, pcr=True))[VIDEO.pid]
    kinds = [u[0] & 0x1F for u in annexb_units(pes[0].payload)]
    assert kinds == [9, 7, 8, 5]


# -- bad input ------------------------------------------------------------------------------


def test_unsupported_tracks() -> None:
    for info in (
        replace(AUDIO.info, fourcc="EC-3"),
        replace(VIDEO.info, fourcc="HEVC"),
        TrackInfo("text", "textstream", 3, 1000, "TTML", ""),
        replace(AUDIO.info, codec_private_data="1180"[:2]),  # truncated config
        replace(AUDIO.info, codec_private_data="F8"),  # AOT 31 escape, truncated
        replace(AUDIO.info, codec_private_data="1000"),  # channel configuration 0
        replace(VIDEO.info, codec_private_data="0000000167"),  # no PPS
        replace(VIDEO.info, codec_private_data="zz"),
    ):
        with pytest.raises(ValueError):
            ts_tracks([info])
    with pytest.raises(ValueError):
        TsTrack(PMT_PID, VIDEO.info)


def test_fragments_that_cannot_be_converted() -> None:
    good = VIDEO_FRAGMENTS[0]
    absolute_moof, absolute_mdat = _fragment(
        1, [_nal_sample([10], True)], [400_000], base_data_offset=1000
    )
    overflowing_nal = _fragment(1, [b"\x00\x00\x10\x00\x65"], [400_000])
    cases = [
        (absolute_moof, absolute_mdat),
        (good.moof, good.mdat[:-10]),  # truncated mdat
        (good.moof, good.mdat[:100]),
        (good.moof, b"\x00\x00\x00\x08free"),
        (good.moof[:-3], good.mdat),
        (b"", good.mdat),
        (b"garbage!", b"garbage!"),
        overflowing_nal,
    ]
    for moof, mdat in cases:
        with pytest.raises(TsError):
            fragment_packets(VIDEO, 0, moof, mdat, pcr=True)
    audio = AUDIO_FRAGMENTS[0]
    with pytest.raises(TsError):
        fragment_packets(AUDIO, 0, audio.moof, audio.mdat[:-1], pcr=False)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_corrupted_fragments_raise_value_error_only(data: st.DataObject) -> None:
    fragment = data.draw(st.sampled_from(FRAGMENTS[:2]))
    track = VIDEO if fragment.track_id == VIDEO.info.track_id else AUDIO
    which = data.draw(st.sampled_from(["moof", "mdat"]))
    original = bytearray(getattr(fragment, which))
    limit = len(original) if which == "moof" else min(len(original), 400)
    for _ in range(data.draw(st.integers(1, 4))):
        original[data.draw(st.integers(0, limit - 1))] = data.draw(st.integers(0, 255))
    moof = bytes(original) if which == "moof" else fragment.moof
    mdat = bytes(original) if which == "mdat" else fragment.mdat
    try:
        out = fragment_packets(track, fragment.time, moof, mdat, pcr=True)
    except ValueError:
        return
    assert len(out) % (16 * 188) == 0


# -- encryption -----------------------------------------------------------------------------


def _decrypt(data: bytes, key: bytes, iv: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def test_encryption_round_trips() -> None:
    key, iv = bytes(range(16)), sequence_iv(41)
    segment = _muxed_segment(41, FRAGMENTS[:2])
    encrypted = encrypt_segment(segment, key, iv)
    assert len(encrypted) == (len(segment) // 16 + 1) * 16  # PKCS#7 always pads
    assert encrypted[:16] != segment[:16]
    assert _decrypt(encrypted, key, iv) == segment
    assert _decrypt(encrypt_segment(b"", key, iv), key, iv) == b""
    with pytest.raises(ValueError):
        encrypt_segment(segment, bytes(32), iv)  # AES-256 is not METHOD=AES-128
    with pytest.raises(ValueError):
        encrypt_segment(segment, key, iv[:8])


def test_sequence_iv() -> None:
    assert sequence_iv(1) == bytes(15) + b"\x01"
    assert sequence_iv(0) == bytes(16)
    assert sequence_iv(0x0102) == bytes(14) + b"\x01\x02"
    with pytest.raises(ValueError):
        sequence_iv(-1)


# -- the real ffmpeg ------------------------------------------------------------------------

BAD_MESSAGES = re.compile(
    r"Continuity check failed|Packet corrupt|non-existing PPS|"
    r"error while decoding|Invalid data|non monotonically"
)


def _ffmpeg() -> str:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    return imageio_ffmpeg.get_ffmpeg_exe()


def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([_ffmpeg(), "-hide_banner", *args], capture_output=True, timeout=120)


def assert_decodes_cleanly(path: Path) -> None:
    strict = _run("-v", "error", "-xerror", "-i", str(path), "-f", "null", "-")
    assert strict.returncode == 0, strict.stderr.decode(errors="replace")
    assert strict.stderr == b""
    debug = _run("-v", "debug", "-i", str(path), "-f", "null", "-").stderr.decode(errors="replace")
    assert "Input #0, mpegts" in debug
    assert not BAD_MESSAGES.findall(debug), BAD_MESSAGES.findall(debug)[:5]


def _framemd5(path: Path, *options: str) -> list[str]:
    result = _run("-v", "error", "-i", str(path), *options, "-f", "framemd5", "-")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    return [line.split(",")[-1].strip() for line in lines if not line.startswith("#")]


def _decoded_audio_seconds(path: Path) -> float:
    result = _run("-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "s16le", "-ac", "1", "-")
    assert result.returncode == 0, result.stderr
    return len(result.stdout) / 2 / AUDIO.info.sampling_rate


def test_ffmpeg_decodes_a_video_segment(tmp_path: Path) -> None:
    import imageio_ffmpeg

    tracks = ts_tracks([VIDEO.info])
    path = tmp_path / "video.ts"
    path.write_bytes(
        psi_packets(tracks, 3) + b"".join(_packets_of(tracks[0], f) for f in VIDEO_FRAGMENTS)
    )
    assert_decodes_cleanly(path)
    assert imageio_ffmpeg.count_frames_and_secs(str(path)) == (100, 4.0)
    # the very pictures the ismv capture decodes to
    original = _framemd5(FIXTURES / "ch1-300k.ismv", "-map", "0:v")
    assert _framemd5(path, "-map", "0:v") == original


def test_ffmpeg_decodes_a_segment_of_three_fragments(tmp_path: Path) -> None:
    import imageio_ffmpeg

    tracks = ts_tracks([VIDEO.info])
    path = tmp_path / "three.ts"
    path.write_bytes(
        psi_packets(tracks, 0) + b"".join(_packets_of(tracks[0], f) for f in VIDEO_FRAGMENTS[1:])
    )
    assert_decodes_cleanly(path)
    assert imageio_ffmpeg.count_frames_and_secs(str(path)) == (75, 3.0)


def test_ffmpeg_decodes_an_audio_only_segment(tmp_path: Path) -> None:
    path = tmp_path / "audio.ts"
    path.write_bytes(
        psi_packets(AUDIO_ONLY, 9)
        + b"".join(_packets_of(AUDIO_ONLY[0], f, pcr=True) for f in AUDIO_FRAGMENTS)
    )
    assert_decodes_cleanly(path)
    expected = sum(f.duration for f in AUDIO_FRAGMENTS) / AUDIO.info.timescale
    assert abs(_decoded_audio_seconds(path) - expected) < 0.03


def test_ffmpeg_plays_two_consecutive_muxed_segments(tmp_path: Path) -> None:
    import imageio_ffmpeg

    path = tmp_path / "two.ts"
    path.write_bytes(_muxed_segment(15, FRAGMENTS[:4]) + _muxed_segment(16, FRAGMENTS[4:]))
    assert_decodes_cleanly(path)
    assert imageio_ffmpeg.count_frames_and_secs(str(path)) == (100, 4.0)
    expected = sum(f.duration for f in AUDIO_FRAGMENTS) / AUDIO.info.timescale
    assert abs(_decoded_audio_seconds(path) - expected) < 0.03


def test_the_check_catches_a_broken_continuity(tmp_path: Path) -> None:
    """The negative control: one packet dropped is what the debug log reports."""
    segment = _muxed_segment(0, FRAGMENTS[:2])
    path = tmp_path / "broken.ts"
    path.write_bytes(segment[: 188 * 40] + segment[188 * 41 :])
    debug = _run("-v", "debug", "-i", str(path), "-f", "null", "-").stderr.decode(errors="replace")
    assert "Continuity check failed" in debug


def test_ffmpeg_decodes_b_frames(tmp_path: Path) -> None:
    """An x264 stream with B-frames through ffmpeg's ismv muxer: negative composition offsets."""
    source = tmp_path / "bframes.ismv"
    encoded = _run(
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x90:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        "3",
        "-c:v",
        "libx264",
        "-profile:v",
        "main",
        "-bf",
        "2",
        "-g",
        "25",
        "-c:a",
        "aac",
        "-ac",
        "2",
        "-f",
        "ismv",
        "-movflags",
        "frag_keyframe",
        str(source),
    )
    if encoded.returncode != 0:
        pytest.skip(f"this ffmpeg cannot encode the test stream: {encoded.stderr[-200:]!r}")
    infos, fragments = _capture(source)
    tracks = ts_tracks(infos)
    by_id = {t.info.track_id: t for t in tracks}
    path = tmp_path / "bframes.ts"
    path.write_bytes(
        psi_packets(tracks, 0) + b"".join(_packets_of(by_id[f.track_id], f) for f in fragments)
    )
    video = parse_pes(path.read_bytes())[0x100]
    assert any(p.pts != p.dts for p in video)
    assert all(p.pts >= p.dts for p in video)
    dts = [p.dts for p in video]
    assert dts == sorted(set(dts))
    assert_decodes_cleanly(path)
    assert _framemd5(path, "-map", "0:v") == _framemd5(source, "-map", "0:v")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")
def test_openssl_decrypts_a_segment(tmp_path: Path) -> None:
    key, iv = bytes.fromhex("00112233445566778899aabbccddeeff"), sequence_iv(7)
    segment = _muxed_segment(7, FRAGMENTS[:2])
    (tmp_path / "seg.enc").write_bytes(encrypt_segment(segment, key, iv))
    result = subprocess.run(
        [
            "openssl",
            "enc",
            "-d",
            "-aes-128-cbc",
            "-K",
            key.hex(),
            "-iv",
            iv.hex(),
            "-in",
            str(tmp_path / "seg.enc"),
        ],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == segment
