"""A crash never leaves a half-written publishing point.

A child process rewrites a point's settings (and a state file) as fast as it
can and is killed with SIGKILL at random moments; after each kill the point
reads whole, as one of the versions written, and the temporary files a kill
may leave behind are never taken for points.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

from smoothlive.management.settings import Settings
from smoothlive.pubpoint.store import IsmlStore

WRITER = """
import sys, itertools, json
from pathlib import Path
from smoothlive.management.settings import Settings
from smoothlive.pubpoint.store import IsmlStore, atomic_write
store = IsmlStore(Path(sys.argv[1]))
state = Path(sys.argv[2])
print("ready", flush=True)
for n in itertools.count():
    title = "first" if n % 2 else "second" + "x" * 5000
    store.write("/a/p.isml", Settings(title=title), create=False)
    atomic_write(state, json.dumps({"n": n, "pad": "y" * 5000}).encode())
"""


def test_settings_and_state_files_survive_kill_9_at_any_moment(tmp_path):
    root = tmp_path / "content"
    store = IsmlStore(root)
    store.write("/a/p.isml", Settings(title="first"), create=True)
    state = tmp_path / "state.json"
    rng = random.Random(7)
    for _ in range(10):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(state)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.3))  # a random moment of the writes, not a wait
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        fresh = IsmlStore(root)
        assert fresh.scan() == ["/a/p.isml"]  # a leftover .tmp-* file is no point
        title = fresh.read("/a/p.isml").settings.title
        assert title == "first" or title == "second" + "x" * 5000
        if state.exists():
            assert set(json.loads(state.read_bytes())) == {"n", "pad"}
