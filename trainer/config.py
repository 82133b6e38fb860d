"""Training configuration: a shipped profile (``paper`` or ``quick``) with an optional TOML file on top.

Every pipeline step has a switch here, so that ``trainer ablate`` can turn steps off one at a time and a
user can reproduce any row of the paper's Table 6 with a config file. Unknown keys are an error (a typo
in a config must not silently fall back to a default).
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from detector.core.tomlfile import TomlFileError, read_toml_file

PROFILES = ("paper", "paper-literal", "tuned", "quick")


class _Section(BaseModel):
    # No inf or nan: an infinite learning rate trains a model of NaN weights that still verifies and serves.
    # Strict types: TOML has its own integers, floats and booleans, so `epochs = "3"` or `tomek = 1` is a
    # mistake to report, not a value to guess at (an integer is still accepted where a float is wanted).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class SplitConfig(_Section):
    method: Literal["stratified", "temporal"] = "stratified"
    test_size: float = Field(0.3, gt=0, lt=1)
    validation_size: float = Field(0.1, ge=0, lt=1)  # carved from the training split, for curves/selection


class FeatureConfig(_Section):
    # Train only on features every CIC flow meter writes, so one bundle serves all CIC dialects.
    portable: bool = False
    exclude: list[str] = Field(default_factory=list)


class PreprocessConfig(_Section):
    log_scale: bool = False
    # Most frequent values kept per categorical feature (UNSW-NB15 proto/service/state); rarer -> all-zero.
    # None keeps every value seen in the training split, as the paper's one-hot encoding does.
    max_categories: int | None = Field(None, ge=1)


class OutlierConfig(_Section):
    enabled: bool = True
    # Share of benign training rows removed. sklearn's "auto" threshold removed 8.5 % of the benign rows of
    # the CICIDS2017 sample, and validation flows like those removed were then misclassified 17x as often
    # as the rest: the most unusual benign flows are real traffic, not noise. 1 % keeps the cleaning gentle.
    contamination: Annotated[float, Field(gt=0, le=0.5)] | Literal["auto"] = 0.01
    n_estimators: int = Field(100, ge=1)


class ResampleConfig(_Section):
    enabled: bool = True
    k_neighbors: int = Field(5, ge=1)
    tomek: bool = True
    # Oversample each minority class up to this many rows (None: up to the majority class).
    max_rows_per_class: int | None = Field(None, ge=1)
    # Inflate a class at most this many times its own size (None: no bound).
    max_ratio: float | None = Field(None, ge=1)
    # Oversample the benign class too when it is a minority (some datasets are attack-heavy).
    benign: bool = False


class ModelSection(_Section):
    filters: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = (16, 32)
    gru_hidden: int = Field(64, ge=1)
    gru_layers: int = Field(2, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    # Where the residual blocks apply ReLU: "resnet" (after the first convolution and after the sum) or
    # "every_conv" (the paper's Table 1: after every convolution, the shortcut's included). See core/model.py.
    activation: Literal["resnet", "every_conv"] = "resnet"

    @field_validator("filters", mode="before")
    @classmethod
    def _array_as_pair(cls, value: Any) -> Any:
        """TOML has arrays, not tuples; the two numbers inside are still checked strictly."""
        return tuple(value) if isinstance(value, list) else value


class PretrainConfig(_Section):
    enabled: bool = True
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    # "adam", or "sam_sgd": SAM over SGD with momentum, the only optimizer the paper names (it gives no
    # separate settings for pre-training, so the paper-literal profile uses the fine-tuning ones).
    optimizer: Literal["adam", "sam_sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1)  # sam_sgd only
    rho: float = Field(0.05, gt=0)  # sam_sgd only


class NoveltyConfig(_Section):
    """The novelty model (detector/core/novelty.py): the stage-1 autoencoder, calibrated on the validation rows."""

    enabled: bool = True
    # Share of validation rows scored as not novel: 1 - quantile of flows like the training data are novel
    # by the autoencoder.
    quantile: float = Field(0.995, gt=0, lt=1)
    # The signal that decides is_novel (detector/core/novelty.py). max_probability: validation chose a
    # classifier-confidence signal over the autoencoder in trainer novelty (README "Novelty"); "energy"
    # needs logits, which the serving backends do not return.
    flag: Literal["autoencoder", "max_probability"] = "max_probability"
    # Share of validation *benign* rows the max_probability signal flags: its false-alarm budget.
    budget: float = Field(0.01, gt=0, lt=1)
    # The autoencoder trains at least this many epochs. Beyond pretrain.epochs only the novelty model's copy
    # keeps training; the classifier starts from the encoder after pretrain.epochs.
    min_epochs: int = Field(10, ge=1)


AlphaRule = Literal["inverse_frequency", "effective_number"]


class FocalConfig(_Section):
    gamma: float = Field(2.0, ge=0)
    # One weight for all classes, one per class in the order of the sorted class names, or a rule that
    # derives them from the class counts of the rows the loss sees (after resampling), normalised to mean 1
    # (trainer/losses.py, focal_alpha): "inverse_frequency" (alpha_c ~ 1 / n_c) or "effective_number"
    # (Cui et al. 2019, alpha_c ~ (1 - beta) / (1 - beta^n_c)).
    alpha: Annotated[float, Field(ge=0)] | list[Annotated[float, Field(ge=0)]] | AlphaRule | None = None
    beta: float = Field(0.999, gt=0, lt=1)  # effective_number only


class SamConfig(_Section):
    enabled: bool = True
    rho: float = Field(0.05, gt=0)


class FinetuneConfig(_Section):
    epochs: int = Field(50, ge=1)
    # Run more epochs when needed to reach this many optimizer steps: a small training set must not
    # get a fraction of the updates a large one gets.
    min_steps: int = Field(0, ge=0)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    loss: Literal["focal", "cross_entropy"] = "focal"
    focal: FocalConfig = FocalConfig()
    # Share of each target spread evenly over all classes (Szegedy et al. 2016); 0 is off.
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    sam: SamConfig = SamConfig()
    # Keep the weights of the epoch with the lowest validation loss (never looks at the test split);
    # false keeps the last epoch's, as the paper does.
    select_best: bool = True


class CalibrationConfig(_Section):
    """Temperature scaling of the classifier's confidence, fitted on the validation rows (trainer/calibrate.py)."""

    enabled: bool = True
    bins: int = Field(15, ge=2)  # equal-width confidence bins of the expected calibration error


