"""Hostile clients on delivery and ingest, the server serving everyone else meanwhile.

One server of this module's own, with short limits so that each one shows
within seconds (``--header-timeout 4 --send-timeout 3 --body-timeout 8``; the
head size and connection limits at their defaults), and a live point fed for the whole
module by ``smoothlive replay --loop`` (its POSTs last far longer than the
head timeout and must not be cut by it). Its archive, written as it goes, is
the on-demand presentation.

Each attack is made for real over loopback: heads trickled a byte at a time
(slowloris), bodies trickled after their head, answers never read, thousands
of idle connections, oversized heads, Range headers at every edge. During
each, a normal player still gets the manifest and a fragment; after it, the
server lets go of every connection of the attack (counted in its own
``/proc/<pid>/fd``), the process is alive and its log holds no traceback.
Every wait is bounded; none of these tests asserts how fast anything is.

smoothlive answers no URL with a partial answer today: a Range header is
ignored and the whole representation is sent (200), as RFC 9110 §14.2
allows. The Range test holds whatever the server does to RFC 9110: a 200
is the whole body, a 206 the exact bytes asked for, a 416 only when nothing
asked for exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from lxml import etree

from smoothlive.config import ServerConfig
from smoothlive.management.errors import MgmtError
from smoothlive.server import FILE_RESERVE
from tests.e2e.harness import SMOOTHLIVE, Server
from tests.e2e.test_live_smooth import chunk_times, wait_for
from tests.e2e.test_management_api import ATOM, create, set_state, state_body

FIXTURES = Path(__file__).parents[1] / "fixtures" / "ingest"
POINT = "/hostile/live.isml"
HEADER_TIMEOUT = 4  # seconds: --header-timeout of this module's server
SEND_TIMEOUT = 3  # seconds: --send-timeout
BODY_TIMEOUT = 8  # seconds: --body-timeout (above the replay's 2-second fragments)
# A bound on any wait for the server to let go.
LINGER = HEADER_TIMEOUT + SEND_TIMEOUT + BODY_TIMEOUT + 20
SLACK = 8  # sockets above the baseline that are not the attack's (a player's, closing)
IDLE = 2000  # idle connections held at once, fewer if this process cannot open them
SLOWLORIS = 300
TRICKLE = 40
NEVER_READ = 16


@dataclass
class Ctx:
    server: Server
    host: str
    port: int
    pid: int
    live_fragment: str  # the path of a complete live fragment
    ondemand_fragment: str  # the path of a fragment of the archive, on demand
    baseline: int = 0  # the server's sockets with only the encoder connected
    chunks_seen: list[int] = field(default_factory=list)


def _set_own_open_files(wanted: int) -> int:
    """This process's soft open-files limit set to ``wanted`` (or the hard limit), raised
    or lowered; the one before."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (
        wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))
    return soft


def server_sockets(pid: int) -> int:
    """The sockets the server process holds open (listening, connected, internal)."""
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:")
    return count


def served(ctx: Ctx) -> int:
    """A normal player meanwhile: the live manifest, then a fragment it lists."""
    with httpx.Client(base_url=ctx.server.url, timeout=20) as http:
        manifest = http.get(f"{POINT}/Manifest")
        assert manifest.status_code == 200, manifest.text
        video = next(index for index in etree.fromstring(manifest.content).findall("StreamIndex")
                     if index.get("Type") == "video")
        chunks = chunk_times(video)
        bitrate = video.find("QualityLevel").get("Bitrate")
        fragment = http.get(f"{POINT}/QualityLevels({bitrate})/Fragments(video={chunks[0][0]})")
        assert fragment.status_code == 200
        assert fragment.content[4:8] == b"moof"
    assert not ctx.chunks_seen or len(chunks) >= ctx.chunks_seen[-1]
    ctx.chunks_seen.append(len(chunks))
    return len(chunks)


def healthy(ctx: Ctx) -> None:
    assert ctx.server.process is not None and ctx.server.process.poll() is None
    log = ctx.server.log()
    assert "Traceback" not in log and "panicked" not in log, log[-3000:]


