"""One seaborn theme and the recurring figure types, so notebooks stay short."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def theme() -> None:
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "figure.figsize": (7, 4)})


def history_frame(records: Iterable, label: Callable[[dict], str]) -> pd.DataFrame:
    """Concatenate the per-epoch histories of records, with a ``run`` label column."""
    frames = []
    for rec in records:
        df = pd.DataFrame(rec["history"])
        df["run"] = label(rec)
        df["seed"] = rec["spec"]["seed"]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def training_curves(records: Iterable, label: Callable[[dict], str],
                    metrics: tuple[str, ...] = ("train_loss", "test_acc"), title: str = ""):
    """One panel per metric against epoch; seeds of the same label are drawn as a band."""
    df = history_frame(records, label)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        sns.lineplot(data=df, x="epoch", y=m, hue="run", ax=ax, errorbar=("pi", 100))
        ax.set_title(m.replace("_", " "))
        if ax is not axes[0][-1] and ax.get_legend() is not None:
            ax.get_legend().remove()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def accuracy_vs_sparsity(df: pd.DataFrame, x: str, y: str, hue: str, style: str | None = None,
                         logx: bool = True, title: str = ""):
    """Accuracy (or error) against compression or remaining weights, one line per method."""
    fig, ax = plt.subplots()
    sns.lineplot(data=df, x=x, y=y, hue=hue, style=style, marker="o", ax=ax,
                 errorbar=("pi", 100))
    if logx:
        ax.set_xscale("log")
    ax.set_title(title)
    fig.tight_layout()
    return fig
