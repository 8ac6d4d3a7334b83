"""Fragments and manifests: smoothlive beside nginx, the same bytes, the same load.

smoothlive serves the fragments of a point fed by a replay of the recorded
ingest (so from memory, as a live point does); nginx (Debian's, started here
with its own configuration, sendfile on) serves the very same bytes from
files. wrk loads each with the same connections, one after the other,
in rounds. Objects: the moof of a fragment (FragmentInfo,
about 1-2 KB: what Smooth players ask for when seeking), the 400 kb/s and
the 3000 kb/s video fragments (about 100 KB and 750 KB). Manifests: the
Smooth client manifest, an HLS media playlist and the DASH MPD of a point
with a long DVR window (2 hours; 10 minutes with --quick).

smoothlive runs with ``--workers 3 --fronts-only``: two fronts take every
connection, a process per core as nginx's ``worker_processes auto`` here,
and the owner (idle while only players ask) serves them what they do not
hold. ``--owner-listens`` lets the owner answer its share of the connections
too, ``--workers 1`` measures the single process. Each pair of
runs is repeated in rounds and the median ratio reported with its range.

    .venv/bin/python bench/fragments.py [--quick] [--seconds S] [--connections C]
                                        [--workers N] [--owner-listens]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from statistics import median

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Smoothlive,
    capture_dir,
    create_point,
    nginx,
    replay,
    report,
    require_tools,
    stream_indexes,
    workdir,
    wrk,
)

FRAG_POINT = "/bench/frag.isml"
DVR_POINT = "/bench/dvr.isml"


def _chunks(manifest: bytes, kind: str = "video") -> tuple[str, list[int], list[int]]:
    """(StreamIndex name, bitrates, chunk start times) of the first StreamIndex of ``kind``."""
    return stream_indexes(manifest)[kind]


def _span_seconds(capture: Path) -> float:
    """The length of a capture, from one of its files (fragments of 2 s)."""
    from smoothlive.media.ingest import Fragment, IngestParser

    parser = IngestParser()
    times = []
    for file in sorted(capture.glob("*.ismv"))[:1]:
        for event in [*parser.feed(file.read_bytes()), *parser.close()]:
            if isinstance(event, Fragment) and event.data.time >= 0:
                times.append((event.data.time, event.data.duration))
    return (max(t + d for t, d in times) - min(t for t, _ in times)) / 10_000_000


def compare(pairs: dict[str, tuple[str, str]], seconds: float, connections: int,
            rounds: int = 3) -> dict:
    """wrk on each (smoothlive URL, nginx URL), the two one after the other, in
    ``rounds`` rounds (which goes first alternates). Each round gives a ratio of
    two runs made seconds apart; the median of those is the figure, and its
    range is reported with it: this machine's load varies from minute to
    minute, and a ratio of two best runs taken minutes apart would carry it."""
    runs: dict[str, dict[str, list[dict]]] = {}
    for round_ in range(rounds):
        for name, (ours, theirs) in pairs.items():
            order = (("smoothlive", ours), ("nginx", theirs))
            for who, url in order if round_ % 2 == 0 else order[::-1]:
                run = wrk(url, seconds, connections)
                if run["non2xx"] or run["socket_errors"]:
                    raise RuntimeError(f"{who} answered errors on {url}: {run}")
                runs.setdefault(name, {}).setdefault(who, []).append(run)
    results: dict[str, dict] = {}
    for name, by in runs.items():
        ratios = sorted(a["rps"] / b["rps"] for a, b in zip(by["smoothlive"], by["nginx"],
                                                          strict=True))
        middle = median(ratios)
        results[name] = {
            # The runs of the median round (the lower one with an even count).
            **{who: sorted(by[who], key=lambda r: r["rps"])[(len(ratios) - 1) // 2]
               for who in ("smoothlive", "nginx")},
            "ratio": round(middle, 3),
            "ratio_min": round(ratios[0], 3),
            "ratio_max": round(ratios[-1], 3),
            "rounds": len(ratios),
        }
    return results


def run(quick: bool = False, seconds: float | None = None, connections: int = 64,
        workers: int = 3, fronts_only: bool = True) -> dict:
    require_tools()
    seconds = seconds or (2 if quick else 8)
    rounds = 1 if quick else 3
    only = ("--fronts-only",) if fronts_only and workers > 1 else ()
    capture, small = capture_dir(), capture_dir(small=True)
    work = workdir("fragments")
    files = work / "nginx-root"
    with Smoothlive(work, ("--reconnect-grace", "3600", "--workers", str(workers), *only)) \
            as server:
        create_point(server, FRAG_POINT, '<Archive enabled="false" />')
        # Paced, not "max": at max rate on a busy machine one bitrate's stream can
        # start so far behind the others that it is taken for a restarted encoder.
        replay(capture, server.url + FRAG_POINT, "--rate", "20x")
        window_minutes = 10 if quick else 120
        create_point(server, DVR_POINT,
                     '<Archive enabled="false" /><ClientConnections enabled="true">'
                     f"<WindowLength>PT{window_minutes}M</WindowLength></ClientConnections>")
        loops = math.ceil(window_minutes * 60 / _span_seconds(small)) + 1
        replay(small, server.url + DVR_POINT, "--rate", "max", "--loops", str(loops),
               timeout=900)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            name, bitrates, times = _chunks(http.get(f"{FRAG_POINT}/Manifest").content)
            at = times[2]
            objects = {
                "fragment_info": f"{FRAG_POINT}/QualityLevels({bitrates[0]})/"
                                 f"FragmentInfo({name}={at})",
                "fragment_low": f"{FRAG_POINT}/QualityLevels({bitrates[0]})/"
                                f"Fragments({name}={at})",
                "fragment_high": f"{FRAG_POINT}/QualityLevels({bitrates[-1]})/"
                                 f"Fragments({name}={at})",
            }
            dvr_name, dvr_bitrates, dvr_times = _chunks(http.get(f"{DVR_POINT}/Manifest").content)
            documents = {
                "smooth_manifest": f"{DVR_POINT}/Manifest",
                "hls_playlist": f"{DVR_POINT}/QualityLevels({dvr_bitrates[-1]})/"
                                f"Manifest({dvr_name},format=m3u8-aapl).m3u8",
                "dash_mpd": f"{DVR_POINT}/Manifest(format=mpd-time-cmaf).mpd",
            }
            sizes = {}
            files.mkdir(parents=True)
            for key, path in {**objects, **documents}.items():
                body = http.get(path, headers={"Accept-Encoding": "identity"})
                body.raise_for_status()
                (files / f"{key}.bin").write_bytes(body.content)
                sizes[key] = len(body.content)
        with nginx(files) as theirs:
            pairs = {key: (server.url + path, f"{theirs}/{key}.bin")
                     for key, path in {**objects, **documents}.items()}
            results = compare(pairs, seconds, connections, rounds)
    for key, entry in results.items():
        entry["bytes"] = sizes[key]
    return {"fragments": {k: results[k] for k in objects},
            "manifests": {k: results[k] for k in documents},
            "dvr": {"window_minutes": window_minutes, "fragments_per_level": len(dvr_times)},
            "seconds": seconds, "connections": connections, "workers": workers,
            "fronts_only": bool(only), "rounds": rounds}


def table(result: dict) -> str:
    setup = f"--workers {result.get('workers', 1)}" + \
        (" --fronts-only" if result.get("fronts_only") else "")
    lines = [f"smoothlive with `{setup}`; wrk with {result['connections']} connections, "
             f"{result['seconds']:g} s per run, {result.get('rounds', 1)} rounds of the two "
             "one after the other: medians, and the range of the rounds' ratios.", "",
             "| object | bytes | smoothlive req/s | nginx req/s | ratio | ratio range | "
             "smoothlive MB/s | p50 / p99 ms (smoothlive) | p50 / p99 ms (nginx) |",
             "|---|---:|---:|---:|---:|---|---:|---|---|"]
    for group in ("fragments", "manifests"):
        for key, entry in result[group].items():
            ours, theirs = entry["smoothlive"], entry["nginx"]
            lines.append(
                f"| {key} | {entry['bytes']:,} | {ours['rps']:,.0f} | {theirs['rps']:,.0f} | "
                f"{entry['ratio']:.2f} | {entry.get('ratio_min', entry['ratio']):.2f} to "
                f"{entry.get('ratio_max', entry['ratio']):.2f} | {ours['mbps']:,.1f} | "
                f"{ours['p50_ms']:.2f} / "
                f"{ours['p99_ms']:.2f} | {theirs['p50_ms']:.2f} / {theirs['p99_ms']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--owner-listens", action="store_true",
                        help="without --fronts-only: the owner answers its share too")
    args = parser.parse_args()
    result = run(args.quick, args.seconds, args.connections, args.workers,
                 not args.owner_listens)
    return report("fragments", result, table(result))


if __name__ == "__main__":
    raise SystemExit(main())

