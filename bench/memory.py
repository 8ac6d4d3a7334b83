"""Resident memory per publishing point as the DVR window grows.

Points with 4 bitrates and audio in 2-second fragments are filled with a
replay looped until their DVR window is full (the small capture: the number
of fragments is what a long window costs in index; the media bytes are
bounded by LiveCacheLength). The server's RSS is read before and after each
point is filled; the figure is the growth per point, for windows of 10 and
30 minutes, 1 and 2 hours (2 and 10 minutes with --quick). A flat line
means memory follows LiveCacheLength, not the window.

    .venv/bin/python bench/memory.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Smoothlive,
    capture_dir,
    create_point,
    replay,
    report,
    workdir,
)
from fragments import _span_seconds

POINTS_PER_WINDOW = 2
LIVE_CACHE = "PT2M"


def run(quick: bool = False) -> dict:
    small = capture_dir(small=True)
    span = _span_seconds(small)
    windows = (2, 10) if quick else (10, 30, 60, 120)
    rows = []
    work = workdir("memory")
    with Smoothlive(work, ("--reconnect-grace", "3600")) as server:
        baseline = server.rss_bytes()
        for minutes in windows:
            before = server.rss_bytes()
            for copy in range(POINTS_PER_WINDOW):
                path = f"/bench/w{minutes}-{copy}.isml"
                create_point(server, path,
                             '<Archive enabled="false" /><ClientConnections enabled="true">'
                             f"<WindowLength>PT{minutes}M</WindowLength>"
                             f"<LiveCacheLength>{LIVE_CACHE}</LiveCacheLength>"
                             "</ClientConnections>")
                loops = math.ceil(minutes * 60 / span)
                replay(small, server.url + path, "--rate", "max", "--loops", str(loops),
                       timeout=900)
            grown = server.rss_bytes() - before
            fragments = int(minutes * 60 / 2)
            rows.append({
                "window_minutes": minutes,
                "fragments_per_level": fragments,
                "rss_per_point_mb": round(grown / POINTS_PER_WINDOW / 1024**2, 2),
                "bytes_per_fragment": round(grown / POINTS_PER_WINDOW / (fragments * 5), 1),
            })
            print(json.dumps(rows[-1]), flush=True)
        total = server.rss_bytes()
    return {"rows": rows, "baseline_rss_mb": round(baseline / 1024**2, 1),
            "final_rss_mb": round(total / 1024**2, 1), "live_cache": LIVE_CACHE,
            "points_per_window": POINTS_PER_WINDOW}


def table(result: dict) -> str:
    lines = ["| DVR window | fragments per track | RSS per point | bytes per fragment (5 tracks) |",
             "|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['window_minutes']} min | {row['fragments_per_level']:,} | "
                     f"{row['rss_per_point_mb']:.1f} MB | {row['bytes_per_fragment']:,.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = run(args.quick)
    return report("memory", result, table(result))


if __name__ == "__main__":
    raise SystemExit(main())
