"""How long verdict output stalls when a group member changes, per group protocol, on Apache Kafka.

    .venv/bin/python tests/bench/rebalance_stall.py [--variants NAME ...] [--faults restart lost join]
                                                    [--guarantee at-least-once|exactly-once] [--rate FLOWS_PER_S]

Two ``detector run`` workers (subprocesses) share a 4-partition input under a steady load on a single-node
Apache Kafka (started from ``make kafka``'s jars). Then one fault:

* ``restart``: one worker is killed with -9 and started again at once in the same slot (a pod restarted in
  place: same ``--instance-id`` for the static variants);
* ``lost``: one worker is killed with -9 and never comes back;
* ``join``: a third worker joins the group.

A reader (read_committed) timestamps every verdict as it arrives. The stall of a partition is the longest
time without a verdict for it, from the fault until the end of the window; reported as the maximum over the
partitions the surviving worker owned before the fault, and over all partitions, with the revocations the
survivor logged. Group timeouts are librdkafka's defaults (session 45 s) except where a variant says.
One JSON line per run, then a Markdown table. Measurement only: never part of ``make test``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from detector.stream.topics import ensure_topics
from tests.support.apache_kafka import KafkaCluster
from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows
from tests.support.kafka import reader, unique_name
from tests.support.worker import WorkerProcess, flow_values, produce_values

PARTITIONS = 4
COOPERATIVE = {"partition.assignment.strategy": "cooperative-sticky"}
EAGER = {"partition.assignment.strategy": "range,roundrobin"}
VARIANTS: dict[str, tuple[dict[str, str], bool]] = {
    # name: (librdkafka options, static membership)
    "eager-dynamic": (EAGER, False),
    "eager-static": (EAGER, True),
    "cooperative-dynamic": (COOPERATIVE, False),
    "cooperative-static": (COOPERATIVE, True),
    "consumer-static": ({"group.protocol": "consumer"}, True),
}


class Load:
    """Produces ``rate`` flows per second, round-robin over the partitions, until stopped."""

    def __init__(self, bootstrap: str, topic: str, rate: float) -> None:
        self.values = flow_values(generated_rows(7, scale=4))
        self.args = (bootstrap, topic, rate)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        bootstrap, topic, rate = self.args
        tick, index = 0.1, 0
        per_tick = max(PARTITIONS, int(rate * tick))
        while not self.stop.wait(tick):
            for partition in range(PARTITIONS):
                chunk = [self.values[(index + i) % len(self.values)] for i in range(per_tick // PARTITIONS)]
                index += len(chunk)
                produce_values(bootstrap, topic, chunk, partition=partition)


class Verdicts:
    """Reads the output topic (read_committed) and remembers when each partition's verdicts arrived."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.arrivals: dict[int, list[float]] = defaultdict(list)
        self.sources: list[tuple[int, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(bootstrap, topic), daemon=True)

    def _run(self, bootstrap: str, topic: str) -> None:
        with reader(bootstrap, topic, read_committed=True) as consumer:
            while not self.stop.is_set():
                for message in consumer.consume(500, 0.1):
                    if message.error() is None:
                        source = orjson.loads(message.value())["source"]
                        self.arrivals[source["partition"]].append(time.monotonic())
                        self.sources.append((source["partition"], source["offset"]))

    def stall(self, partitions: set[int], since: float, until: float) -> float:
        worst = 0.0
        for partition in partitions:
            times = [t for t in self.arrivals[partition] if since <= t <= until]
            edges = [since, *times, until]
            worst = max(worst, *(b - a for a, b in itertools.pairwise(edges)))
        return worst


def assignment(worker: WorkerProcess) -> set[int]:
    events = [e for e in worker.events() if "assignment" in e and str(e.get("event", "")).startswith("partitions")]
    return {int(name.rsplit("/", 1)[1]) for name in events[-1]["assignment"]} if events else set()


def revocations(worker: WorkerProcess) -> int:
    events = worker.events()
    revoked = [e for e in events if e.get("event") == "partitions revoked" and e.get("revoked")]
    lost = [e for e in events if e.get("event", "").startswith("partitions lost") and e.get("lost")]
    return len(revoked) + len(lost)


def run_one(cluster: KafkaCluster, work: Path, bundle: Path, variant: str, fault: str, args) -> dict:
    bootstrap = cluster.bootstrap_servers
    options, static = VARIANTS[variant]
    names = {"input": unique_name("flows"), "output": unique_name("alerts"), "dlq": unique_name("dlq")}
    ensure_topics(bootstrap, [names["input"], names["output"]], partitions=PARTITIONS)
    ensure_topics(bootstrap, [names["dlq"]])
    group = unique_name("stall")

    def flags(slot: str) -> list[str]:
        argv = ["--bootstrap-servers", bootstrap, "--input-topic", names["input"], "--output-topic"]
        argv += [names["output"], "--dlq-topic", names["dlq"], "--group-id", group, "--bundle", str(bundle)]
        argv += ["--guarantee", args.guarantee, "--emit", "all", "--device", "cpu", "--metrics-port", "0"]
        argv += ["--max-batch", "64", "--max-delay-ms", "50"]
        if static:
            argv += ["--instance-id", slot]
        elif args.guarantee == "exactly-once":
            argv += ["--transactional-id", f"{group}-{slot}"]  # also a static slot: only for completeness
        for key, value in {**options, **dict(o.split("=", 1) for o in args.kafka_option)}.items():
            argv += ["--kafka-option", f"{key}={value}"]
        return argv

    load, verdicts = Load(bootstrap, names["input"], args.rate), Verdicts(bootstrap, names["output"])
    verdicts.thread.start()
    load.thread.start()
    logs = work / f"{variant}-{fault}"
    logs.mkdir(parents=True, exist_ok=True)
    survivor = WorkerProcess(flags("w0"), logs / "w0.log")
    victim = WorkerProcess(flags("w1"), logs / "w1.log")
    extra: list[WorkerProcess] = []
    try:
        deadline = time.monotonic() + 120
        while not (assignment(survivor) and assignment(victim)):
            assert time.monotonic() < deadline, "the workers did not split the partitions"
            time.sleep(0.2)
        time.sleep(args.settle)
        before = {"survivor": assignment(survivor), "victim": assignment(victim)}
        revoked_before = revocations(survivor)
        fault_at = time.monotonic()
        if fault in {"restart", "lost"}:
            victim.kill()
        if fault == "restart":
            extra.append(WorkerProcess(flags("w1"), logs / "w1-restarted.log"))
        if fault == "join":
            extra.append(WorkerProcess(flags("w2"), logs / "w2.log"))
        time.sleep(args.window)
        until = time.monotonic()
        load.stop.set()
        load.thread.join(30)
        time.sleep(3)
        verdicts.stop.set()
        verdicts.thread.join(30)
        duplicates = len(verdicts.sources) - len(set(verdicts.sources))
        return {
            "variant": variant,
            "fault": fault,
            "guarantee": args.guarantee,
            "survivor_partitions": sorted(before["survivor"]),
            "stall_survivor_s": round(verdicts.stall(before["survivor"], fault_at, until), 2),
            "stall_all_s": round(verdicts.stall(set(range(PARTITIONS)), fault_at, until), 2),
            "survivor_revocations": revocations(survivor) - revoked_before,
            "survivor_after": sorted(assignment(survivor)),
            "restarted_after": sorted(assignment(extra[0])) if extra else None,
            "verdicts": len(verdicts.sources),
            "duplicates": duplicates,
            "window_s": args.window,
        }
    finally:
        load.stop.set()
        verdicts.stop.set()
        for worker in (survivor, victim, *extra):
            if worker.alive():
                worker.terminate(70)
            worker.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--faults", nargs="+", default=["restart", "join", "lost"], choices=["restart", "lost", "join"])
    parser.add_argument("--guarantee", default="at-least-once", choices=["at-least-once", "exactly-once"])
    parser.add_argument("--rate", type=float, default=200.0, help="flows per second (default 200)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of steady load before the fault")
    parser.add_argument("--window", type=float, default=70.0, help="seconds observed after the fault")
    parser.add_argument("--kafka-option", action="append", default=[], help="KEY=VALUE for every worker")
    args = parser.parse_args()
    results = []
    work = Path(tempfile.mkdtemp(prefix="rebalance-stall-"))
    print(f"worker and broker logs: {work}", flush=True)
    if True:
        bundle = make_bundle(work / "bundle")
        with KafkaCluster(work / "kafka") as cluster:
            for variant in args.variants:
                for fault in args.faults:
                    result = run_one(cluster, work, bundle, variant, fault, args)
                    print(json.dumps(result), flush=True)
                    results.append(result)
    print("\n| variant | fault | stall, survivor's partitions (s) | stall, all partitions (s) | survivor revocations |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['variant']} | {r['fault']} | {r['stall_survivor_s']} | {r['stall_all_s']} | "
            f"{r['survivor_revocations']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
