"""The MPEG-DASH MPD renderer (ISO/IEC 23009-1, DASH-IF live profile).

Expectations are written out by hand. ``expand`` decodes a SegmentTimeline
the way 23009-1 5.3.9.6 defines it (and dash.js's TimelineSegmentsGetter
does): a missing ``t`` is the previous segment's end, ``r`` is the number of
repeats (zero-based, default 0).
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from smoothlive.media.model import TrackInfo
from smoothlive.outputs.dash import DashAdaptation, DashPresentation, render_mpd
from smoothlive.outputs.smooth import ManifestView, StreamIndexView, render_client_manifest

NS = "urn:mpeg:dash:schema:mpd:2011"
Q = f"{{{NS}}}"
S_PATH = f"{Q}SegmentTemplate/{Q}SegmentTimeline/{Q}S"

# SPS and PPS after 4-byte start codes: avc1.64001F (High 3.1) and avc1.4D401E (Main 3.0).
AVC_HIGH = "000000016764001FACD9405005BB011000000300100000030320F18319600000000168EBECB22C"
AVC_MAIN = "00000001674D401EECA0A02FF970110000030001000003003C0F162D960000000168EBECB2"

VIDEO_HI = TrackInfo(
    kind="video", name="video", track_id=1, bitrate=2_000_000, fourcc="H264",
    codec_private_data=AVC_HIGH, max_width=1280, max_height=720,
    display_width=1280, display_height=720,
)  # fmt: skip
VIDEO_LO = TrackInfo(
    kind="video", name="video", track_id=1, bitrate=1_000_000, fourcc="H264",
    codec_private_data=AVC_MAIN, max_width=640, max_height=360,
    display_width=640, display_height=360,
)  # fmt: skip
AUDIO = TrackInfo(
    kind="audio", name="audio", track_id=2, bitrate=128_000, fourcc="AACL",
    codec_private_data="1190", language="eng", sampling_rate=48_000, channels=2,
)  # fmt: skip
TEXT = TrackInfo(
    kind="text", name="textstream_eng", track_id=3, bitrate=1_000, fourcc="TTML",
    codec_private_data="", language="eng",
)  # fmt: skip

TWO_S = 20_000_000
VIDEO_CHUNKS = [(0, TWO_S), (TWO_S, TWO_S), (2 * TWO_S, TWO_S)]
# AAC at 48 kHz: fragments of 94 and 93 frames; the audio starts 21,333 ticks late.
AUDIO_CHUNKS = [(21_333, 20_053_333), (20_074_666, 19_840_000), (39_914_666, 20_053_333)]

AST = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
PUBLISHED = datetime(2024, 5, 1, 12, 0, 6, 500_000, tzinfo=UTC)
TIME_URI = "https://origin.example/time"


def media(name: str) -> str:
    return f"QualityLevels($Bandwidth$)/Fragments({name}=$Time$,format=mpd-time-cmaf).m4s"


def init(name: str) -> str:
    return f"QualityLevels($Bandwidth$)/Fragments({name}=i,format=mpd-time-cmaf).mp4"


def adaptation(kind, name, tracks, chunks, timescale=10_000_000, **kwargs) -> DashAdaptation:
    return DashAdaptation(
        kind, name, tuple(tracks), chunks, timescale, media(name), init(name), **kwargs
    )


def presentation(adaptations, live: bool = True, **kwargs) -> DashPresentation:
    values = {
        "adaptations": tuple(adaptations),
        "live": live,
        "availability_start_time": AST,
        "publish_time": PUBLISHED,
        "utc_timing_uri": TIME_URI,
        "time_shift_buffer_depth": 120.0,
    }
    values.update(kwargs)
    return DashPresentation(**values)


def live_presentation(**kwargs) -> DashPresentation:
    return presentation(
        [
            adaptation("video", "video", (VIDEO_HI, VIDEO_LO), VIDEO_CHUNKS),
            adaptation("audio", "audio", (AUDIO,), AUDIO_CHUNKS),
        ],
        **kwargs,
    )


def parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))


def render(p: DashPresentation) -> etree._Element:
    return parse(render_mpd(p))


def s_elements(adaptation_set: etree._Element) -> list[dict[str, str]]:
    return [dict(s.attrib) for s in adaptation_set.iterfind(S_PATH)]


def expand(adaptation_set: etree._Element) -> list[tuple[int, int]]:
    """The segments a player derives from the ``S`` elements (23009-1 5.3.9.6)."""
    segments: list[tuple[int, int]] = []
    end = 0
    for s in adaptation_set.iterfind(S_PATH):
        start = int(s.get("t", end))
        duration = int(s.get("d"))
        for _ in range(int(s.get("r", "0")) + 1):
            segments.append((start, duration))
            start += duration
        end = start
    return segments


def one_set(chunks, discontinuities=frozenset(), **kwargs) -> etree._Element:
    p = presentation(
        [adaptation("video", "video", (VIDEO_HI,), chunks, discontinuities=discontinuities)],
        **kwargs,
    )
    return render(p).find(f"{Q}Period/{Q}AdaptationSet")


# --- the whole document, byte for byte ------------------------------------------------------


def test_live_two_bitrates_and_late_audio() -> None:
    expected = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"'
        ' profiles="urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019"'
        ' type="dynamic" availabilityStartTime="2024-05-01T12:00:00.000Z"'
        ' publishTime="2024-05-01T12:00:06.500Z" minimumUpdatePeriod="PT2S"'
        ' timeShiftBufferDepth="PT120S" maxSegmentDuration="PT2.006S" minBufferTime="PT2S">\n'
        '<Period id="0" start="PT0S">\n'
        '<AdaptationSet id="0" contentType="video" mimeType="video/mp4"'
        ' segmentAlignment="true" startWithSAP="1" maxWidth="1280" maxHeight="720" par="16:9">\n'
        '<Role schemeIdUri="urn:mpeg:dash:role:2011" value="main"/>\n'
        '<SegmentTemplate timescale="10000000"'
        ' media="QualityLevels($Bandwidth$)/Fragments(video=$Time$,format=mpd-time-cmaf).m4s"'
        ' initialization="QualityLevels($Bandwidth$)/Fragments(video=i,format=mpd-time-cmaf).mp4"'
        ">\n"
        "<SegmentTimeline>\n"
        '<S t="0" d="20000000" r="2"/>\n'
        "</SegmentTimeline>\n"
        "</SegmentTemplate>\n"
        '<Representation id="video_2000000" bandwidth="2000000" codecs="avc1.64001F"'
        ' width="1280" height="720"/>\n'
        '<Representation id="video_1000000" bandwidth="1000000" codecs="avc1.4D401E"'
        ' width="640" height="360"/>\n'
        "</AdaptationSet>\n"
        '<AdaptationSet id="1" contentType="audio" mimeType="audio/mp4"'
        ' segmentAlignment="true" startWithSAP="1" lang="eng">\n'
        "<AudioChannelConfiguration"
        ' schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="2"/>\n'
        '<Role schemeIdUri="urn:mpeg:dash:role:2011" value="main"/>\n'
        '<SegmentTemplate timescale="10000000"'
        ' media="QualityLevels($Bandwidth$)/Fragments(audio=$Time$,format=mpd-time-cmaf).m4s"'
        ' initialization="QualityLevels($Bandwidth$)/Fragments(audio=i,format=mpd-time-cmaf).mp4"'
        ">\n"
        "<SegmentTimeline>\n"
        '<S t="21333" d="20053333"/>\n'
        '<S d="19840000"/>\n'
        '<S d="20053333"/>\n'
        "</SegmentTimeline>\n"
        "</SegmentTemplate>\n"
        '<Representation id="audio_128000" bandwidth="128000" codecs="mp4a.40.2"'
        ' audioSamplingRate="48000"/>\n'
        "</AdaptationSet>\n"
        "</Period>\n"
        '<UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014"'
        ' value="https://origin.example/time"/>\n'
        "</MPD>\n"
    )
    assert render_mpd(live_presentation()).decode() == expected


def test_every_element_is_in_the_mpd_namespace_and_in_schema_order() -> None:
    root = render(live_presentation())
    assert root.tag == f"{Q}MPD"
    assert {el.tag.split("}")[0][1:] for el in root.iter()} == {NS}
    # MPDtype: Period before UTCTiming; AdaptationSetType (RepresentationBaseType
    # first): AudioChannelConfiguration, Role, SegmentTemplate, Representation.
    assert [el.tag for el in root] == [f"{Q}Period", f"{Q}UTCTiming"]
    audio = root.findall(f"{Q}Period/{Q}AdaptationSet")[1]
    assert [el.tag for el in audio] == [
        f"{Q}AudioChannelConfiguration",
        f"{Q}Role",
        f"{Q}SegmentTemplate",
        f"{Q}Representation",
    ]
    assert render_mpd(live_presentation()).startswith(b'<?xml version="1.0" encoding="utf-8"?>\n')


# --- SegmentTimeline: t, d, r ---------------------------------------------------------------


def test_r_counts_repeats_zero_based_unlike_smooth() -> None:
    # Three contiguous 2-s segments: DASH r="2" (two repeats), Smooth 2.2 r="3".
    assert s_elements(one_set(VIDEO_CHUNKS)) == [{"t": "0", "d": "20000000", "r": "2"}]
    assert expand(one_set(VIDEO_CHUNKS)) == VIDEO_CHUNKS
    smooth = render_client_manifest(
        ManifestView(
            (StreamIndexView("video", "video", (VIDEO_HI,), VIDEO_CHUNKS),),
            is_live=True,
            version="2.2",
        )
    )
    assert b'<c t="0" d="20000000" r="3"/>' in smooth


def test_a_single_segment_has_no_r() -> None:
    assert s_elements(one_set([(7, 20)])) == [{"t": "7", "d": "20"}]


# A run of three, a duration change, a run of two, a gap, a run of three.
MIXED = [(0, 20), (20, 20), (40, 20), (60, 10), (70, 20), (90, 20),
         (115, 20), (135, 20), (155, 20)]  # fmt: skip


def test_runs_broken_by_duration_and_gap() -> None:
    adaptation_set = one_set(MIXED)
    assert s_elements(adaptation_set) == [
        {"t": "0", "d": "20", "r": "2"},
        {"d": "10"},
        {"d": "20", "r": "1"},
        {"t": "115", "d": "20", "r": "2"},  # after the gap at 110
    ]
    assert expand(adaptation_set) == MIXED


def test_discontinuity_gets_t_even_when_contiguous() -> None:
    chunks = [(0, 20), (20, 20), (40, 20), (60, 20)]
    adaptation_set = one_set(chunks, discontinuities=frozenset({40}))
    assert s_elements(adaptation_set) == [
        {"t": "0", "d": "20", "r": "1"},
        {"t": "40", "d": "20", "r": "1"},
    ]
    assert expand(adaptation_set) == chunks


def test_overlap_gets_t() -> None:
    chunks = [(0, 20), (15, 20)]
    assert s_elements(one_set(chunks)) == [{"t": "0", "d": "20"}, {"t": "15", "d": "20"}]


def test_sliding_window_moves_the_first_t() -> None:
    # 2-s chunks 10..19, then one more fragment: 11..20 (timing model "Removing
    # content from the MPD": the expired S goes, the first S keeps its t).
    first = one_set([(i * TWO_S, TWO_S) for i in range(10, 20)])
    second = one_set([(i * TWO_S, TWO_S) for i in range(11, 21)])
    assert s_elements(first) == [{"t": "200000000", "d": "20000000", "r": "9"}]
    assert s_elements(second) == [{"t": "220000000", "d": "20000000", "r": "9"}]


@st.composite
def timelines(draw) -> tuple[list[tuple[int, int]], frozenset[int]]:
    time_ = draw(st.integers(0, 10**12))
    chunks: list[tuple[int, int]] = []
    discontinuities: set[int] = set()
    for _ in range(draw(st.integers(1, 40))):
        time_ += draw(st.sampled_from([0, 0, 0, 0, 1, 5_000]))  # mostly contiguous
        duration = draw(st.sampled_from([20_000_000, 20_053_333, 19_840_000]))
        if draw(st.integers(0, 9)) == 0:
            discontinuities.add(time_)
        chunks.append((time_, duration))
        time_ += duration
    return chunks, frozenset(discontinuities)


@settings(max_examples=200, deadline=None)
@given(timelines())
def test_timeline_round_trips(data) -> None:
    chunks, discontinuities = data
    adaptation_set = one_set(chunks, discontinuities)
    assert expand(adaptation_set) == chunks
    elements = s_elements(adaptation_set)
    assert "t" in elements[0]
    assert all(int(s.get("r", "0")) >= 0 for s in elements)
    starts = {int(s["t"]) for s in elements if "t" in s}
    assert discontinuities & {t for t, _ in chunks} <= starts


# --- MPD attributes -------------------------------------------------------------------------


def test_dynamic_attributes() -> None:
    root = render(
        live_presentation(
            time_shift_buffer_depth=30.5,
            minimum_update_period=1.0,
            min_buffer_time=1.5,
            suggested_presentation_delay=6.0,
            utc_timing_uri="https://origin.example/time?iso&ms",
        )
    )
    assert root.get("type") == "dynamic"
    assert root.get("minimumUpdatePeriod") == "PT1S"
    assert root.get("timeShiftBufferDepth") == "PT30.5S"
    assert root.get("suggestedPresentationDelay") == "PT6S"
    assert root.get("minBufferTime") == "PT1.5S"
    assert root.get("mediaPresentationDuration") is None
    timing = root.find(f"{Q}UTCTiming")
    assert timing.get("schemeIdUri") == "urn:mpeg:dash:utc:http-iso:2014"
    assert timing.get("value") == "https://origin.example/time?iso&ms"
    assert b'value="https://origin.example/time?iso&amp;ms"' in render_mpd(
        live_presentation(utc_timing_uri="https://origin.example/time?iso&ms")
    )


def test_suggested_presentation_delay_only_when_given() -> None:
    assert render(live_presentation()).get("suggestedPresentationDelay") is None


def test_whole_event_depth_covers_the_first_segment_until_the_next_refresh() -> None:
    # publishTime is 6.5 s after availabilityStartTime; the first segment
    # starts at 0; the longest is 2.0053333 s; minimumUpdatePeriod 2 s:
    # 6.5 - 0 + 2.0053333 = 8.5053333 -> 8.506 (rounded up) + 2 = 10.506.
    root = render(live_presentation(time_shift_buffer_depth=None))
    assert root.get("timeShiftBufferDepth") == "PT10.506S"
    # Content starting 4 s into the period needs 4 s less.
    later = [(t + 4 * 10_000_000, d) for t, d in VIDEO_CHUNKS]
    root = render(
        presentation(
            [adaptation("video", "video", (VIDEO_HI,), later)], time_shift_buffer_depth=None
        )
    )
    assert root.get("timeShiftBufferDepth") == "PT6.5S"  # 6.5 - 4 + 2 -> 4.5, + 2


def test_datetimes_are_utc_with_milliseconds() -> None:
    plus_two = timezone(timedelta(hours=2))
    root = render(
        live_presentation(
            availability_start_time=datetime(2024, 5, 1, 14, 0, 0, 123_456, tzinfo=plus_two),
            publish_time=datetime(2024, 5, 1, 12, 0, 6, 999_999, tzinfo=UTC),
        )
    )
    # availabilityStartTime rounds up (never announce a segment early);
    # publishTime is cut.
    assert root.get("availabilityStartTime") == "2024-05-01T12:00:00.124Z"
    assert root.get("publishTime") == "2024-05-01T12:00:06.999Z"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        render_mpd(live_presentation(availability_start_time=datetime(2024, 5, 1)))
    with pytest.raises(ValueError, match="aware"):
        render_mpd(live_presentation(publish_time=datetime(2024, 5, 1)))


def test_profiles() -> None:
    assert render(live_presentation()).get("profiles") == (
        "urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019"
    )
    assert render(live_presentation(profile="csf")).get("profiles") == (
        "urn:mpeg:dash:profile:isoff-live:2011"
    )
    with pytest.raises(ValueError, match="profile"):
        render_mpd(live_presentation(profile="main"))


def test_presentation_time_offset_only_when_non_zero() -> None:
    root = render(live_presentation())
    template = root.find(f"{Q}Period/{Q}AdaptationSet/{Q}SegmentTemplate")
    assert template.get("presentationTimeOffset") is None
    # 100-ns units, converted to each AdaptationSet's timescale.
    audio_48k = [(960_000, 96_256), (1_056_256, 95_232)]
    root = render(
        presentation(
            [
                adaptation("video", "video", (VIDEO_HI,), VIDEO_CHUNKS),
                adaptation("audio", "audio", (AUDIO,), audio_48k, timescale=48_000),
            ],
            presentation_time_offset=200_000_000,
        )
    )
    video, audio = root.iterfind(f"{Q}Period/{Q}AdaptationSet/{Q}SegmentTemplate")
    assert video.get("presentationTimeOffset") == "200000000"
    assert (audio.get("timescale"), audio.get("presentationTimeOffset")) == ("48000", "960000")


# --- static (after Stop) ----------------------------------------------------------------------

# The DVR window after Stop: video 20..24 s, audio 20.0021333..25.9967999 s.
WINDOW_VIDEO = [(10 * TWO_S, TWO_S), (11 * TWO_S, TWO_S)]
WINDOW_AUDIO = [(200_021_333, 20_053_333), (220_074_666, 19_840_000), (239_914_666, 20_053_333)]


def static_presentation(**kwargs) -> DashPresentation:
    return presentation(
        [
            adaptation("video", "video", (VIDEO_HI,), WINDOW_VIDEO),
            adaptation("audio", "audio", (AUDIO,), WINDOW_AUDIO),
        ],
        live=False,
        suggested_presentation_delay=6.0,
        **kwargs,
    )


def test_static_drops_live_only_attributes() -> None:
    root = render(static_presentation())
    assert root.get("type") == "static"
    for name in ("minimumUpdatePeriod", "timeShiftBufferDepth", "suggestedPresentationDelay"):
        assert root.get(name) is None
    assert root.find(f"{Q}UTCTiming") is None
    assert root.get("minBufferTime") == "PT2S"


def test_static_period_starts_at_the_first_segment() -> None:
    # live2vod: PTO = T0 = 20 s (the earliest start, the video's), duration =
    # latest end - T0 = 25.9967999 - 20 -> 5.996 (cut, never past the media).
    root = render(static_presentation())
    assert root.get("mediaPresentationDuration") == "PT5.996S"
    period = root.find(f"{Q}Period")
    assert (period.get("start"), period.get("duration")) == ("PT0S", "PT5.996S")
    templates = root.findall(f"{Q}Period/{Q}AdaptationSet/{Q}SegmentTemplate")
    assert [t.get("presentationTimeOffset") for t in templates] == ["200000000", "200000000"]
    # availabilityStartTime moves to the wall-clock time of T0: AST was media 0.
    assert root.get("availabilityStartTime") == "2024-05-01T12:00:20.000Z"
    # The S list and $Time$ keep the media times the segments were published under.
    video = root.find(f"{Q}Period/{Q}AdaptationSet")
    assert s_elements(video) == [{"t": "200000000", "d": "20000000", "r": "1"}]


def test_static_availability_start_time_follows_the_live_offset() -> None:
    # Live, AST was the wall-clock time of media 10 s; T0 = 20 s is 10 s later.
    root = render(static_presentation(presentation_time_offset=100_000_000))
    assert root.get("availabilityStartTime") == "2024-05-01T12:00:10.000Z"
    templates = root.findall(f"{Q}Period/{Q}AdaptationSet/{Q}SegmentTemplate")
    assert [t.get("presentationTimeOffset") for t in templates] == ["200000000", "200000000"]


def test_static_with_mixed_timescales() -> None:
    audio_48k = [(960_102, 96_256), (1_056_358, 95_232)]  # 20.002125 .. 24.001 s
    root = render(
        presentation(
            [
                adaptation("video", "video", (VIDEO_HI,), [(10 * TWO_S, TWO_S)]),
                adaptation("audio", "audio", (AUDIO,), audio_48k, timescale=48_000),
            ],
            live=False,
        )
    )
    templates = root.findall(f"{Q}Period/{Q}AdaptationSet/{Q}SegmentTemplate")
    assert [t.get("presentationTimeOffset") for t in templates] == ["200000000", "960000"]
    # (1_056_358 + 95_232) / 48_000 = 23.9914583 s; video ends at 22 s.
    assert root.get("mediaPresentationDuration") == "PT3.991S"


# --- AdaptationSets and Representations -----------------------------------------------------


def test_adaptation_set_ids_are_positions_and_survive_a_left_out_set() -> None:
    unknown = replace(TEXT, fourcc="XXXX")
    root = render(
        presentation(
            [
                adaptation("video", "video", (VIDEO_HI,), VIDEO_CHUNKS),
                adaptation("text", "textstream_eng", (unknown,), VIDEO_CHUNKS),  # no codecs
                adaptation("audio", "audio_spa", (AUDIO,), []),  # no chunks yet
                adaptation("audio", "audio", (AUDIO,), AUDIO_CHUNKS),
            ]
        )
    )
    sets = root.findall(f"{Q}Period/{Q}AdaptationSet")
    assert [(s.get("id"), s.get("contentType")) for s in sets] == [("0", "video"), ("3", "audio")]


def test_track_without_codecs_is_left_out() -> None:
    odd = replace(VIDEO_LO, fourcc="VC-1", codec_private_data="")
    root = render(presentation([adaptation("video", "video", (VIDEO_HI, odd), VIDEO_CHUNKS)]))
    ids = [r.get("id") for r in root.iter(f"{Q}Representation")]
    assert ids == ["video_2000000"]


def test_same_bitrate_twice_is_refused() -> None:
    twin = replace(VIDEO_LO, bitrate=VIDEO_HI.bitrate)
    with pytest.raises(ValueError, match="Bandwidth"):
        render_mpd(presentation([adaptation("video", "video", (VIDEO_HI, twin), VIDEO_CHUNKS)]))


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        render_mpd(presentation([adaptation("data", "data", (VIDEO_HI,), VIDEO_CHUNKS)]))


def test_bandwidth_is_the_bitrate_the_url_needs() -> None:
    root = render(live_presentation())
    template = root.find(f"{Q}Period/{Q}AdaptationSet/{Q}SegmentTemplate")
    bandwidths = [r.get("bandwidth") for r in root.iter(f"{Q}Representation")]
    assert bandwidths == ["2000000", "1000000", "128000"]
    # What a player requests for the second video segment of the low track.
    url = template.get("media").replace("$Bandwidth$", bandwidths[1]).replace("$Time$", "20000000")
    assert url == "QualityLevels(1000000)/Fragments(video=20000000,format=mpd-time-cmaf).m4s"


def test_video_sar_and_frame_rates() -> None:
    anamorphic = replace(VIDEO_HI, max_width=1440, max_height=1080, display_width=1920,
                         display_height=1080)  # fmt: skip
    root = render(
        presentation(
            [
                adaptation(
                    "video", "video", (anamorphic, VIDEO_LO), VIDEO_CHUNKS,
                    frame_rates={2_000_000: "30000/1001", 1_000_000: 25},
                )
            ]
        )
    )  # fmt: skip
    adaptation_set = root.find(f"{Q}Period/{Q}AdaptationSet")
    assert adaptation_set.get("maxWidth") == "1440"
    assert adaptation_set.get("maxHeight") == "1080"
    assert adaptation_set.get("par") == "16:9"
    assert adaptation_set.get("maxFrameRate") == "30000/1001"
    hi, lo = adaptation_set.findall(f"{Q}Representation")
    # 1440x1080 shown as 1920x1080: sar = (1920 * 1080):(1080 * 1440) = 4:3.
    assert (hi.get("width"), hi.get("height"), hi.get("sar")) == ("1440", "1080", "4:3")
    assert hi.get("frameRate") == "30000/1001"
    assert (lo.get("sar"), lo.get("frameRate")) == (None, "25")


def test_audio_channels_per_representation_when_they_differ() -> None:
    surround = replace(AUDIO, bitrate=384_000, channels=6)
    root = render(presentation([adaptation("audio", "audio", (surround, AUDIO), AUDIO_CHUNKS)]))
    adaptation_set = root.find(f"{Q}Period/{Q}AdaptationSet")
    assert adaptation_set.find(f"{Q}AudioChannelConfiguration") is None
    values = [
        r.find(f"{Q}AudioChannelConfiguration").get("value")
        for r in adaptation_set.iterfind(f"{Q}Representation")
    ]
    assert values == ["6", "2"]


def test_text_adaptation_set() -> None:
    root = render(presentation([adaptation("text", "textstream_eng", (TEXT,), VIDEO_CHUNKS)]))
    adaptation_set = root.find(f"{Q}Period/{Q}AdaptationSet")
    assert adaptation_set.get("mimeType") == "application/mp4"
    assert adaptation_set.get("contentType") == "text"
    assert adaptation_set.get("lang") == "eng"
    assert adaptation_set.find(f"{Q}Role").get("value") == "subtitle"
    assert adaptation_set.find(f"{Q}Representation").get("codecs") == "stpp"


def test_language_and_role_overrides() -> None:
    root = render(
        presentation(
            [
                adaptation("audio", "audio_spa", (replace(AUDIO, language=None),), AUDIO_CHUNKS,
                           language="es-419", role="alternate"),
                adaptation("audio", "audio_x", (replace(AUDIO, language="not a tag"),),
                           AUDIO_CHUNKS),
            ]
        )
    )  # fmt: skip
    spanish, odd = root.findall(f"{Q}Period/{Q}AdaptationSet")
    assert spanish.get("lang") == "es-419"
    assert spanish.find(f"{Q}Role").get("value") == "alternate"
    assert odd.get("lang") is None  # not an xs:language: left out


def test_every_attribute_is_escaped() -> None:
    name = 'a&b "x"'
    root = render(
        presentation(
            [
                DashAdaptation(
                    "video", name, (VIDEO_HI,), VIDEO_CHUNKS, 10_000_000,
                    f"QualityLevels($Bandwidth$)/Fragments({name}=$Time$)<&>",
                    f"QualityLevels($Bandwidth$)/Fragments({name}=i)",
                    role="main&more",
                )
            ],
            utc_timing_uri='https://o.example/t?a=1&b="2"',
        )
    )  # fmt: skip
    template = root.find(f"{Q}Period/{Q}AdaptationSet/{Q}SegmentTemplate")
    assert template.get("media") == 'QualityLevels($Bandwidth$)/Fragments(a&b "x"=$Time$)<&>'
    assert template.get("initialization") == 'QualityLevels($Bandwidth$)/Fragments(a&b "x"=i)'
    assert root.find(f"{Q}Period/{Q}AdaptationSet/{Q}Role").get("value") == "main&more"
    assert root.find(f"{Q}UTCTiming").get("value") == 'https://o.example/t?a=1&b="2"'
    # Representation@id has no whitespace (StringNoWhitespaceType): percent-encoded.
    assert root.find(f"{Q}Period/{Q}AdaptationSet/{Q}Representation").get("id") == (
        'a&b%20"x"_2000000'
    )


def test_durations_keep_at_most_three_decimals() -> None:
    for seconds, text in [(0, "PT0S"), (2, "PT2S"), (0.5, "PT0.5S"), (1.2344, "PT1.234S"),
                          (7200.04, "PT7200.04S"), (Fraction(1, 3), "PT0.333S")]:  # fmt: skip
        assert render(live_presentation(min_buffer_time=seconds)).get("minBufferTime") == text
    with pytest.raises(ValueError, match="negative"):
        render_mpd(live_presentation(time_shift_buffer_depth=-1.0))


# --- speed ------------------------------------------------------------------------------------


def test_two_hour_window_renders_in_a_few_milliseconds() -> None:
    # 3600 two-second segments per AdaptationSet. Video folds into one S; the
    # audio alternates 94/93 AAC frames and needs all 3600.
    video = [(i * TWO_S, TWO_S) for i in range(3600)]
    audio: list[tuple[int, int]] = []
    t = 21_333
    for i in range(3600):
        d = 20_053_333 if i % 2 == 0 else 19_840_000
        audio.append((t, d))
        t += d
    p = presentation(
        [
            adaptation("video", "video", (VIDEO_HI, VIDEO_LO), video),
            adaptation("audio", "audio", (AUDIO,), audio),
        ],
        time_shift_buffer_depth=7200.0,
    )
    root = render(p)
    video_set, audio_set = root.findall(f"{Q}Period/{Q}AdaptationSet")
    assert s_elements(video_set) == [{"t": "0", "d": "20000000", "r": "3599"}]
    assert len(s_elements(audio_set)) == 3600
    assert expand(video_set) == video
    assert expand(audio_set) == audio
    runs = 20
    start = time.perf_counter()
    for _ in range(runs):
        render_mpd(p)
    elapsed_ms = (time.perf_counter() - start) / runs * 1000
    print(f"2-hour window (3600 + 3600 segments): {elapsed_ms:.2f} ms per MPD")
    assert elapsed_ms < 50  # a few ms on a laptop; loose for slow CI


def test_nothing_published_yet() -> None:
    for live in (True, False):
        root = render(presentation([adaptation("video", "video", (VIDEO_HI,), [])], live=live))
        assert root.get("maxSegmentDuration") is None
        assert root.find(f"{Q}Period/{Q}AdaptationSet") is None
    assert render(presentation([], live=False)).get("mediaPresentationDuration") == "PT0S"
