"""Track descriptions from the moov and the Live Server Manifest; RFC 6381 codecs strings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from smoothlive.media.boxes import BoxError, box, find, find_uuid, payload
from smoothlive.media.codecs import (
    avc_codec_private_data,
    codecs_string,
    merge_manifest,
    parse_audio_specific_config,
    tracks_from_moov,
)
from smoothlive.media.model import TrackInfo
from smoothlive.media.servermanifest import (
    LIVE_SERVER_MANIFEST_UUID,
    ManifestTrack,
    decode_smil,
    lsm_payload_text,
    parse_server_manifest,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ingest"
STREAMS = {name: (FIXTURES / f"{name}.ismv").read_bytes() for name in ("ch1-300k", "ch1-150k")}


def _moov(stream: bytes) -> bytes:
    header = find(stream, b"moov")
    return stream[header.offset : header.end]


def _manifest(stream: bytes) -> dict[int, ManifestTrack]:
    header = find_uuid(stream, LIVE_SERVER_MANIFEST_UUID)
    return parse_server_manifest(lsm_payload_text(payload(stream, header)))


@pytest.mark.parametrize("name", STREAMS)
def test_moov_alone_gives_what_the_manifest_says(name: str) -> None:
    stream = STREAMS[name]
    manifest = _manifest(stream)
    video, audio = tracks_from_moov(_moov(stream))
    lsm_video, lsm_audio = manifest[1], manifest[2]
    assert video.codec_private_data == lsm_video.codec_private_data
    assert audio.codec_private_data == lsm_audio.codec_private_data == "118856E500"
    for track, lsm in ((video, lsm_video), (audio, lsm_audio)):
        assert (track.kind, track.track_id, track.fourcc) == (lsm.kind, lsm.track_id, lsm.fourcc)
        assert track.name == lsm.name
        for field in (
            "max_width", "max_height", "display_width", "display_height", "audio_tag",
            "channels", "sampling_rate", "bits_per_sample", "packet_size",
        ):  # fmt: skip
            assert getattr(track, field) == (getattr(lsm, field) or 0), field
    assert audio.bitrate == lsm_audio.bitrate == 64000  # esds avgBitrate
    assert video.bitrate == 0  # ffmpeg writes no btrt; the LSM says systemBitrate
    merged = tracks_from_moov(_moov(stream), manifest)
    assert merged == [replace(video, bitrate=lsm_video.bitrate), audio]


def test_codecs_strings() -> None:
    video, audio = tracks_from_moov(_moov(STREAMS["ch1-300k"]))
    assert codecs_string(video) == "avc1.42C00D"
    assert codecs_string(audio) == "mp4a.40.2"
    assert codecs_string(tracks_from_moov(_moov(STREAMS["ch1-150k"]))[0]) == "avc1.42C00C"
    # no private data: the trak's avcC still knows
    assert codecs_string(replace(video, codec_private_data="")) == "avc1.42C00D"
    assert codecs_string(replace(audio, codec_private_data="")) == "mp4a.40.2"
    assert codecs_string(replace(audio, fourcc="AACH", codec_private_data="")) == "mp4a.40.5"
    bare = TrackInfo("video", "video", 1, 1, "H264", "")
    with pytest.raises(ValueError, match="no SPS"):
        codecs_string(bare)
    with pytest.raises(ValueError):
        codecs_string(replace(bare, fourcc="WMV3"))
    assert codecs_string(replace(bare, kind="text", fourcc="TTML")) == "stpp"


def test_avc_codec_private_data() -> None:
    avcc = find(STREAMS["ch1-300k"], b"moov/trak/mdia/minf/stbl/stsd")
    record = STREAMS["ch1-300k"].index(b"avcC") + 4
    assert avcc is not None
    data = STREAMS["ch1-300k"][record : record + 38]
    assert avc_codec_private_data(data) == (
        "000000016742C00DDA05067E7C0440000003004000000C83C50AA80000000168CE3C80"
    )
    with pytest.raises(BoxError):
        avc_codec_private_data(data[:20])
    with pytest.raises(BoxError):
        avc_codec_private_data(b"\1\2")


def _bits(*fields: tuple[int, int]) -> bytes:
    """``(value, width)`` bit fields, most significant first, zero-padded to bytes."""
    value = length = 0
    for field, width in fields:
        value, length = value << width | field, length + width
    pad = -length % 8
    return (value << pad).to_bytes((length + pad) // 8, "big")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (bytes.fromhex("1188"), (2, 48000, 1)),
        (bytes.fromhex("118856E500"), (2, 48000, 1)),  # backward-compatible SBR signalling
        (bytes.fromhex("1210"), (2, 44100, 2)),
        (bytes.fromhex("2B1188"), (5, 48000, 2)),  # explicit HE-AAC: 24 kHz core, 48 kHz out
        (_bits((29, 5), (6, 4), (1, 4), (3, 4), (2, 5)), (29, 48000, 1)),  # HE-AAC v2 (PS)
        (_bits((31, 5), (7, 6), (3, 4), (4, 4)), (32 + 7, 48000, 4)),  # escaped object type
        (_bits((2, 5), (15, 4), (48000, 24), (1, 4)), (2, 48000, 1)),  # explicit frequency
    ],
)
def test_audio_specific_config(config: bytes, expected: tuple[int, int, int]) -> None:
    asc = parse_audio_specific_config(config)
    assert (asc.object_type, asc.sampling_rate, asc.channels) == expected


def test_audio_specific_config_truncated() -> None:
    with pytest.raises(BoxError):
        parse_audio_specific_config(b"\x11")


def _patched(moov: bytes, *swaps: tuple[bytes, bytes]) -> bytes:
    for old, new in swaps:
        assert len(old) == len(new) and moov.count(old) == 1
        moov = moov.replace(old, new)
    return moov


def test_he_aac_is_aach() -> None:
    he_aac = (bytes.fromhex("118856E500"), bytes.fromhex("2B11880000"))
    moov = _patched(_moov(STREAMS["ch1-300k"]), he_aac)
    audio = tracks_from_moov(moov)[1]
    assert (audio.fourcc, audio.codec_private_data) == ("AACH", "2B11880000")
    assert codecs_string(audio) == "mp4a.40.5"


def test_ec3_and_text_and_unknown_tracks() -> None:
    moov = _moov(STREAMS["ch1-300k"])
    ec3 = tracks_from_moov(_patched(moov, (b"mp4a", b"ec-3")))[1]
    assert (ec3.kind, ec3.fourcc, ec3.sampling_rate, ec3.channels) == ("audio", "EC-3", 48000, 1)
    assert codecs_string(ec3) == "ec-3"
    text = tracks_from_moov(_patched(moov, (b"soun", b"subt"), (b"mp4a", b"stpp")))[1]
    assert (text.kind, text.name, text.fourcc, text.track_id) == ("text", "textstream", "TTML", 2)
    assert codecs_string(text) == "stpp"
    hint = tracks_from_moov(_patched(moov, (b"soun", b"hint")))
    assert [t.track_id for t in hint] == [1]


def test_moov_errors() -> None:
    moov = _moov(STREAMS["ch1-300k"])
    with pytest.raises(BoxError):
        tracks_from_moov(moov[:-1])
    with pytest.raises(BoxError):
        tracks_from_moov(box(b"free", b""))
    trak = find(moov, b"moov/trak")
    doubled = box(b"moov", [moov[8 : trak.end], moov[trak.offset : trak.end]])
    with pytest.raises(BoxError, match="two traks"):
        tracks_from_moov(doubled)
    assert tracks_from_moov(box(b"moov", b"")) == []


SMIL = """<?xml version="1.0" encoding="utf-8"?>
<smil xmlns="http://www.w3.org/2001/SMIL20/Language">
<head><meta name="title" content="x"/></head>
<body><switch>
<video src="s.isml" systemBitrate="1500000">
  <param name="trackID" value="3" valuetype="data"/>
  <param name="trackname" value="video_hi"/>
  <param name="fourcc" value="AVC1"/>
  <param name="Width" value="1280"/><param name="Height" value="720"/>
  <param name="MaxWidth" value="not a number"/>
