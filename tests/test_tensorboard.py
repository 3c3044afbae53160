"""TensorBoard logs (--tensorboard DIR, `fmnist export tensorboard`): read back with TensorBoard's own
EventAccumulator and held equal to each run's stored history; one test asks a real `tensorboard`
server over HTTP. Most tests train on the fake engine; two train for real, one per backend."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY, assert_clean_error, invoke, read_json

pytest.importorskip("tensorboard", reason="TensorBoard is not installed (make test installs it)")

from fmnist_cli import tensorboard as tb  # noqa: E402
from fmnist_cli.records import ComparisonRecord, EpochStart, VariantSpec  # noqa: E402
from fmnist_cli.store import RunStore  # noqa: E402

SESSION_START = "_hparams_/session_start_info"
SESSION_END = "_hparams_/session_end_info"


def read_log(logdir: Path) -> dict:
    """{"<run>/<sub>": {tag: [(step, value, wall_time)]}} for every event folder under `logdir`, plus
    the HParams session of a run as {"group", "hparams", "status"} under "<run>/hparams" SESSION_START."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata
    from tensorboard.util import tensor_util

    out = {}
    for folder in sorted(p.parent for p in logdir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
        acc.Reload()
        tags = {}
        for tag in acc.Tags()["tensors"]:
            if tag == SESSION_START:
                info = metadata.parse_session_start_info_plugin_data(acc.SummaryMetadata(tag).plugin_data.content)
                tags[tag] = {"group": info.group_name,
                             "hparams": {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                                         for k, v in info.hparams.items()}}
            elif tag == SESSION_END:
                tags[tag] = metadata.parse_session_end_info_plugin_data(acc.SummaryMetadata(tag).plugin_data.content).status
            else:
                tags[tag] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)), e.wall_time)
                             for e in acc.Tensors(tag)]
        out[str(folder.relative_to(logdir))] = tags
    return out


def f32(values) -> list[float]:
    """History values as TensorBoard stores them: float32."""
    return [float(np.float32(v)) for v in values]


def values(series) -> list[float]:
    return [v for _, v, _ in series]


def check_run(log: dict, run_dir: Path, learning_rate: float) -> None:
    """The run's curves in the log equal its history.json, epoch for epoch (1-based steps)."""
    history = read_json(run_dir / "history.json")
    train, val = log[f"{run_dir.name}/train"], log[f"{run_dir.name}/validation"]
    epochs = list(range(1, len(history["loss"]) + 1))
    for series, key in ((train["epoch_loss"], "loss"), (train["epoch_accuracy"], "accuracy"),
                        (val["epoch_loss"], "val_loss"), (val["epoch_accuracy"], "val_accuracy"),
                        (train["epoch_seconds"], "seconds")):
        assert [s for s, _, _ in series] == epochs, key
        assert values(series) == f32(history[key]), key
    assert values(train["epoch_learning_rate"]) == f32([learning_rate] * len(epochs))
    walls = [w for _, _, w in train["epoch_loss"]]
    assert walls == sorted(walls)   # the run's own clock: started + each epoch's seconds


def runs_of(runs_dir: Path, cid: str) -> list[Path]:
    record = read_json(runs_dir / "comparisons" / f"{cid}.json")
    return [runs_dir / r for v in record["variants"] for r in v["runs"]]


@pytest.fixture
def compared(tmp_path, runs_dir, fake_engine):
    """A comparison of sgd and adam over two seeds (fake engine) with --tensorboard: (log, its id)."""
    logdir = tmp_path / "tb"
    result = invoke("compare", "sgd", "adam", "--repeats", "2", "--epochs", "3", "--tensorboard", logdir, "--json")
    assert result.exit_code == 0, result.output
    return logdir, json.loads(result.stdout)["comparison_id"]


