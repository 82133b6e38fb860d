"""flowwarden's detector: the streaming worker, its tools, and a small Python API.

``detector.load(path)`` gives a :class:`detector.api.Detector` whose ``predict(frame_or_rows)`` scores flows
the way ``detector score`` and the worker do (see :mod:`detector.api`). The rooms of the package are laid out
in docs/architecture.md: ``core`` (shared with the trainer), ``stream`` (the Kafka worker), ``tools``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detector.api import Detector, load

__all__ = ["Detector", "load"]


def __getattr__(name: str) -> Any:
    """The API is imported on first use: ``import detector`` alone must not import torch (CLI start-up)."""
    if name in __all__:
        from detector import api

        return getattr(api, name)
    raise AttributeError(f"module 'detector' has no attribute {name!r}")
