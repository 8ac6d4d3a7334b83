"""MPEG-2 transport stream packets for HLS segments, built fragment by fragment.

An HLS TS segment (RFC 8216 §3.2) is made on request from whole stored
fragments (one track's ``moof`` + ``mdat``, ISO/IEC 14496-12 §8.8), and each
fragment's packets must be computed once and cached, whatever segment they
end up in. So a segment is a plain concatenation::

    psi_packets(tracks, sequence % 16) + fragment_packets(f1) + fragment_packets(f2) ...

That is only a valid transport stream (ISO/IEC 13818-1) if every PID's
continuity_counter runs on across the joins. Each fragment therefore starts
its PID at CC 0 and is laid out in a multiple of 16 packets, so it ends at 15
and the next fragment, in this segment or the next one, continues at 0. The
padding packets are not adaptation-field-only packets (those do not count for
the CC): the payload of a PES is spread over more packets, with adaptation
field stuffing in the packets that carry it. The PAT and PMT appear once per
segment with CC = the media sequence number mod 16, so they continue too.

Times follow ffmpeg's mpegts muxer (max_delay 0.7 s): PTS/DTS are the track
times in 90 kHz plus 1.4 s, and the PCR, on the first packet of each PES of
the PCR PID, is the DTS minus 0.7 s. All of them wrap modulo 2**33. Negative
composition offsets (trun version 1, as ffmpeg's ismv muxer writes B-frames)
move the fragment's DTS back by the largest of them so that DTS <= PTS.

H.264 samples become Annex B access units with an access unit delimiter, and
SPS and PPS before each sync sample that does not carry its own; AAC frames
get ADTS headers (ISO/IEC 14496-3 §1.A.2) and are grouped a few to a PES.

Segments may be encrypted whole: AES-128-CBC with PKCS#7 padding (RFC 8216
§4.3.2.4, METHOD=AES-128), the IV defaulting to the media sequence number.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from smoothlive.media.boxes import SAMPLE_IS_NON_SYNC, TREX, BoxError, read_box_header
from smoothlive.media.fragments import TrackFragment, read_moof, sample_ranges
from smoothlive.media.model import TrackInfo

__all__ = [
    "PAT_PID",
    "PCR_DELAY",
    "PMT_PID",
    "TIMESTAMP_OFFSET",
    "TsError",
    "TsTrack",
    "crc32_mpeg2",
    "encrypt_segment",
    "fragment_packets",
    "pcr_pid",
    "psi_packets",
    "sequence_iv",
    "ts_tracks",
]

PACKET_SIZE = 188
_PAYLOAD = 184  # a packet without adaptation field
PAT_PID = 0x0000
PMT_PID = 0x1000
FIRST_ES_PID = 0x100
PROGRAM_NUMBER = 1
TRANSPORT_STREAM_ID = 1

STREAM_TYPE_H264 = 0x1B
STREAM_TYPE_AAC_ADTS = 0x0F
_STREAM_ID = {"video": 0xE0, "audio": 0xC0}

CLOCK = 90_000
TIMESTAMP_OFFSET = 126_000  # 1.4 s: ffmpeg's 2 * max_delay
PCR_DELAY = 63_000  # 0.7 s: ffmpeg's max_delay
_WRAP = (1 << 33) - 1

# AAC frames per PES: at most this many bytes, and this long (in seconds); when
# the audio carries the PCR, a PES at most 100 ms long keeps the PCR interval
# within the ISO/IEC 13818-1 §2.7.2 limit.
AUDIO_PES_BYTES = 2930  # ffmpeg's default pes_payload_size
AUDIO_PES_SECONDS = 0.5
AUDIO_PCR_PES_SECONDS = 0.1

H264_FOURCCS = frozenset({"H264", "AVC1", "AVC3", "DAVC"})
AAC_FOURCCS = frozenset({"AACL", "AACH", "AACP", "MP4A"})

_U32 = struct.Struct(">I")
_TS_HEADER = struct.Struct(">BHB")  # sync byte, PUSI|PID, AFC|CC
_PCR = struct.Struct(">IH")
_PES_START = struct.Struct(">IHBBB")  # start code + stream_id, length, flags x2, header length
_ADTS_TAIL = struct.Struct(">BBBB")

_START_CODE = b"\x00\x00\x00\x01"
_AUD = _START_CODE + b"\x09\xf0"  # access unit delimiter, primary_pic_type 7 (any)
_NAL_SPS, _NAL_PPS, _NAL_AUD = 7, 8, 9

_AF_PCR = 0x10
_AF_RANDOM_ACCESS = 0x40

# ISO/IEC 14496-3 Table 1.18 samplingFrequencyIndex
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
              8000, 7350)  # fmt: skip
_AAC_SBR_TYPES = (5, 29)


class TsError(ValueError):
    """A fragment or track that cannot be carried in a transport stream."""


# -- tracks and PSI ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TsTrack:
    """One elementary stream of the transport stream: its PID and its track."""

    pid: int
    info: TrackInfo

    def __post_init__(self) -> None:
        if not 0x10 <= self.pid <= 0x1FFE or self.pid == PMT_PID:
            raise TsError(f"PID {self.pid:#x} is reserved or out of range")
        if self.info.timescale <= 0:
            raise TsError(f"track {self.info.track_id} has no timescale")
        fourcc = self.info.fourcc.upper()
        if self.info.kind == "video" and fourcc in H264_FOURCCS:
            _parameter_sets(self.info.codec_private_data)
        elif self.info.kind == "audio" and fourcc in AAC_FOURCCS:
            _adts_fields(self.info.codec_private_data, self.info.sampling_rate, self.info.channels)
        else:
            raise TsError(f"no TS mapping for {self.info.kind} {self.info.fourcc!r}")

    @property
    def stream_type(self) -> int:
        """The PMT stream_type (ISO/IEC 13818-1 Table 2-34)."""
        return STREAM_TYPE_H264 if self.info.kind == "video" else STREAM_TYPE_AAC_ADTS


def ts_tracks(infos: Sequence[TrackInfo]) -> tuple[TsTrack, ...]:
    """The tracks with PIDs 0x100, 0x101... in the order given."""
    return tuple(TsTrack(FIRST_ES_PID + index, info) for index, info in enumerate(infos))


def pcr_pid(tracks: Sequence[TsTrack]) -> int:
    """The PID carrying the PCR: the first video track's, else the first track's."""
    if not tracks:
        raise TsError("a program needs at least one track")
    return next((t.pid for t in tracks if t.info.kind == "video"), tracks[0].pid)


def psi_packets(tracks: Sequence[TsTrack], continuity: int) -> bytes:
    """A PAT and a PMT packet (program 1, PMT on PID 0x1000), both with CC ``continuity``."""
    cc = continuity & 0x0F
    pat = _section(0x00, TRANSPORT_STREAM_ID, struct.pack(">HH", PROGRAM_NUMBER, 0xE000 | PMT_PID))
    streams = []
    for track in tracks:
        descriptors = _language_descriptor(track.info.language)
        streams.append(
            struct.pack(">BHH", track.stream_type, 0xE000 | track.pid, 0xF000 | len(descriptors))
            + descriptors
        )
    pmt_body = struct.pack(">HH", 0xE000 | pcr_pid(tracks), 0xF000) + b"".join(streams)
    pmt = _section(0x02, PROGRAM_NUMBER, pmt_body)
    return _psi_packet(PAT_PID, cc, pat) + _psi_packet(PMT_PID, cc, pmt)


def _language_descriptor(language: str | None) -> bytes:
    """An ISO_639_language_descriptor (§2.6.18) for a three-letter code, else nothing."""
    if language and len(language) == 3 and language.isascii() and language.isalpha():
        return bytes((0x0A, 4)) + language.lower().encode("ascii") + b"\x00"
    return b""


def _section(table_id: int, extension: int, body: bytes) -> bytes:
    """A long-form PSI section (§2.4.4): header, ``body`` and CRC_32."""
    length = 5 + len(body) + 4  # after section_length: extension..last_section, body, CRC
    head = struct.pack(">BHHBBB", table_id, 0xB000 | length, extension, 0xC1, 0, 0)
    section = head + body
    return section + _U32.pack(crc32_mpeg2(section))


def _psi_packet(pid: int, cc: int, section: bytes) -> bytes:
    if len(section) > _PAYLOAD - 1:
        raise TsError("PSI section does not fit one packet")
    head = _TS_HEADER.pack(0x47, 0x4000 | pid, 0x10 | cc) + b"\x00"  # pointer_field
    return head + section + b"\xff" * (_PAYLOAD - 1 - len(section))


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = (crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 (ISO/IEC 13818-1 Annex A): poly 0x04C11DB7, no reflection, no xor out."""
    crc = 0xFFFFFFFF
    for byte in data:  # PSI sections only: a few dozen bytes
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


