"""Every benchmark in one run: results/latest.json and the tables of BENCHMARKS.md.

    .venv/bin/python bench/run.py [--quick]

A full run replaces the tables between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->`` in BENCHMARKS.md with its own (the prose around them
is kept) and writes results/latest.json; ``--quick`` (about 2 minutes) only
writes results/quick.json, so the record stays the last full run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fragments
import ingest
import management
import memory
from common import RESULTS, machine, require_tools

DOCUMENT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def update_document(tables: dict[str, str], about: str) -> None:
    text = DOCUMENT.read_text() if DOCUMENT.exists() else ""
    for name, table in {**tables, "machine": about}.items():
        block = f"<!-- bench:{name} -->\n{table}\n<!-- /bench:{name} -->"
        pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
        text = pattern.sub(lambda _, block=block: block, text) if pattern.search(text) \
            else text + f"\n{block}\n"
    DOCUMENT.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 2 minutes")
    args = parser.parse_args()
    require_tools()
    started = time.monotonic()
    results: dict = {"machine": machine(), "quick": args.quick}
    tables: dict[str, str] = {}
    for name, module in (("fragments", fragments), ("management", management),
                         ("memory", memory), ("ingest", ingest)):
        began = time.monotonic()
        print(f"== {name}", flush=True)
        result = module.run(quick=args.quick)
        result["wall_seconds"] = round(time.monotonic() - began, 1)
        results[name] = result
        tables[name] = module.table(result)
        print(tables[name], flush=True)
    if not args.quick and ingest.plot(results["ingest"], RESULTS / "ingest.png"):
        results["ingest"]["plot"] = "bench/results/ingest.png"
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    if args.quick:  # a check that everything runs: the record stays the last full run
        (RESULTS / "quick.json").write_text(json.dumps(results, indent=2))
        print(f"bench: quick run of {results['wall_seconds']:.0f} s in bench/results/quick.json")
        return 0
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    m = results["machine"]
    about = (f"Measured {m['when']} on {m['cpus']} CPUs ({m['cpu']}), "
             f"{m['memory_bytes'] / 1024**3:.0f} GiB, Python {m['python']}, {m['nginx']}; "
             f"{'quick run' if args.quick else 'full run'} of {results['wall_seconds']:.0f} s.")
    update_document(tables, about)
    print(f"bench: {results['wall_seconds']:.0f} s; results in bench/results/latest.json "
          "and BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
