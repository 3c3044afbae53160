"""fmnist compare: on small real subsets where the numbers matter, on the fake engine (tests/fakes.py)
where only the bookkeeping does."""

import csv
import json

import numpy as np
import pytest

from helpers import assert_clean_error, fmnist, invoke, read_json
from fmnist_cli import compare as cmp
from fmnist_cli.config import RunConfig
from fmnist_cli.errors import UsageError

SMALL = ("--limit", "500", "--epochs", "2")


def compare_json(*args, codes=(0, 130)):
    result = invoke("compare", *args, "--json")
    assert result.exit_code in codes, result.output
    return json.loads(result.stdout)


def test_identical_variants_get_identical_histories():
    # sgd's default learning rate is 0.01: two names for one optimizer. Equal split, initial
    # weights and batch order must then give equal numbers.
    out = compare_json("sgd", "sgd:lr=0.01", *SMALL)
    a, b = (v["runs"][0]["history"] for v in out["variants"])
    assert a["loss"] == b["loss"] and a["val_accuracy"] == b["val_accuracy"]


def test_csv_has_a_column_per_varied_setting(tmp_path, fake_engine):
    table = tmp_path / "sweep.csv"
    compare_json("sgd", "adam", "--vary", "lr=0.01,0.1", "--vary", "hidden=32,64-32", "--epochs", "2", "--csv", table)
    rows = list(csv.DictReader(table.open()))
    assert list(rows[0])[:7] == ["comparison", "variant", "hidden", "optimizer", "lr", "status", "epoch"]
    got = {(r["optimizer"], float(r["lr"]), r["hidden"]) for r in rows}
    assert got == {(o, lr, h) for o in ("sgd", "adam") for lr in (0.01, 0.1) for h in ("32", "64-32")}
    assert len(rows) == 8 * 2 and {r["status"] for r in rows} == {"completed"}
    # what each trained with: a default rate is Keras's, a name's own momentum is its momentum
    out = compare_json("sgd", "momentum", "adam", "sgd:lr=0.1,momentum=0.5", "--epochs", "2")
    assert [v["values"] for v in out["variants"]] == [
        {"optimizer": "sgd", "lr": 0.01, "momentum": 0.0}, {"optimizer": "momentum", "lr": 0.01, "momentum": 0.9},
        {"optimizer": "adam", "lr": 0.001, "momentum": None}, {"optimizer": "sgd", "lr": 0.1, "momentum": 0.5}]
    assert not {"name", "comparison", "variant", "repeat", "optimizer"} & set(out["base"])


def test_a_sweep_of_three_values_is_drawn_against_its_setting(tmp_path, fake_engine):
    import matplotlib.image

    from fmnist_cli import figures
    from fmnist_cli.store import RunStore

    plot = tmp_path / "sweep.png"
    out = compare_json("sgd", "adam", "--vary", "lr=0.001,0.01,0.1", "--epochs", "2", "--plot", plot)
    assert out["varied"] == ["optimizer", "lr"]   # as the variants' values and the CSV name them
    one = compare_json("sgd", "--vary", "lr=0.01,0.1", "--epochs", "2")
    assert one["varied"] == ["lr"]   # every variant is sgd: the optimizer does not vary
    store = RunStore.at(None)
    summary = cmp.summarize(store, store.load_comparison(out["comparison_id"]))
    assert figures.sweep_axis(summary) == "lr"
    assert matplotlib.image.imread(plot).shape[0] == 1100   # the curves' 750 px and a row for the sweep
    two = compare_json("sgd", "adam", "--vary", "lr=0.001,0.01", "--epochs", "2")
    assert figures.sweep_axis(cmp.summarize(store, store.load_comparison(two["comparison_id"]))) is None


