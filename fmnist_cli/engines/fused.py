"""The `fused` engine (JAX backend): the same Keras models and optimizers, driven through Keras's
stateless API, with every epoch one compiled program (`jax.jit` over a `lax.scan` of the steps,
shuffling included) and the data resident on the device.

An epoch runs as a few compiled segments (see SEGMENT_FLOPS), so that a stop request is seen within
a fraction of a second whatever the model size.

A group of K runs that share their data and batch size (a comparison's variants and repeats) is
stepped inside that one program: each run has its own model, optimizer, initial weights and batch
order, but the per-step overhead is paid once. Metrics mean what Keras's mean: train loss and
accuracy are the epoch means over batches weighted by batch size (a last partial batch included,
by masking), validation is scored on the whole validation set at each epoch end.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np

from ..records import EpochEnd, EpochStart, Status, Step
from . import EpochTracker, Outcome, divergence_hint


def train(configs, split, on_event, should_stop, checkpoint=None, starts=None) -> list[Outcome]:
    """`starts` (from `train --resume`): per run, None or a Start to continue from; a group resumes
    together, so every run of it starts at the same epoch."""
    n, batch_size = len(split.y_train), configs[0].batch_size
    steps = math.ceil(n / batch_size)
    starts = starts or [None] * len(configs)
    assert len({s.epoch if s else 0 for s in starts}) == 1, "a group resumes from one epoch"
    models, optimizers, states = _build_group(configs, starts, steps)
    segments = _segments(steps, configs, batch_size)
    programs = _compile_programs(models, optimizers, n, batch_size, steps)
    trackers = [EpochTracker.for_config(c) for c in configs]
    for tracker, start in zip(trackers, starts):
        if start:
            tracker.replay(start.history)
    last, best, interrupted = _run_epochs(configs, split, states, programs, segments, trackers, steps,
                                          on_event, should_stop, checkpoint or (lambda *a: None),
                                          first=(starts[0].epoch if starts[0] else 0) + 1,
                                          materialize=lambda k, state: _materialize(models[k], optimizers[k], state))
    return _outcomes(configs, models, optimizers, trackers, last, best, interrupted)


# Work per compiled call, in floating-point operations: about 0.2-0.5 s on one CPU core. An epoch
# runs as segments of at most this much, with a stop request checked between them, so Ctrl-C is
# seen within a segment whatever the model size. The book's model needs two segments an epoch.
SEGMENT_FLOPS = 2e10


def _segments(steps: int, configs, batch_size: int) -> list[tuple[int, int]]:
    """(first step, end step) of each segment: equal lengths but the last, so at most two programs."""
    per_step = 6 * batch_size * sum(c.param_count() for c in configs)   # forward + backward
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
        if start:
            ntv = [np.asarray(v.value) + np.array([0, start.epoch * steps], dtype=np.uint32)
                   if "seed_generator_state" in v.path else loaded
                   for v, loaded in zip(model.non_trainable_variables, ntv)]
        states.append(([v.value for v in source.trainable_variables], ntv,
                       [v.value for v in source_opt.variables]))
    return models, optimizers, states


def _batch_loss(model, tv, ntv, xb, yb, mask):
    """Mean loss over the batch's real rows (`mask`), and the count of its correct predictions."""
    import jax.numpy as jnp
    import keras

    yp, ntv = model.stateless_call(tv, ntv, xb, training=True)
    per_example = keras.losses.sparse_categorical_crossentropy(yb, yp)
    count = jnp.maximum(mask.sum(), 1.0)
    loss = (per_example * mask).sum() / count
    correct = ((jnp.argmax(yp, -1) == yb) * mask).sum()
    return loss, (ntv, correct)


def _make_step(optimizers, grad_fns, xs, ys):
    """One training step of every run: the body of the epoch's `lax.scan`."""
    import jax.numpy as jnp

    def step(carry, batch):
        idx, mask = batch        # idx: (K, batch_size) row numbers; mask: (batch_size,) real rows
        new_states, losses, corrects = [], [], []
        # One gather for every run's batch: XLA on the CPU runs K small gathers far slower.
        flat = idx.reshape(-1)
        xb_all = xs[flat].reshape(idx.shape + xs.shape[1:])
        yb_all = ys[flat].reshape(idx.shape)
        for k, (optimizer, (tv, ntv, ov)) in enumerate(zip(optimizers, carry)):
            (loss, (ntv, correct)), grads = grad_fns[k](tv, ntv, xb_all[k], yb_all[k], mask)
            tv, ov = optimizer.stateless_apply(ov, grads, tv)
            new_states.append((tv, ntv, ov))
            losses.append(loss * mask.sum())
            corrects.append(correct)
        return new_states, (jnp.stack(losses), jnp.stack(corrects))
    return step


