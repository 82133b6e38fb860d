"""trainer.load on every real CSV in the shared data folder, checked against the facts in its DATA.md.

The folder is found through ``FLOWWARDEN_DATA`` or ``<repo>/../shared/data``; without it the module skips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detector.core.labels import BENIGN
from tests.support.shared_data import require_shared_data
from trainer.load import DataError, FlowTable, load_flows

DATA = require_shared_data()

pytestmark = pytest.mark.data

IMPROVED = "cicids2017_improved_sample"
ORIGINAL = "cicids2017_original_format/Friday-WorkingHours-Afternoon-DDos_head_benign.csv.gz"
MERGED = "cicids2017_mergedlabels_sample/CICIDS2017_sample_mergedlabels.csv.gz"
UNSW_TESTING = "unsw_nb15/UNSW_NB15_testing_set_rows.csv.gz"
UNSW_TRAINING = "unsw_nb15/UNSW_NB15_training_set_head.csv.gz"
UNSW_49 = "unsw_nb15/UNSW-NB15_1_head.csv.gz"
UNLABELED = "format_examples/python_cicflowmeter_output_unlabeled.csv"

# DATA.md section 1: one file per class.
IMPROVED_CLASSES = {
    "BENIGN": 5000,
    "DDoS": 5000,
    "DoS GoldenEye": 5000,
    "DoS Hulk": 5000,
    "Infiltration - Portscan": 5000,
    "Portscan": 5000,
    "FTP-Patator": 3972,
    "DoS Slowloris": 3859,
    "SSH-Patator": 2961,
    "DoS Slowhttptest": 1740,
    "Botnet": 736,
    "Web Attack - Brute Force": 73,
    "Infiltration": 36,
    "Web Attack - XSS": 18,
    "Web Attack - SQL Injection": 13,
    "Heartbleed": 11,
}
MERGED_CLASSES = {
    "WebAttack": 1744,
    "Bot": 1573,
    "DoS": 762,
    "BruteForce": 442,
    "PortScan": 318,
    BENIGN: 182,
    "Infiltration": 29,
}
UNSW_TESTING_CLASSES = {
    "Exploits": 1440,
    "DoS": 844,
    "Fuzzers": 574,
    "Reconnaissance": 434,
    BENIGN: 194,
    "Analysis": 64,
    "Shellcode": 44,
    "Backdoor": 22,
    "Worms": 6,
}
UNSW_49_CLASSES = {BENIGN: 2702, "Exploits": 58, "Reconnaissance": 22, "Generic": 7, "DoS": 6, "Shellcode": 5}


def _path(relative: str) -> Path:
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"{relative} not in {DATA}")
    return path


@pytest.fixture(scope="module")
def improved() -> FlowTable:
    return load_flows([_path(IMPROVED)])


def _assert_clean(table: FlowTable) -> None:
    assert table.dropped == {}
    for summary in table.files:
        assert summary.rows_read == summary.rows_kept
        assert summary.unknown_columns == ()


def test_every_shared_csv_is_covered_here():
    found = {str(path.relative_to(DATA)) for path in DATA.rglob("*.csv*")}
    improved = {name for name in found if name.startswith(IMPROVED + "/")}
    assert len(improved) == 16
    assert found - improved == {ORIGINAL, MERGED, UNSW_TESTING, UNSW_TRAINING, UNSW_49, UNLABELED}


def test_improved_cicids2017_sample(improved):
    _assert_clean(improved)
    assert len(improved) == 43_419
    assert improved.class_counts() == IMPROVED_CLASSES
    assert len(improved.files) == 16
    for summary in improved.files:  # one class per file, its size in the file name
        assert summary.rows_kept == int(summary.path.name.removesuffix(".csv.gz").rsplit("_", 1)[1])
        assert summary.label_column == "Label" and summary.encoding == "utf-8"
    assert improved.numeric.shape[1] == 83 and improved.categorical.shape[1] == 0
    assert improved.nonfinite_rows == 0
    assert (improved.numeric["Fwd Header Length"] < 0).sum() == 6
    assert (improved.numeric["Bwd Header Length"] < 0).sum() == 8
    assert improved.numeric["Bwd URG Flags"].nunique() == 1  # constant columns are kept
    assert improved.timestamps.notna().all()
    assert improved.timestamps.min() >= pd.Timestamp("2017-07-03")
    assert improved.timestamps.max() < pd.Timestamp("2017-07-08")
    assert improved.flow["flow_id"].notna().all() and improved.flow["src_ip"].notna().all()
    assert not {"Flow ID", "Src IP", "Src Port", "Dst IP", "Timestamp"} & set(improved.numeric.columns)


def test_original_machinelearningcve_format():
    table = load_flows([_path(ORIGINAL)])
    _assert_clean(table)
    assert len(table) == 7_998
    assert table.class_counts() == {BENIGN: 7_998}
    summary = table.files[0]
    assert summary.label_column == " Label"
    assert summary.duplicate_columns == (" Fwd Header Length",)
    assert table.numeric.shape[1] == 77
    infinite = np.isinf(table.numeric[["Flow Bytes/s", "Flow Packets/s"]].to_numpy()).any(axis=1)
    assert infinite.sum() == 5 and table.nonfinite_rows == 5
    assert (table.numeric.loc[infinite, "Flow Packets/s"] == np.inf).all()
    assert (table.numeric["Flow IAT Min"] < 0).sum() == 7
    assert "CWR Flag Count" in table.numeric.columns  # from the original's "CWE Flag Count"
    assert table.timestamps.isna().all()  # this variant has no Timestamp column


def test_merged_labels_sample():
    table = load_flows([_path(MERGED)])
    _assert_clean(table)
    assert len(table) == 5_050
    assert table.class_counts() == MERGED_CLASSES
    assert table.numeric.shape[1] == 76
    assert "Dst Port" not in table.numeric.columns  # the file has no Destination Port
    assert np.isposinf(table.numeric["Flow Bytes/s"]).any()  # lowercase inf
    assert table.nonfinite_rows > 0


def test_unsw_testing_partition():
    table = load_flows([_path(UNSW_TESTING)])
    _assert_clean(table)
    assert len(table) == 3_622
    assert table.class_counts() == UNSW_TESTING_CLASSES
    assert "Generic" not in table.class_counts()
    assert list(table.categorical.columns) == ["proto", "service", "state"]
    assert "-" in set(table.categorical["service"])
    assert table.numeric.shape[1] == 39 and "rate" in table.numeric.columns
    assert table.files[0].label_column == "attack_cat" and table.files[0].flag_column == "label"


def test_unsw_training_partition_head_is_all_normal():
    table = load_flows([_path(UNSW_TRAINING)])
    _assert_clean(table)
    assert table.class_counts() == {BENIGN: 4_000}
    assert table.categorical.iloc[0].tolist() == ["tcp", "-", "FIN"]


def test_unsw_49_feature_file():
    table = load_flows([_path(UNSW_49)])
    _assert_clean(table)
    assert len(table) == 2_800
    assert table.class_counts() == UNSW_49_CLASSES  # blank attack_cat with label 0 is benign
    assert list(table.categorical.columns) == ["proto", "service", "state"]
    assert (table.numeric["dsport"] == 0xC0A8).sum() >= 1  # a hex port
    assert "ct_src_ltm" in table.numeric.columns  # spelled "ct_src_ ltm" in the file
    assert table.timestamps.notna().all()
    assert (table.timestamps.dt.date == pd.Timestamp("2015-01-22").date()).all()


def test_unsw_files_together_use_their_common_features():
    table = load_flows([_path(UNSW_TESTING), _path(UNSW_TRAINING), _path(UNSW_49)])
    assert len(table) == 3_622 + 4_000 + 2_800
    assert "rate" in table.excluded_features and "dsport" in table.excluded_features
    assert "UNSW-NB15_1_head.csv.gz" in table.excluded_features["rate"]
    assert list(table.categorical.columns) == ["proto", "service", "state"]


def test_original_and_merged_cic_files_together():
    table = load_flows([_path(ORIGINAL), _path(MERGED)])
    assert len(table) == 7_998 + 5_050
    assert table.excluded_features == {"Dst Port": "absent from CICIDS2017_sample_mergedlabels.csv.gz"}
    assert table.nonfinite_rows == sum(summary.nonfinite_rows for summary in table.files)


def test_cic_and_unsw_together_are_refused():
    with pytest.raises(DataError, match="CIC and UNSW-NB15"):
        load_flows([_path(MERGED), _path(UNSW_49)])


def test_the_unlabeled_python_cicflowmeter_example_has_no_label_column():
    with pytest.raises(DataError, match="no label column") as raised:
        load_flows([_path(UNLABELED)])
    assert "'flow_duration'" in str(raised.value)
