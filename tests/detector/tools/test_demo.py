"""The demo: its metric reading, its choice of data and rows, and one bounded run end to end."""

from __future__ import annotations

import csv
import gzip
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter

from detector.cli import main as detector_main
from detector.core.csvfile import read_rows
from detector.tools.demo import describe_agreement
from detector.tools.demo_data import DATA_ENV, SHARED_SAMPLE, DemoDataError, find_training_data, prepare_replay_set
from detector.tools.demo_view import histogram_quantile, parse_metrics
from tests.support.generated import generated_rows, write_generated_csv


def test_metrics_are_read_by_their_contract_names():
    registry = CollectorRegistry()
    PromCounter("flowwarden_records_in", "", registry=registry).inc(7)
    verdicts = PromCounter("flowwarden_verdicts", "", ["label", "is_attack"], registry=registry)
    verdicts.labels("DDoS", "true").inc(3)
    verdicts.labels("BENIGN", "false").inc(4)
    PromCounter("flowwarden_dead_letters", "", ["reason_code"], registry=registry).labels("not_json").inc()
    PromCounter("flowwarden_novel_flows", "", ["label"], registry=registry).labels("BENIGN").inc(2)
    latency = Histogram("flowwarden_end_to_end_seconds", "", buckets=(0.1, 0.5, 1.0), registry=registry)
    for value in (0.05, 0.2, 0.3, 0.7):
        latency.observe(value)
    snap = parse_metrics(generate_latest(registry).decode())
    assert snap.ok and snap.records_in == 7
    assert snap.verdicts == {("DDoS", True): 3, ("BENIGN", False): 4} and snap.scored == 7
    assert snap.dead_letters == {"not_json": 1} and snap.dead == 1
    assert snap.novel == {"BENIGN": 2}
    assert snap.end_to_end == [(0.1, 1), (0.5, 3), (1.0, 4), (float("inf"), 4)]


def test_quantiles_interpolate_within_buckets_like_prometheus():
    buckets = [(0.1, 1.0), (0.5, 3.0), (1.0, 4.0), (float("inf"), 4.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.1 + 0.4 * (2 - 1) / 2)
    assert histogram_quantile(buckets, 0.25) == pytest.approx(0.1)
    assert histogram_quantile(buckets, 1.0) == pytest.approx(1.0)
    assert histogram_quantile([(0.1, 0.0), (float("inf"), 2.0)], 0.9) == 0.1, "the +Inf bucket answers its bound"
    assert histogram_quantile([(0.1, 0.0), (float("inf"), 0.0)], 0.5) is None


def test_training_data_is_the_env_var_then_the_shared_sample_then_the_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(DemoDataError, match="CICIDS2017"):
        find_training_data(tmp_path)
    (tmp_path / SHARED_SAMPLE).mkdir()
    write_generated_csv(tmp_path / "flows.csv", generated_rows()[:5])
    assert find_training_data(tmp_path) == tmp_path, "an empty sample folder is not data"
    write_generated_csv(tmp_path / SHARED_SAMPLE / "a.csv.gz", generated_rows()[:5])
    assert find_training_data(tmp_path) == tmp_path / SHARED_SAMPLE
    mine = write_generated_csv(tmp_path / "mine.csv", generated_rows()[:5])
    monkeypatch.setenv(DATA_ENV, str(mine))
    assert find_training_data(tmp_path) == mine
    monkeypatch.setenv(DATA_ENV, str(tmp_path))  # a data root, as the tests use it: its sample
    assert find_training_data(None) == tmp_path / SHARED_SAMPLE
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "empty"))
    with pytest.raises(DemoDataError, match=r"holds no \.csv or \.csv\.gz files"):
        find_training_data(tmp_path)  # not the shared sample instead: the user asked for this folder


def test_a_sample_of_held_out_rows_comes_with_the_trainers_predictions_for_exactly_those_rows(tmp_path):
    rows = generated_rows()[:40]
    run = tmp_path / "run"
    run.mkdir()
    write_generated_csv(run / "test_split.csv.gz", rows, encoding="utf-8")
    with gzip.open(run / "test_predictions.csv.gz", "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "predicted", "confidence"])
        for row in rows:
            writer.writerow([row["Label"], f"guess-for-{row['Flow Duration']}", 0.5])
    chosen = prepare_replay_set(run, tmp_path / "work", limit=12, seed=1)
    assert (chosen.rows, chosen.held_out) == (12, 40)
    replayed = list(read_rows(chosen.path))
    assert len(replayed) == 12
    assert chosen.offline == Counter((row["Label"], f"guess-for-{row['Flow Duration']}") for row in replayed)
    everything = prepare_replay_set(run, tmp_path / "work", limit=None)
    assert everything.path == run / "test_split.csv.gz" and everything.rows == 40


def test_agreement_is_reported_as_equal_or_as_a_count_of_differences():
    same = Counter({("DDoS", "DDoS"): 3, ("BENIGN", "BENIGN"): 2})
    assert "identical" in describe_agreement(same, Counter(same))
    moved = Counter({("DDoS", "DDoS"): 2, ("DDoS", "BENIGN"): 1, ("BENIGN", "BENIGN"): 2})
    assert describe_agreement(moved, same).count("1 verdicts differ") == 1


def test_without_data_the_demo_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert detector_main(["demo", "--data", str(tmp_path / "nothing"), "--work", str(tmp_path / "work")]) == 2
    out = capsys.readouterr().out
    assert "UNSW-NB15" in out and "CICIDS2017" in out and "make demo DATA=" in out


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    from trainer import commands
    from trainer.config import load_config
    from trainer.progress import Reporter

    root = tmp_path_factory.mktemp("demo")
    data = write_generated_csv(root / "flows.csv.gz", generated_rows(seed=4, scale=2))
    config = load_config("quick").with_changes({"finetune": {"epochs": 2, "min_steps": 0}, "pretrain": {"epochs": 1}})
    commands.fit([str(data)], root / "run", config, reporter=Reporter(enabled=False))
    return root / "run"


@pytest.mark.kafka
@pytest.mark.slow
def test_the_demo_streams_a_bounded_sample_and_agrees_with_the_trainer(small_run, tmp_path, capsys):
    status = detector_main(
        ["demo", "--run", str(small_run), "--work", str(tmp_path / "work"), "--limit", "60", "--rate", "200"]
    )
    out = capsys.readouterr().out
    assert status == 0, out[-3000:]
    assert "replaying a seeded sample of 60 of the" in out
    assert "60 verdicts read (60 produced by the worker); duplicates by alert_id: 0" in out
    assert "identical (ground truth, prediction) counts" in " ".join(out.split())
    assert "end-to-end latency" in out
