"""Typed records: every JSON file fmnist writes and every `--json` document it prints, defined once.

Each record writes itself (`to_json`) and reads itself back (`from_json`). Reading is tolerant:
unknown keys are ignored (a newer fmnist may add some), and a value of the wrong type, a missing
required key or an unknown name never raises; the record comes back with `broken` set to a
one-line reason, so one damaged file can never take a listing down with it.

Stdlib only: listings and `--help` must not wait for numpy, let alone TensorFlow.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

FORMAT = 1   # written into every stored record; bump it when a key changes meaning
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
# date-time-name-random: what the store makes; a comparison slot naming anything else is damaged
RUN_ID_RE = re.compile(r"^\d{8}-\d{6}-[A-Za-z0-9][A-Za-z0-9._-]*$")


def first_clause(message: str) -> str:
    """A message's first sentence without its stop, to embed in another sentence."""
    return re.split(r"(?<=[.!?])\s", message.strip(), maxsplit=1)[0].rstrip(".")


class Status(str, enum.Enum):
    """A run's, a variant's or a comparison's state. A str, so it compares and prints as its value."""

    RUNNING = "running"          # being trained by a live process
    COMPLETED = "completed"      # every epoch asked for, or stopped early by its own rule
    INTERRUPTED = "interrupted"  # stopped by Ctrl-C or SIGTERM; the finished epochs are kept
    DIVERGED = "diverged"        # the loss exploded; a result (the same seed diverges again)
    FAILED = "failed"            # an error ended it (disk full, a bad unit); the message says which
    CRASHED = "crashed"          # marked running, but its process on this host is gone
    BROKEN = "broken"            # a file of it is missing, damaged or hand-edited; `reason` says which
    MISSING = "missing"          # a comparison slot with no run yet
    INCOMPLETE = "incomplete"    # a variant or comparison whose figures cover fewer seeds than asked

    def __str__(self) -> str:
        return self.value


def parse_statuses(text: str | None, allowed) -> set[Status]:
    """`--status completed,diverged` -> {Status.COMPLETED, Status.DIVERGED}, each one of `allowed`."""
    from .errors import UsageError

    names = [part.strip().lower() for part in (text or "").split(",") if part.strip()]
    choices = ", ".join(s.value for s in allowed)
    if text is not None and not names:
        raise UsageError(f"--status takes one or more of {choices}, comma-separated.")
    for name in names:
        if name not in {s.value for s in allowed}:
            raise UsageError(f"Unknown status {name!r} for --status; choose from {choices}.")
    return {Status(name) for name in names}


# Results a resume keeps: a diverged seed would diverge again.
FINISHED = (Status.COMPLETED, Status.DIVERGED)
# Runs a resume continues from their checkpoints (`train --resume`, `compare --resume`).
RESUMABLE = (Status.INTERRUPTED, Status.CRASHED, Status.FAILED)
# What run.json may say: `crashed` and `broken` are worked out on reading, never stored.
STORED = (Status.RUNNING, Status.COMPLETED, Status.INTERRUPTED, Status.DIVERGED, Status.FAILED)
# One colour per status, for every table and the reports.
COLORS = {Status.COMPLETED: "green", Status.INTERRUPTED: "yellow", Status.DIVERGED: "red",
          Status.FAILED: "red", Status.CRASHED: "red", Status.BROKEN: "red", Status.RUNNING: "cyan",
          Status.INCOMPLETE: "yellow", Status.MISSING: "yellow"}


class Broken(ValueError):
    """Raised inside the readers only; `from_json` turns it into a record's `broken` reason."""


