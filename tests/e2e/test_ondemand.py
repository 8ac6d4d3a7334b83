"""On-demand Smooth Streaming from .ism folders, played by real clients.

The presentation is what ffmpeg writes to a file with its ismv muxer (one
.ismv holding H.264 and AAC, each moof with a TfxdBox, an mfra at the end)
plus a .ism naming both tracks. A real server serves it; yt-dlp downloads
it through its ISM extractor and ffmpeg decodes the result.
"""

from __future__ import annotations

import gzip
import itertools
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yt_dlp
from lxml import etree

from smoothlive.archive.ondemand import IsmDocument, IsmTrack, index_file, render_ism
from smoothlive.media.boxes import iter_boxes
from smoothlive.media.fragments import read_moof
from tests.e2e.encoder import FFMPEG
from tests.e2e.harness import Server
from tests.e2e.test_live_smooth import chunk_times, wait_for

SECONDS = 4
CLIP = "/vod/clip/clip.ism"
GROWING = "/vod/grow/grow.ism"
BITRATES = {"video": 300_000, "audio": 64_000}


def encode(target: Path) -> None:
    """Four seconds of test signal, as a file the ismv muxer finishes with an mfra."""
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin",
         "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(SECONDS),
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-b:v", "300k",
         "-c:a", "aac", "-b:a", "64k", "-f", "ismv", "-y", str(target)],
        check=True, capture_output=True, timeout=60)


def write_ism(ismv: Path, ism: Path) -> None:
    """The .ism of an .ismv: its tracks by the track_IDs of its moov."""
    data = ismv.read_bytes()
    index = index_file(lambda offset, size: data[offset:offset + size], len(data))
    tracks = tuple(IsmTrack(info.kind, ismv.name, BITRATES[info.kind], info.track_id)
                   for info in index.infos.values())
    assert [t.kind for t in tracks] == ["video", "audio"]
    ism.write_bytes(render_ism(IsmDocument(tracks)))


