"""HLS and DASH documents from a presentation view: URLs, variants, keys, windows."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from lxml import etree

from smoothlive.outputs.formats import (
    DASH_CMAF,
    HLS_CMAF,
    HLS_TS,
    HlsOptions,
    NoSegments,
    key_of,
    output_route,
    render_dash,
    render_hls_media,
    render_hls_multivariant,
)
from smoothlive.outputs.segments import Segmenter, segments_of
from smoothlive.outputs.smooth import ManifestView, StreamIndexView
from tests.unit.test_archive_writer import TRACKS

S = 10_000_000
VIDEO = next(t for t in TRACKS if t.kind == "video")
AUDIO = next(t for t in TRACKS if t.kind == "audio")
LOW = replace(VIDEO, bitrate=150_000, max_width=160, max_height=90)
HIGH = replace(VIDEO, bitrate=3_500_000, max_width=1280, max_height=720)


def view(seconds: int = 10, audio_seconds: int | None = None, languages=(None,),
         discontinuities=frozenset()) -> ManifestView:
    video = StreamIndexView("video", "video", (HIGH, VIDEO, LOW),
                            [(t * S, S) for t in range(seconds)],
                            discontinuities=discontinuities)
    audios = []
    for language in languages:
        name = f"audio_{language}" if language else "audio"
        audios.append(StreamIndexView(
            "audio", name, (replace(AUDIO, language=language, name="audio"),),
            [(t * S + 2_666, S) for t in range(audio_seconds or seconds)], language=language))
    return ManifestView((video, *audios), is_live=True)


@pytest.mark.parametrize(("path", "kind", "fmt", "extra"), [
    ("/a/b.isml/Manifest(format=m3u8-aapl)", "manifest", HLS_TS, {}),
    ("/a/b.isml/manifest(FORMAT=M3U8-AAPL).m3u8", "manifest", HLS_TS, {"extension": "m3u8"}),
    ("/a/b.ism/Manifest(format=mpd-time-cmaf).mpd", "manifest", DASH_CMAF, {}),
    ("/b.isml/QualityLevels(300000)/Manifest(video,format=m3u8-cmaf).m3u8", "playlist",
     HLS_CMAF, {"bitrate": 300000, "name": "video"}),
    ("/b.isml/QualityLevels(64000)/Fragments(audio=123,format=m3u8-aapl).ts", "segment",
     HLS_TS, {"time": 123, "name": "audio"}),
    ("/b.isml/QualityLevels(1)/Fragments(video=i,format=mpd-time-csf).mp4", "init",
     "mpd-time-csf", {}),
    ("/b.isml/Keys(7).key", "key", "", {"key": 7}),
])
def test_routes(path, kind, fmt, extra):
    found = output_route(path)
    assert found is not None and found.kind == kind and found.format == fmt
    for name, value in extra.items():
        assert getattr(found, name) == value
    assert found.archive == path.split("/Manifest")[0].split("/Quality")[0].endswith(".ism") \
        or found.kind == "key"


@pytest.mark.parametrize("path", [
    "/b.isml/QualityLevels(1)/Fragments(video=0,format=m3u8-aapl)",  # no extension
    "/b.isml/QualityLevels(1)/Fragments(video=0,format=m3u8-aapl).m4s",  # wrong one
    "/b.isml/QualityLevels(1)/Fragments(video=0,format=mpd-time-cmaf).ts",
    "/b.isml/QualityLevels(1)/Fragments(video=i,format=m3u8-aapl).mp4",  # TS has no init
    "/b.isml/Manifest(format=m3u8-aapl).mpd",
    "/b.isml/Manifest(format=smooth)",
    "/b.isml/QualityLevels(1)/Manifest(video,format=mpd-time-cmaf).m3u8",
    "/b.isml/Manifest",
])
def test_wrong_forms_are_not_routes(path):
    assert output_route(path) is None


def test_max_bit_rate_leaves_out_variants_but_never_all():
    text = render_hls_multivariant(view(), HLS_TS, HlsOptions(max_bit_rate=1_000_000)).decode()
    assert "RESOLUTION=1280x720" not in text
    assert text.count("#EXT-X-STREAM-INF") == 2
    low = render_hls_multivariant(view(), HLS_TS, HlsOptions(max_bit_rate=1_000)).decode()
    assert low.count("#EXT-X-STREAM-INF") == 1 and "RESOLUTION=160x90" in low


def test_variants_count_their_audio_and_codecs_only_when_asked():
    plain = render_hls_multivariant(view(), HLS_TS, HlsOptions()).decode()
    assert "CODECS" not in plain
    average = re.search(r"AVERAGE-BANDWIDTH=(\d+),RESOLUTION=320x180", plain)
    assert int(average.group(1)) == VIDEO.bitrate + AUDIO.bitrate
    coded = render_hls_multivariant(view(), HLS_CMAF, HlsOptions(include_codecs=True),
                                    {("video", VIDEO.bitrate): 25.0}).decode()
    line = next(x for x in coded.splitlines() if "RESOLUTION=320x180" in x)
    assert 'CODECS="avc1.42C00D,mp4a.40.2"' in line and "FRAME-RATE=25.000" in line
    assert coded.startswith("#EXTM3U\n#EXT-X-VERSION:6")


def test_languages_are_renditions_of_one_group():
    text = render_hls_multivariant(view(languages=("eng", "fra")), HLS_TS,
                                   HlsOptions()).decode()
    media = [x for x in text.splitlines() if x.startswith("#EXT-X-MEDIA")]
    assert len(media) == 2
    assert 'LANGUAGE="eng"' in media[0] and "DEFAULT=YES" in media[0]
    assert 'LANGUAGE="fra"' in media[1] and "DEFAULT=NO" in media[1]
    assert all('AUDIO="audio"' in x for x in text.splitlines() if "STREAM-INF" in x)


def _segmenter(v: ManifestView, target: int = 2 * S, finished: bool = False) -> Segmenter:
    video = v.stream_indexes[0]
    return segments_of(video.chunks, target, S, video.discontinuities, finished=finished)


def test_media_playlists_share_segments_and_audio_waits_for_its_fragments():
    v = view(seconds=10, audio_seconds=7)
    segmenter = _segmenter(v)
    video = render_hls_media(v, "video", HLS_TS, segmenter, live=True, options=HlsOptions(),
                             target=2).decode()
    audio = render_hls_media(v, "audio", HLS_TS, segmenter, live=True, options=HlsOptions(),
                             target=2).decode()
    assert video.count("#EXTINF:2.000,") == 4  # 0..8 s closed, 8..10 still open
    # Audio up to 7 s: only the segments whose audio has all arrived.
    assert re.findall(r"Fragments\(audio=(\d+)", audio) == ["0", str(2 * S), str(4 * S)]
    assert "#EXT-X-ENDLIST" not in video
    ended = render_hls_media(v, "video", HLS_TS, _segmenter(v, finished=True), live=False,
                             options=HlsOptions(), target=2).decode()
    assert ended.rstrip().endswith("#EXT-X-ENDLIST") and ended.count("#EXTINF") == 5
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in ended


def test_no_segment_yet_is_not_a_playlist():
    v = view(seconds=1)
    with pytest.raises(NoSegments):
        render_hls_media(v, "video", HLS_TS, _segmenter(v), live=True, options=HlsOptions(),
                         target=2)


def test_restarts_are_discontinuities_and_their_count_slides_out():
    v = view(seconds=12, discontinuities=frozenset({6 * S}))
    segmenter = _segmenter(v)
    text = render_hls_media(v, "video", HLS_TS, segmenter, live=True, options=HlsOptions(),
                            target=2, anchor=1_800_000_000.0).decode()
    lines = text.splitlines()
    at = lines.index(next(x for x in lines if "video=60000000" in x))
    assert "#EXT-X-DISCONTINUITY" in lines[at - 3:at]
    assert "#EXT-X-PROGRAM-DATE-TIME:2027-01-15T08:00:00.000Z" in text
    segmenter.trim(8 * S)
    slid = render_hls_media(v, "video", HLS_TS, segmenter, live=True, options=HlsOptions(),
                            target=2).decode()
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in slid
    assert "#EXT-X-MEDIA-SEQUENCE:4" in slid


def test_encrypted_playlists_name_the_key_of_each_rotation_period():
    v = view(seconds=12)
    options = HlsOptions(encrypted=True, key_rotation=4.0)
    text = render_hls_media(v, "video", HLS_TS, _segmenter(v), live=True, options=options,
                            target=2, key_uri=lambda n: f"../Keys({n}).key?token=t").decode()
    keys = re.findall(r'#EXT-X-KEY:METHOD=AES-128,URI="\.\./Keys\((\d+)\)\.key\?token=t"', text)
    assert keys == ["0", "1", "2"]  # a new key every 4 s: 0-4, 4-8, 8-10
    assert key_of(3.99, 4.0) == 0 and key_of(4.0, 4.0) == 1 and key_of(99.0, 0) == 0


def test_dash_lists_the_same_chunks_as_smooth():
    v = view(seconds=6)
    mpd = etree.fromstring(render_dash(v, DASH_CMAF, live=True, anchor=1_800_000_000.0,
                                       published_at=1_800_000_006.0, now=1_800_000_006.5,
                                       time_url="http://h/time", window=None))
    ns = "{urn:mpeg:dash:schema:mpd:2011}"
    assert mpd.get("type") == "dynamic"
    assert mpd.get("availabilityStartTime") == "2027-01-15T08:00:00.000Z"
    assert mpd.find(f"{ns}UTCTiming").get("value") == "http://h/time"
    first = mpd.find(f".//{ns}S")
    assert (first.get("t"), first.get("d"), first.get("r")) == ("0", str(S), "5")
    bandwidths = [r.get("bandwidth") for r in mpd.iter(f"{ns}Representation")]
    assert bandwidths == ["3500000", "300000", "150000", "64000"]
