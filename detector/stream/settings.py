"""Detector settings from flags, environment and a TOML file, in that order of precedence.

Every ``detector run`` / ``detector replay`` flag can also come from the environment as
``FLOWWARDEN_<FLAG>`` (``--bootstrap-servers`` → ``FLOWWARDEN_BOOTSTRAP_SERVERS``) or from a TOML file
(``--config FILE`` or ``FLOWWARDEN_CONFIG``; keys are the flag names with underscores). Flags win over
the environment, which wins over the file.

librdkafka settings pass through untouched, for SASL/SSL and tuning:

* TOML: a ``[kafka]`` table with librdkafka's own names (``"security.protocol" = "SASL_SSL"``);
* environment: ``FLOWWARDEN_KAFKA__SASL_USERNAME=alice`` → ``sasl.username`` (lower case, ``_`` → ``.``);
* flags: ``--kafka-option sasl.mechanism=SCRAM-SHA-512`` (repeatable).

Secrets never reach a log line: use :func:`redact` on anything printed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError as SourceError

from detector.core.envflags import ENV_PREFIX
from detector.core.tomlfile import TomlFileError, read_toml_file

# librdkafka properties that flowwarden's own settings set: passing them through would be silently overridden.
_OWNED_PROPERTIES = {
    "bootstrap.servers": "--bootstrap-servers (FLOWWARDEN_BOOTSTRAP_SERVERS, bootstrap_servers)",
    "group.id": "--group-id (FLOWWARDEN_GROUP_ID, group_id)",
    "transactional.id": "--transactional-id (FLOWWARDEN_TRANSACTIONAL_ID, transactional_id)",
}
_SECRET_MARKERS = ("password", "secret", "token", "jaas", "oauthbearer.config", "ssl.key.pem", "private")
# Kafka's own rule for topic names (kafka.common.internals.Topic): at most 249 of these characters.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the setting and where it came from."""


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the TOML file named by the settings class's ``config_file`` for this load."""

    def __init__(self, settings_cls: type[BaseSettings], data: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self.data = dict(data)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {key: value for key, value in self.data.items() if key in self.settings_cls.model_fields}


class _KafkaNamesSource(PydanticBaseSettingsSource):
    """Another source with its ``kafka`` keys already in librdkafka's spelling (``client_id`` from
    ``FLOWWARDEN_KAFKA__CLIENT_ID`` becomes ``client.id``). pydantic-settings merges the sources' dicts
    before any validator runs: two spellings of one property would both survive the merge, and the
    precedence between them would fall to their order in the dict instead of flag > environment > file."""

    def __init__(self, source: PydanticBaseSettingsSource) -> None:
        super().__init__(source.settings_cls)
        self.source = source

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.source.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        data = self.source()
        kafka = data.get("kafka")
        if isinstance(kafka, Mapping):
            data = {**data, "kafka": {_librdkafka_name(key): value for key, value in kafka.items()}}
        return data


def _librdkafka_name(key: object) -> str:
    return str(key).lower().replace("_", ".")


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )
    _toml_data: ClassVar[dict[str, Any]] = {}

    bootstrap_servers: str = "127.0.0.1:9092"
    kafka: dict[str, str] = Field(default_factory=dict)

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
        properties = {_librdkafka_name(key): _property_text(key, item) for key, item in value.items()}
        for name, setting in _OWNED_PROPERTIES.items():
            if name in properties:
                raise ValueError(f"{name} is not a pass-through property: set it with {setting}")
        return properties

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = (init_settings, env_settings, _TomlSource(settings_cls, cls._toml_data))
        return tuple(_KafkaNamesSource(source) for source in sources)

    def librdkafka(self) -> dict[str, str]:
        """The pass-through properties plus the bootstrap servers, ready for a confluent-kafka client."""
        return {**self.kafka, "bootstrap.servers": self.bootstrap_servers}


