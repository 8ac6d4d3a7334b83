"""The browser harness, proven on streams made here: dash.js and hls.js in Chromium.

ffmpeg (the imageio-ffmpeg build) encodes a short H.264/AAC clip once and
packages it as on-demand DASH, HLS (fMP4) and Smooth (ffmpeg's ismv split into
fragments plus a client manifest, by ``package_smooth`` below); a loopback
static server with CORS headers serves them to the player page, which comes
from another origin. Each player must play several seconds with decoded frames
growing and no error, and the browser must never try to leave loopback.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from smoothlive.http.static import serve_time, serve_web, utc_now_iso
from tests.browser.player import (
    WEB_DIR,
    Browser,
    PlaybackFailed,
    StaticServer,
    player_url,
    wait_until,
)

CLIP_SECONDS = 10
PLAY_SECONDS = 5
TFXD = bytes.fromhex("6d1d9b0542d544e680e2141daff757b2")  # Smooth's fragment time box
SOURCE = ("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
          "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000")
ENCODE = ("-map", "0:v", "-map", "1:a",
          "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
          "-g", "25", "-keyint_min", "25", "-sc_threshold", "0",
          "-c:a", "aac", "-b:a", "64k", "-ac", "2")


def ffmpeg_command(*args: str) -> list[str]:
    import imageio_ffmpeg

    return [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
            "-nostdin", "-y", *args]


def ffmpeg(*args: str, timeout: float = 60) -> None:
    done = subprocess.run(ffmpeg_command(*args), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"ffmpeg {' '.join(args)} failed:\n{done.stderr}"


# -- Smooth on demand from ffmpeg's ismv (just enough of a packager for a test) --
Box = tuple[str, int, int]  # type, payload start, end


def _boxes(buf: bytes, off: int, end: int) -> Iterator[Box]:
    while off + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, off)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", buf, off + 8)[0]
            header = 16
        elif size == 0:
            size = end - off
        yield kind.decode("latin-1"), off + header, off + size
        off += size


def _find(buf: bytes, off: int, end: int, *path: str) -> tuple[int, int]:
    """The payload bounds of the first box at ``path`` under [off, end)."""
    for name in path:
        found = next(((s, e) for kind, s, e in _boxes(buf, off, end) if kind == name), None)
        assert found is not None, f"no {name} box"
        off, end = found
    return off, end


def _descriptor(buf: bytes, off: int) -> tuple[int, int]:
    """An MPEG-4 descriptor (ISO 14496-1) at ``off``: its payload bounds."""
    off += 1  # tag
    size = 0
    for _ in range(4):
        byte = buf[off]
        off += 1
        size = size << 7 | byte & 0x7F
        if not byte & 0x80:
            break
    return off, off + size


def _avc_private_data(buf: bytes, avcc: int) -> str:
    """avcC's SPS and PPS as Smooth's CodecPrivateData: 00000001 SPS 00000001 PPS."""
    pos = avcc + 5
    nals = []
    for count_mask in (0x1F, 0xFF):  # SPS count (5 bits), then PPS count
        count = buf[pos] & count_mask
        pos += 1
        for _ in range(count):
            size = struct.unpack_from(">H", buf, pos)[0]
            nals.append(buf[pos + 2:pos + 2 + size])
            pos += 2 + size
    return "".join("00000001" + nal.hex() for nal in nals).upper()


def _aac_private_data(buf: bytes, esds: int) -> str:
    """esds's AudioSpecificConfig, hex."""
    pos, _ = _descriptor(buf, esds + 4)  # ES_Descriptor
    flags = buf[pos + 2]
    pos += 3
    if flags & 0x80:
        pos += 2
    if flags & 0x40:
        pos += 1 + buf[pos]
    if flags & 0x20:
        pos += 2
    pos, _ = _descriptor(buf, pos)  # DecoderConfigDescriptor
    start, end = _descriptor(buf, pos + 13)  # DecoderSpecificInfo
    return buf[start:end].hex().upper()


