"""Signed bundles: who may change the model every worker serves.

A bundle's ``manifest.json`` pins every file by its sha256 (:mod:`detector.core.bundle` verifies them), so a
signature over the manifest's bytes covers the whole bundle. The signature is ed25519 (the ``cryptography``
package) and lives beside the manifest as ``manifest.sig``, a small JSON document::

    {"algorithm": "ed25519", "key_id": "3f9c0a…", "signature": "<base64 of the 64-byte signature>"}

``key_id`` is the first 16 hex digits of the sha256 of the raw 32-byte public key: it says which key signed,
so a worker trusting several keys knows which to try, and a refusal can name it. A worker given trusted
keys (``--trusted-key``) serves a bundle only when its signature verifies with one of them; with none it
serves any bundle whose checksums verify, as before signing existed.

Keys are PEM files: the private key PKCS#8 (``trainer keygen``, or ``openssl genpkey -algorithm ed25519``),
unencrypted; the public key SubjectPublicKeyInfo (``openssl pkey -pubout``). One public-key file may hold
several keys, one PEM block each.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from detector.core.bundlearchive import SIGNATURE

ALGORITHM = "ed25519"
PRIVATE_KEY_FILE = "bundle-signing.key"
PUBLIC_KEY_FILE = "bundle-signing.pub"
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)


class SigningError(ValueError):
    """A key that cannot be used, or a signature that does not verify; the message says which and why."""


@dataclass(frozen=True)
class TrustedKey:
    """A public key a worker accepts signatures from, with where it came from (for messages)."""

    key: Ed25519PublicKey
    key_id: str
    source: str


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The ed25519 private key in a PEM file (unencrypted PKCS#8). Raises :class:`SigningError`."""
    source = Path(path)
    data = _read(source, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningError(f"signing key {source} is encrypted; give an unencrypted PEM key") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningError(f"signing key {source} is not a PEM private key ({_first_line(exc)})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(
            f"signing key {source} is a {type(key).__name__.removesuffix('PrivateKey')} key, not ed25519"
        )
    return key


def load_trusted_keys(paths: Iterable[str | Path]) -> tuple[TrustedKey, ...]:
    """Every ed25519 public key in the PEM files ``paths`` (one or more blocks each). Raises :class:`SigningError`
    for a file that is missing, holds no public key, or holds a key of another kind."""
    keys: list[TrustedKey] = []
    for path in map(Path, paths):
        blocks = _PEM_BLOCK.finditer(_read(path, "trusted key"))
        found = 0
        for number, block in enumerate(blocks, start=1):
            if block.group(1) != b"PUBLIC KEY":
                kind = block.group(1).decode()
                raise SigningError(f"trusted key {path}: block {number} is a {kind}, not a PUBLIC KEY")
            try:
                key = serialization.load_pem_public_key(block.group(0))
            except (ValueError, UnsupportedAlgorithm) as exc:
                raise SigningError(f"trusted key {path}: block {number} is not readable ({_first_line(exc)})") from None
            if not isinstance(key, Ed25519PublicKey):
                raise SigningError(f"trusted key {path}: block {number} is not an ed25519 key")
            keys.append(TrustedKey(key, key_id(key), str(path)))
            found += 1
        if not found:
            raise SigningError(f"trusted key {path} holds no PEM public key (-----BEGIN PUBLIC KEY-----)")
    return tuple(keys)


def signature_document(manifest: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The ``manifest.sig`` for the manifest bytes ``manifest``."""
    document = {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(manifest)).decode("ascii"),
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def sign_bundle_directory(directory: str | Path, private_key: Ed25519PrivateKey) -> str:
    """Write ``manifest.sig`` beside the manifest of the bundle ``directory`` (replacing one); returns the key id."""
    root = Path(directory)
    (root / SIGNATURE).write_bytes(signature_document((root / "manifest.json").read_bytes(), private_key))
    return key_id(private_key.public_key())


def verify_signature(manifest: bytes, signature: bytes | None, trusted: Sequence[TrustedKey]) -> str:
    """Check ``signature`` (the bytes of ``manifest.sig``, None when absent) over ``manifest`` with the trusted keys;
    returns the signer's key id. Raises :class:`SigningError` saying why the bundle must not be served."""
    if signature is None:
        raise SigningError(f"it is not signed (no {SIGNATURE}) and only bundles signed by a trusted key are served")
    try:
        document = json.loads(signature)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        algorithm, signer, encoded = document.get("algorithm"), document.get("key_id"), document.get("signature")
        if algorithm != ALGORITHM:
            raise ValueError(f"algorithm {algorithm!r}, this detector verifies {ALGORITHM!r}")
        if not isinstance(signer, str) or not isinstance(encoded, str):
            raise ValueError("'key_id' and 'signature' must be strings")
        raw = base64.b64decode(encoded, validate=True)
    except (UnicodeDecodeError, ValueError, binascii.Error) as exc:
        raise SigningError(f"{SIGNATURE} is not a flowwarden signature ({exc})") from None
    matching = [key for key in trusted if key.key_id == signer]
    if not matching:
        known = ", ".join(sorted({key.key_id for key in trusted}))
        raise SigningError(f"it is signed by key {signer}, which is not a trusted key (trusted: {known})")
    try:
        matching[0].key.verify(raw, manifest)
    except InvalidSignature:
        raise SigningError(
            f"its signature by key {signer} does not match manifest.json "
            "(the manifest changed after it was signed, or the signature is not that key's)"
        ) from None
    return signer


def generate_key_pair(directory: str | Path) -> tuple[Path, Path]:
    """A new ed25519 key pair in ``directory`` (created): the private key readable by its owner only, and the
    public key to give workers. Refuses to overwrite either file."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / PRIVATE_KEY_FILE, out / PUBLIC_KEY_FILE
    for path in (private_path, public_path):
        if path.exists():
            raise SigningError(f"{path} exists; keys are never overwritten (move it away first)")
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
