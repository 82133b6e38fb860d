"""A ``.tar.gz`` bundle, checked whole before one byte of it is written to disk.

An archive is input from whoever could write to the registry or hand over a file, so it is read as hostile:
every member header is read and judged first, and the archive is refused with a :class:`BundleError` that names
the member and the rule when any member is

* not a regular file or a directory (a symbolic or hard link, a device file, a FIFO),
* named by an absolute path, with a ``..`` component, or more than one folder deep,
* named twice, or
* over :data:`MAX_MEMBER_BYTES`; or when the archive has more than :data:`MAX_MEMBERS` members or more than
  :data:`MAX_TOTAL_BYTES` in all (reading stops at the first member over a limit, so a decompression bomb costs
  at most the limit).

Then ``manifest.json`` is read from the archive (at most :data:`MAX_MANIFEST_BYTES`) and every file it lists must
be a plain name beside it, present in the archive. Only then are the manifest, its signature and the files the
manifest lists extracted (with tarfile's ``data`` filter as a second guard); other members are never written.
"""

from __future__ import annotations

import json
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
#: A bundle holds about eight files; room for more without room for a flood.
MAX_MEMBERS = 64
#: The largest file a bundle may hold (the weights of a far larger model than ResCAE-BiGRU fit).
MAX_MEMBER_BYTES = 512 * 1024 * 1024
#: All members together.
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


class ArchiveError(ValueError):
    """An archive that must not be unpacked; the message names the member and the rule it breaks."""


def extract_bundle_archive(archive: Path, scratch: Path) -> Path:
    """Check ``archive`` whole, then extract the bundle it holds into ``scratch``; returns the bundle's directory
    (``scratch`` or its one sub-folder). Raises :class:`ArchiveError`."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _checked_members(tar)
            folder = _bundle_folder(members)
            manifest = _read_manifest(tar, members[_join(folder, MANIFEST)])
            wanted = [MANIFEST, SIGNATURE, *_listed_files(manifest)]
            chosen = [members[_join(folder, name)] for name in wanted if _join(folder, name) in members]
            missing = [name for name in wanted[2:] if _join(folder, name) not in members]
            if missing:
                raise ArchiveError(f"{MANIFEST} lists {', '.join(missing)}, which the archive does not hold")
            tar.extractall(scratch, members=chosen, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:  # EOFError: a truncated .gz
        raise ArchiveError(f"cannot unpack archive: {exc or type(exc).__name__}") from exc
    return scratch / folder if folder else scratch


def _checked_members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """Every member by its normalised name, each judged as its header is read."""
    members: dict[str, tarfile.TarInfo] = {}
    total = 0
    for count, member in enumerate(tar, start=1):  # one header at a time: stop at the first over a limit
        if count > MAX_MEMBERS:
            raise ArchiveError(f"archive has more than {MAX_MEMBERS} members")
        name = _member_name(member)
        kind = _kind_problem(member)
        if kind:
            raise ArchiveError(f"member {member.name!r} is {kind}: a bundle holds regular files only")
        if member.size > MAX_MEMBER_BYTES:
            raise ArchiveError(
                f"member {member.name!r} is {member.size:,} bytes, over the {MAX_MEMBER_BYTES:,}-byte limit"
            )
        total += member.size
        if total > MAX_TOTAL_BYTES:
            raise ArchiveError(f"archive members add up to more than the {MAX_TOTAL_BYTES:,}-byte limit")
        if name in members:
            raise ArchiveError(f"member {member.name!r} appears twice")
        members[name] = member
    return members


def _member_name(member: tarfile.TarInfo) -> str:
    raw = member.name
    path = PurePosixPath(raw)
    if raw.startswith(("/", "\\")) or path.is_absolute() or (len(raw) > 1 and raw[1] == ":"):
        raise ArchiveError(f"member {raw!r} has an absolute path")
    if ".." in path.parts or "\\" in raw:
        raise ArchiveError(f"member {raw!r} points outside the bundle ('..' or a backslash in its name)")
    parts = [part for part in path.parts if part != "."]
    if not parts:
        return "."
    if len(parts) > 2:
        raise ArchiveError(f"member {raw!r} is nested too deep (a bundle is files, or one folder of files)")
    return "/".join(parts)


def _kind_problem(member: tarfile.TarInfo) -> str | None:
    if member.isreg() or member.isdir():
        return None
    if member.issym():
        return f"a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    return "not a regular file"


def _bundle_folder(members: dict[str, tarfile.TarInfo]) -> str:
    """Where the manifest is: the archive's top level, or its one folder."""
    if MANIFEST in members:
        return ""
    folders = {name.split("/")[0] for name in members if "/" in name}
    if len(folders) == 1:
        (folder,) = folders
        if _join(folder, MANIFEST) in members:
            return folder
    raise ArchiveError(f"archive holds no {MANIFEST} at its top level")


def _read_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo) -> dict[str, Any]:
    if not member.isreg():
        raise ArchiveError(f"{MANIFEST} is not a regular file")
    if member.size > MAX_MANIFEST_BYTES:
        raise ArchiveError(f"{MANIFEST} is {member.size:,} bytes, over the {MAX_MANIFEST_BYTES:,}-byte limit")
    handle = tar.extractfile(member)
    if handle is None:
        raise ArchiveError(f"{MANIFEST} cannot be read from the archive")
    try:
        manifest = json.loads(handle.read())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"{MANIFEST} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ArchiveError(f"{MANIFEST} is not a JSON object")
    return manifest


def _listed_files(manifest: dict[str, Any]) -> list[str]:
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArchiveError(f"{MANIFEST} has no 'files' object")
    for name in files:
        if not is_plain_name(name) or name in (MANIFEST, SIGNATURE):
            raise ArchiveError(f"{MANIFEST} lists a path outside the bundle: {name!r}")
    return list(files)


def is_plain_name(name: object) -> bool:
    """A file name a manifest may list: one name in the bundle's own folder, never a path out of it."""
    return (
        isinstance(name, str)
        and bool(name)
        and name not in {".", ".."}
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
    )


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name
