"""Options on the fake engine (tests/fakes.py): none is ever silently ignored, --debug is taken by
every command, --plot/--csv are checked before training and a failed write costs only that file,
`--name latest` is refused, and help starts with its usage line."""

from __future__ import annotations

import errno
import json
import os

import pytest

from helpers import assert_clean_error, fmnist, invoke

pytestmark = pytest.mark.usefixtures("fake_engine")


def compare(*args, code=0):
    result = invoke("compare", "--epochs", "2", *args, "--json")
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


# --- 1. no option is silently ignored ---------------------------------------------------------------

@pytest.mark.parametrize("args, named", [
    (["compare", "rmsprop", "--resume", "latest", "--epochs", "50", "--repeats", "5"], "optimizers"),
    (["compare", "--resume", "latest", "--epochs", "50"], "--epochs"),
    (["compare", "--resume", "latest", "--optimizer", "adam"], "--optimizer"),
    (["compare", "--resume", "latest", "--vary", "dropout=0,0.2"], "--vary"),
    (["compare", "--resume", "latest", "--no-nesterov"], "--nesterov"),
    (["compare", "--show", "latest", "--repeats", "3"], "--repeats"),
    (["compare", "--show", "latest", "--jobs", "2"], "--jobs"),
    (["compare", "--show", "latest", "--data-dir", "/tmp"], "--data-dir"),
    (["compare", "adam", "--show", "latest"], "optimizers"),
    (["compare", "--list", "--plot", "x.png"], "--plot"),
    (["compare", "--list", "--epochs", "3"], "--epochs"),
    (["compare", "--list", "--quiet"], "--quiet"),
    (["summary", "RUN", "--hidden", "5"], "--hidden"),
    (["summary", "latest", "--dropout", "0.2"], "--dropout"),
    (["summary", "--runs-dir", "somewhere"], "--runs-dir"),
    (["runs", "--json", "rm", "x"], "--json"),
])
def test_an_option_a_mode_does_not_use_is_refused(args, named, runs_dir):
    # Refused before anything is looked up: the comparison and the run need not exist.
    message = assert_clean_error(invoke(*args), 2, named, max_sentences=1)
    assert "does not apply to" in message


def test_resume_show_and_list_take_their_own_options(runs_dir, tmp_path, fake_engine):
    import shutil

    first = compare("sgd", "adam")
    shutil.rmtree(runs_dir / first["variants"][1]["runs"][0]["run_id"])   # a slot to fill again
    fake_engine.trained.clear()
    resumed = invoke("compare", "--resume", "latest", "--jobs", "1", "--quiet", "--data-dir", tmp_path, "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["comparison_id"] == first["comparison_id"]
    # the comparison's own settings: adam for 2 epochs, not the defaults
    assert [(c.optimizer.name, c.epochs) for c in fake_engine.trained] == [("adam", 2)]
    shown = invoke("compare", "--show", "latest", "--csv", tmp_path / "c.csv", "--runs-dir", runs_dir)
    assert shown.exit_code == 0, shown.output
    assert (tmp_path / "c.csv").is_file()
    listed = invoke("compare", "--list", "--json", "--runs-dir", runs_dir)
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)) == 1


def test_plain_comparison_still_takes_the_model_options(fake_engine):
    out = compare("sgd", "rmsprop", "adam", "--hidden", "50", "--repeats", "2")
    assert [v["label"] for v in out["variants"]] == ["sgd", "rmsprop", "adam"]
    assert {c.hidden for c in fake_engine.trained} == {(50,)} and len(fake_engine.trained) == 6
    assert {c.epochs for c in fake_engine.trained} == {2}


