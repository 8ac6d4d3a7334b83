"""The vocabulary of a live presentation, shared by ingest and every output.

A publishing point's presentation is a set of StreamIndexes (one per kind and
name: ``video``, ``audio``, ``audio_eng``...), each with QualityLevels (one
per bitrate), each fed by one track of one or more encoder streams, and made
of fragments. These are plain frozen values: the ingest parser produces
them, the fragment store keeps them, the renderers (Smooth client manifest,
later HLS and DASH) read them. Names follow MS-SSTR and the IIS manifests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TrackKind = Literal["video", "audio", "text"]

# The Smooth Streaming timescale: 100-ns units (MS-SSTR 2.2.2.1 TimeScale).
SMOOTH_TIMESCALE = 10_000_000


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """What a QualityLevel says about its track (client manifest attributes).

    ``codec_private_data`` is upper-case hex as the client manifest writes
    it: for H.264 the Annex B SPS and PPS (``00000001`` start codes), for AAC
    the AudioSpecificConfig.
    """

    kind: TrackKind
    name: str  # the StreamIndex name: trackName of the live server manifest
    track_id: int  # the track's ID inside its encoder stream (moov/trak/tkhd)
    bitrate: int  # bits per second: systemBitrate
    fourcc: str  # H264, AVC1, AACL, AACH, EC-3, TTML...
    codec_private_data: str
    timescale: int = SMOOTH_TIMESCALE
    language: str | None = None  # systemLanguage (None for "und")
    # video
    max_width: int = 0
    max_height: int = 0
    display_width: int = 0
    display_height: int = 0
    # audio
    sampling_rate: int = 0
    channels: int = 0
    bits_per_sample: int = 0
    packet_size: int = 0
    audio_tag: int = 0
    # The track's own boxes, kept for outputs that build init segments
    # (HLS fMP4 / DASH): the whole ``trak`` box and its ``trex`` from mvex.
    trak: bytes = field(default=b"", repr=False, compare=False)
    trex: bytes = field(default=b"", repr=False, compare=False)

    @property
    def identity(self) -> tuple:
        """Two encoder streams carrying the same track (redundant feeds) agree on this."""
        return (self.kind, self.name, self.bitrate, self.fourcc, self.codec_private_data)


@dataclass(frozen=True, slots=True)
class FragmentData:
    """One fragment as it came from the encoder: a moof and its mdat, whole.

    ``time`` and ``duration`` are in the track's timescale, taken from the
    TfxdBox (or tfdt and the trun sample durations when there is no tfxd).
    ``moof`` and ``mdat`` are the complete boxes, headers included.
    """

    track_id: int
    time: int
    duration: int
    moof: bytes = field(repr=False)
    mdat: bytes = field(repr=False)
    keyframe: bool = True  # the first sample is a sync sample

    @property
    def size(self) -> int:
        return len(self.moof) + len(self.mdat)
