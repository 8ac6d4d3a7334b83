"""The rules of live ingest, driven with real ffmpeg output replayed over HTTP.

The captures in tests/fixtures/ingest are the exact bytes two ffmpeg outputs
POSTed; replaying them (chunked, as ffmpeg sends) makes resends, redundant
encoders, restarts, corrupt and lost streams exact and quick.
"""

from __future__ import annotations

import base64
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from lxml import etree

from smoothlive.management.errors import MgmtError
from smoothlive.media.boxes import iter_boxes
from smoothlive.media.fragments import read_moof, retimed
from tests.e2e.conftest import PASSWORDS
from tests.e2e.test_live_smooth import chunk_times, tfxd_time, wait_for
from tests.e2e.test_management_api import assert_error, create, set_state, state_of

CAPTURES = Path(__file__).parents[1] / "fixtures" / "ingest"
HIGH = (CAPTURES / "ch1-300k.ismv").read_bytes()
LOW = (CAPTURES / "ch1-150k.ismv").read_bytes()
SECOND = 10_000_000


def shifted(capture: bytes, seconds: float) -> bytes:
    """The capture with every fragment moved by ``seconds`` (an encoder clock offset)."""
    out = []
    for header in iter_boxes(capture):
        data = capture[header.offset:header.end]
        if header.type == b"moof":
            fragment = read_moof(data)
            start = fragment.tfxd_time
            if start >= 1 << 63:
                start -= 1 << 64
            new_start = start + int(seconds * SECOND)
            if new_start >= 0:
                data = retimed(data, new_start)
        out.append(data)
    return b"".join(out)


def chunks(data: bytes, size: int = 16384) -> Iterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset:offset + size]


def push(url: str, data: bytes, **kwargs) -> httpx.Response:
    return httpx.post(url, content=chunks(data), timeout=30, **kwargs)


def manifest(http: httpx.Client, point: str) -> etree._Element:
    response = http.get(f"{point}/Manifest")
    assert response.status_code == 200, response.text
    return etree.fromstring(response.content)


def stream_index(root: etree._Element, kind: str) -> etree._Element:
    return next(si for si in root.findall("StreamIndex") if si.get("Type") == kind)


@pytest.fixture
def point(server, operator, point_name) -> str:
    assert create(operator, point_name, "<AutoRestartOnEncoderReconnect>true"
                  "</AutoRestartOnEncoderReconnect>").status_code == 201
    assert set_state(operator, point_name, "Started").status_code == 200
    return point_name


def test_a_replayed_capture_is_published_whole(server, operator, point):
    response = push(f"{server.url}{point}/Streams(ch1-300k)", HIGH)
    assert response.status_code == 200, response.text
    root = manifest(operator, point)
    video, audio = stream_index(root, "video"), stream_index(root, "audio")
    assert chunk_times(video) == [(i * SECOND, SECOND) for i in range(4)]
    audio_chunks = chunk_times(audio)
    # ffmpeg's first audio fragment starts 21.3 ms before zero: re-stamped to zero.
    assert audio_chunks[0][0] == 0
    assert len(audio_chunks) == 4
    first = operator.get(f"{point}/QualityLevels(64000)/Fragments(audio=0)")
    assert tfxd_time(first.content) == audio_chunks[0]
    assert state_of(operator, point) == "Stopped"  # the POST ended normally: end of stream


def test_empty_post_checks_the_endpoint(server, operator, point):
    response = httpx.post(f"{server.url}{point}/Streams(probe)", content=b"", timeout=10)
    assert response.status_code == 200
    assert state_of(operator, point) == "Starting"


def test_resent_fragments_are_dropped(server, operator, point):
    url = f"{server.url}{point}/Streams(ch1-300k)"
    # The encoder resends everything (a retry after a network error), in one POST.
    response = push(url, HIGH[: len(HIGH) - 8] + shifted(HIGH, 0)[24:])
    assert response.status_code == 200, response.text
    video = stream_index(manifest(operator, point), "video")
    assert chunk_times(video) == [(i * SECOND, SECOND) for i in range(4)]


