"""The settings of ``detector run`` (:class:`RunSettings`), and what every Kafka client command shares
(:class:`KafkaSettings`).

Flags, ``FLOWWARDEN_*`` variables, settings-file keys, secret files, ``--help`` and the README's option table
are all generated from these models (:mod:`detector.core.settings`). librdkafka properties pass through
untouched, for SASL/SSL and tuning: a ``[kafka]`` table with librdkafka's own names
(``"security.protocol" = "SASL_SSL"``), ``FLOWWARDEN_KAFKA__SASL_USERNAME=alice`` (lower case, ``_`` → ``.``),
``--kafka-option sasl.mechanism=SCRAM-SHA-512`` (repeatable), or a secret file ``kafka.sasl.password``.
Secrets never reach a log line: use :func:`redact` on anything printed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import CliSuppress

from detector.core.settings import CommandSettings, SettingsError, load_settings, redact

__all__ = ["KafkaSettings", "RunSettings", "SettingsError", "load_settings", "redact", "topic_name"]

# librdkafka properties that flowwarden's own settings set: passing them through would be silently overridden.
_OWNED_PROPERTIES = {
    "bootstrap.servers": "--bootstrap-servers (FLOWWARDEN_BOOTSTRAP_SERVERS, bootstrap_servers)",
    "group.id": "--group-id (FLOWWARDEN_GROUP_ID, group_id)",
    "transactional.id": "--transactional-id (FLOWWARDEN_TRANSACTIONAL_ID, transactional_id)",
}
# Kafka's own rule for topic names (kafka.common.internals.Topic): at most 249 of these characters.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def librdkafka_name(key: object) -> str:
    """A librdkafka property name from any source's spelling (``SASL_USERNAME`` → ``sasl.username``)."""
    return str(key).lower().replace("_", ".")


def topic_name(value: str) -> str:
    """``value`` when it is a legal Kafka topic name; raises ``ValueError`` saying why not."""
    if not _TOPIC_NAME.fullmatch(value) or value in {".", ".."}:
        shown = repr(value) if len(value) <= 60 else repr(value[:60]) + "..."
        raise ValueError(f"{shown} is not a Kafka topic name (1-249 of A-Z a-z 0-9 . _ -)")
    return value


class KafkaSettings(CommandSettings):
    """What every command that talks to Kafka shares: where the cluster is and how to talk to it."""

    table_fields: ClassVar[frozenset[str]] = frozenset({"kafka"})

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers", json_schema_extra={"metavar": "HOST:PORT[,...]"}
    )
    kafka: CliSuppress[dict[str, str]] = Field(
        default_factory=dict,
        description="a librdkafka property passed through, repeatable (security.protocol, sasl.*, ssl.*, tuning)",
        json_schema_extra={"flag": "--kafka-option"},
    )

    @classmethod
    def normalize_table(cls, field: str, table: Mapping[str, Any]) -> dict[str, Any]:
        return {librdkafka_name(key): value for key, value in table.items()}

    @field_validator("bootstrap_servers")
    @classmethod
    def _some_broker(cls, value: str) -> str:
        brokers = [broker.strip() for broker in value.split(",")]
        if not all(brokers) or any(" " in broker for broker in brokers):
            raise ValueError(f"{value!r} is not a comma-separated list of HOST:PORT")
        return ",".join(brokers)

    @field_validator("kafka", mode="before")
    @classmethod
    def _librdkafka_names(cls, value: Any) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise ValueError("kafka settings must be a table of librdkafka properties")
        properties = {librdkafka_name(key): _property_text(key, item) for key, item in value.items()}
        for name, setting in _OWNED_PROPERTIES.items():
            if name in properties:
                raise ValueError(f"{name} is not a pass-through property: set it with {setting}")
        return properties

    def librdkafka(self) -> dict[str, str]:
        """The pass-through properties plus the bootstrap servers, ready for a confluent-kafka client."""
        return {**self.kafka, "bootstrap.servers": self.bootstrap_servers}


