import re

import pytest

from detector.core.bundle import BundleError
from detector.core.registry import LATEST, RegistryWatcher, publish, resolve_bundle_path
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


def test_a_refused_version_is_tried_again_once_its_files_change(tmp_path):
    registry = tmp_path / "registry"
    publish(make_bundle(tmp_path / "a", version="v1"), registry)
    watcher = RegistryWatcher(registry, "v1")
    publish(make_bundle(tmp_path / "b", seed=1, version="v2"), registry)
    weights = registry / "versions" / "v2" / "model.safetensors"
    good = weights.read_bytes()
    weights.unlink()  # a copy still being written, say
    with pytest.raises(BundleError, match=r"model\.safetensors"):
        watcher.poll()
    assert watcher.poll() is None

    weights.write_bytes(good)
    swapped = watcher.poll()
    assert swapped is not None and swapped.version == "v2" and watcher.current == "v2"


def test_a_tar_gz_bundle_is_published_like_its_directory(tmp_path):
    from detector.core.bundle import archive_bundle, load_bundle

    bundle = make_bundle(tmp_path / "a", version="v1")
    archive = archive_bundle(bundle, tmp_path / "a.tar.gz")
    assert publish(archive, tmp_path / "registry") == "v1"
    assert load_bundle(resolve_bundle_path(tmp_path / "registry")).sha256 == load_bundle(bundle).sha256


def test_a_bundle_directory_is_never_turned_into_a_registry(tmp_path):
    target = make_bundle(tmp_path / "served", version="v1")
    before = sorted(p.name for p in target.iterdir())
    with pytest.raises(BundleError, match="is a bundle directory"):
        publish(make_bundle(tmp_path / "b", seed=1, version="v2"), target)
    assert sorted(p.name for p in target.iterdir()) == before
    assert resolve_bundle_path(target) == target


def test_a_folder_of_other_files_is_not_a_registry(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="non-empty directory without LATEST"):
        publish(make_bundle(tmp_path / "a", version="v1"), folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert publish(make_bundle(tmp_path / "b", version="v2"), tmp_path / "empty") == "v2"
    volume = tmp_path / "fresh-volume"  # a new ext4 volume: only lost+found
    (volume / "lost+found").mkdir(parents=True)
    assert publish(make_bundle(tmp_path / "c", version="v3"), volume) == "v3"


def test_a_latest_pointer_that_is_not_text_is_a_bundle_error(tmp_path):
    registry = tmp_path / "registry"
    publish(make_bundle(tmp_path / "a", version="v1"), registry)
    watcher = RegistryWatcher(registry, "v1")
    (registry / LATEST).write_bytes(b"\xff\xfev2\n")
    with pytest.raises(BundleError, match="not UTF-8"):
        resolve_bundle_path(registry)
    with pytest.raises(BundleError, match="not UTF-8"):
        watcher.poll()
    assert watcher.poll() is None and watcher.current == "v1"


def test_a_registry_without_latest_says_so(tmp_path):
    (tmp_path / "registry" / "versions").mkdir(parents=True)
    with pytest.raises(BundleError, match="has no LATEST: no version was published"):
        resolve_bundle_path(tmp_path / "registry")


@pytest.mark.parametrize("pointer", ["..", "."])
def test_a_latest_pointer_that_names_no_version_directory_is_refused_as_such(tmp_path, pointer):
    registry = tmp_path / "registry"
    publish(make_bundle(tmp_path / "a", version="v1"), registry)
    (registry / LATEST).write_text(pointer + "\n")
    with pytest.raises(BundleError, match=f"LATEST does not name a version \\('{re.escape(pointer)}'\\)"):
        resolve_bundle_path(registry)
