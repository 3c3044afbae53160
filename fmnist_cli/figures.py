"""Matplotlib figures of one run and of an evaluation, saved as PNG or inlined in the HTML report as
SVG. matplotlib is imported inside each function: `fmnist --help` never waits for it."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path


def _pyplot():
    from . import backend

    backend.shelter_home()   # matplotlib writes its settings under the home folder
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fitted_title(fig, title: str, fontsize: float) -> None:
    """The figure's title, kept inside it: a run name can make it wider than the figure, so it wraps
    between words (never inside a run id), and a line wider still gets a smaller font. Measured, not
    counted: an id of digits or capitals is wider than one of small letters."""
    import math
    import textwrap

    text = fig.suptitle(title, fontsize=fontsize)
    renderer = fig.canvas.get_renderer()
    room = 0.96 * fig.bbox.width
    width = text.get_window_extent(renderer).width
    if width <= room:
        return
    # Lines of about equal length: a greedy wrap leaves a last word alone on the second line.
    rows = math.ceil(width / room)
    chars = math.ceil(len(title) / rows)
    while len(lines := textwrap.wrap(title, chars, break_long_words=False, break_on_hyphens=False)) > rows:
        chars += 1
    text.set_text("\n".join(lines))
    for _ in range(5):   # a few steps: glyph widths do not shrink quite in proportion to the size
        width = text.get_window_extent(renderer).width
        if width <= room:
            break
        text.set_fontsize(text.get_fontsize() * 0.98 * room / width)


def confusion_figure(classes: list[str], matrix: list[list[int]], title: str):
    """The confusion matrix as a heatmap with the count in each cell (scikit-learn's own display).
    The title is the figure's, over heatmap and colorbar both, and constrained layout makes room for
    it: an axes title is centred on the heatmap alone, and a long one ran into the colorbar."""
    plt = _pyplot()
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(7.6, 6.4), layout="constrained")
    labels = [f"{i} {name}" for i, name in enumerate(classes)]
    display = ConfusionMatrixDisplay(np.asarray(matrix), display_labels=labels)
    display.plot(ax=ax, cmap="Blues", colorbar=True, xticks_rotation=45, values_format="d")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    _fitted_title(fig, title, fontsize=11)
    # The rotated labels read better anchored at their end, under their column.
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    return fig


MARKERS = ["o", "s", "^", "D", "v", "P"]


def comparison_figure(summary):
    """Train and validation loss and accuracy per epoch for every variant of a comparison (a
    ComparisonSummary), with a band of ± one std where there are repeats: `compare --plot` saves it,
    the HTML report inlines it."""
    from .records import Status, whole_epochs

    plt = _pyplot()
    import numpy as np

    sweep = sweep_axis(summary)
    if sweep is None:
        fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    else:   # a third row, as wide as the figure: the best val accuracy against the swept setting
        fig = plt.figure(figsize=(11, 11))
        grid = fig.add_gridspec(3, 2)
        first = fig.add_subplot(grid[0, 0])
        axes = np.array([[first, fig.add_subplot(grid[0, 1], sharex=first)],
                         [fig.add_subplot(grid[1, 0], sharex=first), fig.add_subplot(grid[1, 1], sharex=first)]])
        _sweep_panel(fig.add_subplot(grid[2, :]), summary, sweep)
    panels = [("loss", "train loss"), ("val_loss", "validation loss"),
              ("accuracy", "train accuracy"), ("val_accuracy", "validation accuracy")]
    thinned = False
    for ax, (metric, title) in zip(axes.flat, panels):
        for i, v in enumerate(summary.variants):
            pe = v.aggregate["per_epoch"][metric]
            if not pe["mean"]:
                continue
            epochs = np.arange(1, len(pe["mean"]) + 1)
            mean = np.array([np.nan if m is None else m for m in pe["mean"]], dtype=float)
            # ten colours, then the same ten with another marker: no two variants look alike
            color, marker = f"C{i % 10}", MARKERS[i // 10 % len(MARKERS)]
            partial = f", {v.n} of {v.of} seeds" if v.n < v.of else ""
            # Where some seeds stopped early the mean is over the others: dashed, so a jump there
            # is not read as the variant's (every seed has the first `whole` epochs)
            whole = whole_epochs(pe)
            ax.plot(epochs[:whole], mean[:whole], marker=marker, markersize=3 if marker == "o" else 4, color=color,
                    label=v.label + ("" if v.status == Status.COMPLETED else f" ({v.status}{partial})"))
            if whole < len(epochs):
                thinned = True
                ax.plot(epochs[whole - 1:], mean[whole - 1:], linestyle="--", marker=marker, markersize=2,
                        color=color, alpha=0.6)
            if any(s is not None for s in pe["std"][:whole]):
                std = np.array([0.0 if s is None else s for s in pe["std"][:whole]], dtype=float)
                ax.fill_between(epochs[:whole], mean[:whole] - std, mean[:whole] + std, color=color, alpha=0.2)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0, 0].legend(fontsize=8)
    if thinned:
        fig.text(0.5, 0.005, "dashed: epochs that only some seeds reached (the others stopped early), "
                 "the mean over those", ha="center", fontsize=8)
    n = summary.repeats
    fig.suptitle(f"fmnist compare {summary.comparison_id}" + (f" (mean ± std, {n} seeds)" if n > 1 else ""))
    fig.tight_layout(rect=(0, 0.025, 1, 1) if thinned else None)
    return fig


# Settings a sweep can be drawn against, and whether their values are spread over decades.
LOG_AXIS = {"lr", "batch_size"}   # swept settings (compare.SWEPT) whose values span decades


def sweep_axis(summary) -> str | None:
    """The numeric setting the variants sweep (lr, dropout, batch_size, momentum) with at least 3
    values, the one with the most where several are; None when there is none to draw against."""
    from .compare import most_swept

    key, count = most_swept(summary.variants)
    return key if count >= 3 else None


def _sweep_panel(ax, summary, key: str) -> None:
    """Best val accuracy (mean ± std over seeds) against `key`, a line per combination of the other
    varied settings (adam, sgd, ...): where a sweep peaks, and whether its neighbours are within the
    seeds' spread."""
    from .records import Status

    plt = _pyplot()
    lines: dict[str, list] = {}
    missing: dict[str, list] = {}   # values without figures (every seed diverged, say): in the legend
    for v in summary.variants:
        mean, std = v.aggregate["best_val_accuracy"]["mean"], v.aggregate["best_val_accuracy"]["std"]
        values = v.values or {}
        x = values.get(key)
        if x is None:
            continue
        rest = " ".join(str(value) for k, value in values.items() if k != key and value is not None)
        if mean is None:
            missing.setdefault(rest, []).append(f"{key}={x:g} {v.status}")
            continue
        if v.status != Status.COMPLETED:   # a mean over the seeds that have figures: said, and hollow
            missing.setdefault(rest, []).append(f"{key}={x:g} {v.n} of {v.of} seeds")
        lines.setdefault(rest, []).append((x, mean, std or 0.0, v.status == Status.COMPLETED))
    # colours of their own: C0, C1, ... are the variants' in the curves above
    colors = plt.get_cmap("Dark2").colors
    for i, label in enumerate(sorted(set(lines) | set(missing))):
        gone = f" ({', '.join(missing[label])})" if label in missing else ""
        text = (label + gone).strip() or None
        color = colors[i % len(colors)]
        if label not in lines:   # every value without figures (all diverged): named in the legend
            ax.plot([], [], marker="x", linestyle="none", color=color, label=text)
            continue
        points = sorted(lines[label])
        xs, means, stds, whole = zip(*points)
        ax.errorbar(xs, means, yerr=stds if summary.repeats > 1 else None, marker="o", markersize=4,
                    capsize=3, color=color, label=text)
        hollow = [(x, m) for x, m, _, w in points if not w]
        if hollow:
            ax.plot(*zip(*hollow), marker="o", markersize=7, linestyle="none", markerfacecolor="white",
                    markeredgecolor=color)
    if key in LOG_AXIS:
        ax.set_xscale("log")
    values = sorted({p[0] for points in lines.values() for p in points})
    ax.set_xticks(values, [f"{x:g}" for x in values])   # the values swept, not the scale's decades
    ax.minorticks_off()
    ax.set_xlabel(key)
    ax.set_ylabel("best val accuracy")
    ax.set_title(f"best val accuracy against {key}" + (" (mean ± std over seeds)" if summary.repeats > 1 else ""))
    ax.grid(alpha=0.3)
    if lines or missing:
        ax.legend(fontsize=8)


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
    """Write the figure to a PNG file, whole or not at all (the store's atomic writer)."""
    from .store import atomic_write_bytes

    plt = _pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    atomic_write_bytes(Path(path).expanduser(), buf.getvalue(), durable=False)