def test_variants_start_from_equal_weights():
    from fmnist_cli import models

    from fmnist_cli.records import ComparisonRecord, VariantSpec

    record = ComparisonRecord(id="x", repeats=2, variants=[
        VariantSpec(label=v["label"], config=v["config"], runs=[None, None])
        for v in cmp.expand(RunConfig().validate(), ["sgd", "adam"],
                            cmp.parse_vary(["activation=relu,tanh", "dropout=0,0.2"]))])
    weights = {}
    for vi, r, config in cmp.slots(record):
        models.set_seed(config.seed)
        weights[(vi, r)] = [w.copy() for w in models.build_model(config).get_weights()]
    for vi in range(8):   # a Dropout layer must not shift the weights of the layers after it
        assert all(np.array_equal(x, y) for x, y in zip(weights[(0, 0)], weights[(vi, 0)]))
        assert all(np.array_equal(x, y) for x, y in zip(weights[(0, 1)], weights[(vi, 1)]))
    assert not np.array_equal(weights[(0, 0)][0], weights[(0, 1)][0])   # repeats differ


def test_repeats_aggregate_like_numpy_and_export(tmp_path, fake_engine):
    plot, table = tmp_path / "curves.png", tmp_path / "curves.csv"
    out = compare_json("sgd", "adam", *SMALL, "--repeats", "3", "--plot", plot, "--csv", table)
    assert out["repeats"] == 3 and [v["label"] for v in out["variants"]] == ["sgd", "adam"]
    # the base says what the variants share, not the default optimizer none of them trained with
    assert out["varied"] == ["optimizer"] and "optimizer" not in out["base"] and out["base"]["epochs"] == 2
    for v in out["variants"]:
        hists = [r["history"] for r in v["runs"]]
        assert len(hists) == 3 and len({r["seed"] for r in v["runs"]}) == 3
        finals = np.array([h["val_accuracy"][-1] for h in hists])
        agg = v["aggregate"]
        assert agg["final"]["val_accuracy"]["mean"] == pytest.approx(finals.mean())
        assert agg["final"]["val_accuracy"]["std"] == pytest.approx(finals.std(ddof=1))
        per_epoch = np.array([h["loss"] for h in hists])
        assert agg["per_epoch"]["loss"]["mean"] == pytest.approx(per_epoch.mean(axis=0).tolist())
        assert agg["per_epoch"]["loss"]["std"] == pytest.approx(per_epoch.std(axis=0, ddof=1).tolist())
        best = np.array([max(h["val_accuracy"]) for h in hists])
        assert agg["best_val_accuracy"]["mean"] == pytest.approx(best.mean())
    assert out["best_variant"] in ("sgd", "adam")
    # CSV: one row per variant per epoch
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 2 * 2 and rows[0]["variant"] == "sgd" and float(rows[0]["val_accuracy_mean"]) > 0
    assert set(rows[0]) >= {"comparison", "variant", "epoch", "n", "loss_mean", "loss_std", "val_accuracy_std"}
    # the varied setting as a column of its own, and the variant's best figures on each of its rows
    assert [r["optimizer"] for r in rows] == ["sgd", "sgd", "adam", "adam"] and "lr" not in rows[0]
    adam = out["variants"][1]["aggregate"]
    assert float(rows[3]["best_val_accuracy_mean"]) == pytest.approx(adam["best_val_accuracy"]["mean"])
    assert float(rows[3]["best_epoch_mean"]) == pytest.approx(adam["best_epoch"]["mean"])
    # PNG: a real image
    import matplotlib.image

    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(plot).shape[0] > 300


def test_table_marks_best_and_show_needs_no_training(runs_dir, fake_engine):
    from fmnist_cli.store import RunStore

    result = invoke("compare", "sgd", "adam", *SMALL)
    assert result.exit_code == 0 and "★" in result.output and "best" in result.output
    record = RunStore(runs_dir).load_comparison("latest")
    n_runs = len(list(runs_dir.glob("2*")))
    fake_engine.trained.clear()
    shown = invoke("compare", "--show", record.id)
    assert shown.exit_code == 0 and record.id in shown.output
    assert len(list(runs_dir.glob("2*"))) == n_runs and fake_engine.trained == []
    listing = json.loads(invoke("runs", "--comparison", record.id, "--json").stdout)
    assert len(listing) == 2 and all(r["comparison"] == record.id for r in listing)
    assert json.loads(invoke("compare", "--list", "--json").stdout)[0]["id"] == record.id


