"""Alerts in the formats SIEMs read: flowwarden's own (``native``), Elastic Common Schema (``ecs``) and OCSF's
Detection Finding (``ocsf``); ``--alert-format`` chooses (docs/siem.md).

Every format is built from the native alert (:func:`detector.core.alerts.build_alert`), so they carry the same
content and the same ``alert_id`` (ECS ``event.id``, OCSF ``finding_info.uid`` and ``metadata.uid``): a record
scored twice yields the same id in every format, and consumers deduplicate on it. The native alert rides along
whole under one namespace (ECS ``flowwarden.*``, OCSF ``unmapped.flowwarden``), so nothing is lost in a format.

What the formats add is read from the alert by one rule each: the flow's time (``@timestamp``, OCSF ``time``)
from ``flow.timestamp`` with :func:`detector.core.flowtime.flow_time` in the meter's time zone, else the
detection time; the ATT&CK technique and severity from :mod:`detector.core.attack`; the Community ID from the
5-tuple (the ``communityid`` package). ``is_alert`` says whether the verdict is an alert (flagged, above its
threshold, not allowlisted) or a plain verdict (``--emit all`` publishes those too): ECS ``event.kind`` is
``alert`` or ``event``, OCSF ``is_alert`` true or false.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal, get_args

import communityid
import orjson

from detector.core.attack import ATTACK_FRAMEWORK, ClassMeaning, Severity, Technique, class_meaning
from detector.core.flowtime import flow_time

AlertFormat = Literal["native", "ecs", "ocsf"]
ALERT_FORMATS: tuple[str, ...] = get_args(AlertFormat)
ECS_VERSION = "8.17.0"
OCSF_VERSION = "1.4.0"
VENDOR = "flowwarden"
PRODUCT = "flowwarden detector"
_PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}
_PORT_PROTOCOLS = {6, 17, 132}
_NO_COMMUNITY_ID = {1, 58}  # ICMP's Community ID needs type and code, which flow records do not carry


def _product_version() -> str:
    try:
        return version("flowwarden")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


@dataclass(frozen=True, slots=True)
class Observer:
    """Who saw the traffic and made the verdict: the ECS ``observer``, OCSF ``metadata.product``."""

    hostname: str = field(default_factory=socket.gethostname)
    version: str = field(default_factory=_product_version)


@dataclass(frozen=True, slots=True)
class Flow:
    """What the formats read from an alert's ``flow``: addresses (valid IPs only), ports, protocol, time."""

    src_ip: str | None
    dst_ip: str | None
    src_port: int | None
    dst_port: int | None
    protocol_number: int | None
    protocol_name: str | None
    seconds: float | None  # the flow's time, epoch seconds (None: unknown)
    community_id: str | None

    @classmethod
    def of(cls, flow: dict[str, Any], zone: tzinfo) -> Flow:
        src_ip, dst_ip = _ip(flow.get("src_ip")), _ip(flow.get("dst_ip"))
        src_port, dst_port = _port(flow.get("src_port")), _port(flow.get("dst_port"))
        number = _protocol_number(flow.get("protocol"))
        name = _PROTOCOL_NAMES.get(number) if number is not None else None
        if name is None and isinstance(flow.get("protocol"), str) and number is None:
            name = flow["protocol"].lower()
        return cls(
            src_ip,
            dst_ip,
            src_port,
            dst_port,
            number,
            name,
            flow_time(flow.get("timestamp"), zone),
            _community_id(number, src_ip, dst_ip, src_port, dst_port),
        )


@dataclass(frozen=True, slots=True)
class AlertEncoder:
    """Turns native alerts into the bytes of one format. ``zone`` is the meter's time zone (flow timestamps
    written without one are its wall-clock time)."""

    format: AlertFormat = "native"
    zone: tzinfo = UTC
    observer: Observer = field(default_factory=Observer)

    def document(self, alert: dict[str, Any], *, is_alert: bool) -> dict[str, Any]:
        if self.format == "ecs":
            return ecs_document(alert, is_alert=is_alert, zone=self.zone, observer=self.observer)
        if self.format == "ocsf":
            return ocsf_document(alert, is_alert=is_alert, zone=self.zone, observer=self.observer)
        return alert

    def encode(self, alert: dict[str, Any], *, is_alert: bool) -> bytes:
        return orjson.dumps(self.document(alert, is_alert=is_alert))


