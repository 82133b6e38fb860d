"""Running a detector worker in tests: in-process in a thread, or as a ``detector run`` subprocess.

In-process is cheaper (no second torch import) and enough for most behaviour; a subprocess is needed for
signals and ``kill -9``. Both talk to the same broker as the test (``kafka_bootstrap`` or a proxy), use
the short group timeouts of :data:`tests.support.kafka.GROUP_DEFAULTS` (Tansu answers a JoinGroup only
after about half the session timeout) and a metrics server on a free port.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import orjson
from confluent_kafka import Message, TopicPartition
from jsonschema import Draft202012Validator

from detector.stream.logs import configure_logging
from detector.stream.runner import build_worker
from detector.stream.settings import RunSettings
from detector.stream.worker import Worker
from tests.support.kafka import client_config_from_env, group_consumer, produce_values, reader

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
_LOG = io.StringIO()  # the JSON log of every in-process worker
GROUP_KAFKA = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500", "statistics.interval.ms": "1000"}


def flow_values(rows: Iterable[dict[str, Any]]) -> list[bytes]:
    """Flow records as the replayer writes them: one JSON object per message."""
    return [orjson.dumps(row) for row in rows]


def kafka_options(extra: dict[str, str] | None = None) -> dict[str, str]:
    """librdkafka pass-through for a test worker: the real cluster's settings plus short group timeouts."""
    return {**client_config_from_env(), **GROUP_KAFKA, **(extra or {})}


def worker_settings(
    bootstrap: str,
    *,
    input_topic: str,
    output_topic: str,
    dlq_topic: str,
    group_id: str,
    bundle: Path,
    kafka: dict[str, str] | None = None,
    **overrides: Any,
) -> RunSettings:
    """Settings for an in-process worker (metrics on a free port, CPU, small delays)."""
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "input_topic": input_topic,
        "output_topic": output_topic,
        "dlq_topic": dlq_topic,
        "group_id": group_id,
        "bundle": bundle,
        "device": "cpu",
        "metrics_host": "127.0.0.1",
        "metrics_port": 0,
        "max_delay_ms": 20,
        "summary_seconds": 5.0,
        "registry_poll_seconds": 0.2,
        "kafka": kafka_options(kafka),
    }
    values.update(overrides)
    return RunSettings(**values)


def run_flags(settings: RunSettings) -> list[str]:
    """The ``detector run`` command line equivalent to ``settings`` (for a subprocess worker)."""
    argv = [
        "--bootstrap-servers",
        settings.bootstrap_servers,
        "--input-topic",
        settings.input_topic,
        "--output-topic",
        settings.output_topic,
        "--dlq-topic",
        settings.dlq_topic,
        "--group-id",
        settings.group_id,
        "--bundle",
        str(settings.bundle),
        "--guarantee",
        settings.guarantee,
        "--emit",
        settings.emit,
        "--device",
        settings.device,
        "--max-batch",
        str(settings.max_batch),
        "--max-delay-ms",
        str(settings.max_delay_ms),
        "--metrics-port",
        str(settings.metrics_port),
    ]
    if settings.aggregate_window_s:
        argv += [
            "--aggregate-window-s",
            str(settings.aggregate_window_s),
            "--aggregate-state-topic",
            settings.state_topic,
        ]
    if settings.verdicts_topic:
        argv += ["--verdicts-topic", settings.verdicts_topic]
    if settings.transactional_id:
        argv += ["--transactional-id", settings.transactional_id]
    if settings.instance_id:
        argv += ["--instance-id", settings.instance_id]
    for key, value in settings.kafka.items():
        argv += ["--kafka-option", f"{key}={value}"]
    return argv


