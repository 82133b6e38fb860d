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

from detector.core.envflags import options_from_environment
from detector.tools.broker import BrokerError, EmbeddedBroker

DEFAULT_BROKER_PORT = 9092


def cmd_broker(args: argparse.Namespace) -> int:
    """Run the embedded Tansu broker in the foreground until Ctrl-C or SIGTERM: exit 0 after a clean stop,
    2 when it cannot start (the port is taken, no binary), 1 when it dies while running."""
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
    except BrokerError as exc:  # it could not start: a taken port, a missing binary
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
    port_help = "listening port, 0 for any free one (default: %(default)s)"
    parser.add_argument("--port", type=_port, default=DEFAULT_BROKER_PORT, help=port_help)
    parser.add_argument("--log", default=None, help="file for the broker's own log (default: a temporary file)")
    parser.set_defaults(handler=cmd_broker)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is between 0 and 65535, not {port}")
    return port


_RUN_SETTINGS = (
    "bootstrap_servers",
    "input_topic",
    "output_topic",
    "dlq_topic",
    "group_id",
    "bundle",
    "threads",
    "guarantee",
    "max_batch",
    "max_delay_ms",
    "device",
    "emit",
    "metrics_port",
    "metrics_host",
    "no_metrics",
    "transactional_id",
    "max_record_bytes",
    "max_in_flight_batches",
    "registry_poll_seconds",
    "create_topics",
    "log_level",
)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the streaming worker: exit 0 after SIGTERM/SIGINT, 1 on a fatal error, 2 on a start-up error."""
    from detector.stream.runner import EXIT_USAGE, run_from_flags  # imports torch: only the commands that score do
    from detector.stream.settings import SettingsError, parse_kafka_options

    try:
        kafka = parse_kafka_options(args.kafka_option)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    flags = {name: getattr(args, name) for name in _RUN_SETTINGS}
    return run_from_flags({**flags, "kafka": kafka}, args.config)


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run",
        help="score flow records from Kafka and produce alerts (the streaming worker)",
        description="Consume flow records, score them in micro-batches with a model bundle, produce alerts and "
        "dead letters. Every option can also be set as FLOWWARDEN_<OPTION> or in the --config TOML file; "
        "librdkafka properties pass through with --kafka-option, FLOWWARDEN_KAFKA__<NAME> or a [kafka] table.",
    )
    add = parser.add_argument
    add("--bootstrap-servers", metavar="HOST:PORT[,...]", help="Kafka bootstrap servers (default 127.0.0.1:9092)")
    add("--input-topic", metavar="TOPIC", help="flow records to score (default flows)")
    add("--output-topic", metavar="TOPIC", help="alerts (default alerts)")
    add("--dlq-topic", metavar="TOPIC", help="dead letters: records that cannot be scored (default flows.dlq)")
    add("--group-id", metavar="GROUP", help="consumer group shared by all workers (default flowwarden-detector)")
    add("--bundle", metavar="BUNDLE_OR_REGISTRY", help="a model bundle, or a registry to follow (hot swap)")
    add("--guarantee", metavar="exactly-once|at-least-once", help="delivery guarantee (default exactly-once)")
    add("--max-batch", metavar="N", help="records per micro-batch at most (default 512)")
    add("--max-delay-ms", metavar="MS", help="longest wait for a batch to fill after its first record (default 50)")
    add("--device", metavar="auto|cpu|cuda", help="where the model runs (default auto)")
    add("--threads", metavar="N", help="CPU threads for the model (default: torch's choice, one per core)")
    add(
        "--emit",
        metavar="attacks|flagged|all",
        help="alerts for flows classified as attacks, for attacks and novel flows (flagged), "
        "or a verdict for every flow (default attacks)",
    )
    add("--metrics-port", metavar="PORT", help="port of /metrics, /healthz, /readyz (default 9108; 0: any free port)")
    add("--metrics-host", metavar="ADDRESS", help="address the metrics server binds (default 0.0.0.0)")
    add("--no-metrics", action="store_const", const=True, help="serve no metrics or probes")
    add("--transactional-id", metavar="ID", help="exactly-once: a stable id per worker slot (default: unique)")
    add("--max-record-bytes", metavar="BYTES", help="larger records are dead-lettered (default 65536)")
    add("--max-in-flight-batches", metavar="N", help="at-least-once: batches awaiting acknowledgement (default 4)")
    add("--registry-poll-seconds", metavar="S", help="how often a registry is checked for a new version (default 2)")
    add("--create-topics", action="store_const", const=True, help="create missing topics (development clusters)")
    add(
        "--log-level",
        metavar="LEVEL",
        help="debug, info, warning or error (default info); debug also shows what --kafka-option debug=... asks for",
    )
    add("--kafka-option", action="append", metavar="KEY=VALUE", help="a librdkafka property (repeatable)")
    add("--config", metavar="FILE.toml", help="settings file (also FLOWWARDEN_CONFIG)")
    parser.set_defaults(handler=cmd_run)


def cmd_replay(args: argparse.Namespace) -> int:
    """Stream flow CSVs into a topic as JSON flow records (see detector.tools.replay)."""
    from detector.tools.replay import run_command

    return run_command(args)


def _add_replay(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "replay",
        help="stream flow CSVs (CICIDS2017, UNSW-NB15, CICFlowMeter) into a topic as JSON flow records",
        description="Stream flow CSVs into a Kafka topic as the JSON records a flow meter would send. Every "
        "option except the CSVs can also come from FLOWWARDEN_<OPTION> or the --config TOML file.",
    )
    parser.add_argument("csv", nargs="+", metavar="CSV", help="CSV files or folders (.csv, .csv.gz)")
    parser.add_argument("--bootstrap-servers", metavar="H:P", help="Kafka bootstrap servers")
    parser.add_argument("--topic", help="topic to write (created when missing; default flows)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, metavar="FLOWS_PER_S", help="send at this many flows per second")
    pace.add_argument("--speedup", type=float, metavar="X", help="replay the recorded inter-flow times X× faster")
    parser.add_argument("--limit", type=int, metavar="N", help="stop after N records")
    parser.add_argument("--with-labels", action="store_true", default=None, help="keep the label column(s)")
    parser.add_argument(
        "--order",
        choices=("shuffle", "file", "time"),
        help="shuffle (default; seeded), file (as read) or time (by flow timestamp; default with --speedup)",
    )
    parser.add_argument("--seed", type=int, help="shuffle seed (default 0)")
    parser.add_argument("--shuffle-buffer", type=int, metavar="N", help="flows held for shuffling (default 50000)")
    parser.add_argument("--loop", action="store_true", default=None, help="repeat the input until Ctrl-C or --limit")
    parser.add_argument("--partitions", type=int, metavar="N", help="partitions when creating the topic (default 3)")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (also FLOWWARDEN_CONFIG)")
    parser.add_argument(
        "--kafka-option", action="append", metavar="K=V", help="librdkafka setting, e.g. security.protocol=SSL"
    )
    parser.set_defaults(handler=cmd_replay)


def cmd_score(args: argparse.Namespace) -> int:
    """Score flow CSVs with a bundle to JSON lines, without Kafka (see detector.tools.score)."""
    from detector.tools.score import run_command

    return run_command(args)


def _add_score(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "score",
        help="score flow CSVs with a bundle to JSON lines (the stream's model path, no Kafka)",
        description="Score flow CSVs with a bundle: one JSON line per row (verdict, or error), a summary on stderr.",
        epilog="Exit status: 0 when rows were scored (error lines may be among them), 1 when no row could be "
        "scored, 2 for a usage error (bad file, bundle or device), 130 when interrupted.",
    )
    parser.add_argument("csv", nargs="+", metavar="CSV", help="CSV files or folders (.csv, .csv.gz)")
    parser.add_argument("--bundle", required=True, metavar="BUNDLE_OR_REGISTRY", help="bundle, .tar.gz or registry")
    parser.add_argument("--out", metavar="FILE.jsonl", help="write the JSON lines here (default: stdout)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: %(default)s")
    parser.add_argument(
        "--batch", type=_at_least_one, default=1024, metavar="N", help="rows per model call (default: %(default)s)"
    )
    parser.set_defaults(handler=cmd_score)


def _at_least_one(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The full ``detector`` argument parser."""
    parser = argparse.ArgumentParser(prog="detector", description="flowwarden: real-time malicious-flow detector.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_broker(commands)
    _add_run(commands)
    _add_replay(commands)
    _add_score(commands)
    return parser


# run and replay read FLOWWARDEN_<OPTION> through their settings classes (detector.stream.settings).
_PLAIN_ARGPARSE_COMMANDS = ("score", "broker")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``detector`` console script; returns the process exit status."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(options_from_environment(argv, parser, commands=_PLAIN_ARGPARSE_COMMANDS))
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
