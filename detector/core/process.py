"""Process plumbing every command shares: exit statuses and how SIGTERM / Ctrl-C stop a command.

One meaning per exit status, for operators' scripts and orchestrators:

* :attr:`ExitCode.OK` (0): the command did its work (a worker stopped cleanly by SIGTERM included);
* :attr:`ExitCode.FAILURE` (1): it ran and failed: a fatal Kafka error, a delivery that failed, nothing to
  score or send;
* :attr:`ExitCode.USAGE` (2): a user error found before any work: settings, data, bundle, device, a taken port;
* :attr:`ExitCode.INTERRUPTED` (130): stopped by Ctrl-C or SIGTERM before its work was done.

Commands stop in one of two ways, each a context manager here: a long-running service (the worker, the
broker) is asked to stop by a callback (:func:`stop_on_signals`); a batch command (replay, score, the
trainer) is interrupted where it stands, SIGTERM raising ``KeyboardInterrupt`` as Ctrl-C does
(:func:`sigterm_interrupts`), so that ``timeout`` and ``docker stop`` end it like Ctrl-C: flushed, with
its summary.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from enum import IntEnum
from types import FrameType
from typing import Any


class ExitCode(IntEnum):
    """The exit statuses of every flowwarden command (see the module docstring)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    INTERRUPTED = 130


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Call ``stop`` on SIGTERM or SIGINT while inside; the previous handlers come back on exit.

    ``stop`` runs in a signal handler: it must only set a flag or an event. Off the main thread (a command
    run from a test's thread) signals cannot be handled and nothing is installed.
    """
    if not _on_main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop()

    previous: dict[int, Any] = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside, SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does; the previous handler comes back on exit."""
    if not _on_main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
