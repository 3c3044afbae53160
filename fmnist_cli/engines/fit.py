"""The `fit` engine: Keras's own `model.fit`, on whichever backend Keras runs.

The book's script spends most of its time on per-step overhead (1,500 calls an epoch). Running
many steps per call (`steps_per_execution`) removes most of it without changing the maths; we run
an epoch in about ten calls, which also paces the in-epoch progress bar.
"""

from __future__ import annotations

import functools
import math
import time

from ..records import METRICS, EpochEnd, EpochStart, Status, Step
from . import EpochTracker, Outcome, divergence_hint, exploded

UPDATES_PER_EPOCH = 10
# Work per `steps_per_execution` call, in floating-point operations (about 0.2-0.5 s on a CPU core):
# a big model takes fewer steps per call, so a stop request is seen promptly whatever its size.
EXECUTION_FLOPS = 2e10


def steps_per_execution(n_train: int, batch_size: int, params: int = 0) -> int:
    steps = math.ceil(n_train / batch_size)
    by_time = max(1, int(EXECUTION_FLOPS // max(6 * batch_size * params, 1)))
    return max(1, min(math.ceil(steps / UPDATES_PER_EPOCH), by_time))


class Stop(Exception):
    """Raised from a callback to leave `model.fit` at once (mid-epoch or mid-validation)."""


def train(configs, split, on_event, should_stop, checkpoint=None, starts=None) -> list[Outcome]:
    starts = starts or [None] * len(configs)
    return [_train_one(i, config, split, on_event, should_stop, checkpoint or (lambda *a: None), start)
            for i, (config, start) in enumerate(zip(configs, starts))]


def _train_one(member, config, split, on_event, should_stop, checkpoint, start) -> Outcome:
    from ..models import build_model, compile_model, set_seed

    set_seed(config.seed)
    steps = math.ceil(len(split.y_train) / config.batch_size)
    spe = steps_per_execution(len(split.y_train), config.batch_size, config.param_count())
    tracker = EpochTracker.for_config(config)
    if start:
        # The checkpoint's weights and optimizer state; compiled again for our settings, keeping
        # its optimizer object (and so its state).
        model = start.model
        model.compile(optimizer=model.optimizer, loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], steps_per_execution=spe)
        tracker.replay(start.history)
    else:
        model = build_model(config)
        compile_model(model, config, spe)

    recorder = _recorder_class()(member, steps, config, tracker, on_event, should_stop, checkpoint)
    if start:
        recorder.set_model(model)
        recorder.last = recorder.best = recorder.snapshot()
    try:
        model.fit(split.x_train, split.y_train, batch_size=config.batch_size, epochs=config.epochs,
                  initial_epoch=start.epoch if start else 0, validation_data=(split.x_val, split.y_val),
                  shuffle=True, verbose=0, callbacks=[recorder])
    except Stop:
        pass

    status = recorder.aborted or Status.COMPLETED
    # The saved model is the best epoch's when early stopping is on (Keras's restore_best_weights),
    # else the last finished epoch's; a part-epoch's weights are never kept.
    keep = recorder.best if config.early_stopping else recorder.last
    if keep is not None:
        recorder.restore(keep)
    return Outcome(history=tracker.history, status=status, best_epoch=tracker.best_epoch,
                   stopped_early=tracker.stopped_early, model=model if keep is not None else None,
                   message=divergence_hint(config) if status == Status.DIVERGED else None)


@functools.cache
def _recorder_class():
    """The Recorder callback class, defined on first use: importing this module must not import
    Keras (and with it the backend)."""
    import keras

    class Recorder(keras.callbacks.Callback):
        """Feeds the tracker, checkpoints, keeps the weights and optimizer state of the last and best
        finished epochs, and leaves training at once on a signal or an exploding loss."""

        def __init__(self, member, steps, config, tracker, on_event, should_stop, checkpoint):
            super().__init__()
            self.member, self.steps, self.config, self.tracker = member, steps, config, tracker
            self.on_event, self.should_stop, self.checkpoint = on_event, should_stop, checkpoint
            self.last = None
            self.best = None
            self.aborted = None   # Status.INTERRUPTED or DIVERGED when the current epoch must not count
            self.t_epoch = 0.0

        def snapshot(self):
            return ([w.copy() for w in self.model.get_weights()],
                    [v.numpy().copy() for v in self.model.optimizer.variables])

        def restore(self, state):
            weights, opt = state
            self.model.set_weights(weights)
            for var, value in zip(self.model.optimizer.variables, opt):
                var.assign(value)

        def _abort(self, status):
            self.aborted = status
            raise Stop

        def on_epoch_begin(self, epoch, logs=None):
            self.t_epoch = time.perf_counter()
            self.on_event(EpochStart(member=self.member, epoch=epoch + 1, steps=self.steps))

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and exploded(float(loss)):
                self._abort(Status.DIVERGED)
            if self.should_stop():
                self._abort(Status.INTERRUPTED)
            self.on_event(Step(member=self.member, step=min(batch + 1, self.steps), steps=self.steps))

        def on_test_batch_end(self, batch, logs=None):
            if self.should_stop():   # validation of a big model takes seconds: do not wait for it
                self._abort(Status.INTERRUPTED)

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.t_epoch
            metrics = {k: float(logs[k]) for k in METRICS}
            is_best, keep_going = self.tracker.add(metrics, seconds)
            if self.tracker.status == Status.DIVERGED:
                self._abort(Status.DIVERGED)
            self.last = self.snapshot()
            if is_best:
                self.best = self.last
            self.on_event(EpochEnd(member=self.member, epoch=epoch + 1, **metrics, seconds=seconds,
                                   is_best=is_best))
            self.checkpoint(self.member, epoch + 1, self.tracker.history, is_best, lambda: self.model)
            if not keep_going:
                self.model.stop_training = True
            # After the last epoch there is nothing to stop.
            elif self.should_stop() and epoch + 1 < self.config.epochs:
                self._abort(Status.INTERRUPTED)

    return Recorder
