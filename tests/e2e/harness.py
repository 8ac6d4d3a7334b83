"""A real smoothlive server in a child process, for end-to-end tests.

The server is started exactly as an operator would start it (the console
script, ``--port 0``), and is ready when it prints its listening line; every
wait is bounded.
"""

from __future__ import annotations

import atexit
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
SMOOTHLIVE = str(BIN / "smoothlive")
LISTENING = re.compile(r"^smoothlive listening on (https?://\S+)$")
PASSWORD_LINE = re.compile(r"^    (\S+)$")


# Servers still running when the test process ends (a fixture that failed
# before its teardown): stopped then, never left behind.
_RUNNING: set[Server] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_RUNNING):
        server.stop(signal.SIGKILL, timeout=10)


@dataclass(eq=False)
class Server:
    root: Path
    state_dir: Path
    process: subprocess.Popen | None = None
    url: str = ""
    admin_password: str | None = None
    lines: queue.Queue = field(default_factory=queue.Queue)
    stdout_seen: list[str] = field(default_factory=list)
    log_path: Path | None = None
    extra_args: tuple[str, ...] = ()

    def start(self, timeout: float = 30.0) -> Server:
        self.log_path = self.state_dir.parent / f"{self.state_dir.name}-server.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's life
        self.process = subprocess.Popen(
            [SMOOTHLIVE, "serve", "--port", "0", "--root", str(self.root),
             "--state-dir", str(self.state_dir), *self.extra_args],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        _RUNNING.add(self)
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, args=(self.process.stdout,), daemon=True).start()
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"server not ready in {timeout}s; log: {self.log()}") from None
            if line is None:
                raise RuntimeError(f"server exited before listening; log: {self.log()}")
            self.stdout_seen.append(line)
            found = PASSWORD_LINE.match(line)
            if found:
                self.admin_password = found.group(1)
            found = LISTENING.match(line)
            if found:
                self.url = found.group(1).rstrip("/")
                return self

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        code = self.process.returncode
        self.process = None
        _RUNNING.discard(self)
        return code


def run_cli(*args: str, stdin: str | None = None, env: dict | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SMOOTHLIVE, *args], input=stdin, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def add_user(state_dir: Path, name: str, password: str, *grants: str) -> None:
    args = ["user", "add", name, "--password-stdin", "--state-dir", str(state_dir)]
    for grant in grants:
        args += ["--grant", grant]
    result = run_cli(*args, stdin=password + "\n")
    assert result.returncode == 0, result.stderr


def curl_available() -> bool:
    return shutil.which("curl") is not None
