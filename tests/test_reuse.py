"""fmnist compare --reuse: slots filled by copies of earlier runs with identical settings, on the fake
engine where only the bookkeeping matters, and once for real (JAX) where the numbers do."""

import json
import os
import re

import pytest

from helpers import assert_clean_error, fmnist, invoke, read_json
from fmnist_cli.store import RunStore

SMALL = ("--limit", "500", "--epochs", "2")


def compare_json(*args, codes=(0,)):
    result = invoke("compare", *args, "--json")
    assert result.exit_code in codes, result.output
    return json.loads(result.stdout)


def runs_of(out) -> dict:
    """{(label, repeat): slot} of a compare --json document."""
    return {(v["label"], r["repeat"]): r for v in out["variants"] for r in v["runs"]}


def test_a_wider_sweep_copies_what_it_has_and_trains_the_rest(runs_dir, fake_engine):
    first = compare_json("sgd", "adam", "--vary", "lr=0.01,0.1", "--repeats", "2", *SMALL)
    fake_engine.trained.clear()
    result = invoke("compare", "sgd", "adam", "--vary", "lr=0.01,0.1,0.3", "--repeats", "2", *SMALL, "--reuse")
    assert result.exit_code == 0, result.output
    assert "Reused 8 of 12 run(s): copies of earlier runs with identical settings; training 4." in result.output
    assert "8 run(s) are copies of earlier runs" in " ".join(result.output.split())
    assert sorted((c.variant, c.repeat) for c in fake_engine.trained) == \
        [("adam lr=0.3", 0), ("adam lr=0.3", 1), ("sgd lr=0.3", 0), ("sgd lr=0.3", 1)]
    cid, = set(RunStore(runs_dir).comparison_ids()) - {first["comparison_id"]}
    second = json.loads(invoke("compare", "--show", cid, "--json").stdout)
    old, new = runs_of(first), runs_of(second)
    for key, slot in new.items():
        if "0.3" in key[0]:
            assert slot["reused_from"] is None
            continue
        source = old[key]
        assert slot["reused_from"] == source["run_id"] and slot["run_id"] != source["run_id"]
        assert slot["history"] == source["history"] and slot["status"] == "completed"
        copy, orig = runs_dir / slot["run_id"], runs_dir / source["run_id"]
        assert (copy / "model.keras").read_bytes() == (orig / "model.keras").read_bytes()
        assert not (copy / "model.keras").samefile(orig / "model.keras")   # a copy, not a link
        config = read_json(copy / "config.json")
        assert config["comparison"] == second["comparison_id"] and config["variant"] == key[0]
        assert read_json(copy / "run.json")["comparison"] == second["comparison_id"]
    # s/epoch is this comparison's own: the copied variants have none
    by_label = {v["label"]: v for v in second["variants"]}
    assert by_label["sgd lr=0.01"]["aggregate"]["seconds_per_epoch"]["n"] == 0
    assert by_label["sgd lr=0.3"]["aggregate"]["seconds_per_epoch"]["n"] == 2


def test_runs_no_copies_lists_each_result_once(runs_dir, fake_engine):
    first = compare_json("sgd", "adam", *SMALL)
    second = compare_json("sgd", "adam", "rmsprop", *SMALL, "--reuse")
    listed = lambda *args: sorted(r["id"] for r in json.loads(invoke("runs", *args, "--json").stdout))
    trained = sorted([r["run_id"] for r in runs_of(first).values()] + [runs_of(second)[("rmsprop", 0)]["run_id"]])
    assert listed("--no-copies") == trained and len(listed()) == 5
    # a copy whose source is not listed (another comparison's, or one a filter leaves out) stands for it
    assert listed("-c", second["comparison_id"], "--no-copies") == sorted(r["run_id"] for r in runs_of(second).values())
    assert listed("--where", f"comparison={second['comparison_id']}", "--no-copies") == \
        sorted(r["run_id"] for r in runs_of(second).values())


