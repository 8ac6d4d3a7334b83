"""The demo of ``make run``: a point fed by ffmpeg's test signal, and a page that plays it.

With ``--demo`` the server creates ``/demo/live.isml`` (if it is missing),
starts it, and runs the reference encoder (ffmpeg from imageio-ffmpeg) as a
child process pushing a two-bitrate test signal with audio to it over
loopback, restarting the encoder if it stops. A newcomer sees live video a
minute after cloning, at the URL the server prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from urllib.parse import quote

from smoothlive.management.durations import Duration
from smoothlive.management.errors import ManagementError
from smoothlive.management.settings import ClientConnections, Settings
from smoothlive.pubpoint.registry import Registry
from smoothlive.pubpoint.states import State

log = logging.getLogger("smoothlive.demo")

DEMO_POINT = "/demo/live.isml"
RESTART_DELAY = 2.0


def encoder_command(ffmpeg: str, base_url: str) -> list[str]:
    """ffmpeg pushing 640x360 at 800 kb/s and 320x180 at 300 kb/s, each with AAC, forever."""
    video = ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
             "-pix_fmt", "yuv420p", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0"]
    audio = ["-c:a", "aac", "-b:a", "96k"]
    command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
               "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
               "-f", "lavfi", "-i", "sine=frequency=440:beep_factor=4:sample_rate=48000"]
    for size, kbps in (("640x360", 800), ("320x180", 300)):
        command += ["-map", "0:v", "-map", "1:a", *video, "-b:v", f"{kbps}k", "-s", size,
                    *audio, "-movflags", "isml+frag_keyframe", "-f", "ismv",
                    f"{base_url}{DEMO_POINT}/Streams(demo-{kbps}k)"]
    return command


def _die_with_parent() -> None:
    """In the encoder child: exit when the server dies, even by kill -9 (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Demo:
    def __init__(self, registry: Registry, base_url: str) -> None:
        self.registry = registry
        self.base_url = base_url.rstrip("/")
        self._task: asyncio.Task | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def page_url(self) -> str:
        return (f"{self.base_url}/web/player.html?url="
                f"{quote(self.base_url + DEMO_POINT + '/Manifest', safe='')}")

    async def start(self) -> None:
        await self._prepare_point()
        self._task = asyncio.create_task(self._run_encoder())
        print(f"smoothlive demo: watch live video at {self.page_url}", flush=True)

    async def _prepare_point(self) -> None:
        if not self.registry.store.exists(DEMO_POINT):
            settings = Settings(
                title="smoothlive demo",
                auto_restart_on_encoder_reconnect=True,
                client_connections=ClientConnections(window_length=Duration.from_seconds(600)),
            )
            await self.registry.create(DEMO_POINT, settings)
        runtime = self.registry.runtime(DEMO_POINT)
        with contextlib.suppress(ManagementError):
            if runtime.state is State.STOPPED:
                await self.registry.request_state(DEMO_POINT, State.IDLE)
            await self.registry.request_state(DEMO_POINT, State.STARTED)

    async def _run_encoder(self) -> None:
        import imageio_ffmpeg

        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        while True:
            self._process = await asyncio.create_subprocess_exec(
                *encoder_command(ffmpeg, self.base_url),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                preexec_fn=_die_with_parent,
            )
            _, errors = await self._process.communicate()
            log.warning("demo encoder stopped (%s): %s; restarting in %.0f s",
                        self._process.returncode, errors.decode(errors="replace")[-300:].strip(),
                        RESTART_DELAY)
            await asyncio.sleep(RESTART_DELAY)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._process.wait(), 5)
