"""Real processes and their streams: a closed stdout or stderr, help in a pipe, messages a pipe gets
whole, and a home folder that does not exist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TINY, fmnist

# The CLI on the fake engine (tests/fakes.py) in a real process: the argv follows the script.
FAKE = ("import sys, fakes, pytest\n"
        "mp = pytest.MonkeyPatch(); fakes.install(mp)\n"
        "from fmnist_cli.cli import main; sys.argv = ['fmnist', *sys.argv[1:]]; main()")


def shell(command: str, env: dict | None = None, fake: bool = False, **kw) -> subprocess.CompletedProcess:
    """`command` through sh -c, with $FMNIST standing for the CLI (the fake-engine one if `fake`)."""
    full = {**os.environ, **(env or {}), "PY": sys.executable, "FAKE": FAKE,
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1])])}
    cli = '"$PY" -c "$FAKE"' if fake else '"$PY" -m fmnist_cli'
    return subprocess.run(["sh", "-c", command.replace("$FMNIST", cli)], env=full, capture_output=True,
                          text=True, timeout=kw.pop("timeout", 300), **kw)


def saved_runs(runs_dir: Path) -> list[dict]:
    return [json.loads((p / "run.json").read_text()) for p in runs_dir.iterdir() if (p / "run.json").is_file()]


# --- 4. a closed stdout or stderr --------------------------------------------------------------------

@pytest.mark.parametrize("close", [">&-", "2>&-", ">&- 2>&-", "<&- >&-"])
def test_listing_with_a_closed_stream(close, runs_dir):
    proc = shell(f"$FMNIST runs {close}")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "isatty" not in proc.stderr


@pytest.mark.parametrize("close", [">&-", "2>&-"])
def test_an_error_with_a_closed_stream_keeps_its_exit_code(close):
    proc = shell(f"$FMNIST evaluate nosuchrun {close}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    if close == ">&-":
        assert proc.stderr.startswith("Error: No run 'nosuchrun'")


def test_real_training_with_stdout_closed_is_saved(runs_dir):
    proc = shell(f"$FMNIST train {' '.join(TINY)} >&-")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "isatty" not in proc.stderr
    [run] = saved_runs(runs_dir)
    assert run["status"] == "completed" and (runs_dir / run["id"] / "model.keras").is_file()


@pytest.mark.parametrize("close", ["2>&-", ">&- 2>&-"])
def test_training_with_stderr_closed_is_saved(close, runs_dir):
    proc = shell(f"$FMNIST train --epochs 2 {close}", fake=True)
    assert proc.returncode == 0, proc.stderr
    [run] = saved_runs(runs_dir)
    assert run["status"] == "completed"
    if close == "2>&-":
        assert "saved to" in proc.stdout


def test_comparison_with_stdout_closed_is_saved(runs_dir):
    proc = shell("$FMNIST compare sgd adam --epochs 2 >&-", fake=True)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(saved_runs(runs_dir)) == 2


# --- 9. and 10. help and messages in a pipe ---------------------------------------------------------

@pytest.mark.parametrize("args", ["--help", "compare --help", "runs --help", "runs rm -h"])
def test_help_in_a_pipe_starts_with_its_usage_line(args):
    proc = shell(f"$FMNIST {args} | head -1")
    assert proc.returncode == 0 and proc.stdout.strip().startswith("Usage: fmnist"), repr(proc.stdout)
    assert proc.stderr == ""


def test_messages_in_a_pipe_are_not_hard_wrapped(tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "runs"
    env = {"COLUMNS": "40", "FMNIST_RUNS_DIR": str(deep)}
    for args, code in ((["runs"], 0), (["compare", "--list"], 0), (["compare", "--list", "--epochs", "3"], 2),
                       (["summary", "nosuchrun"], 2)):
        proc = fmnist(*args, env=env, timeout=60)
        message = proc.stderr.strip()
        assert proc.returncode == code and len(message) > 40, proc.stderr
        assert "\n" not in message, message
    proc = shell("$FMNIST train --epochs 2 --name a-long-name-for-a-run 2>&1 | cat", fake=True, env=env)
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("Run ") and lines[-1].endswith("model.keras"), lines
    # a log made with 2>&1 starts with what was trained; stdout alone keeps the epoch lines
    assert lines[0].startswith("Training 100 relu rmsprop e2 b32 seed 42 on tensorflow"), lines
    proc = shell("$FMNIST train --epochs 2 2>/dev/null | cat", fake=True, env=env)
    assert proc.returncode == 0 and not proc.stdout.startswith("Training"), proc.stdout
    # compare --list: a line per comparison, for grep
    proc = shell("$FMNIST compare sgd adam --epochs 2 --name a-long-name-for-a-sweep -q >/dev/null && "
                 "$FMNIST compare --list | cat", fake=True, env=env)
    assert proc.returncode == 0 and len(proc.stdout.strip().splitlines()) == 1, proc.stdout


# --- 11. a home folder that does not exist ------------------------------------------------------------

def _homeless(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "KERAS_HOME", "MPLCONFIGDIR")}
    (tmp_path / "tmp").mkdir()
    return {**env, "HOME": str(tmp_path / "nohome"), "TMPDIR": str(tmp_path / "tmp")}


def test_nothing_is_written_into_a_home_that_does_not_exist(tmp_path, runs_dir):
    env = _homeless(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "fmnist_cli", "train", *TINY, "--json"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "completed"
    assert not (tmp_path / "nohome").exists()
    assert list((tmp_path / "tmp").iterdir()) == []   # the stand-in settings folders are removed at exit


def test_plot_without_a_home(tmp_path, runs_dir):
    env = _homeless(tmp_path)
    proc = subprocess.run(["sh", "-c", '"$PY" -c "$FAKE" compare sgd adam --epochs 2 --plot "$OUT"'],
                          env={**env, "PY": sys.executable, "FAKE": FAKE, "OUT": str(tmp_path / "c.png"),
                               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                                              str(Path(__file__).parents[1])])},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c.png").stat().st_size > 0 and not (tmp_path / "nohome").exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_no_jax_cache_without_a_home(tmp_path, monkeypatch):
    from fmnist_cli import backend

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
    assert backend.cache_dir() is None
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))   # a cache the user named is used
    assert backend.cache_dir() == tmp_path / "cache" / "fmnist"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert backend.cache_dir() == tmp_path / ".cache" / "fmnist"