def test_redundant_encoders_give_one_copy(server, operator, point):
    url = f"{server.url}{point}/Streams(ch1-300k)"
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(push(url, HIGH).status_code))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [200, 200]
    video = stream_index(manifest(operator, point), "video")
    assert chunk_times(video) == [(i * SECOND, SECOND) for i in range(4)]
    assert len(video.findall("QualityLevel")) == 1


def test_two_bitrates_share_one_audio_track(server, operator, point):
    url = f"{server.url}{point}/Streams"
    for name, data in (("ch1-300k", HIGH), ("ch1-150k", LOW)):
        httpx.post(f"{url}({name})", content=chunks(data[:-8]), timeout=30)  # no mfra yet
    root = manifest(operator, point)
    assert sorted(q.get("Bitrate") for q in stream_index(root, "video").findall("QualityLevel")
                  ) == ["150000", "300000"]
    assert [q.get("Bitrate") for q in stream_index(root, "audio").findall("QualityLevel")] == [
        "64000"]


def test_continuing_timestamps_continue_the_timeline(server, operator, point):
    url = f"{server.url}{point}/Streams(ch1-300k)"
    assert push(url, HIGH).status_code == 200
    assert state_of(operator, point) == "Stopped"
    # AutoRestartOnEncoderReconnect: the encoder comes back where it left off.
    assert push(url, shifted(HIGH, 4)).status_code == 200
    video = stream_index(manifest(operator, point), "video")
    assert chunk_times(video) == [(i * SECOND, SECOND) for i in range(8)]
    assert len(video.findall("c[@t]")) == 1  # no discontinuity


def test_timestamps_that_jump_back_start_a_discontinuity(server, operator, point):
    url = f"{server.url}{point}/Streams(ch1-300k)"
    assert push(url, shifted(HIGH, 100)).status_code == 200
    assert push(url, HIGH).status_code == 200  # the encoder restarted its clock at zero
    video = stream_index(manifest(operator, point), "video")
    times = chunk_times(video)
    assert len(times) == 8
    assert all(a[0] < b[0] for a, b in itertools.pairwise(times))  # never backwards
    assert times[4][0] >= times[3][0] + times[3][1]
    # The first chunk after the restart carries its own t: a new timeline starts there.
    restarted = video.findall("c")[4]
    assert restarted.get("t") == str(times[4][0])
    # HLS starts a segment there with EXT-X-DISCONTINUITY; DASH an explicit S@t.
    playlist = operator.get(f"{point}/QualityLevels(300000)/Manifest(video,format=m3u8-aapl)"
                            ".m3u8").text
    lines = playlist.splitlines()
    restart_uri = f"Fragments(video={times[4][0]},format=m3u8-aapl).ts"
    assert restart_uri in lines, playlist
    assert "#EXT-X-DISCONTINUITY" in lines[lines.index(restart_uri) - 3:lines.index(restart_uri)]
    assert playlist.count("#EXT-X-DISCONTINUITY\n") == 1
    mpd = operator.get(f"{point}/Manifest(format=mpd-time-csf)").text
    assert f'<S t="{times[4][0]}"' in mpd


def test_events_url_form_is_accepted(server, operator, point):
    response = push(f"{server.url}{point}/Events(match-1)/Streams(ch1-300k)", HIGH)
    assert response.status_code == 200, response.text
    assert chunk_times(stream_index(manifest(operator, point), "video"))


def test_push_to_idle_point_without_autostart_is_refused(server, operator, point_name):
    create(operator, point_name)
    response = push(f"{server.url}{point_name}/Streams(x)", HIGH)
    assert_error(response, MgmtError.PUBLISHING_POINT_NOT_STARTED)
    assert state_of(operator, point_name) == "Idle"


