"""HLS and DASH from the same presentation view as Smooth: URLs and documents (sans-IO).

One store of fragments, three outputs. Everything here starts from a
``ManifestView`` (the StreamIndexes, their QualityLevels and the published
chunks: what the Smooth client manifest shows) and, for HLS, the
``Segmenter`` of the presentation, so the three manifests list the same
fragments with the same times.

URLs are the forms IIS and Azure Media Services used, relative to the
point (``/<path>.isml`` live, ``/<path>.ism`` archive), keywords matched
without case:

==========================================================  ===================================
``Manifest(format=m3u8-aapl)`` [``.m3u8``]                   HLS multivariant, MPEG-2 TS
``Manifest(format=m3u8-cmaf)`` [``.m3u8``]                   HLS multivariant, fMP4/CMAF
``Manifest(format=mpd-time-csf)`` / ``mpd-time-cmaf`` [.mpd] MPEG-DASH, SegmentTimeline
``QualityLevels(B)/Manifest(NAME,format=F).m3u8``            HLS media playlist
``QualityLevels(B)/Fragments(NAME=T,format=m3u8-aapl).ts``   HLS TS segment starting at T
``QualityLevels(B)/Fragments(NAME=T,format=m3u8-cmaf).m4s``  HLS fMP4 segment starting at T
``QualityLevels(B)/Fragments(NAME=T,format=mpd-time-*).m4s`` DASH segment: the fragment at T
``QualityLevels(B)/Fragments(NAME=i,format=F).mp4``          init segment (fMP4 HLS and DASH)
``Keys(N).key?token=...``                                    AES-128 key N (HLS)
==========================================================  ===================================

Every segment and playlist URL ends with its media extension: strict
clients (ffmpeg 6.1+, its ``extension_picky`` check) refuse others. HLS
segment times ``T`` are the start of the segment on the reference
StreamIndex (the first video one), in its timescale, for audio renditions
too: one name for one span of every playlist.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction

from smoothlive.media.codecs import codecs_string
from smoothlive.media.model import TrackInfo
from smoothlive.outputs.dash import DashAdaptation, DashPresentation, render_mpd
from smoothlive.outputs.hls import (
    HlsKey,
    HlsSegment,
    MediaPlaylist,
    Rendition,
    Variant,
    render_media_playlist,
    render_multivariant,
)
from smoothlive.outputs.segments import Segment, Segmenter, chunks_within, rescale
from smoothlive.outputs.smooth import ManifestView, StreamIndexView

HLS_TS = "m3u8-aapl"
HLS_CMAF = "m3u8-cmaf"
DASH_CSF = "mpd-time-csf"
DASH_CMAF = "mpd-time-cmaf"
HLS_FORMATS = (HLS_TS, HLS_CMAF)
DASH_FORMATS = (DASH_CSF, DASH_CMAF)

CONTENT_TYPES = {
    "m3u8": b"application/vnd.apple.mpegurl",
    "mpd": b"application/dash+xml",
    "ts": b"video/mp2t",
    "m4s": b"video/mp4",
    "mp4": b"video/mp4",
    "key": b"application/octet-stream",
}

_POINT = r"(?P<point>/.+?\.ism[l]?)"
_FORMAT = r"format=(?P<format>m3u8-aapl|m3u8-cmaf|mpd-time-csf|mpd-time-cmaf)"
_ROUTES = (
    ("manifest", re.compile(_POINT + r"/manifest\(" + _FORMAT + r"\)(?P<ext>\.m3u8|\.mpd)?/?$",
                            re.I)),
    ("playlist", re.compile(_POINT + r"/qualitylevels\((?P<bitrate>\d{1,10})\)/manifest\("
                            r"(?P<name>[^,()/=]+)," + _FORMAT + r"\)(?P<ext>\.m3u8)$", re.I)),
    ("segment", re.compile(_POINT + r"/qualitylevels\((?P<bitrate>\d{1,10})\)/fragments\("
                           r"(?P<name>[^=()/,]+)=(?P<time>\d{1,20}|i)," + _FORMAT +
                           r"\)(?P<ext>\.ts|\.m4s|\.mp4)$", re.I)),
    ("key", re.compile(_POINT + r"/keys\((?P<key>\d{1,10})\)(?P<ext>\.key)$", re.I)),
)


@dataclass(frozen=True, slots=True)
class OutputRoute:
    kind: str  # manifest | playlist | init | segment | key
    point: str  # /<path>.isml or /<path>.ism as requested
    format: str = ""  # m3u8-aapl | m3u8-cmaf | mpd-time-csf | mpd-time-cmaf (lower case)
    extension: str = ""  # without the dot, lower case ("" when the URL had none)
    bitrate: int = 0
    name: str = ""
    time: int = 0
    key: int = 0

    @property
    def archive(self) -> bool:
        return self.point.lower().endswith(".ism")

    @property
    def is_hls(self) -> bool:
        return self.format in HLS_FORMATS


# A pure function of the path: players ask for the same URLs again and again.
@functools.lru_cache(maxsize=8192)
def output_route(path: str) -> OutputRoute | None:
    """The HLS/DASH resource a path names, or None; a wrong extension is None (404)."""
    lowered = path.lower()
    if "format=" not in lowered and "/keys(" not in lowered:
        return None
    for kind, pattern in _ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        groups = match.groupdict()
        fmt = (groups.get("format") or "").lower()
        ext = (groups.get("ext") or "").lower().lstrip(".")
        if kind == "manifest" and ext and ext != ("m3u8" if fmt in HLS_FORMATS else "mpd"):
            return None
        if kind == "playlist" and fmt not in HLS_FORMATS:
            return None
        if kind == "segment":
            if groups["time"].lower() == "i":
                if ext != "mp4" or fmt == HLS_TS:
                    return None
                kind = "init"
            elif ext != ("ts" if fmt == HLS_TS else "m4s"):
                return None
        return OutputRoute(
            kind=kind, point=groups["point"], format=fmt, extension=ext,
            bitrate=int(groups.get("bitrate") or 0), name=groups.get("name") or "",
            time=int(groups["time"]) if groups.get("time", "i").isdigit() else 0,
            key=int(groups.get("key") or 0))
    return None


# -- URLs written into the documents (relative to the document's own URL) -----------------------


def playlist_uri(name: str, bitrate: int, fmt: str) -> str:
    return f"QualityLevels({bitrate})/Manifest({name},format={fmt}).m3u8"


def segment_uri(name: str, time: int, fmt: str) -> str:
    """Relative to a media playlist (which sits under ``QualityLevels(B)/``)."""
    return f"Fragments({name}={time},format={fmt}).{'ts' if fmt == HLS_TS else 'm4s'}"


def init_uri(name: str, fmt: str) -> str:
    return f"Fragments({name}=i,format={fmt}).mp4"


# -- HLS ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HlsOptions:
    """The HLS module's settings as the documents need them."""

    max_bit_rate: int = 0  # 0: no limit
    include_codecs: bool = False
    allow_caching: bool = False
    encrypted: bool = False
    key_rotation: float = 0.0  # seconds; 0: one key for the event


