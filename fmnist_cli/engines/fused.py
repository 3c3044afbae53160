"""The `fused` engine, on both backends: the same Keras models and optimizers, every epoch a few
compiled programs over all of its steps (shuffling included) with the data resident on the device.

- JAX: Keras's stateless API (`stateless_call`, `stateless_apply`) under `jax.jit` + `lax.scan`,
  the runs' state carried as arrays.
- TensorFlow: Keras's optimizers refuse `stateless_apply` there (tf.distribute), so the models and
  optimizers keep their state in their variables, updated inside `tf.function(jit_compile=True)`
  + `tf.while_loop`; a shuffle from `argsort` of stateless uniforms (StatelessShuffle has no XLA
  kernel).
Everything else is one engine: the batching and masking, the metrics, the epoch loop, stopping,
checkpoints, resuming and the saved model. Only `_JaxProgram` and `_TensorFlowProgram` differ.

An epoch runs as a few compiled segments (see SEGMENT_FLOPS), so that a stop request is seen within
a fraction of a second whatever the model size.

A group of K runs that share their data and batch size (a comparison's variants and repeats) is
stepped together: each run has its own model, optimizer, initial weights and batch order. On JAX, a
family of runs that differ only in seed and learning rate is one vmapped step over stacked state
(see VMAP_MIN); other runs are unrolled copies. On the CPU the group is dealt into lanes (a lane
per run or family, up to 4 a core), each its own program, stepped side by side from threads (see
`lanes`).

Metrics mean what Keras's mean: train loss and accuracy are the epoch means over batches weighted by batch size (a last partial batch included,
by masking), validation is scored on the whole validation set at each epoch end. Every epoch's batch
order comes from (seed, epoch) alone, so a resumed run gets the batches an uninterrupted one would.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np

from .. import data
from ..records import EpochEnd, EpochStart, Status, Step
from . import EpochTracker, Outcome, divergence_hint


def train(configs, split, on_event, should_stop, checkpoint=None, starts=None) -> list[Outcome]:
    """`starts` (from `train --resume`): per run, None or a Start to continue from; a group resumes
    together, so every run of it starts at the same epoch."""
    import keras

    n, batch_size = len(split.y_train), configs[0].batch_size
    steps = math.ceil(n / batch_size)
    starts = starts or [None] * len(configs)
    assert len({s.epoch if s else 0 for s in starts}) == 1, "a group resumes from one epoch"
    models, optimizers, states = _build_group(configs, starts, steps)
    if keras.backend.backend() == "jax":
        program = _JaxProgram(models, optimizers, states, n, batch_size, steps, configs)
    else:
        program = _TensorFlowProgram(models, optimizers, states, n, batch_size, steps, configs)
    trackers = [EpochTracker.for_config(c) for c in configs]
    for tracker, start in zip(trackers, starts):
        if start:
            tracker.replay(start.history)
    last, best, interrupted = _run_epochs(configs, split, program, _segments(steps, configs, batch_size),
                                          trackers, steps, on_event, should_stop,
                                          checkpoint or (lambda *a: None),
                                          first=(starts[0].epoch if starts[0] else 0) + 1)
    return _outcomes(configs, models, optimizers, trackers, last, best, interrupted)


# Work per compiled call, in floating-point operations: about 0.2-0.5 s on one CPU core. An epoch
# runs as segments of at most this much, with a stop request checked between them, so Ctrl-C is
# seen within a segment whatever the model size. The book's model needs two segments an epoch.
SEGMENT_FLOPS = 2e10


# A step's cost beside its products, in the same units (measured on the CPU): the optimizer's update
# of every weight (Adam: about 80 floating-point operations' time a weight) and a fixed overhead per
# run. At a small batch they dominate: counting the products alone, `--batch-size 4` ran a whole
# epoch of a comparison as one segment, and Ctrl-C waited 1.4 s.
UPDATE_FLOPS_PER_WEIGHT = 80
STEP_OVERHEAD_FLOPS = 4e6


def _segments(steps: int, configs, batch_size: int) -> list[tuple[int, int]]:
    """(first step, end step) of each segment: equal lengths but the last, so at most two programs
    (a program takes its first step as data)."""
    per_step = sum((6 * batch_size + UPDATE_FLOPS_PER_WEIGHT) * c.param_count() + STEP_OVERHEAD_FLOPS
                   for c in configs)   # forward + backward, the update, the overhead
    most = max(1, int(SEGMENT_FLOPS // per_step))
    length = math.ceil(steps / math.ceil(steps / most))
    return [(a, min(a + length, steps)) for a in range(0, steps, length)]


def _build_group(configs, starts, steps):
    """Each run's Keras model and optimizer, and its initial state (trainable, non-trainable and
    optimizer variables) as arrays for the stateless API: fresh, or a resumed run's saved state.
    A .keras file does not hold Dropout's random-generator state; it is a counter of the steps
    taken, so a resumed run's is rebuilt as the fresh one advanced by the steps already trained."""
    import numpy as np
    from ..models import build_model, build_optimizer, set_seed

    models, optimizers, states = [], [], []
    for config, start in zip(configs, starts):
        set_seed(config.seed)   # same seed, same initial weights as `fit` builds
        model = build_model(config)
        optimizer = build_optimizer(config)
        optimizer.build(model.trainable_variables)
        source, source_opt = (start.model, start.model.optimizer) if start else (model, optimizer)
        if start and len(source_opt.variables) != len(optimizer.variables):
            raise ValueError("the saved model's optimizer state does not match its config")
        models.append(model)
        optimizers.append(optimizer)
        ntv = [v.value for v in source.non_trainable_variables]
        if start:   # the generator's state is [seed, steps taken]
            ntv = [np.asarray(v.value) + np.array([0, start.epoch * steps], dtype=np.uint32)
                   if "seed_generator_state" in v.path else loaded
                   for v, loaded in zip(model.non_trainable_variables, ntv)]
        states.append(([v.value for v in source.trainable_variables], ntv,
                       [v.value for v in source_opt.variables]))
    return models, optimizers, states


