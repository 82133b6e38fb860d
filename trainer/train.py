"""The two training stages of ResCAE-BiGRU.

Stage 1 pre-trains the convolutional autoencoder (MSE reconstruction, no labels) so the encoder starts
from features that describe flows; the autoencoder itself becomes the novelty model (detector/core/novelty.py).
Stage 2 copies that encoder into the classifier and fine-tunes the whole network with Focal Loss, SAM over
SGD with momentum, and cosine annealing of the learning rate over the run. Each epoch is measured on a
validation split carved from the training split (never the test split); with ``select_best`` the weights
of the epoch with the lowest validation loss are kept (macro F1 on a validation split that holds one or two
flows of the rarest classes is too noisy to select by).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn
from torch.nn import functional as F

from detector.core.model import ModelConfig, ResCAE, ResCAEBiGRU
from detector.core.scorer import predict_proba
from trainer.config import ConfigError, FinetuneConfig, ModelSection, PretrainConfig
from trainer.losses import FocalLoss, focal_alpha
from trainer.progress import Reporter
from trainer.sam import SAM


class TrainingDiverged(ValueError):
    """The loss became inf or nan: every later weight would be nan, and a nan model still verifies and serves
    (it puts every flow in one class). The message names the stage's learning rate, the usual cause."""


def _check_finite(loss: float, stage: str, epoch: int, lr_key: str, lr: float) -> None:
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"the {stage} loss is {loss} after epoch {epoch}: the training diverged; lower {lr_key} (now {lr:g})"
        )


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    val_f1_macro: float | None
    lr: float
    seconds: float


@dataclass
class History:
    pretrain_loss: list[float] = field(default_factory=list)
    epochs: list[EpochStats] = field(default_factory=list)
    best_epoch: int | None = None

    def to_json(self) -> dict:
        return {
            "pretrain_loss": self.pretrain_loss,
            "epochs": [asdict(e) for e in self.epochs],
            "best_epoch": self.best_epoch,
        }


def seed_everything(seed: int) -> None:
    """Same seed, same data, same device → same model."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def build_model(n_features: int, n_classes: int, section: ModelSection) -> ResCAEBiGRU:
    config = ModelConfig(
        n_features=n_features,
        n_classes=n_classes,
        filters=tuple(section.filters),
        gru_hidden=section.gru_hidden,
        gru_layers=section.gru_layers,
        dropout=section.dropout,
        activation=section.activation,
    )
    return ResCAEBiGRU(config)


@dataclass
class Pretrained:
    """The trained autoencoder (eval mode, CPU), the encoder weights for the classifier, the loss per epoch."""

    autoencoder: ResCAE
    encoder_state: dict[str, torch.Tensor] | None
    losses: list[float]


def pretrain_autoencoder(
    x: np.ndarray,
    section: ModelSection,
    cfg: PretrainConfig,
    device: torch.device,
    seed: int,
    reporter: Reporter,
    *,
    epochs: int,
    snapshot_epoch: int | None,
    start: ResCAE | None = None,
) -> Pretrained:
    """Train the autoencoder on unlabeled rows for ``epochs``; the encoder's weights after ``snapshot_epoch``
    epochs (None: not needed) are what the classifier starts from, whatever the autoencoder does later.

    ``cfg.optimizer`` is Adam, or SAM over SGD with momentum and cosine annealing over ``epochs`` (the
    paper's only stated optimizer). ``start`` (its architecture must be ``section``'s) is fine-tuned, a copy of
    it, instead of a new autoencoder trained from its initialisation."""
    fresh = ResCAE(x.shape[1], tuple(section.filters), section.activation)
    if start is not None:
        fresh.load_state_dict(start.state_dict(), strict=True)
    autoencoder = fresh.to(device)
    step = _PretrainStep(autoencoder, cfg, epochs)
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    encoder_state = None
    steps = epochs * _n_batches(len(data), cfg.batch_size)
    with reporter.task("pre-train autoencoder", steps) as advance:
        for epoch in range(epochs):
            autoencoder.train()
            total = 0.0
            for index in torch.randperm(len(data), generator=generator).split(cfg.batch_size):
                batch = data[index].to(device)
                total += step(batch) * len(index)
                advance(1)
            step.end_epoch()
            losses.append(total / len(data))
            _check_finite(losses[-1], "pre-training", epoch + 1, "pretrain.lr", cfg.lr)
            reporter.note(f"  pre-train epoch {epoch + 1}/{epochs}  reconstruction MSE {losses[-1]:.6f}")
            if epoch + 1 == snapshot_epoch:
                encoder_state = copy.deepcopy(autoencoder.encoder.state_dict())
    return Pretrained(autoencoder.cpu().eval(), encoder_state, losses)


class _PretrainStep:
    """One optimizer step of the autoencoder on a batch (returns the batch's MSE), and the end of an epoch."""

    def __init__(self, autoencoder: ResCAE, cfg: PretrainConfig, epochs: int) -> None:
        self.autoencoder = autoencoder
        self.sam: SAM | None = None
        self.schedule: torch.optim.lr_scheduler.LRScheduler | None = None
        if cfg.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(autoencoder.parameters(), lr=cfg.lr)
        else:
            self.optimizer = torch.optim.SGD(autoencoder.parameters(), lr=cfg.lr, momentum=cfg.momentum)
            self.sam = SAM(autoencoder.parameters(), self.optimizer, rho=cfg.rho)
            self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(1, epochs))

    def __call__(self, batch: torch.Tensor) -> float:
        def closure() -> torch.Tensor:
            loss = F.mse_loss(self.autoencoder(batch), batch)
            loss.backward()
            return loss

        if self.sam is not None:
            return float(self.sam.step(self.autoencoder, closure).item())
        loss = F.mse_loss(self.autoencoder(batch), batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.item())

    def end_epoch(self) -> None:
        if self.schedule is not None:
            self.schedule.step()