def reference_of(view: ManifestView) -> StreamIndexView | None:
    """The StreamIndex HLS segments are cut on: the first video one, else the first."""
    indexes = view.stream_indexes
    return next((si for si in indexes if si.kind == "video"), indexes[0] if indexes else None)


def _audio_indexes(view: ManifestView) -> list[StreamIndexView]:
    return [si for si in view.stream_indexes if si.kind == "audio" and si.tracks]


def _codecs(info: TrackInfo) -> str | None:
    try:
        return codecs_string(info)
    except ValueError:
        return None


def render_hls_multivariant(view: ManifestView, fmt: str, options: HlsOptions,
                            frame_rates: Mapping[tuple[str, int], float] | None = None) -> bytes:
    """One variant per video QualityLevel (MaxBitRate leaves out those above it, but
    never all of them); audio StreamIndexes as renditions of one group."""
    frame_rates = frame_rates or {}
    audio = _audio_indexes(view)
    renditions = []
    audio_bitrate = 0
    audio_codecs: list[str] = []
    for position, index in enumerate(audio):
        best = max(index.tracks, key=lambda info: info.bitrate)
        audio_bitrate = max(audio_bitrate, best.bitrate)
        codec = _codecs(best)
        if codec and codec not in audio_codecs:
            audio_codecs.append(codec)
        label = index.language or index.name
        if any(r.name == label for r in renditions):
            label = index.name  # two StreamIndexes of one language: names must differ
        renditions.append(Rendition(
            type="AUDIO", group_id="audio", name=label,
            uri=playlist_uri(index.name, best.bitrate, fmt), language=index.language,
            default=position == 0, autoselect=True, channels=best.channels or None))
    group = "audio" if renditions else None
    videos = [si for si in view.stream_indexes if si.kind == "video"]
    variants = []
    for index in videos:
        tracks = sorted(index.tracks, key=lambda info: info.bitrate)
        allowed = [t for t in tracks if not options.max_bit_rate
                   or t.bitrate <= options.max_bit_rate] or tracks[:1]
        for info in allowed:
            codecs = None
            if options.include_codecs:
                parts = [c for c in [_codecs(info), *audio_codecs] if c]
                codecs = ",".join(parts) or None
            variants.append(Variant(
                uri=playlist_uri(index.name, info.bitrate, fmt),
                bandwidth=_peak(info.bitrate + audio_bitrate, fmt),
                average_bandwidth=info.bitrate + audio_bitrate,
                resolution=(info.max_width, info.max_height)
                if info.max_width and info.max_height else None,
                frame_rate=frame_rates.get((index.name, info.bitrate)),
                codecs=codecs, audio_group=group))
    if not variants and audio:  # an audio-only presentation: its renditions as variants
        for index in audio:
            best = max(index.tracks, key=lambda info: info.bitrate)
            variants.append(Variant(
                uri=playlist_uri(index.name, best.bitrate, fmt),
                bandwidth=_peak(best.bitrate, fmt), average_bandwidth=best.bitrate,
                codecs=_codecs(best) if options.include_codecs else None))
        renditions = []
    return render_multivariant(variants, renditions, version=_version(fmt, options),
                               independent_segments=True)


