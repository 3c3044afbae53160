"""Everything the user sees: Rich tables, live progress, plain lines when output is not a terminal.
The core hands plain dicts and events here; nothing here trains or reads files."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
from pathlib import Path
from dataclasses import dataclass, field

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleDimensions, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .config import DEFAULT_MONITOR, LEGACY_MONITOR, monitor_phrase
from .records import (COLORS, METRICS, EpochEnd, EpochStart, Plan, Record, RunDone, RunReused, Status, Step,
                      whole_epochs)
from .errors import json_error


class StdConsole(Console):
    """The console of stdout or stderr: it writes to whatever sys.stdout/stderr is at the time (tests
    swap them) and reads its width at the time too: a terminal's own width in a terminal; $COLUMNS
    (default 160) for pipes and files, where Rich would wrap at 80 and logs read better unwrapped."""

    def __init__(self, stderr: bool):
        super().__init__(stderr=stderr)
        self._width = self._height = None   # Rich froze $COLUMNS and $LINES here; read them per call

    def _size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)
        try:
            tty = self.file.isatty()
        except (AttributeError, ValueError):   # no isatty, or a closed file
            tty = False
        if tty or self._width is not None:   # a terminal, or a width set on purpose
            return size
        try:
            width = max(int(os.environ.get("COLUMNS") or 160), 40)
        except ValueError:   # COLUMNS=abc: ignore it, as Rich itself does
            width = 160
        return ConsoleDimensions(width, size.height)

    size = property(_size, Console.size.fset)


out = StdConsole(stderr=False)
err = StdConsole(stderr=True)


def fmt(value, digits=4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.{digits}f}"
    return str(value)


printed_json = False   # once a command's document is out, an error after it adds no second one
json_wanted = False    # the command was given --json: entry.exit_interrupted prints its error document


def print_json(data) -> None:
    """Exactly one JSON document on stdout (NaN written as null so any JSON parser reads it).
    Records print their own `to_json`, so `--json` and the stored files share one format."""
    global printed_json
    sys.stdout.write(json.dumps(_clean(data), indent=2) + "\n")
    sys.stdout.flush()
    printed_json = True


def print_json_error(message: str, kind: str, exit_code: int) -> None:
    """A command given --json failed before printing its document: stdout still gets one, so that a
    script reading it learns what went wrong without parsing stderr (which says it too)."""
    if printed_json:
        return
    with contextlib.suppress(OSError, ValueError):   # a closed stdout: stderr has said it
        print_json(json_error(message, kind, exit_code))


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


def say(console: Console, text, *, markup: bool = True) -> None:
    """A line of prose. Pipes and files get it whole on one line (logs are grepped); a terminal gets it
    wrapped between words only: a path or id is never broken by Rich, and one wider than the
    terminal sits on a line of its own, for the terminal to wrap (it then copies whole)."""
    if not console.is_terminal:
        console.print(text, markup=markup, highlight=False, soft_wrap=True)
        return
    text = text if isinstance(text, Text) else (Text.from_markup(text) if markup else Text(text))
    for paragraph in text.split("\n"):
        for line in wrap_words(paragraph, console.width):
            console.print(line, soft_wrap=True)


def wrap_words(text: Text, width: int) -> list[Text]:
    """`text` as lines of at most `width` cells, broken between words only (a longer word gets a line
    of its own)."""
    plain, offsets, start = text.plain, [], 0
    for word in re.finditer(r"\S+", plain):
        if word.start() > start and cell_len(plain[start:word.end()].rstrip()) > width:
            offsets.append(word.start())
            start = word.start()
    lines = list(text.divide(offsets))
    for line in lines:
        line.rstrip()
    return lines


# --- tables that fit ----------------------------------------------------------------------------
# Every table is laid out for the console's width (80 columns by default in a terminal): columns are
# dropped, least important first, until the rest fit; a number is never cut or wrapped; text (ids,
# labels, configs) is cut with "…" or wrapped between words, and an id only when nothing is left to drop.

def longest_word(texts) -> int:
    return max([cell_len(w) for t in texts for w in str(t).split()] + [1])


GAP = 2   # between two columns: one space of padding and the (blank) divider


@dataclass
class Col:
    header: str
    cells: list                 # one str (Rich markup) or Text per row
    justify: str = "right"
    drop: int = 0               # 0: always shown; otherwise dropped on a narrow console, highest first
    cut: int = 0                # 0: shown whole (numbers, statuses); otherwise may get narrower, highest first
    least: int | None = None    # the width a cut column keeps while other columns can still be dropped;
                                # below it, when nothing is left to drop, the least important is cut first
    wrap: bool = False          # narrower text wraps between words (labels) instead of ending in "…"
    hang: int = 0               # a wrapped cell's first `hang` cells are a marker; its other lines are indented
    whole: bool = False         # kept whole (not cut) while columns dropped before it can still go
    texts: list = field(init=False, repr=False)
    natural: int = field(init=False)
    floor: int = field(init=False)   # the narrowest it ever gets: its longest word if it wraps

    def __post_init__(self):
        self.texts = [c if isinstance(c, Text) else Text.from_markup(c) for c in self.cells]
        self.natural = max([cell_len(self.header)] + [t.cell_len for t in self.texts])
        if self.least is None or not self.cut:
            self.least = self.natural
        self.least = max(min(self.least, self.natural), cell_len(self.header))
        words = longest_word(t.plain[self.hang:] for t in self.texts)
        self.floor = min(self.natural, self.hang + words if self.wrap else 4)

    def wrapped(self, width: int) -> list[Text]:
        """The cells at `width`: a wrapping column's cells broken between words, with a hanging indent."""
        if not self.wrap or width >= self.natural:
            return self.texts
        out = []
        for text in self.texts:
            lines = wrap_words(text[self.hang:], width - self.hang)
            out.append(Text("\n").join([text[:self.hang] + lines[0]] +
                                       [Text(" " * self.hang) + line for line in lines[1:]]))
        return out


