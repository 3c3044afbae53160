"""Shared test helpers (a plain module, imported as `from helpers import ...`): run the CLI in this
process or in a real one, write small IDX files, read JSON, and check the clean-error contract."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DATA_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
TINY = ("--limit", "500", "--epochs", "1")


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


def read_json(path):
    return json.loads(Path(path).read_text())


def real_data_dir() -> Path:
    from fmnist_cli import data

    try:
        return data.locate(os.environ.get("FMNIST_DATA_DIR") or None)[0]
    except Exception:
        pytest.skip("the real Fashion-MNIST files are not installed")


def texts(result) -> tuple[str, str]:
    """(stdout, stderr) of a CliRunner result or a CompletedProcess."""
    return result.stdout or "", result.stderr or ""


def code_of(result) -> int:
    return result.exit_code if hasattr(result, "exit_code") else result.returncode


def sentences(message: str) -> int:
    """A rough count of the sentences of an error message. Parenthesised details (a library's own
    message, say), quoted values and `commands` are not counted."""
    text = re.sub(r"^(Unexpected )?[Ee]rror:\s*", "", message.strip())
    for abbrev in ("e.g.", "i.e.", "etc."):
        text = text.replace(abbrev, "X")
    text = re.sub(r"`[^`]*`", "CMD", text)
    text = re.sub(r"'[^'\n]*'", "Q", text)
    previous = None
    while previous != text:
        previous, text = text, re.sub(r"\([^()]*\)", "", text)
    return max(1, len(re.findall(r"[.!?](?=\s|$)", text)))


def assert_clean_error(result, code: int | None = 2, *contains: str, max_sentences: int = 2) -> str:
    """The error contract: a short plain message on stderr, the right exit code, no traceback."""
    out, err = texts(result)
    rc = code_of(result)
    assert rc != 0, f"expected a failure, got exit 0:\n{out}\n{err}"
    if code is not None:
        assert rc == code, f"exit {rc}, expected {code}:\n{out}\n{err}"
    assert "Traceback" not in out + err, out + err
    message = err.strip()
    # an error after training started follows the line that said what was being trained
    first, _, rest = message.partition("\n")
    if re.match(r"(Training|Resuming) .* engine\)\.\.\.$", first):
        message = rest.strip()
    assert message, f"nothing on stderr (stdout: {out!r})"
    assert message.startswith("Error:"), message
    assert "Unexpected error" not in message, message
    lines = [ln for ln in message.splitlines() if ln.strip()]
    assert len(lines) <= 2, f"{len(lines)} lines:\n{message}"
    assert sentences(message) <= max_sentences, f"{sentences(message)} sentences: {message}"
    for text in contains:
        assert text in message, f"{text!r} not in: {message}"
    return message


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


def keras_tf():
    """Keras on TensorFlow in this process (the in-process CLI tests use TensorFlow too)."""
    from fmnist_cli import backend

    backend.configure("tensorflow")
    import keras

    return keras


def leftovers(run_dir: Path) -> list[str]:
    return [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".model-")]


def copy_run(src: Path, runs_dir: Path) -> Path:
    dst = runs_dir / src.name
    shutil.copytree(src, dst)
    return dst
