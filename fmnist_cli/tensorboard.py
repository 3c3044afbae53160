"""TensorBoard logs of runs and comparisons, written from the run store with TensorBoard's own
record writer and protos: no TensorFlow import (0.16 s instead of 3 s), so JAX runs pay nothing for it.

    DIR/<run_id>/train/        epoch_loss, epoch_accuracy, epoch_seconds, epoch_learning_rate
    DIR/<run_id>/validation/   epoch_loss, epoch_accuracy
    DIR/<run_id>/hparams/      a comparison's runs only: the HParams session (its group is the
                               variant, so the dashboard averages its seeds; its hyperparameters are
                               the settings the comparison varies) and its metrics best_val_accuracy,
                               final_val_accuracy and test_accuracy (once `evaluate --split test` ran)

The layout of Keras's TensorBoard callback, so the train and validation curves of a run share one
chart. Steps are fmnist's 1-based epochs. Every value comes from the run's stored files (history.json,
run.json, config.json), so `fmnist export tensorboard` and the live `--tensorboard` option write the
same events. No experiment summary is written: TensorBoard then builds the HParams table from the
sessions themselves, so comparisons exported into one folder show side by side, each hyperparameter a
column, instead of the first comparison's columns hiding the others'.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import importlib.util
import itertools
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import RunConfig
from .errors import FmnistError, StorageError, UsageError
from .records import (Broken, ComparisonRecord, EpochEnd, EpochStart, RunDone, Status,
                      TensorBoardExport)
from .store import RunStore, absolute

TRAIN, VALIDATION, HPARAMS = "train", "validation", "hparams"
EVENT_PREFIX = "events.out.tfevents."
# Keras's own learning rates where the optimizer spec leaves it to Keras (tests hold them equal to
# the signatures of keras.optimizers): the curve needs a number, and Keras costs seconds to import.
KERAS_LEARNING_RATES = {"SGD": 0.01, "RMSprop": 0.001, "Adam": 0.001, "Adagrad": 0.001, "AdamW": 0.001,
                        "Nadam": 0.001}
INSTALL_HINT = "install it with `pip install 'fmnist-cli[tensorboard]'` (or `pip install tensorboard`)"
_file_numbers = itertools.count()


def require() -> None:
    """A one-sentence error (exit 2) when the optional `tensorboard` package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise UsageError(f"TensorBoard is not installed; {INSTALL_HINT}.")


def check_logdir(path: str | os.PathLike, option: str = "--tensorboard") -> Path:
    """The log folder, made and tried before any training: a typo must not cost the runs (exit 2)."""
    require()
    logdir = absolute(path)
    if logdir.exists() and not logdir.is_dir():
        raise UsageError(f"{logdir} is a file; give {option} a folder (it is made when missing).")
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        probe = logdir / f".fmnist-write-test-{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"Cannot write TensorBoard logs to {logdir}: {_why(err)}; give {option} "
                         "another folder.") from None
    return logdir


def learning_rate(config: RunConfig) -> float:
    """The learning rate the run trained with: its own, else Keras's default for its optimizer."""
    spec = config.optimizer
    return spec.learning_rate if spec.learning_rate is not None else KERAS_LEARNING_RATES[spec.keras_class]


# --- hyperparameters ------------------------------------------------------------------------------

def _flat_settings(config: RunConfig) -> dict:
    """Every setting a comparison can vary, as HParams values (text, numbers, booleans): the optimizer
    apart from its learning rate and momentum, so that those get numeric axes of their own."""
    spec = config.optimizer
    out = {"optimizer": spec.name, "learning_rate": learning_rate(config), "activation": config.activation,
           "hidden": "-".join(map(str, config.hidden)), "dropout": float(config.dropout),
           "batch_size": config.batch_size}
    if spec.keras_class == "SGD":
        kwargs = spec.keras_kwargs()
        out["momentum"] = float(kwargs.get("momentum", 0.0))
        out["nesterov"] = bool(kwargs.get("nesterov", False))
    return out


def variant_hparams(record: ComparisonRecord) -> dict[str, dict]:
    """{variant label: its hyperparameters}: the settings whose values differ between the variants
    (the seed never: the seeds of a variant are its repeats, grouped into one row). With a single
    variant nothing differs, and the settings it names are taken. A learning rate left to Keras is
    Keras's number, so that `sgd` against `adam` shows 0.01 against 0.001."""
    flat = {v.label: _flat_settings(v.run_config) for v in record.variants}
    keys = sorted({k for values in flat.values() for k in values})
    # A setting only some optimizers have (momentum) counts when it differs among those.
    varied = [k for k in keys if len({repr(values[k]) for values in flat.values() if k in values}) > 1]
    if not varied:
        named = set(record.variants[0].settings) if record.variants else set()
        varied = [k for k in keys if k in named or (k == "learning_rate" and "optimizer" in named)]
    return {label: {k: values[k] for k in varied if k in values} for label, values in flat.items()}


