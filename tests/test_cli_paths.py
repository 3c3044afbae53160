"""Paths in messages: a runs folder that is a file is told so, and every path a message names is
absolute, wherever the command was run from (on the fake engine, tests/fakes.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import assert_clean_error, fmnist, invoke

pytestmark = pytest.mark.usefixtures("fake_engine")


# --- 6. a runs folder that is a file -----------------------------------------------------------------

@pytest.mark.parametrize("args", [["runs"], ["runs", "rm", "x"], ["train", "--epochs", "1"], ["evaluate"],
                                  ["compare", "--list"], ["compare", "sgd"], ["summary", "latest"]])
def test_a_runs_dir_that_is_a_file_is_told_so(args, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    message = assert_clean_error(invoke(*args, "--runs-dir", afile), 2,
                                 f"The runs folder {afile} (--runs-dir) is a file, not a folder")
    assert "Cannot write" not in message and afile.read_text() == "not a folder"


@pytest.mark.parametrize("args", [["runs"], ["train", "--epochs", "1"], ["compare", "--list"]])
def test_a_runs_dir_under_a_file_is_told_so(args, tmp_path):
    """Not "no runs yet" (exit 0) for `runs` and a failed save (exit 1) for `train`: it can never exist."""
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    assert_clean_error(invoke(*args, "--runs-dir", afile / "sub" / "runs"), 2,
                       f"is under {afile}, which is a file, not a folder")


def test_an_env_runs_dir_that_is_a_file_is_named_by_its_source(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.touch()
    monkeypatch.setenv("FMNIST_RUNS_DIR", str(afile))
    assert_clean_error(invoke("runs"), 2, f"{afile} ($FMNIST_RUNS_DIR) is a file")
    monkeypatch.delenv("FMNIST_RUNS_DIR")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").touch()
    assert_clean_error(invoke("runs"), 2, f"{tmp_path / 'runs'} (the default runs folder) is a file")


# --- 7. absolute paths in messages --------------------------------------------------------------------

@pytest.fixture
def default_runs(tmp_path, monkeypatch):
    """Run from tmp_path with the default runs folder, ./runs."""
    monkeypatch.delenv("FMNIST_RUNS_DIR")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "runs"


def test_messages_name_the_default_runs_folder_absolutely(default_runs):
    assert f"No runs in {default_runs} yet" in invoke("runs").stderr
    assert f"No comparisons in {default_runs} yet" in invoke("compare", "--list").stderr
    assert_clean_error(invoke("evaluate"), 2, f"no finished runs in {default_runs};")
    out = json.loads(invoke("train", "--epochs", "1", "--json").stdout)
    assert out["run_dir"].startswith(str(default_runs) + "/")
    result = invoke("train", "--epochs", "1")
    assert f"saved to {default_runs}/" in result.stdout


def test_output_files_are_named_absolutely(default_runs, tmp_path):
    result = invoke("compare", "sgd", "--epochs", "1", "--plot", "c.png", "--csv", "c.csv")
    assert result.exit_code == 0, result.output
    assert f"Curves written to {tmp_path / 'c.png'}" in result.stdout
    assert f"CSV written to {tmp_path / 'c.csv'}" in result.stdout
    assert_clean_error(invoke("compare", "sgd", "--csv", "nowhere/c.csv"), 2, f"Cannot write {tmp_path / 'nowhere' / 'c.csv'}")


def test_from_the_root_folder_in_a_real_process(tmp_path):
    # `cd / && fmnist runs`: the message names /runs, not `runs`
    if Path("/runs").exists():
        pytest.skip("/runs exists here")
    env = {"FMNIST_RUNS_DIR": "", "PYTHONPATH": str(Path(__file__).parents[1])}   # this checkout, from /
    proc = fmnist("runs", env=env, cwd="/", timeout=60)
    assert proc.returncode == 0 and "No runs in /runs yet" in proc.stderr, proc.stderr


def test_a_path_with_brackets_is_printed_as_it_is(tmp_path):
    odd = tmp_path / "[bold]runs[/bold]"
    result = invoke("runs", "--runs-dir", odd)
    assert f"No runs in {odd} yet" in result.stderr
    result = invoke("compare", "sgd", "--epochs", "1", "--runs-dir", odd, "--csv", tmp_path / "[x].csv")
    assert f"CSV written to {tmp_path / '[x].csv'}" in result.stdout
