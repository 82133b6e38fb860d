"""Parsing one feature value, the same way for CSV cells and JSON record fields.

Flow meters write ``Infinity``/``inf``/``NaN`` as text (JSON has no literal for them), UNSW-NB15 writes some
ports in hex (``0x000b``), and an empty cell means "no value". Everything else that is not a number is an
error the caller must report: a training row is dropped and counted, a stream record goes to the
dead-letter topic.
"""

from __future__ import annotations

import math

_TOKENS: dict[str, float] = {
    "": math.nan,
    "nan": math.nan,
    "null": math.nan,
    "inf": math.inf,
    "+inf": math.inf,
    "infinity": math.inf,
    "+infinity": math.inf,
    "-inf": -math.inf,
    "-infinity": -math.inf,
}


def parse_number(value: object) -> float:
    """A float from a JSON/CSV value; raises ``ValueError`` with a short reason if it is not numeric.

    ``None`` and the empty string are NaN (missing value); booleans are rejected because a flow meter
    never writes them for a numeric feature and accepting them would hide a schema error.
    """
    if isinstance(value, bool):
        raise ValueError("boolean where a number was expected")
    if isinstance(value, int):
        return _int_to_float(value)
    if isinstance(value, float):
        return value
    if value is None:
        return math.nan
    if isinstance(value, str):
        return _parse_text(value)
    raise ValueError(f"{type(value).__name__} where a number was expected")


def _parse_text(value: str) -> float:
    text = value.strip()
    token = _TOKENS.get(text.lower())
    if token is not None:
        return token
    try:
        return float(text)
    except ValueError:
        pass
    lowered = text.lower()
    if lowered.startswith(("0x", "-0x", "+0x")):
        try:
            return _int_to_float(int(lowered, 16))
        except ValueError:
            pass
    raise ValueError(f"text where a number was expected: {text[:40]!r}")


def _int_to_float(number: int) -> float:
    """``float(number)``, or an infinity of its sign when it is beyond a float's range, as ``float("1e999")``."""
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf
