"""hls.js and dash.js play smoothlive's live HLS (TS and fMP4) and DASH in Chromium.

One server and one ffmpeg push (two bitrates and audio) shared by the
module; the player page comes from its own origin, so CORS is exercised.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.player import Browser, player_url, wait_until
from tests.browser.test_player_harness import PLAY_SECONDS

POINT = "/live/multi.isml"
HLS = ('<Modules><Module id="hls" type="sink"><HLS><SegmentLength>PT2S</SegmentLength>'
       "<IncludeCodecs>true</IncludeCodecs></HLS></Module></Modules>")


@pytest.fixture(scope="module")
def live_point(tmp_path_factory) -> Iterator[str]:
    """A real server with ffmpeg pushing to POINT for a minute; the point's URL."""
    import httpx

    from tests.e2e.encoder import start_push, stop_push
    from tests.e2e.harness import Server
    from tests.e2e.test_management_api import create, set_state

    base = tmp_path_factory.mktemp("outputs")
    server = Server(base / "content", base / "state").start()
    encoder = None
    try:
        with httpx.Client(base_url=server.url, auth=("admin", server.admin_password),
                          timeout=20) as http:
            assert create(http, POINT, HLS).status_code == 201
            assert set_state(http, POINT, "Started").status_code == 200
            encoder = start_push(server.url, POINT, 60, base / "ffmpeg.log")
            playlist = f"{POINT}/QualityLevels(300000)/Manifest(video,format=m3u8-aapl).m3u8"
            ready = wait_until(lambda: http.get(playlist).text.count("#EXTINF") >= 3,
                               timeout=30)
            assert ready, "no live playlist in 30s: " + (base / "ffmpeg.log").read_text()
        yield f"{server.url}{POINT}"
    finally:
        if encoder is not None:
            stop_push(encoder)
        server.stop()


def assert_played_live(state: dict) -> None:
    assert state["errors"] == []
    assert state["live"] is True
    assert state["played"] >= PLAY_SECONDS
    assert state["framesGrown"] >= 5 * PLAY_SECONDS
    assert state["totalVideoFrames"] > state["droppedVideoFrames"]
    # Either variant: the player's bitrate choice is its own.
    assert (state["videoWidth"], state["videoHeight"]) in ((320, 180), (160, 90))


@pytest.mark.parametrize("fmt", ["m3u8-aapl", "m3u8-cmaf"])
def test_hlsjs_plays_live_hls(browser: Browser, web_origin: str, live_point: str,
                             fmt: str) -> None:
    url = f"{live_point}/Manifest(format={fmt}).m3u8"
    state = browser.play(player_url(web_origin, url, kind="hls"), seconds=PLAY_SECONDS,
                         timeout=45)
    assert state["type"] == "hls"
    assert_played_live(state)


def test_dashjs_plays_live_dash(browser: Browser, web_origin: str, live_point: str) -> None:
    # The MPD's UTCTiming names the server's /time; the page is told the same.
    origin = live_point.split("/live/")[0]
    url = f"{live_point}/Manifest(format=mpd-time-cmaf).mpd"
    state = browser.play(player_url(web_origin, url, kind="dash", time_url=f"{origin}/time"),
                         seconds=PLAY_SECONDS, timeout=45)
    assert state["type"] == "dash"
    assert_played_live(state)
    assert state["latency"] is not None and 0 < state["latency"] < 15


