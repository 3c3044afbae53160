"""--monitor: the best epoch and early stopping by val_loss (the default, as Keras's EarlyStopping and
the book's chapter 7-3), val_accuracy, loss or accuracy. EpochTracker is held to Keras's own
EarlyStopping callback, decision for decision; the CLI on the fake engine; and the book's chapter
7-3 on the full data (-m full)."""

import json
import re
import random
from pathlib import Path

import numpy as np
import pytest

from fmnist_cli.config import MONITORS, RunConfig
from fmnist_cli.engines import EpochTracker, best_index
from fmnist_cli.store import RunStore
from helpers import assert_clean_error, fmnist, invoke, keras_tf, read_json

# --- EpochTracker against keras.callbacks.EarlyStopping -----------------------------------------------


@pytest.fixture(scope="module")
def keras_model():
    """A tiny compiled model whose metrics are built, so that EarlyStopping's mode "auto" can read
    the accuracy's direction from it as it does in model.fit; its bias marks the epoch it holds."""
    keras = keras_tf()
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", metrics=["accuracy"])
    model.evaluate(np.zeros((2, 2)), np.zeros((2, 1)), verbose=0)
    return model


def keras_decisions(model, monitor, patience, values):
    """Drive keras.callbacks.EarlyStopping(restore_best_weights=True) over `values` as model.fit
    would: (epochs run, stopped early, 1-based epoch whose weights it restores)."""
    import keras

    callback = keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True)
    callback.set_model(model)
    model.stop_training = False
    callback.on_train_begin()
    kernel = model.get_weights()[0]
    run = 0
    for epoch, value in enumerate(values):
        model.set_weights([kernel, np.array([epoch], dtype=np.float32)])   # this epoch's "weights"
        callback.on_epoch_end(epoch, {m: 0.5 for m in MONITORS} | {monitor: value})
        run = epoch + 1
        if model.stop_training:
            break
    callback.on_train_end()
    return run, model.stop_training, int(model.get_weights()[1][0]) + 1


def tracker_decisions(monitor, patience, values):
    tracker = EpochTracker(patience=patience, monitor=monitor)
    run = 0
    for value in values:
        metrics = {m: 0.5 for m in MONITORS} | {monitor: value}
        _, keep_going = tracker.add(metrics, 0.0)
        run += 1
        if not keep_going:
            break
    return run, tracker.stopped_early, tracker.best_epoch


def sequences(seed: int):
    """Value sequences with many ties (few distinct values), strict runs, and float32 near-ties."""
    rng = random.Random(seed)
    out = [[0.5] * 6, [0.5, 0.4, 0.4, 0.4, 0.3], [0.3, 0.4, 0.5, 0.6, 0.7], [0.7, 0.6, 0.5, 0.4, 0.3],
           [0.3, 0.30000000001, 0.3, 0.29999999999, 0.3],            # equal in float32: ties for Keras
           [0.3, np.nextafter(np.float32(0.3), np.float32(1)).item(), 0.3]]   # one float32 step apart
    for _ in range(120):
        pool = [rng.choice([0.2, 0.3, 0.4, 0.5]) for _ in range(3)]
        out.append([rng.choice(pool) if rng.random() < 0.6 else rng.random() for _ in range(rng.randint(1, 12))])
    return out


@pytest.mark.parametrize("monitor", list(MONITORS))
@pytest.mark.parametrize("patience", [1, 2, 3])
def test_tracker_decides_as_keras_early_stopping(keras_model, monitor, patience):
    for values in sequences(10 * list(MONITORS).index(monitor) + patience):
        ours = tracker_decisions(monitor, patience, values)
        theirs = keras_decisions(keras_model, monitor, patience, values)
        assert ours == theirs, (monitor, patience, values)


@pytest.mark.parametrize("monitor", list(MONITORS))
def test_without_early_stopping_the_best_epoch_is_keras_best(keras_model, monitor):
    for values in sequences(7):
        ours = tracker_decisions(monitor, None, values)
        run, stopped, restored = keras_decisions(keras_model, monitor, 10**9, values)
        assert ours == (len(values), False, restored) and run == len(values)
        assert best_index(values, monitor) == restored - 1


