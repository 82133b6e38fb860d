"""Reading librdkafka's statistics (the ``stats_cb`` JSON): the consumer lag gauge and broker reachability.

librdkafka reports, per partition, the end of the log as the consumer last saw it from fetch responses:
``hi_offset`` (high watermark) and ``ls_offset`` (last stable offset, the end for ``read_committed``).
Its own ``consumer_lag`` is measured against the offsets *it* committed, which it does not know when the
offsets are committed through a producer's transaction; so the worker subtracts its own committed
positions from these ends instead. The statistics cost nothing extra to obtain: librdkafka emits them
every ``statistics.interval.ms`` from inside ``poll``. A document is parsed once (:func:`read_stats`)
and then read by each function here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson


def read_stats(stats_json: str | bytes) -> Mapping[str, Any]:
    """One statistics document as a mapping; empty when it is not a JSON object."""
    try:
        stats = orjson.loads(stats_json)
    except orjson.JSONDecodeError:
        return {}
    return stats if isinstance(stats, dict) else {}


def partition_ends(stats: Mapping[str, Any], topic: str) -> dict[int, tuple[int, int]]:
    """``{partition: (end offset, committed offset)}`` of ``topic`` from one statistics document.

    Partitions whose end is unknown are left out; the committed offset is what librdkafka last fetched or
    committed itself (-1 when unknown), a fallback for a worker that has not committed a batch yet.
    """
    try:
        partitions = stats["topics"][topic]["partitions"]
    except (KeyError, TypeError):
        return {}
    ends: dict[int, tuple[int, int]] = {}
    for name, data in partitions.items():
        partition = int(name)
        if partition < 0 or not isinstance(data, dict):
            continue  # "-1" is librdkafka's internal unassigned-partition bucket
        stable, high = data.get("ls_offset", -1), data.get("hi_offset", -1)
        end = stable if isinstance(stable, int) and stable >= 0 else high
        committed = data.get("committed_offset", -1)
        if isinstance(end, int) and end >= 0:
            ends[partition] = (end, committed if isinstance(committed, int) else -1)
    return ends


def any_broker_up(stats: Mapping[str, Any]) -> bool | None:
    """Whether the client holds a working connection to at least one broker, from one statistics document.

    librdkafka lists every broker it knows (bootstrap, learned, the logical ``GroupCoordinator``) with a
    connection ``state``; ``"UP"`` is the only state in which requests flow. ``None`` when the document
    lists no brokers (nothing known yet, or not a statistics document): the caller keeps what it had.
    """
    brokers = stats.get("brokers")
    if not isinstance(brokers, dict) or not brokers:
        return None
    return any(isinstance(broker, dict) and broker.get("state") == "UP" for broker in brokers.values())