def test_push_to_idle_point_with_autostart_starts_it(server, operator, point_name):
    create(operator, point_name, "<AutoStart>true</AutoStart>")
    assert push(f"{server.url}{point_name}/Streams(x)", HIGH[:-8]).status_code == 200
    assert chunk_times(stream_index(manifest(operator, point_name), "video"))


def test_push_to_stopped_point_without_autorestart_is_refused(server, operator, point_name):
    create(operator, point_name)
    set_state(operator, point_name, "Started")
    set_state(operator, point_name, "Stopped")
    response = push(f"{server.url}{point_name}/Streams(x)", HIGH)
    assert_error(response, MgmtError.STATE_TRANSITION_INVALID)


def test_push_to_unknown_point_is_not_found(server):
    assert_error(push(f"{server.url}/nowhere.isml/Streams(x)", HIGH),
                 MgmtError.PUBLISHING_POINT_NOT_FOUND)


def test_forwarded_or_remote_pushes_need_credentials(server, operator, point):
    url = f"{server.url}{point}/Streams(ch1-300k)"
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    response = push(url, HIGH, headers=forwarded)
    assert_error(response, MgmtError.AUTHENTICATION_IS_REQUIRED)
    assert any(c.startswith("Digest ") for c in response.headers.get_list("www-authenticate"))
    assert_error(push(url, HIGH, headers=forwarded, auth=("reader", PASSWORDS["reader"])),
                 MgmtError.ACCESS_DENIED)
    # Digest answers the 401 by sending the request again: a body that can be re-sent.
    accepted = httpx.post(url, content=HIGH, headers=forwarded, timeout=30,
                          auth=httpx.DigestAuth("operator", PASSWORDS["operator"]))
    assert accepted.status_code == 200, accepted.text


