"""``make bench-gpu``'s script in its dry mode: every step of the bench on the CPU with tiny sizes and generated
rows, so that the script the GPU machine runs cannot rot between the rare days it gets a GPU. Its numbers mean
nothing and nothing here looks at a time."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from tests.bench.bundle import REPO

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.mark.timeout(900)
def test_the_gpu_bench_script_runs_dry_on_the_cpu_and_ends_with_one_json_line(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "FLOWWARDEN_BENCH_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        ["bash", "tests/bench/gpu.sh", "--dry"], cwd=REPO, env=env, capture_output=True, text=True, timeout=880
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    result = orjson.loads(lines[-1])
    assert result["dry"] is True and result["device"] == "cpu"
    assert result["bundle"]["features"] == 83 and result["bundle"]["classes"] == 16
    assert set(result["model_only"]) >= {"backend", "eager", result["model_only"]["backend"]}
    assert result["decode"]["ratio_vs_parse"] > 0
    assert result["explain"]["slowdown"] > 0 and result["explain"]["cpu_ratio"] > 0
    backend = result["backend"]
    assert backend["speedup"] > 0 and 0 <= backend["label_agreement"] <= 1
    assert backend["all"]["eager"]["label_agreement"] == 1.0, "eager on the CPU is the reference itself"
    for guarantee in ("exactly-once", "at-least-once"):
        e2e = result["e2e"][guarantee]
        assert e2e["flows_per_s"] > 0 and e2e["cpu_ratio_vs_model"] > 0
        assert e2e["latency_samples"] > 0 and e2e["latency_p50_ms"] <= e2e["latency_p99_ms"]
    train = result["train"]
    assert {"load", "pre-train", "fine-tune"} <= set(train["stage_seconds"])
    assert train["paper_profile_seconds_extrapolated"] > 0
