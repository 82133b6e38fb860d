"""The system under test: a 3-node Apache Kafka cluster (or an external one), worker slots, the replay.

* :class:`Brokers`: the cluster the run starts (every node also advertised through a
  :class:`~tests.support.tcpproxy.TcpProxy` of its own, so that one worker can be cut off by cutting the
  proxies), or an external cluster (then the proxies and broker faults are absent).
* :class:`Slot`: one ``detector run`` process in a stable slot (``--instance-id``), restarted in place
  whenever it exits (:class:`~tests.support.worker.Supervised`, as an orchestrator does).
* :class:`PacedReplay`: produces the corpus at a steady rate (the replayer's token bucket) and records
  where each record landed and its timestamp.
* :class:`Soak`: samples each worker process's RSS, open file descriptors and threads from /proc.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaError, Message, Producer

from detector.tools.pacing import TokenBucket
from tests.support.apache_kafka import KafkaCluster
from tests.support.kafka import client_config
from tests.support.tcpproxy import TcpProxy
from tests.support.worker import Supervised, WorkerProcess, wait_until


class Brokers:
    """The cluster of the run: started here (3 nodes, proxied listeners) or external (``bootstrap``)."""

    def __init__(self, directory: Path, bootstrap: str | None) -> None:
        self.cluster: KafkaCluster | None = None
        self.proxies: list[TcpProxy] = []
        self._external = bootstrap
        self._directory = directory

    def __enter__(self) -> Brokers:
        if self._external is None:
            self.proxies = [TcpProxy("127.0.0.1", 0) for _ in range(3)]
            ports = {node_id: proxy.port for node_id, proxy in enumerate(self.proxies, start=1)}
            self.cluster = KafkaCluster(self._directory / "kafka", size=3, advertised_proxy_ports=ports).start()
            for node_id, proxy in enumerate(self.proxies, start=1):
                proxy.target = self.cluster.proxied_target_of(node_id)
                proxy.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for proxy in self.proxies:
            proxy.close()
        if self.cluster is not None:
            self.cluster.stop()

    @property
    def bootstrap(self) -> str:
        return self._external or (self.cluster.bootstrap_servers if self.cluster else "")

    @property
    def proxied_bootstrap(self) -> str | None:
        """The bootstrap list through the proxies, or None when there are none (external cluster)."""
        return ",".join(proxy.address for proxy in self.proxies) or None

    @property
    def description(self) -> str:
        return self.cluster.description if self.cluster else f"external cluster {self._external}"


class Slot:
    """A stable worker slot: ``name`` is its ``--instance-id``; the process is restarted whenever it exits.

    ``expected_exits`` counts the exits the run caused on purpose (kill -9, SIGTERM); any other exit is
    reported (a worker may end itself with status 1 on a fatal client error, and is then restarted).
    """

    def __init__(self, name: str, argv: list[str], logs: Path) -> None:
        self.name = name
        logs.mkdir(parents=True, exist_ok=True)
        self.supervised = Supervised(argv, logs)
        self.expected_exits = 0

    @property
    def current(self) -> WorkerProcess:
        return self.supervised.current

    def assignment(self) -> set[int]:
        with contextlib.suppress(Exception):
            return self.current.assignment()
        return set()

    def wait_assigned(self, timeout: float = 120.0) -> None:
        wait_until(lambda: bool(self.assignment()), f"worker {self.name} to own partitions", timeout)

    def crash(self, how: str) -> WorkerProcess:
        """``kill -9`` (how="kill") or SIGTERM (how="term") the running process; the supervisor restarts it."""
        process = self.current
        self.expected_exits += 1
        if how == "kill":
            process.kill()
        else:
            process.terminate(timeout=60)
        wait_until(lambda: self.current is not process, f"worker {self.name} to be restarted", 30)
        return process

    def stop(self) -> int:
        self.expected_exits += 1
        return self.supervised.stop()

    def lose(self) -> None:
        """``kill -9`` the running process and restart it no more (a worker lost for good)."""
        self.expected_exits += 1
        self.supervised.stop(kill=True)

    def unexpected_exits(self) -> list[int]:
        """Exit statuses beyond the ones the run caused (kill -9 gives -9, SIGTERM 0)."""
        codes = [code for code, _ in self.supervised.exits]
        caused = sorted(codes, key=lambda code: code not in (-9, 0))[: self.expected_exits]
        left = list(codes)
        for code in caused:
            left.remove(code)
        return left

    def processes(self) -> list[WorkerProcess]:
        return [process for _, process in self.supervised.exits] + [self.current]

    def close(self) -> None:
        self.supervised.close()


@dataclass
class PacedReplay:
    """Produces ``values`` at ``rate`` records/s round-robin over ``partitions`` in a thread."""

    bootstrap: str
    topic: str
    values: list[bytes]
    partitions: int
    rate: float
    where: dict[tuple[int, int], int] = field(default_factory=dict)
    sent_at_ms: dict[tuple[int, int], int] = field(default_factory=dict)
    failed: int = 0
    started: float = 0.0
    finished: float = 0.0
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chaos-replay", daemon=True)

    def start(self) -> PacedReplay:
        self.started = time.time()
        self._thread.start()
        return self

    def _delivered(self, index: int, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failed += 1
            return
        coords = (message.partition(), message.offset())
        self.where[coords] = index
        self.sent_at_ms[coords] = message.timestamp()[1]

    def _run(self) -> None:
        config = {**client_config(self.bootstrap), "enable.idempotence": True, "linger.ms": 5}
        producer = Producer(config)
        bucket = TokenBucket(self.rate)
        try:
            for index, value in enumerate(self.values):
                bucket.acquire()
                callback = functools.partial(self._delivered, index)
                while True:
                    try:
                        producer.produce(
                            self.topic, value=value, partition=index % self.partitions, on_delivery=callback
                        )
                        break
                    except BufferError:
                        producer.poll(0.1)
                producer.poll(0)
            left = producer.flush(120)
            self.failed += left
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished = time.time()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the replay did not finish within {timeout:g} s")
        if self.error is not None:
            raise self.error


def _proc_sample(pid: int) -> tuple[int, int, int] | None:
    """RSS (KiB), open file descriptors and threads of ``pid``, from /proc (None once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:  # a zombie (killed, not yet reaped): gone too
        return None
    return int(fields["VmRSS"].split()[0]), fds, int(fields["Threads"])


class Soak:
    """Samples every live worker process each ``every`` seconds; :meth:`growth` compares warm and last."""

    def __init__(self, slots: dict[str, Slot], every: float = 2.0) -> None:
        self.slots = slots
        self.every = every
        self.samples: dict[int, list[tuple[float, int, int, int]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-soak", daemon=True)

    def start(self) -> Soak:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for slot in list(self.slots.values()):
                pid = slot.current.process.pid
                sample = _proc_sample(pid)
                if sample is not None:
                    self.samples.setdefault(pid, []).append((time.monotonic(), *sample))

    def growth(self, warm_up: float, min_after: float) -> dict[str, float | int | None]:
        """Over the processes that lived ``warm_up`` + ``min_after`` seconds: the largest growth of RSS (%),
        fds and threads from the first sample after ``warm_up`` to the last."""
        rss: list[float] = []
        fds: list[int] = []
        threads: list[int] = []
        for samples in self.samples.values():
            born = samples[0][0]
            warm = [s for s in samples if s[0] - born >= warm_up]
            if not warm or warm[-1][0] - warm[0][0] < min_after:
                continue
            first, last = warm[0], warm[-1]
            rss.append(100.0 * (last[1] - first[1]) / first[1])
            fds.append(last[2] - first[2])
            threads.append(last[3] - first[3])
        return {
            "processes": len(rss),
            "rss_growth_pct": round(max(rss), 2) if rss else None,
            "fds_growth": max(fds) if fds else None,
            "threads_growth": max(threads) if threads else None,
        }
