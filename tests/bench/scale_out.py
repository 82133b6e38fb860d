"""``make bench-scale``: 1, 2 and 3 worker processes in one consumer group on one preloaded 3-partition topic.

Each count gets a fresh topic with the same records (the bench bundle's held-out split, cycled) and the same
bundle; :func:`detector.tools.e2e.measure_group` times the group from the moment every worker holds a
partition until every record is scored. One JSON line: flows/s per worker count side by side, the speed-up over
one worker, the workers' CPU per 1,000 flows, and the load average around each run (the broker shares the
cores: on a 2-core machine three workers compete with it and with each other). ``--dry``: tiny sizes on the
test bundle, so that CI runs the script (numbers meaningless).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from detector.tools import e2e
from tests.bench.workers import add_worker_options, load_average, log, parse_worker_options, worker_input


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.scale_out", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry", action="store_true", help="tiny sizes, the test bundle: checks the script only")
    parser.add_argument("--workers", default="1,2,3", help="worker counts, comma-separated (at most 3)")
    parser.add_argument("--flows", type=int, default=60_000, help="records preloaded for each count")
    parser.add_argument("--max-batch", type=int, default=512)
    add_worker_options(parser)
    args = parse_worker_options(parser, argv)
    if args.dry:
        args.workers, args.flows = "1,2", 600
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(count) for count in args.workers.split(",")]
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="flowwarden-scale-") as scratch:
        inputs = worker_input(args.dry, Path(scratch), args.bundle, args.csv)
        options = e2e.E2EOptions(inputs.bundle, args.flows, 0.0, args.max_batch, "cpu", args.backend, args.threads, 900)
        with e2e.broker() as bootstrap:
            for count in counts:
                log(f"{count} worker(s) in one group: {args.flows} records on {e2e.PARTITIONS} partitions")
                before = load_average()
                run = e2e.measure_group(bootstrap, inputs.values, count, args.guarantee, options)
                runs[str(count)] = {**run, "load_average_before": before, "load_average_after": load_average()}
    one = runs.get("1", {}).get("flows_per_s")
    result: dict[str, Any] = {
        "scale_out": runs,
        "flows_per_s": {count: run["flows_per_s"] for count, run in runs.items()},
        "speedup_vs_one": {
            count: round(run["flows_per_s"] / one, 2) if one and run["flows_per_s"] else None
            for count, run in runs.items()
        },
        "guarantee": args.guarantee,
        "max_batch": args.max_batch,
        "threads": args.threads,
        "bundle": inputs.source,
        "dry": args.dry,
    }
    line = orjson.dumps(result).decode()
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(line + "\n")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
