"""Property tests: random JSON in any run or comparison file never makes a listing fail, and a
command aimed at the damaged record either works or exits 2 with one clean sentence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import assert_clean_error, invoke

pytestmark = pytest.mark.usefixtures("fake_engine")

SCALARS = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) |
                    st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=10)
FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def made(runs_dir) -> dict:
    """One plain run and one comparison of two runs, trained once and copied per example."""
    run = json.loads(invoke("train", "--epochs", "2", "--json").stdout)
    cmp_out = json.loads(invoke("compare", "sgd", "adam", "--epochs", "2", "--json").stdout)
    pristine = runs_dir.parent / "pristine"
    shutil.copytree(runs_dir, pristine)
    return {"run": run["run_id"], "comparison": cmp_out["comparison_id"], "pristine": pristine}


def reset(runs_dir: Path, made: dict) -> None:
    shutil.rmtree(runs_dir)
    shutil.copytree(made["pristine"], runs_dir)


def mutate(data, key, value):
    """`data` with `key` set to `value` (or replaced whole when `key` is None)."""
    if key is None or not isinstance(data, dict):
        return value
    return {**data, key: value}


def listings_work(comparison: str) -> None:
    for args in (["runs"], ["runs", "--json"], ["runs", "-c", comparison], ["compare", "--list"],
                 ["compare", "--list", "--json"]):
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.output)
        assert "Traceback" not in result.output


def works_or_exits_2(*args) -> None:
    result = invoke(*args)
    if result.exit_code != 0:
        assert_clean_error(result, 2)


@FUZZ
@given(file=st.sampled_from(["run.json", "config.json", "history.json"]),
       key=st.none() | st.sampled_from(["status", "created", "pid", "id", "evaluations", "optimizer", "hidden",
                                        "epochs", "loss", "val_accuracy", "seconds", "best_val_accuracy"]),
       value=JSON)
def test_random_json_in_a_run_file(runs_dir, made, file, key, value):
    reset(runs_dir, made)
    path = runs_dir / made["run"] / file
    path.write_text(json.dumps(mutate(json.loads(path.read_text()), key, value)))
    listings_work(made["comparison"])
    works_or_exits_2("summary", made["run"])
    works_or_exits_2("runs", "rm", made["run"], "--yes")


@FUZZ
@given(target=st.sampled_from(["record", "run"]),
       key=st.none() | st.sampled_from(["id", "repeats", "variants", "errors", "created", "status", "config"]),
       value=JSON)
def test_random_json_in_a_comparison(runs_dir, made, target, key, value):
    reset(runs_dir, made)
    cid = made["comparison"]
    if target == "record":
        path = runs_dir / "comparisons" / f"{cid}.json"
        data = json.loads(path.read_text())
        if key in ("status", "config"):   # inside the first variant
            data["variants"][0] = mutate(data["variants"][0], "runs" if key == "status" else key, value)
        else:
            data = mutate(data, key, value)
    else:   # one of its runs
        run_id = json.loads((runs_dir / "comparisons" / f"{cid}.json").read_text())["variants"][0]["runs"][0]
        path = runs_dir / run_id / "run.json"
        data = mutate(json.loads(path.read_text()), key, value)
    path.write_text(json.dumps(data))
    listings_work(cid)
    works_or_exits_2("compare", "--show", cid)
    works_or_exits_2("compare", "--show", cid, "--json")
    works_or_exits_2("compare", "--resume", cid, "--json")


@pytest.mark.parametrize("content", [b"", b"\x00\xff\xfe", b"{", b"nul", "é".encode("latin-1")])
def test_undecodable_files_everywhere(runs_dir, made, content):
    for name in ("run.json", "config.json", "history.json"):
        reset(runs_dir, made)
        (runs_dir / made["run"] / name).write_bytes(content)
        (runs_dir / "comparisons" / f"{made['comparison']}.json").write_bytes(content)
        listings_work(made["comparison"])
        works_or_exits_2("summary", made["run"])
        works_or_exits_2("compare", "--show", made["comparison"])
