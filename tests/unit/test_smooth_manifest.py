"""The Smooth Streaming client manifest renderer (MS-SSTR 2.2.2).

Expectations are written out by hand; the round-trip property decodes the
``c`` elements the way MS-SSTR 2.2.2.6 and dash.js's MssParser do (a missing
``t`` is the previous end, the first defaults to 0, ``r`` is one-based).
"""

from __future__ import annotations

import time
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from smoothlive.media.model import TrackInfo
from smoothlive.outputs.smooth import (
    DEFAULT_URL,
    ManifestView,
    StreamIndexView,
    render_client_manifest,
)

# SPS and PPS after 4-byte start codes, as MS-SSTR 2.2.2.5 writes H264 CodecPrivateData.
AVC_HIGH = "000000016764001FACD9405005BB011000000300100000030320F18319600000000168EBECB22C"
AVC_MAIN = "00000001674D401EECA0A02FF970110000030001000003003C0F162D960000000168EBECB2"

VIDEO_HI = TrackInfo(
    kind="video",
    name="video",
    track_id=1,
    bitrate=2_000_000,
    fourcc="H264",
    codec_private_data=AVC_HIGH,
    max_width=1280,
    max_height=720,
    display_width=1280,
    display_height=720,
)
VIDEO_LO = TrackInfo(
    kind="video",
    name="video",
    track_id=1,
    bitrate=1_000_000,
    fourcc="H264",
    codec_private_data=AVC_MAIN,
    max_width=640,
    max_height=360,
    display_width=640,
    display_height=360,
)
AUDIO = TrackInfo(
    kind="audio",
    name="audio",
    track_id=2,
    bitrate=128_000,
    fourcc="AACL",
    codec_private_data="1190",
    language="eng",
    sampling_rate=48_000,
    channels=2,
    bits_per_sample=16,
    packet_size=4,
    audio_tag=255,
)
TEXT = TrackInfo(
    kind="text",
    name="textstream_eng",
    track_id=3,
    bitrate=1_000,
    fourcc="TTML",
    codec_private_data="",
)

TWO_S = 20_000_000
VIDEO_CHUNKS = [(0, TWO_S), (TWO_S, TWO_S), (2 * TWO_S, TWO_S)]
# AAC at 48 kHz: 1024-sample frames of 213,333.3 ticks, fragments of 94 and
# 93 frames; re-stamped, the audio starts 21,333 ticks after the video.
AUDIO_CHUNKS = [(21_333, 20_053_333), (20_074_666, 19_840_000), (39_914_666, 20_053_333)]


def live_view(version: str = "2.0") -> ManifestView:
    return ManifestView(
        stream_indexes=(
            StreamIndexView("video", "video", (VIDEO_HI, VIDEO_LO), VIDEO_CHUNKS),
            StreamIndexView("audio", "audio", (AUDIO,), AUDIO_CHUNKS, language="eng"),
        ),
        is_live=True,
        version=version,
        lookahead_count=2,
        dvr_window_length=1_200_000_000,
    )


def parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))


def c_elements(stream: etree._Element) -> list[dict[str, str]]:
    return [dict(c.attrib) for c in stream.iterfind("c")]


def expand(stream: etree._Element) -> list[tuple[int, int]]:
    """The fragments a player derives from the ``c`` elements of ``stream``."""
    fragments: list[tuple[int, int]] = []
    end = 0
    for c in stream.iterfind("c"):
        start = int(c.get("t", end))
        duration = int(c.get("d"))
        for _ in range(int(c.get("r", "1"))):
            fragments.append((start, duration))
            start += duration
        end = start
    return fragments


def one_stream(chunks, version: str = "2.2", **kwargs) -> etree._Element:
    view = ManifestView(
        stream_indexes=(StreamIndexView("video", "video", (VIDEO_HI,), chunks),),
        is_live=True,
        version=version,
        **kwargs,
    )
    return parse(render_client_manifest(view)).find("StreamIndex")


# --- the whole document, byte for byte ------------------------------------------------------