def _peak(bitrate: int, fmt: str) -> int:
    """BANDWIDTH is a peak: the nominal rate plus container overhead (TS is heavier)."""
    return math.ceil(bitrate * (1.1 if fmt == HLS_TS else 1.05))


def _version(fmt: str, options: HlsOptions) -> int:
    return 6 if fmt == HLS_CMAF else 3


def hls_segments_of(view: ManifestView, name: str, segmenter: Segmenter, live: bool,
                    only: Segment | None = None
                    ) -> list[tuple[int, int, list[tuple[int, int]], bool, int]]:
    """``(start, end, chunks, discontinuity, sequence)`` of every listable segment of the
    StreamIndex ``name`` (or of ``only``): start/end on the reference timeline, chunks in
    its own timescale."""
    reference = reference_of(view)
    index = next((si for si in view.stream_indexes if si.name == name), None)
    if reference is None or index is None:
        return []
    out = []
    own_edge = index.chunks[-1][0] + index.chunks[-1][1] if index.chunks else 0
    for segment in segmenter.segments() if only is None else [only]:
        if index is reference:
            chunks = chunks_within(index.chunks, segment.start, segment.end)
        else:
            start = rescale(segment.start, reference.timescale, index.timescale)
            end = rescale(segment.end, reference.timescale, index.timescale)
            if live and own_edge < end:
                break  # its audio has not all arrived yet
            chunks = chunks_within(index.chunks, start, end)
        if chunks:
            out.append((segment.start, segment.end, chunks, segment.discontinuity,
                        segment.sequence))
    return out


