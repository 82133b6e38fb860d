"""A bundle registry: a directory of versions and a ``LATEST`` pointer that is replaced atomically.

Layout::

    REGISTRY/
      LATEST                 one line: the version directory name to serve
      versions/<version>/    a complete bundle (manifest.json, model.safetensors, ...)

:func:`publish` verifies a bundle, copies it under a temporary name, renames it into ``versions/`` and
only then rewrites ``LATEST`` through ``os.replace``. A detector reading the registry at any moment
sees either the old or the new version, never half of one. :class:`RegistryWatcher` is how a running
detector notices a new version between batches.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from detector.core.bundle import Bundle, BundleError, load_bundle, unpacked
from detector.core.bundlearchive import SIGNATURE
from detector.core.signing import TrustedKey, key_id, sign_bundle_directory

LATEST = "LATEST"
VERSIONS = "versions"


def is_registry(path: str | Path) -> bool:
    return (Path(path) / LATEST).is_file()


def resolve_bundle_path(path: str | Path) -> Path:
    """The bundle a path means: itself, or the version ``LATEST`` names when it is a registry."""
    source = Path(path)
    if not is_registry(source):
        if (source / VERSIONS).is_dir() and not (source / "manifest.json").exists():
            raise BundleError(f"registry {source} has no {LATEST}: no version was published into it yet")
        return source
    raw = (source / LATEST).read_bytes()
    try:
        version = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BundleError(f"registry {source}: {LATEST} is not UTF-8 text ({raw[:40]!r})") from None
    if not _is_version_name(version):
        raise BundleError(f"registry {source}: {LATEST} does not name a version ({version!r})")
    return source / VERSIONS / version


def _is_version_name(version: str) -> bool:
    """A name ``LATEST`` may hold: one directory of ``versions/``, never a path out of it."""
    return bool(version) and Path(version).name == version and version not in {".", ".."}


def check_registry_target(registry: str | Path) -> Path:
    """Refuse a path that must not become a registry, before any work is done for it.

    A registry is its own directory: a bundle directory, or a folder holding other files, would be turned
    into a registry by :func:`publish`, and the same path would then load a different model.
    """
    root = Path(registry)
    if root.exists() and not root.is_dir():
        raise BundleError(f"registry {root} is a file, not a directory")
    if (root / "manifest.json").exists():
        raise BundleError(f"registry {root} is a bundle directory; a registry needs a directory of its own")
    if root.is_dir() and not is_registry(root) and not (root / VERSIONS).is_dir():
        others = sorted(child.name for child in root.iterdir() if not _housekeeping(child.name))
        if others:
            raise BundleError(
                f"registry {root} is a non-empty directory without {LATEST} or {VERSIONS}/ "
                f"(holds {', '.join(others[:5])}); a registry needs a directory of its own"
            )
    existing = next(parent for parent in (root, *root.absolute().parents) if parent.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BundleError(f"registry {root}: {existing} is not writable")
    return root


def _housekeeping(name: str) -> bool:
    """Entries a fresh volume may hold that do not make it someone else's folder (ext4's lost+found)."""
    return name.startswith(".") or name == "lost+found"


def publish(bundle_path: str | Path, registry: str | Path, *, sign_with: Ed25519PrivateKey | None = None) -> str:
    """Add a verified bundle (directory or ``.tar.gz``) to ``registry`` (created if needed) and point
    ``LATEST`` at it.

    ``sign_with`` signs the published copy (its ``manifest.sig``, replacing one the bundle had; the bundle given is
    not changed); without it a signature the bundle carries is published with it. Returns the version name. A
    version that already exists is an error: versions are immutable.
    """
    root = check_registry_target(registry)
    with unpacked(bundle_path) as source:
        bundle = load_bundle(source)
        versions = root / VERSIONS
        versions.mkdir(parents=True, exist_ok=True)
        version = bundle.version
        target = versions / version
        if target.exists():
            raise BundleError(f"registry {root}: version {version} already exists (versions are immutable)")
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=versions))
        try:
            carried = [SIGNATURE] if (source / SIGNATURE).is_file() and sign_with is None else []
            for name in ["manifest.json", *carried, *bundle.manifest["files"]]:
                shutil.copy2(source / name, staging / name)
            if sign_with is not None:
                sign_bundle_directory(staging, sign_with)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    # What is served must verify exactly as what was given (and, when signed here, with the signer's key).
    signer = () if sign_with is None else (_trusted(sign_with),)
    load_bundle(target, trusted_keys=signer)
    _write_atomically(root / LATEST, version + "\n")
    return version


def _trusted(private_key: Ed25519PrivateKey) -> TrustedKey:
    public = private_key.public_key()
    return TrustedKey(public, key_id(public), "the signing key")


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class RegistryWatcher:
    """Notices when ``LATEST`` names a new version and loads it, keeping the current one on failure.

    ``poll()`` is cheap (a small file read and a directory listing); call it between batches. It returns a
    newly verified :class:`Bundle` when the version changed, ``None`` otherwise, and raises
    :class:`BundleError` for a bad new version *once* (the caller logs it and keeps serving the old bundle).
    A refused version is tried again as soon as its files change (a copy that was still being written, a
    file put back by hand, a signature added), so workers of one group do not stay split between versions.
    """

    def __init__(
        self, registry: str | Path, current_version: str | None, *, trusted_keys: Sequence[TrustedKey] = ()
    ) -> None:
        """``trusted_keys``: a new version must be signed by one of them (none: any verified version is served)."""
        self.registry = Path(registry)
        self.current = current_version
        self.trusted_keys = tuple(trusted_keys)
        self._rejected: tuple[str, tuple[tuple[str, int, int], ...]] | None = None

    def poll(self) -> Bundle | None:
        try:
            version = (self.registry / LATEST).read_bytes().decode("utf-8", errors="replace").strip()
        except OSError:
            return None
        if not version or version == self.current:
            return None
        if self._rejected is not None and self._rejected == (version, self._fingerprint(version)):
            return None
        try:
            bundle = load_bundle(resolve_bundle_path(self.registry), trusted_keys=self.trusted_keys)
        except BundleError:
            self._rejected = (version, self._fingerprint(version))
            raise
        self.current = version
        return bundle

    def _fingerprint(self, version: str) -> tuple[tuple[str, int, int], ...]:
        """Name, size and modification time of each file of a version: what changes when it is fixed."""
        if not _is_version_name(version):
            return ()  # load_bundle refused it: never worth listing
        target = self.registry / VERSIONS / version
        try:
            files = sorted(target.rglob("*")) if target.is_dir() else [target]
            return tuple((str(f.relative_to(target)), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
        except OSError:  # gone or unreadable: unchanged until it is back
            return ()
