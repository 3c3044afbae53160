"""Disk trouble while saving: a clean message, and the run marked failed rather than left running."""

import errno
import json

from helpers import invoke, read_json


def test_disk_full_while_saving_the_model(monkeypatch, runs_dir):
    from fmnist_cli import store

    def full(self, run_dir, model, **kw):
        raise store.storage_error(OSError(errno.ENOSPC, "No space left on device"), run_dir / "model.keras")

    monkeypatch.setattr(store.RunStore, "save_model", full)
    result = invoke("train", "--limit", "500", "--epochs", "1")
    assert result.exit_code == 1 and "disk is full" in result.output and "Traceback" not in result.output
    (run_dir,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    info = read_json(run_dir / "run.json")
    assert info["status"] == "failed" and "disk is full" in info["message"]
    assert json.loads(invoke("runs", "--json").stdout)[0]["status"] == "failed"
