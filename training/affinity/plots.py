"""Report figures: metric@k per model and the reliability plot of P(redeem)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_metrics_at_k", "plot_reliability"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics_at_k(report: dict[str, Any], path: Path, ks: tuple[int, ...]) -> Path:
    """Recall@k and NDCG@k of every model of an evaluation report (PNG)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("recall", "ndcg"), strict=True):
        for name, metrics in report["models"].items():
            style = "-" if name == report["shipped"] else "--"
            ax.plot(ks, [metrics[f"{metric}@{k}"] for k in ks], style, marker="o", label=name)
        ax.set_xlabel("k")
        ax.set_ylabel(f"{metric}@k")
        ax.set_xticks(list(ks))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{report['dataset']} ({report['target']}): test window")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_reliability(
    curve: tuple[np.ndarray, np.ndarray, np.ndarray], path: Path, title: str = ""
) -> Path:
    """Observed redemption rate against predicted P(redeem) per bin (PNG)."""
    plt = _pyplot()
    mean_p, rate, n = curve
    fig, ax = plt.subplots(figsize=(5, 5))
    top = float(max(mean_p.max(initial=0), rate.max(initial=0), 1e-3)) * 1.1
    ax.plot([0, top], [0, top], ":", color="grey", label="perfect")
    ax.scatter(mean_p, rate, s=20 + 200 * n / max(n.max(initial=1), 1), label="bins (size = pairs)")
    ax.plot(mean_p, rate, "-")
    ax.set_xlabel("predicted P(redeem)")
    ax.set_ylabel("observed redemption rate")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_title(title or "reliability (test window)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
