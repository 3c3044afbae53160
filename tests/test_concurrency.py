"""Many writers on one runs folder: concurrent processes (both backends) and threads get unique run
folders and lose no update; writes are atomic and run files get the usual umask mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from helpers import TINY, leftovers, read_json


def test_concurrent_train_processes_share_a_runs_dir(runs_dir):
    # Both backends (where JAX is installed) write into one runs folder at the same moment; all with
    # the same --name, so their ids differ only by the random part.
    import importlib.util

    backends = ["tensorflow", "jax"] if importlib.util.find_spec("jax") else ["tensorflow"]
    procs = [subprocess.Popen([sys.executable, "-m", "fmnist_cli", "train", *TINY, "--name", "same", "--json",
                               "--seed", str(i), "--backend", backends[i % len(backends)]],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
            assert "Traceback" not in out + err
            results.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    ids = {r["run_id"] for r in results}
    assert len(ids) == 4
    dirs = sorted(d for d in runs_dir.iterdir() if d.is_dir())
    assert {d.name for d in dirs} == ids
    for d in dirs:
        assert {"config.json", "run.json", "history.json", "model.keras"} <= {p.name for p in d.iterdir()}
        assert read_json(d / "run.json")["status"] == "completed"
        assert len(read_json(d / "history.json")["loss"]) == 1
        assert not leftovers(d)
    from fmnist_cli.store import RunStore

    assert {r.id for r in RunStore(runs_dir).list_runs()} == ids


def test_create_run_from_many_threads_gives_unique_folders(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from fmnist_cli.config import RunConfig
    from fmnist_cli.store import RunStore

    monkeypatch.setattr(os, "fsync", lambda fd: None)   # durability is not the point here; speed is
    root = tmp_path / "threads"
    config = RunConfig(name="same").validate()
    barrier = threading.Barrier(50)

    def make(_):
        barrier.wait()
        return RunStore(root).create_run(config)

    with ThreadPoolExecutor(50) as pool:
        dirs = list(pool.map(make, range(50)))
    assert len({d.name for d in dirs}) == 50
    assert len([d for d in root.iterdir()]) == 50
    for d in dirs:
        assert read_json(d / "run.json")["id"] == d.name
        assert RunConfig.from_dict(read_json(d / "config.json")) == config
        assert not leftovers(d)


def test_concurrent_updates_to_one_run_lose_nothing(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from fmnist_cli.config import RunConfig
    from fmnist_cli.store import RunStore

    store = RunStore(tmp_path / "r")
    run_dir = store.create_run(RunConfig().validate())

    def update(i):   # read-modify-writes of two kinds, interleaved
        if i % 2:
            store.record_evaluation(run_dir, f"split{i}", {"loss": 1.0, "accuracy": i / 100, "n": i})
        else:
            store.update_run(run_dir, group_size=i)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(update, range(40)))
    info = read_json(run_dir / "run.json")
    assert all(info["evaluations"][f"split{i}"]["n"] == i for i in range(1, 40, 2))
    assert info["status"] == "running" and info["group_size"] % 2 == 0


def test_atomic_write_never_leaves_a_partial_file(tmp_path, monkeypatch):
    from fmnist_cli import store
    from fmnist_cli.errors import StorageError

    target = tmp_path / "run.json"
    store.atomic_write_json(target, {"v": 1})

    def boom(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.os, "replace", boom)
    with pytest.raises(StorageError, match="disk is full"):
        store.atomic_write_json(target, {"v": 2, "big": "x" * 100_000})
    monkeypatch.undo()
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"], "the temporary file is removed"
    with pytest.raises(StorageError):
        store.atomic_write_json(tmp_path / "missing" / "run.json", {})


def test_run_files_are_readable_like_any_other_file(tmp_path):
    """Run files are written through mkstemp (mode 0600); they must get the usual umask mode so that
    a shared runs folder (or a teammate's `fmnist runs`) can read them, as it can read model.keras."""
    from fmnist_cli import store
    from fmnist_cli.config import RunConfig

    old = os.umask(0o022)
    try:
        run_dir = store.RunStore(tmp_path / "r").create_run(RunConfig().validate())
        store.atomic_write_text(tmp_path / "out.csv", "a,b\n")
    finally:
        os.umask(old)
    for path in (run_dir / "run.json", run_dir / "config.json", tmp_path / "out.csv"):
        assert path.stat().st_mode & 0o777 == 0o644, f"{path.name}: {oct(path.stat().st_mode & 0o777)}"
