"""Signed bundles: with trusted keys only a bundle signed by one of them loads; without, nothing changes."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess

import pytest

from detector.core.bundle import BundleError, archive_bundle, load_bundle
from detector.core.registry import LATEST, RegistryWatcher, publish
from detector.core.signing import (
    SigningError,
    generate_key_pair,
    key_id,
    load_private_key,
    load_trusted_keys,
    sign_bundle_directory,
)
from tests.support.bundles import make_bundle


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two key pairs: ``ours`` (trusted) and ``theirs`` (not)."""
    root = tmp_path_factory.mktemp("keys")
    ours, theirs = generate_key_pair(root / "ours"), generate_key_pair(root / "theirs")
    return {"ours": ours, "theirs": theirs, "trusted": load_trusted_keys([ours[1]])}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("signing") / "bundle", version="v1")


@pytest.fixture
def bundle_dir(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "bundle")


def sign(directory, private_path):
    return sign_bundle_directory(directory, load_private_key(private_path))


def test_a_bundle_signed_by_a_trusted_key_loads_and_names_its_signer(bundle_dir, keys):
    signer = sign(bundle_dir, keys["ours"][0])
    bundle = load_bundle(bundle_dir, trusted_keys=keys["trusted"])
    assert bundle.signed_by == signer == keys["trusted"][0].key_id
    document = json.loads((bundle_dir / "manifest.sig").read_text())
    assert document["algorithm"] == "ed25519" and document["key_id"] == signer


def test_a_signed_archive_loads(bundle_dir, keys, tmp_path):
    sign(bundle_dir, keys["ours"][0])
    archive = archive_bundle(bundle_dir, tmp_path / "bundle.tar.gz")
    assert load_bundle(archive, trusted_keys=keys["trusted"]).signed_by == keys["trusted"][0].key_id


def test_an_unsigned_bundle_is_refused_when_keys_are_trusted(bundle_dir, keys):
    with pytest.raises(BundleError, match=r"is refused: it is not signed \(no manifest\.sig\)"):
        load_bundle(bundle_dir, trusted_keys=keys["trusted"])


def test_a_bundle_signed_by_another_key_is_refused_naming_that_key(bundle_dir, keys):
    other = sign(bundle_dir, keys["theirs"][0])
    with pytest.raises(BundleError, match=rf"signed by key {other}, which is not a trusted key"):
        load_bundle(bundle_dir, trusted_keys=keys["trusted"])


def test_a_manifest_changed_after_signing_is_refused(bundle_dir, keys):
    sign(bundle_dir, keys["ours"][0])
    manifest = bundle_dir / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text.replace("generated test fixture", "generated test fixturE"))  # one byte; files intact
    load_bundle(bundle_dir)  # every checksum still verifies: only the signature can tell
    with pytest.raises(BundleError, match=r"does not match manifest\.json"):
        load_bundle(bundle_dir, trusted_keys=keys["trusted"])


def test_a_signature_copied_onto_another_bundle_is_refused(bundle_dir, keys, tmp_path):
    other = make_bundle(tmp_path / "other", version="v2")
    sign(other, keys["ours"][0])
    shutil.copy(other / "manifest.sig", bundle_dir / "manifest.sig")
    with pytest.raises(BundleError, match=r"does not match manifest\.json"):
        load_bundle(bundle_dir, trusted_keys=keys["trusted"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json", "is not a flowwarden signature"),
        (b'{"algorithm": "rsa", "key_id": "x", "signature": ""}', "algorithm 'rsa'"),
        (b'{"algorithm": "ed25519", "key_id": "x", "signature": "***"}', "is not a flowwarden signature"),
        (b"[]", "not a JSON object"),
    ],
)
def test_a_malformed_signature_file_is_refused(bundle_dir, keys, content, message):
    (bundle_dir / "manifest.sig").write_bytes(content)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_dir, trusted_keys=keys["trusted"])


def test_without_trusted_keys_nothing_changes(bundle_dir):
    assert load_bundle(bundle_dir).signed_by is None
    (bundle_dir / "manifest.sig").write_bytes(b"not even json")
    assert load_bundle(bundle_dir).signed_by is None


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path):
    private, public = generate_key_pair(tmp_path / "k")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert load_trusted_keys([public])[0].key_id == key_id(load_private_key(private).public_key())
    with pytest.raises(SigningError, match="exists; keys are never overwritten"):
        generate_key_pair(tmp_path / "k")


def test_one_trusted_key_file_may_hold_several_keys_and_a_private_key_is_not_a_trusted_key(keys, tmp_path):
    both = tmp_path / "both.pem"
    both.write_bytes(keys["ours"][1].read_bytes() + keys["theirs"][1].read_bytes())
    assert len(load_trusted_keys([both])) == 2
    with pytest.raises(SigningError, match="is a PRIVATE KEY, not a PUBLIC KEY"):
        load_trusted_keys([keys["ours"][0]])
    (tmp_path / "empty.pem").write_text("nothing here\n")
    with pytest.raises(SigningError, match="holds no PEM public key"):
        load_trusted_keys([tmp_path / "empty.pem"])
    with pytest.raises(SigningError, match="is not a PEM private key"):
        load_private_key(tmp_path / "empty.pem")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl on PATH")
def test_keys_made_by_openssl_work(bundle_dir, tmp_path):
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", private], check=True)
    subprocess.run(["openssl", "pkey", "-in", private, "-pubout", "-out", public], check=True)
    sign(bundle_dir, private)
    assert load_bundle(bundle_dir, trusted_keys=load_trusted_keys([public])).signed_by


def test_publish_signs_the_published_copy_and_a_watcher_refuses_an_unsigned_version(pristine, keys, tmp_path):
    registry = tmp_path / "registry"
    first = publish(pristine, registry, sign_with=load_private_key(keys["ours"][0]))
    assert not (pristine / "manifest.sig").exists(), "the bundle given is not changed"
    assert load_bundle(registry / "versions" / first, trusted_keys=keys["trusted"]).signed_by
    watcher = RegistryWatcher(registry, first, trusted_keys=keys["trusted"])
    unsigned = publish(make_bundle(tmp_path / "v2", version="v2"), registry)
    assert (registry / LATEST).read_text().strip() == unsigned
    with pytest.raises(BundleError, match="it is not signed"):
        watcher.poll()
    assert watcher.current == first
    assert watcher.poll() is None, "a refused version is tried again only when its files change"