# --- writing --------------------------------------------------------------------------------------

def _why(err: OSError) -> str:
    reasons = {errno.ENOSPC: "the disk is full", errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.EROFS: "the file system is read-only", errno.ENOENT: "the folder is gone",
               errno.ENOTDIR: "a file is in the way of a folder", errno.EEXIST: "a file is in the way of a folder"}
    return reasons.get(err.errno) or (err.strerror or str(err)).lower()


class EventFile:
    """One TensorBoard event file, written synchronously with TensorBoard's RecordWriter: each flush
    leaves whole records that a running TensorBoard picks up, and nothing runs in a thread of its own."""

    def __init__(self, folder: Path):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event_pb2 = event_pb2
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{EVENT_PREFIX}{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_file_numbers)}"
        self.path = folder / name
        self._records = RecordWriter(open(self.path, "wb"))
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())

    def summary(self, summary, step: int, wall_time: float) -> None:
        self._write(self._event_pb2.Event(wall_time=wall_time, step=step, summary=summary))

    def scalar(self, tag: str, value: float, step: int, wall_time: float) -> None:
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb

        self.summary(scalar_pb(tag, float(value)), step, wall_time)

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._records.close()


def _group(config: RunConfig) -> str:
    """A comparison run's HParams session group (the dashboard's trial id): its variant within its
    comparison, so its seeds form one row, and a variant of the same name in another comparison
    exported here is not mixed in. The label first: the dashboard cuts long ids short."""
    return f"{config.variant} ({config.comparison})"


