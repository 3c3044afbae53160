"""Training runs end to end: data -> run folders -> engine -> saved model, history and status.
Returns records; never prints."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from . import data, engines
from .config import RunConfig
from .errors import BrokenRecord, Busy, FmnistError, StorageError, UsageError
from .records import METRICS, RESUMABLE, RunResult, Status
from .store import RunStore, now


class StopFlag:
    """Set by SIGINT/SIGTERM: engines stop at their next check (well under a second apart) and keep
    what finished. Before it is armed (no run exists yet: modules and data still loading) a signal
    ends the command at once. Once armed, a second Ctrl-C gives up waiting: the `on_abort` hooks
    mark the runs interrupted (each keeps its last checkpoint) and the process exits there and then.
    Not by raising KeyboardInterrupt: library code on the way (TensorFlow's, Keras's saving) may
    catch it and carry on."""

    def __init__(self):
        self.event = threading.Event()
        self.signal = None
        self.armed = False
        self.on_abort: list = []

    def __call__(self) -> bool:
        return self.event.is_set()

    def arm(self) -> None:
        self.armed = True

    def abort(self) -> None:
        backend = sys.modules.get("fmnist_cli.backend")
        if backend is not None:   # what a hook says must be seen (stderr may point at /dev/null)
            backend.restore_stderr()
        for hook in list(self.on_abort):
            with contextlib.suppress(Exception):
                hook()
        from .entry import exit_interrupted

        exit_interrupted()

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            from .backend import importing

            # A second Ctrl-C gives up; so does a first while TensorFlow or JAX load (no run is being
            # trained yet, and a KeyboardInterrupt inside their C++ modules can crash the interpreter)
            if signum == signal.SIGINT and (self.event.is_set() or importing()):
                self.abort()
            if not self.armed:
                # Recorded first: raised inside a garbage-collector callback (JAX has one) the
                # KeyboardInterrupt is swallowed, and the check before any run is made must see it.
                self.signal = signum
                self.event.set()
                raise KeyboardInterrupt
            self.signal = signum
            self.event.set()

        def unraisable(info, previous=sys.unraisablehook):
            # Swallowed in a garbage-collector callback, that KeyboardInterrupt would still print
            # "Exception ignored in ... Traceback" on the way out; the flag has it already.
            if not isinstance(info.exc_value, KeyboardInterrupt):
                previous(info)

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        old_hook, sys.unraisablehook = sys.unraisablehook, unraisable
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            sys.unraisablehook = old_hook


class Checkpointer:
    """After each finished epoch: the run's history (small: always) and, within a budget of about 5%
    of the training time so far, its model with the optimizer state. A `kill -9` then keeps
    everything up to the last checkpoint, and `fmnist train --resume` continues from it. With early
    stopping the model is checkpointed at best epochs only: that is the model the run delivers."""

    BUDGET = 0.05
    SAVE_BYTES_PER_SECOND = 15e6   # a .keras file is a zip archive: compressing dominates (measured)

    @classmethod
    def estimate(cls, config: RunConfig) -> float:
        """Seconds to save a model before the first save has been timed: weights and up to two
        optimizer slots per weight, in float32."""
        return config.param_count() * 4 * 3 / cls.SAVE_BYTES_PER_SECOND

    def __init__(self, store: RunStore, run_dirs: list[Path], configs: list[RunConfig]):
        self.store, self.run_dirs, self.configs = store, run_dirs, configs
        self.started = time.perf_counter()
        self.spent = 0.0             # seconds spent checkpointing so far, all runs
        self.spent_by: dict[int, float] = {}     # and by run
        self.model_cost: dict[int, float] = {}   # the last model save of each run, in seconds
        self.saved = 0

    def __call__(self, member: int, epoch: int, history: dict, is_best: bool, model_fn) -> None:
        t0 = time.perf_counter()
        run_dir = self.run_dirs[member]
        try:
            self.store.save_history(run_dir, history, durable=False)
            wanted = is_best or not self.configs[member].early_stopping
            cost = self.model_cost.get(member, self.estimate(self.configs[member]))
            affordable = self.spent + cost <= self.BUDGET * (t0 - self.started)
            if wanted and affordable:
                t1 = time.perf_counter()
                self.store.save_model(run_dir, model_fn(), epoch=epoch)
                self.store.update_run(run_dir, model_epoch=epoch, epochs_run=epoch)
                self.model_cost[member] = time.perf_counter() - t1
                self.saved += 1
        except FmnistError:
            pass   # a checkpoint that cannot be written must not stop training; the final save reports
        finally:
            cost = time.perf_counter() - t0
            self.spent += cost
            self.spent_by[member] = self.spent_by.get(member, 0.0) + cost


def arm(should_stop) -> None:
    """Tell a StopFlag that runs exist now, so a first Ctrl-C stops gracefully instead of at once."""
    if hasattr(should_stop, "arm"):
        should_stop.arm()


def group_key(config: RunConfig) -> tuple:
    """Runs with equal keys can share one engine call (the fused engine steps them together)."""
    return (config.backend, config.resolved_engine, config.batch_size, config.val_size,
            config.split_seed, config.limit)


def train_group(configs: list[RunConfig], root: Path, data_dir=None, on_event=None,
                should_stop=None, resume: list[Path] | None = None, dataset=None) -> list[RunResult]:
    """Train runs that share a group_key in one engine call; one result per config. `resume`: the
    run folders of interrupted or crashed runs to continue (their configs are `configs`). `dataset`:
    the arrays already loaded (a Ray worker gets them from the driver, with no copy of the files)."""
    from . import backend

    on_event = on_event or (lambda event: None)
    should_stop = should_stop or (lambda: False)
    assert len({group_key(c) for c in configs}) == 1, "a group shares its data and batching"
    store = RunStore(root)
    first = configs[0]
    backend.configure(first.backend)
    dataset = dataset if dataset is not None else data.load(data_dir)
    split = data.make_split(dataset, first.val_size, first.split_seed, first.limit)
    if should_stop():   # Ctrl-C while loading: no run exists yet, so there is nothing to keep
        raise KeyboardInterrupt
    starts = [_start(store, d) for d in resume] if resume else None

    if resume:
        run_dirs = list(resume)
    else:
        run_dirs = []
        try:
            for c in configs:
                run_dirs.append(store.create_run(c))
        except BaseException:   # all of the group's runs, or none: no half-made group is left behind
            for d in run_dirs:
                store.remove_run(d)
            raise
    arm(should_stop)
    versions = backend.describe()
    started = time.time()
    before = [_seconds_so_far(store, d, s) for d, s in zip(run_dirs, starts)] if resume else [0.0] * len(run_dirs)
    vmapped = _vmapped(configs)
    for i, (d, start) in enumerate(zip(run_dirs, starts or [None] * len(run_dirs))):
        fields = dict(versions=versions, group_size=len(configs), engine=first.resolved_engine,
                      n_train=len(split.y_train), n_val=len(split.y_val), data_dir=str(dataset.directory),
                      vmapped=vmapped[i])
        if resume:
            fields.update(status=Status.RUNNING, pid=os.getpid(), host=socket.gethostname(), message=None,
                          resumed_from=[*(store.read_record(d).resumed_from or ()), start.epoch])
        else:
            fields.update(started=now())
        store.update_run(d, **fields)

    def relay(event):
        config = configs[event.member]
        on_event(dataclasses.replace(event, run_id=run_dirs[event.member].name, variant=config.variant,
                                     repeat=config.repeat, epochs=config.epochs, group_size=len(configs)))

    def elapsed(i: int) -> float:
        return round(before[i] + time.time() - started, 3)

    finished: set[int] = set()   # runs whose outcome is saved: a late mark must not relabel them

    def mark(indices, status, message):
        for i in indices:
            if i in finished:
                continue
            with contextlib.suppress(FmnistError, OSError):
                store.update_run(run_dirs[i], status=status, finished=now(), seconds=elapsed(i), message=message)

    checkpoint = Checkpointer(store, run_dirs, configs)
    hooks = getattr(should_stop, "on_abort", [])
    hook = functools.partial(mark, range(len(run_dirs)), Status.INTERRUPTED,
                             "stopped by a second Ctrl-C; it keeps its last checkpoint "
                             "(`fmnist train --resume` continues it)")
    hooks.append(hook)
    try:
        outcomes = engines.get(first.resolved_engine).train(configs, split, relay, should_stop,
                                                            checkpoint=checkpoint, starts=starts)
    except (KeyboardInterrupt, SystemExit):
        mark(range(len(run_dirs)), Status.INTERRUPTED,
             "stopped by a second Ctrl-C; it keeps its last checkpoint (`fmnist train --resume` continues it)")
        raise
    except Exception as err:  # an engine failure is recorded in the runs before it is reported
        mark(range(len(run_dirs)), Status.FAILED,
             str(err) if isinstance(err, FmnistError) else f"{type(err).__name__}: {err}"[:500])
        raise
    results = []
    try:
        for i, (d, c, o) in enumerate(zip(run_dirs, configs, outcomes)):
            try:
                results.append(_finish(store, d, c, o, elapsed(i), checkpoint.spent_by.get(i, 0.0)))
                finished.add(i)
            except FmnistError as err:   # disk full while saving, say: this run failed, the others go on
                mark([i], Status.FAILED, str(err))
                results.append(RunResult(run_id=d.name, run_dir=str(d), model_path=None, config=c.to_dict(),
                                         history=o.history, status=Status.FAILED, message=str(err),
                                         seconds=elapsed(i), best_epoch=o.best_epoch,
                                         epochs_run=len(o.history["loss"])))
    except (KeyboardInterrupt, SystemExit):
        mark(range(len(results), len(run_dirs)), Status.INTERRUPTED,
             "stopped while saving (a second Ctrl-C); it keeps its last checkpoint")
        raise
    finally:
        with contextlib.suppress(ValueError):
            hooks.remove(hook)
    for i, result in enumerate(results):
        if result.status == Status.INTERRUPTED and not result.epochs_run:
            # Stopped before its first epoch finished: no model, no figures, nothing a resume could
            # go on from. Its folder would only be clutter (and a comparison's slot stays empty).
            with contextlib.suppress(FmnistError, OSError):
                store.remove_run(run_dirs[i])
                results[i] = dataclasses.replace(result, kept=False, message="stopped before its first epoch "
                                                 "finished: nothing was kept")
    return results


def _vmapped(configs: list[RunConfig]) -> list[int | None]:
    """Each run's vmapped family size (1: stepped alone); None off the fused engine on JAX, which
    alone vmaps."""
    first = configs[0]
    if first.backend != "jax" or first.resolved_engine != "fused":
        return [None] * len(configs)
    from .engines.fused import vmapped_sizes

    return vmapped_sizes(configs)


def _resume_command(config: RunConfig, run_dir: Path) -> str:
    """The command that goes on, with --runs-dir where the runs folder is not the one found by default."""
    import shlex

    ref = f"fmnist compare --resume {config.comparison}" if config.comparison else f"fmnist train --resume {run_dir.name}"
    root = run_dir.parent
    try:
        default = RunStore.at(None).root
    except FmnistError:
        default = None
    return ref if root == default else f"{ref} --runs-dir {shlex.quote(str(root))}"


def _seconds_so_far(store: RunStore, run_dir: Path, start) -> float:
    """Training time before this session: run.json's, or for a crashed run (which never wrote it)
    the epochs' own seconds up to the checkpoint."""
    seconds = store.read_record(run_dir).seconds
    if seconds is None and start is not None:
        seconds = sum(start.history.get("seconds", []))
    return seconds or 0.0


