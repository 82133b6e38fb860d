"""``trainer keygen`` and ``trainer publish --sign`` as a user runs them (through ``main``)."""

from __future__ import annotations

import pytest

from detector.core.bundle import load_bundle
from detector.core.registry import resolve_bundle_path
from detector.core.signing import load_trusted_keys
from tests.support.bundles import make_bundle
from trainer.cli import main


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
