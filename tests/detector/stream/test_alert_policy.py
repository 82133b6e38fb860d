"""What becomes an alert: --emit, thresholds, the allowlist; suppressed verdicts counted; every format valid."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from detector.core.alertformats import AlertEncoder
from detector.core.bundle import load_bundle
from detector.core.decode import FlowDecoder
from detector.core.scorer import Scorer
from detector.stream.allowlist import Allowlist, AllowlistError, Entry, network, read_allowlist
from detector.stream.metrics import WorkerMetrics
from detector.stream.processor import BatchProcessor
from detector.stream.runner import StartupError, build_processor
from detector.stream.settings import RunSettings
from detector.stream.thresholds import Thresholds, class_key
from tests.support.bundles import make_bundle
from tests.support.generated import FEATURES, generated_rows, unlike_training
from tests.support.worker import flow_values, metric_value, schema_errors

TOPIC = "flows"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_bundle(tmp_path_factory.mktemp("policy") / "b", version="p1", novelty=True))


@pytest.fixture(scope="module")
def rows():
    """Generated flows with addresses: the fixture classes' rows, and some flows unlike any of them (novel)."""
    base = generated_rows(0)[:150] + unlike_training(generated_rows(2)[:30], factor=40.0)
    return [{**row, "Src IP": f"10.0.{i % 4}.{i % 250 + 1}", "Dst IP": "192.168.1.10"} for i, row in enumerate(base)]


def messages(values):
    return [
        Message(topic=TOPIC, partition=0, offset=i, value=value, timestamp=(TIMESTAMP_CREATE_TIME, 1_700_000_000_000))
        for i, value in enumerate(values)
    ]


def processor(bundle, emit="attacks", **kwargs):
    return BatchProcessor(bundle, output_topic="alerts", dlq_topic="dlq", emit=emit, device="cpu", **kwargs)


def expected(bundle, rows):
    decoder = FlowDecoder(FEATURES)
    return Scorer(bundle, "cpu").score([decoder.decode_mapping(row) for row in rows])


def outputs(batch):
    return [orjson.loads(out.value) for out in batch.outputs if out.topic == "alerts"]


# --- thresholds ----------------------------------------------------------------------------------------------


def test_class_names_compare_in_any_case_and_punctuation():
    assert class_key("DoS Hulk") == class_key("DOS_HULK") == class_key("dos-hulk") == "doshulk"
    thresholds = Thresholds(0.5, {"DOS_HULK": 0.99})
    assert thresholds.for_classes(["BENIGN", "DoS Hulk"]).tolist() == [0.5, 0.99]
    assert thresholds.unknown(["BENIGN", "DoS Hulk"]) == []
    assert Thresholds(0, {"portscna": 0.9}).unknown(["Portscan"]) == ["portscna"]


