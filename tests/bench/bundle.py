"""The bundle ``make bench`` measures: a real one when the data is there, one of the real shapes otherwise.

* With the improved-CICIDS2017 sample (``FLOWWARDEN_DATA`` or ``../shared/data``): ``trainer fit --profile
  quick`` on it, cached under ``.cache/bench/quick-<key>/`` where the key hashes the data files' names and
  bytes and the profile's resolved settings (a changed default retrains; other trainer code changes do not:
  delete the folder to retrain after one). The run
  directory's ``test_split.csv.gz`` is what the bench scores and streams.
* :func:`portable_bundle`: the same with ``[features] portable = true`` (only the features every CIC meter
  writes, so that the Python ``cicflowmeter``'s flows can be scored), cached under
  ``.cache/bench/quick-portable-<key>/`` (``make site-check``).
* Without it: generated rows with that dataset's 92 columns (83 features) and its 16 class names, trained for
  one epoch, so the model has the real shapes (the speed is the real model's) but its labels mean little;
  the JSON line says so in ``bundle.source``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("FLOWWARDEN_BENCH_CACHE") or REPO / ".cache" / "bench")
DATASET = "cicids2017_improved_sample"
PROFILE = "quick"

# The improved-CICIDS2017 header (../shared/data/DATA.md): the columns a real record carries.
HEADER = [
    "id",
    "Flow ID",
    "Src IP",
    "Src Port",
    "Dst IP",
    "Dst Port",
    "Protocol",
    "Timestamp",
    "Flow Duration",
    "Total Fwd Packet",
    "Total Bwd packets",
    "Total Length of Fwd Packet",
    "Total Length of Bwd Packet",
    "Fwd Packet Length Max",
    "Fwd Packet Length Min",
    "Fwd Packet Length Mean",
    "Fwd Packet Length Std",
    "Bwd Packet Length Max",
    "Bwd Packet Length Min",
    "Bwd Packet Length Mean",
    "Bwd Packet Length Std",
    "Flow Bytes/s",
    "Flow Packets/s",
    "Flow IAT Mean",
    "Flow IAT Std",
    "Flow IAT Max",
    "Flow IAT Min",
    "Fwd IAT Total",
    "Fwd IAT Mean",
    "Fwd IAT Std",
    "Fwd IAT Max",
    "Fwd IAT Min",
    "Bwd IAT Total",
    "Bwd IAT Mean",
    "Bwd IAT Std",
    "Bwd IAT Max",
    "Bwd IAT Min",
    "Fwd PSH Flags",
    "Bwd PSH Flags",
    "Fwd URG Flags",
    "Bwd URG Flags",
    "Fwd RST Flags",
    "Bwd RST Flags",
    "Fwd Header Length",
    "Bwd Header Length",
    "Fwd Packets/s",
    "Bwd Packets/s",
    "Packet Length Min",
    "Packet Length Max",
    "Packet Length Mean",
    "Packet Length Std",
    "Packet Length Variance",
    "FIN Flag Count",
    "SYN Flag Count",
    "RST Flag Count",
    "PSH Flag Count",
    "ACK Flag Count",
    "URG Flag Count",
    "CWR Flag Count",
    "ECE Flag Count",
    "Down/Up Ratio",
    "Average Packet Size",
    "Fwd Segment Size Avg",
    "Bwd Segment Size Avg",
    "Fwd Bytes/Bulk Avg",
    "Fwd Packet/Bulk Avg",
    "Fwd Bulk Rate Avg",
    "Bwd Bytes/Bulk Avg",
    "Bwd Packet/Bulk Avg",
    "Bwd Bulk Rate Avg",
    "Subflow Fwd Packets",
    "Subflow Fwd Bytes",
    "Subflow Bwd Packets",
    "Subflow Bwd Bytes",
    "FWD Init Win Bytes",
    "Bwd Init Win Bytes",
    "Fwd Act Data Pkts",
    "Fwd Seg Size Min",
    "Active Mean",
    "Active Std",
    "Active Max",
    "Active Min",
    "Idle Mean",
    "Idle Std",
    "Idle Max",
    "Idle Min",
    "ICMP Code",
    "ICMP Type",
    "Total TCP Flow Time",
    "Label",
    "Attempted Category",
]
CLASSES = (
    "BENIGN",
    "Botnet",
    "DDoS",
    "DoS GoldenEye",
    "DoS Hulk",
    "DoS Slowhttptest",
    "DoS Slowloris",
    "FTP-Patator",
    "Heartbleed",
    "Infiltration",
    "Infiltration - Portscan",
    "Portscan",
    "SSH-Patator",
    "Web Attack - Brute Force",
    "Web Attack - SQL Injection",
    "Web Attack - XSS",
)
_IDENTITY = {"id", "Flow ID", "Src IP", "Src Port", "Dst IP", "Timestamp", "Label", "Attempted Category"}


@dataclass(frozen=True)
class BenchBundle:
    run: Path  # the trainer's run directory
    source: str  # what the bundle was trained on, for the JSON line

    @property
    def bundle(self) -> Path:
        return self.run / "bundle"

    @property
    def test_split(self) -> Path:
        return self.run / "test_split.csv.gz"


def shared_dataset() -> Path | None:
    """The improved-CICIDS2017 sample folder, when this machine has it."""
    root = Path(os.environ.get("FLOWWARDEN_DATA") or REPO.parent / "shared" / "data")
    folder = root / DATASET
    return folder if folder.is_dir() and any(folder.glob("*.csv*")) else None


def data_key(folder: Path, profile: str) -> str:
    """A hash of the data files' names and bytes and of the profile's settings: what the cached bundle depends on."""
    from trainer.config import load_config  # the trainer's defaults, not only the profile's name

    digest = hashlib.sha256(load_config(profile).model_dump_json().encode())
    for path in sorted(folder.glob("*.csv*")):
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def bench_bundle(device: str = "cpu", *, dry: bool = False, cache: Path = CACHE, log=None) -> BenchBundle:
    """A trained run directory for the bench (see the module docstring); trains only when it is not cached."""
    data = None if dry else shared_dataset()
    if data is not None:
        run = cache / f"{PROFILE}-{data_key(data, PROFILE)}" / "run"
        source = f"trainer fit --profile {PROFILE} on {DATASET} (cached by data hash)"
        extra: list[str] = []
        inputs = data
    else:
        rows = 40 if dry else 400
        inputs = cache / f"generated-{rows}" / "flows.csv.gz"
        run = inputs.parent / "run"
        source = f"generated rows with the {DATASET} columns, 16 classes, 1 epoch: real shapes, labels mean little"
        extra = ["--epochs", "1"]
        if not inputs.exists():
            write_generated(inputs, rows_per_class=rows)
    if not (run / "bundle" / "manifest.json").is_file() or not (run / "test_split.csv.gz").is_file():
        _train(inputs, run, device, extra, log)
    return BenchBundle(run, source)


def portable_bundle(device: str = "cpu", *, cache: Path = CACHE, log=None) -> BenchBundle | None:
    """The quick profile with ``[features] portable = true`` on the improved-CICIDS2017 sample, trained once
    and cached by data hash; None when the sample is not on this machine."""
    data = shared_dataset()
    if data is None:
        return None
    folder = cache / f"{PROFILE}-portable-{data_key(data, PROFILE)}"
    run = folder / "run"
    if not (run / "bundle" / "manifest.json").is_file():
        config = folder / "portable.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text("[features]\nportable = true\n", encoding="utf-8")
        _train(data, run, device, ["--config", str(config)], log)
    return BenchBundle(run, f"trainer fit --profile {PROFILE} with [features] portable = true on {DATASET} (cached)")


def _train(data: Path, run: Path, device: str, extra: list[str], log) -> None:
    if run.exists():
        shutil.rmtree(run)
    run.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "trainer.cli", "fit", "--data", str(data), "--profile", PROFILE]
    command += ["--out", str(run), "--device", device, "--quiet", *extra]
    if log:
        log(f"training the bench bundle: {' '.join(command[1:])}")
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise RuntimeError(f"training the bench bundle failed ({done.returncode}):\n{done.stderr[-3000:]}")


def write_generated(path: Path, rows_per_class: int, seed: int = 0) -> Path:
    """Rows with the dataset's columns: per class, each feature log-normal around a class-specific level."""
    rng = np.random.default_rng(seed)
    features = [c for c in HEADER if c not in _IDENTITY and c != "Dst Port" and c != "Protocol"]
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(HEADER)]
    number = 0
    for label in CLASSES:
        level = rng.uniform(0, 8, len(features))
        port, protocol = int(rng.choice([22, 21, 80, 443, 8080])), int(rng.choice([6, 17]))
        for _ in range(rows_per_class):
            values = np.round(np.exp(level + rng.normal(0, 0.7, len(features))), 3)
            cells = dict(zip(features, (repr(float(v)) for v in values), strict=True))
            cells.update(
                {
                    "id": str(number),
                    "Flow ID": f"10.0.0.{number % 250}-192.168.1.{number % 200}-{40000 + number % 20000}-{port}",
                    "Src IP": f"10.0.0.{number % 250}",
                    "Src Port": str(40000 + number % 20000),
                    "Dst IP": f"192.168.1.{number % 200}",
                    "Dst Port": str(port),
                    "Protocol": str(protocol),
                    "Timestamp": f"2017-07-05 11:{number // 60 % 60:02d}:{number % 60:02d}.000000",
                    "Label": label,
                    "Attempted Category": "-1",
                }
            )
            lines.append(",".join(cells[c] for c in HEADER))
            number += 1
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path
