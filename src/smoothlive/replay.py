"""Replay recorded ingest captures as live encoders: ``smoothlive replay``.

Benchmarks and soak tests need many live encoders, and encoding is the
expensive part: this pushes recorded ``-f ismv`` captures exactly as an
encoder pushes them, one chunked POST per file to ``<point>/Streams(<id>)``:
the header boxes (ftyp, Live Server Manifest, moov) at once, then one chunk
per moof+mdat, then an mfra and the last chunk, which the server takes as
the end of the stream.

Times. Each fragment's TfxdBox time (and tfdt) becomes
``time + offset + loop * span``. ``start`` is where every track of the
capture has begun (the latest first-fragment start over all tracks of all
files: ffmpeg's first AAC fragment starts ~21 ms before its video), ``end``
the latest fragment end, ``span = end - start``, shared by all files so they
stay aligned. A fragment that starts before ``start`` is sent as captured on
the first loop (the server re-stamps what lies before zero) and, on later
loops, cut to begin at ``start`` (TfxdBox time and duration; the server does
the same to a negative time), so that every track's loop ``k + 1`` begins
exactly where its loop ``k`` ended: a shift alone would leave a 21 ms
overlap or gap at every loop and a discontinuity in the manifest.

Pacing (``--rate 1x``): a fragment is due when it is complete, at its *end*
time relative to ``start``, as an encoder can only send a fragment once its
last sample is encoded; the headers go at once. ``Nx`` is N times faster,
``max`` as fast as the server takes it. Faster than real time, the POSTs of
one point are kept in step (:class:`Lockstep`), as an encoder's outputs
are. Each POST asks ``Expect: 100-continue``: the server authorizes before
it reads the body, and a refusal (404, 401...) would otherwise be lost in
the reset of a body already under way.

The moofs are rewritten once, at load, into templates whose TfxdBox (and
tfdt) are 64-bit: every send is then a bytearray copy of a few hundred
bytes with 16 of them patched; mdats are shared by all copies. The data path
is plain asyncio streams (uvloop when present) writing the chunked framing
by hand, so one process drives hundreds of POSTs.

Credentials: none on loopback (the server trusts a direct loopback peer);
``--user`` with the password in SMOOTHLIVE_PASSWORD sends Digest (one
challenge fetched from the point's management URL per POST, which never
counts as a failed login) or, with ``--basic``, Basic (fine on loopback or
over HTTPS; it is a bench tool).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import signal
import ssl
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit

from smoothlive.auth.digest import digest_ha1, parse_digest_params
from smoothlive.media.boxes import BoxError, Buffer, read_box_header
from smoothlive.media.fragments import read_moof, retimed, with_tfdt
from smoothlive.media.ingest import Fragment, IngestParser, Movie
from smoothlive.media.model import FragmentData

EMPTY_MFRA = b"\x00\x00\x00\x08mfra"
LAST_CHUNK = b"0\r\n\r\n"
USER_AGENT = "smoothlive-replay"

_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")


# -- the capture (sans-IO) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FragmentTemplate:
    """One captured fragment, ready to be re-stamped cheaply.

    ``moof`` has a version 1 (64-bit) TfxdBox, and a version 1 tfdt if it had
    one, so any new time fits in place: sizes and trun data offsets never
    change. ``time``/``duration`` are as captured.
    """

    track_id: int
    time: int
    duration: int
    moof: bytes = field(repr=False)
    mdat: bytes = field(repr=False)
    time_at: int = 0  # the TfxdBox time field, an offset into moof
    duration_at: int = 0  # the TfxdBox duration field
    tfdt_at: int | None = None  # the tfdt baseMediaDecodeTime field, if any

    @property
    def end(self) -> int:
        return self.time + self.duration

    @property
    def size(self) -> int:
        return len(self.moof) + len(self.mdat)

    def render(self, time: int, duration: int) -> bytearray:
        """A copy of the moof carrying ``time`` and ``duration``: 16 (or 24) bytes patched."""
        moof = bytearray(self.moof)
        _I64.pack_into(moof, self.time_at, time)
        _U64.pack_into(moof, self.duration_at, duration)
        if self.tfdt_at is not None:
            if time < 0:
                raise ValueError(f"a tfdt cannot carry the negative time {time}")
            _U64.pack_into(moof, self.tfdt_at, time)
        return moof


def fragment_template(data: FragmentData) -> FragmentTemplate:
    """The template of one parsed fragment (see :class:`FragmentTemplate`).

    ``retimed`` with the fragment's own time and duration only normalises the
    TfxdBox to version 1 (adding one if the encoder wrote none); for ffmpeg's
    version 1 boxes the moof comes back byte for byte.
    """
    moof = retimed(data.moof, data.time, data.duration)
    parsed = read_moof(moof)
    if parsed.tfdt is not None and parsed.tfdt_version == 0:
        moof = with_tfdt(moof, data.time)
        parsed = read_moof(moof)
    assert parsed.tfxd is not None
    tfxd_fields = parsed.tfxd.payload_offset + 4  # after version and flags
    tfdt_at = None if parsed.tfdt is None else parsed.tfdt.payload_offset + 4
    return FragmentTemplate(
        track_id=data.track_id,
        time=data.time,
        duration=data.duration,
        moof=moof,
        mdat=data.mdat,
        time_at=tfxd_fields,
        duration_at=tfxd_fields + 8,
        tfdt_at=tfdt_at,
    )


@dataclass(frozen=True, slots=True)
class CaptureFile:
    """One encoder output: what its POST carries."""

    stream_id: str
    header: bytes = field(repr=False)  # everything before the first moof: ftyp, LSM, moov
    fragments: tuple[FragmentTemplate, ...] = field(repr=False)
    mfra: bytes | None = field(default=None, repr=False)
    timescales: dict[int, int] = field(default_factory=dict)  # track id -> timescale
    truncated: bool = False  # the file ended inside a box (a killed recording): tail dropped

    def first_times(self) -> dict[int, int]:
        """Each track's first fragment start."""
        firsts: dict[int, int] = {}
        for fragment in self.fragments:
            firsts.setdefault(fragment.track_id, fragment.time)
        return firsts


