"""The settings models of the ``trainer`` commands: flags, ``FLOWWARDEN_*`` variables and help are generated
from them (:mod:`detector.core.settings`).

The trainer reads no settings file: its ``--config FILE.toml`` is a *training* configuration (a profile's
fields overridden, :mod:`trainer.config`), so ``FLOWWARDEN_CONFIG``, which names the detector's settings
file, is not read here. ``--seed``, ``--split``, ``--device`` and ``--epochs`` override the training
configuration (:meth:`TrainingOptions.overrides`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import CliVariadicArg

from detector.core.settings import CommandSettings
from trainer.ablate import PROTOCOLS
from trainer.adapt import BUDGET as ADAPT_BUDGET
from trainer.adapt import HELD_OUT as ADAPT_HELD_OUT
from trainer.adapt import INITS as ADAPT_INITS
from trainer.config import PROFILES
from trainer.unseen import BUDGET, MIN_HELD_OUT_ROWS

Device = Literal["auto", "cpu", "cuda"]
_DEVICE_HELP = "where the network runs: auto (a GPU when there is one), cpu, cuda"


class DataOptions(CommandSettings):
    """Labelled flows in, a run directory out."""

    data: CliVariadicArg[list[Path]] = Field(
        description="CSV files or folders (.csv, .csv.gz); FLOWWARDEN_DATA takes several separated by spaces"
    )
    out: Path = Field(description="run directory to write (never overwritten)", json_schema_extra={"metavar": "DIR"})
    label_map: Path | None = Field(
        None,
        description="TOML file renaming labels, e.g. [labels] Bot = 'Botnet'",
        json_schema_extra={"metavar": "FILE"},
    )
    quiet: bool = Field(False, description="no progress bars")


class TrainingOptions(DataOptions):
    """A training configuration: a profile, a config file on top, a few overrides."""

    profile: Literal[PROFILES] = Field(  # type: ignore[valid-type]
        "paper",
        description="shipped settings: paper (the paper's, 50 epochs), paper-literal (every setting the paper "
        "states), tuned (validated changes), quick (few epochs)",
    )
    config: Path | None = Field(
        None,
        description="TOML file overriding any field of the profile (see trainer/profiles/*.toml); "
        "not read from FLOWWARDEN_CONFIG, which names the detector's settings file",
        json_schema_extra={"metavar": "FILE.toml", "env": False},
    )
    seed: int | None = Field(None, description="seed of the split and of every random step (none: the profile's, 42)")
    split: Literal["stratified", "temporal"] | None = Field(
        None, description="how to split train/test (none: the profile's, stratified)"
    )

    def overrides(self) -> dict[str, Any]:
        """The training-configuration fields these options change."""
        changes: dict[str, Any] = {}
        if self.seed is not None:
            changes["seed"] = self.seed
        if self.split:
            changes["split"] = {"method": self.split}
        return changes


class ModelTrainingOptions(TrainingOptions):
    """Options of the commands that train the network."""

    device: Device | None = Field(None, description=f"{_DEVICE_HELP} (none: the profile's, auto)")
    epochs: int | None = Field(
        None, ge=1, description="exactly this many fine-tuning epochs (overrides the profile and its min_steps)"
    )

    def overrides(self) -> dict[str, Any]:
        changes = super().overrides()
        if self.device:
            changes["device"] = self.device
        if self.epochs is not None:
            changes["finetune"] = {"epochs": self.epochs, "min_steps": 0}
        return changes


_SIGN_HELP = (
    "sign the published version with this ed25519 private key (PEM; trainer keygen makes one): "
    "workers given trusted keys serve only signed versions"
)


class FitSettings(ModelTrainingOptions):
    """``trainer fit``: train ResCAE-BiGRU, evaluate on a held-out split, write a bundle."""

    registry: Path | None = Field(
        None, description="also publish the bundle to this registry directory", json_schema_extra={"metavar": "DIR"}
    )
    sign: Path | None = Field(
        None,
        description=f"{_SIGN_HELP}; needs --registry, and the key is read before training starts",
        json_schema_extra={"metavar": "KEY.pem"},
    )


class BaselinesSettings(TrainingOptions):
    """``trainer baselines``: Decision Tree and Random Forest on the same split as ``fit``."""


class AblateSettings(ModelTrainingOptions):
    """``trainer ablate``: the paper's Table 6 rows: base, +SAM, +iForest, +SMOTE, full."""

    protocol: Literal[PROTOCOLS] = Field(  # type: ignore[valid-type]
        "stacked",
        description="how to read the paper's Table 6: stacked (each row adds to the row above) or single "
        "(each component added to the base alone); the paper does not say",
    )


