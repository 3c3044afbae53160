"""`compare --reuse`: fill a comparison's slots with copies of earlier runs that trained the very
same thing, instead of training them again.

A run stands in for a slot only when training the slot would give its numbers bit for bit: the same
settings (every RunConfig field that defines training), the same data, the same libraries on the
same kind of device with as many cores (TensorFlow splits its products by its thread count: 1 core
against 2 changed a run's loss in the 4th digit), and steps of its own (a run stepped in a vmapped
family has numbers that depend on its family), trained in one go. It must have finished: completed
with a model the store can open, or diverged (the same seed diverges again).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from .config import PLACE_FIELDS, RunConfig
from .errors import FmnistError
from .records import FINISHED, RunInfo, Status
from .store import RunStore, in_comparison

@dataclass
class Reused:
    variant: int       # index into the comparison's variants
    repeat: int
    run_id: str        # the copy, now the slot's run
    source: str        # the run that trained it


def training_settings(config: RunConfig) -> dict:
    """What defines a run's training: its config without its place in a comparison (`auto` is
    the fused engine, so the two are one)."""
    settings = {k: v for k, v in config.to_dict().items() if k not in PLACE_FIELDS}
    settings["engine"] = config.resolved_engine
    return settings


def _key(config: RunConfig) -> str:
    import json

    return json.dumps(training_settings(config), sort_keys=True)


def why_not(store: RunStore, info: RunInfo) -> str | None:
    """Why a run cannot stand in for another (one clause), or None when it can, settings apart."""
    if info.status not in FINISHED:   # a diverged run is a result too: the same seed diverges again
        return f"it is {info.status}"
    if info.config is None or info.record is None:
        return "its files are unusable"
    record = info.record
    if record.resumed_from:
        # `fit` starts its shuffles and dropout afresh on a resume, and a resume records the
        # resuming session's vmapping: only runs trained in one go are known to match
        return "it was resumed from a checkpoint"
    if record.vmapped and record.vmapped > 1:
        return "it was stepped in a vmapped family, whose numbers depend on the family"
    device = str((record.versions or {}).get("device", ""))
    if record.vmapped is None and record.engine == "fused" and info.config.backend == "jax" \
            and (record.group_size or 1) > 1 and not device.startswith("cpu"):
        return "it was trained before fmnist recorded vmapping, on a device that vmaps by default"
    if info.status == Status.COMPLETED:   # a diverged run may have no model: its history is the result
        try:
            store.check_model(Path(info.run_dir))
        except FmnistError as err:
            return str(err).rstrip(".")
    return None


def sources(store: RunStore, runs: list[RunInfo], exclude: str | None = None) -> dict[str, list[RunInfo]]:
    """Runs that could stand in for a slot, newest first, by their training settings; none of
    comparison `exclude` (its own runs are its slots already)."""
    out: dict[str, list[RunInfo]] = {}
    for info in runs:   # newest first
        if info.config is None or (exclude is not None and in_comparison(info, exclude)):
            continue
        out.setdefault(_key(info.config), []).append(info)
    return out


def fill(store: RunStore, record, todo: list, data_dir=None) -> tuple[list[Reused], list]:
    """Copy a matching earlier run into each pending slot of `todo` ((variant, repeat, config)) that
    has one; returns (the slots reused, the slots left to train). `record`'s runs are updated, not
    saved. A copy that cannot be made (the source removed meanwhile, a full disk) leaves its slot to
    be trained."""
    candidates = sources(store, store.list_runs(clean=False), exclude=record.id)
    if not any(_key(c) in candidates for _, _, c in todo):
        return [], list(todo)
    here = _here(data_dir)
    reused, left, taken = [], [], set()
    alone = _trains_alone([config for _, _, config in todo], here)
    for (vi, r, config), lone in zip(todo, alone):
        source = next((info for info in candidates.get(_key(config), [])
                       if info.id not in taken and _matches(store, info, here, lone)), None)
        copy = None
        if source is not None:
            with contextlib.suppress(FmnistError, OSError):
                copy = store.copy_run(Path(source.run_dir), config)
        if copy is None:
            left.append((vi, r, config))
            continue
        taken.add(source.id)   # two slots of one settings (a variant listed twice) get two runs
        record.variants[vi].runs[r] = copy.name
        # the run that trained it, as copy_run records it: a copy of a copy names the first
        reused.append(Reused(variant=vi, repeat=r, run_id=copy.name, source=source.get("reused_from") or source.id))
    return reused, left


def _trains_alone(configs: list[RunConfig], here: dict) -> list[bool]:
    """Per slot to train, whether it would be stepped alone, not in a vmapped family (then its
    numbers depend on the family). Families form within a unit, and units within runs of one data
    and batching (training.group_key): a slot without a big enough family among those is alone in
    any unit (units only cut families smaller)."""
    if not configs or not here["setup"](configs[0].backend)["vmaps"]:
        return [True] * len(configs)
    from .engines.fused import vmapped_sizes
    from .training import group_key

    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(group_key(config), []).append(i)
    alone = [True] * len(configs)
    for members in groups.values():
        for i, size in zip(members, vmapped_sizes([configs[i] for i in members])):
            alone[i] = size == 1
    return alone


def _matches(store: RunStore, info: RunInfo, here: dict, alone: bool = True) -> bool:
    """The run trained on the same data with the same libraries and device as this process would,
    and would be stepped as the slot would (`alone`: not in a vmapped family, as the run was)."""
    record = info.record
    if why_not(store, info) is not None:
        return False
    if str(record.data_dir) != here["data_dir"]:
        return False
    now = here["setup"](info.config.backend)
    if now["versions"] is None or (now["vmaps"] and info.config.resolved_engine == "fused" and not alone):
        return False
    then, current = record.versions or {}, now["versions"]
    commits = str(then.get("commit")) + str(current.get("commit"))
    if "+changes" in commits and (then.get("commit") != current.get("commit") or "+changes.unknown" in commits):
        return False   # uncommitted code on either side: only the very same code counts
    return _setup(then) == _setup(current)


def _setup(versions: dict) -> dict:
    """What decides a run's numbers: the versions without the git commit, which says which code ran
    (a commit that changes no number keeps its version; one that does raises it)."""
    return {k: v for k, v in versions.items() if k != "commit"}


def _here(data_dir) -> dict:
    """The data folder runs would train on now, and (loaded at the first need: a backend takes a
    second to import) the libraries and device they would train with."""
    from . import backend, data

    cache: dict = {}

    def versions(name: str) -> dict:
        if name not in cache:
            # The driver looks at the device only: it must not take the GPU memory its workers need
            # (JAX takes 75% up front, TensorFlow all of it).
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
            os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
            try:
                backend.configure(name)
                versions, vmaps = backend.describe(), False
                if name == "jax":
                    from .engines.fused import vmap_min

                    # where seeds train as vmapped families (a GPU, $FMNIST_VMAP_MIN), a slot's numbers
                    # depend on its family: no lone run stands in for it
                    vmaps = vmap_min() < 10**9
            except FmnistError:   # Keras runs on the other backend here: no runs of this one are reused
                versions, vmaps = None, False
            cache[name] = {"versions": versions, "vmaps": vmaps}
        return cache[name]

    return {"data_dir": str(data.load(data_dir).directory), "setup": versions}
