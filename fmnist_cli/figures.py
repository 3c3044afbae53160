"""Matplotlib figures of one run and of an evaluation, saved as PNG or inlined in the HTML report as
SVG. matplotlib is imported inside each function: `fmnist --help` never waits for it."""

from __future__ import annotations

import io
import os
import re
import secrets
from pathlib import Path


def _pyplot():
    from . import backend

    backend.shelter_home()   # matplotlib writes its settings under the home folder
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(classes: list[str], matrix: list[list[int]], title: str):
    """The confusion matrix as a heatmap with the count in each cell (scikit-learn's own display)."""
    plt = _pyplot()
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(7.6, 6.4))
    labels = [f"{i} {name}" for i, name in enumerate(classes)]
    display = ConfusionMatrixDisplay(np.asarray(matrix), display_labels=labels)
    display.plot(ax=ax, cmap="Blues", colorbar=True, xticks_rotation=45, values_format="d")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=11)
    # The rotated labels read better anchored at their end, under their column.
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    fig.tight_layout()
    return fig


def run_curves_figure(history: dict, title: str, best_epoch: int | None = None):
    """Loss and accuracy per epoch of one run, train and validation in one panel each (as Keras's
    TensorBoard callback pairs them); the best epoch marked."""
    plt = _pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    epochs = list(range(1, len(history["loss"]) + 1))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history[metric], marker="o", markersize=3, color="C0", label=f"train {metric}")
        ax.plot(epochs, history[f"val_{metric}"], marker="o", markersize=3, color="C1", label=f"validation {metric}")
        if best_epoch:
            ax.axvline(best_epoch, color="0.5", linestyle=":", linewidth=1, label=f"best epoch ({best_epoch})")
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def svg(fig) -> str:
    """The figure as an <svg> element to put inside HTML: text stays text (searchable, selectable,
    small), fixed ids and no date (the same report twice is the same file), sized by its container."""
    plt = _pyplot()
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "fmnist"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]   # the XML declaration and DOCTYPE belong to a file, not inside HTML
    # Width and height in pt would fix its size; the viewBox alone lets CSS scale it to the page.
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r"<svg\1", text, count=1)


def save_png(fig, path: str | os.PathLike) -> None:
    """Write the figure to a PNG file through a temporary file: the target is whole or untouched.
    Not mkstemp, whose files are 0600: the umask decides, as for any file the user writes."""
    plt = _pyplot()

    target = Path(path).expanduser()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getvalue())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
