"""``make demo``: train, publish, stream held-out flows through a real worker, and check the verdicts.

One command from a fresh clone shows the whole product on one machine::

    embedded broker → trainer fit (quick) → bundle published to a registry → topics → detector run worker
    → replay of the run's held-out rows (with labels) → live view from the worker's /metrics
    → every verdict read back (read_committed) → online evaluation next to the trainer's offline numbers

The online numbers are computed from what actually came out of Kafka, so they check the whole path
(replay encoding, decoding, batching, exactly-once delivery), not just the model. Nothing here imports the
trainer: it runs as a subprocess (``python -m trainer.cli``), as a user would run it.

Every process the demo starts (broker, trainer, worker, replay thread) is stopped on the way out, also
on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, deque
from pathlib import Path
from typing import IO, Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from detector.core.process import ExitCode, sigterm_interrupts
from detector.core.registry import publish
from detector.stream.topics import TopicError, ensure_topics
from detector.tools.broker import BrokerError, EmbeddedBroker, free_port
from detector.tools.demo_data import DemoDataError, ReplaySet, check_run, find_training_data, prepare_replay_set
from detector.tools.demo_view import Snapshot, histogram_quantile, render, scrape
from detector.tools.online_eval import Evaluation, evaluation_table, from_confusion
from detector.tools.replay import ReplayStats, replay
from detector.tools.settings import DemoSettings, ReplaySettings

REPO = Path(__file__).resolve().parents[2]
FLOWS, VERDICTS, DEAD_LETTERS = "demo.flows", "demo.verdicts", "demo.flows.dlq"
GROUP = "flowwarden-demo"
# Tansu answers a JoinGroup after about half the session timeout: keep it short for a snappy start.
WORKER_KAFKA = ("session.timeout.ms=6000", "heartbeat.interval.ms=500")
READY_TIMEOUT_S = 240.0
STALL_TIMEOUT_S = 120.0
READ_TIMEOUT_S = 120.0


def create_demo_topics(bootstrap: str) -> None:
    """The demo's topics, with the broker's default configuration: flows and verdicts 3 partitions, dead
    letters 1. Raises :class:`~detector.stream.topics.TopicError`."""
    for topic, partitions in ((FLOWS, 3), (VERDICTS, 3), (DEAD_LETTERS, 1)):
        ensure_topics(bootstrap, [topic], partitions=partitions)


class DemoError(RuntimeError):
    """A step failed; the message says which and where its log is."""


class Demo:
    """The demo's steps and everything they start, so that :meth:`close` can stop all of it."""

    def __init__(self, args: DemoSettings, console: Console) -> None:
        self.args = args
        self.console = console
        self.work = (args.work if args.work.is_absolute() else REPO / args.work).resolve()
        self.logs = self.work / "logs"
        self.started = time.monotonic()
        self.broker: EmbeddedBroker | None = None
        self.trainer: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_log: IO[bytes] | None = None
        self.stop = threading.Event()
        self.replay_thread: threading.Thread | None = None
        self.replay_error: BaseException | None = None
        self.step = 0

    # --- the steps ------------------------------------------------------------------------------------

    def run(self) -> int:
        data = None if self.args.run else find_training_data(self.args.data)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._step("embedded Kafka-protocol broker (Tansu, memory only)")
        self.broker = EmbeddedBroker(log_path=self.logs / "broker.log").start()
        bootstrap = self.broker.bootstrap_servers
        self._say(f"listening on {bootstrap}")

        run = Path(self.args.run).resolve() if self.args.run else self._train(data)
        check_run(run)
        report = json.loads((run / "report.json").read_text(encoding="utf-8"))

        self._step("publish the bundle to a registry")
        registry = self.work / "registry"
        shutil.rmtree(registry, ignore_errors=True)
        version = publish(run / "bundle", registry)
        manifest = json.loads((registry / "versions" / version / "manifest.json").read_text(encoding="utf-8"))
        self._say(f"{registry}/LATEST → {version} ({len(manifest['classes'])} classes)")

        self._step("topics")
        create_demo_topics(bootstrap)
        self._say(f"{FLOWS} (3 partitions) → worker → {VERDICTS} (3) and {DEAD_LETTERS} (1)")

        self._step("detector run worker (exactly-once, a verdict for every flow)")
        metrics_port = self._start_worker(bootstrap, registry)

        self._step("replay the held-out test rows, with labels")
        replay_set = prepare_replay_set(run, self.work, self.args.limit or None, self.args.seed)
        self._describe_replay(replay_set)
        stats = self._replay_live(bootstrap, replay_set, metrics_port)

        self._step(f"read every verdict back from {VERDICTS} (read_committed)")
        final = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        expected = int(final.alerts_out)
        pairs, duplicates, without_truth, read = read_verdicts(bootstrap, VERDICTS, expected, self.console)
        self._say(
            f"{read:,} verdicts read ({expected:,} produced by the worker); duplicates by alert_id: {duplicates}; "
            f"without ground truth: {without_truth}; novel (unlike the training data): {sum(final.novel.values()):,.0f}"
        )

        self._step("online evaluation: streamed verdicts vs ground truth, next to the offline report")
        streamed = from_confusion(pairs, manifest["classes"])
        offline_same_rows = from_confusion(replay_set.offline, manifest["classes"])
        self.console.print(
            evaluation_table(
                streamed,
                f"streamed verdicts ({streamed.n:,} flows) vs ground truth",
                offline_same_rows.as_dict(),
                reference_name="trainer, same rows",
            )
        )
        self.console.print(headline_table(streamed, offline_same_rows, report, replay_set))
        agreement = describe_agreement(pairs, replay_set.offline)
        self.console.print(agreement, highlight=False)
        problems = self._problems(stats, final, expected, read, replay_set)
        self._closing_summary(stats, final, run, problems)
        return ExitCode.FAILURE if problems else ExitCode.OK

    def _train(self, data: Path | None) -> Path:
        run = self.work / "run"
        self._step(f"train a model: trainer fit --profile {self.args.profile} on {data}")
        if run.exists():
            self._say(f"replacing the previous demo run in {run}")
            shutil.rmtree(run)
        command = [sys.executable, "-m", "trainer.cli", "fit", "--data", str(data), "--profile", self.args.profile]
        self.trainer = subprocess.Popen([*command, "--out", str(run)], cwd=REPO, stdin=subprocess.DEVNULL)
        status = self.trainer.wait()
        self.trainer = None
        if status != 0:
            raise DemoError(f"training failed with exit status {status} (its messages are above)")
        self._say(f"trained in {time.monotonic() - self.started:,.0f} s; next time skip it with --run {run}")
        return run

    def _start_worker(self, bootstrap: str, registry: Path) -> int:
        port = free_port()
        command = [
            *(sys.executable, "-m", "detector.cli", "run", "--bootstrap-servers", bootstrap),
            *("--input-topic", FLOWS, "--output-topic", VERDICTS, "--dlq-topic", DEAD_LETTERS),
            *("--group-id", GROUP, "--bundle", str(registry), "--guarantee", "exactly-once", "--emit", "all"),
            *("--device", self.args.device, "--threads", "1", "--max-batch", "512", "--max-delay-ms", "50"),
            *("--metrics-host", "127.0.0.1", "--metrics-port", str(port)),
        ]
        for option in WORKER_KAFKA:
            command += ["--kafka-option", option]
        log_path = self.logs / "worker.log"
        self.worker_log = log_path.open("ab")
        self.worker = subprocess.Popen(
            command,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self.worker_log,
            stderr=self.worker_log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # Ctrl-C reaches the demo, which then stops the worker in order
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        with self.console.status(f"waiting for the worker (pid {self.worker.pid}) to load the model and join"):
            while not _answers(f"http://127.0.0.1:{port}/readyz"):
                if self.worker.poll() is not None:
                    raise DemoError(f"the worker exited with status {self.worker.returncode}:\n{_tail(log_path)}")
                if time.monotonic() > deadline:
                    raise DemoError(f"the worker was not ready within {READY_TIMEOUT_S:g} s:\n{_tail(log_path)}")
                time.sleep(0.5)
        self._say(f"worker pid {self.worker.pid} ready; metrics http://127.0.0.1:{port}/metrics; log {log_path}")
        return port

    def _describe_replay(self, replay_set: ReplaySet) -> None:
        if replay_set.rows < replay_set.held_out:
            self._say(
                f"[bold]replaying a seeded sample of {replay_set.rows:,} of the {replay_set.held_out:,} held-out "
                f"rows[/bold] (--limit {replay_set.rows}; --limit 0 replays them all) at {self.args.rate:g} flows/s"
            )
        else:
            self._say(f"replaying all {replay_set.rows:,} held-out rows at {self.args.rate:g} flows/s")

    def _replay_live(self, bootstrap: str, replay_set: ReplaySet, metrics_port: int) -> ReplayStats:
        settings = ReplaySettings(
            csv=[replay_set.path],
            bootstrap_servers=bootstrap,
            topic=FLOWS,
            rate=self.args.rate,
            with_labels=True,
            order="shuffle",
            seed=self.args.seed,
            partitions=3,
        )
        stats = ReplayStats(FLOWS, with_labels=True, total=replay_set.rows)
        self.replay_thread = threading.Thread(
            target=self._replay, args=(replay_set.path, settings, stats), name="demo-replay", daemon=True
        )
        self.replay_thread.start()
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        history: deque[Snapshot] = deque(maxlen=8)
        last_change, last_processed = time.monotonic(), -1.0
        note = "[dim]Ctrl-C stops the demo and cleans up[/dim]"
        title = f"flowwarden demo · {FLOWS} → worker → {VERDICTS}"
        with Live(console=self.console, refresh_per_second=4, transient=False) as live:
            while True:
                now = scrape(url)
                history.append(now)
                live.update(render(stats, now, history[0] if len(history) > 1 else None, title=title, note=note))
                if self.worker is not None and self.worker.poll() is not None:
                    raise DemoError(f"the worker exited with status {self.worker.returncode}:\n{self._worker_tail()}")
                processed = now.scored + now.dead
                if processed != last_processed:
                    last_change, last_processed = time.monotonic(), processed
                if not self.replay_thread.is_alive():
                    if self.replay_error is not None:
                        raise DemoError(f"the replay failed: {self.replay_error}")
                    if processed >= stats.delivered:
                        break
                    if time.monotonic() - last_change > STALL_TIMEOUT_S:
                        self._say(f"[yellow]the worker made no progress for {STALL_TIMEOUT_S:g} s; going on[/yellow]")
                        break
                time.sleep(0.5)
        if not self.console.is_terminal:
            self.console.line()  # a terminal gets this line from Live itself; a log file would run on
        self._say(
            f"replay: {stats.delivered:,} flows delivered in {stats.elapsed:,.1f} s ({stats.achieved_rate:,.0f} "
            f"flows/s); delivery failures {stats.failed}"
        )
        return stats

    def _replay(self, path: Path, settings: ReplaySettings, stats: ReplayStats) -> None:
        try:
            replay([path], settings, stop=self.stop, stats=stats)
        except BaseException as exc:  # reported by the live loop in the main thread
            self.replay_error = exc

    def _problems(
        self, stats: ReplayStats, final: Snapshot, expected: int, read: int, replay_set: ReplaySet
    ) -> list[str]:
        problems = []
        if stats.failed:
            problems.append(f"{stats.failed} flows were not delivered to {FLOWS}")
        if stats.delivered != replay_set.rows:
            problems.append(f"{stats.delivered:,} of {replay_set.rows:,} flows were replayed")
        if final.dead:
            problems.append(f"{final.dead:,.0f} held-out rows were dead-lettered (see {self.logs / 'worker.log'})")
        if read != expected or expected + final.dead < stats.delivered:
            problems.append(f"{read:,} verdicts read back for {stats.delivered:,} flows replayed")
        return problems

    def _closing_summary(self, stats: ReplayStats, final: Snapshot, run: Path, problems: list[str]) -> None:
        p50 = histogram_quantile(final.end_to_end, 0.5)
        p95 = histogram_quantile(final.end_to_end, 0.95)
        latency = "–" if p50 is None or p95 is None else f"p50 {p50 * 1000:,.0f} ms, p95 {p95 * 1000:,.0f} ms"
        self.console.print(
            f"end-to-end latency (record timestamp → verdict acknowledged): {latency}; "
            f"dead letters {final.dead:,.0f}; demo took {time.monotonic() - self.started:,.0f} s",
            highlight=False,
        )
        for problem in problems:
            self.console.print(f"[red]problem:[/red] {problem}")
        self.console.print(
            f"logs: {self.logs}; run: {run} (reuse it: make demo DEMO_ARGS='--run {run}')", highlight=False
        )

    # --- helpers and cleanup --------------------------------------------------------------------------

    def _step(self, text: str) -> None:
        self.step += 1
        elapsed = time.monotonic() - self.started
        self.console.rule(f"[bold]{self.step}. {text}[/bold] [dim]({elapsed:,.0f} s)[/dim]", align="left")

    def _say(self, text: str) -> None:
        self.console.print(f"   {text}", highlight=False)

    def _worker_tail(self) -> str:
        return _tail(self.logs / "worker.log")

    def close(self) -> None:
        """Stop everything this demo started, newest first. Safe to call more than once."""
        self.stop.set()
        if self.replay_thread is not None:
            self.replay_thread.join(30)
        for name in ("trainer", "worker"):
            process = getattr(self, name)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    self.console.print(f"{name} did not stop within 30 s: killing it")
                    process.kill()
                    process.wait()
            setattr(self, name, None)
        if self.worker_log is not None:
            self.worker_log.close()
            self.worker_log = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None


def read_verdicts(
    bootstrap: str, topic: str, expected: int, console: Console, timeout: float = READ_TIMEOUT_S
) -> tuple[Counter[tuple[str, str]], int, int, int]:
    """Read ``topic`` from the start (committed records only) until ``expected`` distinct verdicts arrived.

    Returns (ground truth, predicted) counts, duplicates by ``alert_id``, verdicts without ground truth, and
    the number of distinct verdicts read.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"flowwarden-demo-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    pairs: Counter[tuple[str, str]] = Counter()
    seen: set[str] = set()
    duplicates = without_truth = 0
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)])
        deadline = time.monotonic() + timeout
        quiet_until = None
        with console.status(f"reading {expected:,} verdicts"):
            while time.monotonic() < deadline:
                if len(seen) >= expected:
                    quiet_until = quiet_until or time.monotonic() + 1.0  # then a second more: any extras?
                    if time.monotonic() > quiet_until:
                        break
                message = consumer.poll(0.2)
                if message is None or message.error() is not None:
                    continue
                verdict: dict[str, Any] = orjson.loads(message.value())
                if verdict["alert_id"] in seen:
                    duplicates += 1
                    continue
                seen.add(verdict["alert_id"])
                if verdict.get("ground_truth"):
                    pairs[(verdict["ground_truth"], verdict["label"])] += 1
                else:
                    without_truth += 1
    finally:
        consumer.close()
    return pairs, duplicates, without_truth, len(seen)


def headline_table(streamed: Evaluation, same_rows: Evaluation, report: dict[str, Any], replay_set: ReplaySet) -> Table:
    """Accuracy and F1 of the stream, of the trainer on the same rows, and of the trainer's full report."""
    table = Table(title="online vs offline", title_justify="left")
    table.add_column("metric")
    table.add_column(f"streamed ({streamed.n:,} flows)", justify="right")
    table.add_column(f"trainer, same {replay_set.rows:,} rows", justify="right")
    held_out = report.get("n_test")
    table.add_column(f"report.json ({held_out:,} held-out rows)" if held_out else "report.json", justify="right")
    for key, name in (("accuracy", "accuracy"), ("f1_weighted", "weighted F1"), ("f1_macro", "macro F1")):
        ours, same = streamed.as_dict()[key], same_rows.as_dict()[key]
        table.add_row(name, f"{ours:.4f}", f"{same:.4f}", _number(report.get(key)))
    return table


def describe_agreement(streamed: Counter[tuple[str, str]], offline: Counter[tuple[str, str]]) -> str:
    """Whether the stream's (truth, prediction) counts equal the trainer's on the same rows."""
    if streamed == offline:
        return (
            "[green]The stream agrees with the trainer's offline predictions on the replayed rows: identical "
            "(ground truth, prediction) counts.[/green]"
        )
    differing = sum(((streamed - offline) + (offline - streamed)).values()) // 2
    return (
        f"[yellow]{differing:,} verdicts differ from the trainer's offline predictions on the same rows "
        "(the worker's default backend, OpenVINO bfloat16 or else int8, flips a few near-ties: 3 and 2–10 of the quick "
        "bundle's 13,026 test flows; --backend eager serves the trainer's fp32 model; many would point at a "
        "serving/training difference).[/yellow]"
    )


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "–"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return "(no log)"
    return data[-limit:].decode("utf-8", "replace")


def run_command(settings: DemoSettings) -> int:
    """``detector demo``: run every step, stop everything it started, return the exit status."""
    console = Console()
    demo = Demo(settings, console)
    try:
        with sigterm_interrupts():
            return demo.run()
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted: stopping the replay, the worker and the broker[/yellow]")
        return ExitCode.INTERRUPTED
    except DemoDataError as exc:
        console.print(f"[red]demo:[/red] {exc}", highlight=False)
        return ExitCode.USAGE
    except (DemoError, BrokerError, TopicError) as exc:
        console.print("[red]demo failed:[/red]", end=" ")
        console.print(str(exc), highlight=False, markup=False)
        return ExitCode.FAILURE
    finally:
        demo.close()