def let_go(ctx: Ctx, what: str) -> None:
    """Bounded: the server holds no more sockets than before the attack."""
    wait_for(lambda: server_sockets(ctx.pid) <= ctx.baseline + SLACK, LINGER,
             f"the server to let go of {what} (it holds {server_sockets(ctx.pid)} sockets, "
             f"{ctx.baseline} before)")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    base = tmp_path_factory.mktemp("hostile")
    capture = base / "capture"
    capture.mkdir()
    for name in ("ch1-300k", "ch1-150k"):
        shutil.copy(FIXTURES / f"{name}.ismv", capture)
    # What this module needs, and what the server inherits: less than --max-connections
    # needs, so the server must raise its own limit (checked with the idle connections).
    before = _set_own_open_files(IDLE + 1024)
    try:
        srv = Server(base / "content", base / "state", extra_args=(
            "--header-timeout", str(HEADER_TIMEOUT), "--send-timeout", str(SEND_TIMEOUT),
            "--body-timeout", str(BODY_TIMEOUT))
        ).start()
    finally:
        if before > IDLE + 1024:
            _set_own_open_files(before)
    replay = None
    try:
        with httpx.Client(base_url=srv.url, auth=("admin", srv.admin_password),
                          timeout=20) as http:
            assert create(http, POINT, "<Title>hostile</Title>").status_code == 201
            assert set_state(http, POINT, "Started").status_code == 200
        # The encoder: both bitrates, looped in real time for longer than the module runs.
        with open(base / "replay.log", "wb") as replay_log:
            replay = subprocess.Popen(
                [SMOOTHLIVE, "replay", str(capture), srv.url + POINT, "--loop",
                 "--duration", "300"], stdout=replay_log, stderr=replay_log,
                stdin=subprocess.DEVNULL)
        with httpx.Client(base_url=srv.url, timeout=20) as http:
            manifest = wait_for(
                lambda: (r := http.get(f"{POINT}/Manifest")).status_code == 200 and
                r.content.count(b"<c ") >= 6 and r.content, 30, "a live manifest")
            video = next(i for i in etree.fromstring(manifest).findall("StreamIndex")
                         if i.get("Type") == "video")
            bitrate = int(video.find("QualityLevel").get("Bitrate"))
            start = chunk_times(video)[0][0]
            archive = wait_for(lambda: sorted(
                (base / "content" / "archives" / "hostile" / "live").glob("*/live.ism")), 20,
                "the archive")[0]
            ism = "/" + archive.relative_to(base / "content").as_posix()
            ondemand = wait_for(lambda: (r := http.get(f"{ism}/Manifest")).status_code == 200
                                and b"<c " in r.content and r.content, 20, "on-demand manifest")
            played = next(i for i in etree.fromstring(ondemand).findall("StreamIndex")
                          if i.get("Type") == "video")
            ondemand_fragment = (f"{ism}/QualityLevels({bitrate})"
                                 f"/Fragments(video={chunk_times(played)[0][0]})")
            assert http.get(ondemand_fragment).status_code == 200
        parts = urlsplit(srv.url)
        assert srv.process is not None
        ctx = Ctx(srv, parts.hostname, parts.port, srv.process.pid,
                  f"{POINT}/QualityLevels({bitrate})/Fragments(video={start})",
                  ondemand_fragment)
        served(ctx)
        # The players' connections above close about now: the lowest count seen over a
        # moment is what the server holds with only the encoder connected.
        counts: list[int] = []
        wait_for(lambda: counts.append(server_sockets(ctx.pid)) or len(counts) > 10, 5,
                 "a few counts")
        ctx.baseline = min(counts)
        yield ctx
    finally:
        if replay is not None:
            replay.send_signal(signal.SIGTERM)
            try:
                replay.wait(timeout=20)
            except subprocess.TimeoutExpired:
                replay.kill()
                replay.wait(timeout=20)
        srv.stop()
        _set_own_open_files(before)


# -- slow heads, slow bodies -----------------------------------------------------------------


async def _trickle(ctx: Ctx, head: bytes, body: bytes, pace: float, chunked: bool = False, *,
                   started: asyncio.Event, count: list[int], total: int) -> tuple[bytes, int]:
    """Send ``head`` at once, then ``body`` a byte each ``pace`` seconds (each byte a
    chunk of its own if ``chunked``); stop when the server answers or closes. What came
    back, and how many bytes of ``body`` were sent. ``started`` is set once ``total``
    trickles have begun."""
    reader, writer = await asyncio.open_connection(ctx.host, ctx.port)
    answer = asyncio.ensure_future(reader.read())  # all of it, until the server closes
    sent = 0
    try:
        if head:
            writer.write(head)
        for byte in body:
            writer.write(b"1\r\n%c\r\n" % byte if chunked else bytes([byte]))
            if not sent:
                count[0] += 1
                if count[0] == total:
                    started.set()
            try:
                await writer.drain()
            except ConnectionError:
                break
            sent += 1
            await asyncio.wait((answer,), timeout=pace)  # the pace, or the answer at once
            if answer.done():
                break
        try:
            return await answer, sent
        except ConnectionError:
            return b"", sent
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _start(ctx: Ctx, trickles: list[tuple]) -> tuple[asyncio.Event, list[asyncio.Future]]:
    started, count = asyncio.Event(), [0]
    return started, [asyncio.ensure_future(_trickle(ctx, *each, started=started, count=count,
                                                    total=len(trickles))) for each in trickles]