def test_vary_activation_and_hidden_with_optimizers_is_the_full_grid():
    base = RunConfig().validate()
    variants = cmp.expand(base, ["sgd", "adam"], cmp.parse_vary(["activation=sigmoid,relu", "hidden=100,300-100"]))
    assert len(variants) == 8
    assert variants[0]["label"] == "sgd sigmoid 100" and variants[-1]["label"] == "adam relu 300-100"
    assert variants[-1]["config"]["hidden"] == [300, 100]
    lr = cmp.expand(base, [], cmp.parse_vary(["lr=0.1,0.01", "optimizer=sgd,adam"]))
    assert [v["config"]["optimizer"]["learning_rate"] for v in lr] == [0.1, 0.1, 0.01, 0.01]


@pytest.mark.parametrize("optimizers,vary", [(["sgd:lr=0.1"], []), ([], ["optimizer=adam,adam:lr=0.1"])])
def test_a_varied_lr_beside_an_optimizers_own_lr_is_refused(optimizers, vary):
    # The lr axis replaced the optimizer's lr=0.1 without a word, and the label still said lr=0.1.
    with pytest.raises(UsageError, match="both set it"):
        cmp.expand(RunConfig().validate(), optimizers, cmp.parse_vary(["lr=0.01,0.05", *vary]))


@pytest.mark.parametrize("vary", ["speed=1,2", "activation=", "hidden=1,abc", "activation=foo", "lr=x"])
def test_bad_vary_is_a_usage_error(vary):
    with pytest.raises(UsageError):
        cmp.expand(RunConfig().validate(), [], cmp.parse_vary([vary]))


def test_nothing_to_compare_is_a_clean_error():
    result = invoke("compare")
    assert result.exit_code == 2 and "Nothing to compare" in result.output


def test_diverging_variant_is_marked_and_others_go_on():
    out = compare_json("sgd:lr=1e6", "adam", "--limit", "500", "--epochs", "2")
    status = {v["label"]: v["status"] for v in out["variants"]}
    assert status == {"sgd:lr=1e+06": "diverged", "adam": "completed"}
    assert out["best_variant"] == "adam"
    text = invoke("compare", "--show", out["comparison_id"])
    assert "diverged" in text.output and "learning rate" in text.output


def test_a_failing_variant_is_marked_and_others_go_on(monkeypatch, fake_engine):
    real = fake_engine.train

    def flaky(configs, *a, **kw):
        if configs[0].optimizer.name == "adagrad":
            raise RuntimeError("simulated engine failure")
        return real(configs, *a, **kw)

    monkeypatch.setattr(fake_engine, "train", flaky)
    # One unit per run (fit): a failing unit then takes only its own run with it.
    out = compare_json("adagrad", "adam", *SMALL, "--engine", "fit", codes=(1,))   # a failed run fails the comparison
    status = {v["label"]: v["status"] for v in out["variants"]}
    assert status == {"adagrad": "incomplete", "adam": "completed"}
    assert out["variants"][0]["runs"][0]["status"] == "failed"
    assert "simulated engine failure" in out["variants"][0]["runs"][0]["message"]
    assert out["variants"][0]["n"] == 0 and out["status"] == "incomplete"


def test_resume_trains_only_what_is_missing(runs_dir, fake_engine):
    from fmnist_cli.records import RunDone
    from fmnist_cli.store import RunStore

    store = RunStore(runs_dir)
    base = RunConfig(limit=500, epochs=1, engine="fit").validate()   # one unit per run
    variants = cmp.expand(base, ["sgd", "rmsprop", "adam"], {})
    record = cmp.new_comparison(store, base, variants, 1, ["test"])
    finished = []

    def stop_after_first():
        return len(finished) >= 1

    def on_event(event):
        if isinstance(event, RunDone):
            finished.append(event)

    record = cmp.execute(store, record, on_event=on_event, should_stop=stop_after_first)
    done = [v.runs[0] for v in record.variants]
    assert done[0] is not None and done[1:] == [None, None]
    fake_engine.trained.clear()
    result = invoke("compare", "--resume", record.id, "--json")
    assert result.exit_code == 0, result.output
    assert [c.variant for c in fake_engine.trained] == ["rmsprop", "adam"]
    again = read_json(runs_dir / "comparisons" / f"{record.id}.json")
    ids = [v["runs"][0] for v in again["variants"]]
    assert ids[0] == done[0] and None not in ids
    assert all(v["status"] == "completed" for v in json.loads(result.stdout)["variants"])