# --------------------------------------------------------------------------------------------------------------
# ECS


def ecs_document(
    alert: dict[str, Any], *, is_alert: bool, zone: tzinfo = UTC, observer: Observer | None = None
) -> dict[str, Any]:
    """One ECS document (``schemas/alert-ecs.schema.json``) for a native alert."""
    observer = observer or Observer()
    flow = Flow.of(alert["flow"], zone)
    meaning = _meaning(alert)
    detected = alert["detected_at"]
    event: dict[str, Any] = {
        "kind": "alert" if is_alert else "event",
        "category": ["network", "intrusion_detection"] if is_alert else ["network"],
        "type": ["info"],
        "severity": int(meaning.severity),
        "id": alert["alert_id"],
        "created": detected,
        "dataset": "flowwarden.alert",
        "module": "flowwarden",
        "reason": _reason(alert),
    }
    if flow.seconds is not None:
        event["start"] = _rfc3339(flow.seconds)
    document: dict[str, Any] = {
        "@timestamp": _rfc3339(flow.seconds) if flow.seconds is not None else detected,
        "ecs": {"version": ECS_VERSION},
        "message": _message(alert, flow),
        "event": event,
        "rule": {
            "name": alert["label"],
            "category": "flow classification",
            "ruleset": alert["model"]["name"],
            "version": alert["model"]["version"],
        },
        "observer": {
            "vendor": VENDOR,
            "product": PRODUCT,
            "type": "ids",
            "hostname": observer.hostname,
            "version": observer.version,
        },
        "tags": _tags(alert, is_alert),
        "flowwarden": _namespace(alert, meaning, is_alert),
    }
    raw = alert["flow"]
    for side, ip, address, port in (
        ("source", flow.src_ip, raw.get("src_ip"), flow.src_port),
        ("destination", flow.dst_ip, raw.get("dst_ip"), flow.dst_port),
    ):
        endpoint: dict[str, Any] = {}
        if address is not None:  # as the meter wrote it (a host name, say); ip only when it is an address
            endpoint["address"] = str(address)
        if ip is not None:
            endpoint["ip"] = ip
        if port is not None:
            endpoint["port"] = port
        if endpoint:
            document[side] = endpoint
    network: dict[str, Any] = {}
    if flow.protocol_name is not None:
        network["transport"] = flow.protocol_name
    if flow.protocol_number is not None:
        network["iana_number"] = str(flow.protocol_number)
    if flow.src_ip is not None:
        network["type"] = "ipv6" if ":" in flow.src_ip else "ipv4"
    if flow.community_id is not None:
        network["community_id"] = flow.community_id
    if network:
        document["network"] = network
    if meaning.technique is not None:
        document["threat"] = _ecs_threat(meaning.technique)
    return document


def _ecs_threat(technique: Technique) -> dict[str, Any]:
    name, _, sub_name = technique.name.partition(": ")
    threat: dict[str, Any] = {
        "framework": ATTACK_FRAMEWORK,
        "tactic": {
            "id": [technique.tactic_id],
            "name": [technique.tactic_name],
            "reference": [technique.tactic_reference],
        },
        "technique": {"id": [technique.parent_id], "name": [name], "reference": [technique.parent_reference]},
    }
    if technique.is_subtechnique:
        threat["technique"]["subtechnique"] = {
            "id": [technique.id],
            "name": [sub_name],
            "reference": [technique.reference],
        }
    return threat


# --------------------------------------------------------------------------------------------------------------
# OCSF