def _tracks(buf: bytes, moov: tuple[int, int]) -> dict[int, dict]:
    tracks: dict[int, dict] = {}
    for kind, s, e in _boxes(buf, *moov):
        if kind != "trak":
            continue
        tkhd = _find(buf, s, e, "tkhd")[0]
        track_id = struct.unpack_from(">I", buf, tkhd + (20 if buf[tkhd] == 1 else 12))[0]
        mdhd = _find(buf, s, e, "mdia", "mdhd")[0]
        timescale = struct.unpack_from(">I", buf, mdhd + (20 if buf[mdhd] == 1 else 12))[0]
        hdlr = _find(buf, s, e, "mdia", "hdlr")[0]
        handler = buf[hdlr + 8:hdlr + 12]
        stsd, stsd_end = _find(buf, s, e, "mdia", "minf", "stbl", "stsd")
        _, entry, entry_end = next(_boxes(buf, stsd + 8, stsd_end))
        if handler == b"vide":
            width, height = struct.unpack_from(">HH", buf, entry + 24)
            avcc = _find(buf, entry + 78, entry_end, "avcC")[0]
            tracks[track_id] = {
                "type": "video", "timescale": timescale, "fragments": [],
                "level": f'FourCC="H264" MaxWidth="{width}" MaxHeight="{height}" '
                         f'CodecPrivateData="{_avc_private_data(buf, avcc)}"',
                "index": f'MaxWidth="{width}" MaxHeight="{height}" '
                         f'DisplayWidth="{width}" DisplayHeight="{height}"'}
        elif handler == b"soun":
            channels, bits = struct.unpack_from(">HH", buf, entry + 16)
            rate = struct.unpack_from(">I", buf, entry + 24)[0] >> 16
            esds = _find(buf, entry + 28, entry_end, "esds")[0]
            tracks[track_id] = {
                "type": "audio", "timescale": timescale, "fragments": [],
                "level": f'FourCC="AACL" SamplingRate="{rate}" Channels="{channels}" '
                         f'BitsPerSample="{bits}" PacketSize="4" AudioTag="255" '
                         f'CodecPrivateData="{_aac_private_data(buf, esds)}"',
                "index": ""}
    return tracks


def package_smooth(ismv: Path, out: Path) -> Path:
    """Split ffmpeg's ismv (moof+mdat fragments with tfxd) into Smooth VOD files.

    Writes ``out/Manifest`` and ``out/QualityLevels(B)/Fragments(type=T)``.
    """
    buf = ismv.read_bytes()
    top = list(_boxes(buf, 0, len(buf)))
    tracks = _tracks(buf, next((s, e) for kind, s, e in top if kind == "moov"))
    for i, (kind, s, e) in enumerate(top):
        if kind != "moof":
            continue
        tfhd = _find(buf, s, e, "traf", "tfhd")[0]
        track = tracks[struct.unpack_from(">I", buf, tfhd + 4)[0]]
        tfxd = next(us for k, us, _ in _boxes(buf, *_find(buf, s, e, "traf"))
                    if k == "uuid" and buf[us:us + 16] == TFXD)
        time, duration = struct.unpack_from(">QQ" if buf[tfxd + 16] == 1 else ">II",
                                            buf, tfxd + 20)
        if time >= 1 << 63:  # ffmpeg writes AAC priming (negative) as a wrapped uint64
            time -= 1 << 64
        track["fragments"].append((time, duration, buf[s - 8:top[i + 1][2]]))  # moof+mdat
    # Smooth times are unsigned: shift all tracks alike so the earliest is 0.
    # (dash.js takes each fragment's time from the manifest, not from its tfxd.)
    shift = -min(0, *(track["fragments"][0][0] for track in tracks.values()))
    indexes = []
    duration = 0
    for track in tracks.values():
        fragments = [(t + shift, d, body) for t, d, body in track["fragments"]]
        first, last = fragments[0], fragments[-1]
        seconds = (last[0] + last[1] - first[0]) / track["timescale"]
        duration = max(duration, round(seconds * 10_000_000))
        bitrate = int(sum(len(body) for _, _, body in fragments) * 8 / seconds)
        folder = out / f"QualityLevels({bitrate})"
        folder.mkdir(parents=True)
        for t, _, body in fragments:
            (folder / f"Fragments({track['type']}={t})").write_bytes(body)
        chunks = "".join(f'<c t="{t}" d="{d}"/>' for t, d, _ in fragments)
        indexes.append(
            f'<StreamIndex Type="{track["type"]}" Name="{track["type"]}" '
            f'Chunks="{len(fragments)}" QualityLevels="1" TimeScale="{track["timescale"]}" '
            f'{track["index"]} Url="QualityLevels({{bitrate}})/Fragments({track["type"]}='
            f'{{start time}})"><QualityLevel Index="0" Bitrate="{bitrate}" {track["level"]}/>'
            f"{chunks}</StreamIndex>")
    manifest = out / "Manifest"
    manifest.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<SmoothStreamingMedia MajorVersion="2" '
        f'MinorVersion="2" TimeScale="10000000" Duration="{duration}">'
        + "".join(indexes) + "</SmoothStreamingMedia>\n")
    return manifest


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticServer]:
    root = tmp_path_factory.mktemp("media")
    clip = root / "clip.mp4"
    ffmpeg(*SOURCE, "-t", str(CLIP_SECONDS), *ENCODE, str(clip))
    (root / "dash").mkdir()
    ffmpeg("-i", str(clip), "-map", "0", "-c", "copy",
           "-f", "dash", "-seg_duration", "1", "-use_template", "1", "-use_timeline", "1",
           str(root / "dash" / "manifest.mpd"))
    (root / "hls").mkdir()
    ffmpeg("-i", str(clip), "-map", "0", "-c", "copy",
           "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod",
           "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4",
           "-hls_segment_filename", str(root / "hls" / "seg%03d.m4s"),
           "-master_pl_name", "index.m3u8",
           str(root / "hls" / "media.m3u8"))
    ismv = root / "clip.ismv"
    ffmpeg("-i", str(clip), "-map", "0", "-c", "copy", "-f", "ismv", str(ismv))
    package_smooth(ismv, root / "smooth.ism")
    server = StaticServer(root, cors=True)
    try:
        yield server
    finally:
        server.close()


