"""Starting ``detector run``: settings → verified bundle → model → metrics → Kafka clients → the worker loop.

Everything that can be wrong before the first record (settings, the bundle, the device, the metrics port,
librdkafka properties, missing topics) is a :class:`StartupError` with a one-line message, reported as
``detector run: error: ...`` on stderr with exit status 2 and no traceback. Once the loop runs, the exit status is the
worker's: 0 after a clean stop (SIGTERM/SIGINT), 1 after a fatal error.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from confluent_kafka import KafkaException

from detector.core.alertformats import AlertEncoder
from detector.core.bundle import Bundle, BundleError, load_bundle
from detector.core.flowtime import meter_zone
from detector.core.process import ExitCode, stop_on_signals
from detector.core.registry import RegistryWatcher, is_registry, resolve_bundle_path
from detector.core.scorer import DeviceError
from detector.core.signing import SigningError, load_trusted_keys
from detector.stream.aggregate_state import Aggregator, ChangelogReader
from detector.stream.allowlist import Allowlist, AllowlistError
from detector.stream.clients import general_properties
from detector.stream.drift import DriftMonitor
from detector.stream.logs import configure_logging, get_logger, librdkafka_logger
from detector.stream.metrics import Health, MetricsServer, WorkerMetrics
from detector.stream.processor import BatchProcessor, SuppressedSink
from detector.stream.settings import RunSettings, SettingsError
from detector.stream.thresholds import Thresholds
from detector.stream.topics import TopicError, ensure_configured_topics
from detector.stream.worker import Worker

METADATA_TIMEOUT_S = 10.0


class StartupError(RuntimeError):
    """The worker cannot start; the message is one line that says what to fix."""


def build_worker(settings: RunSettings) -> Worker:
    """A ready-to-run worker (bundle verified, model loaded, clients created, topics checked).

    Raises :class:`StartupError`. The metrics server, when enabled, is already serving; ``Worker.run``
    closes it.
    """
    if settings.bundle is None:
        raise StartupError("no model bundle: pass --bundle BUNDLE_OR_REGISTRY (or set FLOWWARDEN_BUNDLE)")
    if settings.threads:
        # Scoring runs on the loop's thread; on a small or shared CPU more torch threads than free cores
        # make every batch slower, not faster.
        torch.set_num_threads(settings.threads)
    metrics, health = WorkerMetrics(drift_window=settings.drift_window if settings.drift else None), Health()
    try:
        trusted = load_trusted_keys(settings.trusted_key)
        path = resolve_bundle_path(settings.bundle)
        bundle = load_bundle(path, trusted_keys=trusted)
        processor = build_processor(settings, bundle, on_suppressed=metrics.count_suppressed, drift=metrics.drift)
    except (BundleError, SigningError, DeviceError, AllowlistError) as exc:
        raise StartupError(str(exc)) from None
    if trusted:
        get_logger("runner").info(
            "serving signed bundles only", signed_by=bundle.signed_by, trusted=[key.key_id for key in trusted]
        )
    watcher = (
        RegistryWatcher(settings.bundle, path.name, trusted_keys=trusted) if is_registry(settings.bundle) else None
    )

    metrics.watch(health)
    metrics.serve_model(bundle.name, bundle.version, bundle.sha256)
    health.model_loaded = True
    server = _metrics_server(settings, metrics, health)
    try:
        try:
            worker = Worker(settings, processor, metrics=metrics, health=health, watcher=watcher, server=server)
        except SettingsError as exc:
            raise StartupError(str(exc)) from None
        except KafkaException as exc:
            raise StartupError(f"invalid Kafka client settings: {exc.args[0].str()}") from None
    except BaseException:
        if server is not None:
            server.close()
        raise
    try:
        _check_topics(worker)
    except BaseException:
        worker.discard()
        raise
    # Logged once the settings are known to be usable: a usage error stays the one line on stderr.
    backend = processor.scorer.backend
    get_logger("runner").info("serving backend", backend=backend.name, device=str(backend.device), note=backend.note)
    return worker


def build_processor(
    settings: RunSettings,
    bundle: Bundle,
    *,
    on_suppressed: SuppressedSink | None = None,
    drift: DriftMonitor | None = None,
) -> BatchProcessor:
    """The batch processor ``settings`` describe, serving ``bundle``: the alert format, thresholds and allowlist.

    Raises :class:`~detector.stream.allowlist.AllowlistError`, ``BundleError``/``DeviceError``, and
    :class:`StartupError` for class thresholds that name none of the bundle's classes (a typo would otherwise
    leave that class without its threshold).
    """
    thresholds = Thresholds(settings.min_confidence, settings.class_thresholds)
    unknown = thresholds.unknown(bundle.classes)
    if unknown:
        raise StartupError(
            f"class_thresholds names {', '.join(unknown)}, which the bundle's classes ({', '.join(bundle.classes)}) "
            "do not match (names are compared in lower case, letters and digits only)"
        )
    allowlist = Allowlist.from_settings(
        settings.allowlist, settings.allow_networks, settings.allow_ports, settings.allow_labels
    )
    return BatchProcessor(
        bundle,
        output_topic=settings.output_topic,
        dlq_topic=settings.dlq_topic,
        emit=settings.emit,
        device=settings.device,
        max_record_bytes=settings.max_record_bytes,
        backend=settings.backend,
        encoder=AlertEncoder(settings.alert_format, zone=meter_zone(settings.meter_timezone)),
        thresholds=thresholds,
        allowlist=allowlist,
        on_suppressed=on_suppressed,
        aggregator=_aggregator(settings),
        verdicts_topic=settings.verdicts_topic,
        state_topic=settings.state_topic,
        drift=drift,
        explain=settings.explain,
    )


def _aggregator(settings: RunSettings) -> Aggregator | None:
    """The alert aggregation ``--aggregate-window-s`` asks for (None when it is 0), reading its changelog back
    with a consumer of its own (the worker's consumer must not be reassigned)."""
    if not settings.aggregate_window_s:
        return None
    config = {**general_properties(settings.kafka), "bootstrap.servers": settings.bootstrap_servers}
    config["logger"] = librdkafka_logger("librdkafka.changelog")
    reader = ChangelogReader(config, settings.state_topic, settings.aggregate_window_s)
    return Aggregator(settings.aggregate_window_s, reader.load)


def run_worker(settings: RunSettings, *, handle_signals: bool = True) -> int:
    """Build and run a worker until SIGTERM/SIGINT; returns the exit status."""
    configure_logging(settings.log_level, log_format=settings.log_format)
    try:
        worker = build_worker(settings)
    except StartupError as exc:
        print(f"detector run: error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.USAGE
    except KeyboardInterrupt:  # Ctrl-C while the cluster was asked for metadata: nothing consumed yet
        print("interrupted during start-up", file=sys.stderr, flush=True)
        return ExitCode.INTERRUPTED
    if not handle_signals:
        return worker.run()
    with stop_on_signals(worker.stop):
        return worker.run()


def _metrics_server(settings: RunSettings, metrics: WorkerMetrics, health: Health) -> MetricsServer | None:
    if not settings.metrics:
        return None
    try:
        return MetricsServer(metrics, health, settings.metrics_host, settings.metrics_port).start()
    except OSError as exc:
        where = f"{settings.metrics_host}:{settings.metrics_port}"
        raise StartupError(f"cannot serve metrics on {where}: {exc.strerror or exc}") from None


def _check_changelog_partitions(settings: RunSettings, topics: dict[str, Any]) -> None:
    """Input partition p keeps its aggregation windows in changelog partition p: the changelog needs as many."""
    if not settings.aggregate_window_s or settings.state_topic not in topics or settings.input_topic not in topics:
        return
    state, inputs = len(topics[settings.state_topic].partitions), len(topics[settings.input_topic].partitions)
    if state < inputs:
        raise StartupError(
            f"the aggregation state topic {settings.state_topic} has {state} partitions, fewer than the input "
            f"topic {settings.input_topic} ({inputs}): input partition p keeps its windows in its partition p"
        )


def _check_topics(worker: Worker) -> None:
    """Missing topics are a start-up error (or are created with ``create_topics``); an unreachable cluster is not:
    librdkafka keeps retrying and the worker starts consuming once it is back."""
    settings = worker.settings
    wanted = [settings.input_topic, settings.output_topic, settings.dlq_topic]
    if settings.aggregate_window_s:
        wanted += [settings.state_topic] + ([settings.verdicts_topic] if settings.verdicts_topic else [])
    try:
        metadata = worker.consumer.list_topics(timeout=METADATA_TIMEOUT_S)
    except KafkaException as exc:
        get_logger("runner").warning(
            "cannot read cluster metadata at start-up; starting anyway", error=exc.args[0].str()
        )
        return
    existing = {name for name, topic in metadata.topics.items() if topic.error is None}
    _check_changelog_partitions(settings, metadata.topics)
    missing = [topic for topic in dict.fromkeys(wanted) if topic not in existing]
    if not missing:
        return
    if not settings.create_topics:
        raise StartupError(
            f"topic(s) {', '.join(missing)} do not exist on {settings.bootstrap_servers}: "
            "create them first (or pass --create-topics for a development cluster)"
        )
    state = [topic for topic in missing if topic == settings.state_topic and settings.aggregate_window_s]
    try:
        if state:  # a changelog: compacted, partitioned like the input
            ensure_configured_topics(
                settings,
                state,
                logger=librdkafka_logger("librdkafka.admin"),
                extra_config={"cleanup.policy": "compact"},
            )
            missing = [topic for topic in missing if topic not in state]
        ensure_configured_topics(settings, missing, logger=librdkafka_logger("librdkafka.admin"))
    except TopicError as exc:
        raise StartupError(str(exc)) from None
