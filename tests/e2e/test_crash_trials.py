"""kill -9 at random moments of an archived ingest: three trials (twenty in ``make soak``).

Each trial (tests/e2e/crashes.py) checks that after the restart the point and
its settings are back, every archive file is whole and finished, the archive
plays every fragment players saw before the kill, and an encoder that
reconnects continues on the same timeline.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.e2e.crashes import crash_trial

TRIALS = int(os.environ.get("SMOOTHLIVE_CRASH_TRIALS", "3"))  # make soak: 20


@pytest.mark.parametrize("seed", range(1, TRIALS + 1))
def test_kill_9_at_a_random_moment(tmp_path, seed):
    summary = crash_trial(tmp_path, random.Random(seed))
    assert summary["archived"] >= summary["listed_before_kill"] >= 1
