"""The model bundle: the one artifact that joins training and serving.

A bundle is a directory (a ``.tar.gz`` of it is accepted too, checked whole before anything is extracted:
:mod:`detector.core.bundlearchive`)::

    manifest.json        format version, model name/version, classes, features, sha256 of every file
    model.safetensors    weights (safetensors: no pickle is ever loaded)
    model.json           network hyper-parameters (detector.core.model.ModelConfig)
    preprocessing.json   fitted preprocessing (detector.core.preprocess.Preprocessor)
    novelty.safetensors  optional, with novelty.json: the calibrated autoencoder (detector.core.novelty)
    calibration.json     optional: the confidence's temperature (detector.core.calibration); absent: T = 1
    drift.json           optional: training histograms of the numeric features (detector.core.drift); absent:
                         drift is unavailable

:func:`load_bundle` verifies the format version and every checksum *before* it reads a weight, and
refuses a bad bundle with a :class:`BundleError` that names the file and what is wrong with it. The
bundle's identity (``Bundle.sha256``) is the sha256 of ``manifest.json``, which pins every file.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from detector.core.bundlearchive import SIGNATURE, ArchiveError, extract_bundle_archive, is_plain_name
from detector.core.calibration import CALIBRATION_FILE, IDENTITY, TemperatureScaling
from detector.core.drift import DRIFT_FILE, ReferenceHistograms
from detector.core.model import ModelConfig, ResCAE, ResCAEBiGRU
from detector.core.novelty import NOVELTY_CONFIG, NOVELTY_WEIGHTS, Novelty, NoveltyCalibration
from detector.core.preprocess import PreprocessingError, Preprocessor
from detector.core.signing import SigningError, TrustedKey, verify_signature

FORMAT = "flowwarden.bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model.json"
PREPROCESSING = "preprocessing.json"
REQUIRED_FILES = (WEIGHTS, MODEL_CONFIG, PREPROCESSING)
NOVELTY_FILES = (NOVELTY_WEIGHTS, NOVELTY_CONFIG)  # both or neither
MODEL_NAME = "rescae-bigru"


class BundleError(ValueError):
    """A bundle that must not be served; the message says which file and what is wrong."""


@dataclass(frozen=True)
class Bundle:
    """A verified, loaded bundle. ``model`` (and ``novelty``, when the bundle has one) is loaded in eval mode on
    the CPU; a :class:`~detector.core.scorer.Scorer` moves these same modules to its device, so one bundle
    serves one device at a time."""

    path: Path
    manifest: dict[str, Any]
    sha256: str
    model: ResCAEBiGRU
    preprocessor: Preprocessor
    novelty: Novelty | None = None
    calibration: TemperatureScaling = IDENTITY
    drift: ReferenceHistograms | None = None
    signed_by: str | None = None  # the key id whose signature was verified (only when trusted keys were given)

    @property
    def name(self) -> str:
        return str(self.manifest["model"]["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["model"]["version"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest["classes"])

    @property
    def benign_class(self) -> str:
        return str(self.manifest["benign_class"])

    @property
    def features(self) -> tuple[str, ...]:
        return self.preprocessor.input_features


def write_bundle(
    directory: str | Path,
    *,
    model: ResCAEBiGRU,
    preprocessor: Preprocessor,
    classes: Sequence[str],
    benign_class: str,
    version: str | None = None,
    training_data: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    novelty: Novelty | None = None,
    calibration: TemperatureScaling | None = None,
    drift: ReferenceHistograms | None = None,
) -> Path:
    """Write a complete bundle into ``directory`` (created; must not exist or be empty).

    ``novelty`` adds the calibrated autoencoder, so that verdicts carry a novelty score; ``calibration`` the
    temperature that makes their confidence a calibrated probability; ``drift`` the training histograms of the
    numeric features (their names must be the preprocessing's numeric features, in order).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise BundleError(f"bundle directory {out} is not empty")
    if model.config.n_classes != len(classes):
        raise BundleError(f"model has {model.config.n_classes} outputs but {len(classes)} classes were given")
    if benign_class not in classes:
        raise BundleError(f"benign class {benign_class!r} is not one of the classes")
    if drift is not None and drift.features != preprocessor.numeric:
        raise BundleError("drift histograms must cover the preprocessing's numeric features, in order")

    save_file(_cpu_state(model), str(out / WEIGHTS))
    _write_json(out / MODEL_CONFIG, model.config.to_json())
    _write_json(out / PREPROCESSING, preprocessor.to_json())
    files = list(REQUIRED_FILES)
    if novelty is not None:
        save_file(_cpu_state(novelty.autoencoder), str(out / NOVELTY_WEIGHTS))
        _write_json(out / NOVELTY_CONFIG, novelty.calibration.to_json())
        files.extend(NOVELTY_FILES)
    if calibration is not None:
        _write_json(out / CALIBRATION_FILE, calibration.to_json())
        files.append(CALIBRATION_FILE)
    if drift is not None:
        _write_json(out / DRIFT_FILE, drift.to_json())
        files.append(DRIFT_FILE)

    created = datetime.now(UTC)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"name": MODEL_NAME, "version": version or _default_version(created, out / WEIGHTS)},
        "created_at": created.isoformat(timespec="seconds"),
        "features": list(preprocessor.input_features),
        "model_inputs": len(preprocessor.output_names),
        "classes": list(classes),
        "benign_class": benign_class,
        "training_data": dict(training_data or {}),
        "metrics": dict(metrics or {}),
        "files": {name: {"sha256": file_sha256(out / name), "bytes": (out / name).stat().st_size} for name in files},
    }
    _write_json(out / MANIFEST, manifest)
    return out


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}


