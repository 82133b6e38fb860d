"""Apache Kafka for the tests: brokers started from the pinned jars on free loopback ports.

``make kafka`` resolves the jars of ``tests/support/kafka-broker/pom.xml`` from Maven Central into
:data:`LIBS` (once). :class:`KafkaCluster` then formats KRaft storage in a folder of its own and starts
``size`` nodes, each one broker and controller (combined mode, a static controller quorum), all on
127.0.0.1 and free ports:

* one node for the suite's session broker (internal topics with one replica);
* three nodes for failover tests: replication factor 3 and ``min.insync.replicas=2`` for every topic,
  including ``__consumer_offsets`` and ``__transaction_state``, so one node can be killed (``kill -9``)
  and restarted while clients carry on.

``start()`` returns once the brokers answer metadata requests, every node is registered, and a consumer
group coordinator and a transaction coordinator answer (their internal topics exist and have leaders).
Each node's log goes to ``node-N/broker.log`` in the cluster's folder, which is kept: :meth:`log_tail`
is what a failing test shows. ``stop()`` sends SIGTERM and kills what has not exited a few seconds later.

A node may also listen on a second, *proxied* listener whose advertised port is a
:class:`~tests.support.tcpproxy.TcpProxy`'s: a client that bootstraps through the proxy is told to keep
using it, so every byte of its traffic goes through the proxy (the outage tests cut it), while the
broker's own listener serves every other test.

Nodes may also listen on *extra listeners* with a security protocol of their own (``SASL_SSL``, ``SSL``,
...), configured with ``listener.name.<name>.*`` settings in ``config``; ``format_options`` go to the
storage tool (``--add-scram``: SCRAM users exist from the start in KRaft). The plaintext listener stays the
inter-broker listener and the one the readiness checks use, so a secured listener needs nothing of them.

:func:`unavailable_reason` says why Apache Kafka cannot run here (no Java 17, no jars), for skips.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from detector.tools.broker import die_with_parent, free_port

REPO = Path(__file__).resolve().parents[2]
POM = REPO / "tests" / "support" / "kafka-broker" / "pom.xml"
LIBS = REPO / ".cache" / "kafka-broker" / "libs"
LOG4J_CONFIG = REPO / "tests" / "support" / "kafka-broker" / "log4j2.properties"
MIN_JAVA = 17
HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
_START_ATTEMPTS = 3
_KAFKA_JAR = re.compile(r"kafka_2\.13-(\d[\w.-]*)\.jar")
_JAVA_VERSION = re.compile(r'version "(\d+(?:\.\d+)*)')
# Small heap, one GC thread, the quick JIT tier only: these brokers carry test traffic, and two or three of
# them share a small CI machine with the workers under test. They start in about 4 s.
JVM_OPTIONS = ("-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")
# librdkafka's own log lines from the readiness probes go here rather than to stderr.
_PROBE_LOG = logging.getLogger("tests.apache_kafka.probe")


class KafkaUnavailable(RuntimeError):
    """Apache Kafka cannot run on this machine (the message says why), or a cluster failed to start."""


@dataclass(frozen=True)
class Distribution:
    """A Java runtime and the broker's jars: what a :class:`KafkaCluster` runs."""

    java: str
    java_version: str
    libs: Path
    version: str

    @property
    def description(self) -> str:
        return f"Apache Kafka {self.version}"


@functools.cache
def distribution() -> Distribution | str:
    """The distribution to run, or the reason there is none (checked once per process)."""
    java = _java()
    if java is None:
        return f"Apache Kafka needs Java >= {MIN_JAVA}: no `java` on PATH or in JAVA_HOME"
    java_version = _java_version(java)
    if java_version is None:
        return f"Apache Kafka needs Java >= {MIN_JAVA}: `{java} -version` did not say its version"
    major = int(java_version.split(".")[0])
    if major < MIN_JAVA:
        return f"Apache Kafka needs Java >= {MIN_JAVA}; {java} is Java {java_version}"
    jars = sorted(LIBS.glob("kafka_2.13-*.jar")) if LIBS.is_dir() else []
    versions = [match.group(1) for jar in jars if (match := _KAFKA_JAR.fullmatch(jar.name))]
    if len(versions) != 1:
        maven = "" if shutil.which("mvn") else " (needs Maven: `mvn` is not on PATH)"
        found = f"found {len(versions)} kafka_2.13 jars" if versions else "no kafka_2.13 jar"
        return f"Apache Kafka jars missing: {found} in {LIBS.relative_to(REPO)}; run `make kafka`{maven}"
    return Distribution(java, java_version, LIBS, versions[0])