def ocsf_document(
    alert: dict[str, Any], *, is_alert: bool, zone: tzinfo = UTC, observer: Observer | None = None
) -> dict[str, Any]:
    """One OCSF Detection Finding (``schemas/alert-ocsf.schema.json``) for a native alert."""
    observer = observer or Observer()
    flow = Flow.of(alert["flow"], zone)
    meaning = _meaning(alert)
    detected_ms = _epoch_ms(alert["detected_at"])
    info: dict[str, Any] = {
        "uid": alert["alert_id"],
        "title": _title(alert, flow),
        "desc": _reason(alert),
        "types": [alert["label"]],
        "created_time": detected_ms,
        "analytic": {
            "name": alert["model"]["name"],
            "uid": alert["model"]["bundle_sha256"],
            "version": alert["model"]["version"],
            "type_id": 4,
            "type": "Learning (ML/DL)",
        },
    }
    if flow.seconds is not None:
        info["first_seen_time"] = info["last_seen_time"] = round(flow.seconds * 1000)
    if meaning.technique is not None:
        info["attacks"] = [_ocsf_attack(meaning.technique)]
    confidence = float(alert["confidence"])
    confidence_id = 3 if confidence >= 0.9 else 2 if confidence >= 0.6 else 1
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        "uid": alert["alert_id"],
        "product": {"name": PRODUCT, "vendor_name": VENDOR, "version": observer.version},
        "logged_time": detected_ms,
    }
    raw_time = alert["flow"].get("timestamp")
    if raw_time is not None:
        metadata["original_time"] = str(raw_time)
    document: dict[str, Any] = {
        "activity_id": 1,
        "activity_name": "Create",
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "time": round(flow.seconds * 1000) if flow.seconds is not None else detected_ms,
        "severity_id": int(meaning.severity),
        "severity": meaning.severity.caption,
        "status_id": 1,
        "status": "New",
        "is_alert": is_alert,
        "confidence_id": confidence_id,
        "confidence": ("Low", "Medium", "High")[confidence_id - 1],
        "confidence_score": round(confidence * 100),
        "message": _message(alert, flow),
        "metadata": metadata,
        "finding_info": info,
        "unmapped": {"flowwarden": _namespace(alert, meaning, is_alert)},
    }
    if "aggregate" in alert:  # an aggregated alert: the finding stands for this many
        document["count"] = alert["aggregate"]["count"]
    evidence = _ocsf_evidence(alert["flow"], flow)
    if evidence:
        document["evidences"] = [evidence]
    observables = [
        {"name": f"evidences[0].{side}.ip", "type_id": 2, "type": "IP Address", "value": ip}
        for side, ip in (("src_endpoint", flow.src_ip), ("dst_endpoint", flow.dst_ip))
        if ip is not None
    ]
    if observables:
        document["observables"] = observables
    return document


def _ocsf_attack(technique: Technique) -> dict[str, Any]:
    name, _, sub_name = technique.name.partition(": ")
    attack: dict[str, Any] = {
        "tactic": {"uid": technique.tactic_id, "name": technique.tactic_name, "src_url": technique.tactic_reference},
        "technique": {"uid": technique.parent_id, "name": name, "src_url": technique.parent_reference},
    }
    if technique.is_subtechnique:
        attack["sub_technique"] = {"uid": technique.id, "name": sub_name, "src_url": technique.reference}
    return attack


def _ocsf_evidence(raw: dict[str, Any], flow: Flow) -> dict[str, Any]:
    evidence: dict[str, Any] = {}
    for side, ip, address, port in (
        ("src_endpoint", flow.src_ip, raw.get("src_ip"), flow.src_port),
        ("dst_endpoint", flow.dst_ip, raw.get("dst_ip"), flow.dst_port),
    ):
        if ip is None and address is None:
            continue  # OCSF wants an endpoint to be named: a port alone is not one
        endpoint: dict[str, Any] = {"ip": ip} if ip is not None else {"hostname": str(address)}
        if port is not None:
            endpoint["port"] = port
        evidence[side] = endpoint
    connection: dict[str, Any] = {"direction_id": 0, "direction": "Unknown"}  # a flow record does not say
    if flow.protocol_number is not None:
        connection["protocol_num"] = flow.protocol_number
    if flow.protocol_name is not None:
        connection["protocol_name"] = flow.protocol_name
    if flow.community_id is not None:
        connection["community_uid"] = flow.community_id
    if raw.get("flow_id") is not None:
        connection["uid"] = str(raw["flow_id"])
    if len(connection) > 2:
        evidence["connection_info"] = connection
    return evidence


