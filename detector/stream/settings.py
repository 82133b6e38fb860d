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
from pydantic_settings import CliSuppress, CliVariadicArg

from detector.core.alertformats import AlertFormat
from detector.core.flowtime import meter_zone
from detector.core.settings import CommandSettings, SettingsError, load_settings, redact
from detector.stream.allowlist import network, port_range
from detector.stream.thresholds import class_key

__all__ = ["CheckSettings", "KafkaSettings", "RunSettings", "SettingsError", "load_settings", "redact", "topic_name"]

# librdkafka properties that flowwarden's own settings set: passing them through would be silently overridden.
_OWNED_PROPERTIES = {
    "bootstrap.servers": "--bootstrap-servers (FLOWWARDEN_BOOTSTRAP_SERVERS, bootstrap_servers)",
    "group.id": "--group-id (FLOWWARDEN_GROUP_ID, group_id)",
    "transactional.id": "--transactional-id (FLOWWARDEN_TRANSACTIONAL_ID, transactional_id)",
    "group.instance.id": "--instance-id (FLOWWARDEN_INSTANCE_ID, instance_id)",
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

    table_fields: ClassVar[frozenset[str]] = frozenset({"kafka", "topic_configs"})

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers", json_schema_extra={"metavar": "HOST:PORT[,...]"}
    )
    kafka: CliSuppress[dict[str, str]] = Field(
        default_factory=dict,
        description="a librdkafka property passed through, repeatable (security.protocol, sasl.*, ssl.*, tuning)",
        json_schema_extra={"flag": "--kafka-option"},
    )
    partitions: int = Field(
        3,
        ge=1,
        le=10_000,
        description="partitions of each topic the command creates (one that exists is left as it is)",
    )
    replication_factor: int = Field(
        -1, ge=-1, le=1000, description="replicas of each topic the command creates (-1: the broker's default)"
    )
    topic_configs: CliSuppress[dict[str, str]] = Field(
        default_factory=dict,
        description="a topic configuration of each topic the command creates, repeatable (retention.ms, "
        "cleanup.policy, ...): exactly these are sent, the broker's defaults apply to the rest",
        json_schema_extra={"flag": "--topic-config"},
    )

    @classmethod
    def normalize_table(cls, field: str, table: Mapping[str, Any]) -> dict[str, Any]:
        # librdkafka properties and Kafka topic configs share one spelling: dotted lower case.
        return {librdkafka_name(key): value for key, value in table.items()}

    @field_validator("replication_factor")
    @classmethod
    def _replicas(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be -1 (the broker's default) or at least 1")
        return value

    @field_validator("topic_configs", mode="before")
    @classmethod
    def _topic_config_names(cls, value: Any) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise ValueError("topic configuration must be a table of Kafka topic configs (retention.ms = ...)")
        return {librdkafka_name(key): _property_text(key, item) for key, item in value.items()}

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

    table_fields: ClassVar[frozenset[str]] = KafkaSettings.table_fields | {"class_thresholds"}

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
    trusted_key: CliVariadicArg[list[Path]] = Field(
        default_factory=list,
        description="serve only bundles signed by one of these ed25519 public keys (PEM files, one or more keys "
        "each; trainer keygen makes them): an unsigned or wrongly signed bundle is refused when the worker "
        "starts, and a registry version that is not is never swapped to (none: any bundle whose checksums verify)",
        json_schema_extra={"metavar": "PEM"},
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
    emit: Literal["attacks", "flagged", "novel", "all"] = Field(
        "attacks",
        description="alerts for flows classified as attacks, for attacks and novel flows (flagged), for novel "
        "flows only (novel: flows from a meter the classifier was not trained on, with a trainer adapt bundle), "
        "or a verdict for every flow (all)",
    )
    explain: int = Field(
        0,
        ge=0,
        le=100,
        description="add to each published alert the K features that pushed its label most, with their values "
        "(integrated gradients on the bundle's fp32 model, whatever the backend; costs a backward pass per batch's "
        'alerts; README "Why this alert"); 0: off',
        json_schema_extra={"metavar": "K"},
    )
    alert_format: AlertFormat = Field(
        "native",
        description="format of the alerts: native (schemas/alert.schema.json), ecs (Elastic Common Schema) or ocsf "
        "(OCSF Detection Finding); docs/siem.md",
    )
    meter_timezone: str = Field(
        "UTC",
        description="time zone of flow timestamps written without one (the meters' local time; an IANA name such as "
        "Europe/Berlin): ECS @timestamp and OCSF time are the flow's own time read in it",
        json_schema_extra={"metavar": "ZONE"},
    )
    min_confidence: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="an attack verdict less confident than this is not an alert (still scored, and counted as "
        "below_threshold in flowwarden_alerts_suppressed_total)",
    )
    class_thresholds: CliSuppress[dict[str, float]] = Field(
        default_factory=dict,
        description="the least confidence of one class's alerts, repeatable (Portscan=0.9); it replaces "
        "--min-confidence for that class; class names match in any case and punctuation",
        json_schema_extra={"flag": "--class-threshold"},
    )
    allowlist: Path | None = Field(
        None,
        description="TOML file of [[allow]] entries (src, dst, hosts as CIDRs, src_ports, dst_ports, labels): "
        "a flow one entry matches raises no alert (counted as allowlist in flowwarden_alerts_suppressed_total)",
        json_schema_extra={"metavar": "FILE.toml"},
    )
    allow_networks: CliVariadicArg[list[str]] = Field(
        default_factory=list,
        description="no alert for flows from or to these networks (CIDRs, e.g. a vulnerability scanner's address)",
        json_schema_extra={"metavar": "CIDR"},
    )
    allow_ports: CliVariadicArg[list[str]] = Field(
        default_factory=list,
        description="no alert for flows to these destination ports (PORT or LOW-HIGH)",
        json_schema_extra={"metavar": "PORT"},
    )
    allow_labels: CliVariadicArg[list[str]] = Field(
        default_factory=list,
        description="no alert of these classes (they are still scored and counted)",
        json_schema_extra={"metavar": "CLASS"},
    )
    aggregate_window_s: float = Field(
        0.0,
        ge=0,
        le=86_400,
        description="aggregate alerts: at most one per (source IP, destination IP, label) and input partition per "
        "window of this many seconds of event time (0: off, one alert per flow)",
        json_schema_extra={"metavar": "SECONDS"},
    )
    verdicts_topic: str | None = Field(
        None,
        description="with --aggregate-window-s: where the per-flow alerts go as well (default: nowhere)",
        json_schema_extra={"metavar": "TOPIC"},
    )
    aggregate_state_topic: str | None = Field(
        None,
        description="with --aggregate-window-s: the compacted changelog of open windows, with at least as many "
        "partitions as the input (default: GROUP-aggregate-state)",
        json_schema_extra={"metavar": "TOPIC"},
    )
    metrics: bool = Field(True, description="serve Prometheus metrics, /healthz and /readyz")
    drift: bool = Field(
        True,
        description="export flowwarden_feature_psi: each feature's Population Stability Index between the bundle's "
        "training histogram and the last --drift-window decoded flows (bundles without drift.json: none)",
    )
    drift_window: int = Field(
        10_000, ge=100, le=10_000_000, description="decoded flows the drift metrics are computed over"
    )
    metrics_port: int = Field(9108, ge=0, le=65535, description="port of /metrics, /healthz, /readyz (0: any free)")
    metrics_host: str = Field("0.0.0.0", description="address the metrics server binds")
    transactional_id: str | None = Field(
        None,
        description="exactly-once: a stable id per worker slot (none: GROUP-INSTANCE_ID with --instance-id, "
        "else unique per process); it also names the slot's static group membership",
        json_schema_extra={"metavar": "ID"},
    )
    instance_id: str | None = Field(
        None,
        description="a stable name for this worker's slot (e.g. a StatefulSet pod name): static group membership, "
        "so a worker restarted within the session timeout takes its partitions back without a rebalance "
        "(none: the transactional id, else dynamic membership)",
        json_schema_extra={"metavar": "NAME"},
    )
    session_timeout_ms: int | None = Field(
        None,
        ge=1000,
        le=3_600_000,
        description="consumer group session timeout: how long a silent worker keeps its partitions, and how long a "
        "restart in place may take without a rebalance (none: librdkafka's 45000)",
    )
    heartbeat_interval_ms: int | None = Field(
        None,
        ge=100,
        le=3_600_000,
        description="consumer group heartbeat interval, at most a third of the session timeout (none: librdkafka's "
        "3000)",
    )
    max_record_bytes: int = Field(64 * 1024, ge=256, description="larger records are dead-lettered")
    max_in_flight_batches: int = Field(4, ge=1, le=64, description="at-least-once: batches awaiting acknowledgement")
    registry_poll_seconds: float = Field(2.0, gt=0, description="how often a registry is checked for a new version")
    create_topics: bool = Field(False, description="create missing topics (development clusters)")
    summary_seconds: float = Field(30.0, gt=0, description="seconds between two throughput lines in the log")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="log level; debug also shows what --kafka-option debug=... asks librdkafka for"
    )
    log_format: Literal["auto", "console", "json"] = Field(
        "auto",
        description="log lines for people (console) or machines (json: one JSON object per line); auto: console when "
        "standard error is a terminal, else json (containers, systemd)",
    )

    @classmethod
    def normalize_table(cls, field: str, table: Mapping[str, Any]) -> dict[str, Any]:
        if field == "class_thresholds":  # class names from any source: "DoS Hulk", DOS_HULK, dos-hulk are one
            return {class_key(key): value for key, value in table.items()}
        return super().normalize_table(field, table)

    @field_validator("class_thresholds")
    @classmethod
    def _thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"{name}: a confidence is between 0 and 1, not {threshold}")
        return value

    @field_validator("meter_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        meter_zone(value)
        return value

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for text in value:
            network(text)
        return value

    @field_validator("allow_ports")
    @classmethod
    def _ports(cls, value: list[str]) -> list[str]:
        for text in value:
            port_range(text)
        return value

    @field_validator("allowlist")
    @classmethod
    def _allowlist_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.exists():
            raise ValueError(f"{value} does not exist")
        return value

    @field_validator("input_topic", "output_topic", "dlq_topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return topic_name(value)

    @field_validator("verdicts_topic", "aggregate_state_topic")
    @classmethod
    def _optional_topic(cls, value: str | None) -> str | None:
        return None if value is None else topic_name(value)

    @property
    def state_topic(self) -> str:
        """The aggregation changelog topic."""
        return self.aggregate_state_topic or f"{self.group_id}-aggregate-state"

    @field_validator("group_id", "transactional_id", "instance_id")
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

    @field_validator("trusted_key")
    @classmethod
    def _keys_exist(cls, value: list[Path]) -> list[Path]:
        missing = [str(path) for path in value if not path.exists()]
        if missing:
            raise ValueError(f"{', '.join(missing)} does not exist")
        return value

    @model_validator(mode="after")
    def _outputs_are_not_the_input(self) -> RunSettings:
        # The worker would read its own alerts or dead letters back: a dead letter would loop forever.
        for name in ("output_topic", "dlq_topic", "verdicts_topic", "aggregate_state_topic"):
            if getattr(self, name) == self.input_topic:
                raise ValueError(f"{name} must differ from input_topic ({self.input_topic!r})")
        return self

    @model_validator(mode="after")
    def _group_timeouts_once(self) -> RunSettings:
        # The pass-through may carry them too (older configurations): one value each, from one place.
        for name, prop in (
            ("session_timeout_ms", "session.timeout.ms"),
            ("heartbeat_interval_ms", "heartbeat.interval.ms"),
        ):
            if getattr(self, name) is not None and prop in self.kafka:
                raise ValueError(f"{prop} is given twice: as {name} and as a kafka option; keep one")
        session = self.session_timeout_ms or _int_or_none(self.kafka.get("session.timeout.ms"))
        heartbeat = self.heartbeat_interval_ms or _int_or_none(self.kafka.get("heartbeat.interval.ms"))
        if session is not None and heartbeat is not None and heartbeat * 3 > session:
            raise ValueError(
                f"heartbeat interval {heartbeat} ms is more than a third of the session timeout {session} ms: "
                "one lost heartbeat could expire the session"
            )
        return self


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None  # librdkafka refuses it with its own message


class CheckSettings(RunSettings):
    """``detector check``: check a ``detector run`` configuration before starting a worker with it (settings, bundle,
    device, alert policy, metrics port, brokers, credentials, topics) and print one line per check."""

    check_timeout: float = Field(10.0, gt=0, le=300, description="seconds to wait for the cluster to answer")


def _property_text(key: object, value: object) -> str:
    """A librdkafka property value as librdkafka spells it (TOML's ``true`` is ``"true"``, not ``"True"``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"{key}: a librdkafka property must be a string, number or boolean")
