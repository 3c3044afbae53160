"""The fused engine on TensorFlow (in this process, which runs Keras on TensorFlow): equal to
`fit` where batch order cannot matter, the same numbers for the same seed, exact resumes, a saved
model that plain Keras loads and that scores what was reported, and the engine's shared rules."""

from __future__ import annotations

import numpy as np
import pytest

from fmnist_cli import training
from fmnist_cli.config import RunConfig, parse_optimizer
from fmnist_cli.records import EpochEnd


def run(runs_dir, **kw):
    return training.train(RunConfig(**kw).validate(), runs_dir)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "nesterov"])
def test_fused_equals_fit_when_batch_order_cannot_matter(runs_dir, optimizer):
    # One batch of 1000 per epoch: shuffling cannot change anything, so the engines must agree.
    common = dict(optimizer=parse_optimizer(optimizer), limit=1000, batch_size=1000, epochs=3)
    fit, fused = run(runs_dir, engine="fit", **common), run(runs_dir, engine="fused", **common)
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert fused.history[metric] == pytest.approx(fit.history[metric], abs=2e-4), metric


def test_same_seed_same_numbers_and_the_model_scores_what_was_reported(runs_dir):
    import keras

    from fmnist_cli import data

    a = run(runs_dir, engine="fused", limit=2000, epochs=2, batch_size=48, dropout=0.2)
    b = run(runs_dir, engine="fused", limit=2000, epochs=2, batch_size=48, dropout=0.2)
    assert a.history["val_accuracy"] == b.history["val_accuracy"] and a.history["loss"] == b.history["loss"]
    model = keras.models.load_model(a.model_path)
    split = data.make_split(data.load(), limit=2000)
    loss, acc = model.evaluate(split.x_val, split.y_val, verbose=0)
    assert acc == pytest.approx(a.history["val_accuracy"][-1], abs=2e-4)
    assert loss == pytest.approx(a.history["val_loss"][-1], rel=1e-3)


def test_a_resumed_run_gives_the_uninterrupted_numbers(runs_dir):
    cfg = RunConfig(engine="fused", limit=2000, epochs=4, dropout=0.3, hidden=(64, 32)).validate()
    whole = training.train(cfg, runs_dir)
    seen = []
    part = training.train(cfg, runs_dir, on_event=lambda e: isinstance(e, EpochEnd) and seen.append(e.epoch),
                          should_stop=lambda: len(seen) >= 2)
    assert part.status == "interrupted" and part.epochs_run == 2
    resumed = training.train(cfg, runs_dir, resume=__import__("pathlib").Path(part.run_dir))
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert resumed.history[metric] == whole.history[metric], metric


def test_a_group_trains_like_its_runs_alone_and_divergence_is_caught(runs_dir):
    configs = [RunConfig(engine="fused", limit=1000, epochs=2, optimizer=parse_optimizer(o)).validate()
               for o in ("adam", "sgd:lr=50")]
    together = training.train_group(configs, runs_dir)
    alone = run(runs_dir, engine="fused", limit=1000, epochs=2, optimizer=parse_optimizer("adam"))
    # bit for bit: a run's numbers never depend on the company it trains in
    assert together[0].history["loss"] == alone.history["loss"]
    assert together[0].history["val_loss"] == alone.history["val_loss"]
    assert together[1].status == "diverged" and together[0].status == "completed"


def test_early_stopping_keeps_the_monitored_best(runs_dir):
    r = run(runs_dir, engine="fused", limit=2000, epochs=30, optimizer=parse_optimizer("sgd:lr=0.5"),
            early_stopping=1, monitor="val_loss")
    assert r.stopped_early and r.epochs_run < 30
    assert r.model_epoch == int(np.argmin(r.history["val_loss"])) + 1


