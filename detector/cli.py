"""The ``detector`` command line: ``detector <command> [options]``.

Each command is a settings model (its options: flags, ``FLOWWARDEN_*`` variables, settings-file keys,
secret files, help; see :mod:`detector.core.settings`) and a handler that takes the validated settings and
returns an :class:`~detector.core.process.ExitCode`. Add a command by writing both and one
:class:`~detector.core.settings.Command` line in :func:`build_parser`. Commands import their heavy modules
(torch, Kafka clients, rich) only when they run, so ``--help`` is fast and the worker image, which has no
tools, still starts ``detector run``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

from detector.core.process import ExitCode
from detector.core.settings import Command, SettingsError, commands_of, with_version


def cmd_run(settings: object) -> int:
    """Run the streaming worker: exit 0 after SIGTERM/SIGINT, 1 on a fatal error, 2 on a start-up error."""
    from detector.stream.runner import run_worker  # imports torch: only the commands that score do

    return run_worker(settings)  # type: ignore[arg-type]


def cmd_check(settings: object) -> int:
    from detector.stream.check import run_command  # imports torch (the bundle check)

    return run_command(settings, timeout=settings.check_timeout)  # type: ignore[arg-type, attr-defined]


def check_settings_failed(error: Exception) -> int:
    """``detector check`` reports settings that cannot be used as its first failed check (exit 1), not as a
    usage error: checking them is its job."""
    from detector.stream.check import report, settings_failed

    return report(settings_failed(error))


def cmd_replay(settings: object) -> int:
    from detector.tools.replay import run_command

    return run_command(settings)  # type: ignore[arg-type]


def cmd_ingest(settings: object) -> int:
    try:
        from detector.tools.ingest import run_command
    except ImportError as exc:  # aiohttp is the `ingest` extra
        print(f"detector ingest: error: {exc}; install flowwarden[ingest]", file=sys.stderr, flush=True)
        return ExitCode.USAGE
    return run_command(settings)  # type: ignore[arg-type]


def cmd_score(settings: object) -> int:
    from detector.tools.score import run_command

    return run_command(settings)  # type: ignore[arg-type]


def cmd_drift(settings: object) -> int:
    from detector.tools.drift import run_command

    return run_command(settings)  # type: ignore[arg-type]


def cmd_broker(settings: object) -> int:
    from detector.tools.broker import run_command

    return run_command(settings)  # type: ignore[arg-type]


def cmd_demo(settings: object) -> int:
    from detector.tools.demo import run_command

    return run_command(settings)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    """The full ``detector`` argument parser, every command's options generated from its settings model."""
    from detector.stream.settings import CheckSettings, RunSettings

    parser = argparse.ArgumentParser(prog="detector", description="flowwarden: real-time malicious-flow detector.")
    with_version(parser, version("flowwarden"))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    try:
        from detector.tools import settings as tools
    except ImportError:  # the worker image carries core and stream only: `detector run` alone
        tools = None
    # One settings file can serve both Kafka commands (brokers, [kafka] credentials): a key of either is fine.
    kafka_keys = set(CheckSettings.model_fields)
    if tools is not None:
        kafka_keys |= set(tools.ReplaySettings.model_fields) | set(tools.IngestSettings.model_fields)
    Command(
        commands,
        "run",
        RunSettings,
        help="score flow records from Kafka and produce alerts (the streaming worker)",
        epilog="Exit status: 0 after SIGTERM/SIGINT, 1 on a fatal error, 2 for a start-up error.",
        file_keys=kafka_keys,
        handler=cmd_run,
    )
    check = Command(
        commands,
        "check",
        CheckSettings,
        help="check a detector run configuration: settings, bundle, device, alert policy, metrics port, brokers, "
        "credentials, topics",
        epilog="Exit status: 0 when every check passed, 1 when one failed (each failure on its own line), 2 for a "
        "usage error.",
        file_keys=kafka_keys,
        handler=cmd_check,
    )
    check.parser.set_defaults(on_settings_error=check_settings_failed)
    if tools is not None:
        _add_tools(commands, tools, kafka_keys)
    parser.set_defaults(_commands=commands_of(commands))
    return parser


def _add_tools(commands: Any, tools: Any, kafka_keys: set[str]) -> None:
    Command(
        commands,
        "replay",
        tools.ReplaySettings,
        help="stream flow CSVs (CICIDS2017, UNSW-NB15, CICFlowMeter) into a topic as JSON flow records",
        epilog="Exit status: 0 when every record was delivered, 1 when some failed or none was sent, "
        "2 for a usage error, 130 when interrupted (with --follow, which ends only so: 0).",
        file_keys=kafka_keys,
        handler=cmd_replay,
    )
    Command(
        commands,
        "ingest",
        tools.IngestSettings,
        help="an HTTP intake flow meters post flow records to (JSON or NDJSON), written to the flows topic",
        epilog="Exit status: 0 after SIGTERM/SIGINT, 1 when records were left unsent at the end, 2 for a "
        "start-up error (settings, TLS files, port, missing topic).",
        file_keys=kafka_keys,
        handler=cmd_ingest,
    )
    Command(
        commands,
        "score",
        tools.ScoreSettings,
        help="score flow CSVs with a bundle to JSON lines (the stream's model path, no Kafka)",
        epilog="Exit status: 0 when rows were scored (error lines may be among them), 1 when no row could be "
        "scored, 2 for a usage error (bad file, bundle or device), 130 when interrupted.",
        handler=cmd_score,
    )
    Command(
        commands,
        "drift",
        tools.DriftSettings,
        help="measure how far flow files are from a bundle's training data (PSI per feature)",
        epilog="Exit status: 0 with a report, 1 when --fail-on is given and a feature reaches that level (or no "
        "row could be decoded), 2 for a usage error (bad file, or a bundle without drift.json), 130 when "
        "interrupted.",
        handler=cmd_drift,
    )
    Command(
        commands,
        "broker",
        tools.BrokerSettings,
        help="run the embedded Kafka-protocol broker (Tansu) for the demo and tests",
        epilog="Exit status: 0 after Ctrl-C/SIGTERM, 2 when it cannot start, 1 when it dies while running.",
        handler=cmd_broker,
    )
    Command(
        commands,
        "demo",
        tools.DemoSettings,
        help="the demo (make demo): train, serve on the embedded broker, replay, live metrics, evaluation",
        epilog="Exit status: 0 when the stream agreed with the trainer, 1 when a step failed, 2 for a usage "
        "error, 130 when interrupted.",
        files=False,
        handler=cmd_demo,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``detector`` console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    command: Command = args._command
    try:
        settings = command.settings(args)
    except SettingsError as exc:
        on_error = getattr(args, "on_settings_error", None)
        if on_error is not None:
            return int(on_error(exc))
        print(f"detector {command.name}: error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.USAGE
    return int(args.handler(settings))


if __name__ == "__main__":
    sys.exit(main())
