"""The Smooth Streaming client manifest, rendered from plain values (sans-IO).

This is the XML players fetch at ``/<point>.isml/Manifest``: [MS-SSTR]
section 2.2.2 (Manifest Response) and the IIS "Client Manifest" pages. The
caller (the publishing point) gathers what each StreamIndex holds - its
QualityLevels (``TrackInfo``) and the (time, duration) of the fragments in
the DVR window - and calls ``render_client_manifest`` once per new fragment;
the bytes are then served as they are to every request.

Rules, with where they come from:

* ``MajorVersion`` is always 2; ``MinorVersion`` is 0 or 2 (2.2.2.1).
  Version 2.2 is the one that allows ``r`` on ``c`` (2.2.2.6 FragmentRepeat:
  "MajorVersion and MinorVersion fields MUST both be set to 2").
* ``Duration`` is required (2.2.2.1). Live: the EstimatedDuration, or 0 when
  unknown (IIS page: "Duration should be set to 0 for live presentations
  whose approximate duration is not known"). On-demand: the total.
* ``IsLive``, ``LookaheadCount`` and ``DVRWindowLength`` only for live: the
  latter two "MUST be omitted for on-demand presentations" (2.2.2.1), and
  IsLive "should be omitted" for them (IIS page). ``DVRWindowLength="0"``
  means an infinite window (2.2.2.1). ``CanSeek``/``CanPause`` are not
  MS-SSTR attributes (SmoothStreamingMediaAttributes has none), so they are
  never written.
* ``c`` elements use duration coding (2.2.2.6): every ``c`` has ``d``; ``t``
  is written on the first ``c`` and on every ``c`` that does not start where
  the previous fragment ended (a gap, an overlap, an encoder restart). In
  2.2, a run of contiguous fragments of equal duration is one ``c`` with
  ``r`` = the number of fragments in the run, one-based: "A value of 2 means
  two fragments in the contiguous series" (2.2.2.6). ``r`` is only written
  for runs of two or more; in 2.0 it is never written.
* ``Chunks`` is the number of fragments available (2.2.2.3 NumberOfFragments),
  so with ``r`` folding it is still the number of fragments, not the number
  of ``c`` elements - as Azure Media Services writes it (``Chunks="12"``
  over ``<c t="0" d="60160000" r="11"/><c d="41386666"/>``).

Gaps and oddities in MS-SSTR that this module settles:

* 2.2.2.5 lists MaxWidth/MaxHeight as required for audio QualityLevels too;
  that is a copy slip (they are "the maximum width of a video sample", and
  neither IIS nor Azure writes them on audio). Audio gets the audio set.
* The StreamFragmentAttributes ABNF forgets FragmentRepeatAttribute that the
  same section defines; ``r`` is written as defined.
* ``Language`` is not in the StreamAttributes ABNF (a vendor extension by
  the letter of it) but IIS writes it and every player reads it.
* ``Subtype`` is required for text streams (2.2.2.3); a text StreamIndex
  without one gets ``SUBT``.

What dash.js (``src/mss/parser/MssParser.js``) requires beyond MS-SSTR:

* Url: it substitutes only the literal ``{bitrate}`` and ``{start time}``
  (first occurrence each). ``{Bitrate}`` and ``{start_time}``, both legal in
  2.2.2.4, are left in the URL and every fragment request fails. The
  default template uses the two forms dash.js knows; keep them in any
  custom template.
* ``t`` on the first ``c``: without it dash.js assumes 0. For on-demand it
  also derives the presentation offset from the smallest first ``t`` of the
  audio and video StreamIndexes.
* ``d`` on every ``c``: a missing ``d`` is derived only from the next
  ``c``'s ``t``; on the last ``c`` it becomes NaN.
* ``r`` is one-based (it adds ``r - 1`` repetitions), as in MS-SSTR and
  ExoPlayer. A later ``c`` with ``t="0"`` would be taken as having no ``t``;
  harmless, as times ascend.
* ``IsLive`` is compared case-insensitively with "true"; ``TRUE`` is fine.
  Live with ``DVRWindowLength`` 0 (or absent) is an infinite window.
* A live manifest with ``Duration`` > 0 is treated as "start-over" and
  played as a static (on-demand-like) presentation. Keep ``duration`` 0 for
  live unless that is wanted.
* Every H264/AVC1 and AAC QualityLevel must carry ``CodecPrivateData`` (it
  calls ``getAttribute('CodecPrivateData').toString()``, which throws when
  the attribute is absent); this module always writes it, possibly empty.
  H264: it looks for ``00000001`` followed by an SPS NAL header (``x7``) and
  takes the next three bytes as ``avc1.PPCCLL``, so the SPS must follow a
  4-byte start code. AAC: with data, the object type is the top five bits of
  the first byte (``mp4a.40.N``); empty, it rebuilds an AudioSpecificConfig
  from ``SamplingRate`` and ``Channels``.
* FourCC must be one of AAC, AACL, AACH, AACP, AVC1, H264, TTML, DFXP, or the
  QualityLevel is dropped (H264/AVC1 are matched case-sensitively).
* Every video StreamIndex needs at least one ``c``: dash.js reads the first
  video segment's duration unconditionally. Do not serve a manifest before
  the first video fragment.
* dash.js never reloads a live manifest (it follows the tfrf boxes of the
  fragments), so LookaheadCount and tfrf are what keep it at the live edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from smoothlive.media.model import SMOOTH_TIMESCALE, TrackInfo, TrackKind
from smoothlive.outputs.xmlattr import xml_attr as _attr

__all__ = [
    "DEFAULT_URL",
    "ManifestView",
    "StreamIndexView",
    "render_client_manifest",
]

# MS-SSTR 2.2.2.4 UrlPattern, in the spelling dash.js substitutes; ``{name}``
# is ours, replaced by the StreamIndex name when rendered.
DEFAULT_URL = "QualityLevels({bitrate})/Fragments({name}={start time})"

_MINOR_VERSIONS = {"2.0": "0", "2.2": "2"}


@dataclass(frozen=True, slots=True)
class StreamIndexView:
    """One StreamIndex as the client manifest shows it.

    ``chunks`` are the fragments of the DVR window, ``(time, duration)`` in
    ``timescale`` units, ascending. ``url`` is an MS-SSTR UrlPattern in which
    ``{name}`` stands for ``name``.
    """

    kind: TrackKind
    name: str
    tracks: tuple[TrackInfo, ...]
    chunks: Sequence[tuple[int, int]]
    language: str | None = None
    timescale: int = SMOOTH_TIMESCALE
    subtype: str | None = None
    url: str = DEFAULT_URL
    discontinuities: frozenset[int] = frozenset()  # chunk times that begin a new timeline


@dataclass(frozen=True, slots=True)
class ManifestView:
    """A whole presentation.

    ``duration`` is in ``timescale`` units: for live the estimated duration
    (0 = unknown; note dash.js plays a live manifest with Duration > 0 as
    start-over), for on-demand the total. ``lookahead_count`` and
    ``dvr_window_length`` (0 = the whole event) are written for live only.
    """

    stream_indexes: tuple[StreamIndexView, ...]
    is_live: bool
    version: str = "2.0"
    timescale: int = SMOOTH_TIMESCALE
    duration: int = 0
    lookahead_count: int = 2
    dvr_window_length: int = 0


def render_client_manifest(view: ManifestView) -> bytes:
    """The client manifest of ``view``, UTF-8 XML, one element per line.

    Raises ValueError for a version other than "2.0"/"2.2" or a StreamIndex
    without QualityLevels (MS-SSTR 2.2.2.3 StreamContent needs at least one).
    """
    minor = _MINOR_VERSIONS.get(view.version)
    if minor is None:
        raise ValueError(f"client manifest version must be 2.0 or 2.2, not {view.version!r}")
    fold = minor == "2"
    parts: list[str] = ['<?xml version="1.0" encoding="utf-8"?>']
    root = (
        f'<SmoothStreamingMedia MajorVersion="2" MinorVersion="{minor}"'
        f' TimeScale="{int(view.timescale)}" Duration="{int(view.duration)}"'
    )
    if view.is_live:
        root += (
            f' IsLive="TRUE" LookaheadCount="{int(view.lookahead_count)}"'
            f' DVRWindowLength="{int(view.dvr_window_length)}"'
        )
    parts.append(root + ">")
    for stream in view.stream_indexes:
        _stream_index(stream, fold, parts)
    parts.append("</SmoothStreamingMedia>")
    parts.append("")
    return "\n".join(parts).encode("utf-8")


def _stream_index(stream: StreamIndexView, fold: bool, parts: list[str]) -> None:
    if not stream.tracks:
        raise ValueError(f"StreamIndex {stream.name!r} has no QualityLevel")
    kind = stream.kind
    name = _attr(stream.name)
    url = _attr(stream.url.replace("{name}", stream.name))
    head = (
        f'<StreamIndex Type="{kind}" Name="{name}" Chunks="{len(stream.chunks)}"'
        f' QualityLevels="{len(stream.tracks)}" Url="{url}" TimeScale="{int(stream.timescale)}"'
    )
    if stream.language:
        head += f' Language="{_attr(stream.language)}"'
    if kind == "video":
        # MS-SSTR 2.2.2.3: these four only on video StreamIndexes.
        max_width = max(t.max_width for t in stream.tracks)
        max_height = max(t.max_height for t in stream.tracks)
        widest = max(stream.tracks, key=lambda t: t.display_width * t.display_height)
        display_width = widest.display_width or max_width
        display_height = widest.display_height or max_height
        head += (
            f' MaxWidth="{max_width}" MaxHeight="{max_height}"'
            f' DisplayWidth="{display_width}" DisplayHeight="{display_height}"'
        )
    subtype = stream.subtype or ("SUBT" if kind == "text" else None)
    if subtype:
        head += f' Subtype="{_attr(subtype)}"'
    parts.append(head + ">")
    for index, track in enumerate(stream.tracks):
        parts.append(_quality_level(index, track, kind))
    _chunks(stream.chunks, fold, parts, stream.discontinuities)
    parts.append("</StreamIndex>")


def _quality_level(index: int, track: TrackInfo, kind: TrackKind) -> str:
    # MS-SSTR 2.2.2.5: Index and Bitrate always; video adds MaxWidth,
    # MaxHeight, CodecPrivateData; audio adds SamplingRate, Channels,
    # BitsPerSample, PacketSize, AudioTag, FourCC, CodecPrivateData.
    # CodecPrivateData is written even when empty (dash.js needs it there).
    element = (
        f'<QualityLevel Index="{index}" Bitrate="{int(track.bitrate)}"'
        f' FourCC="{_attr(track.fourcc)}" CodecPrivateData="{_attr(track.codec_private_data)}"'
    )
    if kind == "video":
        element += f' MaxWidth="{int(track.max_width)}" MaxHeight="{int(track.max_height)}"'
    elif kind == "audio":
        element += (
            f' SamplingRate="{int(track.sampling_rate)}" Channels="{int(track.channels)}"'
            f' BitsPerSample="{int(track.bits_per_sample)}" PacketSize="{int(track.packet_size)}"'
            f' AudioTag="{int(track.audio_tag)}"'
        )
    return element + "/>"


def _chunks(
    chunks: Sequence[tuple[int, int]],
    fold: bool,
    parts: list[str],
    discontinuities: frozenset[int] = frozenset(),
) -> None:
    """Append the ``c`` elements of ``chunks`` (MS-SSTR 2.2.2.6, duration coding).

    A chunk in ``discontinuities`` (the first after an encoder restarted its
    clock) always carries its ``t`` and starts a new run, even when it
    continues the timeline: that is how a Smooth manifest marks it.
    """
    append = parts.append
    count = len(chunks)
    expected = -1  # where the previous fragment ended; -1 forces t on the first
    i = 0
    while i < count:
        time, duration = chunks[i]
        end = time + duration
        j = i + 1
        if fold:
            while j < count:
                next_time, next_duration = chunks[j]
                if next_duration != duration or next_time != end or next_time in discontinuities:
                    break
                end += duration
                j += 1
        run = j - i
        if time == expected and time not in discontinuities:
            if run > 1:
                append(f'<c d="{duration}" r="{run}"/>')
            else:
                append(f'<c d="{duration}"/>')
        elif run > 1:
            append(f'<c t="{time}" d="{duration}" r="{run}"/>')
        else:
            append(f'<c t="{time}" d="{duration}"/>')
        expected = end
        i = j
