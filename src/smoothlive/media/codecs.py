"""Track descriptions from the moov, merged with the Live Server Manifest.

The Live Server Manifest is what IIS used for the client manifest; when it is
missing or says nothing about an attribute, the moov fills the gap (the
manifest wins where present):

- ``tkhd`` (ISO/IEC 14496-12 §8.3.2): track_ID, display width and height;
- ``mdhd`` (§8.4.2): timescale and language; ``hdlr`` (§8.4.3): the kind;
- ``stsd`` (§8.5.2): the first sample entry. ``avc1``/``avc3`` with ``avcC``
  (ISO/IEC 14496-15 §5.3.3) gives FourCC H264 and CodecPrivateData as the
  Annex B SPS and PPS; ``mp4a`` with ``esds`` (ISO/IEC 14496-1 §7.2.6) gives
  the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1), FourCC AACL (AACH for
  SBR/PS object types 5 and 29); ``ec-3``/``ac-3`` (ETSI TS 102 366 Annex F)
  give EC-3/AC-3 with the ``dec3``/``dac3`` body; ``stpp`` gives TTML;
- bitrate from ``btrt`` (§8.5.2.2) or the esds avgBitrate.

``codecs_string`` gives RFC 6381 ``codecs`` values for HLS and DASH.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace

from smoothlive.media.boxes import (
    HDLR,
    MDHD,
    TKHD,
    TREX,
    BoxError,
    BoxHeader,
    Buffer,
    children,
    find,
    find_all,
    read_box_header,
    unpack,
)
from smoothlive.media.model import SMOOTH_TIMESCALE, TrackInfo, TrackKind
from smoothlive.media.servermanifest import ManifestTrack

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_BTRT = struct.Struct(">III")
_VISUAL_SIZE = struct.Struct(">HH")

_HANDLER_KINDS: dict[bytes, TrackKind] = {
    b"vide": "video",
    b"soun": "audio",
    b"text": "text",
    b"subt": "text",
    b"sbtl": "text",
}
DEFAULT_TRACK_NAMES: dict[TrackKind, str] = {
    "video": "video",
    "audio": "audio",
    "text": "textstream",
}

# ISO/IEC 14496-3 Table 1.18 samplingFrequencyIndex
_AAC_SAMPLING_RATES = (
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
)  # fmt: skip
AAC_SBR_OBJECT_TYPES = (5, 29)  # SBR (HE-AAC) and PS (HE-AAC v2)

# Sample entry bytes before child boxes (ISO/IEC 14496-12 §8.5.2.2, §12.1.3, §12.2.3).
_VISUAL_ENTRY_SIZE = 78
_AUDIO_ENTRY_SIZE = {0: 28, 1: 44, 2: 64}  # by QuickTime sound description version


@dataclass(frozen=True, slots=True)
class AudioSpecificConfig:
    """The fields of an AudioSpecificConfig this package uses (ISO/IEC 14496-3 §1.6.2.1)."""

    object_type: int  # the first audioObjectType (5/29 for explicit SBR/PS signalling)
    sampling_rate: int
    channels: int


class _Bits:
    """A big-endian bit reader over a short byte string, without per-bit loops."""

    __slots__ = ("length", "position", "value")

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.length = 8 * len(data)
        self.position = 0

    def read(self, count: int) -> int:
        if self.position + count > self.length:
            raise BoxError("AudioSpecificConfig is truncated")
        self.position += count
        return (self.value >> (self.length - self.position)) & ((1 << count) - 1)


def parse_audio_specific_config(config: bytes) -> AudioSpecificConfig:
    """The object type, sampling rate and channel configuration of an AudioSpecificConfig."""
    bits = _Bits(config[:16])

    def object_type() -> int:
        kind = bits.read(5)
        return 32 + bits.read(6) if kind == 31 else kind

    def sampling_rate() -> int:
        index = bits.read(4)
        if index == 0xF:
            return bits.read(24)
        return _AAC_SAMPLING_RATES[index] if index < len(_AAC_SAMPLING_RATES) else 0

    kind = object_type()
    rate = sampling_rate()
    channels = bits.read(4)
    if kind in AAC_SBR_OBJECT_TYPES:  # explicit signalling: the extension sampling rate
        extension_rate = sampling_rate()
        rate = extension_rate or rate
    return AudioSpecificConfig(kind, rate, channels)


def avc_codec_private_data(avcc: Buffer) -> str:
    """Annex B SPS and PPS (``00000001`` start codes), upper-case hex, from an avcC body.

    AVCDecoderConfigurationRecord, ISO/IEC 14496-15 §5.3.3.1.
    """
    data = bytes(avcc)
    if len(data) < 7:
        raise BoxError("avcC is truncated")
    out: list[bytes] = []
    offset = 5
    for mask in (0x1F, 0xFF):  # numOfSequenceParameterSets, numOfPictureParameterSets
        if offset >= len(data):
            raise BoxError("avcC is truncated")
        count = data[offset] & mask
        offset += 1
        for _ in range(count):
            (length,) = unpack(_U16, data, offset, len(data), "avcC parameter set")
            offset += 2
            if offset + length > len(data):
                raise BoxError("avcC parameter set runs past the box")
            out.append(b"\0\0\0\1" + data[offset : offset + length])
            offset += length
    return b"".join(out).hex().upper()


def _esds_config(esds: memoryview) -> tuple[int, int, bytes]:
    """``(objectTypeIndication, avgBitrate, DecoderSpecificInfo)`` from an esds body.

    ES_Descriptor and its sub-descriptors, ISO/IEC 14496-1 §7.2.6.5-7.
    """
    data = bytes(esds[4:])  # after version and flags

    def descriptor(offset: int) -> tuple[int, int, int]:
        if offset >= len(data):
            raise BoxError("esds descriptor is truncated")
        tag, size, offset = data[offset], 0, offset + 1
        for _ in range(4):  # expandable size: up to four bytes, 7 bits each
            if offset >= len(data):
                raise BoxError("esds descriptor size is truncated")
            byte = data[offset]
            offset += 1
            size = size << 7 | byte & 0x7F
            if not byte & 0x80:
                break
        return tag, offset, min(offset + size, len(data))

    tag, offset, end = descriptor(0)
    if tag != 0x03:
        raise BoxError("esds has no ES_Descriptor")
    if offset + 3 > end:
        raise BoxError("ES_Descriptor is truncated")
    es_flags = data[offset + 2]
    offset += 3
    if es_flags & 0x80:  # streamDependenceFlag
        offset += 2
    if es_flags & 0x40:  # URL_Flag
        offset += 1 + (data[offset] if offset < end else 0)
    if es_flags & 0x20:  # OCRstreamFlag
        offset += 2
    object_type = bitrate = 0
    config = b""
    while offset < end:
        tag, body, stop = descriptor(offset)
        if tag == 0x04 and stop - body >= 13:  # DecoderConfigDescriptor
            object_type = data[body]
            (bitrate,) = _U32.unpack_from(data, body + 9)
            if not bitrate:
                (bitrate,) = _U32.unpack_from(data, body + 5)  # maxBitrate
            inner = body + 13
            while inner < stop:
                tag, inner_body, inner_stop = descriptor(inner)
                if tag == 0x05:  # DecoderSpecificInfo
                    config = data[inner_body:inner_stop]
                    break
                inner = inner_stop
            break
        offset = stop
    return object_type, bitrate, config


@dataclass(frozen=True, slots=True)
class _Entry:
    """What the first sample entry says."""

    fourcc: str
    codec_private_data: str = ""
    width: int = 0
    height: int = 0
    sampling_rate: int = 0
    channels: int = 0
    bits_per_sample: int = 0
    packet_size: int = 0
    audio_tag: int = 0
    bitrate: int = 0


def _btrt_bitrate(buf: Buffer, header: BoxHeader, skip: int) -> int:
    for child in children(buf, header, skip):
        if child.type == b"btrt":
            _, max_rate, avg_rate = unpack(_BTRT, buf, child.payload_offset, child.end, "btrt")
            return avg_rate or max_rate
    return 0


def _original_format(buf: Buffer, entry: BoxHeader, skip: int) -> bytes:
    """The format an encrypted entry (encv/enca) protects: sinf/frma (§8.12.2)."""
    for child in children(buf, entry, skip):
        if child.type == b"sinf":
            frma = find(buf, b"frma", child.payload_offset, child.end)
            if frma is not None and frma.payload_size >= 4:
                return bytes(buf[frma.payload_offset : frma.payload_offset + 4])
    return entry.type


def _sample_entry(buf: Buffer, stsd: BoxHeader) -> _Entry | None:
    entry = next(children(buf, stsd, 8), None)  # version, flags, entry_count
    if entry is None:
        return None
    kind = entry.type
    if kind in (b"avc1", b"avc3", b"encv"):
        skip = _VISUAL_ENTRY_SIZE
        if entry.payload_size < skip:
            raise BoxError(f"{kind!r} sample entry is truncated")
        if kind == b"encv":
            kind = _original_format(buf, entry, skip)
        width, height = _VISUAL_SIZE.unpack_from(buf, entry.payload_offset + 24)
        private = ""
        for child in children(buf, entry, skip):
            if child.type == b"avcC":
                private = avc_codec_private_data(buf[child.payload_offset : child.end])
        fourcc = "H264" if kind in (b"avc1", b"avc3") else _fourcc(kind)
        return _Entry(fourcc, private, width, height, bitrate=_btrt_bitrate(buf, entry, skip))
    if kind in (b"mp4a", b"ec-3", b"ac-3", b"enca"):
        if entry.payload_size < 28:
            raise BoxError(f"{kind!r} sample entry is truncated")
        base = entry.payload_offset
        (sound_version,) = _U16.unpack_from(buf, base + 8)
        skip = _AUDIO_ENTRY_SIZE.get(sound_version, 28)
        if entry.payload_size < skip:
            raise BoxError(f"{kind!r} sample entry is truncated")
        channels, sample_size = _VISUAL_SIZE.unpack_from(buf, base + 16)
        (rate,) = _U32.unpack_from(buf, base + 24)
        rate >>= 16
        if kind == b"enca":
            kind = _original_format(buf, entry, skip)
        bitrate = _btrt_bitrate(buf, entry, skip)
        if kind == b"mp4a":
            return _aac_entry(buf, entry, skip, rate, channels, sample_size, bitrate)
        private = ""
        for child in children(buf, entry, skip):
            if child.type in (b"dec3", b"dac3"):
                private = bytes(buf[child.payload_offset : child.end]).hex().upper()
        return _Entry(
            _fourcc(kind), private, sampling_rate=rate, channels=channels,
            bits_per_sample=sample_size or 16, bitrate=bitrate,
        )  # fmt: skip
    if kind == b"stpp":
        return _Entry("TTML")
    return _Entry(_fourcc(kind))


def _aac_entry(
    buf: Buffer,
    entry: BoxHeader,
    skip: int,
    rate: int,
    channels: int,
    sample_size: int,
    bitrate: int,
) -> _Entry:
    fourcc, private = "AACL", ""
    for child in children(buf, entry, skip):
        if child.type == b"esds":
            _, esds_rate, config = _esds_config(memoryview(buf)[child.payload_offset : child.end])
            bitrate = bitrate or esds_rate
            if config:
                private = config.hex().upper()
                asc = parse_audio_specific_config(config)
                if asc.object_type in AAC_SBR_OBJECT_TYPES:
                    fourcc = "AACH"
                rate = rate or asc.sampling_rate
                channels = channels or asc.channels
    return _Entry(
        fourcc, private, sampling_rate=rate, channels=channels,
        bits_per_sample=sample_size or 16, packet_size=4, audio_tag=255, bitrate=bitrate,
    )  # fmt: skip


def _fourcc(kind: bytes) -> str:
    return kind.decode("latin-1").strip().upper()


def _language(code: int) -> str | None:
    """A packed ISO-639-2/T mdhd language, None for 'und' or unset."""
    if not code:
        return None
    text = "".join(chr(((code >> shift) & 0x1F) + 0x60) for shift in (10, 5, 0))
    return None if text == "und" or not text.isalpha() else text


def track_from_trak(
    moov: Buffer, trak: BoxHeader, trex: bytes = b"", manifest: ManifestTrack | None = None
) -> TrackInfo | None:
    """The TrackInfo of one trak (with ``manifest`` laid over it), None for other kinds."""
    tkhd = find(moov, b"tkhd", trak.payload_offset, trak.end)
    mdia = find(moov, b"mdia", trak.payload_offset, trak.end)
    if tkhd is None or mdia is None:
        raise BoxError("trak without tkhd or mdia")
    _, _, header = TKHD.read(moov, tkhd)
    mdhd = find(moov, b"mdhd", mdia.payload_offset, mdia.end)
    hdlr = find(moov, b"hdlr", mdia.payload_offset, mdia.end)
    if mdhd is None or hdlr is None:
        raise BoxError("mdia without mdhd or hdlr")
    _, _, media = MDHD.read(moov, mdhd)
    _, _, handler = HDLR.read(moov, hdlr)
    kind = _HANDLER_KINDS.get(handler.handler_type)
    if manifest is not None:
        kind = manifest.kind
    if kind is None:
        return None
    stsd = find(moov, b"minf/stbl/stsd", mdia.payload_offset, mdia.end)
    entry = (_sample_entry(moov, stsd) if stsd is not None else None) or _Entry("")
    display_width, display_height = header.width >> 16, header.height >> 16
    track = TrackInfo(
        kind=kind,
        name=DEFAULT_TRACK_NAMES[kind],
        track_id=header.track_id,
        bitrate=entry.bitrate,
        fourcc=entry.fourcc,
        codec_private_data=entry.codec_private_data,
        timescale=media.timescale or SMOOTH_TIMESCALE,
        language=_language(media.language),
        max_width=(entry.width or display_width) if kind == "video" else 0,
        max_height=(entry.height or display_height) if kind == "video" else 0,
        display_width=(display_width or entry.width) if kind == "video" else 0,
        display_height=(display_height or entry.height) if kind == "video" else 0,
        sampling_rate=entry.sampling_rate,
        channels=entry.channels,
        bits_per_sample=entry.bits_per_sample,
        packet_size=entry.packet_size,
        audio_tag=entry.audio_tag,
        trak=bytes(moov[trak.offset : trak.end]),
        trex=trex,
    )
    return merge_manifest(track, manifest) if manifest is not None else track


def merge_manifest(track: TrackInfo, manifest: ManifestTrack) -> TrackInfo:
    """``track`` with every attribute the Live Server Manifest gives taken from it."""
    changes: dict[str, object] = {"kind": manifest.kind}
    for name in (
        "bitrate", "name", "fourcc", "codec_private_data", "max_width", "max_height",
        "display_width", "display_height", "audio_tag", "channels", "sampling_rate",
        "bits_per_sample", "packet_size", "timescale",
    ):  # fmt: skip
        value = getattr(manifest, name)
        if value not in (None, ""):
            changes[name] = value
    if manifest.language:
        changes["language"] = None if manifest.language.lower() == "und" else manifest.language
    if "name" not in changes and track.kind != manifest.kind:
        changes["name"] = DEFAULT_TRACK_NAMES[manifest.kind]
    return replace(track, **changes)  # type: ignore[arg-type]


def tracks_from_moov(
    moov: Buffer, manifest: Mapping[int, ManifestTrack] | None = None
) -> list[TrackInfo]:
    """The tracks of a whole moov box, in trak order, merged with the manifest's.

    Tracks of other kinds (hint, metadata) are left out; so are manifest
    tracks the moov does not have.
    """
    try:
        header = read_box_header(moov, 0)
        if header.type != b"moov" or header.size != len(moov):
            raise BoxError("not a whole moov box")
        trexes: dict[int, bytes] = {}
        for trex in find_all(moov, b"mvex/trex", header.payload_offset, header.end):
            _, _, values = TREX.read(moov, trex)
            trexes.setdefault(values.track_id, bytes(moov[trex.offset : trex.end]))
        tracks: list[TrackInfo] = []
        seen: set[int] = set()
        for trak in find_all(moov, b"trak", header.payload_offset, header.end):
            tkhd = find(moov, b"tkhd", trak.payload_offset, trak.end)
            if tkhd is None:
                raise BoxError("trak without tkhd")
            track_id = TKHD.read(moov, tkhd)[2].track_id
            if track_id in seen:
                raise BoxError(f"two traks with track_ID {track_id}")
            seen.add(track_id)
            info = track_from_trak(
                moov, trak, trexes.get(track_id, b""), (manifest or {}).get(track_id)
            )
            if info is not None:
                tracks.append(info)
        return tracks
    except struct.error as exc:  # a short read not caught by a bounds check
        raise BoxError(f"malformed moov: {exc}") from None


# -- RFC 6381 codecs strings ------------------------------------------------------------------


def _annexb_nal_units(data: bytes) -> list[bytes]:
    units = []
    for part in data.split(b"\0\0\1"):
        part = part.rstrip(b"\0")
        if part:
            units.append(part)
    return units


def _trak_codec_private_data(trak: bytes) -> str:
    """The codec private data the trak's own sample entry gives, or ""."""
    if not trak:
        return ""
    try:
        stsd = find(trak, b"trak/mdia/minf/stbl/stsd")
        entry = _sample_entry(trak, stsd) if stsd is not None else None
    except (BoxError, struct.error):
        return ""
    return entry.codec_private_data if entry is not None else ""