# -- codec configuration ----------------------------------------------------------------------


@lru_cache(maxsize=256)
def _parameter_sets(private: str) -> bytes:
    """SPS and PPS NAL units from Annex B codec private data, with 4-byte start codes."""
    try:
        data = bytes.fromhex(private)
    except ValueError:
        raise TsError("H.264 codec private data is not hex") from None
    units = [u.rstrip(b"\x00") for u in data.split(b"\x00\x00\x01")]
    units = [u for u in units if u]
    kinds = {u[0] & 0x1F for u in units}
    if units and not {_NAL_SPS, _NAL_PPS} <= kinds:
        raise TsError("H.264 codec private data lacks an SPS or a PPS")
    return b"".join(_START_CODE + u for u in units)


@dataclass(frozen=True, slots=True)
class _Adts:
    profile: int  # audioObjectType - 1
    rate_index: int
    channels: int


@lru_cache(maxsize=256)
def _adts_fields(private: str, sampling_rate: int, channels: int) -> _Adts:
    """The ADTS fixed header fields from an AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).

    Explicit SBR/PS signalling gives the core object type and sampling rate,
    as ADTS carries them (the decoder finds SBR itself); without a config the
    track's rate and channels stand, as AAC LC.
    """
    if private:
        try:
            config = bytes.fromhex(private)
        except ValueError:
            raise TsError("AudioSpecificConfig is not hex") from None
        value, length = int.from_bytes(config[:16], "big"), 8 * min(len(config), 16)
        position = 0

        def read(count: int) -> int:
            nonlocal position
            if position + count > length:
                raise TsError("AudioSpecificConfig is truncated")
            position += count
            return (value >> (length - position)) & ((1 << count) - 1)

        def object_type() -> int:
            kind = read(5)
            return 32 + read(6) if kind == 31 else kind

        def rate_index() -> int:
            index = read(4)
            if index == 0xF:
                rate = read(24)
                if rate not in _AAC_RATES:
                    raise TsError(f"ADTS cannot signal a {rate} Hz sampling rate")
                return _AAC_RATES.index(rate)
            return index

        kind = object_type()
        index = rate_index()
        layout = read(4)
        if kind in _AAC_SBR_TYPES:
            rate_index()  # the extension (output) rate
            kind = object_type()
    else:
        if sampling_rate not in _AAC_RATES:
            raise TsError(f"no AudioSpecificConfig and no usable sampling rate ({sampling_rate})")
        kind, index, layout = 2, _AAC_RATES.index(sampling_rate), channels
    if not 1 <= kind <= 4:
        raise TsError(f"ADTS cannot carry audio object type {kind}")
    if index >= len(_AAC_RATES):
        raise TsError(f"bad AAC sampling frequency index {index}")
    if not 1 <= layout <= 7:
        raise TsError(f"ADTS cannot carry channel configuration {layout}")
    return _Adts(kind - 1, index, layout)


