"""``trainer keygen``, ``trainer publish --sign`` and ``trainer fit --registry --sign`` as a user runs them
(through ``main``)."""

from __future__ import annotations

import pytest

from detector.core.bundle import load_bundle
from detector.core.registry import resolve_bundle_path
from detector.core.signing import load_trusted_keys
from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows, write_generated_csv
from trainer.cli import main


@pytest.fixture
def good_csv(tmp_path):
    return write_generated_csv(tmp_path / "generated_flows.csv", generated_rows(seed=1))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("publish") / "bundle", version="v1")


def test_keygen_then_publish_sign_gives_a_version_only_the_trusted_key_accepts(bundle, tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    out = "".join(capsys.readouterr())
    private, public = tmp_path / "keys" / "bundle-signing.key", tmp_path / "keys" / "bundle-signing.pub"
    assert str(private) in out and str(public) in out
    registry = tmp_path / "registry"
    assert main(["publish", "--bundle", str(bundle), "--registry", str(registry), "--sign", str(private)]) == 0
    trusted = load_trusted_keys([public])
    assert f"signed by key {trusted[0].key_id}" in "".join(capsys.readouterr())
    assert load_bundle(resolve_bundle_path(registry), trusted_keys=trusted).signed_by == trusted[0].key_id


def test_keygen_never_overwrites_and_publish_refuses_a_key_that_is_not_a_private_key(bundle, tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path)]) == 0
    assert main(["keygen", "--out", str(tmp_path)]) == 2
    assert "exists; keys are never overwritten" in capsys.readouterr().err
    registry = tmp_path / "registry"
    public = tmp_path / "bundle-signing.pub"
    assert main(["publish", "--bundle", str(bundle), "--registry", str(registry), "--sign", str(public)]) == 2
    assert "trainer publish: error: signing key" in capsys.readouterr().err
    assert not registry.exists(), "the key is read before anything is published"


def test_fit_publishes_a_signed_version_with_registry_and_sign(good_csv, tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    private, public = tmp_path / "keys" / "bundle-signing.key", tmp_path / "keys" / "bundle-signing.pub"
    registry = tmp_path / "registry"
    fit = ["fit", "--data", str(good_csv), "--profile", "quick", "--epochs", "1", "--quiet"]
    assert main([*fit, "--out", str(tmp_path / "run"), "--registry", str(registry), "--sign", str(private)]) == 0
    trusted = load_trusted_keys([public])
    assert f"signed by key {trusted[0].key_id}" in "".join(capsys.readouterr())
    assert load_bundle(resolve_bundle_path(registry), trusted_keys=trusted).signed_by == trusted[0].key_id


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sign", "KEY"], "--sign signs the version published to a registry: give --registry too"),
        (["--sign", "PUBLIC", "--registry", "REGISTRY"], "trainer fit: error: signing key"),
    ],
    ids=["sign-without-registry", "public-key-as-private"],
)
def test_fit_refuses_a_signing_mistake_before_it_trains(good_csv, tmp_path, capsys, extra, message):
    assert main(["keygen", "--out", str(tmp_path)]) == 0
    paths = {"KEY": tmp_path / "bundle-signing.key", "PUBLIC": tmp_path / "bundle-signing.pub"}
    paths["REGISTRY"] = tmp_path / "registry"
    args = [str(paths.get(a, a)) for a in extra]
    out = tmp_path / "run"
    assert main(["fit", "--data", str(good_csv), "--profile", "quick", "--out", str(out), "--quiet", *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not paths["REGISTRY"].exists()