def parse_capture(data: bytes, stream_id: str) -> CaptureFile:
    """Split one capture into its header bytes, fragment templates and mfra.

    The body is checked with the server's own :class:`IngestParser`, so a
    capture that would not ingest is refused here, before any POST.
    """
    header_end: int | None = None
    mfra: bytes | None = None
    offset = 0
    while offset + 8 <= len(data):
        box = read_box_header(data, offset)
        if box.size < 8:
            break
        if box.type == b"moof" and header_end is None:
            header_end = offset
        elif box.type == b"mfra" and box.end <= len(data):
            mfra = data[offset : box.end]
        offset += box.size
    if header_end is None:
        raise ValueError(f"{stream_id}: no moof: not a fragmented (ismv) capture")
    parser = IngestParser()
    events = parser.feed(data)
    truncated = False
    try:
        events += parser.close()
    except BoxError:
        truncated = True
    timescales: dict[int, int] = {}
    fragments: list[FragmentTemplate] = []
    for event in events:
        if isinstance(event, Movie):
            timescales = {track.track_id: track.timescale for track in event.tracks}
        elif isinstance(event, Fragment):
            fragments.append(fragment_template(event.data))
    if not fragments:
        raise ValueError(f"{stream_id}: the capture has no complete fragment")
    return CaptureFile(stream_id, data[:header_end], tuple(fragments), mfra, timescales,
                       truncated)


@dataclass(frozen=True, slots=True)
class Capture:
    """All files of a capture and the one timeline they share (seconds)."""

    files: tuple[CaptureFile, ...]
    start: Fraction  # every track has begun: later loops begin here
    end: Fraction  # the last fragment of any track has ended

    @property
    def span(self) -> Fraction:
        return self.end - self.start

    @property
    def longest_fragment(self) -> Fraction:
        """Seconds of the longest fragment of any track."""
        return max(Fraction(fragment.duration, capture_file.timescales[fragment.track_id])
                   for capture_file in self.files for fragment in capture_file.fragments)


def make_capture(files: Sequence[CaptureFile]) -> Capture:
    """The shared timeline of ``files`` (see the module docstring for start, end, span)."""
    if not files:
        raise ValueError("no capture files")
    starts: list[Fraction] = []
    ends: list[Fraction] = []
    for capture in files:
        for track_id, first in capture.first_times().items():
            starts.append(Fraction(first, capture.timescales[track_id]))
        for fragment in capture.fragments:
            ends.append(Fraction(fragment.end, capture.timescales[fragment.track_id]))
    start, end = max(starts), max(ends)
    if end <= start:
        raise ValueError("the capture lasts no time")
    return Capture(tuple(files), start, end)


