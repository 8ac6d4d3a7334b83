"""What every benchmark needs: the real server, nginx, wrk, replays, /proc figures.

Everything runs on loopback, every load is bounded in time, and every
process a benchmark starts is stopped when it ends.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TMP = RESULTS / "tmp"
SMOOTHLIVE = str(BIN / "smoothlive")
USER, PASSWORD = "bench", "bench-password"
BASIC = "Authorization: Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def require_tools() -> None:
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None
               and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        raise SystemExit(f"bench: {', '.join(missing)} missing: `make bench` installs them "
                         "(apt-get install nginx wrk)")


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


# -- wrk ------------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_SIZES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        return float("nan")  # wrk prints -nan when nothing completed
    number, unit = match.groups()
    return float(number) * _UNITS.get(unit, 3_600_000.0)


def wrk(url: str, seconds: float, connections: int = 64, threads: int = 2,
        headers: tuple[str, ...] = ()) -> dict:
    """Load ``url`` for ``seconds``: requests/s, MB/s, p50/p99 latency (ms), errors."""
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--latency", "--timeout", "5s"]
    for header in headers:
        args += ["-H", header]
    done = subprocess.run([*args, url], capture_output=True, text=True,
                          timeout=seconds + 60)
    out = done.stdout
    if done.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed on {url}: {done.stderr or out}")
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "mbps": float(transfer.group(1)) * _SIZES[transfer.group(2)] / 1024**2,
        # Anchored: the thread statistics end in a percentage too ("72.50%").
        "p50_ms": _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1)),
        "p99_ms": _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1)),
        "non2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sum(map(int, socket_errors.groups())) if socket_errors else 0,
    }


# -- the server -----------------------------------------------------------------------------------


@dataclass
class Smoothlive:
    """``smoothlive serve`` on loopback with its own content root and state dir."""

    work: Path
    extra: tuple[str, ...] = ()
    port: int = 0
    process: subprocess.Popen | None = None
    log: Path = field(init=False)

    @property
    def root(self) -> Path:
        return self.work / "content"

    @property
    def state(self) -> Path:
        return self.work / "state"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Smoothlive:
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run([SMOOTHLIVE, "user", "add", USER, "--replace", "--password-stdin",
                        "--grant", "write:/", "--state-dir", str(self.state)],
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True)
        self.port = free_port()
        self.log = self.work / "server.log"
        with open(self.log, "ab") as handle:
            self.process = subprocess.Popen(
                [SMOOTHLIVE, "serve", "--port", str(self.port), "--root", str(self.root),
                 "--state-dir", str(self.state), "--log-level", "warning", *self.extra],
                stdout=subprocess.DEVNULL, stderr=handle, stdin=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, signal.SIGTERM)
        self.process = None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far: the process and, with
        ``--workers``, its front processes (alive now; fronts do not die here)."""
        assert self.process is not None
        pid = self.process.pid
        return process_cpu_seconds(pid) + sum(map(process_cpu_seconds, children(pid)))

    def rss_bytes(self) -> int:
        assert self.process is not None
        return process_rss_bytes(self.process.pid)

    def __enter__(self) -> Smoothlive:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        # What a run ingested (archives, spools: gigabytes at 75 MB/s) goes with it,
        # unless asked to keep it for a look.
        if not os.environ.get("SMOOTHLIVE_BENCH_KEEP"):
            shutil.rmtree(self.work, ignore_errors=True)