class _JaxProgram:
    """The runs' state as arrays, carried through `jax.jit` programs (stateless API).

    Runs that share their architecture and optimizer settings but the learning rate (a family: say,
    the seeds of one variant) can be stepped as one `jax.vmap`ped computation over their stacked
    state, each with its own seed, batch order and learning rate (Keras keeps it in an optimizer
    variable). Other runs are unrolled: one copy of the step each, side by side in the program."""

    def __init__(self, models, optimizers, states, n, batch_size, steps, configs=None):
        import jax
        import jax.numpy as jnp
        import keras

        K = len(models)
        self.models, self.optimizers = models, optimizers
        self.families = families(configs, vmap_min()) if configs else [[k] for k in range(K)]
        self.where = {k: (f, j) for f, members in enumerate(self.families) for j, k in enumerate(members)}
        # Carried per family: a lone run's (tv, ntv, ov), or a family's with a leading axis of members.
        self.carry = [states[m[0]] if len(m) == 1 else _stack([states[k] for k in m]) for m in self.families]
        fams = [(members, models[members[0]], optimizers[members[0]]) for members in self.families]
        # Lanes: the families split into programs of their own, stepped side by side from threads.
        self.lanes = lanes(self.families, configs, jax.default_backend()) if configs else [list(range(len(fams)))]
        lane_runs = [np.concatenate([self.families[f] for f in lane]) for lane in self.lanes]
        lane_order = np.argsort(np.concatenate(lane_runs))   # the lanes' columns, side by side -> run order

        jit = functools.partial(jax.jit, compiler_options=jax_compiler_options())

        rounds = _shuffle_rounds(n)

        @jit
        def sort_keys(seeds, epoch):
            # jax.random.permutation(fold_in(PRNGKey(seed), epoch), n) is `rounds` stable sorts by
            # fresh random keys. On the CPU the keys come from here and the sorts run in numpy (see
            # _permutations): the same permutation in half the time XLA's CPU sort takes.
            def of(seed):
                key = jax.random.fold_in(jax.random.PRNGKey(seed), epoch)
                out = []
                for _ in range(rounds):
                    key, subkey = jax.random.split(key)
                    out.append(jax.random.bits(subkey, (n,), jnp.uint32))
                return jnp.stack(out) if out else jnp.zeros((0, n), jnp.uint32)   # n = 1: no sort
            return jax.vmap(of)(seeds)                                               # (K, rounds, n)

        @jit
        def order(seeds, epoch):
            # On a GPU the sorts stay on the device: copying the keys out would cost more than them.
            keys = jax.vmap(lambda seed: jax.random.fold_in(jax.random.PRNGKey(seed), epoch))(seeds)
            perms = jax.vmap(lambda key: jax.random.permutation(key, n))(keys)          # (K, n)
            return _batches(perms, steps, batch_size, jnp)

        def lane_segment(lane, runs):
            # The lane's runs renumbered 0..len(runs)-1: its program gathers their batches alone.
            local = {k: i for i, k in enumerate(runs)}
            lane_fams = [([local[k] for k in fams[f][0]], fams[f][1], fams[f][2]) for f in lane]
            lane_order_of = np.argsort(np.concatenate([m for m, _, _ in lane_fams]))

            # The segment's first step is data and its length static: an epoch's equal segments share
            # one program (static bounds made one per segment: four traces and compiles for compare's 3).
            @functools.partial(jit, static_argnums=6)
            def segment(carry, idx, mask, xs, ys, first, length):
                step = _jax_step(lane_fams, lane_order_of, xs, ys)
                idx = jax.lax.dynamic_slice_in_dim(idx, first, length)
                part = (idx if len(runs) == K else idx[:, runs], jax.lax.dynamic_slice_in_dim(mask, first, length))
                carry, (loss_sums, correct_sums) = jax.lax.scan(step, carry, part)
                return carry, loss_sums, correct_sums
            return segment

        # Scored family by family (see _run_epochs), by one program per architecture: a run's
        # validation numbers are then its own whatever its company.
        scorers = {}

        def scorer(f):
            members, model, _ = fams[f]
            key = (_architecture(configs[members[0]]) if configs else id(model), len(members) > 1)
            if key not in scorers:
                def score(tv, ntv, xv, yv):
                    yp, _ = model.stateless_call(tv, ntv, xv, training=False)
                    return (keras.losses.sparse_categorical_crossentropy(yv, yp),
                            (jnp.argmax(yp, -1) == yv).sum().astype(jnp.float32))
                scorers[key] = jit(jax.vmap(score, in_axes=(0, 0, None, None)) if key[1] else score)
            return scorers[key]

        self._sort_keys, self._order = sort_keys, order
        self._segments = [lane_segment(lane, runs) for lane, runs in zip(self.lanes, lane_runs)]
        self._compiled = set()
        self._scorer = scorer
        self.scored = [list(members) for members in self.families]   # what one evaluate() call scores
        self._lane_order, self.n = lane_order, n
        self.steps, self.batch_size = steps, batch_size

    def data(self, x, y):
        import jax.numpy as jnp

        return jnp.asarray(x), jnp.asarray(y)

    def order(self, seeds, epoch):
        import jax

        seeds, epoch = np.asarray(seeds, dtype=np.uint32), np.int32(epoch)
        if jax.default_backend() != "cpu":
            return self._order(seeds, epoch)
        keys = jax.device_get(self._sort_keys(seeds, epoch))
        idx, mask = _batches(_permutations(keys), self.steps, self.batch_size)
        return jax.device_put(idx), jax.device_put(mask)

    def segment(self, idx, mask, xs, ys, bounds):
        first, end = bounds
        args = (idx, mask, xs, ys, np.int32(first), end - first)

        def run(i):
            lane = self.lanes[i]
            carry, loss_sums, correct_sums = self._segments[i]([self.carry[f] for f in lane], *args)
            # JAX dispatches asynchronously: without this wait every segment would be queued before
            # a stop could be seen, and the stop would come at the end of the epoch. In a thread, the
            # wait is what lets the lanes run side by side.
            loss_sums.block_until_ready()
            return carry, loss_sums, correct_sums

        results = _side_by_side(run, len(self.lanes), compiled=(end - first) in self._compiled)
        self._compiled.add(end - first)
        for lane, (carry, _, _) in zip(self.lanes, results):
            for f, state in zip(lane, carry):
                self.carry[f] = state
        return [r[1] for r in results], [r[2] for r in results]

    def means(self, losses, corrects):
        return _epoch_means(losses, self._lane_order, self.n), _epoch_means(corrects, self._lane_order, self.n)

    def evaluate(self, u, xv, yv):
        """The runs of `self.scored[u]` on one chunk: per run, each image's loss and the hits."""
        import jax

        tv, ntv, _ = self.carry[u]
        losses, hits = jax.device_get(self._scorer(u)(tv, ntv, xv, yv))
        losses, hits = np.asarray(losses), np.asarray(hits, dtype=np.float64)
        return (losses, hits) if len(self.scored[u]) > 1 else (losses[None], hits[None])

    def snapshot(self, k):
        f, j = self.where[k]
        if len(self.families[f]) == 1:
            return self.carry[f]   # immutable arrays: keeping a reference is a snapshot
        return tuple([a[j] for a in part] for part in self.carry[f])


