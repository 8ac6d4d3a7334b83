"""HLS (TS and fMP4, clear and AES-128) and MPEG-DASH from one live ingest, read by ffmpeg.

One module encode: the real ffmpeg pushes two bitrates and audio to two
points for SECONDS; while it pushes, four more ffmpeg processes read the
live HLS TS, HLS fMP4, encrypted HLS and DASH outputs from the first
segment and decode them until the end (EXT-X-ENDLIST / the static MPD).
After Stop the same URLs play as on-demand, and so does the archive.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree

from tests.e2e.encoder import FFMPEG, start_push
from tests.e2e.harness import Server
from tests.e2e.test_live_smooth import chunk_times, wait_for
from tests.e2e.test_management_api import M, create, set_state, state_of

SECONDS = 16
POINT = "/live/multi.isml"
SECRET = "/live/secret.isml"
# Keys rotate every 10 s: the live AES reader crosses a key change.
ROTATION = "<KeyRotationPeriod>PT10S</KeyRotationPeriod>"
OFF = "/live/off.isml"  # Smooth and DASH switched off: HLS only
SWITCHED_OFF = ('<Modules><Module id="smooth" type="sink" enabled="false" />'
                '<Module id="dash" type="sink" enabled="false" /></Modules>')
HLS = ('<Modules><Module id="hls" type="sink"><HLS><SegmentLength>PT2S</SegmentLength>'
       "<MaxBitRate>3000000</MaxBitRate><AllowCaching>true</AllowCaching>"
       "<BackwardCompatible>true</BackwardCompatible><IncludeCodecs>true</IncludeCodecs>"
       '<Encryption enabled="{encrypted}">{rotation}</Encryption></HLS></Module></Modules>')
FORMATS = {
    "hls-ts": "Manifest(format=m3u8-aapl).m3u8",
    "hls-cmaf": "Manifest(format=m3u8-cmaf)",
    "dash": "Manifest(format=mpd-time-cmaf).mpd",
}
DASH_NS = "{urn:mpeg:dash:schema:mpd:2011}"


def read_command(url: str, out: Path, live: bool = False) -> list[str]:
    """ffmpeg reading an HLS/DASH URL from its first segment and decoding it.

    Live DASH is read in real time (``-re``) for 11 s: ffmpeg's dash demuxer
    reads the window as fast as it can and then asks for the next segment
    before it exists (a 404, as it must be), and it does not end when the MPD
    turns static after Stop; HLS readers follow the playlist to its ENDLIST.
    """
    command = [FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-xerror"]
    if ".m3u8" in url or "m3u8-" in url:
        command += ["-live_start_index", "0"]
    elif live:
        command += ["-re", "-t", "11"]
    return [*command, "-i", url, "-map", "0:v:0?", "-map", "0:a:0?",
            "-f", "framemd5", str(out)]


def decoded_seconds(framemd5: Path, stream: int = 0) -> float:
    """The span of the decoded frames of ``stream`` in a framemd5 listing."""
    timebase, times = None, []
    for line in framemd5.read_text().splitlines():
        if line.startswith(f"#tb {stream}:"):
            num, den = line.split(":", 1)[1].strip().split("/")
            timebase = int(num) / int(den)
        elif not line.startswith("#") and line.strip():
            fields = [f.strip() for f in line.split(",")]
            if int(fields[0]) == stream:
                times.append(int(fields[2]))
    assert timebase is not None and times, framemd5.read_text()[:500]
    return (max(times) - min(times)) * timebase


@pytest.fixture(scope="module")
def pushed(tmp_path_factory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("formats")
    srv = Server(base / "content", base / "state", extra_args=("--reconnect-grace", "3")).start()
    http = httpx.Client(base_url=srv.url, auth=("admin", srv.admin_password), timeout=20)
    assert create(http, POINT, HLS.format(encrypted="false", rotation="")).status_code == 201
    assert create(http, SECRET, HLS.format(encrypted="true", rotation=ROTATION)).status_code == 201
    assert create(http, OFF, SWITCHED_OFF).status_code == 201
    for point in (POINT, SECRET, OFF):
        assert set_state(http, point, "Started").status_code == 200
    encoders = [start_push(srv.url, POINT, SECONDS, base / "push.log", event="f1"),
                start_push(srv.url, SECRET, SECONDS, base / "push-secret.log",
                           bitrates=(300,), name="sec"),
                start_push(srv.url, OFF, SECONDS, base / "push-off.log", bitrates=(150,),
                           name="off")]
    # The readers start once the first HLS segment is listed.
    wait_for(lambda: b".ts" in http.get(
        f"{POINT}/QualityLevels(300000)/Manifest(video,format=m3u8-aapl).m3u8").content,
        30, "a first live HLS segment")
    live_urls = {name: f"{srv.url}{POINT}/{path}" for name, path in FORMATS.items()}
    live_urls["hls-aes"] = f"{srv.url}{SECRET}/Manifest(format=m3u8-aapl).m3u8"
    readers = {}
    for name, url in live_urls.items():
        log = base / f"read-{name}.log"
        with open(log, "wb") as handle:
            readers[name] = subprocess.Popen(read_command(url, base / f"live-{name}.md5", True),
                                             stdout=handle, stderr=handle)
    observed = {"during": {}}
    observed["during"]["multivariant"] = http.get(f"{POINT}/{FORMATS['hls-ts']}")
    observed["during"]["mpd"] = http.get(f"{POINT}/{FORMATS['dash']}")
    observed["during"]["smooth"] = http.get(f"{POINT}/Manifest")
    observed["during"]["off"] = {
        url: http.get(f"{OFF}/{url}").status_code
        for url in ("Manifest", FORMATS["dash"], FORMATS["hls-ts"])}
    observed["during"]["off-statistics"] = http.get(f"{OFF}/statistics").content
    for encoder, log in zip(encoders, ("push", "push-secret", "push-off"), strict=True):
        assert encoder.wait(timeout=90) == 0, (base / f"{log}.log").read_text()
    results = {}
    for name, reader in readers.items():
        try:
            results[name] = reader.wait(timeout=60)
        except subprocess.TimeoutExpired:
            reader.kill()
            results[name] = "timeout"
    for point in (POINT, SECRET, OFF):
        wait_for(lambda p=point: state_of(http, p) == "Stopped", 20, "Stopped")
    yield {"server": srv, "http": http, "base": base, "results": results,
           "observed": observed}
    http.close()
    srv.stop()


@pytest.mark.parametrize("name", ["hls-ts", "hls-cmaf", "dash", "hls-aes"])
def test_ffmpeg_decodes_the_live_output_to_the_end(pushed, name):
    base = pushed["base"]
    log = (base / f"read-{name}.log").read_text(errors="replace")
    assert pushed["results"][name] == 0, log
    assert log.strip() == "", log
    assert decoded_seconds(base / f"live-{name}.md5") >= 10


@pytest.mark.parametrize("name", ["hls-ts", "hls-cmaf", "dash"])
def test_after_stop_each_output_plays_on_demand(pushed, name, tmp_path):
    srv = pushed["server"]
    out = tmp_path / "vod.md5"
    result = subprocess.run(read_command(f"{srv.url}{POINT}/{FORMATS[name]}", out),
                            capture_output=True, timeout=120)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    assert decoded_seconds(out) >= SECONDS - 2


def test_the_three_manifests_list_the_same_fragments(pushed):
    http = pushed["http"]
    smooth = etree.fromstring(http.get(f"{POINT}/Manifest").content)
    video = next(si for si in smooth.findall("StreamIndex") if si.get("Type") == "video")
    smooth_times = chunk_times(video)
    mpd = etree.fromstring(http.get(f"{POINT}/{FORMATS['dash']}").content)
    assert mpd.get("type") == "static"
    video_set = next(a for a in mpd.iter(f"{DASH_NS}AdaptationSet")
                     if a.get("contentType") == "video")
    dash_times, current = [], 0
    for s in video_set.iter(f"{DASH_NS}S"):
        current = int(s.get("t", current))
        for _ in range(int(s.get("r", "0")) + 1):
            dash_times.append((current, int(s.get("d"))))
            current += int(s.get("d"))
    assert dash_times == smooth_times
    playlist = http.get(f"{POINT}/QualityLevels(300000)/Manifest(video,format=m3u8-aapl).m3u8")
    text = playlist.text
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    durations = [float(d) for d in re.findall(r"#EXTINF:([\d.]+),", text)]
    starts = [int(t) for t in re.findall(r"Fragments\(video=(\d+),format=m3u8-aapl\)\.ts", text)]
    assert starts[0] == smooth_times[0][0]
    total = sum(d for _, d in smooth_times) / 10_000_000
    assert sum(durations) == pytest.approx(total, abs=0.01)
    assert all(d <= 2.5 for d in durations)


def test_live_documents_and_headers(pushed):
    during = pushed["observed"]["during"]
    multivariant = during["multivariant"]
    assert multivariant.status_code == 200
    assert multivariant.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert multivariant.headers["access-control-allow-origin"] == "*"
    text = multivariant.text
    assert "#EXT-X-MEDIA:TYPE=AUDIO" in text
    variants = re.findall(r"#EXT-X-STREAM-INF:([^\n]+)\n([^\n]+)", text)
    assert len(variants) == 2
    for attributes, uri in variants:
        assert "RESOLUTION=" in attributes and 'CODECS="avc1.' in attributes
        assert "mp4a.40.2" in attributes and "FRAME-RATE=25.000" in attributes
        assert uri.endswith(".m3u8")
    mpd = during["mpd"]
    assert mpd.headers["content-type"] == "application/dash+xml"
    root = etree.fromstring(mpd.content)
    assert root.get("type") == "dynamic"
    timing = root.find(f"{DASH_NS}UTCTiming")
    assert timing is not None and timing.get("value").endswith("/time")
    assert timing.get("value").startswith(pushed["server"].url)


def test_segment_urls_need_their_extension_and_missing_ones_are_not_cached(pushed):
    http = pushed["http"]
    text = http.get(f"{POINT}/QualityLevels(300000)/Manifest(video,format=m3u8-aapl).m3u8").text
    first = re.search(r"Fragments\(video=\d+,format=m3u8-aapl\)\.ts", text).group(0)
    url = f"{POINT}/QualityLevels(300000)/{first}"
    segment = http.get(url)
    assert segment.status_code == 200 and segment.headers["content-type"] == "video/mp2t"
    assert segment.content[0] == 0x47 and len(segment.content) % 188 == 0
    assert http.get(url[: -len(".ts")]).status_code == 404
    assert http.get(url.replace(".ts", ".m4s")).status_code == 404
    missing = http.get(f"{POINT}/QualityLevels(300000)/Fragments(video=999999999999,"
                       "format=mpd-time-cmaf).m4s")
    assert missing.status_code == 404 and missing.headers["cache-control"] == "no-store"
    upper = http.get(f"{POINT}/QUALITYLEVELS(300000)/MANIFEST(video,FORMAT=M3U8-AAPL).m3u8")
    assert upper.status_code == 200


def test_encrypted_hls_keys_need_a_valid_token(pushed):
    http = pushed["http"]
    text = http.get(f"{SECRET}/QualityLevels(300000)/Manifest(video,format=m3u8-aapl).m3u8").text
    key = re.search(r'#EXT-X-KEY:METHOD=AES-128,URI="([^"]+)"', text)
    assert key is not None, text
    uri = key.group(1)
    assert uri.startswith("../Keys(") and "token=" in uri
    url = f"{SECRET}/{uri[len('../'):]}"
    good = http.get(url)
    assert good.status_code == 200 and len(good.content) == 16
    assert "no-store" in good.headers["cache-control"]
    forged = re.sub(r"token=(\d+)-\w+", r"token=\1-" + "0" * 32, url)
    assert http.get(forged).status_code == 403
    assert http.get(url.split("?")[0]).status_code == 403
    # The segment is not clear TS: the first byte is not a sync byte at every 188.
    first = re.search(r"Fragments\(video=\d+,format=m3u8-aapl\)\.ts", text).group(0)
    body = http.get(f"{SECRET}/QualityLevels(300000)/{first}").content
    assert len(body) % 16 == 0 and body[::188][:5] != b"\x47" * 5


def test_the_archive_plays_as_hls_and_dash(pushed, tmp_path):
    srv, root = pushed["server"], pushed["base"] / "content"
    ism = root / "archives" / "live" / "multi"
    found = wait_for(lambda: next(ism.glob("*/multi.ismc"), None), 20, "the archive")
    url = f"{srv.url}/" + found.with_suffix(".ism").relative_to(root).as_posix()
    for number, path in enumerate(("Manifest(format=m3u8-aapl).m3u8",
                                   "Manifest(format=m3u8-cmaf).m3u8",
                                   "Manifest(format=mpd-time-csf).mpd")):
        out = tmp_path / f"archive-{number}.md5"
        result = subprocess.run(read_command(f"{url}/{path}", out), capture_output=True,
                                timeout=120)
        assert result.returncode == 0 and result.stderr == b"", (path, result.stderr)
        assert decoded_seconds(out) >= SECONDS - 2


def test_outputs_switched_off_are_not_served_nor_reported(pushed):
    assert pushed["observed"]["during"]["off"] == {
        "Manifest": 404, FORMATS["dash"]: 404, FORMATS["hls-ts"]: 200}
    stats = etree.fromstring(pushed["observed"]["during"]["off-statistics"])
    sinks = {s.get("name") for s in stats.iter(f"{M}Sink")}
    assert sinks == {"Apple HTTP Live Streaming"}


def test_encryption_without_a_key_gets_one_stored_with_the_settings(pushed):
    http = pushed["http"]
    settings = etree.fromstring(http.get(f"{SECRET}/settings").content)
    key = settings.findtext(f".//{M}Encryption/{M}Key")
    assert key is not None and re.fullmatch(r"[0-9A-F]{32}", key)
    text = http.get(f"{SECRET}/QualityLevels(300000)/Manifest(video,format=m3u8-aapl).m3u8").text
    uri = re.search(r'#EXT-X-KEY:METHOD=AES-128,URI="\.\./([^"]+)"', text).group(1)
    assert http.get(f"{SECRET}/{uri}").content == bytes.fromhex(key)


def test_allow_caching_off_means_no_store_and_hls_requests_count(pushed):
    http = pushed["http"]
    playlist = http.get(f"{OFF}/QualityLevels(150000)/Manifest(video,format=m3u8-aapl).m3u8")
    assert playlist.headers["cache-control"] == "no-store"
    assert "#EXT-X-ALLOW-CACHE:NO" in playlist.text  # version 3: the tag still exists
    segments = re.findall(r"Fragments\(video=\d+,format=m3u8-aapl\)\.ts", playlist.text)
    for segment in segments[:3]:
        response = http.get(f"{OFF}/QualityLevels(150000)/{segment}")
        assert response.headers["cache-control"] == "no-store"
    stats = etree.fromstring(http.get(f"{OFF}/statistics").content)
    rates = [float(t.findtext(f"{M}RequestRate")) for t in stats.iter(f"{M}Track")
             if t.findtext(f"{M}Name") == "video"]
    assert max(rates) > 0


def test_keys_rotate_on_the_period_and_each_opens_its_segments(pushed):
    http = pushed["http"]
    text = http.get(f"{SECRET}/QualityLevels(300000)/Manifest(video,format=m3u8-aapl).m3u8").text
    uris = re.findall(r'#EXT-X-KEY:METHOD=AES-128,URI="\.\./([^"]+)"', text)
    assert [re.search(r"Keys\((\d+)\)", u).group(1) for u in uris] == ["0", "1"]
    keys = [http.get(f"{SECRET}/{uri}").content for uri in uris]
    assert len(set(keys)) == 2 and all(len(k) == 16 for k in keys)