def test_compare_logs_every_run_and_an_hparams_session_per_seed(compared, runs_dir):
    logdir, cid = compared
    log = read_log(logdir)
    runs = runs_of(runs_dir, cid)
    assert len(runs) == 4 and set(log) == {f"{r.name}/{sub}" for r in runs for sub in ("train", "validation", "hparams")}
    for run_dir in runs:
        config = read_json(run_dir / "config.json")
        record = read_json(run_dir / "run.json")
        check_run(log, run_dir, 0.01 if config["optimizer"]["name"] == "sgd" else 0.001)
        session = log[f"{run_dir.name}/hparams"]
        # The trial is the variant (so the dashboard averages its seeds); the seed is no hyperparameter.
        assert session[SESSION_START]["group"] == f"{config['variant']} ({cid})"
        assert session[SESSION_START]["hparams"] == {"optimizer": config["optimizer"]["name"],
                                                     "learning_rate": 0.01 if config["variant"] == "sgd" else 0.001}
        assert session["best_val_accuracy"] == [(record["best_epoch"], float(np.float32(record["best_val_accuracy"])),
                                                 pytest.approx(session["best_val_accuracy"][0][2]))]
        assert values(session["final_val_accuracy"]) == f32([record["final"]["val_accuracy"]])
        assert "test_accuracy" not in session   # not evaluated on the test set
        assert session[SESSION_END] == 1   # STATUS_SUCCESS


def test_export_writes_what_the_live_log_wrote_and_replaces_its_own_files(compared, runs_dir, tmp_path):
    logdir, cid = compared
    again = tmp_path / "again"
    for _ in range(2):   # a second export replaces the first: no curve is doubled
        result = invoke("export", "tensorboard", again, "--comparison", cid, "--json")
        assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["comparison"] == cid and doc["skipped"] == [] and len(doc["runs"]) == 4
    assert {r["group"] for r in doc["runs"]} == {f"sgd ({cid})", f"adam ({cid})"}
    assert all(len(list(p.iterdir())) == 1 for p in again.glob("*/*"))
    assert read_log(again) == read_log(logdir)


def test_test_accuracy_joins_the_session_once_evaluated(compared, runs_dir, tmp_path):
    logdir, cid = compared
    run_dir = runs_of(runs_dir, cid)[0]
    RunStore(runs_dir).record_evaluation(run_dir, "test", {"loss": 0.5, "accuracy": 0.8125, "evaluated": "now", "n": 10})
    assert invoke("export", "tensorboard", logdir, "-c", "latest").exit_code == 0
    assert values(read_log(logdir)[f"{run_dir.name}/hparams"]["test_accuracy"]) == [0.8125]


def test_train_logs_its_run_without_a_session(tmp_path, runs_dir, fake_engine):
    logdir = tmp_path / "tb"
    result = invoke("train", "--epochs", "3", "--optimizer", "sgd:lr=0.05", "--tensorboard", logdir)
    assert result.exit_code == 0, result.output
    assert f"TensorBoard logs written to {logdir}" in result.stdout
    (run_dir,) = runs_dir.iterdir()
    log = read_log(logdir)
    assert set(log) == {f"{run_dir.name}/train", f"{run_dir.name}/validation"}
    check_run(log, run_dir, 0.05)


def test_epochs_reach_the_log_while_training(tmp_path, runs_dir, fake_engine):
    """Each epoch is in the log by the time the next one starts (its history is saved in between)."""
    from fmnist_cli import training
    from fmnist_cli.config import RunConfig

    logdir, seen = tmp_path / "tb", []
    live = tb.Live(RunStore(runs_dir), logdir)

    def on_event(event):
        if isinstance(event, EpochStart) and event.epoch > 1:
            seen.append(len(read_log(logdir)[f"{event.run_id}/train"]["epoch_loss"]))

    training.train(RunConfig(epochs=4).validate(), runs_dir, None, live.wrap(on_event))
    live.finish()
    assert seen == [1, 2, 3]


def test_a_history_that_changed_is_written_again(tmp_path, runs_dir, fake_engine):
    """A resumed run trains its last epochs again: the log follows the store, not what it wrote."""
    assert invoke("train", "--epochs", "3").exit_code == 0
    (run_dir,) = runs_dir.iterdir()
    store = RunStore(runs_dir)
    log = tb.TensorBoardLog(store, tmp_path / "tb")
    assert log.sync(run_dir) == 3
    history = read_json(run_dir / "history.json")
    history = {k: v[:2] + [0.5] for k, v in history.items()}
    store.save_history(run_dir, history)
    assert log.sync(run_dir, final=True) == 3
    log.close()
    check_run(read_log(tmp_path / "tb"), run_dir, 0.001)


