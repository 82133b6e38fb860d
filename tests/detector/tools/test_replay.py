"""``detector replay`` against a real Kafka-protocol broker: what lands on the topic, and how much."""

from __future__ import annotations

import gzip
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer

from detector.cli import main
from detector.core.flowtime import flow_time
from tests.support.generated import generated_rows, write_generated_csv
from tests.support.kafka import client_config, client_config_from_env, consume_exactly, reader, unique_name

ROWS = generated_rows(seed=1)


def replay(bootstrap: str, topic: str, *args: object) -> int:
    options = [f"--kafka-option={key}={value}" for key, value in client_config_from_env().items()]
    return main(["replay", "--bootstrap-servers", bootstrap, "--topic", topic, *options, *map(str, args)])


def records_on(bootstrap: str, topic: str, count: int) -> list[tuple[bytes | None, dict, int]]:
    """Exactly ``count`` messages (nothing more arrives within a second) as (key, record, partition)."""
    messages = consume_exactly(bootstrap, topic, count, idle_after=1.0, timeout=30)
    return [(m.key(), orjson.loads(m.value()), m.partition()) for m in messages]


@pytest.fixture
def flows_csv(tmp_path: Path) -> Path:
    return write_generated_csv(tmp_path / "flows.csv.gz", ROWS)


@pytest.mark.kafka
def test_every_row_arrives_once_as_a_record_keyed_by_its_flow_id(kafka_bootstrap, flows_csv):
    topic = unique_name("replay")
    assert replay(kafka_bootstrap, topic, flows_csv) == 0
    records = records_on(kafka_bootstrap, topic, len(ROWS))
    assert Counter(key for key, _, _ in records) == Counter(row["Flow ID"].encode() for row in ROWS)
    assert all("Label" not in record for _, record, _ in records), "labels are only sent with --with-labels"
    by_flow = {(row["Flow ID"], row["Flow Duration"]): row for row in ROWS}
    assert len(by_flow) == len(ROWS)
    for key, record, _ in records:
        row = by_flow[(key.decode(), record["Flow Duration"])]
        assert list(record) == [name for name in row if name != "Label"], "the file's column names, in order"
        assert record["Dst Port"] == row["Dst Port"] and isinstance(record["Dst Port"], int)
        assert record["Flow Bytes/s"] == pytest.approx(row["Flow Bytes/s"], rel=1e-15)
        assert record["Timestamp"] == row["Timestamp"]
    partitions = {}
    for key, _, partition in records:
        assert partitions.setdefault(key, partition) == partition, "one flow's records share a partition"
    assert len({p for _, _, p in records}) > 1, "the default 3 partitions are all used"


@pytest.mark.kafka
def test_labels_are_sent_only_with_the_flag(kafka_bootstrap, flows_csv, capsys):
    topic = unique_name("replay")
    assert replay(kafka_bootstrap, topic, flows_csv, "--with-labels") == 0
    records = records_on(kafka_bootstrap, topic, len(ROWS))
    assert Counter(record["Label"] for _, record, _ in records) == Counter(row["Label"] for row in ROWS)
    summary = capsys.readouterr().err
    assert f"{len(ROWS)} records delivered" in summary
    assert "BENIGN 120" in summary and "Web Attack - XSS 9" in summary


@pytest.mark.kafka
def test_infinity_and_nan_tokens_arrive_as_strings(kafka_bootstrap, tmp_path):
    rows = [dict(row) for row in ROWS[:3]]
    rows[0]["Flow Bytes/s"], rows[1]["Flow Packets/s"], rows[2]["Flow IAT Mean"] = "Infinity", "NaN", "-inf"
    topic = unique_name("replay")
    assert replay(kafka_bootstrap, topic, write_generated_csv(tmp_path / "inf.csv", rows), "--order", "file") == 0
    got = {record["Flow Duration"]: record for _, record, _ in records_on(kafka_bootstrap, topic, 3)}
    assert got[rows[0]["Flow Duration"]]["Flow Bytes/s"] == "Infinity"
    assert got[rows[1]["Flow Duration"]]["Flow Packets/s"] == "NaN"
    assert got[rows[2]["Flow Duration"]]["Flow IAT Mean"] == "-inf"


