"""``smoothlive replay`` against the real server: captures pushed as live encoders.

The capture is the two ffmpeg fixture files (two bitrates, each with video
and the same audio, 4 s of 1-second fragments) in a directory, so one replay
is two concurrent POSTs, as ffmpeg's multi-bitrate push.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from lxml import etree

from smoothlive.media.ingest import IngestParser
from smoothlive.replay import load_capture
from tests.e2e.conftest import PASSWORDS
from tests.e2e.harness import SMOOTHLIVE, run_cli
from tests.e2e.test_live_smooth import TFRF, chunk_times, tfxd_time, uuid_boxes, wait_for
from tests.e2e.test_management_api import create, set_state, state_of

FIXTURES = Path(__file__).parents[1] / "fixtures" / "ingest"
ROOT = Path(__file__).parents[2]
SECOND = 10_000_000
SPAN = 4 * SECOND  # the fixtures' timeline: every track from 0 to 4 s
# Faster than real time but paced. At --rate max the replay keeps its POSTs in
# step, but the server may still take one stream's bytes far ahead of another's
# (a stream waits while the point goes Started on its first fragment), and a
# stream whose first fragment comes far behind the live edge is taken for an
# encoder that restarted its clock: a discontinuity this test is not about.
FAST = "20x"


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("capture")
    for name in ("ch1-300k", "ch1-150k"):
        shutil.copy(FIXTURES / f"{name}.ismv", directory)
    return directory


def started_point(operator: httpx.Client, path: str, settings: str = "<Title>t</Title>") -> str:
    assert create(operator, path, settings).status_code == 201
    assert set_state(operator, path, "Started").status_code == 200
    return path


def replay(*args: str, env: dict | None = None) -> dict:
    result = run_cli("replay", *args, "--json", env=env, timeout=60)
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    report["returncode"] = result.returncode
    return report


def timeline(operator: httpx.Client, point: str) -> dict[str, etree._Element]:
    response = operator.get(f"{point}/Manifest")
    assert response.status_code == 200, response.text
    root = etree.fromstring(response.content)
    return {index.get("Type"): index for index in root.findall("StreamIndex")}


def assert_contiguous(index: etree._Element, count: int, start: int = 0) -> list[tuple[int, int]]:
    """``count`` chunks from ``start``, each where the last ended: no t after the first c."""
    chunks = chunk_times(index)
    assert len(chunks) == count
    assert chunks[0][0] == start
    assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(chunks)), chunks
    assert len(index.findall("c[@t]")) == 1  # no discontinuity
    return chunks


def test_three_loops_make_one_contiguous_timeline(server, operator, point_name, capture,
                                                  tmp_path):
    point = started_point(operator, point_name)
    log = tmp_path / "sent.jsonl"
    report = replay(str(capture), server.url + point, "--rate", FAST, "--loops", "3",
                    "--sent-log", str(log))
    assert report["returncode"] == 0, report
    assert [(s["stream"], s["status"], s["fragments"], s["loops"]) for s in report["streams"]] == [
        ("ch1-150k", 200, 24, 3), ("ch1-300k", 200, 24, 3)]
    assert report["capture"]["span_seconds"] == 4.0
    indexes = timeline(operator, point)
    video = assert_contiguous(indexes["video"], 12)
    assert video[-1] == (11 * SECOND, SECOND)
    audio = assert_contiguous(indexes["audio"], 12)  # loops 1, 2 cut ffmpeg's priming: no overlap
    assert audio[4][0] == SPAN and audio[8][0] == 2 * SPAN
    assert audio[-1][0] + audio[-1][1] == 3 * SPAN
    assert state_of(operator, point) == "Stopped"  # both POSTs ended normally: end of stream
    # The send log names every fragment with its rewritten time, as the manifest lists it.
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 48
    assert {(line["stream"], line["track"]) for line in lines} == {
        (stream, track) for stream in ("ch1-150k", "ch1-300k") for track in (1, 2)}
    logged = sorted(line["time"] for line in lines if line["stream"] == "ch1-300k"
                    and line["track"] == 1)
    assert logged == [t for t, _ in video]
    assert all(line["point"] == point and line["monotonic"] > 0 and line["wall"] > 1e9
               for line in lines)


def test_max_rate_pushes_everything_as_fast_as_the_server_takes_it(server, operator,
                                                                    point_name, capture):
    point = started_point(operator, point_name)
    report = replay(str(capture), server.url + point, "--rate", "max", "--loops", "5")
    assert report["returncode"] == 0, report
    assert [(s["status"], s["fragments"], s["loops"], s["lag"]) for s in report["streams"]] == [
        (200, 40, 5, None)] * 2  # no due times at max: no lag to report
    # ftyp, Live Server Manifest and moov once, the fragments five times, an empty mfra.
    assert [s["bytes"] for s in report["streams"]] == [
        len(f.header) + 5 * sum(x.size for x in f.fragments) + 8
        for f in load_capture(capture).files]
    for index in timeline(operator, point).values():
        times = [t for t, _ in chunk_times(index)]
        assert times == sorted(set(times))  # never backwards, whatever the server made of it
    assert state_of(operator, point) == "Stopped"


def test_count_pushes_copies_to_as_many_points(server, operator, point_name, capture):
    pattern = point_name.replace(".isml", "-{n}.isml")
    points = [started_point(operator, pattern.replace("{n}", str(n))) for n in (1, 2, 3)]
    report = replay(str(capture), server.url + pattern, "--count", "3", "--rate", FAST,
                    "--ts-offset", "now")
    assert report["returncode"] == 0, report
    assert sorted((s["point"], s["stream"]) for s in report["streams"]) == sorted(
        (p, s) for p in points for s in ("ch1-150k", "ch1-300k"))
    starts = set()
    for point in points:
        indexes = timeline(operator, point)
        video = chunk_times(indexes["video"])
        assert len(video) == 4 and len(indexes["video"].findall("QualityLevel")) == 2
        starts.add(video[0][0])
        assert state_of(operator, point) == "Stopped"
    # --ts-offset now: UTC in 100-ns ticks, read once, so every copy lines up exactly.
    (start,) = starts
    assert abs(start / SECOND - time.time()) < 60


def test_stagger_starts_each_copy_later(server, operator, point_name, capture, tmp_path):
    pattern = point_name.replace(".isml", "-{n}.isml")
    points = [started_point(operator, pattern.replace("{n}", str(n))) for n in (1, 2)]
    log = tmp_path / "sent.jsonl"
    report = replay(str(capture), server.url + pattern, "--count", "2", "--rate", FAST,
                    "--stagger", "--sent-log", str(log))
    assert report["returncode"] == 0, report
    first = {}
    for line in map(json.loads, log.read_text().splitlines()):
        first[line["point"]] = min(first.get(line["point"], line["monotonic"]),
                                   line["monotonic"])
    # Half of the capture's 1-second fragment apart (FAST paces the media, not the stagger).
    assert first[points[1]] - first[points[0]] > 0.3
    for point in points:
        assert len(chunk_times(timeline(operator, point)["video"])) == 4


def test_one_loop_at_1x_takes_the_capture_duration(server, operator, point_name, capture):
    point = started_point(operator, point_name)
    began = time.monotonic()
    process = subprocess.Popen(
        [SMOOTHLIVE, "replay", str(capture), server.url + point, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Live while it plays: Started, a manifest growing with the wall clock.
    wait_for(lambda: state_of(operator, point) == "Started", 10, "Started")
    wait_for(lambda: "video" in timeline(operator, point), 10, "the first fragment listed")
    stdout, stderr = process.communicate(timeout=30)
    took = time.monotonic() - began
    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    # Paced on the fragments' end times: the last one is due 4 s after the start.
    assert 0.8 * 4 <= report["elapsed"] <= took < 15
    lag = report["total"]["lag"]
    assert lag is not None and 0 <= lag["p50_ms"] < 500  # generous: pacing, not a benchmark
    assert_contiguous(timeline(operator, point)["video"], 4)
    assert state_of(operator, point) == "Stopped"


def test_loop_until_duration_then_end_the_streams_normally(server, operator, point_name,
                                                         capture):
    point = started_point(operator, point_name)
    # At 4x, 1.4 s of wall clock is 5.6 s of media: the first loop and part of the second.
    report = replay(str(capture), server.url + point, "--rate", "4x", "--loop",
                    "--duration", "1.4")
    assert report["returncode"] == 0, report
    assert all(8 < s["fragments"] < 16 for s in report["streams"]), report
    assert {s["loops"] for s in report["streams"]} == {1}
    indexes = timeline(operator, point)
    video = assert_contiguous(indexes["video"], len(chunk_times(indexes["video"])))
    assert 4 < len(video) < 8
    assert state_of(operator, point) == "Stopped"


def test_credentials_digest_and_basic(server, operator, point_name, capture):
    point = started_point(operator, point_name,
                          "<AutoRestartOnEncoderReconnect>true</AutoRestartOnEncoderReconnect>")
    single = str(capture / "ch1-300k.ismv")
    env = {"SMOOTHLIVE_PASSWORD": PASSWORDS["operator"]}
    first = replay(single, server.url + point, "--rate", "max", "--user", "operator", env=env)
    assert first["returncode"] == 0, first
    again = replay(single, server.url + point, "--rate", "max", "--user", "operator", "--basic",
                   "--ts-offset", "4", "--stream-prefix", "b-", env=env)
    assert again["returncode"] == 0, again
    assert again["streams"][0]["stream"] == "b-ch1-300k"
    assert_contiguous(timeline(operator, point)["video"], 8)
    wrong = replay(single, server.url + point, "--rate", "max", "--user", "operator",
                   env={"SMOOTHLIVE_PASSWORD": "not-it"})
    assert wrong["returncode"] == 1
    assert wrong["streams"][0]["status"] == 401


def test_an_unknown_point_fails_the_exit_status(server, capture):
    report = replay(str(capture), server.url + "/nowhere/none.isml", "--rate", "max")
    assert report["returncode"] == 1
    assert {s["status"] for s in report["streams"]} == {404}, report


def test_the_bench_capture_records_and_replays(server, operator, point_name, tmp_path):
    out = tmp_path / "small"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "capture.py"), "--small", "--seconds", "4",
         "--out", str(out)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["video-100k.ismv", "video-150k.ismv", "video-250k.ismv", "video-400k.ismv"]
    parser = IngestParser()
    parser.feed((out / "video-400k.ismv").read_bytes())
    parser.close()
    assert parser.fragments_seen == 4  # 2-second fragments, video and audio
    point = started_point(operator, point_name)
    report = replay(str(out), server.url + point, "--rate", FAST, "--loops", "2")
    assert report["returncode"] == 0, report
    indexes = timeline(operator, point)
    assert len(indexes["video"].findall("QualityLevel")) == 4
    assert assert_contiguous(indexes["video"], 4)[1] == (2 * SECOND, 2 * SECOND)
    assert_contiguous(indexes["audio"], 4)


def test_fragments_past_the_live_cache_are_read_back_whole(server, operator, point_name,
                                                          capture):
    """LiveCacheLength 2 s of a 12-second event: most fragments keep neither media
    nor moof in memory, and each is served as it would be from memory."""
    point = started_point(operator, point_name, (
        "<Title>t</Title><ClientConnections enabled=\"true\"><WindowLength>PT10M"
        "</WindowLength><LiveCacheLength>PT2S</LiveCacheLength></ClientConnections>"))
    report = replay(str(capture), server.url + point, "--rate", FAST, "--loops", "3")
    assert report["returncode"] == 0, report
    index = timeline(operator, point)["video"]
    chunks = chunk_times(index)
    assert len(chunks) == 12
    for quality in index.findall("QualityLevel"):
        base = f"{point}/QualityLevels({quality.get('Bitrate')})"
        for position, (start, duration) in enumerate(chunks):
            whole = operator.get(f"{base}/Fragments(video={start})")
            assert whole.status_code == 200
            assert tfxd_time(whole.content) == (start, duration)
            payload = uuid_boxes(whole.content).get(TFRF)
            following = chunks[position + 1:position + 3]
            if following:
                assert [struct.unpack_from(">QQ", payload, 5 + 16 * i)
                        for i in range(payload[4])] == following
            info = operator.get(f"{base}/FragmentInfo(video={start})")
            assert info.status_code == 200 and whole.content.startswith(info.content)
            assert whole.headers["etag"] == info.headers["etag"]
    # HLS (TS) and DASH segments of the first, long evicted, fragments too.
    playlist = operator.get(f"{point}/QualityLevels({index.find('QualityLevel').get('Bitrate')})"
                            "/Manifest(video,format=m3u8-aapl).m3u8")
    assert playlist.status_code == 200
    first = next(line for line in playlist.text.splitlines() if line and line[0] != "#")
    segment = operator.get(f"{point}/QualityLevels({index.find('QualityLevel').get('Bitrate')})"
                           f"/{first}")
    assert segment.status_code == 200 and segment.content[0] == 0x47  # TS sync byte
