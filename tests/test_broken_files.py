"""Trouble on disk, refused with a clean message and no traceback: missing or corrupt data files,
unknown runs, broken model and config files, runs folders that cannot be written, and model files
that Keras's safe mode must refuse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import (DATA_FILES, TINY, assert_clean_error, code_of, copy_run, fmnist, invoke, keras_tf,
                     read_json, real_data_dir)


# --- missing and corrupt data ------------------------------------------------------------------

def test_missing_data_dir_names_the_folder_searched(tmp_path, runs_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in (["train", *TINY], ["data"], ["evaluate", "latest"]):
        result = invoke(*command, "--data-dir", empty)
        if command[0] == "evaluate":   # no runs: the run is looked up before the data
            assert_clean_error(result, 2, "no finished runs")
            continue
        assert_clean_error(result, 2, str(empty), "not found", max_sentences=3)
    assert not runs_dir.exists() or not any(runs_dir.iterdir()), "no run folder for a run that never started"


def test_missing_data_dir_env_var_is_named_too(tmp_path, monkeypatch):
    empty = tmp_path / "nowhere"
    monkeypatch.setenv("FMNIST_DATA_DIR", str(empty))
    assert_clean_error(invoke("data"), 2, str(empty), "$FMNIST_DATA_DIR", max_sentences=3)


def test_missing_data_message_is_at_most_two_sentences(tmp_path):
    assert_clean_error(invoke("data", "--data-dir", tmp_path), 2, max_sentences=2)


def _broken_copy(tmp_path: Path, name: str, how: str) -> Path:
    """The four real files in a new folder (links), with `name` broken in the way `how` says."""
    src = real_data_dir()
    d = tmp_path / f"data-{how}"
    d.mkdir()
    for f in DATA_FILES:
        if f != name:
            os.symlink(src / f, d / f)
    raw = (src / name).read_bytes()
    if how == "truncated":
        broken = raw[:len(raw) // 2]
    elif how == "garbled":
        mid = len(raw) // 2
        broken = raw[:mid] + bytes(b ^ 0x5A for b in raw[mid:mid + 4096]) + raw[mid + 4096:]
    elif how == "not-gzip":
        broken = b"this is not a gzip file at all\n" * 10
    elif how == "empty":
        broken = b""
    elif how == "wrong-payload":
        import gzip

        broken = gzip.compress(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + bytes(5))
    else:
        raise AssertionError(how)
    (d / name).write_bytes(broken)
    return d


@pytest.mark.parametrize("name,how", [
    ("train-labels-idx1-ubyte.gz", "truncated"),
    ("t10k-images-idx3-ubyte.gz", "garbled"),
    ("train-images-idx3-ubyte.gz", "not-gzip"),
    ("t10k-labels-idx1-ubyte.gz", "empty"),
    ("t10k-labels-idx1-ubyte.gz", "wrong-payload"),
])
def test_corrupt_data_files_are_named(tmp_path, runs_dir, name, how):
    broken = _broken_copy(tmp_path, name, how)
    assert_clean_error(invoke("data", "--data-dir", broken), 2, name)
    assert_clean_error(invoke("train", *TINY, "--data-dir", broken), 2, name)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_corrupt_data_in_a_real_process_has_no_traceback(tmp_path):
    broken = _broken_copy(tmp_path, "train-labels-idx1-ubyte.gz", "truncated")
    result = fmnist("data", "--data-dir", broken, timeout=120)
    assert_clean_error(result, 2, "train-labels-idx1-ubyte.gz")
    assert result.stdout == ""


# --- unknown runs ------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["evaluate", "summary"])
def test_unknown_run_id(command, trained, runs_dir):
    copy_run(trained, runs_dir)
    for ref in ("no-such-run", "20991231", "..", "../..", "comparisons"):
        assert_clean_error(invoke(command, ref), 2, "No run" if ref != "../.." else "")


def test_unknown_run_with_no_runs_dir_at_all(runs_dir):
    assert_clean_error(invoke("evaluate", "latest"), 2, str(runs_dir))
    assert_clean_error(invoke("summary", "abc"), 2, "abc")
    assert_clean_error(invoke("compare", "--resume", "nope"), 2, "nope")
    assert_clean_error(invoke("compare", "--show", "latest"), 2)


# --- broken model and config files -------------------------------------------------------------

def test_garbage_model_file_is_refused_cleanly(trained, runs_dir):
    run = copy_run(trained, runs_dir)
    (run / "model.keras").write_bytes(os.urandom(3000))
    result = invoke("evaluate", run.name)
    assert_clean_error(result, None, "model.keras", "not a Keras model file")
    assert code_of(result) in (1, 2)
    assert not read_json(run / "run.json").get("evaluations")


def test_model_file_that_is_a_directory_or_empty(trained, runs_dir):
    run = copy_run(trained, runs_dir)
    (run / "model.keras").write_bytes(b"")
    assert_clean_error(invoke("evaluate", run.name), None, "model.keras")
    (run / "model.keras").unlink()
    (run / "model.keras").mkdir()
    assert_clean_error(invoke("evaluate", run.name), None, "model")


def test_model_file_that_is_a_folder_is_listed_as_damaged(fake_engine, runs_dir):
    """A folder where model.keras should be is damage (save_model only renames a file into place),
    not a model that is missing; `evaluate` says so before it opens anything."""
    import json

    from fmnist_cli.errors import BrokenRecord
    from fmnist_cli.store import RunStore

    run_id = json.loads(invoke("train", "--epochs", "1", "--json").stdout)["run_id"]
    model = runs_dir / run_id / "model.keras"
    model.unlink()
    model.mkdir()
    (listed,) = json.loads(invoke("runs", "--json").stdout)
    assert listed["status"] == "broken" and listed["reason"] == "model.keras is a folder, not a model file"
    assert "model.keras is a folder" in invoke("runs").stdout
    with pytest.raises(BrokenRecord, match="model.keras is a folder, not a model file"):
        RunStore(runs_dir).load_model(runs_dir / run_id)


def test_foreign_keras_model_is_refused_cleanly(trained, runs_dir):
    keras = keras_tf()
    run = copy_run(trained, runs_dir)
    foreign = keras.Sequential([keras.Input(shape=(5,)), keras.layers.Dense(3)])
    foreign.save(run / "model.keras")
    result = invoke("evaluate", run.name)
    assert_clean_error(result, None, "not an fmnist model")


def test_run_without_model_is_refused_cleanly(trained, runs_dir):
    run = copy_run(trained, runs_dir)
    (run / "model.keras").unlink()
    assert_clean_error(invoke("evaluate", run.name), 2, "no saved model")


def test_broken_config_json_is_refused_cleanly(trained, runs_dir):
    run = copy_run(trained, runs_dir)
    (run / "config.json").write_text('{"hidden": [100], "optim')
    assert_clean_error(invoke("evaluate", run.name), None, "config.json")
    assert_clean_error(invoke("summary", run.name), None, "config.json")


def test_evaluate_keeps_its_result_when_the_run_cannot_be_written(trained, runs_dir, monkeypatch):
    """A real model scored for real; only storing the result fails (read-only folder, even for root)."""
    import errno
    import json

    from fmnist_cli import store

    run = copy_run(trained, runs_dir)
    before = (run / "run.json").read_text()
    real = store.atomic_write_json

    def read_only(path, data, **kw):
        if path.name == "run.json":
            raise store.storage_error(OSError(errno.EROFS, "Read-only file system"), path)
        return real(path, data, **kw)

    monkeypatch.setattr(store, "atomic_write_json", read_only)
    result = invoke("evaluate", run.name, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert 0.1 < data["accuracy"] <= 1 and data["stored"] is False and "permission denied" in data["store_error"]
    assert "not stored" in result.stderr and "Traceback" not in result.stderr
    assert (run / "run.json").read_text() == before


# --- runs folder problems ----------------------------------------------------------------------

def test_runs_dir_under_a_file_fails_cleanly_even_for_root(tmp_path):
    blocker = tmp_path / "somefile"
    blocker.write_text("not a folder")
    result = invoke("train", *TINY, "--runs-dir", blocker / "runs")
    assert_clean_error(result, 2, f"is under {blocker}, which is a file", "--runs-dir")   # bad input, before training
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_runs_dir_fails_cleanly(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        result = invoke("train", *TINY, "--runs-dir", ro)
        assert_clean_error(result, 1, "permission denied", str(ro))
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_runs_rm_in_a_read_only_folder_says_what_to_check(trained, runs_dir, monkeypatch):
    # Root ignores permissions, so the refusal is the one a read-only folder gives os.rename. The
    # advice is about that folder; another --runs-dir would not remove anything.
    import errno

    from fmnist_cli import store

    run = copy_run(trained, runs_dir)

    def refused(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(store.os, "rename", refused)
    result = invoke("runs", "rm", run.name, "--yes")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]   # after the list of what was to go
    assert error == f"Error: Cannot remove {run}: permission denied; check the permissions of {runs_dir}."
    assert (run / "model.keras").exists()


# --- safe mode ---------------------------------------------------------------------------------

def test_model_with_a_lambda_layer_is_refused_and_never_runs(trained, runs_dir, tmp_path):
    keras = keras_tf()
    run = copy_run(trained, runs_dir)
    marker = tmp_path / "lambda-ran"
    code = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")  # noqa: S307
    model = keras.Sequential([keras.Input(shape=(28, 28)), keras.layers.Lambda(code),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.save(run / "model.keras")
    marker.unlink(missing_ok=True)   # building the model above ran it once
    result = invoke("evaluate", run.name)
    assert_clean_error(result, None, "could not be opened", "Lambda", "safe mode")
    assert not marker.exists(), "the model file's code ran"
    assert not read_json(run / "run.json").get("evaluations")


def test_load_model_always_asks_for_safe_mode(trained, runs_dir, monkeypatch):
    keras = keras_tf()
    from fmnist_cli.store import RunStore

    seen = {}
    real = keras.models.load_model

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(keras.models, "load_model", spy)
    RunStore(runs_dir).load_model(copy_run(trained, runs_dir))
    assert seen.get("safe_mode") is True


def test_a_model_file_that_is_not_a_keras_archive_is_listed_as_damaged(fake_engine, runs_dir):
    """`echo garbage > model.keras`: `runs` lists the run broken at once, and `runs rm --broken`
    removes it, rather than waiting for an `evaluate` to find out."""
    import json

    run_id = json.loads(invoke("train", "--epochs", "1", "--json").stdout)["run_id"]
    (runs_dir / run_id / "model.keras").write_text("garbage\n")
    (listed,) = json.loads(invoke("runs", "--json").stdout)
    assert listed["status"] == "broken" and "not a Keras model file" in listed["reason"], listed
    assert invoke("runs", "rm", "--broken", "--yes").exit_code == 0
    assert not (runs_dir / run_id).exists()


def test_latest_with_only_damaged_runs_says_what_there_is(fake_engine, runs_dir):
    """Not "no finished runs, train one" as if the folder were empty: it counts what it has."""
    import json

    run_id = json.loads(invoke("train", "--epochs", "1", "--json").stdout)["run_id"]
    (runs_dir / run_id / "config.json").write_text("{garbage")
    assert_clean_error(invoke("evaluate", "latest"), 2, "There are no finished runs", "1 broken",
                       "`fmnist runs` lists them")