def assert_played(state: dict, width: int = 320, height: int = 180) -> None:
    assert state["errors"] == []
    assert state["played"] >= PLAY_SECONDS
    assert state["framesGrown"] >= 5 * PLAY_SECONDS
    assert state["totalVideoFrames"] > state["droppedVideoFrames"]
    assert (state["videoWidth"], state["videoHeight"]) == (width, height)


def test_dashjs_plays_dash(browser: Browser, web_origin: str, media: StaticServer) -> None:
    # type from the URL (.mpd); the time source is the media server's /time.
    state = browser.play(
        player_url(web_origin, f"{media.url}/dash/manifest.mpd", time_url=f"{media.url}/time"),
        seconds=PLAY_SECONDS, timeout=40)
    assert state["type"] == "dash"
    assert state["live"] is False
    assert state["bitrate"] and state["bitrate"] > 0
    assert_played(state)
    # The media really came cross-origin, from the media server.
    assert any("/dash/" in line and ".m4s" in line for line in media.log)


def test_hlsjs_plays_hls(browser: Browser, web_origin: str, media: StaticServer) -> None:
    state = browser.play(player_url(web_origin, f"{media.url}/hls/index.m3u8"),
                         seconds=PLAY_SECONDS, timeout=40)
    assert state["type"] == "hls"
    assert_played(state)
    assert any("/hls/seg" in line for line in media.log)


def test_dashjs_mss_plays_smooth(browser: Browser, web_origin: str,
                                 media: StaticServer) -> None:
    # type from the URL (/Manifest): dash.all + the MSS plugin.
    state = browser.play(player_url(web_origin, f"{media.url}/smooth.ism/Manifest"),
                         seconds=PLAY_SECONDS, timeout=40)
    assert state["type"] == "mss"
    assert state["live"] is False
    assert_played(state)
    assert any("/Fragments(video=" in line for line in media.log)
    assert any("/Fragments(audio=" in line for line in media.log)


def test_player_errors_fail_the_play(browser: Browser, web_origin: str,
                                     media: StaticServer) -> None:
    with pytest.raises(PlaybackFailed, match=r"player error: .*dash\.js error"):
        browser.play(player_url(web_origin, f"{media.url}/nothing/here.mpd"),
                     seconds=1, timeout=20)


def test_outside_requests_are_blocked_and_fail(browser: Browser, web_origin: str) -> None:
    # A documentation address (RFC 5737): never reached, the route aborts it.
    with pytest.raises(PlaybackFailed, match=r"outside loopback[\s\S]*192\.0\.2\.1"):
        browser.play(player_url(web_origin, "http://192.0.2.1/live.isml/Manifest"),
                     seconds=1, timeout=20)


# -- live: the page and the clock from smoothlive's own helpers (static.py) -----
class AsgiServer:
    """An ASGI app under granian (smoothlive's default server), in a thread."""

    def __init__(self, app: Any) -> None:
        from granian.constants import Interfaces
        from granian.server.embed import Server

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = Server(app, address="127.0.0.1", port=port, interface=Interfaces.ASGI,
                             websockets=False, log_enabled=False)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self.server.serve(),), daemon=True)
        self.thread.start()

        def accepting() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        if not wait_until(accepting, timeout=15):
            self.close()
            raise RuntimeError("granian did not start listening in 15s")

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.stop)
        self.thread.join(15)
        if not self.thread.is_alive():
            self.loop.close()