def test_live_two_bitrates_and_late_audio_version_2_0() -> None:
    expected = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<SmoothStreamingMedia MajorVersion="2" MinorVersion="0" TimeScale="10000000"'
        ' Duration="0" IsLive="TRUE" LookaheadCount="2" DVRWindowLength="1200000000">\n'
        '<StreamIndex Type="video" Name="video" Chunks="3" QualityLevels="2"'
        ' Url="QualityLevels({bitrate})/Fragments(video={start time})" TimeScale="10000000"'
        ' MaxWidth="1280" MaxHeight="720" DisplayWidth="1280" DisplayHeight="720">\n'
        f'<QualityLevel Index="0" Bitrate="2000000" FourCC="H264" CodecPrivateData="{AVC_HIGH}"'
        ' MaxWidth="1280" MaxHeight="720"/>\n'
        f'<QualityLevel Index="1" Bitrate="1000000" FourCC="H264" CodecPrivateData="{AVC_MAIN}"'
        ' MaxWidth="640" MaxHeight="360"/>\n'
        '<c t="0" d="20000000"/>\n'
        '<c d="20000000"/>\n'
        '<c d="20000000"/>\n'
        "</StreamIndex>\n"
        '<StreamIndex Type="audio" Name="audio" Chunks="3" QualityLevels="1"'
        ' Url="QualityLevels({bitrate})/Fragments(audio={start time})" TimeScale="10000000"'
        ' Language="eng">\n'
        '<QualityLevel Index="0" Bitrate="128000" FourCC="AACL" CodecPrivateData="1190"'
        ' SamplingRate="48000" Channels="2" BitsPerSample="16" PacketSize="4" AudioTag="255"/>\n'
        '<c t="21333" d="20053333"/>\n'
        '<c d="19840000"/>\n'
        '<c d="20053333"/>\n'
        "</StreamIndex>\n"
        "</SmoothStreamingMedia>\n"
    )
    assert render_client_manifest(live_view("2.0")).decode() == expected


def test_live_version_2_2_folds_the_equal_video_run_only() -> None:
    text = render_client_manifest(live_view("2.2")).decode()
    assert 'MinorVersion="2"' in text
    video, audio = text.split("<StreamIndex ")[1:]
    assert '<c t="0" d="20000000" r="3"/>\n</StreamIndex>' in video
    assert 'Chunks="3"' in video  # fragments, not c elements
    # Audio durations alternate: nothing to fold, the same three c as in 2.0.
    assert '<c t="21333" d="20053333"/>\n<c d="19840000"/>\n<c d="20053333"/>\n' in audio


def test_first_c_of_every_stream_index_has_t() -> None:
    for version in ("2.0", "2.2"):
        root = parse(render_client_manifest(live_view(version)))
        video, audio = root.findall("StreamIndex")
        assert video.find("c").get("t") == "0"
        assert audio.find("c").get("t") == "21333"
        assert expand(video) == VIDEO_CHUNKS
        assert expand(audio) == AUDIO_CHUNKS


# --- c elements: t, d, r ----------------------------------------------------------------------

# A run of three, a duration change, a run of two, a gap, a run of three.
MIXED = [
    (0, 20),
    (20, 20),
    (40, 20),
    (60, 10),
    (70, 20),
    (90, 20),
    (115, 20),
    (135, 20),
    (155, 20),
]


def test_version_2_2_folds_runs_broken_by_duration_and_gap() -> None:
    stream = one_stream(MIXED, "2.2")
    assert c_elements(stream) == [
        {"t": "0", "d": "20", "r": "3"},
        {"d": "10"},
        {"d": "20", "r": "2"},
        {"t": "115", "d": "20", "r": "3"},
    ]
    assert stream.get("Chunks") == "9"
    assert expand(stream) == MIXED


def test_version_2_0_never_writes_r() -> None:
    stream = one_stream(MIXED, "2.0")
    assert c_elements(stream) == [
        {"t": "0", "d": "20"},
        {"d": "20"},
        {"d": "20"},
        {"d": "10"},
        {"d": "20"},
        {"d": "20"},
        {"t": "115", "d": "20"},
        {"d": "20"},
        {"d": "20"},
    ]
    assert stream.get("Chunks") == "9"
    assert expand(stream) == MIXED


def test_gap_overlap_and_restart_get_t() -> None:
    chunks = [(1000, 20), (1020, 20), (1050, 20), (1065, 20), (5000, 20)]
    for version in ("2.0", "2.2"):
        assert c_elements(one_stream(chunks, version)) == [
            {"t": "1000", "d": "20"} | ({"r": "2"} if version == "2.2" else {}),
            *([{"d": "20"}] if version == "2.0" else []),
            {"t": "1050", "d": "20"},  # gap of 10
            {"t": "1065", "d": "20"},  # overlaps the previous by 5
            {"t": "5000", "d": "20"},  # encoder restart
        ]


def test_lone_fragment_gets_no_r_and_a_run_of_two_gets_r_2() -> None:
    assert c_elements(one_stream([(7, 3)], "2.2")) == [{"t": "7", "d": "3"}]
    assert c_elements(one_stream([(7, 3), (10, 3)], "2.2")) == [{"t": "7", "d": "3", "r": "2"}]