def load_capture(path: Path, stream_prefix: str = "") -> Capture:
    """A capture from one ``.ismv`` file or a directory of them; stream ids are file stems."""
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.suffix.lower() == ".ismv" and p.is_file())
        if not paths:
            raise ValueError(f"{path}: no .ismv files")
    else:
        paths = [path]
    files = []
    for file_path in paths:
        try:
            files.append(parse_capture(file_path.read_bytes(), stream_prefix + file_path.stem))
        except BoxError as exc:
            raise ValueError(f"{file_path}: {exc}") from None
    return make_capture(files)


# -- timestamp planning (sans-IO) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackTimeline:
    """How one track's captured times map to sent times, in its timescale."""

    timescale: int
    start: int  # the capture's start: later loops cut what begins before it
    span: int  # what one loop adds
    offset: int  # added to every time (``--ts-offset``)

    def place(self, time: int, duration: int, loop: int) -> tuple[int, int] | None:
        """The sent ``(time, duration)`` of a captured fragment on ``loop``; None to skip it.

        Loop 0 keeps the capture's times (shifted); later loops cut a fragment
        that begins before ``start`` so each loop starts where the last ended.
        """
        if loop:
            if time < self.start:
                duration -= self.start - time
                time = self.start
                if duration <= 0:
                    return None
            time += loop * self.span
        return time + self.offset, duration

    def due(self, end: int, loop: int) -> float:
        """Seconds after the replay started at which a fragment ending at ``end`` is due."""
        return (end - self.start + loop * self.span) / self.timescale