# XLA:CPU (jaxlib 0.10) hands small matrix products to YNNPACK, which runs the book's (32 x 784 times
# 784 x 100) on one core; XLA's own product uses every core. Without YNNPACK a fused adam epoch went
# from 0.34-0.39 to 0.23-0.25 s on a 2-core machine (the training step alone), and fmnist's epochs
# from 0.42 to 0.29 s, with the same numbers. A compile option, not $XLA_FLAGS: a jaxlib that does not
# know it is asked once, and then nothing is passed (an unknown name in $XLA_FLAGS aborts the process).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def jax_compiler_options() -> dict:
    """The compile options of the JAX programs: CPU_COMPILER_OPTIONS on the CPU where this jaxlib
    takes them and $XLA_FLAGS does not choose YNNPACK's use itself; none elsewhere."""
    import os

    import jax

    if jax.default_backend() != "cpu" or "ynn_fusion_type" in os.environ.get("XLA_FLAGS", ""):
        return {}
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS).lower(np.float32(0)).compile()
    except Exception:   # an older or newer jaxlib without the option: XLA's defaults
        return {}
    return dict(CPU_COMPILER_OPTIONS)


# The smallest family stepped as one vmapped computation, by device. On a GPU the batched step costs
# about what one run's does: the point of the design. On the CPU vmapping is off by default, for
# reproducibility: a batched matrix product may sum in another order, and 7,500 steps grow that
# last-bit difference into the seed-to-seed spread (compare's rmsprop, 3 seeds, 5 epochs: val
# accuracy 0.8790 unrolled, 0.8746 vmapped), so a run would no longer give the numbers it gives
# alone. Unrolled, it does, bit for bit. What vmapping buys on the CPU is compile time: `compare sgd
# rmsprop adam --repeats 3 --backend jax`, cold cache, took 30-40 s vmapped against 54-63 s unrolled
# (later epochs: 2.5-3.6 s against 3.1-5.8 s, on a busy machine). FMNIST_VMAP_MIN=2 opts in.
VMAP_MIN = {"cpu": 0}
DEFAULT_VMAP_MIN = 2