def test_empty_window_has_chunks_0_and_no_c() -> None:
    stream = one_stream([], "2.2")
    assert stream.get("Chunks") == "0"
    assert stream.find("c") is None


def test_big_timestamps_are_written_exactly() -> None:
    start = 2**63 - 10_000  # STRING-UINT64, beyond a double's exact range
    stream = one_stream([(start, 4000), (start + 4000, 4000)], "2.0")
    assert c_elements(stream)[0] == {"t": str(start), "d": "4000"}


@st.composite
def chunk_lists(draw) -> list[tuple[int, int]]:
    time_ = draw(st.integers(0, 2**40))
    chunks = []
    for _ in range(draw(st.integers(0, 40))):
        duration = draw(st.sampled_from([20_000_000, 20_000_000, 20_000_000, 19_840_000, 1]))
        chunks.append((time_, duration))
        time_ += duration + draw(st.sampled_from([0, 0, 0, 0, 1, 5_000_000]))
    return chunks


@settings(max_examples=200, deadline=None)
@given(chunk_lists(), st.sampled_from(["2.0", "2.2"]))
def test_round_trip_and_maximal_folding(chunks: list[tuple[int, int]], version: str) -> None:
    stream = one_stream(chunks, version)
    cs = c_elements(stream)
    assert expand(stream) == chunks
    assert stream.get("Chunks") == str(len(chunks))
    assert all("d" in c for c in cs)
    if cs:
        assert "t" in cs[0]
    if version == "2.0":
        assert all("r" not in c for c in cs)
        assert len(cs) == len(chunks)
    else:
        assert all(int(c.get("r", "1")) >= 1 and c.get("r") != "1" for c in cs)
        # Maximal: a c that continues the previous one with the same d would
        # have been folded into it.
        for previous, current in pairwise(cs):
            assert "t" in current or current["d"] != previous["d"]


# --- elements and attributes as MS-SSTR names them -------------------------------------------

ROOT_ATTRS = {
    "MajorVersion",
    "MinorVersion",
    "TimeScale",
    "Duration",
    "IsLive",
    "LookaheadCount",
    "DVRWindowLength",
}
STREAM_ATTRS = {
    "Type",
    "Subtype",
    "TimeScale",
    "Name",
    "Chunks",
    "QualityLevels",
    "Url",
    "MaxWidth",
    "MaxHeight",
    "DisplayWidth",
    "DisplayHeight",
    "Language",  # IIS, not in the MS-SSTR ABNF
}
TRACK_ATTRS = {
    "Index",
    "Bitrate",
    "CodecPrivateData",
    "MaxWidth",
    "MaxHeight",
    "SamplingRate",
    "Channels",
    "BitsPerSample",
    "PacketSize",
    "AudioTag",
    "FourCC",
}


def test_parsed_with_lxml_every_name_is_an_ms_sstr_name() -> None:
    view = ManifestView(
        stream_indexes=(
            *live_view("2.2").stream_indexes,
            StreamIndexView("text", "textstream_eng", (TEXT,), [(0, TWO_S)], subtype="CAPT"),
        ),
        is_live=True,
        version="2.2",
    )
    root = parse(render_client_manifest(view))
    assert root.tag == "SmoothStreamingMedia"
    assert set(root.attrib) == ROOT_ATTRS
    assert root.get("IsLive").lower() == "true"  # MS-SSTR TRUE is case-insensitive "true"
    assert "CanSeek" not in root.attrib and "CanPause" not in root.attrib
    streams = root.findall("StreamIndex")
    assert [s.get("Type") for s in streams] == ["video", "audio", "text"]
    for stream in streams:
        assert set(stream.attrib) <= STREAM_ATTRS
        assert {child.tag for child in stream} <= {"QualityLevel", "c"}
        assert stream.get("QualityLevels") == str(len(stream.findall("QualityLevel")))
        assert stream.get("TimeScale") == "10000000"
        for index, level in enumerate(stream.findall("QualityLevel")):
            assert set(level.attrib) <= TRACK_ATTRS
            assert level.get("Index") == str(index)
            assert "CodecPrivateData" in level.attrib  # dash.js calls .toString() on it
        for c in stream.iterfind("c"):
            assert set(c.attrib) <= {"t", "d", "r"}

    video, audio, text = streams
    assert {"MaxWidth", "MaxHeight", "DisplayWidth", "DisplayHeight"} <= set(video.attrib)
    for level in video.findall("QualityLevel"):
        assert set(level.attrib) == {
            "Index", "Bitrate", "FourCC", "CodecPrivateData", "MaxWidth", "MaxHeight",
        }  # fmt: skip
    # MS-SSTR 2.2.2.3: MaxWidth etc. MUST NOT appear unless the Type is video.
    for other in (audio, text):
        assert not {"MaxWidth", "MaxHeight", "DisplayWidth", "DisplayHeight"} & set(other.attrib)
    (audio_level,) = audio.findall("QualityLevel")
    assert set(audio_level.attrib) == {
        "Index", "Bitrate", "FourCC", "CodecPrivateData",
        "SamplingRate", "Channels", "BitsPerSample", "PacketSize", "AudioTag",
    }  # fmt: skip
    assert audio.get("Language") == "eng"
    assert text.get("Subtype") == "CAPT"
    (text_level,) = text.findall("QualityLevel")
    assert dict(text_level.attrib) == {
        "Index": "0", "Bitrate": "1000", "FourCC": "TTML", "CodecPrivateData": "",
    }  # fmt: skip
    assert text.get("Url") == "QualityLevels({bitrate})/Fragments(textstream_eng={start time})"


