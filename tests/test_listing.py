"""Listings (`fmnist runs`, `compare --list`, `latest`) survive broken, half-written, crashed and
unfinished runs, run.json files that are not objects, and foreign config.json files."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from helpers import assert_clean_error, copy_run, invoke


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_listing_survives_broken_runs(trained, runs_dir):
    from fmnist_cli.store import RunStore

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

    records = {r.id: r for r in RunStore(runs_dir).list_runs()}
    status = {k: v.status for k, v in records.items()}
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
    assert cmp_list.exit_code == 0 and json.loads(cmp_list.stdout)[0]["status"] == "broken"
    # `latest` still finds the one good run; a broken one is refused cleanly
    assert RunStore(runs_dir).resolve_run("latest") == good
    assert_clean_error(invoke("evaluate", "20260101-000002-no-run-json"), None)
    assert_clean_error(invoke("compare", "--show", "20260101-000000-cmp-dead"), 2, "broken", "not valid JSON")


@pytest.mark.parametrize("run_json", ["[]", "null", "42", '"running"', '{"status": 5}',
                                      '{"status": "running", "pid": 100000000000000000000, "host": "%s"}'
                                      % socket.gethostname()])
def test_listing_survives_run_json_that_is_not_an_object(trained, runs_dir, run_json):
    from fmnist_cli.store import RunStore

    copy_run(trained, runs_dir)
    odd = copy_run(trained, runs_dir / "odd")   # a second run, renamed below
    target = runs_dir / "20260101-000000-odd"
    odd.rename(target)
    (runs_dir / "odd").rmdir()
    (target / "run.json").write_text(run_json)
    records = RunStore(runs_dir).list_runs()
    assert len(records) == 2
    odd_record = next(r for r in records if r.run_dir.endswith("20260101-000000-odd"))
    assert odd_record.status in ("broken", "crashed") and odd_record.id == "20260101-000000-odd"
    assert invoke("runs").exit_code == 0


@pytest.mark.parametrize("config_json", ['{"optimizer": {"name": "nope"}}', '{"optimizer": 5}',
                                         '{"hidden": "abc"}', '{"epochs": "5"}', "[]"])
def test_listing_survives_foreign_config_json(trained, runs_dir, config_json):
    from fmnist_cli.store import RunStore

    run = copy_run(trained, runs_dir)
    (run / "config.json").write_text(config_json)
    (record,) = RunStore(runs_dir).list_runs()
    assert record.status == "broken" and record.config is None and "config.json" in record.reason
    table = invoke("runs")
    assert table.exit_code == 0 and "broken" in table.stdout


# --- fmnist runs --status / --where / --sort --------------------------------------------------------

def _ids(*args) -> list[str]:
    result = invoke("runs", *args, "--json")
    assert result.exit_code == 0, result.output
    return [r["id"] for r in json.loads(result.stdout)]


def test_runs_are_filtered_by_setting_and_status_and_sorted(runs_dir, fake_engine):
    def train(*args):
        result = invoke("train", "--epochs", "2", *args, "--json")
        assert result.exit_code in (0, 130), result.output
        return json.loads(result.stdout)["run_id"]

    adam1 = train("--optimizer", "adam", "--seed", "1")
    adam2 = train("--optimizer", "adam", "--seed", "2", "--hidden", "300,100")
    sgd = train("--optimizer", "sgd:lr=0.1", "--seed", "1", "--backend", "jax")
    fake_engine.stop_after = 1
    stopped = train("--optimizer", "sgd", "--seed", "3")
    fake_engine.stop_after = None

    assert _ids() == [stopped, sgd, adam2, adam1]
    assert _ids("--where", "optimizer=adam") == [adam2, adam1]
    assert _ids("--where", "optimizer=sgd:lr=0.1") == [sgd]
    assert _ids("-w", "optimizer=sgd,adam", "-w", "seed=1") == [sgd, adam1]   # any value; every condition
    # lr: the rate trained with, Keras's default included (sgd's 0.01, adam's 0.001)
    assert _ids("--where", "lr=0.01") == [stopped]
    assert _ids("--where", "learning_rate=0.001") == [adam2, adam1]
    assert _ids("--where", "hidden=300-100") == [adam2]            # layers as --vary writes them
    assert _ids("--where", "hidden=100,300-100") == [stopped, sgd, adam2, adam1]
    assert _ids("--where", "backend=tf") == [stopped, adam2, adam1]
    assert _ids("--status", "interrupted") == [stopped]
    assert _ids("--status", "completed", "-n", "1") == [sgd]

    by_acc = json.loads(invoke("runs", "--sort", "val_acc", "--json").stdout)
    accs = [r["saved_val_accuracy"] for r in by_acc]   # the table's val acc
    assert None not in accs and accs == sorted(accs, reverse=True) and len(set(accs)) > 1

    result = invoke("runs", "--where", "optimizer=nadam")
    assert result.exit_code == 0 and "None of the 4 runs" in result.stderr
    seeds = invoke("runs").stdout
    assert "seed" in seeds.splitlines()[0]                           # the runs differ in seed
    assert "seed" not in invoke("runs", "--where", "seed=1").stdout.splitlines()[0]


@pytest.mark.parametrize("args, says", [
    (("--where", "foo=1"), "Unknown setting 'foo' for --where"),
    (("--where", "epochs"), "--where takes KEY=VALUE"),
    (("--where", "epochs=x"), "--where epochs=x: epochs takes a whole number"),
    (("--where", "hidden=a"), "--where hidden=a: hidden takes layer sizes"),
    (("--status", "runnin"), "Unknown status 'runnin' for --status"),
    (("--sort", "acc"), "Unknown --sort 'acc'"),
])
def test_runs_filters_refuse_bad_input_in_one_sentence(runs_dir, args, says):
    assert_clean_error(invoke("runs", *args), 2, says)


def test_where_reads_values_as_train_and_vary_write_them(runs_dir, fake_engine):
    def train(*args):
        result = invoke("train", "--epochs", "2", *args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["run_id"]

    spec = train("--optimizer", "sgd:lr=0.1,momentum=0.5", "--hidden", "16,8")
    fit = train("--optimizer", "adam", "--engine", "fit")
    assert _ids("--where", "optimizer=sgd:momentum=0.5,lr=0.10,adam") == [fit, spec]   # a spec keeps its settings
    plain = train("--optimizer", "sgd")
    assert _ids("--where", "optimizer=sgd:lr=0.01") == [plain]   # what it trains with: sgd's default rate
    assert _ids("--where", "engine=fused") == [plain, spec] == _ids("--where", "engine=auto")   # auto is fused
    assert _ids("--where", "engine=fit") == [fit]
    assert _ids("--where", "hidden=16x8") == [spec]
    assert_clean_error(invoke("runs", "--where", "backend=torch"), 2, "backend takes one of tensorflow, jax")
    assert_clean_error(invoke("runs", "--where", "optimizer=foo"), 2, "Unknown optimizer 'foo'")


def test_where_comparison_takes_refs_and_none(runs_dir, fake_engine):
    alone = json.loads(invoke("train", "--epochs", "2", "--json").stdout)["run_id"]
    first = json.loads(invoke("compare", "sgd", "adam", "--epochs", "2", "--name", "lr-sweep", "--json").stdout)
    second = json.loads(invoke("compare", "adam", "--epochs", "2", "--json").stdout)
    ids = lambda out: sorted(r["run_id"] for v in out["variants"] for r in v["runs"])
    assert sorted(_ids("--where", "comparison=lr-sweep")) == ids(first)
    both = f"comparison=lr-sweep,{second['comparison_id'][-4:]}"   # a name, a part of an id
    assert sorted(_ids("--where", both)) == sorted(ids(first) + ids(second))
    assert _ids("--where", "comparison=none") == [alone]
    assert_clean_error(invoke("runs", "--where", "comparison=nosuch"), 2, "No comparison 'nosuch'")


def test_runs_help_names_every_where_key_and_status(monkeypatch):
    """The help text is written out (importing the filters would slow `fmnist --help`): kept in step."""
    from fmnist_cli import runfilter

    monkeypatch.setenv("COLUMNS", "300")
    text = " ".join(invoke("runs", "--help").stdout.split())
    assert all(key in text for key in runfilter.KEYS)
    assert all(status.value in text for status in runfilter.LISTED)
