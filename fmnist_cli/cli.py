"""The command line: parse, call the core, render. No training logic lives here, and nothing here
imports TensorFlow or JAX at import time, so `fmnist --help` answers at once."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from . import __version__
from .coercion import defer_typer_adapters
from .cores import cpu_cores
from .config import ACTIVATIONS, OPTIMIZERS, RunConfig, parse_hidden, parse_optimizer
from .errors import FmnistError, RunNotFound, StorageError, UsageError, json_error

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Click's base error class, wherever this Typer takes Click from (0.29 carries its own copy).
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
defer_typer_adapters()   # no pydantic for the defaults: about 90 ms of every command's start-up


class _UsageFirst:
    """stdout while help is written: drops the blank line Rich's help starts with (the top padding
    of its usage line), so that `fmnist --help | head -1` prints the usage. Everything else passes."""

    def __init__(self, stream):
        self._stream, self._started = stream, False

    def write(self, text):
        if not self._started and text:
            self._started = True
            first, newline, rest = text.partition("\n")
            if newline and not _ANSI.sub("", first).strip():
                text = rest
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _on_debug(ctx, param, value: bool) -> None:
    """--debug is FMNIST_DEBUG=1, wherever it is given: tracebacks here, and everything else that reads
    the variable (TensorFlow's start-up notes left on stderr, worker processes) sees it too."""
    if value:
        from . import backend

        backend.set_debug()


DebugOption = Annotated[bool, typer.Option("--debug", callback=_on_debug, is_eager=True, expose_value=False,
                                           help="Show full tracebacks on errors (as FMNIST_DEBUG=1 does).")]


@functools.lru_cache(maxsize=None)
def _debug_option():
    """The --debug option every command and group takes, built by Typer from DebugOption."""
    probe = typer.Typer()

    @probe.command()
    def _probe(debug: DebugOption = False):
        pass

    return typer.main.get_command(probe).params[0]


def _plain_argument(param) -> None:
    """Typer 0.29 writes a required argument as {DIR} in usage lines, and a list argument's type as
    <list[str]>: here DIR, as Click and most CLIs write it, and <str>... (one or more)."""
    usage, shown = getattr(param, "_usage_display_name", None), getattr(param, "display_type_rich", None)
    if usage is None or shown is None:   # another Typer: its own way of writing them
        return

    def usage_name():   # {DIR} or {DIR}... -> DIR or DIR...
        name = usage()
        return name[1:].replace("}", "", 1) if name.startswith("{") else name

    def type_name(ctx):
        text = shown(ctx)
        return text.replace("<list[", "<", 1).replace("]>", ">...", 1) if text and text.startswith("<list[") else text

    param._usage_display_name, param.display_type_rich = usage_name, type_name


class _Common:
    """What every fmnist command and group has: --debug, taken like --help (beside the command's own
    parameters, so refuse_options never sees it), and help that starts with its usage line."""

    def get_params(self, ctx):
        help_option = self.get_help_option(ctx)
        own = [p for p in super().get_params(ctx) if p is not help_option]
        params = [*own, _debug_option(), *([help_option] if help_option is not None else [])]
        for param in params:   # Typer's help gives a flag the metavar <bool>, as if it took a value
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
            if isinstance(param, typer.core.TyperArgument):
                _plain_argument(param)
        return params

    def parse_args(self, ctx, args):
        _refuse_repeated(self, ctx, args)
        return super().parse_args(ctx, args)

    def make_context(self, info_name, args, parent=None, **extra):
        asked_json = "--json" in args   # before parsing, which consumes `args`
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _ClickException as err:
            _json_usage_error(err, asked_json)
            raise

    def format_help(self, ctx, formatter):
        saved = sys.stdout
        sys.stdout = _UsageFirst(saved)
        try:
            return super().format_help(ctx, formatter)
        finally:
            sys.stdout = saved


class Group(_Common, typer.core.TyperGroup):
    def resolve_command(self, ctx, args):
        asked_json = "--json" in args
        try:
            return super().resolve_command(ctx, args)
        except _ClickException as err:   # no such command
            _json_usage_error(err, asked_json)
            raise


def _refuse_repeated(command, ctx, args: list[str]) -> None:
    """An option that takes one value, given twice (`--show A --show B`): Click keeps the last and
    drops the other without a word. Refused instead. Options that collect (`--vary`) and flags pass."""
    takes_value = {}
    for param in command.get_params(ctx):
        if getattr(param, "param_type_name", "") == "option" and not param.is_flag and not param.multiple \
                and not getattr(param, "count", False):
            for opt in param.opts:
                takes_value[opt] = param
    seen: dict = {}
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            break
        name = token.split("=", 1)[0] if token.startswith("--") else token
        if name in takes_value:
            seen.setdefault(takes_value[name], []).append(name)
            i += 2 if name == token else 1   # its value may look like an option: skip it
            continue
        i += 1
    for param, given in seen.items():
        if len(given) > 1:
            ctx.fail(f"{param.opts[0]} is given {len(given)} times; give it once (only one value is used).")


def _json_usage_error(err, asked_json: bool) -> None:
    """A command line Click refuses (an unknown option, a bad value) with --json on it: stdout gets
    the JSON error document a failing command prints, besides Click's message on stderr."""
    if asked_json and not getattr(err, "_fmnist_json", False) and type(err).__name__ != "NoArgsIsHelpError":
        from . import report

        err._fmnist_json = True   # seen again by the group above: printed once
        with contextlib.suppress(OSError, ValueError):   # (Click's message goes to stderr next)
            report.print_json(json_error(err.format_message(), "UsageError", err.exit_code))


class Command(_Common, typer.core.TyperCommand):
    pass


app = typer.Typer(
    cls=Group,
    help="Train, evaluate and compare dense networks on Fashion-MNIST.\n\n"
         "Every command has --help with examples, and --json for machine-readable output.\n\n"
         "Examples:\n\n"
         "  fmnist train --activation relu --optimizer adam\n\n"
         "  fmnist evaluate latest --split test\n\n"
         "  fmnist compare sgd rmsprop adam --repeats 3 --plot curves.png\n\n"
         "  fmnist summary --hidden 300,100",
    no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def debugging() -> bool:
    """--debug given anywhere on the command line, or FMNIST_DEBUG=1: one switch (backend.debug)."""
    from . import backend

    return backend.debug()


def command(*args, group=None, **kwargs):
    """app.command (or a sub-group's), plus: a user error becomes one clean message and an exit code,
    never a traceback; --debug is accepted; help starts with the usage line and fits the terminal."""
    def decorate(func):
        kwargs.setdefault("help", reflowed(func.__doc__ or ""))
        return (group or app).command(*args, cls=Command, **kwargs)(guarded(func))
    return decorate


def command_group_callback(group, **kwargs):
    """group.callback, as `command` makes commands: guarded, its docstring reflowed as help."""
    def decorate(func):
        kwargs.setdefault("help", reflowed(func.__doc__ or ""))
        return group.callback(**kwargs)(guarded(func))
    return decorate


def reflowed(doc: str) -> str:
    """A docstring as help: Typer's rich mode keeps every line break, so a paragraph wrapped at 100
    columns in the source came out ragged in an 80-column terminal. Prose paragraphs become one line
    each (Rich wraps them to the terminal); indented ones, the examples, keep their lines."""
    import inspect

    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if p.startswith(" ") else " ".join(line.strip() for line in p.splitlines())
                       for p in paragraphs)


def guarded(func):
    """The error contract of every command: FmnistError -> its message and exit code; Ctrl-C -> 130;
    a closed pipe -> 0; anything else -> one line asking for a report (the traceback with --debug)."""
    @functools.wraps(func)
    def wrapper(*a, **kw):
        from . import report

        json_out = kw.get("json_out", False)
        report.printed_json = False   # (tests run many commands in one process)
        report.json_wanted = bool(json_out)
        try:
            result = func(*a, **kw)
            sys.stdout.flush()   # inside the try: a closed pipe is reported here, not at exit
            return result
        except FmnistError as err:
            if debugging():
                raise
            if json_out:
                report.print_json_error(str(err), type(err).__name__, err.exit_code)
            report.err.print(f"[red]Error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            if json_out:
                report.print_json_error("Interrupted.", "Interrupted", 130)
            report.err.print("Interrupted.")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # `fmnist runs | head`: the reader has all it wanted. Point stdout at /dev/null so the
            # interpreter's final flush does not complain, and succeed quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None
        except typer.Abort:   # Ctrl-C or end of input at a confirmation prompt: Click says "Aborted!"
            if json_out:
                report.print_json_error("Aborted at the confirmation prompt.", "Interrupted", 1)
            raise
        except (typer.Exit, SystemExit):
            raise
        except Exception as err:
            if debugging():
                raise
            if json_out:
                report.print_json_error(f"{type(err).__name__}: {err}", "UnexpectedError", 1)
            report.err.print(f"[red]Unexpected error:[/] {type(err).__name__}: {escape(str(err))}\n"
                             "Run again with --debug (or FMNIST_DEBUG=1) for the traceback, and "
                             "please report it.", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
    return wrapper


def _version(value: bool):
    if value:
        typer.echo(f"fmnist {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
):
    pass   # --debug is taken here too, as by every command (_Common.get_params)


# --- options shared by train, compare and summary ------------------------------------------------

Hidden = Annotated[str, typer.Option("--hidden", help="Hidden layer sizes: 100, or 300,100 (or 300-100) for two layers.", rich_help_panel="Model")]
Activation = Annotated[str, typer.Option("--activation", "-a", help=f"Hidden activation: {', '.join(ACTIVATIONS)}.", rich_help_panel="Model")]
Dropout = Annotated[float, typer.Option("--dropout", help="Dropout rate after each hidden layer (0 = none).", rich_help_panel="Model")]
Optimizer = Annotated[str, typer.Option("--optimizer", "-o", help=f"{', '.join(OPTIMIZERS)}; settings may follow, e.g. sgd:lr=0.1.", rich_help_panel="Optimizer")]
LearningRate = Annotated[Optional[float], typer.Option("--learning-rate", "--lr", help="Override the optimizer's learning rate (default: Keras's).", rich_help_panel="Optimizer")]
Momentum = Annotated[Optional[float], typer.Option("--momentum", help="SGD momentum (sgd, momentum, nesterov).", rich_help_panel="Optimizer")]
Nesterov = Annotated[Optional[bool], typer.Option("--nesterov/--no-nesterov", help="Nesterov momentum (SGD family).", show_default=False, rich_help_panel="Optimizer")]
Epochs = Annotated[int, typer.Option("--epochs", "-e", help="Training epochs.", rich_help_panel="Training")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Batch size.", rich_help_panel="Training")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for initial weights, dropout and batch order.", rich_help_panel="Training")]
ValSize = Annotated[float, typer.Option("--val-size", help="Fraction of the 60,000 training images held out for validation.", rich_help_panel="Training")]
SplitSeed = Annotated[int, typer.Option("--split-seed", help="random_state of the validation split.", rich_help_panel="Training")]
Limit = Annotated[Optional[int], typer.Option("--limit", help="Use a stratified subset of N training images (for quick runs).", rich_help_panel="Training")]
EarlyStopping = Annotated[Optional[int], typer.Option("--early-stopping", help="Stop after N epochs without a better --monitor value (Keras's EarlyStopping rule); keep the best epoch's weights.", rich_help_panel="Training")]
Monitor = Annotated[str, typer.Option("--monitor", help="What the best epoch is, and what --early-stopping watches: val_loss (lowest; Keras's default and the book's), val_accuracy (highest), loss or accuracy.", rich_help_panel="Training")]
Backend = Annotated[Optional[str], typer.Option("--backend", help="Keras backend: tensorflow (default) or jax. Also $FMNIST_BACKEND.", rich_help_panel="Backend")]
Engine = Annotated[str, typer.Option("--engine", help="auto (= fused: XLA-compiled epochs, on either backend) or fit (Keras's model.fit).", rich_help_panel="Backend")]
RunsDir = Annotated[Optional[Path], typer.Option("--runs-dir", help="Where runs are saved (default ./runs or $FMNIST_RUNS_DIR).", rich_help_panel="Files and output")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Folder with the four Fashion-MNIST files, .gz or uncompressed (default: $FMNIST_DATA_DIR, else Keras's cache, else the Debian package dataset-fashion-mnist's folder).", rich_help_panel="Files and output")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout; everything else goes to stderr.", rich_help_panel="Files and output")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.", rich_help_panel="Files and output")]
TensorBoard = Annotated[Optional[Path], typer.Option("--tensorboard", metavar="DIR", help="Also write TensorBoard logs to DIR, epoch by epoch (a comparison's runs with HParams); view with `tensorboard --logdir DIR`.", rich_help_panel="Files and output")]


def make_config(*, hidden="100", activation="relu", dropout=0.0, optimizer="rmsprop", learning_rate=None,
                momentum=None, nesterov=None, epochs=5, batch_size=32, seed=42, val_size=0.2, split_seed=42,
                limit=None, early_stopping=None, monitor="val_loss", backend=None, engine="auto",
                name=None) -> RunConfig:
    """The options as a validated RunConfig (keywords only: sixteen positional options invite mix-ups)."""
    from . import backend as backend_mod
    from .store import check_name

    return RunConfig(
        hidden=parse_hidden(hidden), activation=activation, dropout=dropout,
        optimizer=parse_optimizer(optimizer, learning_rate, momentum, nesterov), epochs=epochs,
        batch_size=batch_size, seed=seed, val_size=val_size, split_seed=split_seed, limit=limit,
        early_stopping=early_stopping, monitor=monitor, backend=backend_mod.requested(backend), engine=engine,
        name=check_name(name),
    ).validate()


def refuse_options(ctx: typer.Context, mode: str, why: str, allowed: tuple[str, ...]) -> None:
    """An option the user gave that `mode` does not use is an error, never silently ignored."""
    for param in ctx.command.params:
        if param.name in allowed or param.name == "ctx":
            continue
        source = ctx.get_parameter_source(param.name)
        if source is not None and source.name != "DEFAULT":   # given on the command line or by env
            flag = param.opts[0] if param.opts else param.name
            raise UsageError(f"{flag} does not apply to {mode}: {why}.")


def _consoles(json_out: bool):
    """Where results and live progress go: stdout normally; stderr when stdout carries JSON."""
    from . import report

    return (report.err if json_out else report.out)


def say(console, text: str) -> None:
    """One message line, as plain text (a path with [brackets] is no markup): never hard-wrapped, so a
    pipe or a log gets it whole, and not highlighted."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def soft_wrapped(console):
    """Lines printed by a report function that gives no soft_wrap of its own (train_result's
    divergence message, say) are not hard-wrapped either; only for functions that print text lines."""
    saved = console.soft_wrap
    console.soft_wrap = True
    try:
        yield console
    finally:
        console.soft_wrap = saved


# --- commands --------------------------------------------------------------------------------------

@command()
def train(
    ctx: typer.Context,
    hidden: Hidden = "100", activation: Activation = "relu", dropout: Dropout = 0.0,
    optimizer: Optimizer = "rmsprop", learning_rate: LearningRate = None, momentum: Momentum = None,
    nesterov: Nesterov = None, epochs: Epochs = 5, batch_size: BatchSize = 32, seed: Seed = 42,
    val_size: ValSize = 0.2, split_seed: SplitSeed = 42, limit: Limit = None,
    early_stopping: EarlyStopping = None, monitor: Monitor = "val_loss", backend: Backend = None,
    engine: Engine = "auto",
    name: Annotated[Optional[str], typer.Option("--name", help="A label for the run, part of its id.")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue an interrupted or crashed run (id, part of one, or 'latest') from its last checkpoint to its configured epochs.")] = None,
    runs_dir: RunsDir = None, data_dir: DataDir = None, json_out: Json = False, quiet: Quiet = False,
    tensorboard: TensorBoard = None,
):
    """Train one model and save it as a run.

    Defaults reproduce the book's relu model: 784-100-10, rmsprop, 5 epochs, batch 32, seed 42.

    Examples:

      fmnist train --activation sigmoid --optimizer sgd

      fmnist train --optimizer adam --epochs 20 --early-stopping 3

      # the book's experiment 7-3: dropout and early stopping
      fmnist train --optimizer adam --dropout 0.3 --epochs 20 --early-stopping 2

      fmnist train --hidden 300,100 --optimizer sgd:lr=0.05,momentum=0.9

      fmnist train --backend jax --json > run.json

      fmnist train --tensorboard tb       # then: tensorboard --logdir tb

      # after Ctrl-C or a crash: go on from the last checkpoint
      fmnist train --resume latest
    """
    from . import report, training
    from .records import RESUMABLE, Status
    from .store import RunStore

    store = RunStore.at(runs_dir)
    logdir = _tensorboard_dir(tensorboard)   # before --resume claims its run
    run_dir = None
    if resume is not None:
        refuse_options(ctx, "--resume", "a run resumes with the settings it was started with",
                       allowed=("resume", "runs_dir", "data_dir", "json_out", "quiet", "tensorboard"))
        run_dir = store.resolve_run(resume, latest=RESUMABLE)
        config = training.check_resumable(store, run_dir)
    else:
        config = make_config(hidden=hidden, activation=activation, dropout=dropout, optimizer=optimizer,
                             learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, epochs=epochs,
                             batch_size=batch_size, seed=seed, val_size=val_size, split_seed=split_seed,
                             limit=limit, early_stopping=early_stopping, monitor=monitor, backend=backend,
                             engine=engine, name=name)
    root = store.ensure_writable().root
    live = _tensorboard_live(store, logdir)
    console = _consoles(json_out)
    plain = not console.is_terminal
    stop = training.StopFlag()
    what = f"Resuming {run_dir.name}" if run_dir else "Training"
    header = f"{what} {config.short()} seed {config.seed} on {config.backend} ({config.resolved_engine} engine)..."
    if not quiet and not plain:
        # Before the live display starts: printed under it, the line would tear its first frame.
        say(report.err, header)
    with stop.installed(), report.TrainDisplay(config.epochs, console, plain, quiet,
                                                    monitor=config.monitor) as display:
        on_event = live.wrap(display.on_event) if live else display.on_event
        if not quiet and plain:
            # On stderr, so stdout's lines stay the epochs' and `2>&1` puts it at the top of a log;
            # at the first event, so that an error before training (no data, say) stands alone.
            on_event = _first_saying(on_event, header)
        result = training.train(config, root, data_dir, on_event, stop, resume=run_dir)
    if live:
        live.finish()
    if json_out:
        report.print_json(result)
        if result.status == Status.INTERRUPTED:   # the JSON says so too; a person reads stderr
            report.train_result(result, report.err, brief=True)
    else:
        with soft_wrapped(console):
            report.train_result(result, console, brief=quiet)   # --quiet still says where the run went
    tb_failed = _tensorboard_said(live, console, json_out or not result.kept)
    if result.status == Status.INTERRUPTED:   # 130 still: a failed log must not hide the interruption
        raise typer.Exit(130)
    if result.status == Status.DIVERGED or tb_failed:
        raise typer.Exit(1)


def _first_saying(on_event, line: str):
    """`on_event`, which says `line` on stderr before the first event."""
    from . import report

    said = False

    def relay(event):
        nonlocal said
        if not said:
            said = True
            say(report.err, line)
        on_event(event)
    return relay


@command()
def evaluate(
    run: Annotated[str, typer.Argument(help="Run id, any unique part of one, path to a run folder, or 'latest'.")] = "latest",
    split: Annotated[str, typer.Option("--split", help="val (the run's own validation split) or test.")] = "val",
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Also draw the confusion matrix as a heatmap to this PNG file.")] = None,
    comparison: Annotated[Optional[str], typer.Option("--comparison", "-c", help="Score every completed run of this comparison instead (an id, a unique part of one, or 'latest'), with each variant's mean and std.", show_default=False)] = None,
    runs_dir: RunsDir = None, data_dir: DataDir = None, backend: Backend = None, json_out: Json = False,
    ctx: typer.Context = None,
):
    """Score a saved run: loss, accuracy, per-class accuracy and the confusion matrix.

    The validation split is rebuilt from the run's saved config; the result is stored in the run
    (`fmnist runs` shows test accuracy, `fmnist report` the rest).

    Examples:

      fmnist evaluate

      fmnist evaluate 20261128-101500-adam-relu-3f2a --split test --json

      fmnist evaluate latest --split test --plot confusion.png

      fmnist evaluate --comparison latest --split test
    """
    from . import evaluation, report
    from .store import RunStore, absolute

    evaluation.check_split(split)   # before looking for runs: a typo is the first thing to report
    if comparison is not None:
        if "run" in _given(ctx) or plot is not None:
            raise UsageError("--comparison scores all of a comparison's runs: give no run and no --plot with it.")
        store = RunStore.at(runs_dir)
        cid = store.resolve_comparison(comparison)
        quiet_progress = json_out or not report.err.is_terminal

        def said(label, result):
            if not quiet_progress:
                say(report.err, f"{label}: {result.run_id}: accuracy {result.accuracy:.4f}", markup=False)

        outcome = evaluation.evaluate_comparison(store, cid, split, data_dir, backend, on_result=said)
        if json_out:
            report.print_json(outcome)
        else:
            report.comparison_evaluation(outcome, report.out)
        return
    if plot is not None:
        check_output(plot, "--plot")   # before the model loads
    store = RunStore.at(runs_dir)
    try:
        run_dir = store.resolve_run(run)
    except RunNotFound:   # `evaluate lr-sweep`: a comparison's runs are scored with --comparison
        cid = None
        if run is not None and run.strip() != "latest":
            with contextlib.suppress(RunNotFound):
                cid = store.resolve_comparison(run)
        if cid is None:
            raise
        raise RunNotFound(f"{run!r} is comparison {cid}, not a run; score its runs with "
                          f"`fmnist evaluate --comparison {run}`.") from None
    result = evaluation.evaluate(store, run_dir, split, data_dir, backend)
    problem = None
    if plot is not None:
        from . import figures

        title = f"Run {result.run_id}, {result.split} split ({result.n} images): accuracy {result.accuracy:.4f}"
        problem = write_output(lambda: figures.save_png(
            figures.confusion_figure(result.classes, result.confusion_matrix, title), plot), plot, "--plot")
    if json_out:   # the result first: a warning that fails to print must not cost it
        report.print_json(result)
    else:
        report.evaluation(result, report.out)
        if plot is not None and problem is None:
            say(report.out, f"Confusion matrix written to {absolute(plot)}")
    if not result.stored:
        report.err.print(f"[yellow]Warning:[/] this result was not stored: {escape(result.store_error or '')}",
                         highlight=False, soft_wrap=True)
    if problem:
        report.err.print(f"[red]Error:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@command("report")
def report_command(
    ref: Annotated[str, typer.Argument(help="A comparison or a run: an id, a unique part of one, a run folder, or 'latest'.")] = "latest",
    html_path: Annotated[Optional[Path], typer.Option("--html", help="The HTML file to write.", show_default=False)] = None,
    runs_dir: RunsDir = None, json_out: Json = False,
):
    """Write one self-contained HTML file about a comparison or a run, to open in any browser.

    A comparison's report holds its table (mean ± std, seeds per variant, the best variant starred),
    learning curves with ± std bands, each variant's runs, the evaluations (per-class accuracy and
    confusion-matrix heatmaps, where `fmnist evaluate` has scored the runs), the configuration,
    library versions and machine. A run's report: its curves, epochs, evaluations and configuration.
    Inline CSS and SVG figures; no scripts, nothing fetched from the network.

    REF is looked up among comparison ids (date-time-cmp-xxxx) and run ids together, as elsewhere: the
    whole id, a --name whole, a unique prefix or suffix, or any unique part; a part that matches both
    a comparison and a run is refused (give more of the id). A comparison's --name wins over its runs'
    ids, which say optimizer-activation. A path to a run folder is a run. 'latest' (the default) is
    the newest finished run, or the comparison it belongs to.

    Examples:

      fmnist report --html report.html     # the latest run or comparison

      fmnist report 20261128-191828-cmp-21dd --html comparison.html

      fmnist report my-run-name --html run.html
    """
    from . import backend, html_report, report
    from .store import RunStore, absolute, atomic_write_text

    if html_path is None:
        raise UsageError("Give the file to write: fmnist report REF --html FILE.html.")
    check_output(html_path, "--html")   # before the figures are drawn
    store = RunStore.at(runs_dir)
    kind, target = store.resolve_any(ref)
    backend.shelter_home()   # matplotlib writes its settings under the home folder
    if kind == "comparison":
        ident, text = target, html_report.comparison_page(store, target)
    else:
        ident, text = target.name, html_report.run_page(store, target)
    path = absolute(html_path)
    problem = write_output(lambda: atomic_write_text(path, text, durable=False), path, "--html")
    if problem:
        raise StorageError(problem)
    size = len(text.encode("utf-8"))
    if json_out:
        report.print_json({"kind": kind, "id": ident, "html": str(path), "bytes": size})
    else:
        say(report.out, f"Report of {kind} {ident} written to {path} ({size / 1024:.0f} KB).")


@command()
def summary(
    ctx: typer.Context,
    run: Annotated[Optional[str], typer.Argument(help="A run to describe instead of the options below.")] = None,
    hidden: Hidden = "100", activation: Activation = "relu", dropout: Dropout = 0.0,
    runs_dir: RunsDir = None, json_out: Json = False,
):
    """Layers and parameter counts of a model, as Keras's model.summary() counts them.

    Without RUN, the model the options describe; with one (an id, part of one, or 'latest'), the model
    that run trained.

    Examples:

      fmnist summary          # the book's 784-100-10 model: 79,510 parameters

      fmnist summary --hidden 300,100 --dropout 0.2

      fmnist summary latest
    """
    from . import models, report
    from .store import RunStore

    if run is not None:
        refuse_options(ctx, "`fmnist summary RUN`", "a saved run is described as it was trained",
                       allowed=("run", "runs_dir", "json_out"))
        store = RunStore.at(runs_dir)
        run_dir = store.resolve_run(run)
        config = store.read_config(run_dir)
        title = f"Run {run_dir.name}"
    else:
        refuse_options(ctx, "`fmnist summary` without a RUN", "it says where to find a run, so name one "
                       "(`fmnist summary latest`)", allowed=("hidden", "activation", "dropout", "json_out"))
        config = make_config(hidden=hidden, activation=activation, dropout=dropout)
        title = "Model " + "-".join(["784", *map(str, config.hidden), "10"])
    info = {"title": title, "config": config.to_dict(), **models.summary(config)}
    if json_out:
        report.print_json(info)
    else:
        report.model_summary(info, report.out)


runs_app = typer.Typer(cls=Group, rich_markup_mode="rich", context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(runs_app, name="runs")


@command_group_callback(runs_app, invoke_without_command=True)
def list_runs(
    ctx: typer.Context,
    comparison: Annotated[Optional[str], typer.Option("--comparison", "-c", help="Only runs of this comparison (an id, part of one, or 'latest').")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="Only runs of these statuses, comma-separated: running, completed, interrupted, diverged, failed, crashed, broken.", show_default=False)] = None,
    where: Annotated[Optional[list[str]], typer.Option("--where", "-w", metavar="KEY=A,B", help="Only runs whose setting KEY is one of the values: optimizer, lr, hidden, activation, dropout, epochs, batch_size, seed, limit, early_stopping, monitor, backend, engine, val_size, split_seed, name, variant, comparison (a comparison's id, part of one or name; none: runs of none). Repeatable: every one must hold.", show_default=False)] = None,
    sort: Annotated[str, typer.Option("--sort", help="Order: created (newest first), val_acc or test_acc (highest first), time (shortest first).")] = "created",
    limit: Annotated[Optional[int], typer.Option("--last", "-n", help="Show only the first N runs of the list.")] = None,
    copies: Annotated[bool, typer.Option("--copies/--no-copies", help="--no-copies leaves out runs that `compare --reuse` copied from a run also listed: each result once.")] = True,
    runs_dir: RunsDir = None, json_out: Json = False,
):
    """List saved runs, newest first. A damaged run is listed as broken, with the reason.

    The runs folder is ./runs, or --runs-dir, or $FMNIST_RUNS_DIR; --json prints every field of each
    run's record. A seed column appears when the runs listed differ in seed.

    Examples:

      fmnist runs

      fmnist runs --where optimizer=adam --where epochs=20 --sort val_acc -n 5

      fmnist runs --status completed --where lr=0.01,0.1 --json

      fmnist runs --comparison latest --json

      fmnist runs rm --broken
    """
    if ctx.invoked_subcommand:
        sub = ctx.invoked_subcommand
        refuse_options(ctx, f"`fmnist runs {sub}`",
                       f"its options go after {sub} (see `fmnist runs {sub} --help`)", allowed=())
        return
    from . import report, runfilter
    from .store import RunStore

    statuses, conditions = runfilter.parse_statuses(status), runfilter.parse_where(where)
    order = runfilter.parse_sort(sort)
    if limit is not None and limit < 1:
        raise UsageError("--last (-n) must be at least 1.")
    store = RunStore.at(runs_dir)
    if comparison:
        comparison = store.resolve_comparison(comparison)   # accepts `latest` and parts of ids
    conditions = runfilter.resolve_comparisons(conditions, store.resolve_comparison)
    every = store.list_runs(comparison)
    records = runfilter.select(every, statuses, conditions, order, copies=copies)[:limit]
    if json_out:
        report.print_json([r.to_json() for r in records])
    elif not records and every:
        where_ = f"comparison {comparison}'s {len(every)} runs" if comparison else f"the {len(every)} runs in {store.root}"
        hint = (" (a comparison's --name names the comparison, not its runs: `fmnist runs -c NAME` lists them)"
                if any(c.key == "name" for c in conditions) and not comparison else "")
        say(report.err, f"None of {where_} match{hint}; without --status, --where, they are all listed.")
    elif not records:
        say(report.err, f"No runs in {store.root} yet. Train one with `fmnist train`." if not comparison else
            f"Comparison {comparison} has no runs yet; finish it with `fmnist compare --resume {comparison}`.")
    else:
        report.runs_table(records, report.out, sort=order)


@command("rm", group=runs_app)
def remove_runs(
    run_ids: Annotated[Optional[list[str]], typer.Argument(metavar="RUN", help="Runs to remove: ids, unique parts of ids, or 'latest'.", show_default=False)] = None,
    broken: Annotated[bool, typer.Option("--broken", help="Also remove every broken run and comparison, and leftovers of interrupted saves.")] = False,
    comparison: Annotated[Optional[str], typer.Option("--comparison", "-c", help="Remove this comparison and all its runs.")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="Also remove every run of these statuses, comma-separated: interrupted, crashed, failed, diverged, completed, broken.", show_default=False)] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed, and remove nothing.")] = False,
    runs_dir: RunsDir = None, json_out: Json = False,
):
    """Remove runs (their whole folders) and keep comparison records in step.

    A run that belongs to a comparison leaves an empty slot, which `fmnist compare --resume` fills.

    Examples:

      fmnist runs rm 20261128-101500-adam-relu-3f2a

      fmnist runs rm --broken --yes

      fmnist runs rm --status crashed,interrupted --dry-run

      fmnist runs rm --comparison latest
    """
    from . import cleanup, report
    from .store import RunStore

    statuses = cleanup.parse_statuses(status)
    store = RunStore.at(runs_dir)
    plan = cleanup.plan(store, list(run_ids or []), broken=broken, comparison=comparison, statuses=statuses)
    if plan.empty:
        say(report.err, "Nothing to remove.")
        if json_out:
            report.print_json(plan.to_json())
        return
    if dry_run:
        report.removal_plan(plan, report.err)
        say(report.err, f"Would remove {plan.describe()}; nothing removed (--dry-run).")
        if json_out:
            report.print_json({**plan.to_json(), "dry_run": True})
        return
    if not yes and not sys.stdin.isatty():
        raise UsageError(f"Add --yes to remove {plan.describe()} without confirmation (there is no terminal "
                         "to ask on); --dry-run lists them.")
    report.removal_plan(plan, report.err)
    if not yes:
        if not typer.confirm("Remove them?", default=False, err=True):
            report.err.print("Nothing removed.", highlight=False)
            if json_out:
                report.print_json_error("Nothing removed: not confirmed.", "NotConfirmed", 1)
            raise typer.Exit(1)
    cleanup.apply(store, plan)
    if json_out:
        report.print_json(plan.to_json())
    else:
        say(report.err, f"Removed {plan.describe()}.")


@command()
def compare(
    ctx: typer.Context,
    optimizers: Annotated[Optional[list[str]], typer.Argument(metavar="OPTIMIZER", help="Optimizers to compare, e.g. sgd momentum adam 'sgd:lr=0.1'.", show_default=False)] = None,
    vary: Annotated[Optional[list[str]], typer.Option("--vary", metavar="NAME=A,B", help="Another setting to compare, as NAME=A,B: activation, hidden (e.g. hidden=100,300-100), dropout, lr, batch_size or optimizer. Repeatable; the full grid is trained.", rich_help_panel="Comparison")] = None,
    repeats: Annotated[int, typer.Option("--repeats", "-r", help="Seeds per variant (seed, seed+1, ...); figures become mean ± std.", rich_help_panel="Comparison")] = 1,
    hidden: Hidden = "100", activation: Activation = "relu", dropout: Dropout = 0.0,
    optimizer: Annotated[str, typer.Option("--optimizer", "-o", help="The optimizer of every variant when no optimizers are compared (named as arguments or varied), e.g. --optimizer adam --vary lr=0.001,0.01.", rich_help_panel="Optimizer")] = "rmsprop",
    learning_rate: LearningRate = None, momentum: Momentum = None,
    nesterov: Nesterov = None, epochs: Epochs = 5,
    batch_size: BatchSize = 32, seed: Seed = 42, val_size: ValSize = 0.2, split_seed: SplitSeed = 42,
    limit: Limit = None, early_stopping: EarlyStopping = None, monitor: Monitor = "val_loss",
    backend: Backend = None, engine: Engine = "auto",
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help="Train up to N units (groups of runs) at once, in separate processes. Default: $FMNIST_JOBS, else one per CPU core; units are fixed before dispatch, so the numbers never depend on N.", show_default=False, rich_help_panel="Execution")] = None,
    executor: Annotated[str, typer.Option("--executor", help="Where units train: local (this machine) or ray (a Ray cluster; pip install 'fmnist-cli\\[ray]').", rich_help_panel="Execution")] = "local",
    address: Annotated[Optional[str], typer.Option("--address", help="With --executor ray: the cluster's HOST:PORT (default $RAY_ADDRESS; neither: a local Ray instance).", rich_help_panel="Execution")] = None,
    cpus_per_unit: Annotated[float, typer.Option("--cpus-per-unit", help="With --executor ray: CPUs Ray reserves for each unit.", rich_help_panel="Execution")] = 1.0,
    gpus_per_unit: Annotated[float, typer.Option("--gpus-per-unit", help="With --executor ray: GPUs Ray reserves for each unit.", rich_help_panel="Execution")] = 0.0,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write learning curves to this PNG file.", rich_help_panel="Files and output")] = None,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Write one row per variant per epoch to this CSV file.", rich_help_panel="Files and output")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Finish comparison ID (or 'latest'): train only its missing runs.")] = None,
    reuse: Annotated[bool, typer.Option("--reuse", help="Copy finished runs of earlier comparisons with identical settings (and data, libraries and device) into this one instead of training them again: widen a sweep without training what it has.", rich_help_panel="Comparison")] = False,
    name: Annotated[Optional[str], typer.Option("--name", help="A label for the comparison, part of its id: --show, --resume and report find it by it.", rich_help_panel="Comparison")] = None,
    show: Annotated[Optional[str], typer.Option("--show", help="Show comparison ID (or 'latest') again, without training.")] = None,
    list_all: Annotated[bool, typer.Option("--list", help="List saved comparisons.")] = False,
    runs_dir: RunsDir = None, data_dir: DataDir = None, json_out: Json = False, quiet: Quiet = False,
    tensorboard: TensorBoard = None,
):
    """Train one model per variant under equal conditions and show them side by side.

    Every variant gets the same split, the same initial weights and the same batch order; with
    --repeats N each is trained with N seeds and shown as mean ± std.

    Examples:

      fmnist compare sgd momentum nesterov adagrad rmsprop adam

      fmnist compare sgd 'sgd:lr=0.1' adam --repeats 3 --plot curves.png

      fmnist compare --vary activation=sigmoid,relu --vary hidden=100,300-100

      fmnist compare adam rmsprop --backend jax --epochs 20 --early-stopping 3

      # widen a sweep: 0.01 and 0.1 are copied from the first, 0.3 is trained
      fmnist compare sgd adam --vary lr=0.01,0.1 --repeats 3
      fmnist compare sgd adam --vary lr=0.01,0.1,0.3 --repeats 3 --reuse

      # TensorBoard's HParams: a row per optimizer
      fmnist compare sgd rmsprop adam --repeats 3 --tensorboard tb

      fmnist compare sgd adam --repeats 5 --executor ray --address head:6379

      # a name in its id, to find it by
      fmnist compare adam rmsprop --vary lr=0.0003,0.001,0.003 --name lr-sweep
      fmnist compare --show lr-sweep

      fmnist compare --show latest
    """
    from . import compare as cmp
    from . import report
    from .records import Status
    from .store import RunStore, absolute, check_name

    # Each mode takes its own options; any other is refused, not ignored.
    if show is not None and resume is not None:
        raise UsageError("Use --show or --resume, not both.")
    if list_all:
        refuse_options(ctx, "--list", "it lists the saved comparisons and takes only --json and --runs-dir",
                       allowed=("list_all", "json_out", "runs_dir"))
    elif show is not None:
        refuse_options(ctx, "--show", "it shows a saved comparison again without training, and takes only "
                       "--plot, --csv, --json and --runs-dir", allowed=("show", "plot", "csv_path", "json_out", "runs_dir"))
    elif resume is not None:
        refuse_options(ctx, "--resume", "a comparison resumes with the settings it was started with; to widen "
                       "it, run the wider comparison with --reuse, which copies the runs it has instead of training "
                       "them again",
                       allowed=("resume", "reuse", "jobs", "plot", "csv_path", "json_out", "quiet", "runs_dir", "data_dir",
                                "tensorboard", "executor", "address", "cpus_per_unit", "gpus_per_unit"))
    store = RunStore.at(runs_dir)
    root = store.root
    console = _consoles(json_out)
    if list_all:
        items = store.list_comparisons()
        runs = store.list_runs(clean=False) if items else []   # read once for every comparison
        summaries = {c.id: cmp.summarize(store, c, runs) for c in items if not c.broken}
        if json_out:
            report.print_json([c.listing(summaries.get(c.id)) for c in items])
        elif not items:
            say(report.err, f"No comparisons in {root} yet. Start one with `fmnist compare sgd rmsprop adam`.")
        else:
            report.comparison_list(items, summaries, console)
        return
    # --show trains nothing: a $FMNIST_JOBS meant for training must not stop it
    if show is None and jobs is None and os.environ.get("FMNIST_JOBS", "").strip():
        try:
            jobs = int(os.environ["FMNIST_JOBS"])
        except ValueError:
            raise UsageError("$FMNIST_JOBS must be a whole number from 1 to 64.") from None
    if jobs is not None and (jobs < 1 or jobs > 64):
        raise UsageError("--jobs (or $FMNIST_JOBS) must be from 1 to 64.")
    if jobs is None:
        jobs = min(cpu_cores(), 64)   # the most --jobs accepts, on a machine with more cores too
    runner = _executor(ctx, executor, address, cpus_per_unit, gpus_per_unit, jobs)
    if repeats < 1 or repeats > 100:
        raise UsageError("--repeats must be from 1 to 100.")
    outputs = [(option, path) for option, path in (("--plot", plot), ("--csv", csv_path)) if path is not None]
    for option, path in outputs:
        check_output(path, option)   # before any training: a typo in a path must not cost the comparison
    logdir = _tensorboard_dir(tensorboard)
    if show is not None:
        record = store.load_comparison(show)
    elif resume is not None:
        record = store.load_comparison(resume)
    else:
        # With optimizers named as arguments, --learning-rate/--momentum/--nesterov apply to each of
        # them (momentum and nesterov to the SGD family only); otherwise to --optimizer.
        named = list(optimizers or [])
        axes = cmp.parse_vary(list(vary or []))
        per_variant = bool(named) or "optimizer" in axes
        _refuse_replaced(ctx, named, axes)
        base = make_config(hidden=hidden, activation=activation, dropout=dropout, optimizer=optimizer,
                           learning_rate=learning_rate, momentum=None if per_variant else momentum,
                           nesterov=None if per_variant else nesterov, epochs=epochs, batch_size=batch_size,
                           seed=seed, val_size=val_size, split_seed=split_seed, limit=limit,
                           early_stopping=early_stopping, monitor=monitor, backend=backend, engine=engine)
        if base.seed + repeats - 1 >= 2**32:
            raise UsageError(f"--seed {base.seed} with --repeats {repeats} runs past the largest seed, 4294967295; "
                             "use a smaller --seed.")
        variants = cmp.expand(base, named, axes,
                              overrides=dict(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov))
        name = check_name(name, "comparison")
    status, live = 0, None
    if show is None:
        # Everything that can fail fast does, before a comparison record exists.
        store.ensure_writable()
        from . import data as data_mod

        data_mod.load(data_dir)
        if resume is not None:
            cmp.check_resumable(store, record)   # busy: say so before any output
        if runner is not None:
            if not quiet:
                say(report.err, f"Connecting to {runner.where()}...")
            runner.connect()   # an unreachable cluster fails here, before a comparison record exists
        if resume is None:
            record = cmp.new_comparison(store, base, variants, repeats, sys.argv[1:], name)
        live = _tensorboard_live(store, logdir, record)
        labels = record.labels
        from . import training   # not before: it imports numpy, which --list and --show do not need
        stop = training.StopFlag()
        plain = not console.is_terminal
        if not quiet:
            say(report.err, f"Comparison {record.id}: {len(labels)} variant(s) x {record.repeats} seed(s).")
        if resume is None:   # stopped before its first run exists, a new comparison leaves nothing
            forget = functools.partial(_forget_if_empty, store, record.id)
            stop.on_abort.append(forget)
        try:
            with stop.installed(), report.CompareDisplay(labels, record.repeats, console, plain, quiet,
                                                          monitor=cmp.monitor_of(record)) as display, \
                    runner or contextlib.nullcontext():
                on_event = live.wrap(display.on_event) if live else display.on_event
                record = cmp.execute(store, record, data_dir, jobs, on_event, stop, executor=runner, reuse=reuse)
        except KeyboardInterrupt:
            if resume is None:
                forget()
            raise
        if live:
            live.finish(record)
        if stop():
            status = 130
    summary_data = cmp.summarize(store, record)
    usable = [v for v in summary_data.variants if v.n > 0 and v.status != Status.DIVERGED]
    failed = any(slot.status == Status.FAILED for v in summary_data.variants for slot in v.runs)
    if not status and show is None and (failed or not usable):
        status = 1   # a comparison with a failed run, or with no usable variant, is not a success
    # The runs are saved whatever happens here: a file that cannot be written costs that file only,
    # and the table is still printed.
    writers = {"--plot": lambda: _atomic_plot(summary_data, plot),
               "--csv": lambda: cmp.write_csv(summary_data, csv_path)}
    problems = {option: write_output(writers[option], path, option) for option, path in outputs}
    if json_out:
        report.print_json(summary_data)
    else:
        report.comparison_table(summary_data, console)
        for option, path in outputs:
            if problems[option] is None:
                say(console, f"{'Curves' if option == '--plot' else 'CSV'} written to {absolute(path)}")
        if status == 130:
            say(console, f"Interrupted. Finish it with: fmnist compare --resume {record.id}")
    for problem in filter(None, problems.values()):
        report.err.print(f"[red]Error:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    tb_failed = show is None and _tensorboard_said(live, console, json_out)
    if status or any(problems.values()) or tb_failed:
        raise typer.Exit(status or 1)


def _forget_if_empty(store, cid: str) -> None:
    """Remove a comparison record that no run belongs to (Ctrl-C while the backend loaded), and say
    so: its id was printed already, and `--resume` of it would find nothing."""
    with contextlib.suppress(FmnistError, OSError):
        if not store.list_runs(comparison=cid, clean=False):
            store.remove_comparison(cid)
            from . import report

            report.err.print(f"Comparison {cid} was not saved: no run had started.", highlight=False)


def _given(ctx: typer.Context) -> set[str]:
    """The options given on the command line or by environment, not left at their defaults."""
    return {p.name for p in ctx.command.params
            if (source := ctx.get_parameter_source(p.name)) is not None and source.name != "DEFAULT"}


def _executor(ctx: typer.Context, name: str, address, cpus_per_unit: float, gpus_per_unit: float, jobs: int):
    """None for the local executor (compare.execute's own); a RayExecutor for --executor ray, with
    --jobs, where given, as the most workers at once."""
    name = name.strip().lower()
    if name not in ("local", "ray"):
        raise UsageError(f"Unknown executor {name!r}: choose local or ray.")
    given = _given(ctx)
    if name == "local":
        for p in ("address", "cpus_per_unit", "gpus_per_unit"):
            if p in given:
                raise UsageError(f"--{p.replace('_', '-')} applies to --executor ray only.")
        return None
    from .ray_executor import RayExecutor

    return RayExecutor(address, cpus_per_unit, gpus_per_unit, max_workers=jobs if "jobs" in given else None)


def _tensorboard_dir(path: Path | None) -> Path | None:
    """--tensorboard's folder, made and tried before anything trains (TensorBoard installed too)."""
    if path is None:
        return None
    from . import tensorboard

    return tensorboard.check_logdir(path)


def _tensorboard_live(store, logdir: Path | None, record=None):
    """The live TensorBoard log of the runs being trained, or None without --tensorboard."""
    if logdir is None:
        return None
    from . import tensorboard

    return tensorboard.Live(store, logdir, record)


def _tensorboard_said(live, console, silent: bool) -> bool:
    """Where the TensorBoard log went (unless `silent`: --json, or nothing was kept), or (to stderr)
    why it stopped; True when it failed."""
    if live is None:
        return False
    if live.problem:
        from . import report

        report.err.print(f"[red]Error:[/] {escape(live.problem)}", highlight=False, soft_wrap=True)
        return True
    if not silent:
        say(console, f"TensorBoard logs written to {live.log.logdir} (view them: tensorboard --logdir {live.log.logdir})")
    return False


def _refuse_replaced(ctx: typer.Context, named: list[str], axes: dict) -> None:
    """Options that a compared setting replaces would be ignored: --activation beside
    --vary activation=..., --optimizer beside optimizers named as arguments, --momentum when no
    compared optimizer is of the SGD family."""
    given = _given(ctx)
    varied = {**axes, **({"optimizer": [parse_optimizer(o) for o in named]} if named else {})}
    for axis in varied:
        if axis in given:
            option = "--" + axis.replace("_", "-")
            source = "optimizers named as arguments" if axis == "optimizer" and named else \
                f"--vary {'lr' if axis == 'learning_rate' else axis}"
            raise UsageError(f"{option} does not apply with {source}: each variant sets its own {axis.replace('_', ' ')}.")
    if "optimizer" in varied and not any(spec.keras_class == "SGD" for spec in varied["optimizer"]):
        for name in ("momentum", "nesterov"):
            if name in given:
                raise UsageError(f"--{name} does not apply to the optimizers compared: only sgd, momentum and "
                                 "nesterov take it.")


def output_error(err: OSError, path: Path, option: str) -> str:
    """Why a file the user named (--plot, --csv) cannot be written, in one sentence naming it. The
    advice is another path for that file, never another runs folder (store.storage_error's)."""
    reasons = {errno.ENOSPC: "the disk is full; free some space, or give",
               errno.EACCES: "permission denied; give", errno.EPERM: "permission denied; give",
               errno.EROFS: "the file system is read-only; give",
               errno.ENOENT: "its folder does not exist or takes no new files; give",
               errno.EEXIST: "a file or folder is in the way; give", errno.ENOTDIR: "a file or folder is in the way; give",
               errno.EISDIR: "a folder is in the way; give"}
    why = reasons.get(err.errno) or f"{(err.strerror or str(err)).lower()}; give"
    return f"Cannot write {path}: {why} {option} another path."


def check_output(path: Path, option: str) -> None:
    """A --plot or --csv path that cannot be written is refused before anything runs (exit 2): no
    folder or special file where the file would go, the suffix, and a folder that exists and takes
    new files (tried, not guessed from permission bits, which root ignores)."""
    import tempfile

    from .store import absolute

    suffix = {"--plot": ".png", "--csv": ".csv", "--html": ".html"}[option]
    target = absolute(path)
    if target.is_dir():
        raise UsageError(f"{target} is a folder; give {option} a file name ending in {suffix}.")
    if target.exists() and not target.is_file():
        raise UsageError(f"{target} is not a regular file; give {option} another path.")
    if target.suffix.lower() != suffix:
        raise UsageError(f"{option} {target} should end in {suffix}.")
    if not target.parent.is_dir():
        raise UsageError(f"Cannot write {target}: the folder {target.parent} does not exist; create it or "
                         f"give {option} another path.")
    try:
        fd, probe = tempfile.mkstemp(dir=target.parent, prefix=".fmnist-write-test-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UsageError(output_error(err, target, option)) from None


def write_output(write, path: Path, option: str) -> str | None:
    """Write one output file; None when done, else the one-sentence reason naming the file."""
    from .store import absolute

    try:
        write()
        return None
    except OSError as err:
        return output_error(err, absolute(path), option)
    except StorageError as err:   # the store's writer words it for the runs folder: reword it
        cause = err.__context__
        return output_error(cause, absolute(path), option) if isinstance(cause, OSError) else str(err)
    except FmnistError as err:
        return str(err)
    except Exception as err:
        if debugging():
            raise
        return f"Cannot write {absolute(path)} ({type(err).__name__}: {err})."


def _atomic_plot(summary_data, path: Path) -> None:
    from . import figures

    figures.save_png(figures.comparison_figure(summary_data), path)


@command()
def data(
    data_dir: DataDir = None,
    download: Annotated[bool, typer.Option("--download", help="Fetch the files with Keras's downloader (needs internet).")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Verify the four files again in full (gzip, header, counts, checksums) and rebuild the cache.")] = False,
    val_size: ValSize = 0.2, split_seed: SplitSeed = 42, limit: Limit = None, json_out: Json = False,
):
    """Show where Fashion-MNIST was found, whether it verified, the cache, and the class counts of each split.

    The four files are verified in full once, when the cache of their decoded arrays is built; a
    changed or damaged file or cache is noticed, and the cache built again.

    Examples:

      fmnist data

      fmnist data --verify

      fmnist data --download
    """
    from . import data as data_mod
    from . import report

    if download:
        try:
            data_mod.locate(data_dir)
        except FmnistError:
            report.err.print("Downloading Fashion-MNIST with Keras's downloader...")
            data_mod.download(data_dir)
    check = make_config(val_size=val_size, split_seed=split_seed, limit=limit)
    info = data_mod.describe(data_dir, check.val_size, check.split_seed, check.limit, verify=verify)
    if json_out:
        report.print_json(info)
    else:
        report.data_info(info, report.out)


export_app = typer.Typer(cls=Group, rich_markup_mode="rich", no_args_is_help=True,
                         context_settings={"help_option_names": ["-h", "--help"]},
                         help="Write saved runs and comparisons in another tool's format.")
app.add_typer(export_app, name="export")


@command("tensorboard", group=export_app)
def export_tensorboard(
    logdir: Annotated[Path, typer.Argument(metavar="DIR", help="The TensorBoard log folder (made when missing).", show_default=False)],
    run_ids: Annotated[Optional[list[str]], typer.Argument(metavar="RUN", help="Runs: ids, unique parts of ids, paths, or 'latest'.", show_default=False)] = None,
    comparison: Annotated[Optional[str], typer.Option("--comparison", "-c", help="A comparison (id, part of one, or 'latest'): its runs, with HParams.")] = None,
    runs_dir: RunsDir = None, json_out: Json = False,
):
    """Write TensorBoard logs of saved runs or of a comparison, as --tensorboard writes them live.

    Per run and epoch: loss and accuracy (train and validation in one chart), seconds and the
    learning rate. A comparison adds HParams: one row per variant, averaged over its seeds, with
    best and final val accuracy and test accuracy (once `fmnist evaluate --split test` ran).
    Exporting again replaces a run's earlier logs in DIR.

    Examples:

      fmnist export tensorboard tb --comparison latest

      fmnist export tensorboard tb latest 20261128-083110

      tensorboard --logdir tb
    """
    from . import report, tensorboard
    from .store import RunStore

    if comparison is not None and run_ids:
        raise UsageError("Name runs or --comparison, not both.")
    if comparison is None and not run_ids:
        raise UsageError("Name the runs to export (or 'latest'), or a comparison with --comparison ID.")
    store = RunStore.at(runs_dir)
    result = tensorboard.export(store, logdir, list(run_ids or []), comparison)
    if json_out:
        report.print_json(result)
    else:
        report.tensorboard_export(result, report.out)
    if not result.runs:   # every run named was skipped, each with its reason above
        report.err.print(f"[red]Error:[/] nothing was written to {escape(result.logdir)}: no run named has a "
                         "finished epoch.", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    _reopen_closed_streams()
    was_null = _stdout_is_devnull()
    try:
        app(prog_name="fmnist")
    except SystemExit as exit_:
        # A closed pipe (`fmnist --help | head -1`): Click and Rich both answer it with exit 1, Rich
        # after pointing stdout at /dev/null. The reader got what it wanted: that is a success.
        closed = type(sys.stdout).__name__ == "PacifyFlushWrapper" or (_stdout_is_devnull() and not was_null)
        if exit_.code == 1 and closed:
            raise SystemExit(0) from None
        raise


def _reopen_closed_streams() -> None:
    """A closed stdin, stdout or stderr (`fmnist runs >&-`): Python then sets sys.stdout to None, and
    the first file opened would land on descriptor 1, where a stray print would corrupt it. Point
    each closed descriptor at /dev/null instead: the output is dropped, the work still happens."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            stream = open(fd, "r" if fd == 0 else "w", closefd=False, encoding="utf-8", errors="backslashreplace")
            setattr(sys, name, stream)
            setattr(sys, f"__{name}__", stream)


def _stdout_is_devnull() -> bool:
    try:
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(os.devnull))
    except (OSError, ValueError, AttributeError):
        return False


if __name__ == "__main__":
    main()
