"""The Live Server Manifest an encoder sends first (IIS Smooth Streaming Live Server Manifest).

The manifest is SMIL 2.0 carried in the Live Server Manifest Box, a ``uuid``
box (a5d40b30-e814-11dd-ba2f-0800200c9a66) that comes before the moov::

    <smil><head><meta name="title" content="..."/></head>
    <body><switch>
      <video src="..." systemBitrate="300000">
        <param name="trackID" value="1" valuetype="data"/>
        <param name="FourCC" value="H264" valuetype="data"/> ...
      </video>
      <audio ...>...</audio> <textstream ...>...</textstream>
    </switch></body></smil>

Each ``video``/``audio``/``textstream`` element describes one track of the
stream by its ``trackID`` param; the other params carry the client manifest
QualityLevel attributes. Encoders differ, so reading is lenient: element and
parameter names are matched without namespace or case, ``width``/``height``
stand for MaxWidth/MaxHeight, ``WaveFormatEx`` for CodecPrivateData,
``PackSize`` for PacketSize, unreadable numbers are treated as absent, and a
track without a trackID is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lxml import etree

from smoothlive.management.errors import ManagementError
from smoothlive.management.xmlsafe import parse_xml
from smoothlive.media.boxes import BoxError
from smoothlive.media.model import TrackKind

LIVE_SERVER_MANIFEST_UUID = bytes.fromhex("a5d40b30e81411ddba2f0800200c9a66")

_KINDS: dict[str, TrackKind] = {"video": "video", "audio": "audio", "textstream": "text"}

# parameter name (lower case) -> ManifestTrack field, for integer parameters
_INTEGERS = {
    "systembitrate": "bitrate",
    "maxwidth": "max_width",
    "width": "max_width",
    "maxheight": "max_height",
    "height": "max_height",
    "displaywidth": "display_width",
    "displayheight": "display_height",
    "audiotag": "audio_tag",
    "channels": "channels",
    "samplingrate": "sampling_rate",
    "bitspersample": "bits_per_sample",
    "packetsize": "packet_size",
    "packsize": "packet_size",
    "timescale": "timescale",
}


@dataclass(frozen=True, slots=True)
class ManifestTrack:
    """One track as the Live Server Manifest describes it; None where it says nothing."""

    kind: TrackKind
    track_id: int
    bitrate: int | None = None
    name: str | None = None  # trackName
    language: str | None = None  # systemLanguage, as given ("und" included)
    fourcc: str | None = None
    codec_private_data: str | None = None  # upper-case hex
    max_width: int | None = None
    max_height: int | None = None
    display_width: int | None = None
    display_height: int | None = None
    audio_tag: int | None = None
    channels: int | None = None
    sampling_rate: int | None = None
    bits_per_sample: int | None = None
    packet_size: int | None = None
    timescale: int | None = None
    params: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)


def lsm_payload_text(body: bytes | memoryview) -> bytes:
    """The SMIL document in a Live Server Manifest Box body (after the usertype).

    FFmpeg writes the box as a full box (four zero bytes of version and flags
    before the XML); other encoders may not. Trailing NULs are dropped.
    """
    data = bytes(body)
    start = data[:1]
    if data[:4] == b"\0\0\0\0" or (start and start not in b"<\xef\xfe\xff \t\r\n"):
        data = data[4:]
    return data.rstrip(b"\0")


def decode_smil(document: bytes) -> str:
    """The manifest text: UTF-8 (BOM allowed) or UTF-16 with a BOM."""
    try:
        if document[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return document.decode("utf-16")
        return document.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BoxError(f"live server manifest is not UTF-8 or UTF-16 text: {exc}") from None


def parse_server_manifest(document: bytes | str) -> dict[int, ManifestTrack]:
    """The tracks of a Live Server Manifest by trackID; BoxError if it is not XML."""
    if isinstance(document, str):
        document = document.encode("utf-8")
        if document.lstrip().startswith(b"<?xml"):  # the declaration may name another encoding
            document = document[document.index(b"?>") + 2 :]
    try:
        root = parse_xml(document)
    except ManagementError as exc:
        raise BoxError(f"live server manifest is not readable XML: {exc}") from None
    tracks: dict[int, ManifestTrack] = {}
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        kind = _KINDS.get(_local(element.tag).lower())
        if kind is None:
            continue
        track = _track(kind, element)
        if track is not None and track.track_id not in tracks:
            tracks[track.track_id] = track
    return tracks


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _integer(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip(), 0 if text.strip().lower().startswith("0x") else 10)
    except ValueError:
        return None


def _track(kind: TrackKind, element: etree._Element) -> ManifestTrack | None:
    params: dict[str, str] = {}
    for attribute, value in element.attrib.items():
        params.setdefault(_local(attribute).lower(), value)
    named: dict[str, str] = {}  # original spelling, for the record
    for child in element:
        if not isinstance(child.tag, str) or _local(child.tag).lower() != "param":
            continue
        name, value = child.get("name"), child.get("value")
        if name is None or value is None:
            continue
        params[name.strip().lower()] = value.strip()
        named[name.strip()] = value.strip()
    track_id = _integer(params.get("trackid"))
    if track_id is None or not 0 < track_id <= 0xFFFFFFFF:
        return None
    values: dict[str, object] = {}
    for key, attr in _INTEGERS.items():
        number = _integer(params.get(key))
        if number is not None and number >= 0 and attr not in values:
            values[attr] = number
    private = params.get("codecprivatedata") or params.get("waveformatex")
    return ManifestTrack(
        kind=kind,
        track_id=track_id,
        name=params.get("trackname") or None,
        language=params.get("systemlanguage") or None,
        fourcc=params.get("fourcc") or None,
        codec_private_data=private.upper() if private else None,
        params=named,
        **values,  # type: ignore[arg-type]
    )
