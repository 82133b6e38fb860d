"""Reading librdkafka statistics documents: partition ends for the lag gauge, broker reachability."""

from __future__ import annotations

import orjson
import pytest

from detector.stream.clientstats import any_broker_up, partition_ends, read_stats


def _stats(brokers: dict[str, str] | None = None, partitions: dict[str, dict[str, int]] | None = None) -> bytes:
    """A statistics document shaped like librdkafka's (only the fields read here)."""
    document: dict[str, object] = {"name": "rdkafka#consumer-1", "type": "consumer"}
    if brokers is not None:
        document["brokers"] = {name: {"name": name, "state": state} for name, state in brokers.items()}
    if partitions is not None:
        document["topics"] = {"flows": {"topic": "flows", "partitions": partitions}}
    return orjson.dumps(document)


@pytest.mark.parametrize(
    ("brokers", "expected"),
    [
        ({"10.0.0.1:9092/1": "UP", "GroupCoordinator": "UP"}, True),
        ({"10.0.0.1:9092/1": "DOWN", "10.0.0.2:9092/2": "UP"}, True),  # one working connection is enough
        ({"10.0.0.1:9092/bootstrap": "INIT", "GroupCoordinator": "TRY_CONNECT"}, False),  # a cut path
        ({"10.0.0.1:9092/1": "CONNECT", "10.0.0.2:9092/2": "APIVERSION_QUERY"}, False),
    ],
)
def test_a_broker_is_up_only_when_one_connection_is_up(brokers, expected):
    assert any_broker_up(read_stats(_stats(brokers))) is expected


@pytest.mark.parametrize("document", [_stats(), _stats({}), b"not json", b"[]"])
def test_reachability_is_unknown_without_brokers_in_the_document(document):
    assert any_broker_up(read_stats(document)) is None


def test_partition_ends_prefer_the_stable_offset_and_skip_the_unassigned_bucket():
    partitions = {
        "-1": {"hi_offset": -1001, "ls_offset": -1001, "committed_offset": -1001},
        "0": {"hi_offset": 120, "ls_offset": 100, "committed_offset": 90},
        "1": {"hi_offset": 50, "ls_offset": -1001, "committed_offset": -1001},
        "2": {"hi_offset": -1001, "ls_offset": -1001, "committed_offset": 7},
    }
    assert partition_ends(read_stats(_stats(partitions=partitions)), "flows") == {0: (100, 90), 1: (50, -1001)}
    assert partition_ends(read_stats(_stats(partitions=partitions)), "other") == {}
