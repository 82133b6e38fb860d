"""The ECS and OCSF alert formats: our schemas, the standards' own field definitions, and the native content.

The schemas in schemas/ say what flowwarden emits; the vocabularies in tests/schemas/vocabularies/ are extracts
of ECS 8.17.0 and OCSF 1.4.0 themselves (tests/schemas/extract_vocabularies.py), so a field that ECS or OCSF
does not define, or defines with another type, fails here even when our own schema would let it pass.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from detector.core.alertformats import (
    ECS_VERSION,
    OCSF_VERSION,
    AlertEncoder,
    Flow,
    Observer,
    ecs_document,
    ocsf_document,
)
from detector.core.attack import RULES, Severity, class_meaning
from detector.core.flowtime import flow_time, meter_zone

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
EXAMPLES = SCHEMAS / "examples"
VOCABULARIES = Path(__file__).resolve().parent / "vocabularies"
ECS = json.loads((VOCABULARIES / f"ecs-{ECS_VERSION}.json").read_text(encoding="utf-8"))
OCSF = json.loads((VOCABULARIES / f"ocsf-{OCSF_VERSION}.json").read_text(encoding="utf-8"))
OBSERVER = Observer(hostname="sensor-1", version="0.1.0")
# native example -> is it an alert (the formats' examples are built from these three)
CASES = {"attack": True, "flagged-novel": True, "benign-verdict": False}


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def schema_errors(schema: str, instance: Any) -> list[str]:
    validator = Draft202012Validator(load(SCHEMAS / schema), format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(instance)]


def native(case: str) -> dict[str, Any]:
    return load(EXAMPLES / f"alert.{case}.json")


def documents(fmt: str) -> list[tuple[str, dict[str, Any]]]:
    """Every shape the builder makes from the examples: as given, without flow identity, IPv6, UNSW-style."""
    shapes = []
    for case, is_alert in CASES.items():
        alert = native(case)
        variants = {case: alert}
        bare = copy.deepcopy(alert)
        bare["flow"] = {}
        variants[f"{case}, no flow"] = bare
        v6 = copy.deepcopy(alert)
        v6["flow"].update(src_ip="2001:db8::1", dst_ip="2001:db8::2", protocol=17, timestamp=1499454699)
        variants[f"{case}, ipv6 udp epoch"] = v6
        unsw = copy.deepcopy(alert)
        unsw["flow"] = {"src_ip": "175.45.176.1", "dst_ip": "149.171.126.16", "protocol": "tcp", "dst_port": "80"}
        variants[f"{case}, unsw"] = unsw
        host = copy.deepcopy(alert)
        host["flow"].update(src_ip="scanner.example", protocol="ospf")
        variants[f"{case}, host name"] = host
        if case == "attack":
            variants[f"{case}, aggregated"] = load(EXAMPLES / "alert.aggregated.json")
        explained = copy.deepcopy(alert)
        explained["explanation"] = native("explained")["explanation"]
        variants[f"{case}, explained"] = explained
        for name, value in variants.items():
            encoder = AlertEncoder(fmt, observer=OBSERVER)  # type: ignore[arg-type]
            shapes.append((name, encoder.document(value, is_alert=is_alert)))
    return shapes


# --- examples --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ecs", "ocsf"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_examples_are_what_the_builder_makes(fmt: str, case: str) -> None:
    built = AlertEncoder(fmt, observer=OBSERVER).document(native(case), is_alert=CASES[case])  # type: ignore[arg-type]
    assert built == load(EXAMPLES / f"alert-{fmt}.{case}.json"), "regenerate the example (docs/siem.md)"


@pytest.mark.parametrize("fmt", ["ecs", "ocsf"])
def test_every_shape_the_builder_makes_validates_against_our_schema(fmt: str) -> None:
    for name, document in documents(fmt):
        assert schema_errors(f"alert-{fmt}.schema.json", document) == [], name


@pytest.mark.parametrize("fmt", ["ecs", "ocsf"])
def test_our_schema_rejects_what_it_must(fmt: str) -> None:
    document = load(EXAMPLES / f"alert-{fmt}.attack.json")
    broken = copy.deepcopy(document)
    broken["surprise"] = 1
    assert schema_errors(f"alert-{fmt}.schema.json", broken)
    namespace = broken.pop("surprise") and (broken["flowwarden"] if fmt == "ecs" else broken["unmapped"]["flowwarden"])
    namespace["alert_id"] = "NOT-HEX"
    assert schema_errors(f"alert-{fmt}.schema.json", broken)


@pytest.mark.parametrize("fmt", ["ecs", "ocsf"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_native_alert_rides_along_whole_and_keeps_its_id(fmt: str, case: str) -> None:
    alert = native(case)
    document = AlertEncoder(fmt, observer=OBSERVER).document(alert, is_alert=CASES[case])  # type: ignore[arg-type]
    namespace = dict(document["flowwarden"] if fmt == "ecs" else document["unmapped"]["flowwarden"])
    assert namespace.pop("is_alert") is CASES[case]
    namespace.pop("severity")
    assert {"schema_version": 1, **namespace} == alert
    ids = [document["event"]["id"]] if fmt == "ecs" else [document["finding_info"]["uid"], document["metadata"]["uid"]]
    assert set(ids) == {alert["alert_id"]}


@pytest.mark.parametrize("fmt", ["ecs", "ocsf"])
def test_the_explanation_rides_along_in_the_namespace(fmt: str) -> None:
    alert = native("explained")
    document = AlertEncoder(fmt, observer=OBSERVER).document(alert, is_alert=True)  # type: ignore[arg-type]
    namespace = document["flowwarden"] if fmt == "ecs" else document["unmapped"]["flowwarden"]
    assert namespace["explanation"] == alert["explanation"]
    assert schema_errors(f"alert-{fmt}.schema.json", document) == []


def test_native_format_is_the_alert_itself() -> None:
    alert = native("attack")
    assert AlertEncoder("native").document(alert, is_alert=True) is alert
    assert json.loads(AlertEncoder("native").encode(alert, is_alert=True)) == alert


# --- ECS: the standard's own field definitions -----------------------------------------------------------

_ECS_TYPES = {
    "keyword": str,
    "constant_keyword": str,
    "match_only_text": str,
    "wildcard": str,
    "long": int,
    "float": (int, float),
    "scaled_float": (int, float),
    "boolean": bool,
}


def _leaves(document: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    leaves = []
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            leaves += _leaves(value, f"{name}.")
        else:
            leaves.append((name, value))
    return leaves


def ecs_violations(document: dict[str, Any]) -> list[str]:
    problems = []
    for name, value in _leaves({k: v for k, v in document.items() if k != "flowwarden"}):
        field = ECS["fields"].get(name)
        if field is None:
            problems.append(f"{name} is not an ECS {ECS_VERSION} field")
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not field["array"] and field["type"] not in {"keyword"}:
            problems.append(f"{name} is not an array field")
        for item in values:
            kind = field["type"]
            if kind == "date":
                ok = isinstance(item, str) and item.endswith("Z")
            elif kind == "ip":
                ok = isinstance(item, str) and bool(ipaddress.ip_address(item))
            else:
                ok = isinstance(item, _ECS_TYPES[kind]) and not (kind == "long" and isinstance(item, bool))
            if not ok:
                problems.append(f"{name}: {item!r} is not of ECS type {kind}")
            allowed = field.get("allowed")
            if allowed and item not in allowed:
                problems.append(f"{name}: {item!r} is not an allowed value")
    for category in document["event"]["category"]:
        expected = ECS["fields"]["event.category"]["allowed"][category]
        for kind in document["event"]["type"]:
            if kind not in expected:
                problems.append(f"event.type {kind} is not expected with event.category {category}")
    return problems


def test_every_ecs_field_is_an_ecs_field_of_its_type() -> None:
    for name, document in documents("ecs"):
        assert ecs_violations(document) == [], name


def test_the_ecs_check_catches_what_ecs_does_not_define() -> None:
    document = load(EXAMPLES / "alert-ecs.attack.json")
    document["event"]["colour"] = "red"
    document["source"]["port"] = "80"
    document["event"]["kind"] = "finding"
    assert len(ecs_violations(document)) == 3


# --- OCSF: the schema's own class and objects -----------------------------------------------------------

_OCSF_SCALARS = {
    "string_t": str,
    "integer_t": int,
    "long_t": int,
    "timestamp_t": int,
    "port_t": int,
    "float_t": (int, float),
    "boolean_t": bool,
    "ip_t": str,
    "url_t": str,
    "uuid_t": str,
    "datetime_t": str,
    "hostname_t": str,
}


def ocsf_violations(document: dict[str, Any]) -> list[str]:
    return _ocsf_object(document, OCSF["class"]["attributes"], "", None)


def _ocsf_object(value: dict[str, Any], attributes: dict[str, Any], where: str, kind: str | None) -> list[str]:
    problems = []
    for name, spec in attributes.items():
        if spec["requirement"] == "required" and name not in value:
            problems.append(f"{where}{name} is required")
    for group in OCSF["constraints"].get(kind or "", {}).values():
        if not any(name in value for name in group):
            problems.append(f"{where or kind}: needs one of {group}")
    for name, item in value.items():
        spec = attributes.get(name)
        path = f"{where}{name}"
        if spec is None:
            problems.append(f"{path} is not an OCSF {OCSF_VERSION} attribute here")
            continue
        if spec.get("deprecated"):
            problems.append(f"{path} is deprecated")
        if spec["array"] != isinstance(item, list):
            problems.append(f"{path}: array is {spec['array']}")
            continue
        for element in item if spec["array"] else [item]:
            problems += _ocsf_value(element, spec, path)
    return problems


def _ocsf_value(value: Any, spec: dict[str, Any], path: str) -> list[str]:
    kind = spec["type"]
    if kind in OCSF["objects"]:
        if not isinstance(value, dict):
            return [f"{path} must be an object ({kind})"]
        return _ocsf_object(value, OCSF["objects"][kind], f"{path}.", kind)
    if kind == "object":  # free-form (unmapped)
        return [] if isinstance(value, dict) else [f"{path} must be an object"]
    expected = _OCSF_SCALARS.get(kind)
    if expected is None:
        return [f"{path}: type {kind} is not one the test knows"]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        return [f"{path}: {value!r} is not {kind}"]
    if kind == "ip_t":
        ipaddress.ip_address(value)
    if "enum" in spec and value not in spec["enum"]:
        return [f"{path}: {value} is not one of {spec['enum']}"]
    return []


def test_every_ocsf_attribute_is_an_ocsf_attribute_of_its_type() -> None:
    assert OCSF["class"]["uid"] == 2004
    for name, document in documents("ocsf"):
        assert ocsf_violations(document) == [], name
        assert document["class_uid"] == OCSF["class"]["uid"]
        assert document["category_uid"] == OCSF["class"]["category_uid"]
        assert document["type_uid"] == document["class_uid"] * 100 + document["activity_id"]


def test_the_ocsf_check_catches_what_ocsf_does_not_define() -> None:
    document = load(EXAMPLES / "alert-ocsf.attack.json")
    document["finding_info"]["colour"] = "red"
    document["severity_id"] = 9
    del document["metadata"]["product"]
    document["time"] = "yesterday"
    assert len(ocsf_violations(document)) == 4


# --- the content ---------------------------------------------------------------------------------------------


def test_timestamp_is_the_flows_time_in_the_meters_zone() -> None:
    alert = native("attack")  # "2017-07-07 19:11:39.302427", written without a zone
    utc = ecs_document(alert, is_alert=True, observer=OBSERVER)
    assert utc["@timestamp"] == "2017-07-07T19:11:39.302Z" == utc["event"]["start"]
    assert utc["event"]["created"] == alert["detected_at"]
    halifax = ecs_document(alert, is_alert=True, zone=meter_zone("America/Halifax"), observer=OBSERVER)
    assert halifax["@timestamp"] == "2017-07-07T22:11:39.302Z", "ADT is UTC-3: local 19:11 is 22:11 UTC"
    finding = ocsf_document(alert, is_alert=True, zone=meter_zone("America/Halifax"), observer=OBSERVER)
    assert finding["time"] == 1499465499302 == finding["finding_info"]["first_seen_time"]
    zoned = copy.deepcopy(alert)
    zoned["flow"]["timestamp"] = "2017-07-07T19:11:39+02:00"  # a zone written in the record wins
    assert ecs_document(zoned, is_alert=True, zone=meter_zone("America/Halifax"))["@timestamp"].startswith(
        "2017-07-07T17:11:39"
    )
    unknown = copy.deepcopy(alert)
    unknown["flow"]["timestamp"] = "not a time"
    document = ecs_document(unknown, is_alert=True)
    assert document["@timestamp"] == alert["detected_at"] and "start" not in document["event"]


def test_meter_zone_refuses_what_is_not_a_zone() -> None:
    assert meter_zone("utc") is UTC
    with pytest.raises(ValueError, match="Mars/Olympus"):
        meter_zone("Mars/Olympus")
    assert flow_time("5/7/2017 8:12", meter_zone("Europe/Berlin")) == flow_time("5/7/2017 6:12")


def test_community_id_matches_the_specs_test_vector() -> None:
    # corelight/community-id-spec baseline: tcp 128.232.110.120:34855 -> 66.35.250.204:80, seed 0
    flow = {"src_ip": "128.232.110.120", "dst_ip": "66.35.250.204", "src_port": 34855, "dst_port": 80, "protocol": 6}
    assert Flow.of(flow, UTC).community_id == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    reverse = {**flow, "src_ip": flow["dst_ip"], "dst_ip": flow["src_ip"], "src_port": 80, "dst_port": 34855}
    assert Flow.of(reverse, UTC).community_id == "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "both directions, one id"
    assert Flow.of({**flow, "protocol": "TCP"}, UTC).community_id == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    assert Flow.of({**flow, "protocol": 1}, UTC).community_id is None, "ICMP needs type and code"
    assert Flow.of({**flow, "dst_port": None}, UTC).community_id is None
    assert Flow.of({**flow, "src_ip": "10.0.0.1", "dst_ip": "2001:db8::1"}, UTC).community_id is None


def test_attack_and_benign_verdicts_are_alerts_and_events() -> None:
    attack = ecs_document(native("attack"), is_alert=True)
    assert attack["event"]["kind"] == "alert" and "intrusion_detection" in attack["event"]["category"]
    assert attack["threat"]["technique"]["id"] == ["T1498"] and attack["event"]["severity"] == Severity.HIGH
    benign = ecs_document(native("benign-verdict"), is_alert=False)
    assert benign["event"]["kind"] == "event" and benign["event"]["category"] == ["network"]
    assert "threat" not in benign and benign["event"]["severity"] == Severity.INFORMATIONAL
    novel = ecs_document(native("flagged-novel"), is_alert=True)
    assert novel["event"]["kind"] == "alert" and novel["event"]["severity"] == Severity.LOW
    assert "novel" in novel["tags"] and "novelty" in novel["event"]["reason"]
    finding = ocsf_document(native("benign-verdict"), is_alert=False)
    assert finding["is_alert"] is False and finding["severity_id"] == 1 and "attacks" not in finding["finding_info"]


# --- the ATT&CK table ---------------------------------------------------------------------------------------


def test_every_rules_examples_mean_that_rule() -> None:
    for rule in RULES:
        for label in rule.examples:
            meaning = class_meaning(label, is_attack=True)
            assert (meaning.technique, meaning.severity) == (rule.technique, rule.severity), label


def test_every_class_of_the_shared_datasets_has_a_technique() -> None:
    cicids2017 = [
        "Botnet", "DDoS", "DoS GoldenEye", "DoS Hulk", "DoS Slowhttptest", "DoS Slowloris", "FTP-Patator",
        "Heartbleed", "Infiltration", "Infiltration - Portscan", "Portscan", "SSH-Patator",
        "Web Attack - Brute Force", "Web Attack - SQL Injection", "Web Attack - XSS", "Bot", "PortScan",
    ]  # fmt: skip
    unsw = ["Fuzzers", "Analysis", "Backdoor", "Backdoors", "DoS", "Exploits", "Reconnaissance", "Shellcode", "Worms"]
    for label in cicids2017 + unsw:
        assert class_meaning(label, is_attack=True).technique is not None, label
    assert class_meaning("Generic", is_attack=True).technique is None
    assert class_meaning("DDoS", is_attack=False).severity == Severity.INFORMATIONAL


def test_the_table_is_well_formed() -> None:
    for rule in RULES:
        technique = rule.technique
        assert technique is not None and rule.examples
        assert technique.id[0] == "T" and technique.tactic_id.startswith("TA")
        assert technique.is_subtechnique == (": " in technique.name), technique.id


def test_the_documented_table_is_the_code() -> None:
    text = (ROOT / "docs" / "siem.md").read_text(encoding="utf-8")
    table = text.split("<!-- attack-table -->", 1)[1].split("<!-- /attack-table -->", 1)[0].strip().splitlines()
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in table[2:]]
    assert len(rows) == len(RULES)
    for (examples, pattern, technique, tactic, severity), rule in zip(rows, RULES, strict=True):
        assert rule.technique is not None
        assert examples == ", ".join(rule.examples)
        assert pattern == f"`{rule.pattern.replace('|', chr(92) + '|')}`"
        assert technique == f"[{rule.technique.id}]({rule.technique.reference}) {rule.technique.name}"
        assert tactic == f"{rule.technique.tactic_id} {rule.technique.tactic_name}"
        assert severity == rule.severity.caption.lower()


def test_the_example_alert_ids_are_derived_from_their_source() -> None:
    from detector.core.alerts import alert_id
    from detector.stream.aggregate import aggregate_id

    for path in sorted(EXAMPLES.glob("alert.*.json")):
        alert = load(path)
        source = alert["source"]
        if "aggregate" in alert:  # the first alert's source; the id is the window's
            start = datetime.fromisoformat(alert["aggregate"]["window_start"]).timestamp()
            key = (alert["flow"]["src_ip"], alert["flow"]["dst_ip"], alert["label"])
            assert alert["alert_id"] == alert["aggregate"]["id"], path.name
            assert alert["alert_id"] == aggregate_id(source["topic"], source["partition"], key, start), path.name
            assert alert["aggregate"]["sample_alert_ids"][0] == alert_id(
                source["topic"], source["partition"], source["offset"]
            )
            continue
        assert alert["alert_id"] == alert_id(source["topic"], source["partition"], source["offset"]), path.name


def test_an_aggregated_alert_says_how_many_it_stands_for_in_every_format() -> None:
    aggregated = load(EXAMPLES / "alert.aggregated.json")
    ecs = AlertEncoder("ecs", observer=OBSERVER).document(aggregated, is_alert=True)
    ocsf = AlertEncoder("ocsf", observer=OBSERVER).document(aggregated, is_alert=True)
    assert ecs["flowwarden"]["aggregate"]["count"] == ocsf["count"] == aggregated["aggregate"]["count"] == 5000
    assert ecs["event"]["id"] == ocsf["finding_info"]["uid"] == aggregated["aggregate"]["id"]
    assert "count" not in AlertEncoder("ocsf", observer=OBSERVER).document(native("attack"), is_alert=True)
