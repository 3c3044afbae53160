"""Comparisons: expanding variants x settings x repeats into runs, dispatching them, aggregating
mean +- std, and the comparison record that `--show` and `--resume` read back.

    runs/comparisons/<id>.json   the spec (base config, variants, repeats) and the run of each slot
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import secrets
import time
from pathlib import Path

from . import runs
from .config import RunConfig, parse_activation, parse_hidden, parse_optimizer
from .errors import FmnistError, RunNotFound, StorageError, UsageError

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
        key = VARY_KEYS[key]
        parsed = []
        for raw in (v.strip() for v in values.split(",")):
            if key == "activation":
                parsed.append(parse_activation(raw))
            elif key == "hidden":
                parsed.append(parse_hidden(raw.replace("-", ",").replace("x", ",")))
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
                    raise UsageError(f"--vary {key} takes numbers, not {raw!r}.") from None
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
        if "learning_rate" in settings:   # an lr axis overrides the optimizer's own learning rate
            opt = settings.get("optimizer", base.optimizer)
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


def comparisons_dir(root: Path) -> Path:
    return root / runs.COMPARISONS


def new_comparison(root: Path, base: RunConfig, variants: list[dict], repeats: int, argv: list[str]) -> dict:
    cdir = comparisons_dir(root)
    try:
        cdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise runs.storage_error(err, cdir) from None
    while True:
        cid = f"{time.strftime('%Y%m%d-%H%M%S')}-cmp-{secrets.token_hex(2)}"
        try:
            (cdir / f"{cid}.json").open("x").close()   # claim the id atomically
            break
        except FileExistsError:
            continue
    record = {"id": cid, "created": runs.now(), "argv": argv, "base": base.to_dict(), "repeats": repeats,
              "variants": [{"label": v["label"], "settings": v["settings"], "config": v["config"],
                            "runs": [None] * repeats} for v in variants]}
    save_comparison(root, record)
    return record


def save_comparison(root: Path, record: dict) -> None:
    runs.atomic_write_json(comparisons_dir(root) / f"{record['id']}.json", record)


def load_comparison(root: Path, ref: str) -> dict:
    cdir = comparisons_dir(root)
    ids = sorted(p.stem for p in cdir.glob("*.json")) if cdir.is_dir() else []
    if ref == "latest":
        matches = ids[-1:]
    else:
        matches = [i for i in ids if i == ref] or [i for i in ids if i.startswith(ref) or i.endswith(ref)]
    if not matches:
        raise RunNotFound(f"No comparison {ref!r} in {cdir}. `fmnist compare --list` shows them.")
    if len(matches) > 1:
        raise RunNotFound(f"{ref!r} matches {len(matches)} comparisons; give more of the id.")
    try:
        return runs.read_json(cdir / f"{matches[0]}.json")
    except (OSError, ValueError) as err:
        raise StorageError(f"Comparison {matches[0]} is unreadable ({err}).") from None


def list_comparisons(root: Path) -> list[dict]:
    cdir = comparisons_dir(root)
    out = []
    for path in sorted(cdir.glob("*.json"), reverse=True) if cdir.is_dir() else []:
        try:
            rec = runs.read_json(path)
            out.append({"id": rec["id"], "created": rec.get("created"), "repeats": rec.get("repeats"),
                        "variants": [v["label"] for v in rec.get("variants", [])]})
        except (OSError, ValueError, KeyError):
            out.append({"id": path.stem, "created": None, "repeats": None, "variants": [], "broken": True})
    return out


def slots(record: dict) -> list[tuple[int, int, RunConfig]]:
    """Every (variant, repeat) slot with its config: repeat r uses seed base+r, for every variant,
    so variant A's repeat r and variant B's repeat r start from the same weights and batch order."""
    out = []
    for vi, variant in enumerate(record["variants"]):
        base = RunConfig.from_dict(variant["config"])
        for r in range(record["repeats"]):
            out.append((vi, r, base.replace(seed=base.seed + r, comparison=record["id"],
                                            variant=variant["label"], repeat=r)))
    return out


def pending_slots(root: Path, record: dict) -> list[tuple[int, int, RunConfig]]:
    """Slots with no finished run: never run, interrupted, failed or crashed. A diverged run is a
    result (the same seed diverges again), so it is not redone."""
    todo = []
    for vi, r, config in slots(record):
        run_id = record["variants"][vi]["runs"][r]
        if run_id and runs.run_status(root / run_id) in ("completed", "diverged"):
            continue
        todo.append((vi, r, config))
    return todo


def make_units(root: Path, todo, data_dir) -> list[tuple[list, list]]:
    """Group slots into units that train together (same data and batching; MAX_GROUP at most for
    the fused engine; one run per unit for `fit`). Returns [(slot_list, unit)]."""
    from .training import group_key

    groups: dict[tuple, list] = {}
    for slot in todo:
        groups.setdefault(group_key(slot[2]), []).append(slot)
    units = []
    for key, members in groups.items():
        # Even chunks (18 runs: 9 + 9, not 16 + 2), so that no run pays for a lopsided program.
        size = math.ceil(len(members) / math.ceil(len(members) / MAX_GROUP)) if key[1] == "fused" else 1
        for i in range(0, len(members), size):
            chunk = members[i:i + size]
            units.append((chunk, ([s[2] for s in chunk], root, data_dir)))
    return units


def execute(root: Path, record: dict, data_dir=None, jobs: int = 1, on_event=None, should_stop=None,
            executor=None) -> dict:
    """Train every pending slot, writing each run id into the record as units finish."""
    from .executors import LocalExecutor

    on_event = on_event or (lambda e: None)
    should_stop = should_stop or (lambda: False)
    todo = pending_slots(root, record)
    units = make_units(root, todo, data_dir)
    executor = executor or LocalExecutor(jobs)
    errors = {}
    on_event({"type": "plan", "runs": len(todo), "units": len(units),
              "epochs": sum(s[2].epochs for s in todo)})
    for ui, outcome in executor.run([u for _, u in units], on_event, should_stop):
        chunk = units[ui][0]
        if isinstance(outcome, Exception):
            for vi, r, _ in chunk:
                errors[(vi, r)] = str(outcome) if isinstance(outcome, FmnistError) else f"{type(outcome).__name__}: {outcome}"
            outcome = [None] * len(chunk)
        for (vi, r, _), result in zip(chunk, outcome):
            # A failed unit clears its slots: an older interrupted run must not stand in for it.
            record["variants"][vi]["runs"][r] = result["run_id"] if result is not None else None
            on_event({"type": "run_done", "variant": vi, "repeat": r,
                      "status": result["status"] if result else "failed"})
        save_comparison(root, record)
    record["errors"] = {f"{vi}:{r}": msg for (vi, r), msg in errors.items()}
    save_comparison(root, record)
    return record


# --- aggregation -------------------------------------------------------------------------------

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def stat(values) -> dict:
    """mean and sample standard deviation (ddof=1; None for a single value) over repeats."""
    import numpy as np

    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    arr = np.asarray(vals, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else None, "n": len(arr)}


def summarize(root: Path, record: dict, errors: dict | None = None) -> dict:
    """The comparison as plain data: each variant with its runs and aggregated figures."""
    errors = errors if errors is not None else record.get("errors", {})
    variants = []
    for vi, variant in enumerate(record["variants"]):
        run_infos = []
        for r, run_id in enumerate(variant["runs"]):
            if run_id is None:
                run_infos.append({"run_id": None, "repeat": r, "status": "failed" if f"{vi}:{r}" in errors else "missing",
                                  "message": errors.get(f"{vi}:{r}"), "history": None})
                continue
            info = runs.load_run(root / run_id)
            run_infos.append({"run_id": run_id, "repeat": r, "seed": (info.get("config") or {}).get("seed"),
                              "status": info["status"], "message": info.get("message"),
                              "best_epoch": info.get("best_epoch"),
                              "best_val_accuracy": info.get("best_val_accuracy"),
                              "seconds": info.get("seconds"), "group_size": info.get("group_size") or 1,
                              "history": info.get("history")})
        variants.append({"label": variant["label"], "settings": variant["settings"], "runs": run_infos,
                         "status": _variant_status(run_infos), "aggregate": aggregate(run_infos)})
    ok = [v for v in variants if v["aggregate"]["best_val_accuracy"]["mean"] is not None
          and v["status"] in ("completed", "interrupted")]
    best = max(ok, key=lambda v: v["aggregate"]["best_val_accuracy"]["mean"])["label"] if ok else None
    return {"comparison_id": record["id"], "created": record.get("created"), "repeats": record["repeats"],
            "base": record["base"], "variants": variants, "best_variant": best}


def _variant_status(run_infos) -> str:
    statuses = {r["status"] for r in run_infos}
    for s in ("failed", "crashed", "broken", "diverged", "interrupted", "running", "missing"):
        if s in statuses:
            return s
    return "completed"


def aggregate(run_infos: list[dict]) -> dict:
    usable = [r for r in run_infos if r.get("history") and r["history"].get("loss")]
    histories = [r["history"] for r in usable]
    epochs = max((len(h["loss"]) for h in histories), default=0)
    per_epoch = {m: {"mean": [], "std": [], "n": []} for m in METRICS}
    for e in range(epochs):
        for m in METRICS:
            s = stat([h[m][e] for h in histories if len(h[m]) > e])
            for k in ("mean", "std", "n"):
                per_epoch[m][k].append(s[k])
    # One figure per run (its mean epoch time, leaving out the first, compiling epoch where there are
    # others), so that ± is spread over seeds like every other column.
    # Runs stepped together in one program share each epoch's wall time: each is charged its share.
    secs = []
    for r in usable:
        timed = r["history"].get("seconds", [])[1:] or r["history"].get("seconds", [])
        if timed:
            secs.append(sum(timed) / len(timed) / (r.get("group_size") or 1))
    best_idx = [max(range(len(h["val_accuracy"])), key=lambda i: h["val_accuracy"][i]) for h in histories]
    return {
        "n": len(histories),
        "epochs": epochs,
        "per_epoch": per_epoch,
        "final": {m: stat([h[m][-1] for h in histories]) for m in METRICS},
        "best_val_accuracy": stat([h["val_accuracy"][i] for h, i in zip(histories, best_idx)]),
        "best_epoch": stat([i + 1 for i in best_idx]),
        "seconds_per_epoch": stat(secs) if secs else {"mean": None, "std": None, "n": 0},
    }


def csv_rows(summary: dict) -> list[dict]:
    rows = []
    for v in summary["variants"]:
        pe = v["aggregate"]["per_epoch"]
        for e in range(v["aggregate"]["epochs"]):
            row = {"comparison": summary["comparison_id"], "variant": v["label"], "epoch": e + 1,
                   "n": pe["loss"]["n"][e]}
            for m in METRICS:
                row[f"{m}_mean"] = pe[m]["mean"][e]
                row[f"{m}_std"] = pe[m]["std"][e]
            rows.append(row)
    return rows


def write_csv(summary: dict, path: Path) -> None:
    import csv
    import io

    buf = io.StringIO()
    fields = ["comparison", "variant", "epoch", "n"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(summary):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    runs.atomic_write_text(Path(path).expanduser(), buf.getvalue())
