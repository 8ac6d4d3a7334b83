"""kill -9 during ingest, then a restart: the point, its settings and its archive survive.

The real ffmpeg pushes to an archived point; the server is killed with
SIGKILL while fragments arrive, and a torn write is added to one archive
file (what a power cut can leave). After the restart the archive is cut to
its last whole fragment, finished, and plays on demand; the point takes a
new push.
"""

from __future__ import annotations

import math
import signal
import struct

import httpx
import pytest
from lxml import etree

from smoothlive.management.settings import parse_settings
from tests.e2e.encoder import start_push
from tests.e2e.harness import Server
from tests.e2e.test_archive import archive_settings, times_by_stream, tree
from tests.e2e.test_live_smooth import chunk_times, tfxd_time, wait_for
from tests.e2e.test_management_api import M, create, set_state, state_of

POINT = "/live/crash.isml"


def settings_of(http: httpx.Client, path: str):
    return parse_settings(etree.fromstring(http.get(f"{path}/settings").content)
                          .find(f".//{M}Settings"))


def _with_video_chunks(http: httpx.Client, count: int) -> bytes | None:
    """The live manifest once it lists ``count`` video chunks, else None."""
    response = http.get(f"{POINT}/Manifest")
    if response.status_code != 200:
        return None
    chunks = times_by_stream(response.content).get("video", [])
    return response.content if len(chunks) >= count else None


def test_kill_9_during_ingest_then_restart(tmp_path):
    root, state = tmp_path / "content", tmp_path / "state"
    srv = Server(root, state, extra_args=("--reconnect-grace", "3")).start()
    password = srv.admin_password
    http = httpx.Client(base_url=srv.url, auth=("admin", password), timeout=20)
    inner = ("<Title>Crash test</Title><LookAheadChunks>3</LookAheadChunks>"
             + archive_settings(event=True))
    assert create(http, POINT, inner).status_code == 201
    assert set_state(http, POINT, "Started").status_code == 200
    before = settings_of(http, POINT)
    encoder = start_push(srv.url, POINT, 30, tmp_path / "ffmpeg.log", event="k1")
    folder = root / "archives" / "live" / "crash" / "k1"
    try:
        live = wait_for(lambda: _with_video_chunks(http, 4), 30, "four live video fragments")
        srv.process.send_signal(signal.SIGKILL)
        srv.process.wait(timeout=10)
    finally:
        encoder.kill()
        encoder.wait(timeout=10)
        http.close()
    srv.process = None
    assert not (folder / "crash.ismc").exists()  # the crash left the archive open
    # A torn write at the end of one file, as a power cut could leave it.
    victim = folder / "video_300000.ismv"
    whole = victim.stat().st_size
    with open(victim, "ab") as handle:
        handle.write(struct.pack(">I4s", 5000, b"moof") + b"\0" * 100)

    again = Server(root, state).start()
    try:
        http = httpx.Client(base_url=again.url, auth=("admin", password), timeout=20)
        # The point and its settings are back; it waits for its encoder again.
        assert settings_of(http, POINT) == before
        assert state_of(http, POINT) == "Starting"
        # The archive was repaired at startup: torn bytes cut, finished, playable.
        assert (folder / "crash.ismc").exists()
        data = victim.read_bytes()
        (mfra_size,) = struct.unpack(">I", data[-4:])
        assert len(data) == whole + mfra_size
        url = "/" + (folder / "crash.ism").relative_to(root).as_posix()
        manifest = http.get(f"{url}/Manifest")
        assert manifest.status_code == 200
        archived = times_by_stream(manifest.content)
        seen_live = times_by_stream(live)
        for name, chunks in seen_live.items():
            # Everything that was live before the kill is in the archive, and more may be.
            assert archived[name][:len(chunks)] == chunks
        for si in tree(manifest.content).findall("StreamIndex"):
            bitrate = si.find("QualityLevel").get("Bitrate")
            for start, duration in chunk_times(si):
                fragment = http.get(f"{url}/QualityLevels({bitrate})/"
                                    f"Fragments({si.get('Name')}={start})")
                assert fragment.status_code == 200
                assert tfxd_time(fragment.content) == (start, duration)
        # The live DVR window is back too, read from the archive: what was listed is.
        window = http.get(f"{POINT}/Manifest")
        assert window.status_code == 200
        restored = times_by_stream(window.content)
        for name, chunks in seen_live.items():
            assert restored[name][:len(chunks)] == chunks
        edge = max(t + d for t, d in restored["video"])
        # The encoder comes back on the same timeline: a new archive beside the repaired
        # one, and the window goes on from where it was.
        encoder = start_push(again.url, POINT, 2, tmp_path / "ffmpeg-2.log", bitrates=(150,),
                             event="k1", offset=math.ceil(edge / 10_000_000) + 1)
        assert encoder.wait(timeout=60) == 0, (tmp_path / "ffmpeg-2.log").read_text()
        wait_for(lambda: state_of(http, POINT) == "Stopped", 20, "Stopped after the new push")
        video = times_by_stream(http.get(f"{POINT}/Manifest").content)["video"]
        assert video[:len(restored["video"])] == restored["video"] and len(video) > len(
            restored["video"])
        wait_for(lambda: (folder.parent / "k1-2" / "crash.ismc").exists(), 20,
                 "the second archive")
        assert set_state(http, POINT, "Idle").status_code == 200
        http.close()
    finally:
        again.stop()
    assert "Traceback" not in again.log()


@pytest.mark.parametrize("server_args", [
    ("--http-server", "granian"), ("--http-server", "uvicorn"),
    ("--workers", "2", "--fronts-only"),  # the encoder's POST relayed by a front
], ids=["granian", "uvicorn", "fronts-only"])
def test_sigterm_during_ingest_finishes_the_archive(tmp_path, server_args):
    root, state = tmp_path / "content", tmp_path / "state"
    srv = Server(root, state, extra_args=server_args).start()
    http = httpx.Client(base_url=srv.url, auth=("admin", srv.admin_password), timeout=20)
    assert create(http, POINT, archive_settings(event=True)).status_code == 201
    assert set_state(http, POINT, "Started").status_code == 200
    encoder = start_push(srv.url, POINT, 30, tmp_path / "ffmpeg.log", bitrates=(150,),
                         event="t1")
    try:
        wait_for(lambda: _with_video_chunks(http, 2), 30, "two live video fragments")
        assert srv.stop(signal.SIGTERM) == 0
    finally:
        encoder.kill()
        encoder.wait(timeout=10)
        http.close()
    folder = root / "archives" / "live" / "crash" / "t1"
    assert (folder / "crash.ismc").exists()
    assert not list((state / "archives-open").glob("*.open"))
    data = (folder / "video_150000.ismv").read_bytes()
    (mfra_size,) = struct.unpack(">I", data[-4:])
    assert data[-mfra_size + 4:-mfra_size + 8] == b"mfra"