def vmap_min() -> int:
    """$FMNIST_VMAP_MIN overrides the default of the device (0: never vmap)."""
    import os

    import jax

    value = os.environ.get("FMNIST_VMAP_MIN")
    if value is not None and value.strip().isdigit():
        minimum = int(value)
    else:
        minimum = VMAP_MIN.get(jax.default_backend(), DEFAULT_VMAP_MIN)
    return minimum or 10**9


def lanes(fams: list[list[int]], configs, device: str) -> list[list[int]]:
    """Families (run indices) dealt into lanes: each lane is a program of its own, and the lanes of a
    segment run side by side, one thread each. On the CPU, XLA runs one program's elementwise work
    (the optimizers' updates) on one core, the runs one after another; separate programs from
    separate threads use every core: `compare sgd rmsprop adam` on 2 cores, 0.59 s an epoch's
    training in one program, 0.40-0.44 s in two or three lanes (fmnist's whole epoch: 0.81 s in one,
    0.52 s in three). A run's steps are the same in any lane, so its numbers do not depend on the
    lanes (tested). On a GPU: one lane, as vmapping is."""
    count = min(len(fams), lane_cap()) if device == "cpu" else 1
    if count <= 1:
        return [list(range(len(fams)))]
    # The costliest family first, each to the least loaded lane; every lane keeps family order.
    cost = [sum(configs[k].param_count() * (6 * configs[k].batch_size + _update_cost(configs[k]))
                for k in members) for members in fams]
    out, load = [[] for _ in range(count)], [0.0] * count
    for f in sorted(range(len(fams)), key=lambda f: -cost[f]):
        i = min(range(count), key=lambda i: load[i])
        out[i].append(f)
        load[i] += cost[f]
    return [sorted(lane) for lane in out if lane]


# An update's cost a weight, by optimizer, in the units of UPDATE_FLOPS_PER_WEIGHT (Adam's), for
# dealing runs into lanes: plain SGD's is a multiply-add, RMSprop's and Adagrad's a square root and a
# division. With Adam's cost for every optimizer, `compare sgd rmsprop adam` on 2 cores paired sgd
# with adam: 0.61-0.64 s an epoch, against 0.54 s with adam alone in its lane.
UPDATE_COST = {"SGD": 10, "Adagrad": 50, "RMSprop": 60, "Adam": 80, "AdamW": 90, "Nadam": 110}


def _update_cost(config) -> float:
    return UPDATE_COST.get(config.optimizer.keras_class, UPDATE_FLOPS_PER_WEIGHT)


def lane_cap() -> int:
    """The most lanes: $FMNIST_LANES (1: one program, as before lanes), else lanes_for the cores
    this process may use (a worker of `--jobs N` is given its share: see executors._child_init)."""
    import os

    value = os.environ.get("FMNIST_LANES", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    from ..cores import cpu_cores

    return lanes_for(cpu_cores())


def lanes_for(cores: int) -> int:
    """One core: one program. More: up to 4 lanes a core. More lanes than cores still help, as a
    lane's products run on XLA's pool of threads and its elementwise work on its own thread: on 2
    cores, 3 runs took 0.59 s an epoch in 2 lanes and 0.52 s in 3; 6 runs 1.05 s in 2, 0.88 s in 6."""
    return 1 if cores <= 1 else 4 * cores


def _side_by_side(run, count: int, compiled: bool = True) -> list:
    """[run(0), ..., run(count - 1)], each but the first in a thread of its own (created per call: a
    pool's idle threads would keep the process from leaving at once, see entry._leave). The lowest
    lane's error is raised once all have finished. Not `compiled` (the lanes' first call of a
    segment length traces and compiles them, or loads them from the cache): one after another, as
    side by side they contend for the GIL and the cores; a cold start of 6 lanes took 4.6-5.7 s for
    its first epoch, against 3.2 s so (and 3.0 s for one program)."""
    if count == 1 or not compiled:
        return [run(i) for i in range(count)]
    import threading

    results, errors = [None] * count, {}

    def work(i):
        try:
            results[i] = run(i)
        except BaseException as err:   # re-raised in the caller's thread
            errors[i] = err

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(1, count)]
    for t in threads:
        t.start()
    try:
        work(0)
    finally:
        # Even on a KeyboardInterrupt here: the other lanes still update the runs' state (TensorFlow's
        # in the Keras variables), and must be done before anyone reads or saves it.
        for t in threads:
            t.join()
    if errors:
        raise errors[min(errors)]
    return results


