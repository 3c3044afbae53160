"""Every test gets its own runs folder and sees no user settings; the real Fashion-MNIST files are
found where `make test` put them (or $FMNIST_TEST_DATA_DIR)."""

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("COLUMNS", "200")   # wide Rich output: no wrapping inside asserted text
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, tmp_path_factory):
    for var in ("FMNIST_BACKEND", "FMNIST_DEBUG", "KERAS_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    if os.environ.get("FMNIST_TEST_DATA_DIR"):
        monkeypatch.setenv("FMNIST_DATA_DIR", os.environ["FMNIST_TEST_DATA_DIR"])
    else:
        monkeypatch.delenv("FMNIST_DATA_DIR", raising=False)
    monkeypatch.setenv("FMNIST_RUNS_DIR", str(tmp_path / "runs"))
    # One JAX compilation cache for the whole session: tests may share compiled programs.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
    from fmnist_cli import cli

    cli.STATE["debug"] = False
    yield


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    return tmp_path / "runs"


def invoke(*args):
    """Run the CLI in this process (TensorFlow backend); returns typer's Result."""
    from typer.testing import CliRunner

    from fmnist_cli.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def fmnist(*args, env=None, timeout=300, **kw):
    """Run the real `fmnist` command in a fresh process (another backend, signals, concurrency)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "fmnist_cli", *map(str, args)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, **kw)


def write_idx(path: Path, array: np.ndarray, *, magic: bytes | None = None, compress=True,
              truncate: int | None = None) -> Path:
    """A small IDX file, good or deliberately broken."""
    array = np.asarray(array, dtype=np.uint8)
    header = (magic or bytes([0, 0, 0x08, array.ndim])) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + array.tobytes()
    if truncate is not None:
        payload = payload[:truncate]
    data = gzip.compress(payload) if compress else payload
    path.write_bytes(data)
    return path


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


def read_json(path):
    return json.loads(Path(path).read_text())
