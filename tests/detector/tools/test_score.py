"""``detector score``: JSON lines per row, error rows, agreement with Scorer, and a torch-only import set."""

from __future__ import annotations

import gzip
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from detector.cli import main
from detector.core.bundle import load_bundle
from detector.core.csvfile import read_rows
from detector.core.decode import DecodedFlow
from detector.core.flowrecord import layout_for, to_record
from detector.core.registry import publish
from detector.core.scorer import Scorer
from detector.core.signing import generate_key_pair, load_private_key, sign_bundle_directory
from detector.tools.score import score_files
from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows, write_generated_csv

REPO = Path(__file__).resolve().parents[3]
ROWS = generated_rows(seed=2)
BAD_ROW = 5


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("score") / "bundle")


@pytest.fixture
def flows(tmp_path) -> Path:
    rows = [dict(row) for row in ROWS]
    rows[BAD_ROW - 1]["Total Fwd Packet"] = "lots"
    rows[0]["Flow Bytes/s"] = "Infinity"
    path = write_generated_csv(tmp_path / "flows.csv", rows)
    with path.open("a", encoding="cp1252") as handle:
        handle.write("1.2.3.4-5.6.7.8-1-80-6,1.2.3.4,1\n")  # a row cut short
    return path


def score(*args: object) -> int:
    return main(["score", *map(str, args)])


def read_lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_one_json_line_per_row_in_order_with_errors_for_bad_rows(bundle, flows, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    assert score("--bundle", bundle, flows, "--out", out, "--batch", 64) == 0
    lines = read_lines(out)
    assert len(lines) == len(ROWS) + 1
    assert [line["source"] for line in lines] == [{"file": str(flows), "row": i} for i in range(1, len(ROWS) + 2)]
    bad, short = lines[BAD_ROW - 1], lines[-1]
    assert bad["error"]["code"] == "wrong_type" and "Total Fwd Packet" in bad["error"]["reason"]
    assert short["error"]["code"] == "short_row"
    good = [line for line in lines if "error" not in line]
    assert len(good) == len(ROWS) - 1
    classes = set(load_bundle(bundle).classes)
    for line, row in zip(lines[:3], ROWS[:3], strict=True):
        assert line["label"] in classes and isinstance(line["is_attack"], bool)
        assert 0 < line["confidence"] <= 1
        assert line["probabilities"][0] == {"label": line["label"], "probability": line["confidence"]}
        assert line["ground_truth"] == row["Label"].replace("\u2013", "-")
        assert line["flow"] == {
            "flow_id": row["Flow ID"],
            "src_ip": row["Src IP"],
            "src_port": row["Src Port"],
            "dst_ip": row["Dst IP"],
            "dst_port": row["Dst Port"],
            "protocol": row["Protocol"],
            "timestamp": row["Timestamp"],
        }
    summary = capsys.readouterr().err
    assert f"scored {len(ROWS) - 1} of {len(ROWS) + 1} rows" in summary
    assert "errors 2 (" in summary and "wrong_type 1" in summary and "short_row 1" in summary


def test_a_file_without_a_needed_feature_gives_missing_features_rows_and_fails(bundle, tmp_path, capsys):
    rows = [{k: v for k, v in row.items() if k != "Flow Duration"} for row in ROWS[:4]]
    path = write_generated_csv(tmp_path / "partial.csv.gz", rows)
    assert score("--bundle", bundle, path) == 1, "nothing scored is a failure for scripts"
    captured = capsys.readouterr()
    lines = [orjson.loads(line) for line in captured.out.splitlines()]
    assert [line["error"]["code"] for line in lines] == ["missing_features"] * 4
    assert "Flow Duration" in lines[0]["error"]["reason"]
    assert "no row could be scored" in captured.err
    assert '`[features] exclude = ["Flow Duration"]`' in captured.err, "a portable bundle needs Flow Duration too"


def test_rows_lacking_only_what_newer_cic_meters_add_are_pointed_at_a_portable_bundle(bundle, tmp_path, capsys):
    rows = [{k: v for k, v in row.items() if k != "Protocol"} for row in ROWS[:4]]
    assert score("--bundle", bundle, write_generated_csv(tmp_path / "older-meter.csv.gz", rows)) == 1
    err = capsys.readouterr().err
    assert "`[features] portable = true` needs only what every CIC meter writes" in err and "exclude" not in err


def test_a_mix_of_scorable_and_unscorable_files_succeeds_and_says_why_rows_failed(bundle, tmp_path, capsys):
    partial = write_generated_csv(
        tmp_path / "partial.csv.gz", [{k: v for k, v in ROWS[0].items() if k != "Flow Duration"}]
    )
    whole = write_generated_csv(tmp_path / "whole.csv.gz", ROWS[:3])
    assert score("--bundle", bundle, partial, whole) == 0
    err = capsys.readouterr().err
    assert "scored 3 of 4 rows" in err and "no row could be scored" not in err
    assert "rows lack features the bundle needs: the meter that wrote this data lacks them" in err


def test_verdicts_agree_with_the_scorer_called_directly(bundle, tmp_path, capsys):
    path = write_generated_csv(tmp_path / "flows.csv.gz", ROWS)
    registry = tmp_path / "registry"
    publish(bundle, registry)
    # The fp32 model on both sides: int8 activations are quantized per call, so batches of 7 and one batch of
    # all rows may differ in the sixth decimal of a confidence; this test is about the record conversion.
    assert score("--bundle", registry, path, "--batch", 7, "--device", "cpu", "--backend", "eager") == 0
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]

    # The CSV rows as they are, without the replay's record conversion: it must not change a verdict.
    scorer = Scorer(load_bundle(bundle), device="cpu", backend="eager")
    decoded = [scorer.decoder.decode_mapping(row) for row in read_rows(path)]
    assert all(isinstance(flow, DecodedFlow) for flow in decoded)
    verdicts = scorer.score(decoded)
    assert [line["label"] for line in lines] == [v.label for v in verdicts]
    assert [line["confidence"] for line in lines] == [round(v.confidence, 6) for v in verdicts]
    assert [line["is_attack"] for line in lines] == [v.is_attack for v in verdicts]