class NoveltySettings(ModelTrainingOptions):
    """``trainer novelty``: train without each attack class in turn and measure how much of it each novelty
    signal still catches at a benign false-alarm budget."""

    hold_out: CliVariadicArg[list[str]] = Field(
        default_factory=list,
        description="attack classes to hold out, one training run each (none: every attack class with at least "
        "--min-rows rows)",
        json_schema_extra={"metavar": "CLASS"},
    )
    min_rows: int = Field(
        MIN_HELD_OUT_ROWS,
        ge=2,
        description="hold out only attack classes with at least this many rows in the data (when --hold-out is "
        "not given)",
    )
    false_alarm_budget: float = Field(
        BUDGET,
        gt=0,
        lt=0.5,
        description="share of validation benign rows each signal may flag: its threshold is their 1 - budget quantile",
    )


class EvaluateSettings(DataOptions):
    """``trainer evaluate``: score a bundle (or registry) on labelled data."""

    bundle: Path = Field(description="bundle directory, .tar.gz, or registry", json_schema_extra={"metavar": "BUNDLE"})
    device: Device = Field("auto", description=_DEVICE_HELP)


class PublishSettings(CommandSettings):
    """``trainer publish``: add a bundle to a registry and move LATEST to it."""

    bundle: Path = Field(
        description="bundle directory or .tar.gz (it is verified first)", json_schema_extra={"metavar": "BUNDLE"}
    )
    registry: Path = Field(
        description="registry directory (created if needed; a directory of its own)",
        json_schema_extra={"metavar": "DIR"},
    )
    sign: Path | None = Field(None, description=_SIGN_HELP, json_schema_extra={"metavar": "KEY.pem"})


class KeygenSettings(CommandSettings):
    """``trainer keygen``: a new ed25519 key pair for signing bundles."""

    out: Path = Field(
        description="directory for bundle-signing.key (private, mode 0600: keep it secret) and bundle-signing.pub "
        "(give it to workers as --trusted-key); existing keys are never overwritten",
        json_schema_extra={"metavar": "DIR"},
    )


class AdaptSettings(CommandSettings):
    """``trainer adapt``: fit a bundle's anomaly model (the autoencoder) to flows of the user's own meter and
    network from a period they trust; the classifier is kept as it is."""

    bundle: Path = Field(
        description="bundle directory, .tar.gz, or registry (its LATEST) to adapt",
        json_schema_extra={"metavar": "BUNDLE"},
    )
    benign: CliVariadicArg[list[Path]] = Field(
        description="flow files of the site from a period you trust (CSV of any dialect the decoder knows, or "
        "NDJSON flow records; folders expanded): any attack in them is learnt as normal",
        json_schema_extra={"metavar": "FILE"},
    )
    out: Path = Field(
        description="run directory to write (never overwritten): the adapted bundle in bundle/, report.json",
        json_schema_extra={"metavar": "DIR"},
    )
    registry: Path | None = Field(
        None,
        description="also publish the adapted bundle to this registry directory",
        json_schema_extra={"metavar": "DIR"},
    )
    sign: Path | None = Field(
        None,
        description=f"{_SIGN_HELP}; needs --registry (a signature of the base bundle is not carried over)",
        json_schema_extra={"metavar": "KEY.pem"},
    )
    budget: float = Field(
        ADAPT_BUDGET,
        gt=0,
        lt=0.5,
        description="share of the held-out trusted flows the novelty threshold may flag (its 1 - budget quantile)",
    )
    held_out: float = Field(
        ADAPT_HELD_OUT,
        gt=0,
        lt=1,
        description="share of the decoded trusted flows held out of training: the threshold and the choice of "
        "autoencoder are set on them",
    )
    epochs: int | None = Field(
        None, ge=1, description="autoencoder epochs (none: at least 1000 optimizer steps and 10 epochs)"
    )
    seed: int = Field(42, description="seed of the held-out split and of the training")
    init: Literal[ADAPT_INITS] = Field(  # type: ignore[valid-type]
        "auto",
        description="autoencoder start: base (fine-tune the bundle's), scratch (a fresh one), auto (both; the one "
        "with the lower median held-out error is kept)",
    )
    device: Device = Field("auto", description=_DEVICE_HELP)
    quiet: bool = Field(False, description="no progress notes")
