"""The Makefile's user-facing targets call commands that exist.

`make demo` once ran a module that had lost its entry point: it exited 0 having done nothing. Each target
here is dry-run with `make -n`, and its last command is run with `--help`, which must print that command's
options.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def recipe(target: str, **variables: str) -> list[str]:
    """The commands `make -n TARGET` would run (setup's are already satisfied or harmless to print)."""
    assignments = [f"{name}={value}" for name, value in variables.items()]
    out = subprocess.run(
        ["make", "-n", "-s", target, *assignments], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("target", "expected"),
    [("demo", "--data"), ("bench", "--e2e-flows"), ("bench-candidates", "--batch")],
)
def test_a_target_runs_a_command_that_answers_help(target: str, expected: str) -> None:
    command = shlex.split(recipe(target, DEMO_ARGS="--help", BENCH_ARGS="--help")[-1])
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout, f"`make {target}` runs {command}, whose --help does not list {expected}"