def checkpoint_epoch(store: RunStore, run_dir: Path, info=None) -> int | None:
    """The epoch a run's checkpoint holds, if it has one to go on from (its history reaching that
    far). Read from the model file itself (see RunStore.save_model), so a crash between saving it and
    updating run.json cannot pair the model with the wrong epoch."""
    info = info or store.load_run(run_dir)
    model_epoch = store.model_epoch(run_dir) or info.get("model_epoch")
    if not model_epoch or info.history is None or len(info.history["loss"]) < model_epoch:
        return None
    return model_epoch


def _start(store: RunStore, run_dir: Path) -> engines.Start:
    """Where an interrupted or crashed run continues: its checkpointed model, and its history up to
    the epoch that model holds (later epochs are trained again)."""
    info = store.load_run(run_dir)
    model_epoch = checkpoint_epoch(store, run_dir, info)
    if model_epoch is None:
        raise UsageError(f"Run {run_dir.name} has no checkpoint to resume from; train it again.")
    history = {k: v[:model_epoch] for k, v in info.history.items()}
    return engines.Start(epoch=model_epoch, history=history, model=store.load_model(run_dir))


def check_resumable(store: RunStore, run_dir: Path) -> RunConfig:
    """Claim a run for `train --resume` and return its config, or a one-sentence error. The check
    and the claim (status `running`, this process's pid) are one step under the run's lock, so two
    resumes of one run never both train it. A run killed after its last checkpoint resumes with
    nothing left to train, and is finished."""
    def check(info):
        if info.status == Status.BROKEN:
            raise BrokenRecord(f"Run {info.id} is broken ({info.reason}); it cannot be resumed.")
        if info.status == Status.RUNNING:
            raise Busy(f"Run {info.id} is being trained by another process (process {info.get('pid')}).")
        if info.status not in RESUMABLE:
            raise UsageError(f"Run {info.id} is {info.status}, so there is nothing to resume; "
                             "resume an interrupted or crashed run.")

    config = store.read_config(run_dir)
    store.claim(run_dir, check)
    return config


