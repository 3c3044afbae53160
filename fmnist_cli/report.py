"""Everything the user sees: Rich tables, live progress, plain lines when output is not a terminal.
The core hands plain dicts and events here; nothing here trains or reads files."""

from __future__ import annotations

import json
import math
import os
import sys

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .records import COLORS, METRICS, EpochEnd, EpochStart, Plan, Record, RunDone, Status, Step


def _console(stderr: bool) -> Console:
    # Rich wraps at 80 columns when not on a terminal; logs and pipes read better unwrapped.
    # No `file=`: Rich then writes to whatever sys.stdout/stderr is at the time (tests swap them).
    stream = sys.stderr if stderr else sys.stdout
    try:
        width = None if stream.isatty() else max(int(os.environ.get("COLUMNS") or 160), 40)
    except ValueError:   # COLUMNS=abc: ignore it, as Rich itself does
        width = 160
    return Console(stderr=stderr, width=width)


out = _console(stderr=False)
err = _console(stderr=True)


def fmt(value, digits=4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.{digits}f}"
    return str(value)


def print_json(data) -> None:
    """Exactly one JSON document on stdout (NaN written as null so any JSON parser reads it).
    Records print their own `to_json`, so `--json` and the stored files share one format."""
    sys.stdout.write(json.dumps(_clean(data), indent=2) + "\n")
    sys.stdout.flush()


def _clean(value):
    if isinstance(value, Record):
        value = value.to_json()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def colored(status) -> str:
    """A status in its colour, the same in every table."""
    status = Status(status) if status in Status._value2member_map_ else status
    return f"[{COLORS.get(status, 'white')}]{status}[/]"


class LiveDisplay:
    """What both live views share: a Rich Live region on a terminal (nothing when `plain` or
    `quiet`), events drawn as they come, and a closed stdout that stops the drawing, not the work."""

    transient = False

    def __init__(self, console: Console, plain: bool, quiet: bool = False):
        self.console, self.plain, self.quiet = console, plain, quiet
        self.live = None

    def renderable(self):
        raise NotImplementedError

    def __enter__(self):
        if not (self.plain or self.quiet):
            self.live = Live(self.renderable(), console=self.console, refresh_per_second=8,
                             transient=self.transient)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.close()
            self.live.__exit__(*exc)

    def close(self) -> None:
        """Last touches before the live region stops."""

    def refresh(self) -> None:
        if self.live:
            self.live.update(self.renderable())

    def on_event(self, event) -> None:
        if self.quiet:
            return
        try:
            self.handle(event)
        except SystemExit:
            # Rich met a closed stdout (`fmnist train | head -1`) and pointed it at /dev/null: stop
            # showing progress, but let the training finish and be saved.
            self.quiet, self.live = True, None

    def handle(self, event) -> None:
        raise NotImplementedError


# --- train -------------------------------------------------------------------------------------

def epoch_table(title: str | None = None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAVY)
    table.add_column("epoch", justify="right")
    for col in METRICS:
        table.add_column(col, justify="right")
    table.add_column("seconds", justify="right")
    return table


def plain_epoch_line(event: EpochEnd, epochs: int) -> str:
    return (f"epoch {event.epoch}/{epochs}  " +
            "  ".join(f"{k} {fmt(event.metric(k))}" for k in METRICS) + f"  {event.seconds:.2f}s")


class TrainDisplay(LiveDisplay):
    """Live view of one run: a progress bar inside the epoch and a table that gains a row per epoch.
    With `plain` (output not a terminal) one line per epoch, never one per step."""

    def __init__(self, epochs: int, console: Console, plain: bool, quiet: bool = False):
        super().__init__(console, plain, quiet)
        self.epochs = epochs
        self.progress = Progress(TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("steps"), TimeElapsedColumn(),
                                 console=console, transient=True)
        self.task = None
        self.rows: list[EpochEnd] = []
        self.best = None

    def renderable(self):
        table = epoch_table()   # rebuilt, so only the best epoch so far is highlighted
        for row in self.rows:
            table.add_row(str(row.epoch), *(fmt(row.metric(k)) for k in METRICS), f"{row.seconds:.2f}",
                          style="bold green" if row.epoch == self.best else None)
        return Group(table, self.progress)

    def close(self) -> None:
        if self.task is not None:
            self.progress.update(self.task, visible=False)

    def handle(self, event) -> None:
        if isinstance(event, EpochStart) and not self.plain:
            if self.task is None:
                self.task = self.progress.add_task("train", total=event.steps, epoch=event.epoch,
                                                   epochs=self.epochs)
            else:
                self.progress.reset(self.task, total=event.steps, epoch=event.epoch)
        elif isinstance(event, Step) and not self.plain and self.task is not None:
            self.progress.update(self.task, completed=event.step)
        elif isinstance(event, EpochEnd):
            if self.plain:
                self.console.print(plain_epoch_line(event, self.epochs), highlight=False, soft_wrap=True)
            else:
                self.rows.append(event)
                if event.is_best:
                    self.best = event.epoch
                self.refresh()


