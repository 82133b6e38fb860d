"""``detector drift`` on real CICIDS2017 flows: two samples of one meter are stable, another meter is not.

The bundle holds histograms of half the improved-CICIDS2017 BENIGN rows (the fixed CICFlowMeter) on the
features every CIC meter writes; its classifier is an untrained network, because drift reads only the
histograms. The other half reads as stable; the original-format CICIDS2017 benign flows (the original
CICFlowMeter: TCP flags as 0/1, an unseen window as -1, the TCP "appendix" flows) read as a significant shift.
Skips cleanly without ../shared/data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from detector.cli import main
from detector.core.bundle import write_bundle
from detector.core.decode import DecodedFlow, FlowDecoder
from detector.core.drift import ReferenceHistograms
from detector.core.features import PORTABLE_CIC_FEATURES
from detector.core.flowfiles import decoded_rows
from detector.core.model import ModelConfig, ResCAEBiGRU
from detector.core.preprocess import Preprocessor
from tests.support.shared_data import require_shared_data

DATA = require_shared_data()
IMPROVED_BENIGN = DATA / "cicids2017_improved_sample" / "BENIGN_5000.csv.gz"
ORIGINAL_BENIGN = DATA / "cicids2017_original_format"


def values(path: Path, decoder: FlowDecoder) -> np.ndarray:
    flows = [item.outcome for item in decoded_rows([path], decoder)]
    return np.stack([flow.numeric for flow in flows if isinstance(flow, DecodedFlow)])


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> tuple[Path, Path]:
    """A bundle with the histograms of the even BENIGN rows, and the odd rows as a CSV."""
    root = tmp_path_factory.mktemp("shared-drift")
    decoder = FlowDecoder(PORTABLE_CIC_FEATURES)
    rows = values(IMPROVED_BENIGN, decoder)
    training, held_out = rows[0::2], rows[1::2]
    pre = Preprocessor.fit(training, PORTABLE_CIC_FEATURES, log_scale=True)
    bundle = write_bundle(
        root / "bundle",
        model=ResCAEBiGRU(ModelConfig(n_features=pre.width, n_classes=2)),
        preprocessor=pre,
        classes=["BENIGN", "ATTACK"],
        benign_class="BENIGN",
        drift=ReferenceHistograms.fit(training, PORTABLE_CIC_FEATURES),
    )
    csv = root / "held_out.csv"
    header = ",".join(f'"{name}"' for name in PORTABLE_CIC_FEATURES)
    np.savetxt(csv, held_out, delimiter=",", header=header, comments="", fmt="%.17g")
    return bundle, csv


def report(capsys, bundle: Path, files: Path) -> dict:
    assert main(["drift", "--bundle", str(bundle), str(files), "--format", "json"]) == 0
    return orjson.loads(capsys.readouterr().out)


def test_another_sample_of_the_same_meter_is_stable(halves, capsys) -> None:
    bundle, held_out = halves
    result = report(capsys, bundle, held_out)
    assert result["rows"] == 2500 and result["rows_rejected"] == 0
    assert result["max_psi"] < 0.1, result["features"][:3]


def test_the_original_meter_is_a_significant_shift(halves, capsys) -> None:
    bundle, _ = halves
    result = report(capsys, bundle, ORIGINAL_BENIGN)
    assert result["rows"] == 7998
    assert result["verdict"] == "significant"
    assert "FWD Init Win Bytes" in result["significant"]  # the original meter writes -1 for an unseen window
