"""``--workers``: the owner and its front processes behind one port.

A real server with two fronts (three processes on the port; the kernel
spreads new connections), fed by ``smoothlive replay``; clients open a new
connection per request so that every process answers some of them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest
from lxml import etree

from smoothlive.management.errors import MgmtError
from tests.e2e.conftest import PASSWORDS
from tests.e2e.harness import SMOOTHLIVE, Server, add_user
from tests.e2e.test_live_smooth import chunk_times, wait_for
from tests.e2e.test_management_api import (
    ATOM,
    assert_error,
    create,
    set_state,
    settings_body,
    state_of,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "ingest"


def children(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except FileNotFoundError:
        return set()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def with_operator(srv: Server) -> Server:
    """Add the operator user and wait (bounded) until the server takes it."""
    add_user(srv.state_dir, "operator", PASSWORDS["operator"], "write:/")
    with operator(srv) as op:
        wait_for(lambda: op.get("/services/smoothstreaming/publishingpoints.isml").status_code
                 == 200, 10, "the operator user")
    return srv


def fresh() -> httpx.Client:
    """A client that opens a new connection per request (the kernel picks the process)."""
    return httpx.Client(timeout=20, limits=httpx.Limits(max_keepalive_connections=0))


@pytest.fixture(scope="module", params=["owner-listens", "fronts-only"])
def workers(request, tmp_path_factory) -> Server:
    """Three processes; with --fronts-only the two fronts take every connection and
    relay ingest and management to the owner."""
    base = tmp_path_factory.mktemp("workers")
    extra = ("--fronts-only",) if request.param == "fronts-only" else ()
    srv = with_operator(Server(base / "content", base / "state",
                               extra_args=("--workers", "3", *extra)).start())
    yield srv
    assert srv.stop() == 0  # fronts stopped, then the owner, within the graceful time


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("capture")
    for name in ("ch1-300k", "ch1-150k"):
        shutil.copy(FIXTURES / f"{name}.ismv", directory)
    return directory


def operator(srv: Server) -> httpx.Client:
    return httpx.Client(base_url=srv.url, auth=("operator", PASSWORDS["operator"]),
                        timeout=20, limits=httpx.Limits(max_keepalive_connections=0))


def _replay(srv: Server, capture: Path, point: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [SMOOTHLIVE, "replay", str(capture), srv.url + point, "--json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def listening_on(port: int, pid: int) -> bool:
    """Whether process ``pid`` holds a TCP socket listening on ``port`` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            held.add(os.readlink(fd))
        except OSError:
            continue
    return any(f"socket:[{inode}]" in held for inode in inodes)


def test_the_owner_starts_its_fronts(workers):
    fronts = children(workers.process.pid)
    assert len(fronts) == 2
    assert all("smoothlive.workers.front" in Path(f"/proc/{pid}/cmdline").read_text()
               for pid in fronts)
    assert "2 front process(es) started" in workers.log()
    port = int(workers.url.rsplit(":", 1)[1])
    assert all(listening_on(port, pid) for pid in fronts)
    # With --fronts-only the owner is on its Unix socket alone.
    owner_listens = "--fronts-only" not in workers.extra_args
    assert listening_on(port, workers.process.pid) == owner_listens


def test_live_manifests_never_go_back_in_time_across_processes(workers, capture):
    """A front keeps a live manifest only while the owner's change board says it is
    current: whichever process answers, a player never sees fewer chunks than a
    previous answer showed, and the fronts answer some requests themselves."""
    point = "/w/fresh.isml"
    with operator(workers) as op:
        assert create(op, point, "<Title>fresh</Title>").status_code == 201
        assert set_state(op, point, "Started").status_code == 200
    encoder = _replay(workers, capture, point, "--rate", "2x", "--loops", "3",
                      "--ts-offset", "now")
    seen: list[tuple[int, bool]] = []
    try:
        with fresh() as http:
            def listed() -> int:
                response = http.get(workers.url + point + "/Manifest")
                if response.status_code != 200:
                    return 0
                video = etree.fromstring(response.content).find(
                    "StreamIndex[@Type='video']")  # the audio may be listed first
                count = 0 if video is None else len(chunk_times(video))
                seen.append((count, response.headers.get("x-cache") == "hit"))
                return count
            wait_for(lambda: listed() >= 12 or encoder.poll() is not None, 30,
                     "the replay to be listed", interval=0.005)
            listed()
    finally:
        out, err = encoder.communicate(timeout=30)
    report = json.loads(out)
    assert [s["status"] for s in report["streams"]] == [200, 200], err
    counts = [count for count, _ in seen]
    assert counts == sorted(counts), counts  # never fewer than an earlier answer
    assert counts[-1] == 12
    assert any(hit for _, hit in seen), "no manifest was answered by a front"
    assert any(not hit for _, hit in seen)