class RunSettings(KafkaSettings):
    """``detector run``: consume flow records, score them in micro-batches, produce alerts and dead letters."""

    input_topic: str = Field("flows", description="flow records to score", json_schema_extra={"metavar": "TOPIC"})
    output_topic: str = Field("alerts", description="alerts", json_schema_extra={"metavar": "TOPIC"})
    dlq_topic: str = Field(
        "flows.dlq", description="dead letters: records that cannot be scored", json_schema_extra={"metavar": "TOPIC"}
    )
    group_id: str = Field(
        "flowwarden-detector",
        description="consumer group shared by all workers",
        json_schema_extra={"metavar": "GROUP"},
    )
    bundle: Path | None = Field(
        None,
        description="a model bundle (directory or .tar.gz), or a registry to follow (hot swap)",
        json_schema_extra={"metavar": "BUNDLE_OR_REGISTRY"},
    )
    guarantee: Literal["exactly-once", "at-least-once"] = Field("exactly-once", description="delivery guarantee")
    max_batch: int = Field(512, ge=1, le=100_000, description="records per micro-batch at most")
    max_delay_ms: int = Field(
        50, ge=0, le=60_000, description="longest wait for a batch to fill after its first record, in ms"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the model runs (auto: a GPU if any)")
    backend: Literal[
        "auto", "eager", "int8", "openvino", "openvino-bf16", "cuda-graphs", "cuda-graphs-bf16", "cuda-graphs-fp16"
    ] = Field(
        "auto",
        description="how the model runs: auto (the fastest measured for the device; on a CPU OpenVINO bfloat16 "
        "where the openvino extra is installed, else int8; CUDA graphs on a GPU), eager (the fp32 model exactly as "
        "trained), or one of the others by name",
    )
    threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads for the model (none: torch's choice, one per core)"
    )
    emit: Literal["attacks", "flagged", "all"] = Field(
        "attacks",
        description="alerts for flows classified as attacks, for attacks and novel flows (flagged), "
        "or a verdict for every flow (all)",
    )
    metrics: bool = Field(True, description="serve Prometheus metrics, /healthz and /readyz")
    metrics_port: int = Field(9108, ge=0, le=65535, description="port of /metrics, /healthz, /readyz (0: any free)")
    metrics_host: str = Field("0.0.0.0", description="address the metrics server binds")
    transactional_id: str | None = Field(
        None,
        description="exactly-once: a stable id per worker slot (none: unique per process)",
        json_schema_extra={"metavar": "ID"},
    )
    max_record_bytes: int = Field(64 * 1024, ge=256, description="larger records are dead-lettered")
    max_in_flight_batches: int = Field(4, ge=1, le=64, description="at-least-once: batches awaiting acknowledgement")
    registry_poll_seconds: float = Field(2.0, gt=0, description="how often a registry is checked for a new version")
    create_topics: bool = Field(False, description="create missing topics (development clusters)")
    summary_seconds: float = Field(30.0, gt=0, description="seconds between two throughput lines in the log")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="log level; debug also shows what --kafka-option debug=... asks librdkafka for"
    )

    @field_validator("input_topic", "output_topic", "dlq_topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return topic_name(value)

    @field_validator("group_id", "transactional_id")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("bundle")
    @classmethod
    def _bundle_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.exists():
            raise ValueError(f"{value} does not exist")
        return value

    @model_validator(mode="after")
    def _outputs_are_not_the_input(self) -> RunSettings:
        # The worker would read its own alerts or dead letters back: a dead letter would loop forever.
        for name in ("output_topic", "dlq_topic"):
            if getattr(self, name) == self.input_topic:
                raise ValueError(f"{name} must differ from input_topic ({self.input_topic!r})")
        return self


def _property_text(key: object, value: object) -> str:
    """A librdkafka property value as librdkafka spells it (TOML's ``true`` is ``"true"``, not ``"True"``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"{key}: a librdkafka property must be a string, number or boolean")
