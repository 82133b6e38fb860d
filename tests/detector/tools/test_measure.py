"""The measuring helpers charge a process for its own CPU time and summarise latencies as asked."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from detector.tools.measure import percentiles, process_cpu_seconds, thread_cpu_seconds


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_helper_threads_cpu_time_is_split_from_the_main_threads_and_kept_when_it_ends():
    busy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import threading, time\n"
            "def spin():\n    end = time.thread_time() + 0.6\n    while time.thread_time() < end: pass\n"
            "    time.sleep(float(input()))\n"
            "threading.Thread(target=spin).start()\ntime.sleep(30)",
        ],
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while thread_cpu_seconds(busy.pid)["other"] < 0.55 and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = thread_cpu_seconds(busy.pid)
        assert alive["main"] < 0.3 and alive["librdkafka"] == 0.0 and alive["ended"] < 0.1, alive
        busy.stdin.write("0\n")  # lets the spinning thread end
        busy.stdin.flush()
        while len(os.listdir(f"/proc/{busy.pid}/task")) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        ended = thread_cpu_seconds(busy.pid)
        assert ended["other"] == 0.0 and ended["ended"] >= 0.55, ended
        assert sum(ended.values()) == pytest.approx(process_cpu_seconds(busy.pid), abs=0.02)
    finally:
        busy.kill()
        busy.wait()


def test_percentiles_of_latencies_and_of_none():
    assert percentiles(list(range(1, 101))) == {50: pytest.approx(50.5), 99: pytest.approx(99.01)}
    empty = percentiles([])
    assert set(empty) == {50, 99} and all(value != value for value in empty.values())  # NaN
