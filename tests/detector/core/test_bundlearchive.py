"""A ``.tar.gz`` bundle is checked whole, and refused with a precise message, before anything is extracted."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from detector.core import bundlearchive
from detector.core.bundle import BundleError, load_bundle
from detector.core.bundlearchive import MAX_MEMBER_BYTES, MAX_MEMBERS, ArchiveError, extract_bundle_archive
from tests.support.bundles import make_bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("archive") / "bundle")


def member(name: str, data: bytes = b"", **attributes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attributes.items():
        setattr(info, key, value)
    return info, data


def bundle_members(bundle_dir: Path, folder: str = "", manifest: dict | None = None) -> list:
    prefix = f"{folder}/" if folder else ""
    members = []
    for path in sorted(bundle_dir.iterdir()):
        data = path.read_bytes()
        if path.name == "manifest.json" and manifest is not None:
            data = json.dumps(manifest).encode()
        members.append(member(prefix + path.name, data))
    return members


def write_archive(path: Path, members: list) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def refused(archive: Path, tmp_path: Path, message: str) -> None:
    """Refused with ``message`` both by load_bundle and by the extraction itself, which writes nothing."""
    with pytest.raises(BundleError, match=message) as caught:
        load_bundle(archive)
    assert str(archive) in str(caught.value)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(ArchiveError, match=message):
        extract_bundle_archive(archive, scratch)
    assert list(scratch.iterdir()) == [], "nothing may be extracted from a refused archive"


def test_a_bundle_archive_at_the_top_level_or_in_one_folder_loads(bundle_dir, tmp_path):
    expected = load_bundle(bundle_dir).sha256
    for folder in ("", "bundle", "./"):
        archive = write_archive(tmp_path / f"b{len(folder)}.tar.gz", bundle_members(bundle_dir, folder.rstrip("/")))
        assert load_bundle(archive).sha256 == expected


def test_members_the_manifest_does_not_list_are_never_extracted(bundle_dir, tmp_path):
    archive = write_archive(tmp_path / "b.tar.gz", [*bundle_members(bundle_dir), member("notes.txt", b"hi")])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    root = extract_bundle_archive(archive, scratch)
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in bundle_dir.iterdir())


@pytest.mark.parametrize(
    ("hostile", "message"),
    [
        (
            member("link", linkname="/etc/passwd", type=tarfile.SYMTYPE),
            r"'link' is a symbolic link \(to '/etc/passwd'\)",
        ),
        (member("hard", linkname="model.json", type=tarfile.LNKTYPE), r"'hard' is a hard link \(to 'model.json'\)"),
        (member("tty", type=tarfile.CHRTYPE, devmajor=5, devminor=0), "'tty' is a device file"),
        (member("disk", type=tarfile.BLKTYPE, devmajor=8, devminor=0), "'disk' is a device file"),
        (member("pipe", type=tarfile.FIFOTYPE), "'pipe' is a FIFO"),
        (member("/etc/cron.d/x", b"x"), "'/etc/cron.d/x' has an absolute path"),
        (member("../escape", b"x"), r"'../escape' points outside the bundle"),
        (member("a/../../escape", b"x"), r"'a/../../escape' points outside the bundle"),
        (member("a/b/c", b"x"), "'a/b/c' is nested too deep"),
        (member("model.json", b"{}"), "'model.json' appears twice"),
    ],
    ids=["symlink", "hardlink", "chardev", "blockdev", "fifo", "absolute", "dotdot", "nested-dotdot", "deep", "twice"],
)
def test_links_devices_fifos_and_names_out_of_the_bundle_are_refused(bundle_dir, tmp_path, hostile, message):
    archive = write_archive(tmp_path / "b.tar.gz", [*bundle_members(bundle_dir), hostile])
    refused(archive, tmp_path, message)


def test_too_many_members_are_refused(bundle_dir, tmp_path):
    extra = [member(f"pad{i}", b"") for i in range(MAX_MEMBERS)]
    archive = write_archive(tmp_path / "b.tar.gz", [*bundle_members(bundle_dir), *extra])
    refused(archive, tmp_path, f"more than {MAX_MEMBERS} members")


def test_an_oversized_member_is_refused_from_its_header_alone(bundle_dir, tmp_path):
    # The header claims more than the limit; the data is not even there: reading stops at the header.
    claimed = MAX_MEMBER_BYTES + 1
    info = tarfile.TarInfo("model.safetensors.big")
    info.size = claimed
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tar:
        for item, data in bundle_members(bundle_dir):
            tar.addfile(item, io.BytesIO(data))
    body = _without_end_blocks(stream.getvalue()) + info.tobuf(format=tarfile.PAX_FORMAT) + b"\0" * 1024
    archive = tmp_path / "b.tar.gz"
    archive.write_bytes(gzip.compress(body))
    refused(archive, tmp_path, rf"'model.safetensors.big' is {claimed:,} bytes, over the {MAX_MEMBER_BYTES:,}-byte")


def test_members_adding_up_to_more_than_the_total_limit_are_refused(bundle_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(bundlearchive, "MAX_TOTAL_BYTES", 2048)
    archive = write_archive(tmp_path / "b.tar.gz", bundle_members(bundle_dir))
    refused(archive, tmp_path, "add up to more than the 2,048-byte limit")


@pytest.mark.parametrize("listed", ["../model.json", "/etc/passwd", "sub/model.json", "..", "manifest.json"])
def test_a_manifest_listing_a_path_outside_the_bundle_is_refused_before_extraction(bundle_dir, tmp_path, listed):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["files"][listed] = {"sha256": "0" * 64, "bytes": 0}
    archive = write_archive(tmp_path / "b.tar.gz", bundle_members(bundle_dir, manifest=manifest))
    refused(archive, tmp_path, rf"lists a path outside the bundle: {listed!r}".replace(".", r"\."))


def test_a_manifest_listing_a_file_the_archive_lacks_is_refused(bundle_dir, tmp_path):
    members = [item for item in bundle_members(bundle_dir) if item[0].name != "preprocessing.json"]
    refused(write_archive(tmp_path / "b.tar.gz", members), tmp_path, "lists preprocessing.json, which the archive")


def test_an_archive_without_a_manifest_is_refused(bundle_dir, tmp_path):
    members = [item for item in bundle_members(bundle_dir) if item[0].name != "manifest.json"]
    refused(write_archive(tmp_path / "b.tar.gz", members), tmp_path, "holds no manifest.json at its top level")


def _without_end_blocks(tar_bytes: bytes) -> bytes:
    """A tar stream without its end-of-archive zero blocks (and padding), so more members can follow."""
    end = len(tar_bytes)
    while end >= tarfile.BLOCKSIZE and tar_bytes[end - tarfile.BLOCKSIZE : end] == b"\0" * tarfile.BLOCKSIZE:
        end -= tarfile.BLOCKSIZE
    return tar_bytes[:end]
