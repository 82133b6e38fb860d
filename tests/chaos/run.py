"""``make chaos``: a bounded fault-injection run on Apache Kafka, loopback only, that stops by itself.

Per guarantee (exactly-once, then at-least-once): ``--records`` labelled flows, about 1.2 % of them hostile,
are replayed at ``--rate`` records/s into a ``--partitions``-partition input topic of a 3-node Apache Kafka
cluster (replication factor 3, ``min.insync.replicas=2``) through two ``detector run`` workers in stable
slots (``--instance-id``; one of them reaches the brokers through TCP proxies), with ``--emit all`` so that
every record yields a verdict or a dead letter. A seeded scheduler injects ``--faults`` faults of the kinds of
tests/chaos/faults.py, then (unless ``--no-lose-worker``) loses one worker for good at 90 % of the replay.
Then the output and dead-letter topics are read (read_committed) and checked (tests/chaos/verify.py), the
workers' RSS, fds and threads are compared after warm-up, and the run prints one JSON line. The exit status
is 1 when a check failed.

The JSON line's stalls (tests/chaos/verify.py, ``stall_summary``): ``max_stall_s.restarts_in_place`` (kill -9
and SIGTERM with the worker back in its slot) and ``max_stall_s.other_faults``, each over the survivors'
partitions and over all; ``stall_by_fault`` per kind with both; ``lost_for_good`` with the session timeout.

``--bootstrap`` runs against an external cluster instead (broker faults, network cuts and slow output are
then skipped, and the JSON line says so). Worker logs and broker logs stay in the folder printed on stderr.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from detector.core.registry import publish
from detector.stream.topics import ensure_topics
from tests.chaos.corpus import BACKEND, Corpus
from tests.chaos.faults import KINDS, NEED_OWN_CLUSTER, Target, inject, plan
from tests.chaos.rig import Brokers, PacedReplay, Slot, Soak
from tests.chaos.verify import check, latency_p99_ms, read_outcome, stall_summary, stalls
from tests.support.bundles import make_bundle
from tests.support.kafka import CLIENT_LOGGER, client_config_from_env, unique_name
from tests.support.worker import run_flags, worker_settings

# Longer than a broker's failover (its 3 s session, then an election): a static member whose own session
# expires is fenced when it rejoins (librdkafka#3437). It is also how long a removed worker's partitions wait.
SESSION = {"session.timeout.ms": "20000", "heartbeat.interval.ms": "1000"}
LOSE_AT = 0.9  # the worker lost for good: at this fraction of the replay (its partitions must still get records)
RSS_GROWTH_LIMIT_PCT = 10.0
WARM_UP_S = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000, help="flows replayed per run (default 50000)")
    parser.add_argument("--faults", type=int, default=12, help="faults injected per run (default 12)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the corpus and the fault plan (default 1)")
    parser.add_argument(
        "--guarantee", choices=("exactly-once", "at-least-once", "both"), default="both", help="default both"
    )
    parser.add_argument("--bootstrap", help="an external cluster's bootstrap servers (broker faults skipped)")
    parser.add_argument("--rate", type=float, default=120.0, help="records per second replayed (default 120)")
    parser.add_argument("--partitions", type=int, default=6, choices=(3, 6), help="input partitions (default 6)")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="fault kinds to draw from, comma-separated (default: all)"
    )
    parser.add_argument(
        "--lose-worker",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="end the faults by losing a worker for good (kill -9, no restart) at 90 %% of the replay (default on)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs, data) on success too")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    guarantees = ["exactly-once", "at-least-once"] if args.guarantee == "both" else [args.guarantee]
    failed = False
    for guarantee in guarantees:
        result = run_once(args, guarantee)
        print(orjson.dumps(result).decode(), flush=True)
        failed |= bool(result["checks_failed"])
    return 1 if failed else 0


def run_once(args: argparse.Namespace, guarantee: str) -> dict[str, Any]:
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f"flowwarden-chaos-{guarantee}-"))
    print(f"chaos ({guarantee}): logs and data in {workdir}", file=sys.stderr, flush=True)
    # The replayer's and readers' librdkafka lines (connection errors while a broker is down) go to a file.
    CLIENT_LOGGER.handlers[:] = [logging.FileHandler(workdir / "clients.log")]
    CLIENT_LOGGER.propagate = False
    corpus = Corpus.build(args.records, args.seed)
    asked = tuple(kind.strip() for kind in args.kinds.split(",") if kind.strip())
    unknown = sorted(set(asked) - set(KINDS))
    if unknown:
        raise SystemExit(f"make chaos: unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    kinds = tuple(k for k in asked if args.bootstrap is None or k not in NEED_OWN_CLUSTER)
    with Brokers(workdir, args.bootstrap) as brokers:
        bootstrap = brokers.bootstrap
        fields = ("input_topic", "output_topic", "dlq_topic")
        names = {name: unique_name(name.removesuffix("_topic")) for name in fields}
        extra = client_config_from_env()
        ensure_topics(bootstrap, [names["input_topic"]], partitions=args.partitions, client_config=extra)
        ensure_topics(bootstrap, [names["output_topic"], names["dlq_topic"]], partitions=3, client_config=extra)

        registry = workdir / "registry"
        versions: dict[str, Path] = {}

        def publish_next() -> str:
            version = f"v{len(versions) + 1}"
            versions[version] = make_bundle(workdir / "bundles" / version, seed=len(versions), version=version)
            publish(versions[version], registry)
            return version

        publish_next()
        group, run_id = unique_name("chaos"), unique_name("slot")

        def argv(name: str, via: str) -> list[str]:
            settings = worker_settings(
                via, **names, group_id=group, bundle=registry, emit="all", guarantee=guarantee,
                instance_id=f"{run_id}-{name}", kafka=SESSION,
            )  # fmt: skip
            return [*run_flags(settings), "--backend", BACKEND, "--registry-poll-seconds", "0.5"]

        slots = {"w0": Slot("w0", argv("w0", bootstrap), workdir / "w0")}
        proxied = brokers.proxied_bootstrap or bootstrap
        slots["w1"] = Slot("w1", argv("w1", proxied), workdir / "w1")
        extras: list[Slot] = []

        def add_slot(name: str) -> Slot:
            slot = Slot(name, argv(f"{name}{len(extras)}", bootstrap), workdir / f"{name}{len(extras)}")
            extras.append(slot)
            return slot

        soak = Soak(slots)
        try:
            for slot in slots.values():
                slot.wait_assigned(timeout=240)
            duration = args.records / args.rate
            lose_at = duration * LOSE_AT if args.lose_worker else None
            faults = plan(args.faults, duration * 0.85, args.seed, kinds, lose_at)
            rng = random.Random(args.seed)
            target = Target(slots, "w1", add_slot, publish_next, brokers, names["input_topic"], rng, args.partitions)
            soak.start()
            replay = PacedReplay(bootstrap, names["input_topic"], corpus.values, args.partitions, args.rate).start()
            for fault in faults:
                time.sleep(max(0.0, replay.started + fault.at - time.time()))
                inject(fault, target)
                print(f"chaos ({guarantee}): {fault.kind} {fault.target} error={fault.error}", file=sys.stderr)
            replay.join(timeout=duration * 3 + 120)
            outcome = read_outcome(bootstrap, names["output_topic"], names["dlq_topic"], set(replay.where), 300)
            soak.stop()
            exits = {name: slot.unexpected_exits() for name, slot in slots.items()}
            for slot in slots.values():
                slot.stop()
        finally:
            soak.stop()
            for slot in [*slots.values(), *extras]:
                slot.close()

    expected = {version: corpus.expected_labels(path, workdir) for version, path in versions.items()}
    counts = check(outcome, replay.where, corpus.hostile, expected)
    per_fault = stalls(outcome, faults, args.partitions)
    soaked = soak.growth(WARM_UP_S, min_after=60.0)
    result: dict[str, Any] = {
        "broker": brokers.description,
        "guarantee": guarantee,
        "records": len(replay.where),
        "faults": dict(Counter(f.kind for f in faults if f.error is None)),
        "lost": counts["lost"] + replay.failed,
        "duplicated": counts["duplicated"],
        "dead_lettered": sum(1 for s in replay.where if outcome.dead[s]),
        "hostile": len(corpus.hostile),
        "hostile_not_dead_lettered": counts["hostile_not_dead_lettered"],
        "flows_dead_lettered": counts["flows_dead_lettered"],
        "mismatched_verdicts": counts["mismatched_verdicts"],
        "rss_growth_pct": soaked["rss_growth_pct"],
        "fds_growth": soaked["fds_growth"],
        "threads_growth": soaked["threads_growth"],
        "p99_latency_ms": latency_p99_ms(outcome, replay.sent_at_ms),
        **stall_summary(faults, per_fault, int(SESSION["session.timeout.ms"]) / 1000),
        "faults_failed": [f"{f.kind}: {f.error}" for f in faults if f.error],
        "faults_after_replay": [f.kind for f in faults if f.started >= replay.finished],
        "skipped": [f"{k}: needs the cluster this run starts (--bootstrap given)" for k in asked if k not in kinds],
        "unexpected_worker_exits": {name: codes for name, codes in exits.items() if codes},
        "bundle_versions": sorted(versions),
        "verdicts_by_version": dict(
            sorted(Counter(version for pairs in outcome.labels.values() for version, _ in pairs).items())
        ),
        "seed": args.seed,
        "rate": args.rate,
        "partitions": args.partitions,
        "seconds": round(time.monotonic() - began, 1),
    }
    result["checks_failed"] = failures(result, guarantee, corpus, versions, args.records / args.rate)
    if not result["checks_failed"] and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def failures(
    result: dict[str, Any], guarantee: str, corpus: Corpus, versions: dict[str, Path], duration: float
) -> list[str]:
    """What the run promised and did not keep (empty: every check passed)."""
    failed = []
    if result["records"] != len(corpus.values) or result["lost"]:
        failed.append("lost records")
    if guarantee == "exactly-once" and result["duplicated"]:
        failed.append("duplicates under exactly-once")
    if result["hostile_not_dead_lettered"] or corpus.not_rejected(versions["v1"]):
        failed.append("hostile records not dead-lettered")
    if result["flows_dead_lettered"]:
        failed.append("scoreable flows dead-lettered")
    if result["mismatched_verdicts"]:
        failed.append("verdicts unlike detector score's")
    if result["faults_failed"]:
        failed.append("faults that could not be injected")
    if result["faults_after_replay"]:
        failed.append("faults that came after the replay had ended (a lower --rate leaves them room)")
    growth = result["rss_growth_pct"]
    if growth is not None and growth >= RSS_GROWTH_LIMIT_PCT:
        failed.append(f"RSS grew {growth} % after warm-up")
    if growth is None and duration >= 2 * (WARM_UP_S + 60.0):
        failed.append("no worker process lived long enough to measure its RSS growth")
    return failed


if __name__ == "__main__":
    sys.exit(main())
