"""Comparisons: expanding variants x settings x repeats into runs, dispatching them, aggregating
mean +- std, and the comparison record that `--show` and `--resume` read back.

    runs/comparisons/<id>.json   the spec (base config, variants, repeats) and the run of each slot
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from pathlib import Path

from .config import DEFAULT_MONITOR, PLACE_FIELDS, RunConfig, parse_activation, parse_hidden, parse_optimizer
from .engines import best_index
from .errors import Busy, FmnistError, UsageError
from .records import (FINISHED, METRICS, RESUMABLE, ComparisonRecord, ComparisonSummary, Plan, RunDone, RunInfo,
                      RunReused, SlotSummary, Status, VariantSpec, VariantSummary)
from .store import RunStore, atomic_write_text, in_comparison, now

VARY_KEYS = {"activation": "activation", "hidden": "hidden", "dropout": "dropout",
             "lr": "learning_rate", "learning_rate": "learning_rate", "batch_size": "batch_size",
             "optimizer": "optimizer"}
MAX_GROUP = 16   # runs stepped together in one fused program; fixed, so results never depend on --jobs


def parse_vary(items: list[str]) -> dict[str, list]:
    """`activation=sigmoid,relu`, `hidden=100,300-100` (layers joined by '-'), `lr=0.1,0.01`.
    Repeating a key adds values."""
    axes: dict[str, list] = {}
    for item in items or []:
        key, eq, values = item.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not eq or key not in VARY_KEYS or not values.strip():
            raise UsageError(f"Cannot read --vary {item!r}: use KEY=V1,V2 with KEY one of "
                             "activation, hidden, dropout, lr, batch_size, optimizer "
                             "(e.g. --vary activation=sigmoid,relu --vary hidden=100,300-100).")
        typed, key = key, VARY_KEYS[key]   # messages name the key as typed: lr, not learning_rate
        parsed = []
        for raw in (v.strip() for v in values.split(",")):
            if key == "activation":
                parsed.append(parse_activation(raw))
            elif key == "hidden":
                parsed.append(parse_hidden(raw))
            elif key == "optimizer":
                parsed.append(parse_optimizer(raw))
            elif key == "batch_size":
                if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
                    raise UsageError(f"--vary batch_size takes positive whole numbers, not {raw!r}.")
                parsed.append(int(raw))
            else:
                try:
                    parsed.append(float(raw))
                except ValueError:
                    raise UsageError(f"--vary {typed} takes numbers, not {raw!r}.") from None
        axes.setdefault(key, [])
        axes[key] += [v for v in parsed if v not in axes[key]]
    return axes


def _value_label(key: str, value) -> str:
    if key == "hidden":
        return "-".join(map(str, value))
    if key == "optimizer":
        return value.label()
    if key == "learning_rate":
        return f"lr={value:g}"
    if key == "dropout":
        return f"dropout={value:g}"
    if key == "batch_size":
        return f"batch={value}"
    return str(value)


def expand(base: RunConfig, optimizers: list[str], axes: dict[str, list], overrides: dict | None = None) -> list[dict]:
    """The variants: the full grid of optimizers x every varied setting. Each is
    {"label", "settings": {field: value}} with settings JSON-ready."""
    axes = dict(axes)
    if optimizers:
        if "optimizer" in axes:
            raise UsageError("Give optimizers either as arguments or with --vary optimizer=..., not both.")
        axes = {"optimizer": [parse_optimizer(o) for o in optimizers], **axes}
    if "optimizer" in axes:
        # --learning-rate applies to every optimizer compared; --momentum/--nesterov to the SGD family.
        overrides = overrides or {}
        specs = []
        for spec in axes["optimizer"]:
            spec = parse_optimizer(spec.label(), overrides.get("learning_rate"))
            if spec.keras_class == "SGD":
                spec = parse_optimizer(spec.label(), momentum=overrides.get("momentum"),
                                       nesterov=overrides.get("nesterov"))
            specs.append(spec)
        axes["optimizer"] = specs
    if not axes:
        raise UsageError("Nothing to compare: name optimizers (fmnist compare sgd rmsprop adam) "
                         "or vary a setting (--vary activation=sigmoid,relu).")
    keys = list(axes)
    variants, labels = [], set()
    for combo in itertools.product(*(axes[k] for k in keys)):
        settings = dict(zip(keys, combo))
        if "learning_rate" in settings:   # an lr axis sets the optimizer's learning rate
            opt = settings.get("optimizer", base.optimizer)
            if opt.learning_rate is not None:   # it would be dropped without a word
                raise UsageError(f"A varied learning rate (--vary lr=...) and the optimizer {opt.label()!r} both "
                                 f"set it; name the optimizer without lr= (e.g. {opt.name!r}).")
            settings["optimizer"] = dataclasses.replace(opt, learning_rate=settings.pop("learning_rate"))
        label = " ".join(_value_label(k, combo[i]) for i, k in enumerate(keys))
        if label in labels:
            raise UsageError(f"Variant {label!r} is listed twice.")
        labels.add(label)
        config = base.replace(**settings)   # validates each combination
        variants.append({"label": label, "settings": _jsonable(settings), "config": config.to_dict()})
    if len(variants) > 256:
        raise UsageError(f"That is {len(variants)} variants; at most 256 per comparison.")
    return variants


def _jsonable(settings: dict) -> dict:
    out = {}
    for k, v in settings.items():
        out[k] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else (list(v) if isinstance(v, tuple) else v)
    return out


def new_comparison(store: RunStore, base: RunConfig, variants: list[dict], repeats: int,
                   argv: list[str], name: str | None = None) -> ComparisonRecord:
    record = ComparisonRecord(
        created=now(), argv=argv, base=base.to_dict(), repeats=repeats,
        variants=[VariantSpec(label=v["label"], settings=v["settings"], config=v["config"], runs=[None] * repeats)
                  for v in variants])
    return store.new_comparison(record, name)


def slots(record: ComparisonRecord) -> list[tuple[int, int, RunConfig]]:
    """Every (variant, repeat) slot with its config: repeat r uses seed base+r, for every variant,
    so variant A's repeat r and variant B's repeat r start from the same weights and batch order."""
    out = []
    for vi, variant in enumerate(record.variants):
        base = variant.run_config
        for r in range(record.repeats):
            out.append((vi, r, base.replace(seed=base.seed + r, comparison=record.id,
                                            variant=variant.label, repeat=r)))
    return out


def pending_slots(store: RunStore, record: ComparisonRecord) -> list[tuple[int, int, RunConfig]]:
    """Slots with no finished run: never run, interrupted, failed, crashed or broken. A diverged run
    is a result (the same seed diverges again), so it is not redone. A finished run the record does not
    know (its worker finished after the process that started it died) is adopted, not trained again;
    a run still being trained by a live process makes this a Busy error."""
    members = store.list_runs(comparison=record.id, clean=False)   # one listing serves every check
    live = [m for m in members if m.status == Status.RUNNING and m.record is not None
            and m.record.pid not in (None, os.getpid())]
    if live:
        pids = sorted({str(m.record.pid) for m in live})
        raise Busy(f"Comparison {record.id} still has {len(live)} run(s) being trained by process "
                   f"{', '.join(pids)}; wait for them to finish, or stop them, then resume.")
    by_id = {m.id: m for m in members}
    adoptable: dict[tuple[str, int], object] = {}   # (variant, repeat) -> its newest finished run
    for m in members:
        if m.status in FINISHED and m.config is not None and m.config.variant is not None \
                and m.config.repeat is not None:
            adoptable.setdefault((m.config.variant, m.config.repeat), m)
    todo = []
    for vi, r, config in slots(record):
        variant = record.variants[vi]
        run_id = variant.runs[r]
        info = by_id.get(run_id) or (store.load_run(store.root / run_id) if run_id else None)
        if info is not None and info.status in FINISHED:
            continue
        found = adoptable.get((variant.label, r))
        if found is not None:
            variant.runs[r] = found.id
            continue
        todo.append((vi, r, config))
    return todo


def resume_points(store: RunStore, record: ComparisonRecord, todo) -> dict[tuple[int, int], tuple[Path, int]]:
    """(variant, repeat) -> (run folder, epoch) for each pending slot whose newest interrupted, crashed
    or failed run has a checkpoint and the slot's very config: it goes on from that epoch rather
    than starting again (on the fused engine with the numbers an unbroken run gets)."""
    from .training import checkpoint_epoch

    members = store.list_runs(comparison=record.id, clean=False)   # newest first
    out = {}
    for vi, r, config in todo:
        newest = next((m for m in members if m.status in RESUMABLE and m.config == config), None)
        if newest is not None:   # only the newest of the slot's runs: an older one was given up already
            epoch = checkpoint_epoch(store, store.root / newest.id)
            if epoch:
                out[(vi, r)] = (store.root / newest.id, epoch)
    return out


def check_resumable(store: RunStore, record: ComparisonRecord) -> None:
    """Busy when another process trains the comparison or one of its runs; `execute` enforces the
    same under its lock, this only lets the CLI say so before it prints anything."""
    with store.comparison_lock(record.id):
        pending_slots(store, store.read_comparison(record.id))


def make_units(root: Path, todo, data_dir, resume: dict | None = None) -> list[tuple[list, tuple]]:
    """Group slots into units that train together (same data and batching, and the same epoch to go
    on from: see resume_points; MAX_GROUP at most for the fused engine; one run per unit for `fit`).
    Returns [(slot_list, (configs, root, data_dir, names of the run folders to resume, or None))]."""
    from .training import group_key

    resume = resume or {}
    groups: dict[tuple, list] = {}
    for slot in todo:
        point = resume.get(slot[:2])
        groups.setdefault((group_key(slot[2]), point[1] if point else 0), []).append(slot)
    units = []
    for (key, epoch), members in groups.items():
        # Even chunks (18 runs: 9 + 9, not 16 + 2), so that no run pays for a lopsided program.
        size = math.ceil(len(members) / math.ceil(len(members) / MAX_GROUP)) if key[1] == "fused" else 1
        for i in range(0, len(members), size):
            chunk = members[i:i + size]
            names = [resume[s[:2]][0].name for s in chunk] if epoch else None
            units.append((chunk, ([s[2] for s in chunk], root, data_dir, names)))
    return units


def execute(store: RunStore, record: ComparisonRecord, data_dir=None, jobs: int = 1, on_event=None,
            should_stop=None, executor=None, reuse: bool = False) -> ComparisonRecord:
    """Train every pending slot, writing each run id into the record as units finish. The comparison
    is locked meanwhile: a second process resuming it gets a Busy error instead of training twice.
    `reuse`: first fill pending slots with copies of earlier runs of identical settings (reuse.py);
    a copy rather than going on from a slot's checkpoint, as it is the run that resume would finish."""
    from .executors import LocalExecutor

    on_event = on_event or (lambda e: None)
    should_stop = should_stop or (lambda: False)
    with store.comparison_lock(record.id):
        # Read again under the lock: another process may have finished slots since we loaded it.
        fresh = store.read_comparison(record.id)
        if not fresh.broken:
            record = fresh
        todo = pending_slots(store, record)
        pending = len(todo)
        reused = []
        try:
            if reuse and todo:
                from .reuse import fill

                reused, todo = fill(store, record, todo, data_dir)
        finally:   # a Ctrl-C while copying keeps the copies made in the record
            store.save_comparison(record)   # adopted and reused runs
        points = resume_points(store, record, todo)
        units = make_units(store.root, todo, data_dir, points)
        executor = executor or LocalExecutor(jobs)
        errors = {}
        epochs = sum(c.epochs - points.get((vi, r), (None, 0))[1] for vi, r, c in todo)
        on_event(Plan(runs=len(todo), units=len(units), epochs=epochs, resumed=len(points), reused=len(reused),
                      slots=pending))
        for copy in reused:
            on_event(RunReused(variant=copy.variant, repeat=copy.repeat, run_id=copy.run_id, source=copy.source))
        from .training import arm

        arm(should_stop)   # from here a first Ctrl-C stops gracefully, whatever the executor
        for ui, outcome in executor.run([u for _, u in units], on_event, should_stop):
            chunk = units[ui][0]
            if isinstance(outcome, Exception):
                for vi, r, _ in chunk:
                    errors[(vi, r)] = str(outcome) if isinstance(outcome, FmnistError) else f"{type(outcome).__name__}: {outcome}"
                outcome = [None] * len(chunk)
            for (vi, r, _), result in zip(chunk, outcome):
                # A failed unit clears its slots: an older interrupted run must not stand in for it.
                # So does a run stopped before its first epoch finished: it was not kept.
                record.variants[vi].runs[r] = result.run_id if result is not None and result.kept else None
                on_event(RunDone(variant=vi, repeat=r, status=result.status if result else Status.FAILED))
            store.save_comparison(record)
        record.errors = {f"{vi}:{r}": msg for (vi, r), msg in errors.items()}
        store.save_comparison(record)
    return record


