"""Reliability: clean user errors (no tracebacks), real signals to real processes, divergence,
concurrent processes on one runs folder, tolerant listings, fuzzed options and Keras's safe mode.

Training is kept tiny (--limit 500..3000, a few epochs); the signal tests run the real `fmnist`
command in a subprocess, the rest mostly run the CLI in this process on TensorFlow.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fmnist, invoke, read_json

DATA_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
TINY = ("--limit", "500", "--epochs", "1")


# --- helpers -----------------------------------------------------------------------------------

def real_data_dir() -> Path:
    from fmnist_cli import data

    try:
        return data.locate(os.environ.get("FMNIST_DATA_DIR") or None)[0]
    except Exception:
        pytest.skip("the real Fashion-MNIST files are not installed")


def texts(result) -> tuple[str, str]:
    """(stdout, stderr) of a CliRunner result or a CompletedProcess."""
    return result.stdout or "", result.stderr or ""


def code_of(result) -> int:
    return result.exit_code if hasattr(result, "exit_code") else result.returncode


def sentences(message: str) -> int:
    """A rough count of the sentences of an error message. Parenthesised details (a library's own
    message, say), quoted values and `commands` are not counted."""
    text = re.sub(r"^(Unexpected )?[Ee]rror:\s*", "", message.strip())
    for abbrev in ("e.g.", "i.e.", "etc."):
        text = text.replace(abbrev, "X")
    text = re.sub(r"`[^`]*`", "CMD", text)
    text = re.sub(r"'[^'\n]*'", "Q", text)
    previous = None
    while previous != text:
        previous, text = text, re.sub(r"\([^()]*\)", "", text)
    return max(1, len(re.findall(r"[.!?](?=\s|$)", text)))


def assert_clean_error(result, code: int | None = 2, *contains: str, max_sentences: int = 2) -> str:
    """The error contract: a short plain message on stderr, the right exit code, no traceback."""
    out, err = texts(result)
    rc = code_of(result)
    assert rc != 0, f"expected a failure, got exit 0:\n{out}\n{err}"
    if code is not None:
        assert rc == code, f"exit {rc}, expected {code}:\n{out}\n{err}"
    assert "Traceback" not in out + err, out + err
    message = err.strip()
    assert message, f"nothing on stderr (stdout: {out!r})"
    assert message.startswith("Error:"), message
    assert "Unexpected error" not in message, message
    lines = [ln for ln in message.splitlines() if ln.strip()]
    assert len(lines) <= 2, f"{len(lines)} lines:\n{message}"
    assert sentences(message) <= max_sentences, f"{sentences(message)} sentences: {message}"
    for text in contains:
        assert text in message, f"{text!r} not in: {message}"
    return message


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


def keras_tf():
    """Keras on TensorFlow in this process (the in-process CLI tests use TensorFlow too)."""
    from fmnist_cli import backend

    backend.configure("tensorflow")
    import keras

    return keras


def leftovers(run_dir: Path) -> list[str]:
    return [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".model-")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One small completed run, trained once for the module; tests copy it into their runs dir."""
    root = tmp_path_factory.mktemp("trained")
    result = invoke("train", *TINY, "--runs-dir", root, "--json")
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout)["run_dir"])


def copy_run(src: Path, runs_dir: Path) -> Path:
    dst = runs_dir / src.name
    shutil.copytree(src, dst)
    return dst


# --- user errors: one clean message, no traceback ------------------------------------------------

