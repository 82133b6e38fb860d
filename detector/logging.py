"""Structured logs: one JSON object per line on stderr (structlog), librdkafka's own logs included.

Every event has ``event``, ``level`` and ``timestamp`` (UTC, ISO 8601); the rest are key/value fields.
Nothing here redacts: callers must pass Kafka configuration through :func:`detector.settings.redact`
before logging it, and must never log a raw librdkafka config.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _dumps(event: dict[str, Any], **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


def configure_logging(level: str = "info", stream: IO[str] | None = None) -> None:
    """Send every structlog event at ``level`` or above to ``stream`` (default: stderr) as a JSON line."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A structlog logger whose events carry ``component=name``."""
    return structlog.get_logger(component=name)


class _StructlogHandler(logging.Handler):
    """Forwards stdlib records (librdkafka's, through confluent-kafka's ``logger`` setting) to structlog."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._log = get_logger(name)

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname.lower()
        method = getattr(self._log, level if level in _LEVELS else "warning")
        method("librdkafka", message=record.getMessage())


def librdkafka_logger(name: str = "librdkafka") -> logging.Logger:
    """A stdlib logger for confluent-kafka's ``logger`` config key: librdkafka's lines become JSON events."""
    logger = logging.getLogger(f"flowwarden.{name}")
    if not any(isinstance(h, _StructlogHandler) for h in logger.handlers):
        logger.addHandler(_StructlogHandler(name))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger
