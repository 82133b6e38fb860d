"""The paper's ablation (Table 6): the same data and split, components added one at a time.

Rows are cumulative, as in the paper: ``base`` is the ResCAE-BiGRU trained with cross-entropy and plain
SGD on the scaled data; ``+SAM`` adds Sharpness-Aware Minimization; ``+iForest`` adds the benign
outlier removal; ``+SMOTE`` adds SMOTE-Tomek; ``full`` adds Focal Loss, which is the complete method
(``trainer fit``). The paper reports base 97.42/97.29, +SAM 98.39/98.35, +iForest 98.55/98.30,
+SMOTE 99.03/98.94, full 99.33/99.41 (accuracy / F1, %).
"""

from __future__ import annotations

from typing import Any

from trainer.config import TrainConfig

PAPER_TABLE6 = {
    "base": (97.42, 97.29),
    "+SAM": (98.39, 98.35),
    "+iForest": (98.55, 98.30),
    "+SMOTE": (99.03, 98.94),
    "full": (99.33, 99.41),
}


def ablation_rows(config: TrainConfig) -> list[tuple[str, TrainConfig]]:
    """The five configurations, derived from ``config`` (its epochs, seed, split...)."""
    off: dict[str, Any] = {
        "novelty": {"enabled": False},  # not part of the paper's method, and the rows are compared on labels only
        "outliers": {"enabled": False},
        "resample": {"enabled": False},
        "finetune": {"loss": "cross_entropy", "sam": {"enabled": False}},
    }
    sam = {"finetune": {"sam": {"enabled": True}}}
    iforest = {"outliers": {"enabled": True}}
    smote = {"resample": {"enabled": True}}
    focal = {"finetune": {"loss": "focal"}}
    base = config.with_changes(off)
    with_sam = base.with_changes(sam)
    with_iforest = with_sam.with_changes(iforest)
    with_smote = with_iforest.with_changes(smote)
    full = with_smote.with_changes(focal)
    return [("base", base), ("+SAM", with_sam), ("+iForest", with_iforest), ("+SMOTE", with_smote), ("full", full)]