def test_directions_and_ties_spelled_out():
    # lower is better for losses, higher for accuracies; a tie is no improvement (the first is kept)
    assert tracker_decisions("val_loss", 2, [0.5, 0.4, 0.4, 0.4, 0.1]) == (4, True, 2)
    assert tracker_decisions("val_accuracy", 2, [0.5, 0.4, 0.4, 0.4, 0.9]) == (3, True, 1)
    assert tracker_decisions("loss", 1, [0.5, 0.6]) == (2, True, 1)
    assert tracker_decisions("accuracy", 1, [0.5, 0.6, 0.6]) == (3, True, 2)
    # an improvement resets the patience
    assert tracker_decisions("val_loss", 2, [0.5, 0.6, 0.4, 0.6, 0.6, 0.1]) == (5, True, 3)


def test_a_resumed_tracker_carries_on_as_if_unbroken():
    history = {"loss": [1.0, 0.9, 0.8], "accuracy": [0.5] * 3, "val_loss": [0.5, 0.4, 0.45],
               "val_accuracy": [0.7, 0.6, 0.9], "seconds": [1.0] * 3}
    tracker = EpochTracker(patience=2, monitor="val_loss")
    tracker.replay(history)
    assert tracker.best_epoch == 2 and tracker.wait == 1
    assert tracker.add({"loss": 0.7, "accuracy": 0.5, "val_loss": 0.41, "val_accuracy": 0.95}, 1.0) == (False, False)
    assert tracker.stopped_early and tracker.best_epoch == 2


# --- config --------------------------------------------------------------------------------------------

def test_new_configs_default_to_val_loss_and_old_ones_read_as_val_accuracy():
    assert RunConfig().validate().monitor == "val_loss"
    assert RunConfig.from_dict(RunConfig().to_dict()).monitor == "val_loss"
    old = RunConfig().to_dict()
    del old["monitor"]   # a config.json written before --monitor existed
    assert RunConfig.from_dict(old).monitor == "val_accuracy"
    assert RunConfig.from_dict({**old, "monitor": "loss"}).monitor == "loss"


@pytest.mark.parametrize("bad", ["val_acc", "", 3, None])
def test_a_bad_monitor_is_refused_with_the_choices(bad):
    from fmnist_cli.errors import UsageError

    with pytest.raises(UsageError) as err:
        RunConfig(monitor=bad).validate()
    assert "val_loss, val_accuracy, loss, accuracy" in str(err.value)


# --- the CLI, on the fake engine ----------------------------------------------------------------------

# val_loss is lowest at epoch 2, val_accuracy highest at epoch 4, loss lowest at 5, accuracy highest at 3
HISTORY = {"loss": [0.9, 0.8, 0.7, 0.6, 0.5, 0.55], "accuracy": [0.70, 0.75, 0.90, 0.80, 0.85, 0.85],
           "val_loss": [0.50, 0.40, 0.45, 0.41, 0.42, 0.43], "val_accuracy": [0.80, 0.82, 0.83, 0.86, 0.84, 0.85],
           "seconds": [0.01] * 6}
BEST = {"val_loss": 2, "val_accuracy": 4, "loss": 5, "accuracy": 3}


@pytest.fixture
def shaped(fake_engine, monkeypatch):
    import fakes

    monkeypatch.setattr(fakes, "fake_history", lambda config, epochs=None: {k: list(v) for k, v in HISTORY.items()})
    return fake_engine


@pytest.mark.parametrize("monitor", [None, *MONITORS])
def test_train_best_epoch_is_the_monitored_one(shaped, monitor):
    args = ["train", "--epochs", "6", "--json"] + (["--monitor", monitor] if monitor else [])
    out = json.loads(invoke(*args).stdout)
    monitor = monitor or "val_loss"
    assert out["config"]["monitor"] == monitor and out["best_epoch"] == BEST[monitor]
    assert out["best_val_accuracy"] == HISTORY["val_accuracy"][BEST[monitor] - 1]
    assert out["model_epoch"] == 6   # no early stopping: the last epoch's weights