def test_export_skips_what_it_cannot_write_and_says_why(compared, runs_dir, tmp_path):
    logdir, cid = compared
    broken, gone = runs_of(runs_dir, cid)[:2]
    (broken / "history.json").write_text("{")
    shutil.rmtree(gone)
    result = invoke("export", "tensorboard", tmp_path / "out", "-c", cid)
    assert result.exit_code == 0, result.output
    assert f"Skipped {broken.name}: it is broken (history.json is not valid JSON)." in result.stdout
    assert f"Skipped {gone.name}: its run folder is gone." in result.stdout
    assert "Wrote 2 run(s) (6 epochs)" in result.stdout
    assert_clean_error(invoke("export", "tensorboard", tmp_path / "out", broken.name), 1, "nothing was written")


def test_variant_hyperparameters_are_the_settings_that_differ():
    from fmnist_cli import compare as cmp
    from fmnist_cli.config import RunConfig

    def hparams(optimizers, vary=()):
        base = RunConfig().validate()
        variants = cmp.expand(base, optimizers, cmp.parse_vary(list(vary)))
        return tb.variant_hparams(ComparisonRecord(id="c", repeats=1, variants=[
            VariantSpec(label=v["label"], settings=v["settings"], config=v["config"], runs=[None]) for v in variants]))

    assert hparams(["sgd", "momentum", "nesterov", "adam"]) == {
        "sgd": {"optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
        "momentum": {"optimizer": "momentum", "learning_rate": 0.01, "momentum": 0.9, "nesterov": False},
        "nesterov": {"optimizer": "nesterov", "learning_rate": 0.01, "momentum": 0.9, "nesterov": True},
        "adam": {"optimizer": "adam", "learning_rate": 0.001}}
    assert hparams([], ["lr=0.1,0.01", "hidden=100,300-100"])["lr=0.1 300-100"] == {"learning_rate": 0.1,
                                                                                        "hidden": "300-100"}
    assert hparams(["adam"]) == {"adam": {"optimizer": "adam", "learning_rate": 0.001}}   # nothing differs


def test_keras_default_learning_rates():
    import inspect

    from helpers import keras_tf

    keras = keras_tf()
    for name, rate in tb.KERAS_LEARNING_RATES.items():
        assert inspect.signature(getattr(keras.optimizers, name)).parameters["learning_rate"].default == rate


# --- what the user gets wrong ---------------------------------------------------------------------

def test_a_bad_log_folder_is_refused_before_anything_trains(tmp_path, runs_dir, fake_engine):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert_clean_error(invoke("train", "--tensorboard", afile), 2, "is a file", "--tensorboard")
    assert_clean_error(invoke("compare", "sgd", "adam", "--tensorboard", afile / "sub"), 2, "--tensorboard")
    assert fake_engine.trained == [] and not (runs_dir / "comparisons").exists()


@pytest.mark.parametrize("args, words", [
    (["export", "tensorboard", "{tmp}"], "Name the runs"),
    (["export", "tensorboard", "{tmp}", "latest", "-c", "latest"], "not both"),
    (["export", "tensorboard", "{tmp}", "-c", "nosuch"], "No comparison 'nosuch'"),
    (["export", "tensorboard", "{tmp}", "nosuchrun"], "No run 'nosuchrun'"),
    (["compare", "--show", "latest", "--tensorboard", "{tmp}"], "--tensorboard does not apply to --show"),
])
def test_export_mistakes_are_one_sentence(args, words, tmp_path):
    assert_clean_error(invoke(*[a.replace("{tmp}", str(tmp_path / "tb")) for a in args]), 2, words)


def test_tensorboard_missing_is_one_sentence(monkeypatch, tmp_path, fake_engine):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    assert_clean_error(invoke("train", "--tensorboard", tmp_path / "tb"), 2, "TensorBoard is not installed",
                       "pip install")
    assert fake_engine.trained == []


def test_a_log_that_fails_midway_costs_no_run(tmp_path, runs_dir, fake_engine, monkeypatch):
    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tb.EventFile, "__init__", full)
    result = invoke("train", "--epochs", "2", "--tensorboard", tmp_path / "tb")
    message = assert_clean_error(result, 1, "Cannot write TensorBoard logs", "the disk is full", "fmnist export tensorboard")
    assert "completed" in read_json(next(runs_dir.iterdir()) / "run.json")["status"], message



