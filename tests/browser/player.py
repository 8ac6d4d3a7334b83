"""A real player in Debian's headless Chromium, driven by Playwright.

``Browser`` launches ``/usr/bin/chromium`` (never a downloaded browser) with a
fresh profile and runs Playwright's async API on an event loop of its own, in a
thread: its blocking ``play()`` suits plain tests, ``aplay()`` async ones, and
neither leaves an event loop marked running in the test's thread (Playwright's
sync API does, which breaks later asyncio tests in the same session).

``play()`` opens the player page (``smoothlive/web/player.html``) with a
manifest URL and waits, polling ``window.smoothlivePlayer.state()`` against a
deadline, until the video has played ``seconds`` and decoded frames grew. Every
request the browser makes to a host outside loopback is aborted and fails the
play. ``StaticServer`` serves a directory on another loopback port (the player
page from one origin, the media from another, so that CORS is exercised).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import smoothlive
from smoothlive.http.static import utc_now_iso

CHROMIUM = "/usr/bin/chromium"
WEB_DIR = Path(smoothlive.__file__).resolve().parent / "web"
VENDOR_FILES = ("dash.all.min.js", "dash.mss.min.js", "hls.min.js")
LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def chromium_args(dead_proxy_port: int) -> list[str]:
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-breakpad",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
        # Belt and braces under page.route(): whatever the browser itself might
        # fetch outside loopback goes to a "proxy" on a loopback port that
        # refuses connections (loopback itself is never proxied).
        f"--proxy-server=http://127.0.0.1:{dead_proxy_port}",
    ]


def is_loopback_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    host = (parts.hostname or "").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def player_url(page_origin: str, manifest_url: str, kind: str | None = None,
               time_url: str | None = None) -> str:
    """The player page on ``page_origin`` playing ``manifest_url``."""
    query = {"url": manifest_url}
    if kind:
        query["type"] = kind
    if time_url:
        query["time"] = time_url
    return f"{page_origin.rstrip('/')}/player.html?{urlencode(query)}"


class PlaybackFailed(AssertionError):
    """The player did not play, or the browser tried to leave loopback."""


class Browser:
    """One Chromium for a test session; each ``play()`` gets a fresh context."""

    def __init__(self, executable: str = CHROMIUM, launch_timeout: float = 60.0) -> None:
        if not os.access(executable, os.X_OK):
            raise RuntimeError(
                f"{executable} not found: install Debian's chromium (`apt-get install "
                "chromium`, as .ci/run does); no browser is ever downloaded")
        self.executable = executable
        # A bound, never-listening socket: connections to it are refused.
        self._dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._dead.bind(("127.0.0.1", 0))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="playwright",
                                        daemon=True)
        self._thread.start()
        self._playwright: Any = None
        self._browser: Any = None
        try:
            self._call(self._start(), launch_timeout)
        except BaseException:
            self.close()
            raise

    # -- running coroutines on the browser's loop, bounded ------------------
    def _call(self, coro: Any, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise PlaybackFailed(f"browser call did not finish in {timeout:.0f}s") from None

    async def _start(self) -> None:
        from playwright.async_api import async_playwright

        self._playwright = await async_playwright().start()
        # Playwright gives each launch a new temporary profile (user data dir)
        # and removes it on close.
        self._browser = await self._playwright.chromium.launch(
            executable_path=self.executable,
            headless=True,
            args=chromium_args(self._dead.getsockname()[1]),
            timeout=45_000,
            handle_sigint=False, handle_sigterm=False, handle_sighup=False,
        )

    async def _stop(self) -> None:
        if self._browser is not None:
            await self._browser.close()
        if self._playwright is not None:
            await self._playwright.stop()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            with contextlib.suppress(Exception):  # closing anyway: the process may be gone
                self._call(self._stop(), 30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()
        self._dead.close()

    @property
    def version(self) -> str:
        return self._browser.version if self._browser else ""

    # -- playing ----------------------------------------------------------------
    def play(self, page_url: str, seconds: float = 6, timeout: float = 60, *,
             min_fps: float = 5, screenshot: Path | None = None) -> dict[str, Any]:
        """Play ``page_url`` until ``seconds`` of video played; the final state.

        Raises PlaybackFailed with the player's errors, the console log, the
        failed requests and any blocked outside request if it does not.
        """
        return self._call(self._play(page_url, seconds, timeout, min_fps, screenshot),
                          timeout + 30)

    async def aplay(self, page_url: str, seconds: float = 6, timeout: float = 60, *,
                    min_fps: float = 5, screenshot: Path | None = None) -> dict[str, Any]:
        """``play()`` for async tests: awaits without blocking their loop."""
        future = asyncio.run_coroutine_threadsafe(
            self._play(page_url, seconds, timeout, min_fps, screenshot), self._loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout + 30)
        except TimeoutError:
            future.cancel()
            raise PlaybackFailed(f"play did not finish in {timeout + 30:.0f}s") from None

    async def _play(self, page_url: str, seconds: float, timeout: float, min_fps: float,
                    screenshot: Path | None) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        blocked: list[str] = []
        console: list[str] = []
        page_errors: list[str] = []
        http_problems: list[str] = []

        async def gate(route: Any) -> None:
            url = route.request.url
            if is_loopback_url(url):
                await route.continue_()
            else:
                blocked.append(f"{route.request.method} {url}")
                await route.abort("blockedbyclient")

        context = await self._browser.new_context(
            viewport={"width": 1000, "height": 800}, service_workers="block")
        try:
            await context.route("**/*", gate)
            page = await context.new_page()
            page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("requestfailed", lambda r: http_problems.append(
                f"{r.method} {r.url} failed: {r.failure}"))
            page.on("response", lambda r: r.status >= 400 and http_problems.append(
                f"{r.request.method} {r.url} -> {r.status}"))

            state: dict[str, Any] | None = None
            played = 0.0
            first_frames: int | None = None
            last: tuple[float, float] | None = None  # (currentTime, wall time)

            def failure(why: str) -> PlaybackFailed:
                return PlaybackFailed("\n".join([
                    f"{why} (page {page_url})",
                    f"played {played:.2f}s of {seconds}s; state: {state}",
                    "blocked outside requests: " + ("; ".join(blocked) or "none"),
                    "page errors: " + ("; ".join(page_errors) or "none"),
                    "HTTP problems:", *[f"  {p}" for p in http_problems[-20:]],
                    "console (last 60):", *[f"  {c}" for c in console[-60:]],
                ]))

            try:
                await page.goto(page_url, wait_until="load",
                                timeout=max(1.0, deadline - loop.time()) * 1000)
            except Exception as exc:
                raise failure(f"page did not load: {exc}") from None

            while True:
                try:
                    state = await page.evaluate(
                        "() => window.smoothlivePlayer ? window.smoothlivePlayer.state() : null")
                except Exception as exc:
                    raise failure(f"page state unreadable: {exc}") from None
                now = loop.time()
                if blocked:
                    raise failure("the browser tried to reach outside loopback")
                if page_errors:
                    raise failure("uncaught error in the page")
                if state is not None:
                    if state["errors"]:
                        raise failure("player error: " + " | ".join(state["errors"]))
                    frames = state["totalVideoFrames"]
                    current = state["currentTime"]
                    if not state["paused"] and frames > 0:
                        if first_frames is None:
                            first_frames = frames
                        elif last is not None:
                            moved = current - last[0]
                            # Count forward play only, not seeks (a jump to the
                            # live edge, a gap jump larger than the poll).
                            if 0 < moved <= (now - last[1]) * 2 + 0.5:
                                played += moved
                        last = (current, now)
                        grown = frames - first_frames
                        if played >= seconds and grown >= min_fps * seconds:
                            state["played"] = played
                            state["framesGrown"] = grown
                            state["console"] = console[-40:]
                            state["httpProblems"] = http_problems[-20:]
                            if screenshot is not None:
                                await page.screenshot(path=str(screenshot))
                            return state
                    else:
                        last = None
                if now > deadline:
                    raise failure(f"did not play {seconds}s within {timeout}s")
                await asyncio.sleep(0.2)  # poll interval; bounded by the deadline above
        finally:
            await context.close()


# -- a static file server on loopback -------------------------------------------
class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mpd": "application/dash+xml",
        ".m3u8": "application/vnd.apple.mpegurl",
        ".m4s": "video/iso.segment",
        ".mp4": "video/mp4",
        ".js": "text/javascript",
    }
    cors = False
    time_path: str | None = "/time"

    def end_headers(self) -> None:
        if self.cors:
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Expose-Headers", "Date, Content-Length")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def do_OPTIONS(self) -> None:  # CORS preflight
        self.send_response(204)
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "*")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if self.time_path and self.path.split("?")[0] == self.time_path:
            body = utc_now_iso().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log.append(format % args)  # type: ignore[attr-defined]


class StaticServer:
    """``directory`` over HTTP on 127.0.0.1 (an ephemeral port), in a thread."""

    def __init__(self, directory: Path, *, cors: bool = False) -> None:
        handler: Callable[..., Any] = functools.partial(
            type("Handler", (_Handler,), {"cors": cors}), directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.log = []  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    @property
    def log(self) -> list[str]:
        return self.httpd.log  # type: ignore[attr-defined]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


def missing_vendor_files(web_dir: Path = WEB_DIR) -> list[str]:
    return [name for name in VENDOR_FILES if not (web_dir / "vendor" / name).is_file()]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
