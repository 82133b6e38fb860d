"""The paper's ablation (Table 6): the same data and split, components added to the base model.

The paper's rows are "ResCAE + BiGRU", "SAM + ResCAE + BiGRU", "iForest + ResCAE + BiGRU", "SMOTE + ResCAE +
BiGRU" and the full method. It does not say whether each row adds its component to the row above
(*stacked*) or to the base alone (*single*): the names read as single additions, and its numbers (+iForest
F1 below +SAM) fit either reading. So both can be run:

* ``stacked``: ``base`` (cross-entropy, plain SGD, no cleaning or resampling), ``+SAM``, ``+iForest`` (SAM
  kept), ``+SMOTE`` (both kept), ``full`` (+ Focal Loss: the complete method, ``trainer fit``).
* ``single``: ``base``, then SAM, iForest, SMOTE-Tomek and Focal Loss each added to the base alone, then
  ``full``. The paper has no Focal-only row; it is here because "each component alone" needs it.

The paper reports base 97.42/97.29, +SAM 98.39/98.35, +iForest 98.55/98.30, +SMOTE 99.03/98.94, full
99.33/99.41 (accuracy / F1, %).
"""

from __future__ import annotations

from typing import Any, Literal

from trainer.config import TrainConfig

Protocol = Literal["stacked", "single"]
PROTOCOLS: tuple[Protocol, ...] = ("stacked", "single")

PAPER_TABLE6: dict[str, tuple[float, float] | None] = {
    "base": (97.42, 97.29),
    "+SAM": (98.39, 98.35),
    "+iForest": (98.55, 98.30),
    "+SMOTE": (99.03, 98.94),
    "+Focal": None,  # single protocol only; the paper has no such row
    "full": (99.33, 99.41),
}

_COMPONENTS: dict[str, dict[str, Any]] = {
    "+SAM": {"finetune": {"sam": {"enabled": True}}},
    "+iForest": {"outliers": {"enabled": True}},
    "+SMOTE": {"resample": {"enabled": True}},
    "+Focal": {"finetune": {"loss": "focal"}},
}


def ablation_rows(config: TrainConfig, protocol: Protocol = "stacked") -> list[tuple[str, TrainConfig]]:
    """The rows of ``protocol``, each derived from ``config`` (its epochs, seed, split...)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown ablation protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    off: dict[str, Any] = {
        # Neither is part of the paper's method, and the rows are compared on labels only.
        "novelty": {"enabled": False},
        "calibration": {"enabled": False},
        "outliers": {"enabled": False},
        "resample": {"enabled": False},
        "finetune": {"loss": "cross_entropy", "sam": {"enabled": False}},
    }
    base = config.with_changes(off)
    rows = [("base", base)]
    if protocol == "stacked":
        for name in ("+SAM", "+iForest", "+SMOTE"):
            rows.append((name, rows[-1][1].with_changes(_COMPONENTS[name])))
        rows.append(("full", rows[-1][1].with_changes(_COMPONENTS["+Focal"])))
    else:
        rows += [(name, base.with_changes(change)) for name, change in _COMPONENTS.items()]
        full = base
        for change in _COMPONENTS.values():
            full = full.with_changes(change)
        rows.append(("full", full))
    return rows