def test_removing_either_comparison_leaves_the_other_whole(runs_dir, fake_engine):
    first = compare_json("sgd", "adam", *SMALL)
    second = compare_json("sgd", "adam", "rmsprop", *SMALL, "--reuse")
    assert invoke("runs", "rm", "--comparison", first["comparison_id"], "--yes").exit_code == 0
    shown = json.loads(invoke("compare", "--show", second["comparison_id"], "--json").stdout)
    assert shown["status"] == "completed" and all(r["status"] == "completed" for r in runs_of(shown).values())
    store = RunStore(runs_dir)
    for slot in runs_of(shown).values():
        store.check_model(runs_dir / slot["run_id"])
    # and the other way round: a third comparison copies from the second, which then goes
    third = compare_json("sgd", *SMALL, "--reuse")
    assert invoke("runs", "rm", "--comparison", second["comparison_id"], "--yes").exit_code == 0
    slot = runs_of(json.loads(invoke("compare", "--show", third["comparison_id"], "--json").stdout))[("sgd", 0)]
    assert slot["status"] == "completed" and slot["reused_from"] == runs_of(first)[("sgd", 0)]["run_id"]


@pytest.mark.parametrize("change", [("--limit", "400"), ("--seed", "7"), ("--epochs", "3"), ("--hidden", "32"),
                                    ("--engine", "fit"), ("--val-size", "0.25")])
def test_a_run_of_other_settings_is_not_reused(change, runs_dir, fake_engine):
    compare_json("sgd", "adam", *SMALL)
    fake_engine.trained.clear()
    options = dict(zip(SMALL[::2], SMALL[1::2]))
    options[change[0]] = change[1]
    out = compare_json("sgd", "adam", *[x for kv in options.items() for x in kv], "--reuse")
    assert len(fake_engine.trained) == 2 and not any(r["reused_from"] for r in runs_of(out).values())


def test_a_run_on_other_data_or_libraries_is_not_reused(monkeypatch, runs_dir, fake_engine):
    import fakes

    from fmnist_cli import backend, data

    compare_json("sgd", *SMALL)
    monkeypatch.setattr(data, "load", lambda data_dir=None, strict=True: fakes.FakeDataset("other-data"))
    fake_engine.trained.clear()
    compare_json("sgd", *SMALL, "--reuse")
    assert len(fake_engine.trained) == 1
    monkeypatch.setattr(backend, "describe", lambda: {"backend": "fake", "keras": "99"})
    fake_engine.trained.clear()
    compare_json("sgd", *SMALL, "--reuse")
    assert len(fake_engine.trained) == 1   # neither run: one's data, the other's Keras differ
    monkeypatch.setattr(backend, "describe", lambda: {"backend": "fake", "keras": "99", "cpus": 64})
    fake_engine.trained.clear()
    compare_json("sgd", *SMALL, "--reuse")
    assert len(fake_engine.trained) == 1   # TensorFlow's numbers depend on its thread count
    # the git commit says which code ran, not what it computes (the version does): still reused
    monkeypatch.setattr(backend, "describe", lambda: {"backend": "fake", "keras": "99", "cpus": 64, "commit": "abc"})
    fake_engine.trained.clear()
    compare_json("sgd", *SMALL, "--reuse")
    assert not fake_engine.trained
    # but uncommitted code counts: only the very same changes are the same code (a clean commit
    # stands in for another clean one, as `abc` does for `abd`)
    for commit, trained in (("abc+changes.1", 1), ("abc+changes.1", 0), ("abc+changes.2", 1), ("abd", 0),
                            ("abd+changes.unknown", 1), ("abd+changes.unknown", 1)):   # unreadable changes
        monkeypatch.setattr(backend, "describe", lambda commit=commit: {"backend": "fake", "keras": "99", "cpus": 64,
                                                                          "commit": commit})
        fake_engine.trained.clear()
        compare_json("sgd", *SMALL, "--reuse")
        assert len(fake_engine.trained) == trained, commit


def test_the_code_commit_is_recorded_where_fmnist_runs_from_a_clone():
    from fmnist_cli import backend

    commit = backend.code_commit()   # None where git is missing or refuses the folder
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}(\+changes\.[0-9a-f]{12})?", commit), commit


@pytest.mark.parametrize("damage", ["model", "history", "vmapped", "resumed"])
def test_a_broken_or_unsafe_run_is_not_reused(damage, runs_dir, fake_engine):
    out = compare_json("sgd", *SMALL)
    run = runs_dir / runs_of(out)[("sgd", 0)]["run_id"]
    record = read_json(run / "run.json")
    if damage == "model":
        (run / "model.keras").write_bytes(b"not a zip")
    elif damage == "history":
        (run / "history.json").unlink()
    else:   # a resume restarts `fit`'s shuffles, and records the resuming session's vmapping
        record.update(vmapped=2) if damage == "vmapped" else record.update(resumed_from=[1])
        (run / "run.json").write_text(json.dumps(record))
    fake_engine.trained.clear()
    out = compare_json("sgd", *SMALL, "--reuse")
    assert len(fake_engine.trained) == 1 and runs_of(out)[("sgd", 0)]["reused_from"] is None