def ndjson_of(rows) -> bytes:
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def test_ndjson_records_get_the_verdicts_of_the_same_rows_in_csv(bundle, tmp_path, capsys):
    csv_path = write_generated_csv(tmp_path / "flows.csv", ROWS[:40])
    assert score("--bundle", bundle, csv_path, "--device", "cpu") == 0
    from_csv = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    # The records a replay (or ingest) writes to the flows topic, one per line, gzip-compressed.
    records = [to_record(row, layout_for(tuple(row)), with_labels=True) for row in read_rows(csv_path)]
    ndjson_path = tmp_path / "flows.jsonl.gz"
    ndjson_path.write_bytes(gzip.compress(ndjson_of(records)))
    assert score("--bundle", bundle, ndjson_path, "--device", "cpu") == 0
    from_ndjson = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line.pop("source") for line in from_ndjson] == [{"file": str(ndjson_path), "line": n} for n in range(1, 41)]
    assert [{k: v for k, v in line.items() if k != "source"} for line in from_csv] == from_ndjson


def test_ndjson_lines_that_a_worker_would_dead_letter_are_error_lines_with_the_same_code(bundle, tmp_path, capsys):
    lines = [orjson.dumps(ROWS[0]), b"{not json", b"", b"[1]", orjson.dumps({"Flow Duration": 1}), b"\xff\xfe"]
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert score("--bundle", bundle, path) == 0
    out = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["source"]["line"] for line in out] == [1, 2, 4, 5, 6], "blank lines are skipped, not renumbered"
    assert "label" in out[0]
    assert [line["error"]["code"] for line in out[1:]] == ["not_json", "not_object", "missing_features", "not_json"]


@pytest.mark.parametrize("kind", ["ndjson", "csv"])
def test_standard_input_is_read_as_ndjson_or_csv_by_its_first_line(bundle, tmp_path, kind):
    csv_path = write_generated_csv(tmp_path / "flows.csv", ROWS[:5])
    records = [to_record(row, layout_for(tuple(row)), with_labels=True) for row in read_rows(csv_path)]
    data = ndjson_of(records) if kind == "ndjson" else csv_path.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "detector.cli", "score", "--bundle", str(bundle), "--device", "cpu", "-"],
        input=data,
        capture_output=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr.decode()
    out = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [line["label"] for line in out] == [line["label"] for line in _scored(bundle, csv_path)]
    assert out[0]["source"] == ({"file": "-", "line": 1} if kind == "ndjson" else {"file": "-", "row": 1})


