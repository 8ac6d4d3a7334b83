"""Which ASGI server carries the real application better: uvicorn or granian.

Runs the real server (`smoothlive serve --http-server NAME`) on loopback,
and loads it with wrk (Debian package) on two URLs: ``/healthz`` (a bare hot
path, standing in for the fragment path of later issues) and an authenticated
``GET .../state`` (the management path, Basic credentials cached). Prints a
table and writes bench/results/http_stack.json. Not part of `make test`.

    .venv/bin/python bench/http_stack.py [--seconds 5] [--connections 64]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from common import free_port, wait_port  # noqa: E402


def wrk(url: str, seconds: int, connections: int, headers: list[str]) -> dict:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(\w+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": "".join(p50.groups()), "p99": "".join(p99.groups()),
            "non2xx": int(errors.group(1)) if errors else 0}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="smoothlive-bench-"))
    root, state = work / "content", work / "state"
    subprocess.run([BIN / "smoothlive", "user", "add", "bench", "--password-stdin",
                    "--grant", "write:/", "--state-dir", state], input="bench-pass\n",
                   text=True, check=True, capture_output=True)
    (root / "bench").mkdir(parents=True)
    (root / "bench" / "p.isml").write_text(
        '<?xml version="1.0" encoding="utf-8"?><smil xmlns="http://www.w3.org/2001/SMIL20/'
        'Language"><head><meta name="title" content="bench" /></head><body /></smil>')
    auth = "Authorization: Basic " + base64.b64encode(b"bench:bench-pass").decode()
    env = {**os.environ, "SMOOTHLIVE_ROOT": str(root), "SMOOTHLIVE_STATE_DIR": str(state),
           "SMOOTHLIVE_LOG_LEVEL": "warning"}
    servers = {
        name: (lambda port, name=name: [BIN / "smoothlive", "serve", "--port", str(port),
                                        "--http-server", name])
        for name in ("granian", "uvicorn")
    }
    results: dict[str, dict] = {}
    for name, command in servers.items():
        port = free_port()
        proc = subprocess.Popen(command(port), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            base = f"http://127.0.0.1:{port}"
            # Warm up both URLs: the first requests verify the Basic password
            # with argon2 (about 50 ms each) before the credential is cached.
            wrk(f"{base}/healthz", 1, args.connections, [])
            wrk(f"{base}/bench/p.isml/state", 2, args.connections, [auth])
            results[name] = {
                "healthz": wrk(f"{base}/healthz", args.seconds, args.connections, []),
                "state": wrk(f"{base}/bench/p.isml/state", args.seconds, args.connections,
                             [auth]),
            }
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    print(f"{'server':10} {'url':8} {'req/s':>10} {'p50':>9} {'p99':>9} non2xx")
    for name, per_url in results.items():
        for url, r in per_url.items():
            print(f"{name:10} {url:8} {r['rps']:>10.0f} {r['p50']:>9} {r['p99']:>9} {r['non2xx']}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "http_stack.json").write_text(json.dumps(
        {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
         "seconds": args.seconds, "connections": args.connections, "results": results},
        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