</video>
<audio systemBitrate="128000" systemLanguage="eng">
  <param name="trackID" value="4"/>
  <param name="WaveFormatEx" value="ff00020044ac"/>
  <param name="PackSize" value="4"/>
</audio>
<audio systemBitrate="96000"><param name="FourCC" value="AACL"/></audio>
<textstream systemBitrate="1000">
  <param name="trackID" value="5"/><param name="FourCC" value="TTML"/>
</textstream>
</switch></body></smil>
"""


def test_server_manifest_is_read_leniently() -> None:
    tracks = parse_server_manifest(SMIL)
    assert sorted(tracks) == [3, 4, 5]  # the audio without a trackID is left out
    video, audio, text = tracks[3], tracks[4], tracks[5]
    assert (video.kind, video.bitrate, video.name, video.fourcc) == (
        "video", 1_500_000, "video_hi", "AVC1",
    )  # fmt: skip
    assert (video.max_width, video.max_height, video.display_width) == (1280, 720, None)
    assert (audio.kind, audio.bitrate, audio.language) == ("audio", 128_000, "eng")
    assert (audio.codec_private_data, audio.packet_size) == ("FF00020044AC", 4)
    assert (text.kind, text.fourcc, text.name) == ("text", "TTML", None)
    assert video.params["trackname"] == "video_hi"


def test_server_manifest_encodings_and_refusals() -> None:
    assert parse_server_manifest(SMIL.encode("utf-8")) == parse_server_manifest(SMIL)
    utf16 = SMIL.replace("utf-8", "utf-16").encode("utf-16")
    assert decode_smil(utf16) == SMIL.replace("utf-8", "utf-16")
    assert parse_server_manifest(utf16) == parse_server_manifest(SMIL)
    assert parse_server_manifest("<smil/>") == {}
    for bad in ("<smil>", "", '<!DOCTYPE smil [<!ENTITY a "b">]><smil>&a;</smil>', "nothing"):
        with pytest.raises(BoxError):
            parse_server_manifest(bad)
    with pytest.raises(BoxError):
        decode_smil(b"\xc3\x28<smil/>")


def test_lsm_payload_text() -> None:
    assert lsm_payload_text(b"\0\0\0\0<smil/>\0") == b"<smil/>"
    assert lsm_payload_text(b"<smil/>") == b"<smil/>"
    assert lsm_payload_text(b"\xef\xbb\xbf<smil/>") == b"\xef\xbb\xbf<smil/>"
    assert lsm_payload_text(b"\x01\0\0\0<smil/>") == b"<smil/>"


def test_partial_manifest_is_filled_from_the_moov() -> None:
    video, audio = tracks_from_moov(_moov(STREAMS["ch1-300k"]))
    partial = ManifestTrack(
        kind="audio", track_id=2, bitrate=96000, name="audio_eng", language="eng"
    )
    merged = merge_manifest(audio, partial)
    assert (merged.bitrate, merged.name, merged.language) == (96000, "audio_eng", "eng")
    assert merged.codec_private_data == audio.codec_private_data
    assert merged.sampling_rate == 48000
    assert merge_manifest(video, ManifestTrack("video", 1, language="und")).language is None
    assert merge_manifest(video, ManifestTrack("video", 1, codec_private_data="")) == video
