"""The batch processor with --aggregate-window-s: alerts folded into windows, changelog records with the batch."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from detector.core.bundle import load_bundle
from detector.stream.aggregate import PartitionWindows
from detector.stream.aggregate_state import Aggregator
from detector.stream.processor import BatchProcessor
from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows
from tests.support.worker import flow_values, schema_errors

TOPIC = "flows"
START_MS = 1_700_000_000_000  # a multiple of 10 s: window [START, START + 10 s)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_bundle(tmp_path_factory.mktemp("bundle") / "b", version="v1"))


def dos_rows(count: int) -> list[dict[str, object]]:
    """``count`` DoS Hulk flows from one source to one destination (the generated model labels them DoS Hulk)."""
    dos = [row for row in generated_rows(0) if row["Label"] == "DoS Hulk"]
    rows = []
    for i in range(count):
        row = dict(dos[i % len(dos)])
        row.update({"Src IP": "172.16.0.1", "Dst IP": "192.168.10.50", "Flow ID": f"flow-{i}"})
        rows.append(row)
    return rows


def messages(values: list[bytes], *, start: int, stamps_ms: list[int], partition: int = 0) -> list[Message]:
    return [
        Message(
            topic=TOPIC,
            partition=partition,
            offset=start + i,
            value=value,
            timestamp=(TIMESTAMP_CREATE_TIME, stamp),
        )
        for i, (value, stamp) in enumerate(zip(values, stamps_ms, strict=True))
    ]


def processor(bundle, *, verdicts_topic=None, loaded=None):
    state = loaded if loaded is not None else {}

    def load(topic: str, partition: int) -> PartitionWindows:
        return state.get(partition) or PartitionWindows(10)

    return BatchProcessor(
        bundle,
        output_topic="alerts",
        dlq_topic="dlq",
        emit="attacks",
        device="cpu",
        aggregator=Aggregator(10, load),
        verdicts_topic=verdicts_topic,
        state_topic="state",
    )


def aggregated(batch) -> list[dict]:
    return [orjson.loads(out.value) for out in batch.outputs if out.topic == "alerts"]


def test_one_aggregated_alert_per_window_published_by_the_batch_that_closes_it(bundle):
    rows = dos_rows(300)
    values = flow_values(rows)
    work = processor(bundle)
    first = work.process(messages(values[:200], start=0, stamps_ms=[START_MS + 40 * i for i in range(200)]))
    assert aggregated(first) == []  # 200 flows within [START, START + 8 s): the window is still open
    assert sum(first.alerts.values()) == 200 and first.next_offsets == {(TOPIC, 0): 200}
    state = [out for out in first.outputs if out.topic == "state"]
    assert state and {out.partition for out in state} == {0} and all(out.value for out in state)

    later = [START_MS + 9_000 + 40 * i for i in range(100)]  # 25 in the first window, 75 in the next
    second = work.process(messages(values[200:], start=200, stamps_ms=later))
    [alert] = aggregated(second)
    assert schema_errors("alert.schema.json", alert) == []
    assert alert["label"] == "DoS Hulk"
    assert (alert["flow"]["src_ip"], alert["flow"]["dst_ip"]) == ("172.16.0.1", "192.168.10.50")
    assert alert["aggregate"]["count"] == 225
    assert alert["aggregate"]["first_seen"] == "2023-11-14T22:13:20.000Z"
    assert alert["aggregate"]["sample_flow_ids"] == [f"flow-{i}" for i in range(5)]
    assert alert["source"]["offset"] == 0
    tombstones = [out for out in second.outputs if out.topic == "state" and out.value is None]
    assert len(tombstones) == 1

    work._next_flush = 0.0  # the timer: wall-clock time is long past the second window's end
    flushed = work.flush_due()
    assert flushed is not None
    [rest] = aggregated(flushed)
    assert rest["aggregate"]["count"] == 75 and rest["alert_id"] != alert["alert_id"]
    assert flushed.next_offsets == flushed.first_offsets == {(TOPIC, 0): 300}
    work._next_flush = 0.0
    assert work.flush_due() is None  # nothing left open


def test_per_flow_alerts_go_to_the_verdicts_topic_when_one_is_set(bundle):
    values = flow_values(dos_rows(20))
    stamps = [START_MS + i for i in range(20)]
    quiet = processor(bundle).process(messages(values, start=0, stamps_ms=stamps))
    told = processor(bundle, verdicts_topic="verdicts").process(messages(values, start=0, stamps_ms=stamps))
    assert {out.topic for out in quiet.outputs} == {"state"}
    verdicts = [orjson.loads(out.value) for out in told.outputs if out.topic == "verdicts"]
    assert len(verdicts) == 20 and all("aggregate" not in v for v in verdicts)


def test_a_redo_after_state_was_written_ahead_of_the_commit_counts_no_flow_twice(bundle):
    values = flow_values(dos_rows(100))
    stamps = [START_MS + 10 * i for i in range(100)]
    ahead = processor(bundle)
    ahead.process(messages(values[:60], start=0, stamps_ms=stamps[:60]))
    restored = ahead.aggregator.partitions[(TOPIC, 0)]  # as if read back from the changelog

    redo = processor(bundle, loaded={0: restored})
    redo.process(messages(values[40:], start=40, stamps_ms=stamps[40:]))  # the group had committed 40 only
    redo._next_flush = 0.0  # the timer closes the window
    [alert] = aggregated(redo.flush_due())
    assert alert["aggregate"]["count"] == 100