def unavailable_reason() -> str | None:
    """Why Apache Kafka cannot run here, or None when it can."""
    found = distribution()
    return found if isinstance(found, str) else None


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def _java_version(java: str) -> str | None:
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_java_version(result.stderr + result.stdout)


def parse_java_version(text: str) -> str | None:
    """The version in ``java -version``'s output, old style ("1.8.0_392" is Java 8.0) or new ("17.0.15")."""
    match = _JAVA_VERSION.search(text)
    if match is None:
        return None
    version = match.group(1)
    return version.removeprefix("1.") if version.startswith("1.") else version


def _cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64 without padding, as `kafka-storage random-uuid`, and
    like Kafka's never starting with '-' (the storage tool would take it for an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def broker_defaults(size: int) -> dict[str, str]:
    """Broker settings of a test cluster of ``size`` nodes (besides listeners, ids and folders).

    One node: internal topics with one replica, as on any single-node cluster. Three nodes: every
    topic, internal ones included, has three replicas and needs two in sync to take a write (the
    production shape: a broker can be lost without stopping producers). Internal topics get few
    partitions, which makes start-up quicker; the group coordinator does not delay the first rebalance;
    timed-out transactions are looked for every second (default 10 s). Several nodes: a node that stops
    heartbeating is fenced after 3 s (default 9 s), so the partitions it led fail over sooner.
    """
    replicas = str(min(size, 3))
    in_sync = "2" if size >= 3 else "1"
    failover = {"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500"} if size > 1 else {}
    return {
        **failover,
        "num.partitions": "1",
        "default.replication.factor": replicas,
        "min.insync.replicas": in_sync,
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": in_sync,
        "transaction.state.log.num.partitions": "5",
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": in_sync,
        "group.initial.rebalance.delay.ms": "0",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
        "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
    }


