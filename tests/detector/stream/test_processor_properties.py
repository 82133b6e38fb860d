"""Property: a batch of any message values through the worker's :class:`BatchProcessor` gives one output per record
(a verdict, or a dead letter with its reason and original bytes), loses none and raises nothing.
"""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from hypothesis import example, given
from hypothesis import strategies as st

from detector.core.bundle import load_bundle
from detector.stream.deadletter import REASON, REASON_CODE, SOURCE_OFFSET
from detector.stream.processor import BatchProcessor
from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows
from tests.support.properties import HOSTILE, message_values
from tests.support.worker import flow_values

TOPIC = "flows"


@pytest.fixture(scope="module")
def processor(tmp_path_factory, one_torch_thread) -> BatchProcessor:
    bundle = load_bundle(make_bundle(tmp_path_factory.mktemp("processor-properties") / "b", version="v1"))
    # emit=all: every scored record becomes a message, so "one output per record" is checkable.
    return BatchProcessor(bundle, output_topic="alerts", dlq_topic="dlq", emit="all", device="cpu", backend="eager")


def messages(values: list[bytes | None]) -> list[Message]:
    return [
        Message(topic=TOPIC, partition=0, offset=100 + i, key=b"k", value=value, timestamp=(TIMESTAMP_CREATE_TIME, i))
        for i, value in enumerate(values)
    ]


GOOD = flow_values(generated_rows(0)[:1])[0]
MISSING = flow_values([{"Dst Port": 80}])[0]
PORT_BEYOND_64_BITS = orjson.dumps({**orjson.loads(GOOD), "Dst Port": 1e20})


@HOSTILE
@given(st.lists(message_values, max_size=8))
@example([GOOD, MISSING, None, b"", GOOD])
@example([PORT_BEYOND_64_BITS])  # was a TypeError from orjson that failed the whole batch (alerts.py)
def test_any_batch_gives_one_output_per_record(processor, values):
    batch = processor.process(messages(values))
    assert batch.records == len(values)
    assert len(batch.outputs) == len(values)
    dead = [output for output in batch.outputs if output.topic == "dlq"]
    verdicts = [output for output in batch.outputs if output.topic == "alerts"]
    assert len(dead) == sum(batch.dead_letters.values())
    assert len(verdicts) == sum(batch.verdicts.values())
    offsets = []
    for output in verdicts:
        alert = orjson.loads(output.value)
        assert alert["label"] in processor.bundle.classes
        offsets.append(alert["source"]["offset"])
    for output in dead:
        headers = dict(output.headers)
        assert headers[REASON].strip() and headers[REASON_CODE].strip()
        offsets.append(int(headers[SOURCE_OFFSET]))
    assert sorted(offsets) == [100 + i for i in range(len(values))]
    if values:
        assert batch.next_offsets == {(TOPIC, 0): 100 + len(values)}