def _default_version(created: datetime, weights: Path) -> str:
    """Sortable and unique: creation time plus the start of the weights' checksum."""
    return f"{created.strftime('%Y%m%dT%H%M%SZ')}-{file_sha256(weights)[:8]}"


def load_bundle(path: str | Path, *, trusted_keys: Sequence[TrustedKey] = ()) -> Bundle:
    """Verify and load a bundle directory or ``.tar.gz``; raises :class:`BundleError` when it is bad.

    With ``trusted_keys`` the bundle must also be signed by one of them (:mod:`detector.core.signing`): its
    ``manifest.sig`` is verified over the manifest's bytes before anything else is read. Without, a signature
    is neither needed nor checked.
    """
    source = Path(path)
    with unpacked(source) as root:
        return _load_directory(root, reported_as=source, trusted_keys=trusted_keys)


@contextmanager
def unpacked(path: str | Path) -> Iterator[Path]:
    """The directory holding a bundle's files: ``path`` itself, or a ``.tar.gz`` unpacked for the duration.

    Raises :class:`BundleError` when ``path`` does not exist or is a file that is not a readable archive.
    """
    source = Path(path)
    if not source.exists():
        raise BundleError(f"bundle {source} does not exist")
    if not source.is_file():
        yield source
        return
    try:
        archive = tarfile.is_tarfile(source)
    except (OSError, EOFError) as exc:
        raise BundleError(f"bundle {source}: cannot read archive: {exc}") from exc
    if not archive:
        raise BundleError(f"bundle {source} is a file but not a .tar.gz archive")
    with tempfile.TemporaryDirectory(prefix="flowwarden-bundle-") as scratch:
        yield _extract(source, Path(scratch))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_directory(root: Path, reported_as: Path, trusted_keys: Sequence[TrustedKey] = ()) -> Bundle:
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"bundle {reported_as}: {MANIFEST} is missing")
    manifest_bytes = manifest_path.read_bytes()
    signed_by = _verify_signature(root, manifest_bytes, trusted_keys, reported_as) if trusted_keys else None
    manifest = _parse_manifest(manifest_bytes, reported_as)
    _verify_files(root, manifest, reported_as)

    try:
        config = ModelConfig.from_json(_read_json(root / MODEL_CONFIG))
        preprocessor = Preprocessor.from_json(_read_json(root / PREPROCESSING))
    except (TypeError, ValueError, PreprocessingError) as exc:
        raise BundleError(f"bundle {reported_as}: {exc}") from exc
    _check_consistency(manifest, config, preprocessor, reported_as)

    model = ResCAEBiGRU(config)
    try:
        state = load_file(str(root / WEIGHTS), device="cpu")
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise BundleError(f"bundle {reported_as}: {WEIGHTS} does not fit the model: {_brief(exc)}") from exc
    model.eval()
    novelty = _load_novelty(root, manifest, config, reported_as)
    calibration = _load_calibration(root, manifest, reported_as)
    drift = _load_drift(root, manifest, preprocessor, reported_as)
    sha = hashlib.sha256(manifest_bytes).hexdigest()
    return Bundle(reported_as, manifest, sha, model, preprocessor, novelty, calibration, drift, signed_by)


