"""Kafka helpers for tests: which broker they run on, unique names, producing values, consuming exactly N.

The suite runs its Kafka tests on one of three brokers, chosen once per session (:data:`BROKER_KIND`):

* ``external``: the cluster named by ``KAFKA_BOOTSTRAP_SERVERS`` (extra librdkafka settings as a JSON
  object in ``KAFKA_CLIENT_CONFIG``, e.g. for SASL/TLS);
* ``apache``: Apache Kafka started by the suite from the jars of ``make kafka`` (tests/support/apache_kafka.py),
  when Java >= 17 and the jars are there;
* ``embedded``: the embedded Tansu broker otherwise, or when ``KAFKA_TEST_BROKER=embedded``.

Every wait is bounded and every failure says what was expected and what arrived.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from tests.support import apache_kafka
from tests.support.apache_kafka import KafkaCluster
from tests.support.tcpproxy import TcpProxy

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
CLIENT_CONFIG_ENV = "KAFKA_CLIENT_CONFIG"
BROKER_CHOICE_ENV = "KAFKA_TEST_BROKER"
BrokerKind = Literal["external", "apache", "embedded"]


def broker_kind() -> BrokerKind:
    """Which broker the Kafka tests of this session run on (see the module docstring)."""
    if os.environ.get(BOOTSTRAP_ENV, "").strip():
        return "external"
    choice = os.environ.get(BROKER_CHOICE_ENV, "auto").strip().lower()
    if choice not in {"auto", "embedded", "apache"}:
        raise ValueError(f"{BROKER_CHOICE_ENV} must be auto, apache or embedded, not {choice!r}")
    if choice == "embedded":
        return "embedded"
    reason = apache_kafka.unavailable_reason()
    if reason is not None and choice == "apache":
        raise RuntimeError(f"{BROKER_CHOICE_ENV}=apache, but {reason}")
    return "embedded" if reason is not None else "apache"


BROKER_KIND: BrokerKind = broker_kind()
#: Tansu's expectations differ from Apache Kafka's (docs/tansu.md): its limitations are strict xfails on it only.
EMBEDDED = BROKER_KIND == "embedded"

# Tansu answers a JoinGroup only after about half the member's session timeout (about 23 s with
# librdkafka's default 45 s), so group tests use 6 s: the smallest Apache Kafka accepts by default
# (group.min.session.timeout.ms), hence valid on a real cluster too.
GROUP_DEFAULTS: dict[str, str | int | bool] = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
}


@functools.cache
def embedded_description() -> str:
    """``embedded Tansu 0.6.0``, the version read from the binary's name where it has one."""
    from detector.tools.broker import BrokerError, broker_binary

    try:
        match = re.search(r"tansu-v(\d[\w.]*?)(?:-|$)", os.path.basename(broker_binary()))
    except BrokerError:
        match = None
    return f"embedded Tansu {match.group(1)}" if match else "embedded Tansu"


@dataclass(frozen=True)
class KafkaBroker:
    """The broker a test runs on: its address, what it is (for the report), and the cluster when the suite
    started Apache Kafka itself (its logs are shown when a test fails)."""

    bootstrap_servers: str
    description: str
    cluster: KafkaCluster | None = None
    proxy: TcpProxy | None = None  # Apache Kafka: the proxy in front of the cluster's proxied listener


@dataclass(frozen=True)
class ProxiedBroker:
    """A broker whose every client connection goes through ``proxy`` (bootstrap and after metadata)."""

    description: str
    proxy: TcpProxy
    cluster: KafkaCluster | None = None

    @property
    def bootstrap_servers(self) -> str:
        return self.proxy.address