def test_text_stream_without_subtype_gets_subt_and_others_get_none() -> None:
    view = ManifestView(
        stream_indexes=(
            StreamIndexView("text", "captions", (TEXT,), []),
            StreamIndexView("audio", "audio", (AUDIO,), []),
        ),
        is_live=False,
    )
    text, audio = parse(render_client_manifest(view)).findall("StreamIndex")
    assert text.get("Subtype") == "SUBT"
    assert audio.get("Subtype") is None
    assert audio.get("Language") is None  # only the StreamIndexView's language is written


def test_display_size_falls_back_to_max_size() -> None:
    bare = TrackInfo("video", "video", 1, 500_000, "AVC1", AVC_MAIN, max_width=854, max_height=480)
    view = ManifestView((StreamIndexView("video", "video", (bare,), [(0, 1)]),), is_live=True)
    stream = parse(render_client_manifest(view)).find("StreamIndex")
    assert (stream.get("DisplayWidth"), stream.get("DisplayHeight")) == ("854", "480")


# --- on-demand --------------------------------------------------------------------------------


def test_on_demand_has_no_live_attributes_and_the_total_duration() -> None:
    view = ManifestView(
        stream_indexes=live_view().stream_indexes,
        is_live=False,
        version="2.2",
        duration=60_000_000,
        lookahead_count=2,  # ignored: MUST be omitted for on-demand
        dvr_window_length=1_200_000_000,  # likewise
    )
    data = render_client_manifest(view)
    assert data.startswith(
        b'<?xml version="1.0" encoding="utf-8"?>\n'
        b'<SmoothStreamingMedia MajorVersion="2" MinorVersion="2" TimeScale="10000000"'
        b' Duration="60000000">\n'
    )
    root = parse(data)
    assert set(root.attrib) == {"MajorVersion", "MinorVersion", "TimeScale", "Duration"}


def test_live_duration_is_the_estimate() -> None:
    view = ManifestView(live_view().stream_indexes, is_live=True, duration=36_000_000_000)
    root = parse(render_client_manifest(view))
    assert root.get("Duration") == "36000000000"
    assert root.get("DVRWindowLength") == "0"  # the whole event
    assert root.get("LookaheadCount") == "2"


def test_custom_timescales() -> None:
    view = ManifestView(
        stream_indexes=(
            StreamIndexView("audio", "audio", (AUDIO,), [(1024, 96_000)], timescale=48_000),
        ),
        is_live=True,
        timescale=1000,
    )
    root = parse(render_client_manifest(view))
    assert root.get("TimeScale") == "1000"
    assert root.find("StreamIndex").get("TimeScale") == "48000"


# --- Url templates ----------------------------------------------------------------------------


def test_default_url_is_the_form_dash_js_substitutes() -> None:
    assert DEFAULT_URL == "QualityLevels({bitrate})/Fragments({name}={start time})"
    root = parse(render_client_manifest(live_view()))
    urls = [s.get("Url") for s in root.findall("StreamIndex")]
    assert urls == [
        "QualityLevels({bitrate})/Fragments(video={start time})",
        "QualityLevels({bitrate})/Fragments(audio={start time})",
    ]
    # What dash.js does with it: literal replacement of these two tokens.
    media = urls[0].replace("{bitrate}", "$Bandwidth$").replace("{start time}", "$Time$")
    assert media == "QualityLevels($Bandwidth$)/Fragments(video=$Time$)"


