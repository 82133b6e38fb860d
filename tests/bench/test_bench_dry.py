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
from tests.support.bundles import make_bundle
from tests.support.generated import write_generated_csv

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


@pytest.mark.timeout(600)
def test_the_batch_curve_and_scale_out_benches_run_dry_and_end_with_one_json_line(tmp_path):
    """``make bench-batch`` and ``make bench-scale`` on the tiny test bundle: every point measured, the plot
    drawn, every worker count measured side by side (their numbers mean nothing here)."""
    bundle = make_bundle(tmp_path / "bundle")
    flows = write_generated_csv(tmp_path / "flows.csv", encoding="utf-8")
    inputs = ["--bundle", str(bundle), "--csv", str(flows)]
    curve_json, curve_png = tmp_path / "curve.json", tmp_path / "curve.png"
    curve = run_script("tests.bench.batch_curve", "--dry", *inputs, "--out-json", curve_json, "--out-png", curve_png)
    assert [point["max_batch"] for point in curve["batch_curve"]] == [16, 64]
    for point in curve["batch_curve"]:
        assert point["flows_per_s"] > 0 and point["latency_samples"] > 0
        assert point["latency_p50_ms"] <= point["latency_p99_ms"]
        assert len(point["load_average_before"]) == 3
    assert orjson.loads(curve_json.read_bytes()) == curve
    assert curve_png.read_bytes().startswith(b"\x89PNG")

    scale = run_script("tests.bench.scale_out", "--dry", *inputs)
    assert set(scale["flows_per_s"]) == {"1", "2"}
    assert all(rate > 0 for rate in scale["flows_per_s"].values())
    assert scale["speedup_vs_one"]["1"] == 1.0
    two = scale["scale_out"]["2"]["assignment"]
    assert len(two) == 2 and all(two) and len({p for held in two for p in held}) == 3, two


def run_script(module: str, *args: object) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=500
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return orjson.loads(done.stdout.strip().splitlines()[-1])
