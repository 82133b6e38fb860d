import pytest

from detector.bundle import BundleError
from detector.registry import LATEST, RegistryWatcher, publish, resolve_bundle_path
from tests.support.bundles import make_bundle


def test_publish_adds_a_version_and_points_latest_at_it(tmp_path):
    registry = tmp_path / "registry"
    first = publish(make_bundle(tmp_path / "a", version="v1"), registry)
    assert (registry / LATEST).read_text().strip() == "v1" == first
    publish(make_bundle(tmp_path / "b", seed=1, version="v2"), registry)
    assert resolve_bundle_path(registry) == registry / "versions" / "v2"
    assert sorted(p.name for p in (registry / "versions").iterdir()) == ["v1", "v2"]


def test_versions_are_immutable(tmp_path):
    registry = tmp_path / "registry"
    publish(make_bundle(tmp_path / "a", version="v1"), registry)
    with pytest.raises(BundleError, match="already exists"):
        publish(make_bundle(tmp_path / "b", seed=1, version="v1"), registry)


def test_a_bad_bundle_is_never_published(tmp_path):
    bundle = make_bundle(tmp_path / "a", version="v1")
    (bundle / "model.json").write_text("{}")
    with pytest.raises(BundleError, match="checksum mismatch"):
        publish(bundle, tmp_path / "registry")
    assert not (tmp_path / "registry" / LATEST).exists()


def test_the_watcher_loads_a_new_version_and_refuses_a_bad_one_once(tmp_path):
    registry = tmp_path / "registry"
    publish(make_bundle(tmp_path / "a", version="v1"), registry)
    watcher = RegistryWatcher(registry, "v1")
    assert watcher.poll() is None

    publish(make_bundle(tmp_path / "b", seed=1, version="v2"), registry)
    swapped = watcher.poll()
    assert swapped is not None and swapped.version == "v2"
    assert watcher.poll() is None

    publish(make_bundle(tmp_path / "c", seed=2, version="v3"), registry)
    (registry / "versions" / "v3" / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="checksum mismatch"):
        watcher.poll()
    assert watcher.poll() is None  # reported once; the caller keeps serving v2
    assert watcher.current == "v2"