def _finish(store: RunStore, run_dir: Path, config: RunConfig, outcome: engines.Outcome,
            seconds: float, checkpoint_seconds: float = 0.0) -> RunResult:
    store.save_history(run_dir, outcome.history)
    model_epoch = (outcome.best_epoch if config.early_stopping else len(outcome.history["loss"]))
    model_path = store.save_model(run_dir, outcome.model, epoch=model_epoch) if outcome.model is not None else None
    hist = outcome.history
    best = outcome.best_epoch
    summary = dict(
        status=outcome.status,
        finished=now(),
        seconds=seconds,
        epochs_run=len(hist["loss"]),
        best_epoch=best,
        best_val_accuracy=hist["val_accuracy"][best - 1] if best else None,
        final={k: hist[k][-1] for k in METRICS} if hist["loss"] else None,
        stopped_early=outcome.stopped_early,
        message=outcome.message or (
            f"Interrupted: kept {len(hist['loss'])} of {config.epochs} epochs; `{_resume_command(config, run_dir)}` "
            "goes on from there." if outcome.status == Status.INTERRUPTED else None),
        model_epoch=(best if config.early_stopping else len(hist["loss"])) if model_path else None,
    )
    store.update_run(run_dir, checkpoint_seconds=round(checkpoint_seconds, 4), **summary)
    return RunResult(run_id=run_dir.name, run_dir=str(run_dir),
                     model_path=str(model_path) if model_path else None,
                     config=config.to_dict(), history=hist, **summary)


def train(config: RunConfig, root: Path, data_dir=None, on_event=None, should_stop=None,
          resume: Path | None = None) -> RunResult:
    result = train_group([config], root, data_dir, on_event, should_stop, [resume] if resume else None)[0]
    if result.status == Status.FAILED:
        raise StorageError(result.message)
    return result
