"""How faithful ``--explain`` is, and why it uses integrated gradients: a deletion check on the bench bundle.

For a sample of the test split's attack verdicts, each method ranks the features of each flow (gradient × input,
i.e. integrated gradients with one step, and integrated gradients with 4 and 8 steps); the flow's top 1 and top 3
features are then set to 0 (the preprocessed value of the training minimum, no category) and the drop of the
verdict's log-odds is averaged. A method that names the features the verdict rests on makes it drop more; random
features are the floor. Zeroing favours integrated gradients a little (0 is its reference). One JSON line on
stdout; not part of ``make test``. ``--dry`` runs it on the generated bench bundle (numbers mean nothing).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import orjson
import torch

from detector.core import explain
from detector.core.bundle import load_bundle
from detector.core.decode import DecodedFlow
from detector.core.scorer import Scorer
from detector.tools import e2e
from tests.bench.bundle import bench_bundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.explain_check", description=__doc__.split("\n")[0])
    parser.add_argument("--dry", action="store_true")
    parser.add_argument("--flows", type=int, default=600, help="attack verdicts sampled from the test split")
    args = parser.parse_args(argv)
    prepared = bench_bundle("cpu", dry=args.dry)
    bundle = load_bundle(prepared.bundle)
    scorer = Scorer(bundle, "cpu", backend="eager")
    decoded = map(scorer.decoder.decode_bytes, e2e.records_from_csv([prepared.test_split]))
    flows = [flow for flow in decoded if isinstance(flow, DecodedFlow)]
    best = scorer.scores(flows).ranked(1)[:, 0]
    attacks = np.flatnonzero(best != bundle.classes.index(bundle.benign_class))
    rows = np.random.default_rng(0).permutation(attacks)[: args.flows]
    matrix, targets = scorer._matrix([flows[i] for i in rows]), best[rows]
    explainer = explain.Explainer(scorer.model, bundle.preprocessor, scorer.device, bundle.calibration.temperature)
    before = _log_odds(explainer, matrix, targets)
    result: dict[str, Any] = {"source": prepared.source, "flows": len(rows), "mean_log_odds": _round(before.mean())}
    rng = np.random.default_rng(1)
    rankings = {"random": np.stack([rng.permutation(len(explainer.features)) for _ in rows]) if len(rows) else None}
    for steps in (1, 4, 8):
        explain.STEPS = steps
        rankings[f"steps_{steps}"] = np.argsort(-explainer.attributions(matrix, targets), axis=1, kind="stable")
    for name, ranking in rankings.items():
        result[name] = {
            f"top_{k}_drop": _round(
                (before - _log_odds(explainer, _zeroed(explainer, matrix, ranking, k), targets)).mean()
            )
            for k in (1, 3)
        }
    print(orjson.dumps(result).decode(), flush=True)
    return 0


def _zeroed(explainer: explain.Explainer, matrix: np.ndarray, ranking: np.ndarray, k: int) -> np.ndarray:
    """``matrix`` with each row's first ``k`` ranked features (all their model inputs) set to 0."""
    zeroed = matrix.copy()
    for row, features in enumerate(ranking[:, :k]):
        zeroed[row, np.flatnonzero(explainer._fold[:, features].sum(axis=1) > 0)] = 0.0
    return zeroed


def _log_odds(explainer: explain.Explainer, matrix: np.ndarray, targets: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = explainer.model(torch.as_tensor(matrix)) / explainer.temperature
        target = torch.as_tensor(targets)[:, None]
        chosen = logits.gather(1, target).squeeze(1)
        return (chosen - logits.scatter(1, target, float("-inf")).logsumexp(dim=1)).numpy()


def _round(value: Any) -> float:
    return round(float(value), 3)


if __name__ == "__main__":
    raise SystemExit(main())