def fit(cols: list[Col], width: int, gap: int = GAP, at_least: int = 0) -> list[tuple[Col, int]]:
    """The columns to show at `width` and the width of each. `at_least`: the table's narrowest width
    (its title's, so that a title fits on one line where the console allows)."""
    shown = list(cols)

    def total(widths):
        return sum(widths) + gap * (len(widths) - 1)

    def least(c):   # a `whole` column counts whole while a column dropped before it is left to go
        return c.natural if c.whole and any(o.drop > c.drop for o in shown) else c.least

    while total([least(c) for c in shown]) > width and any(c.drop for c in shown):
        shown.remove(max((c for c in shown if c.drop), key=lambda c: c.drop))
    widths = {id(c): c.natural for c in shown}
    cuttable = [c for c in shown if c.cut]
    # first down to each column's `least`, then, when nothing was left to drop, further
    for floor, order in ((lambda c: c.least, lambda c: -c.cut), (lambda c: c.floor, lambda c: (-c.drop, -c.cut))):
        for c in sorted(cuttable, key=order):
            over = total(list(widths.values())) - width
            if over <= 0:
                break
            widths[id(c)] -= max(0, min(over, widths[id(c)] - floor(c)))
    spare = min(at_least, width) - total(list(widths.values()))
    if spare > 0 and shown:
        widths[id(shown[-1])] += spare
    return [(c, widths[id(c)]) for c in shown]


def fitted_table(cols: list[Col], width: int, *, title: str | None = None, gap: int = GAP,
                 row_styles: list | None = None, box_=box.SIMPLE_HEAVY) -> Table:
    """A Rich table of `cols` laid out by `fit` for `width`."""
    layout = fit(cols, width, gap, cell_len(title) if title else 0)
    table = Table(title=title, box=box_, show_edge=False, pad_edge=False, padding=(0, gap - 1, 0, 0))
    for col, w in layout:
        table.add_column(col.header, justify=col.justify, width=w, no_wrap=True, overflow="ellipsis")
    cells = [col.wrapped(w) for col, w in layout]
    rows = len(cols[0].cells) if cols else 0
    for i in range(rows):
        table.add_row(*(column[i] for column in cells), style=(row_styles or [None] * rows)[i])
    return table


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

HEADERS = {"loss": "loss", "accuracy": "acc", "val_loss": "val loss", "val_accuracy": "val acc"}


def epoch_table(rows: list[EpochEnd], best: int | None, width: int, monitor: str = DEFAULT_MONITOR) -> Table:
    """One row per finished epoch, the best one so far (by `monitor`, as the title says) highlighted.
    Narrow: time, then the training loss and accuracy, then val loss go."""
    drops = {"loss": 3, "accuracy": 2, "val_loss": 1, "val_accuracy": 0}
    cols = [Col("epoch", [str(r.epoch) for r in rows])]
    cols += [Col(HEADERS[k], [fmt(r.metric(k)) for r in rows], drop=drops[k]) for k in METRICS]
    cols.append(Col("time", [f"{r.seconds:.2f}s" for r in rows], drop=4))
    return fitted_table(cols, width, title=f"best epoch: {monitor_phrase(monitor)}",
                        row_styles=["bold green" if r.epoch == best else None for r in rows])