def stop_process(process: subprocess.Popen, sig: int, grace: float = 30) -> None:
    """Ask a process to stop with ``sig``; kill it after ``grace`` seconds. Bounded."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def report(name: str, result: dict, table: str) -> int:
    """What a benchmark run from the command line does with its result."""
    result["machine"] = machine()
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    return 0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def process_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def stream_indexes(manifest: bytes) -> dict[str, tuple[str, list[int], list[int]]]:
    """A Smooth client manifest per StreamIndex type: (name, bitrates ascending, chunk
    start times), the times expanded from ``t``/``d``/``r`` as a player does."""
    from lxml import etree

    found: dict[str, tuple[str, list[int], list[int]]] = {}
    for index in etree.fromstring(manifest).findall("StreamIndex"):
        times, current = [], 0
        for c in index.findall("c"):
            current = int(c.get("t", current))
            for _ in range(int(c.get("r", "1"))):
                times.append(current)
                current += int(c.get("d"))
        bitrates = sorted(int(q.get("Bitrate")) for q in index.findall("QualityLevel"))
        found.setdefault(index.get("Type"), (index.get("Name"), bitrates, times))
    return found


def create_point(server: Smoothlive, path: str, settings: str = "") -> None:
    """Create and start a point over the REST API (as an operator's script would)."""
    import httpx

    body = ('<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">'
            '<SmoothStreaming xmlns="http://schemas.microsoft.com/iis/media/2011/03/'
            f'streaming/management"><Settings>{settings}</Settings></SmoothStreaming>'
            "</content></entry>")
    state = body.replace(f"<Settings>{settings}</Settings>", "<State><Value>Started</Value>"
                         "</State>")
    with httpx.Client(base_url=server.url, auth=(USER, PASSWORD), timeout=60) as http:
        created = http.post("/services/smoothstreaming/publishingpoints.isml/settings",
                            content=body, headers={"Slug": path,
                                                   "Content-Type": "application/atom+xml"})
        if created.status_code != 201:
            raise RuntimeError(f"create {path}: {created.status_code} {created.text[:300]}")
        started = http.put(f"{path}/state", content=state,
                           headers={"Content-Type": "application/atom+xml"})
        if started.status_code != 200:
            raise RuntimeError(f"start {path}: {started.status_code} {started.text[:300]}")


def replay(capture: Path, url: str, *args: str, timeout: float = 600) -> dict:
    """``smoothlive replay`` to the end; its JSON report."""
    done = subprocess.run([SMOOTHLIVE, "replay", str(capture), url, "--json", *args],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"replay failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


@contextlib.contextmanager
def replaying(capture: Path, url: str, *args: str) -> Iterator[subprocess.Popen]:
    """``smoothlive replay`` in the background for the duration of the block."""
    process = subprocess.Popen([SMOOTHLIVE, "replay", str(capture), url, *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        stop_process(process, signal.SIGTERM)


def capture_dir(small: bool = False) -> Path:
    """The recorded ingest capture (bench/capture.py), recorded once and kept."""
    out = TMP / ("capture-small" if small else "capture")
    if not (out.is_dir() and any(out.glob("*.ismv"))):
        command = [sys.executable, str(HERE / "capture.py"), "--out", str(out)]
        if small:
            command.append("--small")
        subprocess.run(command, check=True)
    return out


def workdir(name: str) -> Path:
    TMP.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=TMP))


# -- nginx ----------------------------------------------------------------------------------------

NGINX_CONF = """\
{user}worker_processes auto;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    types {{ video/mp4 mp4 m4s; text/xml xml; application/vnd.apple.mpegurl m3u8;
            application/dash+xml mpd; }}
    default_type application/octet-stream;
    client_body_temp_path {work}/tmp;
    proxy_temp_path {work}/tmp;
    fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp;
    scgi_temp_path {work}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


@contextlib.contextmanager
def nginx(root: Path) -> Iterator[str]:
    """nginx (Debian's) serving ``root`` from disk on a loopback port; its base URL."""
    work = Path(tempfile.mkdtemp(prefix="nginx-", dir=TMP))
    (work / "tmp").mkdir()
    port = free_port()
    conf = work / "nginx.conf"
    # As root, nginx's workers would run as nobody and could not read the
    # benchmark's private temporary folders: keep them as the caller.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(work=work, port=port, root=root, user=user))
    process = subprocess.Popen([nginx_binary(), "-c", str(conf), "-e", str(work / "error.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process, signal.SIGQUIT)  # nginx's graceful stop
        shutil.rmtree(work, ignore_errors=True)


def machine() -> dict:
    """What the figures were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = 0
    with contextlib.suppress(OSError):
        memory = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    nginx_version = subprocess.run([nginx_binary(), "-v"], capture_output=True,
                                   text=True).stderr.strip()
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_bytes": memory,
            "python": sys.version.split()[0], "nginx": nginx_version,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
