"""Creating the topics flowwarden needs, idempotently, on any Kafka-protocol cluster.

Workers, the replayer and the tests all call :func:`ensure_topics` at start-up, possibly at the same time:
"already exists" is success. The call returns only once cluster metadata lists every topic, because a
client that produces right after creation can otherwise race the metadata and see "unknown topic".

Existence is checked with a metadata request for *all* topics: a request naming one topic may auto-create
it on brokers that allow that (Tansu and Apache Kafka's default), with the broker's default partition count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from detector.stream.clients import general_properties
from detector.stream.settings import KafkaSettings

DEFAULT_TIMEOUT_S = 30.0


class TopicError(RuntimeError):
    """A topic could not be created or did not appear in metadata in time."""


def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    *,
    partitions: int = 1,
    replication_factor: int = -1,
    config: Mapping[str, str] | None = None,
    client_config: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    logger: logging.Logger | None = None,
) -> dict[str, int]:
    """Create the missing ``topics`` and return ``{topic: partition count}`` once metadata shows them all.

    A topic that already exists is left as it is, even with another partition count: the returned counts
    are what the cluster has, for the caller to check if it cares. ``replication_factor=-1`` means the
    broker's default. ``config`` is topic configuration (e.g. ``{"retention.ms": "86400000"}``);
    ``client_config`` is extra librdkafka settings for the admin client (``security.protocol``, ``sasl.*``,
    ``ssl.*``; consumer- or producer-only ones are left out). ``logger`` receives librdkafka's log lines
    (default: librdkafka prints them to stderr). Raises :class:`TopicError`.
    """
    wanted = list(dict.fromkeys(topics))
    if not wanted:
        return {}
    admin_config: dict[str, Any] = {**general_properties(client_config or {}), "bootstrap.servers": bootstrap_servers}
    if logger is not None:
        admin_config["logger"] = logger
    admin = AdminClient(admin_config)
    deadline = time.monotonic() + timeout
    existing = _partition_counts(admin, deadline)
    missing = [topic for topic in wanted if topic not in existing]
    if missing:
        new_topics = [NewTopic(topic, partitions, replication_factor, config=dict(config or {})) for topic in missing]
        futures = admin.create_topics(new_topics, request_timeout=max(1.0, deadline - time.monotonic()))
        for topic, future in futures.items():
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicError(
                        f"cannot create topic {topic!r} on {bootstrap_servers}: {exc.args[0].str()}"
                    ) from exc
            except TimeoutError as exc:
                raise TopicError(f"creating topic {topic!r} on {bootstrap_servers} timed out") from exc
    return _wait_for_topics(admin, wanted, {t: partitions for t in missing}, deadline, bootstrap_servers)


def ensure_configured_topics(
    settings: KafkaSettings,
    topics: Iterable[str],
    *,
    logger: logging.Logger | None = None,
    extra_config: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """:func:`ensure_topics` with a command's own settings: its brokers, client settings and the partitions,
    replication factor and topic configs it asks new topics to have (``extra_config`` added on top)."""
    return ensure_topics(
        settings.bootstrap_servers,
        topics,
        partitions=settings.partitions,
        replication_factor=settings.replication_factor,
        config={**settings.topic_configs, **(extra_config or {})},
        client_config=settings.kafka,
        logger=logger,
    )


def _wait_for_topics(
    admin: AdminClient, wanted: list[str], created: dict[str, int], deadline: float, bootstrap_servers: str
) -> dict[str, int]:
    while True:
        counts = _partition_counts(admin, deadline)
        ready = all(topic in counts and counts[topic] >= created.get(topic, 1) for topic in wanted)
        if ready:
            return {topic: counts[topic] for topic in wanted}
        if time.monotonic() > deadline:
            absent = [topic for topic in wanted if topic not in counts]
            raise TopicError(f"topics not in the metadata of {bootstrap_servers} in time: {absent or wanted}")
        time.sleep(0.1)


def _partition_counts(admin: AdminClient, deadline: float) -> dict[str, int]:
    try:
        metadata = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
    except KafkaException as exc:
        raise TopicError(f"cannot read cluster metadata: {exc.args[0].str()}") from exc
    return {name: len(topic.partitions) for name, topic in metadata.topics.items() if topic.error is None}
