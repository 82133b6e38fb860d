"""``detector run --trusted-key``: an unsigned or wrongly signed bundle is refused at start-up (exit 2, one line), and
a registry version that is not signed by a trusted key is never swapped to: the current model keeps serving, the
refusal is counted (``flowwarden_model_swaps_total{result="rejected"}``) and logged with its reason."""

from __future__ import annotations

import shutil

import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from prometheus_client import generate_latest

from detector.cli import main
from detector.core.bundle import load_bundle
from detector.core.registry import RegistryWatcher, publish, resolve_bundle_path
from detector.core.signing import generate_key_pair, load_private_key, load_trusted_keys, sign_bundle_directory
from detector.stream.hotswap import HotSwap
from detector.stream.metrics import WorkerMetrics
from detector.stream.processor import BatchProcessor
from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows
from tests.support.worker import flow_values, metric_value


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    return {"ours": generate_key_pair(root / "ours"), "theirs": generate_key_pair(root / "theirs")}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundles") / "v1", version="v1")


def signed_copy(pristine, target, private_path):
    shutil.copytree(pristine, target)
    sign_bundle_directory(target, load_private_key(private_path))
    return target


def run(bundle, *trusted):
    argv = ["run", "--bundle", str(bundle), "--bootstrap-servers", "127.0.0.1:1", "--no-metrics"]
    return main([*argv, "--trusted-key", *map(str, trusted)] if trusted else argv)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("detector run: error: "), err
    return err[0]


def test_an_unsigned_bundle_is_refused_at_start_up(pristine, keys, capsys):
    assert run(pristine, keys["ours"][1]) == 2
    assert "is refused: it is not signed (no manifest.sig)" in one_error_line(capsys)


def test_a_bundle_signed_by_another_key_is_refused_at_start_up(pristine, keys, tmp_path, capsys):
    bundle = signed_copy(pristine, tmp_path / "b", keys["theirs"][0])
    assert run(bundle, keys["ours"][1]) == 2
    assert "which is not a trusted key" in one_error_line(capsys)


def test_a_manifest_changed_after_signing_is_refused_at_start_up(pristine, keys, tmp_path, capsys):
    bundle = signed_copy(pristine, tmp_path / "b", keys["ours"][0])
    manifest = bundle / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b"generated test fixture", b"generated test fixturE"))
    assert run(bundle, keys["ours"][1]) == 2
    assert "does not match manifest.json" in one_error_line(capsys)


def test_a_trusted_key_file_that_is_not_a_public_key_is_a_start_up_error(pristine, keys, capsys):
    assert run(pristine, keys["ours"][0]) == 2
    assert "is a PRIVATE KEY, not a PUBLIC KEY" in one_error_line(capsys)


class Log:
    def __init__(self):
        self.lines = []

    def error(self, event, **fields):
        self.lines.append(("error", event, fields))

    def info(self, event, **fields):
        self.lines.append(("info", event, fields))


def batch(start: int) -> list[Message]:
    values = flow_values(generated_rows(0)[:20])
    return [
        Message(topic="flows", partition=0, offset=start + i, value=v, timestamp=(TIMESTAMP_CREATE_TIME, i))
        for i, v in enumerate(values)
    ]


def served_versions(processor: BatchProcessor, start: int) -> set[str]:
    outputs = processor.process(batch(start)).outputs
    return {orjson.loads(output.value)["model"]["version"] for output in outputs if output.topic == "alerts"}


def test_hot_swap_to_an_unsigned_version_is_refused_and_the_signed_one_keeps_serving(pristine, keys, tmp_path):
    registry = tmp_path / "registry"
    ours = load_private_key(keys["ours"][0])
    trusted = load_trusted_keys([keys["ours"][1]])
    publish(pristine, registry, sign_with=ours)
    bundle = load_bundle(resolve_bundle_path(registry), trusted_keys=trusted)
    processor = BatchProcessor(bundle, output_topic="alerts", dlq_topic="dlq", emit="all", device="cpu")
    metrics, log = WorkerMetrics(), Log()
    hotswap = HotSwap(RegistryWatcher(registry, "v1", trusted_keys=trusted), processor, metrics, log, every_s=0)

    def swaps(result):
        return metric_value(generate_latest(metrics.registry).decode(), "flowwarden_model_swaps_total", result=result)

    # Whoever can write to the registry publishes an unsigned version, then one signed by a key nobody trusts.
    publish(make_bundle(tmp_path / "v2", seed=1, version="v2"), registry)
    assert hotswap.settle(timeout=60)
    assert processor.bundle.version == "v1" and served_versions(processor, 0) == {"v1"}
    assert swaps("rejected") == 1.0
    level, event, fields = log.lines[-1]
    assert level == "error" and "refused" in event and fields["serving"] == "v1"
    assert "v2 is refused: it is not signed" in fields["error"]

    publish(make_bundle(tmp_path / "v3", seed=1, version="v3"), registry, sign_with=load_private_key(keys["theirs"][0]))
    assert hotswap.settle(timeout=60)
    assert processor.bundle.version == "v1" and served_versions(processor, 20) == {"v1"}
    assert swaps("rejected") == 2.0
    assert "which is not a trusted key" in log.lines[-1][2]["error"]

    # A version signed by the trusted key is swapped to.
    publish(make_bundle(tmp_path / "v4", seed=1, version="v4"), registry, sign_with=ours)
    assert hotswap.settle(timeout=60)
    assert processor.bundle.version == "v4" and served_versions(processor, 40) == {"v4"}
    assert swaps("ok") == 1.0 and swaps("rejected") == 2.0
