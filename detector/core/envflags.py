"""Command-line options from the environment, for commands parsed by plain argparse.

``detector run`` and ``detector replay`` read ``FLOWWARDEN_<OPTION>`` through their settings classes
(:mod:`detector.stream.settings`); the other commands (``detector score``, ``detector broker``, every ``trainer``
command) get the same rule here: an option not given on the command line is taken from the environment,
as if it had been typed, so it goes through the same checks as a flag and a flag always wins.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Collection, Mapping, Sequence

ENV_PREFIX = "FLOWWARDEN_"
_TRUE = {"1", "true", "yes", "on"}


def env_name(flag: str) -> str:
    """``--label-map`` → ``FLOWWARDEN_LABEL_MAP``."""
    return ENV_PREFIX + flag.removeprefix("--").upper().replace("-", "_")


def options_from_environment(
    argv: Sequence[str],
    parser: argparse.ArgumentParser,
    *,
    commands: Collection[str] | None = None,
    skip: Collection[str] = (),
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """``argv`` plus each option of its subcommand that is not given but set as ``FLOWWARDEN_<OPTION>``.

    ``argv`` starts with the subcommand's name; only the subcommands in ``commands`` (all when None) take
    options from the environment, and never the flags in ``skip``. An option of several values
    (``nargs="+"``) takes them separated by spaces (shell quoting applies); a switch is on for
    ``1``/``true``/``yes``/``on`` and off otherwise; ``--help`` is never read.
    """
    argv = list(argv)
    environ = os.environ if environ is None else environ
    subcommands = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = subcommands.get(argv[0]) if argv else None
    if command is None or (commands is not None and argv[0] not in commands):
        return argv
    given = {token.split("=", 1)[0] for token in argv if token.startswith("--")}
    for action in command._actions:
        flags = [flag for flag in action.option_strings if flag.startswith("--")]
        if not flags or flags[0] in given or flags[0] in skip or flags[0] == "--help":
            continue
        value = environ.get(env_name(flags[0]))
        if value is None:
            continue
        if action.nargs == 0:
            argv += [flags[0]] if value.strip().lower() in _TRUE else []
        elif action.nargs in ("+", "*"):
            argv += [flags[0], *shlex.split(value)]
        else:
            argv += [f"{flags[0]}={value}"]
    return argv