def family_key(config) -> tuple:
    """What runs must share to be stepped as one vmapped computation: the architecture and every
    optimizer setting but the learning rate (each member keeps its own in its optimizer state)."""
    settings = config.optimizer.keras_kwargs()
    settings.pop("learning_rate", None)
    return (*_architecture(config), config.optimizer.keras_class, tuple(sorted(settings.items())))


def vmapped_sizes(configs) -> list[int]:
    """For run.json: the size of each run's vmapped family, 1 for a run stepped on its own. A vmapped
    run's numbers depend on its family (see VMAP_MIN), so `compare --reuse` never copies one."""
    sizes = [1] * len(configs)
    for members in families(configs, vmap_min()):
        for k in members:
            sizes[k] = len(members)
    return sizes


def families(configs, min_size: int) -> list[list[int]]:
    """Run indices grouped into families (in order of first appearance); a family smaller than
    `min_size` is split into lone runs."""
    groups: dict[tuple, list[int]] = {}
    for k, config in enumerate(configs):
        groups.setdefault(family_key(config), []).append(k)
    out = []
    for members in groups.values():
        out.extend([members] if len(members) >= min_size else [[k] for k in members])
    return out


def _stack(states):
    """Members' (tv, ntv, ov) states -> one state whose arrays have a leading member axis."""
    import jax.numpy as jnp

    return tuple([jnp.stack(arrays) for arrays in zip(*parts)] for parts in zip(*states))


def _jax_pixels(pixels):
    """uint8 pixels -> the float32 images numpy's scale() makes, bit for bit (see data.pixel_values)."""
    import jax.numpy as jnp

    from ..data import pixel_values

    return jnp.asarray(pixel_values())[pixels.astype(jnp.int32)]


def _jax_batch_loss(model, tv, ntv, xb, yb, mask):
    """Mean loss over the batch's real rows (`mask`), and the count of its correct predictions."""
    import jax.numpy as jnp
    import keras

    yp, ntv = model.stateless_call(tv, ntv, xb, training=True)
    per_example = keras.losses.sparse_categorical_crossentropy(yb, yp)
    count = jnp.maximum(mask.sum(), 1.0)
    loss = (per_example * mask).sum() / count
    correct = ((jnp.argmax(yp, -1) == yb) * mask).sum()
    return loss, (ntv, correct)


def _jax_step(fams, order_of, xs, ys):
    """One training step of every run: the body of the segment's `lax.scan`. `fams`: per family,
    (member run indices, the Keras model and optimizer whose stateless API steps it)."""
    import jax
    import jax.numpy as jnp

    def member_step(model, optimizer, tv, ntv, ov, xb, yb, mask):
        grad_fn = jax.value_and_grad(functools.partial(_jax_batch_loss, model), has_aux=True)
        (loss, (ntv, correct)), grads = grad_fn(tv, ntv, xb, yb, mask)
        tv, ov = optimizer.stateless_apply(ov, grads, tv)
        return (tv, ntv, ov), loss * mask.sum(), correct

    def step(carry, batch):
        idx, mask = batch        # idx: (K, batch_size) row numbers; mask: (batch_size,) real rows
        # One gather for every run's batch: XLA on the CPU runs K small gathers far slower.
        flat = idx.reshape(-1)
        xb_all = _jax_pixels(xs[flat]).reshape(idx.shape + xs.shape[1:])
        yb_all = ys[flat].reshape(idx.shape)
        new_states, losses, corrects = [], [], []
        for (members, model, optimizer), (tv, ntv, ov) in zip(fams, carry):
            one = functools.partial(member_step, model, optimizer)
            if len(members) == 1:
                state, loss, correct = one(tv, ntv, ov, xb_all[members[0]], yb_all[members[0]], mask)
                loss, correct = loss[None], correct[None]
            else:
                rows = np.asarray(members)
                state, loss, correct = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None))(
                    tv, ntv, ov, xb_all[rows], yb_all[rows], mask)
            new_states.append(state)
            losses.append(loss)
            corrects.append(correct)
        return new_states, (jnp.concatenate(losses)[order_of], jnp.concatenate(corrects)[order_of])
    return step