def _same(a: list[tuple], b: list[tuple]) -> bool:
    """Equal epochs, a NaN equal to a NaN (a history may hold one)."""
    return len(a) == len(b) and all(x == y or (x != x and y != y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def _session_end(status: Status, end: float):
    """The HParams session's end and status (the dashboard filters on it): what the v1
    `session_end_pb` writes, built here because that helper imports TensorFlow."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    info = plugin_data_pb2.SessionEndInfo(
        status=api_pb2.STATUS_SUCCESS if status == Status.COMPLETED else api_pb2.STATUS_FAILURE, end_time_secs=end)
    summary = summary_pb2.Summary()
    summary.value.add(tag=metadata.SESSION_END_INFO_TAG, tensor=metadata.NULL_TENSOR,
                      metadata=metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(session_end_info=info)))
    return summary


def _timestamp(text: str | None) -> float | None:
    try:
        return dt.datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


@dataclass
class _RunLog:
    """What one log folder holds of one run: its open files, the epochs written, the session state."""

    folder: Path
    files: dict[str, EventFile] = field(default_factory=dict)
    epochs: list[tuple] = field(default_factory=list)   # (loss, accuracy, val_loss, val_accuracy, seconds)
    session: bool = False                                # the HParams session start is written
    metrics: dict | None = None                          # the session metrics last written

    def file(self, sub: str) -> EventFile:
        if sub not in self.files:
            self.files[sub] = EventFile(self.folder / sub)
        return self.files[sub]

    def close(self) -> None:
        """Its files closed (a later write opens a new one beside them): a comparison of a thousand
        runs must not hold three thousand files open."""
        for f in self.files.values():
            f.close()
        self.files.clear()


class TensorBoardLog:
    """A TensorBoard log folder fed from a run store. `sync(run_id)` writes whatever of the run is new
    in the store since the last call; a run's events from an earlier export or session are replaced
    at its first sync, so exporting again never doubles a curve."""

    def __init__(self, store: RunStore, logdir: Path):
        self.store, self.logdir = store, absolute(logdir)
        self.hparams: dict[str, dict[str, dict]] = {}   # comparison id -> variant label -> hparams
        self._runs: dict[str, _RunLog] = {}
        self._configs: dict[str, RunConfig] = {}

    def add_comparison(self, record: ComparisonRecord) -> None:
        """Its runs become HParams sessions, grouped by variant."""
        self.hparams[record.id] = variant_hparams(record)

    def sync(self, run_dir: Path, final: bool = False) -> int:
        """Write the run's epochs not written yet (all of them again when its stored history no longer
        starts with what was written: a resumed run trains its last epochs again), and with `final`
        its HParams metrics. Returns the run's epochs in the log. Raises Broken for a damaged run,
        OSError when the log folder cannot be written."""
        run_id = run_dir.name
        history = self.store.read_history(run_dir) or {}
        config = self._config(run_dir)
        columns = [history.get(k, []) for k in ("loss", "accuracy", "val_loss", "val_accuracy")]
        seconds = history.get("seconds") or []
        rows = [(*row, seconds[i] if i < len(seconds) else None) for i, row in enumerate(zip(*columns))]
        log = self._runs.get(run_id)
        if log is None or not _same(rows[:len(log.epochs)], log.epochs):
            log = self._start(run_id)
        if len(rows) == len(log.epochs) and not final:
            return len(rows)
        record = self.store.read_record(run_dir)
        # Wall times from the run's own clock (its start plus each epoch's seconds), so an export
        # made later places the points where the live log did.
        wall = _timestamp(record.started) or _timestamp(record.created) or time.time()
        for epoch, row in enumerate(rows, start=1):
            wall += row[4] or 0.0
            if epoch > len(log.epochs):
                self._epoch(log, config, epoch, row, wall)
        log.epochs = rows
        hparams = self._session_hparams(config)
        if hparams is not None and rows:
            if not log.session:
                self._session_start(log, config, hparams, record)
            if final:
                self._session_metrics(log, record, len(rows), wall)
        if final:
            log.close()
        else:
            for f in log.files.values():
                f.flush()
        return len(rows)

    def _config(self, run_dir: Path) -> RunConfig:
        if run_dir.name not in self._configs:
            try:
                self._configs[run_dir.name] = self.store.read_config(run_dir)
            except FmnistError as err:
                raise Broken(str(err)) from None
        return self._configs[run_dir.name]

    def _start(self, run_id: str) -> _RunLog:
        """The run's folder emptied of earlier event files (only those: nothing else there is touched),
        and fresh files to come."""
        old = self._runs.pop(run_id, None)
        if old is not None:
            old.close()
        folder = self.logdir / run_id
        for sub in (TRAIN, VALIDATION, HPARAMS):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                for p in (folder / sub).iterdir():
                    if p.name.startswith(EVENT_PREFIX) and p.is_file():
                        p.unlink()
        log = self._runs[run_id] = _RunLog(folder)
        return log

    @staticmethod
    def _epoch(log: _RunLog, config: RunConfig, epoch: int, row: tuple, wall: float) -> None:
        loss, accuracy, val_loss, val_accuracy, seconds = row
        train, validation = log.file(TRAIN), log.file(VALIDATION)
        train.scalar("epoch_loss", loss, epoch, wall)
        train.scalar("epoch_accuracy", accuracy, epoch, wall)
        if seconds is not None:
            train.scalar("epoch_seconds", seconds, epoch, wall)
        train.scalar("epoch_learning_rate", learning_rate(config), epoch, wall)
        validation.scalar("epoch_loss", val_loss, epoch, wall)
        validation.scalar("epoch_accuracy", val_accuracy, epoch, wall)

    def group(self, run_dir: Path) -> str | None:
        """The run's HParams session group (its comparison and variant), None when it has no session."""
        config = self._config(run_dir)
        return _group(config) if self._session_hparams(config) is not None else None

    def _session_hparams(self, config: RunConfig) -> dict | None:
        by_label = self.hparams.get(config.comparison or "")
        return None if by_label is None or config.variant not in by_label else by_label[config.variant]

    @staticmethod
    def _session_start(log: _RunLog, config: RunConfig, hparams: dict, record) -> None:
        from tensorboard.plugins.hparams import summary_v2

        start = _timestamp(record.started) or _timestamp(record.created) or time.time()
        summary = summary_v2.hparams_pb(hparams, trial_id=_group(config),
                                        start_time_secs=start)
        log.file(HPARAMS).summary(summary, 0, start)
        log.session = True

    @staticmethod
    def _session_metrics(log: _RunLog, record, epochs: int, wall: float) -> None:
        test = record.evaluations.get("test")
        metrics = {"best_val_accuracy": record.best_val_accuracy,
                   "final_val_accuracy": (record.final or {}).get("val_accuracy"),
                   "test_accuracy": test.accuracy if test is not None else None}
        if record.status == Status.RUNNING or metrics == log.metrics:
            return
        for tag, value in metrics.items():
            if value is not None and math.isfinite(value):
                step = record.best_epoch if tag == "best_val_accuracy" and record.best_epoch else epochs
                log.file(HPARAMS).scalar(tag, value, step, wall)
        log.file(HPARAMS).summary(_session_end(record.status, wall), epochs, wall)
        log.metrics = metrics

    def close(self) -> None:
        for log in self._runs.values():
            log.close()

    def __enter__(self) -> "TensorBoardLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- live logging and export ----------------------------------------------------------------------

class Live:
    """`--tensorboard DIR` while training: the progress events say when a run has new epochs in the
    store (an epoch's history is saved before the next epoch starts, and when the run is done), and
    the log writes them from there. A log that cannot be written stops logging, never training:
    `problem` says why, and the command reports it once the runs are saved."""

    def __init__(self, store: RunStore, logdir: Path, record: ComparisonRecord | None = None):
        self.log = TensorBoardLog(store, logdir)
        self.labels = record.labels if record is not None else []
        if record is not None:
            self.log.add_comparison(record)
        self.seen: dict[tuple, str] = {}   # (variant label, repeat) -> run id, in order of first event
        self.problem: str | None = None

    def wrap(self, on_event):
        """`on_event` after the log: what a display shows of an epoch is in the log already."""
        def both(event):
            self(event)
            on_event(event)
        return both

    def __call__(self, event) -> None:
        if isinstance(event, (EpochStart, EpochEnd)) and event.run_id:
            self.seen.setdefault((event.variant, event.repeat), event.run_id)
            self._sync(event.run_id, final=False)
        elif isinstance(event, RunDone) and 0 <= event.variant < len(self.labels):
            run_id = self.seen.get((self.labels[event.variant], event.repeat))
            if run_id:
                self._sync(run_id, final=True)

    def _sync(self, run_id: str, final: bool) -> None:
        if self.problem:
            return
        try:
            self.log.sync(self.log.store.root / run_id, final)
        except Broken:
            pass   # a run damaged mid-training is the store's to report; its curve stops here
        except Exception as err:   # disk full, or worse: logging stops, training goes on
            from . import backend

            if backend.debug() and not isinstance(err, OSError):
                raise
            why = _why(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
            self.problem = (f"Cannot write TensorBoard logs to {self.log.logdir} ({why}); the runs are "
                            "saved, and `fmnist export tensorboard` writes their logs again.")

    def finish(self, record: ComparisonRecord | None = None) -> None:
        """The last epochs and the HParams metrics of every run seen, and of the comparison's other
        runs (those a resume adopted): the log then equals what `fmnist export tensorboard` writes."""
        run_ids = list(self.seen.values())
        if record is not None:
            run_ids += [r for v in record.variants for r in v.runs if r and r not in run_ids]
        for run_id in run_ids:
            if (self.log.store.root / run_id).is_dir():
                self._sync(run_id, final=True)
        self.log.close()


def export(store: RunStore, logdir: str | os.PathLike, runs: list[str] | None = None,
           comparison: str | None = None) -> TensorBoardExport:
    """Write the TensorBoard log of runs (ids, parts of ids, paths or `latest`) or of a comparison
    (with its HParams sessions). Runs without a usable history are skipped, each with the reason."""
    folder = check_logdir(logdir, "`fmnist export tensorboard`")
    if comparison is not None:
        record = store.load_comparison(comparison)
        slots = [(store.root / r if r else None, r or f"{v.label} #{i + 1}")
                 for v in record.variants for i, r in enumerate(v.runs)]
    else:
        record = None
        slots = [(p, p.name) for p in dict.fromkeys(store.resolve_run(ref) for ref in runs or [])]
    written, skipped = [], []
    with TensorBoardLog(store, folder) as log:
        if record is not None:
            log.add_comparison(record)
        for run_dir, name in slots:
            reason = None
            if run_dir is None:
                reason = "not trained yet (`fmnist compare --resume` trains it)"
            elif not run_dir.is_dir():
                reason = "its run folder is gone"
            else:
                try:
                    epochs = log.sync(run_dir, final=True)
                    reason = None if epochs else "it has no finished epoch"
                except Broken as err:
                    reason = f"it is broken ({err})"
                except OSError as err:
                    raise StorageError(f"Cannot write TensorBoard logs to {folder}: {_why(err)}.") from None
            if reason:
                skipped.append({"run_id": name, "reason": reason})
                continue
            written.append({"run_id": run_dir.name, "epochs": epochs, "group": log.group(run_dir)})
    return TensorBoardExport(logdir=str(folder), comparison=record.id if record else None, runs=written,
                             skipped=skipped)