@pytest.fixture
def smoothlive_web() -> Iterator[tuple[AsgiServer, dict[str, int]]]:
    """``/web/...`` and ``/time`` wired as app.py is to wire them."""
    hits = {"time": 0, "web": 0}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/time":
            hits["time"] += 1
            await serve_time(scope, receive, send)
        elif path.startswith("/web/"):
            hits["web"] += 1
            await serve_web(scope, receive, send, path[len("/web/"):])
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    server = AsgiServer(app)
    try:
        yield server, hits
    finally:
        server.close()


@pytest.fixture
def live_dash(tmp_path: Path) -> Iterator[StaticServer]:
    """A live (dynamic) DASH presentation that ffmpeg writes in real time."""
    mpd = tmp_path / "live.mpd"
    log = (tmp_path / "ffmpeg.log").open("wb")
    process = subprocess.Popen(
        ffmpeg_command("-re", *SOURCE, "-t", "60", *ENCODE, "-tune", "zerolatency",
                       "-f", "dash", "-seg_duration", "1", "-window_size", "30",
                       "-use_template", "1", "-use_timeline", "1", str(mpd)),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    server = StaticServer(tmp_path, cors=True)
    try:
        ready = wait_until(
            lambda: len(list(tmp_path.glob("chunk-stream0-*.m4s"))) >= 3 and mpd.exists(),
            timeout=20)
        assert ready, "ffmpeg made no live DASH in 20s: " + (tmp_path / "ffmpeg.log").read_text()
        assert 'type="dynamic"' in mpd.read_text()
        yield server
    finally:
        server.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_live_dash_page_and_clock_from_smoothlive(
        browser: Browser, smoothlive_web: tuple[AsgiServer, dict[str, int]],
        live_dash: StaticServer) -> None:
    origin, hits = smoothlive_web
    # No ?time=: the page syncs to <its origin>/time, i.e. serve_time.
    state = browser.play(player_url(f"{origin.url}/web", f"{live_dash.url}/live.mpd"),
                         seconds=PLAY_SECONDS, timeout=40)
    assert state["type"] == "dash"
    assert state["timeUrl"] == f"{origin.url}/time"
    assert state["live"] is True
    assert state["latency"] is not None and 0 < state["latency"] < 15
    assert_played(state)
    assert hits["time"] >= 1, "dash.js did not sync its clock with /time"
    assert hits["web"] >= 3  # page, player.js, dash.js


# -- static.py at the ASGI level ------------------------------------------------
async def call(handler: Any, path: str = "", method: str = "GET",
               headers: tuple[tuple[bytes, bytes], ...] = (),
               extensions: dict | None = None) -> tuple[int, dict[bytes, bytes], bytes, list]:
    messages: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        messages.append(message)

    scope = {"type": "http", "method": method, "path": f"/web/{path}",
             "headers": list(headers), "extensions": extensions or {}}
    if handler is serve_time:
        await serve_time(scope, receive, send)
    else:
        await serve_web(scope, receive, send, path)
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], dict(start["headers"]), body, messages


@pytest.mark.parametrize("path", [
    "", "/", "..", "../pyproject.toml", "../http/static.py", "vendor/../player.html",
    "vendor/../../http/static.py", "..%2fhttp%2fstatic.py", "%2e%2e/http/static.py",
    "/etc/passwd", "//etc/passwd", "player.html\x00.js", "vendor\\..\\player.html",
    "./player.html", "vendor//hls.min.js", "vendor/", ".gitignore", "player.html/",
    "nothing.js", "vendor/nothing.js", "../__init__.py", "player.html\n",
])
async def test_serve_web_refuses_anything_outside(path: str) -> None:
    status, _, body, _ = await call(serve_web, path)
    assert status == 404
    assert body == b"not found\n"


async def test_serve_web_page_and_vendor_files() -> None:
    page = (WEB_DIR / "player.html").read_bytes()
    status, headers, body, _ = await call(serve_web, "player.html")
    assert (status, body) == (200, page)
    assert headers[b"content-type"] == b"text/html; charset=utf-8"
    assert headers[b"cache-control"] == b"no-cache"
    assert headers[b"content-length"] == str(len(page)).encode()
    assert headers[b"etag"].startswith(b'"') and headers[b"last-modified"].endswith(b"GMT")

    status, headers, body, _ = await call(serve_web, "vendor/hls.min.js")
    assert status == 200
    assert body == (WEB_DIR / "vendor" / "hls.min.js").read_bytes()
    assert headers[b"content-type"] == b"text/javascript; charset=utf-8"
    assert headers[b"cache-control"] == b"public, max-age=300"
    status, headers, _, _ = await call(serve_web, "vendor/dashjs.LICENSE.md")
    assert (status, headers[b"content-type"]) == (200, b"text/plain; charset=utf-8")

    status, headers, body, _ = await call(serve_web, "player.html", method="HEAD")
    assert (status, body, headers[b"content-length"]) == (200, b"", str(len(page)).encode())
    status, headers, _, _ = await call(serve_web, "player.html", method="POST")
    assert (status, headers[b"allow"]) == (405, b"GET, HEAD")


