"""Micro-batching: flush at max_batch records or max_delay after the batch's first record."""

from __future__ import annotations

import pytest
from confluent_kafka import Message

from detector.stream.batcher import Batcher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def records(partition: int, offsets: range, topic: str = "flows") -> list[Message]:
    return [Message(topic=topic, partition=partition, offset=o, value=b"x") for o in offsets]


def test_an_empty_batcher_is_never_due():
    batcher = Batcher(4, 0.05, Clock())
    assert len(batcher) == 0 and not batcher.due() and batcher.seconds_until_due() is None
    assert batcher.take() == []


def test_a_full_batch_is_due_at_once():
    clock = Clock()
    batcher = Batcher(4, 10.0, clock)
    batcher.add(records(0, range(3)))
    assert not batcher.due()
    batcher.add(records(0, range(3, 4)))
    assert batcher.due() and batcher.seconds_until_due() == 0.0
    assert [m.offset() for m in batcher.take()] == [0, 1, 2, 3]
    assert len(batcher) == 0


def test_a_partial_batch_is_due_max_delay_after_its_first_record():
    clock = Clock()
    batcher = Batcher(100, 0.05, clock)
    batcher.add(records(0, range(2)))
    clock.now += 0.03
    batcher.add(records(0, range(2, 4)))
    assert batcher.seconds_until_due() == pytest.approx(0.02)
    clock.now += 0.02
    assert batcher.due()
    assert len(batcher.take()) == 4


def test_take_hands_out_max_batch_and_the_remainder_keeps_its_own_arrival_time():
    clock = Clock()
    batcher = Batcher(3, 1.0, clock)
    batcher.add(records(0, range(2)))
    clock.now += 0.5
    batcher.add(records(0, range(2, 4)))  # offsets 2, 3 arrive 0.5 s later
    assert [m.offset() for m in batcher.take()] == [0, 1, 2]
    assert len(batcher) == 1
    assert batcher.seconds_until_due() == pytest.approx(1.0)  # the remainder (offset 3) arrived at +0.5
    clock.now += 1.0
    assert batcher.due() and [m.offset() for m in batcher.take()] == [3]


def test_drop_partitions_forgets_only_those_partitions():
    batcher = Batcher(10, 1.0, Clock())
    batcher.add(records(0, range(3)) + records(1, range(2)))
    batcher.add(records(2, range(2)) + records(0, range(3, 5)))
    assert batcher.drop_partitions({("flows", 0), ("other", 1)}) == 5
    assert len(batcher) == 4
    assert sorted((m.partition(), m.offset()) for m in batcher.take()) == [(1, 0), (1, 1), (2, 0), (2, 1)]


def test_a_batch_size_below_one_is_refused():
    with pytest.raises(ValueError):
        Batcher(0, 1.0)
