"""Record the benchmark capture: what `smoothlive replay` pushes as live encoders.

Encoding is what makes live encoders expensive, so a benchmark records once
and replays many times. This runs the real ffmpeg (imageio-ffmpeg) once, as
a multi-bitrate encoder would push, but into files: ``testsrc2`` video and a
``sine`` tone, four H.264 bitrates (libx264 ultrafast, 2-second GOPs, so
2-second fragments) each with the same AAC audio, ``-f ismv`` with
``isml+frag_keyframe`` (the bytes ffmpeg POSTs to a publishing point), one
``.ismv`` per bitrate, named for its stream id (``video-3000k.ismv``...).

    .venv/bin/python bench/capture.py [--seconds 60] [--out DIR] [--force] [--small]

The default (1280x720 at 25 fps, 3000/1500/800/400 kb/s) goes to
``bench/results/tmp/capture``; ``--small`` (320x180, 400/250/150/100 kb/s,
20 s) to ``bench/results/tmp/capture-small``, for quick runs. An existing
complete capture is kept unless ``--force``. The files are written to a
temporary directory and moved into place, so an interrupted recording never
looks complete.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

HERE = Path(__file__).parent
FPS = 25
GOP = 2 * FPS  # 2-second GOPs: ffmpeg cuts a fragment at every keyframe


@dataclass(frozen=True)
class Rung:
    kbps: int
    width: int
    height: int

    @property
    def name(self) -> str:
        return f"video-{self.kbps}k"


@dataclass(frozen=True)
class Profile:
    source: str  # testsrc2 size
    rungs: tuple[Rung, ...]
    audio_kbps: int
    seconds: float
    out: Path


FULL = Profile("1280x720", (Rung(3000, 1280, 720), Rung(1500, 960, 540), Rung(800, 640, 360),
                            Rung(400, 480, 270)), 128, 60.0, HERE / "results/tmp/capture")
SMALL = Profile("320x180", (Rung(400, 320, 180), Rung(250, 256, 144), Rung(150, 192, 108),
                            Rung(100, 160, 90)), 64, 20.0, HERE / "results/tmp/capture-small")


def ffmpeg_command(profile: Profile, seconds: float, directory: Path) -> list[str]:
    """One ffmpeg, one output per rung, each with the same audio (as a multi-bitrate push)."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
               "-y", "-f", "lavfi", "-i", f"testsrc2=size={profile.source}:rate={FPS}",
               "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    for rung in profile.rungs:
        command += [
            "-map", "0:v", "-map", "1:a", "-t", str(seconds),
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0",
            "-b:v", f"{rung.kbps}k", "-maxrate", f"{rung.kbps}k",
            "-bufsize", f"{2 * rung.kbps}k", "-s", f"{rung.width}x{rung.height}",
            "-c:a", "aac", "-b:a", f"{profile.audio_kbps}k",
            "-movflags", "isml+frag_keyframe", "-f", "ismv",
            str(directory / f"{rung.name}.ismv"),
        ]
    return command


def complete(profile: Profile, directory: Path) -> bool:
    return all((directory / f"{rung.name}.ismv").is_file() for rung in profile.rungs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true",
                        help="320x180, lower bitrates, 20 s by default: for quick runs")
    parser.add_argument("--seconds", type=float, help="length (default 60, --small 20)")
    parser.add_argument("--out", type=Path, help="output directory (default "
                        "bench/results/tmp/capture, --small: .../capture-small)")
    parser.add_argument("--force", action="store_true", help="record again if it exists")
    args = parser.parse_args(argv)
    profile = SMALL if args.small else FULL
    seconds = args.seconds or profile.seconds
    out: Path = args.out or profile.out
    if complete(profile, out) and not args.force:
        print(f"{out}: the capture exists (--force to record it again)")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    started = time.monotonic()
    result = subprocess.run(ffmpeg_command(profile, seconds, partial), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True)
    took = time.monotonic() - started
    if result.returncode != 0:
        print(f"ffmpeg failed ({result.returncode}):\n{result.stderr}", file=sys.stderr)
        shutil.rmtree(partial, ignore_errors=True)
        return 1
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    print(f"recorded {seconds:g} s of {len(profile.rungs)} streams in {took:.1f} s -> {out}")
    for rung in profile.rungs:
        path = out / f"{rung.name}.ismv"
        size = path.stat().st_size
        actual = size * 8 / seconds / 1e3
        print(f"  {path.name}: {rung.width}x{rung.height} {rung.kbps} kb/s + AAC "
              f"{profile.audio_kbps} kb/s, {size / 1e6:.1f} MB ({actual:.0f} kb/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