# --- aggregation -------------------------------------------------------------------------------

def stat(values) -> dict:
    """mean and sample standard deviation (ddof=1; None for a single value) over repeats."""
    import numpy as np

    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    arr = np.asarray(vals, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else None, "n": len(arr)}


def _slot(store: RunStore, vi: int, r: int, run_id: str | None, errors: dict,
          known: RunInfo | None = None) -> SlotSummary:
    if run_id is None:
        failed = f"{vi}:{r}" in errors
        return SlotSummary(run_id=None, repeat=r, status=Status.FAILED if failed else Status.MISSING,
                           message=errors.get(f"{vi}:{r}"))
    run_dir = store.root / run_id
    if not run_dir.is_dir():
        return SlotSummary(run_id=run_id, repeat=r, status=Status.MISSING,
                           message="its run folder is gone (removed, or never written)")
    info = known if known is not None else store.load_run(run_dir)
    return SlotSummary(run_id=run_id, repeat=r, seed=info.config.seed if info.config else None,
                       status=info.status, message=info.reason or info.get("message"),
                       best_epoch=info.get("best_epoch"), best_val_accuracy=info.get("best_val_accuracy"),
                       seconds=info.get("seconds"), group_size=info.get("group_size", 1),
                       resumed_from=info.get("resumed_from"), reused_from=info.get("reused_from"),
                       test_accuracy=info.test_accuracy,
                       pid=info.get("pid") if info.status == Status.RUNNING else None,
                       history=info.history if info.status != Status.BROKEN else None)