def finetune(
    model: ResCAEBiGRU,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None,
    cfg: FinetuneConfig,
    device: torch.device,
    seed: int,
    reporter: Reporter,
    history: History | None = None,
) -> History:
    """Fine-tune the classifier; labels are class indices. Returns the per-epoch history."""
    history = history or History()
    model.to(device)
    criterion = _criterion(cfg, model.config.n_classes).to(device)
    base = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sam = SAM(model.parameters(), base, rho=cfg.sam.rho) if cfg.sam.enabled else None
    x = torch.from_numpy(np.ascontiguousarray(train[0], dtype=np.float32))
    y = torch.from_numpy(np.asarray(train[1], dtype=np.int64))
    epochs = _epochs(cfg, len(x))
    if epochs > cfg.epochs:
        reporter.note(f"  {epochs} epochs instead of {cfg.epochs}: {len(x)} rows need them for {cfg.min_steps} steps")
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(base, T_max=epochs)
    generator = torch.Generator().manual_seed(seed)
    best_score, best_state = -math.inf, None

    with reporter.task("fine-tune ResCAE-BiGRU", epochs * _n_batches(len(x), cfg.batch_size)) as advance:
        for epoch in range(epochs):
            started = time.perf_counter()
            lr = base.param_groups[0]["lr"]
            fitted = _train_epoch(model, x, y, criterion, base, sam, cfg, device, generator, advance)
            schedule.step()
            val = _validate(model, validation, criterion, device) if validation is not None else (None, None, None)
            stats = EpochStats(epoch + 1, *fitted, *val, lr, time.perf_counter() - started)
            _check_finite(stats.train_loss, "fine-tuning", epoch + 1, "finetune.lr", cfg.lr)
            history.epochs.append(stats)
            reporter.note(_epoch_line(stats, epochs))
            score = -(stats.val_loss if stats.val_loss is not None else stats.train_loss)
            if cfg.select_best and score > best_score:
                best_score, best_state, history.best_epoch = score, copy.deepcopy(model.state_dict()), epoch + 1

    if cfg.select_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def _epochs(cfg: FinetuneConfig, rows: int) -> int:
    """The configured epochs, or more when ``rows`` are too few to reach ``cfg.min_steps`` updates."""
    steps_per_epoch = _n_batches(rows, cfg.batch_size)
    return max(cfg.epochs, -(-cfg.min_steps // steps_per_epoch))


def _train_epoch(
    model: ResCAEBiGRU,
    x: torch.Tensor,
    y: torch.Tensor,
    criterion: nn.Module,
    base: torch.optim.Optimizer,
    sam: SAM | None,
    cfg: FinetuneConfig,
    device: torch.device,
    generator: torch.Generator,
    advance: Callable[[int], None],
) -> tuple[float, float]:
    model.train()
    total_loss, correct = 0.0, 0
    for index in torch.randperm(len(x), generator=generator).split(cfg.batch_size):
        batch_x, batch_y = x[index].to(device), y[index].to(device)
        logits_seen: list[torch.Tensor] = []

        def closure(batch_x=batch_x, batch_y=batch_y, logits_seen=logits_seen) -> torch.Tensor:
            logits = model(batch_x)
            if not logits_seen:
                logits_seen.append(logits.detach())
            loss = criterion(logits, batch_y)
            loss.backward()
            return loss

        if sam is not None:
            loss = sam.step(model, closure)
        else:
            base.zero_grad(set_to_none=True)
            loss = closure()
            base.step()
        total_loss += loss.item() * len(index)
        correct += int((logits_seen[0].argmax(1) == batch_y).sum())
        advance(1)
    return total_loss / len(x), correct / len(x)


def _validate(
    model: ResCAEBiGRU, validation: tuple[np.ndarray, np.ndarray], criterion: nn.Module, device: torch.device
) -> tuple[float, float, float]:
    model.eval()
    x, y = validation
    probabilities = predict_proba(model, x.astype(np.float32, copy=False), device)
    with torch.no_grad():
        logits = torch.log(torch.from_numpy(probabilities).clamp_min(1e-12))
        loss = float(criterion(logits, torch.from_numpy(np.asarray(y, dtype=np.int64))))
    predicted = probabilities.argmax(1)
    accuracy = float((predicted == y).mean())
    f1 = float(f1_score(y, predicted, average="macro", zero_division=0))
    return loss, accuracy, f1


def _criterion(cfg: FinetuneConfig, n_classes: int) -> nn.Module:
    if cfg.loss == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    alpha = cfg.focal.alpha
    if isinstance(alpha, str):
        raise ConfigError(f"finetune.focal.alpha = {alpha!r} must be resolved to weights (resolve_alpha) first")
    if isinstance(alpha, list) and len(alpha) != n_classes:
        raise ConfigError(f"finetune.focal.alpha has {len(alpha)} weights for {n_classes} classes")
    return FocalLoss(gamma=cfg.focal.gamma, alpha=alpha, label_smoothing=cfg.label_smoothing)


def resolve_alpha(cfg: FinetuneConfig, labels: np.ndarray, n_classes: int) -> FinetuneConfig:
    """``cfg`` with a rule-named focal alpha (``inverse_frequency``...) replaced by the per-class weights it
    gives for ``labels``, the class indices of the rows the loss will see; unchanged otherwise."""
    alpha = cfg.focal.alpha
    if not isinstance(alpha, str) or cfg.loss != "focal":
        return cfg
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    weights = focal_alpha(alpha, counts.tolist(), cfg.focal.beta)
    return cfg.model_copy(update={"focal": cfg.focal.model_copy(update={"alpha": weights})})


def _n_batches(rows: int, batch_size: int) -> int:
    return max(1, -(-rows // batch_size))


def _epoch_line(stats: EpochStats, epochs: int) -> str:
    line = (
        f"  epoch {stats.epoch:>3}/{epochs}  loss {stats.train_loss:.4f}  acc {stats.train_accuracy:.4f}"
        f"  lr {stats.lr:.5f}  {stats.seconds:.0f}s"
    )
    if stats.val_loss is not None:
        line += f"  | val loss {stats.val_loss:.4f}  acc {stats.val_accuracy:.4f}  macro-F1 {stats.val_f1_macro:.4f}"
    return line
