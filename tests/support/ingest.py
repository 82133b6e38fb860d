"""Running ``detector ingest`` in tests: the server in a thread on free loopback ports, and a plain HTTP client.

The client is the standard library's (``urllib``), so the tests exercise the server with a client other
than its own library's; the end-to-end test posts with the real ``cicflowmeter`` (``requests``).
"""

from __future__ import annotations

import asyncio
import io
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Self

import orjson

from detector.stream.logs import configure_logging
from detector.tools.ingest import IngestServer, tls_context
from detector.tools.settings import IngestSettings
from tests.support.kafka import client_config_from_env

_LOG = io.StringIO()  # the JSON log of every in-process ingest server


def ingest_settings(bootstrap: str, topic: str, **overrides: Any) -> IngestSettings:
    """Settings for an in-process intake on free loopback ports."""
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "topic": topic,
        "host": "127.0.0.1",
        "port": 0,
        "metrics_host": "127.0.0.1",
        "metrics_port": 0,
        "kafka": {**client_config_from_env(), **overrides.pop("kafka", {})},
    }
    values.update(overrides)
    return IngestSettings(**values)


class IngestThread:
    """An :class:`IngestServer` on its own event loop in a thread; ``stop()`` is what SIGTERM does."""

    def __init__(self, settings: IngestSettings) -> None:
        configure_logging(settings.log_level, stream=_LOG)
        self._log_start = len(_LOG.getvalue())
        self.server = IngestServer(settings, ssl_context=tls_context(settings))
        self.left: int | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-ingest", daemon=True)

    def _run(self) -> None:
        try:
            self.left = asyncio.run(self.server.serve(on_ready=lambda _: self._ready.set()))
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()

    def start(self) -> Self:
        self._thread.start()
        self._ready.wait(30)
        if self.error is not None:
            raise self.error
        # Requests are turned away (503) until the producer has reached a broker: milliseconds.
        deadline = time.monotonic() + 30
        while not self.server.health.ready and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.health.ready, (
            f"ingest did not reach a broker within 30 s: {self.server.health.not_ready_because}"
        )
        return self

    def stop(self, timeout: float = 60.0) -> int | None:
        self.server.request_stop()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"ingest did not stop within {timeout:g} s"
        if self.error is not None:
            raise self.error
        return self.left

    @property
    def url(self) -> str:
        return self.server.url

    def log(self) -> str:
        """The JSON log written since this server was built (shared with servers built later)."""
        return _LOG.getvalue()[self._log_start :]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self.stop()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any  # the JSON body, or the text when it is not JSON

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("Retry-After")


def post(
    url: str,
    body: bytes | dict[str, Any],
    *,
    content_type: str | None = "application/json",
    token: str | None = None,
    timeout: float = 60.0,
    context: ssl.SSLContext | None = None,
) -> Answer:
    """``POST body`` (a dict is sent as JSON) and the answer, whatever its status."""
    data = orjson.dumps(body) if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method="POST")
    if content_type is not None:
        request.add_header("Content-Type", content_type)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return _answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return _answer(error.code, dict(error.headers), error.read())


def _answer(status: int, headers: dict[str, str], raw: bytes) -> Answer:
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = raw.decode("utf-8", "replace")
    return Answer(status, headers, body)


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(record) + b"\n" for record in records)