class KafkaNode:
    """One broker + controller process of a :class:`KafkaCluster`; its folder, ports and log."""

    def __init__(self, cluster: KafkaCluster, node_id: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.directory = cluster.directory / f"node-{node_id}"
        self.client_port = 0
        self.controller_port = 0
        self.proxied_port: int | None = None
        self.extra_ports: dict[str, int] = {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "broker.log"

    @property
    def config_path(self) -> Path:
        return self.directory / "server.properties"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def address(self, listener: str) -> str:
        """``host:port`` of one of the node's extra listeners."""
        return f"{HOST}:{self.extra_ports[listener]}"

    def pick_ports(self, proxied: bool, extra_listeners: Iterable[str] = ()) -> None:
        self.client_port, self.controller_port = free_port(), free_port()
        self.proxied_port = free_port() if proxied else None
        self.extra_ports = {name: free_port() for name in extra_listeners}

    def write_config(
        self,
        voters: str,
        settings: Mapping[str, str],
        advertised_proxy_port: int | None,
        extra_listeners: Mapping[str, str] | None = None,
    ) -> None:
        listeners = {"PLAINTEXT": self.client_port, "CONTROLLER": self.controller_port}
        advertised = {"PLAINTEXT": self.client_port}
        protocols = dict.fromkeys(listeners, "PLAINTEXT")
        if self.proxied_port is not None:
            assert advertised_proxy_port is not None
            listeners["PROXIED"] = self.proxied_port
            advertised["PROXIED"] = advertised_proxy_port
            protocols["PROXIED"] = "PLAINTEXT"
        for name, protocol in (extra_listeners or {}).items():
            listeners[name] = advertised[name] = self.extra_ports[name]
            protocols[name] = protocol
        config = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listeners": ",".join(f"{name}://{HOST}:{port}" for name, port in listeners.items()),
            "advertised.listeners": ",".join(f"{name}://{HOST}:{port}" for name, port in advertised.items()),
            "listener.security.protocol.map": ",".join(f"{name}:{protocol}" for name, protocol in protocols.items()),
            "log.dirs": str(self.directory / "data"),
            **settings,
        }
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        self.config_path.write_text("".join(f"{key}={value}\n" for key, value in config.items()))

    def format_command(self, cluster_id: str, options: Sequence[str] = ()) -> list[str]:
        storage_tool = [*self._java(), "kafka.tools.StorageTool", "format"]
        return [*storage_tool, "-t", cluster_id, "-c", str(self.config_path), *options]

    def launch(self) -> None:
        """Start the process (after :meth:`write_config` and formatting); returns at once."""
        with self.log_path.open("ab") as log:
            started = time.strftime("%H:%M:%S")
            log.write(f"\n=== flowwarden test: starting node {self.node_id} at {started} ===\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                [*self._java(), "kafka.Kafka", str(self.config_path)],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C aimed at pytest must not kill the broker before the fixture stops it;
                # the broker dies with the thread that started it if pytest dies without stopping it.
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )

    def kill(self) -> None:
        """``kill -9``: no controlled shutdown, nothing flushed; the folder stays for :meth:`launch`."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(30)

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a controlled shutdown), then SIGKILL after ``timeout`` seconds."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the node's process if it is running."""
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signum)

    def exit_status(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_text(self, since: int = 0, max_lines: int = 80) -> str:
        """The last ``max_lines`` lines the node logged after byte ``since``."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as handle:
            handle.seek(since)
            lines = handle.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-max_lines:])

    def _java(self) -> list[str]:
        dist = self.cluster.distribution
        logging_config = f"-Dlog4j2.configurationFile={LOG4J_CONFIG}"
        return [dist.java, *JVM_OPTIONS, logging_config, "-cp", f"{dist.libs}/*"]


class KafkaCluster:
    """``size`` Apache Kafka nodes (broker + controller each) in ``directory``; see the module docstring.

    ``config`` adds or overrides broker settings of :func:`broker_defaults`. ``advertised_proxy_port``
    gives node 1 a second listener advertised at that port (the proxy's); :attr:`proxied_target` is the
    address the proxy must forward to. ``advertised_proxy_ports`` does the same for several nodes (node id ->
    proxy port; :meth:`proxied_target_of`): a client bootstrapped through the proxies of *every* node keeps all
    its traffic on them (the chaos run cuts one worker off that way). ``extra_listeners`` (name → security
    protocol) are more listeners on every node, configured through ``config`` (``listener.name.<name>.*``);
    :meth:`listener_bootstrap` gives their addresses. ``format_options`` are passed to the storage tool
    (``["--add-scram", "SCRAM-SHA-512=[...]"]``). Use as a context manager, or ``start()`` / ``stop()``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        size: int = 1,
        config: Mapping[str, str] | None = None,
        advertised_proxy_port: int | None = None,
        advertised_proxy_ports: Mapping[int, int] | None = None,
        extra_listeners: Mapping[str, str] | None = None,
        format_options: Sequence[str] = (),
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        found = distribution()
        if isinstance(found, str):
            raise KafkaUnavailable(found)
        self.distribution = found
        self.directory = Path(directory)
        self.size = size
        self.settings = {**broker_defaults(size), **(config or {})}
        self.advertised_proxy_ports = dict(advertised_proxy_ports or {})
        if advertised_proxy_port is not None:
            self.advertised_proxy_ports[1] = advertised_proxy_port
        self.extra_listeners = dict(extra_listeners or {})
        self.format_options = list(format_options)
        self.start_timeout = start_timeout
        self.cluster_id = _cluster_id()
        self.nodes = [KafkaNode(self, node_id) for node_id in range(1, size + 1)]

    @property
    def description(self) -> str:
        shape = "single broker" if self.size == 1 else f"{self.size} brokers"
        return f"{self.distribution.description} ({shape}, KRaft)"

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def listener_bootstrap(self, listener: str) -> str:
        """The bootstrap servers of one of the extra listeners."""
        if listener not in self.extra_listeners:
            raise KafkaUnavailable(f"this cluster has no listener {listener!r} (extra_listeners)")
        return ",".join(node.address(listener) for node in self.nodes)

    @property
    def proxied_target(self) -> tuple[str, int]:
        return self.proxied_target_of(1)

    def proxied_target_of(self, node_id: int) -> tuple[str, int]:
        """Where the proxy advertised by node ``node_id`` must forward to (its proxied listener)."""
        port = self.node(node_id).proxied_port
        if port is None:
            raise KafkaUnavailable(f"node {node_id} has no proxied listener (no advertised proxy port)")
        return HOST, port

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def start(self) -> Self:
        """Format and start every node; return once the cluster serves groups and transactions."""
        deadline = time.monotonic() + self.start_timeout
        for attempt in range(1, _START_ATTEMPTS + 1):
            self._prepare()
            for node in self.nodes:
                node.launch()
            try:
                self.wait_ready(deadline)
                return self
            except KafkaUnavailable as exc:
                # A port picked free can be taken before the JVM binds it: then try again with new ones.
                taken = "Address already in use" in self.log_tail()
                self._terminate_all(timeout=2.0)
                if not taken or attempt == _START_ATTEMPTS or time.monotonic() > deadline:
                    raise KafkaUnavailable(f"{exc}\n{self.log_tail()}") from None
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SIGTERM every node, SIGKILL what is still running after a few seconds. The folder stays."""
        self._terminate_all(STOP_TIMEOUT_S)

    def kill(self, node_id: int) -> None:
        """``kill -9`` one node."""
        self.node(node_id).kill()

    def restart(self, node_id: int, timeout: float = START_TIMEOUT_S) -> None:
        """Start a stopped or killed node again (same folder, ports and id); return once it says it has started
        and the cluster lists every node. Its replicas may still be catching up then."""
        node = self.node(node_id)
        if node.running:
            raise KafkaUnavailable(f"node {node_id} is still running")
        mark = node.log_size()
        node.launch()
        deadline = time.monotonic() + timeout
        while "Kafka Server started" not in node.log_text(mark, max_lines=10_000):
            self._check_running()
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"node {node_id} did not start again in time:\n{node.log_text(mark)}")
            time.sleep(0.2)
        self._wait_for_brokers(deadline)

    def wait_ready(self, deadline: float) -> None:
        """Until every node is registered and both coordinators answer; raises :class:`KafkaUnavailable`."""
        self._wait_for_brokers(deadline)
        self._wait_for_coordinators(deadline)

    def log_marks(self) -> dict[int, int]:
        """Each node's log size now: pass it to :meth:`log_tail` to see only what came after."""
        return {node.node_id: node.log_size() for node in self.nodes}

    def log_tail(self, since: Mapping[int, int] | None = None, max_lines: int = 60) -> str:
        """The last lines of every node's log (after ``since``), each under a header naming the node and file."""
        parts = []
        for node in self.nodes:
            text = node.log_text((since or {}).get(node.node_id, 0), max_lines)
            status = "running" if node.running else f"exited ({node.exit_status()})"
            parts.append(f"--- node {node.node_id} ({status}) {node.log_path} ---\n{text}")
        return "\n".join(parts)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _prepare(self) -> None:
        """New ports, configuration files and formatted storage for every node (formatting runs in parallel)."""
        for node in self.nodes:
            node.pick_ports(node.node_id in self.advertised_proxy_ports, self.extra_listeners)
        voters = ",".join(f"{node.node_id}@{HOST}:{node.controller_port}" for node in self.nodes)
        for node in self.nodes:
            node.write_config(
                voters, self.settings, self.advertised_proxy_ports.get(node.node_id), self.extra_listeners
            )
        pipe, merged = subprocess.PIPE, subprocess.STDOUT
        formats = [
            (
                node,
                subprocess.Popen(node.format_command(self.cluster_id, self.format_options), stdout=pipe, stderr=merged),
            )
            for node in self.nodes
        ]
        for node, process in formats:
            output, _ = process.communicate(timeout=120)
            if process.returncode != 0:
                raise KafkaUnavailable(
                    f"formatting the storage of node {node.node_id} failed ({process.returncode}):\n"
                    f"{output.decode('utf-8', 'replace')[-3000:]}"
                )

    def _wait_for_brokers(self, deadline: float) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "logger": _PROBE_LOG})
        last = "no answer"
        while True:
            self._check_running()
            try:
                metadata = admin.list_topics(timeout=2)
            except KafkaException as exc:
                last = exc.args[0].str()
            else:
                if metadata.cluster_id != self.cluster_id:
                    raise KafkaUnavailable(
                        f"another cluster ({metadata.cluster_id}) answers on {self.bootstrap_servers}: a port was taken"
                    )
                if len(metadata.brokers) == self.size:
                    return
                last = f"{len(metadata.brokers)} of {self.size} brokers registered"
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"{self.description} not ready in time: {last}")
            time.sleep(0.2)

    def _wait_for_coordinators(self, deadline: float) -> None:
        """Ask a group coordinator for offsets and a transaction coordinator for a producer id: each creates its
        internal topic on first use, and answers once that topic has leaders."""
        common = {"bootstrap.servers": self.bootstrap_servers, "logger": _PROBE_LOG}
        consumer = Consumer({**common, "group.id": f"ready-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
        producer = Producer({**common, "transactional.id": f"ready-{uuid.uuid4().hex[:8]}"})
        try:
            while True:
                self._check_running()
                try:
                    consumer.committed([TopicPartition("flowwarden-ready-probe", 0)], timeout=5)
                    producer.init_transactions(5)
                    return
                except KafkaException as exc:
                    if time.monotonic() > deadline:
                        raise KafkaUnavailable(
                            f"{self.description}: coordinators not ready in time: {exc.args[0].str()}"
                        ) from None
                    time.sleep(0.2)
        finally:
            consumer.close()

    def _check_running(self) -> None:
        for node in self.nodes:
            status = node.exit_status()
            if status is not None:
                raise KafkaUnavailable(f"node {node.node_id} of {self.description} exited with status {status}")

    def _terminate_all(self, timeout: float) -> None:
        for node in self.nodes:  # all at once: each shuts down while the others do
            node.signal(signal.SIGTERM)
        for node in self.nodes:
            node.terminate(timeout)
