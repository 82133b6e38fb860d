"""librdkafka configuration of a worker's consumer and producer, built from :class:`RunSettings`.

Three layers, later wins: the worker's *defaults* (bounded prefetch, statistics for the lag gauge), the
user's pass-through settings (``[kafka]`` table, ``FLOWWARDEN_KAFKA__*``, ``--kafka-option``), and the
settings the delivery guarantee *requires* (manual commits, ``acks=all``, idempotence, a transactional
id and ``read_committed`` for exactly-once). A user setting that contradicts a required one is a
:class:`~detector.stream.settings.SettingsError` rather than being silently overridden.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Mapping
from typing import Any

from detector.stream.settings import RunSettings, SettingsError

# Settings that belong to one client type only: librdkafka warns when the other type is given them.
_CONSUMER_ONLY_PREFIXES = (
    "group.",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "enable.auto.",
    "auto.commit.",
    "queued.",
    "fetch.",
    "max.partition.fetch.bytes",
    "isolation.level",
    "partition.assignment.strategy",
    "check.crcs",
    "enable.partition.eof",
    "consume.callback.max.messages",
    "coordinator.query.interval.ms",
    "statistics.interval.ms",
)
_PRODUCER_ONLY_PREFIXES = (
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "transactional.id",
    "transaction.timeout.ms",
    "linger.ms",
    "queue.buffering.",
    "batch.",
    "compression.",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "retries",
    "message.send.max.retries",
    "retry.backoff.",
    "max.in.flight",
    "sticky.partitioning.linger.ms",
    "partitioner",
)


def _only(config: dict[str, str], excluded: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in config.items() if not k.startswith(excluded)}


def general_properties(config: Mapping[str, str]) -> dict[str, str]:
    """The properties of ``config`` every client type takes (security, SASL, SSL, timeouts): what an admin
    client gets, without the consumer- and producer-only ones librdkafka would warn about."""
    return _only(_only(dict(config), _CONSUMER_ONLY_PREFIXES), _PRODUCER_ONLY_PREFIXES)


def consumer_config(settings: RunSettings) -> dict[str, Any]:
    """Consumer settings, without callbacks (the worker adds ``on_*``, ``stats_cb``, ``error_cb``, ``logger``)."""
    user = _only(settings.librdkafka(), _PRODUCER_ONLY_PREFIXES)
    _refuse(user, "enable.auto.commit", "false", "the worker commits offsets itself, after delivery")
    if settings.guarantee == "exactly-once":
        _refuse(user, "isolation.level", "read_committed", "exactly-once reads committed input only")
    defaults = {
        "auto.offset.reset": "earliest",
        # Bounded prefetch: at most this much input waits in librdkafka's queue (default 64 MiB).
        "queued.max.messages.kbytes": str(16 * 1024),
        "queued.min.messages": str(max(1000, 4 * settings.max_batch)),
        "statistics.interval.ms": "5000",
        "client.id": f"flowwarden-{socket.gethostname()}",
    }
    if user.get("group.protocol", "classic").strip().lower() == "classic":
        # Incremental rebalances: a member joining or leaving moves only the partitions that change owner, and
        # the others keep being scored (docs/worker.md, "Group membership"). KIP-848's protocol assigns on the
        # broker and takes no assignor here.
        defaults["partition.assignment.strategy"] = "cooperative-sticky"
    required = {
        "group.id": settings.group_id,
        "enable.auto.commit": "false",
        "enable.auto.offset.store": "false",
    }
    if settings.guarantee == "exactly-once":
        required["isolation.level"] = "read_committed"
    slot = worker_slot(settings)
    if slot is not None:
        required["group.instance.id"] = slot
    if settings.session_timeout_ms is not None:
        required["session.timeout.ms"] = str(settings.session_timeout_ms)
    if settings.heartbeat_interval_ms is not None:
        required["heartbeat.interval.ms"] = str(settings.heartbeat_interval_ms)
    return {**defaults, **user, **required}


def producer_properties(config: Mapping[str, str]) -> dict[str, str]:
    """The properties of ``config`` a producer takes (without the consumer-only ones)."""
    return _only(dict(config), _CONSUMER_ONLY_PREFIXES)


def acknowledged_writes(user: Mapping[str, str], what: str) -> dict[str, str]:
    """The producer settings under which a delivery report means the record is written for good: every
    in-sync replica has it (``acks=all``) and a retry cannot write it twice (idempotence). A user setting
    that contradicts them is a :class:`SettingsError` naming ``what`` must be fully replicated."""
    _refuse(dict(user), "enable.idempotence", "true", "an idempotent producer is required")
    if user.get("acks", user.get("request.required.acks", "all")) not in {"all", "-1"}:
        raise SettingsError(f"kafka option acks must be all (-1): {what} count as delivered only when fully replicated")
    return {"acks": "all", "enable.idempotence": "true"}


def producer_config(settings: RunSettings, transactional_id: str | None) -> dict[str, Any]:
    """Producer settings; ``transactional_id`` is None for at-least-once."""
    user = producer_properties(settings.librdkafka())
    defaults = {
        "linger.ms": "5",
        "queue.buffering.max.kbytes": str(64 * 1024),
        "client.id": f"flowwarden-{socket.gethostname()}",
    }
    required = acknowledged_writes(user, "alerts")
    if transactional_id is not None:
        required["transactional.id"] = transactional_id
        # librdkafka 2.16: once every broker was unreachable long enough to "re-bootstrap", the decommissioned
        # group coordinator stays cached and send_offsets_to_transaction() hangs past its timeout
        # (confluentinc/librdkafka#5511). Without re-bootstrapping the client simply reconnects.
        defaults["metadata.recovery.strategy"] = "none"
    return {**defaults, **user, **required}


def worker_slot(settings: RunSettings) -> str | None:
    """The stable name of this worker's slot, its consumer's ``group.instance.id``: ``--instance-id``, else
    ``--transactional-id`` (one slot, one name for both), else None (dynamic group membership)."""
    return settings.instance_id or settings.transactional_id


def transactional_id(settings: RunSettings) -> str:
    """``--transactional-id``; else one derived from ``--instance-id`` (transactional ids are cluster-wide, so
    the group id is part of it); else unique per process (:func:`default_transactional_id`)."""
    if settings.transactional_id:
        return settings.transactional_id
    if settings.instance_id:
        return f"{settings.group_id}-{settings.instance_id}"
    return default_transactional_id(settings.group_id)


def default_transactional_id(group_id: str) -> str:
    """Unique per worker process: two workers on one host must never fence each other.

    A *stable* id per worker slot (``--transactional-id``, e.g. a StatefulSet pod name) additionally lets
    a restarted worker fence and abort its crashed predecessor's open transaction at once, instead of
    waiting for ``transaction.timeout.ms``.
    """
    return f"{group_id}-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def _refuse(config: dict[str, str], key: str, required: str, why: str) -> None:
    if key in config and config[key].strip().lower() != required:
        raise SettingsError(f"kafka option {key}={config[key]} is not allowed: {why} ({key} must be {required})")
