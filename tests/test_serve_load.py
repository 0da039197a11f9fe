"""The load test of issue 15 (slow: about a minute on 2 cores): 100 concurrent clients on loopback over 5 videos,
streaming and not; every request is answered or turned away with 429, none gets a 5xx, every answer names its
video's picture, and the server's RSS grows by at most 300 MB. `bench/serve.py --check` does the work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "serve.py"


@pytest.mark.slow
def test_100_concurrent_clients_get_answers_or_429_and_memory_stays_bounded():
    done = subprocess.run([sys.executable, str(BENCH), "--clients", "100", "--no-doc", "--check"],
                          check=False, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