# -- fragments --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Samples:
    """Where each sample of a fragment is in its mdat, and its times in 90 kHz."""

    ranges: list[tuple[int, int]]  # (offset in mdat, size)
    dts: list[int]
    pts: list[int]
    durations: list[int]  # in the track's timescale
    sync: list[bool]


def fragment_packets(track: TsTrack, time: int, moof: bytes, mdat: bytes, *, pcr: bool) -> bytes:
    """Every sample of one fragment as PES packets in TS packets of ``track.pid``.

    ``time`` is the fragment's decode time in the track's timescale (it wins
    over the moof's own). With ``pcr``, the first packet of each PES carries
    a PCR. The packets number a multiple of 16, CC 0 to 15 over and over.
    Raises :class:`TsError` (a ValueError) on a fragment it cannot convert.
    """
    try:
        samples = _samples(track.info, read_moof(moof), time, moof, mdat)
        if track.info.kind == "video":
            pes = _video_pes(track, samples, mdat, pcr)
        else:
            pes = _audio_pes(track, samples, mdat, pcr)
    except TsError:
        raise
    except (ValueError, struct.error, IndexError, OverflowError) as exc:  # BoxError too
        raise TsError(f"cannot convert the fragment: {exc}") from None
    return _packetize(track.pid, pes)