def train_result(result, console: Console, brief: bool = False) -> None:
    status = result.status
    best = result.best_epoch
    if best and not brief:
        console.print(f"Best epoch: {best} (val_accuracy {fmt(result.best_val_accuracy)}).", highlight=False)
    if result.stopped_early:
        console.print(f"Stopped early after {result.epochs_run} epochs; the saved model is epoch {best}'s.",
                      highlight=False)
    if status == Status.INTERRUPTED:
        console.print(f"Interrupted: kept {result.epochs_run} finished epoch(s).", highlight=False)
    if status == Status.DIVERGED:
        console.print(f"Diverged: {result.message}", highlight=False)
    if result.model_path:
        saved = f"saved to {result.model_path}"
    else:
        saved = f"no epoch finished, so no model was saved (run folder {result.run_dir})"
    console.print(f"Run {result.run_id} {status} in {result.seconds:.1f}s, {saved}",
                  highlight=False, soft_wrap=True)


# --- evaluate, summary, runs, data -----------------------------------------------------------------

def evaluation(result, console: Console) -> None:
    console.print(f"Run {result.run_id} on the {result.split} split ({result.n} images): "
                  f"loss {fmt(result.loss)}, accuracy {fmt(result.accuracy)}", highlight=False)
    per_class = Table(title="Per-class accuracy", box=box.SIMPLE_HEAVY)
    per_class.add_column("class")
    per_class.add_column("accuracy", justify="right")
    per_class.add_column("images", justify="right")
    for row in result.per_class:
        per_class.add_row(row["class"], fmt(row["accuracy"]), str(row["n"]))
    console.print(per_class)
    matrix = Table(title="Confusion matrix (rows: true class, columns: predicted class #)", box=box.SIMPLE)
    matrix.add_column("true class")
    for j in range(len(result.classes)):
        matrix.add_column(str(j), justify="right")
    for i, (name, row) in enumerate(zip(result.classes, result.confusion_matrix)):
        matrix.add_row(f"{i} {name}", *(f"[bold]{v}[/]" if j == i else str(v) for j, v in enumerate(row)))
    console.print(matrix)


def model_summary(info: dict, console: Console) -> None:
    table = Table(title=info.get("title", "Model"), box=box.SIMPLE_HEAVY)
    for col, justify in (("layer", "left"), ("type", "left"), ("output shape", "left"), ("params", "right")):
        table.add_column(col, justify=justify)
    for row in info["layers"]:
        kind = row["type"] + (f" ({row['activation']})" if row.get("activation") else "")
        shape = "(" + ", ".join("None" if d is None else str(d) for d in row["output_shape"]) + ")"
        table.add_row(row["name"], kind, shape, f"{row['params']:,}")
    console.print(table)
    console.print(f"Total params: {info['total_params']:,}\nTrainable params: {info['trainable_params']:,}\n"
                  f"Non-trainable params: {info['non_trainable_params']:,}", highlight=False)


def runs_table(records: list[dict], console: Console) -> None:
    table = Table(box=box.SIMPLE_HEAVY, show_edge=False)
    for col, justify in (("id", "left"), ("when", "left"), ("config", "left"), ("best val_acc", "right"),
                         ("test acc", "right"), ("status", "left"), ("seconds", "right")):
        table.add_column(col, justify=justify, no_wrap=col in ("id", "when", "status"), overflow="fold")
    for r in records:
        short = r.config.short() if r.config is not None else "?"
        test = r.get("evaluations", {}).get("test")
        when = r.created[5:16].replace("T", " ")
        table.add_row(escape(r.id), when, escape(short), fmt(r.get("best_val_accuracy")), fmt(test.accuracy if test else None),
                      colored(r.status), fmt(r.get("seconds"), 1))
    console.print(table)
    broken = [r for r in records if r.status == Status.BROKEN]
    for r in broken[:5]:
        console.print(f"{r.id}: {r.reason}", highlight=False, markup=False, soft_wrap=True)
    if broken:
        console.print(f"{len(broken)} broken run(s); `fmnist runs rm --broken` removes them.", highlight=False)


def removal_plan(plan, console: Console) -> None:
    """What `fmnist runs rm` is about to remove, one line each."""
    for r in plan.runs:
        console.print(f"run {r.id} ({r.status}{': ' + r.reason if r.reason else ''})", highlight=False,
                      markup=False, soft_wrap=True)
    for cid in plan.comparisons:
        console.print(f"comparison {cid}", highlight=False, markup=False)
    for path in plan.leftovers:
        console.print(f"leftover {path}", highlight=False, markup=False, soft_wrap=True)