def test_early_stopping_watches_val_loss_by_default(shaped, runs_dir):
    out = json.loads(invoke("train", "--epochs", "6", "--early-stopping", "2", "--json").stdout)
    # val_loss: 0.50 0.40* 0.45 0.41 -> two epochs without a lower one: stop after epoch 4, keep epoch 2
    assert out["stopped_early"] and out["epochs_run"] == 4 and out["best_epoch"] == 2 and out["model_epoch"] == 2
    out = json.loads(invoke("train", "--epochs", "6", "--early-stopping", "2", "--monitor", "val_accuracy",
                            "--json").stdout)
    assert out["stopped_early"] and out["epochs_run"] == 6 and out["best_epoch"] == 4 and out["model_epoch"] == 4


def test_train_says_which_metric_the_best_epoch_is_by(shaped):
    text = invoke("train", "--epochs", "6").stdout
    assert "Best epoch (lowest val_loss): 2 (val_loss 0.4000, val_accuracy 0.8200)." in text
    text = invoke("train", "--epochs", "6", "--monitor", "val_accuracy").stdout
    assert "Best epoch (highest val_accuracy): 4 (val_accuracy 0.8600)." in text


def test_the_saved_models_epoch_is_said_and_listed(shaped, runs_dir):
    # Without early stopping the model is the last epoch's: train says so when the best is another,
    # and `fmnist runs` lists the saved model's val acc (what `evaluate --split val` would give).
    text = invoke("train", "--epochs", "6").stdout
    assert "The saved model is the last epoch's (6, val_accuracy 0.8500); --early-stopping N" in text
    invoke("train", "--epochs", "6", "--early-stopping", "2")   # stops after 4, keeps epoch 2
    assert "The saved model" not in invoke("train", "--epochs", "6", "--monitor", "loss",
                                           "--early-stopping", "9").stdout   # best (5) kept: no such line
    rows = [line.split() for line in invoke("runs").stdout.splitlines() if line.startswith("20")]
    assert [row[-4] for row in rows] == ["0.8400", "0.8200", "0.8500"]   # newest first: epochs 5, 2, 6


@pytest.mark.parametrize("command", ["train", "compare"])
def test_an_unknown_monitor_is_a_usage_error_listing_the_choices(fake_engine, command, runs_dir):
    result = invoke(command, *(["adam"] if command == "compare" else []), "--monitor", "val_acc")
    assert result.exit_code == 2
    assert "Unknown monitor 'val_acc'. Choose one of: val_loss, val_accuracy, loss, accuracy." in result.stderr
    assert not runs_dir.exists() or not any(p.name[0].isdigit() for p in runs_dir.iterdir())


def test_monitor_is_refused_where_it_does_not_apply(fake_engine):
    fake_engine.stop_after = 1
    assert invoke("train", "--epochs", "3").exit_code == 130
    fake_engine.stop_after = None
    result = invoke("train", "--resume", "latest", "--monitor", "loss")
    assert result.exit_code == 2 and "--monitor does not apply to --resume" in result.stderr
    assert invoke("compare", "adam", "sgd", "--epochs", "2").exit_code == 0
    result = invoke("compare", "--show", "latest", "--monitor", "loss")
    assert result.exit_code == 2 and "--monitor does not apply to --show" in result.stderr


def test_compare_aggregates_by_the_monitor_and_says_so(shaped, runs_dir):
    out = json.loads(invoke("compare", "adam", "sgd", "--epochs", "6", "--repeats", "2", "--json").stdout)
    assert out["monitor"] == "val_loss" and out["base"]["monitor"] == "val_loss"
    for v in out["variants"]:
        assert v["aggregate"]["best_epoch"]["mean"] == 2
        assert v["aggregate"]["best_val_accuracy"]["mean"] == pytest.approx(0.82)
        assert all(r["best_epoch"] == 2 for r in v["runs"])
    text = invoke("compare", "--show", "latest").stdout
    assert "best epoch: lowest val_loss" in text and "by lowest val_loss" in " ".join(text.split())
    out = json.loads(invoke("compare", "adam", "--epochs", "6", "--monitor", "accuracy", "--json").stdout)
    assert out["monitor"] == "accuracy" and out["variants"][0]["aggregate"]["best_epoch"]["mean"] == 3
    text = " ".join(invoke("compare", "adam", "sgd", "--epochs", "6", "--monitor", "val_accuracy").stdout.split())
    assert "(highest val_accuracy)." in text and "by highest" not in text   # said once, not twice
    assert "early stopping" not in text
    # with early stopping the saved models are the best epoch's, not the last one's: the table says so
    text = " ".join(invoke("compare", "adam", "sgd", "--epochs", "6", "--early-stopping", "2").stdout.split())
    assert re.search(r"each run saved its best epoch's weights \(the runs trained \d+(-\d+)? of 6 epochs\): "
                     r"best val acc is what `fmnist evaluate` gives", text), text
    assert invoke("report", "latest", "--html", runs_dir / "r.html").exit_code == 0
    assert "(the runs trained" in (runs_dir / "r.html").read_text() and "<code>fmnist evaluate</code>" in \
        (runs_dir / "r.html").read_text()
    # without it, a test acc column is the last epoch's models': said under the table and in the report
    cid = json.loads(invoke("compare", "adam", "sgd", "--epochs", "6", "--json").stdout)["comparison_id"]
    assert "test acc is" not in invoke("compare", "--show", cid).stdout
    store = RunStore(runs_dir)
    for info in store.list_runs(comparison=cid):   # as `evaluate --comparison CID --split test` stores it
        store.record_evaluation(Path(info.run_dir), "test", {"loss": 0.4, "accuracy": 0.85,
                                                             "evaluated": "2026-01-01T00:00:00", "n": 10000})
    text = " ".join(invoke("compare", "--show", cid).stdout.split())
    assert "test acc is the saved models', the last epoch's; best val acc is at each run's best epoch" in text