def test_standard_input_can_be_named_once(bundle, capsys):
    assert score("--bundle", bundle, "-", "-") == 2
    assert "- (standard input) can be read once" in capsys.readouterr().err


def _scored(bundle: Path, path: Path) -> list[dict]:
    out = io.BytesIO()
    score_files([path], Scorer(load_bundle(bundle), device="cpu"), out)
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_a_bad_bundle_is_a_clear_error(tmp_path, capsys):
    path = write_generated_csv(tmp_path / "flows.csv", ROWS[:3])
    assert score("--bundle", tmp_path / "nothing", path) == 2
    assert "does not exist" in capsys.readouterr().err


def test_files_that_are_not_csv_text_or_hold_no_rows_are_clear_failures(bundle, tmp_path, capsys):
    capture = tmp_path / "capture.pcap"
    capture.write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + bytes(16))
    assert score("--bundle", bundle, capture) == 2
    assert "capture.pcap: not a flow file (CSV: .csv, .csv.gz; NDJSON: .ndjson, .jsonl" in capsys.readouterr().err
    misnamed = tmp_path / "capture.csv"
    misnamed.write_bytes(capture.read_bytes())
    assert score("--bundle", bundle, misnamed) == 2
    assert "binary data" in capsys.readouterr().err
    not_gzip = tmp_path / "flows.csv.gz"
    not_gzip.write_text("Dst Port,Flow Duration,Label\n80,10,BENIGN\n")
    assert score("--bundle", bundle, not_gzip) == 2
    assert "flows.csv.gz: cannot read: Not a gzipped file" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert score("--bundle", bundle, empty) == 1
    assert "the files hold no data rows" in capsys.readouterr().err


def test_an_out_file_that_cannot_be_written_is_a_usage_error(bundle, flows, tmp_path, capsys):
    assert score("--bundle", bundle, flows, "--out", tmp_path) == 2
    assert f"--out {tmp_path} cannot be written" in capsys.readouterr().err


def test_an_out_file_that_is_also_an_input_is_refused_and_left_intact(bundle, flows, tmp_path, capsys):
    before = flows.read_bytes()
    assert score("--bundle", bundle, flows, "--out", flows) == 2
    assert "is one of the input files" in capsys.readouterr().err
    assert flows.read_bytes() == before
    assert score("--bundle", bundle, flows.parent, "--out", flows) == 2  # found in a folder argument too
    assert flows.read_bytes() == before


def test_a_bad_batch_size_is_refused_before_the_out_file_is_touched(bundle, flows, tmp_path, capsys):
    out = tmp_path / "kept.jsonl"
    out.write_text("earlier results\n")
    assert score("--bundle", bundle, flows, "--out", out, "--batch", 0) == 2
    assert "batch: Input should be greater than or equal to 1 (from --batch)" in capsys.readouterr().err
    assert out.read_text() == "earlier results\n"


def test_options_come_from_the_environment_and_a_flag_wins(bundle, flows, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWWARDEN_BUNDLE", str(bundle))
    monkeypatch.setenv("FLOWWARDEN_OUT", str(tmp_path / "from-env.jsonl"))
    monkeypatch.setenv("FLOWWARDEN_BATCH", "0")  # checked like the flag: the flag below must win
    assert score(flows, "--batch", 16) == 0
    assert len(read_lines(tmp_path / "from-env.jsonl")) == len(ROWS) + 1


def test_unsw_rows_for_a_cic_bundle_are_not_told_to_train_a_portable_cic_bundle(bundle, tmp_path, capsys):
    header = "dur,spkts,dpkts,sbytes,dbytes,proto,service,state,attack_cat,label"
    path = tmp_path / "generated_unsw.csv"
    path.write_text(f"{header}\n0.1,2,2,100,200,tcp,-,FIN,,0\n")
    assert score("--bundle", bundle, path) == 1
    err = capsys.readouterr().err
    assert "trained on CICFlowMeter (CIC) features and the data has UNSW-NB15 features: train a bundle on this" in err
    assert "portable" not in err


def test_the_command_runs_without_trainer_sklearn_or_pandas(bundle, flows):
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "detector.cli", "score", "--bundle", str(bundle), str(flows)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.stdout.splitlines()) == len(ROWS) + 1
    imported = {m.group(1).strip() for m in re.finditer(r"^import time:.*\|\s*(\S+)\s*$", done.stderr, re.M)}
    assert "detector.core.scorer" in imported and "torch" in imported, "the import log was read"
    heavy = {name for name in imported if name.split(".")[0] in {"trainer", "sklearn", "pandas", "matplotlib"}}
    assert heavy == set()