class _TensorFlowProgram:
    """The runs' state in their Keras variables, updated inside XLA-compiled `tf.function`s."""

    def __init__(self, models, optimizers, states, n, batch_size, steps, configs=None):
        import keras
        import tensorflow as tf

        self.models, self.optimizers = models, optimizers
        for model, optimizer, state in zip(models, optimizers, states):
            _assign(model, optimizer, state)
        K = len(models)
        # Lanes, as on JAX: each run's steps are its own, so a lane of runs is a program of its own.
        device = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
        self.lanes = lanes([[k] for k in range(K)], configs, device) if configs else [list(range(K))]
        lane_order = np.argsort(np.concatenate(self.lanes))
        from ..data import pixel_values

        def pixels(values):   # uint8 -> the float32 images numpy's scale() makes, bit for bit
            return tf.gather(tf.constant(pixel_values()), tf.cast(values, tf.int32))

        @tf.function(jit_compile=True)
        def sort_keys(seeds, epoch):
            # The batch order is the argsort of stateless uniforms (StatelessShuffle has no XLA kernel).
            # The uniforms come from XLA (TensorFlow's own kernel draws other numbers); numpy's stable
            # argsort of them is the permutation XLA's sort gives, in half its time.
            return tf.stack([tf.random.stateless_uniform((n,), seed=tf.stack([seeds[k], epoch])) for k in range(K)])

        def make_segment(length, runs):
            # One program per segment length and lane, the first step an argument (see _JaxProgram)
            L = len(runs)

            @tf.function(jit_compile=True)
            def segment(idx, mask, xs, ys, first):
                end = first + length

                def body(i, loss_steps, correct_steps):
                    rows, real = idx[i], mask[i]
                    if L < K:
                        rows = tf.gather(rows, runs)
                    # One gather for every run's batch, as on JAX.
                    flat = tf.reshape(rows, [-1])
                    xb_all = tf.reshape(pixels(tf.gather(xs, flat)), tf.concat([[L, batch_size], tf.shape(xs)[1:]], 0))
                    yb_all = tf.reshape(tf.gather(ys, flat), (L, batch_size))
                    count = tf.reduce_sum(real)
                    losses, corrects = [], []
                    for j, k in enumerate(runs):
                        with tf.GradientTape() as tape:
                            yp = models[k](xb_all[j], training=True)
                            per_example = keras.losses.sparse_categorical_crossentropy(yb_all[j], yp)
                            loss = tf.reduce_sum(per_example * real) / tf.maximum(count, 1.0)
                        grads = tape.gradient(loss, models[k].trainable_variables)
                        optimizers[k].apply(grads, models[k].trainable_variables)
                        hit = tf.cast(tf.argmax(yp, -1, output_type=yb_all.dtype) == yb_all[j], tf.float32)
                        losses.append(loss * count)
                        corrects.append(tf.reduce_sum(hit * real))
                    return (i + 1, loss_steps.write(i - first, tf.stack(losses)),
                            correct_steps.write(i - first, tf.stack(corrects)))

                # per step, as on JAX: the epoch's sums are made on the host (see _epoch_means)
                _, loss_steps, correct_steps = tf.while_loop(
                    lambda i, *_: i < end, body,
                    (first, tf.TensorArray(tf.float32, size=length), tf.TensorArray(tf.float32, size=length)))
                return loss_steps.stack(), correct_steps.stack()
            return segment

        # Run by run, through the stateless API so that one program serves every run of an
        # architecture (see _JaxProgram's scorer)
        scorers = {}

        def scorer(k):
            model = models[k]
            key = _architecture(configs[k]) if configs else id(model)
            if key not in scorers:
                @tf.function(jit_compile=True)
                def score(tv, ntv, xv, yv):
                    yp, _ = model.stateless_call(tv, ntv, xv, training=False)
                    hits = tf.cast(tf.argmax(yp, -1, output_type=yv.dtype) == yv, tf.float32)
                    return keras.losses.sparse_categorical_crossentropy(yv, yp), tf.reduce_sum(hits)
                scorers[key] = score
            return scorers[key]

        self._sort_keys, self._scorer = sort_keys, scorer
        self.scored = [[k] for k in range(K)]
        self.steps, self.batch_size = steps, batch_size
        self._segments = {}
        self._make_segment = make_segment
        self._lane_order = lane_order
        self.n = n

    def data(self, x, y):
        import tensorflow as tf

        return tf.constant(x), tf.constant(np.asarray(y, dtype=np.int32))

    def order(self, seeds, epoch):
        import tensorflow as tf

        keys = self._sort_keys(tf.constant(np.asarray(seeds, dtype=np.int64)), tf.constant(epoch, tf.int64)).numpy()
        idx, mask = _batches(_permutations(keys[:, None]), self.steps, self.batch_size)
        return tf.constant(idx), tf.constant(mask)

    def segment(self, idx, mask, xs, ys, bounds):
        import tensorflow as tf

        first, end = bounds
        length, start = end - first, tf.constant(first, tf.int32)

        compiled = (length, 0) in self._segments
        if not compiled:
            for i, runs in enumerate(self.lanes):
                self._segments[length, i] = self._make_segment(length, runs)

        def run(i):   # TensorFlow runs it before returning: from threads, the lanes run side by side
            return self._segments[length, i](idx, mask, xs, ys, start)

        parts = _side_by_side(run, len(self.lanes), compiled=compiled)
        return [p[0].numpy() for p in parts], [p[1].numpy() for p in parts]

    def means(self, losses, corrects):
        return _epoch_means(losses, self._lane_order, self.n), _epoch_means(corrects, self._lane_order, self.n)

    def evaluate(self, u, xv, yv):
        model = self.models[u]
        losses, hits = self._scorer(u)([v.value for v in model.trainable_variables],
                                       [v.value for v in model.non_trainable_variables], xv, yv)
        return losses.numpy()[None], np.asarray([hits], dtype=np.float64)

    def snapshot(self, k):
        model, optimizer = self.models[k], self.optimizers[k]
        return ([v.numpy().copy() for v in model.trainable_variables],
                [v.numpy().copy() for v in model.non_trainable_variables],
                [v.numpy().copy() for v in optimizer.variables])


