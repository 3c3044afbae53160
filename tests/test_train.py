"""train, evaluate and runs end to end through the CLI, on small real subsets (TensorFlow, in process)."""

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import invoke, read_json

SMALL = ("--limit", "1000", "--epochs", "2")


def train_json(*args):
    # SMALL's options but those the test gives itself (an option given twice is refused)
    small = [x for i in range(0, len(SMALL), 2) if SMALL[i] not in args for x in SMALL[i:i + 2]]
    result = invoke("train", *small, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_train_json_shape_and_saved_run(runs_dir):
    out = train_json("--optimizer", "adam", "--name", "first")
    for key in ("run_id", "run_dir", "model_path", "status", "config", "history", "best_epoch", "seconds"):
        assert key in out
    assert out["status"] == "completed" and out["run_id"].endswith(out["run_id"][-4:])
    assert "first" in out["run_id"]
    hist = out["history"]
    assert all(len(hist[k]) == 2 for k in ("loss", "accuracy", "val_loss", "val_accuracy"))
    assert out["best_epoch"] == int(np.argmax(hist["val_accuracy"])) + 1
    run_dir = Path(out["run_dir"])
    assert run_dir.parent == runs_dir
    assert {"config.json", "history.json", "model.keras", "run.json"} <= {p.name for p in run_dir.iterdir()}
    info = read_json(run_dir / "run.json")
    assert info["status"] == "completed" and info["versions"]["backend"] == "tensorflow"
    assert read_json(run_dir / "config.json")["optimizer"]["name"] == "adam"
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".model-")]


def test_saved_model_opens_in_plain_keras_and_scores_what_was_reported():
    import keras

    from fmnist_cli import data

    out = train_json()
    model = keras.models.load_model(out["model_path"])
    split = data.make_split(data.load(), limit=1000)
    loss, acc = model.evaluate(split.x_val, split.y_val, verbose=0)
    assert acc == pytest.approx(out["history"]["val_accuracy"][-1], abs=1e-6)
    assert loss == pytest.approx(out["history"]["val_loss"][-1], rel=1e-4)


def test_same_seed_same_numbers():
    a, b = train_json("--seed", "7"), train_json("--seed", "7")
    assert a["history"]["loss"] == b["history"]["loss"]
    assert a["history"]["val_accuracy"] == b["history"]["val_accuracy"]
    c = train_json("--seed", "8")
    assert c["history"]["loss"] != a["history"]["loss"]


def test_plain_output_is_one_line_per_epoch():
    result = invoke("train", *SMALL)
    assert result.exit_code == 0
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/2", "2/2"]
    assert "val_accuracy" in lines[0] and "saved to" in result.stdout


def test_early_stopping_keeps_best_weights():
    import keras

    from fmnist_cli import data

    out = train_json("--epochs", "30", "--early-stopping", "1", "--optimizer", "sgd:lr=0.5")
    hist = out["history"]
    assert len(hist["loss"]) < 30 and out["stopped_early"] and out["config"]["monitor"] == "val_loss"
    best = out["best_epoch"]   # by the default monitor, val_loss: its lowest
    assert hist["val_loss"][best - 1] == min(hist["val_loss"]) and out["model_epoch"] == best
    assert out["best_val_accuracy"] == hist["val_accuracy"][best - 1]
    model = keras.models.load_model(out["model_path"])
    split = data.make_split(data.load(), limit=1000)
    loss, acc = model.evaluate(split.x_val, split.y_val, verbose=0)
    assert acc == pytest.approx(hist["val_accuracy"][best - 1], abs=1e-6)
    assert loss == pytest.approx(hist["val_loss"][best - 1], rel=1e-4)


def test_evaluate_latest_val_and_test_stored_in_run():
    out = train_json()
    result = invoke("evaluate", "--json")
    ev = json.loads(result.stdout)
    assert ev["run_id"] == out["run_id"] and ev["split"] == "val" and ev["n"] == 12000
    assert ev["accuracy"] == pytest.approx(out["history"]["val_accuracy"][-1], abs=1e-6)
    assert np.array(ev["confusion_matrix"]).sum() == 12000 and len(ev["per_class"]) == 10
    text = invoke("evaluate", out["run_id"][:20], "--split", "test")
    assert text.exit_code == 0 and "Ankle boot" in text.output and "Confusion matrix" in text.output
    info = read_json(Path(out["run_dir"]) / "run.json")
    assert set(info["evaluations"]) == {"val", "test"}


def test_runs_lists_newest_first_with_test_accuracy():
    a = train_json("--name", "older")
    b = train_json("--name", "newer")
    invoke("evaluate", b["run_id"], "--split", "test")
    listing = json.loads(invoke("runs", "--json").stdout)
    assert [r["id"] for r in listing] == [b["run_id"], a["run_id"]]
    assert listing[0]["evaluations"]["test"]["accuracy"] > 0.5
    table = invoke("runs")
    assert a["run_id"] in table.output and "completed" in table.output


def test_summary_of_a_run():
    out = train_json("--hidden", "64,32")
    result = json.loads(invoke("summary", out["run_id"], "--json").stdout)
    assert result["total_params"] == 784 * 64 + 64 + 64 * 32 + 32 + 330


def test_evaluate_without_runs_is_a_clean_error():
    result = invoke("evaluate")
    assert result.exit_code == 2 and "no finished runs" in result.output and "Traceback" not in result.output


def test_a_stop_after_the_last_epoch_is_not_an_interruption(runs_dir):
    from fmnist_cli import training
    from fmnist_cli.config import RunConfig
    from fmnist_cli.records import EpochEnd

    config = RunConfig(limit=500, epochs=2).validate()
    seen = []

    def on_event(event):
        if isinstance(event, EpochEnd):
            seen.append(event.epoch)

    result = training.train(config, runs_dir, on_event=on_event, should_stop=lambda: len(seen) >= 2)
    assert result.status == "completed" and result.epochs_run == 2


def test_a_stop_before_the_first_epoch_finished_keeps_nothing(runs_dir):
    """A Ctrl-C in the first epoch: no model and no figures, so no run folder to clutter `fmnist runs`."""
    from fmnist_cli import training
    from fmnist_cli.config import RunConfig

    checks = []

    def should_stop():   # the check before any run exists passes; the engine's first check stops
        checks.append(1)
        return len(checks) > 1

    result = training.train(RunConfig(limit=500, epochs=2).validate(), runs_dir, should_stop=should_stop)
    assert (result.status, result.epochs_run, result.kept) == ("interrupted", 0, False)
    assert [p for p in runs_dir.iterdir() if not p.name.startswith(".")] == []


def test_an_interrupted_run_says_how_to_go_on(runs_dir, fake_engine):
    fake_engine.stop_after = 1
    result = invoke("train", "--epochs", "3", "--json")
    assert result.exit_code == 130
    out = json.loads(result.stdout)
    command = f"fmnist train --resume {out['run_id']}"
    assert out["message"] == f"Interrupted: kept 1 of 3 epochs; `{command}` goes on from there."
    assert out["message"] in result.stderr
    # a runs folder other than the default one is named in the command
    other = runs_dir.parent / "elsewhere"
    out = json.loads(invoke("train", "--epochs", "3", "--runs-dir", other, "--json").stdout)
    assert out["message"].endswith(f"`fmnist train --resume {out['run_id']} --runs-dir {other}` goes on from there.")
