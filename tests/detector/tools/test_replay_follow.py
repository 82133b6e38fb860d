"""``detector replay --follow``: rows a flow meter appends to CSV files in a folder are sent as they come, once each,
through new files, rotation and truncation; Ctrl-C or SIGTERM ends it."""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import orjson
import pytest

from detector.cli import main
from detector.tools.replay import ReplayError, effective_order, replay
from detector.tools.replay_follow import MALFORMED, FollowedFiles
from detector.tools.replay_source import SHORT_ROW, SourceStats
from detector.tools.settings import ReplaySettings
from tests.support.generated import generated_rows
from tests.support.kafka import client_config_from_env, consume_exactly, consume_until_idle
from tests.support.worker import wait_until

ROWS = generated_rows(seed=3)
COLUMNS = list(ROWS[0])


def header() -> bytes:
    return _csv_line(COLUMNS)


def row(index: int) -> bytes:
    return _csv_line([ROWS[index][column] for column in COLUMNS])


def _csv_line(cells: list[object]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)  # CICFlowMeter's Java writer ends lines in CRLF
    return buffer.getvalue().encode()


def append(path: Path, *parts: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(b"".join(parts))


def flow_ids(flows) -> list[str]:
    return [orjson.loads(flow.value)["Flow ID"] for flow in flows]


def ids(*indices: int) -> list[str]:
    return [str(ROWS[i]["Flow ID"]) for i in indices]


@pytest.fixture
def follow(tmp_path):
    stats = SourceStats()
    followed = FollowedFiles([tmp_path], with_labels=False, stats=stats)
    yield followed, stats
    followed.close()


def test_appended_rows_are_read_once_and_a_line_being_written_waits_for_its_end(tmp_path, follow):
    followed, stats = follow
    flows = tmp_path / "2026-12-04_Flow.csv"
    assert followed.poll() == []
    append(flows, header(), row(0), row(1))
    assert flow_ids(followed.poll()) == ids(0, 1)
    assert followed.poll() == [], "nothing new, nothing sent"
    half = len(row(2)) // 2
    append(flows, row(2)[:half])
    assert followed.poll() == [], "a row without its line end is still being written"
    append(flows, row(2)[half:], row(3))
    assert flow_ids(followed.poll()) == ids(2, 3)
    assert stats.rows_read == 4 and not stats.skipped


def test_a_new_file_is_read_from_its_start_and_other_files_are_passed_over(tmp_path, follow):
    followed, _ = follow
    append(tmp_path / "a.csv", header(), row(0))
    assert flow_ids(followed.poll()) == ids(0)
    append(tmp_path / "b.csv", header(), row(1), row(2))
    append(tmp_path / "notes.txt", b"not flows\n")
    append(tmp_path / "old.csv.gz", b"\x1f\x8b")
    assert flow_ids(followed.poll()) == ids(1, 2)


def test_a_rotated_file_is_read_to_its_end_and_its_successor_from_its_start(tmp_path, follow):
    followed, _ = follow
    current = tmp_path / "flows.csv"
    append(current, header(), row(0))
    assert flow_ids(followed.poll()) == ids(0)
    append(current, row(1))  # written just before the rotation
    current.rename(tmp_path / "flows.csv.1")  # rotated out of the followed names
    append(current, header(), row(2))
    assert flow_ids(followed.poll()) == ids(1, 2)
    (tmp_path / "flows.csv").rename(tmp_path / "flows-2.csv")  # renamed within the folder: the same file
    append(tmp_path / "flows-2.csv", row(3))
    assert flow_ids(followed.poll()) == ids(3), "a renamed file is not read again"


def test_a_truncated_file_is_read_again_from_its_new_header(tmp_path, follow):
    followed, _ = follow
    flows = tmp_path / "flows.csv"
    append(flows, header(), row(0), row(1), row(2))
    assert flow_ids(followed.poll()) == ids(0, 1, 2)
    with flows.open("wb") as handle:  # truncated and written anew, shorter than before
        handle.write(header() + row(3))
    assert flow_ids(followed.poll()) == ids(3)


def test_following_from_the_end_sends_only_rows_written_later(tmp_path):
    append(tmp_path / "flows.csv", header(), row(0), row(1))
    stats = SourceStats()
    followed = FollowedFiles([tmp_path], with_labels=False, stats=stats, from_end=True)
    assert followed.poll() == []
    append(tmp_path / "flows.csv", row(2))
    append(tmp_path / "later.csv", header(), row(3))
    assert flow_ids(followed.poll()) == ids(2, 3), "a file that appears later is read from its start"
    assert stats.rows_read == 2
    followed.close()


def test_bad_rows_are_counted_and_not_sent(tmp_path, follow):
    followed, stats = follow
    append(tmp_path / "flows.csv", header(), b"1,2\r\n", b'"never closed,1\r\n', b"\r\n", row(0))
    assert flow_ids(followed.poll()) == ids(0)
    assert stats.skipped == Counter({SHORT_ROW: 1, MALFORMED: 1})


def test_follow_sends_rows_in_file_order_and_excludes_what_reorders_or_repeats(tmp_path):
    base = {"csv": [tmp_path], "follow": True}
    assert effective_order(ReplaySettings(**base)) == "file"
    for extra in ({"speedup": 2.0}, {"order": "shuffle"}, {"loop": True}):
        with pytest.raises(ReplayError, match="--follow"):
            effective_order(ReplaySettings(**base, **extra))


@pytest.mark.kafka
def test_a_followed_folder_reaches_the_topic_row_by_row_until_stopped(kafka_bootstrap, new_topic, tmp_path):
    topic = new_topic(prefix="follow")
    settings = ReplaySettings(
        csv=[tmp_path],
        follow=True,
        topic=topic,
        bootstrap_servers=kafka_bootstrap,
        poll_seconds=0.05,
        partitions=1,
        kafka=client_config_from_env(),
    )
    stop = threading.Event()
    result: list = []
    thread = threading.Thread(target=lambda: result.append(replay([tmp_path], settings, stop=stop)))
    append(tmp_path / "a.csv", header(), row(0), row(1))
    thread.start()
    try:
        consume_exactly(kafka_bootstrap, topic, 2, timeout=30)
        append(tmp_path / "a.csv", row(2))
        append(tmp_path / "b.csv", header(), row(3))
        (tmp_path / "a.csv").rename(tmp_path / "a.csv.1")
        append(tmp_path / "a.csv", header(), row(4))
        wait_until(lambda: result or len(consume_until_idle(kafka_bootstrap, topic, idle_after=0.5)) >= 5, "5 rows")
    finally:
        stop.set()
        thread.join(30)
    stats = result[0]
    messages = consume_until_idle(kafka_bootstrap, topic, idle_after=1.0)
    assert sorted(orjson.loads(m.value())["Flow ID"] for m in messages) == sorted(ids(0, 1, 2, 3, 4))
    assert stats.interrupted and stats.delivered == 5 and stats.failed == 0


@pytest.mark.kafka
def test_sigterm_ends_a_follow_with_exit_status_0_and_the_count(kafka_bootstrap, new_topic, tmp_path):
    topic = new_topic(prefix="follow")
    append(tmp_path / "flows.csv", header(), row(0))
    options = [f"--kafka-option={key}={value}" for key, value in client_config_from_env().items()]
    command = [sys.executable, "-m", "detector.cli", "replay", "--follow", str(tmp_path)]
    command += ["--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--poll-seconds", "0.1", *options]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        consume_exactly(kafka_bootstrap, topic, 1, timeout=60)
        append(tmp_path / "flows.csv", row(1))
        consume_exactly(kafka_bootstrap, topic, 2, timeout=30)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert re.search(r"replay stopped after 2 records delivered", err), err
    assert "delivery failures: 0" in err


def test_follow_takes_folders_and_csv_files_only(tmp_path, capsys):
    (tmp_path / "old.csv.gz").write_bytes(b"")
    assert main(["replay", "--follow", str(tmp_path / "old.csv.gz")]) == 2
    assert "--follow takes folders and .csv files" in capsys.readouterr().err
    assert main(["replay", "--follow", str(tmp_path / "missing" / "flows.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert os.path.isdir(tmp_path)