class WorkerThread:
    """A worker built from settings and run in a thread; ``stop()`` is what SIGTERM does in a process."""

    def __init__(self, settings: RunSettings) -> None:
        configure_logging(stream=_LOG)
        self._log_start = len(_LOG.getvalue())
        self.worker: Worker = build_worker(settings)
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="test-worker", daemon=True)

    def _run(self) -> None:
        try:
            self.exit_code = self.worker.run()
        except BaseException as exc:
            self.error = exc

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> int | None:
        self.worker.stop()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the worker did not stop within {timeout:g} s; {self.where()}"
        if self.error is not None:
            raise self.error
        return self.exit_code

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """JSON log events since this worker was built: its own and those of in-process workers built later
        (structlog's configuration is global, so they share one stream)."""
        lines = _LOG.getvalue()[self._log_start :].splitlines()
        events = [orjson.loads(line) for line in lines if line.startswith("{")]
        return [e for e in events if name is None or e.get("event") == name]

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        wait_until(condition, what, timeout, alive=lambda: self.alive, log=self.where)

    def where(self) -> str:
        """Where the worker's thread is now and its last log events: what a test failure needs to be read."""
        frame = sys._current_frames().get(self._thread.ident or -1)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(not running)\n"
        events = "\n".join(orjson.dumps(event).decode() for event in self.events()[-15:])
        return f"last events:\n{events}\nworker thread at:\n{stack}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self.stop()