def fit_progress(progress: Progress, bar: BarColumn, full: tuple, narrow: tuple, width: int) -> None:
    """Progress columns for `width`: `full` where a bar of 10 or more fits beside them, else `narrow`;
    the bar takes what is left, up to 40. Measured, not set and rendered: the live region may be
    drawing the progress at this very moment."""
    def others(columns) -> int:
        if not progress.tasks:
            return 0
        return sum(max(progress.console.measure(column(task)).maximum for task in progress.tasks)
                   for column in columns if column is not bar) + len(columns) - 1   # one space apart

    for columns in (full, narrow):
        taken = others(columns)
        if taken + 10 <= width or columns is narrow:
            progress.columns = columns
            bar.bar_width = max(4, min(40, width - taken))
            return


def plain_epoch_line(event: EpochEnd, epochs: int) -> str:
    # the group's seconds; the comparison table's s/epoch is each run's share of them
    together = (f" for {event.group_size} runs together ({event.seconds / event.group_size:.2f}s each)"
                if event.group_size > 1 else "")
    return (f"epoch {event.epoch}/{epochs}  " +
            "  ".join(f"{k} {fmt(event.metric(k))}" for k in METRICS) + f"  {event.seconds:.2f}s{together}")


class TrainDisplay(LiveDisplay):
    """Live view of one run: a progress bar inside the epoch and a table that gains a row per epoch.
    With `plain` (output not a terminal) one line per epoch, never one per step."""

    def __init__(self, epochs: int, console: Console, plain: bool, quiet: bool = False,
                 monitor: str = DEFAULT_MONITOR):
        super().__init__(console, plain, quiet)
        self.epochs, self.monitor = epochs, monitor
        self.bar = BarColumn()
        epoch, count, elapsed = (TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                                 MofNCompleteColumn(), TimeElapsedColumn())
        self.columns = ((epoch, self.bar, count, TextColumn("steps"), elapsed), (epoch, self.bar, count))
        self.progress = Progress(*self.columns[0], console=console, transient=True)
        self.task = None
        self.rows: list[EpochEnd] = []
        self.best = None

    def renderable(self):
        width = self.console.width   # read each time: the terminal may have been resized
        fit_progress(self.progress, self.bar, *self.columns, width)
        return Group(epoch_table(self.rows, self.best, width, self.monitor), self.progress)

    def close(self) -> None:
        if self.task is not None:
            self.progress.update(self.task, visible=False)

    def handle(self, event) -> None:
        if isinstance(event, EpochStart) and not self.plain:
            if self.task is None:
                self.task = self.progress.add_task("train", total=event.steps, epoch=event.epoch,
                                                   epochs=self.epochs)
            else:
                # reset replaces the fields: pass them all
                self.progress.reset(self.task, total=event.steps, epoch=event.epoch, epochs=self.epochs)
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
        monitor = (result.config or {}).get("monitor", LEGACY_MONITOR)
        values = (result.history or {}).get(monitor) or []
        watched = f"{monitor} {fmt(values[best - 1])}, " if monitor != "val_accuracy" and len(values) >= best else ""
        console.print(f"Best epoch ({monitor_phrase(monitor)}): {best} "
                      f"({watched}val_accuracy {fmt(result.best_val_accuracy)}).", highlight=False)
    if result.stopped_early:
        console.print(f"Stopped early after {result.epochs_run} epochs; the saved model is epoch {best}'s.",
                      highlight=False)
    elif best and not brief and result.model_epoch and result.model_epoch != best:
        last = (result.history or {}).get("val_accuracy") or []
        value = f", val_accuracy {fmt(last[result.model_epoch - 1])}" if len(last) >= result.model_epoch else ""
        say(console, f"The saved model is the last epoch's ({result.model_epoch}{value}); --early-stopping N "
                     "keeps the best epoch's.", markup=False)
    if not result.kept:
        say(console, f"Interrupted in {result.seconds:.1f}s, before the first epoch finished: nothing to keep, "
                     "so the run was not saved.", markup=False)
        return
    if status == Status.INTERRUPTED:   # its message gives the command that goes on
        say(console, result.message or f"Interrupted: kept {result.epochs_run} finished epoch(s).", markup=False)
    if status == Status.DIVERGED:
        say(console, f"Diverged: {result.message}", markup=False)
    if result.model_path:
        saved = f"saved to {result.model_path}"
    else:
        saved = f"no epoch finished, so no model was saved (run folder {result.run_dir})"
    say(console, f"Run {result.run_id} {status} in {result.seconds:.1f}s, {saved}", markup=False)


# --- evaluate, summary, runs, data -----------------------------------------------------------------