@pytest.mark.kafka
def test_limit_stops_after_n_records(kafka_bootstrap, flows_csv):
    topic = unique_name("replay")
    assert replay(kafka_bootstrap, topic, flows_csv, "--limit", 50) == 0
    assert len(records_on(kafka_bootstrap, topic, 50)) == 50


@pytest.mark.kafka
def test_loop_repeats_the_input_up_to_the_limit(kafka_bootstrap, flows_csv):
    topic = unique_name("replay")
    assert replay(kafka_bootstrap, topic, flows_csv, "--loop", "--limit", len(ROWS) * 2 + 11) == 0
    keys = Counter(key for key, _, _ in records_on(kafka_bootstrap, topic, len(ROWS) * 2 + 11))
    assert sum(keys.values()) == len(ROWS) * 2 + 11


@pytest.mark.kafka
def test_a_paced_replay_delivers_every_record(kafka_bootstrap, flows_csv, capsys):
    # The pacing arithmetic is checked with an injected clock in test_pacing.py; this checks the wiring.
    topic = unique_name("replay")
    assert replay(kafka_bootstrap, topic, flows_csv, "--rate", 400, "--limit", 120) == 0
    assert len(records_on(kafka_bootstrap, topic, 120)) == 120
    assert "400 flows/s" in capsys.readouterr().err


@pytest.mark.kafka
def test_sigterm_stops_a_replay_like_ctrl_c_with_every_sent_record_delivered_and_counted(kafka_bootstrap, flows_csv):
    topic = unique_name("replay")
    options = [f"--kafka-option={key}={value}" for key, value in client_config_from_env().items()]
    command = [sys.executable, "-m", "detector.cli", "replay", str(flows_csv), "--bootstrap-servers", kafka_bootstrap]
    command += ["--topic", topic, "--rate", "40", "--loop", *options]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_records(kafka_bootstrap, topic, 10)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    delivered = int(re.search(r"replay interrupted after ([\d,]+) records delivered", err).group(1).replace(",", ""))
    assert "delivery failures: 0" in err and "flows/s while sending" in err
    assert len(records_on(kafka_bootstrap, topic, delivered)) == delivered


