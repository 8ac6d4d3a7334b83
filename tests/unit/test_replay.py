"""``smoothlive replay``, the sans-IO parts: capture loading, re-stamping, planning, framing.

The fixtures are real ffmpeg ``-f ismv`` outputs (two bitrates, video track 1
and audio track 2, 1-second fragments; the first audio fragment starts 21.3 ms
before zero).
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import h11
import pytest

from smoothlive.auth.digest import DigestAuthority, digest_ha1
from smoothlive.media.boxes import TrackFragmentHeader, iter_boxes
from smoothlive.media.fragments import read_moof
from smoothlive.media.ingest import EndOfStream, Fragment, IngestParser
from smoothlive.media.model import FragmentData
from smoothlive.replay import (
    EMPTY_MFRA,
    LAST_CHUNK,
    Capture,
    Lockstep,
    Options,
    Target,
    TrackTimeline,
    chunk,
    copy_delays,
    digest_authorization,
    fragment_template,
    load_capture,
    parse_capture,
    parse_rate,
    parse_ts_offset,
    plan_sends,
    plan_timelines,
    point_urls,
    push_stream,
    request_head,
)
from tests.unit.test_fragments import _samples, _synthetic

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ingest"
SECOND = 10_000_000


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Capture:
    directory = tmp_path_factory.mktemp("capture")
    for name in ("ch1-300k", "ch1-150k"):
        (directory / f"{name}.ismv").write_bytes((FIXTURES / f"{name}.ismv").read_bytes())
    return load_capture(directory)


def _original_moofs(data: bytes) -> list[bytes]:
    return [data[b.offset:b.end] for b in iter_boxes(data) if b.type == b"moof"]


# -- loading and templates ---------------------------------------------------------------------


def test_a_capture_splits_into_header_fragments_and_mfra(capture: Capture) -> None:
    assert [f.stream_id for f in capture.files] == ["ch1-150k", "ch1-300k"]
    for capture_file in capture.files:
        data = (FIXTURES / f"{capture_file.stream_id}.ismv").read_bytes()
        assert [b.type for b in iter_boxes(capture_file.header)] == [b"ftyp", b"uuid", b"moov"]
        assert data.startswith(capture_file.header)
        assert capture_file.mfra == data[-8:] == EMPTY_MFRA  # ffmpeg's mfra is empty
        assert capture_file.timescales == {1: SECOND, 2: SECOND}
        assert not capture_file.truncated
        # Header + every moof and mdat + mfra is the file, byte for byte.
        body = capture_file.header + b"".join(
            f.moof + f.mdat for f in capture_file.fragments) + capture_file.mfra
        assert body == data
    # Shared timeline: every track has begun at 0 (audio's -21.3 ms is priming); ends at 4 s.
    assert (capture.start, capture.end, capture.span) == (0, 4, 4)


def test_templates_of_ffmpeg_fragments_are_the_captured_bytes(capture: Capture) -> None:
    for capture_file in capture.files:
        data = (FIXTURES / f"{capture_file.stream_id}.ismv").read_bytes()
        assert [f.moof for f in capture_file.fragments] == _original_moofs(data)


def test_rendering_changes_the_times_and_nothing_else(capture: Capture) -> None:
    for fragment in capture.files[0].fragments:
        new_time, new_duration = (1 << 60) + 12345, fragment.duration - 7
        moof = bytes(fragment.render(new_time, new_duration))
        assert len(moof) == len(fragment.moof)
        parsed, before = read_moof(moof), read_moof(fragment.moof)
        assert (parsed.tfxd_time, parsed.tfxd_duration) == (new_time, new_duration)
        changed = [i for i, (a, b) in enumerate(zip(moof, fragment.moof, strict=True)) if a != b]
        field = range(fragment.time_at, fragment.time_at + 16)
        assert changed and all(i in field for i in changed)
        assert parsed.truns == before.truns and parsed.tfhd == before.tfhd
        assert _samples(moof, fragment.mdat) == _samples(fragment.moof, fragment.mdat)
        assert fragment.render(fragment.time, fragment.duration) == fragment.moof


def test_a_version_0_tfxd_and_tfdt_become_64_bit_once() -> None:
    moof, mdat = _synthetic(TrackFragmentHeader(1), tfdt_version=0)
    template = fragment_template(FragmentData(1, 0, 30, moof, mdat))
    assert len(template.moof) == len(moof) + 8 + 4  # tfxd 32 -> 64 bits, tfdt 32 -> 64 bits
    parsed = read_moof(template.moof)
    assert (parsed.tfxd_version, parsed.tfdt_version) == (1, 1)
    assert _samples(template.moof, mdat) == _samples(moof, mdat)  # data offsets followed
    big = (1 << 40) + 3
    rendered = bytes(template.render(big, 29))
    parsed = read_moof(rendered)
    assert (parsed.tfxd_time, parsed.tfxd_duration, parsed.base_media_decode_time) == (
        big, 29, big)
    assert len(rendered) == len(template.moof)
    assert _samples(rendered, mdat) == _samples(moof, mdat)
    with pytest.raises(ValueError, match="negative"):
        template.render(-1, 30)


def test_a_truncated_capture_keeps_its_complete_fragments() -> None:
    data = (FIXTURES / "ch1-300k.ismv").read_bytes()
    capture_file = parse_capture(data[:-5000], "cut")
    assert capture_file.truncated
    assert len(capture_file.fragments) == 7
    with pytest.raises(ValueError, match="no moof"):
        parse_capture(data[:1000], "head")


# -- timestamp planning ------------------------------------------------------------------------


def _sends(capture: Capture, loops: int, ts_offset=0.0, wall_ns=None):
    kwargs = {"wall_ns": wall_ns} if wall_ns else {}
    timelines = plan_timelines(capture, ts_offset, **kwargs)
    return [list(plan_sends(f, t, loops)) for f, t in zip(capture.files, timelines, strict=True)]


def test_loops_are_contiguous_on_every_track(capture: Capture) -> None:
    for sends in _sends(capture, 3):
        assert len(sends) == 3 * 8
        for track in (1, 2):
            times = [(s.time, s.duration, s.loop) for s in sends if s.fragment.track_id == track]
            assert len(times) == 12
            for (t0, d0, _), (t1, _, _) in itertools.pairwise(times):
                assert t1 == t0 + d0  # within a loop and across loops
            # Loop k starts where loop k-1 ended: k * span after the capture's start.
            assert [t for t, _, loop in times[4::4]] == [4 * SECOND, 8 * SECOND]
            assert times[-1][0] + times[-1][1] == 12 * SECOND
        # Loop 0 keeps ffmpeg's priming fragment as captured; later loops cut it at the start.
        audio = [s for s in sends if s.fragment.track_id == 2]
        assert (audio[0].time, audio[0].duration) == (-213_333, 10_240_000)
        assert (audio[4].time, audio[4].duration) == (4 * SECOND, 10_026_667)
        assert audio[4].moof() != audio[0].fragment.moof


def test_both_files_get_identical_times(capture: Capture) -> None:
    first, second = _sends(capture, 2, ts_offset=2.5)
    assert [(s.fragment.track_id, s.time, s.duration, s.due) for s in first] == [
        (s.fragment.track_id, s.time, s.duration, s.due) for s in second]
    assert first[0].time == 25_000_000


def test_fragments_are_due_when_they_end(capture: Capture) -> None:
    sends = _sends(capture, 2)[0]
    assert [(s.fragment.track_id, s.due) for s in sends[:2]] == [
        (1, 1.0), (2, pytest.approx(1.0026667))]
    assert sends[8].due == 5.0  # loop 1's first video fragment: 4 s + its 1 s
    assert all(a.due <= b.due for a, b in itertools.pairwise(sends))


def test_ts_offset_now_stamps_the_capture_start_with_utc(capture: Capture) -> None:
    wall_ns = 1_700_000_000_123_456_789
    readings = []

    def clock() -> int:
        readings.append(wall_ns)
        return wall_ns

    files = _sends(capture, 2, "now", clock)
    assert len(readings) == 1  # one reading for every file: copies line up exactly
    now_ticks = wall_ns // 100
    for sends in files:
        video = [s for s in sends if s.fragment.track_id == 1]
        audio = [s for s in sends if s.fragment.track_id == 2]
        assert video[0].time == now_ticks == 17_000_000_001_234_567
        assert audio[0].time == now_ticks - 213_333
        assert video[4].time == audio[4].time == now_ticks + 4 * SECOND
        assert read_moof(bytes(video[4].moof())).tfxd_time == now_ticks + 4 * SECOND


def test_a_fragment_wholly_before_the_start_is_left_out_of_later_loops() -> None:
    timeline = TrackTimeline(timescale=1000, start=100, span=1000, offset=5)
    assert timeline.place(0, 50, 0) == (5, 50)
    assert timeline.place(0, 50, 1) is None
    assert timeline.place(60, 80, 1) == (1105, 40)
    assert timeline.place(300, 10, 2) == (2305, 10)
    assert timeline.due(140, 1) == pytest.approx(1.04)


def test_option_parsing() -> None:
    assert parse_ts_offset("now") == "now"
    assert parse_ts_offset("-1.5") == -1.5
    assert parse_rate("max") is None
    assert parse_rate("1x") == 1.0
    assert parse_rate("2.5x") == 2.5
    for bad in ("0x", "fast", "-1x", "nanx"):
        with pytest.raises(Exception, match="rate"):
            parse_rate(bad)
    with pytest.raises(Exception, match="now"):
        parse_ts_offset("later")
    assert point_urls("http://h/bench/ch{n}.isml", 3) == [
        "http://h/bench/ch1.isml", "http://h/bench/ch2.isml", "http://h/bench/ch3.isml"]
    assert point_urls("http://h/p{n}.isml", 2, first=51) == ["http://h/p51.isml",
                                                             "http://h/p52.isml"]
    assert point_urls("http://h/live.isml", 1) == ["http://h/live.isml"]
    with pytest.raises(ValueError, match=r"\{n\}"):
        point_urls("http://h/live.isml", 2)
    target = Target.parse("http://127.0.0.1:8080/live/ch1.isml/")
    assert (target.host, target.port, target.path, target.authority) == (
        "127.0.0.1", 8080, "/live/ch1.isml", "127.0.0.1:8080")
    assert target.stream_target("video 3000k") == "/live/ch1.isml/Streams(video%203000k)"
    assert Target.parse("https://[::1]/a.isml").authority == "[::1]"


async def test_lockstep_keeps_a_points_streams_within_the_slack() -> None:
    step = Lockstep(2, slack=1.0)
    step.advance(0, 0.0)
    assert not step.may_send(0, 1.0)  # not before every stream of the point is open
    step.advance(1, 0.0)
    assert step.may_send(0, 1.0)  # level with the others: the next fragment may go
    step.advance(0, 1.0)
    assert step.may_send(0, 1.0) and not step.may_send(0, 2.0)  # 2.0: beyond the slack
    assert step.may_send(1, 5.0)  # the slowest may always go: nobody waits forever
    stop = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(step.turn(0, 2.0, stop))
    await asyncio.sleep(0)
    assert not waiting.done()
    step.advance(1, 1.0)
    assert await waiting is True
    step.advance(0, 2.0)
    step.leave(1)  # ended or failed: the others go on alone
    assert step.may_send(0, 100.0)
    step = Lockstep(2, slack=1.0)
    step.advance(0, 0.0)
    waiting = asyncio.ensure_future(step.turn(0, 1.0, stop))
    stop.set_result(None)
    assert await waiting is False  # a stop wakes it


# -- HTTP ----------------------------------------------------------------------------------------


def test_the_chunked_framing_decodes_to_the_body() -> None:
    parts = [b"header", b"", bytearray(b"moof"), memoryview(b"mdat" * 1000)]
    wire = request_head("/p.isml/Streams(s)", "127.0.0.1:8080", [("Authorization", "Basic x")])
    wire += b"".join(bytes(piece) for piece in chunk(parts[0]))
    assert chunk(parts[1]) == []  # an empty chunk would end the body early
    wire += b"".join(bytes(piece) for piece in chunk(*parts[2:]))
    wire += LAST_CHUNK
    server = h11.Connection(h11.SERVER)
    server.receive_data(wire)
    request = server.next_event()
    assert isinstance(request, h11.Request)
    assert request.method == b"POST" and request.target == b"/p.isml/Streams(s)"
    headers = dict(request.headers)
    assert headers[b"transfer-encoding"] == b"chunked"
    assert headers[b"authorization"] == b"Basic x"
    body = []
    while True:
        event = server.next_event()
        if isinstance(event, h11.Data):
            body.append(event.data)
        else:
            assert isinstance(event, h11.EndOfMessage)
            break
    assert body == [b"header", b"moof" + b"mdat" * 1000]  # one chunk per moof+mdat


def test_digest_answer_passes_the_servers_check() -> None:
    authority = DigestAuthority(b"s" * 32, "smoothlive")
    for index in range(2):  # SHA-256, then MD5 (as ffmpeg takes), each with a fresh nonce
        challenge = authority.challenges(1000.0)[index]
        value = digest_authorization(challenge, "enc", "pw", "POST", "/a.isml/Streams(v)")
        result = authority.verify(
            value, "POST", 1001.0, lambda user, alg: digest_ha1(user, "smoothlive", "pw", alg))
        assert result.ok and result.uri == "/a.isml/Streams(v)"
        wrong = authority.verify(
            value, "POST", 1001.0, lambda user, alg: digest_ha1(user, "smoothlive", "x", alg))
        assert not wrong.ok


async def _serve(answer: int, *, send_continue: bool = True):
    """An in-process HTTP server (h11): what each request's body chunks were, per request."""
    bodies: list[list[bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER)
        received: list[bytes] = []
        bodies.append(received)
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request) and answer != 200:
                break  # refused before the body, as the ingest does
            elif isinstance(event, h11.Request) and send_continue:
                assert connection.they_are_waiting_for_100_continue
                interim = h11.InformationalResponse(status_code=100, headers=[])
                writer.write(connection.send(interim))
            elif isinstance(event, h11.Data):
                received.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
        body = b"<ErrorCode>0x1</ErrorCode><ErrorMessage>no</ErrorMessage>" * (answer != 200)
        writer.write(connection.send(h11.Response(status_code=answer, headers=[
            ("content-length", str(len(body)))])) + connection.send(h11.Data(data=body))
            + connection.send(h11.EndOfMessage()))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], bodies


