"""``GET /metrics``: the Prometheus text format, for whoever may scrape it.

Open to anyone who can reach the server unless a token is set
(``--metrics-token`` / ``SMOOTHLIVE_METRICS_TOKEN``): then only with
``Authorization: Bearer <token>``. The figures say how busy the server is and
name its points, not what they hold; a server reachable from the internet
should set a token (or be scraped through a proxy that filters the path).

Counters and histograms are kept up to date where things happen; what
describes state is read at scrape time: points by state, and the process
(``/proc/self``, Linux only: elsewhere those metrics are absent).

Points by state: every point with a runtime state (any point started, created
or changed since the server started, and every point not Idle) counts in its
state; the ``.isml`` files never touched since are Idle, counted from a scan
of the content root made at most once a minute (a stat per file in a worker
thread), so a file copied in or removed by hand shows within a minute.
"""

from __future__ import annotations

import gzip
import hmac
import os
import sys
import time

from smoothlive.http.messages import Request, Send, respond
from smoothlive.metrics import CONTENT_TYPE, POINTS, REGISTRY, Gauge
from smoothlive.pubpoint.registry import Registry
from smoothlive.pubpoint.states import State

SCAN_SECONDS = 60.0
GZIP_ABOVE = 4096  # bytes: smaller bodies go as they are

_PROC = "/proc/self"
HAS_PROC = sys.platform.startswith("linux") and os.path.isdir(_PROC)
if HAS_PROC:
    PROCESS_RSS = REGISTRY.gauge(
        "process_resident_memory_bytes", "Resident memory size in bytes.")
    PROCESS_CPU = REGISTRY.counter(
        "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.")
    PROCESS_FDS: Gauge = REGISTRY.gauge(
        "process_open_fds", "Number of open file descriptors.")
    _PAGE = os.sysconf("SC_PAGESIZE")
    _TICKS = os.sysconf("SC_CLK_TCK")


def read_process() -> None:
    """RSS, CPU time and open descriptors of this process, from /proc/self."""
    if not HAS_PROC:
        return
    try:
        with open(f"{_PROC}/statm", "rb") as statm:
            PROCESS_RSS.set((), int(statm.read().split()[1]) * _PAGE)
        with open(f"{_PROC}/stat", "rb") as stat:
            # Fields after the command name (which may hold spaces): utime is 14th, stime 15th.
            fields = stat.read().rsplit(b")", 1)[1].split()
        PROCESS_CPU.set((), (int(fields[11]) + int(fields[12])) / _TICKS)
        PROCESS_FDS.set((), len(os.listdir(f"{_PROC}/fd")))
    except (OSError, ValueError, IndexError):
        pass  # a figure missing for one scrape is better than a failed scrape


class MetricsService:
    def __init__(self, registry: Registry, token: str = "") -> None:
        self.registry = registry
        self._token = f"Bearer {token}".encode() if token else None
        self._scanned: frozenset[str] = frozenset()
        self._scanned_at = float("-inf")

    async def __call__(self, request: Request, send: Send) -> None:
        method = request.method
        if method not in ("GET", "HEAD"):
            await respond(send, 405, b"method not allowed\n", b"text/plain",
                          [(b"allow", b"GET, HEAD")])
            return
        if self._token is not None:
            given = (request.header("authorization") or "").encode("latin-1")
            if not hmac.compare_digest(given, self._token):
                await respond(send, 401, b"a bearer token is required\n", b"text/plain",
                              [(b"www-authenticate", b'Bearer realm="metrics"')])
                return
        await self.count_points()
        read_process()
        body = REGISTRY.render()
        headers = [(b"cache-control", b"no-store")]
        if len(body) > GZIP_ABOVE and "gzip" in (request.header("accept-encoding") or ""):
            body = gzip.compress(body, 1)
            headers.append((b"content-encoding", b"gzip"))
        await respond(send, 200, body, CONTENT_TYPE, headers, head=method == "HEAD")

    async def count_points(self) -> None:
        """Set ``smoothlive_points{state}``: every state, zero included."""
        now = time.monotonic()
        if now - self._scanned_at >= SCAN_SECONDS:
            self._scanned = frozenset(await self.registry.paths())
            self._scanned_at = time.monotonic()
        runtimes = self.registry.runtimes()
        counts = dict.fromkeys(State, 0)
        for runtime in runtimes.values():
            counts[runtime.state] += 1
        counts[State.IDLE] += sum(1 for path in self._scanned if path not in runtimes)
        for state, count in counts.items():
            POINTS.set((state.value,), count)
