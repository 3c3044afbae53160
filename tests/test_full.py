"""A few runs on the whole data set: the book's numbers, reproduced."""

import json

import pytest

from helpers import fmnist, invoke

pytestmark = pytest.mark.full


def test_book_relu_model_reaches_the_books_accuracy():
    result = invoke("train", "--json", "--quiet")          # every default: the book's relu + rmsprop
    out = json.loads(result.stdout)
    assert out["status"] == "completed" and out["config"]["limit"] is None
    assert len(out["history"]["loss"]) == 5
    assert 0.85 <= max(out["history"]["val_accuracy"]) <= 0.90
    test = json.loads(invoke("evaluate", out["run_id"], "--split", "test", "--json").stdout)
    assert test["n"] == 10000 and 0.84 <= test["accuracy"] <= 0.90


def test_book_sigmoid_sgd_model_on_the_fused_engine(tmp_path):
    pytest.importorskip("jax")
    proc = fmnist("train", "--activation", "sigmoid", "--optimizer", "adam", "--backend", "jax", "--json",
                  env={"FMNIST_RUNS_DIR": str(tmp_path / "r")})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert 0.85 <= max(out["history"]["val_accuracy"]) <= 0.90