async def _attack(ctx: Ctx, trickles: list[tuple], bound: float) -> list[tuple[bytes, int]]:
    """Run the trickles; once each has sent its first byte, a player is served meanwhile."""
    started, tasks = _start(ctx, trickles)
    try:
        await asyncio.wait_for(started.wait(), 30)
        await asyncio.to_thread(served, ctx)
        return await asyncio.wait_for(asyncio.gather(*tasks), bound)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_slowloris_heads_are_cut_at_the_head_timeout(ctx):
    """Hundreds of request heads sent a byte at a time, never finished: each connection
    is closed by the server once --header-timeout has passed, none gets an answer."""
    head = (f"GET {POINT}/Manifest HTTP/1.1\r\nHost: {ctx.host}\r\nUser-Agent: slow\r\n"
            f"X-Never-Ends: {'a' * 4000}").encode()
    results = await _attack(ctx, [(b"", head, 0.25)] * SLOWLORIS, LINGER)
    for answer, sent in results:
        assert answer == b"" or re.match(rb"HTTP/1\.1 4\d\d ", answer), answer[:100]
        assert sent < len(head)  # cut by the server, not finished
    await asyncio.to_thread(let_go, ctx, "the slow heads")
    await asyncio.to_thread(served, ctx)
    healthy(ctx)