def test_an_interrupted_run_exits_130_though_its_log_failed(tmp_path, runs_dir, fake_engine, monkeypatch):
    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tb.EventFile, "__init__", full)
    fake_engine.stop_after = 1   # a Ctrl-C after the first epoch
    result = invoke("train", "--epochs", "3", "--tensorboard", tmp_path / "tb")
    assert result.exit_code == 130, result.output
    assert "Cannot write TensorBoard logs" in result.output

# --- real training, real TensorBoard --------------------------------------------------------------

def test_real_runs_on_both_backends(tmp_path, runs_dir):
    """TensorFlow in this process, JAX in a fresh one: the curves equal the stored histories, and on
    JAX writing the log never imports TensorFlow."""
    result = invoke("train", *TINY, "--hidden", "16", "--tensorboard", tmp_path / "tf")
    assert result.exit_code == 0, result.output
    (run_dir,) = runs_dir.iterdir()
    check_run(read_log(tmp_path / "tf"), run_dir, 0.001)

    code = ("import sys; from fmnist_cli.cli import main; sys.argv = ['fmnist', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\nprint('no tensorflow')")
    jax_runs = tmp_path / "jax-runs"
    proc = subprocess.run([sys.executable, "-c", code, "compare", "sgd", "adam", *TINY, "--hidden", "16",
                           "--backend", "jax", "--runs-dir", str(jax_runs), "--tensorboard", str(tmp_path / "jax")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "no tensorflow" in proc.stdout, proc.stdout + proc.stderr
    log = read_log(tmp_path / "jax")
    for run_dir in (p for p in jax_runs.iterdir() if p.name != "comparisons"):
        check_run(log, run_dir, 0.01 if "sgd" in run_dir.name else 0.001)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                             "X-XSRF-Protected": "1"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_real_tensorboard_serves_the_scalars_and_the_hparams_table(compared, runs_dir):
    logdir, cid = compared
    runs = runs_of(runs_dir, cid)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:   # the server is up once it lists every run (it loads the folder in the background)
            with contextlib.suppress(OSError, ValueError):
                if len(_get(f"{base}/data/runs")) == 12:
                    break
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read() if server.poll() else "timeout"
            time.sleep(0.5)
        run = runs[0]
        points = _get(f"{base}/data/plugin/scalars/scalars?run={run.name}/validation&tag=epoch_accuracy")
        assert [(step, value) for _, step, value in points] == \
            list(zip([1, 2, 3], f32(read_json(run / "history.json")["val_accuracy"])))

        experiment = _get(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        assert {h["name"] for h in experiment["hparamInfos"]} == {"optimizer", "learning_rate"}
        assert {m["name"]["tag"] for m in experiment["metricInfos"]} == {"best_val_accuracy", "final_val_accuracy"}
        groups = _get(f"{base}/data/plugin/hparams/session_groups", {
            "startIndex": 0, "sliceSize": 10, "allowedStatuses": ["STATUS_SUCCESS"],
            "colParams": [{"metric": {"tag": "best_val_accuracy"}, "order": "ORDER_DESC"}]})["sessionGroups"]
        assert {g["name"] for g in groups} == {f"sgd ({cid})", f"adam ({cid})"}
        for group in groups:   # one row per variant: the mean of its two seeds
            seeds = [read_json(runs_dir / s["name"].split("/")[0] / "run.json")["best_val_accuracy"]
                     for s in group["sessions"]]
            (best,) = [m["value"] for m in group["metricValues"] if m["name"]["tag"] == "best_val_accuracy"]
            assert len(seeds) == 2 and math.isclose(best, float(np.mean(f32(seeds))), rel_tol=1e-6)
    finally:
        server.kill()
        server.wait(timeout=30)


def test_export_help_has_examples_and_imports_nothing_heavy():
    code = ("import sys; from typer.testing import CliRunner; from fmnist_cli.cli import app; "
            "r = [CliRunner().invoke(app, a) for a in (['export', '--help'], ['export', 'tensorboard', '--help'])]; "
            "assert all(x.exit_code == 0 for x in r), [x.output for x in r]; "
            "assert 'Examples' in r[1].output and '--comparison' in r[1].output; "
            "bad = [m for m in ('tensorboard', 'tensorflow', 'keras', 'jax', 'numpy') if m in sys.modules]; "
            "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
