"""GET /metrics on a real server: a replayed encoder push, players, errors, the token.

The server is this module's own, so every counter starts from zero and the
figures can be compared exactly with the capture that was pushed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from smoothlive.media.ingest import Fragment, IngestParser, Movie
from tests.e2e.harness import Server, add_user
from tests.e2e.test_ingest_rules import HIGH, push
from tests.e2e.test_live_smooth import wait_for
from tests.e2e.test_management_api import SERVICE, create, set_state, state_of
from tests.unit.test_metrics import parse_exposition, sample

POINT = "/m/live.isml"
IDLE = "/m/idle.isml"
COPIED = "/m/copied.isml"
PASSWORD = "metrics-op-pass-1"
STATES = ("Idle", "Starting", "Started", "Stopping", "Stopped", "ShuttingDown", "Error")
FAMILIES = {
    "smoothlive_points": "gauge",
    "smoothlive_ingest_bytes_total": "counter",
    "smoothlive_ingest_fragments_total": "counter",
    "smoothlive_ingest_duplicates_total": "counter",
    "smoothlive_publish_latency_seconds": "histogram",
    "smoothlive_requests_total": "counter",
    "smoothlive_request_duration_seconds": "histogram",
    "smoothlive_errors_total": "counter",
    "smoothlive_archive_flush_seconds": "histogram",
    "process_resident_memory_bytes": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_open_fds": "gauge",
}


def capture_tracks(capture: bytes) -> dict[tuple[str, int], tuple[int, int]]:
    """(StreamIndex, bitrate) -> (fragments, bytes) of an ingest capture, as the server
    parses it."""
    tracks: dict[int, tuple[str, int]] = {}
    counts: dict[tuple[str, int], tuple[int, int]] = {}
    for event in IngestParser().feed(capture):
        if isinstance(event, Movie):
            tracks = {t.track_id: (t.name, t.bitrate) for t in event.tracks}
        elif isinstance(event, Fragment):
            track = tracks[event.data.track_id]
            fragments, size = counts.get(track, (0, 0))
            counts[track] = (fragments + 1, size + event.data.size)
    return counts


@pytest.fixture(scope="module")
def srv(tmp_path_factory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("metrics")
    server = Server(base / "content", base / "state").start()
    add_user(server.state_dir, "op", PASSWORD, "write:/")
    with httpx.Client(base_url=server.url, auth=("op", PASSWORD), timeout=20) as http:
        wait_for(lambda: http.get(SERVICE).status_code == 200, 10, "the user to be picked up")
        assert create(http, IDLE).status_code == 201
        # A point copied in by hand: no runtime state, found by the scan.
        shutil.copy(server.root / IDLE.lstrip("/"), server.root / COPIED.lstrip("/"))
        assert create(http, POINT).status_code == 201
        assert set_state(http, POINT, "Started").status_code == 200
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pushed(srv: Server) -> Server:
    response = push(f"{srv.url}{POINT}/Streams(ch1-300k)", HIGH)
    assert response.status_code == 200, response.text
    return srv


@pytest.fixture
def http(srv: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, auth=("op", PASSWORD), timeout=20) as client:
        yield client


def scrape(url: str, **kwargs) -> tuple[dict[str, str], dict]:
    response = httpx.get(f"{url}/metrics", timeout=20, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse_exposition(response.text)


def test_the_exposition_declares_every_family(srv: Server):
    types, _ = scrape(srv.url)
    assert {name: types.get(name) for name in FAMILIES} == FAMILIES


def test_points_by_state_every_state_and_the_idle_ones_on_disk(srv: Server, http):
    _, samples = scrape(srv.url)
    assert {s: sample(samples, "smoothlive_points", state=s) for s in STATES} == {
        "Idle": 2, "Starting": 1, "Started": 0, "Stopping": 0, "Stopped": 0,
        "ShuttingDown": 0, "Error": 0}
    assert state_of(http, POINT) == "Starting"


def test_a_push_counts_per_track_and_its_publish_latency(pushed: Server, http):
    assert state_of(http, POINT) == "Stopped"
    _, samples = scrape(pushed.url)
    assert sample(samples, "smoothlive_points", state="Stopped") == 1
    assert sample(samples, "smoothlive_points", state="Starting") == 0
    expected = capture_tracks(HIGH)
    assert len(expected) == 2
    for (name, bitrate), (fragments, size) in expected.items():
        track = {"point": POINT, "stream_index": name, "bitrate": str(bitrate)}
        assert sample(samples, "smoothlive_ingest_fragments_total", **track) == fragments
        assert sample(samples, "smoothlive_ingest_bytes_total", **track) == size
        assert sample(samples, "smoothlive_ingest_duplicates_total", **track) == 0
    # Every fragment was published (one QualityLevel per StreamIndex), each observed once.
    published = sum(fragments for fragments, _ in expected.values())
    count = sample(samples, "smoothlive_publish_latency_seconds_count")
    assert count == published
    # Published in the same event-loop step as it was parsed: well under 100 ms each.
    assert sample(samples, "smoothlive_publish_latency_seconds_bucket", le="0.1") == count
    assert sample(samples, "smoothlive_publish_latency_seconds_bucket", le="+Inf") == count
    assert 0 < sample(samples, "smoothlive_publish_latency_seconds_sum") < 0.1 * count
    ingest = sample(samples, "smoothlive_requests_total", output="ingest", status="200")
    assert ingest == 1


def test_player_requests_are_counted_by_output_and_status(pushed: Server, http):
    def requests(samples, output: str, status: int) -> float:
        return samples.get(("smoothlive_requests_total", (
            ("output", output), ("status", str(status)))), 0)

    def durations(samples, output: str) -> float:
        return samples.get(("smoothlive_request_duration_seconds_count",
                            (("output", output),)), 0)

    _, before = scrape(pushed.url)
    assert http.get(f"{POINT}/Manifest").status_code == 200
    assert http.get(f"{POINT}/QualityLevels(300000)/Fragments(video=0)").status_code == 200
    assert http.get(f"{POINT}/QualityLevels(300000)/Fragments(video=7)").status_code == 404
    assert http.get(f"{POINT}/Manifest(format=m3u8-aapl).m3u8").status_code == 200
    assert http.get(f"{POINT}/Manifest(format=mpd-time-cmaf).mpd").status_code == 200
    _, after = scrape(pushed.url)
    moved = {
        ("smooth_manifest", 200): 1, ("smooth_fragment", 200): 1, ("smooth_fragment", 404): 1,
        ("hls_playlist", 200): 1, ("dash_mpd", 200): 1,
    }
    for (output, status), delta in moved.items():
        assert requests(after, output, status) - requests(before, output, status) == delta
    assert durations(after, "smooth_fragment") - durations(before, "smooth_fragment") == 2
    assert durations(after, "smooth_manifest") - durations(before, "smooth_manifest") == 1


def test_management_errors_are_counted_by_code(srv: Server, http):
    def errors(samples, code: str) -> float:
        return samples.get(("smoothlive_errors_total", (("code", code),)), 0)

    _, before = scrape(srv.url)
    assert httpx.get(f"{srv.url}{SERVICE}", timeout=20).status_code == 401
    assert http.get("/m/missing.isml/state").status_code == 404
    _, after = scrape(srv.url)
    for code in ("MPE_MGMT_AUTHENTICATION_IS_REQUIRED", "MPE_MGMT_PUBLISHING_POINT_NOT_FOUND"):
        assert errors(after, code) - errors(before, code) == 1
    key = ("smoothlive_requests_total", (("output", "management"), ("status", "401")))
    assert after[key] - before.get(key, 0) == 1


def test_process_figures_on_linux(srv: Server):
    if not Path("/proc/self/stat").exists():
        pytest.skip("process metrics are read from /proc")
    _, samples = scrape(srv.url)
    assert sample(samples, "process_resident_memory_bytes") > 10 << 20
    assert sample(samples, "process_open_fds") > 3
    assert sample(samples, "process_cpu_seconds_total") > 0


def test_head_and_other_methods(srv: Server):
    head = httpx.head(f"{srv.url}/metrics", timeout=20)
    assert head.status_code == 200 and head.content == b""
    assert httpx.post(f"{srv.url}/metrics", timeout=20).status_code == 405


def test_a_metrics_token_is_required_once_set(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SMOOTHLIVE_METRICS_TOKEN", "scrape-token-1")
    server = Server(tmp_path / "content", tmp_path / "state").start()
    try:
        refused = httpx.get(f"{server.url}/metrics", timeout=20)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer scrape-token-2"}
        assert httpx.get(f"{server.url}/metrics", headers=wrong, timeout=20).status_code == 401
        types, _ = scrape(server.url, headers={"Authorization": "Bearer scrape-token-1"})
        assert types["smoothlive_points"] == "gauge"
        assert "scrape-token-1" not in server.log()
    finally:
        server.stop()
