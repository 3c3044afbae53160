"""Real signals to real `fmnist` processes: SIGINT and SIGTERM stop training promptly and keep the
finished epochs, and an interrupted comparison resumes, retraining only what did not finish."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import fmnist, invoke, keras_tf, leftovers, read_json


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