@pytest.mark.parametrize("send_continue", [True, False])
async def test_a_push_is_what_the_ingest_parser_accepts(capture: Capture,
                                                        send_continue: bool) -> None:
    server, port, bodies = await _serve(200, send_continue=send_continue)
    capture_file = capture.files[1]
    timelines = plan_timelines(capture, 10.0)[1]
    loop = asyncio.get_running_loop()
    async with server:
        report = await push_stream(
            Target.parse(f"http://127.0.0.1:{port}/p.isml"), capture_file, timelines,
            Options(rate=None, loops=2, continue_timeout=0.2), 0.0, loop.create_future())
    assert (report.status, report.fragments, report.loops, report.error) == (200, 16, 2, None)
    (received,) = bodies
    assert received[0] == capture_file.header
    assert received[-1] == EMPTY_MFRA  # the times were rewritten: the capture's mfra is stale
    parser = IngestParser()
    events = [e for piece in received for e in parser.feed(piece)]
    fragments = [e.data for e in events if isinstance(e, Fragment)]
    assert isinstance(events[-1], EndOfStream)
    assert [(f.track_id, f.time) for f in fragments[:2]] == [(1, 100_000_000),
                                                            (2, 100_000_000 - 213_333)]
    assert fragments[8].time == 140_000_000 and fragments[9].time == 140_000_000
    assert sum(len(p) for p in received) == report.bytes


async def test_a_refused_push_sends_no_body_and_reports_why(capture: Capture) -> None:
    server, port, bodies = await _serve(404)
    loop = asyncio.get_running_loop()
    async with server:
        report = await push_stream(
            Target.parse(f"http://127.0.0.1:{port}/p.isml"), capture.files[0],
            plan_timelines(capture)[0], Options(rate=None), 0.0, loop.create_future())
    assert (report.status, report.fragments, report.bytes, report.error) == (404, 0, 0, "0x1 no")
    assert bodies == [[]]


def test_staggered_copies_start_spread_over_one_fragment():
    assert copy_delays(4, 2.0, stagger=True) == [0.0, 0.5, 1.0, 1.5]
    assert copy_delays(4, 2.0, stagger=False) == [0.0] * 4
    assert copy_delays(1, 2.0, stagger=True) == [0.0]