def summarize(store: RunStore, record: ComparisonRecord, runs: list[RunInfo] | None = None) -> ComparisonSummary:
    """The comparison as a record: each variant with its runs and the figures over its usable seeds.
    `runs`: every run of the folder, listed once for many comparisons (`compare --list`)."""
    variants = []
    monitor = monitor_of(record)
    if runs is None:
        members, known = store.list_runs(comparison=record.id, clean=False), {}
    else:
        members, known = [m for m in runs if in_comparison(m, record.id)], {m.id: m for m in runs}
    # A slot's run is written into the record when its unit finishes. Until then (or for good, when
    # the process was killed) the slot's newest run stands in it: `--show` says running or crashed,
    # with the figures so far, not missing. A run being trained also stands in for an older one.
    newest: dict[tuple, RunInfo] = {}
    for m in members:   # newest first
        if m.config is not None:
            newest.setdefault((m.config.variant, m.config.repeat), m)

    def standing(label: str, r: int, run_id: str | None) -> str | None:
        m = newest.get((label, r))
        return m.id if m is not None and (run_id is None or m.status == Status.RUNNING) else run_id

    for vi, variant in enumerate(record.variants):
        stands = [standing(variant.label, r, run_id) for r, run_id in enumerate(variant.runs)]
        slot_list = [_slot(store, vi, r, run_id, record.errors, known.get(run_id))
                     for r, run_id in enumerate(stands)]
        agg = aggregate(slot_list, monitor)
        variants.append(VariantSummary(label=variant.label, settings=variant.settings, runs=slot_list,
                                       train_command=variant.run_config.train_command(),
                                       status=_variant_status(slot_list), n=agg["n"], of=record.repeats,
                                       aggregate=agg))
    # Complete variants compete first: a mean over fewer seeds is not a fair match for one over all.
    ok = [v for v in variants if v.aggregate["best_val_accuracy"]["mean"] is not None
          and v.status == Status.COMPLETED] or [v for v in variants if v.status == Status.INCOMPLETE
                                                and v.aggregate["best_val_accuracy"]["mean"] is not None]
    best = max(ok, key=lambda v: v.aggregate["best_val_accuracy"]["mean"]).label if ok else None
    complete = all(v.status in FINISHED for v in variants)
    running = any(v.status == Status.RUNNING for v in variants)
    # The base without what the variants set: `compare sgd adam`'s base optimizer is the default
    # (rmsprop), which no variant trained with; printed, it read as if one had.
    varied = sorted({key for v in record.variants for key in v.settings})
    # nor a run's place (name, comparison, ...), always null in a base
    base = {k: v for k, v in record.base.items() if k not in varied and k not in PLACE_FIELDS}
    values = _varied_values(record, varied)
    # what the variants differ in, as their `values` (and the CSV's columns) name it: lr, not optimizer
    # alone, for `compare sgd adam --vary lr=...`
    columns = [key for key in dict.fromkeys(key for vals in values for key in vals)
               if len({repr(vals.get(key)) for vals in values}) > 1]   # `compare sgd --vary lr=...`: lr alone
    summary = ComparisonSummary(comparison_id=record.id, created=record.created, repeats=record.repeats,
                                base=base, varied=columns, monitor=monitor, variants=variants, best_variant=best,
                                status=Status.COMPLETED if complete else Status.RUNNING if running else Status.INCOMPLETE)
    for v, vals in zip(summary.variants, values):
        v.values = vals
    summary.best_per = best_per_group(summary.variants, columns)
    return summary


