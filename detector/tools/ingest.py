"""``detector ingest``: the HTTP intake flow meters post flow records to; each record goes to the flows topic.

It takes (``POST /flows``, or ``POST /`` for a meter given the bare address):

* **one JSON object** per request (``Content-Type: application/json``, or none): what the PyPI
  ``cicflowmeter`` 0.5.0 sends with ``-u URL``, one flow per POST (``requests.post(url, json=flow)``);
* **NDJSON batches** (``Content-Type: application/x-ndjson``; also ``application/ndjson``,
  ``application/jsonl``, ``application/jsonlines``): one record per line, blank lines ignored.

Each record is written as the bytes it arrived as, keyed by flow (flow id, else the 5-tuple) as
``detector replay`` keys them, so one flow's records stay in order on one partition. Whether a record can be
*scored* is the worker's business (dead letters); the intake only refuses what is not a flow record at all.

Answers, JSON bodies throughout:

* **200** ``{"acknowledged": N, "refused": [...]}``: the broker acknowledged every record taken
  (:mod:`detector.tools.ingest_sink`: idempotent producer, ``acks=all``). In a batch, lines that are not
  a JSON object, or are larger than ``--max-record-bytes``, are *refused* and listed as ``{"line", "code",
  "reason"}``; the other lines are written all the same. Resend only the refused lines, corrected:
  resending the batch would write the others twice.
* **400**: nothing to write (a body that is not one JSON object; a batch with no line that is one).
* **401**: ``--token`` is set and the request does not carry ``Authorization: Bearer <token>``.
* **413**: a body over ``--max-body-bytes``, a single record over ``--max-record-bytes``, or a batch of more
  records than ``--max-pending``.
* **415**: another content type.
* **429** with ``Retry-After``: back-pressure (too many records await the broker's acknowledgement);
  nothing of the request was written.
* **503** with ``Retry-After``: no broker reachable, or the intake is stopping; nothing was written.
  Or: a delivery failed (``"failed": [{"line", "reason"}]``); those records may or may not be in the topic.

The token is compared in constant time and never logged. Metrics and probes are served on their own port
(plain HTTP, ``--metrics-port``), as the worker's are: ``/metrics``, ``/healthz``, ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import signal
import ssl
import sys
import time
from typing import Any

import orjson
from aiohttp import web
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from detector.core.flowrecord import layout_for, record_key
from detector.core.jsonrecords import Line, NotARecord, parse_body, parse_record
from detector.core.process import ExitCode
from detector.core.settings import redact
from detector.stream.clients import general_properties
from detector.stream.logs import configure_logging, get_logger, librdkafka_logger
from detector.stream.metrics import probe_answer
from detector.stream.settings import SettingsError
from detector.stream.topics import TopicError, ensure_configured_topics
from detector.tools.ingest_metrics import ACKNOWLEDGED, FAILED, REFUSED, TURNED_AWAY, IngestHealth, IngestMetrics
from detector.tools.ingest_sink import OUTAGE_RETRY_AFTER_S, FlowSink, OutgoingRecord, TurnedAway, producer_config
from detector.tools.settings import IngestSettings

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/jsonlines"})
# aiohttp reports a request without Content-Type as application/octet-stream.
JSON_TYPES = frozenset({"application/json", "application/octet-stream"})
PATHS = ("/flows", "/")
METADATA_TIMEOUT_S = 10.0
FLUSH_TIMEOUT_S = 30.0


class StartupError(RuntimeError):
    """The intake cannot start; the message is one line that says what to fix."""


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _problem(status: int, code: str, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json(status, {"error": {"code": code, "reason": reason}}, headers)


class Intake:
    """Handles ``POST /flows``: authentication, limits, parsing; :class:`FlowSink` writes and acknowledges."""

    def __init__(self, settings: IngestSettings, sink: FlowSink, metrics: IngestMetrics) -> None:
        self.settings = settings
        self.sink = sink
        self.metrics = metrics
        self._expected = f"Bearer {settings.token}".encode() if settings.token else None

    async def post(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        response = await self._answer(request)
        self.metrics.requests.labels(status=str(response.status)).inc()
        if response.status == 200:
            self.metrics.ack_seconds.observe(time.perf_counter() - started)
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _problem(
                401,
                "unauthorized",
                "this intake needs Authorization: Bearer <token>",
                {"WWW-Authenticate": 'Bearer realm="flowwarden"'},
            )
        batch = request.content_type in NDJSON_TYPES
        if not batch and request.content_type not in JSON_TYPES:
            return _problem(
                415,
                "unsupported_media_type",
                f"Content-Type {request.content_type} is neither application/json (one record) nor "
                "application/x-ndjson (one record per line)",
            )
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _problem(413, "body_too_large", f"the body is {request.content_length} bytes, over {limit}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _problem(413, "body_too_large", f"the body is over {limit} bytes")
        lines = self._batch(body) if batch else self._single(body)
        if isinstance(lines, web.Response):
            return lines
        return await self._write(lines)

    def _authorized(self, request: web.Request) -> bool:
        if self._expected is None:
            return True
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self._expected)

    def _single(self, body: bytes) -> list[Line] | web.Response:
        raw = body.strip()
        record = parse_record(raw, self.settings.max_record_bytes)
        if isinstance(record, NotARecord):
            self.metrics.records.labels(outcome=REFUSED).inc()
            status = 413 if record.code == "oversized" else 400
            hint = " (a batch goes as application/x-ndjson, one record per line)" if raw.startswith(b"[") else ""
            return _problem(status, record.code, record.reason + hint)
        return [Line(1, raw, record)]

    def _batch(self, body: bytes) -> list[Line] | web.Response:
        lines = parse_body(body, self.settings.max_record_bytes)
        if not lines:
            return _problem(400, "empty", "the batch holds no records")
        if len(lines) > self.settings.max_pending:
            return _problem(
                413,
                "batch_too_large",
                f"the batch holds {len(lines):,} lines, more than the {self.settings.max_pending:,} records "
                "that may await acknowledgement at once (--max-pending): send smaller batches",
            )
        return lines

    async def _write(self, lines: list[Line]) -> web.Response:
        refused = [_refusal(line) for line in lines if isinstance(line.record, NotARecord)]
        taken = [line for line in lines if not isinstance(line.record, NotARecord)]
        self.metrics.records.labels(outcome=REFUSED).inc(len(refused))
        if not taken:
            return _json(400, {"acknowledged": 0, "refused": refused})
        try:
            errors = await self.sink.write([_outgoing(line) for line in taken])
        except TurnedAway as exc:
            self.metrics.records.labels(outcome=TURNED_AWAY).inc(len(taken))
            code = "backpressure" if exc.status == 429 else "unavailable"
            body = {"error": {"code": code, "reason": exc.reason}, "acknowledged": 0, "refused": refused}
            return _json(exc.status, body, {"Retry-After": str(exc.retry_after)})
        failed = [{"line": line.number, "reason": error} for line, error in zip(taken, errors, strict=True) if error]
        acknowledged = len(taken) - len(failed)
        self.metrics.records.labels(outcome=ACKNOWLEDGED).inc(acknowledged)
        self.metrics.records.labels(outcome=FAILED).inc(len(failed))
        if failed:
            body = {
                "error": {"code": "delivery_failed", "reason": "the broker did not acknowledge every record"},
                "acknowledged": acknowledged,
                "failed": failed,
                "refused": refused,
            }
            return _json(503, body, {"Retry-After": str(OUTAGE_RETRY_AFTER_S)})
        return _json(200, {"acknowledged": acknowledged, "refused": refused})


def _refusal(line: Line) -> dict[str, Any]:
    assert isinstance(line.record, NotARecord)
    return {"line": line.number, "code": line.record.code, "reason": line.record.reason}


def _outgoing(line: Line) -> OutgoingRecord:
    assert isinstance(line.record, dict)
    return OutgoingRecord(record_key(line.record, layout_for(tuple(line.record))), line.raw)


# ---------------------------------------------------------------------------------------------- the server


def tls_context(settings: IngestSettings) -> ssl.SSLContext | None:
    """The server's TLS context, or None without ``--tls-cert``; raises :class:`StartupError`."""
    if settings.tls_cert is None and settings.tls_key is None:
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise StartupError("--tls-cert and --tls-key go together: give both for HTTPS, or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        # The reason only: a key file's content never reaches a message.
        raise StartupError(
            f"cannot use --tls-cert {settings.tls_cert} with --tls-key {settings.tls_key}: "
            f"{getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or type(exc).__name__}"
        ) from None
    return context


class IngestServer:
    """The intake and its metrics server on one event loop. ``await serve()`` runs until :meth:`request_stop`."""

    def __init__(self, settings: IngestSettings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.ssl_context = ssl_context
        self.health = IngestHealth()
        self.metrics = IngestMetrics()
        self.metrics.watch(self.health)
        try:
            self.config = producer_config(settings.librdkafka())
            self.sink = FlowSink(
                self.config, settings.topic, max_pending=settings.max_pending, health=self.health, metrics=self.metrics
            )
        except SettingsError as exc:
            raise StartupError(str(exc)) from None
        except KafkaException as exc:
            raise StartupError(f"invalid Kafka client settings: {exc.args[0].str()}") from None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._runners: list[web.AppRunner] = []
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._log = get_logger("ingest")

    async def start(self) -> None:
        """Listen; raises :class:`StartupError` when a port cannot be bound."""
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self.sink.start(self._loop)
        settings = self.settings
        intake = Intake(settings, self.sink, self.metrics)
        app = web.Application(client_max_size=settings.max_body_bytes)
        for path in PATHS:
            app.router.add_post(path, intake.post)
        # In-flight requests get as long to finish as their records may take to be acknowledged.
        self.port = await self._listen(app, settings.host, settings.port, self.ssl_context, self.sink.ack_timeout_s)
        if settings.metrics:
            probes = web.Application()
            probes.router.add_get("/{path:.*}", self._probe)
            self.metrics_port = await self._listen(probes, settings.metrics_host, settings.metrics_port, None, 1.0)

    async def _listen(
        self, app: web.Application, host: str, port: int, context: ssl.SSLContext | None, shutdown_timeout: float
    ) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout)
        await runner.setup()
        self._runners.append(runner)
        try:
            await web.TCPSite(runner, host, port, ssl_context=context).start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        return int(runner.addresses[0][1])

    async def _probe(self, request: web.Request) -> web.Response:
        status, body, content_type = probe_answer(request.path_qs, self.metrics.exposition, self.health)
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    def request_stop(self) -> None:
        """Stop serving (thread-safe: a signal handler or another thread may call it)."""
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)

    async def stop(self) -> int:
        """Refuse new records, finish the requests in flight, flush; returns the records left unsent."""
        self.health.stopping = True
        for runner in self._runners:  # the intake first: the probes say "stopping" while it drains
            await runner.cleanup()
        return await asyncio.to_thread(self.sink.close, FLUSH_TIMEOUT_S)

    async def serve(self, on_ready: Any = None) -> int:
        """Start, call ``on_ready(self)``, run until :meth:`request_stop`, stop; returns the records left unsent."""
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        self._announce()
        if on_ready is not None:
            on_ready(self)
        assert self._stopped is not None
        await self._stopped.wait()
        self._log.info("stopping: finishing the requests in flight")
        return await self.stop()

    def _announce(self) -> None:
        settings = self.settings
        self._log.info(
            "ingest listening",
            address=f"{settings.host}:{self.port}",
            paths=list(PATHS),
            tls=self.ssl_context is not None,
            topic=settings.topic,
            authentication="bearer token" if settings.token else "none",
            metrics_port=self.metrics_port,
            max_pending=settings.max_pending,
            client_settings=redact(self.config),
        )
        if not settings.token and settings.host not in ("127.0.0.1", "::1", "localhost"):
            self._log.warning(
                "no --token: anyone who can reach this address can write flow records; give the secret file "
                "`token` (--secrets-dir) unless a proxy in front authenticates",
                address=f"{settings.host}:{self.port}",
            )

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "") else self.settings.host
        return f"{scheme}://{host}:{self.port}/flows"