def test_compiled_programs_are_cached_between_processes(tmp_path):
    """A second process reuses the first one's XLA programs from the cache folder; with
    FMNIST_COMPILE_CACHE=0 nothing is written there."""
    from helpers import fmnist

    # TF_XLA_FLAGS emptied: this test process may carry one, set when it loaded TensorFlow itself.
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "FMNIST_RUNS_DIR": str(tmp_path / "runs"), "TF_XLA_FLAGS": ""}
    first = fmnist("train", "--limit", "1000", "--epochs", "1", "--json", env=env)
    assert first.returncode == 0, first.stderr
    cached = list((tmp_path / "cache" / "fmnist" / "tf-xla").iterdir())
    assert cached, "no compiled program was stored"
    again = fmnist("train", "--limit", "1000", "--epochs", "1", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (tmp_path / "cache" / "fmnist" / "tf-xla").iterdir()) == sorted(p.name for p in cached)
    off = fmnist("train", "--limit", "1000", "--epochs", "1", "--json",
                 env={**env, "XDG_CACHE_HOME": str(tmp_path / "off"), "FMNIST_COMPILE_CACHE": "0"})
    assert off.returncode == 0, off.stderr
    assert not (tmp_path / "off" / "fmnist" / "tf-xla").exists()


@pytest.mark.parametrize("n", [1000, 48000])   # 48,000 float32 uniforms hold ties: a stable sort's case
def test_the_batch_order_is_the_permutation_xla_sorts(n):
    """The engine sorts XLA's uniforms in numpy: the very permutation XLA's own argsort gives."""
    import tensorflow as tf

    from fmnist_cli.engines.fused import _permutations

    @tf.function(jit_compile=True)
    def xla(seed, epoch):
        values = tf.random.stateless_uniform((n,), seed=tf.stack([seed, epoch]))
        return values, tf.argsort(values)

    for seed, epoch in [(42, 1), (42, 2), (7, 5)]:
        values, expected = xla(tf.constant(seed, tf.int64), tf.constant(epoch, tf.int64))
        assert np.array_equal(_permutations(values.numpy()[None, None])[0], expected.numpy())


def test_compare_resume_goes_on_from_the_checkpoints_with_the_unbroken_numbers(runs_dir, tmp_path):
    """A comparison stopped after epoch 2 of 4: `--resume` continues the same runs from their
    checkpoints (2 epochs left each, not 4) and ends where an unbroken comparison ends."""
    from fmnist_cli import compare as cmp
    from fmnist_cli.records import Plan, Status
    from fmnist_cli.store import RunStore

    def numbers(store, record):
        return [{k: v for k, v in store.load_run(store.root / v_.runs[0]).history.items() if k != "seconds"}
                for v_ in record.variants]

    base = RunConfig(limit=600, epochs=4, hidden=(32,)).validate()
    store = RunStore(runs_dir)
    record = cmp.new_comparison(store, base, cmp.expand(base, ["sgd", "adam"], {}), 1, ["test"])
    ends = []
    record = cmp.execute(store, record, on_event=lambda e: ends.append(e) if isinstance(e, EpochEnd) else None,
                         should_stop=lambda: len(ends) >= 4)   # both runs have finished epoch 2
    ids = [v.runs[0] for v in record.variants]
    assert [store.load_run(runs_dir / i).status for i in ids] == [Status.INTERRUPTED] * 2
    plans, ends = [], []

    def on_event(event):
        (plans if isinstance(event, Plan) else ends).append(event)

    record = cmp.execute(store, store.read_comparison(record.id), on_event=on_event)
    assert (plans[0].runs, plans[0].resumed, plans[0].epochs) == (2, 2, 4)
    assert sorted({e.epoch for e in ends if isinstance(e, EpochEnd)}) == [3, 4]
    assert [v.runs[0] for v in record.variants] == ids
    assert [store.load_run(runs_dir / i).status for i in ids] == [Status.COMPLETED] * 2
    # s/epoch leaves out both compiling epochs: the first, and the first after the resume
    assert [store.read_record(runs_dir / i).resumed_from for i in ids] == [[2], [2]]
    summary = cmp.summarize(store, record)
    for variant, run_id in zip(summary.variants, ids):
        seconds = store.read_history(runs_dir / run_id)["seconds"]
        share = variant.runs[0].group_size
        expected = (seconds[1] + seconds[3]) / 2 / share
        assert abs(variant.aggregate["seconds_per_epoch"]["mean"] - expected) < 1e-9

    whole_store = RunStore(tmp_path / "whole")
    whole = cmp.new_comparison(whole_store, base, cmp.expand(base, ["sgd", "adam"], {}), 1, ["test"])
    whole = cmp.execute(whole_store, whole)
    assert numbers(store, record) == numbers(whole_store, whole)