class RunSettings(_Settings):
    """``detector run``."""

    input_topic: str = "flows"
    output_topic: str = "alerts"
    dlq_topic: str = "flows.dlq"
    group_id: str = "flowwarden-detector"
    bundle: Path | None = None
    guarantee: Literal["exactly-once", "at-least-once"] = "exactly-once"
    max_batch: int = Field(512, ge=1, le=100_000)
    max_delay_ms: int = Field(50, ge=0, le=60_000)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, le=256)
    emit: Literal["attacks", "flagged", "all"] = "attacks"
    metrics_port: int | None = Field(9108, ge=0, le=65535)
    max_record_bytes: int = Field(64 * 1024, ge=256)
    max_in_flight_batches: int = Field(4, ge=1, le=64)
    registry_poll_seconds: float = Field(2.0, gt=0)
    transactional_id: str | None = None
    metrics_enabled: bool = True
    no_metrics: bool = False  # --no-metrics / FLOWWARDEN_NO_METRICS: the flag's name for metrics_enabled = false
    metrics_host: str = "0.0.0.0"
    create_topics: bool = False
    summary_seconds: float = Field(30.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

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

    @model_validator(mode="after")
    def _no_metrics_turns_metrics_off(self) -> RunSettings:
        if self.no_metrics:
            self.metrics_enabled = False
        return self


class ReplaySettings(_Settings):
    """``detector replay``. ``order`` None means shuffle, or time order when ``speedup`` is given."""

    topic: str = "flows"
    rate: float | None = Field(None, gt=0)
    speedup: float | None = Field(None, gt=0)
    limit: int | None = Field(None, ge=1)
    with_labels: bool = False
    order: Literal["shuffle", "file", "time"] | None = None
    seed: int = 0
    loop: bool = False
    partitions: int = Field(3, ge=1, le=10_000)
    shuffle_buffer: int = Field(50_000, ge=1)

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return topic_name(value)


def load_settings(cls: type[_Settings], flags: Mapping[str, Any], config_file: str | Path | None = None) -> _Settings:
    """Build settings: flags (None means "not given") over environment over the TOML file."""
    path = config_file or os.environ.get(f"{ENV_PREFIX}CONFIG")
    cls._toml_data = _read_toml(Path(path)) if path else {}
    unknown = sorted(set(cls._toml_data) - _KNOWN_FILE_KEYS)
    if unknown:
        cls._toml_data = {}
        raise SettingsError(
            f"config file {path}: unknown setting(s) {', '.join(map(repr, unknown))}; "
            "keys are the options' names with underscores (input_topic, max_batch, ...) and a [kafka] table"
        )
    typed = _wrong_file_types(cls, cls._toml_data, path)
    if typed:
        cls._toml_data = {}
        raise SettingsError(f"invalid settings: {'; '.join(typed)}")
    given = {key: value for key, value in flags.items() if value is not None}
    try:
        return cls(**given)
    except ValidationError as exc:
        problems = [_problem(error, _origin(error["loc"], given, cls._toml_data, path)) for error in exc.errors()]
        raise SettingsError(f"invalid settings: {'; '.join(problems)}") from None
    except SourceError as exc:  # e.g. FLOWWARDEN_KAFKA='not json': a value the environment source cannot parse
        raise SettingsError(f"invalid settings: {_source_problem(exc)}") from None
    finally:
        cls._toml_data = {}


def _wrong_file_types(cls: type[_Settings], data: Mapping[str, Any], path: Any) -> list[str]:
    """Values of the file that are not of their setting's type. The environment can only hold text, so
    settings convert leniently (``FLOWWARDEN_MAX_BATCH=100``); TOML has integers and booleans of its own,
    and ``max_batch = true`` or ``create_topics = 1`` in a file is a mistake to report, not to convert."""
    problems = []
    for name, value in data.items():
        field = cls.model_fields.get(name)
        if field is None or name == "kafka":  # another command's setting; librdkafka properties are text
            continue
        try:
            TypeAdapter(field.annotation).validate_json(json.dumps(value), strict=True)
        except (ValidationError, TypeError):  # TypeError: a TOML date or time, which no setting takes
            shown = json.dumps(value, default=str)
            problems.append(f"{name}: must be {_toml_type(field.annotation)}, not {shown} (from config file {path})")
    return problems


def _toml_type(annotation: Any) -> str:
    """How a setting's type is written in TOML, for messages."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a string"}
    if get_origin(annotation) in (Union, UnionType):  # X | None: TOML has no null, so X
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(json.dumps(choice) for choice in get_args(annotation))
    return names.get(annotation, str(annotation))


def topic_name(value: str) -> str:
    """``value`` when it is a legal Kafka topic name; raises ``ValueError`` saying why not."""
    if not _TOPIC_NAME.fullmatch(value) or value in {".", ".."}:
        shown = repr(value) if len(value) <= 60 else repr(value[:60]) + "..."
        raise ValueError(f"{shown} is not a Kafka topic name (1-249 of A-Z a-z 0-9 . _ -)")
    return value


def _problem(error: Mapping[str, Any], origin: str | None) -> str:
    """One validation error as ``field: what is wrong (from where)``; no field for a rule across fields."""
    message = str(error["msg"]).removeprefix("Value error, ")
    field = ".".join(map(str, error["loc"]))
    if not field:
        return message
    return f"{field}: {message}" + (f" (from {origin})" if origin else "")


def _origin(loc: Sequence[Any], given: Mapping[str, Any], toml_data: Mapping[str, Any], path: Any) -> str | None:
    """Where the value of the setting at ``loc`` came from, in the order that wins: flag, environment, file."""
    if not loc:
        return None
    name = str(loc[0])
    if name in given:
        return "--kafka-option" if name == "kafka" else f"--{name.replace('_', '-')}"
    variable = f"{ENV_PREFIX}{name.upper()}"
    if any(key.upper() == variable or key.upper().startswith(f"{variable}__") for key in os.environ):
        return variable
    if name in toml_data:
        return f"config file {path}"
    return None


def _source_problem(exc: SourceError) -> str:
    """The field and source of a value pydantic-settings could not parse, without the value (a secret?)."""
    match = re.search(r'field "([^"]+)" from source "([^"]+)"', str(exc))
    if not match:
        return "a value from the environment cannot be parsed"
    field, source = match.groups()
    variable = f"{ENV_PREFIX}{field.upper()}"
    where = variable if source == "EnvSettingsSource" else source
    return f"{where}: cannot be parsed (a table such as {variable} must be a JSON object)"


def parse_kafka_options(options: list[str] | None) -> dict[str, str] | None:
    """``["key=value", ...]`` from repeated ``--kafka-option`` flags."""
    if not options:
        return None
    parsed = {}
    for number, option in enumerate(options, start=1):
        key, separator, value = option.partition("=")
        if not separator or not key.strip():
            # The text is not echoed: a mistyped "sasl.password:..." would print the password.
            raise SettingsError(f"--kafka-option number {number} is not KEY=VALUE (its text is not shown)")
        parsed[key.strip()] = value
    return parsed


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy safe to log: values of secret-looking librdkafka properties are replaced by ``***``."""
    return {key: "***" if any(m in key.lower() for m in _SECRET_MARKERS) else value for key, value in config.items()}


def _property_text(key: object, value: object) -> str:
    """A librdkafka property value as librdkafka spells it (TOML's ``true`` is ``"true"``, not ``"True"``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"{key}: a librdkafka property must be a string, number or boolean")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = read_toml_file(path)
    except TomlFileError as exc:
        raise SettingsError(f"config file {path} {exc}") from None
    return {key.replace("-", "_"): value for key, value in data.items()}


# A settings file may serve both commands (brokers, [kafka] credentials): a key either one knows is fine.
_KNOWN_FILE_KEYS = set(RunSettings.model_fields) | set(ReplaySettings.model_fields)