async def test_trickled_bodies(ctx):
    """POST and PUT heads followed by a body a byte at a time.

    * anonymous management PUTs: the 401 goes out before the body, and the
      connection is closed then (the body is never waited for);
    * encoder POSTs whose first box claims to be 2 GB: refused (400) as soon as
      its 8-byte header is in, the live point's own encoder undisturbed;
    * an operator's PUTs that trickle hold their connections and nothing else,
      not even the point (another operator changes its state meanwhile), until
      --body-timeout ends them with the MPE_MGMT error of an incomplete body.
    """
    body = state_body("Started")
    anonymous = (f"PUT {POINT}/state HTTP/1.1\r\nHost: {ctx.host}\r\n"
                 f"Content-Type: application/atom+xml\r\nContent-Length: {len(body)}\r\n\r\n"
                 ).encode()
    ingest = [(f"POST {POINT}/Streams(hostile-{n}) HTTP/1.1\r\nHost: {ctx.host}\r\n"
               "Transfer-Encoding: chunked\r\n\r\n").encode() for n in range(TRICKLE)]
    huge_box = b"\x7f\xff\xff\xffmoof" + bytes(400)
    results = await _attack(ctx, [(anonymous, body, 0.1)] * TRICKLE +
                            [(head, huge_box, 0.1, True) for head in ingest], LINGER)
    for answer, sent in results[:TRICKLE]:
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:100]
        assert sent < len(body)  # answered (and closed) before the body was in
    for answer, sent in results[TRICKLE:]:
        assert answer.startswith(b"HTTP/1.1 400 ") and b"corrupt stream" in answer, answer
        assert sent < len(huge_box)  # refused at the box header, not at the end
    # The operator's slow uploads, held while a player and another operator are served.
    token = httpx.BasicAuth("admin", ctx.server.admin_password)._auth_header
    held = (f"PUT {POINT}/state HTTP/1.1\r\nHost: {ctx.host}\r\nAuthorization: {token}\r\n"
            f"Content-Type: application/atom+xml\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
    started, slow = _start(ctx, [(held, body, 0.5)] * TRICKLE)
    try:
        await asyncio.wait_for(started.wait(), 30)
        await asyncio.to_thread(served, ctx)

        def operator_meanwhile() -> int:
            with httpx.Client(base_url=ctx.server.url, timeout=20,
                              auth=("admin", ctx.server.admin_password)) as http:
                return http.put(f"{POINT}/state", content=body, headers=ATOM).status_code

        assert await asyncio.to_thread(operator_meanwhile) == 200
        cut = await asyncio.wait_for(asyncio.gather(*slow), LINGER)
    finally:
        for task in slow:
            task.cancel()
        await asyncio.gather(*slow, return_exceptions=True)
    for answer, sent in cut:
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
        assert f"<ErrorCode>{MgmtError.INVALID_XML.code}<".encode() in answer, answer
        assert sent < len(body)
    await asyncio.to_thread(let_go, ctx, "the trickled bodies")
    await asyncio.to_thread(served, ctx)
    healthy(ctx)


async def test_a_silent_encoder_is_ended_at_the_body_timeout(ctx):
    """An encoder that sends its header and then nothing, its connection open (hung,
    or a path lost that the kernel has not noticed): after --body-timeout its POST is
    ended as a lost connection (408, a log line), so the point goes on to its
    reconnect grace instead of waiting for it forever."""
    point = "/hostile/silent.isml"

    def make() -> None:
        with httpx.Client(base_url=ctx.server.url, timeout=20,
                          auth=("admin", ctx.server.admin_password)) as http:
            assert create(http, point, "<AutoStart>true</AutoStart>").status_code == 201

    await asyncio.to_thread(make)
    capture = (FIXTURES / "ch1-300k.ismv").read_bytes()
    header = capture[:capture.index(b"moof") - 4]  # ftyp and moov, no fragment
    reader, writer = await asyncio.open_connection(ctx.host, ctx.port)
    try:
        writer.write((f"POST {point}/Streams(silent) HTTP/1.1\r\nHost: {ctx.host}\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode()
                     + b"%x\r\n" % len(header) + header + b"\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), BODY_TIMEOUT + LINGER)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert b"no data for" in answer
    assert "Streams(silent)" in ctx.server.log() and "ended as a lost connection" in (
        ctx.server.log())
    await asyncio.to_thread(served, ctx)
    healthy(ctx)


# -- answers never read ----------------------------------------------------------------------


def test_clients_that_never_read_are_cut_at_the_send_timeout(ctx):
    """Connections that ask for fragments, live and on demand, many times over (more than
    every socket buffer on the way holds) and never read a byte of the answers: the
    server is left with an answer it cannot write. --send-timeout later the connection
    is cut and the server lets it go; a player is served all along."""
    sizes = {}
    with httpx.Client(base_url=ctx.server.url, timeout=20) as http:
        for path in (ctx.live_fragment, ctx.ondemand_fragment):
            response = http.get(path)
            assert response.status_code == 200
            sizes[path] = len(response.content)
    try:
        wmem = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        wmem = 32 << 20
    clients = []
    try:
        for n in range(NEVER_READ):
            path = (ctx.live_fragment, ctx.ondemand_fragment)[n % 2]
            sock = socket.create_connection((ctx.host, ctx.port), timeout=20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
            # Twice what the server's send buffer and this socket's receive buffer can
            # hold: the server surely ends up waiting on this client.
            asks = min(20_000, 2 * (wmem + (1 << 17)) // sizes[path] + 1)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {ctx.host}\r\n\r\n".encode() * asks)
            clients.append(sock)
        served(ctx)
        let_go(ctx, "the connections that never read")
        # And those connections are dead: a byte sent now draws a reset.
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.send(b"\r\n")
            wait_for(lambda s=sock: s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
                     != 1, 10, "the connection to be reset")  # 1: TCP_ESTABLISHED
    finally:
        for sock in clients:
            sock.close()
    served(ctx)
    healthy(ctx)


# -- idle connections ------------------------------------------------------------------------


async def test_thousands_of_idle_connections(ctx):
    """Thousands of connections that never send a byte: held at once, a player served
    meanwhile, all closed by the server at --header-timeout. The server's open-files
    limit was raised to hold --max-connections (8192 by default) where the hard limit
    allows it."""
    limits = re.search(r"^Max open files\s+(\S+)\s+(\S+)",
                       Path(f"/proc/{ctx.pid}/limits").read_text(), re.M)
    soft, hard = (float(v) if v != "unlimited" else float("inf") for v in limits.groups())
    assert soft >= min(ServerConfig().max_connections + FILE_RESERVE, hard)
    own = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    own = 1 << 20 if own == resource.RLIM_INFINITY else own
    count = int(min(IDLE, own - 512, soft - FILE_RESERVE - 64))
    assert count >= 500, f"too few open files here for this test ({own}, server {soft})"
    gate = asyncio.Semaphore(256)

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with gate:
            return await asyncio.open_connection(ctx.host, ctx.port)

    pairs = await asyncio.wait_for(asyncio.gather(*(connect() for _ in range(count))), 60)
    closed = [asyncio.ensure_future(reader.read()) for reader, _ in pairs]
    try:
        # Held at once: the server accepted (most of) them, not one after the other.
        await asyncio.to_thread(
            wait_for, lambda: server_sockets(ctx.pid) >= ctx.baseline + count // 2, 10,
            "the idle connections to be accepted")
        await asyncio.to_thread(served, ctx)
        done = await asyncio.wait_for(asyncio.gather(*closed, return_exceptions=True), LINGER)
        for result in done:
            assert result == b"" or isinstance(result, ConnectionError), result
    finally:
        for task in closed:
            task.cancel()
        for _, writer in pairs:
            writer.close()
    await asyncio.to_thread(let_go, ctx, "the idle connections")
    await asyncio.to_thread(served, ctx)
    healthy(ctx)


# -- oversized and malformed heads -----------------------------------------------------------


def _exchange(ctx: Ctx, data: bytes, piece: int = 0) -> bytes:
    """Send ``data`` (in ``piece``-byte writes if given) and read until the server closes
    or has sent a whole head; what came back (b"" when it closed without a word)."""
    with socket.create_connection((ctx.host, ctx.port), timeout=20) as sock:
        step = piece or len(data)
        with contextlib.suppress(OSError):  # closed while still sending: read its answer
            for offset in range(0, len(data), step):
                sock.sendall(data[offset:offset + step])
        received = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in received:
                more = sock.recv(65536)
                if not more:
                    break
                received += more
        return received


def _status(answer: bytes) -> int | None:
    found = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return int(found.group(1)) if found else None


OVERSIZED = {
    "a 100 KB header": lambda p: (f"GET {p} HTTP/1.1\r\nHost: h\r\nX-Big: {'a' * 100_000}"
                                  "\r\n\r\n").encode(),
    "a 64 KB URL": lambda p: f"GET {p}?{'u' * 65_536} HTTP/1.1\r\nHost: h\r\n\r\n".encode(),
    "a 64 KB path": lambda p: f"GET /{'u' * 65_536} HTTP/1.1\r\nHost: h\r\n\r\n".encode(),
    "300 headers": lambda p: (f"GET {p} HTTP/1.1\r\nHost: h\r\n" +
                              "".join(f"X-H{n}: v\r\n" for n in range(300)) + "\r\n").encode(),
    "a 1 MB request line that never ends": lambda p: f"GET {p}{'x' * (1 << 20)}".encode(),
    "a NUL in a header": lambda p: f"GET {p} HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n".encode(),
    "a Content-Length past 2**64": lambda p: (
        f"POST {POINT}/Streams(x) HTTP/1.1\r\nHost: h\r\nContent-Length: {'9' * 30}\r\n\r\n"
    ).encode(),
    "a TLS hello": lambda p: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(500),
}


@pytest.mark.parametrize("piece", [0, 4096], ids=["at-once", "in-4-KB-writes"])
def test_oversized_and_malformed_heads_get_a_4xx_or_a_close(ctx, piece):
    for name, make in OVERSIZED.items():
        answer = _exchange(ctx, make(f"{POINT}/Manifest"), piece)
        status = _status(answer)
        assert (status is None and answer == b"") or status in (400, 413, 414, 431), \
            f"{name}: {answer[:200]!r}"
    # A head well within the limit still works: a 16 KB cookie, as some sites set.
    answer = _exchange(ctx, (f"GET {POINT}/Manifest HTTP/1.1\r\nHost: h\r\nConnection: close"
                             f"\r\nCookie: c={'z' * 16_000}\r\n\r\n").encode(), piece)
    assert _status(answer) == 200, answer[:200]
    served(ctx)
    healthy(ctx)


# -- Range at the edges ----------------------------------------------------------------------

_SPEC = re.compile(r"^[ \t]*([0-9]*)-([0-9]*)[ \t]*$")


def satisfiable(header: str, size: int) -> list[tuple[int, int]] | None:
    """RFC 9110 §14.1.2 for a representation of ``size`` bytes: the ranges ``header``
    asks for that exist ([] when none does), or None if it is not a valid byte range
    request (which a server ignores)."""
    unit, equals, ranges = header.partition("=")
    if not equals or unit.lower() != "bytes":
        return None
    found, specs = [], [part for part in ranges.split(",") if part.strip(" \t")]
    if not specs:
        return None
    for spec in specs:
        match = _SPEC.match(spec)
        if not match or not (match[1] or match[2]):
            return None
        if not match[1]:  # a suffix: the last N bytes
            if int(match[2]) > 0 and size > 0:
                found.append((max(0, size - int(match[2])), size - 1))
            continue
        first = int(match[1])
        last = int(match[2]) if match[2] else size - 1
        if last < first:
            return None
        if first < size:
            found.append((first, min(last, size - 1)))
    return found


def ranges_for(size: int) -> list[str]:
    last = size - 1
    return [
        "bytes=0-0", f"bytes={last}-{last}", f"bytes={last}-", "bytes=-1", f"bytes=-{size}",
        f"bytes=-{size + 100}", "bytes=0-", f"bytes=0-{size + 1000}", f"bytes={size}-",
        f"bytes={size + 100}-{size + 200}", "bytes=-0", f"bytes={size // 2}-{size // 2 + 9}",
        "bytes=5-2", "bytes=abc", "bytes=", "bytes=-", "bytes=1-2-3", "bytes=--1", "items=0-1",
        "bytes=0-1,5-6", "bytes=0-0,-1", f"bytes=-1,{size}-", "bytes=0-1, ,2-3",
        "bytes=" + ",".join(["0-0"] * 1500), "bytes=" + "0" * 40 + "-",
        "bytes=0-" + "9" * 40, "bytes=18446744073709551616-", "bytes=-18446744073709551616",
        "bytes=0x10-0x20", "bytes=+1-2", "bytes=1 -2", "BYTES=0-0",
    ]


def assert_range_answer(response: httpx.Response, body: bytes, header: str) -> None:
    asked = satisfiable(header, len(body))
    status = response.status_code
    where = f"Range: {header[:60]} -> {status}"
    if status == 200:
        assert response.content == body, where
        assert "content-range" not in response.headers, where
    elif status == 206:
        assert asked, where  # a valid request for something that exists
        kind = response.headers.get("content-type", "")
        assert not kind.startswith("multipart/"), f"{where}: teach this test multipart answers"
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", response.headers["content-range"])
        assert match, where
        first, last, size = map(int, match.groups())
        assert size == len(body) and response.content == body[first:last + 1], where
        if len(asked) == 1:
            assert (first, last) == asked[0], where
        else:  # several ranges answered as one (coalesced): within what was asked
            assert min(a for a, _ in asked) <= first and last <= max(b for _, b in asked), where
    elif status == 416:
        assert asked == [], where
        assert response.headers.get("content-range") == f"bytes */{len(body)}", where
    else:
        raise AssertionError(where)


def test_range_requests_at_the_edges(ctx):
    with httpx.Client(base_url=ctx.server.url, timeout=20) as http:
        for path in (ctx.ondemand_fragment, ctx.live_fragment):
            whole = http.get(path)
            assert whole.status_code == 200 and whole.content
            body = whole.content
            for header in ranges_for(len(body)):
                assert_range_answer(http.get(path, headers={"Range": header}), body, header)
                head = http.head(path, headers={"Range": header})
                assert head.status_code in (200, 206, 416) and head.content == b"", header
            # If-Range naming another version: the whole representation, never a piece.
            other = http.get(path, headers={"Range": "bytes=0-0", "If-Range": '"not-it"'})
            assert other.status_code == 200 and other.content == body
    served(ctx)
    healthy(ctx)


def test_the_live_point_was_fed_throughout(ctx):
    """Last: the encoder's POSTs, far longer than --header-timeout, were never cut, and the
    point kept publishing through every attack."""
    first = ctx.chunks_seen[0]
    wait_for(lambda: served(ctx) > first, 20, "the live manifest to grow")
    with httpx.Client(base_url=ctx.server.url, auth=("admin", ctx.server.admin_password),
                      timeout=20) as http:
        assert b"<Value>Started</Value>" in http.get(f"{POINT}/state").content
    # Neither of the encoder's two POSTs ended (nor was cut) while the module ran.
    assert "Streams(ch1-" not in ctx.server.log()
    healthy(ctx)
