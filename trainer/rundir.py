"""The run directory a command writes, checked before any work starts.

Training takes minutes to hours, so an ``--out`` that cannot be written, or that already holds a finished
run, must be refused before the data is even loaded, not after the last epoch. A run directory is never
overwritten: the reports, plots and bundle in it belong together, and replacing some of them would leave a
folder whose files describe different runs.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Files whose presence means a directory already holds a run.
RUN_FILES = ("report.json", "bundle")


class RunDirError(ValueError):
    """An ``--out`` directory that cannot or must not be written; the message says why."""


def check_run_dir(out: str | Path) -> Path:
    """Check that ``out`` can become this run's directory: writable, and holding no earlier run.

    Nothing is created here: a command refused later (bad data, a bad registry) leaves no empty directory
    behind. The writers create ``out`` with its parents.

    Raises
    ------
    RunDirError
        ``out`` is a file, cannot be created or written, or already holds ``report.json`` or ``bundle/``.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {path} is a file, not a directory")
    earlier = [name for name in RUN_FILES if (path / name).exists()]
    if earlier:
        raise RunDirError(
            f"--out {path} already holds a run ({', '.join(earlier)}); choose a new directory or remove it"
        )
    existing = next(parent for parent in (path, *path.absolute().parents) if parent.exists())
    if not existing.is_dir():
        raise RunDirError(f"--out {path} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"--out {path} cannot be written: {existing} is not writable")
    return path