BAD_OPTIONS = [
    (["--epochs", "0"], "--epochs"),
    (["--hidden", "100,abc"], "--hidden"),
    (["--dropout", "1.5"], "--dropout"),
    (["--optimizer", "adamx"], "Unknown optimizer"),
    (["--optimizer", "sgd:lr=-1"], "learning rate"),
    (["--activation", "softmaxx"], "Unknown activation"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--val-size", "1"], "--val-size"),
    (["--limit", "3"], "--limit"),
    (["--learning-rate", "0"], "learning rate"),
    (["--backend", "torch"], "backend"),
    (["--engine", "fused"], "fused"),
]


@pytest.mark.parametrize("args,mentions", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option_values_are_one_clean_message(args, mentions, runs_dir):
    assert_clean_error(invoke("train", *args), 2, mentions)
    assert not runs_dir.exists(), "a refused command must not create the runs folder"


@pytest.mark.parametrize("args", [a for a, _ in BAD_OPTIONS[:7]], ids=[" ".join(a) for a, _ in BAD_OPTIONS[:7]])
def test_bad_option_values_in_a_real_process(args, runs_dir):
    # What a user sees: the message alone on stderr, nothing on stdout. Refused before TensorFlow starts.
    result = fmnist("train", *args, timeout=60)
    assert_clean_error(result, 2)
    assert result.stdout == ""
    assert not runs_dir.exists()


@pytest.mark.parametrize("args", [["--epochs", "abc"], ["--dropout", "x"], ["--nope"]])
def test_unparsable_values_are_usage_errors_without_traceback(args):
    # Typer's own parsing errors: exit 2 and a usage hint, no traceback.
    result = fmnist("train", *args, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert "Usage:" in result.stderr or "Error" in result.stderr


@pytest.mark.parametrize("command", ["compare", "summary"])
def test_bad_options_on_other_commands(command):
    args = ["sgd"] if command == "compare" else []
    assert_clean_error(invoke(command, *args, "--hidden", "100,abc"), 2, "--hidden")
    assert_clean_error(invoke(command, *args, "--dropout", "1.5"), 2, "--dropout")


def test_debug_flag_shows_the_traceback():
    result = fmnist("--debug", "train", "--epochs", "0", timeout=60)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "UsageError" in result.stderr
    env_result = fmnist("train", "--epochs", "0", env={"FMNIST_DEBUG": "1"}, timeout=60)
    assert "Traceback" in env_result.stderr


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


def test_garbage_model_file_is_refused_cleanly(trained, runs_dir):
    run = copy_run(trained, runs_dir)
    (run / "model.keras").write_bytes(os.urandom(3000))
    result = invoke("evaluate", run.name)
    assert_clean_error(result, None, "model.keras", "not a Keras model file")
    assert code_of(result) in (1, 2)
    assert "evaluations" not in read_json(run / "run.json")


def test_model_file_that_is_a_directory_or_empty(trained, runs_dir):
    run = copy_run(trained, runs_dir)
    (run / "model.keras").write_bytes(b"")
    assert_clean_error(invoke("evaluate", run.name), None, "model.keras")
    (run / "model.keras").unlink()
    (run / "model.keras").mkdir()
    assert_clean_error(invoke("evaluate", run.name), None, "model")


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


def test_runs_dir_under_a_file_fails_cleanly_even_for_root(tmp_path):
    blocker = tmp_path / "somefile"
    blocker.write_text("not a folder")
    result = invoke("train", *TINY, "--runs-dir", blocker / "runs")
    message = assert_clean_error(result, 1, "Cannot write", str(blocker))
    assert "runs-dir" in message or "directory" in message.lower()
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


@pytest.mark.parametrize("name", ["../../x", "../x", "x/../../y", "/tmp/abs", ".hidden", "a/b", "..", "x" * 65, ""])
def test_path_like_run_names_are_refused(tmp_path, runs_dir, name):
    before = tree(tmp_path)
    assert_clean_error(invoke("train", *TINY, "--name", name), 2, "Invalid run name")
    assert tree(tmp_path) == before, "nothing may be created anywhere"
    if name == "../../x":   # and once in a real process, from inside a folder where ../../x would land
        cwd = tmp_path / "a" / "b"
        cwd.mkdir(parents=True)
        result = fmnist("train", *TINY, "--name", name, "--runs-dir", "runs", cwd=cwd, timeout=60)
        assert_clean_error(result, 2, "Invalid run name")
        assert tree(tmp_path) == before | {"a", "a/b"}


# --- real signals to real processes -------------------------------------------------------------

class Fmnist:
    """A real `fmnist` process with its output read line by line as it comes."""

    def __init__(self, *args, env=None):
        # No PYTHONUNBUFFERED: progress must reach a pipe line by line on its own (`fmnist train | tee`).
        full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "PYTHONUNBUFFERED"}
        self.proc = subprocess.Popen([sys.executable, "-m", "fmnist_cli", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=full_env, start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.out, self.lines), daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self.err, None), daemon=True)]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream, sink, lines):
        for line in stream:
            sink.append(line)
            if lines is not None:
                lines.put(line)
        if lines is not None:
            lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                line = None
                left = 0
            if line is None:
                self.kill()
                raise AssertionError(f"{pattern!r} never appeared (exit {self.proc.returncode}, "
                                     f"{'timed out' if left <= 0 else 'output ended'}):\n{self.output()}")
            if re.search(pattern, line):
                return line

    def signal_and_wait(self, signum, limit: float = 15) -> tuple[int, float]:
        sent = time.monotonic()
        self.proc.send_signal(signum)
        try:
            rc = self.proc.wait(timeout=limit + 30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"no exit within {limit + 30}s of the signal:\n{self.output()}")
        for t in self._threads:
            t.join(timeout=10)
        return rc, time.monotonic() - sent

    def output(self) -> str:
        return "".join(self.out) + "\n--- stderr ---\n" + "".join(self.err)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def processes():
    started: list[Fmnist] = []

    def start(*args, **kw):
        p = Fmnist(*args, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


def assert_interrupted_run(run_dir: Path):
    info = read_json(run_dir / "run.json")
    assert info["status"] == "interrupted", info
    history = read_json(run_dir / "history.json")
    assert len(history["loss"]) >= 1 and len(history["loss"]) == info["epochs_run"]
    assert info["model_epoch"] == len(history["loss"])
    assert not leftovers(run_dir), leftovers(run_dir)
    keras = keras_tf()
    import numpy as np

    model = keras.models.load_model(run_dir / "model.keras")
    assert model.predict(np.zeros((2, 28, 28), "float32"), verbose=0).shape == (2, 10)


def listed_runs() -> dict[str, dict]:
    result = fmnist("runs", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    return {r["id"]: r for r in json.loads(result.stdout)}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_training_and_keeps_finished_epochs(signum, processes, runs_dir):
    p = processes("train", "--epochs", "50", "--limit", "5000")
    p.wait_for(r"^epoch 1/50 ")
    rc, waited = p.signal_and_wait(signum)
    assert rc == 130, p.output()
    assert waited <= 15, f"took {waited:.1f}s to stop"
    assert "Traceback" not in p.output()
    assert "Interrupted" in p.output()
    (run_dir,) = [d for d in runs_dir.iterdir() if d.is_dir()]
    assert_interrupted_run(run_dir)
    assert len(read_json(run_dir / "history.json")["loss"]) < 50
    listed = listed_runs()
    assert listed[run_dir.name]["status"] == "interrupted"


def test_signal_during_compare_then_resume_retrains_only_unfinished(processes, runs_dir):
    p = processes("compare", "sgd", "adam", "--epochs", "3", "--limit", "3000")
    p.wait_for(r"^\[adam #0\] epoch 1/3 ")
    rc, waited = p.signal_and_wait(signal.SIGINT)
    assert rc == 130, p.output()
    assert waited <= 15, f"took {waited:.1f}s to stop"
    assert "Traceback" not in p.output()
    (record_path,) = (runs_dir / "comparisons").glob("*.json")
    record = read_json(record_path)
    assert f"--resume {record['id']}" in p.output()
    sgd_id, adam_id = (v["runs"][0] for v in record["variants"])
    assert read_json(runs_dir / sgd_id / "run.json")["status"] == "completed"
    assert_interrupted_run(runs_dir / adam_id)
    listed = listed_runs()
    assert listed[sgd_id]["status"] == "completed" and listed[adam_id]["status"] == "interrupted"
    assert listed[adam_id]["comparison"] == record["id"]

    resumed = invoke("compare", "--resume", record["id"], "--json")   # in process: TensorFlow is loaded
    assert resumed.exit_code == 0, resumed.stderr
    assert "Traceback" not in resumed.stdout + resumed.stderr
    after = read_json(record_path)
    new_sgd, new_adam = (v["runs"][0] for v in after["variants"])
    assert new_sgd == sgd_id, "a completed run must not be retrained"
    assert new_adam != adam_id
    assert read_json(runs_dir / new_adam / "run.json")["status"] == "completed"
    assert len(read_json(runs_dir / new_adam / "history.json")["loss"]) == 3
    summary = json.loads(resumed.stdout)
    assert [v["status"] for v in summary["variants"]] == ["completed", "completed"]
    # resuming a finished comparison trains nothing
    again = invoke("compare", "--resume", record["id"], "--json")
    assert again.exit_code == 0
    assert [v["runs"][0] for v in read_json(record_path)["variants"]] == [sgd_id, new_adam]


# --- divergence ----------------------------------------------------------------------------------

def test_diverging_run_is_marked_and_explained(runs_dir):
    result = invoke("train", "--optimizer", "sgd", "--learning-rate", "1e6", "--limit", "1000", "--epochs", "3")
    out, err = texts(result)
    assert result.exit_code not in (0, 130), out + err
    assert "Traceback" not in out + err
    assert "learning rate" in out + err
    (run_dir,) = [d for d in runs_dir.iterdir() if d.is_dir()]
    info = read_json(run_dir / "run.json")
    assert info["status"] == "diverged" and "learning rate" in info["message"]
    assert not leftovers(run_dir)
    # the listing and `latest` cope with it: a diverged run is never picked as `latest`
    listed = invoke("runs", "--json")
    assert json.loads(listed.stdout)[0]["status"] == "diverged"
    assert_clean_error(invoke("evaluate", "latest"), 2, "no finished runs")
    assert_clean_error(invoke("evaluate", run_dir.name), 2, "no saved model")


def test_diverging_run_json_output_is_valid_json(runs_dir):
    result = invoke("train", "--optimizer", "sgd:lr=1e6", "--limit", "1000", "--epochs", "2", "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)   # NaN written as null: any JSON parser reads it
    assert out["status"] == "diverged" and "learning rate" in out["message"]


def test_diverging_variant_in_compare_is_marked_and_the_other_completes(runs_dir):
    result = invoke("compare", "sgd:lr=1e6", "adam", "--limit", "1000", "--epochs", "2", "--json")
    out, err = texts(result)
    assert "Traceback" not in out + err
    assert result.exit_code != 130
    summary = json.loads(out)
    by_label = {v["label"]: v for v in summary["variants"]}
    diverged, adam = by_label["sgd:lr=1e+06"], by_label["adam"]
    assert diverged["status"] == "diverged"
    assert "learning rate" in diverged["runs"][0]["message"]
    assert adam["status"] == "completed" and adam["aggregate"]["epochs"] == 2
    assert summary["best_variant"] == "adam"
    table = invoke("compare", "--show", summary["comparison_id"])
    assert table.exit_code == 0 and "diverged" in table.stdout and "learning rate" in table.stdout


# --- concurrency --------------------------------------------------------------------------------

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
    from fmnist_cli import runs

    assert {r["id"] for r in runs.list_runs(runs_dir)} == ids


def test_create_run_from_many_threads_gives_unique_folders(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from fmnist_cli import runs
    from fmnist_cli.config import RunConfig

    monkeypatch.setattr(os, "fsync", lambda fd: None)   # durability is not the point here; speed is
    root = tmp_path / "threads"
    config = RunConfig(name="same").validate()
    barrier = threading.Barrier(50)

    def make(_):
        barrier.wait()
        return runs.create_run(root, config)

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

    from fmnist_cli import runs
    from fmnist_cli.config import RunConfig

    run_dir = runs.create_run(tmp_path / "r", RunConfig().validate())
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: runs.update_run(run_dir, **{f"k{i}": i}), range(40)))
    info = read_json(run_dir / "run.json")
    assert all(info[f"k{i}"] == i for i in range(40))
    assert info["status"] == "running"


def test_atomic_write_never_leaves_a_partial_file(tmp_path, monkeypatch):
    from fmnist_cli import runs
    from fmnist_cli.errors import StorageError

    target = tmp_path / "run.json"
    runs.atomic_write_json(target, {"v": 1})

    def boom(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs.os, "replace", boom)
    with pytest.raises(StorageError, match="disk is full"):
        runs.atomic_write_json(target, {"v": 2, "big": "x" * 100_000})
    monkeypatch.undo()
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"], "the temporary file is removed"
    with pytest.raises(StorageError):
        runs.atomic_write_json(tmp_path / "missing" / "run.json", {})


def test_run_files_are_readable_like_any_other_file(tmp_path):
    """Run files are written through mkstemp (mode 0600); they must get the usual umask mode so that
    a shared runs folder (or a teammate's `fmnist runs`) can read them, as it can read model.keras."""
    from fmnist_cli import runs
    from fmnist_cli.config import RunConfig

    old = os.umask(0o022)
    try:
        run_dir = runs.create_run(tmp_path / "r", RunConfig().validate())
        runs.atomic_write_text(tmp_path / "out.csv", "a,b\n")
    finally:
        os.umask(old)
    for path in (run_dir / "run.json", run_dir / "config.json", tmp_path / "out.csv"):
        assert path.stat().st_mode & 0o777 == 0o644, f"{path.name}: {oct(path.stat().st_mode & 0o777)}"


# --- listings survive broken and unfinished runs ------------------------------------------------

def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_listing_survives_broken_runs(trained, runs_dir):
    from fmnist_cli import runs

    good = copy_run(trained, runs_dir)
    config = (good / "config.json").read_text()

    def make(name, run_json=None, config_json=config):
        d = runs_dir / name
        d.mkdir()
        if config_json is not None:
            (d / "config.json").write_text(config_json)
        if run_json is not None:
            (d / "run.json").write_text(run_json if isinstance(run_json, str) else json.dumps(run_json))
        return d

    make("20260101-000001-half-written", '{"id": "20260101-000001-half-written", "sta')
    make("20260101-000002-no-run-json")
    make("20260101-000003-empty-folder", config_json=None)
    make("20260101-000004-dead", {"id": "20260101-000004-dead", "status": "running", "pid": _dead_pid(),
                                  "host": socket.gethostname(), "created": "2026-01-01T00:00:04+00:00"})
    make("20260101-000005-alive", {"id": "20260101-000005-alive", "status": "running", "pid": os.getpid(),
                                   "host": socket.gethostname(), "created": "2026-01-01T00:00:05+00:00"})
    make("20260101-000006-bad-config", {"id": "x", "status": "completed"}, config_json="[1, 2")
    make("20260101-000007-binary", "\x00\xff garbage")
    (runs_dir / "stray-file.txt").write_text("hello")
    (runs_dir / "comparisons").mkdir()
    (runs_dir / "comparisons" / "20260101-000000-cmp-dead.json").write_text("{broken")

    records = {r["run_dir"].rsplit("/", 1)[-1]: r for r in runs.list_runs(runs_dir)}
    status = {k: v["status"] for k, v in records.items()}
    assert status[good.name] == "completed"
    assert status["20260101-000001-half-written"] == "broken"
    assert status["20260101-000002-no-run-json"] == "broken"
    assert status["20260101-000003-empty-folder"] == "broken"
    assert status["20260101-000004-dead"] == "crashed"
    assert status["20260101-000005-alive"] == "running"
    assert status["20260101-000006-bad-config"] == "broken"
    assert status["20260101-000007-binary"] == "broken"
    assert len(records) == 8

    table = invoke("runs")
    assert table.exit_code == 0, table.output
    assert "crashed" in table.stdout and "broken" in table.stdout and good.name in table.stdout
    listed = invoke("runs", "--json")
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)) == 8
    cmp_list = invoke("compare", "--list", "--json")
    assert cmp_list.exit_code == 0 and json.loads(cmp_list.stdout)[0]["broken"]
    # `latest` still finds the one good run; a broken one is refused cleanly
    assert runs.resolve(runs_dir, "latest") == good
    assert_clean_error(invoke("evaluate", "20260101-000002-no-run-json"), None)
    assert_clean_error(invoke("compare", "--show", "20260101-000000-cmp-dead"), None, "unreadable")