# --------------------------------------------------------------------------------------------------------------
# Shared by both


def _meaning(alert: dict[str, Any]) -> ClassMeaning:
    meaning = class_meaning(alert["label"], is_attack=alert["is_attack"])
    novel = bool(alert.get("novelty", {}).get("is_novel"))
    if novel and meaning.severity < Severity.LOW:  # an unknown kind of flow deserves a look, not an alarm
        return ClassMeaning(meaning.technique, Severity.LOW)
    return meaning


def _namespace(alert: dict[str, Any], meaning: ClassMeaning, is_alert: bool) -> dict[str, Any]:
    """flowwarden's own fields: the native alert whole (less its schema version), and what the format decided."""
    native = {key: value for key, value in alert.items() if key != "schema_version"}
    return {**native, "is_alert": is_alert, "severity": meaning.severity.caption.lower()}


def _tags(alert: dict[str, Any], is_alert: bool) -> list[str]:
    tags = ["flowwarden"]
    if alert.get("novelty", {}).get("is_novel"):
        tags.append("novel")
    if "ground_truth" in alert:
        tags.append("labelled")
    return tags


def _reason(alert: dict[str, Any]) -> str:
    text = f"classified as {alert['label']} with confidence {alert['confidence']:.3f} by {alert['model']['name']}"
    novelty = alert.get("novelty")
    if novelty and novelty.get("is_novel"):
        text += f"; unlike the training data (novelty {novelty['score']:.2f})"
    return text


def _endpoint_text(ip: Any, port: Any) -> str:
    if ip is None:
        return "?"
    host = f"[{ip}]" if ":" in str(ip) else str(ip)
    return f"{host}:{port}" if port is not None else host


def _title(alert: dict[str, Any], flow: Flow) -> str:
    raw = alert["flow"]
    source = _endpoint_text(raw.get("src_ip"), raw.get("src_port"))
    destination = _endpoint_text(raw.get("dst_ip"), raw.get("dst_port"))
    return f"{alert['label']}: {source} -> {destination}" + (f"/{flow.protocol_name}" if flow.protocol_name else "")


def _message(alert: dict[str, Any], flow: Flow) -> str:
    return f"{_title(alert, flow)} (confidence {alert['confidence']:.3f})"


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch_ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@lru_cache(maxsize=65536)
def _ip_text(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def _ip(value: Any) -> str | None:
    """A valid IP address in its canonical text (ECS ``ip`` fields refuse anything else), or None."""
    return _ip_text(value) if isinstance(value, str) else None


def _port(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value <= 65535 else None


def _protocol_number(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    number = communityid.get_proto(str(value).strip())
    return number if isinstance(number, int) and 0 <= number <= 255 else None


_COMMUNITY = communityid.CommunityID(seed=0)


def _community_id(
    protocol: int | None, src_ip: str | None, dst_ip: str | None, src_port: int | None, dst_port: int | None
) -> str | None:
    """The Community ID v1 (seed 0) of the flow, or None when the record lacks what it needs."""
    if protocol is None or src_ip is None or dst_ip is None or protocol in _NO_COMMUNITY_ID:
        return None
    if (":" in src_ip) != (":" in dst_ip):  # one flow never has two address families
        return None
    if protocol in _PORT_PROTOCOLS and (src_port is None or dst_port is None):
        return None
    try:
        if protocol in _PORT_PROTOCOLS:
            tuple_ = communityid.FlowTuple(protocol, src_ip, dst_ip, src_port, dst_port)
        else:
            tuple_ = communityid.FlowTuple(protocol, src_ip, dst_ip)
        return str(_COMMUNITY.calc(tuple_))
    except communityid.Error:  # e.g. an IPv4 source with an IPv6 destination
        return None
