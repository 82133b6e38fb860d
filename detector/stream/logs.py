"""Structured logs: one JSON object per line on stderr (structlog), librdkafka's own logs included; or, for a
person at a terminal (``--log-format console``, or ``auto`` on a terminal), the same events as aligned lines.

Every event has ``event``, ``level`` and ``timestamp`` (UTC, ISO 8601); the rest are key/value fields.
Nothing here redacts: callers must pass Kafka configuration through :func:`detector.stream.settings.redact`
before logging it, and must never log a raw librdkafka config.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_LIBRDKAFKA_LEVEL = logging.INFO  # of the librdkafka loggers; configure_logging sets it


def _dumps(event: dict[str, Any], **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


def log_renderer(log_format: str, stream: IO[str]) -> Any:
    """The structlog renderer of ``--log-format``: ``json`` (one object per line, for machines), ``console``
    (aligned ``time level event key=value`` lines, for people), ``auto`` (console when ``stream`` is a terminal,
    else JSON: containers, systemd and pipes get JSON)."""
    if log_format == "auto":
        log_format = "console" if _is_terminal(stream) else "json"
    if log_format == "console":
        return structlog.dev.ConsoleRenderer(
            colors=_is_terminal(stream), exception_formatter=structlog.dev.plain_traceback
        )
    if log_format != "json":
        raise ValueError(f"unknown log format {log_format!r}")
    return structlog.processors.JSONRenderer(serializer=_dumps)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-like stream without a terminal
        return False


def configure_logging(level: str = "info", stream: IO[str] | None = None, log_format: str = "json") -> None:
    """Send every structlog event at ``level`` or above to ``stream`` (default: stderr), one line each, as JSON
    or for a console (:func:`log_renderer`).

    librdkafka's lines follow the same level: ``debug`` shows what ``--kafka-option debug=...`` asks for.
    """
    global _LIBRDKAFKA_LEVEL
    _LIBRDKAFKA_LEVEL = _LEVELS[level]
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("flowwarden."):
            logging.getLogger(name).setLevel(_LIBRDKAFKA_LEVEL)
    renderer = log_renderer(log_format, stream or sys.stderr)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *([structlog.processors.format_exc_info] if _renders_json(renderer) else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or _CurrentStderr()),
        cache_logger_on_first_use=False,
    )


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of each line, not when logging was configured: a
    process (or a test harness) that replaces stderr later must not leave the logs writing to a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _renders_json(renderer: Any) -> bool:
    return isinstance(renderer, structlog.processors.JSONRenderer)


def get_logger(name: str) -> Any:
    """A structlog logger whose events carry ``component=name``."""
    return structlog.get_logger(component=name)


#: librdkafka repeats a failing connection's error every few hundred milliseconds (20 lines a second per
#: client during an outage); one line per kind of message per this many seconds says the same.
REPEAT_WINDOW_S = 60.0


class RepeatFilter(logging.Filter):
    """Lets the first of a run of similar messages through, then one per ``window`` seconds.

    Messages are similar when they differ only in numbers (librdkafka's lines carry changing counts and
    times). The next message let through carries ``suppressed``: how many similar ones were dropped.
    """

    def __init__(self, window: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self._clock = clock
        self._runs: dict[str, list[float | int]] = {}  # similar-message key -> [time let through, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG:
            return True  # asked for explicitly (--log-level debug): every line
        key = f"{record.levelno}:{_DIGITS.sub('#', record.getMessage())}"
        now = self._clock()
        run = self._runs.get(key)
        if run is not None and now - run[0] < self.window:
            run[1] += 1
            return False
        record.suppressed = int(run[1]) if run is not None else 0
        if run is None and len(self._runs) >= _MAX_RUNS:
            self._runs.clear()  # bounded memory: forgetting old runs only lets one more line through
        self._runs[key] = [now, 0]
        return True


_DIGITS = re.compile(r"\d+")
_MAX_RUNS = 1024


class _StructlogHandler(logging.Handler):
    """Forwards stdlib records (librdkafka's, through confluent-kafka's ``logger`` setting) to structlog."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._log = get_logger(name)

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname.lower()
        method = getattr(self._log, level if level in _LEVELS else "warning")
        suppressed = getattr(record, "suppressed", 0)
        method("librdkafka", message=record.getMessage(), **({"suppressed": suppressed} if suppressed else {}))


def librdkafka_logger(name: str = "librdkafka") -> logging.Logger:
    """A stdlib logger for confluent-kafka's ``logger`` config key: librdkafka's lines become JSON events,
    repeats thinned out by :class:`RepeatFilter`."""
    return _logger(name, lambda: _StructlogHandler(name))


def console_librdkafka_logger(name: str = "librdkafka") -> logging.Logger:
    """Like :func:`librdkafka_logger` for commands that talk to people (``replay``): plain lines on stderr."""

    def handler() -> logging.Handler:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("librdkafka %(levelname)s: %(message)s"))
        return console

    return _logger(f"console.{name}", handler)


def _logger(name: str, make_handler: Callable[[], logging.Handler]) -> logging.Logger:
    logger = logging.getLogger(f"flowwarden.{name}")
    if not logger.handlers:
        handler = make_handler()
        handler.addFilter(RepeatFilter())
        logger.addHandler(handler)
    logger.setLevel(_LIBRDKAFKA_LEVEL)
    logger.propagate = False
    return logger
