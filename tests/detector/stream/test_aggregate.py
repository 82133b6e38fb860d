"""The aggregation windows (pure logic) and the state they write to and read back from their changelog."""

from __future__ import annotations

import math

import orjson
import pytest

from detector.stream.aggregate import PartitionWindows, Window, aggregate_id
from detector.stream.aggregate_state import Aggregator, ChangelogReader

KEY = ("10.0.0.1", "10.0.0.2", "DDoS")
OTHER = ("10.0.0.3", "10.0.0.2", "DDoS")


def alert(offset: int) -> dict[str, object]:
    return {"alert_id": f"{offset:032x}", "flow": {"flow_id": f"flow-{offset}"}, "label": "DDoS"}


def test_records_of_one_key_in_one_window_make_one_aggregate_when_a_later_record_passes_its_end() -> None:
    windows = PartitionWindows(10)
    for offset in range(100):
        assert windows.add(KEY, 1000.0 + offset * 0.05, offset, alert(offset))
    assert windows.close() == []  # the watermark (1004.95) is inside the window [1000, 1010)
    windows.add(KEY, 1010.0, 100, alert(100))  # opens the next window and passes the first one's end
    [closed] = windows.close()
    assert (closed.start, closed.count, closed.first_seen, closed.last_seen) == (1000.0, 100, 1000.0, 1004.95)
    assert closed.sample_alert_ids == [f"{i:032x}" for i in range(5)]
    assert closed.sample_flow_ids == [f"flow-{i}" for i in range(5)]
    assert [w.count for w in windows.windows.values()] == [1]


def test_keys_are_aggregated_apart_and_each_window_closes_once() -> None:
    windows = PartitionWindows(10)
    windows.add(KEY, 1001.0, 0, alert(0))
    windows.add(OTHER, 1002.0, 1, alert(1))
    windows.add(KEY, 1003.0, 2, alert(2))
    windows.advance(1010.0)
    closed = windows.close()
    assert sorted((w.key, w.count) for w in closed) == sorted([(KEY, 2), (OTHER, 1)])
    assert windows.close() == []


def test_a_record_late_for_a_closed_window_is_counted_in_the_current_one_never_reopening_it() -> None:
    windows = PartitionWindows(10)
    windows.add(KEY, 1001.0, 0, alert(0))
    windows.add(KEY, 1012.0, 1, alert(1))
    [first] = windows.close()
    windows.add(KEY, 1002.0, 2, alert(2))  # belongs to [1000, 1010), already closed and published
    assert windows.close() == []
    [current] = windows.windows.values()
    assert (first.start, current.start, current.count, current.first_seen) == (1000.0, 1010.0, 2, 1002.0)


def test_a_record_already_counted_is_skipped() -> None:
    windows = PartitionWindows(10)
    assert windows.add(KEY, 1001.0, 5, alert(5))
    assert not windows.add(KEY, 1001.5, 5, alert(5))
    assert not windows.add(KEY, 1001.5, 3, alert(3))
    assert windows.add(KEY, 1001.5, 6, alert(6))
    assert windows.windows[(KEY, 1000.0)].count == 2


def test_the_aggregate_id_is_deterministic_and_differs_per_partition_key_and_window() -> None:
    ident = aggregate_id("flows", 0, KEY, 1000.0)
    assert ident == aggregate_id("flows", 0, KEY, 1000)
    others = {aggregate_id("flows", 1, KEY, 1000.0), aggregate_id("flows", 0, OTHER, 1000.0)}
    others |= {aggregate_id("flows", 0, KEY, 1010.0), aggregate_id("other", 0, KEY, 1000.0)}
    assert len(others | {ident}) == 5


def test_the_aggregated_alert_carries_the_window_and_the_first_alert() -> None:
    window = Window(KEY, 1000.0, 10.0, {**alert(7), "source": {"topic": "flows", "partition": 2, "offset": 7}})
    window.add(1000.5, 7, alert(7))
    window.add(1009.25, 8, alert(8))
    published = window.aggregated_alert("flows", 2)
    assert published["alert_id"] == published["aggregate"]["id"] == aggregate_id("flows", 2, KEY, 1000.0)
    assert published["aggregate"] == {
        "id": published["alert_id"],
        "count": 2,
        "first_seen": "1970-01-01T00:16:40.500Z",
        "last_seen": "1970-01-01T00:16:49.250Z",
        "window_start": "1970-01-01T00:16:40.000Z",
        "window_end": "1970-01-01T00:16:50.000Z",
        "sample_alert_ids": [f"{7:032x}", f"{8:032x}"],
        "sample_flow_ids": ["flow-7", "flow-8"],
    }
    assert published["source"]["offset"] == 7


