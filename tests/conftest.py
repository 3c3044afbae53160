"""Fixtures only (shared helpers live in helpers.py). Every test gets its own runs folder and sees no
user settings; the real Fashion-MNIST files are found where `make test` put them (or
$FMNIST_TEST_DATA_DIR)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("COLUMNS", "200")   # wide Rich output: no wrapping inside asserted text
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

pytest.register_assert_rewrite("helpers")   # detailed assert messages inside the shared helpers too

from helpers import TINY, invoke, write_idx  # noqa: E402  (after the assert-rewrite registration)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, tmp_path_factory):
    for var in ("FMNIST_BACKEND", "FMNIST_DEBUG", "KERAS_BACKEND"):
        # set, then removed: the removal is undone at teardown even where a test's `--debug` set it
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    if os.environ.get("FMNIST_TEST_DATA_DIR"):
        monkeypatch.setenv("FMNIST_DATA_DIR", os.environ["FMNIST_TEST_DATA_DIR"])
    else:
        monkeypatch.delenv("FMNIST_DATA_DIR", raising=False)
    monkeypatch.setenv("FMNIST_RUNS_DIR", str(tmp_path / "runs"))
    # compare trains in this process unless a test asks for --jobs: the fake engine lives here
    monkeypatch.setenv("FMNIST_JOBS", "1")
    # One JAX compilation cache for the whole session: tests may share compiled programs.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
    yield


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """Four small, valid IDX files (not the official ones: load them with strict=False)."""
    rng = np.random.default_rng(0)
    d = tmp_path / "tiny"
    d.mkdir()
    write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (50, 28, 28)))
    write_idx(d / "train-labels-idx1-ubyte.gz", np.arange(50) % 10)
    write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10)
    return d


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One small completed run, trained once for each module that uses it; tests copy it into their
    runs dir."""
    root = tmp_path_factory.mktemp("trained")
    result = invoke("train", *TINY, "--runs-dir", root, "--json")
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout)["run_dir"])


@pytest.fixture
def fake_engine(monkeypatch):
    """The engine, backend set-up and data swapped for fakes (tests/fakes.py): store, compare, resume
    and CLI behaviour in milliseconds. Returns the engine, to make it fail or stop."""
    import fakes

    return fakes.install(monkeypatch)
