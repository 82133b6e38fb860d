"""Label spellings: one consistent form for the same class, and no merging of different classes.

The same class is spelled differently across releases of a dataset: ``Web Attack \\x96 Brute Force``
(cp1252 en dash, shown as ``�`` when read as UTF-8), ``Web Attack – Brute Force`` and
``Web Attack - Brute Force`` are one class. :func:`normalize_label` folds such *spellings* together.
It never merges genuinely different names (``Bot`` and ``Botnet``, ``PortScan`` and ``Portscan``
stay apart); a user who wants that passes an explicit label map.

Benign traffic has one canonical name, :data:`BENIGN`: ``BENIGN``, ``Benign``, ``Normal`` (UNSW-NB15)
and UNSW-NB15's empty ``attack_cat`` with ``label`` 0 all become it, so the detector always knows which
class is harmless.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

BENIGN = "BENIGN"
_BENIGN_SPELLINGS = frozenset({"benign", "normal"})
_DASHES = re.compile(r"[\u0096\u2013\u2014\u2012\ufffd]")
_SPACES = re.compile(r"\s+")


def normalize_label(raw: str) -> str:
    """The canonical spelling of one label; an empty result means "no label"."""
    text = _DASHES.sub("-", str(raw))
    text = _SPACES.sub(" ", text).strip()
    if text.lower() in _BENIGN_SPELLINGS:
        return BENIGN
    return text


def binary_label(raw: str) -> str | None:
    """Map a 0/1 attack flag (UNSW-NB15 ``label``) to a class name, or None if it is not a flag."""
    text = str(raw).strip()
    if text in {"0", "0.0"}:
        return BENIGN
    if text in {"1", "1.0"}:
        return "ATTACK"
    return None


def apply_label_map(label: str, label_map: Mapping[str, str]) -> str:
    """Rename ``label`` by a user's map; unknown labels pass, and the result is normalised.

    ``label`` is looked up as it is: the caller normalises the map's keys (and ``label``) beforehand, as
    the trainer's loader does, so that any spelling of a class in the map matches.
    """
    return normalize_label(label_map.get(label, label))


def resolve_label(raw: object, flag: object = None, *, codes_are_flags: bool = True) -> str | None:
    """The class of one row from its label cell and, for UNSW-NB15, its 0/1 ``label`` flag.

    UNSW-NB15 leaves ``attack_cat`` empty for normal traffic; an empty class with flag 0 is benign,
    with flag 1 it is unknown. A label cell of ``0`` or ``1`` is itself read as a flag (a binary dataset)
    unless ``codes_are_flags`` is false: a caller that sees the whole column and finds other codes in it
    (``2``, ``3``: classes encoded as integers) passes false so that ``1`` stays a class of its own.
    Returns None when the row has no usable label.
    """
    text = "" if raw is None else normalize_label(str(raw))
    if text and text.lower() != "nan":
        flagged = binary_label(text) if codes_are_flags else None
        return flagged if flagged is not None and flag is None else text
    if flag is not None and binary_label(str(flag)) == BENIGN:
        return BENIGN
    return None
