"""The `fused` engine (JAX backend): the same Keras models and optimizers, driven through Keras's
stateless API, with every epoch one compiled program (`jax.jit` over a `lax.scan` of the steps,
shuffling included) and the data resident on the device.

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


def train(configs, split, on_event, should_stop) -> list[Outcome]:
    n, batch_size = len(split.y_train), configs[0].batch_size
    steps = math.ceil(n / batch_size)
    models, optimizers, states = _build_group(configs)
    run_epoch, evaluate = _compile_programs(models, optimizers, n, batch_size, steps)
    trackers = [EpochTracker(patience=c.early_stopping) for c in configs]
    last, best, interrupted = _run_epochs(configs, split, states, run_epoch, evaluate, trackers, steps,
                                          on_event, should_stop)
    return _outcomes(configs, models, optimizers, trackers, last, best, interrupted)


def _build_group(configs):
    """Each run's Keras model and optimizer, and its initial state (trainable, non-trainable and
    optimizer variables) as arrays for the stateless API."""
    from ..models import build_model, build_optimizer, set_seed

    models, optimizers, states = [], [], []
    for config in configs:
        set_seed(config.seed)   # same seed, same initial weights as `fit` builds
        model = build_model(config)
        optimizer = build_optimizer(config)
        optimizer.build(model.trainable_variables)
        models.append(model)
        optimizers.append(optimizer)
        states.append(([v.value for v in model.trainable_variables],
                       [v.value for v in model.non_trainable_variables],
                       [v.value for v in optimizer.variables]))
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
    """The two jit-compiled programs: `run_epoch` (shuffle and train every run for one epoch) and
    `evaluate` (score every run on the validation set)."""
    import jax
    import jax.numpy as jnp
    import keras

    padded = steps * batch_size
    grad_fns = [jax.value_and_grad(functools.partial(_batch_loss, m), has_aux=True) for m in models]

    # The data are arguments, not closed-over constants: constants would be baked into the program,
    # bloating compile time and the persistent compilation cache.
    @jax.jit
    def run_epoch(carry, seeds, epoch, xs, ys):
        # Keys derived inside the program: done outside, each small op compiles on its own (0.5 s).
        keys = jax.vmap(lambda seed: jax.random.fold_in(jax.random.PRNGKey(seed), epoch))(seeds)
        perms = jax.vmap(lambda key: jax.random.permutation(key, n))(keys)          # (K, n)
        perms = jnp.pad(perms, ((0, 0), (0, padded - n)))                           # pad rows: masked
        idx = perms.reshape(len(models), steps, batch_size).transpose(1, 0, 2)      # (steps, K, bs)
        mask = (jnp.arange(padded) < n).astype(jnp.float32).reshape(steps, batch_size)
        step = _make_step(optimizers, grad_fns, xs, ys)
        carry, (loss_sums, correct_sums) = jax.lax.scan(step, carry, (idx, mask))
        return carry, loss_sums.sum(0) / n, correct_sums.sum(0) / n

    @jax.jit
    def evaluate(carry, xv, yv):
        out = []
        for model, (tv, ntv, _) in zip(models, carry):
            yp, _ = model.stateless_call(tv, ntv, xv, training=False)
            loss = keras.losses.sparse_categorical_crossentropy(yv, yp).mean()
            out.append(jnp.stack([loss, (jnp.argmax(yp, -1) == yv).mean()]))
        return jnp.stack(out)

    return run_epoch, evaluate


def _run_epochs(configs, split, states, run_epoch, evaluate, trackers, steps, on_event, should_stop):
    """The epoch loop: runs every epoch of the group, feeds each active run's tracker and reports
    its events. Returns each run's state after its last and after its best recorded epoch, and
    whether a stop signal cut the loop short."""
    import jax
    import jax.numpy as jnp

    XS, YS = jnp.asarray(split.x_train), jnp.asarray(split.y_train)
    XV, YV = jnp.asarray(split.x_val), jnp.asarray(split.y_val)
    seeds = np.asarray([c.seed for c in configs], dtype=np.uint32)
    last = [None] * len(configs)     # state after each run's last recorded epoch
    best = [None] * len(configs)     # state after each run's best epoch
    interrupted = False
    carry = states

    for epoch in range(1, max(c.epochs for c in configs) + 1):
        active = [k for k, t in enumerate(trackers) if not t.done and epoch <= configs[k].epochs]
        if not active:
            break
        if should_stop():
            interrupted = True
            break
        for k in active:
            on_event(EpochStart(member=k, epoch=epoch, steps=steps))
        t0 = time.perf_counter()
        carry, train_loss, train_acc = run_epoch(carry, seeds, np.int32(epoch), XS, YS)
        val = evaluate(carry, XV, YV)
        train_loss, train_acc, val = jax.device_get((train_loss, train_acc, val))
        seconds = time.perf_counter() - t0
        for k in active:
            metrics = {"loss": float(train_loss[k]), "accuracy": float(train_acc[k]),
                       "val_loss": float(val[k, 0]), "val_accuracy": float(val[k, 1])}
            is_best, _ = trackers[k].add(metrics, seconds)
            if trackers[k].status == Status.DIVERGED:
                continue
            last[k] = carry[k]
            if is_best:
                best[k] = carry[k]
            on_event(Step(member=k, step=steps, steps=steps))
            on_event(EpochEnd(member=k, epoch=epoch, **metrics, seconds=seconds, is_best=is_best))
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