def comparison_list(records, console: Console) -> None:
    """`fmnist compare --list`: one line per comparison; a damaged one says why."""
    for c in records:
        if c.broken:
            console.print(f"{escape(c.id)}  [red]broken[/]: {escape(c.broken)}", highlight=False, soft_wrap=True)
        else:
            console.print(f"{c.id}  repeats {c.repeats}  {', '.join(c.labels)}", highlight=False, markup=False)


def data_info(info: dict, console: Console) -> None:
    console.print(f"Fashion-MNIST found in {info['directory']} ({info['source']}); all four files verified "
                  "(gzip, IDX header, counts, labels, checksums).", highlight=False, soft_wrap=True)
    table = Table(box=box.SIMPLE_HEAVY, title=f"Class counts (validation split {info['val_size']:g}, "
                                               f"seed {info['split_seed']})")
    table.add_column("#", justify="right")
    table.add_column("class")
    for split in info["splits"]:
        table.add_column(split, justify="right")
    for i, name in enumerate(info["classes"]):
        table.add_row(str(i), name, *(f"{info['splits'][s][i]:,}" for s in info["splits"]))
    table.add_row("", "total", *(f"{sum(info['splits'][s]):,}" for s in info["splits"]), style="bold")
    console.print(table)


# --- compare -------------------------------------------------------------------------------------

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values, lo: float, hi: float) -> str:
    chars = []
    for v in values:
        if v is None:
            chars.append(" ")
            continue
        frac = 0.0 if hi <= lo else (v - lo) / (hi - lo)
        chars.append(SPARKS[min(len(SPARKS) - 1, max(0, int(round(frac * (len(SPARKS) - 1)))))])
    return "".join(chars)


def pm(s: dict, digits=4) -> str:
    """mean±std, compact (std only where there are several repeats)."""
    if not s or s.get("mean") is None:
        return "-"
    text = f"{s['mean']:.{digits}f}"
    if s.get("std") is not None:
        text += f"±{s['std']:.{max(digits - 1, 1)}f}"
    return text


class CompareDisplay(LiveDisplay):
    """Overall progress (runs done / total, time left) and a table that fills in as epochs finish.
    Plain mode: one line per finished epoch and per finished run."""

    transient = True

    def __init__(self, labels: list[str], repeats: int, console: Console, plain: bool, quiet: bool = False):
        super().__init__(console, plain, quiet)
        self.repeats = repeats
        self.labels = labels
        self.rows = {label: {"done": 0, "epoch": "", "val_accuracy": None, "best": None, "status": "waiting"}
                     for label in labels}
        self.runs_total = 0
        self.runs_done = 0
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("epochs"), TimeElapsedColumn(), TextColumn("left"),
                                 TimeRemainingColumn(), console=console)
        self.task = None

    def renderable(self):
        table = Table(box=box.SIMPLE_HEAVY)
        for col, j in (("variant", "left"), ("runs", "right"), ("epoch", "right"), ("val_accuracy", "right"),
                       ("best", "right"), ("status", "left")):
            table.add_column(col, justify=j)
        for label in self.labels:
            r = self.rows[label]
            table.add_row(escape(label), f"{r['done']}/{self.repeats}", str(r["epoch"]), fmt(r["val_accuracy"]),
                          fmt(r["best"]), r["status"])
        return Group(table, self.progress)

    def handle(self, event) -> None:
        if isinstance(event, Plan):
            self.runs_total = event.runs
            self.task = self.progress.add_task(f"runs 0/{self.runs_total}", total=max(event.epochs, 1))
            if self.plain:
                self.console.print(f"Training {event.runs} run(s) in {event.units} unit(s)...", highlight=False)
        elif isinstance(event, EpochEnd):
            row = self.rows.get(event.variant)
            if row is not None:
                row.update(epoch=f"{event.epoch}/{event.epochs}", val_accuracy=event.val_accuracy,
                           status="training")
                if row["best"] is None or event.val_accuracy > row["best"]:
                    row["best"] = event.val_accuracy
            if self.task is not None:
                self.progress.advance(self.task, 1)
            if self.plain:
                self.console.print(f"[{event.variant} #{event.repeat}] " + plain_epoch_line(event, event.epochs),
                                   highlight=False, soft_wrap=True, markup=False)
        elif isinstance(event, RunDone):
            self.runs_done += 1
            label = self.labels[event.variant]
            row = self.rows[label]
            row["done"] += 1
            # The row shows the first trouble of its seeds; "waiting" and "training" are display-only.
            status = Status(event.status).value
            clean = row["status"] in (Status.COMPLETED.value, "training", "waiting")
            if status != Status.COMPLETED and clean:
                row["status"] = status
            elif clean and row["done"] >= self.repeats:
                row["status"] = Status.COMPLETED.value
            if self.task is not None:
                task = self.progress.tasks[0]
                # a run stopped early or diverged leaves epochs it will never train: count them done
                expected = task.total * self.runs_done / max(self.runs_total, 1)
                self.progress.update(self.task, completed=max(task.completed, int(expected)),
                                     description=f"runs {self.runs_done}/{self.runs_total}")
            if self.plain:
                self.console.print(f"[{label} #{event.repeat}] run {status}", highlight=False, markup=False)
        self.refresh()


