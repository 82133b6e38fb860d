"""The settings models of the tool commands: ``detector replay``, ``detector ingest``, ``detector score``,
``detector drift``, ``detector broker``, ``detector demo``.

Flags, ``FLOWWARDEN_*`` variables, settings-file keys and help are generated from these models
(:mod:`detector.core.settings`), as for ``detector run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import CliPositionalArg

from detector.core.settings import CommandSettings
from detector.stream.settings import KafkaSettings, topic_name

DEFAULT_BROKER_PORT = 9092
DEFAULT_INGEST_PORT = 8080
DEFAULT_INGEST_METRICS_PORT = 9110  # the worker's is 9108: both may run on one host


class ReplaySettings(KafkaSettings):
    """``detector replay``: stream flow CSVs into a topic as the JSON records a flow meter would send."""

    csv: CliPositionalArg[list[Path]] = Field(
        description="CSV files or folders (.csv, .csv.gz); with --follow, the folders (or .csv files) to follow",
        json_schema_extra={"metavar": "CSV"},
    )
    topic: str = Field(
        "flows", description="topic to write (created when missing)", json_schema_extra={"metavar": "TOPIC"}
    )
    follow: bool = Field(
        False,
        description="keep reading the CSV files as a flow meter writes them (new rows, new files, rotation, "
        "truncation) until Ctrl-C or SIGTERM; rows go in file order",
    )
    follow_from: Literal["start", "end"] = Field(
        "start",
        description="with --follow, the rows the files hold already: send them (start) or only the rows written "
        "from now on (end)",
    )
    poll_seconds: float = Field(0.5, gt=0, description="with --follow, how often the files are looked at")
    rate: float | None = Field(None, gt=0, description="send at this many flows per second (none: as fast as possible)")
    speedup: float | None = Field(None, gt=0, description="replay the recorded inter-flow times this many times faster")
    limit: int | None = Field(None, ge=1, description="stop after this many records")
    with_labels: bool = Field(False, description="keep the label column(s): ground truth for online evaluation")
    order: Literal["shuffle", "file", "time"] | None = Field(
        None, description="shuffle (seeded), file (as read) or time (by flow timestamp; the default with --speedup)"
    )
    seed: int = Field(0, description="shuffle seed")
    loop: bool = Field(False, description="repeat the input until Ctrl-C or --limit")
    shuffle_buffer: int = Field(50_000, ge=1, description="flows held for shuffling")

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return topic_name(value)


class IngestSettings(KafkaSettings):
    """``detector ingest``: an HTTP intake flow meters post flow records to, written to the flows topic."""

    topic: str = Field("flows", description="topic to write", json_schema_extra={"metavar": "TOPIC"})
    host: str = Field("0.0.0.0", description="address the intake listens on")
    port: int = Field(DEFAULT_INGEST_PORT, ge=0, le=65535, description="port of the intake (0: any free one)")
    token: str | None = Field(
        None,
        description="bearer token every request must carry (Authorization: Bearer ...); give it as the secret "
        "file `token` in --secrets-dir: a flag is visible to other users (none: no authentication)",
        json_schema_extra={"metavar": "TOKEN"},
    )
    tls_cert: Path | None = Field(
        None,
        description="TLS certificate chain (PEM); with --tls-key the intake speaks HTTPS only",
        json_schema_extra={"metavar": "FILE"},
    )
    tls_key: Path | None = Field(
        None, description="the TLS certificate's private key (PEM)", json_schema_extra={"metavar": "FILE"}
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="a larger request body is refused whole (413)")
    max_record_bytes: int = Field(
        64 * 1024,
        ge=256,
        description="a larger record is refused (413; in an NDJSON batch, that line); keep it within the "
        "worker's limit of the same name",
    )
    max_pending: int = Field(
        10_000,
        ge=1,
        description="records awaiting the broker's acknowledgement at most: a request that would exceed it "
        "is turned away with 429",
    )
    create_topics: bool = Field(False, description="create the topic when missing (development clusters)")
    metrics: bool = Field(True, description="serve Prometheus metrics, /healthz and /readyz")
    metrics_port: int = Field(
        DEFAULT_INGEST_METRICS_PORT, ge=0, le=65535, description="port of /metrics, /healthz, /readyz (0: any free)"
    )
    metrics_host: str = Field("0.0.0.0", description="address the metrics server binds")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="log level; debug also shows what --kafka-option debug=... asks librdkafka for"
    )
    log_format: Literal["auto", "console", "json"] = Field(
        "auto",
        description="log lines for people (console) or machines (json); auto: console when standard error is a "
        "terminal, else json",
    )

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return topic_name(value)

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        # The message never shows the value: it is a credential.
        if value is not None and (not value or any(c.isspace() or not c.isprintable() for c in value)):
            raise ValueError("must be printable characters without spaces (it travels in an HTTP header)")
        return value


class ScoreSettings(CommandSettings):
    """``detector score``: score flow files with a bundle, one JSON line per row (verdict or error)."""

    csv: CliPositionalArg[list[Path]] = Field(
        description="flow files or folders: CSV (.csv, .csv.gz), NDJSON (.ndjson, .jsonl, plain or .gz), "
        "or - for standard input (NDJSON or CSV)",
        json_schema_extra={"metavar": "FILE"},
    )
    bundle: Path = Field(description="bundle directory, .tar.gz or registry", json_schema_extra={"metavar": "BUNDLE"})
    trusted_key: Path | None = Field(
        None,
        description="score only with a bundle signed by a key in this PEM file of ed25519 public keys (as "
        "detector run's trusted keys)",
        json_schema_extra={"metavar": "PEM"},
    )
    out: Path | None = Field(
        None,
        description="write the JSON lines to this file (none: standard output)",
        json_schema_extra={"metavar": "FILE"},
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
    batch: int = Field(1024, ge=1, description="rows per model call")
    explain: int = Field(
        0,
        ge=0,
        le=100,
        description="add to each attack verdict the K features that pushed its label most, with their values "
        '(integrated gradients on the bundle\'s fp32 model, whatever the backend; README "Why this alert"); 0: off',
        json_schema_extra={"metavar": "K"},
    )


class DriftSettings(CommandSettings):
    """``detector drift``: how far flow files are from a bundle's training data, feature by feature (PSI)."""

    files: CliPositionalArg[list[Path]] = Field(
        description="flow files or folders: CSV (.csv, .csv.gz), NDJSON (.ndjson, .jsonl, plain or .gz), "
        "or - for standard input (NDJSON or CSV)",
        json_schema_extra={"metavar": "FILE"},
    )
    bundle: Path = Field(
        description="bundle directory, .tar.gz or registry (written with its training histograms, drift.json)",
        json_schema_extra={"metavar": "BUNDLE"},
    )
    format: Literal["table", "json"] = Field(
        "table",
        description="the report as a table for people, or as one JSON object for machines (json)",
    )
    fail_on: Literal["moderate", "significant"] | None = Field(
        None,
        description="exit with status 1 when a feature's PSI reaches this level (moderate: 0.1, significant: "
        "0.25); none: the report alone decides nothing",
    )


