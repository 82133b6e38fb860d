"""Per-class confidence thresholds: an attack verdict less confident than its class's threshold is not an alert.

``--min-confidence`` is every class's threshold; ``--class-threshold CLASS=CONFIDENCE`` (``[class_thresholds]`` in a
settings file, ``FLOWWARDEN_CLASS_THRESHOLD__PORTSCAN=0.9``) replaces it for one class. Class names are matched
by :func:`class_key` (lower case, letters and digits only), because an environment variable cannot spell
``DoS Hulk``: ``DOS_HULK``, ``dos-hulk`` and ``DoS Hulk`` are one class. Such a verdict is still scored and
counted (``flowwarden_verdicts_total``), and counted again as suppressed (``reason="below_threshold"``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def class_key(name: str) -> str:
    """How a class name is compared: ``"DoS Hulk"``, ``"DOS_HULK"`` and ``"dos-hulk"`` are ``"doshulk"``."""
    return _NOT_ALNUM.sub("", str(name).lower())


class Thresholds:
    """The least confidence of an alert, per class of one bundle."""

    def __init__(self, min_confidence: float = 0.0, per_class: Mapping[str, float] | None = None) -> None:
        self.min_confidence = min_confidence
        self.per_class = {class_key(name): value for name, value in (per_class or {}).items()}

    def for_classes(self, classes: Sequence[str]) -> np.ndarray:
        """``[len(classes)]`` thresholds, in the bundle's class order."""
        return np.asarray(
            [self.per_class.get(class_key(name), self.min_confidence) for name in classes], dtype=np.float64
        )

    def unknown(self, classes: Sequence[str]) -> list[str]:
        """The per-class entries that name none of ``classes`` (a typo, or a class of another bundle)."""
        known = {class_key(name) for name in classes}
        return sorted(key for key in self.per_class if key not in known)

    @property
    def active(self) -> bool:
        return self.min_confidence > 0.0 or any(value > 0.0 for value in self.per_class.values())
