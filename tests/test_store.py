"""The run store and the commands over it, on the fake engine (milliseconds a test): damaged files
never break a listing, a command aimed at a damaged record answers in one sentence with exit 2,
partial comparisons say so, resume is exclusive and adopts orphans, writes are whole or absent, and
`fmnist runs rm` cleans up. Each case of issue 8's list has a test here."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fmnist_cli.config import RunConfig
from fmnist_cli.records import Status
from fmnist_cli.store import RunStore
from helpers import assert_clean_error, invoke, read_json

pytestmark = pytest.mark.usefixtures("fake_engine")


def train(*args) -> dict:
    result = invoke("train", "--epochs", "2", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def compare(*args, code=0) -> dict:
    # --resume takes no settings of its own: the comparison's are used (and --epochs would be refused)
    settings = [] if {"--resume", "--show", "--list"} & set(args) else ["--epochs", "3"]
    result = invoke("compare", *settings, *args, "--json")
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def listed(*args) -> list[dict]:
    result = invoke("runs", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def edit_json(path: Path, **changes) -> None:
    data = read_json(path)
    data.update(changes)
    path.write_text(json.dumps(data))


# --- listings never fail because of one record ------------------------------------------------------

def test_a_wrong_created_type_breaks_only_that_run(runs_dir):
    good, bad = train()["run_dir"], train()["run_dir"]
    edit_json(Path(bad) / "run.json", created=12345)
    runs = {r["run_dir"]: r for r in listed()}
    assert runs[good]["status"] == "completed" and runs[good]["reason"] is None
    assert runs[bad]["status"] == "broken" and "created should be text" in runs[bad]["reason"]
    table = invoke("runs")
    assert table.exit_code == 0 and "broken" in table.stdout and "runs rm --broken" in table.stdout
    latest = invoke("summary", "latest")
    assert latest.exit_code == 0, latest.output


def test_evaluate_latest_skips_a_broken_newer_run(runs_dir):
    good = train()["run_dir"]
    time.sleep(1.1)   # ids and `created` have one-second resolution
    bad = train()["run_dir"]
    edit_json(Path(bad) / "run.json", created=12345)
    assert RunStore(runs_dir).resolve_run("latest") == Path(good)


def test_aimed_at_a_broken_run_is_one_sentence_and_exit_2(runs_dir):
    run = train()
    edit_json(Path(run["run_dir"]) / "config.json", optimizer={"name": "nope"})
    for command in ("evaluate", "summary"):
        message = assert_clean_error(invoke(command, run["run_id"]), 2, "Unknown optimizer 'nope'", "runs rm")
        assert "KeyError" not in message
    (Path(run["run_dir"]) / "config.json").write_text("garbage{")
    codes = {command: invoke(command, run["run_id"]).exit_code for command in ("evaluate", "summary")}
    assert codes == {"evaluate": 2, "summary": 2}   # one fault, one answer


@pytest.mark.parametrize("content", ['{"variants": 5}', "[1, 2]", "", "null", '{"id": "x"}'])
def test_a_damaged_comparison_record_breaks_only_itself(runs_dir, content):
    good = compare("sgd", "adam")["comparison_id"]
    time.sleep(1.1)
    bad = compare("sgd")["comparison_id"]
    (runs_dir / "comparisons" / f"{bad}.json").write_text(content)
    items = json.loads(invoke("compare", "--list", "--json").stdout)
    assert [i["status"] for i in items] == ["broken", "completed"] and items[0]["reason"]
    assert items[0]["best_variant"] is None and items[1]["best_variant"] in ("sgd", "adam")
    assert invoke("compare", "--list").exit_code == 0
    # aimed at it: one sentence, exit 2; `latest` is the newest usable one
    for args in (["compare", "--show", bad], ["compare", "--resume", bad]):
        assert_clean_error(invoke(*args), 2, "broken", "runs rm --broken")
    assert invoke("runs", "-c", bad).exit_code == 0   # listing its runs does not need its record
    shown = json.loads(invoke("compare", "--show", "latest", "--json").stdout)
    assert shown["comparison_id"] == good


def test_comparison_ids_resolve_like_run_ids(runs_dir):
    cid = compare("sgd")["comparison_id"]
    middle = cid.split("-")[1]           # the time part, from the middle of the id
    assert json.loads(invoke("compare", "--show", middle, "--json").stdout)["comparison_id"] == cid
    assert json.loads(invoke("compare", "--show", cid[-4:], "--json").stdout)["comparison_id"] == cid
    run_id = train("--name", "mine")["run_id"]
    assert RunStore(runs_dir).resolve_run("mine") == runs_dir / run_id


# --- partial comparisons are honest -------------------------------------------------------------------

def test_a_missing_history_makes_the_variant_incomplete(runs_dir):
    summary = compare("sgd", "adam", "--repeats", "3")
    adam = summary["variants"][1]
    assert adam["n"] == 3 and adam["of"] == 3 and adam["status"] == "completed"
    full_mean = adam["aggregate"]["best_val_accuracy"]["mean"]
    (runs_dir / adam["runs"][1]["run_id"] / "history.json").unlink()
    shown = json.loads(invoke("compare", "--show", "latest", "--json").stdout)
    adam = shown["variants"][1]
    assert adam["status"] == "incomplete" and adam["n"] == 2 and adam["of"] == 3
    assert adam["runs"][1]["status"] == "broken" and "history.json" in adam["runs"][1]["message"]
    assert adam["aggregate"]["best_val_accuracy"]["n"] == 2
    assert adam["aggregate"]["best_val_accuracy"]["mean"] != full_mean
    assert shown["status"] == "incomplete"
    table = invoke("compare", "--show", "latest")
    assert "2 of 3" in table.stdout and "--resume" in table.stdout and "incomplete" in table.stdout
    # the CSV carries n and of too
    csv_path = runs_dir.parent / "c.csv"
    assert invoke("compare", "--show", "latest", "--csv", csv_path).exit_code == 0
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("comparison,variant,optimizer,status,epoch,n,of")
    assert any(",adam,adam,incomplete,1,2,3," in r for r in rows)


def test_resume_fills_a_broken_slot_and_trains_nothing_else(runs_dir, fake_engine):
    summary = compare("sgd", "adam", "--repeats", "2")
    broken_run = summary["variants"][0]["runs"][1]["run_id"]
    (runs_dir / broken_run / "run.json").write_text("{")
    fake_engine.trained.clear()
    resumed = compare("--resume", "latest")
    assert [(c.variant, c.repeat) for c in fake_engine.trained] == [("sgd", 1)]
    assert resumed["status"] == "completed" and resumed["variants"][0]["runs"][1]["run_id"] != broken_run


def test_a_removed_run_folder_is_a_missing_slot(runs_dir):
    summary = compare("sgd", "--repeats", "2")
    shutil.rmtree(runs_dir / summary["variants"][0]["runs"][0]["run_id"])
    shown = json.loads(invoke("compare", "--show", "latest", "--json").stdout)
    assert shown["variants"][0]["runs"][0]["status"] == "missing" and shown["variants"][0]["n"] == 1


# --- exclusive resume ---------------------------------------------------------------------------------

def test_resume_of_a_comparison_being_trained_is_refused(runs_dir):
    summary = compare("sgd", "adam", "--repeats", "2")
    cid = summary["comparison_id"]
    run_id = summary["variants"][0]["runs"][0]["run_id"]
    shutil.rmtree(runs_dir / run_id)
    # Another process holds the comparison's lock, as a running `compare --resume` does.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from fmnist_cli.store import RunStore\n"
        f"with RunStore({str(runs_dir)!r}).comparison_lock({cid!r}):\n"
        "    print('locked', flush=True); time.sleep(30)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert_clean_error(invoke("compare", "--resume", cid), 2, "being trained by another fmnist process")
    finally:
        holder.kill()
        holder.wait()
    assert invoke("compare", "--resume", cid, "--json").exit_code == 0


def test_two_resumes_at_once_never_train_a_slot_twice(runs_dir, tmp_path):
    """Two real processes resume one comparison together: one trains, the other is refused (or
    finds nothing left to do). Every slot ends with exactly one run."""
    from helpers import fmnist

    summary = compare("sgd", "adam", "nadam", "--repeats", "1")
    cid = summary["comparison_id"]
    for v in summary["variants"]:
        shutil.rmtree(runs_dir / v["runs"][0]["run_id"])
    script = ("import sys, fakes, pytest\n"
              "mp = pytest.MonkeyPatch(); fakes.install(mp)\n"
              "from fmnist_cli.cli import main; sys.argv = ['fmnist', 'compare', '--resume', sys.argv[1]]; main()")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "FMNIST_RUNS_DIR": str(runs_dir)}
    procs = [subprocess.Popen([sys.executable, "-c", script, cid], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] in (0, 2), outs
    runs = [r for r in listed() if r["comparison"] == cid]
    assert len(runs) == 3, runs     # three slots, three runs: none trained twice
    shown = json.loads(invoke("compare", "--show", cid, "--json").stdout)
    assert shown["status"] == "completed"


def test_resume_adopts_a_run_that_finished_after_its_parent_died(runs_dir, fake_engine):
    summary = compare("sgd", "adam")
    cid = summary["comparison_id"]
    record_path = runs_dir / "comparisons" / f"{cid}.json"
    record = read_json(record_path)
    orphan = record["variants"][1]["runs"][0]
    record["variants"][1]["runs"][0] = None      # the parent died before it learnt of this run
    record_path.write_text(json.dumps(record))
    fake_engine.trained.clear()
    resumed = compare("--resume", cid)
    assert fake_engine.trained == []
    assert resumed["variants"][1]["runs"][0]["run_id"] == orphan
    assert read_json(record_path)["variants"][1]["runs"][0] == orphan


def test_resume_waits_for_nothing_but_refuses_while_an_orphan_still_trains(runs_dir):
    summary = compare("sgd", "adam")
    cid = summary["comparison_id"]
    run_dir = runs_dir / summary["variants"][0]["runs"][0]["run_id"]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        edit_json(run_dir / "run.json", status="running", pid=sleeper.pid)
        record_path = runs_dir / "comparisons" / f"{cid}.json"
        record = read_json(record_path)
        record["variants"][0]["runs"][0] = None
        record_path.write_text(json.dumps(record))
        assert_clean_error(invoke("compare", "--resume", cid), 2, f"process {sleeper.pid}")
    finally:
        sleeper.kill()
        sleeper.wait()


# --- writes are whole or absent -------------------------------------------------------------------------

def test_a_new_comparison_record_is_written_whole(runs_dir, monkeypatch):
    from fmnist_cli import store

    real = store.atomic_write_text

    def full(path, text, **kw):
        if path.parent.name == "comparisons":
            raise store.storage_error(OSError(errno.ENOSPC, "full"), path)
        return real(path, text, **kw)

    monkeypatch.setattr(store, "atomic_write_text", full)
    assert_clean_error(invoke("compare", "sgd"), 1, "disk is full")
    assert [p.name for p in (runs_dir / "comparisons").iterdir()] == []


def test_a_run_whose_files_cannot_be_written_leaves_no_folder(runs_dir, monkeypatch):
    from fmnist_cli import store

    real = store.atomic_write_json

    def full(path, data, **kw):
        if path.name == "run.json":
            raise store.storage_error(OSError(errno.ENOSPC, "full"), path)
        return real(path, data, **kw)

    monkeypatch.setattr(store, "atomic_write_json", full)
    assert_clean_error(invoke("train"), 1, "disk is full")
    assert [p for p in runs_dir.iterdir() if not p.name.startswith(".")] == []


def test_an_empty_run_folder_is_listed_broken_and_removable(runs_dir):
    train()
    empty = runs_dir / "20261128-000000-adam-relu-dead"
    empty.mkdir()   # just made, and broken at once: fmnist's own run folders appear with their files
    runs = {r["id"]: r for r in listed()}
    assert runs[empty.name]["status"] == "broken" and "without its files" in runs[empty.name]["reason"]
    assert invoke("runs", "rm", "--broken", "--yes").exit_code == 0
    assert not empty.exists() and len(listed()) == 1


def test_an_interrupted_model_save_leaves_no_temporary_file(runs_dir, monkeypatch):
    from fakes import FakeModel

    def interrupted_save(self, path):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt   # a second Ctrl-C while Keras writes the file

    monkeypatch.setattr(FakeModel, "save", interrupted_save)
    result = invoke("train")
    assert result.exit_code == 130
    (run_dir,) = [p for p in runs_dir.iterdir() if not p.name.startswith(".")]
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".model-")] == []
    assert listed()[0]["status"] == "interrupted"


def test_listing_removes_leftovers_of_interrupted_writes(runs_dir):
    run_dir = Path(train()["run_dir"])
    (run_dir / ".model-dead.keras").write_bytes(b"x")
    stale = run_dir / ".run.json.abc.tmp"
    stale.write_text("{")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = run_dir / ".run.json.new.tmp"   # a write in progress right now: left alone
    fresh.write_text("{")
    listed()
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == [".lock", ".run.json.new.tmp"]


# --- evaluate never loses its result -----------------------------------------------------------------------

def test_evaluate_prints_its_result_when_it_cannot_be_stored(runs_dir, monkeypatch):
    """The CLI side, on the fake engine; tests/test_broken_files.py has the same with a real model."""
    run = train()
    from fmnist_cli import evaluation, store
    from fmnist_cli.records import EvaluationResult

    def read_only(self, run_dir, split, result):
        raise store.storage_error(OSError(errno.EROFS, "Read-only file system"), run_dir / "run.json")

    def scored(store_, run_dir, split="val", data_dir=None, backend_name=None, keep=True):
        result = EvaluationResult(run_id=run_dir.name, run_dir=str(run_dir), split=split, n=10, loss=1.0,
                                  accuracy=0.5, per_class=[], confusion_matrix=[], classes=[], evaluated="now")
        try:
            store_.record_evaluation(run_dir, split, result)
            result.stored = True
        except Exception as err:
            result.store_error = str(err)
        return result

    monkeypatch.setattr(store.RunStore, "record_evaluation", read_only)
    monkeypatch.setattr(evaluation, "evaluate", scored)
    result = invoke("evaluate", run["run_id"], "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["accuracy"] == 0.5 and data["stored"] is False and "permission denied" in data["store_error"]
    assert "not stored" in result.stderr


# --- fmnist runs rm -------------------------------------------------------------------------------------

def test_rm_removes_named_runs_after_confirmation(runs_dir):
    a, b = train()["run_id"], train()["run_id"]
    assert_clean_error(invoke("runs", "rm", a), 2, "--yes", "--dry-run lists them")      # no terminal to ask on
    assert {r["id"] for r in listed()} == {a, b}
    result = invoke("runs", "rm", a, "--dry-run", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == {"runs": [a], "comparisons": [], "leftovers": [],
                                                                   "dry_run": True}
    assert f"run {a} (completed)" in result.stderr and "nothing removed (--dry-run)" in result.stderr
    assert {r["id"] for r in listed()} == {a, b}
    result = invoke("runs", "rm", a, "--yes", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["runs"] == [a]
    assert {r["id"] for r in listed()} == {b}


def test_rm_of_a_comparisons_run_empties_its_slot_and_resume_refills_it(runs_dir, fake_engine):
    summary = compare("sgd", "adam", "--repeats", "2")
    victim = summary["variants"][1]["runs"][0]["run_id"]
    assert invoke("runs", "rm", victim, "--yes").exit_code == 0
    record = read_json(runs_dir / "comparisons" / f"{summary['comparison_id']}.json")
    assert record["variants"][1]["runs"][0] is None
    shown = json.loads(invoke("compare", "--show", "latest", "--json").stdout)
    assert shown["variants"][1]["runs"][0]["status"] == "missing" and shown["variants"][1]["n"] == 1
    fake_engine.trained.clear()
    compare("--resume", "latest")
    assert [(c.variant, c.repeat) for c in fake_engine.trained] == [("adam", 0)]


def test_compare_list_gives_each_comparisons_status_and_best_variant(runs_dir, fake_engine):
    summary = compare("sgd", "adam", "--repeats", "2")
    listed_ = json.loads(invoke("compare", "--list", "--json").stdout)
    assert [(c["status"], c["best_variant"]) for c in listed_] == [("completed", summary["best_variant"])]
    assert invoke("runs", "rm", summary["variants"][0]["runs"][1]["run_id"], "--yes").exit_code == 0
    assert json.loads(invoke("compare", "--list", "--json").stdout)[0]["status"] == "incomplete"
    line = invoke("compare", "--list").stdout.strip()
    assert line.startswith(f"{summary['comparison_id']}  incomplete  repeats 2  sgd, adam  (100 relu e")
    assert " tf)  best: " in line   # what the variants share: the optimizer is not among it
    assert json.loads(invoke("compare", "--list", "--json").stdout)[0]["shared"].startswith("100 relu e")


def test_rm_comparison_removes_it_and_its_runs(runs_dir):
    keep = train()["run_id"]
    cid = compare("sgd", "adam")["comparison_id"]
    assert invoke("runs", "rm", "--comparison", "latest", "--yes").exit_code == 0
    assert [r["id"] for r in listed()] == [keep]
    assert json.loads(invoke("compare", "--list", "--json").stdout) == []
    assert not (runs_dir / "comparisons" / f"{cid}.json").exists()


def test_rm_broken_removes_broken_runs_comparisons_and_leftovers(runs_dir):
    good = train()["run_id"]
    bad = train()["run_dir"]
    (Path(bad) / "config.json").write_text("[]")
    cid = compare("sgd")["comparison_id"]
    (runs_dir / "comparisons" / f"{cid}.json").write_text("")
    leftover = runs_dir / good / ".model-dead.keras"
    leftover.write_bytes(b"x")
    result = invoke("runs", "rm", "--broken", "--yes", "--json")
    assert result.exit_code == 0, result.output
    removed = json.loads(result.stdout)
    assert removed["runs"] == [Path(bad).name] and removed["comparisons"] == [cid]
    assert not leftover.exists() and good in {r["id"] for r in listed()}


def test_rm_status_removes_every_run_of_those_statuses(runs_dir):
    done, stopped, diverged = train()["run_dir"], train()["run_dir"], train()["run_dir"]
    for run_dir, status in ((stopped, "interrupted"), (diverged, "diverged")):
        info = read_json(Path(run_dir) / "run.json")
        (Path(run_dir) / "run.json").write_text(json.dumps({**info, "status": status}))
    assert {r["status"] for r in listed()} == {"completed", "interrupted", "diverged"}
    result = invoke("runs", "rm", "--status", "interrupted, DIVERGED", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(result.stdout)["runs"]) == sorted([Path(stopped).name, Path(diverged).name])
    assert [r["id"] for r in listed()] == [Path(done).name]


@pytest.mark.parametrize("value,mentions", [("running", "stop them first"), ("lost", "Unknown status 'lost'"),
                                             (",", "--status takes")])
def test_rm_status_refuses_what_it_cannot_remove(runs_dir, value, mentions):
    run = train()["run_id"]
    assert_clean_error(invoke("runs", "rm", "--status", value, "--yes"), 2, mentions)
    assert [r["id"] for r in listed()] == [run]


def test_rm_refuses_a_run_still_being_trained(runs_dir):
    run = train()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        edit_json(Path(run["run_dir"]) / "run.json", status="running", pid=sleeper.pid)
        assert_clean_error(invoke("runs", "rm", run["run_id"], "--yes"), 2, "still being trained")
        assert Path(run["run_dir"]).exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_rm_with_nothing_named_is_a_usage_error():
    assert_clean_error(invoke("runs", "rm"), 2, "--broken")
    assert_clean_error(invoke("runs", "rm", "nope", "--yes"), 2, "No run 'nope'")


# --- the store directly ---------------------------------------------------------------------------------

def test_update_run_never_writes_a_record_it_could_not_read_back(runs_dir):
    store = RunStore(runs_dir)
    run_dir = store.create_run(RunConfig().validate())
    with pytest.raises(ValueError):
        store.update_run(run_dir, created=12345)
    assert store.read_record(run_dir).broken is None


def test_a_damaged_run_json_is_rebuilt_by_the_next_update(runs_dir):
    store = RunStore(runs_dir)
    run_dir = store.create_run(RunConfig().validate())
    (run_dir / "run.json").write_text("[")
    store.update_run(run_dir, status=Status.COMPLETED)
    assert store.read_record(run_dir).status == Status.COMPLETED


# --- from the review: what a damaged or foreign file must never do --------------------------------------

def test_markup_in_messages_and_files_is_printed_as_text(runs_dir):
    assert_clean_error(invoke("train", "--optimizer", "[/]"), 2, "Unknown optimizer '[/]'")
    run = train()
    edit_json(Path(run["run_dir"]) / "run.json", seconds="[/]")
    assert invoke("runs").exit_code == 0
    cid = compare("sgd")["comparison_id"]
    path = runs_dir / "comparisons" / f"{cid}.json"
    record = read_json(path)
    record["variants"][0]["label"] = "x[/]"
    record["variants"][0]["config"]["optimizer"]["name"] = "[bold]nope"
    path.write_text(json.dumps(record))
    listing = invoke("compare", "--list")
    assert listing.exit_code == 0 and "[bold]nope" in listing.stdout
    assert_clean_error(invoke("compare", "--show", cid), 2, "[bold]nope")


def test_rm_never_touches_folders_that_are_not_runs(runs_dir):
    train()
    mine = runs_dir / "my-plots"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    old = time.time() - 7200
    os.utime(mine, (old, old))
    assert all(r["id"] != "my-plots" for r in listed())
    assert invoke("runs", "rm", "--broken", "--yes").exit_code == 0
    assert (mine / "notes.txt").read_text() == "keep me"
    # a run folder holding a user's file is refused, not emptied
    run_dir = Path(train()["run_dir"])
    (run_dir / "notes.txt").write_text("mine")
    assert_clean_error(invoke("runs", "rm", run_dir.name, "--yes"), 2, "did not write", "notes.txt")
    assert (run_dir / "notes.txt").exists()


def test_a_comparison_slot_naming_a_path_is_broken_and_nothing_outside_is_removed(runs_dir):
    precious = runs_dir.parent / "precious"
    precious.mkdir()
    (precious / "x").write_text("x")
    cid = compare("sgd")["comparison_id"]
    path = runs_dir / "comparisons" / f"{cid}.json"
    record = read_json(path)
    record["variants"][0]["runs"][0] = "../precious"
    path.write_text(json.dumps(record))
    items = json.loads(invoke("compare", "--list", "--json").stdout)
    assert items[0]["status"] == "broken" and "not a run id" in items[0]["reason"]
    invoke("runs", "rm", "--comparison", cid, "--yes")
    invoke("runs", "rm", "--broken", "--yes")
    assert (precious / "x").exists()


def test_leftovers_of_a_run_still_training_are_kept(runs_dir):
    run = train()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        edit_json(Path(run["run_dir"]) / "run.json", status="running", pid=sleeper.pid)
        model_tmp = Path(run["run_dir"]) / ".model-1234.keras"
        model_tmp.write_bytes(b"x")
        assert invoke("runs", "rm", "--broken", "--yes").exit_code == 0
        listed()
        assert model_tmp.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_odd_files_where_records_should_be(runs_dir):
    run = train()
    (Path(run["run_dir"]) / "run.json").write_text("[" * 200_000)   # nested past Python's recursion limit
    assert {r["run_dir"]: r for r in listed()}[run["run_dir"]]["status"] == "broken"
    (runs_dir / "comparisons").mkdir(exist_ok=True)
    (runs_dir / "comparisons" / "20261128-000000-cmp-dir0.json").mkdir()
    items = json.loads(invoke("compare", "--list", "--json").stdout)
    assert items[0]["status"] == "broken" and "folder" in items[0]["reason"]
    result = invoke("runs", "rm", "--broken", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert not (runs_dir / "comparisons" / "20261128-000000-cmp-dir0.json").exists()


def test_a_broken_run_keeps_its_place_in_the_listing(runs_dir):
    older = train()["run_id"]
    time.sleep(1.1)
    newer = train()
    edit_json(Path(newer["run_dir"]) / "run.json", seconds="fast")
    ids = [r["id"] for r in listed("-n", "1")]
    assert ids == [newer["run_id"]] and older not in ids


def test_two_resumes_of_one_run_cannot_both_claim_it(runs_dir):
    from fmnist_cli import training
    from fmnist_cli.errors import Busy

    run_dir = Path(train()["run_dir"])
    edit_json(run_dir / "run.json", status="interrupted")
    store = RunStore(runs_dir)
    training.check_resumable(store, run_dir)          # claims it: running, this process
    assert store.load_run(run_dir).status == "running"
    with pytest.raises(Busy):
        training.check_resumable(store, run_dir)


def test_a_saved_model_says_which_epoch_it_holds(runs_dir):
    from fakes import FakeModel

    store = RunStore(runs_dir)
    run_dir = store.create_run(RunConfig().validate())
    store.save_model(run_dir, FakeModel(None), epoch=3)
    assert store.model_epoch(run_dir) == 3
    store.save_model(run_dir, FakeModel(None))
    assert store.model_epoch(run_dir) is None


def test_an_early_ctrl_c_is_recorded_even_if_the_exception_is_swallowed():
    import signal as signal_mod

    from fmnist_cli.training import StopFlag

    flag = StopFlag()
    with flag.installed():
        handler = signal_mod.getsignal(signal_mod.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            handler(signal_mod.SIGINT, None)
    assert flag()   # so the check before any run is made still stops the command


def test_a_ctrl_c_swallowed_by_a_garbage_collector_callback_prints_no_traceback(monkeypatch):
    """JAX registers a gc callback: a KeyboardInterrupt raised inside it is "unraisable", and Python
    would print "Exception ignored in ... Traceback"; the flag keeps it, so nothing is printed."""
    import gc
    import signal as signal_mod

    from fmnist_cli.training import StopFlag

    printed = []   # what Python's hook would print: "Exception ignored in ... Traceback"
    monkeypatch.setattr(sys, "unraisablehook", printed.append)
    flag = StopFlag()

    def callback(phase, info):
        if phase == "start":
            signal_mod.getsignal(signal_mod.SIGINT)(signal_mod.SIGINT, None)

    with flag.installed():
        gc.callbacks.append(callback)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(callback)
    assert flag() and printed == []


def test_rm_latest_is_the_newest_run_whatever_its_status(runs_dir, fake_engine):
    """As `fmnist runs` lists it first: while it trains, `rm latest` refuses; it never reaches past
    it to an older, finished run (what `latest` means for evaluate)."""
    older = train()["run_id"]
    newer = train()["run_id"]
    store = RunStore(runs_dir)
    store.update_run(runs_dir / newer, status=Status.RUNNING, pid=os.getpid())
    assert_clean_error(invoke("runs", "rm", "latest", "--yes"), 2, f"Run {newer} is still being trained")
    assert (runs_dir / older).is_dir() and (runs_dir / newer).is_dir()
    store.update_run(runs_dir / newer, status=Status.INTERRUPTED)
    assert invoke("runs", "rm", "latest", "--yes").exit_code == 0
    assert (runs_dir / older).is_dir() and not (runs_dir / newer).exists()


def test_evaluate_of_a_run_still_training_says_so(runs_dir):
    run_dir = RunStore(runs_dir).create_run(RunConfig(limit=500).validate())   # running, by this process
    assert_clean_error(invoke("evaluate", run_dir.name), 2, "is still being trained", "wait for its first epoch")


def test_show_of_a_comparison_being_trained_says_running_not_incomplete(runs_dir):
    """Its slots are written into the record as units finish: meanwhile the runs being trained stand
    in for them, and the footer names the process instead of offering a `--resume` it would refuse."""
    from fmnist_cli import compare as cmp

    store = RunStore(runs_dir)
    base = RunConfig(limit=500, epochs=2).validate()
    record = cmp.new_comparison(store, base, cmp.expand(base, ["sgd", "adam"], {}), 1, ["test"])
    config = record.variants[1].run_config
    store.create_run(dataclasses.replace(config, comparison=record.id, variant=record.variants[1].label, repeat=0))
    result = invoke("compare", "--show", record.id)
    assert result.exit_code == 0, result.output
    assert "running" in result.output and f"by process {os.getpid()}" in result.output
    assert "--resume" not in result.output
    shown = json.loads(invoke("compare", "--show", record.id, "--json").stdout)
    assert shown["status"] == "running" and shown["variants"][1]["runs"][0]["pid"] == os.getpid()


def test_a_killed_comparisons_runs_show_their_figures_so_far(runs_dir):
    """`kill -9` before any unit finished: the record's slots are empty, yet `runs` and `compare
    --show` show each crashed run's epochs so far (its history), not dashes."""
    from fmnist_cli import compare as cmp

    store = RunStore(runs_dir)
    base = RunConfig(limit=500, epochs=5).validate()
    record = cmp.new_comparison(store, base, cmp.expand(base, ["sgd"], {}), 1, ["test"])
    config = dataclasses.replace(record.variants[0].run_config, comparison=record.id,
                                 variant=record.variants[0].label, repeat=0)
    run_dir = store.create_run(config)
    history = {"loss": [0.9, 0.7], "accuracy": [0.6, 0.7], "val_loss": [0.8, 0.75], "val_accuracy": [0.65, 0.71],
               "seconds": [1.0, 0.5]}
    store.save_history(run_dir, history)
    dead = subprocess.Popen(["true"])
    dead.wait()
    store.update_run(run_dir, pid=dead.pid)
    (listed_run,) = listed()
    assert listed_run["status"] == "crashed" and listed_run["best_val_accuracy"] == 0.71
    assert listed_run["epochs_run"] == 2 and listed_run["seconds"] == 1.5
    shown = json.loads(invoke("compare", "--show", record.id, "--json").stdout)
    (variant,) = shown["variants"]
    assert variant["runs"][0]["run_id"] == run_dir.name and variant["aggregate"]["best_val_accuracy"]["mean"] == 0.71


def test_refs_resolve_an_id_then_a_whole_name_then_parts():
    from fmnist_cli.errors import RunNotFound
    from fmnist_cli.store import resolve_ref

    ids = ["20261129-101500-lr-sweep-3f2a", "20261129-101600-lr-sweep-wide-9c01", "20261129-101700-abcd-77e0",
           "20261129-101800-adam-relu-abcd"]
    resolve = lambda ref: resolve_ref(ref, ids, "comparison", "fmnist compare --list")   # noqa: E731
    assert resolve(ids[1]) == ids[1]
    assert resolve("lr-sweep") == ids[0]              # a whole name, though part of the next id too
    assert resolve("lr-sweep-wide") == ids[1]
    assert resolve("abcd") == ids[2]                  # a name before another id's random end
    assert resolve("9c01") == ids[1] and resolve("101500") == ids[0]
    with pytest.raises(RunNotFound, match=r"'lr-sw' matches 2 comparisons \(20261129-101500-lr-sweep-3f2a, "):
        resolve("lr-sw")


def test_a_folder_being_filled_is_not_taken_for_a_leftover(runs_dir):
    """A run being copied or received is staged in a hidden folder; a listing removes such folders
    once stale, but not while a file in them is still being written (a large model.keras)."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    old = time.time() - 3600
    busy, dead = runs_dir / ".new-20260101-120000-adam-relu-aaaa", runs_dir / ".new-20260101-120000-adam-relu-bbbb"
    for folder in (busy, dead):
        folder.mkdir()
        (folder / "history.json").write_text("{}")
        os.utime(folder / "history.json", (old, old))
    (busy / ".model.keras.0123456789ab.tmp").write_bytes(b"still being written")
    for folder in (busy, dead):
        os.utime(folder, (old, old))
    RunStore(runs_dir).list_runs()
    assert busy.exists() and not dead.exists()