@pytest.fixture(scope="module")
def vod(tmp_path_factory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("ondemand")
    root = base / "content"
    clip = root / "vod" / "clip"
    encode(clip / "clip.ismv")
    write_ism(clip / "clip.ismv", clip / "clip.ism")
    data = (clip / "clip.ismv").read_bytes()
    # The same presentation outside the root, and links to it from inside.
    outside = base / "outside"
    shutil.copytree(clip, outside)
    (root / "vod" / "evil.ism").symlink_to(outside / "clip.ism")
    (root / "vod" / "elsewhere").symlink_to(outside)
    # A presentation still being written: the head and the first two pairs, and a bit.
    boxes = list(iter_boxes(data))
    moofs = [b.offset for b in boxes if b.type == b"moof"]
    (root / "vod" / "grow").mkdir()
    (root / "vod" / "grow" / "grow.ismv").write_bytes(data[:moofs[2] + 100])
    write_ism(clip / "clip.ismv", root / "vod" / "grow" / "grow.ism")
    ism = (root / "vod" / "grow" / "grow.ism").read_bytes().replace(b"clip.ismv", b"grow.ismv")
    (root / "vod" / "grow" / "grow.ism").write_bytes(ism)
    # Presentations with nothing to play.
    (root / "vod" / "broken.ism").write_bytes(b"<smil><body>")
    (root / "vod" / "empty.ism").write_bytes(render_ism(IsmDocument((
        IsmTrack("video", "missing.ismv", 1, 1),))))
    (root / "vod" / "folder.ism").mkdir()
    srv = Server(root, base / "state").start()
    http = httpx.Client(base_url=srv.url, timeout=20)
    yield {"server": srv, "http": http, "base": base, "root": root, "data": data,
           "mfra": next(b.offset for b in boxes if b.type == b"mfra")}
    http.close()
    srv.stop()


def manifest(http: httpx.Client, path: str = CLIP) -> etree._Element:
    response = http.get(f"{path}/Manifest")
    assert response.status_code == 200, response.text
    return etree.fromstring(response.content)


def fragment_urls(root: etree._Element, path: str = CLIP) -> list[tuple[str, str, int]]:
    """(kind, url, time) of every fragment the manifest lists, as a player builds them."""
    urls = []
    for stream in root.findall("StreamIndex"):
        pattern = stream.get("Url")
        for level in stream.findall("QualityLevel"):
            for time, _ in chunk_times(stream):
                url = pattern.replace("{bitrate}", level.get("Bitrate")).replace(
                    "{start time}", str(time))
                urls.append((stream.get("Type"), f"{path}/{url}", time))
    return urls


def raw_status(base_url: str, target: str) -> int:
    """The status of a GET of ``target`` sent as it is (httpx would normalise dot segments)."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     "Connection: close\r\n\r\n".encode("latin-1"))
        sock.settimeout(10)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


# -- the manifest ----------------------------------------------------------------------------


def test_the_manifest_is_an_on_demand_presentation(vod):
    response = vod["http"].get(f"{CLIP}/Manifest")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["cache-control"] == "public, max-age=86400"  # finished: mfra
    root = etree.fromstring(response.content)
    assert root.tag == "SmoothStreamingMedia"
    assert (root.get("MajorVersion"), root.get("MinorVersion")) == ("2", "0")
    for live_only in ("IsLive", "LookaheadCount", "DVRWindowLength"):
        assert root.get(live_only) is None
    assert abs(int(root.get("Duration")) - SECONDS * 10_000_000) <= 1_000_000
    indexes = {s.get("Type"): s for s in root.findall("StreamIndex")}
    assert set(indexes) == {"video", "audio"}
    for kind, stream in indexes.items():
        (level,) = stream.findall("QualityLevel")
        assert int(level.get("Bitrate")) == BITRATES[kind]
        chunks = chunk_times(stream)
        assert len(chunks) == int(stream.get("Chunks")) >= SECONDS - 1
        assert chunks[0][0] == 0  # no negative time, though ffmpeg's audio starts at -21 ms
        assert all(a + d == b for (a, d), (b, _) in itertools.pairwise(chunks))
        assert abs(sum(d for _, d in chunks) - SECONDS * 10_000_000) <= 1_000_000
    video = indexes["video"].find("QualityLevel")
    assert (video.get("FourCC"), video.get("MaxWidth"), video.get("MaxHeight")) == (
        "H264", "320", "180")
    assert video.get("CodecPrivateData").startswith("00000001")
    audio = indexes["audio"].find("QualityLevel")
    assert (audio.get("FourCC"), audio.get("SamplingRate")) == ("AACL", "48000")


def test_the_manifest_is_gzipped_when_accepted(vod):
    plain = vod["http"].get(f"{CLIP}/Manifest", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    with vod["http"].stream("GET", f"{CLIP}/Manifest",
                            headers={"accept-encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "accept-encoding"
    assert int(response.headers["content-length"]) == len(raw) < len(plain.content)
    assert gzip.decompress(raw) == plain.content


def test_the_manifest_revalidates_with_its_etag(vod):
    http = vod["http"]
    first = http.get(f"{CLIP}/Manifest")
    etag = first.headers["etag"]
    for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = http.get(f"{CLIP}/Manifest", headers={"if-none-match": sent})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
    assert http.get(f"{CLIP}/Manifest", headers={"if-none-match": '"other"'}).status_code == 200


def test_head_and_preflight(vod):
    http = vod["http"]
    get = http.get(f"{CLIP}/Manifest", headers={"accept-encoding": "identity"})
    head = http.head(f"{CLIP}/Manifest", headers={"accept-encoding": "identity"})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(get.content))
    preflight = http.options(f"{CLIP}/Manifest", headers={
        "origin": "https://player.example", "access-control-request-method": "GET"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "GET" in preflight.headers["access-control-allow-methods"]
    post = http.post(f"{CLIP}/Manifest", content=b"x")
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD, OPTIONS"


# -- fragments ---------------------------------------------------------------------------------


def test_every_listed_fragment_is_served_as_in_the_file(vod):
    http, data = vod["http"], vod["data"]
    urls = fragment_urls(manifest(http))
    assert len(urls) >= 2 * (SECONDS - 1)
    for kind, url, time in urls:
        response = http.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"] == f"{kind}/mp4"
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["access-control-allow-origin"] == "*"
        assert "etag" in response.headers
        body = response.content
        assert int(response.headers["content-length"]) == len(body)
        moof_box, mdat_box = list(iter_boxes(body))
        assert (moof_box.type, mdat_box.type, mdat_box.end) == (b"moof", b"mdat", len(body))
        moof = read_moof(body[:moof_box.end])
        assert moof.tfxd_time == time, url
        mdat = body[mdat_box.offset:]
        at = data.find(mdat)
        assert at > 0, "the mdat is the file's"
        if data[at - moof_box.size:at] != body[:moof_box.end]:
            # Only the first audio fragment, which ffmpeg starts 21 ms before
            # zero, is re-stamped to start at 0, as the manifest lists it.
            assert (kind, time) == ("audio", 0)
            original = read_moof(data[at - moof_box.size:at])
            assert original.tfxd_time < 0
            assert original.tfxd_time + original.tfxd_duration == moof.tfxd_duration
        info = http.get(url.replace("Fragments(", "FragmentInfo("))
        assert info.status_code == 200 and info.content == body[:moof_box.end]


def test_fragments_revalidate_and_answer_head(vod):
    http = vod["http"]
    _, url, _ = fragment_urls(manifest(http))[1]
    get = http.get(url)
    etag = get.headers["etag"]
    again = http.get(url, headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    head = http.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(get.content))
    assert head.headers["etag"] == etag


def test_keywords_are_case_insensitive(vod):
    http = vod["http"]
    plain = http.get(f"{CLIP}/Manifest").content
    assert http.get(f"{CLIP}/MANIFEST").content == plain
    assert http.get(f"{CLIP}/manifest/").content == plain
    _, url, time = fragment_urls(manifest(http))[0]
    body = http.get(url).content
    lowered = f"{CLIP}/qualitylevels({BITRATES['video']})/fragments(video={time})"
    assert http.get(lowered).content == body
    upper = f"{CLIP}/QUALITYLEVELS({BITRATES['video']})/FRAGMENTINFO(video={time})"
    assert body.startswith(http.get(upper).content)


@pytest.mark.parametrize("path", [
    f"{CLIP}/QualityLevels(300000)/Fragments(video=1)",  # no fragment at that time
    f"{CLIP}/QualityLevels(300001)/Fragments(video=0)",  # no such bitrate
    f"{CLIP}/QualityLevels(64000)/Fragments(video=0)",  # the audio bitrate
    f"{CLIP}/QualityLevels(300000)/Fragments(Video=0)",  # stream names are exact
    f"{CLIP}/QualityLevels(300000)/FragmentInfo(text=0)",
    "/vod/clip/none.ism/Manifest",
    "/vod/folder.ism/Manifest",
    "/vod/empty.ism/Manifest",  # its only file is missing: nothing to play
    "/vod/broken.ism/Manifest",  # not XML
    "/vod/broken.ism/QualityLevels(1)/Fragments(video=0)",
])
def test_what_is_not_there_is_404_and_not_cached(vod, path):
    response = vod["http"].get(path)
    assert response.status_code == 404
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "text/plain"
    assert b"Traceback" not in response.content and len(response.content) < 100


def test_an_unusable_ism_is_logged_once_in_a_clear_line(vod):
    vod["http"].get("/vod/broken.ism/Manifest")
    said = [line for line in vod["server"].log().splitlines() if "broken.ism" in line]
    assert len(said) == 1 and "is unusable" in said[0], said
    assert "Traceback" not in vod["server"].log()


@pytest.mark.parametrize("target", [
    "/vod/../vod/clip/clip.ism/Manifest",
    "/vod/clip/../clip/clip.ism/Manifest",
    "/vod/clip/%2e%2e/clip/clip.ism/Manifest",
    "/vod/%2E%2E/vod/clip/clip.ism/Manifest",
    "/../outside/clip.ism/Manifest",
    "/%2e%2e/outside/clip.ism/Manifest",
    "/vod/%2e%2e/%2e%2e/outside/clip.ism/Manifest",
    "/vod%2f..%2f..%2foutside/clip.ism/Manifest",
    "/vod%5c..%5c..%5coutside/clip.ism/Manifest",
    "//vod/clip/clip.ism/Manifest",
    "/./vod/clip/clip.ism/Manifest",
    "/vod/clip/clip.ism%00/Manifest",
    "/vod/evil.ism/Manifest",  # a symlink to a .ism outside the root
    "/vod/evil.ism/QualityLevels(300000)/Fragments(video=0)",
    "/vod/elsewhere/clip.ism/Manifest",  # a symlinked folder outside the root
])
def test_nothing_outside_the_root_is_served(vod, target):
    # The presentation behind the links is fine: only where it is matters.
    assert vod["http"].get(f"{CLIP}/Manifest").status_code == 200
    assert raw_status(vod["server"].url, target) == 404


# -- a presentation still being written -----------------------------------------------------------


def test_a_growing_archive_shows_new_fragments(vod):
    http, data = vod["http"], vod["data"]
    growing = vod["root"] / "vod" / "grow" / "grow.ismv"
    first = http.get(f"{GROWING}/Manifest")
    assert first.status_code == 200
    assert first.headers["cache-control"] == "public, max-age=2"  # not finished
    root = etree.fromstring(first.content)
    assert [int(s.get("Chunks")) for s in root.findall("StreamIndex")] == [1, 1]
    with open(growing, "ab") as handle:
        handle.write(data[growing.stat().st_size:vod["mfra"]])
    # The server looks at the file again within its refresh interval (1 s).
    grown = wait_for(lambda: (r := http.get(f"{GROWING}/Manifest")).headers["etag"] !=
                     first.headers["etag"] and r, 10, "the grown manifest", interval=0.05)
    root = etree.fromstring(grown.content)
    assert root.get("IsLive") is None
    assert grown.headers["cache-control"] == "public, max-age=2"  # still no mfra
    whole = manifest(http)
    assert [s.get("Chunks") for s in root.findall("StreamIndex")] == [
        s.get("Chunks") for s in whole.findall("StreamIndex")]
    for _, url, _ in fragment_urls(root, GROWING):
        assert http.get(url).content == http.get(url.replace(GROWING, CLIP)).content
    with open(growing, "ab") as handle:
        handle.write(data[vod["mfra"]:])
    wait_for(lambda: http.get(f"{GROWING}/Manifest").headers["cache-control"] ==
             "public, max-age=86400", 10, "the finished manifest", interval=0.05)


# -- real clients ------------------------------------------------------------------------------


def test_yt_dlp_downloads_it_and_ffmpeg_decodes_it(vod):
    target = vod["base"] / "download"
    options = {
        "outtmpl": str(target / "clip.%(ext)s"),
        "ffmpeg_location": FFMPEG,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "cachedir": False,
        "proxy": "",  # straight to loopback, whatever the environment says
        "socket_timeout": 20,
        "retries": 0,
        "fragment_retries": 0,
        "skip_unavailable_fragments": False,
    }
    with yt_dlp.YoutubeDL(options) as ydl:
        info = ydl.extract_info(f"{vod['server'].url}{CLIP}/Manifest", download=True)
    formats = {f["format_id"]: f for f in info["formats"]}
    assert {f["protocol"] for f in formats.values()} == {"ism"}
    assert {(f["vcodec"], f["acodec"]) for f in formats.values()} == {
        ("H264", "none"), ("none", "AACL")}
    (downloaded,) = target.iterdir()
    decode = subprocess.run([FFMPEG, "-v", "error", "-xerror", "-i", str(downloaded),
                             "-f", "null", "-"], capture_output=True, text=True, timeout=60)
    assert decode.returncode == 0 and decode.stderr == "", decode.stderr
    probe = subprocess.run([FFMPEG, "-hide_banner", "-i", str(downloaded), "-map", "0",
                            "-f", "null", "-"], capture_output=True, text=True, timeout=60)
    duration = re.search(r"Duration: (\d+):(\d+):(\d+\.\d+)", probe.stderr)
    hours, minutes, seconds = duration.groups()
    assert abs(int(hours) * 3600 + int(minutes) * 60 + float(seconds) - SECONDS) < 0.2
    assert re.search(r"Stream #0:\d.*: Video: h264", probe.stderr)
    assert re.search(r"Stream #0:\d.*: Audio: aac", probe.stderr)
    frames = re.findall(r"frame=\s*(\d+)", probe.stderr)
    assert int(frames[-1]) == SECONDS * 25
