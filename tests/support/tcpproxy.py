"""A small threaded TCP proxy on 127.0.0.1 that tests use to cut the network path to a broker.

The embedded broker keeps everything in memory, so an outage cannot be simulated by restarting it. Put a
:class:`TcpProxy` in front of it instead (with the broker advertising the proxy's port, see the
``proxied_broker`` fixture) and call :meth:`TcpProxy.cut`: every live connection is reset and new ones are
accepted and reset at once, which clients see as a broker that is down. :meth:`TcpProxy.restore` lets
traffic through again; clients reconnect on their own.

:meth:`TcpProxy.drop_responses` is the subtler fault: requests still reach the broker (and take effect) but
the answers to one kind of request never come back, as when a connection dies after the broker acted on a
request and before its reply arrived. :meth:`TcpProxy.hold_next` delays instead: the next request of one
kind, and everything after it on its connection, waits in the proxy until :meth:`TcpProxy.release`, as a
request does that a client sends into a dead path and retries once the path is back.

The proxy follows the Kafka framing (a 4-byte size before every request and response) to pair each
response with its request's API key through the correlation id.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from types import TracebackType
from typing import Self

_CHUNK = 64 * 1024
PRODUCE_API_KEY = 0
OFFSET_COMMIT_API_KEY = 8
TXN_OFFSET_COMMIT_API_KEY = 28
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST instead of FIN


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target_host:target_port``; ``cut()`` / ``restore()`` the path.

    ``port=0`` binds a free port (read it from ``.port``). The listening socket is bound in the
    constructor, so the port is known before the target exists; forwarding starts with ``start()``.
    """

    def __init__(self, target_host: str, target_port: int, *, port: int = 0, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server((host, port), reuse_port=False)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._cut = False
        self._drop_api_key: int | None = None
        self.dropped_responses = 0
        self._hold_api_key: int | None = None  # None: nothing held, or release() was called
        self._holding: socket.socket | None = None  # the client connection whose requests are held
        self.held_requests = 0
        self._closed = False
        self._accept_thread: threading.Thread | None = None
        self.accepted = 0

    @property
    def address(self) -> str:
        """``host:port`` of the proxy, for ``bootstrap.servers``."""
        return f"{self.host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut

    def start(self) -> Self:
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"tcpproxy-{self.port}", daemon=True)
        self._accept_thread.start()
        return self

    def cut(self) -> None:
        """Reset every live connection and refuse (accept, then reset) new ones until :meth:`restore`."""
        with self._lock:
            self._cut = True
            live, self._connections = self._connections, set()
        for sock in live:
            _reset(sock)

    def restore(self) -> None:
        """Forward new connections again."""
        with self._lock:
            self._cut = False

    def drop_responses(self, api_key: int | None) -> None:
        """Swallow the broker's responses to requests with Kafka API key ``api_key`` (e.g.
        :data:`PRODUCE_API_KEY`) from now on; ``None`` lets them through again. Counted in ``dropped_responses``."""
        self._drop_api_key = api_key

    def hold_next(self, api_key: int) -> None:
        """Hold back the next request with Kafka API key ``api_key`` and every later request on its
        connection (other connections flow) until :meth:`release`. Counted in ``held_requests``."""
        with self._lock:
            self._hold_api_key, self._holding = api_key, None

    def release(self) -> None:
        """Forward what :meth:`hold_next` held back, in order, and stop holding."""
        self._hold_api_key = None

    def _holds(self, client: socket.socket, api_key: int) -> bool:
        if self._hold_api_key is None:
            return False
        with self._lock:
            if self._holding is None and api_key == self._hold_api_key:
                self._holding = client
            return self._holding is client

    def reset(self) -> None:
        """Back to a plain proxy: every live connection reset, nothing dropped or held, counters at zero. A proxy
        shared by several tests (one broker's advertised port) is reset before and after each of them."""
        self.drop_responses(None)
        self.release()
        self.cut()
        self.restore()
        self.dropped_responses = self.held_requests = self.accepted = 0

    def close(self) -> None:
        """Stop accepting and reset every connection. Idempotent."""
        self._closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut or self._closed:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._cut:
                    _reset(client)
                    _reset(upstream)
                    continue
                self._connections.update((client, upstream))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, upstream), name="tcpproxy-pump", daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        """Copy whole Kafka frames both ways until either side closes or the proxy resets the pair."""
        requests, responses = _Frames(), _Frames()
        api_keys: dict[int, int] = {}  # correlation id -> API key of the request awaiting its response
        held: list[bytes] = []
        with selectors.DefaultSelector() as selector:
            try:
                for sock in (client, upstream):
                    selector.register(sock, selectors.EVENT_READ)
            except (ValueError, OSError):
                return  # cut() reset the pair before this thread got to it
            try:
                while True:
                    if held and self._hold_api_key is None:
                        for frame in held:
                            upstream.sendall(frame)
                        held.clear()
                    for key, _ in selector.select(timeout=0.1):
                        source = key.fileobj
                        assert isinstance(source, socket.socket)
                        data = source.recv(_CHUNK)
                        if not data:
                            return
                        if source is client:
                            for frame in requests.feed(data):
                                api_key, correlation_id = struct.unpack_from(">hxxi", frame, 4)
                                api_keys[correlation_id] = api_key
                                if held or self._holds(client, api_key):
                                    held.append(frame)
                                    self.held_requests += 1
                                else:
                                    upstream.sendall(frame)
                        else:
                            for frame in responses.feed(data):
                                (correlation_id,) = struct.unpack_from(">i", frame, 4)
                                api_key = api_keys.pop(correlation_id, None)
                                if api_key is not None and api_key == self._drop_api_key:
                                    self.dropped_responses += 1
                                    continue
                                client.sendall(frame)
                    if client not in self._connections:
                        return
            except (OSError, ValueError):
                return
            finally:
                with self._lock:
                    self._connections.discard(client)
                    self._connections.discard(upstream)
                for sock in (client, upstream):
                    if self._cut:
                        _reset(sock)
                    else:
                        sock.close()


class _Frames:
    """Splits a byte stream into Kafka frames (a big-endian int32 size, then that many bytes)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The frames that ``data`` completes, each with its size prefix; a partial frame waits for more."""
        self._buffer += data
        frames = []
        while len(self._buffer) >= 4:
            end = 4 + int.from_bytes(self._buffer[:4], "big")
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[:end]))
            del self._buffer[:end]
        return frames