def parse_ts_offset(text: str) -> float | str:
    """``--ts-offset``: seconds (a float) or ``now``."""
    if text.strip().lower() == "now":
        return "now"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not seconds or 'now': {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number of seconds: {text!r}")
    return value


def plan_timelines(
    capture: Capture,
    ts_offset: float | str = 0.0,
    wall_ns: Callable[[], int] = time.time_ns,
) -> list[dict[int, TrackTimeline]]:
    """Per file, per track id: the track's timeline.

    ``ts_offset="now"`` stamps the capture's start with the current UTC time
    (``wall_ns``: nanoseconds since the epoch), as an encoder stamping UTC
    does: copies planned from one reading line up exactly. It is read once.
    """
    now_ns = wall_ns() if ts_offset == "now" else None
    plans: list[dict[int, TrackTimeline]] = []
    for capture_file in capture.files:
        tracks: dict[int, TrackTimeline] = {}
        for track_id, timescale in capture_file.timescales.items():
            start = math.ceil(capture.start * timescale)
            span = round(capture.span * timescale)
            if now_ns is not None:
                offset = now_ns * timescale // 1_000_000_000 - start
            else:
                offset = round(Fraction(ts_offset) * timescale)  # type: ignore[arg-type]
            tracks[track_id] = TrackTimeline(timescale, start, span, offset)
        plans.append(tracks)
    return plans


@dataclass(frozen=True, slots=True)
class Planned:
    """One fragment to send: which, on which loop, with what times, when due."""

    index: int  # in the file's fragments
    loop: int
    fragment: FragmentTemplate
    time: int
    duration: int
    due: float  # seconds after the start (pacing at 1x)

    def moof(self) -> bytearray:
        return self.fragment.render(self.time, self.duration)


def plan_sends(
    capture_file: CaptureFile,
    timelines: dict[int, TrackTimeline],
    loops: int | None,
) -> Iterator[Planned]:
    """The fragments of ``capture_file`` in sending order, ``loops`` times (None: forever)."""
    loop = 0
    while loops is None or loop < loops:
        for index, fragment in enumerate(capture_file.fragments):
            timeline = timelines[fragment.track_id]
            placed = timeline.place(fragment.time, fragment.duration, loop)
            if placed is not None:
                due = timeline.due(fragment.end, loop)
                yield Planned(index, loop, fragment, placed[0], placed[1], due)
        loop += 1


# -- HTTP/1.1 framing (sans-IO) --------------------------------------------------------------


def chunk(*parts: Buffer) -> list[Buffer]:
    """One chunk of a chunked body (RFC 9112 §7.1) holding ``parts``, as pieces to write."""
    size = sum(len(part) for part in parts)
    if not size:
        return []  # an empty chunk would end the body
    return [b"%x\r\n" % size, *parts, b"\r\n"]


def request_head(target: str, host: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """The head of the chunked ingest POST."""
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}", f"User-Agent: {USER_AGENT}",
             "Content-Type: application/octet-stream", "Transfer-Encoding: chunked",
             "Expect: 100-continue", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


def parse_response_head(head: bytes) -> Response:
    """Status and headers (names lower-cased) of a response head ending in CRLFCRLF."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
    return Response(int(parts[1]), headers)


def error_text(body: bytes) -> str | None:
    """A refusal's body in one line: the management error message, else its start."""
    text = body.decode("utf-8", "replace")
    found = re.search(r"<ErrorCode>(.*?)</ErrorCode>.*?<ErrorMessage>(.*?)</ErrorMessage>", text,
                      re.S)
    if found:
        return f"{found[1]} {found[2]}"
    return " ".join(text.split())[:300] or None


def digest_authorization(
    challenge: str, user: str, password: str, method: str, uri: str, cnonce: str | None = None
) -> str:
    """An ``Authorization: Digest`` value answering ``challenge`` (RFC 7616, qop=auth)."""
    params = parse_digest_params(challenge)
    if params is None or "nonce" not in params or "realm" not in params:
        raise ValueError("not a usable Digest challenge")
    algorithm = params.get("algorithm", "MD5").upper()
    hash_name = {"MD5": "md5", "SHA-256": "sha256"}.get(algorithm)
    if hash_name is None:
        raise ValueError(f"unsupported Digest algorithm {algorithm}")

    def h(text: str) -> str:
        return hashlib.new(hash_name, text.encode()).hexdigest()

    realm, nonce = params["realm"], params["nonce"]
    cnonce = cnonce or secrets.token_hex(8)
    count = "00000001"
    ha1 = digest_ha1(user, realm, password, algorithm)
    response = h(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{h(f'{method}:{uri}')}")
    fields = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"',
              f"algorithm={algorithm}", "qop=auth", f"nc={count}", f'cnonce="{cnonce}"',
              f'response="{response}"']
    if "opaque" in params:
        fields.append(f'opaque="{params["opaque"]}"')
    return "Digest " + ", ".join(fields)


# -- reports ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    rank = max(1, math.ceil(fraction * len(values)))
    return values[rank - 1]


def lag_stats(lags: Sequence[float]) -> dict[str, float] | None:
    """p50, p99 and max of send lags (seconds), in milliseconds; None without any."""
    if not lags:
        return None
    ordered = sorted(lags)
    return {"p50_ms": round(percentile(ordered, 0.50) * 1000, 3),
            "p99_ms": round(percentile(ordered, 0.99) * 1000, 3),
            "max_ms": round(ordered[-1] * 1000, 3)}


@dataclass
class StreamReport:
    point: str
    stream: str
    fragments: int = 0
    bytes: int = 0
    loops: int = 0  # loops sent whole
    status: int | None = None
    error: str | None = None
    early: bool = False  # the server answered before the body ended
    lags: list[float] = field(default_factory=list, repr=False)  # seconds, at a paced rate

    def summary(self) -> dict[str, Any]:
        return {"point": self.point, "stream": self.stream, "status": self.status,
                "fragments": self.fragments, "bytes": self.bytes, "loops": self.loops,
                "lag": lag_stats(self.lags), "early": self.early, "error": self.error}


# -- the asyncio part ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    rate: float | None = 1.0  # pace factor; None: as fast as the server takes it
    loops: int | None = 1  # None: until stopped
    user: str | None = None
    password: str = ""
    basic: bool = False
    insecure: bool = False
    response_timeout: float = 30.0
    continue_timeout: float = 1.0  # for 100 Continue


@dataclass(frozen=True, slots=True)
class Target:
    """One publishing point URL, split for a raw connection."""

    scheme: str
    host: str
    port: int
    path: str  # the point path, as in the URL

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def stream_target(self, stream_id: str) -> str:
        return f"{self.path}/Streams({quote(stream_id, safe='-_.~')})"


class SentLog:
    """``--sent-log``: one JSON line per fragment once its last byte is written.

    ``monotonic`` is ``time.monotonic()``: on Linux the same clock in every
    process of the host, so the server's publish times can be compared.
    """

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle

    def write(self, point: str, stream: str, planned: Planned, monotonic: float) -> None:
        self.handle.write(json.dumps({
            "point": point, "stream": stream, "track": planned.fragment.track_id,
            "time": planned.time, "duration": planned.duration, "loop": planned.loop,
            "monotonic": monotonic, "wall": time.time()}) + "\n")


class Lockstep:
    """Keeps the POSTs of one point together, as a real encoder's outputs are.

    Replayed faster than real time they would drift apart, and a stream that
    starts (or falls) far behind the others looks to the server like an
    encoder that restarted its clock: a discontinuity. So no stream sends a
    fragment before every stream of the point is open (its ``100 Continue``
    came: the server has taken it in), and then a stream may send a fragment
    due up to ``slack`` after the slowest other stream's last one; the
    slowest may always send, so nobody waits forever. A stream that ends or
    fails leaves.
    """

    def __init__(self, members: int, slack: float) -> None:
        # The due time of each member's last fragment sent; None until it is open.
        self.positions: list[float | None] = [None] * members
        self.slack = slack
        self._moved: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def may_send(self, member: int, due: float) -> bool:
        own = self.positions[member]
        if own is None:
            return False
        lowest = math.inf
        for index, position in enumerate(self.positions):
            if index != member:
                if position is None:
                    return False
                lowest = min(lowest, position)
        return own <= lowest or due <= lowest + self.slack

    async def turn(self, member: int, due: float, *waiters: asyncio.Future) -> bool:
        """Wait until ``member`` may send; False if one of ``waiters`` completed first."""
        while not self.may_send(member, due):
            await asyncio.wait((self._moved, *waiters), return_when=asyncio.FIRST_COMPLETED)
            if any(waiter.done() for waiter in waiters):
                return False
        return True

    def advance(self, member: int, due: float) -> None:
        """``member`` sent a fragment due at ``due`` (0: it is open, nothing sent yet)."""
        self.positions[member] = due
        moved, self._moved = self._moved, asyncio.get_running_loop().create_future()
        moved.set_result(None)

    def leave(self, member: int) -> None:
        self.advance(member, math.inf)


async def _read_response(reader: asyncio.StreamReader, interim: bool = False) -> Response:
    """The next response; a 1xx (which has no body) only when ``interim``, else skipped."""
    head = parse_response_head(await reader.readuntil(b"\r\n\r\n"))
    while 100 <= head.status < 200 and not interim:
        head = parse_response_head(await reader.readuntil(b"\r\n\r\n"))
    if head.status < 200:
        return head
    length = dict(head.headers).get("content-length")
    if length is not None and length.isdigit():
        body = await reader.readexactly(int(length))
    elif "chunked" in dict(head.headers).get("transfer-encoding", "").lower():
        pieces = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if not size:
                break
            pieces.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(pieces)
    else:
        body = await reader.read()
    return Response(head.status, head.headers, body)


async def _connect(target: Target, options: Options):
    context = None
    if target.scheme == "https":
        context = ssl.create_default_context()
        if options.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    return await asyncio.open_connection(target.host, target.port, ssl=context)


async def _authorization(target: Target, stream_target: str, options: Options) -> str | None:
    """The Authorization value for one POST, or None on loopback without ``--user``.

    Digest needs a fresh challenge: a GET of the point's management
    ``State`` answers 401 with one, and a request without credentials never
    counts as a failed login.
    """
    if options.user is None:
        return None
    if options.basic:
        token = base64.b64encode(f"{options.user}:{options.password}".encode()).decode()
        return f"Basic {token}"
    reader, writer = await _connect(target, options)
    try:
        writer.write(f"GET {target.path}/State HTTP/1.1\r\nHost: {target.authority}\r\n"
                     f"User-Agent: {USER_AGENT}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        await writer.drain()
        response = await asyncio.wait_for(_read_response(reader), options.response_timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    for value in response.header_values("www-authenticate"):
        if value.lower().startswith("digest"):
            return digest_authorization(value, options.user, options.password, "POST",
                                        stream_target)
    raise ValueError(f"no Digest challenge from {target.path}/State (HTTP {response.status})")


async def _continue(reader: asyncio.StreamReader, timeout: float) -> asyncio.Task[Response]:
    """Wait for ``100 Continue``; the task that gives the final response.

    The server authorizes a push before it reads the body and a refusal
    closes the connection: a body already on its way would then be reset,
    and its answer (404, 401...) lost with it. A done task is that refusal.
    A server that never answers 100 gets the body after ``timeout`` anyway
    (RFC 9110 §10.1.1).
    """
    first = asyncio.ensure_future(_read_response(reader, interim=True))
    await asyncio.wait((first,), timeout=timeout)
    if first.done():
        if first.exception() is None and first.result().status < 200:
            return asyncio.ensure_future(_read_response(reader))
        return first

    async def final() -> Response:
        answer = await first
        return answer if answer.status >= 200 else await _read_response(reader)

    return asyncio.ensure_future(final())


async def push_stream(
    target: Target,
    capture_file: CaptureFile,
    timelines: dict[int, TrackTimeline],
    options: Options,
    started: float,
    stop: asyncio.Future[None],
    sent_log: SentLog | None = None,
    lockstep: tuple[Lockstep, int] | None = None,
) -> StreamReport:
    """One encoder POST: headers at once, fragments as planned, then mfra and the end.

    ``lockstep`` is the point's :class:`Lockstep` and this stream's place in it.
    """
    report = StreamReport(target.path, capture_file.stream_id)
    stream_target = target.stream_target(capture_file.stream_id)
    writer: asyncio.StreamWriter | None = None
    response: asyncio.Task[Response] | None = None
    last = len(capture_file.fragments) - 1
    try:
        extra = []
        authorization = await _authorization(target, stream_target, options)
        if authorization:
            extra.append(("Authorization", authorization))
        reader, writer = await _connect(target, options)
        writer.transport.set_write_buffer_limits(high=0)  # drain() waits for the last byte
        writer.write(request_head(stream_target, target.authority, extra))
        await writer.drain()
        response = await _continue(reader, options.continue_timeout)
        if response.done():  # refused before any of the body: the answer is all there is
            report.status = response.result().status
            report.error = error_text(response.result().body)
            return report
        writer.writelines(chunk(capture_file.header))
        report.bytes += len(capture_file.header)
        await writer.drain()
        if lockstep is not None:
            lockstep[0].advance(lockstep[1], 0.0)  # open
        waiters = (stop, response)
        for planned in plan_sends(capture_file, timelines, options.loops):
            if stop.done() or response.done():
                break
            if options.rate is not None:
                delay = started + planned.due / options.rate - time.monotonic()
                if delay > 0:
                    await asyncio.wait(waiters, timeout=delay,
                                       return_when=asyncio.FIRST_COMPLETED)
                    if stop.done() or response.done():
                        break
            if lockstep is not None and not await lockstep[0].turn(
                    lockstep[1], planned.due, *waiters):
                break
            moof = planned.moof()
            writer.writelines(chunk(moof, planned.fragment.mdat))
            await writer.drain()
            now = time.monotonic()
            if lockstep is not None:
                lockstep[0].advance(lockstep[1], planned.due)
            if options.rate is None:
                await asyncio.sleep(0)  # the kernel took it all at once: let the others run
            else:
                report.lags.append(now - started - planned.due / options.rate)
            report.fragments += 1
            report.bytes += len(moof) + len(planned.fragment.mdat)
            if planned.index == last:
                report.loops += 1
            if sent_log is not None:
                sent_log.write(target.path, capture_file.stream_id, planned, now)
        if not response.done():
            exact = options.loops == 1 and all(t.offset == 0 for t in timelines.values())
            mfra = capture_file.mfra if exact and capture_file.mfra else EMPTY_MFRA
            writer.writelines(chunk(mfra))
            writer.write(LAST_CHUNK)
            report.bytes += len(mfra)
            await writer.drain()
        else:
            report.early = True
        answer = await asyncio.wait_for(response, options.response_timeout)
        report.status = answer.status
        if answer.status != 200:
            report.error = error_text(answer.body)
    except (TimeoutError, OSError, EOFError, ValueError) as exc:
        answer = None
        if response is not None:  # a refusal closes the connection under our writes
            with contextlib.suppress(Exception):
                answer = await asyncio.wait_for(response, 2.0)
        if answer is not None:
            report.status = answer.status  # the server answered, then hung up
            report.early = True
            if answer.status != 200:
                report.error = error_text(answer.body)
        else:
            report.error = f"{type(exc).__name__}: {exc}"
    finally:
        if lockstep is not None:
            lockstep[0].leave(lockstep[1])
        if response is not None and not response.done():
            response.cancel()
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()
    return report


def point_urls(url: str, count: int, first: int = 1) -> list[str]:
    """``count`` point URLs: ``{n}`` in ``url`` replaced by first .. first + count - 1."""
    if "{n}" not in url:
        if count != 1:
            raise ValueError("--count needs {n} in the URL, e.g. http://host/bench/ch{n}.isml")
        return [url]
    return [url.replace("{n}", str(n)) for n in range(first, first + count)]


def copy_delays(count: int, fragment: float, stagger: bool) -> list[float]:
    """Seconds each of ``count`` copies starts after the first: spread evenly over
    one ``fragment`` length with ``stagger``, else all at once."""
    step = fragment / count if stagger else 0.0
    return [copy * step for copy in range(count)]


async def replay(
    capture: Capture,
    urls: Sequence[str],
    options: Options,
    timelines: list[dict[int, TrackTimeline]],
    *,
    duration: float | None = None,
    sent_log: SentLog | None = None,
    install_signals: bool = True,
    stagger: bool = False,
) -> list[StreamReport]:
    """Every file of ``capture`` to every URL at once; stops gracefully on a signal.

    With ``stagger``, copy k of N starts k/N of the longest fragment later,
    as independent encoders do (each a fragment's length apart at most);
    without it every copy sends its fragments at the same instants."""
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    main = asyncio.current_task()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    def on_signal() -> None:
        if stop.done() and main is not None:
            main.cancel()  # a second Ctrl-C: do not wait for the server's answers
        request_stop()

    handled: list[int] = []
    if install_signals:
        for number in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(number, on_signal)
                handled.append(number)
    timer = loop.call_later(duration, request_stop) if duration is not None else None
    targets = [Target.parse(url) for url in urls]
    slack = float(capture.longest_fragment)
    started = time.monotonic()
    pushes = []
    delays = copy_delays(len(targets), slack, stagger)
    for target, delay in zip(targets, delays, strict=True):
        lockstep = Lockstep(len(capture.files), slack)
        for member, (capture_file, plan) in enumerate(zip(capture.files, timelines, strict=True)):
            pushes.append(push_stream(target, capture_file, plan, options,
                                      started + delay, stop, sent_log, (lockstep, member)))
    try:
        return list(await asyncio.gather(*pushes))
    finally:
        if timer is not None:
            timer.cancel()
        for number in handled:
            loop.remove_signal_handler(number)


# -- the command -----------------------------------------------------------------------------


def parse_rate(text: str) -> float | None:
    """``--rate``: ``max``, or a pace such as ``1x`` (``2x``: twice real time)."""
    lowered = text.strip().lower()
    if lowered == "max":
        return None
    try:
        value = float(lowered.removesuffix("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate such as 1x or max: {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"the rate must be positive: {text!r}")
    return value


def _run_loop(main: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def _text_report(summary: dict[str, Any]) -> str:
    lines = []
    for stream in summary["streams"]:
        line = (f"{stream['point']} Streams({stream['stream']}): "
                f"{stream['status'] if stream['status'] is not None else 'no answer'}, "
                f"{stream['fragments']} fragments, {_megabytes(stream['bytes'])}, "
                f"{stream['loops']} loops")
        if stream["lag"]:
            lag = stream["lag"]
            line += (f", send lag p50 {lag['p50_ms']:.1f} ms p99 {lag['p99_ms']:.1f} ms"
                     f" max {lag['max_ms']:.1f} ms")
        if stream["early"]:
            line += ", answered early"
        if stream["error"]:
            line += f" - {stream['error']}"
        lines.append(line)
    total, elapsed = summary["total"], summary["elapsed"]
    megabits = total["bytes"] * 8 / 1e6 / max(elapsed, 1e-9)
    line = (f"total: {total['streams']} streams ({total['ok']} answered 200), "
            f"{total['fragments']} fragments, {_megabytes(total['bytes'])} in {elapsed:.1f} s "
            f"({megabits:.1f} Mbit/s)")
    if total["lag"]:
        lag = total["lag"]
        line += (f", send lag p50 {lag['p50_ms']:.1f} ms p99 {lag['p99_ms']:.1f} ms"
                 f" max {lag['max_ms']:.1f} ms")
    lines.append(line)
    return "\n".join(lines)


def summarize(reports: Sequence[StreamReport], capture: Capture, elapsed: float) -> dict:
    """The ``--json`` report: per stream, and the totals."""
    total_lag = lag_stats([lag for report in reports for lag in report.lags])
    return {
        "capture": {"files": [f.stream_id for f in capture.files],
                    "span_seconds": float(capture.span)},
        "elapsed": elapsed,
        "streams": [report.summary() for report in reports],
        "total": {"streams": len(reports),
                  "ok": sum(report.status == 200 for report in reports),
                  "fragments": sum(report.fragments for report in reports),
                  "bytes": sum(report.bytes for report in reports),
                  "lag": total_lag},
    }


def run(args: argparse.Namespace) -> int:
    """``smoothlive replay``: exit 0 when every POST was answered 200."""
    try:
        capture = load_capture(Path(args.capture), args.stream_prefix)
        urls = point_urls(args.url, args.count, args.first)
        for url in urls:
            Target.parse(url)
        if args.count < 1 or args.loops < 1:
            raise ValueError("--count and --loops must be at least 1")
    except (OSError, ValueError) as exc:
        print(f"smoothlive replay: {exc}", file=sys.stderr)
        return 2
    for capture_file in capture.files:
        if capture_file.truncated:
            print(f"smoothlive replay: {capture_file.stream_id}: the capture ends inside a box;"
                  " its last complete fragment ends the replay", file=sys.stderr)
    options = Options(
        rate=args.rate,
        loops=None if args.loop else args.loops,
        user=args.user,
        password=os.environ.get("SMOOTHLIVE_PASSWORD", ""),
        basic=args.basic,
        insecure=args.insecure,
    )
    timelines = plan_timelines(capture, args.ts_offset)
    log_handle = open(args.sent_log, "w", encoding="utf-8") if args.sent_log else None  # noqa: SIM115
    started = time.monotonic()
    try:
        reports = _run_loop(replay(
            capture, urls, options, timelines, duration=args.duration,
            sent_log=SentLog(log_handle) if log_handle else None, stagger=args.stagger))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("smoothlive replay: aborted", file=sys.stderr)
        return 130
    finally:
        if log_handle is not None:
            log_handle.close()
    summary = summarize(reports, capture, time.monotonic() - started)
    print(json.dumps(summary, indent=2) if args.json else _text_report(summary))
    return 0 if all(report.status == 200 for report in reports) else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``replay`` sub-command's arguments."""
    parser.add_argument("capture", help="an .ismv capture, or a directory of them (one stream "
                        "per file, stream id = file stem)")
    parser.add_argument("url", help="the point URL, e.g. http://127.0.0.1:8080/live/ch1.isml; "
                        "with --count, {n} is replaced by the point number")
    parser.add_argument("--rate", type=parse_rate, default=1.0, metavar="1x|max",
                        help="1x: each fragment when it is complete (its end time), as an "
                        "encoder sends; Nx: N times faster; max: as fast as the server takes "
                        "it (default 1x)")
    repeat = parser.add_mutually_exclusive_group()
    repeat.add_argument("--loop", action="store_true",
                        help="repeat the fragments until Ctrl-C, SIGTERM or --duration")
    repeat.add_argument("--loops", type=int, default=1, metavar="N",
                        help="send the fragments N times, then end the stream (default 1)")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop (ending the streams normally) after this long")
    parser.add_argument("--ts-offset", type=parse_ts_offset, default=0.0,
                        metavar="SECONDS|now",
                        help="add to every timestamp; 'now': the capture starts at the "
                        "current UTC time (100-ns ticks since 1970), like an encoder "
                        "stamping UTC")
    parser.add_argument("--count", type=int, default=1, metavar="N",
                        help="push N copies at once, to the URL with {n} = 1..N")
    parser.add_argument("--stagger", action="store_true",
                        help="with --count: start copy k of N k/N of a fragment later, as "
                        "independent encoders would be, instead of all at the same instant")
    parser.add_argument("--first", type=int, default=1, metavar="N",
                        help="the first {n} (default 1), to split points between processes")
    parser.add_argument("--stream-prefix", default="", help="prepended to every stream id")
    parser.add_argument("--user", help="push as this user (password in SMOOTHLIVE_PASSWORD); "
                        "not needed on loopback")
    parser.add_argument("--basic", action="store_true",
                        help="Basic instead of Digest (loopback or HTTPS only!)")
    parser.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    parser.add_argument("--sent-log", metavar="FILE",
                        help="write a JSON line per fragment sent: point, stream, track, time "
                        "(rewritten), monotonic and wall-clock time of its last byte")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)
