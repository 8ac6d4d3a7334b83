"""Archives of live events, written while the real ffmpeg pushes, played on demand.

One module encode: two points are pushed at once for a few seconds, one
archived as a single presentation named by the EventID of the ingest URL,
one split into segments. Then: what was archived is what was live, the
archive plays at ``/<archive path>.ism/Manifest`` and yt-dlp downloads it
to a file ffmpeg decodes to the end; Archive Paths outside the content root
are refused unless the operator allowed them.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import imageio_ffmpeg
import pytest
from lxml import etree

from smoothlive.management.errors import MgmtError
from tests.e2e.encoder import FFMPEG, start_push
from tests.e2e.harness import Server
from tests.e2e.test_live_smooth import chunk_times, tfxd_time, wait_for
from tests.e2e.test_management_api import M, create, set_state, state_of

SECONDS = 4
EVENT = "/live/event.isml"
SEGMENTED = "/live/seg.isml"
ARCHIVE = '<Archive enabled="true"><SegmentLength>{length}</SegmentLength>' \
          '<Path useEventIdOnPath="{event}"{path}</Archive>'


def archive_settings(length: str = "PT0S", event: bool = False, path: str | None = None) -> str:
    return ARCHIVE.format(length=length, event="true" if event else "false",
                          path=f">{path}</Path>" if path is not None else " />")


@pytest.fixture(scope="module")
def archived(tmp_path_factory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("archive")
    allowed = base / "allowed"
    allowed.mkdir()
    srv = Server(base / "content", base / "state",
                 extra_args=("--reconnect-grace", "3", "--archive-allow", str(allowed))).start()
    http = httpx.Client(base_url=srv.url, auth=("admin", srv.admin_password), timeout=20)
    assert create(http, EVENT, archive_settings(event=True)).status_code == 201
    assert create(http, SEGMENTED, archive_settings(length="PT2S")).status_code == 201
    for point in (EVENT, SEGMENTED):
        assert set_state(http, point, "Started").status_code == 200
    encoders = [
        start_push(srv.url, EVENT, SECONDS, base / "ffmpeg-event.log", event="ev42"),
        start_push(srv.url, SEGMENTED, SECONDS, base / "ffmpeg-seg.log", name="seg"),
    ]
    statistics = wait_for(
        lambda: b"ev42/video_300000.ismv" in (c := http.get(f"{EVENT}/statistics").content)
        and c, 30, "statistics naming the archive file")
    for encoder, log in zip(encoders, ("event", "seg"), strict=True):
        assert encoder.wait(timeout=60) == 0, (base / f"ffmpeg-{log}.log").read_text()
    for point in (EVENT, SEGMENTED):
        wait_for(lambda p=point: state_of(http, p) == "Stopped", 20, "Stopped")
    root = base / "content"
    event_folder = root / "archives" / "live" / "event" / "ev42"
    # Stop finishes the archive off the event loop: its .ismc is the last file written.
    wait_for(lambda: (event_folder / "event.ismc").exists(), 20, "the finished archive")
    segment_root = wait_for(lambda: next((root / "archives" / "live" / "seg").iterdir(), None),
                            20, "the segmented archive")
    wait_for(lambda: len(list(segment_root.glob("Segment*/seg.ismc"))) >= 2, 20,
             "finished segments")
    yield {"server": srv, "http": http, "base": base, "root": root, "allowed": allowed,
           "event_folder": event_folder, "segment_root": segment_root,
           "statistics": statistics}
    http.close()
    srv.stop()


def tree(content: bytes) -> etree._Element:
    return etree.fromstring(content)


def times_by_stream(manifest: bytes) -> dict[str, list[tuple[int, int]]]:
    return {si.get("Name"): chunk_times(si) for si in tree(manifest).findall("StreamIndex")}


def url_of(root: Path, ism: Path) -> str:
    return "/" + ism.relative_to(root).as_posix()


def test_the_archive_folder_is_named_by_the_event_id(archived):
    folder = archived["event_folder"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["audio_64000.ismv", "event.ism", "event.ismc", "video_150000.ismv",
                     "video_300000.ismv"]
    ism = tree((folder / "event.ism").read_bytes())
    sources = sorted(e.get("src") for e in ism.iter() if e.get("src"))
    assert sources == ["audio_64000.ismv", "video_150000.ismv", "video_300000.ismv"]
    # Every file ends with its mfra, found from the mfro at the very end.
    for name in sources:
        data = (folder / name).read_bytes()
        assert data[4:8] == b"ftyp"
        (mfra_size,) = struct.unpack(">I", data[-4:])
        assert data[-mfra_size + 4:-mfra_size + 8] == b"mfra"


def test_the_archive_holds_what_was_live_and_plays_on_demand(archived):
    http, folder = archived["http"], archived["event_folder"]
    live = times_by_stream(http.get(f"{EVENT}/Manifest").content)
    url = url_of(archived["root"], folder / "event.ism")
    response = http.get(f"{url}/Manifest")
    assert response.status_code == 200
    assert response.content == (folder / "event.ismc").read_bytes()
    root = tree(response.content)
    assert root.get("IsLive") is None and int(root.get("Duration")) > 0
    assert times_by_stream(response.content) == live
    checked = 0
    for si in root.findall("StreamIndex"):
        for quality in si.findall("QualityLevel"):
            for start, duration in chunk_times(si):
                fragment = http.get(f"{url}/QualityLevels({quality.get('Bitrate')})"
                                    f"/Fragments({si.get('Name')}={start})")
                assert fragment.status_code == 200
                assert tfxd_time(fragment.content) == (start, duration)
                checked += 1
    assert checked >= 3 * SECONDS


def test_yt_dlp_downloads_the_archive_and_ffmpeg_decodes_it(archived, tmp_path):
    import yt_dlp

    srv, folder = archived["server"], archived["event_folder"]
    url = srv.url + url_of(archived["root"], folder / "event.ism") + "/Manifest"
    options = {"outtmpl": str(tmp_path / "archive.%(ext)s"), "quiet": True,
               "no_warnings": True, "noprogress": True, "format": "bestvideo+bestaudio/best",
               "proxy": "", "socket_timeout": 20, "retries": 0, "fragment_retries": 0,
               "ffmpeg_location": FFMPEG}
    with yt_dlp.YoutubeDL(options) as ydl:
        info = ydl.extract_info(url, download=True)
    produced = [p for p in tmp_path.iterdir() if p.name.startswith("archive.")]
    assert len(produced) == 1, produced
    assert info["extractor"].lower().startswith("generic")  # its ISM manifest parser
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(produced[0]))
    assert seconds == pytest.approx(SECONDS, abs=1.2) and frames >= 20 * SECONDS
    decoded = subprocess.run([FFMPEG, "-v", "error", "-xerror", "-i", str(produced[0]),
                              "-f", "null", "-"], capture_output=True, timeout=60)
    assert decoded.returncode == 0 and decoded.stderr == b"", decoded.stderr


def test_segments_are_on_demand_presentations_that_cover_the_event(archived):
    http, segments = archived["http"], archived["segment_root"]
    live = times_by_stream(http.get(f"{SEGMENTED}/Manifest").content)
    folders = sorted(p for p in segments.iterdir() if p.is_dir())
    assert [p.name for p in folders[:2]] == ["Segment0001", "Segment0002"]
    covered: dict[str, list[tuple[int, int]]] = {}
    for folder in folders:
        response = http.get(url_of(archived["root"], folder / "seg.ism") + "/Manifest")
        assert response.status_code == 200
        for name, chunks in times_by_stream(response.content).items():
            covered.setdefault(name, []).extend(chunks)
    # Each segment's last chunk lasts as its fragment says: times and durations agree.
    for name, chunks in live.items():
        assert [t for t, _ in covered[name]] == [t for t, _ in chunks]


def test_statistics_name_the_archive_file(archived):
    stats = tree(archived["statistics"]).find(f".//{M}Statistics")
    names = {s.get("id"): s.findtext(f"{M}ArchiveFileName")
             for s in stats.iter(f"{M}InputStream")}
    assert names["ch1-300k"] == "ev42/video_300000.ismv"


@pytest.mark.parametrize("path", ["/etc", "../../outside", "..\\..\\outside", "a/../../.."])
def test_an_archive_path_outside_the_root_is_refused(archived, path):
    http = archived["http"]
    response = create(http, "/live/out.isml", archive_settings(path=path))
    assert response.status_code == 400
    code = tree(response.content).findtext(f"{M}Error/{M}ErrorCode")
    assert code == MgmtError.INVALID_DATA.code
    assert http.get("/live/out.isml/settings").status_code == 404


def test_an_allowed_folder_outside_the_root_takes_archives(archived):
    http, srv, allowed = archived["http"], archived["server"], archived["allowed"]
    point = "/live/away.isml"
    assert create(http, point, archive_settings(path=str(allowed), event=True)).status_code == 201
    assert set_state(http, point, "Started").status_code == 200
    encoder = start_push(srv.url, point, 2, archived["base"] / "ffmpeg-away.log",
                         bitrates=(150,), event="away1")
    assert encoder.wait(timeout=60) == 0
    wait_for(lambda: (allowed / "live" / "away" / "away1" / "away.ismc").exists(), 30,
             "the archive in the allowed folder")
    # Settings of a point cannot be changed to point outside either.
    assert set_state(http, point, "Idle").status_code == 200
    response = http.put(f"{point}/settings", content=_settings_entry(archive_settings(
        path="/elsewhere")), headers={"Content-Type": "application/atom+xml"})
    assert response.status_code == 400


def _settings_entry(inner: str) -> bytes:
    from tests.e2e.test_management_api import settings_body

    return settings_body(inner)