def test_a_window_length_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        PartitionWindows(0)


class _Message:
    def __init__(self, key: bytes, value: bytes | None) -> None:
        self._key, self._value = key, value

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def replay(records: list[tuple[int, bytes, bytes | None]], topic: str, partition: int) -> PartitionWindows:
    """What ChangelogReader.load builds from ``records`` of the changelog partition (no broker needed)."""
    windows: dict[bytes, object] = {}
    watermark = -math.inf
    for part, key, value in records:
        if part == partition:
            watermark = ChangelogReader._apply(key, value, topic, partition, windows, watermark)
    restored = [Window.from_state(orjson.loads(value)) for value in windows.values()]  # type: ignore[arg-type]
    return PartitionWindows(10, watermark=watermark, windows=restored)


def test_the_changelog_of_a_batch_rebuilds_the_open_windows_and_forgets_the_closed_ones() -> None:
    live = PartitionWindows(10)
    log: list[tuple[int, bytes, bytes | None]] = []
    aggregator = Aggregator(10, lambda topic, partition: live if partition == 1 else PartitionWindows(10))

    def batch() -> list[tuple[tuple[str, int], Window]]:
        folded = aggregator.take()
        log.extend((r.partition, r.key, r.value) for r in folded.changelog)
        return folded.closed

    aggregator.add(("flows", 1), KEY, 1001.0, 0, alert(0))
    aggregator.add(("flows", 1), OTHER, 1002.0, 1, alert(1))
    aggregator.seen(("flows", 1), 1002.0, 2)
    assert batch() == []
    aggregator.add(("flows", 1), KEY, 1013.0, 2, alert(2))
    aggregator.seen(("flows", 1), 1013.0, 3)
    closed = batch()
    assert sorted(w.key for _, w in closed) == sorted([KEY, OTHER])
    assert aggregator.take().changelog == []  # nothing changed since

    rebuilt = replay(log, "flows", 1)
    assert rebuilt.watermark == 1013.0
    assert [(w.key, w.start, w.count, w.next_offset) for w in rebuilt.windows.values()] == [(KEY, 1010.0, 1, 3)]
    assert replay(log, "flows", 0).windows == {}
    assert replay(log, "other-input", 1).windows == {}


def test_the_timer_closes_an_idle_partition_and_writes_nothing_when_there_is_nothing_to_close() -> None:
    aggregator = Aggregator(10, lambda topic, partition: PartitionWindows(10))
    aggregator.add(("flows", 0), KEY, 1001.0, 0, alert(0))
    aggregator.seen(("flows", 0), 1001.0, 1)
    aggregator.take()
    aggregator.advance(1005.0)
    assert aggregator.pending() == frozenset()
    aggregator.advance(1010.0)
    folded = aggregator.take()
    assert [(tp, w.count) for tp, w in folded.closed] == [(("flows", 0), 1)]
    assert [r.value for r in folded.changelog if r.value is None] == [None]  # the closed window's tombstone


def test_forgotten_partitions_are_read_back_when_next_needed() -> None:
    loads: list[int] = []

    def load(topic: str, partition: int) -> PartitionWindows:
        loads.append(partition)
        return PartitionWindows(10)

    aggregator = Aggregator(10, load)
    aggregator.seen(("flows", 0), 1001.0, 1)
    aggregator.seen(("flows", 0), 1002.0, 2)
    aggregator.forget([("flows", 0)])
    aggregator.seen(("flows", 0), 1003.0, 3)
    assert loads == [0, 0]


def test_a_batch_that_changes_no_window_writes_no_state() -> None:
    aggregator = Aggregator(10, lambda topic, partition: PartitionWindows(10))
    aggregator.seen(("flows", 0), 1001.0, 10)  # benign flows only: the watermark moves, nothing opens
    aggregator.seen(("flows", 0), 1030.0, 20)
    assert aggregator.take().changelog == []
    aggregator.add(("flows", 0), KEY, 1031.0, 20, alert(20))
    assert [r.value is not None for r in aggregator.take().changelog] == [True]
