"""The owner's side of several processes: its Unix socket and its fronts.

The owner runs the whole application on the public port, like a single
process (not with ``--fronts-only``: then the fronts alone listen there), and
also on a Unix socket where its fronts relay what they cannot answer. It
starts the fronts, starts a new one if one dies, and stops them first when
it stops (after the encoders' POSTs were told to end, so their answers
travel back through the fronts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from smoothlive.config import ServerConfig
from smoothlive.http.messages import Receive, Request, Scope, Send, respond
from smoothlive.workers.board import SCOPE_KEY, ChangeBoard
from smoothlive.workers.relay import PEER

log = logging.getLogger("smoothlive.workers")

# Where fronts report their cache hits, on the owner's socket only.
HITS_PATH = "/.smoothlive/front-hits"
HITS_LIMIT = 8 << 20
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 8.0
UDS_PATH_MAX = 100  # sun_path is 108 bytes on Linux


class OwnerSide:
    """The ASGI application on the owner's Unix socket: the fronts' requests, with
    the client address each carries (believed here only) and the board, so that
    answers say how long a front may keep them."""

    def __init__(self, app, board: ChangeBoard, lifespan: bool = False) -> None:
        self.app = app
        self.board = board
        self.lifespan = lifespan  # the application's, here when the owner is not on the port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.lifespan:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "lifespan":  # the application's lifespan runs once, on the port
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == HITS_PATH and scope["method"] == "POST":
            await self._hits(receive, send)
            return
        peer = ""
        headers = []
        for name, value in scope["headers"]:
            if name == PEER:
                peer = value.decode("latin-1")
            else:
                headers.append((name, value))
        scope = {**scope, "headers": headers, "client": (peer, 0), SCOPE_KEY: self.board}
        await self.app.http(scope, receive, send)


    async def _hits(self, receive: Receive, send: Send) -> None:
        """A front's cache hits of the last second: counted by the application."""
        body = await Request({"headers": []}, receive).body(HITS_LIMIT)
        try:
            hits = {path: (int(count), float(seconds))
                    for path, (count, seconds) in json.loads(body).items()}
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("a front's hit report was not understood: %s", exc)
            await respond(send, 400, b"bad report\n", b"text/plain")
            return
        try:
            self.app.account_front_hits(hits)
        except Exception:  # a bug must not cost the report's other paths silently
            log.exception("a front's hit report could not be counted")
            await respond(send, 500, b"not counted\n", b"text/plain")
            return
        await respond(send, 204)


def run_dir(state_dir: Path) -> tuple[Path, bool]:
    """Where the socket and board go: ``<state>/run``, or a private temporary folder
    when that path is too long for a Unix socket. True if it is temporary."""
    home = state_dir.resolve() / "run"
    if len(str(home / "owner.sock")) <= UDS_PATH_MAX:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A socket file a killed owner left behind would make the bind fail.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(home / "owner.sock")
        return home, False
    return Path(tempfile.mkdtemp(prefix="smoothlive-")), True


class Fronts:
    """The front processes: started, watched, restarted, stopped."""

    def __init__(self, config: ServerConfig, port: int, socket: Path, board: Path) -> None:
        self.count = config.workers - 1
        self.command = [
            sys.executable, "-m", "smoothlive.workers.front",
            "--owner-socket", str(socket), "--board", str(board),
            "--host", config.host, "--port", str(port),
            "--cache-mb", str(config.worker_cache_mb), "--log-level", config.log_level,
            "--header-timeout", str(config.header_timeout),
            "--max-header-kb", str(config.max_header_kb),
            "--max-connections", str(config.max_connections),
            "--send-timeout", str(config.send_timeout),
        ]
        if config.tls_cert:
            self.command += ["--tls-cert", config.tls_cert, "--tls-key", config.tls_key]
        self.processes: list[asyncio.subprocess.Process] = []
        self._watchers: list[asyncio.Task[None]] = []
        self.stopping = False

    async def _spawn(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *self.command, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT)
        if b"front ready" not in line:
            raise RuntimeError(f"a front process did not start (exit {process.returncode})")
        return process

    async def start(self) -> None:
        self.processes = list(await asyncio.gather(*(self._spawn() for _ in range(self.count))))
        self._watchers = [asyncio.create_task(self._watch(i)) for i in range(self.count)]
        log.info("%d front process(es) started: %s", self.count,
                 ", ".join(str(p.pid) for p in self.processes))

    async def _watch(self, index: int) -> None:
        while not self.stopping:
            status = await self.processes[index].wait()
            if self.stopping:
                return
            log.error("front process %d exited with %s: starting another",
                      self.processes[index].pid, status)
            try:
                self.processes[index] = await self._spawn()
            except (TimeoutError, OSError, RuntimeError) as exc:
                log.error("front process not restarted: %s", exc)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        self.stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        for process in self.processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()


def remove_run_dir(home: Path, temporary: bool) -> None:
    for name in ("owner.sock", "board"):
        with contextlib.suppress(OSError):
            os.unlink(home / name)
    if temporary:
        shutil.rmtree(home, ignore_errors=True)
