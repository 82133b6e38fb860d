"""Choosing the features a model is trained on (and hence the features every served record must carry).

By default a model uses every feature the training files share. A model trained on the improved
CICIDS2017 columns then needs RST flags, ICMP fields and the TCP flow time, which the original CICIDS2017
files and the Python ``cicflowmeter`` do not write: records from those meters would be dead-lettered as
missing features. ``portable = true`` trains on :data:`detector.core.features.PORTABLE_CIC_FEATURES` instead,
so one bundle serves every CIC dialect; ``exclude`` drops named features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from detector.core.features import PORTABLE_CIC_FEATURES
from trainer.config import FeatureConfig
from trainer.load import NO_FEATURES_LEFT, DataError, FlowTable


def unused_features(names: Sequence[str], family: str, config: FeatureConfig) -> dict[str, str]:
    """Which of ``names`` (features of a ``family`` of data) the config leaves out, with the reason for each.

    Raises :class:`DataError` when ``features.exclude`` names a feature that is not among ``names``: a
    misspelt exclusion must not train on the feature it meant to drop.
    """
    unknown = sorted(set(config.exclude) - set(names))
    if unknown:
        raise DataError(f"features.exclude names features the data does not have: {', '.join(unknown)}")
    reasons: dict[str, str] = {}
    if config.portable and family == "cic":
        for name in names:
            if name not in PORTABLE_CIC_FEATURES:
                reasons[name] = "not written by every CIC flow meter (features.portable)"
    for name in config.exclude:
        reasons[name] = "excluded by features.exclude"
    return reasons


def select_features(table: FlowTable, config: FeatureConfig) -> FlowTable:
    """The table restricted to the configured features; dropped ones are listed in ``excluded_features``.

    A table loaded with ``load_flows(..., unused=...)`` for the same config comes back unchanged.
    """
    names = [*table.numeric.columns, *table.categorical.columns]
    reasons = unused_features([*names, *table.excluded_features], table.family, config)
    reasons = {name: reason for name, reason in reasons.items() if name in names}
    if not reasons:
        return table
    numeric = table.numeric[[name for name in table.numeric.columns if name not in reasons]]
    categorical = table.categorical[[name for name in table.categorical.columns if name not in reasons]]
    if numeric.shape[1] + categorical.shape[1] == 0:
        raise DataError(NO_FEATURES_LEFT)
    return replace(
        table,
        numeric=numeric,
        categorical=categorical,
        excluded_features={**table.excluded_features, **reasons},
    )
