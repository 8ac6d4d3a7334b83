"""Live ingest from the real ffmpeg and Smooth Streaming delivery to players.

One encode is shared by the module: ffmpeg pushes two bitrates, each with
the same audio, to a point for a few seconds, and ends its streams normally.
"""

from __future__ import annotations

import itertools
import struct
import time
from collections.abc import Iterator

import httpx
import pytest
from lxml import etree

from tests.e2e.encoder import start_push
from tests.e2e.harness import Server
from tests.e2e.test_management_api import create, set_state, state_of

POINT = "/live/ch1.isml"
SECONDS = 6
TFXD = bytes.fromhex("6d1d9b0542d544e680e2141daff757b2")
TFRF = bytes.fromhex("d4807ef2ca3946958e5426cb9e46a79f")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("live")
    srv = Server(base / "content", base / "state",
                 extra_args=("--reconnect-grace", "3")).start()
    http = httpx.Client(base_url=srv.url, auth=("admin", srv.admin_password), timeout=20)
    assert create(http, POINT, "<Title>Channel 1</Title><LookAheadChunks>2</LookAheadChunks>"
                  ).status_code == 201
    assert set_state(http, POINT, "Started").status_code == 200
    encoder = start_push(srv.url, POINT, SECONDS, base / "ffmpeg.log")
    observed: dict = {"states": set()}
    # While the encoder runs the point is Started and its manifest is live.
    wait_for(lambda: state_of(http, POINT) == "Started", 30, "Started")
    observed["states"].add("Started")
    observed["live_manifest"] = wait_for(
        lambda: (r := http.get(f"{POINT}/Manifest")).status_code == 200 and
        r.content.count(b"<c ") >= 4 and r.content, 30, "a live manifest")
    observed["statistics"] = [http.get(f"{POINT}/statistics").content]
    observed["newest"] = newest_fragment(http, observed["live_manifest"])
    seen = observed["live_manifest"].count(b"<c ")
    wait_for(lambda: http.get(f"{POINT}/Manifest").content.count(b"<c ") > seen + 1, 30,
             "more fragments")
    observed["statistics"].append(http.get(f"{POINT}/statistics").content)
    assert encoder.wait(timeout=60) == 0, (base / "ffmpeg.log").read_text()
    observed["final_state"] = wait_for(
        lambda: (s := state_of(http, POINT)) in ("Stopped",) and s, 20, "Stopped after EOS")
    yield {"server": srv, "http": http, "observed": observed, "base": base}
    http.close()
    srv.stop()


def newest_fragment(http: httpx.Client, manifest: bytes) -> httpx.Response:
    """The newest video fragment a live manifest lists, as a player asks for it."""
    video = next(si for si in manifest_tree(manifest).findall("StreamIndex")
                 if si.get("Type") == "video")
    start = chunk_times(video)[-1][0]
    return http.get(f"{POINT}/QualityLevels(300000)/Fragments(video={start})")


def manifest_tree(content: bytes) -> etree._Element:
    return etree.fromstring(content)


def chunk_times(stream_index: etree._Element) -> list[tuple[int, int]]:
    """The (time, duration) list a player derives from the c elements."""
    chunks, current = [], None
    for c in stream_index.findall("c"):
        start = int(c.get("t")) if c.get("t") is not None else current
        duration = int(c.get("d"))
        for _ in range(int(c.get("r", "1"))):
            chunks.append((start, duration))
            start += duration
        current = start
    return chunks