def _compile_programs(models, optimizers, n, batch_size, steps):
    """The jit-compiled programs: `order` (every run's shuffled batches for an epoch, from its seed
    and the epoch number alone, so a resumed run sees the batches an uninterrupted one would),
    `segment` (train every run through a range of steps), `means` (the epoch's train loss and
    accuracy) and `evaluate` (every run's validation loss and accuracy sums over a chunk)."""
    import jax
    import jax.numpy as jnp
    import keras

    padded = steps * batch_size
    grad_fns = [jax.value_and_grad(functools.partial(_batch_loss, m), has_aux=True) for m in models]

    @jax.jit
    def order(seeds, epoch):
        # Keys derived inside the program: done outside, each small op compiles on its own (0.5 s).
        keys = jax.vmap(lambda seed: jax.random.fold_in(jax.random.PRNGKey(seed), epoch))(seeds)
        perms = jax.vmap(lambda key: jax.random.permutation(key, n))(keys)          # (K, n)
        perms = jnp.pad(perms, ((0, 0), (0, padded - n)))                           # pad rows: masked
        idx = perms.reshape(len(models), steps, batch_size).transpose(1, 0, 2)      # (steps, K, bs)
        mask = (jnp.arange(padded) < n).astype(jnp.float32).reshape(steps, batch_size)
        return idx, mask

    # The data are arguments, not closed-over constants: constants would be baked into the program,
    # bloating compile time and the persistent compilation cache.
    @functools.partial(jax.jit, static_argnums=5)
    def segment(carry, idx, mask, xs, ys, bounds):
        first, end = bounds
        step = _make_step(optimizers, grad_fns, xs, ys)
        carry, (loss_sums, correct_sums) = jax.lax.scan(step, carry, (idx[first:end], mask[first:end]))
        return carry, loss_sums, correct_sums

    @jax.jit
    def means(loss_parts, correct_parts):
        return jnp.concatenate(loss_parts).sum(0) / n, jnp.concatenate(correct_parts).sum(0) / n

    @jax.jit
    def evaluate(carry, xv, yv):
        out = []
        for model, (tv, ntv, _) in zip(models, carry):
            yp, _ = model.stateless_call(tv, ntv, xv, training=False)
            loss = keras.losses.sparse_categorical_crossentropy(yv, yp).sum()
            out.append(jnp.stack([loss, (jnp.argmax(yp, -1) == yv).sum()]))
        return jnp.stack(out)

    return order, segment, means, evaluate


def _val_chunks(n_val: int, configs) -> list[tuple[int, int]]:
    per_row = 2 * sum(c.param_count() for c in configs)   # forward only
    most = max(1, int(SEGMENT_FLOPS // per_row))
    length = math.ceil(n_val / math.ceil(n_val / most))
    return [(a, min(a + length, n_val)) for a in range(0, n_val, length)]


def _run_epochs(configs, split, states, programs, segments, trackers, steps, on_event, should_stop,
                checkpoint, first, materialize):
    """The epoch loop: runs every epoch of the group segment by segment, feeds each active run's
    tracker, reports its events and checkpoints it. A stop request is seen between segments; the
    part-epoch it cuts is dropped. Returns each run's state after its last and after its best
    recorded epoch, and whether a stop cut the loop short."""
    import jax
    import jax.numpy as jnp

    order, segment, means, evaluate = programs
    XS, YS = jnp.asarray(split.x_train), jnp.asarray(split.y_train)
    n_val = len(split.y_val)
    chunks = [(jnp.asarray(split.x_val[a:b]), jnp.asarray(split.y_val[a:b]))
              for a, b in _val_chunks(n_val, configs)]
    seeds = np.asarray([c.seed for c in configs], dtype=np.uint32)
    # A resumed run's state is its last and its best so far (its checkpoint is its best epoch's
    # when it stops early: see training.Checkpointer).
    last = [states[k] if first > 1 else None for k in range(len(configs))]
    best = list(last)
    interrupted = False
    carry = states

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
        idx, mask = order(seeds, np.int32(epoch))
        start_carry, losses, corrects = carry, [], []
        for bounds in segments:
            if should_stop():
                interrupted = True
                break
            carry, loss_sums, correct_sums = segment(carry, idx, mask, XS, YS, bounds)
            # JAX dispatches asynchronously: without this wait every segment would be queued before
            # a stop could be seen, and the stop would come at the end of the epoch.
            loss_sums.block_until_ready()
            losses.append(loss_sums)
            corrects.append(correct_sums)
            for k in active:
                on_event(Step(member=k, step=bounds[1], steps=steps))
        val = jnp.zeros((len(configs), 2))
        for xv, yv in chunks:
            if interrupted or should_stop():
                interrupted = True
                break
            val = val + evaluate(carry, xv, yv)
        if interrupted:
            carry = start_carry   # the part-epoch does not count
            break
        train_loss, train_acc = means(losses, corrects)
        train_loss, train_acc, val = jax.device_get((train_loss, train_acc, val))
        seconds = time.perf_counter() - t0
        for k in active:
            metrics = {"loss": float(train_loss[k]), "accuracy": float(train_acc[k]),
                       "val_loss": float(val[k, 0] / n_val), "val_accuracy": float(val[k, 1] / n_val)}
            is_best, _ = trackers[k].add(metrics, seconds)
            if trackers[k].status == Status.DIVERGED:
                continue
            last[k] = carry[k]
            if is_best:
                best[k] = carry[k]
            on_event(EpochEnd(member=k, epoch=epoch, **metrics, seconds=seconds, is_best=is_best))
            state = carry[k]
            checkpoint(k, epoch, trackers[k].history, is_best,
                       lambda k=k, state=state: materialize(k, state))
    return last, best, interrupted


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


def _materialize(model, optimizer, state):
    """Put a state back into the Keras objects and compile, so the saved .keras file is the same
    kind of file `fit` saves: load_model returns a model ready to evaluate."""
    tv, ntv, ov = state
    for var, value in zip(model.trainable_variables, tv):
        var.assign(value)
    for var, value in zip(model.non_trainable_variables, ntv):
        var.assign(value)
    for var, value in zip(optimizer.variables, ov):
        var.assign(value)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
