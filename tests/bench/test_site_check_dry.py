"""``make site-check``'s script on *generated* flows (``--flows``, no capture, no cicflowmeter) and the tiny test
bundle: every step after the meter runs (adapt, scoring under both bundles, the table, the targets), so the
script cannot rot between the runs on the real captures. Its numbers mean nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.bench.bundle import REPO
from tests.bench.site_check import HELD_OUT_BROWSING, LARGE_FLOOD, SCAN, TRUSTED
from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows, unlike_training, write_generated_csv

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_site_check_adapts_scores_both_bundles_and_prints_the_table_and_targets(tmp_path):
    bundle = make_bundle(tmp_path / "bundle", novelty=True)
    rows = generated_rows(seed=8, scale=2)
    benign = unlike_training([row for row in rows if row["Label"] == "BENIGN"])
    flows = tmp_path / "flows"
    flows.mkdir()
    write_generated_csv(flows / f"{TRUSTED[0]}.csv", benign[:100])
    write_generated_csv(flows / f"{TRUSTED[1]}.csv", benign[100:200])
    write_generated_csv(flows / f"{HELD_OUT_BROWSING}.csv", benign[200:])
    write_generated_csv(flows / f"{SCAN}.csv", [row for row in rows if row["Label"] == "Portscan"])
    write_generated_csv(flows / f"{LARGE_FLOOD}.csv", [row for row in rows if row["Label"] == "DoS Hulk"])
    command = [sys.executable, "-m", "tests.bench.site_check", "--flows", str(flows), "--bundle", str(bundle)]
    command += ["--work", str(tmp_path / "work"), "--adapt-args", "--epochs 3 --seed 1"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    rows_of_table = [line for line in lines if line.startswith("| ") and "capture" not in line]
    assert [line.split(" | ")[0][2:] for line in rows_of_table] == sorted(p.stem for p in flows.glob("*.csv"))
    scan_row = next(line for line in rows_of_table if line.startswith(f"| {SCAN} "))
    assert scan_row.split(" | ")[2].replace(",", "") == "160"  # its flows, all scored
    targets = [line for line in lines if line.startswith("- ")]
    assert len(targets) == 3 and all(("met" in line) for line in targets), targets
    assert "novelty decided by: base autoencoder, adapted autoencoder" in done.stdout
