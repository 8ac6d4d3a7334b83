"""The load soak: 20 points x 4 bitrates in real time, 200 players, management
calls, random encoder restarts; nothing lost, no player error, memory flat.

    .venv/bin/python soak/load.py [--minutes 30] [--points 20] [--players 200]

Everything runs on loopback and every loop is bounded by the duration. The
encoders are ``smoothlive replay`` processes of the benchmark's capture (one
per point, copies a fraction of a fragment apart); every 20-60 s one of
them is killed (SIGKILL, as a crashing encoder) and started again within
the reconnect grace, stamping UTC so its timeline continues after a gap.
Players follow the live edge of a random point: the manifest every 2 s and
the fragment before the newest of one video bitrate and of the audio.
A management client reads a state, a point's statistics or the whole list
every second. At the end the encoders stop, and every fragment any of them
reported sent must be in the point's archives. Each point has a DVR window
(``--window-minutes``, 5 by default): once it is full, memory must stay
flat. Results go to soak/results/load.json (RSS every 10 s: the memory
curve) and soak/results/load-memory.png (the curve drawn); the run's files
are removed at the end unless SMOOTHLIVE_BENCH_KEEP is set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "bench"))
sys.path.insert(0, str(HERE.parent))
from common import (  # noqa: E402
    PASSWORD,
    SMOOTHLIVE,
    USER,
    Smoothlive,
    capture_dir,
    create_point,
    process_rss_bytes,
    stop_process,
    stream_indexes,
    workdir,
)

RESULTS = HERE / "results"
GRACE = 60  # seconds a point waits for its encoder to come back


class Tally:
    def __init__(self) -> None:
        self.requests = 0
        self.errors: list[str] = []

    def check(self, response: httpx.Response, what: str) -> bool:
        self.requests += 1
        if response.status_code != 200:
            self.errors.append(f"{what}: {response.status_code}")
            return False
        return True


async def player(url: str, points: list[str], stop: float, tally: Tally,
                 rng: random.Random) -> None:
    point = rng.choice(points)
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        await asyncio.sleep(rng.uniform(0, 2))
        while time.monotonic() < stop:
            try:
                manifest = await http.get(f"{point}/Manifest")
            except httpx.HTTPError as exc:
                tally.errors.append(f"{point} manifest: {exc!r}")
                await asyncio.sleep(2)
                continue
            if manifest.status_code == 404:  # not started yet, or between restarts
                await asyncio.sleep(2)
                continue
            if tally.check(manifest, f"{point} manifest"):
                for kind, (name, bitrates, times) in stream_indexes(manifest.content).items():
                    if len(times) < 2:
                        continue
                    bitrate = rng.choice(bitrates) if kind == "video" else bitrates[0]
                    fragment = await http.get(
                        f"{point}/QualityLevels({bitrate})/Fragments({name}={times[-2]})")
                    tally.check(fragment, f"{point} {name} {times[-2]}")
            await asyncio.sleep(2)


async def manager(url: str, points: list[str], stop: float, tally: Tally,
                  rng: random.Random) -> None:
    async with httpx.AsyncClient(base_url=url, auth=(USER, PASSWORD), timeout=60) as http:
        while time.monotonic() < stop:
            point = rng.choice(points)
            what = rng.choice(("state", "statistics", "list"))
            target = ("/services/smoothstreaming/publishingpoints.isml" if what == "list"
                      else f"{point}/{what}")
            tally.check(await http.get(target), f"management {what}")
            await asyncio.sleep(1)


class Encoders:
    """One replay per point; restarted at random."""

    def __init__(self, url: str, capture: Path, points: list[str], logs: Path) -> None:
        self.url, self.capture, self.points, self.logs = url, capture, points, logs
        self.processes: dict[str, subprocess.Popen] = {}
        self.restarts = 0
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, point: str) -> None:
        number = self.points.index(point)
        log = self.logs / f"sent-{number}-{self.restarts}.jsonl"
        self.processes[point] = subprocess.Popen(
            [SMOOTHLIVE, "replay", str(self.capture), self.url + point, "--rate", "1x",
             "--loop", "--ts-offset", "now", "--sent-log", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def chaos(self, stop: float, rng: random.Random) -> None:
        while time.monotonic() < stop - 60:
            await asyncio.sleep(rng.uniform(20, 60))
            point = rng.choice(self.points)
            process = self.processes[point]
            process.send_signal(signal.SIGKILL)  # an encoder crash: no end of stream
            process.wait(timeout=10)
            self.restarts += 1
            await asyncio.sleep(rng.uniform(1, 10))  # within the reconnect grace
            self.start(point)

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process(process, signal.SIGTERM)  # ends the streams normally

    def sent(self) -> dict[str, set[tuple[int, int]]]:
        """Per point: (track, time) of every fragment reported sent."""
        sent: dict[str, set[tuple[int, int]]] = {}
        for log in self.logs.glob("sent-*.jsonl"):
            for line in log.read_text().splitlines():
                entry = json.loads(line)
                sent.setdefault(entry["point"], set()).add((entry["track"], entry["time"]))
        return sent


def archived_times(root: Path, point: str) -> set[int]:
    """Every fragment time in the point's archives (every .ismv's tfra)."""
    from smoothlive.archive.ondemand import read_tfra

    folder = root / "archives" / point.strip("/").removesuffix(".isml")
    times: set[int] = set()
    for path in folder.rglob("*.ismv"):
        data = path.read_bytes()
        (size,) = struct.unpack(">I", data[-4:])
        entries = read_tfra(data[-size:]) or {}
        for track in entries.values():
            times.update(time for time, _ in track)
    return times


def _descendants(pid: int) -> list[int]:
    """The server's front processes (children, with --workers)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def _slope_mb_per_hour(points: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS over time, MB per hour."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if not var:
        return None
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / var  # bytes per second
    return round(slope * 3600 / 2**20, 1)