def test_fragments_are_kept_by_fronts_byte_for_byte(workers, capture):
    point = "/w/frag.isml"
    with operator(workers) as op:
        assert create(op, point, "<Title>frag</Title>").status_code == 201
        assert set_state(op, point, "Started").status_code == 200
    encoder = _replay(workers, capture, point, "--rate", "max")
    _, err = encoder.communicate(timeout=60)
    assert encoder.returncode == 0, err
    with fresh() as http:
        manifest = http.get(workers.url + point + "/Manifest")
        video = etree.fromstring(manifest.content).find("StreamIndex[@Type='video']")
        first = chunk_times(video)[0][0]
        url = f"{workers.url}{point}/QualityLevels(300000)/Fragments(video={first})"
        answers = [http.get(url) for _ in range(30)]
        assert {a.status_code for a in answers} == {200}
        assert len({a.content for a in answers}) == 1
        hits = [a for a in answers if a.headers.get("x-cache") == "hit"]
        assert hits
        for hit in hits:  # the front's own Date, not the one of the owner's first answer
            (date,) = hit.headers.get_list("date")
            assert abs(parsedate_to_datetime(date).timestamp() - time.time()) < 5
        etag = answers[0].headers["etag"]
        revalidated = [http.get(url, headers={"If-None-Match": etag}) for _ in range(20)]
        assert {a.status_code for a in revalidated} == {304}
        # Ranges are not kept: they go to the owner, which answers them in full.
        ranged = http.get(url, headers={"Range": "bytes=0-99"})
        assert ranged.status_code in (200, 206) and "x-cache" not in ranged.headers
        # A miss is never kept: asked many times, still a 404 from the owner.
        missing = f"{workers.url}{point}/QualityLevels(300000)/Fragments(video=1)"
        assert {http.get(missing).status_code for _ in range(10)} == {404}


def _fragment_requests(http: httpx.Client, url: str) -> int:
    text = http.get(url + "/metrics").text
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith('smoothlive_requests_total{output="smooth_fragment",'
                                  'status="200"}'))


def test_requests_answered_by_fronts_are_counted_by_the_owner(tmp_path, capture):
    # A server of its own: other tests' hits reach the owner up to a second late.
    workers = with_operator(Server(tmp_path / "content", tmp_path / "state",
                                   extra_args=("--workers", "3")).start())
    try:
        _count_hits(workers, capture)
    finally:
        workers.stop()


def _count_hits(workers: Server, capture: Path) -> None:
    point = "/w/count.isml"
    with operator(workers) as op:
        assert create(op, point, "<Title>count</Title>").status_code == 201
        assert set_state(op, point, "Started").status_code == 200
    encoder = _replay(workers, capture, point, "--rate", "max")
    _, err = encoder.communicate(timeout=60)
    assert encoder.returncode == 0, err
    with fresh() as http:
        video = etree.fromstring(http.get(workers.url + point + "/Manifest").content).find(
            "StreamIndex[@Type='video']")
        url = f"{workers.url}{point}/QualityLevels(150000)/Fragments(video=" \
              f"{chunk_times(video)[1][0]})"
        before = _fragment_requests(http, workers.url)
        answers = [http.get(url) for _ in range(40)]
        assert any(a.headers.get("x-cache") == "hit" for a in answers)
        # Each front reports its hits once a second: all 40 are counted, none twice.
        wait_for(lambda: _fragment_requests(http, workers.url) - before >= 40, 10,
                 "the fronts' hits in /metrics")
        assert _fragment_requests(http, workers.url) - before == 40


def _scrambled(capture: Path, to: Path) -> Path:
    """The capture with every mdat's bytes changed: same URLs, other media."""
    to.mkdir()
    for source in capture.glob("*.ismv"):
        data = bytearray(source.read_bytes())
        at = 0
        while at + 8 <= len(data):
            size = int.from_bytes(data[at:at + 4], "big")
            if data[at + 4:at + 8] == b"mdat":
                for i in range(at + 8, at + size):
                    data[i] ^= 0x5A
            at += max(size, 8)
        (to / source.name).write_bytes(bytes(data))
    return to