# The numeric settings a sweep runs over: a best value is looked for, and the sweep panel drawn, along them
SWEPT = ("lr", "dropout", "batch_size", "momentum")


def most_swept(variants, among=SWEPT) -> tuple[str | None, int]:
    """The numeric setting of `among` the variants' values take most values of, and how many."""
    columns = [v.values or {} for v in variants]
    counts = {key: len({c.get(key) for c in columns} - {None}) for key in among}
    if not counts:
        return None, 0
    key = max(counts, key=counts.get)
    return key, counts[key]


def best_per_group(variants, varied: list[str]) -> dict | None:
    """Where the variants sweep a numeric setting (the one with the most values) within two or more
    groups of the other `varied` settings (sgd and adam, say), each trying two or more values of it:
    each group's best value, by the mean best val accuracy of its completed variants. None otherwise
    (the star says it)."""
    setting, _ = most_swept(variants, [key for key in SWEPT if key in varied])
    if setting is None:
        return None
    groups: dict[tuple, list] = {}
    for v in variants:
        values = v.values or {}
        if values.get(setting) is None:
            continue
        # the optimizer first, as variants' labels name it
        rest = tuple((k, values.get(k)) for k in sorted(varied, key=lambda k: k != "optimizer") if k != setting)
        groups.setdefault(rest, []).append(v)
    # a group that tried one value has no best value of it, only a result
    groups = {rest: members for rest, members in groups.items() if len({v.values[setting] for v in members}) > 1}
    if len(groups) < 2:
        return None
    out = []
    for rest, members in groups.items():
        done = [v for v in members if v.status == Status.COMPLETED and v.aggregate["best_val_accuracy"]["mean"] is not None]
        if not done:
            continue
        best = max(done, key=lambda v: v.aggregate["best_val_accuracy"]["mean"])
        tried = sorted({v.values[setting] for v in members})
        value = best.values[setting]
        # at an end of the values tried, the best may lie beyond it
        edge = None if len(tried) < 3 else "highest" if value == tried[-1] else "lowest" if value == tried[0] else None
        out.append({"values": dict(rest), setting: value, "variant": best.label,
                    "best_val_accuracy": best.aggregate["best_val_accuracy"], "edge": edge})
    by = [k for k, _ in next(iter(groups))]
    complete = all(v.status in FINISHED for members in groups.values() for v in members)
    return {"setting": setting, "by": by, "groups": out, "complete": complete} if out else None


