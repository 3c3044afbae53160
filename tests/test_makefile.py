"""The Makefile's set-up, as a fresh checkout meets it: every target `make run` and `make test` need
has a rule (a broken edit once left the virtual environment's rule out, and CI's `make test` stopped)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("target", ["run", "test", "setup"])
def test_a_fresh_checkout_has_a_rule_for_every_step(tmp_path, target):
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    proc = subprocess.run(["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    plan = proc.stdout
    assert "-m venv .venv" in plan and "pip install" in plan and "compileall" in plan
