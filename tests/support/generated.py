"""Small *generated* flow data for unit tests (not real traffic; real data lives in ../shared/data).

The rows use real CICFlowMeter column names (improved-CICIDS2017 dialect) and class-dependent value
ranges so that a quick model can learn them; they exist to exercise code paths, not to measure accuracy.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np

FEATURES = (
    "Dst Port",
    "Protocol",
    "Flow Duration",
    "Total Fwd Packet",
    "Total Bwd packets",
    "Total Length of Fwd Packet",
    "Total Length of Bwd Packet",
    "Flow Bytes/s",
    "Flow Packets/s",
    "Flow IAT Mean",
    "SYN Flag Count",
    "ACK Flag Count",
    "FWD Init Win Bytes",
    "Packet Length Mean",
)
METADATA = ("Flow ID", "Src IP", "Src Port", "Dst IP", "Timestamp")

# class -> (rows, per-feature (low, high) multipliers applied to a base profile)
CLASSES: dict[str, int] = {"BENIGN": 120, "DoS Hulk": 80, "Portscan": 80, "Web Attack \u2013 XSS": 9}


def generated_rows(seed: int = 0, scale: int = 1) -> list[dict[str, object]]:
    """Rows of a generated labeled flow table (``scale`` multiplies the row counts)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    for label, count in CLASSES.items():
        for i in range(count * scale):
            rows.append(_row(label, i, rng))
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def _row(label: str, i: int, rng: np.random.Generator) -> dict[str, object]:
    kind = label.split()[0]
    duration = {"BENIGN": 2e6, "DoS": 5e4, "Portscan": 40, "Web": 6e6}[kind] * rng.uniform(0.5, 1.5)
    fwd = int({"BENIGN": 12, "DoS": 4, "Portscan": 1, "Web": 30}[kind] * rng.uniform(0.6, 1.4)) + 1
    bwd = int({"BENIGN": 10, "DoS": 2, "Portscan": 1, "Web": 25}[kind] * rng.uniform(0.6, 1.4))
    fwd_bytes = fwd * {"BENIGN": 300, "DoS": 80, "Portscan": 0, "Web": 700}[kind] * rng.uniform(0.8, 1.2)
    bwd_bytes = bwd * {"BENIGN": 900, "DoS": 0, "Portscan": 0, "Web": 1400}[kind] * rng.uniform(0.8, 1.2)
    packets = fwd + bwd
    values = {
        "Dst Port": {
            "BENIGN": int(rng.choice([443, 53, 80])),
            "DoS": 80,
            "Portscan": int(rng.integers(1, 1024)),
            "Web": 80,
        }[kind],
        "Protocol": 17 if kind == "BENIGN" and i % 3 == 0 else 6,
        "Flow Duration": round(duration),
        "Total Fwd Packet": fwd,
        "Total Bwd packets": bwd,
        "Total Length of Fwd Packet": round(fwd_bytes, 1),
        "Total Length of Bwd Packet": round(bwd_bytes, 1),
        "Flow Bytes/s": (fwd_bytes + bwd_bytes) / duration * 1e6,
        "Flow Packets/s": packets / duration * 1e6,
        "Flow IAT Mean": duration / max(packets - 1, 1),
        "SYN Flag Count": 1 if kind == "Portscan" else int(rng.integers(0, 2)),
        "ACK Flag Count": 0 if kind == "Portscan" else 1,
        "FWD Init Win Bytes": {"BENIGN": 64240, "DoS": 29200, "Portscan": 1024, "Web": 8192}[kind],
        "Packet Length Mean": (fwd_bytes + bwd_bytes) / packets,
    }
    metadata = {
        "Flow ID": f"10.0.0.{i % 250}-192.168.1.{i % 200}-{40000 + i}-{values['Dst Port']}-6",
        "Src IP": f"10.0.0.{i % 250}",
        "Src Port": 40000 + i,
        "Dst IP": f"192.168.1.{i % 200}",
        "Timestamp": f"2017-07-0{3 + i % 5} 1{i % 10}:{i % 60:02d}:00.000000",
    }
    return {**metadata, **values, "Label": label}


def unlike_training(rows: list[dict[str, object]], factor: float = 10.0) -> list[dict[str, object]]:
    """The rows with every volume and timing feature ``factor`` times larger: flows no generated class has
    (a stand-in for flows of an unknown kind, or from another flow meter)."""
    fixed = {"Dst Port", "Protocol", "SYN Flag Count", "ACK Flag Count"}
    return [{k: (v * factor if k in FEATURES and k not in fixed else v) for k, v in row.items()} for row in rows]


def write_generated_csv(path: Path, rows: list[dict[str, object]] | None = None, *, encoding: str = "cp1252") -> Path:
    """Write rows as a CICFlowMeter-style CSV (gzip when the name ends in .gz). cp1252, like CICIDS2017."""
    rows = generated_rows() if rows is None else rows
    columns = list(rows[0])
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding=encoding, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