@pytest.fixture(scope="module")
def novelty_bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("score") / "novelty", novelty=True)


def test_a_bundle_with_a_novelty_model_scores_novelty_per_row_and_counts_the_novel(novelty_bundle, tmp_path, capsys):
    from tests.support.generated import unlike_training

    bundle = novelty_bundle
    like, unlike = generated_rows(seed=7)[:40], unlike_training(generated_rows(seed=8)[:40])
    path = write_generated_csv(tmp_path / "mixed.csv", like + unlike)
    assert score("--bundle", bundle, path) == 0
    captured = capsys.readouterr()
    novel = [orjson.loads(line)["novelty"]["is_novel"] for line in captured.out.splitlines()]
    assert sum(novel[:40]) < 10 < 36 < sum(novel[40:])  # a 5 % calibration quantile, 40 rows: noisy
    assert f"novel {sum(novel)} ({100 * sum(novel) / 80:.1f} %)" in captured.err
    assert "of the scored flows are novel" in captured.err, "about half novel against 5 % calibrated: say so"
    assert score("--bundle", bundle, write_generated_csv(tmp_path / "like.csv", generated_rows(seed=9))) == 0
    assert "of the scored flows are novel" not in capsys.readouterr().err


def test_score_files_called_as_a_library_knows_the_novel_share_the_bundle_expects(novelty_bundle, tmp_path):
    from tests.support.generated import unlike_training

    scorer = Scorer(load_bundle(novelty_bundle), device="cpu")
    like = write_generated_csv(tmp_path / "like.csv", generated_rows(seed=9))
    summary = score_files([like], scorer, io.BytesIO())
    assert summary.novel_expected == pytest.approx(0.05)
    assert summary.novel is not None and summary.novel < 0.25 * summary.scored
    assert not any("novel" in hint for hint in summary.hints()), "flows like the training data are not news"

    unlike = write_generated_csv(tmp_path / "unlike.csv", unlike_training(generated_rows(seed=8)[:40]))
    assert any("are novel" in hint for hint in score_files([unlike], scorer, io.BytesIO()).hints())


def test_a_row_with_extra_cells_is_an_error_and_a_long_cell_does_not_end_the_file(bundle, tmp_path, capsys):
    rows = [dict(row) for row in ROWS[:4]]
    rows[1]["Flow ID"] = "x" * 200_000  # over the csv module's default 128 KiB field limit
    path = write_generated_csv(tmp_path / "flows.csv", rows)
    lines = path.read_text(encoding="cp1252").splitlines()
    lines[3] += ",surplus"  # the third data row
    path.write_text("\n".join(lines) + "\n", encoding="cp1252")
    out = tmp_path / "verdicts.jsonl"
    assert score("--bundle", bundle, path, "--out", out) == 0
    results = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [result["source"]["row"] for result in results] == [1, 2, 3, 4]
    assert [result.get("error", {}).get("code") for result in results] == [None, None, "long_row", None]
    assert "'surplus'" in results[2]["error"]["reason"]


def test_with_a_trusted_key_only_a_bundle_signed_by_it_scores(bundle, flows, tmp_path, capsys):
    private, public = generate_key_pair(tmp_path / "keys")
    assert score("--bundle", bundle, flows, "--trusted-key", public, "--out", tmp_path / "a.jsonl") == 2
    assert "is refused: it is not signed" in capsys.readouterr().err
    signed = shutil.copytree(bundle, tmp_path / "signed")
    sign_bundle_directory(signed, load_private_key(private))
    assert score("--bundle", signed, flows, "--trusted-key", public, "--out", tmp_path / "b.jsonl") == 0
    assert len(read_lines(tmp_path / "b.jsonl")) == len(ROWS) + 1
