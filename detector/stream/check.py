"""``detector check``: is this configuration ready to run, before a worker is started with it?

It reads the settings ``detector run`` would read (the same flags, ``FLOWWARDEN_*`` variables, settings file and
secrets directory) and checks, in order, each on one line of the report::

    ok    settings      exactly-once, flows -> alerts (ecs), dead letters flows.dlq, group flowwarden-detector
    ok    bundle        rescae-bigru 20261127T120102Z-3fa29c1d verified: 16 classes (registry, LATEST)
    ok    device        cpu
    ok    alert policy  min confidence 0.5, 1 class threshold, 2 allowlist entries
    ok    metrics port  0.0.0.0:9108 is free
    FAIL  brokers       no broker answered within 10 s: ... (_TRANSPORT)
    skip  credentials   needs a broker
    skip  topics        needs a broker

``settings`` (a value that cannot be used: the one line ``detector run`` would print), ``bundle`` (missing,
checksums, format version), ``device`` (``--device cuda`` without a GPU), ``alert policy`` (a class threshold
naming no class of the bundle, an allowlist file that cannot be read), ``metrics port`` (taken), ``brokers``
(none reachable: wrong address, firewall, TLS), ``credentials`` (refused by the cluster), ``topics`` (the
input, output and dead-letter topics exist, with their partition counts; missing ones fail unless
``--create-topics``; topics the credentials may not see fail too). A check that needs one that failed is
skipped. Exit status 0 when every check passed, 1 when one failed, 2 for a usage error (an unknown flag).
Nothing is produced, consumed or committed; the consumer group is not joined.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from detector.core.bundle import Bundle, BundleError, load_bundle
from detector.core.process import ExitCode
from detector.core.registry import is_registry, resolve_bundle_path
from detector.core.scorer import DeviceError, pick_device
from detector.core.signing import SigningError, load_trusted_keys
from detector.stream.allowlist import Allowlist, AllowlistError
from detector.stream.logs import configure_logging, librdkafka_logger
from detector.stream.settings import RunSettings
from detector.stream.thresholds import Thresholds

OK, FAIL, SKIP = "ok", "FAIL", "skip"
CHECKS = ("settings", "bundle", "device", "alert policy", "metrics port", "brokers", "credentials", "topics")
_UNREACHABLE = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE, KafkaError._TIMED_OUT}
_REFUSED = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    name: str
    status: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<5} {self.name:<13} {self.detail}".rstrip()


def check_settings(settings: RunSettings, *, timeout: float = 10.0) -> list[Check]:
    """Every check of the module docstring, in order."""
    checks = [Check("settings", OK, _settings_summary(settings))]
    bundle, bundle_check = _bundle(settings)
    checks.append(bundle_check)
    checks.append(_device(settings))
    checks.append(_policy(settings, bundle))
    checks.append(_metrics_port(settings))
    checks += _cluster(settings, timeout)
    return checks


def settings_failed(error: Exception) -> list[Check]:
    """The report when the settings themselves cannot be used: nothing else can be checked."""
    return [Check("settings", FAIL, str(error))] + [Check(name, SKIP, "needs valid settings") for name in CHECKS[1:]]


def report(checks: list[Check], out: IO[str] | None = None) -> int:
    """Print the report; the exit status: 0 when nothing failed, else 1."""
    out = out or sys.stdout
    for check in checks:
        print(check.line(), file=out)
    failed = [check.name for check in checks if check.status == FAIL]
    print(f"{len(failed)} check(s) failed: {', '.join(failed)}" if failed else "every check passed", file=out)
    out.flush()
    return ExitCode.FAILURE if failed else ExitCode.OK


def run_command(settings: RunSettings, *, timeout: float = 10.0) -> int:
    """``detector check``: the report on standard output (librdkafka's own lines, if any, on standard error)."""
    configure_logging(settings.log_level, log_format=settings.log_format)
    return report(check_settings(settings, timeout=timeout))


# ----------------------------------------------------------------------------------------------------------


def _settings_summary(settings: RunSettings) -> str:
    return (
        f"{settings.guarantee}, {settings.input_topic} -> {settings.output_topic} ({settings.alert_format}), "
        f"dead letters {settings.dlq_topic}, group {settings.group_id}"
    )


def _bundle(settings: RunSettings) -> tuple[Bundle | None, Check]:
    if settings.bundle is None:
        return None, Check("bundle", FAIL, "no model bundle: pass --bundle BUNDLE_OR_REGISTRY (or FLOWWARDEN_BUNDLE)")
    try:
        path = resolve_bundle_path(settings.bundle)
        bundle = load_bundle(path, trusted_keys=load_trusted_keys(settings.trusted_key))
    except (BundleError, SigningError) as exc:
        return None, Check("bundle", FAIL, str(exc))
    where = f" (registry {settings.bundle}, version {path.name})" if is_registry(settings.bundle) else ""
    signed = f", signed by key {bundle.signed_by}" if bundle.signed_by else ""
    detail = f"{bundle.name} {bundle.version} verified: {len(bundle.classes)} classes{where}{signed}"
    return bundle, Check("bundle", OK, detail)


def _device(settings: RunSettings) -> Check:
    try:
        return Check("device", OK, str(pick_device(settings.device)))
    except DeviceError as exc:
        return Check("device", FAIL, str(exc))


def _policy(settings: RunSettings, bundle: Bundle | None) -> Check:
    try:
        allowlist = Allowlist.from_settings(
            settings.allowlist, settings.allow_networks, settings.allow_ports, settings.allow_labels
        )
    except (AllowlistError, ValueError) as exc:
        return Check("alert policy", FAIL, str(exc))
    thresholds = Thresholds(settings.min_confidence, settings.class_thresholds)
    if bundle is not None:
        unknown = thresholds.unknown(bundle.classes)
        if unknown:
            return Check(
                "alert policy",
                FAIL,
                f"class thresholds name {', '.join(unknown)}: no class of the bundle ({', '.join(bundle.classes)})",
            )
    detail = (
        f"min confidence {settings.min_confidence:g}, {len(thresholds.per_class)} class threshold(s), "
        f"{len(allowlist)} allowlist entr{'y' if len(allowlist) == 1 else 'ies'}, emit {settings.emit}"
    )
    if bundle is None and thresholds.per_class:
        detail += " (class names not checked: no bundle)"
    return Check("alert policy", OK, detail)


def _metrics_port(settings: RunSettings) -> Check:
    if not settings.metrics:
        return Check("metrics port", OK, "metrics off (--no-metrics)")
    where = f"{settings.metrics_host}:{settings.metrics_port}"
    if settings.metrics_port == 0:
        return Check("metrics port", OK, f"{where}: any free port")
    family = socket.AF_INET6 if ":" in settings.metrics_host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((settings.metrics_host, settings.metrics_port))
    except OSError as exc:
        return Check("metrics port", FAIL, f"cannot serve metrics on {where}: {exc.strerror or exc}")
    return Check("metrics port", OK, f"{where} is free")


class _Errors:
    """The errors a client reported (its error_cb), for telling an unreachable cluster from refused credentials."""

    def __init__(self) -> None:
        self.seen: list[KafkaError] = []
        self._lock = threading.Lock()

    def __call__(self, error: KafkaError) -> None:
        with self._lock:
            self.seen.append(error)

    def first(self, codes: set[int]) -> KafkaError | None:
        with self._lock:
            return next((error for error in self.seen if error.code() in codes), None)


def _cluster(settings: RunSettings, timeout: float) -> list[Check]:
    errors = _Errors()
    try:
        admin = AdminClient(
            {**settings.librdkafka(), "error_cb": errors, "logger": librdkafka_logger("librdkafka.check")}
        )
    except KafkaException as exc:
        return [Check("brokers", FAIL, f"invalid Kafka client settings: {exc.args[0].str()}"), *_skipped_cluster()]
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0.2)  # an admin client hands its error callbacks over only when polled
        return _without_metadata(settings, errors, exc, timeout)
    brokers = ", ".join(f"{b.host}:{b.port}" for b in sorted(metadata.brokers.values(), key=lambda b: b.id))
    checks = [Check("brokers", OK, f"{len(metadata.brokers)} broker(s): {brokers}")]
    checks.append(Check("credentials", OK, _credentials_summary(settings)))
    checks.append(_topics(settings, metadata.topics))
    return checks