def comparison_evaluation(outcome: dict, console: Console) -> None:
    """`fmnist evaluate --comparison`: a row per variant, mean ± std over its scored seeds."""
    variants = outcome["variants"]
    best = max((v for v in variants if v["accuracy"]["mean"] is not None),
               key=lambda v: v["accuracy"]["mean"], default=None)
    marks = ["★ " if v is best else "  " for v in variants]
    cols = [Col("  variant", [Text(m + v["label"]) for m, v in zip(marks, variants)], "left", cut=1, wrap=True, hang=2),
            Col("seeds", [f"{v['n']} of {v['of']}" for v in variants]),
            Col("loss", [pm(v["loss"]) for v in variants]),
            Col("accuracy", [pm(v["accuracy"]) for v in variants])]
    title = f"Comparison {outcome['comparison_id']} on the {outcome['split']} split"
    console.print(fitted_table(cols, console.width, title=title))
    for s in outcome["skipped"]:
        say(console, f"Skipped {s['variant']} (seed #{s['repeat']}): {s['reason']}.", markup=False)
    runs = sum(v["n"] for v in variants)
    say(console, f"Scored {runs} run(s); each result is stored in its run (`fmnist report "
                 f"{outcome['comparison_id']} --html report.html` shows them per class).", markup=False)


def evaluation(result, console: Console) -> None:
    say(console, f"Run {result.run_id} on the {result.split} split ({result.n} images): "
                 f"loss {fmt(result.loss)}, accuracy {fmt(result.accuracy)}", markup=False)
    width = console.width
    rows = result.per_class
    console.print(fitted_table([Col("#", [str(i) for i in range(len(rows))]),
                                Col("class", [Text(str(r["class"])) for r in rows], "left", cut=1),
                                Col("accuracy", [fmt(r["accuracy"]) for r in rows]),
                                Col("images", [str(r["n"]) for r in rows])],
                               width, title="Per-class accuracy"))
    console.print(confusion_matrix(result.classes, result.confusion_matrix, width))


def confusion_matrix(classes: list[str], matrix: list[list[int]], width: int):
    """The matrix with class names where they fit, then with class numbers (the per-class table names
    them), then closer together; a note where not even that fits: ten numbers are never cut."""
    title = "Confusion matrix (rows: true class, columns: predicted class #)"
    numbers = [Col(str(j), [f"[bold]{v}[/]" if i == j else str(v) for i, v in enumerate(column)])
               for j, column in enumerate(zip(*matrix))] if matrix else []
    named = Col("true class", [Text(f"{i} {name}") for i, name in enumerate(classes)], "left")
    numbered = Col("true", [str(i) for i in range(len(classes))])
    for first, gap in ((named, 2), (numbered, 2), (numbered, 1)):
        cols = [first, *numbers]
        need = sum(c.natural for c in cols) + gap * (len(cols) - 1)
        if need <= width:
            return fitted_table(cols, width, title=title, gap=gap, box_=box.SIMPLE)
    return Text(f"The confusion matrix needs {need} columns; a wider terminal or --json shows it.")


def model_summary(info: dict, console: Console) -> None:
    layers = info["layers"]
    kinds = [row["type"] + (f" ({row['activation']})" if row.get("activation") else "") for row in layers]
    shapes = ["(" + ", ".join("None" if d is None else str(d) for d in row["output_shape"]) + ")" for row in layers]
    console.print(fitted_table([Col("layer", [Text(row["name"]) for row in layers], "left", cut=2, least=8),
                                Col("type", [Text(k) for k in kinds], "left", cut=1, least=8),
                                Col("output shape", shapes, "left"),
                                Col("params", [f"{row['params']:,}" for row in layers])],
                               console.width, title=info.get("title", "Model")))
    console.print(f"Total params: {info['total_params']:,}\nTrainable params: {info['trainable_params']:,}\n"
                  f"Non-trainable params: {info['non_trainable_params']:,}", highlight=False)