def _load_drift(root: Path, manifest: dict[str, Any], pre: Preprocessor, where: Path) -> ReferenceHistograms | None:
    """The training histograms; a bundle from before drift existed has none (drift is then unavailable)."""
    if DRIFT_FILE not in manifest["files"]:
        return None
    try:
        drift = ReferenceHistograms.from_json(_read_json(root / DRIFT_FILE))
    except ValueError as exc:
        raise BundleError(f"bundle {where}: {exc}") from exc
    if drift.features != pre.numeric:
        raise BundleError(f"bundle {where}: {DRIFT_FILE} features differ from {PREPROCESSING}'s numeric features")
    return drift


def _verify_signature(root: Path, manifest: bytes, trusted_keys: Sequence[TrustedKey], where: Path) -> str:
    """The signer's key id; the signature covers the manifest, and the manifest pins every file's sha256."""
    signature_path = root / SIGNATURE
    signature = signature_path.read_bytes() if signature_path.is_file() else None
    try:
        return verify_signature(manifest, signature, trusted_keys)
    except SigningError as exc:
        raise BundleError(f"bundle {where} is refused: {exc}") from None


def _load_calibration(root: Path, manifest: dict[str, Any], where: Path) -> TemperatureScaling:
    """The bundle's temperature; a bundle from before calibration existed has none and is served with T = 1."""
    if CALIBRATION_FILE not in manifest["files"]:
        return IDENTITY
    try:
        return TemperatureScaling.from_json(_read_json(root / CALIBRATION_FILE))
    except ValueError as exc:
        raise BundleError(f"bundle {where}: {exc}") from exc