def _wait_for_records(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> None:
    """Block until ``topic`` exists and holds at least ``count`` records."""
    deadline = time.monotonic() + timeout
    probe = Consumer({**client_config(bootstrap), "group.id": unique_name("probe")})
    try:
        while topic not in probe.list_topics(timeout=10).topics:
            assert time.monotonic() < deadline, f"topic {topic} never appeared"
            time.sleep(0.2)
    finally:
        probe.close()
    seen = 0
    with reader(bootstrap, topic) as consumer:
        while seen < count:
            assert time.monotonic() < deadline, f"only {seen} of {count} records arrived"
            message = consumer.poll(0.2)
            seen += message is not None and message.error() is None


@pytest.mark.kafka
def test_orders_on_one_partition(kafka_bootstrap, flows_csv):
    def replayed(*args: object) -> list[dict]:
        topic = unique_name("replay")
        assert replay(kafka_bootstrap, topic, flows_csv, "--partitions", 1, *args) == 0
        return [record for _, record, _ in records_on(kafka_bootstrap, topic, len(ROWS))]

    by_time = replayed("--order", "time")
    times = [flow_time(record["Timestamp"]) for record in by_time]
    assert times == sorted(times)
    as_read = [record["Flow Duration"] for record in replayed("--order", "file")]
    assert as_read == [row["Flow Duration"] for row in ROWS]
    shuffled = [record["Flow Duration"] for record in replayed("--seed", 7)]
    assert shuffled != as_read and sorted(shuffled) == sorted(as_read)
    assert [record["Flow Duration"] for record in replayed("--seed", 7)] == shuffled, "a seeded shuffle repeats"


@pytest.mark.kafka
def test_short_and_long_rows_are_skipped_and_reported(kafka_bootstrap, tmp_path, capsys):
    path = write_generated_csv(tmp_path / "short.csv", ROWS[:10])
    lines = path.read_text(encoding="cp1252").splitlines()
    lines[2] += ",shifted"  # one cell too many: the cells no longer line up with the header
    lines.append("10.0.0.1-10.0.0.2-1-2-6,10.0.0.1")
    path.write_text("\n".join(lines) + "\n", encoding="cp1252")
    topic = unique_name("replay")
    assert replay(kafka_bootstrap, topic, path) == 0
    assert len(records_on(kafka_bootstrap, topic, 9)) == 9
    err = capsys.readouterr().err
    assert "rows read: 11; rows skipped: 2" in err
    assert "fewer cells than the header" in err and "more cells than the header" in err


@pytest.mark.kafka
def test_records_the_producer_refuses_make_the_exit_status_non_zero(kafka_bootstrap, tmp_path, capsys):
    rows = [{**row, "note": ""} for row in ROWS[:20]]
    rows[4]["note"] = rows[9]["note"] = "x" * 5000  # over message.max.bytes below
    topic = unique_name("replay")
    path = write_generated_csv(tmp_path / "big.csv", rows)
    assert replay(kafka_bootstrap, topic, path, "--kafka-option", "message.max.bytes=2000") == 1
    assert len(records_on(kafka_bootstrap, topic, 18)) == 18
    assert "delivery failures: 2" in capsys.readouterr().err


def test_speedup_needs_time_order_and_timestamps(tmp_path, capsys):
    untimed = tmp_path / "untimed.csv.gz"
    with gzip.open(untimed, "wt") as handle:
        handle.write("Dst Port,Flow Duration,Label\n80,10,BENIGN\n")
    common = ["replay", "--bootstrap-servers", "127.0.0.1:1", "--topic", "unused"]
    assert main([*common, str(untimed), "--speedup", "10", "--order", "shuffle"]) == 2
    assert "needs --order time" in capsys.readouterr().err
    assert main([*common, str(untimed), "--speedup", "10"]) == 2
    assert "no flow timestamp column" in capsys.readouterr().err
    assert main([*common, str(tmp_path / "missing.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*common, str(untimed), "--limit", "0"]) == 2
    assert "limit: Input should be greater than or equal to 1" in capsys.readouterr().err
    gzipped = tmp_path / "gzipped.csv"
    gzipped.write_bytes(gzip.compress(b"Dst Port,Flow Duration,Label\n80,10,BENIGN\n"))
    assert main([*common, str(gzipped)]) == 2
    err = capsys.readouterr().err
    assert "gzip-compressed; name it gzipped.csv.gz" in err and "Traceback" not in err


@pytest.mark.kafka
def test_files_without_data_rows_send_nothing_and_fail(kafka_bootstrap, tmp_path, capsys):
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("Dst Port,Flow Duration,Label\n")
    assert replay(kafka_bootstrap, unique_name("replay"), header_only) == 1
    assert "the files hold no data rows" in capsys.readouterr().err


def test_a_record_is_the_json_the_schema_describes(flows_csv):
    from jsonschema import Draft202012Validator

    from detector.tools.replay_source import SourceStats, read_flows

    schema = orjson.loads((Path(__file__).parents[3] / "schemas" / "flow-record.schema.json").read_bytes())
    flows = list(read_flows([flows_csv], with_labels=True, need_time=False, stats=SourceStats()))
    assert len(flows) == len(ROWS)
    for flow in flows[:50]:
        Draft202012Validator(schema).validate(orjson.loads(flow.value))


@pytest.mark.kafka
def test_options_also_come_from_a_toml_file_and_the_environment(kafka_bootstrap, flows_csv, tmp_path, monkeypatch):
    topic = unique_name("replay")
    config = tmp_path / "replay.toml"
    config.write_text(f'topic = "{topic}"\nlimit = 5\nwith-labels = true\n[kafka]\n"linger.ms" = "1"\n')
    monkeypatch.setenv("FLOWWARDEN_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("FLOWWARDEN_LIMIT", "7")  # the environment wins over the file
    options = [f"--kafka-option={key}={value}" for key, value in client_config_from_env().items()]
    assert main(["replay", str(flows_csv), "--config", str(config), *options]) == 0
    records = records_on(kafka_bootstrap, topic, 7)
    assert all("Label" in record for _, record, _ in records)
