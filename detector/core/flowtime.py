"""The one reader of flow timestamps, for training (temporal split), replay (time order, pacing), scoring,
ingest and alerts.

A flow meter writes the time a flow started in one of a few ways; each is read by one rule:

* **ISO 8601** (improved CICIDS2017 ``2017-07-05 18:12:15.650811``, the Python ``cicflowmeter``, any
  ``...T...Z`` or ``+02:00``): as written.
* **Slashed dates** (CICFlowMeter ``5/7/2017 8:12``, CSE-CIC-IDS2018 ``14/02/2018 08:31:01``), with or without
  seconds and fractions, 24-hour or AM/PM. **Day first, unless the second number cannot be a month**
  (``12/31/2017`` is 31 December): CICFlowMeter, whose files are the reason these forms exist, writes day
  first, and a month-first date is recognisable only once its day is above 12. ``5/7/2017`` is therefore
  5 July, never 7 May.
* **Epoch numbers** (UNSW-NB15 ``Stime``): seconds, or milli-, micro- or nanoseconds by size: a magnitude
  below 1e11 is seconds (up to the year 5138), below 1e14 milliseconds, below 1e17 microseconds, above that
  nanoseconds.

A time without a zone is taken as UTC by default (flow meters write the capture's local time; only
differences between flows matter for ordering, splitting and pacing). Whoever shows the time to a person,
or to a SIEM (the ``@timestamp`` of an ECS alert), passes the meter's zone (``zone=``, see :func:`meter_zone`):
a time without a zone is then read as that zone's wall-clock time. A time with a zone is converted to UTC,
whatever ``zone`` says; epoch numbers are UTC by definition. Anything else is no time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

_SECONDS_BELOW = 1e11
_MILLISECONDS_BELOW = 1e14
_MICROSECONDS_BELOW = 1e17
_EPOCH = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?")
_SLASHED = re.compile(
    r"(?P<a>\d{1,2})/(?P<b>\d{1,2})/(?P<year>\d{4})"
    r"(?:[ T](?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,9}))?)?"
    r"\s*(?P<ampm>[AaPp][Mm])?)?"
)


def flow_time(value: object, zone: tzinfo = UTC) -> float | None:
    """Seconds since the epoch (UTC) of a flow timestamp as flow meters write it, or None if it is not one.

    ``value`` may be a JSON number, text, or None. A time written without a zone is read in ``zone`` (the
    meter's; UTC by default). See the module docstring for the rules.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _epoch_seconds(float(value))
    return _text_time(str(value).strip(), zone)


def meter_zone(name: str) -> tzinfo:
    """The time zone named ``name`` (an IANA name such as ``Europe/Berlin``, or ``UTC``); raises ``ValueError``
    naming it when there is no such zone."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a time zone (an IANA name such as Europe/Berlin, or UTC)") from None


@lru_cache(maxsize=4096)
def _text_time(text: str, zone: tzinfo) -> float | None:
    if not text:
        return None
    if _EPOCH.fullmatch(text):
        return _epoch_seconds(float(text))
    slashed = _SLASHED.fullmatch(text)
    if slashed:
        return _slashed_time(slashed, zone)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return _utc(moment, zone).timestamp()


def flow_times(values: Iterable[object]) -> np.ndarray:
    """:func:`flow_time` of every value, as float64 seconds with NaN where a value is no time."""
    return np.array([math.nan if (t := flow_time(v)) is None else t for v in values], dtype=np.float64)


def _epoch_seconds(number: float) -> float | None:
    if not math.isfinite(number):
        return None
    size = abs(number)
    if size < _SECONDS_BELOW:
        return number
    if size < _MILLISECONDS_BELOW:
        return number / 1e3
    if size < _MICROSECONDS_BELOW:
        return number / 1e6
    return number / 1e9


def _slashed_time(match: re.Match[str], zone: tzinfo) -> float | None:
    first, second, year = int(match["a"]), int(match["b"]), int(match["year"])
    day, month = (first, second) if second <= 12 else (second, first)
    hour, minute = int(match["hour"] or 0), int(match["minute"] or 0)
    ampm = (match["ampm"] or "").lower()
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    fraction = (match["fraction"] or "").ljust(6, "0")[:6]
    try:
        moment = datetime(year, month, day, hour, minute, int(match["second"] or 0), tzinfo=zone)
    except ValueError:  # 31/02, 25:00, day and month both above 12
        return None
    return (moment + timedelta(microseconds=int(fraction))).timestamp()


def _utc(moment: datetime, zone: tzinfo) -> datetime:
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment.astimezone(UTC)
