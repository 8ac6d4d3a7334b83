"""The MPEG-DASH MPD of a publishing point, rendered from plain values (sans-IO).

This is the XML DASH players fetch at
``/<point>.isml/Manifest(format=mpd-time-cmaf)``: ISO/IEC 23009-1 (MPD),
restricted to the DASH-IF live profile with SegmentTimeline (DASH-IF IOP
v4.3 clause 4 "live services"; IOP v5 / the DASH-IF timing model, cited as
"timing model <section>"). The caller (the publishing point) gathers what
each StreamIndex holds - its QualityLevels (``TrackInfo``) and the
(time, duration) of the fragments in the DVR window, each fragment being one
DASH segment - and calls ``render_mpd`` once per new fragment; the bytes are
then served as they are to every request.

Rules, with where they come from:

* ``MPD@type`` is ``dynamic`` while the point is live, ``static`` after Stop.
  Dynamic writes availabilityStartTime, publishTime, minimumUpdatePeriod,
  timeShiftBufferDepth, suggestedPresentationDelay (when given) and one
  ``UTCTiming`` (``urn:mpeg:dash:utc:http-iso:2014``, 23009-1 5.8.5.7): the
  timing model ("Clock synchronization") requires at least one, and without
  it dash.js falls back to the Date header and then to time.akamai.com.
  UTCTiming goes after the Period: that is its place in MPDtype's sequence.
  ``maxSegmentDuration`` (the longest segment, rounded up; when there is
  one) and ``minBufferTime`` (required) are always written.
* Static follows DASH-IF "Conversion of Live Services to VoD" (which replaces
  IOP v4.3 4.6): no minimumUpdatePeriod, timeShiftBufferDepth, UTCTiming or
  suggestedPresentationDelay; the Period starts at 0 and has a duration
  (timing model "First and last period timing in static presentations");
  every AdaptationSet's presentationTimeOffset is T0, the earliest published
  segment start over all AdaptationSets, so the period starts with content
  (dash.js starts a static presentation at the period start); the period
  duration and mediaPresentationDuration are the latest segment end - T0.
  availabilityStartTime stays, moved to the wall-clock time of T0 so
  dash.js's ``timeAsUTC`` still tells the right time. A player that was
  playing live sees the change as the end of the stream (dash.js
  ManifestUpdater fires DYNAMIC_TO_STATIC and stops refreshing).
* One Period, ``id="0"``, ``start="PT0S"``. availabilityStartTime, Period@id
  and Period@start must not change between updates (timing model "MPD
  updates").
* One AdaptationSet per StreamIndex, ``id`` = its position in
  ``adaptations`` (the timing model wants AdaptationSet@id on every
  AdaptationSet and stable across updates; an AdaptationSet left out, see
  below, does not renumber the others). contentType; mimeType video/mp4,
  audio/mp4, application/mp4 (text); segmentAlignment="true" (Smooth
  fragments of one StreamIndex share their times); startWithSAP="1" (every
  fragment starts with a key frame); lang when it is a valid xs:language;
  ``Role`` ``urn:mpeg:dash:role:2011`` (5.8.5.5) "main" ("subtitle" for
  text); video: maxWidth/maxHeight, par, maxFrameRate when frame rates are
  given; audio: ``AudioChannelConfiguration``
  ``urn:mpeg:dash:23003:3:audio_channel_configuration:2011`` (5.8.5.4), on
  the AdaptationSet when all tracks agree, else on each Representation. Its
  @value is the channel count: 5.8.5.4 points at the 23003-3
  channelConfigurationIndex table (the same numbers for 1 to 6 channels) but
  Shaka Packager and castLabs write, and Shaka Player and dash.js read, a
  count.
* ``SegmentTemplate`` on the AdaptationSet (23009-1 5.3.9.4): timescale,
  presentationTimeOffset when non-zero, media and initialization as the
  caller gives them (XML-escaped). ``$Bandwidth$`` is replaced by
  Representation@bandwidth (5.3.9.4.4) and the Smooth-style URL
  needs the QualityLevel bitrate there, so Representation@bandwidth *is* the
  bitrate: two tracks of one StreamIndex with the same bitrate cannot be
  addressed and raise ValueError. ``$Time$`` is replaced by the S@t-derived
  media time, the fragment's own time.
* ``SegmentTimeline`` (5.3.9.6): every ``S`` has ``d``; ``t`` is written on
  the first ``S`` and on every ``S`` that does not start where the previous
  segment ended (gap, overlap) or that is in ``discontinuities`` (encoder
  restart: a new epoch starts a new ``S`` even if it happens to be
  contiguous). A run of contiguous segments of equal duration is one ``S``
  whose ``r`` is the number of *repeats*, zero-based: ``r="2"`` is three
  segments - the opposite of Smooth's one-based ``c@r``, where ``r="2"`` is
  two. ``r="-1"`` is never written: the timeline lists exactly the
  published segments, so players learn of new ones from MPD updates; keep
  minimumUpdatePeriod at or below the segment duration.
* One ``Representation`` per track: ``id`` = ``<name>_<bitrate>`` (unique in
  the Period, 5.3.5.2; whitespace and ``%`` percent-encoded since @id is
  StringNoWhitespaceType), bandwidth, codecs (RFC 6381, ``codecs_string``; a
  track whose codecs cannot be derived is left out), video width/height
  (coded size, ``max_width``/``max_height``) with ``sar`` when the display
  size differs (5.3.7: width x sar is the display width), frameRate when
  given; audio audioSamplingRate.
* An AdaptationSet with no chunks or no usable track is left out: the schema
  lets SegmentTimeline be empty, but dash.js reads the first ``S``
  unconditionally. As the set of AdaptationSets should not change between
  updates, do not publish the MPD before every StreamIndex has a fragment.
* Durations are xs:duration ``PT<seconds>S`` with at most 3 decimals;
  datetimes ``YYYY-MM-DDTHH:MM:SS.mmmZ``. Sub-millisecond parts round towards
  safety: availabilityStartTime and the computed timeShiftBufferDepth and
  maxSegmentDuration up, media durations down (the last segment may overrun
  the period, the period may not outrun the media).

The live edge, as players compute it - so callers can set
``availability_start_time`` right:

* A segment's MPD time is ``Period@start + (S@t - presentationTimeOffset) /
  timescale``. It is *available* once its **end** is inside the availability
  window ``[now - timeShiftBufferDepth, now]`` (timing model
  "Availability"); dash.js (``SegmentsUtils._isSegmentAvailable``,
  ``TimelineConverter``) requests it from ``availabilityStartTime +
  PeriodStart + (S@t - PTO + d) / timescale`` until that plus
  timeShiftBufferDepth + d, with ``now`` its clock corrected by UTCTiming.
* dash.js's DVR window is ``[now - timeShiftBufferDepth, now]`` clipped to
  the Period (not to the first ``S``); only when the whole timeline ended
  before the window start does it fall back to the ``S`` list
  (``fallbackToSegmentTimeline``, with a conformance warning). It starts
  playback at ``now - live delay``: the app's setting, else
  suggestedPresentationDelay, else 4 x the segment duration, capped by the
  window (``PlaybackController.computeAndSetLiveDelay``).
* Hence ``availabilityStartTime + (t + d - PTO) / timescale`` must not be
  earlier than the moment the fragment is complete at this origin. Early
  means 404s at the live edge; late only adds latency. Set it once per
  presentation (it must not change between updates) to the wall-clock time
  at which the first fragment was complete minus ``(t0 + d0 - PTO) /
  timescale``, plus a small margin; an encoder stamping UTC since 1970 goes
  with ``1970-01-01T00:00:00Z`` and PTO 0. The encoder clock must keep
  wall-clock pace (timing model "Clock drift is forbidden"): a slow encoder
  drifts the advertised live edge ahead of the real one.
* Keep fragments for timeShiftBufferDepth after their end (the availability
  end), and drop an ``S`` only once its end has left the window (timing
  model "Removing content from the MPD").
* ``time_shift_buffer_depth=None`` (the whole event) writes ``publishTime -
  (availabilityStartTime + first segment start) + minimumUpdatePeriod +
  longest segment``: the first segment stays in the window for as long as
  this snapshot can be in use (until the next fragment replaces it, plus one
  refresh period). To make that window start at the period start, set
  ``presentation_time_offset`` to the first fragment time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from math import gcd

from smoothlive.media.codecs import codecs_string
from smoothlive.media.model import SMOOTH_TIMESCALE, TrackInfo
from smoothlive.outputs.xmlattr import xml_attr as _attr

__all__ = [
    "MPD_NAMESPACE",
    "UTC_TIMING_SCHEME",
    "DashAdaptation",
    "DashPresentation",
    "render_mpd",
]

MPD_NAMESPACE = "urn:mpeg:dash:schema:mpd:2011"
UTC_TIMING_SCHEME = "urn:mpeg:dash:utc:http-iso:2014"
_ROLE_SCHEME = "urn:mpeg:dash:role:2011"
_CHANNEL_SCHEME = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"
_PROFILES = {
    "cmaf": "urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019",
    "csf": "urn:mpeg:dash:profile:isoff-live:2011",
}
_MIME_TYPES = {"video": "video/mp4", "audio": "audio/mp4", "text": "application/mp4"}
_DEFAULT_ROLES = {"video": "main", "audio": "main", "text": "subtitle"}

_XS_LANGUAGE = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*\Z")
_ID_UNSAFE = re.compile(r"[\s%]")


@dataclass(frozen=True, slots=True)
class DashAdaptation:
    """One StreamIndex as an AdaptationSet.

    ``chunks`` are the published fragments in the window, ``(time,
    duration)`` in ``timescale`` units, ascending; ``tracks`` its
    QualityLevels in Representation order (highest bitrate first).
    ``media_template``/``init_template`` are SegmentTemplate@media and
    @initialization, written as given (XML-escaped). ``frame_rates`` maps a
    track's bitrate to its frame rate (``30``, ``"30000/1001"``,
    ``Fraction``...) as TrackInfo has none. ``role`` overrides the Role
    value ("main"; "subtitle" for text), e.g. "alternate" for a second audio
    language.
    """

    kind: str  # "video" | "audio" | "text"
    name: str
    tracks: Sequence[TrackInfo]
    chunks: Sequence[tuple[int, int]]
    timescale: int
    media_template: str
    init_template: str
    language: str | None = None
    discontinuities: frozenset[int] = frozenset()  # chunk times that begin a new epoch
    frame_rates: Mapping[int, int | str | Fraction] = field(default_factory=dict)
    role: str | None = None


@dataclass(frozen=True, slots=True)
class DashPresentation:
    """A whole presentation; times in seconds unless said otherwise.

    ``availability_start_time`` is the aware wall-clock time of MPD time 0,
    i.e. of media time ``presentation_time_offset`` (see the module notes on
    the live edge). ``presentation_time_offset`` is on the common timeline
    in 100-ns units (SMOOTH_TIMESCALE), converted to each AdaptationSet's
    timescale; it applies while live (static derives its own, T0).
    ``time_shift_buffer_depth`` is the DVR window, None for the whole event.
    """

    adaptations: Sequence[DashAdaptation]
    live: bool
    availability_start_time: datetime
    publish_time: datetime
    utc_timing_uri: str
    time_shift_buffer_depth: float | None
    minimum_update_period: float = 2.0
    min_buffer_time: float = 2.0
    suggested_presentation_delay: float | None = None
    profile: str = "cmaf"
    presentation_time_offset: int = 0


# --- formatting ------------------------------------------------------------------------------


def _duration(milliseconds: int) -> str:
    """xs:duration of a whole number of milliseconds: ``PT2S``, ``PT0.5S``, ``PT7200.04S``."""
    if milliseconds < 0:
        raise ValueError(f"negative duration: {milliseconds} ms")
    seconds, fraction = divmod(milliseconds, 1000)
    if not fraction:
        return f"PT{seconds}S"
    return f"PT{seconds}.{fraction:03d}".rstrip("0") + "S"


def _seconds_ms(seconds: float) -> int:
    """A duration given in seconds, to the nearest millisecond."""
    return round(Fraction(seconds) * 1000)


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime")
    return value.astimezone(UTC)


def _datetime(value: datetime) -> str:
    """xs:dateTime in UTC with milliseconds; sub-millisecond parts are dropped."""
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:"
        f"{value.minute:02d}:{value.second:02d}.{value.microsecond // 1000:03d}Z"
    )


def _ceil_ms(value: datetime) -> datetime:
    """``value`` rounded up to the millisecond (segments are then never announced early)."""
    extra = value.microsecond % 1000
    return value + timedelta(microseconds=1000 - extra) if extra else value


def _ratio(width: int, height: int) -> str:
    divisor = gcd(width, height) or 1
    return f"{width // divisor}:{height // divisor}"


def _frame_rate(value: int | str | Fraction) -> Fraction:
    rate = Fraction(value).limit_denominator(100_000)
    if rate <= 0:
        raise ValueError(f"frame rate must be positive, not {value!r}")
    return rate


def _frame_rate_text(rate: Fraction) -> str:
    """FrameRateType: ``[0-9]+(/[1-9][0-9]*)?``."""
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def _representation_id(name: str, bitrate: int) -> str:
    safe = _ID_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), name)
    return f"{safe}_{bitrate}"


# --- rendering -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Prepared:
    """An AdaptationSet that will be written: its index and its usable tracks."""

    index: int
    adaptation: DashAdaptation
    tracks: tuple[tuple[TrackInfo, str], ...]  # (track, codecs)


def _prepare(adaptations: Sequence[DashAdaptation]) -> list[_Prepared]:
    prepared: list[_Prepared] = []
    ids: set[str] = set()
    for index, adaptation in enumerate(adaptations):
        if adaptation.kind not in _MIME_TYPES:
            raise ValueError(f"AdaptationSet {adaptation.name!r}: unknown kind {adaptation.kind!r}")
        if adaptation.timescale <= 0:
            raise ValueError(f"AdaptationSet {adaptation.name!r}: timescale must be positive")
        usable: list[tuple[TrackInfo, str]] = []
        bitrates: set[int] = set()
        for track in adaptation.tracks:
            try:
                codecs = codecs_string(track)
            except ValueError:
                continue  # a Representation without codecs is unplayable
            if track.bitrate in bitrates:
                raise ValueError(
                    f"AdaptationSet {adaptation.name!r}: two tracks at {track.bitrate} b/s;"
                    " $Bandwidth$ could not tell their segments apart"
                )
            bitrates.add(track.bitrate)
            rep_id = _representation_id(adaptation.name, track.bitrate)
            if rep_id in ids:
                raise ValueError(f"Representation id {rep_id!r} is not unique")
            ids.add(rep_id)
            usable.append((track, codecs))
        if usable and adaptation.chunks:
            prepared.append(_Prepared(index, adaptation, tuple(usable)))
    return prepared


def render_mpd(presentation: DashPresentation) -> bytes:
    """The MPD of ``presentation``, UTF-8 XML, one element per line.

    Raises ValueError for an unknown profile or kind, a naive datetime, a
    negative duration, or two tracks of one StreamIndex at the same bitrate.
    """
    profiles = _PROFILES.get(presentation.profile)
    if profiles is None:
        raise ValueError(f"profile must be 'cmaf' or 'csf', not {presentation.profile!r}")
    ast = _ceil_ms(_utc(presentation.availability_start_time, "availability_start_time"))
    published = _utc(presentation.publish_time, "publish_time")
    prepared = _prepare(presentation.adaptations)

    # Per AdaptationSet PTO (in its timescale), and the extremes of the
    # published media on the MPD timeline, in exact seconds.
    static = not presentation.live
    common = Fraction(presentation.presentation_time_offset, SMOOTH_TIMESCALE)
    if static and prepared:
        # live2vod: the period starts at the earliest segment, T0, and
        # availabilityStartTime moves to the wall-clock time of T0.
        t0 = min(Fraction(p.adaptation.chunks[0][0], p.adaptation.timescale) for p in prepared)
        ast = _ceil_ms(ast + timedelta(microseconds=int((t0 - common) * 1_000_000)))
        common = t0
    ptos = [int(common * p.adaptation.timescale) for p in prepared]
    first_start: Fraction | None = None
    last_end: Fraction | None = None
    longest = Fraction(0)
    for p, pto in zip(prepared, ptos, strict=True):
        chunks, scale = p.adaptation.chunks, p.adaptation.timescale
        start = Fraction(chunks[0][0] - pto, scale)
        end = Fraction(chunks[-1][0] + chunks[-1][1] - pto, scale)
        first_start = start if first_start is None or start < first_start else first_start
        last_end = end if last_end is None or end > last_end else last_end
        longest = max(longest, Fraction(max(d for _, d in chunks), scale))

    head = [
        f'<MPD xmlns="{MPD_NAMESPACE}" profiles="{profiles}"'
        f' type="{"static" if static else "dynamic"}"'
        f' availabilityStartTime="{_datetime(ast)}" publishTime="{_datetime(published)}"'
    ]
    period = '<Period id="0" start="PT0S"'
    if static:
        span = last_end - first_start if last_end is not None and first_start is not None else 0
        span_text = _duration(int(span * 1000))
        head.append(f' mediaPresentationDuration="{span_text}"')
        period += f' duration="{span_text}"'
    else:
        update_ms = _seconds_ms(presentation.minimum_update_period)
        head.append(f' minimumUpdatePeriod="{_duration(update_ms)}"')
        if presentation.time_shift_buffer_depth is not None:
            depth_ms = _seconds_ms(presentation.time_shift_buffer_depth)
        else:
            elapsed = Fraction((published - ast) // timedelta(microseconds=1), 1_000_000)
            depth = elapsed - (first_start or 0) + longest
            depth_ms = max(_ceil_div(depth.numerator * 1000, depth.denominator), 0) + update_ms
        head.append(f' timeShiftBufferDepth="{_duration(depth_ms)}"')
        if presentation.suggested_presentation_delay is not None:
            delay = _duration(_seconds_ms(presentation.suggested_presentation_delay))
            head.append(f' suggestedPresentationDelay="{delay}"')
    if longest:
        longest_ms = _ceil_div(longest.numerator * 1000, longest.denominator)
        head.append(f' maxSegmentDuration="{_duration(longest_ms)}"')
    head.append(f' minBufferTime="{_duration(_seconds_ms(presentation.min_buffer_time))}">')

    parts: list[str] = ['<?xml version="1.0" encoding="utf-8"?>', "".join(head), period + ">"]
    for p, pto in zip(prepared, ptos, strict=True):
        _adaptation_set(p, pto, parts)
    parts.append("</Period>")
    if not static:
        parts.append(
            f'<UTCTiming schemeIdUri="{UTC_TIMING_SCHEME}"'
            f' value="{_attr(presentation.utc_timing_uri)}"/>'
        )
    parts.append("</MPD>")
    parts.append("")
    return "\n".join(parts).encode("utf-8")


def _adaptation_set(prepared: _Prepared, pto: int, parts: list[str]) -> None:
    adaptation = prepared.adaptation
    kind = adaptation.kind
    tracks = prepared.tracks
    element = (
        f'<AdaptationSet id="{prepared.index}" contentType="{kind}"'
        f' mimeType="{_MIME_TYPES[kind]}" segmentAlignment="true" startWithSAP="1"'
    )
    language = adaptation.language or next((t.language for t, _ in tracks if t.language), None)
    if language and _XS_LANGUAGE.match(language):
        element += f' lang="{language}"'
    rates = {bitrate: _frame_rate(rate) for bitrate, rate in adaptation.frame_rates.items()}
    if kind == "video":
        max_width = max(t.max_width for t, _ in tracks)
        max_height = max(t.max_height for t, _ in tracks)
        if max_width > 0 and max_height > 0:
            element += f' maxWidth="{max_width}" maxHeight="{max_height}"'
            widest = max(tracks, key=lambda tc: tc[0].max_width * tc[0].max_height)[0]
            display_w = widest.display_width or widest.max_width
            display_h = widest.display_height or widest.max_height
            element += f' par="{_ratio(display_w, display_h)}"'
        known = [rates[t.bitrate] for t, _ in tracks if t.bitrate in rates]
        if known:
            element += f' maxFrameRate="{_frame_rate_text(max(known))}"'
    parts.append(element + ">")
    channels = {t.channels for t, _ in tracks} if kind == "audio" else set()
    shared_channels = len(channels) == 1 and next(iter(channels)) > 0
    if shared_channels:
        parts.append(
            f'<AudioChannelConfiguration schemeIdUri="{_CHANNEL_SCHEME}"'
            f' value="{next(iter(channels))}"/>'
        )
    role = adaptation.role or _DEFAULT_ROLES[kind]
    parts.append(f'<Role schemeIdUri="{_ROLE_SCHEME}" value="{_attr(role)}"/>')
    template = f'<SegmentTemplate timescale="{adaptation.timescale}"'
    if pto:
        template += f' presentationTimeOffset="{pto}"'
    parts.append(
        template + f' media="{_attr(adaptation.media_template)}"'
        f' initialization="{_attr(adaptation.init_template)}">'
    )
    parts.append("<SegmentTimeline>")
    _timeline(adaptation.chunks, adaptation.discontinuities, parts)
    parts.append("</SegmentTimeline>")
    parts.append("</SegmentTemplate>")
    for track, codecs in tracks:
        element = (
            f'<Representation id="{_attr(_representation_id(adaptation.name, track.bitrate))}"'
            f' bandwidth="{track.bitrate}" codecs="{_attr(codecs)}"'
        )
        if kind == "video":
            width, height = track.max_width, track.max_height
            if width > 0 and height > 0:
                element += f' width="{width}" height="{height}"'
                display_w, display_h = track.display_width, track.display_height
                if display_w > 0 and display_h > 0 and display_w * height != display_h * width:
                    # sar = display aspect / (width / height).
                    element += f' sar="{_ratio(display_w * height, display_h * width)}"'
            if track.bitrate in rates:
                element += f' frameRate="{_frame_rate_text(rates[track.bitrate])}"'
        elif kind == "audio" and track.sampling_rate > 0:
            element += f' audioSamplingRate="{track.sampling_rate}"'
        if kind == "audio" and not shared_channels and track.channels > 0:
            parts.append(element + ">")
            parts.append(
                f'<AudioChannelConfiguration schemeIdUri="{_CHANNEL_SCHEME}"'
                f' value="{track.channels}"/>'
            )
            parts.append("</Representation>")
        else:
            parts.append(element + "/>")
    parts.append("</AdaptationSet>")


def _timeline(
    chunks: Sequence[tuple[int, int]], discontinuities: frozenset[int], parts: list[str]
) -> None:
    """Append the ``S`` elements of ``chunks`` (23009-1 5.3.9.6), run-length coded.

    ``r`` counts the repeats after the first segment (zero-based). A chunk in
    ``discontinuities`` starts a new ``S`` with its ``t`` even when it
    continues the timeline.
    """
    append = parts.append
    count = len(chunks)
    expected = -1  # where the previous segment ended; -1 forces t on the first
    i = 0
    while i < count:
        time, duration = chunks[i]
        end = time + duration
        j = i + 1
        while j < count:
            next_time, next_duration = chunks[j]
            if next_duration != duration or next_time != end or next_time in discontinuities:
                break
            end += duration
            j += 1
        repeats = j - i - 1
        if time == expected and time not in discontinuities:
            if repeats:
                append(f'<S d="{duration}" r="{repeats}"/>')
            else:
                append(f'<S d="{duration}"/>')
        elif repeats:
            append(f'<S t="{time}" d="{duration}" r="{repeats}"/>')
        else:
            append(f'<S t="{time}" d="{duration}"/>')
        expected = end
        i = j