def duration(seconds) -> str:
    """12.3s, 4m05s, 2h07m."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def auto_id_width() -> int:
    """The longest id `fmnist train` gives a run without --name: time, optimizer, activation, 4 hex digits."""
    from .config import ACTIVATIONS, OPTIMIZERS

    return len("20260101-120000-") + max(map(len, OPTIMIZERS)) + 1 + max(map(len, ACTIVATIONS)) + len("-abcd")


def short_comparison(comparison_id: str | None) -> str:
    """A comparison's id without its date and time (`20261129-085129-demo-e4f8` -> `demo-e4f8`), or
    "-" for none; an id of another form whole."""
    if not comparison_id:
        return "-"
    parts = comparison_id.split("-", 2)
    return parts[2] if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() else comparison_id


def runs_table(records: list, console: Console, sort: str = "created") -> None:
    """One line per run; its config ends with its backend (tf or jax), a seed column follows when
    the runs differ in seed, and a comparison column when any belongs to one. Narrow: when goes
    first (the id starts with it), then the time, then the comparison, then test acc (first of all when
    no run has one), then the seed; only then is the config cut, and last left out, with the column
    `sort` names. Ids longer than any unnamed run's (a long --name) are cut with "…" before anything
    goes; other ids only when nothing is left to drop."""
    tests = [r.test_accuracy for r in records]
    no_tests = all(t is None for t in tests)
    comparisons = [r.config.comparison if r.config is not None else None for r in records]
    cols = [Col("id", [Text(r.id) for r in records], "left", cut=2, least=auto_id_width()),
            Col("when", [r.created[5:16].replace("T", " ") for r in records], "left", drop=6),
            # the backend ends the config: on a narrow terminal the config is cut from its end
            # what tells runs apart: the time, when, test acc and seed go before it is cut
            Col("config", [Text(r.config.short(backend=True) if r.config is not None else "?") for r in records], "left",
                drop=1, cut=1, least=16, whole=True),
            # only when the seeds differ: a seed sweep's runs share every other word of the config
            *([Col("seed", [str(r.config.seed) if r.config is not None else "?" for r in records], drop=2)]
              if len({r.config.seed for r in records if r.config is not None}) > 1 else []),
            # which comparison a run is a slot of, by the part of its id after the time (`demo-e4f8`):
            # enough for `compare --show`, `report` and `runs -c`, which take a part of an id
            *([Col("comparison", [Text(short_comparison(c)) for c in comparisons], "left", drop=4)]
              if any(comparisons) else []),
            Col("val acc", [fmt(r.saved_val_accuracy) for r in records]),   # what `evaluate` reproduces
            # the column a list is sorted by goes last, after the config (`--sort test_acc`, `--sort time`)
            Col("test acc", [fmt(t) for t in tests],
                drop=1 if sort == "test_acc" else 7 if no_tests else 3),
            Col("status", [colored(r.status) for r in records], "left"),
            # a copy made by `compare --reuse` was not trained here: its time is its source's
            Col("time", ["copy" if r.get("reused_from") else duration(r.get("seconds")) for r in records],
                drop=1 if sort == "time" else 5)]
    console.print(fitted_table(cols, console.width))
    broken = [r for r in records if r.status == Status.BROKEN]
    for r in broken[:5]:
        say(console, f"{r.id}: {r.reason}", markup=False)
    if broken:
        shown = " (the reasons of the first 5 above; `fmnist runs --json` has every one)" if len(broken) > 5 else ""
        console.print(f"{len(broken)} broken run(s){shown}; `fmnist runs rm --broken` removes them.", highlight=False)


def removal_plan(plan, console: Console) -> None:
    """What `fmnist runs rm` is about to remove, one line each."""
    for r in plan.runs:
        say(console, f"run {r.id} ({r.status}{': ' + r.reason if r.reason else ''})", markup=False)
    for cid in plan.comparisons:
        console.print(f"comparison {cid}", highlight=False, markup=False)
    for path in plan.leftovers:
        say(console, f"leftover {path}", markup=False)


def comparison_list(records, summaries: dict, console: Console) -> None:
    """`fmnist compare --list`: one line per comparison, with its status and best variant; a damaged
    one says why."""
    for c in records:
        if c.broken:
            say(console, Text.assemble(f"{c.id}  ", ("broken", "red"), f": {c.broken}"))
            continue
        summary = summaries[c.id]
        best = f"  best: {summary.best_variant}" if summary.best_variant else ""
        line = Text.assemble(f"{c.id}  ", (summary.status.value, COLORS.get(summary.status, "white")),
                             f"  repeats {c.repeats}  {', '.join(c.labels)}  ({c.shared()}){best}")
        say(console, line)   # one line each, never hard-wrapped: a pipe (grep) gets it whole


def tensorboard_export(result, console: Console) -> None:
    """`fmnist export tensorboard`: what was written where, what was skipped and why, how to view it."""
    epochs = sum(r["epochs"] for r in result.runs)
    groups = {r["group"] for r in result.runs if r["group"]}
    sessions = f", as HParams sessions of {len(groups)} variant(s) of {result.comparison}" if groups else ""
    if result.runs:
        say(console, f"Wrote {len(result.runs)} run(s) ({epochs} epochs) to {result.logdir}{sessions}.", markup=False)
    for s in result.skipped:
        say(console, f"Skipped {s['run_id']}: {s['reason']}.", markup=False)
    if result.runs:
        say(console, f"View them: tensorboard --logdir {result.logdir}", markup=False)


def data_info(info: dict, console: Console) -> None:
    cache = info.get("cache") or {}
    gz = any(f.get("name", "").endswith(".gz") for f in info.get("files") or [])
    checks = f"({'gzip, ' if gz else ''}IDX header, counts, labels, checksums)"
    if cache.get("used"):
        verified = f"all four files verified {checks} when the cache was built"
    else:
        verified = f"all four files verified {checks}"
    say(console, f"Fashion-MNIST found in {info['directory']} ({info['source']}); {verified}.", markup=False)
    if cache:
        say(console, cache_line(cache), markup=False)
    splits, names = info["splits"], info["classes"]
    cols = [Col("#", [str(i) for i in range(len(names))] + [""]),
            Col("class", [Text(n) for n in names] + ["total"], "left", cut=1)]
    cols += [Col(split, [f"{n:,}" for n in splits[split]] + [f"{sum(splits[split]):,}"]) for split in splits]
    console.print(fitted_table(cols, console.width, row_styles=[None] * len(names) + ["bold"],
                               title=f"Class counts (validation split {info['val_size']:g}, "
                                     f"seed {info['split_seed']}" + (f"; train limited to {info['limit']:,}"
                                                                     if info.get("limit") else "") + ")"))


def cache_line(cache: dict) -> str:
    from .datacache import shown, turned_off

    if not cache.get("directory"):
        why = "$FMNIST_DATA_CACHE=0" if turned_off() else "no home folder and no $XDG_CACHE_HOME"
        return f"Cache: none ({why}); the files are read and verified each time."
    where = shown(Path(cache["directory"]))
    if cache.get("used"):
        return f"Cache: {where} (used; `fmnist data --verify` checks the files again)."
    if cache.get("rebuilt"):
        return f"Cache: {where} (built from the verified files)."
    return f"Cache: {where} (could not be written; the files are read and verified each time)."


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
        text += f"±{s['std']:.{max(digits - 1, 2)}f}"   # s/epoch (2 digits): 0.27±0.01, not 0.27±0.0
    return text


class CompareDisplay(LiveDisplay):
    """Overall progress (runs done / total, time left) and a table that fills in as epochs finish.
    Plain mode: one line per finished epoch and per finished run."""

    transient = True

    def __init__(self, labels: list[str], repeats: int, console: Console, plain: bool, quiet: bool = False,
                 monitor: str = DEFAULT_MONITOR):
        super().__init__(console, plain, quiet)
        self.repeats = repeats
        self.labels = labels
        self.monitor = monitor
        # "best": the highest, over the variant's seeds, of the val_accuracy at each seed's best epoch
        # so far (by `monitor`), as the final table's "best val acc" column is.
        self.rows = {label: {"done": 0, "epoch": "", "val_accuracy": None, "best": None, "status": "waiting",
                             "at_best": {}} for label in labels}
        self.runs_total = 0
        self.runs_done = 0
        self.bar = BarColumn()
        runs, count, left = TextColumn("{task.description}"), MofNCompleteColumn(), TimeRemainingColumn()
        self.columns = ((runs, self.bar, count, TextColumn("epochs"), TimeElapsedColumn(), TextColumn("left"), left),
                        (runs, self.bar, left))
        self.progress = Progress(*self.columns[0], console=console)
        self.task = None

    def renderable(self):
        """Narrow: the latest val acc goes first, then the runs done, then the epoch."""
        width = self.console.width
        rows = [self.rows[label] for label in self.labels]
        cols = [Col("variant", [Text(label) for label in self.labels], "left", cut=1, wrap=True),
                Col("runs", [f"{r['done']}/{self.repeats}" for r in rows], drop=2),
                Col("epoch", [str(r["epoch"]) for r in rows], drop=1),
                Col("val acc", [fmt(r["val_accuracy"]) for r in rows], drop=3),
                Col("best", [fmt(r["best"]) for r in rows]),
                Col("status", [Text(r["status"]) for r in rows], "left")]
        fit_progress(self.progress, self.bar, *self.columns, width)
        title = f"best: val acc at the {monitor_phrase(self.monitor)}"
        return Group(fitted_table(cols, width, title=title), self.progress)

    def handle(self, event) -> None:
        if isinstance(event, Plan):
            self.runs_total = event.runs
            self.task = self.progress.add_task(f"runs 0/{self.runs_total}", total=max(event.epochs, 1))
            if event.reused:   # live display or not: it says why fewer runs train than were asked for
                self.console.print(reused_line(event), highlight=False, markup=False, soft_wrap=True)
            if self.plain and not (event.reused and not event.runs):   # "training 0" said it
                resumed = f", {event.resumed} going on from their checkpoints" if event.resumed else ""
                self.console.print(f"Training {event.runs} run(s) in {event.units} unit(s){resumed}..." if event.runs
                                   else "Nothing to train: every run of the comparison has finished.", highlight=False)
        elif isinstance(event, EpochEnd):
            row = self.rows.get(event.variant)
            if row is not None:
                row.update(epoch=f"{event.epoch}/{event.epochs}", val_accuracy=event.val_accuracy,
                           status="training")
                if event.is_best:
                    row["at_best"][event.repeat] = event.val_accuracy
                    row["best"] = max(row["at_best"].values())
            if self.task is not None:
                self.progress.advance(self.task, 1)
            if self.plain:
                self.console.print(f"[{event.variant} #{event.repeat}] " + plain_epoch_line(event, event.epochs),
                                   highlight=False, soft_wrap=True, markup=False)
        elif isinstance(event, RunReused):   # done before training starts; not among the runs trained
            row = self.rows[self.labels[event.variant]]
            row["done"] += 1
            if row["status"] == "waiting" and row["done"] >= self.repeats:
                row["status"] = Status.COMPLETED.value
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


def reused_line(plan: Plan) -> str:
    """`Reused 4 of 6 run(s): copies of earlier runs with identical settings; training 2.`"""
    return (f"Reused {plan.reused} of {plan.slots} run(s): copies of earlier runs with identical settings; "
            f"training {plan.runs}.")


def _best_caveats(summary) -> list[str]:
    """What the star does not say: a runner-up within the seeds' spread of the best, and a best epoch
    that is the last one (the variant may still be improving)."""
    by_label = {v.label: v for v in summary.variants}
    best = by_label[summary.best_variant]
    score = best.aggregate["best_val_accuracy"]
    others = [v for v in summary.variants if v is not best and v.aggregate["best_val_accuracy"]["mean"] is not None]
    out = []
    if others and score.get("std") is not None:
        runner = max(others, key=lambda v: v.aggregate["best_val_accuracy"]["mean"])
        theirs = runner.aggregate["best_val_accuracy"]
        spread = max(score["std"], theirs.get("std") or 0.0)
        if score["mean"] - theirs["mean"] < spread:
            out.append(f"{runner.label} ({pm(theirs)}) is within one standard deviation of it ({pm(score)}): "
                       f"more seeds (--repeats) would tell them apart.")
    epochs = (summary.base or {}).get("epochs")
    at = best.aggregate["best_epoch"]
    if epochs and at.get("mean") == epochs and not at.get("std"):
        out.append(f"{summary.best_variant}'s best epoch is its last ({epochs}): more epochs (--epochs) may "
                   "improve it.")
    return out


def best_per_line(best_per: dict) -> str:
    """`Best lr per optimizer: sgd: 0.1 (0.8512±0.003, highest tried), adam: 0.001 (0.8801±0.002).`"""
    setting, by = best_per["setting"], best_per["by"]
    parts, edges = [], []
    for g in best_per["groups"]:
        # names as they are (sgd relu), other settings as key=value (batch_size=32, hidden=300-100)
        name = " ".join(str(x) if k in ("optimizer", "activation") else f"{k}={x}" for k, x in g["values"].items())
        parts.append(f"{name}: {g[setting]:g} ({pm(g['best_val_accuracy'])}{', ' + g['edge'] + ' tried' if g['edge'] else ''})")
        if g["edge"]:
            edges.append(name)
    further = (f" At the {'end' if len(edges) == 1 else 'ends'} of the values tried, a better {setting} may lie "
               f"beyond ({', '.join(edges)}).") if edges else ""
    so_far = "" if best_per.get("complete", True) else " so far"
    return f"Best {setting}{so_far} per {' and '.join(by)}: {', '.join(parts)}.{further}"


def saved_model_notes(summary, test_shown: bool) -> list[str]:
    """What the saved models are, where a reader could take them for another epoch's: with early
    stopping the best epoch's (and where the runs stopped); without it, beside a test acc column,
    the last epoch's, while best val acc is at the best epoch."""
    base = summary.base or {}
    if base.get("early_stopping"):
        trained = sorted({len(r.history.get("loss") or []) for v in summary.variants for r in v.runs
                          if r.history and r.status == Status.COMPLETED})
        stopped = ""
        if trained and base.get("epochs"):
            span = f"{trained[0]}" if len(trained) == 1 else f"{trained[0]}-{trained[-1]}"
            stopped = f" (the runs trained {span} of {base['epochs']} epochs)"
        return [f"With early stopping each run saved its best epoch's weights{stopped}: best val acc is what "
                "`fmnist evaluate` gives them; the other figures are the last epoch's."]
    if test_shown:
        return ["test acc is the saved models', the last epoch's; best val acc is at each run's best epoch "
                "(--early-stopping saves the best epoch's)."]
    return []


