"""The run directory's figures: the confusion matrix and the training curves (as in the paper), the reliability
diagram and the global feature importance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from trainer.calibrate import Reliability
from trainer.train import History


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str) -> Path:
    """Row-normalised colours (recall per true class) with the raw counts written in each cell."""
    counts = np.asarray(matrix, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = max(6.0, 0.55 * len(labels) + 3)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if counts[i, j]:
                colour = "white" if share[i, j] > 0.6 else "black"
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(history: History, path: Path) -> Path:
    """Training and validation accuracy and loss per fine-tuning epoch (and pre-training MSE)."""
    epochs = [e.epoch for e in history.epochs]
    panels = 3 if history.pretrain_loss else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    axes[0].plot(epochs, [e.train_accuracy for e in history.epochs], label="train")
    axes[1].plot(epochs, [e.train_loss for e in history.epochs], label="train")
    if history.epochs and history.epochs[0].val_accuracy is not None:
        axes[0].plot(epochs, [e.val_accuracy for e in history.epochs], label="validation")
        axes[1].plot(epochs, [e.val_loss for e in history.epochs], label="validation")
    if history.best_epoch:
        for ax in axes[:2]:
            ax.axvline(history.best_epoch, color="grey", linestyle=":", label="kept epoch")
    axes[0].set(title="accuracy", xlabel="epoch")
    axes[1].set(title="loss (focal)", xlabel="epoch")
    for ax in axes[:2]:
        ax.legend()
        ax.grid(alpha=0.3)
    if history.pretrain_loss:
        axes[2].plot(range(1, len(history.pretrain_loss) + 1), history.pretrain_loss, color="tab:green")
        axes[2].set(title="autoencoder pre-training (MSE)", xlabel="epoch")
        axes[2].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reliability(curves: dict[str, Reliability], path: Path, title: str) -> Path:
    """Reliability diagram: per confidence bin, accuracy against mean confidence (the diagonal is perfect
    calibration), one line per set of probabilities (e.g. before and after temperature scaling), and below
    how many rows fall in each bin."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    width = 1.0 / max(1, len(curves))
    for i, (name, curve) in enumerate(curves.items()):
        filled = curve.counts > 0
        top.plot(curve.confidence[filled], curve.accuracy[filled], marker="o", label=f"{name} (ECE {curve.ece:.4f})")
        centres = (curve.edges[:-1] + curve.edges[1:]) / 2
        bin_width = np.diff(curve.edges)
        bottom.bar(
            centres + (i - (len(curves) - 1) / 2) * bin_width * width, curve.counts, bin_width * width, label=name
        )
    top.set(title=title, ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02))
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.set(xlabel="confidence (top probability)", ylabel="rows")
    bottom.set_yscale("log")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_feature_importance(importance: dict[str, Any], path: Path, top: int = 20) -> Path:
    """Horizontal bars: the ``top`` features of report.json's ``feature_importance``, largest at the top."""
    entries = importance["features"][:top]
    names = [entry["feature"] for entry in entries][::-1]
    values = [entry["mean_abs_attribution"] for entry in entries][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(entries) + 1.5))
    ax.barh(range(len(entries)), values, color="tab:blue")
    ax.set_yticks(range(len(entries)), names, fontsize=8)
    ax.set(
        xlabel="mean |attribution| (log-odds of the predicted class)",
        title=f"feature importance: top {len(entries)}, {importance['rows']:,} test rows",
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