def test_summary_run_and_summary_options(runs_dir):
    trained = json.loads(invoke("train", "--epochs", "1", "--hidden", "30", "--json").stdout)
    result = invoke("summary", "latest", "--runs-dir", runs_dir, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["title"] == f"Run {trained['run_id']}"
    result = invoke("summary", "--hidden", "300,100", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["title"] == "Model 784-300-100-10"


def test_refuse_options_is_the_one_helper():
    # The same helper as on main (train --resume uses it there): one definition, this signature.
    import inspect

    from fmnist_cli import cli

    assert str(inspect.signature(cli.refuse_options)) == \
        "(ctx: 'typer.Context', mode: 'str', why: 'str', allowed: 'tuple[str, ...]') -> 'None'"
    source = inspect.getsource(cli)
    assert source.count("get_parameter_source") <= 2   # refuse_options, and compare's replaced settings


# --- 2. output files ----------------------------------------------------------------------------------

@pytest.mark.parametrize("option, path, words", [
    ("--plot", "/proc/x.png", "Cannot write /proc/x.png"),
    ("--csv", "/proc/x.csv", "Cannot write /proc/x.csv"),
    ("--csv", "{tmp}/missing/x.csv", "does not exist"),
    ("--plot", "{tmp}", "is a folder"),
    ("--csv", "/dev/null", "not a regular file"),
    ("--plot", "{tmp}/curves.csv", "should end in .png"),
])
def test_output_paths_are_checked_before_training(option, path, words, tmp_path, fake_engine, runs_dir):
    path = path.format(tmp=tmp_path)
    message = assert_clean_error(invoke("compare", "sgd", "adam", option, path), 2, words, option)
    assert "--runs-dir" not in message
    assert fake_engine.trained == [] and not (runs_dir / "comparisons").exists()


def test_an_unwritable_output_folder_is_found_by_trying(tmp_path, fake_engine, monkeypatch):
    # Permission bits say nothing to root: check_output tries to create a file, which is what counts.
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    message = assert_clean_error(invoke("compare", "sgd", "--csv", tmp_path / "out.csv"), 2,
                                 f"Cannot write {tmp_path / 'out.csv'}", "read-only", "--csv another path")
    assert "--runs-dir" not in message and fake_engine.trained == []


@pytest.mark.parametrize("failing", ["--plot", "--csv"])
def test_a_failed_write_after_training_costs_that_file_only(failing, tmp_path, monkeypatch, runs_dir):
    from fmnist_cli import cli
    from fmnist_cli import compare as cmp
    from fmnist_cli import store

    plot, table = tmp_path / "curves.png", tmp_path / "curves.csv"
    if failing == "--csv":
        # the store's own writer fails as it does (StorageError from an OSError), on a file system
        # gone read-only mid-comparison; its runs-folder advice must not reach the user
        def read_only(path, text, **kw):
            try:
                raise OSError(errno.EROFS, "Read-only file system")
            except OSError as err:
                raise store.storage_error(err, path) from None
        monkeypatch.setattr(cmp, "atomic_write_text", read_only)
    else:
        def broken_plot(summary, path):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(cli, "_atomic_plot", broken_plot)
    result = invoke("compare", "sgd", "adam", "--epochs", "2", "--plot", plot, "--csv", table)
    assert result.exit_code == 1, result.output
    failed, written = (plot, table) if failing == "--plot" else (table, plot)
    assert not failed.exists() and written.is_file()
    assert "sgd" in result.stdout and "adam" in result.stdout          # the table is printed
    assert f"written to {written}" in result.stdout
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: Cannot write " + str(failed)) and f"{failing} another path" in error
    assert "--runs-dir" not in error and "Traceback" not in error
    assert len(list((runs_dir / "comparisons").glob("*.json"))) == 1  # the comparison is saved


def test_a_failed_write_still_prints_the_json(tmp_path, monkeypatch):
    from fmnist_cli import cli

    def broken_plot(summary, path):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cli, "_atomic_plot", broken_plot)
    result = invoke("compare", "sgd", "--epochs", "2", "--plot", tmp_path / "c.png", "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["variants"]
    assert f"Cannot write {tmp_path / 'c.png'}: permission denied" in result.stderr


# --- 3. --debug on every command --------------------------------------------------------------------

@pytest.mark.parametrize("args", [["evaluate", "nosuchrun"], ["summary", "nosuchrun"], ["runs", "rm", "nosuchrun"],
                                  ["compare", "--show", "nosuchrun"], ["runs", "-c", "nosuchrun"]])
def test_debug_is_taken_after_any_command(args):
    from fmnist_cli.errors import RunNotFound

    assert_clean_error(invoke(*args), 2)
    with pytest.raises(RunNotFound):   # --debug: the traceback (CliRunner re-raises it)
        invoke(*args, "--debug")
    assert os.environ["FMNIST_DEBUG"] == "1"   # what every other reader (backend, workers) looks at


def test_debug_is_not_an_option_a_mode_refuses():
    from fmnist_cli.errors import RunNotFound

    with pytest.raises(RunNotFound):
        invoke("compare", "--show", "latest", "--debug")
    with pytest.raises(RunNotFound):
        invoke("summary", "nosuchrun", "--debug")


def test_debug_reaches_the_backend():
    from fmnist_cli import backend

    assert not backend.debug()
    invoke("summary", "--hidden", "10", "--debug")
    assert backend.debug()


def test_debug_after_the_command_in_a_real_process():
    proc = fmnist("evaluate", "nosuchrun", "--debug", timeout=60)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "RunNotFound" in proc.stderr
    assert "No such option" not in proc.stderr


# --- 8. and 9. -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["latest", " latest"])
def test_the_run_name_latest_is_refused(name, runs_dir, fake_engine):
    assert_clean_error(invoke("train", "--epochs", "1", "--name", name), 2, "latest", "--name")
    assert fake_engine.trained == [] and not runs_dir.exists() or not list(runs_dir.iterdir())


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["runs", "--help"], ["runs", "rm", "--help"],
                                  []])
def test_help_starts_with_its_usage_line(args):
    result = invoke(*args)
    assert result.stdout.splitlines()[0].strip().startswith("Usage: "), result.stdout[:200]
    assert "--debug" in result.stdout