def _epoch_means(parts, lane_order, n: int) -> np.ndarray:
    """An epoch's mean per run, in run order, from its per-step sums: `parts` per segment, per lane,
    (the segment's steps, the lane's runs). Each run's steps are summed on their own, in float64 and
    in step order: a run's train loss and accuracy are then the same bits however the epoch was cut
    into segments and the runs into lanes, which depends on the company a run trains in (XLA summed
    a concatenation of segments as a sum of sums, which moved the last digits)."""
    lanes = [np.concatenate([np.asarray(p[i]) for p in parts], axis=0) for i in range(len(parts[0]))]
    return np.array([_total(run) for run in np.concatenate(lanes, axis=1)[:, lane_order].T]) / n


def _total(values) -> float:
    """A run's sum, in float64, from its own values alone: the same bits whatever the other runs."""
    return float(np.sum(np.ascontiguousarray(values), dtype=np.float64))


def _shuffle_rounds(n: int) -> int:
    """How many sorts jax.random.permutation makes of n items (jax.random's `_shuffle`)."""
    return int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))


def _permutations(keys: np.ndarray) -> np.ndarray:
    """keys (K, rounds, n) -> each run's permutation of range(n): sorted stably by each round's keys
    in turn, as lax.sort_key_val sorts (stable sorts give one answer, whatever sorts them)."""
    out = np.empty(keys.shape[::2], dtype=np.int32)
    for k, rounds in enumerate(keys):
        perm = np.arange(keys.shape[2], dtype=np.int32)
        for round_keys in rounds:
            perm = perm[np.argsort(round_keys, kind="stable")]
        out[k] = perm
    return out


def _batches(perms, steps: int, batch_size: int, xp=np):
    """Permutations (K, n) -> the steps' row numbers (steps, K, batch_size), padded at the end, and
    the mask of real rows (steps, batch_size): a last partial batch is masked, not dropped. `xp`:
    numpy, or jax.numpy inside a program."""
    K, n = perms.shape
    padded = xp.pad(perms.astype(xp.int32), ((0, 0), (0, steps * batch_size - n)))
    idx = padded.reshape(K, steps, batch_size).transpose(1, 0, 2)
    mask = (xp.arange(steps * batch_size) < n).astype(xp.float32).reshape(steps, batch_size)
    return idx, mask


def _architecture(config) -> tuple:
    """What makes two runs' models the same program for scoring."""
    return tuple(config.hidden), config.activation, float(config.dropout)


