"""The measuring helpers charge a process for its own CPU time and summarise latencies as asked."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from detector.tools.measure import percentiles, process_cpu_seconds


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_another_process_is_charged_its_own_cpu_time_not_ours():
    busy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\ntime.sleep(30)",
        ]
    )
    try:
        ours = process_cpu_seconds()
        deadline = time.monotonic() + 30
        while process_cpu_seconds(busy.pid) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        theirs = process_cpu_seconds(busy.pid)
        assert 0.5 <= theirs < 5
        assert process_cpu_seconds() - ours < theirs, "waiting is not the other process's work"
    finally:
        busy.kill()
        busy.wait()


def test_percentiles_of_latencies_and_of_none():
    assert percentiles(list(range(1, 101))) == {50: pytest.approx(50.5), 99: pytest.approx(99.01)}
    empty = percentiles([])
    assert set(empty) == {50, 99} and all(value != value for value in empty.values())  # NaN
