"""Ingest capacity and ingest-to-player latency: 1 to 100 points x 4 bitrates at once.

Two cores cannot encode 400 live streams, so the load is `smoothlive replay`
of the recorded capture (4 bitrates of 3000/1500/800/400 kb/s and 128 kb/s
audio in 2-second fragments), looped, with every copy on its own valid live
timeline. For each number of points, at real time (1x) and as fast as the
server takes it (max), with archiving on (flushed once a second). The
copies start a fraction of a fragment apart, as independent encoders do
(``replay --stagger``); one more row at 1x has every copy cut its fragments
at the same instant (the worst case: encoders all stamping UTC on the same
boundaries), and one more has the default LiveCacheLength still filling
(the other rows run in steady state: LiveCacheLength 10 s, outlasted by
the warm-up), and one more has every POST relayed by a front
(``--workers 2 --fronts-only``; the CPU counted is all the server's processes):

* CPU seconds of the server per hour of ingested media (per channel-hour),
  and MB/s of ingest sustained per core of server CPU;
* the publish latency, from the last byte of a fragment arriving to the
  fragment being listed and fetchable (the server's
  ``smoothlive_publish_latency_seconds`` histogram), p50/p99/max, and the
  share of fragments published within their real-time budget (50 ms).

    .venv/bin/python bench/ingest.py [--quick] [--points 1,10,50,100] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    RESULTS,
    Smoothlive,
    capture_dir,
    create_point,
    process_cpu_seconds,
    replaying,
    report,
    workdir,
)

BUDGET = 0.050  # seconds from arrival to published, at p99
_SAMPLE = re.compile(r'^(\w+)(?:\{([^}]*)\})? ([0-9.eE+-]+|NaN|\+Inf)$')


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The samples of the server's /metrics, by name."""
    text = httpx.get(url + "/metrics", timeout=30).text
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        parsed = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or ""))
        samples.setdefault(name, []).append((parsed, float(value)))
    return samples


def histogram(samples: dict, name: str) -> tuple[list[tuple[float, float]], float, float]:
    """(cumulative buckets [(le, count)], sum, count) of an unlabelled histogram."""
    buckets = sorted((float(labels["le"]), value)
                     for labels, value in samples.get(f"{name}_bucket", []))
    total = sum(v for _, v in samples.get(f"{name}_count", []))
    summed = sum(v for _, v in samples.get(f"{name}_sum", []))
    return buckets, summed, total


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus-style quantile from cumulative buckets (linear within a bucket)."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    previous_le, previous_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return previous_le
            span = count - previous_count
            share = (rank - previous_count) / span if span else 1.0
            return previous_le + (le - previous_le) * share
        previous_le, previous_count = le, count
    return previous_le


def delta(after: list[tuple[float, float]], before: list[tuple[float, float]]
          ) -> list[tuple[float, float]]:
    old = dict(before)
    return [(le, count - old.get(le, 0.0)) for le, count in after]


def total_bytes(samples: dict) -> float:
    return sum(v for _, v in samples.get("smoothlive_ingest_bytes_total", []))


STEADY_CACHE = 10  # seconds of LiveCacheLength for steady-state rows (the default is 120)


