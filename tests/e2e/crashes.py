"""One crash trial: kill -9 of the server at a random moment of an archived
ingest, a restart, and everything a live operator relies on checked.

Shared by the short version in ``make test`` (tests/e2e/test_crash_trials.py)
and the long one in ``make soak`` (soak/test_crash_soak.py).
"""

from __future__ import annotations

import itertools
import json
import random
import signal
import struct
import subprocess
import time
from pathlib import Path

import httpx

from smoothlive.archive.ondemand import read_tfra
from tests.e2e.harness import SMOOTHLIVE, Server
from tests.e2e.test_archive import archive_settings, times_by_stream, tree
from tests.e2e.test_crash import settings_of
from tests.e2e.test_live_smooth import chunk_times, tfxd_time, wait_for
from tests.e2e.test_management_api import create, set_state, state_of

POINT = "/trial/crash.isml"
SECOND = 10_000_000
FIXTURES = Path(__file__).parents[1] / "fixtures" / "ingest"
CAPTURE_FILES = ("ch1-300k", "ch1-150k")
TOP_LEVEL = {b"ftyp", b"uuid", b"moov", b"moof", b"mdat", b"mfra", b"free"}


def capture_dir(base: Path) -> Path:
    """The two-bitrate capture (1-second fragments, 4 s) as a replay folder."""
    folder = base / "capture"
    if not folder.exists():
        folder.mkdir(parents=True)
        for name in CAPTURE_FILES:
            (folder / f"{name}.ismv").write_bytes((FIXTURES / f"{name}.ismv").read_bytes())
    return folder


def check_ismv(path: Path) -> int:
    """A finished archive file: top-level boxes that add up to the file exactly, moof
    and mdat in pairs, an mfra last whose tfra entries all point at moofs. Returns
    the number of fragments."""
    data = path.read_bytes()
    position, kinds, moofs = 0, [], set()
    while position < len(data):
        assert position + 8 <= len(data), f"{path.name}: a box header cut at {position}"
        size, kind = struct.unpack_from(">I4s", data, position)
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, position + 8)
        assert size >= 8 and position + size <= len(data), f"{path.name}: box at {position}"
        assert kind in TOP_LEVEL, f"{path.name}: {kind!r} at {position}"
        if kind == b"moof":
            moofs.add(position)
        kinds.append((kind, position, size))
        position += size
    names = [kind for kind, _, _ in kinds]
    assert names[-1] == b"mfra", f"{path.name} is not finished"
    pairs = [kind for kind in names if kind in (b"moof", b"mdat")]
    assert pairs == [b"moof", b"mdat"] * (len(pairs) // 2), f"{path.name}: unpaired moof"
    _, at, size = kinds[-1]
    entries = read_tfra(data[at:at + size])
    assert entries is not None
    for track in entries.values():
        for _, offset in track:
            assert offset in moofs, f"{path.name}: tfra points at {offset}, not a moof"
    return len(moofs)


def _replay(url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([SMOOTHLIVE, "replay", *args, url, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _listed(http: httpx.Client) -> dict[str, list[tuple[int, int]]]:
    response = http.get(f"{POINT}/Manifest")
    return times_by_stream(response.content) if response.status_code == 200 else {}


def crash_trial(base: Path, rng: random.Random) -> dict:
    """kill -9 at a random moment of an archived ingest, restart, check; a summary."""
    root, state = base / "content", base / "state"
    capture = capture_dir(base)
    srv = Server(root, state, extra_args=("--reconnect-grace", "2")).start()
    password = srv.admin_password
    http = httpx.Client(base_url=srv.url, auth=("admin", password), timeout=20)
    inner = ("<Title>Crash trial</Title><LookAheadChunks>2</LookAheadChunks>"
             + archive_settings(event=True))
    try:
        assert create(http, POINT, inner).status_code == 201
        assert set_state(http, POINT, "Started").status_code == 200
        settings = settings_of(http, POINT)
        encoder = _replay(srv.url + POINT + "/Events(e1)", "--rate", "4x", "--loops", "10",
                          str(capture))
        try:
            wait_for(lambda: _listed(http).get("video"), 30, "a first listed chunk")
            delay = rng.uniform(0.0, 2.5)
            deadline = time.monotonic() + delay
            seen: dict[str, list[tuple[int, int]]] = {}
            while time.monotonic() < deadline:  # what players saw, up to the kill
                seen = _listed(http) or seen
            seen = _listed(http) or seen
            srv.process.send_signal(signal.SIGKILL)
            srv.process.wait(timeout=10)
        finally:
            encoder.kill()
            encoder.communicate(timeout=10)
        srv.process = None
    finally:
        http.close()

    folder = root / "archives" / "trial" / "crash" / "e1"
    srv.start()
    try:
        http = httpx.Client(base_url=srv.url, auth=("admin", password), timeout=20)
        # The point and its settings are back, waiting for its encoder.
        assert settings_of(http, POINT) == settings
        assert state_of(http, POINT) == "Starting"
        # No file is corrupt: the archive was cut to whole fragments and finished.
        assert (folder / "crash.ismc").exists()
        files = sorted(folder.glob("*.ismv"))
        assert files
        fragments = {path.name: check_ismv(path) for path in files}
        # It plays to the last fragment complete on disk, which includes every
        # fragment players saw listed before the kill.
        url = "/" + (folder / "crash.ism").relative_to(root).as_posix()
        manifest = http.get(f"{url}/Manifest")
        assert manifest.status_code == 200
        archived = times_by_stream(manifest.content)
        for name, chunks in seen.items():
            assert archived[name][:len(chunks)] == chunks, name
        for si in tree(manifest.content).findall("StreamIndex"):
            for quality in si.findall("QualityLevel"):
                for start, duration in chunk_times(si):
                    fragment = http.get(f"{url}/QualityLevels({quality.get('Bitrate')})/"
                                        f"Fragments({si.get('Name')}={start})")
                    assert fragment.status_code == 200
                    assert tfxd_time(fragment.content) == (start, duration)
        # The encoder reconnects and continues its timeline where the archive ends.
        end = max(t + d for t, d in archived["video"])
        resume = -(-end // SECOND)  # whole seconds: the capture's fragment boundaries
        encoder = _replay(srv.url + POINT + "/Events(e1)", "--rate", "8x",
                          "--ts-offset", str(resume), str(capture))
        out, err = encoder.communicate(timeout=60)
        assert encoder.returncode == 0, err
        assert all(s["status"] == 200 for s in json.loads(out)["streams"])
        # The live window read back from the archive, then what the encoder sent.
        continued = times_by_stream(http.get(f"{POINT}/Manifest").content)["video"]
        before = archived["video"]
        assert continued[:len(before)] == before
        assert continued[len(before)][0] == resume * SECOND, (continued[len(before)], resume)
        assert all(a[0] + a[1] == b[0]
                   for a, b in itertools.pairwise(continued[len(before):]))
        wait_for(lambda: state_of(http, POINT) == "Stopped", 20, "Stopped after the push")
        second = root / "archives" / "trial" / "crash" / "e1-2"
        wait_for(lambda: (second / "crash.ismc").exists(), 20, "the resumed archive")
        resumed = times_by_stream((second / "crash.ismc").read_bytes())["video"]
        assert resumed[0][0] == resume * SECOND
        http.close()
    finally:
        code = srv.stop()
    assert code == 0
    assert "Traceback" not in srv.log()
    return {"delay": round(delay, 2), "listed_before_kill": len(seen.get("video", [])),
            "archived": len(archived["video"]), "files": fragments}