def test_a_verdict_below_its_threshold_is_not_an_alert_but_is_counted(bundle, rows):
    verdicts = expected(bundle, rows)
    confidences = sorted(v.confidence for v in verdicts if v.is_attack and not v.is_novel)
    cut = confidences[len(confidences) // 2]  # half the attack verdicts fall below it
    suppressed: list[Counter] = []
    work = processor(bundle, thresholds=Thresholds(cut), on_suppressed=suppressed.append)
    batch = work.process(messages(flow_values(rows)))

    alerts = outputs(batch)
    kept = [v for v in verdicts if v.is_attack and v.confidence >= cut]
    below = Counter(v.label for v in verdicts if v.is_attack and v.confidence < cut)
    assert 0 < len(alerts) == len(kept) < sum(v.is_attack for v in verdicts)
    assert all(a["confidence"] >= round(cut, 6) for a in alerts)
    assert batch.suppressed == Counter({(label, "below_threshold"): n for label, n in below.items()})
    assert suppressed == [batch.suppressed], "the sink hears each batch's counts once"
    assert sum(batch.verdicts.values()) == len(rows), "every verdict is still counted"


def test_a_class_threshold_replaces_the_minimum_for_that_class_only(bundle, rows):
    verdicts = expected(bundle, rows)
    attack_classes = sorted({v.label for v in verdicts if v.is_attack})
    strict = attack_classes[0]
    batch = processor(bundle, thresholds=Thresholds(0.0, {strict.upper(): 1.01 - 1e-9})).process(
        messages(flow_values(rows))
    )
    labels = Counter(a["label"] for a in outputs(batch))
    assert strict not in labels
    assert set(labels) == set(attack_classes) - {strict}
    assert batch.suppressed[(strict, "below_threshold")] == sum(v.label == strict for v in verdicts)


def test_emit_flagged_keeps_a_novel_flow_below_its_threshold(bundle, rows):
    verdicts = expected(bundle, rows)
    novel = [i for i, v in enumerate(verdicts) if v.is_novel]
    assert novel, "the fixture must have novel flows"
    batch = processor(bundle, "flagged", thresholds=Thresholds(1.0)).process(messages(flow_values(rows)))
    assert sorted(a["source"]["offset"] for a in outputs(batch)) == novel


def test_emit_novel_alerts_on_novel_flows_only_whatever_the_classifier_says(bundle, rows):
    verdicts = expected(bundle, rows)
    novel = [i for i, v in enumerate(verdicts) if v.is_novel]
    assert novel and any(v.is_attack and not v.is_novel for v in verdicts), "the fixture needs both kinds"
    batch = processor(bundle, "novel").process(messages(flow_values(rows)))
    alerts = outputs(batch)
    assert sorted(a["source"]["offset"] for a in alerts) == novel
    assert all(a["raised_by"] == ["novelty"] for a in alerts), "the classifier raises nothing here"
    assert not batch.suppressed, "an attack label that raises nothing is not a suppressed alert"


def test_emit_all_publishes_every_verdict_and_marks_which_are_alerts(bundle, rows):
    verdicts = expected(bundle, rows)
    cut = 0.9
    batch = processor(bundle, "all", thresholds=Thresholds(cut), encoder=AlertEncoder("ecs")).process(
        messages(flow_values(rows))
    )
    documents = outputs(batch)
    assert len(documents) == len(rows)
    for document, verdict in zip(documents, verdicts, strict=True):
        is_alert = (verdict.is_attack and verdict.confidence >= cut) or verdict.is_novel
        assert document["event"]["kind"] == ("alert" if is_alert else "event")
        assert document["flowwarden"]["is_alert"] is is_alert
        assert schema_errors("alert-ecs.schema.json", document) == []


# --- allowlist -----------------------------------------------------------------------------------------------


def test_allowlisted_flows_raise_no_alert_and_are_counted(bundle, rows):
    verdicts = expected(bundle, rows)
    allowlist = Allowlist([Entry(src=(network("10.0.1.0/24"),))])
    batch = processor(bundle, allowlist=allowlist).process(messages(flow_values(rows)))
    alerted = [a["source"]["offset"] for a in outputs(batch)]
    in_net = [i for i, row in enumerate(rows) if row["Src IP"].startswith("10.0.1.")]
    attacks = [i for i, v in enumerate(verdicts) if v.is_attack]
    assert alerted == [i for i in attacks if i not in in_net]
    allowed = Counter(verdicts[i].label for i in attacks if i in in_net)
    assert allowed and batch.suppressed == Counter({(label, "allowlist"): n for label, n in allowed.items()})


def test_an_entry_matches_only_when_every_condition_holds():
    flow = {"src_ip": "10.0.5.20", "dst_ip": "192.168.1.10", "src_port": 40000, "dst_port": 443}
    scanner = Entry(src=(network("10.0.5.20"),), labels=frozenset({"portscan"}))
    assert scanner.matches(flow, "Portscan") and not scanner.matches(flow, "DDoS")
    assert not scanner.matches({**flow, "src_ip": "10.0.5.21"}, "Portscan")
    assert Entry(hosts=(network("192.168.0.0/16"),)).matches(flow, "DDoS"), "either address"
    assert Entry(dst_ports=((400, 500),)).matches(flow, "DDoS")
    assert not Entry(dst_ports=((400, 500),)).matches({**flow, "dst_port": None}, "DDoS"), "unknown port: no match"
    assert not Entry(src=(network("10.0.0.0/8"),)).matches({**flow, "src_ip": "scanner.lan"}, "DDoS")
    assert not Entry(src=(network("::/0"),)).matches(flow, "DDoS"), "an IPv4 address is in no IPv6 network"


def test_the_allowlist_file_and_its_errors(tmp_path: Path):
    good = tmp_path / "allow.toml"
    good.write_text(
        '[[allow]]\ncomment = "scanner"\nsrc = ["10.0.5.20/32"]\nlabels = ["Portscan"]\n\n'
        '[[allow]]\ndst = "10.1.0.0/16"\ndst_ports = [53, "8000-8080"]\n',
        encoding="utf-8",
    )
    first, second = read_allowlist(good)
    assert first.labels == frozenset({"portscan"}) and second.dst_ports == ((53, 53), (8000, 8080))
    cases = {
        '[[allow]]\ncomment = "no condition"\n': "states no condition",
        "[[allow]]\nsource = ['10.0.0.0/8']\n": "unknown key",
        "[[allow]]\nsrc = ['10.0.0.300/8']\n": "is not a network",
        "[[allow]]\ndst_ports = ['80-70']\n": "port range",
        "[[allow]]\nlabels = []\n": "is empty",
        "[allowed]\nsrc = ['10.0.0.0/8']\n": "unknown table",
        "allow = 3\n": "array of tables",
    }
    for number, (text, message) in enumerate(cases.items()):
        bad = tmp_path / f"bad{number}.toml"
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(AllowlistError, match=message) as caught:
            read_allowlist(bad)
        assert str(bad) in str(caught.value)


def test_settings_build_the_processor_or_say_what_is_wrong(bundle, rows, tmp_path):
    bundle_dir = tmp_path / "b"
    make_bundle(bundle_dir, version="p2")
    settings = RunSettings(
        bundle=bundle_dir,
        alert_format="ocsf",
        meter_timezone="Europe/Berlin",
        min_confidence=0.2,
        class_thresholds={"portscan": 0.95},
        allow_networks=["10.0.3.0/24"],
        allow_ports=["1-1023"],
        allow_labels=["Web Attack - XSS"],
    )
    metrics = WorkerMetrics()
    work = build_processor(settings, load_bundle(bundle_dir), on_suppressed=metrics.count_suppressed)
    assert len(work.allowlist) == 3 and work.encoder.format == "ocsf"
    batch = work.process(messages(flow_values(rows)))
    for document in outputs(batch):
        assert schema_errors("alert-ocsf.schema.json", document) == []
        assert document["unmapped"]["flowwarden"]["label"] != "Web Attack - XSS"
    exposition = metrics.exposition().decode()
    for (label, reason), count in batch.suppressed.items():
        assert metric_value(exposition, "flowwarden_alerts_suppressed_total", label=label, reason=reason) == count

    typo = settings.model_copy(update={"class_thresholds": {"portscna": 0.9}})
    with pytest.raises(StartupError, match="portscna"):
        build_processor(typo, load_bundle(bundle_dir))


@pytest.mark.parametrize("fmt", ["native", "ecs", "ocsf"])
def test_every_format_keeps_the_alert_id_of_the_native_alert(bundle, rows, fmt):
    native = outputs(processor(bundle, "all").process(messages(flow_values(rows))))
    formatted = outputs(processor(bundle, "all", encoder=AlertEncoder(fmt)).process(messages(flow_values(rows))))
    schema = {"native": "alert.schema.json", "ecs": "alert-ecs.schema.json", "ocsf": "alert-ocsf.schema.json"}[fmt]
    ids = {"native": lambda d: d["alert_id"], "ecs": lambda d: d["event"]["id"], "ocsf": lambda d: d["metadata"]["uid"]}
    assert [ids[fmt](d) for d in formatted] == [d["alert_id"] for d in native]
    assert all(schema_errors(schema, d) == [] for d in formatted)
    assert len({ids[fmt](d) for d in formatted}) == len(rows)