def codecs_string(track: TrackInfo) -> str:
    """The RFC 6381 ``codecs`` value of a track: ``avc1.42C00D``, ``mp4a.40.2``...

    Raises ValueError when the track does not say enough.
    """
    fourcc = track.fourcc.upper()
    private = track.codec_private_data
    if fourcc in ("H264", "AVC1", "AVC3"):
        prefix = "avc3" if fourcc == "AVC3" else "avc1"
        for candidate in (private, _trak_codec_private_data(track.trak)):
            for nal in _annexb_nal_units(bytes.fromhex(candidate) if candidate else b""):
                if nal[0] & 0x1F == 7 and len(nal) >= 4:  # sequence parameter set
                    return f"{prefix}.{nal[1]:02X}{nal[2]:02X}{nal[3]:02X}"
        raise ValueError(f"no SPS to describe {track.fourcc} track {track.track_id}")
    if fourcc in ("AACL", "AACH", "MP4A", "AACP"):
        if private:
            try:
                return f"mp4a.40.{parse_audio_specific_config(bytes.fromhex(private)).object_type}"
            except (BoxError, ValueError):
                pass
        return "mp4a.40.5" if fourcc == "AACH" else "mp4a.40.2"
    simple = {"EC-3": "ec-3", "AC-3": "ac-3", "TTML": "stpp", "WVTT": "wvtt"}
    if fourcc in simple:
        return simple[fourcc]
    raise ValueError(f"no codecs string for FourCC {track.fourcc!r}")
