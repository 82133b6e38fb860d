"""What the worker-only benches (``batch_curve``, ``scale_out``) stream, and the machine's load around a run.

A real run streams the held-out split of the bench bundle (:func:`tests.bench.bundle.bench_bundle`: the quick
profile on the real sample, cached); ``--dry`` streams generated rows through the tiny test bundle of
:mod:`tests.support.bundles` (no training beyond its few seconds), so that the scripts are checked in CI
without costing minutes (``--bundle`` and ``--csv`` name a bundle and flows made beforehand instead). A dry
run's numbers mean nothing."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from detector.tools import e2e


@dataclass(frozen=True)
class WorkerInput:
    bundle: Path
    values: list[bytes]
    source: str


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """The options both worker-only benches share: how the worker runs, what it streams, where the JSON goes."""
    parser.add_argument("--guarantee", choices=e2e.GUARANTEES, default="exactly-once")
    parser.add_argument("--threads", type=int, help="each worker's --threads (default: the worker's)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--bundle", type=Path, help="stream with this bundle (with --csv) instead of the bench's")
    parser.add_argument("--csv", type=Path, help="the flows to stream (a CSV the bundle can score), cycled")
    parser.add_argument("--out-json", type=Path, help="also write the JSON line here")


def parse_worker_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser``'s arguments, with :func:`add_worker_options`' pairing checked."""
    args = parser.parse_args(argv)
    if (args.bundle is None) != (args.csv is None):
        parser.error("--bundle and --csv go together")
    return args


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def worker_input(dry: bool, scratch: Path, bundle: Path | None = None, csv: Path | None = None) -> WorkerInput:
    """The bundle and the records to stream (see the module docstring); ``bundle`` and ``csv`` (both or none)
    name others, e.g. a test bundle its caller has already made."""
    if bundle is not None and csv is not None:
        return WorkerInput(bundle, e2e.records_from_csv([csv]), f"{bundle} streaming {csv.name}")
    if dry:
        from tests.support.bundles import make_bundle
        from tests.support.generated import generated_rows

        bundle = make_bundle(scratch / "bundle")
        return WorkerInput(bundle, [orjson.dumps(row) for row in generated_rows()], "tiny generated test bundle")
    from tests.bench.bundle import bench_bundle

    prepared = bench_bundle("cpu", log=log)
    return WorkerInput(prepared.bundle, e2e.records_from_csv([prepared.test_split]), prepared.source)


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]
