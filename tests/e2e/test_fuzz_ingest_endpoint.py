"""Malformed encoder bodies POSTed to the real server, while a replay feeds another point.

A few hundred bodies, drawn from a fixed seed by the corruption generator of
the parser's fuzz tests (tests/unit/test_fuzz_ingest.py: broken box headers,
boxes dropped, doubled or out of order, edits inside moov and moof, bit flips
and splices, garbage), are pushed to a few started points, some in one piece
and some chunked as an encoder sends. Every answer must be a clear one: 200
for a body that happens to be acceptable, else a 4xx with a short one-line
text body, never a 5xx, never a hang (every request has a bounded timeout),
never a traceback in the server log. Meanwhile ``smoothlive replay`` feeds
another point, which must come out whole: its manifest lists every fragment
the replay sent.

``SMOOTHLIVE_FUZZ_SEED`` and ``SMOOTHLIVE_FUZZ_BODIES`` change the seed and the
number of bodies (300 by default) for longer runs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter

import httpx
import pytest

from tests.e2e.harness import SMOOTHLIVE
from tests.e2e.test_live_smooth import chunk_times, wait_for
from tests.e2e.test_management_api import create, set_state, state_of
from tests.e2e.test_replay import timeline
from tests.unit.test_fuzz_ingest import CAPTURES, FIXTURES, KINDS, chunks_of, corrupt, split_points

SEED = int(os.environ.get("SMOOTHLIVE_FUZZ_SEED") or 20251202)
BODIES = int(os.environ.get("SMOOTHLIVE_FUZZ_BODIES") or 300)
WORKERS = 3  # points pushed to at once, one body after the other on each
BUDGET = max(50, BODIES // 5)  # seconds for all the pushes (about 3 s for 300 here)
TIMEOUT = httpx.Timeout(15.0, connect=5.0)


def bodies(seed: int, count: int) -> list[tuple[bytes, list[bytes] | None]]:
    """``count`` malformed bodies of every kind in turn; each sent whole (None) or chunked."""
    rng = random.Random(seed)
    made = []
    for number in range(count):
        body = corrupt(rng, KINDS[number % len(KINDS)])
        chunked = chunks_of(body, split_points(rng, body, most=12)) if rng.random() < 0.5 else None
        made.append((body, chunked))
    return made


def push(http: httpx.Client, url: str, body: bytes, chunked: list[bytes] | None
         ) -> tuple[int, httpx.Headers, bytes]:
    content = iter(chunked) if chunked is not None else body
    response = http.post(url, content=content, timeout=TIMEOUT)
    return response.status_code, response.headers, response.content


@pytest.fixture
def replayed(server, operator, point_name, tmp_path):
    """A point fed by ``smoothlive replay`` (both captures, looping in real time) until stopped."""
    capture = tmp_path / "capture"
    capture.mkdir()
    for name in CAPTURES:
        shutil.copy(FIXTURES / f"{name}.ismv", capture)
    assert create(operator, point_name).status_code == 201
    assert set_state(operator, point_name, "Started").status_code == 200
    log = tmp_path / "sent.jsonl"
    process = subprocess.Popen(
        [SMOOTHLIVE, "replay", str(capture), server.url + point_name, "--rate", "1x", "--loop",
         "--duration", str(BUDGET + 30), "--sent-log", str(log), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: operator.get(f"{point_name}/Manifest").status_code == 200, 20,
                 "the replay's first chunk")
        yield point_name, process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def test_malformed_bodies_get_clear_answers_and_leave_others_alone(server, operator,
                                                                    point_name, replayed):
    replay_point, replay, sent_log = replayed
    points = [point_name.replace(".isml", f"-fuzz{n}.isml") for n in range(WORKERS)]
    for point in points:
        assert create(operator, point, "<AutoRestartOnEncoderReconnect>true"
                      "</AutoRestartOnEncoderReconnect>").status_code == 201
        assert set_state(operator, point, "Started").status_code == 200
    made = bodies(SEED, BODIES)
    log_start = len(server.log())
    answers: list[tuple[int, int, httpx.Headers, bytes]] = []
    failures: list[str] = []

    def worker(n: int) -> None:
        with httpx.Client() as http:  # kept alive: each answer must say if it cannot be
            for number in range(n, len(made), WORKERS):
                body, chunked = made[number]
                url = f"{server.url}{points[n]}/Streams(fuzz-{number})"
                try:
                    answers.append((number, *push(http, url, body, chunked)))
                except httpx.HTTPError as exc:  # a hang (timeout) or a dropped connection
                    failures.append(f"body {number}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + BUDGET
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), f"pushes still on after {BUDGET} s"
    still_replaying = replay.poll() is None

    assert not failures, failures[:5]
    assert len(answers) == len(made)
    statuses = Counter(status for _, status, _, _ in answers)
    for number, status, headers, content in answers:
        assert status == 200 or 400 <= status < 500, (number, status, content[:200])
        if status == 200:
            assert content == b""
            continue
        assert headers["content-type"].startswith("text/plain"), (number, status, headers)
        assert headers["connection"] == "close"  # the rest of the body was not read
        text = content.decode("utf-8")
        assert text.startswith("corrupt stream: ") and text.endswith("\n"), (number, text)
        assert len(text) < 400 and text[:-1].isprintable(), (number, text)
    assert statuses[400] > len(made) // 2, statuses  # the generator does make broken bodies
    log = server.log()[log_start:]
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]
    assert log.count("corrupt stream, ended") >= statuses[400]

    # The replay ran through the fuzzing (it stops only when told), and ends normally.
    assert still_replaying, replay.communicate(timeout=10)
    replay.send_signal(signal.SIGTERM)
    stdout, stderr = replay.communicate(timeout=30)
    assert replay.returncode == 0, stderr
    report = json.loads(stdout)
    assert [s["status"] for s in report["streams"]] == [200, 200], report
    sent = [json.loads(line) for line in sent_log.read_text().splitlines()]
    assert len(sent) == sum(s["fragments"] for s in report["streams"]) > 0
    indexes = timeline(operator, replay_point)
    for stream in ("ch1-150k", "ch1-300k"):
        video = sorted(line["time"] for line in sent if line["stream"] == stream
                       and line["track"] == 1)
        assert [t for t, _ in chunk_times(indexes["video"])] == video
    audio = {line["time"] for line in sent if line["track"] == 2}
    assert len(chunk_times(indexes["audio"])) == len(audio)
    assert len(indexes["video"].findall("QualityLevel")) == 2
    wait_for(lambda: state_of(operator, replay_point) == "Stopped", 10, "the replay point Stopped")
    # The server is as it was: it answers, and takes a good push to a new point.
    assert httpx.get(server.url + "/healthz", timeout=TIMEOUT).status_code == 200
    good = max(CAPTURES.values(), key=len)
    clean = point_name.replace(".isml", "-after.isml")
    assert create(operator, clean).status_code == 201
    assert set_state(operator, clean, "Started").status_code == 200
    response = httpx.post(f"{server.url}{clean}/Streams(after)", content=good, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert len(chunk_times(timeline(operator, clean)["video"])) == 4