def test_an_interrupted_run_is_not_reused(runs_dir, fake_engine):
    fake_engine.stop_after = 1
    invoke("compare", "sgd", "--epochs", "3")
    fake_engine.stop_after = None
    fake_engine.trained.clear()
    out = compare_json("sgd", "--epochs", "3", "--reuse")
    assert len(fake_engine.trained) == 1 and runs_of(out)[("sgd", 0)]["reused_from"] is None


def test_resume_with_reuse_fills_empty_slots_from_earlier_runs(runs_dir, fake_engine):
    first = compare_json("sgd", "adam", *SMALL)
    fake_engine.stop_after = 0   # nothing kept: every slot of the wider comparison is empty
    wider = compare_json("sgd", "adam", "rmsprop", *SMALL, codes=(1,))
    fake_engine.stop_after = None
    fake_engine.trained.clear()
    result = invoke("compare", "--resume", wider["comparison_id"], "--reuse", "--json")
    assert result.exit_code == 0, result.output
    assert [c.variant for c in fake_engine.trained] == ["rmsprop"]
    done = runs_of(json.loads(result.stdout))
    assert done[("sgd", 0)]["reused_from"] == runs_of(first)[("sgd", 0)]["run_id"]
    assert all(r["status"] == "completed" for r in done.values())


def test_resume_with_other_settings_points_to_reuse(fake_engine):
    compare_json("sgd", *SMALL)
    message = assert_clean_error(invoke("compare", "--resume", "latest", "--vary", "lr=0.1,0.3"), 2, "--reuse")
    assert "--vary does not apply to --resume" in message


def test_reuse_does_not_apply_to_show(fake_engine):
    compare_json("sgd", *SMALL)
    assert_clean_error(invoke("compare", "--show", "latest", "--reuse"), 2, "--reuse")


