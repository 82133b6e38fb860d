"""``make bench-batch``: the worker end to end at several ``--max-batch`` values, as one JSON line and a plot.

For each batch size, a fresh ``detector run`` on the embedded broker (:func:`detector.tools.e2e.measure_worker`):
its capacity on a preloaded 3-partition topic, its own CPU per 1,000 flows, and the latency from each record's
timestamp to its verdict at half that capacity. The points go to ``--out-json`` and a two-panel PNG (capacity;
latency p50/p99) to ``--out-png`` (README "Performance" shows docs/perf-batch.png from a real run). The load
average before and after each point is in the JSON: this machine is shared, and a point measured under another
load is not comparable. ``--dry``: tiny sizes on the test bundle, so that CI runs the script (numbers meaningless).
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
    parser = argparse.ArgumentParser(prog="python -m tests.bench.batch_curve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry", action="store_true", help="tiny sizes, the test bundle: checks the script only")
    parser.add_argument("--sizes", default="64,256,512,1024,2048", help="--max-batch values, comma-separated")
    parser.add_argument("--flows", type=int, default=30_000, help="records of each capacity run")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="length of each latency run")
    add_worker_options(parser)
    parser.add_argument("--out-png", type=Path, help="draw the curve into this PNG")
    args = parse_worker_options(parser, argv)
    if args.dry:
        args.sizes, args.flows, args.latency_seconds = "16,64", 300, 0.5
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="flowwarden-batch-") as scratch:
        inputs = worker_input(args.dry, Path(scratch), args.bundle, args.csv)
        points = []
        with e2e.broker() as bootstrap:
            for size in sizes:
                log(f"worker at --max-batch {size}: {args.flows} records, then {args.latency_seconds:g} s at half rate")
                options = e2e.E2EOptions(
                    inputs.bundle, args.flows, args.latency_seconds, size, "cpu", args.backend, args.threads, 900
                )
                before = load_average()
                point = e2e.measure_worker(bootstrap, inputs.values, args.guarantee, options, None)
                points.append({**point, "load_average_before": before, "load_average_after": load_average()})
    result: dict[str, Any] = {
        "batch_curve": points,
        "guarantee": args.guarantee,
        "threads": args.threads,
        "backend": args.backend,
        "bundle": inputs.source,
        "dry": args.dry,
    }
    line = orjson.dumps(result).decode()
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    if args.out_png:
        plot(result, args.out_png)
    print(line, flush=True)
    return 0


def plot(result: dict[str, Any], path: Path) -> None:
    """Capacity and latency (p50, p99 at half capacity) over the batch size, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result["batch_curve"]
    sizes = [p["max_batch"] for p in points]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(sizes, [p["flows_per_s"] for p in points], marker="o")
    left.set(xscale="log", xlabel="--max-batch", ylabel="flows/s", title="worker capacity (preloaded topic)")
    right.plot(sizes, [p["latency_p50_ms"] for p in points], marker="o", label="p50")
    right.plot(sizes, [p["latency_p99_ms"] for p in points], marker="s", label="p99")
    right.set(xscale="log", xlabel="--max-batch", ylabel="ms", title="latency at half capacity")
    right.legend()
    for axis in (left, right):
        axis.set_xticks(sizes, [str(size) for size in sizes])
        axis.minorticks_off()
        axis.grid(alpha=0.3)
    loads = [p["load_average_before"][0] for p in points] + [p["load_average_after"][0] for p in points]
    figure.suptitle(
        f"detector run, {result['guarantee']}, --threads {result['threads'] or 'default'}, {result['bundle']}"
        f"{' (DRY: meaningless)' if result['dry'] else ''}; load average {min(loads):.1f}-{max(loads):.1f}",
        fontsize=9,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