def test_custom_url_keeps_its_placeholders_and_gets_the_name() -> None:
    url = "QualityLevels({Bitrate},{CustomAttributes})/Fragments({name}={start_time})"
    view = ManifestView(
        (StreamIndexView("audio", "audio_eng", (AUDIO,), [(0, 1)], url=url),), is_live=True
    )
    stream = parse(render_client_manifest(view)).find("StreamIndex")
    assert stream.get("Url") == (
        "QualityLevels({Bitrate},{CustomAttributes})/Fragments(audio_eng={start_time})"
    )


# --- escaping ---------------------------------------------------------------------------------


def test_everything_is_escaped() -> None:
    odd = TrackInfo(
        "audio", 'a&b"<c>', 2, 64_000, 'AA"L', "11&90", sampling_rate=44_100, channels=1
    )
    view = ManifestView(
        (
            StreamIndexView(
                "audio",
                'a&b"<c>',
                (odd,),
                [(0, 1)],
                language="en\t<US>",
                subtype="X&Y",
                url="QualityLevels({bitrate})/Fragments({name}={start time})?q=1&r=<2>",
            ),
        ),
        is_live=True,
    )
    data = render_client_manifest(view)
    stream = parse(data).find("StreamIndex")
    assert stream.get("Name") == 'a&b"<c>'
    assert stream.get("Language") == "en\t<US>"  # the tab survives attribute normalisation
    assert stream.get("Subtype") == "X&Y"
    assert stream.get("Url") == 'QualityLevels({bitrate})/Fragments(a&b"<c>={start time})?q=1&r=<2>'
    level = stream.find("QualityLevel")
    assert (level.get("FourCC"), level.get("CodecPrivateData")) == ('AA"L', "11&90")


def test_characters_xml_cannot_carry_become_replacement_characters() -> None:
    view = ManifestView(
        (StreamIndexView("video", "vid\x00eo\x1b", (VIDEO_HI,), [(0, 1)]),), is_live=True
    )
    stream = parse(render_client_manifest(view)).find("StreamIndex")
    assert stream.get("Name") == "vid\ufffdeo\ufffd"


def test_non_ascii_is_utf8() -> None:
    view = ManifestView(
        (StreamIndexView("audio", "audio", (AUDIO,), [(0, 1)], language="français"),),
        is_live=True,
    )
    data = render_client_manifest(view)
    assert "français".encode() in data
    assert parse(data).find("StreamIndex").get("Language") == "français"


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2", "2.1", "1.0", ""])
def test_unknown_version_is_refused(version: str) -> None:
    with pytest.raises(ValueError, match=r"2\.0 or 2\.2"):
        render_client_manifest(ManifestView(live_view().stream_indexes, True, version=version))


def test_stream_index_without_quality_levels_is_refused() -> None:
    view = ManifestView((StreamIndexView("video", "video", (), [(0, 1)]),), is_live=True)
    with pytest.raises(ValueError, match="no QualityLevel"):
        render_client_manifest(view)


# --- speed ------------------------------------------------------------------------------------


def test_two_hour_window_of_four_stream_indexes(capsys: pytest.CaptureFixture[str]) -> None:
    # 2 hours of 2-second fragments: 3,600 per StreamIndex; audio durations
    # alternate so that 2.2 cannot fold them.
    video = [(i * TWO_S, TWO_S) for i in range(3600)]
    audio = []
    start = 21_333
    for i in range(3600):
        duration = 20_053_333 if i % 2 == 0 else 19_840_000
        audio.append((start, duration))
        start += duration
    streams = (
        StreamIndexView("video", "video", (VIDEO_HI, VIDEO_LO), video),
        StreamIndexView("video", "video_angle2", (VIDEO_HI, VIDEO_LO), video),
        StreamIndexView("audio", "audio", (AUDIO,), audio, language="eng"),
        StreamIndexView("audio", "audio_fra", (AUDIO,), audio, language="fra"),
    )
    timings = {}
    for version in ("2.0", "2.2"):
        view = ManifestView(
            streams, is_live=True, version=version, dvr_window_length=72_000_000_000
        )
        render_client_manifest(view)  # warm up
        rounds = 20
        began = time.perf_counter()
        for _ in range(rounds):
            data = render_client_manifest(view)
        timings[version] = ((time.perf_counter() - began) / rounds, len(data))
        root = parse(data)
        for stream in root.findall("StreamIndex"):
            assert stream.get("Chunks") == "3600"
            assert len(expand(stream)) == 3600
        count = len(root.findall("StreamIndex/c"))
        assert count == (4 * 3600 if version == "2.0" else 1 + 1 + 3600 + 3600)
    with capsys.disabled():
        for version, (seconds, size) in timings.items():
            print(
                f"\nclient manifest {version}, 4 StreamIndexes x 3,600 fragments:"
                f" {seconds * 1000:.2f} ms, {size:,} bytes"
            )
