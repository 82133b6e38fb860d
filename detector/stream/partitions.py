"""The input partitions one worker owns: assigned, paused for back-pressure, and how far each is committed.

The rebalance callbacks change the assignment; back-pressure pauses and resumes; delivery reports advance the
committed positions, which the consumer-lag gauge reads (librdkafka does not know offsets committed through a
producer's transaction: :mod:`detector.stream.clientstats`). A partition that leaves the assignment forgets
its position, so a later owner's progress is never reported as ours.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import TopicPartition

from detector.stream.processor import TopicPartitionKey


class Partitions:
    """Bookkeeping only: the caller talks to the consumer (pause, resume, seek)."""

    def __init__(self) -> None:
        self.assigned: set[TopicPartitionKey] = set()
        self.paused: set[TopicPartitionKey] = set()
        self._committed: dict[TopicPartitionKey, int] = {}

    def assign(self, fresh: set[TopicPartitionKey]) -> None:
        """Partitions handed to this worker; they start from the group's committed offsets."""
        for tp in fresh:
            self._committed.pop(tp, None)
        self.assigned |= fresh

    def unassign(self, partitions: set[TopicPartitionKey]) -> None:
        """Partitions revoked or lost: no longer ours, though their paused flag may still need undoing."""
        self.assigned -= partitions

    def forget(self, partitions: set[TopicPartitionKey]) -> None:
        """Drop everything known about released partitions."""
        self.paused -= partitions
        for tp in partitions:
            self._committed.pop(tp, None)

    def committed(self, tp: TopicPartitionKey, offset: int) -> None:
        """A delivered batch committed ``tp`` up to ``offset`` (ignored once the partition left us)."""
        if tp in self.assigned:
            self._committed[tp] = offset

    def position(self, tp: TopicPartitionKey, default: int) -> int:
        """The committed position of ``tp`` as this worker knows it, else ``default`` (the group's)."""
        return self._committed.get(tp, default)


def topic_partitions(keys: Iterable[TopicPartitionKey]) -> list[TopicPartition]:
    """``(topic, partition)`` keys as the client's ``TopicPartition`` objects."""
    return [TopicPartition(topic, partition) for topic, partition in keys]


def names(keys: Iterable[TopicPartitionKey]) -> list[str]:
    """``topic/partition`` names, sorted, for logs."""
    return [f"{topic}/{partition}" for topic, partition in sorted(keys)]