def _val_chunks(n_val: int, config) -> list[tuple[int, int]]:
    """The validation set cut for scoring one run: by its own model's size alone, never its
    company's, since a product's last bits can depend on how many rows it has (TensorFlow's do)."""
    per_row = 2 * config.param_count()   # forward only
    most = max(1, int(SEGMENT_FLOPS // per_row))
    length = math.ceil(n_val / math.ceil(n_val / most))
    return [(a, min(a + length, n_val)) for a in range(0, n_val, length)]


def _run_epochs(configs, split, program, segments, trackers, steps, on_event, should_stop, checkpoint,
                first):
    """The epoch loop: runs every epoch of the group segment by segment, feeds each active run's
    tracker, reports its events and checkpoints it. A stop request is seen between segments; the
    part-epoch it cuts is dropped. Returns each run's state after its last and after its best
    recorded epoch, and whether a stop cut the loop short."""
    # uint8 pixels on the device, scaled inside the programs: a quarter of the memory of floats
    XS, YS = program.data(split.pixels_train, split.y_train)
    n_val = len(split.y_val)
    # The validation images as floats, scaled once: scaling them in the program at every epoch end
    # cost more than scoring them (JAX: 19 against 8 ms an epoch). 38 MB more; the same numbers.
    plans = [_val_chunks(n_val, configs[runs[0]]) for runs in program.scored]
    chunks = {(a, b): program.data(data.scale(split.pixels_val[a:b]), split.y_val[a:b])
              for a, b in sorted({bounds for plan in plans for bounds in plan})}
    seeds = [c.seed for c in configs]
    # A resumed run's state is its last and its best so far (its checkpoint is its best epoch's
    # when it stops early: see training.Checkpointer).
    last = [program.snapshot(k) if first > 1 else None for k in range(len(configs))]
    best = list(last)
    interrupted = False
    ahead = None   # the next epoch's batch order, being made in a thread

    for epoch in range(first, max(c.epochs for c in configs) + 1):
        active = [k for k, t in enumerate(trackers) if not t.done and epoch <= configs[k].epochs]
        if not active:
            break
        if should_stop():
            interrupted = True
            break
        for k in active:
            on_event(EpochStart(member=k, epoch=epoch, steps=steps))
        t0 = time.perf_counter()
        idx, mask = ahead.result() if ahead else program.order(seeds, epoch)
        ahead = _Ahead(program.order, seeds, epoch + 1) if epoch < max(c.epochs for c in configs) else None
        losses, corrects = [], []
        for bounds in segments:
            if should_stop():
                interrupted = True
                break
            loss_sums, correct_sums = program.segment(idx, mask, XS, YS, bounds)
            losses.append(loss_sums)
            corrects.append(correct_sums)
            for k in active:
                on_event(Step(member=k, step=bounds[1], steps=steps))
        # per active run: each chunk's per-image losses, and its hits
        val_losses, val_hits = {k: [] for k in active}, dict.fromkeys(active, 0.0)
        for u, runs in enumerate(program.scored):
            if not val_losses.keys() & runs:
                continue   # stopped early or done: its figures are not recorded
            for bounds in plans[u]:
                if interrupted or should_stop():
                    interrupted = True
                    break
                chunk_losses, chunk_hits = program.evaluate(u, *chunks[bounds])
                for j, k in enumerate(runs):
                    if k in val_losses:
                        val_losses[k].append(chunk_losses[j])
                        val_hits[k] += chunk_hits[j]
        if interrupted:
            break   # the part-epoch does not count: `last` and `best` hold what finished
        train_loss, train_acc = program.means(losses, corrects)
        # per image, summed here as the train sums are (see _total)
        val_loss = {k: _total(np.concatenate(parts)) / n_val for k, parts in val_losses.items()}
        seconds = time.perf_counter() - t0
        for k in active:
            metrics = {"loss": float(train_loss[k]), "accuracy": float(train_acc[k]),
                       "val_loss": float(val_loss[k]), "val_accuracy": float(val_hits[k] / n_val)}
            is_best, _ = trackers[k].add(metrics, seconds)
            if trackers[k].status == Status.DIVERGED:
                continue
            last[k] = program.snapshot(k)
            if is_best:
                best[k] = last[k]
            on_event(EpochEnd(member=k, epoch=epoch, **metrics, seconds=seconds, is_best=is_best))
            state = last[k]
            checkpoint(k, epoch, trackers[k].history, is_best,
                       lambda k=k, state=state: _materialize(program.models[k], program.optimizers[k], state))
    return last, best, interrupted


class _Ahead:
    """An epoch's batch order, worked out in a thread while the epoch before it trains: its sorts
    (about 9 ms a run on the CPU) then use a core the training leaves idle (between the products, or
    beside a lane). It depends on (seed, epoch) alone, so when it is made does not matter.
    `result()` waits for it; an error there is raised then."""

    def __init__(self, order, seeds, epoch: int):
        import threading

        self._result, self._error = None, None
        self._thread = threading.Thread(target=self._run, args=(order, seeds, epoch), daemon=True)
        self._thread.start()

    def _run(self, order, seeds, epoch):
        try:
            self._result = order(seeds, epoch)
        except BaseException as err:   # raised in the epoch loop's thread, by result()
            self._error = err

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


def _outcomes(configs, models, optimizers, trackers, last, best, interrupted) -> list[Outcome]:
    outcomes = []
    for k, config in enumerate(configs):
        tracker = trackers[k]
        status = tracker.status if tracker.status == Status.DIVERGED else (
            Status.INTERRUPTED if interrupted and not tracker.done and len(tracker.history["loss"]) < config.epochs
            else Status.COMPLETED)
        keep = best[k] if config.early_stopping else last[k]
        model = _materialize(models[k], optimizers[k], keep) if keep is not None else None
        outcomes.append(Outcome(history=tracker.history, status=status, best_epoch=tracker.best_epoch,
                                stopped_early=tracker.stopped_early, model=model,
                                message=divergence_hint(config) if status == Status.DIVERGED else None))
    return outcomes


def _assign(model, optimizer, state):
    """Put a (trainable, non-trainable, optimizer) state into the Keras objects' variables."""
    tv, ntv, ov = state
    for variables, values in ((model.trainable_variables, tv), (model.non_trainable_variables, ntv),
                              (optimizer.variables, ov)):
        for var, value in zip(variables, values):
            var.assign(value)


def _materialize(model, optimizer, state):
    """Put a state back into the Keras objects and compile, so the saved .keras file is the same
    kind of file `fit` saves: load_model returns a model ready to evaluate."""
    _assign(model, optimizer, state)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
