"""The management API under load, with authentication on: enumerate with details
over 1,000 publishing points, and state queries.

The points are written as .isml files into the content root (as an operator
copying IIS files would); requests carry Basic credentials (verified once
with argon2, then from the credential cache, as a script's repeated calls are).

    .venv/bin/python bench/management.py [--quick] [--points N] [--seconds S]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    BASIC,
    PASSWORD,
    USER,
    Smoothlive,
    report,
    require_tools,
    workdir,
    wrk,
)

ISML = ('<?xml version="1.0" encoding="utf-8"?>\n<smil xmlns="http://www.w3.org/2001/SMIL20/'
        'Language">\n  <head>\n    <meta name="title" content="bench {n}" />\n'
        '    <meta name="sourceType" content="Push" />\n  </head>\n  <body />\n</smil>\n')
ENUMERATE = "/services/smoothstreaming/publishingpoints.isml/settings"


def run(quick: bool = False, points: int = 1000, seconds: float | None = None,
        connections: int = 16) -> dict:
    require_tools()
    seconds = seconds or (3 if quick else 8)
    work = workdir("management")
    folder = work / "content" / "bench"
    folder.mkdir(parents=True)
    for n in range(points):
        (folder / f"p{n:04d}.isml").write_text(ISML.format(n=n))
    with Smoothlive(work) as server:
        with httpx.Client(base_url=server.url, auth=(USER, PASSWORD), timeout=60) as http:
            listing = http.get(ENUMERATE)
            listing.raise_for_status()
            assert listing.text.count("<entry") == points, "not every point enumerated"
            http.get("/bench/p0001.isml/state").raise_for_status()
        enumerate_run = wrk(server.url + ENUMERATE, seconds, connections, headers=(BASIC,))
        state_run = wrk(server.url + "/bench/p0001.isml/state", seconds, connections,
                        headers=(BASIC,))
    enumerate_run["bytes"] = len(listing.content)
    return {"points": points, "seconds": seconds, "connections": connections,
            "enumerate_with_details": enumerate_run, "state": state_run}


def table(result: dict) -> str:
    lines = ["| request | req/s | p50 / p99 ms | answer bytes |", "|---|---:|---|---:|"]
    for key, label in (("enumerate_with_details",
                        f"enumerate with details, {result['points']:,} points"),
                       ("state", "query state")):
        entry = result[key]
        lines.append(f"| {label} | {entry['rps']:,.0f} | {entry['p50_ms']:.2f} / "
                     f"{entry['p99_ms']:.2f} | {entry.get('bytes', 0) or '':,} |"
                     if entry.get("bytes") else
                     f"| {label} | {entry['rps']:,.0f} | {entry['p50_ms']:.2f} / "
                     f"{entry['p99_ms']:.2f} | |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args()
    result = run(args.quick, args.points, args.seconds)
    return report("management", result, table(result))


if __name__ == "__main__":
    raise SystemExit(main())