class BrokerSettings(CommandSettings):
    """``detector broker``: the embedded Kafka-protocol broker (Tansu, in memory) for the demo and tests."""

    port: int = Field(DEFAULT_BROKER_PORT, ge=0, le=65535, description="listening port (0: any free one)")
    log: Path | None = Field(
        None,
        description="file for the broker's own log (none: a temporary file)",
        json_schema_extra={"metavar": "FILE"},
    )


class DemoSettings(CommandSettings):
    """``detector demo`` (``make demo``): train a small model, serve it with a real worker on the embedded broker,
    replay held-out flows, show alerts and live metrics, evaluate the stream against the trainer's predictions."""

    data: Path | None = Field(
        None,
        description="labelled CSVs: a folder holding cicids2017_improved_sample, or CSV files or folders",
        json_schema_extra={"metavar": "PATH"},
    )
    run: Path | None = Field(
        None,
        description="reuse this `trainer fit` run directory instead of training",
        json_schema_extra={"metavar": "DIR"},
    )
    work: Path = Field(Path(".demo"), description="scratch directory", json_schema_extra={"metavar": "DIR"})
    profile: Literal["quick", "tuned", "paper"] = Field("quick", description="training profile")
    # A 2-core laptop scores a few hundred flows/s with the quick model: 4000 flows at 200/s keep the live view
    # busy for about 20 s without a backlog.
    rate: float = Field(200.0, gt=0, description="replay rate, flows/s")
    limit: int = Field(4000, ge=0, description="held-out rows to replay (0: all of them)")
    seed: int = Field(0, description="sample and shuffle seed")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="the worker's device")