def comparison_table(summary, console: Console) -> None:
    curves = [v.aggregate["per_epoch"]["val_accuracy"]["mean"] for v in summary.variants]
    finite = [x for c in curves for x in c if x is not None]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    n = summary.repeats
    title = f"Comparison {summary.comparison_id}" + (f" (mean ± std over {n} seeds)" if n > 1 else "")
    show_seeds = n > 1 or bool(summary.incomplete)
    table = Table(title=title, box=box.SIMPLE_HEAVY)
    width = max([len(v.label) for v in summary.variants] + [7]) + 2
    table.add_column("variant", no_wrap=True, min_width=width)
    if show_seeds:
        table.add_column("seeds", justify="right", no_wrap=True)
    for col in ("loss", "accuracy", "val_loss", "val_accuracy", "best val_acc @epoch", "s/epoch"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("val_acc curve", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for v in summary.variants:
        agg = v.aggregate
        is_best = v.label == summary.best_variant
        final = agg["final"]
        best_epoch = agg["best_epoch"]["mean"]
        best = pm(agg["best_val_accuracy"]) + (f" @{best_epoch:.3g}" if best_epoch is not None else "")
        seeds = [f"{v.n} of {v.of}"] if show_seeds else []
        table.add_row(("★ " if is_best else "  ") + escape(v.label), *seeds, pm(final["loss"]), pm(final["accuracy"]),
                      pm(final["val_loss"]), pm(final["val_accuracy"]), best, pm(agg["seconds_per_epoch"], 2),
                      sparkline(agg["per_epoch"]["val_accuracy"]["mean"], lo, hi), colored(v.status),
                      style="bold" if is_best else None)
    console.print(table)
    if summary.best_variant:
        console.print(f"★ best: {escape(summary.best_variant)} (highest best val_accuracy"
                      f"{', mean over seeds' if n > 1 else ''}). Curves span {lo:.4f}-{hi:.4f}.", highlight=False)
    for v in summary.variants:
        for r in v.runs:
            if r.status in (Status.DIVERGED, Status.FAILED, Status.BROKEN) and r.message:
                console.print(f"{v.label} (seed #{r.repeat}): {r.status}: {r.message}",
                              highlight=False, soft_wrap=True, markup=False)
                break
    if summary.incomplete:
        gaps = ", ".join(f"{v.label} ({v.n} of {v.of})" for v in summary.incomplete)
        console.print(f"Incomplete: {gaps}. `fmnist compare --resume {summary.comparison_id}` will fill the gaps.",
                      highlight=False, soft_wrap=True, markup=False)


def plot_comparison(summary: dict, path) -> None:
    """Train and validation loss and accuracy per epoch for every variant; a band of ± one std
    where there are repeats."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    panels = [("loss", "train loss"), ("val_loss", "validation loss"),
              ("accuracy", "train accuracy"), ("val_accuracy", "validation accuracy")]
    for ax, (metric, title) in zip(axes.flat, panels):
        for i, v in enumerate(summary.variants):
            pe = v.aggregate["per_epoch"][metric]
            if not pe["mean"]:
                continue
            epochs = np.arange(1, len(pe["mean"]) + 1)
            mean = np.array([np.nan if m is None else m for m in pe["mean"]], dtype=float)
            color = f"C{i % 10}"
            partial = f", {v.n} of {v.of} seeds" if v.n < v.of else ""
            ax.plot(epochs, mean, marker="o", markersize=3, color=color,
                    label=v.label + ("" if v.status == Status.COMPLETED else f" ({v.status}{partial})"))
            if any(s is not None for s in pe["std"]):
                std = np.array([0.0 if s is None else s for s in pe["std"]], dtype=float)
                ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0, 0].legend(fontsize=8)
    n = summary.repeats
    fig.suptitle(f"fmnist compare {summary.comparison_id}" + (f" (mean ± std, {n} seeds)" if n > 1 else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
