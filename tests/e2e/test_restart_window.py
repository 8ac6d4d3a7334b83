"""The DVR window of an archiving point survives a restart of the server.

The capture of a real ffmpeg push is sent on a connection that stays open (a
live encoder), the server is killed with SIGKILL, and started again: the
point comes back Starting with the chunks it listed before, served from its
archive, and the encoder that reconnects continues that timeline. Then a
SIGTERM and another start: the point, Stopped by then, is watchable as it
was. A point that does not archive starts empty (its spool is not kept).
"""

from __future__ import annotations

import signal
import socket
from urllib.parse import urlsplit

import httpx
from lxml import etree

from tests.e2e.harness import Server
from tests.e2e.test_archive import archive_settings
from tests.e2e.test_ingest_rules import HIGH, SECOND, shifted
from tests.e2e.test_live_smooth import chunk_times, tfxd_time, wait_for
from tests.e2e.test_management_api import create, set_state, state_of

POINT = "/restart/window.isml"


def _video(http: httpx.Client) -> list[tuple[int, int]]:
    response = http.get(f"{POINT}/Manifest")
    if response.status_code != 200:
        return []
    video = etree.fromstring(response.content).find("StreamIndex[@Type='video']")
    return [] if video is None else chunk_times(video)


def _open_push(url: str, body: bytes) -> socket.socket:
    """An encoder's POST that sends ``body`` and stays open, as a live encoder's does."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=20)
    sock.sendall((f"POST {POINT}/Streams(ch1-300k) HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n").encode()
                 + b"%x\r\n" % len(body) + body + b"\r\n")
    return sock


def _push(url: str, body: bytes) -> int:
    return httpx.post(f"{url}{POINT}/Streams(ch1-300k)", content=iter([body]),
                      timeout=30).status_code


def _killed_while_live(server: Server, http: httpx.Client
                       ) -> tuple[list[tuple[int, int]], httpx.Response]:
    """kill -9 of ``server`` while an encoder's POST is open, once chunks are listed:
    the chunks listed then, and the first video fragment as served."""
    encoder = _open_push(server.url, HIGH[: len(HIGH) - 8])  # no end of stream
    try:
        listed = wait_for(lambda: len(v := _video(http)) >= 3 and v, 20, "listed chunks")
        first = http.get(f"{POINT}/QualityLevels(300000)/Fragments(video=0)")
        assert first.status_code == 200
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
    finally:
        encoder.close()
    server.process = None
    return listed, first


def test_the_dvr_window_comes_back_after_kill_9_and_sigterm(tmp_path):
    root, state = tmp_path / "content", tmp_path / "state"
    first = Server(root, state).start()
    password = first.admin_password
    with httpx.Client(base_url=first.url, auth=("admin", password), timeout=20) as http:
        assert create(http, POINT, archive_settings() + "<AutoRestartOnEncoderReconnect>true"
                      "</AutoRestartOnEncoderReconnect>").status_code == 201
        assert set_state(http, POINT, "Started").status_code == 200
        before, first_fragment = _killed_while_live(first, http)

    second = Server(root, state).start()
    try:
        with httpx.Client(base_url=second.url, auth=("admin", password), timeout=20) as http:
            assert state_of(http, POINT) == "Starting"  # waiting for its encoder
            restored = _video(http)
            assert restored[: len(before)] == before  # nothing listed before is gone
            again = http.get(f"{POINT}/QualityLevels(300000)/Fragments(video=0)")
            assert again.status_code == 200
            assert tfxd_time(again.content) == tfxd_time(first_fragment.content)
            assert again.content[again.content.index(b"mdat"):] == \
                first_fragment.content[first_fragment.content.index(b"mdat"):]
            # The encoder comes back where it left off: one timeline, no discontinuity.
            assert _push(second.url, shifted(HIGH, 4)) == 200
            after = _video(http)
            assert after == [(i * SECOND, SECOND) for i in range(8)]
            root_element = etree.fromstring(http.get(f"{POINT}/Manifest").content)
            assert len(root_element.find("StreamIndex[@Type='video']").findall("c[@t]")) == 1
            assert state_of(http, POINT) == "Stopped"  # that push ended its stream
        assert second.stop(signal.SIGTERM) == 0
    finally:
        second.stop()

    third = Server(root, state).start()
    try:
        with httpx.Client(base_url=third.url, auth=("admin", password), timeout=20) as http:
            assert state_of(http, POINT) == "Stopped"
            manifest = http.get(f"{POINT}/Manifest")
            assert manifest.status_code == 200
            assert etree.fromstring(manifest.content).get("IsLive") is None  # not live now
            assert _video(http) == after
            last = http.get(f"{POINT}/QualityLevels(300000)/Fragments(video={7 * SECOND})")
            assert last.status_code == 200 and tfxd_time(last.content) == (7 * SECOND, SECOND)
    finally:
        third.stop()
    for server in (first, second, third):
        assert "Traceback" not in server.log()


def test_a_point_that_does_not_archive_starts_empty(tmp_path):
    root, state = tmp_path / "content", tmp_path / "state"
    first = Server(root, state).start()
    password = first.admin_password
    with httpx.Client(base_url=first.url, auth=("admin", password), timeout=20) as http:
        assert create(http, POINT, "<Archive enabled=\"false\" />").status_code == 201
        assert set_state(http, POINT, "Started").status_code == 200
        _killed_while_live(first, http)
    second = Server(root, state).start()
    try:
        with httpx.Client(base_url=second.url, auth=("admin", password), timeout=20) as http:
            assert state_of(http, POINT) == "Starting"
            assert _video(http) == []
    finally:
        second.stop()
