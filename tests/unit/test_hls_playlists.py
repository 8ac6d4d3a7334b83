"""HLS media and multivariant playlists (RFC 8216, draft-pantos-hls-rfc8216bis).

Expected playlists are written out by hand. ``parse_media`` reads a media
playlist the way a player does (RFC 8216 section 6.3): each segment's media
sequence number, discontinuity sequence number, key in force and date, the
dates extrapolated from the last EXT-X-PROGRAM-DATE-TIME and the EXTINFs.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smoothlive.media.codecs import codecs_string
from smoothlive.media.model import TrackInfo
from smoothlive.outputs.hls import (
    HlsKey,
    HlsSegment,
    MediaPlaylist,
    Rendition,
    Variant,
    hls_version,
    render_media_playlist,
    render_multivariant,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
KEY_A = HlsKey("AES-128", "https://keys.example/a")
KEY_B = HlsKey("AES-128", "https://keys.example/b", iv=bytes(range(16)))

# --- a small parser ------------------------------------------------------------

# RFC 8216 4.2: AttributeName=AttributeValue, comma-separated; a quoted-string
# holds no '"', CR or LF.
_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^",\s]+)(,|$)')
_SEGMENT_TAGS = {"EXT-X-DISCONTINUITY", "EXT-X-KEY", "EXT-X-PROGRAM-DATE-TIME", "EXT-X-MAP"}
_DATE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z")


def attributes(text: str) -> dict[str, str]:
    """An attribute list, quotes kept; fails on anything RFC 8216 4.2 does not allow."""
    found: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _ATTRIBUTE.match(text, position)
        assert match, f"bad attribute list at {text[position:]!r}"
        assert match[1] not in found, f"{match[1]} twice"
        found[match[1]] = match[2]
        position = match.end()
    assert not text.endswith(","), text
    return found


def lines_of(data: bytes) -> list[str]:
    """The lines, after the checks every playlist passes (RFC 8216 4.1)."""
    assert isinstance(data, bytes)
    text = data.decode("utf-8")
    assert not text.startswith("\ufeff")
    assert text.endswith("\n")
    assert "\r" not in text
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", text)
    lines = text[:-1].split("\n")
    assert lines[0] == "#EXTM3U"
    assert all(line and line == line.strip() for line in lines), "blank or padded line"
    return lines


@dataclass
class Segment:
    sequence: int
    discontinuity_sequence: int
    duration: str
    uri: str
    discontinuity: bool
    key: dict[str, str] | None  # the EXT-X-KEY in force, None when clear
    date_ms: int | None  # the date a player gives it, ms since 1970
    tags: list[str] = field(default_factory=list)  # the tags written before it


@dataclass
class Media:
    header: dict[str, str]
    segments: list[Segment]
    ended: bool
    map: dict[str, str] | None

    @property
    def version(self) -> int:
        return int(self.header["EXT-X-VERSION"])

    @property
    def target(self) -> int:
        return int(self.header["EXT-X-TARGETDURATION"])

    @property
    def dated(self) -> list[int]:
        """Positions of the segments with their own EXT-X-PROGRAM-DATE-TIME."""
        return [
            i
            for i, s in enumerate(self.segments)
            if any(t.startswith("EXT-X-PROGRAM-DATE-TIME") for t in s.tags)
        ]


def parse_media(data: bytes) -> Media:
    lines = lines_of(data)
    header: dict[str, str] = {}
    segments: list[Segment] = []
    pending: list[str] = []
    duration: str | None = None
    key: dict[str, str] | None = None
    map_: dict[str, str] | None = None
    discontinuities = 0
    date_ms: int | None = None
    ended = False
    for line in lines[1:]:
        assert not ended, "nothing after EXT-X-ENDLIST here"
        if not line.startswith("#"):
            assert duration is not None, f"{line!r} has no EXTINF"
            sequence = int(header.get("EXT-X-MEDIA-SEQUENCE", "0")) + len(segments)
            discontinuity = "EXT-X-DISCONTINUITY" in pending
            if discontinuity:
                discontinuities += 1
            if discontinuity and not any(t.startswith("EXT-X-PROGRAM") for t in pending):
                date_ms = None  # no mapping across a discontinuity without a new date
            for tag in pending:
                name, _, value = tag.partition(":")
                if name == "EXT-X-KEY":
                    found = attributes(value)
                    key = None if found["METHOD"] == "NONE" else found
                elif name == "EXT-X-PROGRAM-DATE-TIME":
                    match = _DATE.fullmatch(value)
                    assert match, value
                    moment = datetime.fromisoformat(match[1]).replace(tzinfo=UTC)
                    date_ms = (moment - T0) // timedelta(milliseconds=1) + int(match[2])
            ds = int(header.get("EXT-X-DISCONTINUITY-SEQUENCE", "0")) + discontinuities
            segments.append(
                Segment(sequence, ds, duration, line, discontinuity, key, date_ms, pending)
            )
            if date_ms is not None:
                whole, _, fraction = duration.partition(".")
                date_ms += int(whole) * 1000 + int(fraction or "0")
            pending, duration = [], None
            continue
        name, _, value = line[1:].partition(":")
        if name == "EXTINF":
            assert duration is None, "two EXTINFs"
            assert value.endswith(","), "EXTINF needs its comma (4.3.2.1)"
            duration = value[:-1]
        elif name == "EXT-X-ENDLIST":
            ended = True
        elif name == "EXT-X-MAP":
            assert not segments and map_ is None
            map_ = attributes(value)
            assert key is None and not any(t.startswith("EXT-X-KEY") for t in pending)
        elif name in _SEGMENT_TAGS:
            pending.append(line[1:])
        else:
            assert not segments and not pending, f"{name} after the first segment"
            assert name not in header, f"{name} twice"
            header[name] = value
    assert not pending and duration is None, "tags after the last URI"
    return Media(header, segments, ended, map_)


def window(first: int, last: int, **kwargs: object) -> list[HlsSegment]:
    return [HlsSegment(n, 2.0, f"seg{n}.ts", **kwargs) for n in range(first, last + 1)]  # type: ignore[arg-type]


def render(segments: list[HlsSegment], **kwargs: object) -> bytes:
    return render_media_playlist(MediaPlaylist(segments, **kwargs))  # type: ignore[arg-type]


# --- media playlists: layout ---------------------------------------------------


def test_vod_playlist_by_hand() -> None:
    segments = [
        HlsSegment(0, 2.0, "seg0.ts"),
        HlsSegment(1, 2.0, "seg1.ts"),
        HlsSegment(2, 1.5, "seg2.ts"),
    ]
    data = render(segments, ended=True, playlist_type="VOD")
    assert data == (
        b"#EXTM3U\n"
        b"#EXT-X-VERSION:3\n"
        b"#EXT-X-TARGETDURATION:2\n"
        b"#EXT-X-MEDIA-SEQUENCE:0\n"
        b"#EXT-X-PLAYLIST-TYPE:VOD\n"
        b"#EXT-X-INDEPENDENT-SEGMENTS\n"
        b"#EXTINF:2.000,\n"
        b"seg0.ts\n"
        b"#EXTINF:2.000,\n"
        b"seg1.ts\n"
        b"#EXTINF:1.500,\n"
        b"seg2.ts\n"
        b"#EXT-X-ENDLIST\n"
    )
    parse_media(data)


def test_live_fmp4_playlist_by_hand() -> None:
    # EXT-X-MAP needs version 6 (RFC 8216 4.3.2.5, section 7), so the default
    # 3 is raised; DISCONTINUITY-SEQUENCE, START and ALLOW-CACHE (version < 7).
    segments = [
        HlsSegment(41, 2.002, "v/41.m4s", program_date_time=T0),
        HlsSegment(42, 1.998, "v/42.m4s", discontinuity=True),
    ]
    data = render(
        segments,
        target_duration=4,
        discontinuity_sequence=3,
        map_uri="v/init.mp4",
        allow_cache=False,
        start_offset=-12,
        playlist_type="EVENT",
    )
    assert data.decode() == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:6\n"
        "#EXT-X-TARGETDURATION:4\n"
        "#EXT-X-MEDIA-SEQUENCE:41\n"
        "#EXT-X-DISCONTINUITY-SEQUENCE:3\n"
        "#EXT-X-PLAYLIST-TYPE:EVENT\n"
        "#EXT-X-ALLOW-CACHE:NO\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXT-X-START:TIME-OFFSET=-12.000\n"
        '#EXT-X-MAP:URI="v/init.mp4"\n'
        "#EXT-X-PROGRAM-DATE-TIME:2024-05-01T12:00:00.000Z\n"
        "#EXTINF:2.002,\n"
        "v/41.m4s\n"
        "#EXT-X-DISCONTINUITY\n"
        "#EXTINF:1.998,\n"
        "v/42.m4s\n"
    )
    media = parse_media(data)
    assert [s.discontinuity_sequence for s in media.segments] == [3, 4]
    assert media.map == {"URI": '"v/init.mp4"'}


def test_optional_tags_are_left_out() -> None:
    data = render(window(0, 1), independent_segments=False)
    assert data == (
        b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
        b"#EXTINF:2.000,\nseg0.ts\n#EXTINF:2.000,\nseg1.ts\n"
    )


def test_allow_cache_is_not_written_from_version_7() -> None:
    # RFC 8216 section 7: "The EXT-X-ALLOW-CACHE tag was removed in protocol version 7."
    assert b"#EXT-X-ALLOW-CACHE:YES\n" in render(window(0, 1), allow_cache=True)
    assert b"ALLOW-CACHE" not in render(window(0, 1), allow_cache=True, version=7)


def test_start_precise() -> None:
    data = render(window(0, 9), start_offset=6.5, start_precise=True)
    assert b"\n#EXT-X-START:TIME-OFFSET=6.500,PRECISE=YES\n" in data
    assert parse_media(data).header["EXT-X-START"] == "TIME-OFFSET=6.500,PRECISE=YES"


# --- EXTINF and EXT-X-TARGETDURATION ----------------------------------------------


@pytest.mark.parametrize(
    ("duration", "version", "extinf"),
    [
        (2.0, 3, "2.000"),
        (10, 3, "10.000"),
        (1.9733333, 3, "1.973"),  # AAC: 1024 x 87 samples at 45.15 kHz, more or less
        (2.002, 3, "2.002"),
        (2.0016, 3, "2.002"),
        (0.5, 3, "0.500"),
        # Below version 3 "durations MUST be integers", rounded (4.3.2.1).
        (2.4, 2, "2"),
        (2.5, 2, "3"),
        (1.9733333, 1, "2"),
    ],
)
def test_extinf(duration: float, version: int, extinf: str) -> None:
    data = render([HlsSegment(0, duration, "a.ts")], version=version)
    assert f"\n#EXTINF:{extinf},\na.ts\n".encode() in data
    assert parse_media(data).version == version


@pytest.mark.parametrize(
    ("durations", "version", "target"),
    [
        ([2.0, 2.0], 3, 2),
        # Up to version 5 TARGETDURATION is the maximum duration (bis section 8):
        # 2.002 s needs 3.
        ([2.0, 2.002], 3, 3),
        ([2.0, 2.002], 5, 3),
        # From version 6 it bounds the EXTINFs rounded to the nearest integer
        # (RFC 8216 4.3.3.1): 2.002 rounds to 2, 2.5 to 3, 2.499 to 2.
        ([2.0, 2.002], 6, 2),
        ([2.5], 6, 3),
        ([2.499], 6, 2),
        ([6.006, 5.9], 7, 6),
        # At least 1 (bis 4.4.3.1), also when everything rounds to 0.
        ([0.3, 0.4], 6, 1),
        ([0.3, 0.4], 3, 1),
    ],
)
def test_target_duration_computed(durations: list[float], version: int, target: int) -> None:
    segments = [HlsSegment(n, d, f"{n}.ts") for n, d in enumerate(durations)]
    media = parse_media(render(segments, version=version))
    assert media.target == target
    assert media.version == version


def test_fmp4_target_duration_rounds() -> None:
    # EXT-X-MAP lifts the version to 6, where the rounded rule applies.
    media = parse_media(render([HlsSegment(0, 2.002, "a.m4s")], map_uri="init.mp4"))
    assert (media.version, media.target) == (6, 2)


@pytest.mark.parametrize(
    ("duration", "given", "version", "written"),
    [
        (2.0, 10, 3, 10),
        (2.002, 2, 3, 3),
        (2.5, 2, 6, 3),
        (2.499, 2, 6, 2),
    ],
)
def test_explicit_target_duration_is_a_floor(
    duration: float, given: int, version: int, written: int
) -> None:
    # A live caller fixes it (RFC 8216 6.2.1: it must not change between
    # reloads); a segment longer than it still raises it, as 4.3.3.1 requires.
    segments = [HlsSegment(0, duration, "a.ts")]
    assert parse_media(render(segments, target_duration=given, version=version)).target == written


@pytest.mark.parametrize("duration", [0, -2.0, float("nan"), float("inf")])
def test_bad_durations_are_refused(duration: float) -> None:
    with pytest.raises(ValueError, match="duration"):
        render([HlsSegment(0, duration, "a.ts")])


# --- media sequence and discontinuities ---------------------------------------------


def test_live_window_slides() -> None:
    # RFC 8216 6.2.2: MEDIA-SEQUENCE grows by one per segment removed.
    first = parse_media(render(window(10, 19)))
    second = parse_media(render(window(11, 20)))
    assert first.header["EXT-X-MEDIA-SEQUENCE"] == "10"
    assert second.header["EXT-X-MEDIA-SEQUENCE"] == "11"
    assert [s.sequence for s in first.segments] == list(range(10, 20))
    assert [s.sequence for s in second.segments] == list(range(11, 21))
    assert [s.uri for s in second.segments] == [f"seg{n}.ts" for n in range(11, 21)]


def test_discontinuity_sliding_out_counts_in_discontinuity_sequence() -> None:
    def segments(first: int) -> list[HlsSegment]:
        return [
            HlsSegment(n, 2.0, f"{n}.ts", discontinuity=n == 12) for n in range(first, first + 5)
        ]

    # The caller counts the discontinuities that left (RFC 8216 6.2.2); the
    # tag stays while its segment is the first of the window.
    views = [
        parse_media(render(segments(10))),
        parse_media(render(segments(12))),
        parse_media(render(segments(13), discontinuity_sequence=1)),
    ]
    assert "EXT-X-DISCONTINUITY-SEQUENCE" not in views[0].header
    assert "EXT-X-DISCONTINUITY-SEQUENCE" not in views[1].header
    assert views[2].header["EXT-X-DISCONTINUITY-SEQUENCE"] == "1"
    assert [s.discontinuity for s in views[0].segments] == [False, False, True, False, False]
    assert views[1].segments[0].tags == ["EXT-X-DISCONTINUITY"]
    assert not any(s.discontinuity for s in views[2].segments)
    # What a player derives agrees across the reloads: segment 14 is in
    # discontinuity sequence 1 in all three.
    numbers = [{s.sequence: s.discontinuity_sequence for s in v.segments} for v in views]
    assert numbers[0][14] == numbers[1][14] == numbers[2][14] == 1
    assert numbers[0][11] == 0


def test_sequence_numbers_must_be_consecutive() -> None:
    with pytest.raises(ValueError, match="consecutive"):
        render([HlsSegment(3, 2.0, "a.ts"), HlsSegment(5, 2.0, "b.ts")])


def test_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one segment"):
        render([])


def test_bad_header_values_are_refused() -> None:
    with pytest.raises(ValueError, match="EVENT or VOD"):
        render(window(0, 1), playlist_type="LIVE")
    with pytest.raises(ValueError, match="negative"):
        render(window(0, 1), discontinuity_sequence=-1)
    with pytest.raises(ValueError, match="version"):
        render(window(0, 1), version=0)
    with pytest.raises(ValueError, match="finite"):
        render(window(0, 1), start_offset=float("nan"))


# --- EXT-X-PROGRAM-DATE-TIME ------------------------------------------------------


def dated(first: int, count: int, duration: float = 2.0) -> list[HlsSegment]:
    return [
        HlsSegment(
            n,
            duration,
            f"{n}.ts",
            program_date_time=T0 + timedelta(seconds=(n - first) * duration),
        )
        for n in range(first, first + count)
    ]


def test_date_format() -> None:
    # RFC 8216 4.3.2.6: ISO 8601 with a time zone and milliseconds; UTC "Z".
    # Microseconds are truncated; other zones are converted to UTC.
    moment = datetime(2024, 2, 29, 23, 59, 59, 123_999, tzinfo=UTC)
    data = render([HlsSegment(0, 2.0, "a.ts", program_date_time=moment)])
    assert b"\n#EXT-X-PROGRAM-DATE-TIME:2024-02-29T23:59:59.123Z\n#EXTINF:2.000,\na.ts\n" in data
    paris = datetime(2024, 3, 1, 1, 0, 0, 50_000, tzinfo=timezone(timedelta(hours=2)))
    data = render([HlsSegment(0, 2.0, "a.ts", program_date_time=paris)])
    assert b"#EXT-X-PROGRAM-DATE-TIME:2024-02-29T23:00:00.050Z\n" in data


def test_naive_dates_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        render([HlsSegment(0, 2.0, "a.ts", program_date_time=datetime(2024, 1, 1))])


def test_continuous_dates_are_written_once() -> None:
    media = parse_media(render(dated(100, 30)))
    assert media.dated == [0]
    # A player extrapolates the rest exactly (RFC 8216 6.3.3).
    assert [s.date_ms for s in media.segments] == [2000 * i for i in range(30)]


def test_dates_after_a_discontinuity_and_a_jump() -> None:
    segments = dated(0, 8)
    # 3: an encoder restart, 30 s later. 6: the clock jumps 5 s without one.
    segments[3:] = [
        HlsSegment(
            s.sequence,
            2.0,
            s.uri,
            discontinuity=s.sequence == 3,
            program_date_time=s.program_date_time + timedelta(seconds=30 if s.sequence < 6 else 35),  # type: ignore[operator]
        )
        for s in segments[3:]
    ]
    media = parse_media(render(segments))
    assert media.dated == [0, 3, 6]
    assert [s.date_ms for s in media.segments] == [
        0, 2000, 4000, 36000, 38000, 40000, 47000, 49000,
    ]  # fmt: skip


def test_date_after_every_discontinuity_even_on_time() -> None:
    # A discontinuity (an encoder restart) can break the date mapping, so the
    # first segment after one gets its own date even when it continues the
    # clock.
    segments = [
        HlsSegment(
            n, 2.0, f"{n}.ts", discontinuity=n == 2, program_date_time=T0 + timedelta(seconds=2 * n)
        )
        for n in range(4)
    ]
    media = parse_media(render(segments))
    assert media.dated == [0, 2]
    assert media.segments[2].tags == [
        "EXT-X-DISCONTINUITY",
        "EXT-X-PROGRAM-DATE-TIME:2024-05-01T12:00:04.000Z",
    ]


def test_dates_drifting_from_the_written_extinfs_are_rewritten() -> None:
    # Segments of 148/75 s (1.97333...) are written 1.973: a player adding
    # the EXTINFs falls 1/3 ms behind per segment. Starts (true, truncated
    # to ms) 0, 1973, 3946, 5920, 7893, 9866, 11840; extrapolated from the
    # first tag 0, 1973, 3946, 5919, 7892, 9865, 11838: 2 ms off at 6, where
    # a new tag goes; from 11840 on: 13813, 15786, 17759 against 13813,
    # 15786, 17760.
    segments = [
        HlsSegment(
            n,
            148 / 75,
            f"{n}.ts",
            program_date_time=T0 + timedelta(microseconds=n * 1_000_000 * 148 / 75),
        )
        for n in range(10)
    ]
    media = parse_media(render(segments))
    assert media.dated == [0, 6]
    truth = [(s.program_date_time - T0) // timedelta(milliseconds=1) for s in segments]  # type: ignore[operator]
    assert all(abs(s.date_ms - true) <= 1 for s, true in zip(media.segments, truth, strict=True))  # type: ignore[operator]


def test_first_dated_segment_gets_the_tag() -> None:
    segments = [HlsSegment(0, 2.0, "0.ts"), *dated(1, 3)]
    media = parse_media(render(segments))
    assert media.dated == [1]


# --- EXT-X-KEY ------------------------------------------------------------------


def test_keys_written_where_they_change() -> None:
    plan = [None, None, KEY_A, KEY_A, KEY_B, KEY_B, None, HlsKey("NONE"), KEY_A]
    segments = [HlsSegment(n, 2.0, f"{n}.ts", key=k) for n, k in enumerate(plan)]
    media = parse_media(render(segments))
    tags = {i: s.tags for i, s in enumerate(media.segments) if s.tags}
    assert tags == {
        2: ['EXT-X-KEY:METHOD=AES-128,URI="https://keys.example/a"'],
        4: [
            'EXT-X-KEY:METHOD=AES-128,URI="https://keys.example/b",'
            "IV=0x000102030405060708090A0B0C0D0E0F"
        ],
        6: ["EXT-X-KEY:METHOD=NONE"],  # back to clear (RFC 8216 4.3.2.4)
        8: ['EXT-X-KEY:METHOD=AES-128,URI="https://keys.example/a"'],
    }
    in_force = [None if s.key is None else s.key["URI"] for s in media.segments]
    assert in_force == [
        None, None, '"https://keys.example/a"', '"https://keys.example/a"',
        '"https://keys.example/b"', '"https://keys.example/b"', None, None,
        '"https://keys.example/a"',
    ]  # fmt: skip
    # An explicit IV needs version 2 (section 7): within the default 3.
    assert media.version == 3


def test_key_before_the_first_segment_of_the_window() -> None:
    segments = [HlsSegment(n, 2.0, f"{n}.ts", key=HlsKey("AES-128", "k")) for n in range(5, 8)]
    data = render(segments)
    assert (
        b'#EXT-X-MEDIA-SEQUENCE:5\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-KEY:METHOD=AES-128,URI="k"\n#EXTINF:2.000,\n5.ts\n#EXTINF'
        in data
    )
    assert data.count(b"EXT-X-KEY") == 1  # equal keys, distinct objects: one tag


def test_iv_is_0x_and_32_upper_case_hex_digits() -> None:
    key = HlsKey("AES-128", "k", iv=bytes.fromhex("00ff" * 8))
    data = render([HlsSegment(0, 2.0, "a.ts", key=key)])
    assert b",IV=0x00FF00FF00FF00FF00FF00FF00FF00FF\n" in data


def test_clear_first_segment_needs_no_key_tag() -> None:
    data = render([HlsSegment(0, 2.0, "a.ts", key=HlsKey("NONE")), HlsSegment(1, 2.0, "b.ts")])
    assert b"EXT-X-KEY" not in data


def test_key_format_needs_version_5() -> None:
    fairplay = HlsKey(
        "SAMPLE-AES",
        "skd://id",
        key_format="com.apple.streamingkeydelivery",
        key_format_versions="1",
    )
    media = parse_media(render([HlsSegment(0, 2.0, "a.ts", key=fairplay)]))
    assert media.version == 5
    assert media.segments[0].key == {
        "METHOD": "SAMPLE-AES",
        "URI": '"skd://id"',
        "KEYFORMAT": '"com.apple.streamingkeydelivery"',
        "KEYFORMATVERSIONS": '"1"',
    }
    # "identity" is the default: not written, no version 5.
    identity = HlsKey("AES-128", "k", key_format="identity")
    media = parse_media(render([HlsSegment(0, 2.0, "a.ts", key=identity)]))
    assert media.version == 3
    assert media.segments[0].key == {"METHOD": "AES-128", "URI": '"k"'}


def test_low_version_raised_by_features() -> None:
    # Version 1 asked; an IV lifts it to 2 (integer EXTINFs still), a
    # KEYFORMAT to 5 (so decimal EXTINFs).
    iv = HlsKey("AES-128", "k", iv=bytes(16))
    media = parse_media(render([HlsSegment(0, 2.4, "a.ts", key=iv)], version=1))
    assert (media.version, media.segments[0].duration) == (2, "2")
    formatted = HlsKey("AES-128", "k", key_format="com.example")
    media = parse_media(render([HlsSegment(0, 2.4, "a.ts", key=formatted)], version=1))
    assert (media.version, media.segments[0].duration) == (5, "2.400")


@pytest.mark.parametrize(
    "key",
    [
        HlsKey("NONE", "k"),
        HlsKey("NONE", iv=bytes(16)),
        HlsKey("AES-128"),
        HlsKey("AES-128", "k", iv=bytes(8)),
        HlsKey("AES-256-GCM", "k"),
        HlsKey("aes-128", "k"),
    ],
)
def test_bad_keys_are_refused(key: HlsKey) -> None:
    with pytest.raises(ValueError):
        render([HlsSegment(0, 2.0, "a.ts", key=key)])


def test_hls_version_table() -> None:
    # RFC 8216 section 7 / bis section 8.
    assert hls_version(float_durations=False) == 1
    assert hls_version(float_durations=False, program_date_time=True) == 1
    assert hls_version(float_durations=False, explicit_iv=True) == 2
    assert hls_version() == 3
    assert hls_version(explicit_iv=True, program_date_time=True) == 3
    assert hls_version(byte_range=True) == 4
    assert hls_version(i_frames_only=True) == 4
    assert hls_version(key_format=True) == 5
    assert hls_version(sample_aes=True) == 5
    assert hls_version(fmp4=True, i_frames_only=True) == 5
    assert hls_version(fmp4=True) == 6
    assert hls_version(fmp4=True, key_format=True, explicit_iv=True) == 6


# --- text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "written"),
    [
        ("QualityLevels(2000000)/Fragments(video=0)", "QualityLevels(2000000)/Fragments(video=0)"),
        ("https://cdn.example/a/b.ts?x=1&y=[2]", "https://cdn.example/a/b.ts?x=1&y=[2]"),
        ("a b.ts", "a%20b.ts"),
        ('a"b.ts', "a%22b.ts"),
        ("a\nb.ts", "a%0Ab.ts"),
        ("a\r\nb.ts", "a%0D%0Ab.ts"),
        ("caf\u00e9.ts", "caf%C3%A9.ts"),
        ("a%20b.ts", "a%20b.ts"),  # already encoded: left alone
    ],
)
def test_uris_are_percent_encoded(uri: str, written: str) -> None:
    media = parse_media(render([HlsSegment(0, 2.0, uri, key=HlsKey("AES-128", uri))], map_uri=uri))
    assert media.segments[0].uri == written
    assert media.segments[0].key["URI"] == f'"{written}"'  # type: ignore[index]
    assert media.map == {"URI": f'"{written}"'}


@pytest.mark.parametrize("uri", ["", "#seg.ts"])
def test_unusable_uris_are_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="segment URI"):
        render([HlsSegment(0, 2.0, uri)])


# --- multivariant playlists --------------------------------------------------------

AVC_MAIN = "00000001674D401EECA0A02FF970110000030001000003003C0F162D960000000168EBECB2"
VIDEO = TrackInfo("video", "video", 1, 1_000_000, "H264", AVC_MAIN, max_width=640, max_height=360)
AAC_LC = TrackInfo("audio", "audio", 2, 128_000, "AACL", "1190", sampling_rate=48000, channels=2)
HE_AAC = TrackInfo("audio", "audio_fra", 3, 64_000, "AACH", "", sampling_rate=48000, channels=2)


def test_multivariant_by_hand() -> None:
    renditions = [
        Rendition("AUDIO", "aud", "English", "audio/eng.m3u8", language="en", default=True,
                  channels=2, codecs=codecs_string(AAC_LC)),
        Rendition("AUDIO", "aud", "Fran\u00e7ais", "audio/fra.m3u8", language="fr",
                  channels=2, codecs=codecs_string(HE_AAC)),
    ]  # fmt: skip
    variants = [
        # BANDWIDTH: the video peak plus the group's highest audio peak (4.3.4.2.1).
        Variant("video/2000.m3u8", 2_000_000 + 128_000, average_bandwidth=1_800_000,
                resolution=(1280, 720), frame_rate=25, codecs="avc1.64001F", audio_group="aud"),
        Variant("video/1000.m3u8", 1_000_000 + 128_000, resolution=(640, 360),
                frame_rate=30000 / 1001, codecs=codecs_string(VIDEO), audio_group="aud"),
    ]  # fmt: skip
    data = render_multivariant(variants, renditions)
    assert data.decode("utf-8") == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English",LANGUAGE="en",DEFAULT=YES,'
        'AUTOSELECT=YES,CHANNELS="2",URI="audio/eng.m3u8"\n'
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="Fran\u00e7ais",LANGUAGE="fr",DEFAULT=NO,'
        'AUTOSELECT=YES,CHANNELS="2",URI="audio/fra.m3u8"\n'
        "#EXT-X-STREAM-INF:BANDWIDTH=2128000,AVERAGE-BANDWIDTH=1800000,RESOLUTION=1280x720,"
        'FRAME-RATE=25.000,CODECS="avc1.64001F,mp4a.40.2,mp4a.40.5",AUDIO="aud"\n'
        "video/2000.m3u8\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=1128000,RESOLUTION=640x360,FRAME-RATE=29.970,"
        'CODECS="avc1.4D401E,mp4a.40.2,mp4a.40.5",AUDIO="aud"\n'
        "video/1000.m3u8\n"
    )
    lines = lines_of(data)
    for line in lines:
        if line.startswith("#EXT-X-MEDIA:") or line.startswith("#EXT-X-STREAM-INF:"):
            attributes(line.partition(":")[2])


def test_multivariant_muxed_audio_and_no_codecs() -> None:
    # A rendition without URI: its audio is in the variant's playlist
    # (4.3.4.2.1). CODECS only when given; the variant's own codecs are not
    # repeated.
    renditions = [Rendition("AUDIO", "a", "Main", "", default=True, autoselect=True,
                            codecs="mp4a.40.2")]  # fmt: skip
    data = render_multivariant(
        [
            Variant("v.m3u8", 500_000, audio_group="a"),
            Variant("w.m3u8", 600_000, codecs="avc1.4D401E, mp4a.40.2", audio_group="a"),
            Variant("audio.m3u8", 128_000, codecs="mp4a.40.2"),
        ],
        renditions,
        version=4,
        independent_segments=False,
    )
    assert data == (
        b"#EXTM3U\n"
        b"#EXT-X-VERSION:4\n"
        b'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="Main",DEFAULT=YES,AUTOSELECT=YES\n'
        b'#EXT-X-STREAM-INF:BANDWIDTH=500000,AUDIO="a"\n'
        b"v.m3u8\n"
        b'#EXT-X-STREAM-INF:BANDWIDTH=600000,CODECS="avc1.4D401E,mp4a.40.2",AUDIO="a"\n'
        b"w.m3u8\n"
        b'#EXT-X-STREAM-INF:BANDWIDTH=128000,CODECS="mp4a.40.2"\n'
        b"audio.m3u8\n"
    )


def test_multivariant_uris_are_encoded_and_names_normalized() -> None:
    renditions = [Rendition("AUDIO", "a", "Cafe\u0301", 'x"y.m3u8', default=True)]
    data = render_multivariant([Variant("v w.m3u8", 1, audio_group="a")], renditions)
    text = data.decode("utf-8")
    assert 'NAME="Caf\u00e9"' in text  # NFC (RFC 8216 4.1)
    assert 'URI="x%22y.m3u8"' in text
    assert "\nv%20w.m3u8\n" in text


def _audio(name: str, default: bool = False, **kwargs: object) -> Rendition:
    return Rendition("AUDIO", "aud", name, f"{name}.m3u8", default=default, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("renditions", "variants", "message"),
    [
        ([_audio("en", True)], [], "at least one variant"),
        ([_audio("en", True)], [Variant("v", 1, audio_group="other")], "unknown audio group"),
        ([_audio("en"), _audio("fr")], [Variant("v", 1, audio_group="aud")], "exactly one DEFAULT"),
        ([_audio("en", True), _audio("fr", True)], [Variant("v", 1)], "exactly one DEFAULT"),
        ([_audio("en", True), _audio("en")], [Variant("v", 1)], "same NAME"),
        ([_audio("en", True, autoselect=False)], [Variant("v", 1)], "AUTOSELECT"),
        ([Rendition("SUBTITLES", "s", "en", "s.m3u8", default=True)], [Variant("v", 1)], "AUDIO"),
        ([_audio('say "hi"', True)], [Variant("v", 1)], "double quote"),
        ([_audio("a\nb", True)], [Variant("v", 1)], "control character"),
        ([_audio("en", True, language="en us")], [Variant("v", 1)], "RFC 5646"),
        ([_audio("en", True, language='e"n')], [Variant("v", 1)], "RFC 5646"),
        ([_audio("en", True, channels=0)], [Variant("v", 1)], "CHANNELS"),
        ([], [Variant("v", 0)], "BANDWIDTH"),
        ([], [Variant("v", 1, average_bandwidth=0)], "AVERAGE-BANDWIDTH"),
        ([], [Variant("v", 1, resolution=(0, 360))], "width"),
        ([], [Variant("v", 1, frame_rate=float("nan"))], "FRAME-RATE"),
        ([], [Variant("v", 1, codecs=" , ")], "empty CODECS"),
        ([], [Variant("v", 1, codecs='avc1"')], "double quote"),
        ([], [Variant("", 1)], "variant URI"),
    ],
)
def test_multivariant_refusals(
    renditions: list[Rendition], variants: list[Variant], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        render_multivariant(variants, renditions)


def test_group_codecs_from_every_member() -> None:
    # RFC 8216 4.3.4.1.1: CODECS lists every format of every rendition of the group.
    renditions = [
        Rendition("AUDIO", "aud", "Stereo", "s.m3u8", default=True, codecs="mp4a.40.2"),
        Rendition("AUDIO", "aud", "Surround", "d.m3u8", codecs="ec-3"),
        Rendition("AUDIO", "aud", "Commentary", "c.m3u8", codecs="mp4a.40.2"),
    ]
    data = render_multivariant(
        [Variant("v", 1, codecs="avc1.4D401E", audio_group="aud")], renditions
    )
    assert b'CODECS="avc1.4D401E,mp4a.40.2,ec-3"' in data


# --- size and properties ---------------------------------------------------------------


def test_two_hour_window_of_two_second_segments(capsys: pytest.CaptureFixture[str]) -> None:
    count = 3600
    key = HlsKey("AES-128", "https://keys.example/live")
    segments = [
        HlsSegment(
            7000 + i,
            2.0,
            f"QualityLevels(2000000)/Fragments(video={i * 20_000_000})",
            discontinuity=i == 1800,
            program_date_time=T0 + timedelta(seconds=2 * i + (60 if i >= 1800 else 0)),
            key=key if i < 3000 else None,
        )
        for i in range(count)
    ]
    playlist = MediaPlaylist(segments, target_duration=2, discontinuity_sequence=4)
    render_media_playlist(playlist)  # warm up
    rounds = 20
    began = time.perf_counter()
    for _ in range(rounds):
        data = render_media_playlist(playlist)
    seconds = (time.perf_counter() - began) / rounds
    with capsys.disabled():
        print(f"\nHLS media playlist, 3,600 segments: {seconds * 1000:.2f} ms, {len(data):,} bytes")
    media = parse_media(data)
    assert len(media.segments) == count
    assert media.header["EXT-X-MEDIA-SEQUENCE"] == "7000"
    assert [s.sequence for s in media.segments] == list(range(7000, 7000 + count))
    assert {s.duration for s in media.segments} == {"2.000"}
    assert media.dated == [0, 1800]
    assert media.segments[-1].date_ms == 2 * 3599 * 1000 + 60_000
    assert [i for i, s in enumerate(media.segments) if s.discontinuity] == [1800]
    assert media.segments[1799].discontinuity_sequence == 4
    assert media.segments[1800].discontinuity_sequence == 5
    assert media.segments[2999].key is not None and media.segments[3000].key is None
    assert data.count(b"#EXT-X-KEY") == 2
    assert media.segments[123].uri == "QualityLevels(2000000)/Fragments(video=2460000000)"
    assert not media.ended
    # 6 header lines (EXTM3U to INDEPENDENT-SEGMENTS), 2 per segment, 2 keys,
    # 2 dates, 1 discontinuity.
    assert data.count(b"\n") == 6 + 2 * count + 2 + 2 + 1


_keys = st.sampled_from([None, KEY_A, KEY_B, HlsKey("NONE")])


@settings(max_examples=200, deadline=None)
@given(
    first=st.integers(0, 10**9),
    plan=st.lists(
        st.tuples(
            st.integers(1, 12_000),  # duration, ms
            st.booleans(),  # discontinuity
            st.integers(-5, 5),  # clock jitter, ms
            _keys,
        ),
        min_size=1,
        max_size=40,
    ),
    discontinuity_sequence=st.integers(0, 100),
    version=st.integers(1, 7),
)
def test_players_read_back_what_was_given(
    first: int,
    plan: list[tuple[int, bool, int, HlsKey | None]],
    discontinuity_sequence: int,
    version: int,
) -> None:
    segments = []
    clock = 0
    for i, (ms, discontinuity, jitter, key) in enumerate(plan):
        clock += jitter + (60_000 if discontinuity else 0)
        segments.append(
            HlsSegment(
                first + i,
                ms / 1000,
                f"s/{first + i}.ts",
                discontinuity=discontinuity,
                program_date_time=T0 + timedelta(milliseconds=clock),
                key=key,
            )
        )
        clock += ms
    media = parse_media(
        render(segments, discontinuity_sequence=discontinuity_sequence, version=version)
    )
    assert media.version >= version
    floats = media.version >= 3
    expected_ds = discontinuity_sequence
    for given_segment, read in zip(segments, media.segments, strict=True):
        expected_ds += given_segment.discontinuity
        assert read.sequence == given_segment.sequence
        assert read.uri == given_segment.uri
        assert read.discontinuity == given_segment.discontinuity
        assert read.discontinuity_sequence == expected_ds
        if floats:
            assert float(read.duration) == pytest.approx(given_segment.duration, abs=0.0005)
        else:
            assert abs(int(read.duration) - given_segment.duration) <= 0.5
        # Every EXTINF within the target duration (rounded from version 6).
        limit = (
            round(given_segment.duration + 1e-9) if media.version >= 6 else given_segment.duration
        )
        assert limit <= media.target
        # The date a player extrapolates is within a millisecond, whatever the
        # EXTINF rounding (integers below version 3) and the clock jitter.
        true_ms = (given_segment.program_date_time - T0) // timedelta(milliseconds=1)  # type: ignore[operator]
        assert read.date_ms is not None and abs(read.date_ms - true_ms) <= 1
        key = given_segment.key if given_segment.key != HlsKey("NONE") else None
        if key is None:
            assert read.key is None
        else:
            assert read.key is not None and read.key["URI"] == f'"{key.uri}"'
            assert ("IV" in read.key) == (key.iv is not None)