def check_topic(settings: IngestSettings) -> None:
    """A missing topic is a start-up error (or is created with ``--create-topics``); an unreachable cluster is
    not: the intake answers 503 until a broker is reachable."""
    config = {**general_properties(settings.kafka), "bootstrap.servers": settings.bootstrap_servers}
    admin = AdminClient({**config, "logger": librdkafka_logger("librdkafka.admin")})
    try:
        metadata = admin.list_topics(timeout=METADATA_TIMEOUT_S)
    except KafkaException as exc:
        get_logger("ingest").warning(
            "cannot read cluster metadata at start-up; starting anyway (503 until a broker is reachable)",
            error=exc.args[0].str(),
        )
        return
    topic = metadata.topics.get(settings.topic)
    if topic is not None and topic.error is None:
        return
    if not settings.create_topics:
        raise StartupError(
            f"topic {settings.topic} does not exist on {settings.bootstrap_servers}: create it first "
            "(or pass --create-topics for a development cluster)"
        )
    try:
        ensure_configured_topics(settings, [settings.topic], logger=librdkafka_logger("librdkafka.admin"))
    except TopicError as exc:
        raise StartupError(str(exc)) from None


def run_command(settings: IngestSettings) -> int:
    """``detector ingest`` from its settings: serve until SIGTERM/SIGINT; returns the exit status."""
    configure_logging(settings.log_level, log_format=settings.log_format)
    try:
        server = IngestServer(settings, ssl_context=tls_context(settings))
        check_topic(settings)
    except StartupError as exc:
        print(f"detector ingest: error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.USAGE
    try:
        left = asyncio.run(_serve_until_signalled(server))
    except StartupError as exc:
        print(f"detector ingest: error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.USAGE
    if left:
        get_logger("ingest").error("records left unsent after the final flush", records=left)
        return ExitCode.FAILURE
    return ExitCode.OK


async def _serve_until_signalled(server: IngestServer) -> int:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            loop.add_signal_handler(signum, server.request_stop)
    return await server.serve()
