"""A full disk under a real server: points go to Error, keep serving, and come back.

The disk fills up portably: the server process gets an RLIMIT_FSIZE (``prlimit``)
just above its largest file while two points are fed by ``smoothlive replay``, one
archiving, one spooling only, so their next append fails with EFBIG (the server
ignores SIGXFSZ, as Python does, and lives on). A third point, fed afterwards with
files below the limit, works as usual. Then the limit is lifted, "space is back",
and the operator's Idle, Started brings both points back.
"""

from __future__ import annotations

import json
import resource
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree

from smoothlive.archive.ondemand import index_file
from smoothlive.management.errors import MgmtError
from smoothlive.media.ingest import Fragment, IngestParser
from tests.e2e.harness import SMOOTHLIVE, Server, run_cli
from tests.e2e.test_live_smooth import chunk_times, tfxd_time, wait_for
from tests.e2e.test_management_api import M, create, error_code, set_state, state_of

pytestmark = pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs prlimit")

FIXTURES = Path(__file__).parents[1] / "fixtures" / "ingest"
SECOND = 10_000_000
ARCHIVED, SPOOLED, OTHER = "/disk/a.isml", "/disk/c.isml", "/disk/b.isml"
CACHE = ('<ClientConnections enabled="true"><LiveCacheLength>PT1S</LiveCacheLength>'
         "</ClientConnections>")  # most fragments are read back from the files
NO_ARCHIVE = '<Archive enabled="false" />'
FILE_TOO_LARGE = 0x800700DF  # HRESULT_FROM_WIN32(ERROR_FILE_TOO_LARGE)


def video_mdats() -> dict[int, list[bytes]]:
    """The mdat of each video fragment of the capture, by bitrate, in time order."""
    mdats = {}
    for bitrate, name in ((300000, "ch1-300k"), (150000, "ch1-150k")):
        parser = IngestParser()
        events = [*parser.feed((FIXTURES / f"{name}.ismv").read_bytes()), *parser.close()]
        mdats[bitrate] = [e.data.mdat for e in events
                          if isinstance(e, Fragment) and e.data.track_id == 1]
    return mdats


def manifest(http: httpx.Client, point: str) -> etree._Element:
    response = http.get(f"{point}/Manifest")
    assert response.status_code == 200, response.text
    return etree.fromstring(response.content)


def video_chunks(root: etree._Element) -> list[tuple[int, int]]:
    return chunk_times(root.find("StreamIndex[@Type='video']"))


def last_error(http: httpx.Client, point: str) -> str | None:
    root = etree.fromstring(http.get(f"{point}/state").content)
    return root.findtext(f".//{M}State/{M}LastError")