def _without_metadata(settings: RunSettings, errors: _Errors, exc: KafkaException, timeout: float) -> list[Check]:
    refused = errors.first(_REFUSED)
    if refused is not None:  # a broker answered, and turned the credentials down
        return [
            Check("brokers", OK, f"reachable at {settings.bootstrap_servers}"),
            Check("credentials", FAIL, f"the cluster refused the credentials: {refused.str()}"),
            Check("topics", SKIP, "needs accepted credentials"),
        ]
    cause = errors.first(_UNREACHABLE) or exc.args[0]
    detail = f"no broker of {settings.bootstrap_servers} answered within {timeout:g} s: {cause.str()} ({cause.name()})"
    return [Check("brokers", FAIL, detail), *_skipped_cluster()]


def _skipped_cluster() -> list[Check]:
    return [Check("credentials", SKIP, "needs a broker"), Check("topics", SKIP, "needs a broker")]


def _credentials_summary(settings: RunSettings) -> str:
    protocol = settings.kafka.get("security.protocol", "plaintext")
    mechanism = settings.kafka.get("sasl.mechanism")
    user = settings.kafka.get("sasl.username")
    if "sasl" not in protocol.lower():
        return f"accepted ({protocol}, no SASL authentication)"
    return f"accepted ({protocol}, {mechanism or 'GSSAPI'}{f' as {user}' if user else ''})"


def _topics(settings: RunSettings, topics: dict[str, object]) -> Check:
    wanted = {"input": settings.input_topic, "output": settings.output_topic, "dead letters": settings.dlq_topic}
    found, missing, refused = [], [], []
    for role, name in wanted.items():
        topic = topics.get(name)
        error = getattr(topic, "error", None) if topic is not None else None
        if topic is None or (error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            missing.append(name)
        elif error is not None:
            refused.append(f"{name} ({error.str()})")
        else:
            found.append(f"{role} {name}: {len(getattr(topic, 'partitions', {}))} partition(s)")
    listed = "; ".join(found)
    if refused:
        return Check("topics", FAIL, f"cannot use {', '.join(refused)}" + (f"; {listed}" if listed else ""))
    if missing and not settings.create_topics:
        detail = f"missing: {', '.join(dict.fromkeys(missing))} (create them, or --create-topics on a test cluster)"
        return Check("topics", FAIL, detail + (f"; {listed}" if listed else ""))
    if missing:
        listed += ("; " if listed else "") + f"{', '.join(dict.fromkeys(missing))} will be created (--create-topics)"
    return Check("topics", OK, listed)


def settings_error_handler(out: Callable[[], IO[str]] = lambda: sys.stdout) -> Callable[[Exception], int]:
    """What ``detector check`` does with settings that cannot be used: report them as its first failed check."""
    return lambda error: report(settings_failed(error), out())