@pytest.mark.parametrize("run_json", ["[]", "null", "42", '"running"', '{"status": 5}',
                                      '{"status": "running", "pid": 100000000000000000000, "host": "%s"}'
                                      % socket.gethostname()])
def test_listing_survives_run_json_that_is_not_an_object(trained, runs_dir, run_json):
    from fmnist_cli import runs

    copy_run(trained, runs_dir)
    odd = copy_run(trained, runs_dir / "odd")   # a second run, renamed below
    target = runs_dir / "20260101-000000-odd"
    odd.rename(target)
    (runs_dir / "odd").rmdir()
    (target / "run.json").write_text(run_json)
    records = runs.list_runs(runs_dir)
    assert len(records) == 2
    odd_record = next(r for r in records if r["run_dir"].endswith("20260101-000000-odd"))
    assert odd_record["status"] in ("broken", "crashed") and odd_record["id"] == "20260101-000000-odd"
    assert invoke("runs").exit_code == 0


@pytest.mark.parametrize("config_json", ['{"optimizer": {"name": "nope"}}', '{"optimizer": 5}',
                                         '{"hidden": "abc"}', '{"epochs": "5"}', "[]"])
def test_listing_survives_foreign_config_json(trained, runs_dir, config_json):
    from fmnist_cli import runs

    run = copy_run(trained, runs_dir)
    (run / "config.json").write_text(config_json)
    (record,) = runs.list_runs(runs_dir)
    assert record["status"] == "broken" and record["config"] is None
    table = invoke("runs")
    assert table.exit_code == 0 and "broken" in table.stdout