def test_corrupt_stream_ends_alone(server, operator, point, point_name):
    other = point_name.replace(".isml", "-other.isml")
    create(operator, other, "<AutoStart>true</AutoStart>")
    garbage = HIGH[:3000] + b"\x00\x00\x00\x05junk" + HIGH[3000:]
    results = {}
    threads = [
        threading.Thread(target=lambda: results.__setitem__(
            "bad", push(f"{server.url}{point}/Streams(bad)", garbage))),
        threading.Thread(target=lambda: results.__setitem__(
            "good", push(f"{server.url}{other}/Streams(good)", HIGH))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results["bad"].status_code == 400
    assert "corrupt stream" in results["bad"].text
    assert results["good"].status_code == 200
    assert chunk_times(stream_index(manifest(operator, other), "video"))
    assert "corrupt stream, ended" in server.log()


def test_truncated_stream_keeps_the_fragments_before(server, operator, point):
    cut = HIGH[: len(HIGH) // 2]
    response = push(f"{server.url}{point}/Streams(ch1-300k)", cut)
    assert response.status_code == 400
    assert chunk_times(stream_index(manifest(operator, point), "video"))


def test_lost_connection_keeps_the_point_started_for_the_grace_period(tmp_path):
    from tests.e2e.harness import Server

    srv = Server(tmp_path / "content", tmp_path / "state",
                 extra_args=("--reconnect-grace", "2")).start()
    try:
        with client_for(srv) as http:
            create(http, "/grace.isml")
            set_state(http, "/grace.isml", "Started")
            parts = urlsplit(srv.url)
            with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
                sock.sendall(f"POST /grace.isml/Streams(s) HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n".encode())
                body = HIGH[:-8]
                for piece in chunks(body):
                    sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                wait_for(lambda: state_of(http, "/grace.isml") == "Started", 10, "Started")
            # The connection is gone without an end of stream: still Started...
            lost_at = time.monotonic()
            assert state_of(http, "/grace.isml") == "Started"
            # ...until the grace period is over.
            wait_for(lambda: state_of(http, "/grace.isml") == "Stopped", 15, "Stopped")
            assert time.monotonic() - lost_at >= 1.5
    finally:
        srv.stop()


def client_for(srv) -> httpx.Client:
    token = base64.b64encode(f"admin:{srv.admin_password}".encode()).decode()
    return httpx.Client(base_url=srv.url, headers={"Authorization": f"Basic {token}"},
                        timeout=20)



def _pieces(capture: bytes) -> tuple[bytes, list[tuple[bytes, int]], bytes]:
    """(ftyp+moov, [(moof+mdat, tfxd time)], the rest) of a capture, in order."""
    boxes = [(h.type, capture[h.offset:h.end]) for h in iter_boxes(capture)]
    first = next(i for i, (kind, _) in enumerate(boxes) if kind == b"moof")
    fragments, i = [], first
    while i < len(boxes) and boxes[i][0] == b"moof":
        moof, mdat = boxes[i][1], boxes[i + 1][1]
        fragments.append((moof + mdat, read_moof(moof).tfxd_time))
        i += 2
    return (b"".join(data for _, data in boxes[:first]), fragments,
            b"".join(data for _, data in boxes[i:]))


def _video_pieces(fragments: list[tuple[bytes, int]]) -> list[int]:
    """Positions of the video fragments (their times are whole seconds from zero)."""
    return [i for i, (_, time) in enumerate(fragments) if time % SECOND == 0 and time < 1 << 63]


def test_a_fragment_sent_out_of_order_is_listed_in_place(server, operator, point):
    head, fragments, tail = _pieces(HIGH)
    video = _video_pieces(fragments)
    second, third = video[1], video[2]
    fragments[second], fragments[third] = fragments[third], fragments[second]
    response = push(f"{server.url}{point}/Streams(ch1-300k)",
                    head + b"".join(data for data, _ in fragments) + tail)
    assert response.status_code == 200, response.text
    index = stream_index(manifest(operator, point), "video")
    assert chunk_times(index) == [(i * SECOND, SECOND) for i in range(4)]
    late = operator.get(f"{point}/QualityLevels(300000)/Fragments(video={SECOND})")
    assert late.status_code == 200 and tfxd_time(late.content) == (SECOND, SECOND)
    mpd = operator.get(f"{point}/Manifest(format=mpd-time-csf)").text
    assert f'<S t="{SECOND}"' not in mpd and f'<S t="{2 * SECOND}"' not in mpd
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    late_line = next(line for line in metrics.splitlines()
                     if line.startswith("smoothlive_ingest_late_total{")
                     and 'stream_index="video"' in line and point.strip("/") in line)
    assert late_line.endswith(" 1")


def test_a_missing_fragment_is_a_gap_in_every_format(server, operator, point):
    head, fragments, tail = _pieces(HIGH)
    missing = _video_pieces(fragments)[2]
    del fragments[missing]
    response = push(f"{server.url}{point}/Streams(ch1-300k)",
                    head + b"".join(data for data, _ in fragments) + tail)
    assert response.status_code == 200, response.text
    index = stream_index(manifest(operator, point), "video")
    assert chunk_times(index) == [(0, SECOND), (SECOND, SECOND), (3 * SECOND, SECOND)]
    assert index.findall("c")[-1].get("t") == str(3 * SECOND)
    assert len(chunk_times(stream_index(manifest(operator, point), "audio"))) == 4
    assert operator.get(
        f"{point}/QualityLevels(300000)/Fragments(video={2 * SECOND})").status_code == 404
    mpd = operator.get(f"{point}/Manifest(format=mpd-time-csf)").text
    assert f'<S t="{3 * SECOND}"' in mpd
    playlist = operator.get(f"{point}/QualityLevels(300000)/Manifest(video,format=m3u8-aapl)"
                            ".m3u8").text
    lines = playlist.splitlines()
    after = lines.index(f"Fragments(video={3 * SECOND},format=m3u8-aapl).ts")
    assert "#EXT-X-DISCONTINUITY" in lines[after - 3:after], playlist