def unique_name(prefix: str) -> str:
    """A topic/group/transactional id never used before: real clusters are shared between runs."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def client_config_from_env() -> dict[str, str]:
    """Extra librdkafka settings for a real cluster, from ``KAFKA_CLIENT_CONFIG`` (a JSON object)."""
    raw = os.environ.get(CLIENT_CONFIG_ENV, "").strip()
    if not raw:
        return {}
    config = json.loads(raw)
    if not isinstance(config, dict):
        raise ValueError(f"{CLIENT_CONFIG_ENV} must be a JSON object of librdkafka settings")
    return {str(key): str(value) for key, value in config.items()}


# librdkafka writes its own logs to stderr, outside pytest's capture: the fault tests' expected connection
# errors would land in the middle of the progress dots. Through a Python logger they are captured, and
# shown with a failing test's report.
CLIENT_LOGGER = logging.getLogger("tests.librdkafka")


def client_config(bootstrap_servers: str) -> dict[str, Any]:
    """``bootstrap.servers`` plus the environment's extra settings: the base of every test client."""
    return {**client_config_from_env(), "bootstrap.servers": bootstrap_servers, "logger": CLIENT_LOGGER}


class CommitRoute:
    """A consumer's ``on_commit`` callback that forwards to ``target.on_commit``, set once the target exists:
    the committing object needs the consumer first, as in the worker."""

    def __init__(self) -> None:
        self.target: Any = None

    def __call__(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        self.target.on_commit(error, partitions)


def group_consumer(
    bootstrap_servers: str,
    group_id: str,
    *,
    read_committed: bool = False,
    config: Mapping[str, str | int | bool] | None = None,
) -> Consumer:
    """A consumer in ``group_id`` with :data:`GROUP_DEFAULTS` (manual commits, from the earliest offset)."""
    return Consumer(
        {
            **client_config(bootstrap_servers),
            **GROUP_DEFAULTS,
            "group.id": group_id,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            **(config or {}),
        }
    )


def produce_values(
    bootstrap_servers: str,
    topic: str,
    values: Iterable[bytes],
    *,
    partition: int | None = None,
    config: Mapping[str, str | int | bool] | None = None,
    timeout: float = 15.0,
) -> list[tuple[int, int]]:
    """Produce ``values`` (in order) and return the ``(partition, offset)`` of each; fails unless all land."""
    producer = Producer({**client_config(bootstrap_servers), **(config or {})})
    values = list(values)
    results: list[tuple[int, int] | KafkaError | None] = [None] * len(values)

    def record(index: int, error: KafkaError | None, message: Message) -> None:
        results[index] = error if error is not None else (message.partition(), message.offset())

    for index, value in enumerate(values):
        kwargs = {} if partition is None else {"partition": partition}
        producer.produce(topic, value=value, on_delivery=functools.partial(record, index), **kwargs)
        producer.poll(0)
    left = producer.flush(timeout)
    failures = [(i, r) for i, r in enumerate(results) if not isinstance(r, tuple)]
    assert left == 0 and not failures, (
        f"{len(failures)} of {len(values)} messages to {topic!r} not delivered within {timeout:g} s "
        f"({left} still queued); first failures: {failures[:3]}"
    )
    return [r for r in results if isinstance(r, tuple)]


def drain(consumer: Consumer, count: int, *, timeout: float = 20.0, idle_after: float = 0.0) -> list[Message]:
    """Poll ``consumer`` until ``count`` messages arrived, then for ``idle_after`` more seconds.

    Fails with what did arrive if fewer than ``count`` came within ``timeout`` seconds, or if any more came
    during ``idle_after`` (use it to assert that nothing else is visible).
    """
    received: list[Message] = []
    errors: list[KafkaError] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        _poll_into(consumer, received, errors, min(0.2, max(0.0, deadline - time.monotonic())))
    assert len(received) >= count, (
        f"expected {count} messages within {timeout:g} s, got {len(received)}: {_describe(received)}; "
        f"consumer errors: {errors[:3]}"
    )
    quiet_until = time.monotonic() + idle_after
    while time.monotonic() < quiet_until:
        _poll_into(consumer, received, errors, min(0.2, max(0.0, quiet_until - time.monotonic())))
    assert len(received) == count, f"expected exactly {count} messages, got {len(received)}: {_describe(received)}"
    return received


def consume_exactly(
    bootstrap_servers: str,
    topic: str,
    count: int,
    *,
    read_committed: bool = False,
    timeout: float = 20.0,
    idle_after: float = 0.0,
    config: Mapping[str, str | int | bool] | None = None,
) -> list[Message]:
    """Read ``topic`` from the beginning of every partition, without a consumer group; see :func:`drain`.

    Assigning partitions directly skips the group join (seconds on Tansu) and commits nothing.
    """
    with reader(bootstrap_servers, topic, read_committed, config) as consumer:
        return drain(consumer, count, timeout=timeout, idle_after=idle_after)


def consume_until_idle(
    bootstrap_servers: str, topic: str, *, read_committed: bool = False, idle_after: float = 2.0, timeout: float = 30.0
) -> list[Message]:
    """Everything visible in ``topic`` from the beginning: reads until nothing arrives for ``idle_after``
    seconds (or ``timeout`` passes). For when the count is what the test wants to learn."""
    received: list[Message] = []
    errors: list[KafkaError] = []
    with reader(bootstrap_servers, topic, read_committed, None) as consumer:
        deadline = time.monotonic() + timeout
        quiet_until = time.monotonic() + idle_after
        while time.monotonic() < min(deadline, quiet_until):
            before = len(received)
            _poll_into(consumer, received, errors, 0.2)
            if len(received) > before:
                quiet_until = time.monotonic() + idle_after
    assert not errors, f"consumer errors: {errors[:3]}"
    return received


def read_to_end(bootstrap_servers: str, topic: str, *, timeout: float = 60.0) -> list[Message]:
    """Every record of ``topic``, each partition from its beginning to its end (read_uncommitted).

    What the log holds, not what a producer was told: a batch retried by a producer without idempotence can
    be written twice while its delivery report names one copy. Unlike :func:`consume_until_idle` it knows
    where each partition ends, so a slow fetch cannot cut the read short: a partition is read when the
    consumer meets its end (partition EOF) at or past the high watermark that ListOffsets gave at the call.
    Not that offset alone: the embedded Tansu answers ListOffsets with its last batch's first offset + 1,
    short of the end its fetches report."""
    received: list[Message] = []
    errors: list[KafkaError] = []
    at_end: set[int] = set()
    with reader(bootstrap_servers, topic, config={"enable.partition.eof": True}) as consumer:
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in consumer.assignment()}
        deadline = time.monotonic() + timeout
        while at_end != set(ends):
            assert time.monotonic() < deadline, (
                f"{topic!r} not read to its end within {timeout:g} s: partitions {sorted(set(ends) - at_end)} "
                f"short of their high watermarks {ends}; consumer errors: {errors[:3]}"
            )
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is None:
                received.append(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                if message.offset() >= ends[message.partition()]:
                    at_end.add(message.partition())
            else:
                errors.append(error)
    return received


@contextlib.contextmanager
def reader(
    bootstrap_servers: str,
    topic: str,
    read_committed: bool = False,
    config: Mapping[str, str | int | bool] | None = None,
) -> Iterator[Consumer]:
    """A consumer outside any group, assigned every partition of ``topic`` from the beginning; closed on exit."""
    consumer = Consumer(
        {
            **client_config(bootstrap_servers),
            "group.id": unique_name("reader"),
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            **(config or {}),
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        assert partitions, f"topic {topic!r} has no partitions in metadata: {metadata.topics[topic].error}"
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)])
        yield consumer
    finally:
        consumer.close()


def values_of(messages: Iterable[Message]) -> list[bytes]:
    """The values of ``messages`` in arrival order."""
    return [m.value() for m in messages]


def _poll_into(consumer: Consumer, received: list[Message], errors: list[KafkaError], timeout: float) -> None:
    message = consumer.poll(timeout)
    if message is None:
        return
    if message.error() is not None:
        errors.append(message.error())
    else:
        received.append(message)


def _describe(messages: list[Message], limit: int = 10) -> str:
    shown = [(m.partition(), m.offset(), m.value()) for m in messages[:limit]]
    return f"{shown}{' ...' if len(messages) > limit else ''}"
