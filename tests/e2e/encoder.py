"""The reference encoder, ffmpeg (from imageio-ffmpeg), pushing to a point.

Small and quick, as the tests need: 320x180 and 160x90 H.264 (ultrafast,
yuv420p, 1-second GOPs, so 1-second fragments) and AAC, in real time (-re).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

VIDEO = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
         "-g", "25", "-keyint_min", "25", "-sc_threshold", "0"]
AUDIO = ["-c:a", "aac", "-b:a", "64k"]
ISMV = ["-movflags", "isml+frag_keyframe", "-f", "ismv"]


def push_command(base_url: str, point: str, seconds: float, *, bitrates=(300, 150),
                 name: str = "ch1", offset: float = 0.0, event: str | None = None) -> list[str]:
    """ffmpeg sending one POST per bitrate, each with video and the same audio;
    with ``event``, to ``Events(<event>)/Streams(...)`` (MS-SSTR)."""
    command = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
               "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
               "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    for kbps in bitrates:
        size = "320x180" if kbps >= 300 else "160x90"
        command += ["-map", "0:v", "-map", "1:a", "-t", str(seconds), *VIDEO,
                    "-b:v", f"{kbps}k", "-s", size, *AUDIO]
        if offset:
            command += ["-output_ts_offset", str(offset)]
        events = f"/Events({event})" if event else ""
        command += [*ISMV, f"{base_url}{point}{events}/Streams({name}-{kbps}k)"]
    return command


def start_push(base_url: str, point: str, seconds: float, log: Path, **kwargs) -> subprocess.Popen:
    handle = open(log, "ab")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(push_command(base_url, point, seconds, **kwargs),
                               stdout=handle, stderr=handle, stdin=subprocess.DEVNULL)
    handle.close()
    return process


def stop_push(process: subprocess.Popen, timeout: float = 10) -> None:
    """End an encoder that is still pushing: terminate, then kill; bounded."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
