"""The ``detector`` command line: ``detector <command> [options]``.

Each subcommand is one ``cmd_<name>(args) -> int`` function registered in :func:`build_parser` through
``set_defaults(handler=...)``; :func:`main` parses, dispatches and returns the exit status. Add a command
by writing its function and one ``_add_<name>`` block in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from detector.broker import BrokerError, EmbeddedBroker

DEFAULT_BROKER_PORT = 9092


def cmd_broker(args: argparse.Namespace) -> int:
    """Run the embedded Tansu broker in the foreground until Ctrl-C or SIGTERM."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with EmbeddedBroker(args.port, log_path=args.log) as broker:
            print(f"broker ready: {broker.bootstrap_servers}", flush=True)
            print("memory-only storage: stopping the broker loses every topic and offset", flush=True)
            while not stop.wait(0.5):
                if not broker.running:
                    print(f"error: the broker exited unexpectedly; log:\n{broker.log_tail()}", file=sys.stderr)
                    return 1
            print("stopping the broker", flush=True)
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _add_broker(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "broker",
        help="run the embedded Kafka-protocol broker (Tansu) for the demo and tests",
        description="Run an in-memory Kafka-protocol broker (Tansu) on 127.0.0.1 until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_BROKER_PORT, help="listening port (default: %(default)s)")
    parser.add_argument("--log", default=None, help="file for the broker's own log (default: a temporary file)")
    parser.set_defaults(handler=cmd_broker)


def build_parser() -> argparse.ArgumentParser:
    """The full ``detector`` argument parser."""
    parser = argparse.ArgumentParser(prog="detector", description="flowwarden: real-time malicious-flow detector.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_broker(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``detector`` console script; returns the process exit status."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
