"""Progress bars with ETA for each training stage, and one line per finished epoch.

Long CPU runs (a ``paper`` fit takes the better part of an hour on two cores) must show where they are
and how long is left. Tests and library callers pass ``enabled=False``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    """Stage progress and notes on stderr (stdout stays free for machine-readable output)."""

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self.stage_seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage of the run (wall seconds, added up when a stage runs more than once): the report's
        ``stage_seconds`` and the summary say where a run's time went."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[name] = round(self.stage_seconds.get(name, 0.0) + time.perf_counter() - started, 2)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """A progress bar for ``total`` steps; yields ``advance(n)``."""
        if not self.enabled:
            yield lambda n=1: None
            return
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, soft_wrap=True)

    def warn(self, text: str) -> None:
        """A problem the user must see, also with progress turned off (``--quiet``)."""
        self.console.print(f"[yellow]warning: {text}[/yellow]", soft_wrap=True)

    def result(self, text: str) -> None:
        """What the command did (e.g. published a version): printed also with ``--quiet``."""
        self.console.print(text, soft_wrap=True)