def monitor_of(record: ComparisonRecord) -> str:
    """The metric the comparison's best epochs are by: its base config's (which every variant's config
    carries: --vary cannot change it). A record from before `monitor` existed reads as val_accuracy,
    as RunConfig.from_dict reads any old config."""
    if record.variants:
        return record.variants[0].run_config.monitor
    return RunConfig.from_dict(record.base).monitor


def _variant_status(slot_list: list[SlotSummary]) -> Status:
    """completed; diverged when a seed diverged and the rest completed (a result, not a gap);
    running while a seed trains; else incomplete: a seed is missing, broken, failed, crashed or
    interrupted, and `--resume` will fill it."""
    statuses = {s.status for s in slot_list}
    if statuses <= {Status.COMPLETED}:
        return Status.COMPLETED
    if statuses <= set(FINISHED):
        return Status.DIVERGED
    if Status.RUNNING in statuses:
        return Status.RUNNING
    return Status.INCOMPLETE


def aggregate(slot_list: list[SlotSummary], monitor: str = DEFAULT_MONITOR) -> dict:
    """Figures over the seeds with a usable history (n of them): a diverged seed counts with the
    epochs it finished, an interrupted one with its finished epochs, a broken or missing one not at all.
    Each seed's best epoch is the one its training called best (by `monitor`, with Keras's rule);
    `best_val_accuracy` is the val_accuracy at that epoch."""
    usable = [s for s in slot_list if s.history and s.history.get("loss")
              and s.status not in (Status.BROKEN, Status.MISSING)]   # a running one: its epochs so far
    histories = [s.history for s in usable]
    epochs = max((len(h["loss"]) for h in histories), default=0)
    per_epoch = {m: {"mean": [], "std": [], "n": []} for m in METRICS}
    for e in range(epochs):
        for m in METRICS:
            s = stat([h[m][e] for h in histories if len(h[m]) > e])
            for k in ("mean", "std", "n"):
                per_epoch[m][k].append(s[k])
    # One figure per run (its mean epoch time, leaving out the compiling epochs, the first and the
    # first after each resume, where there are others), so that ± is spread over seeds like every
    # other column. Runs stepped together in one program share each epoch's wall time: each is
    # charged its share. A run copied from an earlier comparison (`--reuse`) is left out: its time
    # was measured then, with other company in its program, not in this comparison.
    secs = []
    for s in usable:
        if s.reused_from:
            continue
        seconds = s.history.get("seconds", [])
        compiled = {0, *(s.resumed_from or ())}   # 0-based: the epoch after checkpoint k is index k
        timed = [t for i, t in enumerate(seconds) if i not in compiled] or seconds
        if timed:
            secs.append(sum(timed) / len(timed) / (s.group_size or 1))
    best_idx = [best_index(h[monitor], monitor) for h in histories]
    return {
        "n": len(histories),
        "epochs": epochs,
        "per_epoch": per_epoch,
        "final": {m: stat([h[m][-1] for h in histories]) for m in METRICS},
        "best_val_accuracy": stat([h["val_accuracy"][i] for h, i in zip(histories, best_idx)]),
        "best_epoch": stat([i + 1 for i in best_idx]),
        "seconds_per_epoch": stat(secs),
        # the saved models' test accuracy, over the seeds `fmnist evaluate --split test` scored
        # (completed runs only: a diverged or interrupted one may carry a score of other weights)
        "test_accuracy": stat([s.test_accuracy for s in usable if s.status == Status.COMPLETED]),
    }