def comparison_table(summary, console: Console) -> None:
    """One row per variant. Narrow: the curve goes first, then train loss and accuracy, s/epoch,
    val loss, seeds (shown where a variant lacks some) and the final val acc; best val acc, status
    and the whole label always stay (a long label wraps between its words)."""
    # The curves stop where a seed stopped early: past it the mean is over fewer seeds, and jumps
    per_epoch = [v.aggregate["per_epoch"]["val_accuracy"] for v in summary.variants]
    curves = [pe["mean"][:whole_epochs(pe)] for pe in per_epoch]
    finite = [x for c in curves for x in c if x is not None]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    n = summary.repeats
    monitor = summary.monitor
    over = f"mean ± std over {n} seeds; " if n > 1 else ""
    title = f"Comparison {summary.comparison_id} ({over}best epoch: {monitor_phrase(monitor)})"
    variants = summary.variants

    def best(agg):
        epoch = agg["best_epoch"]["mean"]
        return pm(agg["best_val_accuracy"]) + (f" @{epoch:.3g}" if epoch is not None else "")

    def final(metric):
        return [pm(v.aggregate["final"][metric]) for v in variants]

    marks = ["★ " if v.label == summary.best_variant else "  " for v in variants]
    cols = [Col("  variant", [Text(m + v.label) for m, v in zip(marks, variants)], "left", cut=1, wrap=True, hang=2)]
    if any(v.n < v.of for v in variants):   # otherwise the title says how many
        cols.append(Col("seeds", [f"{v.n} of {v.of}" for v in variants], drop=2))
    cols += [Col("loss", final("loss"), drop=6), Col("acc", final("accuracy"), drop=5),
             Col("val loss", final("val_loss"), drop=3), Col("val acc", final("val_accuracy"), drop=1),
             Col("best val acc", [best(v.aggregate) for v in variants]),
             # once `fmnist evaluate --comparison ID --split test` scored its saved models
             *([Col("test acc", [pm(v.aggregate["test_accuracy"]) for v in variants], drop=2)]
               if any(v.aggregate["test_accuracy"]["n"] for v in variants) else []),
             Col("s/epoch", [pm(v.aggregate["seconds_per_epoch"], 2) for v in variants], drop=4),
             Col("curve", [sparkline(c, lo, hi) for c in curves], "left", drop=7),
             Col("status", [colored(v.status) for v in variants], "left")]
    shown = [c.header for c, _ in fit(cols, console.width, GAP, cell_len(title))]
    console.print(fitted_table(cols, console.width, title=title,
                               row_styles=["bold" if v.label == summary.best_variant else None for v in variants]))
    for line in saved_model_notes(summary, "test acc" in shown):
        say(console, line, markup=False)
    if summary.best_variant:
        span = f" Curves span {lo:.4f}-{hi:.4f}." if "curve" in shown else ""   # not when left out
        by = "" if monitor == "val_accuracy" else f" at the best epoch, by {monitor_phrase(monitor)}"
        so_far = "" if summary.status == Status.COMPLETED else " so far"   # variants may stand at other epochs
        say(console, f"★ best{so_far}: {summary.best_variant} (highest val_accuracy{by}"
                     f"{', mean over seeds' if n > 1 else ''}).{span}", markup=False)
        for note in _best_caveats(summary):
            say(console, note, markup=False)
        if summary.best_per:
            say(console, best_per_line(summary.best_per), markup=False)
        command = next(v.train_command for v in variants if v.label == summary.best_variant)
        if command:
            say(console, f"To train it alone: {command}", markup=False)
    for v in variants:
        for r in v.runs:
            if r.status in (Status.DIVERGED, Status.FAILED, Status.BROKEN) and r.message:
                say(console, f"{v.label} (seed #{r.repeat}): {r.status}: {r.message}", markup=False)
                break
    copies = [r for v in variants for r in v.runs if r.reused_from]
    if copies:
        say(console, f"{len(copies)} run(s) are copies of earlier runs with identical settings (`reused_from` in "
                     "--json): s/epoch leaves out their times, measured when they were trained.", markup=False)
    training = [r for v in variants for r in v.runs if r.status == Status.RUNNING]
    if training:
        pids = sorted({str(r.pid) for r in training if r.pid})
        by = f" by process {', '.join(pids)}" if pids else ""
        say(console, f"Being trained now{by}: {len(training)} run(s). `fmnist compare --show "
                     f"{summary.comparison_id}` again shows the latest figures.", markup=False)
    elif summary.incomplete:
        gaps = ", ".join(v.gap() for v in summary.incomplete)
        say(console, f"Incomplete: {gaps}. `fmnist compare --resume {summary.comparison_id}` will fill the gaps.",
            markup=False)