def test_reused_runs_are_the_runs_training_gives(tmp_path):
    """For real (JAX, the fused engine): the copies are the earlier runs byte for byte, only the new
    variant is trained, and it gives what it gives trained alone."""
    pytest.importorskip("jax")
    env = {"FMNIST_RUNS_DIR": str(tmp_path / "runs")}
    tiny = ("--limit", "1000", "--epochs", "2", "--hidden", "16", "--backend", "jax")
    first = fmnist("compare", "sgd", "adam", *tiny, "--json", env=env)
    assert first.returncode == 0, first.stderr
    wider = fmnist("compare", "sgd", "adam", "rmsprop", *tiny, "--reuse", "--json", env=env)
    assert wider.returncode == 0, wider.stderr
    assert "Reused 2 of 3 run(s): copies of earlier runs with identical settings; training 1." in wider.stderr
    old, new = runs_of(json.loads(first.stdout)), runs_of(json.loads(wider.stdout))
    runs = tmp_path / "runs"
    for label in ("sgd", "adam"):
        assert new[(label, 0)]["reused_from"] == old[(label, 0)]["run_id"]
        assert new[(label, 0)]["history"] == old[(label, 0)]["history"]
        copy, orig = runs / new[(label, 0)]["run_id"], runs / old[(label, 0)]["run_id"]
        assert (copy / "model.keras").read_bytes() == (orig / "model.keras").read_bytes()
    assert new[("rmsprop", 0)]["reused_from"] is None
    assert read_json(runs / new[("rmsprop", 0)]["run_id"] / "run.json")["vmapped"] == 1
    assert len([p for p in runs.iterdir() if p.name[:1].isdigit()]) == 5   # 2 + 1 trained, 2 copies
    alone = fmnist("train", "--optimizer", "rmsprop", *tiny, "--json", env=env)
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout)["history"]["val_loss"] == new[("rmsprop", 0)]["history"]["val_loss"]
    # and a run trained alone stands in for a comparison's slot too
    again = fmnist("compare", "rmsprop", *tiny, "--reuse", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert runs_of(json.loads(again.stdout))[("rmsprop", 0)]["reused_from"] in (
        json.loads(alone.stdout)["run_id"], new[("rmsprop", 0)]["run_id"])


def test_a_diverged_run_is_a_result_and_is_reused(runs_dir, fake_engine):
    """The same seed diverges again: a widened sweep need not train its diverged corner twice."""
    out = compare_json("sgd", *SMALL)
    run = runs_dir / runs_of(out)[("sgd", 0)]["run_id"]
    record = read_json(run / "run.json")
    record.update(status="diverged", message="The loss exploded")
    (run / "run.json").write_text(json.dumps(record))
    (run / "model.keras").unlink()   # diverged in its first epoch: nothing to save
    fake_engine.trained.clear()
    out = compare_json("sgd", *SMALL, "--reuse", codes=(1,))   # 1: no variant is usable
    slot = runs_of(out)[("sgd", 0)]
    assert fake_engine.trained == [] and slot["reused_from"] == run.name and slot["status"] == "diverged"


def test_where_seeds_train_as_vmapped_families_only_lone_slots_are_filled(runs_dir, fake_engine, monkeypatch):
    """On a device that vmaps (a GPU, or $FMNIST_VMAP_MIN), a slot whose seeds would be stepped as one
    vmapped family has numbers of that family: no lone run stands in for it. A slot alone in its
    family (`--repeats 1`, optimizers of different kinds) trains alone, as its source did."""
    from fmnist_cli import reuse

    compare_json("sgd", "adam", *SMALL, "--repeats", "2")
    real = reuse._here

    def vmapping(data_dir):
        here = real(data_dir)
        return {**here, "setup": lambda name: {**here["setup"](name), "vmaps": True}}

    monkeypatch.setattr(reuse, "_here", vmapping)
    monkeypatch.setenv("FMNIST_VMAP_MIN", "2")
    fake_engine.trained.clear()
    compare_json("sgd", "adam", *SMALL, "--repeats", "2", "--reuse")
    assert len(fake_engine.trained) == 4   # two families of two seeds: none filled
    fake_engine.trained.clear()
    out = compare_json("sgd", "adam", *SMALL, "--reuse")
    assert not fake_engine.trained and all(r["reused_from"] for v in out["variants"] for r in v["runs"])
    # two batch sizes train in units of their own: each sgd slot is alone in its family
    compare_json("sgd", *SMALL, "--batch-size", "64")
    fake_engine.trained.clear()
    compare_json("sgd", *SMALL, "--vary", "batch_size=32,64", "--reuse")
    assert not fake_engine.trained


def test_a_ctrl_c_while_copying_keeps_the_copies_made(runs_dir, fake_engine, monkeypatch):
    first = compare_json("sgd", "adam", "rmsprop", *SMALL)
    made = []
    original = RunStore.copy_run

    def copy_then_stop(self, source, config):
        if made:
            raise KeyboardInterrupt   # the second copy: Ctrl-C
        made.append(original(self, source, config))
        return made[-1]

    monkeypatch.setattr(RunStore, "copy_run", copy_then_stop)
    result = invoke("compare", "sgd", "adam", "rmsprop", *SMALL, "--reuse")
    assert result.exit_code == 130, result.output
    store = RunStore(runs_dir)
    cid, = set(store.comparison_ids()) - {first["comparison_id"]}
    slots = [run for v in store.read_comparison(cid).variants for run in v.runs]
    assert slots.count(made[0].name) == 1 and slots.count(None) == 2
    monkeypatch.setattr(RunStore, "copy_run", original)
    fake_engine.trained.clear()
    assert invoke("compare", "--resume", cid, "--reuse").exit_code == 0
    assert not fake_engine.trained   # the other two copied on resume; nothing trained


def test_a_tensorflow_gpu_is_recorded_by_its_model():
    """Two GPU models are two setups: TensorFlow's device says which (no GPU here: a stand-in)."""
    from types import SimpleNamespace

    from fmnist_cli.backend import _tf_gpu_name

    def tf(details):
        def get(gpu):
            if details is None:
                raise RuntimeError("no details on this build")
            return details
        return SimpleNamespace(config=SimpleNamespace(experimental=SimpleNamespace(get_device_details=get)))

    assert _tf_gpu_name(tf({"device_name": "NVIDIA H200", "compute_capability": (9, 0)}), "GPU:0") == "NVIDIA H200"
    assert _tf_gpu_name(tf({}), "GPU:0") == "gpu"
    assert _tf_gpu_name(tf(None), "GPU:0") == "gpu"
