"""Throughput of the detector, side by side on the same generated flows: ``make bench`` (never ``make test``).

1. model only: ``Scorer.score`` on flows decoded beforehand, in batches of ``max_batch``; and the same
   with a bundle that also has a novelty model (the same classifier plus the autoencoder's pass);
2. decode + score: ``FlowDecoder.decode_bytes`` on the JSON bytes, then ``Scorer.score``;
3. batch processing: ``BatchProcessor.process`` on Kafka messages (decode, score, alerts as JSON);
4. the worker end to end through the embedded broker (consume, batch, score, produce, commit), for each
   delivery guarantee, from its partition assignment until the last batch is committed.

It prints flows/s (best of ``BENCH_REPEAT`` interleaved runs; the workers best of 2) and the ratios to
model-only. Nothing is asserted about time: the numbers depend on the machine and on what else runs on
it, which is why they are measured in one run, on one data set. ``BENCH_SCALE`` (x 289 flows) and
``BENCH_MAX_BATCH`` change the size.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime

import pytest
import torch
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from detector.core.bundle import load_bundle
from detector.core.decode import DecodedFlow, FlowDecoder
from detector.core.scorer import Scorer
from detector.stream.processor import BatchProcessor
from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows
from tests.support.kafka import unique_name
from tests.support.worker import WorkerThread, flow_values, produce_spread, wait_until, worker_settings

SCALE = int(os.environ.get("BENCH_SCALE", "20"))  # x 289 generated flows
MAX_BATCH = int(os.environ.get("BENCH_MAX_BATCH", "512"))
PARTITIONS = 3
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def scored_count(worker: WorkerThread) -> float:
    return sum(
        sample.value for sample in worker.worker.metrics.verdicts.collect()[0].samples if sample.name.endswith("_total")
    )


def worker_rate(kafka_bootstrap: str, new_topic, bundle_path, values: list[bytes], guarantee: str) -> float:
    names = {
        "input_topic": new_topic(partitions=PARTITIONS, prefix="bench-flows"),
        "output_topic": new_topic(prefix="bench-alerts"),
        "dlq_topic": new_topic(prefix="bench-dlq"),
    }
    produce_spread(kafka_bootstrap, names["input_topic"], values, PARTITIONS)
    settings = worker_settings(
        kafka_bootstrap,
        **names,
        group_id=unique_name("bench"),
        bundle=bundle_path,
        guarantee=guarantee,
        max_batch=MAX_BATCH,
        max_delay_ms=50,
        summary_seconds=3600,
    )
    with WorkerThread(settings) as worker:
        wait_until(lambda: scored_count(worker) >= len(values), "every flow scored", timeout=600)
        finished = time.time()
        assert worker.stop() == 0
    assigned = worker.events("partitions assigned")[0]["timestamp"]
    started = datetime.fromisoformat(assigned.replace("Z", "+00:00")).timestamp()
    return rate(len(values), finished - started)


@pytest.mark.kafka
@pytest.mark.timeout(1800)
def test_bench_detector(kafka_bootstrap, new_topic, tmp_path):
    bundle_path = make_bundle(tmp_path / "bundle", version="bench")
    bundle = load_bundle(bundle_path)
    rows = generated_rows(0, scale=SCALE)
    values = flow_values(rows)
    scorer = Scorer(bundle, "cpu")
    with_novelty = Scorer(load_bundle(make_bundle(tmp_path / "novelty", version="bench", novelty=True)), "cpu")
    pre = bundle.preprocessor
    decoder = FlowDecoder(pre.numeric, tuple(pre.categories))
    decoded = [decoder.decode_bytes(v) for v in values]
    assert all(isinstance(f, DecodedFlow) for f in decoded)
    messages = [
        Message(topic="flows", partition=0, offset=i, value=v, timestamp=(TIMESTAMP_CREATE_TIME, 0))
        for i, v in enumerate(values)
    ]
    processor = BatchProcessor(bundle, output_topic="alerts", dlq_topic="dlq", emit="attacks", device="cpu")
    stages = {
        "model only (Scorer on decoded flows)": lambda: [scorer.score(b) for b in batches(decoded, MAX_BATCH)],
        "model + novelty model": lambda: [with_novelty.score(b) for b in batches(decoded, MAX_BATCH)],
        "decode + score": lambda: [
            scorer.score([decoder.decode_bytes(v) for v in b]) for b in batches(values, MAX_BATCH)
        ],
        "batch processing (decode, score, alerts)": lambda: [
            processor.process(b) for b in batches(messages, MAX_BATCH)
        ],
    }
    best = dict.fromkeys(stages, 0.0)

    def measure() -> None:
        stages["model only (Scorer on decoded flows)"]()  # warm-up: first calls allocate for each batch shape
        for _ in range(REPEAT):  # interleaved, best of REPEAT: the machine may be shared
            for name, stage in stages.items():
                best[name] = max(best[name], rate(len(values), timed(stage)))

    # On a thread of its own, like the in-process worker's loop: torch's OpenMP threading differs between
    # the main thread and others, and on a busy machine that alone can change the model's speed several-fold.
    thread = threading.Thread(target=measure)
    thread.start()
    thread.join()
    for guarantee in ("exactly-once", "at-least-once"):
        name = f"worker end to end, {guarantee}"
        best[name] = max(worker_rate(kafka_bootstrap, new_topic, bundle_path, values, guarantee) for _ in range(2))
    model = best["model only (Scorer on decoded flows)"]

    print()
    print(
        f"flowwarden detector bench: {len(values)} generated flows, batches of {MAX_BATCH}, CPU, "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores"
    )
    for name, value in best.items():
        print(f"  {name:<42} {value:>10,.0f} flows/s   {value / model:6.2f} x model-only")


@pytest.mark.skipif(
    not os.environ.get("BENCH_BUNDLE"), reason="set BENCH_BUNDLE (and BENCH_CSV) to bench a real bundle"
)
def test_bench_a_real_bundle_with_and_without_its_novelty_model():
    """A trained bundle on its own test split (``BENCH_BUNDLE=runs/q/bundle BENCH_CSV=runs/q/test_split.csv.gz``):
    the classifier alone, then with the novelty model's pass, on the same decoded flows."""
    from dataclasses import replace

    from detector.core.csvfile import read_rows

    bundle = load_bundle(os.environ["BENCH_BUNDLE"])
    if bundle.novelty is None:
        pytest.skip("this bundle has no novelty model")
    csv_path = os.environ.get("BENCH_CSV") or str(bundle.path.parent / "test_split.csv.gz")
    pre = bundle.preprocessor
    decoder = FlowDecoder(pre.numeric, tuple(pre.categories))
    flows = [f for f in (decoder.decode_mapping(row) for row in read_rows(csv_path)) if isinstance(f, DecodedFlow)]
    scorers = {
        "classifier": Scorer(replace(bundle, novelty=None), "cpu"),
        "classifier + novelty": Scorer(bundle, "cpu"),
    }
    best = dict.fromkeys(scorers, 0.0)

    def measure() -> None:
        scorers["classifier"].score(flows[:MAX_BATCH])
        for _ in range(REPEAT):
            for name, scorer in scorers.items():
                best[name] = max(
                    best[name],
                    rate(len(flows), timed(lambda s=scorer: [s.score(b) for b in batches(flows, MAX_BATCH)])),
                )

    thread = threading.Thread(target=measure)
    thread.start()
    thread.join()
    print()
    print(
        f"real bundle {bundle.version}: {len(flows)} flows of {csv_path}, {len(pre.output_names)} inputs, "
        f"batches of {MAX_BATCH}"
    )
    for name, value in best.items():
        print(f"  {name:<24} {value:>10,.0f} flows/s   {value / best['classifier']:6.2f} x classifier")