def test_runs_stopped_before_their_first_epoch_are_not_kept_and_resume_fills_their_slots(runs_dir, fake_engine):
    """Nothing finished: no run folder stays behind (it was clutter that `--resume` replaced with a
    new run and left listed), the slots stay empty, and `--resume` fills them."""
    from fmnist_cli.store import RunStore

    fake_engine.stop_after = 0
    result = invoke("compare", "sgd", "adam", "--epochs", "2", "--json")
    assert result.exit_code == 1, result.output   # no usable variant (the fake engine's stop is no Ctrl-C)
    store = RunStore(runs_dir)
    assert store.list_runs() == []
    record = store.load_comparison("latest")
    assert [v.runs for v in record.variants] == [[None], [None]]
    fake_engine.stop_after = None
    result = invoke("compare", "--resume", record.id, "--json")
    assert result.exit_code == 0, result.output
    assert len(store.list_runs()) == 2
    assert all(v["status"] == "completed" for v in json.loads(result.stdout)["variants"])


def test_results_never_depend_on_jobs_or_cores(monkeypatch):
    """Two batch sizes make two units; by default they train side by side, one process per core."""
    from fmnist_cli import cli

    args = ("sgd", "adam", "--vary", "batch_size=32,64", *SMALL)
    one = compare_json(*args, "--jobs", "1")
    monkeypatch.delenv("FMNIST_JOBS")
    monkeypatch.setattr(cli, "cpu_cores", lambda: 2)
    auto = compare_json(*args)
    assert [v["label"] for v in one["variants"]] == [v["label"] for v in auto["variants"]]
    for a, b in zip(one["variants"], auto["variants"]):
        assert a["runs"][0]["history"]["loss"] == b["runs"][0]["history"]["loss"]
        assert a["runs"][0]["history"]["val_accuracy"] == b["runs"][0]["history"]["val_accuracy"]


def test_jobs_from_the_environment_are_checked(monkeypatch):
    monkeypatch.setenv("FMNIST_JOBS", "many")
    result = invoke("compare", "sgd", *SMALL)
    assert result.exit_code == 2 and "FMNIST_JOBS" in result.output