def _varied_values(record: ComparisonRecord, varied: list[str]) -> list[dict]:
    """Per variant, its varied settings flat, as the CSV's columns, so that a table of accuracy
    against a setting needs no parsing of labels: optimizer (its name) and, where any variant sets
    them, lr, momentum and nesterov as it trained with them (Keras's defaults filled in); hidden as
    `--vary` writes it (300-100); activation, dropout, batch_size."""
    spec_fields = {field for v in record.variants for field, given in (v.settings.get("optimizer") or {}).items()
                   if given is not None and field != "name"}
    out = []
    for v in record.variants:
        config, values = v.run_config, {}
        for key in varied:
            if key == "optimizer":
                values["optimizer"] = config.optimizer.name
                trained = config.optimizer.trained_with()
                for field, column in (("learning_rate", "lr"), ("momentum", "momentum"), ("nesterov", "nesterov")):
                    if field in spec_fields:
                        values[column] = trained[column]
            elif key == "hidden":
                values[key] = "-".join(map(str, config.hidden))
            else:
                values[key] = getattr(config, key)
        out.append(values)
    return out


def csv_rows(summary: ComparisonSummary) -> list[dict]:
    """One row per variant and epoch: its varied settings, its seeds, the metrics' mean and std over
    them, and on every row the variant's best val accuracy and best epoch (mean, std) and its test
    accuracy (mean, std and the seeds scored, once `evaluate --split test` scored its saved models)."""
    rows = []
    for v in summary.variants:
        agg = v.aggregate
        head = {"comparison": summary.comparison_id, "variant": v.label, **(v.values or {}), "status": v.status.value}
        test = agg["test_accuracy"]   # over the seeds `evaluate --split test` scored (n), else empty
        tail = {"best_val_accuracy_mean": agg["best_val_accuracy"]["mean"],
                "best_val_accuracy_std": agg["best_val_accuracy"]["std"], "best_epoch_mean": agg["best_epoch"]["mean"],
                "best_epoch_std": agg["best_epoch"]["std"], "test_accuracy_mean": test["mean"],
                "test_accuracy_std": test["std"], "test_accuracy_n": test["n"]}
        if not agg["epochs"]:   # no seed has figures yet: one row, so the variant still shows
            rows.append({**head, "epoch": None, "n": 0, "of": v.of, **tail})
            continue
        pe = agg["per_epoch"]
        for e in range(agg["epochs"]):
            row = {**head, "epoch": e + 1, "n": pe["loss"]["n"][e], "of": v.of}
            for m in METRICS:
                row[f"{m}_mean"] = pe[m]["mean"][e]
                row[f"{m}_std"] = pe[m]["std"][e]
            rows.append({**row, **tail})
    return rows


def write_csv(summary: ComparisonSummary, path: Path) -> None:
    import csv
    import io

    buf = io.StringIO()
    varied = list(summary.variants[0].values or {}) if summary.variants else []
    fields = (["comparison", "variant", *varied, "status", "epoch", "n", "of"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
              + ["best_val_accuracy_mean", "best_val_accuracy_std", "best_epoch_mean", "best_epoch_std",
                 "test_accuracy_mean", "test_accuracy_std", "test_accuracy_n"])
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(summary):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write_text(Path(path).expanduser(), buf.getvalue())
