"""The fused JAX engine against Keras's own fit, and its models against plain Keras. JAX runs in a
subprocess: a process holds one Keras backend, and the in-process tests use TensorFlow."""

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from fmnist_cli import backend, training
    from fmnist_cli.config import RunConfig, parse_optimizer
    backend.configure("jax")
    root = Path(sys.argv[1])
    out = {}
    def run(tag, **kw):
        cfg = RunConfig(backend="jax", **kw).validate()
        r = training.train(cfg, root)
        out[tag] = {k: r.to_json()[k] for k in ("history", "status", "best_epoch", "model_path", "stopped_early")}
    # one full batch per epoch: batch order cannot matter, so fit and fused must agree closely
    for engine in ("fit", "fused"):
        for opt in ("sgd", "adam", "nesterov"):
            run(f"{engine}-{opt}", engine=engine, optimizer=parse_optimizer(opt), limit=1000, batch_size=1000,
                epochs=3)
    run("fused-default", limit=5000, epochs=3)
    run("fused-dropout-es", limit=2000, epochs=40, dropout=0.3, hidden=(64, 32), activation="gelu",
        optimizer=parse_optimizer("sgd:lr=0.5"), early_stopping=1)
    run("fused-partial", limit=1010, batch_size=100, epochs=2)
    # on JAX the loss comes from clipped probabilities: a blown-up network saturates, never NaN
    run("fused-diverge", limit=1000, epochs=2, optimizer=parse_optimizer("sgd:lr=30"))
    run("fit-diverge", engine="fit", limit=1000, epochs=2, optimizer=parse_optimizer("sgd:lr=30"))
    # every optimizer, then every activation, each set stepped together in one program
    from fmnist_cli import data
    from fmnist_cli.config import ACTIVATIONS, OPTIMIZERS
    from fmnist_cli.engines import fused
    split = data.make_split(data.load(), limit=300)
    for group, configs in (
            ("all_optimizers", {o: dict(optimizer=parse_optimizer(o)) for o in OPTIMIZERS}),
            ("all_activations", {a: dict(activation=a) for a in ACTIVATIONS})):
        cfgs = [RunConfig(backend="jax", limit=300, epochs=1, **kw).validate() for kw in configs.values()]
        outcomes = fused.train(cfgs, split, lambda e: None, lambda: False)
        out[group] = {name: o.status for name, o in zip(configs, outcomes)}
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def jax_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("jaxruns")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(root)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("opt", ["sgd", "adam", "nesterov"])
def test_fused_equals_fit_when_batch_order_cannot_matter(jax_runs, opt):
    fit, fused = jax_runs[f"fit-{opt}"]["history"], jax_runs[f"fused-{opt}"]["history"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert fused[key] == pytest.approx(fit[key], abs=2e-4), key


def test_fused_matches_tensorflow_fit_within_noise(jax_runs):
    import json as _json

    from helpers import invoke

    tf = _json.loads(invoke("train", "--limit", "5000", "--epochs", "3", "--engine", "fit", "--json").stdout)
    jx = jax_runs["fused-default"]
    assert jx["status"] == "completed" and len(jx["history"]["loss"]) == 3
    for a, b in zip(tf["history"]["val_accuracy"], jx["history"]["val_accuracy"]):
        assert abs(a - b) < 0.04
    assert jx["history"]["loss"][-1] < jx["history"]["loss"][0]


def test_fused_model_reloads_in_plain_keras_with_the_same_accuracy(jax_runs):
    import keras

    from fmnist_cli import data

    run = jax_runs["fused-default"]
    model = keras.models.load_model(run["model_path"])     # TensorFlow backend, this process
    split = data.make_split(data.load(), limit=5000)
    loss, acc = model.evaluate(split.x_val, split.y_val, verbose=0)
    assert acc == pytest.approx(run["history"]["val_accuracy"][-1], abs=2e-4)
    assert loss == pytest.approx(run["history"]["val_loss"][-1], rel=1e-3)


def test_fused_early_stopping_dropout_and_gelu(jax_runs):
    import keras

    from fmnist_cli import data

    run = jax_runs["fused-dropout-es"]
    hist = run["history"]
    assert run["stopped_early"] and len(hist["loss"]) < 40
    best = run["best_epoch"]   # by the default monitor: the lowest val_loss
    assert hist["val_loss"][best - 1] == min(hist["val_loss"])
    model = keras.models.load_model(run["model_path"])
    split = data.make_split(data.load(), limit=2000)
    loss, acc = model.evaluate(split.x_val, split.y_val, verbose=0)
    assert acc == pytest.approx(hist["val_accuracy"][best - 1], abs=2e-4)
    assert loss == pytest.approx(hist["val_loss"][best - 1], rel=1e-3)


def test_fused_handles_a_partial_last_batch(jax_runs):
    run = jax_runs["fused-partial"]
    assert run["status"] == "completed" and all(0 < a <= 1 for a in run["history"]["accuracy"])



def test_every_optimizer_and_activation_trains_on_the_fused_engine(jax_runs):
    from fmnist_cli.config import ACTIVATIONS, OPTIMIZERS

    assert sorted(jax_runs["all_optimizers"]) == sorted(OPTIMIZERS)
    assert sorted(jax_runs["all_activations"]) == sorted(ACTIVATIONS)
    for group in ("all_optimizers", "all_activations"):
        assert all(status == "completed" for status in jax_runs[group].values()), jax_runs[group]


def test_divergence_is_caught_on_jax_too(jax_runs):
    for tag in ("fused-diverge", "fit-diverge"):
        assert jax_runs[tag]["status"] == "diverged", (tag, jax_runs[tag]["history"]["loss"])


RESUME_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from fmnist_cli import backend, training
    from fmnist_cli.config import RunConfig
    from fmnist_cli.records import EpochEnd
    backend.configure("jax")
    root = Path(sys.argv[1])
    cfg = RunConfig(backend="jax", limit=3000, epochs=4, dropout=0.3, hidden=(64, 32)).validate()
    whole = training.train(cfg, root)
    seen = []
    part = training.train(cfg, root, on_event=lambda e: isinstance(e, EpochEnd) and seen.append(e.epoch),
                          should_stop=lambda: len(seen) >= 2)
    resumed = training.train(cfg, root, resume=Path(part.run_dir))
    print(json.dumps({"part": part.epochs_run, "whole": whole.history, "resumed": resumed.history}))
""")


def test_a_resumed_fused_run_with_dropout_gives_the_uninterrupted_numbers(tmp_path):
    proc = subprocess.run([sys.executable, "-c", RESUME_SCRIPT, str(tmp_path / "runs")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["part"] == 2
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert out["resumed"][metric] == out["whole"][metric], metric


VMAP_SCRIPT = textwrap.dedent("""
    import json, os
    import numpy as np
    from fmnist_cli import backend, data
    from fmnist_cli.config import RunConfig, parse_optimizer
    backend.configure("jax")
    from fmnist_cli.engines import fused
    split = data.make_split(data.load(), limit=600)
    specs = [("adam", 1), ("adam", 2), ("adam", 3), ("sgd:lr=0.05", 4), ("sgd:lr=0.2", 5), ("rmsprop", 6)]
    cfgs = [RunConfig(backend="jax", limit=600, epochs=2, dropout=0.2, optimizer=parse_optimizer(o), seed=s).validate()
            for o, s in specs]
    os.environ.pop("FMNIST_VMAP_MIN", None)
    out = {"families": fused.families(cfgs, 2), "cpu_default": fused.vmap_min()}
    for tag, setting in (("vmapped", "2"), ("unrolled", "0")):
        os.environ["FMNIST_VMAP_MIN"] = setting
        outcomes = fused.train(cfgs, split, lambda e: None, lambda: False)
        out[tag] = [{"history": o.history, "weights": [w.tolist() for w in o.model.get_weights()]} for o in outcomes]
    out["alone"] = fused.train([cfgs[5]], split, lambda e: None, lambda: False)[0].history
    print(json.dumps(out))
""")


def test_vmapped_families_give_the_unrolled_numbers(tmp_path):
    """Seeds of one optimizer, and one optimizer at two learning rates, stepped as vmapped families
    (dropout included: each member draws its own masks) train as the unrolled program does."""
    import numpy as np

    proc = subprocess.run([sys.executable, "-c", VMAP_SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["families"] == [[0, 1, 2], [3, 4], [5]]
    assert out["cpu_default"] >= 10**9   # off on the CPU by default: runs keep their alone numbers
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):   # bit for bit, whatever the company
        assert out["alone"][metric] == out["unrolled"][5]["history"][metric], metric
    for vm, un in zip(out["vmapped"], out["unrolled"]):
        for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(vm["history"][metric], un["history"][metric], rtol=1e-4, atol=1e-5)
        for a, b in zip(vm["weights"], un["weights"]):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-5)
    # and the members really differ: their own seeds and learning rates
    assert out["vmapped"][0]["history"]["loss"] != out["vmapped"][1]["history"]["loss"]
    assert out["vmapped"][3]["history"]["loss"] != out["vmapped"][4]["history"]["loss"]


LANES_SCRIPT = textwrap.dedent("""
    import json, os
    from fmnist_cli import backend, data
    from fmnist_cli.config import RunConfig, parse_optimizer
    import sys
    name = sys.argv[1]
    backend.configure(name)
    from fmnist_cli.engines import fused
    split = data.make_split(data.load(), limit=600)
    cfgs = [RunConfig(backend=name, limit=600, epochs=2, dropout=0.2, optimizer=parse_optimizer(o), seed=s).validate()
            for o, s in (("sgd", 1), ("rmsprop", 2), ("adam", 3), ("adam:lr=0.01", 4))]
    out = {}
    for setting, cores in (("1", 1), ("2", 2), ("2x2", 2)):
        os.sched_getaffinity = lambda pid, cores=cores: set(range(cores))
        if setting == "2x2":
            os.environ["FMNIST_LANES"] = "2"
        seen = []
        real = fused._side_by_side
        fused._side_by_side = lambda run, count, **kw: seen.append(count) or real(run, count, **kw)
        outcomes = fused.train(cfgs, split, lambda e: None, lambda: False)
        fused._side_by_side = real
        out[setting] = {"lanes": max(seen), "runs": [{"history": o.history, "weights": [w.tolist() for w in o.model.get_weights()]}
                                                   for o in outcomes]}
    print(json.dumps(out))
""")


COMPANY_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["FMNIST_VMAP_MIN"] = "0"   # a vmapped family's numbers do depend on it (a GPU's default)
    from fmnist_cli import backend, data
    from fmnist_cli.config import RunConfig, parse_optimizer
    name = sys.argv[1]
    backend.configure(name)
    from fmnist_cli.engines import fused
    split = data.make_split(data.load(), limit=6000)
    cfgs = [RunConfig(backend=name, limit=6000, epochs=3, optimizer=parse_optimizer(o), seed=s, hidden=h).validate()
            for o, s, h in (("adam:lr=0.003", 44, [100]), ("rmsprop", 2, [100]), ("adam:lr=0.01", 4, [100]),
                            ("sgd", 5, [100]), ("adam", 6, [1000]), ("sgd:lr=0.1", 7, [100]))]
    train = lambda configs: fused.train(configs, split, lambda e: None, lambda: False)[0].history
    out = {"alone": train(cfgs[:1]), "group": train(cfgs)}
    fused._segments = lambda steps, configs, batch_size: [(a, min(a + 20, steps)) for a in range(0, steps, 20)]
    out["cut"] = train(cfgs[:1])
    print(json.dumps(out))
""")


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_a_runs_numbers_do_not_depend_on_its_company_or_segments(backend):
    """Alone, in a group of six (whose epoch and validation set are cut into more pieces) or with its
    epoch cut into many segments, a run's history is the same bits: its sums do not depend on how
    the steps or images were cut (a group's train loss, and on TensorFlow its val loss, once
    differed in the last digits)."""
    pytest.importorskip(backend)
    proc = subprocess.run([sys.executable, "-c", COMPANY_SCRIPT, backend], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert out["alone"][metric] == out["group"][metric] == out["cut"][metric], metric


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_lanes_use_the_cores_and_never_change_the_numbers(backend):
    """A group's families, split into programs run side by side from threads (one per core), train
    bit for bit as in one program."""
    pytest.importorskip(backend)
    proc = subprocess.run([sys.executable, "-c", LANES_SCRIPT, backend], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # one core: one program; two: a lane each (up to 4 a core); $FMNIST_LANES=2: two lanes
    assert [out[c]["lanes"] for c in ("1", "2", "2x2")] == [1, 4, 2]
    for cores in ("2", "2x2"):
        for a, b in zip(out["1"]["runs"], out[cores]["runs"]):
            assert a["weights"] == b["weights"], cores
            for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):   # (not the seconds)
                assert a["history"][metric] == b["history"][metric], (cores, metric)


def test_lanes_balance_the_work():
    from fmnist_cli.config import RunConfig, parse_optimizer
    from fmnist_cli.engines.fused import lanes

    configs = [RunConfig(optimizer=parse_optimizer("adam"), hidden=h).validate() for h in ((300, 100), (100,), (100,), (50,))]
    import os

    real = os.sched_getaffinity
    try:
        os.sched_getaffinity = lambda pid: {0, 1}
        assert lanes([[0], [1], [2], [3]], configs, "cpu") == [[0], [1], [2], [3]]   # up to 4 a core
        assert lanes([[0], [1], [2], [3]], configs, "gpu") == [[0, 1, 2, 3]]
        os.environ["FMNIST_LANES"] = "2"
        assert lanes([[0], [1], [2], [3]], configs, "cpu") == [[0], [1, 2, 3]]   # the big one alone
        sgd, rmsprop, adam = (RunConfig(optimizer=parse_optimizer(o)).validate() for o in ("sgd", "rmsprop", "adam"))
        assert lanes([[0], [1], [2]], [sgd, rmsprop, adam], "cpu") == [[2], [0, 1]]   # adam's update costs most
        del os.environ["FMNIST_LANES"]
        os.sched_getaffinity = lambda pid: {0}
        assert lanes([[0], [1]], configs, "cpu") == [[0, 1]]
    finally:
        os.sched_getaffinity = real
        os.environ.pop("FMNIST_LANES", None)


def test_families_group_what_can_share_a_vmapped_step():
    from fmnist_cli.config import RunConfig, parse_optimizer
    from fmnist_cli.engines.fused import families

    def cfg(opt, **kw):
        return RunConfig(optimizer=parse_optimizer(opt), **kw).validate()

    configs = [cfg("adam", seed=1), cfg("sgd"), cfg("adam", seed=2), cfg("momentum"), cfg("sgd:lr=0.1"),
               cfg("adam", hidden=(50,)), cfg("adam", seed=3, dropout=0.1)]
    # momentum is SGD with other settings; a different architecture or dropout is another family
    assert families(configs, 2) == [[0, 2], [1, 4], [3], [5], [6]]
    assert families(configs, 3) == [[0], [2], [1], [4], [3], [5], [6]]


def test_the_cpu_programs_keep_small_products_off_ynnpack():
    """XLA's own product uses every core (YNNPACK's ran the book's on one: 0.42 -> 0.29 s an epoch).
    Passed as a compile option where this jaxlib knows it; a choice made in $XLA_FLAGS wins."""
    script = ("import json, jax; from fmnist_cli.engines.fused import jax_compiler_options as o; "
              "print(json.dumps([jax.default_backend(), o()]))")
    import os

    def options(**env):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "JAX_PLATFORMS": "cpu", **env})
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    platform, chosen = options()
    assert platform == "cpu" and chosen in ({"xla_cpu_experimental_ynn_fusion_type": ""}, {})
    assert options(XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=") == ["cpu", {}]


PERMUTATION_SCRIPT = textwrap.dedent("""
    import json, jax, numpy as np
    from fmnist_cli import backend, data
    backend.configure("jax")
    from fmnist_cli.engines import fused
    out = []
    for n in (1, 1000, 48000):
        rounds = fused._shuffle_rounds(n)
        for seed, epoch in [(42, 1), (42, 2), (7, 5)]:
            key = jax.random.fold_in(jax.random.PRNGKey(seed), epoch)
            expected = np.asarray(jax.random.permutation(key, n))
            keys = []
            for _ in range(rounds):
                key, sub = jax.random.split(key)
                keys.append(np.asarray(jax.random.bits(sub, (n,), np.uint32)))
            keys = np.stack(keys) if keys else np.zeros((0, n), np.uint32)   # n = 1: no sort at all
            out.append(bool(np.array_equal(fused._permutations(keys[None])[0], expected)))
    # and the engine itself: the order a GPU computes on the device, the order the CPU sorts in numpy
    from fmnist_cli.config import RunConfig
    split = data.make_split(data.load(), limit=300)
    cfgs = [RunConfig(backend="jax", limit=300, epochs=2, seed=s).validate() for s in (1, 2)]
    def numbers(outcomes):
        return [{k: v for k, v in o.history.items() if k != "seconds"} for o in outcomes]
    cpu = numbers(fused.train(cfgs, split, lambda e: None, lambda: False))
    jax.default_backend = lambda: "gpu"   # the device path, run on the CPU (unrolled, as on the CPU)
    import os
    os.environ["FMNIST_VMAP_MIN"] = "0"
    out.append(cpu == numbers(fused.train(cfgs, split, lambda e: None, lambda: False)))
    print(json.dumps(out))
""")


def test_the_batch_order_is_jax_random_permutation():
    """The engine draws jax.random.permutation's sort keys in XLA and sorts them in numpy: the same
    batches as before, for every seed and epoch."""
    proc = subprocess.run([sys.executable, "-c", PERMUTATION_SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [True] * 10


def test_segments_stay_short_at_small_batches_and_unchanged_for_the_book():
    """A stop is seen between segments: at `--batch-size 4` the per-step overhead and the update
    dominate, and counting the products alone made a comparison's whole epoch one segment (Ctrl-C
    then waited 1.4 s). The book's model keeps its two segments an epoch."""
    from fmnist_cli.config import RunConfig
    from fmnist_cli.engines.fused import _segments

    book = RunConfig().validate()
    assert len(_segments(1500, [book], 32)) == 2
    small = RunConfig(hidden=(32,), batch_size=4).validate()
    for runs in (1, 2, 4):
        segments = _segments(12000, [small] * runs, 4)
        assert max(b - a for a, b in segments) <= 3000 // runs + 1, segments
        assert segments[0][0] == 0 and segments[-1][1] == 12000
        assert all(b == a2 for (_, b), (a2, _) in zip(segments, segments[1:]))