def test_fused_compare_trains_variants_together_like_alone(tmp_path):
    pytest.importorskip("jax")
    env = {"FMNIST_RUNS_DIR": str(tmp_path / "jruns")}
    proc = fmnist("compare", "sgd", "adam", "--backend", "jax", "--repeats", "2", "--limit", "1000",
                  "--epochs", "2", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    alone = fmnist("train", "--optimizer", "adam", "--seed", "43", "--backend", "jax", "--limit", "1000",
                   "--epochs", "2", "--json", env=env)
    assert alone.returncode == 0, alone.stderr
    adam_seed43 = out["variants"][1]["runs"][1]
    assert adam_seed43["seed"] == 43
    assert json.loads(alone.stdout)["history"]["val_accuracy"] == pytest.approx(
        adam_seed43["history"]["val_accuracy"], abs=1e-4)


def test_learning_rate_and_momentum_apply_to_every_compared_optimizer():
    base = RunConfig().validate()
    for named, axes in ((["sgd", "adam"], {}), ([], cmp.parse_vary(["optimizer=sgd,adam"]))):
        variants = cmp.expand(base, named, axes, overrides=dict(learning_rate=0.5, momentum=0.8))
        opts = [v["config"]["optimizer"] for v in variants]
        assert [o["learning_rate"] for o in opts] == [0.5, 0.5]
        assert [o["momentum"] for o in opts] == [0.8, None]   # momentum is for the SGD family only


def test_a_failed_save_marks_only_its_run(monkeypatch, runs_dir, fake_engine):
    import errno

    from fmnist_cli import store

    real = store.RunStore.save_model

    def flaky(self, run_dir, model, **kw):
        if "adam" in run_dir.name:
            raise store.storage_error(OSError(errno.ENOSPC, "full"), run_dir / "model.keras")
        return real(self, run_dir, model, **kw)

    monkeypatch.setattr(store.RunStore, "save_model", flaky)
    out = compare_json("sgd", "adam", *SMALL, codes=(1,))
    by_label = {v["label"]: v for v in out["variants"]}
    assert by_label["sgd"]["status"] == "completed"
    assert by_label["adam"]["status"] == "incomplete" and by_label["adam"]["runs"][0]["run_id"]
    assert by_label["adam"]["runs"][0]["status"] == "failed"
    assert "disk is full" in by_label["adam"]["runs"][0]["message"]


def test_resume_of_a_finished_comparison_with_jobs_trains_nothing(runs_dir, fake_engine):
    compare_json("sgd", *SMALL)
    result = invoke("compare", "--resume", "latest", "--jobs", "2", "--json")
    assert result.exit_code == 0, result.output
    result = invoke("compare", "--resume", "latest")
    assert result.exit_code == 0 and "Nothing to train: every run of the comparison has finished." in result.output
    assert "Training 0 run(s)" not in result.output


def test_show_is_not_stopped_by_a_bad_jobs_setting(monkeypatch, fake_engine):
    compare_json("sgd", *SMALL)
    monkeypatch.setenv("FMNIST_JOBS", "0")   # meant for training; --show trains nothing
    result = invoke("compare", "--show", "latest")
    assert result.exit_code == 0, result.output


def test_default_jobs_stay_within_the_accepted_range(monkeypatch, fake_engine):
    """One process per core, but never more than --jobs accepts (64), however many cores."""
    from fmnist_cli import cli

    seen = []
    real = cmp.execute
    monkeypatch.setattr(cmp, "execute", lambda store, record, data_dir, jobs, *a, **k:
                        seen.append(jobs) or real(store, record, data_dir, 1, *a, **k))
    monkeypatch.delenv("FMNIST_JOBS")
    monkeypatch.setattr(cli, "cpu_cores", lambda: 256)
    compare_json("sgd", *SMALL)
    monkeypatch.setattr(cli, "cpu_cores", lambda: 3)
    compare_json("sgd", *SMALL)
    assert seen == [64, 3]


def test_an_interrupted_variant_counts_its_finished_runs(runs_dir, fake_engine):
    """Stopped after epoch 1 of 3: the interrupted runs have figures but are not finished."""
    fake_engine.stop_after = 1
    invoke("compare", "sgd", "adam", "--epochs", "3", "--repeats", "2")
    result = invoke("compare", "--show", "latest")
    assert "Incomplete: sgd (0 of 2 finished), adam (0 of 2 finished)." in " ".join(result.output.split())


@pytest.mark.parametrize("spec", [dict(), dict(hidden=(300, 100), activation="tanh", dropout=0.2, epochs=3),
                                  dict(optimizer="sgd:lr=0.05,momentum=0.5", batch_size=64, seed=7, limit=500,
                                       early_stopping=2, monitor="val_accuracy", val_size=0.25, split_seed=1)])
def test_a_variants_train_command_trains_its_config(spec, fake_engine, runs_dir):
    import shlex

    config = RunConfig(**spec).validate()
    command = config.train_command()
    assert command.startswith("fmnist train")
    out = json.loads(invoke(*shlex.split(command)[1:], "--json").stdout)
    keep = lambda d: {k: v for k, v in d.items() if k not in ("name", "comparison", "variant", "repeat")}  # noqa: E731
    assert keep(out["config"]) == keep(config.to_dict())


def test_compare_says_how_to_train_the_best_variant_alone(fake_engine, runs_dir):
    out = compare_json("sgd", "adam", "--epochs", "2", "--hidden", "32")
    commands = {v["label"]: v["train_command"] for v in out["variants"]}
    assert commands == {"sgd": "fmnist train --hidden 32 --optimizer sgd --epochs 2",
                        "adam": "fmnist train --hidden 32 --optimizer adam --epochs 2"}
    text = invoke("compare", "--show", "latest").stdout
    assert f"To train it alone: {commands[out['best_variant']]}" in " ".join(text.split())


def test_evaluate_a_whole_comparison_on_the_test_split(runs_dir):
    out = compare_json("sgd", "adam", "--repeats", "2", *SMALL)
    victim = out["variants"][0]["runs"][1]["run_id"]
    assert invoke("runs", "rm", victim, "--yes").exit_code == 0   # an empty slot is skipped, and said
    result = invoke("evaluate", "--comparison", "latest", "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["split"] == "test" and [v["label"] for v in doc["variants"]] == ["sgd", "adam"]
    assert [v["n"] for v in doc["variants"]] == [1, 2] and doc["skipped"][0]["variant"] == "sgd"
    adam = doc["variants"][1]
    assert adam["accuracy"]["mean"] == pytest.approx(sum(r["accuracy"] for r in adam["runs"]) / 2)
    stored = {r["id"]: r for r in json.loads(invoke("runs", "--json").stdout)}
    assert all(stored[r["run_id"]]["evaluations"]["test"]["accuracy"] == r["accuracy"] for r in adam["runs"])
    text = invoke("evaluate", "-c", "latest", "--split", "test").stdout
    assert "on the test split" in text and "Skipped sgd (seed #1): it is missing." in " ".join(text.split())
    assert_clean_error(invoke("evaluate", adam["runs"][0]["run_id"], "-c", "latest"), 2, "--comparison")
    # compare --show gains the test accuracy, over the seeds scored
    shown = compare_json("--show", "latest")
    assert shown["variants"][1]["aggregate"]["test_accuracy"] == pytest.approx(adam["accuracy"])
    assert shown["variants"][0]["aggregate"]["test_accuracy"]["n"] == 1
    assert "test acc" in invoke("compare", "--show", "latest").stdout
    # and so does the CSV, written again from the stored runs
    import csv

    path = runs_dir / "again.csv"
    assert invoke("compare", "--show", "latest", "--csv", path).exit_code == 0
    rows = {r["variant"]: r for r in csv.DictReader(path.open())}
    assert float(rows["adam"]["test_accuracy_mean"]) == pytest.approx(adam["accuracy"]["mean"])
    assert rows["adam"]["test_accuracy_n"] == "2" and rows["sgd"]["test_accuracy_n"] == "1"
    assert rows["sgd"]["test_accuracy_std"] == "" and rows["adam"]["best_epoch_std"] != ""


def test_a_named_comparison_is_found_by_its_name(runs_dir, fake_engine):
    out = compare_json("sgd", "adam", "--epochs", "2", "--name", "lr-sweep")
    assert "-lr-sweep-" in out["comparison_id"]
    assert compare_json("--show", "lr-sweep")["comparison_id"] == out["comparison_id"]
    listed = json.loads(invoke("compare", "--list", "--json").stdout)
    assert [c["id"] for c in listed] == [out["comparison_id"]]
    # a name whole wins over a part of another's id; parts that match several say which
    wide = compare_json("sgd", "adam", "--epochs", "2", "--name", "lr-sweep-wide")
    assert compare_json("--show", "lr-sweep")["comparison_id"] == out["comparison_id"]
    assert compare_json("--show", "lr-sweep-wide")["comparison_id"] == wide["comparison_id"]
    assert_clean_error(invoke("compare", "--show", "lr-sw"), 2, "matches 2 comparisons (", out["comparison_id"])
    assert_clean_error(invoke("evaluate", "lr-sweep"), None, f"'lr-sweep' is comparison {out['comparison_id']}, "
                       "not a run; score its runs with `fmnist evaluate --comparison lr-sweep`")
    result = invoke("runs", "--where", "name=lr-sweep")
    assert "`fmnist runs -c NAME` lists them" in result.stderr
    assert_clean_error(invoke("compare", "sgd", "--name", "a/b"), 2, "Invalid comparison name 'a/b'")
    assert_clean_error(invoke("compare", "sgd", "--name", "latest"), 2, "The comparison name 'latest' is reserved")
    assert_clean_error(invoke("compare", "--resume", "lr-sweep", "--name", "x"), 2, "--name")


def test_test_accuracy_is_the_completed_runs_only():
    from fmnist_cli.records import SlotSummary, Status

    history = {m: [0.5] for m in ("loss", "accuracy", "val_loss", "val_accuracy")} | {"seconds": [1.0]}
    slots = [SlotSummary(run_id="a", repeat=0, status=Status.COMPLETED, history=history, test_accuracy=0.8),
             SlotSummary(run_id="b", repeat=1, status=Status.DIVERGED, history=history, test_accuracy=0.1)]
    assert cmp.aggregate(slots)["test_accuracy"] == {"mean": 0.8, "std": None, "n": 1}


def test_a_plot_of_many_variants_tells_every_one_apart(runs_dir, fake_engine):
    """Past ten variants the colours repeat: the curves then differ by marker."""
    from fmnist_cli import compare as cmp
    from fmnist_cli import figures
    from fmnist_cli.store import RunStore

    compare_json("sgd", "adam", "--vary", "lr=0.0003,0.001,0.003,0.01,0.03,0.1", "--epochs", "2")
    store = RunStore(runs_dir)
    fig = figures.comparison_figure(cmp.summarize(store, store.load_comparison("latest")))
    lines = [line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")]
    assert len(lines) == 12
    assert len({(line.get_color(), line.get_marker()) for line in lines}) == 12


def test_a_sweep_says_its_best_value_per_group(fake_engine):
    out = compare_json("sgd", "adam", "--vary", "lr=0.001,0.01,0.1", "--epochs", "2", "--repeats", "2")
    per = out["best_per"]
    assert per["setting"] == "lr" and per["by"] == ["optimizer"]
    assert [g["values"] for g in per["groups"]] == [{"optimizer": "sgd"}, {"optimizer": "adam"}]
    for g in per["groups"]:
        mine = [v for v in out["variants"] if v["values"]["optimizer"] == g["values"]["optimizer"]]
        best = max(mine, key=lambda v: v["aggregate"]["best_val_accuracy"]["mean"])
        assert g["lr"] == best["values"]["lr"] and g["variant"] == best["label"]
        assert g["edge"] == {0.001: "lowest", 0.1: "highest", 0.01: None}[g["lr"]]
    text = " ".join(invoke("compare", "--show", out["comparison_id"]).stdout.split())
    assert "Best lr per optimizer: sgd: " in text
    # one group (the star says it), or nothing swept: none
    assert compare_json("adam", "--vary", "lr=0.001,0.01", "--epochs", "2")["best_per"] is None
    assert compare_json("sgd", "adam", "--epochs", "2")["best_per"] is None
    # a group that tried one rate has no best rate: sgd:lr=0.1 against adam's default is no sweep
    assert compare_json("sgd:lr=0.1", "adam", "--epochs", "2")["best_per"] is None
    assert compare_json("sgd", "adam", "adam:lr=0.001", "--epochs", "2")["best_per"] is None
    # groups by what varies alone: one optimizer, two batch sizes
    out = compare_json("--vary", "lr=0.1,0.01", "--vary", "batch_size=32,64", "--epochs", "2")
    assert out["best_per"]["by"] == ["batch_size"]
    assert "Best lr per batch_size: batch_size=32: " in " ".join(invoke("compare", "--show", out["comparison_id"]).stdout.split())


def test_evaluate_a_comparison_scores_completed_runs_only(runs_dir):
    """An interrupted run's model is part-trained: mixed into its variant's mean it would mislead."""
    out = compare_json("sgd", "--repeats", "2", *SMALL)
    victim = runs_dir / out["variants"][0]["runs"][1]["run_id"] / "run.json"
    record = json.loads(victim.read_text())
    record["status"] = "interrupted"
    victim.write_text(json.dumps(record))
    doc = json.loads(invoke("evaluate", "--comparison", "latest", "--json").stdout)
    assert doc["variants"][0]["n"] == 1
    assert doc["skipped"][0]["reason"] == f"it is interrupted (`fmnist compare --resume {out['comparison_id']}` finishes it)"