def _trex_defaults(info: TrackInfo) -> tuple[int, int, int]:
    """The trex default sample duration, size and flags (zero when there is no trex)."""
    if not info.trex:
        return 0, 0, 0
    try:
        _, _, values = TREX.read(info.trex, read_box_header(info.trex))
    except BoxError:
        return 0, 0, 0
    return values.default_sample_duration, values.default_sample_size, values.default_sample_flags


def _samples(
    info: TrackInfo, fragment: TrackFragment, time: int, moof: bytes, mdat: bytes
) -> _Samples:
    trex_duration, trex_size, trex_flags = _trex_defaults(info)
    tfhd = fragment.tfhd
    default_duration = tfhd.default_sample_duration
    if default_duration is None:
        default_duration = trex_duration
    default_flags = tfhd.default_sample_flags
    if default_flags is None:
        default_flags = trex_flags

    durations: list[int] = []
    offsets: list[int] = []
    flags: list[int] = []
    for _, run in fragment.truns:
        count = run.sample_count
        column = run.column("durations")
        durations.extend(column if column is not None else (default_duration,) * count)
        column = run.column("composition_offsets")
        offsets.extend(column if column is not None else (0,) * count)
        column = run.column("flags")
        if column is not None:
            flags.extend(column)
        elif count:
            first = run.first_sample_flags
            flags.append(default_flags if first is None else first)
            flags.extend((default_flags,) * (count - 1))
    count = len(durations)
    if count > 1 and not all(durations[:-1]):
        raise TsError("samples without a duration")

    mdat_header = read_box_header(mdat)
    if mdat_header.type != b"mdat":
        raise TsError(f"expected an mdat box, got {mdat_header.type!r}")
    if mdat_header.size > len(mdat):
        raise TsError(f"mdat is truncated ({len(mdat)} of {mdat_header.size} bytes)")
    base = len(moof)
    first, end = base + mdat_header.header_size, base + mdat_header.size
    ranges: list[tuple[int, int]] = []
    for offset, size in sample_ranges(fragment, trex_size):
        if size == 0:
            raise TsError("an empty sample")
        if offset < first or offset + size > end:
            raise TsError(f"sample data at {offset}+{size} is not in the mdat")
        ranges.append((offset - base, size))

    scale, half = info.timescale, info.timescale // 2
    shift = max(0, -min(offsets, default=0))  # keep DTS <= PTS
    dts: list[int] = []
    pts: list[int] = []
    decode = time
    for duration, composition in zip(durations, offsets, strict=True):
        dts.append(((decode - shift) * CLOCK + half) // scale + TIMESTAMP_OFFSET & _WRAP)
        pts.append(((decode + composition) * CLOCK + half) // scale + TIMESTAMP_OFFSET & _WRAP)
        decode += duration
    sync = [not f & SAMPLE_IS_NON_SYNC for f in flags]
    return _Samples(ranges, dts, pts, durations, sync)


# A PES to packetize: its bytes, and the adaptation field content of its first
# packet (flags byte and PCR, or empty).
_Pes = tuple[bytes, bytes]


def _timestamp(prefix: int, value: int) -> bytes:
    """A 5-byte PTS or DTS field (§2.4.3.7) with its 4-bit ``prefix``."""
    return bytes(
        (
            prefix << 4 | (value >> 29) & 0x0E | 1,
            (value >> 22) & 0xFF,
            (value >> 14) & 0xFE | 1,
            (value >> 7) & 0xFF,
            (value << 1) & 0xFE | 1,
        )
    )


def _pes_header(stream_id: int, pts: int, dts: int, payload_length: int | None) -> bytes:
    """A PES header (§2.4.3.6) with PTS, and DTS when it differs; ``None`` length: unbounded."""
    if pts == dts:
        fields, flags = _timestamp(0b0010, pts), 0x80
    else:
        fields, flags = _timestamp(0b0011, pts) + _timestamp(0b0001, dts), 0xC0
    length = 0
    if payload_length is not None:
        length = 3 + len(fields) + payload_length
        if length > 0xFFFF:
            raise TsError("audio PES too long")
    # '10', not scrambled, data_alignment_indicator: every PES starts an access unit
    return _PES_START.pack(0x100 | stream_id, length, 0x84, flags, len(fields)) + fields


def _adaptation(pcr_base: int | None, random_access: bool) -> bytes:
    """The adaptation field flags byte and PCR (§2.4.3.4), or b"" when there is nothing."""
    flags = _AF_RANDOM_ACCESS if random_access else 0
    if pcr_base is None:
        return bytes((flags,)) if flags else b""
    pcr_base &= _WRAP
    return bytes((flags | _AF_PCR,)) + _PCR.pack(pcr_base >> 1, (pcr_base & 1) << 15 | 0x7E00)


def _video_pes(track: TsTrack, samples: _Samples, mdat: bytes, pcr: bool) -> list[_Pes]:
    parameter_sets = _parameter_sets(track.info.codec_private_data)
    view = memoryview(mdat)
    unpack_length = _U32.unpack_from
    stream_id = _STREAM_ID["video"]
    out: list[_Pes] = []
    for (start, size), dts, pts, sync in zip(
        samples.ranges, samples.dts, samples.pts, samples.sync, strict=True
    ):
        parts: list[bytes | memoryview] = [_pes_header(stream_id, pts, dts, None)]
        nals: list[bytes | memoryview] = []
        kinds = set()
        position, stop = start, start + size
        while position < stop:
            if stop - position < 4:
                raise TsError("a NAL unit length runs past its sample")
            (length,) = unpack_length(mdat, position)
            position += 4
            if length == 0 or length > stop - position:
                raise TsError(f"a NAL unit of {length} bytes does not fit its sample")
            kinds.add(mdat[position] & 0x1F)
            nals.append(_START_CODE)
            nals.append(view[position : position + length])
            position += length
        if not nals or mdat[start + 4] & 0x1F != _NAL_AUD:
            parts.append(_AUD)
        if sync and _NAL_SPS not in kinds:
            if not parameter_sets:
                raise TsError("a sync sample without SPS and PPS, and no codec private data")
            parts.append(parameter_sets)
        parts.extend(nals)
        out.append((b"".join(parts), _adaptation(dts - PCR_DELAY if pcr else None, sync)))
    return out


def _audio_pes(track: TsTrack, samples: _Samples, mdat: bytes, pcr: bool) -> list[_Pes]:
    info = track.info
    adts = _adts_fields(info.codec_private_data, info.sampling_rate, info.channels)
    head = bytes((0xFF, 0xF1, adts.profile << 6 | adts.rate_index << 2 | adts.channels >> 2))
    layout = (adts.channels & 3) << 6
    pack_tail = _ADTS_TAIL.pack
    view = memoryview(mdat)
    limit = round(info.timescale * (AUDIO_PCR_PES_SECONDS if pcr else AUDIO_PES_SECONDS))
    stream_id = _STREAM_ID["audio"]
    out: list[_Pes] = []
    frames: list[bytes | memoryview] = []
    group_bytes = group_duration = 0
    group_pts = 0

    def flush() -> None:
        header = _pes_header(stream_id, group_pts, group_pts, group_bytes)
        adaptation = _adaptation(group_pts - PCR_DELAY if pcr else None, True)
        out.append((b"".join([header, *frames]), adaptation))
        frames.clear()

    for (start, size), pts, duration in zip(
        samples.ranges, samples.pts, samples.durations, strict=True
    ):
        length = 7 + size
        if length > 0x1FFF:
            raise TsError(f"an AAC frame of {size} bytes is too long for ADTS")
        if frames and (group_bytes + length > AUDIO_PES_BYTES or group_duration + duration > limit):
            flush()
        if not frames:
            group_bytes = group_duration = 0
            group_pts = pts
        frames.append(
            head
            + pack_tail(layout | length >> 11, (length >> 3) & 0xFF, (length & 7) << 5 | 0x1F, 0xFC)
        )
        frames.append(view[start : start + size])
        group_bytes += length
        group_duration += duration
    if frames:
        flush()
    return out


# -- packetizing ------------------------------------------------------------------------------


def _first_capacity(adaptation: bytes) -> int:
    return _PAYLOAD - 1 - len(adaptation) if adaptation else _PAYLOAD


def _minimum_packets(length: int, adaptation: bytes) -> int:
    first = _first_capacity(adaptation)
    return 1 if length <= first else 1 + -(-(length - first) // _PAYLOAD)


def _packetize(pid: int, pes: list[_Pes]) -> bytes:
    """The PES in TS packets, padded to a multiple of 16 packets by spreading payload.

    Each PES takes its minimum number of packets; the packets still missing
    for a multiple of 16 go to the last PES that has bytes enough (every
    packet carries at least one payload byte, so they all count for CC).
    """
    counts = [_minimum_packets(len(data), adaptation) for data, adaptation in pes]
    missing = -sum(counts) % 16
    for index in range(len(pes) - 1, -1, -1):
        if not missing:
            break
        extra = min(missing, len(pes[index][0]) - counts[index])
        counts[index] += extra
        missing -= extra
    if missing:  # cannot happen: a PES header alone is 14 bytes
        raise TsError("too little payload to pad the fragment")

    total = sum(counts)
    out = bytearray(b"\xff") * (PACKET_SIZE * total)  # stuffing comes for free
    pack_header = _TS_HEADER.pack_into
    position = 0
    cc = 0
    for (data, adaptation), count in zip(pes, counts, strict=True):
        view = memoryview(data)
        length = len(data)
        first = _first_capacity(adaptation)
        # head: full packets; tail: the last `tail` packets share the rest evenly
        tail = count - _minimum_packets(length, adaptation) + 1
        while True:
            head = count - tail
            rest = length - (first + _PAYLOAD * (head - 1) if head else 0)
            if rest >= tail or tail == count:
                break
            tail += 1
        share, larger = divmod(rest, tail)
        offset = 0
        for index in range(count):
            if index < head:
                size = first if index == 0 else _PAYLOAD
            else:
                size = share + 1 if index - head < larger else share
            start_bit = 0x4000 if index == 0 else 0
            field = adaptation if index == 0 else b""
            if size == _PAYLOAD:
                pack_header(out, position, 0x47, start_bit | pid, 0x10 | cc)
                out[position + 4 : position + PACKET_SIZE] = view[offset : offset + _PAYLOAD]
            else:
                pack_header(out, position, 0x47, start_bit | pid, 0x30 | cc)
                field_length = _PAYLOAD - 1 - size  # adaptation_field_length
                out[position + 4] = field_length
                if field_length:
                    if field:
                        out[position + 5 : position + 5 + len(field)] = field
                    else:
                        out[position + 5] = 0  # no flags; the rest is stuffing
                payload_at = position + PACKET_SIZE - size
                out[payload_at : position + PACKET_SIZE] = view[offset : offset + size]
            offset += size
            position += PACKET_SIZE
            cc = (cc + 1) & 0x0F
    return bytes(out)


# -- encryption -------------------------------------------------------------------------------


def encrypt_segment(data: bytes, key: bytes, iv: bytes) -> bytes:
    """AES-128-CBC with PKCS#7 padding over the whole segment (RFC 8216 §4.3.2.4)."""
    if len(key) != 16 or len(iv) != 16:
        raise ValueError("AES-128 takes a 16-byte key and a 16-byte IV")
    padder = padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def sequence_iv(media_sequence: int) -> bytes:
    """The IV of a segment whose EXT-X-KEY has no IV: its media sequence number (RFC 8216 §5.2)."""
    if not 0 <= media_sequence < 1 << 128:
        raise ValueError(f"media sequence number {media_sequence} out of range")
    return media_sequence.to_bytes(16, "big")