class TrainConfig(_Section):
    profile: str = "custom"
    seed: int = Field(42, ge=0, le=2**32 - 1)  # numpy's and scikit-learn's seed range
    # The network's own seed (initial weights, batch order, dropout); None: ``seed``. Another value trains
    # another network on the very same split and rows: what a seed ensemble or a noise estimate needs.
    model_seed: int | None = Field(None, ge=0, le=2**32 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1)
    split: SplitConfig = SplitConfig()
    features: FeatureConfig = FeatureConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    outliers: OutlierConfig = OutlierConfig()
    resample: ResampleConfig = ResampleConfig()
    model: ModelSection = ModelSection()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    novelty: NoveltyConfig = NoveltyConfig()
    calibration: CalibrationConfig = CalibrationConfig()

    def with_changes(self, changes: dict[str, Any]) -> TrainConfig:
        """A copy with nested ``changes`` applied (``{"finetune": {"sam": {"enabled": False}}}``).

        Raises :class:`ConfigError` when the result is not a valid config (e.g. ``--epochs 0``).
        """
        return _validated(_merge(self.model_dump(), changes), "command-line options")


class ConfigError(ValueError):
    """A profile or config file that cannot be used; the message names the file and the field."""


def load_config(profile: str = "paper", path: str | Path | None = None) -> TrainConfig:
    """The named profile, overlaid with the TOML file at ``path`` when given."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    data = _profile_data(profile)
    if path is not None:
        data = _merge(data, _read_user_config(Path(path)))
        data["profile"] = f"{profile} + {Path(path).name}"  # reports name what was actually run
    return _validated(data, str(path or profile))


def _read_user_config(file: Path) -> dict[str, Any]:
    try:
        data = read_toml_file(file)
    except TomlFileError as exc:
        raise ConfigError(f"config file {file} {exc}") from None
    for key in ("profile", "extends"):  # the file overrides the profile --profile names
        if key in data:
            raise ConfigError(f"config file {file}: {key!r} cannot be set in a config file; use --profile")
    return data


def _validated(data: dict[str, Any], where: str) -> TrainConfig:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid training config ({where}): {_problems(exc)}") from None


def _problems(exc: ValidationError) -> str:
    """One ``key.path: what is wrong (got VALUE)`` per key. pydantic reports a value that fits no member of a
    union (``contamination = 0.9``) once per member, under a location naming the member's type
    (``constrained-float``, ``literal['auto']``): those are joined with "or" under the key the user wrote."""
    problems: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    for error in exc.errors():
        loc, unknown_key = error["loc"], error["type"] == "extra_forbidden"
        if not unknown_key:  # an unknown key's location ends with the key itself
            loc = tuple(part for part in loc if isinstance(part, int) or part in _FIELD_NAMES)
        key = ".".join(map(str, loc))
        if not unknown_key and not isinstance(error["input"], dict):
            values.setdefault(key, f" (got {error['input']!r})")
        messages = problems.setdefault(key, [])
        if error["msg"] not in messages:
            messages.append(error["msg"])
    return "; ".join(f"{key}: {' or '.join(messages)}{values.get(key, '')}" for key, messages in problems.items())


def _field_names(model: type[BaseModel]) -> set[str]:
    names = set(model.model_fields)
    for field in model.model_fields.values():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names |= _field_names(field.annotation)
    return names


_FIELD_NAMES = _field_names(TrainConfig)


def _profile_data(profile: str) -> dict[str, Any]:
    """A shipped profile's settings; ``extends = "other"`` starts from that profile's."""
    data = _read_toml(resources.files("trainer.profiles").joinpath(f"{profile}.toml").read_text(), profile)
    base = data.pop("extends", None)
    return data if base is None else _merge(_profile_data(base), data)


def _read_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
