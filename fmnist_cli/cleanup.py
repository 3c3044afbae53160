"""`fmnist runs rm`: what to remove (runs, comparisons, leftovers of interrupted saves), worked out
first so the user can confirm it, then removed with every comparison record kept in step."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Busy, UsageError
from . import records
from .records import RunInfo, Status
from .store import RunStore


@dataclass
class Removal:
    runs: list[RunInfo] = field(default_factory=list)
    comparisons: list[str] = field(default_factory=list)   # records removed whole
    leftovers: list[Path] = field(default_factory=list)    # temporary files of interrupted saves

    @property
    def empty(self) -> bool:
        return not (self.runs or self.comparisons or self.leftovers)

    def describe(self) -> str:
        counts = ((len(self.runs), "run(s)"), (len(self.comparisons), "comparison(s)"),
                  (len(self.leftovers), "leftover file(s)"))
        parts = [f"{n} {what}" for n, what in counts if n]
        return " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts) or "nothing"

    def to_json(self) -> dict:
        return {"runs": [r.id for r in self.runs], "comparisons": list(self.comparisons),
                "leftovers": [str(p) for p in self.leftovers]}


# What --status may name: a run being trained is stopped first, never removed under its process.
REMOVABLE = (Status.INTERRUPTED, Status.CRASHED, Status.FAILED, Status.DIVERGED, Status.COMPLETED, Status.BROKEN)


def parse_statuses(text: str | None) -> set[Status]:
    """--status interrupted,crashed -> {Status.INTERRUPTED, Status.CRASHED}; `running` is refused."""
    if Status.RUNNING.value in [part.strip().lower() for part in (text or "").split(",")]:
        raise UsageError("--status running: those runs are being trained; stop them first (Ctrl-C), then "
                         "remove them as interrupted.")
    return records.parse_statuses(text, REMOVABLE)


def plan(store: RunStore, refs: list[str], *, broken: bool = False, comparison: str | None = None,
         statuses: set[Status] = frozenset()) -> Removal:
    if not refs and not broken and comparison is None and not statuses:
        raise UsageError("Name the runs to remove, or use --broken, --status or --comparison ID "
                         "(see `fmnist runs rm --help`).")
    chosen: dict[str, RunInfo] = {}
    out = Removal()
    for ref in refs:
        # `latest` is the newest run whatever its status, as `fmnist runs` lists it first (the newest
        # finished one, as elsewhere, removed an older run while a newer one trained)
        run_dir = store.resolve_run(ref, latest=None)
        chosen[run_dir.name] = store.load_run(run_dir)
    if comparison is not None:
        cid = store.resolve_comparison(comparison)
        out.comparisons.append(cid)
        for info in store.list_runs(comparison=cid, clean=False):
            chosen.setdefault(info.id, info)
        record = store.read_comparison(cid)
        for variant in record.variants:
            for run_id in variant.runs:
                if run_id and (store.root / run_id).is_dir():
                    chosen.setdefault(run_id, store.load_run(store.root / run_id))
    if broken:
        for info in store.list_runs(clean=False):
            if info.status == Status.BROKEN:
                chosen.setdefault(info.id, info)
        out.comparisons += [c.id for c in store.list_comparisons() if c.broken and c.id not in out.comparisons]
        out.leftovers = [p for p in store.leftovers() if p.parent.name not in chosen]
    if statuses:
        for info in store.list_runs(clean=False):
            if info.status in statuses:
                chosen.setdefault(info.id, info)
    for info in chosen.values():
        foreign = store.foreign_files(Path(info.run_dir))
        if foreign:
            raise UsageError(f"{Path(info.run_dir).resolve()} holds files fmnist did not write "
                             f"({', '.join(foreign[:3])}); remove it by hand if it should go.")
    running = [r for r in chosen.values() if r.status == Status.RUNNING]
    if running:
        pid = running[0].get("pid")
        raise Busy(f"Run {running[0].id} is still being trained" + (f" (process {pid})" if pid else "") +
                   "; stop it first, or leave it out.")
    out.runs = sorted(chosen.values(), key=lambda r: r.id)
    return out


def apply(store: RunStore, plan: Removal) -> None:
    """Comparisons that keep living get their removed runs' slots emptied (under their lock, so a
    comparison being trained is refused before anything is removed); then everything goes."""
    removed = {r.id for r in plan.runs}
    touched = [c.id for c in store.list_comparisons() if not c.broken and c.id not in plan.comparisons
               and any(run_id in removed for v in c.variants for run_id in v.runs)]
    with contextlib.ExitStack() as locks:
        for cid in plan.comparisons + touched:
            locks.enter_context(store.comparison_lock(cid))
        for cid in touched:
            record = store.read_comparison(cid)   # again, under the lock: a trainer may have moved on
            if record.broken:
                continue
            for variant in record.variants:
                variant.runs = [None if run_id in removed else run_id for run_id in variant.runs]
            store.save_comparison(record)
        for info in plan.runs:
            store.remove_run(Path(info.run_dir))
        for cid in plan.comparisons:
            store.remove_comparison(cid)
    for path in plan.leftovers:
        with contextlib.suppress(OSError):
            path.unlink()