async def test_serve_web_revalidation() -> None:
    _, headers, _, _ = await call(serve_web, "player.js")
    etag, modified = headers[b"etag"], headers[b"last-modified"]
    for condition in ((b"if-none-match", etag), (b"if-none-match", b"W/" + etag),
                      (b"if-none-match", b'"other", ' + etag), (b"if-modified-since", modified)):
        status, headers, body, _ = await call(serve_web, "player.js", headers=(condition,))
        assert (status, body, headers[b"etag"]) == (304, b"", etag), condition
    status, _, _, _ = await call(serve_web, "player.js", headers=((b"if-none-match", b'"x"'),))
    assert status == 200
    old = b"Mon, 01 Jan 2001 00:00:00 GMT"
    status, _, _, _ = await call(serve_web, "player.js", headers=((b"if-modified-since", old),))
    assert status == 200


async def test_serve_web_sends_files_without_python_when_it_can() -> None:
    path = (WEB_DIR / "player.js").resolve()
    size = path.stat().st_size
    status, headers, _, messages = await call(
        serve_web, "player.js", extensions={"http.response.pathsend": {}})
    assert status == 200 and headers[b"content-length"] == str(size).encode()
    assert messages[1] == {"type": "http.response.pathsend", "path": str(path)}

    status, _, _, messages = await call(
        serve_web, "vendor/dash.mss.min.js", extensions={"http.response.zerocopysend": {}})
    assert status == 200
    assert messages[1]["type"] == "http.response.zerocopysend"
    assert messages[1]["count"] == (WEB_DIR / "vendor" / "dash.mss.min.js").stat().st_size
    assert messages[1]["file"].closed  # closed once sent


async def test_serve_time() -> None:
    before = time.time()
    status, headers, body, _ = await call(serve_time)
    after = time.time()
    assert status == 200
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body), body
    stamp = datetime.strptime(body.decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before - 0.001 <= stamp.timestamp() <= after
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"access-control-allow-origin"] == b"*"
    status, headers, body, _ = await call(serve_time, method="HEAD")
    assert (status, body) == (200, b"") and headers[b"content-length"] == b"24"
    assert utc_now_iso(0) == "1970-01-01T00:00:00.000Z"
    assert utc_now_iso(1_795_611_916.1939) == "2026-11-25T13:05:16.193Z"


# -- live Smooth from smoothlive itself: ffmpeg pushes, dash.js MSS plays ----------
@pytest.fixture
def live_smooth(tmp_path: Path) -> Iterator[str]:
    """A real server with ffmpeg pushing to /live/ch1.isml; the manifest URL."""
    import httpx

    from tests.e2e.encoder import start_push, stop_push
    from tests.e2e.harness import Server
    from tests.e2e.test_management_api import create, set_state

    point = "/live/ch1.isml"
    server = Server(tmp_path / "content", tmp_path / "state").start()
    encoder = None
    try:
        with httpx.Client(base_url=server.url, auth=("admin", server.admin_password),
                          timeout=20) as http:
            assert create(http, point, "<LookAheadChunks>2</LookAheadChunks>").status_code == 201
            assert set_state(http, point, "Started").status_code == 200
            encoder = start_push(server.url, point, 40, tmp_path / "ffmpeg.log")
            ready = wait_until(lambda: http.get(f"{point}/Manifest").content.count(b"<c ") >= 6,
                               timeout=30)
            assert ready, "no live manifest in 30s: " + (tmp_path / "ffmpeg.log").read_text()
        yield f"{server.url}{point}/Manifest"
    finally:
        if encoder is not None:
            stop_push(encoder)
        server.stop()


def test_dashjs_mss_plays_live_smooth_from_smoothlive(
        browser: Browser, web_origin: str, live_smooth: str) -> None:
    origin = live_smooth.split("/live/")[0]
    state = browser.play(player_url(web_origin, live_smooth, time_url=f"{origin}/time"),
                         seconds=PLAY_SECONDS, timeout=40)
    assert state["type"] == "mss"
    assert state["live"] is True
    assert state["latency"] is not None and 0 < state["latency"] < 10
    assert_played(state)