def box_children(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    out, offset = [], start
    while offset < end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        out.append((kind, offset, size))
        offset += size
    return out


def uuid_boxes(fragment: bytes) -> dict[bytes, bytes]:
    """The uuid boxes in the fragment's traf, by usertype."""
    (moof_kind, moof_at, moof_size), *_ = box_children(fragment, 0, len(fragment))
    assert moof_kind == b"moof"
    found = {}
    for kind, at, size in box_children(fragment, moof_at + 8, moof_at + moof_size):
        if kind == b"traf":
            for child, cat, csize in box_children(fragment, at + 8, at + size):
                if child == b"uuid":
                    found[fragment[cat + 8:cat + 24]] = fragment[cat + 24:cat + csize]
    return found


def tfxd_time(fragment: bytes) -> tuple[int, int]:
    payload = uuid_boxes(fragment)[TFXD]
    if payload[0] == 1:
        return struct.unpack_from(">QQ", payload, 4)
    return struct.unpack_from(">II", payload, 4)


def test_point_goes_started_then_stopped_when_the_encoder_ends(live):
    assert "Started" in live["observed"]["states"]
    assert live["observed"]["final_state"] == "Stopped"


def test_live_manifest_follows_ms_sstr(live):
    root = manifest_tree(live["observed"]["live_manifest"])
    assert root.get("IsLive") == "TRUE"
    assert root.get("MajorVersion") == "2" and root.get("MinorVersion") == "0"
    assert root.get("LookaheadCount") == "2"
    assert root.get("DVRWindowLength") == "0"
    indexes = {si.get("Type"): si for si in root.findall("StreamIndex")}
    assert set(indexes) == {"video", "audio"}
    video, audio = indexes["video"], indexes["audio"]
    bitrates = sorted(int(q.get("Bitrate")) for q in video.findall("QualityLevel"))
    assert bitrates == [150000, 300000]
    # The same audio arrives in both ffmpeg outputs: one QualityLevel, fed twice.
    assert [q.get("Bitrate") for q in audio.findall("QualityLevel")] == ["64000"]
    for si in (video, audio):
        first = si.find("c")
        assert first.get("t") is not None
        chunks = chunk_times(si)
        assert int(si.get("Chunks")) == len(chunks)
        assert all(t >= 0 for t, _ in chunks)
        assert all(a[0] + a[1] <= b[0] for a, b in itertools.pairwise(chunks))
    quality = video.find("QualityLevel")
    assert quality.get("FourCC") == "H264"
    assert quality.get("CodecPrivateData").startswith("00000001")
    assert audio.find("QualityLevel").get("FourCC") == "AACL"
    assert video.get("Url") == "QualityLevels({bitrate})/Fragments(video={start time})"


def test_every_listed_fragment_is_served_with_matching_times(live):
    http = live["http"]
    root = manifest_tree(http.get(f"{POINT}/Manifest").content)
    assert root.get("IsLive") is None  # stopped: on-demand now
    checked = 0
    for si in root.findall("StreamIndex"):
        name = si.get("Name")
        for quality in si.findall("QualityLevel"):
            chunks = chunk_times(si)
            for position, (start, duration) in enumerate(chunks):
                url = f"{POINT}/QualityLevels({quality.get('Bitrate')})/Fragments({name}={start})"
                response = http.get(url)
                assert response.status_code == 200, url
                assert response.headers["content-type"] in ("video/mp4", "audio/mp4")
                assert response.headers["access-control-allow-origin"] == "*"
                assert tfxd_time(response.content) == (start, duration)
                boxes = uuid_boxes(response.content)
                following = chunks[position + 1:position + 3]
                if following:
                    payload = boxes[TFRF]
                    count = payload[4]
                    entries = [struct.unpack_from(">QQ", payload, 5 + 16 * i)
                               for i in range(count)]
                    assert entries == following
                checked += 1
    assert checked >= 3 * 4


def test_a_live_fragment_is_served_only_with_a_successor_in_its_tfrf(live):
    # Players such as dash.js's MSS plugin extend their timeline from TfrfBox
    # alone; a live fragment without a successor to name is "not yet" (412).
    newest = live["observed"]["newest"]
    assert newest.status_code in (200, 412)
    if newest.status_code == 412:
        assert newest.headers["cache-control"] == "no-store"
    else:
        assert uuid_boxes(newest.content)[TFRF][4] >= 1


def test_fragment_info_is_the_moof_alone(live):
    http = live["http"]
    root = manifest_tree(http.get(f"{POINT}/Manifest").content)
    video = next(si for si in root.findall("StreamIndex") if si.get("Type") == "video")
    start, duration = chunk_times(video)[1]
    whole = http.get(f"{POINT}/QualityLevels(300000)/Fragments(video={start})")
    info = http.get(f"{POINT}/QualityLevels(300000)/FragmentInfo(video={start})")
    assert info.status_code == 200
    (kind, _, _), = box_children(info.content, 0, len(info.content))
    assert kind == b"moof" and whole.content.startswith(info.content)
    assert tfxd_time(info.content) == (start, duration)
    assert http.get(f"{POINT}/QualityLevels(300000)/FragmentInfo(video=123)"
                    ).status_code == 404


def test_fragment_caching_etag_head_and_misses(live):
    http = live["http"]
    root = manifest_tree(http.get(f"{POINT}/Manifest").content)
    video = next(si for si in root.findall("StreamIndex") if si.get("Type") == "video")
    chunks = chunk_times(video)
    first = f"{POINT}/QualityLevels(300000)/Fragments(video={chunks[0][0]})"
    response = http.get(first)
    assert "immutable" in response.headers["cache-control"]
    etag = response.headers["etag"]
    assert http.get(first, headers={"If-None-Match": etag}).status_code == 304
    head = http.head(first)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(response.content)
    missing = http.get(f"{POINT}/QualityLevels(300000)/Fragments(video=123)")
    assert missing.status_code == 404
    assert missing.headers["cache-control"] == "no-store"
    assert http.get(f"{POINT}/QualityLevels(999)/Fragments(video={chunks[0][0]})"
                    ).status_code == 404


def test_keywords_are_case_insensitive_and_cors_preflight(live):
    http = live["http"]
    assert http.get(f"{POINT}/manifest").status_code == 200
    root = manifest_tree(http.get(f"{POINT}/MANIFEST").content)
    video = next(si for si in root.findall("StreamIndex") if si.get("Type") == "video")
    start = chunk_times(video)[0][0]
    assert http.get(f"{POINT}/qualitylevels(300000)/fragments(video={start})").status_code == 200
    preflight = http.request("OPTIONS", f"{POINT}/Manifest",
                             headers={"Origin": "http://elsewhere.test",
                                      "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "GET" in preflight.headers["access-control-allow-methods"]


def test_manifest_is_gzipped_when_accepted(live):
    http = live["http"]
    plain = http.get(f"{POINT}/Manifest", headers={"Accept-Encoding": "identity"})
    zipped = http.get(f"{POINT}/Manifest", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers.get("content-encoding") == "gzip"
    assert zipped.content == plain.content  # httpx decodes it
    assert "content-encoding" not in plain.headers


def test_policy_files_for_silverlight_and_flash(live):
    http = live["http"]
    assert b"<access-policy>" in http.get("/clientaccesspolicy.xml").content
    assert b"<cross-domain-policy>" in http.get("/crossdomain.xml").content


def test_stopped_point_stays_watchable_and_shutdown_drops_it(live, tmp_path):
    http = live["http"]
    assert http.get(f"{POINT}/Manifest").status_code == 200
    # A second point, to shut down without disturbing the module's point.
    other = "/live/gone.isml"
    create(http, other)
    set_state(http, other, "Started")
    set_state(http, other, "Idle")
    assert http.get(f"{other}/Manifest").status_code == 404


def test_autostart_point_takes_all_bitrates_pushed_at_once(live):
    """Every output of a multi-bitrate encoder connects at once to an Idle AutoStart point."""
    srv, http = live["server"], live["http"]
    point = "/live/auto.isml"
    assert create(http, point, "<AutoStart>true</AutoStart>").status_code == 201
    encoder = start_push(srv.url, point, 3, live["base"] / "ffmpeg-auto.log")
    assert encoder.wait(timeout=60) == 0, (live["base"] / "ffmpeg-auto.log").read_text()
    root = manifest_tree(http.get(f"{point}/Manifest").content)
    video = next(si for si in root.findall("StreamIndex") if si.get("Type") == "video")
    assert sorted(q.get("Bitrate") for q in video.findall("QualityLevel")) == ["150000", "300000"]
    assert "LOCKED" not in srv.log()


M = "{http://schemas.microsoft.com/iis/media/2011/03/streaming/management}"


def statistics_of(content: bytes) -> etree._Element:
    return etree.fromstring(content).find(f".//{M}Statistics")


def test_statistics_measure_the_live_streams(live):
    first, second = (statistics_of(c) for c in live["observed"]["statistics"])
    streams = {s.get("id"): s for s in second.findall(f"{M}InputStreams/{M}InputStream")}
    assert set(streams) == {"ch1-300k", "ch1-150k"}
    stream = streams["ch1-300k"]
    assert stream.findtext(f"{M}State") == "Started"
    assert stream.findtext(f"{M}ArchiveFileName").endswith(".ismv")
    props = {p.get("name"): p.text for p in stream.iter(f"{M}Property")}
    assert props == {"Source Type": "Push", "Source IP": "127.0.0.1"}
    assert [s.get("name") for s in stream.iter(f"{M}Sink")] == [
        "IIS Smooth Streaming", "Apple HTTP Live Streaming", "MPEG-DASH"]
    tracks = {t.findtext(f"{M}Name"): t for t in stream.iter(f"{M}Track")}
    assert set(tracks) == {"video", "audio"}
    video = tracks["video"]
    assert video.findtext(f"{M}EncodedBitRate") == "300000"
    assert int(video.findtext(f"{M}IncomingBitRate")) > 0
    assert video.findtext(f"{M}IncomingFragmentWaitTime").startswith("PT")
    assert int(video.findtext(f"{M}IncomingFragmentDuration")) > 0
    outputs = {o.get("name"): int(o.findtext(f"{M}LastOutputFragmentTimestamp"))
               for o in second.iter(f"{M}OutputStream")}
    assert set(outputs) == {"video", "audio"}
    # Statistics move while the event runs.
    before = {o.get("name"): int(o.findtext(f"{M}LastOutputFragmentTimestamp"))
              for o in first.iter(f"{M}OutputStream")}
    assert outputs["video"] > before["video"]
    first_video = next(t for t in first.iter(f"{M}Track") if t.findtext(f"{M}Name") == "video")
    assert int(video.findtext(f"{M}IncomingFragmentTimeStamp")) > int(
        first_video.findtext(f"{M}IncomingFragmentTimeStamp"))


def test_statistics_count_fragment_requests(live):
    http = live["http"]
    root = manifest_tree(http.get(f"{POINT}/Manifest").content)
    video = next(si for si in root.findall("StreamIndex") if si.get("Type") == "video")
    for start, _ in chunk_times(video)[:3]:
        http.get(f"{POINT}/QualityLevels(150000)/Fragments(video={start})")
    stats = statistics_of(http.get(f"{POINT}/statistics").content)
    rates = [float(t.findtext(f"{M}RequestRate")) for t in stats.iter(f"{M}Track")
             if t.findtext(f"{M}Name") == "video"]
    assert max(rates) > 0