def render_hls_media(view: ManifestView, name: str, fmt: str, segmenter: Segmenter, *,
                     live: bool, options: HlsOptions, target: float,
                     anchor: float | None = None,
                     key_uri: Callable[[int], str] | None = None) -> bytes:
    """The media playlist of StreamIndex ``name`` (all its QualityLevels share segments)."""
    index = next(si for si in view.stream_indexes if si.name == name)
    reference = reference_of(view)
    assert reference is not None
    scale = index.timescale
    segments = []
    for start, _end, chunks, discontinuity, sequence in hls_segments_of(
            view, name, segmenter, live):
        duration = sum(d for _, d in chunks) / scale
        key = None
        if options.encrypted and key_uri is not None:
            key_id = key_of(start / reference.timescale, options.key_rotation)
            key = HlsKey(method="AES-128", uri=key_uri(key_id))
        when = None
        if anchor is not None:
            when = datetime.fromtimestamp(anchor + start / reference.timescale, UTC)
        segments.append(HlsSegment(
            sequence=sequence, duration=duration, uri=segment_uri(name, start, fmt),
            discontinuity=discontinuity, program_date_time=when, key=key))
    if not segments:
        raise NoSegments(name)
    longest = max(s.duration for s in segments)
    playlist = MediaPlaylist(
        segments=segments,
        # Stable across reloads (RFC 8216 §6.2.1): SegmentLength, unless a segment is longer.
        target_duration=math.ceil(max(target, longest) - 0.001),
        version=_version(fmt, options),
        ended=not live,
        discontinuity_sequence=segmenter.dropped_discontinuities,
        playlist_type=None if live else "VOD",
        allow_cache=options.allow_caching,
        map_uri=init_uri(name, fmt) if fmt == HLS_CMAF else None,
        independent_segments=False,  # said once, in the multivariant playlist (§4.3.5)
    )
    return render_media_playlist(playlist)


class NoSegments(LookupError):
    """A media playlist with no segment yet: nothing a player can use (404)."""


def key_of(seconds: float, rotation: float) -> int:
    """The number of the key in force at ``seconds`` of media time."""
    return int(seconds // rotation) if rotation > 0 else 0


# -- DASH ---------------------------------------------------------------------------------------


def dash_media_template(name: str, fmt: str) -> str:
    return f"QualityLevels($Bandwidth$)/Fragments({name}=$Time$,format={fmt}).m4s"


def dash_init_template(name: str, fmt: str) -> str:
    return f"QualityLevels($Bandwidth$)/Fragments({name}=i,format={fmt}).mp4"


def render_dash(view: ManifestView, fmt: str, *, live: bool, anchor: float | None,
                published_at: float | None, now: float, time_url: str,
                window: float | None, frame_rates: Mapping[tuple[str, int], float] | None = None
                ) -> bytes:
    """The MPD of ``view``: dynamic while live, static with the whole timeline after Stop."""
    adaptations = [
        DashAdaptation(
            kind=index.kind, name=index.name,
            tracks=tuple(sorted(index.tracks, key=lambda info: -info.bitrate)),
            chunks=index.chunks, timescale=index.timescale,
            media_template=dash_media_template(index.name, fmt),
            init_template=dash_init_template(index.name, fmt),
            language=index.language, discontinuities=index.discontinuities,
            frame_rates={bitrate: Fraction(rate).limit_denominator(1001)
                         for (name, bitrate), rate in (frame_rates or {}).items()
                         if name == index.name})
        for index in view.stream_indexes if index.chunks
    ]
    start = anchor if anchor is not None else now
    durations = [d for index in view.stream_indexes for _, d in index.chunks[-1:]]
    reference = reference_of(view)
    scale = reference.timescale if reference is not None else 10_000_000
    # Players learn of new segments only from a new MPD: refresh at least once a fragment.
    minimum_update = max(0.5, min(durations, default=2 * scale) / scale)
    presentation = DashPresentation(
        adaptations=adaptations,
        live=live,
        availability_start_time=datetime.fromtimestamp(start, UTC),
        publish_time=datetime.fromtimestamp(published_at or now, UTC),
        utc_timing_uri=time_url,
        time_shift_buffer_depth=window,
        profile="cmaf" if fmt == DASH_CMAF else "csf",
        minimum_update_period=min(2.0, minimum_update),
    )
    return render_mpd(presentation)

