"""Edges a new user hit: each must end in a clean message, the right exit code, and nothing broken."""

import json
import subprocess
import sys

import pytest

from helpers import invoke


def test_exploding_but_finite_loss_is_divergence():
    # Keras computes cross-entropy from the logits: sgd with lr=100 reaches losses of 1e9, not NaN.
    result = invoke("train", "--optimizer", "sgd:lr=100", "--limit", "1000", "--epochs", "2", "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["status"] == "diverged" and "learning rate" in out["message"]


def test_oversized_model_is_refused_before_any_work():
    result = invoke("summary", "--hidden", "100000,100000")
    assert result.exit_code == 2 and "parameters" in result.output and "--hidden" in result.output


def test_limit_beyond_the_training_set_is_refused():
    result = invoke("train", "--limit", "100000")
    assert result.exit_code == 2 and "at most 48000" in result.output


def test_run_found_by_its_name():
    out = json.loads(invoke("train", "--limit", "500", "--epochs", "1", "--name", "book-sigmoid", "--json").stdout)
    result = invoke("summary", "book-sigmoid", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["title"] == f"Run {out['run_id']}"
    assert invoke("evaluate", " ").exit_code == 2


def test_compare_with_missing_data_fails_fast_without_a_record(tmp_path, runs_dir):
    result = invoke("compare", "sgd", "adam", "--data-dir", tmp_path / "nowhere")
    assert result.exit_code == 2 and "not found" in result.output
    assert not (runs_dir / "comparisons").exists() or not list((runs_dir / "comparisons").iterdir())


def test_seed_overflow_with_repeats_is_refused_up_front(runs_dir):
    result = invoke("compare", "sgd", "--seed", "4294967295", "--repeats", "2")
    assert result.exit_code == 2 and "--seed" in result.output
    assert not (runs_dir / "comparisons").exists()


def test_closed_pipe_is_not_an_error():
    proc = subprocess.run(f"{sys.executable} -m fmnist_cli summary --hidden 300,100 | true", shell=True,
                          capture_output=True, text=True, executable="/bin/bash")
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", f"{sys.executable} -m fmnist_cli --help | head -1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_plot_onto_a_folder_is_a_usage_error(tmp_path):
    (tmp_path / "dir.png").mkdir()
    result = invoke("compare", "sgd", "--plot", tmp_path / "dir.png")
    assert result.exit_code == 2 and "folder" in result.output


@pytest.mark.parametrize("args", [["compare", "--show", "latest"], ["compare", "--show", "x", "--resume", "y"],
                                  ["runs", "--comparison", "latest"], ["runs", "-n", "0"]])
def test_comparison_lookups_without_comparisons_are_clean(args):
    result = invoke(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_quiet_still_says_where_the_run_went():
    result = invoke("train", "--limit", "500", "--epochs", "1", "--quiet")
    assert result.exit_code == 0 and "saved to" in result.stdout and "epoch 1/1" not in result.stdout
