"""Diverging runs: marked as diverged and explained (the learning rate), valid JSON output, never
picked as `latest`, and in a comparison the other variants still complete."""

from __future__ import annotations

import json

from helpers import assert_clean_error, invoke, leftovers, read_json, texts


def test_diverging_run_is_marked_and_explained(runs_dir):
    result = invoke("train", "--optimizer", "sgd", "--learning-rate", "1e6", "--limit", "1000", "--epochs", "3")
    out, err = texts(result)
    assert result.exit_code not in (0, 130), out + err
    assert "Traceback" not in out + err
    assert "learning rate" in out + err
    (run_dir,) = [d for d in runs_dir.iterdir() if d.is_dir()]
    info = read_json(run_dir / "run.json")
    assert info["status"] == "diverged" and "learning rate" in info["message"]
    assert not leftovers(run_dir)
    # the listing and `latest` cope with it: a diverged run is never picked as `latest`
    listed = invoke("runs", "--json")
    assert json.loads(listed.stdout)[0]["status"] == "diverged"
    assert_clean_error(invoke("evaluate", "latest"), 2, "no finished runs")
    assert_clean_error(invoke("evaluate", run_dir.name), 2, "no saved model")


def test_diverging_run_json_output_is_valid_json(runs_dir):
    result = invoke("train", "--optimizer", "sgd:lr=1e6", "--limit", "1000", "--epochs", "2", "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)   # NaN written as null: any JSON parser reads it
    assert out["status"] == "diverged" and "learning rate" in out["message"]


def test_diverging_variant_in_compare_is_marked_and_the_other_completes(runs_dir):
    result = invoke("compare", "sgd:lr=1e6", "adam", "--limit", "1000", "--epochs", "2", "--json")
    out, err = texts(result)
    assert "Traceback" not in out + err
    assert result.exit_code != 130
    summary = json.loads(out)
    by_label = {v["label"]: v for v in summary["variants"]}
    diverged, adam = by_label["sgd:lr=1e+06"], by_label["adam"]
    assert diverged["status"] == "diverged"
    assert "learning rate" in diverged["runs"][0]["message"]
    assert adam["status"] == "completed" and adam["aggregate"]["epochs"] == 2
    assert summary["best_variant"] == "adam"
    table = invoke("compare", "--show", summary["comparison_id"])
    assert table.exit_code == 0 and "diverged" in table.stdout and "learning rate" in table.stdout