def replay(capture: Path, url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([SMOOTHLIVE, "replay", str(capture), url, "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ended(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=40)
    assert out, err
    return json.loads(out)


def finished(ismv: Path) -> bool:
    """The file ends with its mfra, found from the mfro at the very end."""
    data = ismv.read_bytes()
    (size,) = struct.unpack(">I", data[-4:])
    return 16 < size < len(data) and data[-size + 4:-size + 8] == b"mfra"


def torn_bytes(ismv: Path) -> int:
    """Bytes after the last whole fragment of a file without its mfra (none when whole)."""
    data = ismv.read_bytes()
    return index_file(lambda offset, n: data[offset:offset + n], len(data)).tail


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("disk")
    capture = base / "capture"
    capture.mkdir()
    for name in ("ch1-300k", "ch1-150k"):
        shutil.copy(FIXTURES / f"{name}.ismv", capture)
    srv = Server(base / "content", base / "state").start()
    http = httpx.Client(base_url=srv.url, auth=("admin", srv.admin_password), timeout=20)
    feeds: list[subprocess.Popen] = []
    try:
        assert create(http, ARCHIVED, CACHE).status_code == 201
        for point in (SPOOLED, OTHER):
            assert create(http, point, NO_ARCHIVE + CACHE).status_code == 201
        for point in (ARCHIVED, SPOOLED, OTHER):
            assert set_state(http, point, "Started").status_code == 200
        feeds += [replay(capture, srv.url + point, "--rate", "4x", "--loop", "--duration", "30")
                  for point in (ARCHIVED, SPOOLED)]
        for point in (ARCHIVED, SPOOLED):
            wait_for(lambda p=point: http.get(f"{p}/Manifest").status_code == 200
                     and len(video_chunks(manifest(http, p))) >= 8, 20, f"{point} live")
        before = {point: manifest(http, point) for point in (ARCHIVED, SPOOLED)}
        files = [*(base / "content" / "archives").rglob("*.ismv"),
                 *(base / "state" / "spool").rglob("*.spool")]
        limit = max(f.stat().st_size for f in files)  # the disk is full: no file grows
        # The soft limit: lifting it again needs no privilege.
        soft, hard = resource.prlimit(srv.process.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(srv.process.pid, resource.RLIMIT_FSIZE, (limit, hard))
        for point in (ARCHIVED, SPOOLED):
            wait_for(lambda p=point: state_of(http, p) == "Error", 20, f"{point} in Error")
        reports = [ended(feed) for feed in feeds]
        archive = next((base / "content" / "archives" / "disk" / "a").iterdir())
        yield {"server": srv, "http": http, "base": base, "capture": capture,
               "limits": (soft, hard), "before": before, "reports": reports,
               "archive": archive}
    finally:
        for feed in feeds:
            if feed.poll() is None:
                feed.kill()
                feed.wait(timeout=10)
        http.close()
        srv.stop()


def test_each_point_goes_to_error_with_the_os_error_as_last_error(full):
    http = full["http"]
    for point in (ARCHIVED, SPOOLED):
        assert state_of(http, point) == "Error"
        assert last_error(http, point) == f"0x{FILE_TOO_LARGE:08X}"
    # A point in Error takes no input: the encoders' POSTs were ended (not failed).
    for report in full["reports"]:
        assert [s["status"] for s in report["streams"]] == [200, 200]
    assert full["server"].process.poll() is None  # SIGXFSZ did not kill it


def test_the_log_says_it_once_per_point_without_a_traceback(full):
    log = full["server"].log()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 2, errors
    for point, what in ((ARCHIVED, "cannot append to archive"),
                        (SPOOLED, "cannot write the spool")):
        (line,) = [e for e in errors if f" {point}: " in e]
        assert what in line and "File too large (EFBIG)" in line
        assert f"LastError 0x{FILE_TOO_LARGE:08X}" in line
    assert "Traceback" not in log


def test_what_was_published_is_still_served(full):
    """Every chunk listed before the disk filled up is still listed, and every fragment
    listed now is served whole (from memory, the archive's files or the spool)."""
    http, mdats = full["http"], video_mdats()
    for point in (ARCHIVED, SPOOLED):
        root = manifest(http, point)
        assert root.get("IsLive") is None  # no longer live: the newest fragment is served
        chunks = video_chunks(root)
        assert set(video_chunks(full["before"][point])) <= set(chunks)
        for index in root.findall("StreamIndex"):
            name = index.get("Name")
            for quality in index.findall("QualityLevel"):
                bitrate = int(quality.get("Bitrate"))
                for start, duration in chunk_times(index):
                    fragment = http.get(f"{point}/QualityLevels({bitrate})"
                                        f"/Fragments({name}={start})")
                    assert fragment.status_code == 200
                    assert tfxd_time(fragment.content) == (start, duration)
                    if name == "video":  # the bytes the encoder sent, not a neighbour's
                        sent = mdats[bitrate][start // SECOND % len(mdats[bitrate])]
                        assert fragment.content.endswith(sent)


def test_the_archive_holds_what_was_published_and_plays(full):
    http, archive = full["http"], full["archive"]
    url = "/" + (archive / "a.ism").relative_to(full["base"] / "content").as_posix()
    response = http.get(f"{url}/Manifest")
    assert response.status_code == 200
    # Every chunk listed before the disk filled up was archived. (The fragment the
    # archive failed on went to the spool: live, it may be listed; archived, it is not.)
    written = set(video_chunks(full["before"][ARCHIVED]))
    assert written <= set(video_chunks(etree.fromstring(response.content)))
    # The file that hit the limit could not take its mfra: it ends after its last
    # whole fragment (a smaller one may have been finished).
    files = list(archive.glob("*.ismv"))
    assert len(files) == 3 and not all(finished(f) for f in files)
    assert all(finished(f) or torn_bytes(f) == 0 for f in files)


def test_a_point_without_archive_keeps_working(full):
    http, srv = full["http"], full["server"]
    result = run_cli("replay", str(full["capture"]), srv.url + OTHER, "--rate", "20x",
                     "--json", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert state_of(http, OTHER) == "Stopped"
    root = manifest(http, OTHER)
    assert len(video_chunks(root)) == 4
    mdats = video_mdats()
    for start, _ in video_chunks(root):
        fragment = http.get(f"{OTHER}/QualityLevels(300000)/Fragments(video={start})")
        assert fragment.status_code == 200
        assert fragment.content.endswith(mdats[300000][start // SECOND])


def test_the_operator_brings_the_points_back_once_space_is_back(full):
    http, srv, archive = full["http"], full["server"], full["archive"]
    written = set(video_chunks(full["before"][ARCHIVED]))
    # Error is left through Idle only, as in IIS: not Started, not by a push.
    refused = set_state(http, ARCHIVED, "Started")
    assert refused.status_code == 400
    assert error_code(refused) == MgmtError.STATE_TRANSITION_INVALID.code
    resource.prlimit(srv.process.pid, resource.RLIMIT_FSIZE, full["limits"])
    for point in (ARCHIVED, SPOOLED):
        assert set_state(http, point, "Idle").status_code == 200
        assert state_of(http, point) == "Idle" and last_error(http, point) is None
    # Shut down with space back, the archive that could not be finished is.
    wait_for(lambda: (archive / "a.ismc").exists()
             and all(finished(f) for f in archive.glob("*.ismv")), 20, "the old archive")
    url = "/" + (archive / "a.ism").relative_to(full["base"] / "content").as_posix()
    assert written <= set(video_chunks(etree.fromstring(http.get(f"{url}/Manifest").content)))
    for point in (ARCHIVED, SPOOLED):
        assert set_state(http, point, "Started").status_code == 200
    feeds = [replay(full["capture"], srv.url + point, "--rate", "20x")
             for point in (ARCHIVED, SPOOLED)]
    for feed in feeds:
        report = ended(feed)
        assert feed.returncode == 0, report
    for point in (ARCHIVED, SPOOLED):
        wait_for(lambda p=point: state_of(http, p) == "Stopped", 20, f"{point} Stopped")
        assert len(video_chunks(manifest(http, point))) == 4
    folders = sorted((full["base"] / "content" / "archives" / "disk" / "a").iterdir())
    assert len(folders) == 2
    new = next(f for f in folders if f != archive)
    wait_for(lambda: (new / "a.ismc").exists(), 20, "the new archive finished")
    assert all(finished(f) for f in new.glob("*.ismv"))
    assert len([line for line in srv.log().splitlines() if " ERROR " in line]) == 2
