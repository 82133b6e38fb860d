"""report.json is strict JSON, whatever the numbers in it."""

import json
import math

from trainer.report import write_report_json


def _refuse(token: str) -> None:
    raise AssertionError(f"{token} is not JSON")


def test_infinite_and_nan_numbers_are_written_as_null(tmp_path):
    report = {"loss": math.nan, "curve": [0.5, math.inf, -math.inf], "nested": {"f1": 0.9, "rows": 3, "name": "x"}}
    write_report_json(tmp_path, report)
    written = json.loads((tmp_path / "report.json").read_text(), parse_constant=_refuse)
    assert written == {"loss": None, "curve": [0.5, None, None], "nested": {"f1": 0.9, "rows": 3, "name": "x"}}
