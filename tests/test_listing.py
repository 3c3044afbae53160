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