def test_a_point_started_again_from_zero_is_not_served_old_fragments(workers, capture,
                                                                      tmp_path):
    """An encoder that starts again at time zero reuses every fragment URL: the
    fronts drop what they kept of the old presentation (its epoch moved)."""
    point = "/w/again.isml"
    with operator(workers) as op:
        assert create(op, point, "<Title>again</Title>").status_code == 201
        assert set_state(op, point, "Started").status_code == 200
    _, err = _replay(workers, capture, point, "--rate", "max").communicate(timeout=60)
    url = f"{workers.url}{point}/QualityLevels(300000)/Fragments(video=0)"
    with fresh() as http:
        old = [http.get(url) for _ in range(20)]
        assert {a.status_code for a in old} == {200}, err
        assert any(a.headers.get("x-cache") == "hit" for a in old)
        with operator(workers) as op:
            wait_for(lambda: state_of(op, point) == "Stopped", 20, "the end of the push")
            assert set_state(op, point, "Idle").status_code == 200
            assert set_state(op, point, "Started").status_code == 200
        scrambled = _scrambled(capture, tmp_path / "scrambled")
        _, err = _replay(workers, scrambled, point, "--rate", "max").communicate(timeout=60)
        # A player reads the new manifest first, then the fragments.
        assert http.get(f"{workers.url}{point}/Manifest").status_code == 200, err
        new = [http.get(url) for _ in range(20)]
    assert {a.status_code for a in new} == {200}
    assert all(a.content != old[0].content for a in new)
    assert len({a.content for a in new}) == 1


def test_management_and_auth_go_through_any_process(workers):
    point = "/w/admin.isml"
    with operator(workers) as op:  # a new connection per request: some land on fronts
        assert create(op, point, "<Title>admin</Title>").status_code == 201
        assert [state_of(op, point) for _ in range(10)] == ["Idle"] * 10
    with fresh() as anonymous:
        refused = [anonymous.get(workers.url + "/services/smoothstreaming/publishingpoints.isml")
                   for _ in range(10)]
        assert {r.status_code for r in refused} == {401}
        assert all("www-authenticate" in r.headers and "x-cache" not in r.headers
                   for r in refused)


def test_answers_the_owner_gives_before_reading_a_body_reach_the_client(workers):
    """A body too large, or no credentials: the owner answers and stops reading;
    through a front the client gets that answer, not a 502."""
    point = "/w/large.isml"
    huge = settings_body("<Title>" + "x" * (2 << 20) + "</Title>")
    with operator(workers) as op:
        assert create(op, point, "<Title>large</Title>").status_code == 201
        answers = [op.put(f"{point}/settings", content=huge, headers=ATOM) for _ in range(8)]
    for answer in answers:
        assert_error(answer, MgmtError.INVALID_XML)
    with fresh() as anonymous:
        refused = [anonymous.put(f"{workers.url}{point}/settings", content=huge, headers=ATOM)
                   for _ in range(8)]
    assert {a.status_code for a in refused} == {401}
    assert "owner unavailable" not in workers.log()


def test_fronts_follow_the_owner_in_life_and_death(tmp_path):
    srv = Server(tmp_path / "content", tmp_path / "state",
                 extra_args=("--workers", "2")).start()
    try:
        (front,) = children(srv.process.pid)
        # A front that dies is replaced.
        os.kill(front, signal.SIGKILL)
        replaced = wait_for(lambda: children(srv.process.pid) - {front}, 30, "a new front")
        assert "starting another" in srv.log()
        with fresh() as http:
            assert {http.get(srv.url + "/healthz").status_code for _ in range(10)} == {200}
        # SIGTERM stops the fronts first, then the owner, cleanly.
        code = srv.stop(signal.SIGTERM)
        assert code == 0
        assert not any(alive(pid) for pid in replaced)
        # kill -9 of the owner takes its fronts with it.
        srv.start()
        fronts = children(srv.process.pid)
        assert len(fronts) == 1
        srv.process.kill()
        srv.process.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in fronts), 10, "fronts to exit")
        # A restart over the same state dir binds again (the old socket file is replaced).
        srv.process = None
        srv.start()
        with fresh() as http:
            assert {http.get(srv.url + "/healthz").status_code for _ in range(10)} == {200}
    finally:
        srv.stop()


def test_workers_above_one_need_granian(tmp_path):
    result = subprocess.run(
        [SMOOTHLIVE, "serve", "--workers", "2", "--http-server", "uvicorn",
         "--root", str(tmp_path / "c"), "--state-dir", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "--workers above 1 needs --http-server granian" in result.stderr
    result = subprocess.run(
        [SMOOTHLIVE, "serve", "--fronts-only", "--root", str(tmp_path / "c"),
         "--state-dir", str(tmp_path / "s")], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "--fronts-only needs --workers 2" in result.stderr


def test_statistics_see_the_encoder_address_through_a_front(workers, capture):
    """The owner believes the client address a front passes on its own socket only."""
    point = "/w/peer.isml"
    with operator(workers) as op:
        assert create(op, point, "<Title>peer</Title>").status_code == 201
        assert set_state(op, point, "Started").status_code == 200
    encoder = _replay(workers, capture, point, "--rate", "max")
    _, err = encoder.communicate(timeout=60)
    assert encoder.returncode == 0, err
    with operator(workers) as op:
        answer = op.get(f"{point}/statistics")
        assert answer.status_code == 200, answer.text
        assert b"<Property name=\"Source IP\">127.0.0.1</Property>" in answer.content