# --- fuzzed options: never a traceback ---------------------------------------------------------

VALUE = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-10**12, max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "1", "-1", "1e6", "nan", "inf", "-0", "0.5", "100,abc", "300,100", "sgd:lr=0.1",
                     "adam:momentum=0.9", "relu", "sigmoid", "", " ", "--help", "1,2,3,4,5,6,7,8,9"]),
)
OPTION_NAMES = ["--epochs", "--hidden", "--dropout", "--batch-size", "--learning-rate", "--optimizer",
                "--activation", "--val-size", "--limit"]
SUMMARY_OPTIONS = ["--hidden", "--dropout", "--activation"]


def _known_bug(name: str, value: str) -> bool:
    """parse_hidden accepts any str.isdigit() text, and int() refuses some of it ('²'): known, reported
    (see test_hidden_with_superscript_digits_is_a_usage_error)."""
    return name == "--hidden" and any(c.isdigit() and not c.isdecimal() for c in value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(options=st.dictionaries(st.sampled_from(OPTION_NAMES), VALUE, max_size=5),
       command=st.sampled_from(["train", "summary"]))
def test_random_option_values_never_crash(tmp_path, options, command):
    empty = tmp_path / "no-data"   # train's guard: valid options end in the data error, nothing trains
    empty.mkdir(exist_ok=True)
    args: list[str] = [command]
    for name, value in options.items():
        if command == "summary" and name not in SUMMARY_OPTIONS:
            continue
        if _known_bug(name, value):
            continue
        args += [name, value]
    if command == "train":
        args += ["--data-dir", str(empty)]
    result = invoke(*args)
    out, err = texts(result)
    assert result.exit_code in (0, 2), f"{args}: exit {result.exit_code}\n{out}\n{err}"
    assert "Traceback" not in out + err and "Unexpected error" not in out + err, f"{args}\n{out}\n{err}"
    assert (out + err).strip(), args
    if command == "train":
        assert result.exit_code == 2, f"{args}\n{out}"   # a value is never taken for --help
        if "not found" in err:   # every option was valid: the guard stopped it
            assert str(empty) in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_hidden_with_superscript_digits_is_a_usage_error():
    assert_clean_error(invoke("summary", "--hidden", "²"), 2, "--hidden")


# --- safe mode --------------------------------------------------------------------------------------

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
    assert "evaluations" not in read_json(run / "run.json")


def test_load_model_always_asks_for_safe_mode(trained, runs_dir, monkeypatch):
    keras = keras_tf()
    from fmnist_cli import runs

    seen = {}
    real = keras.models.load_model

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(keras.models, "load_model", spy)
    runs.load_model(copy_run(trained, runs_dir))
    assert seen.get("safe_mode") is True
