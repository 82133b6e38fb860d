"""Building alert messages (``schemas/alert.schema.json``) from verdicts.

``alert_id`` is derived from the source coordinates only (``sha256(topic NUL partition NUL offset)``,
first 32 hex digits), so a record that is processed twice (at-least-once after a crash) yields the same
id and downstream consumers can de-duplicate. The message key is the flow's identity, so all alerts of one
flow land in one partition of the output topic, in order.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Any

from detector.core.scorer import Verdict

ALERT_SCHEMA_VERSION = 1
FLOW_FIELDS = ("flow_id", "src_ip", "src_port", "dst_ip", "dst_port", "protocol", "timestamp")
_INTEGER_FIELDS = {"src_port", "dst_port"}
# Integers a JSON writer keeps exact (orjson refuses to write larger ones); beyond, the value is kept as text.
_INT64 = 2**63


def alert_id(topic: str, partition: int, offset: int) -> str:
    return hashlib.sha256(f"{topic}\x00{partition}\x00{offset}".encode()).hexdigest()[:32]


def utc_now() -> str:
    """RFC 3339, UTC, millisecond precision, ``Z`` suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def flow_identity(fields: dict[str, Any]) -> dict[str, Any]:
    """The alert's ``flow`` object: known identity fields only, as strings or integers."""
    identity = {}
    for name in FLOW_FIELDS:
        if name in fields:
            identity[name] = _identity_value(name, fields[name])
    return identity


def build_alert(
    verdict: Verdict,
    flow_fields: dict[str, Any],
    ground_truth: str | None,
    model: dict[str, str],
    source: tuple[str, int, int],
    detected_at: str,
) -> dict[str, Any]:
    """One alert object. ``model`` is ``{name, version, bundle_sha256}``; ``source`` is (topic, partition, offset)."""
    topic, partition, offset = source
    alert: dict[str, Any] = {
        "schema_version": ALERT_SCHEMA_VERSION,
        "alert_id": alert_id(topic, partition, offset),
        "flow": flow_identity(flow_fields),
        "label": verdict.label,
        "is_attack": verdict.is_attack,
        "confidence": round(verdict.confidence, 6),
        "probabilities": [{"label": label, "probability": p} for label, p in verdict.top],
        "model": model,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "detected_at": detected_at,
    }
    if verdict.novelty is not None:
        alert["novelty"] = novelty_field(verdict)
    if ground_truth:
        alert["ground_truth"] = ground_truth
    if verdict.explanation:
        alert["explanation"] = [attribution.to_json() for attribution in verdict.explanation]
    return alert


def novelty_field(verdict: Verdict) -> dict[str, Any]:
    """The alert's ``novelty`` object: the deciding signal's score and verdict, and every signal's score."""
    field: dict[str, Any] = {"score": round(verdict.novelty or 0.0, 6), "is_novel": verdict.is_novel}
    if verdict.novelty_signal is not None:
        field["signal"] = verdict.novelty_signal
        field["scores"] = {name: round(score, 6) for name, score in verdict.novelty_scores}
    return field


def alert_key(identity: dict[str, Any], source: tuple[str, int, int]) -> bytes:
    """The flow id, else the 5-tuple, else the source coordinates."""
    if identity.get("flow_id"):
        return str(identity["flow_id"]).encode()
    five = [identity.get(k) for k in ("src_ip", "dst_ip", "src_port", "dst_port", "protocol")]
    if any(v is not None for v in five):
        return "-".join("" if v is None else str(v) for v in five).encode()
    return f"{source[0]}/{source[1]}/{source[2]}".encode()


def _identity_value(name: str, value: Any) -> str | int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else str(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() and -_INT64 <= value < _INT64 else str(value)
    text = str(value).strip()
    if not text:
        return None
    if name in _INTEGER_FIELDS and text.isascii() and text.isdigit() and len(text) < 19:
        return int(text)
    return text
