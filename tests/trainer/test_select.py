import json
from pathlib import Path

import pytest

from detector.core.features import CIC_FEATURES, PORTABLE_CIC_FEATURES, resolve_columns
from tests.support.generated import generated_rows, write_generated_csv
from trainer.config import FeatureConfig
from trainer.load import DataError, load_flows
from trainer.select import select_features, unused_features

# A real record of the Python cicflowmeter (schemas/examples): its column names as the package writes them.
PYTHON_CICFLOWMETER_HEADER = list(
    json.loads((Path(__file__).parents[2] / "schemas/examples/flow-record.python-cicflowmeter.json").read_text())
)


def test_portable_features_are_written_by_the_python_cicflowmeter():
    features = set(resolve_columns(PYTHON_CICFLOWMETER_HEADER).features)
    assert set(PORTABLE_CIC_FEATURES) <= features
    assert len(PORTABLE_CIC_FEATURES) == len(CIC_FEATURES) - 6


@pytest.fixture
def table(tmp_path):
    return load_flows([write_generated_csv(tmp_path / "generated_flows.csv", generated_rows())])


def test_portable_selection_drops_newer_meter_features_and_says_why(table):
    selected = select_features(table, FeatureConfig(portable=True))
    assert "Protocol" not in selected.numeric.columns
    assert "Flow Duration" in selected.numeric.columns
    assert "features.portable" in selected.excluded_features["Protocol"]


def test_excluded_features_are_dropped_and_unknown_names_are_an_error(table):
    selected = select_features(table, FeatureConfig(exclude=["Dst Port"]))
    assert "Dst Port" not in selected.numeric.columns
    with pytest.raises(DataError, match="Nope"):
        select_features(table, FeatureConfig(exclude=["Nope"]))


def test_a_feature_left_out_at_load_is_not_parsed_so_text_in_it_drops_no_row(tmp_path):
    rows = [{**row, "Flow Bytes/s": "n/a"} for row in generated_rows()]  # a meter that writes no rate
    path = write_generated_csv(tmp_path / "generated_flows.csv", rows)
    config = FeatureConfig(exclude=["Flow Bytes/s"])

    with pytest.raises(DataError, match="no usable rows"):
        load_flows([path])
    table = load_flows([path], unused=lambda names, family: unused_features(names, family, config))
    assert len(table) == len(rows) and table.rows_dropped == 0
    assert "Flow Bytes/s" not in table.numeric.columns
    assert table.excluded_features["Flow Bytes/s"] == "excluded by features.exclude"
    assert select_features(table, config) is table, "selecting again changes nothing and raises nothing"


def test_the_selection_at_load_checks_excluded_names_like_select_features(tmp_path):
    path = write_generated_csv(tmp_path / "generated_flows.csv", generated_rows())
    config = FeatureConfig(exclude=["Nope"])
    with pytest.raises(DataError, match=r"features\.exclude names features the data does not have: Nope"):
        load_flows([path], unused=lambda names, family: unused_features(names, family, config))
