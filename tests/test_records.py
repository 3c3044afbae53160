"""Typed records: they round-trip through JSON, ignore unknown keys, and turn any damage into a
`broken` reason instead of an exception."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmnist_cli.config import RunConfig
from fmnist_cli.records import (FORMAT, Broken, ComparisonRecord, EpochEnd, Evaluation, RunRecord, Status,
                                VariantSpec, check_history)

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


def a_run_record() -> RunRecord:
    return RunRecord(id="20261128-101500-adam-relu-3f2a", status=Status.COMPLETED, created="2026-11-28T10:15:00+00:00",
                     pid=123, host="h", seconds=1.5, best_epoch=2, best_val_accuracy=0.8, final={"loss": 0.4},
                     evaluations={"test": Evaluation(loss=0.4, accuracy=0.85, evaluated="t", n=10000)})


def a_comparison() -> ComparisonRecord:
    config = RunConfig().to_dict()
    return ComparisonRecord(id="20261128-101500-cmp-1a2b", created="t", argv=["compare", "sgd"], base=config,
                            repeats=2, variants=[VariantSpec(label="sgd", settings={}, config=config, runs=["20261128-101500-sgd-relu-1a2b", None])])


def test_records_round_trip_through_json():
    for record in (a_run_record(), a_comparison()):
        text = json.dumps(record.to_json())
        back = type(record).from_json(json.loads(text))
        assert back.broken is None
        assert back.to_json() == record.to_json()
        assert back.to_json()["format"] == FORMAT


def test_unknown_keys_are_ignored():
    data = {**a_run_record().to_json(), "from_the_future": [1, 2], "format": FORMAT + 1}
    record = RunRecord.from_json(data)
    assert record.broken is None and "from_the_future" not in record.to_json()


@pytest.mark.parametrize("change,reason", [
    ({"created": 12345}, "created should be text"),
    ({"status": "nope"}, "status is 'nope'"),
    ({"status": 3}, "status is 3"),
    ({"pid": "12"}, "pid should be a whole number"),
    ({"pid": True}, "pid should be a whole number, not true"),
    ({"status": None}, "status is null, not one of"),
    ({"evaluations": {"test": {"accuracy": "high"}}}, "accuracy should be a number"),
    ({"evaluations": []}, "evaluations should be a JSON object"),
    ({"final": {"loss": "low"}}, "final.loss should be a number, not 'low'"),
    ({"status": "broken"}, "status is 'broken', not one of: running, completed, interrupted, diverged, failed"),
    ({"status": "crashed"}, "status is 'crashed', not one of"),
])
def test_a_wrong_value_makes_the_record_broken_with_a_reason(change, reason):
    record = RunRecord.from_json({**a_run_record().to_json(), **change})
    assert record.broken and reason in record.broken


@pytest.mark.parametrize("data", [{"status": 42}, {"status": 42, "id": "20260101-000000-x"}])
def test_a_wrong_status_is_the_reason_whether_or_not_the_id_is_there(data):
    """The reason shows one problem: a wrong value, not the missing id the folder's name stands in for."""
    record = RunRecord.from_json(data, id="20260101-000000-x")
    assert record.broken == "status is 42, not one of: running, completed, interrupted, diverged, failed"
    assert RunRecord.from_json({"status": "completed"}, id="x").broken == "id is missing"


@pytest.mark.parametrize("data", [[1, 2], None, 5, "x", {}, {"variants": 5}, {"id": "a", "repeats": 2, "variants": []},
                                  {"id": "a", "repeats": 1, "variants": [{"label": "x", "config": {}, "runs": []}]},
                                  {"id": "a", "repeats": 1, "variants": [{"label": "x", "runs": [None],
                                                                          "config": {"optimizer": {"name": "nope"}}}]}])
def test_malformed_comparison_records_are_broken(data):
    assert ComparisonRecord.from_json(data, id="a").broken


def test_a_variant_config_with_an_unknown_optimizer_says_so():
    data = a_comparison().to_json()
    data["variants"][0]["config"]["optimizer"]["name"] = "nope"
    assert "Unknown optimizer 'nope'" in ComparisonRecord.from_json(data).broken


@settings(max_examples=300, deadline=None)
@given(data=JSON)
def test_any_json_value_reads_without_an_exception(data):
    for cls in (RunRecord, ComparisonRecord, VariantSpec, Evaluation):
        record = cls.from_json(data)
        assert record.broken is None or isinstance(record.broken, str)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(a_run_record().to_json())), value=JSON)
def test_any_value_in_any_run_json_field_reads_without_an_exception(key, value):
    record = RunRecord.from_json({**a_run_record().to_json(), key: value})
    if record.broken is None:   # what reads back cleanly also writes and reads again
        assert RunRecord.from_json(json.loads(json.dumps(record.to_json()))).broken is None


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(RunConfig().to_dict())), value=JSON)
def test_any_value_in_any_config_field_is_a_usage_error_or_valid(key, value):
    from fmnist_cli.config import config_problem

    problem = config_problem({**RunConfig().to_dict(), key: value})
    assert problem is None or isinstance(problem, str)


def test_history_must_be_lists_of_numbers_of_one_length():
    good = {"loss": [1, 0.5], "accuracy": [0.5, 0.6], "val_loss": [1, 0.9], "val_accuracy": [0.4, 0.5],
            "seconds": [1.0, 1.0]}
    assert check_history(good)["loss"] == [1.0, 0.5]
    for bad in ([], {**good, "loss": [1]}, {**good, "accuracy": "x"}, {**good, "val_loss": [1, "x"]},
                {k: v for k, v in good.items() if k != "val_accuracy"}, {**good, "seconds": [1.0]}):
        with pytest.raises(Broken):
            check_history(bad)


def test_status_prints_and_compares_as_its_value():
    assert Status.COMPLETED == "completed" and str(Status.DIVERGED) == "diverged"
    assert json.dumps(RunRecord(id="x", status=Status.FAILED).to_json()["status"]) == '"failed"'


def test_events_carry_their_fields():
    event = EpochEnd(member=1, epoch=2, loss=0.5, accuracy=0.8, val_loss=0.6, val_accuracy=0.7, seconds=1.0)
    assert event.metric("val_accuracy") == 0.7 and event.run_id is None
