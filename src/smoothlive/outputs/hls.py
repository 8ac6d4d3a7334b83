"""HLS playlists, media and multivariant, rendered from plain values (sans-IO).

RFC 8216 (protocol version 7) and draft-pantos-hls-rfc8216bis (its second
edition, for what version 7 and later changed; "bis" below, sections as in
RFC 8216 unless said). The caller (the publishing point) gathers the
segments of the DVR window and calls ``render_media_playlist`` once per new
segment, and ``render_multivariant`` when the set of tracks changes; the
bytes are then served as they are to every request.

Media playlist rules, with where they come from:

* ``#EXTM3U`` is the first line (4.3.1.1); then ``#EXT-X-VERSION``,
  ``#EXT-X-TARGETDURATION``, ``#EXT-X-MEDIA-SEQUENCE`` (the first segment's
  sequence number, 4.3.3.2), the optional playlist tags, ``#EXT-X-MAP``, the
  segments and ``#EXT-X-ENDLIST`` when ended (4.3.3.4).
* The version written is the larger of ``MediaPlaylist.version`` and the
  lowest one the features need (``hls_version``, section 7 / bis section 8):
  IV on EXT-X-KEY 2, decimal EXTINF 3, KEYFORMAT(VERSIONS) and SAMPLE-AES 5,
  EXT-X-MAP 6 (5 in I-frame playlists). A version that is too low makes old
  clients misplay, and a higher one costs nothing, so it is raised rather
  than refused.
* EXTINF has three decimals (milliseconds) from version 3, an integer before
  ("MUST be integers", 4.3.2.1), always with the trailing comma. Durations
  must be finite and positive.
* TARGETDURATION (4.3.3.1) is an integer, at least 1 (bis 4.4.3.1). From
  version 6 every EXTINF rounded to the nearest integer must not exceed it;
  up to version 5 it was the maximum duration itself (bis section 8: "in
  protocol version 5 and earlier it indicated the maximum segment
  duration"), so there every EXTINF must not exceed it unrounded. The value
  written is the smallest legal one, or ``target_duration`` when that is
  larger. A live playlist must not change it (6.2.1 lists the only changes
  allowed), so a live caller passes a fixed value, at least the longest
  segment it will cut (``ceil`` of it below version 6), and the window's
  contents never move it; a longer segment still raises it rather than make
  the playlist unservable.
* EXT-X-DISCONTINUITY-SEQUENCE (4.3.3.3) is written only when non-zero:
  absence means 0, and growing from absent to 1 is the increment 6.2.2
  requires when a discontinuity slides out. The caller counts those.
* EXT-X-DISCONTINUITY goes before its segment (4.3.2.3), also when that
  segment is the first of the window: the tag leaves with its segment.
* EXT-X-KEY (4.3.2.4) is written before the first segment that is
  encrypted and wherever the key in force changes, including back to clear
  (``METHOD=NONE``, with no other attribute). A clear first segment needs no
  tag (segments before any EXT-X-KEY are clear). The IV is ``0x`` and 32
  upper-case hex digits (4.2 hexadecimal-sequence is ``[0..9]`` and
  ``[A..F]``); without one the media sequence number is the IV (5.2).
  KEYFORMAT "identity" is the default and is not written (it would need
  version 5).
* EXT-X-MAP (4.3.2.5) is written once, before the first EXT-X-KEY: the
  initialization section is in the clear, so the IV that an AES-128 encrypted
  map would require (bis 4.4.4.5) is not.
* EXT-X-PROGRAM-DATE-TIME (4.3.2.6): UTC, ``YYYY-MM-DDThh:mm:ss.sssZ``
  (milliseconds, truncated). It applies to its segment only; players
  extrapolate the others from it and the EXTINFs (6.3.3). It is written on
  the first segment that has a date, on the first one after a
  discontinuity, and wherever the caller's date differs from that
  extrapolation (the EXTINFs as written) by more than a millisecond; not on
  every segment, which would add ~55 bytes a segment (200 kB for a 2-hour
  window of 2-s segments, on every reload) without telling players anything.
* EXT-X-PLAYLIST-TYPE (4.3.3.5) only when given; EXT-X-ALLOW-CACHE only
  below version 7, where it was removed (section 7); EXT-X-INDEPENDENT-
  SEGMENTS (4.3.5.1) by default: every segment starts with whole fragments,
  and every Smooth fragment starts with a keyframe. RFC 8216 4.3.5 says a
  tag in the multivariant playlist SHOULD NOT be repeated in the media
  playlists (the same value in both is allowed); turn one of the two off
  when serving both.
* EXT-X-START (4.3.5.2): TIME-OFFSET, negative from the end; bis wants it
  at least three target durations from the end of a live playlist (not
  checked).
* Media sequence numbers must be consecutive: a segment's number is its
  position (4.3.3.2), and the implicit IV depends on it.

Multivariant playlist rules:

* EXT-X-MEDIA tags (4.3.4.1) come before the variants. Only TYPE=AUDIO for
  now. DEFAULT and AUTOSELECT are always written; AUTOSELECT must be YES
  when DEFAULT is. Each group has exactly one DEFAULT=YES rendition (4.3.4.1.1
  allows at most one; none leaves the choice to each player) and unique
  NAMEs. An empty ``uri`` writes no URI: the audio is in the variants' media
  playlists (4.3.4.2.1). CHANNELS is the channel count, quoted (``"2"``).
* EXT-X-STREAM-INF (4.3.4.2) attributes in the order BANDWIDTH,
  AVERAGE-BANDWIDTH, RESOLUTION, FRAME-RATE (three decimals), CODECS, AUDIO,
  then the URI line. AUDIO must name a group of the playlist.
* BANDWIDTH is the peak of every playable combination (4.3.4.2.1): for a
  variant with an audio group, its video peak plus the highest audio peak of
  the group. The caller does that sum.
* CODECS (written only when the variant has ``codecs``) must list every
  format of every rendition of the referenced groups (4.3.4.1.1). Give each
  Rendition its ``codecs`` (``codecs_string(audio_track)``) and the variant
  only its own (``codecs_string(video_track)``): the group's codecs are
  appended to the variant's, without duplicates. A group whose renditions
  have no ``codecs`` adds nothing (the variant's are trusted).

Text:

* Playlists are UTF-8, NFC, with no control characters but the line ends
  (4.1); ``\\n`` ends every line, the last one included.
* Quoted-strings cannot hold ``"``, CR or LF (4.2): names, group ids,
  languages and key formats that do (or hold other control characters) are
  refused with ValueError; the others are NFC-normalized.
* URIs (segment and variant URI lines, KEY/MAP/MEDIA URI attributes) are URI
  references (RFC 3986): characters outside the URI character set, ``"``,
  CR, LF, space and non-ASCII among them, are percent-encoded as UTF-8, the
  IRI-to-URI mapping of RFC 3987 section 3.1 that a client would apply
  anyway. ``%`` is left alone, so URIs already encoded pass unchanged.
  Empty URIs and URIs starting with ``#`` (a line read as a tag or comment)
  are refused.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

__all__ = [
    "HlsKey",
    "HlsSegment",
    "MediaPlaylist",
    "Rendition",
    "Variant",
    "hls_version",
    "render_media_playlist",
    "render_multivariant",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_KEY_METHODS = frozenset({"AES-128", "SAMPLE-AES", "NONE"})
_PLAYLIST_TYPES = frozenset({"EVENT", "VOD"})
# RFC 3986 reserved (2.2) and unreserved (2.3) characters, plus "%".
_URI_SAFE = ":/?#[]@!$&'()*+,;="
_URI = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
# What a quoted-string cannot hold (RFC 8216 4.2) or a playlist at all (4.1).
_NOT_QUOTABLE = re.compile('["\x00-\x1f\x7f-\x9f]')
_LANGUAGE = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")  # RFC 5646 shape
# A date is written again once the extrapolated one is this many ms off.
_DATE_TOLERANCE_MS = 1


@dataclass(frozen=True, slots=True)
class HlsKey:
    """How segments are encrypted (EXT-X-KEY).

    ``method`` is "AES-128", "SAMPLE-AES" or "NONE". ``iv`` is an explicit
    16-byte IV; None uses the media sequence number (RFC 8216 5.2).
    ``key_format`` None (or "identity") is the default and is not written.
    """

    method: str
    uri: str = ""
    iv: bytes | None = None
    key_format: str | None = None
    key_format_versions: str | None = None  # "1", "1/2"...; needs version 5


@dataclass(frozen=True, slots=True)
class HlsSegment:
    """One segment of a media playlist.

    ``program_date_time`` (aware) is the wall-clock time of the segment's
    first sample; give it on every segment, the renderer writes only the
    tags that carry information. ``key`` is the key in force for this
    segment (None or METHOD=NONE: clear).
    """

    sequence: int
    duration: float  # seconds
    uri: str
    discontinuity: bool = False
    program_date_time: datetime | None = None
    key: HlsKey | None = None


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    """A media playlist: the segments of the window, oldest first.

    ``version`` is the lowest version to declare; the features can raise it.
    ``target_duration`` is the lowest target duration to declare (None: the
    smallest legal one); pass a fixed one for live, as it must not change
    between reloads, and a segment too long for it raises it. ``discontinuity_sequence``
    is the number of EXT-X-DISCONTINUITY tags that left the window.
    """

    segments: Sequence[HlsSegment]
    target_duration: int | None = None
    version: int = 3
    ended: bool = False
    discontinuity_sequence: int = 0
    playlist_type: str | None = None  # "EVENT" | "VOD"
    allow_cache: bool | None = None  # written below version 7 only
    map_uri: str | None = None  # fMP4/CMAF initialization section
    independent_segments: bool = True
    start_offset: float | None = None  # EXT-X-START TIME-OFFSET, seconds
    start_precise: bool = False  # EXT-X-START PRECISE=YES


@dataclass(frozen=True, slots=True)
class Variant:
    """One EXT-X-STREAM-INF: a variant stream and its media playlist.

    ``bandwidth`` is the peak bits/s including the audio group's highest
    peak. ``codecs`` lists this variant's own formats; the audio group's are
    appended from its renditions' ``codecs``.
    """

    uri: str
    bandwidth: int
    average_bandwidth: int | None = None
    resolution: tuple[int, int] | None = None
    frame_rate: float | None = None
    codecs: str | None = None
    audio_group: str | None = None


@dataclass(frozen=True, slots=True)
class Rendition:
    """One EXT-X-MEDIA: an alternative rendition in a group.

    ``uri`` "" writes no URI (the audio is in the variants' playlists).
    ``codecs`` is not an EXT-X-MEDIA attribute: it is added to the CODECS of
    every variant that references the group.
    """

    type: str  # "AUDIO"
    group_id: str
    name: str
    uri: str
    language: str | None = None
    default: bool = False
    autoselect: bool = True
    channels: int | None = None
    codecs: str | None = None


def hls_version(
    *,
    fmp4: bool = False,
    explicit_iv: bool = False,
    program_date_time: bool = False,
    key_format: bool = False,
    sample_aes: bool = False,
    float_durations: bool = True,
    byte_range: bool = False,
    i_frames_only: bool = False,
) -> int:
    """The lowest protocol version a media playlist with these features needs.

    RFC 8216 section 7 (bis section 8). ``program_date_time`` is accepted
    for completeness and needs nothing: the tag is in version 1.
    """
    del program_date_time
    version = 1
    if explicit_iv:
        version = 2
    if float_durations:
        version = 3
    if byte_range or i_frames_only:
        version = 4
    if key_format or sample_aes:
        version = 5
    if fmp4:
        version = max(version, 5 if i_frames_only else 6)
    return version


def render_media_playlist(playlist: MediaPlaylist) -> bytes:
    """The media playlist, UTF-8, ``\\n`` line ends.

    Raises ValueError for an empty window (serve nothing until the first
    segment is closed), non-consecutive sequence numbers, a non-positive
    duration, a naive date, or a value the playlist cannot carry.
    """
    segments = playlist.segments
    if not segments:
        raise ValueError("a media playlist needs at least one segment")
    floor = int(playlist.version)
    if floor < 1:
        raise ValueError(f"version must be at least 1, not {playlist.version!r}")
    fmp4 = playlist.map_uri is not None
    floats = floor >= 3 or fmp4
    rounded_target = floor >= 6 or fmp4  # the effective version is 6 or more
    first = int(segments[0].sequence)
    if first < 0:
        raise ValueError(f"media sequence numbers cannot be negative ({first})")
    discontinuity_sequence = int(playlist.discontinuity_sequence)
    if discontinuity_sequence < 0:
        raise ValueError("discontinuity_sequence cannot be negative")

    parts = ["#EXTM3U", "", "", f"#EXT-X-MEDIA-SEQUENCE:{first}"]  # 1, 2: filled in below
    append = parts.append
    if discontinuity_sequence:
        append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}")
    if playlist.playlist_type is not None:
        if playlist.playlist_type not in _PLAYLIST_TYPES:
            raise ValueError(f"playlist_type must be EVENT or VOD, not {playlist.playlist_type!r}")
        append(f"#EXT-X-PLAYLIST-TYPE:{playlist.playlist_type}")
    if playlist.allow_cache is not None and floor < 7:
        append("#EXT-X-ALLOW-CACHE:YES" if playlist.allow_cache else "#EXT-X-ALLOW-CACHE:NO")
    if playlist.independent_segments:
        append("#EXT-X-INDEPENDENT-SEGMENTS")
    if playlist.start_offset is not None:
        offset = float(playlist.start_offset)
        if not math.isfinite(offset):
            raise ValueError("start_offset must be finite")
        precise = ",PRECISE=YES" if playlist.start_precise else ""
        append(f"#EXT-X-START:TIME-OFFSET={offset:.3f}{precise}")
    if fmp4:
        append(f'#EXT-X-MAP:URI="{_uri(playlist.map_uri or "", "map_uri")}"')

    extinfs: dict[float, tuple[str, int, int]] = {}  # duration -> line, written ms, need
    needed = 1
    raw_key: HlsKey | None = None  # the last segment's key object
    in_force: HlsKey | None = None  # the key the written tags put in force (None: clear)
    explicit_iv = key_format = sample_aes = False
    next_ms: int | None = None  # the date a player extrapolates for the next segment
    expected = first
    for segment in segments:
        if segment.sequence != expected:
            raise ValueError(
                f"sequence numbers must be consecutive: {segment.sequence} after {expected - 1}"
            )
        expected += 1
        duration = segment.duration
        extinf = extinfs.get(duration)
        if extinf is None:
            extinf = extinfs[duration] = _extinf(duration, floats, rounded_target)
        line, written_ms, need = extinf
        if need > needed:
            needed = need
        if segment.discontinuity:
            append("#EXT-X-DISCONTINUITY")
            next_ms = None
        key = segment.key
        if key is not raw_key:
            raw_key = key
            if key is not None:
                _check_key(key)
                if key.method == "NONE":
                    key = None
            if key != in_force:
                in_force = key
                if key is None:
                    append("#EXT-X-KEY:METHOD=NONE")
                else:
                    append(_key_tag(key))
                    explicit_iv = explicit_iv or key.iv is not None
                    key_format = key_format or _has_key_format(key)
                    sample_aes = sample_aes or key.method == "SAMPLE-AES"
        date = segment.program_date_time
        if date is not None:
            ms = _epoch_ms(date)
            if next_ms is None or abs(ms - next_ms) > _DATE_TOLERANCE_MS:
                append(_date_tag(ms))
                next_ms = ms
        if next_ms is not None:
            next_ms += written_ms
        append(line)
        append(_uri(segment.uri, "segment URI"))

    required = hls_version(
        fmp4=fmp4,
        explicit_iv=explicit_iv,
        key_format=key_format,
        sample_aes=sample_aes,
        float_durations=floats,
    )
    version = max(floor, required)
    if version >= 3 and not floats:
        # A key feature lifted a version 1/2 playlist to 5: decimal EXTINFs.
        return render_media_playlist(replace(playlist, version=version))
    target = needed
    if playlist.target_duration is not None:
        target = max(target, int(playlist.target_duration))
    parts[1] = f"#EXT-X-VERSION:{version}"
    parts[2] = f"#EXT-X-TARGETDURATION:{target}"
    if playlist.ended:
        append("#EXT-X-ENDLIST")
    append("")
    return "\n".join(parts).encode("utf-8")


def render_multivariant(
    variants: Sequence[Variant],
    renditions: Sequence[Rendition] = (),
    *,
    version: int = 3,
    independent_segments: bool = True,
) -> bytes:
    """The multivariant playlist, UTF-8, ``\\n`` line ends.

    Raises ValueError for no variants, an unknown or ill-formed audio group
    (not exactly one DEFAULT, duplicate NAMEs), or a value the playlist
    cannot carry.
    """
    if not variants:
        raise ValueError("a multivariant playlist needs at least one variant")
    if int(version) < 1:
        raise ValueError(f"version must be at least 1, not {version!r}")
    parts = ["#EXTM3U", f"#EXT-X-VERSION:{int(version)}"]
    if independent_segments:
        parts.append("#EXT-X-INDEPENDENT-SEGMENTS")
    groups: dict[str, list[Rendition]] = {}
    for rendition in renditions:
        parts.append(_media_tag(rendition))
        groups.setdefault(rendition.group_id, []).append(rendition)
    group_codecs: dict[str, list[str]] = {}
    for group_id, members in groups.items():
        names = [member.name for member in members]
        if len(set(names)) != len(names):
            raise ValueError(f"audio group {group_id!r} has renditions with the same NAME")
        defaults = sum(1 for member in members if member.default)
        if defaults != 1:
            raise ValueError(
                f"audio group {group_id!r} needs exactly one DEFAULT rendition, not {defaults}"
            )
        codecs: list[str] = []
        for member in members:
            for codec in _codec_list(member.codecs or ""):
                if codec not in codecs:
                    codecs.append(codec)
        group_codecs[group_id] = codecs
    for variant in variants:
        parts.append(_stream_inf(variant, group_codecs))
        parts.append(_uri(variant.uri, "variant URI"))
    parts.append("")
    return "\n".join(parts).encode("utf-8")


def _extinf(duration: float, floats: bool, rounded_target: bool) -> tuple[str, int, int]:
    """The EXTINF line of ``duration``, its value in ms, and the target it needs."""
    if not 0 < duration < math.inf:
        raise ValueError(f"segment duration must be positive and finite, not {duration!r}")
    ms = round(duration * 1000)
    if floats:
        line = f"#EXTINF:{ms // 1000}.{ms % 1000:03d},"
        written = ms
    else:
        seconds = (ms + 500) // 1000  # the nearest integer, halves up (4.3.2.1)
        line = f"#EXTINF:{seconds},"
        written = seconds * 1000
    need = (ms + 500) // 1000 if rounded_target else -(-ms // 1000)
    return line, written, need


def _check_key(key: HlsKey) -> None:
    if key.method not in _KEY_METHODS:
        raise ValueError(
            f"EXT-X-KEY METHOD must be AES-128, SAMPLE-AES or NONE, not {key.method!r}"
        )
    if key.method == "NONE":
        if key.uri or key.iv is not None or key.key_format or key.key_format_versions:
            raise ValueError("METHOD=NONE takes no other attribute (RFC 8216 4.3.2.4)")
        return
    if not key.uri:
        raise ValueError(f"METHOD={key.method} needs a key URI")
    if key.iv is not None and len(key.iv) != 16:
        raise ValueError(f"the IV is 128 bits (16 bytes), not {len(key.iv)} bytes")


def _has_key_format(key: HlsKey) -> bool:
    return key.key_format not in (None, "identity") or key.key_format_versions is not None


def _key_tag(key: HlsKey) -> str:
    tag = f'#EXT-X-KEY:METHOD={key.method},URI="{_uri(key.uri, "key URI")}"'
    if key.iv is not None:
        tag += f",IV=0x{key.iv.hex().upper()}"
    if key.key_format not in (None, "identity"):
        tag += f',KEYFORMAT="{_quoted(key.key_format, "KEYFORMAT")}"'
    if key.key_format_versions is not None:
        tag += f',KEYFORMATVERSIONS="{_quoted(key.key_format_versions, "KEYFORMATVERSIONS")}"'
    return tag


def _epoch_ms(date: datetime) -> int:
    """Milliseconds since 1970 (UTC), truncated."""
    try:
        return (date - _EPOCH) // _MILLISECOND
    except TypeError:
        raise ValueError(f"program_date_time must be timezone-aware, not {date!r}") from None


def _date_tag(ms: int) -> str:
    moment = _EPOCH + timedelta(milliseconds=ms)
    return f"#EXT-X-PROGRAM-DATE-TIME:{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _media_tag(rendition: Rendition) -> str:
    if rendition.type != "AUDIO":
        raise ValueError(f"only AUDIO renditions are supported, not {rendition.type!r}")
    if not rendition.group_id or not rendition.name:
        raise ValueError("a rendition needs a GROUP-ID and a NAME")
    attributes = [
        f"TYPE={rendition.type}",
        f'GROUP-ID="{_quoted(rendition.group_id, "GROUP-ID")}"',
        f'NAME="{_quoted(rendition.name, "NAME")}"',
    ]
    if rendition.language is not None:
        if not _LANGUAGE.fullmatch(rendition.language):
            raise ValueError(f"LANGUAGE must be an RFC 5646 tag, not {rendition.language!r}")
        attributes.append(f'LANGUAGE="{rendition.language}"')
    if rendition.default and not rendition.autoselect:
        raise ValueError("a DEFAULT rendition must be AUTOSELECT (RFC 8216 4.3.4.1)")
    attributes.append("DEFAULT=YES" if rendition.default else "DEFAULT=NO")
    attributes.append("AUTOSELECT=YES" if rendition.autoselect else "AUTOSELECT=NO")
    if rendition.channels is not None:
        if int(rendition.channels) < 1:
            raise ValueError(f"CHANNELS must be positive, not {rendition.channels!r}")
        attributes.append(f'CHANNELS="{int(rendition.channels)}"')
    if rendition.uri:
        attributes.append(f'URI="{_uri(rendition.uri, "rendition URI")}"')
    return "#EXT-X-MEDIA:" + ",".join(attributes)


def _stream_inf(variant: Variant, group_codecs: dict[str, list[str]]) -> str:
    attributes = [f"BANDWIDTH={_positive(variant.bandwidth, 'BANDWIDTH')}"]
    if variant.average_bandwidth is not None:
        average = _positive(variant.average_bandwidth, "AVERAGE-BANDWIDTH")
        attributes.append(f"AVERAGE-BANDWIDTH={average}")
    if variant.resolution is not None:
        width, height = variant.resolution
        attributes.append(f"RESOLUTION={_positive(width, 'width')}x{_positive(height, 'height')}")
    if variant.frame_rate is not None:
        rate = float(variant.frame_rate)
        if not 0 < rate < math.inf:
            raise ValueError(f"FRAME-RATE must be positive and finite, not {rate!r}")
        attributes.append(f"FRAME-RATE={rate:.3f}")
    if variant.audio_group is not None and variant.audio_group not in group_codecs:
        raise ValueError(f"variant {variant.uri!r} names an unknown audio group")
    if variant.codecs is not None:
        codecs = _codec_list(variant.codecs)
        for codec in group_codecs.get(variant.audio_group or "", ()):
            if codec not in codecs:
                codecs.append(codec)
        if not codecs:
            raise ValueError(f"variant {variant.uri!r} has an empty CODECS")
        attributes.append(f'CODECS="{_quoted(",".join(codecs), "CODECS")}"')
    if variant.audio_group is not None:
        attributes.append(f'AUDIO="{_quoted(variant.audio_group, "AUDIO")}"')
    return "#EXT-X-STREAM-INF:" + ",".join(attributes)


def _codec_list(codecs: str) -> list[str]:
    return [codec for codec in (part.strip() for part in codecs.split(",")) if codec]


def _positive(value: int, what: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{what} must be positive, not {value!r}")
    return number


def _quoted(value: str, what: str) -> str:
    """``value`` for a quoted-string (RFC 8216 4.2), NFC; ValueError if it cannot be one."""
    if _NOT_QUOTABLE.search(value):
        raise ValueError(f"{what} {value!r} holds a double quote or a control character")
    return value if value.isascii() else unicodedata.normalize("NFC", value)


def _uri(uri: str, what: str) -> str:
    """``uri`` as a URI reference: what RFC 3986 does not allow percent-encoded."""
    if not _URI.fullmatch(uri):
        if not uri:
            raise ValueError(f"{what} cannot be empty")
        uri = quote(uri, safe=_URI_SAFE + "%")
    if uri[0] == "#":
        raise ValueError(f"{what} {uri!r} starts with '#'")
    return uri
