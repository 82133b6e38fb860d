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


def test_identity_numbers_beyond_64_bits_stay_text_so_every_alert_format_can_be_written():
    # Found by tests/detector/tools/test_score_properties.py: a CSV port of 1.8446744073709552e+19 became an
    # integer orjson refuses to write, and the batch holding it failed (in a worker: the whole batch, again and
    # again). JSON records reach the same place: orjson reads an integer beyond 64 bits as a float.
    from detector.core.alertformats import AlertEncoder

    fields = {
        "src_port": 1.8446744073709552e19,
        "dst_port": 10**30,
        "protocol": "99999999999999999999",
        "flow_id": 2**64,
    }
    alert = build_alert(VERDICT, fields, None, MODEL, ("flows", 0, 1), utc_now())
    assert alert["flow"] == {
        "flow_id": str(2**64),
        "src_port": "1.8446744073709552e+19",
        "dst_port": str(10**30),
        "protocol": "99999999999999999999",
    }
    Draft202012Validator(SCHEMA).validate(alert)
    for alert_format in ("native", "ecs", "ocsf"):
        assert AlertEncoder(alert_format).encode(alert, is_alert=True)
    # Digits that are not ASCII ('²' is a digit to str.isdigit, not to int) and long digit text stay text.
    assert flow_identity({"dst_port": "²", "src_port": "99999999999999999999"}) == {
        "src_port": "99999999999999999999",
        "dst_port": "²",
    }
    assert flow_identity({"dst_port": "443", "src_port": 9.0}) == {"src_port": 9, "dst_port": 443}