class WorkerProcess:
    """``python -m detector.cli run ...`` with stderr (the JSON log) captured to a file."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "detector.cli", "run", *argv],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})},
        )

    def events(self) -> list[dict[str, Any]]:
        """The JSON log events written so far (other lines skipped)."""
        events = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def assignment(self) -> set[int]:
        """The input partitions the worker says it owns, from its last assignment log event."""
        changes = [e for e in self.events() if "assignment" in e and str(e.get("event")).startswith("partitions ")]
        return {int(name.rpartition("/")[2]) for name in changes[-1]["assignment"]} if changes else set()

    def metrics(self) -> str:
        """The worker's /metrics exposition (its port is in the ``starting`` event)."""
        port = self.wait_for_event("starting")["metrics_port"]
        status, body = http_get(port, "/metrics")
        assert status == 200, f"/metrics answered {status}"
        return body

    def wait_for_event(self, name: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [
                e for e in self.events() if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
            ]
            return bool(found)

        wait_until(seen, f"log event {name!r} {fields or ''}", timeout, alive=self.alive, log=self.text)
        return found[0]

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self, timeout: float = 60.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the worker did not exit within {timeout:g} s; log:\n{self.text()[-3000:]}") from None

    def close(self) -> None:
        if self.alive():
            self.kill()
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Supervised:
    """A ``detector run`` process started again, with the same flags, whenever it exits (as an orchestrator
    restarts a pod in its slot). ``exits`` lists each ended process with its exit status."""

    def __init__(self, argv: list[str], logs: Path) -> None:
        self.argv, self.logs = argv, logs
        self.exits: list[tuple[int, WorkerProcess]] = []
        self.current = self._start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _start(self) -> WorkerProcess:
        return WorkerProcess(self.argv, self.logs / f"worker-{len(self.exits)}.log")

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            if not self.current.alive():
                self.exits.append((self.current.process.returncode, self.current))
                self.current = self._start()

    def stop(self, *, kill: bool = False) -> int:
        """Stop restarting it, then end the running process with SIGTERM (``kill``: SIGKILL); its status."""
        self._stop.set()
        self._thread.join(10)
        if kill:
            self.current.kill()
        return self.current.terminate()

    def close(self) -> None:
        self._stop.set()
        for _, process in self.exits:
            process.close()
        self.current.close()


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout: float = 60.0,
    *,
    alive: Callable[[], bool] | None = None,
    log: Callable[[], str] | None = None,
) -> None:
    """Poll ``condition`` every 50 ms; fail after ``timeout`` s, or at once when ``alive()`` turns false."""
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None and not alive():
            raise AssertionError(
                f"the worker exited while waiting for {what}" + (f"; log:\n{log()[-3000:]}" if log else "")
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s" + (f"; log:\n{log()[-3000:]}" if log else ""))
        time.sleep(0.05)


def http_get(port: int, path: str) -> tuple[int, str]:
    """Status and body of ``GET http://127.0.0.1:port/path``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets as a fresh member sees them (-1001 = none)."""
    consumer = group_consumer(bootstrap, group)
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def metric_value(exposition: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition (None when absent)."""
    for line in exposition.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric != name:
            continue
        found = dict(part.split("=", 1) for part in label_text.rstrip("}").split(",") if "=" in part)
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(value)
    return None


def schema_errors(schema_file: str, instance: Any) -> list[str]:
    """Violations of ``instance`` against one of schemas/ (formats checked too)."""
    schema = orjson.loads((SCHEMAS / schema_file).read_bytes())
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(instance)]


def dead_letter_header_map(message: Message) -> dict[str, str]:
    """A dead letter's headers as the schema describes them: name -> decoded string."""
    return {name: value.decode() for name, value in message.headers() or []}


def produce_spread(bootstrap: str, topic: str, values: Sequence[bytes], partitions: int) -> dict[tuple[int, int], int]:
    """Produce ``values`` round-robin over ``partitions``; returns ``{(partition, offset): index in values}``."""
    where: dict[tuple[int, int], int] = {}
    for partition in range(partitions):
        indices = list(range(partition, len(values), partitions))
        landed = produce_values(bootstrap, topic, [values[i] for i in indices], partition=partition)
        where.update(zip(landed, indices, strict=True))
    return where


def alert_sources(messages: Iterable[Message]) -> list[tuple[int, int]]:
    """``(partition, offset)`` of the input record behind each alert message."""
    sources = []
    for message in messages:
        source = orjson.loads(message.value())["source"]
        sources.append((source["partition"], source["offset"]))
    return sources


def consume_covering(
    bootstrap: str,
    topic: str,
    wanted: Iterable[tuple[int, int]],
    *,
    read_committed: bool = True,
    timeout: float = 120.0,
    idle_after: float = 2.0,
) -> list[Message]:
    """Read alerts from the beginning until every wanted input ``(partition, offset)`` has one, then ``idle_after``
    seconds more; returns every alert read, duplicates included (for at-least-once and crash tests)."""
    missing = set(wanted)
    received: list[Message] = []
    with reader(bootstrap, topic, read_committed) as consumer:
        deadline = time.monotonic() + timeout
        quiet_until: float | None = None if missing else time.monotonic() + idle_after
        while quiet_until is None or time.monotonic() < quiet_until:
            if quiet_until is None and time.monotonic() > deadline:
                shown = sorted(missing)[:10]
                raise AssertionError(f"{len(missing)} input records have no alert after {timeout:g} s, e.g. {shown}")
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            received.append(message)
            missing.difference_update(alert_sources([message]))
            if not missing and quiet_until is None:
                quiet_until = time.monotonic() + idle_after
    return received


class Replay:
    """Produces flow records in the background, a chunk at a time, like ``detector replay --rate``."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        values: list[bytes],
        *,
        partitions: int = 3,
        chunk: int = 40,
        pause: float = 0.1,
    ) -> None:
        self.where: dict[tuple[int, int], int] = {}
        self._args = (bootstrap, topic, values, partitions, chunk, pause)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop = threading.Event()
        self.error: BaseException | None = None

    def _run(self) -> None:
        bootstrap, topic, values, partitions, chunk, pause = self._args
        try:
            for start in range(0, len(values), chunk):
                landed = produce_spread(bootstrap, topic, values[start : start + chunk], partitions)
                self.where.update({coords: start + index for coords, index in landed.items()})
                if self._stop.wait(pause):
                    return
        except BaseException as exc:
            self.error = exc

    def stop(self) -> dict[tuple[int, int], int]:
        """End the replay after the chunk being sent; returns where every sent record landed (see :meth:`join`)."""
        self._stop.set()
        return self.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> Replay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join()

    def join(self) -> dict[tuple[int, int], int]:
        self._thread.join(120)
        assert not self._thread.is_alive(), "the replay did not finish"
        if self.error is not None:
            raise self.error
        return self.where


def worker_topics(new_topic: Callable[..., str], partitions: int = 3) -> dict[str, str]:
    """Fresh input (``partitions`` partitions), output and dead-letter topics, as RunSettings fields."""
    return {
        "input_topic": new_topic(partitions=partitions, prefix="flows"),
        "output_topic": new_topic(prefix="alerts"),
        "dlq_topic": new_topic(prefix="dlq"),
    }