def test_old_runs_and_comparisons_read_as_val_accuracy(shaped, runs_dir):
    """Stored before --monitor existed, they were trained watching val_accuracy: so they read."""
    out = json.loads(invoke("compare", "adam", "sgd", "--epochs", "6", "--json").stdout)
    cid = out["comparison_id"]
    record_path = runs_dir / "comparisons" / f"{cid}.json"
    record = read_json(record_path)
    del record["base"]["monitor"]
    for v in record["variants"]:
        del v["config"]["monitor"]
    record_path.write_text(json.dumps(record))
    for v in out["variants"]:
        for r in v["runs"]:
            path = runs_dir / r["run_id"] / "config.json"
            config = read_json(path)
            del config["monitor"]
            path.write_text(json.dumps(config))
    listed = json.loads(invoke("runs", "--json").stdout)
    assert {r["config"]["monitor"] for r in listed} == {"val_accuracy"}
    shown = json.loads(invoke("compare", "--show", cid, "--json").stdout)
    assert shown["monitor"] == "val_accuracy"
    assert shown["variants"][0]["aggregate"]["best_epoch"]["mean"] == BEST["val_accuracy"]
    assert "best epoch: highest val_accuracy" in invoke("compare", "--show", cid).stdout
    assert "best=val_accuracy" in invoke("runs").stdout


# --- the book's chapter 7-3, on the full data -------------------------------------------------------

@pytest.mark.full
def test_book_chapter_7_3_early_stopping_on_the_fused_engine(tmp_path):
    """adam, dropout 0.3, EarlyStopping(patience=2, restore_best_weights=True) on val_loss, 20 epochs
    at most. The book's reruns stopped at epochs 7-16 and kept val accuracy 0.8768-0.8859."""
    pytest.importorskip("jax")
    proc = fmnist("train", "--optimizer", "adam", "--dropout", "0.3", "--early-stopping", "2", "--epochs", "20",
                  "--backend", "jax", "--json", "--quiet", env={"FMNIST_RUNS_DIR": str(tmp_path / "r")}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    hist, best = out["history"], out["best_epoch"]
    assert out["config"]["monitor"] == "val_loss" and out["config"]["limit"] is None
    assert out["stopped_early"] and 5 <= out["epochs_run"] < 20
    assert out["epochs_run"] == best + 2                                # patience 2 after the best epoch
    assert hist["val_loss"][best - 1] == min(hist["val_loss"]) and out["model_epoch"] == best
    assert 0.87 <= out["best_val_accuracy"] <= 0.89
    keras = keras_tf()   # the fused model, reloaded in plain Keras on TensorFlow
    from fmnist_cli import data

    model = keras.models.load_model(out["model_path"])
    split = data.make_split(data.load())
    loss, acc = model.evaluate(split.x_val, split.y_val, verbose=0)
    assert acc == pytest.approx(hist["val_accuracy"][best - 1], abs=2e-4)
    assert loss == pytest.approx(hist["val_loss"][best - 1], rel=1e-3)