def plot_memory(result: dict, path: Path) -> bool:
    """The memory curve as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(7, 3.5))
    for key, label in (("rss_mb", "server (owner)"), ("fronts_rss_mb", "front process")):
        series = result.get(key) or []
        if series:
            axes.plot([at / 60 for at, _ in series], [mb for _, mb in series], label=label)
    axes.axvline(result["window_minutes"], color="grey", linestyle=":",
                 label="DVR window full")
    axes.set_xlabel("minutes")
    axes.set_ylabel("resident memory, MB")
    axes.set_ylim(bottom=0)
    axes.set_title(f"{result['points']} points x 4 bitrates, {result['players']} players, "
                   f"{result['encoder_restarts']} encoder crashes")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


async def soak(minutes: float, count: int, players: int, seed: int,
               window_minutes: float) -> dict:
    rng = random.Random(seed)
    capture = capture_dir(small=True)  # 4 small bitrates: 5 GB of archives in 30 minutes
    work = workdir("soak")
    points = [f"/soak/ch{n}.isml" for n in range(1, count + 1)]
    with Smoothlive(work, ("--reconnect-grace", str(GRACE), "--workers", "2")) as server:
        for point in points:
            create_point(server, point, '<Archive enabled="true" />'
                         '<ClientConnections enabled="true"><WindowLength>'
                         f"PT{round(window_minutes * 60)}S</WindowLength></ClientConnections>")
        encoders = Encoders(server.url, capture, points, work / "sent")
        for point in points:
            encoders.start(point)
        started = time.monotonic()
        stop = started + minutes * 60
        tally = Tally()
        memory: list[tuple[float, int]] = []
        fronts: list[tuple[float, int]] = []

        async def sample() -> None:
            while time.monotonic() < stop:
                at = round(time.monotonic() - started)
                memory.append((at, process_rss_bytes(server.process.pid)))
                others = _descendants(server.process.pid)
                if others:
                    fronts.append((at, sum(process_rss_bytes(pid) for pid in others)))
                await asyncio.sleep(10)

        await asyncio.gather(
            sample(), manager(server.url, points, stop, tally, rng),
            encoders.chaos(stop, rng),
            *(player(server.url, points, stop, tally, random.Random(rng.random()))
              for _ in range(players)))
        encoders.stop()
        # Every fragment an encoder reported sent is archived (the archive is what
        # a DVR window of any length would list).
        async with httpx.AsyncClient(base_url=server.url, auth=(USER, PASSWORD)) as http:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                states = [(await http.get(f"{p}/state")).text for p in points]
                if all("Stopped" in s for s in states):
                    break
                await asyncio.sleep(1)
        sent = encoders.sent()
        lost = {}
        for point in points:
            have = archived_times(server.root, point)
            missing = sorted(t for _, t in sent.get(point, set()) if t not in have)
            if missing:
                lost[point] = missing[:20]
        # Flat once the DVR window is full (and a minute more: the first encoder
        # restarts, caches warm): what memory holds is then bounded by the window.
        settled = [(at, value) for at, value in memory if at >= window_minutes * 60 + 60]
    return {
        "minutes": minutes, "points": count, "players": players, "seed": seed,
        "window_minutes": window_minutes,
        "requests": tally.requests, "errors": len(tally.errors),
        "error_samples": tally.errors[:20], "encoder_restarts": encoders.restarts,
        "fragments_sent": sum(len(v) for v in sent.values()),
        "lost_fragments": sum(len(v) for v in lost.values()), "lost_samples": lost,
        "rss_mb": [(at, round(value / 2**20, 1)) for at, value in memory],
        "fronts_rss_mb": [(at, round(value / 2**20, 1)) for at, value in fronts],
        "rss_after_window_mb": [round(settled[0][1] / 2**20, 1),
                                round(settled[-1][1] / 2**20, 1)] if settled else None,
        "rss_growth_after_window_mb": round((settled[-1][1] - settled[0][1]) / 2**20, 1)
        if settled else None,
        "rss_slope_after_window_mb_per_hour": _slope_mb_per_hour(settled),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--window-minutes", type=float, default=5,
                        help="each point's DVR window (WindowLength)")
    args = parser.parse_args()
    result = asyncio.run(soak(args.minutes, args.points, args.players, args.seed,
                              args.window_minutes))
    # Flat: after the window filled, the owner grew by at most a tenth (allocator noise,
    # caches that settle), not by what the event adds.
    window_full = result["rss_after_window_mb"]
    flat = window_full is None or window_full[1] - window_full[0] <= 0.1 * window_full[0]
    result["memory_flat"] = flat
    ok = result["errors"] == 0 and result["lost_fragments"] == 0 and flat
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(result, indent=2))
    plot_memory(result, RESULTS / "load-memory.png")
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("rss_mb")},
                     indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