def measure(points: int, rate: str, seconds: float, warmup: float,
            aligned: bool = False, filling: bool = False, relayed: bool = False,
            quick: bool = False) -> dict:
    """One row. Unless ``filling``, the points' LiveCacheLength is STEADY_CACHE and the
    warm-up outlasts it: the measurement is of a channel's steady state, not of its
    first minutes, when its memory cache is still growing (new pages to zero)."""
    capture = capture_dir()
    work = workdir(f"ingest-{points}-{rate}")
    cache = "" if filling else (
        f'<ClientConnections enabled="true"><LiveCacheLength>PT{STEADY_CACHE}S'
        "</LiveCacheLength></ClientConnections>")
    if not filling and rate == "1x" and not quick:  # (--quick only checks that all runs)
        warmup = max(warmup, STEADY_CACHE + 5)
    fronts = ("--workers", "2", "--fronts-only") if relayed else ()
    with Smoothlive(work, ("--reconnect-grace", "600", *fronts)) as server:
        for n in range(1, points + 1):
            create_point(server, f"/bench/ch{n}.isml", cache)
        url = server.url + "/bench/ch{n}.isml"
        spread = () if aligned else ("--stagger",)
        with replaying(capture, url, "--count", str(points), "--rate", rate, "--loop",
                       "--ts-offset", "now", "--duration", str(warmup + seconds + 30),
                       *spread) as client:
            time.sleep(warmup)  # connections made, steady state (a bench, not a test)
            before = scrape(server.url)
            cpu_before, client_before = server.cpu_seconds(), process_cpu_seconds(client.pid)
            started = time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - started
            after = scrape(server.url)
            cpu = server.cpu_seconds() - cpu_before
            client_cpu = process_cpu_seconds(client.pid) - client_before
            failed = client.poll() is not None and client.returncode != 0
        rss = server.rss_bytes() if server.process else 0
    name = "smoothlive_publish_latency_seconds"
    buckets_after, _, count_after = histogram(after, name)
    buckets_before, _, count_before = histogram(before, name)
    buckets = delta(buckets_after, buckets_before)
    published = count_after - count_before
    within = next((count for le, count in buckets if le >= BUDGET), published)
    ingested = (total_bytes(after) - total_bytes(before)) / 1024**2
    media_seconds = elapsed * points if rate == "1x" else None
    return {
        "points": points, "rate": rate, "seconds": round(elapsed, 2),
        "encoders": "aligned" if aligned else "independent",
        "phase": "cache filling" if filling else "steady",
        "via": "a front" if relayed else "owner",
        "server_cpu_seconds": round(cpu, 2),
        "server_cpu_share": round(cpu / elapsed, 3),
        "replay_cpu_share": round(client_cpu / elapsed, 3),
        "ingest_mb_per_s": round(ingested / elapsed, 2),
        "mb_per_s_per_core": round(ingested / cpu, 1) if cpu else None,
        "cpu_seconds_per_media_hour": round(cpu / (media_seconds / 3600), 2)
        if media_seconds else None,
        "fragments_published": int(published),
        "publish_p50_ms": _ms(quantile(buckets, 0.50)),
        "publish_p99_ms": _ms(quantile(buckets, 0.99)),
        "publish_max_ms_bucket": _ms(next((le for le, count in buckets if count >= published),
                                          None)) if published else None,
        "within_budget": round(within / published, 4) if published else None,
        "server_rss_mb": round(rss / 1024**2, 1),
        "replay_failed": failed,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def run(quick: bool = False, counts: tuple[int, ...] | None = None,
        seconds: float | None = None) -> dict:
    counts = counts or ((1, 10) if quick else (1, 10, 50, 100))
    seconds = seconds or (4 if quick else 30)
    warmup = 3 if quick else 6
    rows = []
    for rate in ("1x", "max"):
        for points in counts:
            if rate == "max" and points > 10:
                continue  # one pass at 1 and 10 says what a core sustains
            row = measure(points, rate, seconds if rate == "1x" else seconds / 2,
                          warmup=warmup if rate == "1x" else 3, quick=quick)
            print(json.dumps(row), flush=True)
            rows.append(row)
        if rate == "1x":
            # The worst case: every encoder cuts its fragments at the same instant
            # (all stamping UTC on the same boundaries), a burst every 2 s.
            row = measure(max(counts), rate, seconds, warmup, aligned=True, quick=quick)
            print(json.dumps(row), flush=True)
            rows.append(row)
            # The first minute of the channels (default LiveCacheLength, 2 minutes,
            # still filling): the memory grows by the ingest rate.
            row = measure(max(counts), rate, seconds, warmup, filling=True, quick=quick)
            print(json.dumps(row), flush=True)
            rows.append(row)
            # With --workers 2 --fronts-only every POST reaches the owner through a
            # front: the relay's cost, counted with the server's (all its processes).
            row = measure(max(counts), rate, seconds, warmup, relayed=True, quick=quick)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return {"rows": rows, "budget_ms": BUDGET * 1000}


def table(result: dict) -> str:
    lines = ["| points x 4 bitrates | rate | encoders | phase | POSTs reach | server CPU | "
             "replay CPU | "
             "ingest MB/s | MB/s per core | CPU s per media hour | publish p50 / p99 / max ms | "
             "within 50 ms |",
             "|---:|---|---|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for row in result["rows"]:
        lines.append(
            f"| {row['points']} | {row['rate']} | {row.get('encoders', 'aligned')} | "
            f"{row.get('phase', 'cache filling')} | {row.get('via', 'owner')} | "
            f"{row['server_cpu_share'] * 100:.0f}% | "
            f"{row['replay_cpu_share'] * 100:.0f}% | {row['ingest_mb_per_s']:.1f} | "
            f"{row['mb_per_s_per_core'] or 0:.1f} | "
            f"{row['cpu_seconds_per_media_hour'] if row['cpu_seconds_per_media_hour'] else '-'} | "
            f"{row['publish_p50_ms']} / {row['publish_p99_ms']} / "
            f"≤ {row.get('publish_max_ms_bucket') or '-'} | "
            f"{(row['within_budget'] or 0) * 100:.1f}% |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> bool:
    """Cost per channel as channels grow (PNG); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in result["rows"] if r["rate"] == "1x" and r.get("encoders") != "aligned"
            and r.get("phase") != "cache filling" and r.get("via", "owner") == "owner"]
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=120)
    axis.plot([r["points"] for r in rows], [r["cpu_seconds_per_media_hour"] for r in rows],
              marker="o")
    axis.set_xscale("log")
    axis.set_xlabel("publishing points x 4 bitrates (real time)")
    axis.set_ylabel("server CPU s per channel-hour")
    axis.set_title("Ingest cost per channel")
    axis.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--points", help="comma-separated counts, e.g. 1,10,50,100")
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args()
    counts = tuple(int(p) for p in args.points.split(",")) if args.points else None
    result = run(args.quick, counts, args.seconds)
    report("ingest", result, table(result))
    plot(result, RESULTS / "ingest.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