def describe(value) -> str:
    """A short rendering of a bad value for a reason: `12345`, `'x'`, `a list`, `null` (JSON's names:
    the reader of the reason wrote JSON, not Python)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (list, dict)):
        return f"a {'list' if isinstance(value, list) else 'JSON object'}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- the generic reader ---------------------------------------------------------------------------

def _convert(value, hint, where: str, choices: tuple | None = None):
    """`value` read as type `hint` (the dataclass annotation), or Broken saying what is wrong.
    `choices`: the enum members the field may hold (a field's `choices` metadata), all if None."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where, choices)
    if hint is Any:
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = tuple(choices or hint)
        try:
            member = hint(value)
        except (ValueError, TypeError):
            member = None
        if member not in allowed:   # the reason lists only what may stand here
            raise Broken(f"{where} is {describe(value)}, not one of: {', '.join(m.value for m in allowed)}")
        return member
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        rec = hint.from_json(value)
        if rec.broken:
            raise Broken(f"{where}: {rec.broken}")
        return rec
    if hint is bool:
        if not isinstance(value, bool):
            raise Broken(f"{where} should be true or false, not {describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Broken(f"{where} should be a whole number, not {describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Broken(f"{where} should be a number, not {describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise Broken(f"{where} should be text, not {describe(value)}")
        return value
    if origin is list or hint is list:
        if not isinstance(value, list):
            raise Broken(f"{where} should be a list, not {describe(value)}")
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise Broken(f"{where} should be a JSON object, not {describe(value)}")
        if not args:
            return value
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"no reader for {hint!r}")   # a programming error, caught by the tests


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


class Record:
    """Mixin for the stored and printed records: `to_json`, tolerant `from_json`, a `broken` reason."""

    REQUIRED: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            if f.name != "broken":   # why a record read back is damaged: not part of its format
                out[f.name] = _plain(getattr(self, f.name))
        return out

    @classmethod
    def from_json(cls, data, **fallback):
        """Never raises: a bad record comes back with `broken` set; `fallback` fills keys (the id
        from a folder name, say) so that a broken record can still be listed and removed."""
        if not isinstance(data, dict):
            return cls(**fallback, broken=f"not a JSON object ({describe(data)})")
        hints = _hints(cls)
        kwargs, problems, missing = dict(fallback), [], []
        for f in dataclasses.fields(cls):
            if f.name == "broken" or f.name not in data:
                if f.name in cls.REQUIRED and f.name not in data:
                    missing.append(f"{f.name} is missing")
                continue
            try:
                kwargs[f.name] = _convert(data[f.name], hints[f.name], f.name, f.metadata.get("choices"))
            except Broken as err:
                problems.append(str(err))
        # A wrong value first: it is what a hand edit did, and the reason shows one problem only
        # (`{"status": 42}` is about the status, not the id that the folder's name stands in for).
        problems += missing
        record = cls(**kwargs)
        if not problems:
            try:
                record.check()
            except Broken as err:
                problems.append(str(err))
        if problems:
            record.broken = problems[0]
        return record

    def check(self) -> None:
        """Checks across fields; raise Broken."""


def _plain(value):
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --- history --------------------------------------------------------------------------------------

def check_history(data) -> dict:
    """history.json: per-epoch lists of the four metrics (and `seconds`), all of one length.
    Returns it with floats; raises Broken."""
    if not isinstance(data, dict):
        raise Broken(f"history is {describe(data)}, not a JSON object")
    out = {}
    for key in (*METRICS, "seconds"):
        values = data.get(key, [] if key == "seconds" else None)
        if not isinstance(values, list):
            raise Broken(f"history '{key}' is missing or not a list")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise Broken(f"history '{key}' holds {describe(v)}, not a number")
        out[key] = [float(v) for v in values]
    lengths = {len(out[k]) for k in METRICS}
    if len(lengths) != 1:
        raise Broken("history lists have different lengths")
    if out["seconds"] and len(out["seconds"]) != len(out["loss"]):
        raise Broken("history 'seconds' has a different length")
    return out


# --- runs -----------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class Evaluation(Record):
    """One stored evaluation of a run on a split."""

    loss: float | None = None
    accuracy: float | None = None
    evaluated: str | None = None   # ISO time
    n: int | None = None           # images scored
    # Stored since `fmnist report` draws them; evaluations stored before read as None.
    per_class: list[dict] | None = None                 # {"class", "accuracy", "n"} per class
    confusion_matrix: list[list[int]] | None = None     # rows: true class, columns: predicted class
    classes: list[str] | None = None
    broken: str | None = None

    def check(self) -> None:
        matrix = self.confusion_matrix
        if matrix is not None and any(len(row) != len(matrix) for row in matrix):
            raise Broken("confusion_matrix is not square")
        if matrix is not None and self.classes is not None and len(self.classes) != len(matrix):
            raise Broken(f"confusion_matrix has {len(matrix)} rows for {len(self.classes)} classes")
        for i, row in enumerate(self.per_class or []):
            ok = (isinstance(row.get("class"), str) and isinstance(row.get("n"), int)
                  and isinstance(row.get("accuracy"), (int, float)) and not isinstance(row.get("accuracy"), bool))
            if not ok:
                raise Broken(f"per_class[{i}] should hold a class name, its accuracy and its image count")
        if self.per_class is not None and self.classes is not None and len(self.per_class) != len(self.classes):
            raise Broken(f"per_class has {len(self.per_class)} rows for {len(self.classes)} classes")


@dataclass(kw_only=True)
class RunRecord(Record):
    """run.json: status, timings, versions, device, best epoch, evaluations."""

    REQUIRED: ClassVar = ("id", "status")

    id: str = ""
    status: Status = field(default=Status.RUNNING, metadata={"choices": STORED})
    created: str | None = None          # ISO time the folder was made
    pid: int | None = None              # the training process, to tell `running` from `crashed`
    host: str | None = None
    comparison: str | None = None       # id of the comparison it belongs to
    started: str | None = None
    versions: dict[str, Any] | None = None
    group_size: int | None = None       # runs trained in one program with it (time is shared)
    engine: str | None = None
    n_train: int | None = None
    n_val: int | None = None
    data_dir: str | None = None
    finished: str | None = None
    seconds: float | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None       # 1-based, by the config's monitor (old runs: val_accuracy)
    best_val_accuracy: float | None = None   # val_accuracy at best_epoch (not its highest)
    final: dict[str, float] | None = None
    stopped_early: bool | None = None
    message: str | None = None          # why it failed, diverged or was interrupted
    model_epoch: int | None = None      # the epoch whose weights model.keras holds
    checkpoint_seconds: float | None = None   # spent on per-epoch checkpoints (this session)
    resumed_from: list[int] | None = None   # the checkpoint epoch of each resume: the next one compiled
    vmapped: int | None = None          # runs in its vmapped family, 1: stepped alone (JAX fused); None: not recorded
    reused_from: str | None = None      # the run that trained it, when `compare --reuse` copied it
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    format: int = FORMAT
    broken: str | None = None


@dataclass(kw_only=True)
class RunInfo(Record):
    """Everything known about one run, as listings show it: `fmnist runs --json` prints these
    (without the history). Built by the store from the run's files; never raises."""


    id: str
    run_dir: str
    status: Status                      # the effective one: `crashed` and `broken` are worked out
    record: RunRecord | None = None
    config: Any = None                  # a RunConfig, or None when config.json is unusable
    history: dict | None = None
    model_path: str | None = None
    reason: str | None = None           # why the run is broken

    @property
    def created(self) -> str:
        """For sorting: run.json's time, else the one in the id, so a broken run sorts in its place."""
        if self.record and self.record.created:
            return self.record.created
        m = re.match(r"^(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})", self.id)
        if not m:
            return ""
        import datetime

        try:   # a made-up id (20261129-999999-...) has no time to show
            return datetime.datetime(*map(int, m.groups())).isoformat()
        except ValueError:
            return ""

    @property
    def test_accuracy(self) -> float | None:
        """Its saved model's accuracy on the test split, once `fmnist evaluate --split test` scored it."""
        test = (self.record.evaluations if self.record else {}).get("test")
        return test.accuracy if test is not None else None

    @property
    def saved_val_accuracy(self) -> float | None:
        """The val accuracy of the epoch model.keras holds, what `evaluate --split val` gives: the best
        epoch's with early stopping, else the last one's (a run being trained: its checkpoint's)."""
        r = self.record
        if r is None:
            return None
        epoch, final = r.model_epoch, (r.final or {}).get("val_accuracy")
        if epoch is not None and epoch == r.best_epoch:
            return r.best_val_accuracy
        values = (self.history or {}).get("val_accuracy") or []
        if epoch is not None and 0 < epoch <= len(values):
            return values[epoch - 1]
        if epoch is not None and epoch == r.epochs_run and final is not None:
            return final
        return r.best_val_accuracy   # runs saved before model_epoch was recorded

    def get(self, key, default=None):
        """A run.json field (best_val_accuracy, seconds, ...) or `default`."""
        value = getattr(self.record, key, None) if self.record else None
        return default if value is None else value

    def to_json(self) -> dict:
        """The history is left out: listings stay small (`compare --show --json` carries histories)."""
        record = self.record or RunRecord(id=self.id)
        fields = {k: v for k, v in record.to_json().items() if k not in ("id", "status", "format")}
        return {"id": self.id, "run_dir": self.run_dir, "status": self.status.value, **fields,
                "saved_val_accuracy": self.saved_val_accuracy,   # the table's val acc
                "config": self.config.to_dict() if self.config is not None else None,
                "model_path": self.model_path, "reason": self.reason}


@dataclass(kw_only=True)
class RunResult(Record):
    """What `fmnist train --json` prints: the run's summary after training."""


    run_id: str
    run_dir: str
    model_path: str | None
    config: dict
    history: dict
    status: Status
    finished: str | None = None
    seconds: float | None = None
    epochs_run: int = 0
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    final: dict[str, float] | None = None
    stopped_early: bool = False
    message: str | None = None
    model_epoch: int | None = None
    kept: bool = True   # false: interrupted before its first epoch finished, so its folder was removed


@dataclass(kw_only=True)
class EvaluationResult(Record):
    """What `fmnist evaluate --json` prints. `stored` is false when run.json could not take it (a
    read-only or full disk); `store_error` then says why, and the numbers are still all here."""


    run_id: str
    run_dir: str
    split: str                           # val or test
    n: int                               # images scored
    loss: float
    accuracy: float
    per_class: list[dict]                # {"class", "accuracy", "n"} for each of the ten classes
    confusion_matrix: list[list[int]]    # rows: true class, columns: predicted class
    classes: list[str]
    evaluated: str
    stored: bool = False
    store_error: str | None = None


@dataclass(kw_only=True)
class TensorBoardExport(Record):
    """What `fmnist export tensorboard --json` prints: where the log is and which runs it holds."""

    logdir: str
    comparison: str | None               # the comparison whose runs are HParams sessions, if any
    runs: list[dict]                     # {"run_id", "epochs", "group"}: group is the HParams session
                                         # group, "variant (comparison)"; None outside a comparison
    skipped: list[dict]                  # {"run_id", "reason"}: slots and runs with nothing to write


# --- comparisons ----------------------------------------------------------------------------------

@dataclass(kw_only=True)
class VariantSpec(Record):
    """One variant of a comparison record: what it varies, its full config and its run per seed."""

    REQUIRED: ClassVar = ("label", "config", "runs")

    label: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)   # a RunConfig's JSON; checked on reading
    runs: list[str | None] = field(default_factory=list)   # run id of each repeat, None until trained
    broken: str | None = None

    def check(self) -> None:
        from .config import config_problem

        problem = config_problem(self.config)
        if problem:
            raise Broken(f"variant {self.label!r} has an unusable config ({first_clause(problem)})")
        for run_id in self.runs:
            if run_id is not None and not RUN_ID_RE.match(run_id):
                raise Broken(f"variant {self.label!r} names a run {describe(run_id)} that is not a run id")

    @property
    def run_config(self):
        from .config import RunConfig

        return RunConfig.from_dict(self.config)


@dataclass(kw_only=True)
class ComparisonRecord(Record):
    """runs/comparisons/<id>.json: the spec (base config, variants, repeats) and each slot's run."""

    REQUIRED: ClassVar = ("id", "repeats", "variants")

    id: str = ""
    created: str | None = None
    argv: list[str] = field(default_factory=list)
    base: dict[str, Any] = field(default_factory=dict)
    repeats: int = 0
    variants: list[VariantSpec] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)   # "variant:repeat" -> why its unit failed
    format: int = FORMAT
    broken: str | None = None

    def check(self) -> None:
        if not 1 <= self.repeats <= 100:
            raise Broken(f"'repeats' is {self.repeats}, not from 1 to 100")
        if not self.variants:
            raise Broken("it has no variants")
        for v in self.variants:
            if len(v.runs) != self.repeats:
                raise Broken(f"variant {v.label!r} has {len(v.runs)} run slots for {self.repeats} repeats")
        labels = [v.label for v in self.variants]
        if len(set(labels)) != len(labels):
            raise Broken("two variants have the same label")

    @property
    def labels(self) -> list[str]:
        return [v.label for v in self.variants]

    def shared(self) -> str | None:
        """What every variant shares: the words of the runs table's config (`32 relu e8 b32 n2000 jax`)
        that all the variants' have, so that two sweeps of the same settings tell apart."""
        if self.broken or not self.variants:
            return None
        words = [v.run_config.short(backend=True).split() for v in self.variants]
        return " ".join(w for w in words[0] if all(w in other for other in words[1:]))

    def listing(self, summary=None) -> dict:
        """The line `fmnist compare --list --json` prints; `summary` (its ComparisonSummary) gives the
        status and the best variant of a comparison that is not broken."""
        status = Status.BROKEN.value if self.broken else (summary.status.value if summary else None)
        return {"id": self.id, "created": self.created, "repeats": self.repeats or None,
                "variants": self.labels, "shared": self.shared(), "status": status, "reason": self.broken,
                "best_variant": summary.best_variant if summary else None}


@dataclass(kw_only=True)
class SlotSummary(Record):
    """One (variant, repeat) slot as `compare --show --json` prints it."""


    run_id: str | None
    repeat: int
    status: Status
    seed: int | None = None
    message: str | None = None          # a failure or divergence message, or why it is broken
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    seconds: float | None = None
    group_size: int = 1
    resumed_from: list[int] | None = None
    reused_from: str | None = None      # the run that trained it (`compare --reuse`): its seconds are not this comparison's
    test_accuracy: float | None = None  # its saved model's, once `fmnist evaluate --split test` scored it
    pid: int | None = None              # the process training it, while it is `running`
    history: dict | None = None


def whole_epochs(per_epoch: dict) -> int:
    """How many epochs every seed reached, from a metric's per-epoch figures (`n` for each): past them
    the mean is over the seeds still going (the others stopped early), so curves stop or change there."""
    counts = per_epoch["n"]
    return counts.count(max(counts)) if counts else 0


@dataclass(kw_only=True)
class VariantSummary(Record):
    """A variant's runs and the figures aggregated over them: `n` of `of` seeds are covered."""


    label: str
    settings: dict
    runs: list[SlotSummary]
    status: Status
    n: int            # seeds the figures cover
    of: int           # seeds asked for
    aggregate: dict   # per_epoch, final, best_val_accuracy, best_epoch, seconds_per_epoch (mean/std/n)
    train_command: str | None = None   # `fmnist train ...` for this variant alone (its first seed)
    values: dict | None = None         # its varied settings, flat, as the CSV's columns: {"optimizer": "adam", "lr": 0.01}

    def gap(self) -> str:
        """What an incomplete variant lacks, for "Incomplete: ...": its finished runs of those asked
        for (an interrupted run's epochs are in the figures, but it is not finished)."""
        done = sum(1 for r in self.runs if r.status in FINISHED)
        return f"{self.label} ({done} of {self.of} finished)"


@dataclass(kw_only=True)
class ComparisonSummary(Record):
    """What `fmnist compare --json` and `--show --json` print."""


    comparison_id: str
    created: str | None
    repeats: int
    base: dict         # the settings every variant shares (the varied ones left out)
    varied: list[str]  # what the variants differ in, as `values` names it: optimizer, lr, hidden, ...
    monitor: str       # what every run's best epoch is by (from the base config)
    variants: list[VariantSummary]
    best_variant: str | None
    status: Status     # completed; running while a process trains a slot; else incomplete when a slot
    #                    is missing, broken, failed or interrupted
    # a sweep's best value per group of the other settings: {"setting": "lr", "by": ["optimizer"],
    # "groups": [{"values": {"optimizer": "sgd"}, "lr": 0.1, "variant": "sgd lr=0.1",
    # "best_val_accuracy": {mean, std, n}, "edge": "highest"|"lowest"|None}, ...], "complete": bool};
    # None without a numeric setting swept (2+ values) in 2+ groups
    best_per: dict | None = None

    @property
    def incomplete(self) -> list[VariantSummary]:
        return [v for v in self.variants if v.status == Status.INCOMPLETE]


# --- progress events ------------------------------------------------------------------------------
# Engines and executors report progress with these; displays draw them. Per-run events carry the
# engine's `member` index, and training adds which run, variant and repeat that is.

@dataclass
class Event:
    pass


@dataclass
class Plan(Event):
    runs: int
    units: int
    epochs: int          # to train: a resumed run counts the epochs it has left
    resumed: int = 0     # runs going on from their checkpoints
    reused: int = 0      # slots filled by copies of earlier runs (`compare --reuse`), not trained
    slots: int = 0       # slots that had no finished run: reused + runs


@dataclass
class RunEvent(Event):
    member: int = 0
    run_id: str | None = None
    variant: str | None = None
    repeat: int | None = None
    epochs: int | None = None
    group_size: int = 1   # runs stepped together in one program: an epoch's seconds are theirs together


@dataclass
class EpochStart(RunEvent):
    epoch: int = 0
    steps: int = 0


@dataclass
class Step(RunEvent):
    step: int = 0
    steps: int = 0


@dataclass
class EpochEnd(RunEvent):
    epoch: int = 0
    loss: float = math.nan
    accuracy: float = math.nan
    val_loss: float = math.nan
    val_accuracy: float = math.nan
    seconds: float = 0.0
    is_best: bool = False

    def metric(self, name: str) -> float:
        return getattr(self, name)


@dataclass
class RunReused(Event):
    """A slot filled by a copy of an earlier run with identical settings (`compare --reuse`)."""
    variant: int      # index into the comparison's variants
    repeat: int
    run_id: str       # the copy
    source: str       # the run that trained it


@dataclass
class RunDone(Event):
    variant: int      # index into the comparison's variants
    repeat: int
    status: Status