def _load_novelty(root: Path, manifest: dict[str, Any], config: ModelConfig, where: Path) -> Novelty | None:
    listed = [name for name in NOVELTY_FILES if name in manifest["files"]]
    if not listed:
        return None
    if len(listed) == 1:
        other = NOVELTY_FILES[1 - NOVELTY_FILES.index(listed[0])]
        raise BundleError(f"bundle {where}: {MANIFEST} lists {listed[0]} without {other}")
    try:
        calibration = NoveltyCalibration.from_json(_read_json(root / NOVELTY_CONFIG))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"bundle {where}: {NOVELTY_CONFIG} is not a novelty calibration: {exc}") from exc
    autoencoder = ResCAE(config.n_features, config.filters, config.activation)
    try:
        autoencoder.load_state_dict(load_file(str(root / NOVELTY_WEIGHTS), device="cpu"), strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise BundleError(f"bundle {where}: {NOVELTY_WEIGHTS} does not fit the autoencoder: {_brief(exc)}") from exc
    return Novelty(autoencoder.eval(), calibration)


def _parse_manifest(raw: bytes, where: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError(f"bundle {where}: {MANIFEST} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"bundle {where}: {MANIFEST} is not a flowwarden bundle manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"bundle {where}: unknown bundle format version {version!r} "
            f"(this detector reads format version {FORMAT_VERSION})"
        )
    for key in ("model", "classes", "benign_class", "files", "features"):
        if key not in manifest:
            raise BundleError(f"bundle {where}: {MANIFEST} lacks {key!r}")
    problem = _manifest_type_problem(manifest)
    if problem:
        raise BundleError(f"bundle {where}: {MANIFEST}: {problem}")
    return manifest


def _manifest_type_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the shape of a manifest's fields (a hand-edited one, say), or None."""
    model = manifest["model"]
    if not isinstance(model, dict) or not all(isinstance(model.get(key), str) for key in ("name", "version")):
        return "'model' must be an object with string 'name' and 'version'"
    if not model["version"] or Path(model["version"]).name != model["version"]:
        return f"model version {model['version']!r} is not a plain name"
    for key in ("classes", "features"):
        values = manifest[key]
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            return f"{key!r} must be a non-empty list of strings"
        if len(set(values)) != len(values):
            return f"{key!r} names some entries twice"
    if not isinstance(manifest["benign_class"], str):
        return "'benign_class' must be a string"
    files = manifest["files"]
    if not isinstance(files, dict) or not all(isinstance(entry, dict) for entry in files.values()):
        return "'files' must map each file name to an object with its sha256"
    for key in ("metrics", "training_data"):
        if not isinstance(manifest.get(key, {}), dict):
            return f"{key!r} must be an object"
    return None


def _verify_files(root: Path, manifest: dict[str, Any], where: Path) -> None:
    files = manifest["files"]
    for name in REQUIRED_FILES:
        if name not in files:
            raise BundleError(f"bundle {where}: {MANIFEST} does not list required file {name}")
    for name, entry in files.items():
        if not is_plain_name(name) or name in (MANIFEST, SIGNATURE):
            raise BundleError(f"bundle {where}: {MANIFEST} lists a path outside the bundle: {name!r}")
        target = root / name
        if not target.is_file():
            raise BundleError(f"bundle {where}: file {name} is missing")
        actual = file_sha256(target)
        if actual != entry.get("sha256"):
            raise BundleError(
                f"bundle {where}: checksum mismatch for {name} (manifest {str(entry.get('sha256'))[:12]}…, "
                f"file {actual[:12]}…): the file changed after the bundle was written"
            )


def _check_consistency(manifest: dict[str, Any], config: ModelConfig, pre: Preprocessor, where: Path) -> None:
    if list(manifest["features"]) != list(pre.input_features):
        raise BundleError(f"bundle {where}: manifest features differ from {PREPROCESSING}")
    if config.n_features != pre.width:
        raise BundleError(f"bundle {where}: model expects {config.n_features} inputs, preprocessing gives {pre.width}")
    if config.n_classes != len(manifest["classes"]):
        raise BundleError(
            f"bundle {where}: model has {config.n_classes} outputs for {len(manifest['classes'])} classes"
        )
    if manifest["benign_class"] not in manifest["classes"]:
        raise BundleError(f"bundle {where}: benign class is not one of the classes")


def _extract(archive: Path, scratch: Path) -> Path:
    """The archive checked whole (members, sizes, the manifest's file list) before anything is extracted
    (:mod:`detector.core.bundlearchive`)."""
    try:
        return extract_bundle_archive(archive, scratch)
    except ArchiveError as exc:
        raise BundleError(f"bundle {archive}: {exc}") from exc


def archive_bundle(directory: str | Path, archive: str | Path) -> Path:
    """Pack a bundle directory as ``.tar.gz`` (files at the archive's top level)."""
    target = Path(archive)
    with tarfile.open(target, "w:gz") as tar:
        for item in sorted(Path(directory).iterdir()):
            tar.add(item, arcname=item.name)
    return target


def _brief(exc: Exception, shown: int = 2) -> str:
    """torch lists every mismatched tensor on its own line: the first few, and how many more, on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    more = f" (and {len(lines) - shown - 1} more)" if len(lines) > shown + 1 else ""
    return "; ".join(lines[: shown + 1]) + more


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return document
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path.name} is not readable JSON: {exc}") from exc


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
