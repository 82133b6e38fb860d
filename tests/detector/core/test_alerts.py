import json
from pathlib import Path

from jsonschema import Draft202012Validator

from detector.core.alerts import alert_id, alert_key, build_alert, flow_identity, utc_now
from detector.core.scorer import Verdict

SCHEMA = json.loads((Path(__file__).parents[3] / "schemas" / "alert.schema.json").read_text())
MODEL = {"name": "rescae-bigru", "version": "v1", "bundle_sha256": "a" * 64}
VERDICT = Verdict("DDoS", True, 0.97, (("DDoS", 0.97), ("BENIGN", 0.02), ("Portscan", 0.01)))


def test_alerts_validate_against_the_published_schema():
    fields = {
        "flow_id": "1.2.3.4-5.6.7.8-1-80-6",
        "src_ip": "1.2.3.4",
        "src_port": "40000",
        "dst_port": 80.0,
        "protocol": 6,
        "timestamp": "2017-07-07 15:56:57",
    }
    alert = build_alert(VERDICT, fields, "DDoS", MODEL, ("flows", 2, 41), utc_now())
    Draft202012Validator(SCHEMA).validate(alert)
    assert alert["flow"]["src_port"] == 40000 and alert["flow"]["dst_port"] == 80
    assert alert["ground_truth"] == "DDoS"
    without_truth = build_alert(VERDICT, {}, None, MODEL, ("flows", 0, 0), utc_now())
    Draft202012Validator(SCHEMA).validate(without_truth)
    assert "ground_truth" not in without_truth


def test_alert_ids_are_deterministic_per_source_record():
    assert alert_id("flows", 1, 5) == alert_id("flows", 1, 5)
    assert len({alert_id("flows", 1, 5), alert_id("flows", 1, 6), alert_id("flows", 2, 5)}) == 3


def test_alert_ids_differ_between_topics_for_the_same_partition_and_offset():
    assert alert_id("flows", 1, 5) != alert_id("flows-replay", 1, 5)
    first = build_alert(VERDICT, {}, None, MODEL, ("flows", 0, 7), utc_now())
    replayed = build_alert(VERDICT, {}, None, MODEL, ("flows-replay", 0, 7), utc_now())
    assert first["alert_id"] != replayed["alert_id"], "two different records must not share an alert_id"


def test_keys_follow_flow_identity():
    assert alert_key({"flow_id": "abc"}, ("t", 0, 1)) == b"abc"
    assert alert_key(flow_identity({"src_ip": "1.1.1.1", "dst_port": "80"}), ("t", 0, 1)) == b"1.1.1.1---80-"
    assert alert_key({}, ("t", 3, 9)) == b"t/3/9"
