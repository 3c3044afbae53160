"""Training runs end to end: data -> run folders -> engine -> saved model, history and status.
Returns records; never prints."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from pathlib import Path

from . import data, engines
from .config import RunConfig
from .errors import FmnistError, StorageError
from .records import METRICS, RunResult, Status
from .store import RunStore, now


class StopFlag:
    """Set by SIGINT/SIGTERM: engines stop at the next step or epoch boundary and keep what finished.
    A second Ctrl-C gives up waiting and raises KeyboardInterrupt."""

    def __init__(self):
        self.event = threading.Event()
        self.signal = None

    def __call__(self) -> bool:
        return self.event.is_set()

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            if self.event.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.signal = signum
            self.event.set()

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def group_key(config: RunConfig) -> tuple:
    """Runs with equal keys can share one engine call (the fused engine steps them together)."""
    return (config.backend, config.resolved_engine, config.batch_size, config.val_size,
            config.split_seed, config.limit)


def train_group(configs: list[RunConfig], root: Path, data_dir=None, on_event=None,
                should_stop=None) -> list[RunResult]:
    """Train runs that share a group_key in one engine call; one result per config."""
    from . import backend

    on_event = on_event or (lambda event: None)
    should_stop = should_stop or (lambda: False)
    assert len({group_key(c) for c in configs}) == 1, "a group shares its data and batching"
    store = RunStore(root)
    first = configs[0]
    backend.configure(first.backend)
    dataset = data.load(data_dir)
    split = data.make_split(dataset, first.val_size, first.split_seed, first.limit)

    run_dirs = []
    try:
        for c in configs:
            run_dirs.append(store.create_run(c))
    except BaseException:   # all of the group's runs, or none: no half-made group is left behind
        for d in run_dirs:
            store.remove_run(d)
        raise
    versions = backend.describe()
    started = time.time()
    for d in run_dirs:
        store.update_run(d, started=now(), versions=versions, group_size=len(configs),
                         engine=first.resolved_engine, n_train=len(split.y_train),
                         n_val=len(split.y_val), data_dir=str(dataset.directory))

    def relay(event):
        config = configs[event.member]
        on_event(dataclasses.replace(event, run_id=run_dirs[event.member].name, variant=config.variant,
                                     repeat=config.repeat, epochs=config.epochs))

    def mark(dirs, status, message):
        for d in dirs:
            with contextlib.suppress(FmnistError, OSError):
                store.update_run(d, status=status, finished=now(), seconds=round(time.time() - started, 3),
                                 message=message)

    try:
        outcomes = engines.get(first.resolved_engine).train(configs, split, relay, should_stop)
    except (KeyboardInterrupt, SystemExit):
        mark(run_dirs, Status.INTERRUPTED, "stopped before its epochs could be saved (a second Ctrl-C)")
        raise
    except Exception as err:  # an engine failure is recorded in the runs before it is reported
        mark(run_dirs, Status.FAILED, str(err) if isinstance(err, FmnistError) else f"{type(err).__name__}: {err}"[:500])
        raise
    seconds = round(time.time() - started, 3)
    results = []
    try:
        for d, c, o in zip(run_dirs, configs, outcomes):
            try:
                results.append(_finish(store, d, c, o, seconds))
            except FmnistError as err:   # disk full while saving, say: this run failed, the others go on
                mark([d], Status.FAILED, str(err))
                results.append(RunResult(run_id=d.name, run_dir=str(d), model_path=None, config=c.to_dict(),
                                         history=o.history, status=Status.FAILED, message=str(err),
                                         seconds=seconds, best_epoch=o.best_epoch,
                                         epochs_run=len(o.history["loss"])))
    except (KeyboardInterrupt, SystemExit):
        mark(run_dirs[len(results):], Status.INTERRUPTED, "stopped while saving (a second Ctrl-C)")
        raise
    return results


def _finish(store: RunStore, run_dir: Path, config: RunConfig, outcome: engines.Outcome,
            seconds: float) -> RunResult:
    store.save_history(run_dir, outcome.history)
    model_path = store.save_model(run_dir, outcome.model) if outcome.model is not None else None
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
        message=outcome.message,
        model_epoch=(best if config.early_stopping else len(hist["loss"])) if model_path else None,
    )
    store.update_run(run_dir, **summary)
    return RunResult(run_id=run_dir.name, run_dir=str(run_dir),
                     model_path=str(model_path) if model_path else None,
                     config=config.to_dict(), history=hist, **summary)


def train(config: RunConfig, root: Path, data_dir=None, on_event=None, should_stop=None) -> RunResult:
    result = train_group([config], root, data_dir, on_event, should_stop)[0]
    if result.status == Status.FAILED:
        raise StorageError(result.message)
    return result
