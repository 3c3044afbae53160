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


def steps_per_execution(n_train: int, batch_size: int) -> int:
    steps = math.ceil(n_train / batch_size)
    return max(1, math.ceil(steps / UPDATES_PER_EPOCH))


def train(configs, split, on_event, should_stop) -> list[Outcome]:
    return [_train_one(i, config, split, on_event, should_stop) for i, config in enumerate(configs)]


def _train_one(member, config, split, on_event, should_stop) -> Outcome:
    from ..models import build_model, compile_model, set_seed

    set_seed(config.seed)
    model = build_model(config)
    steps = math.ceil(len(split.y_train) / config.batch_size)
    compile_model(model, config, steps_per_execution(len(split.y_train), config.batch_size))
    tracker = EpochTracker(patience=config.early_stopping)

    recorder = _recorder_class()(member, steps, config, tracker, on_event, should_stop)
    model.fit(split.x_train, split.y_train, batch_size=config.batch_size, epochs=config.epochs,
              validation_data=(split.x_val, split.y_val), shuffle=True, verbose=0, callbacks=[recorder])

    status = recorder.aborted or Status.COMPLETED
    # The saved model is the best epoch's when early stopping is on (Keras's restore_best_weights),
    # else the last finished epoch's; a part-epoch's weights are never kept.
    keep = recorder.best_weights if config.early_stopping else recorder.last_weights
    if keep is not None:
        model.set_weights(keep)
    return Outcome(history=tracker.history, status=status, best_epoch=tracker.best_epoch,
                   stopped_early=tracker.stopped_early, model=model if keep is not None else None,
                   message=divergence_hint(config) if status == Status.DIVERGED else None)


@functools.cache
def _recorder_class():
    """The Recorder callback class, defined on first use: importing this module must not import
    Keras (and with it the backend)."""
    import keras

    class Recorder(keras.callbacks.Callback):
        """Feeds the tracker, keeps the weights of the last and best finished epochs, and stops
        training at once on a signal or a non-finite loss."""

        def __init__(self, member, steps, config, tracker, on_event, should_stop):
            super().__init__()
            self.member, self.steps, self.config, self.tracker = member, steps, config, tracker
            self.on_event, self.should_stop = on_event, should_stop
            self.last_weights = None
            self.best_weights = None
            self.aborted = None   # "interrupted" or "diverged" when the current epoch must not count
            self.t_epoch = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.t_epoch = time.perf_counter()
            self.on_event(EpochStart(member=self.member, epoch=epoch + 1, steps=self.steps))

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and exploded(float(loss)):
                self.aborted = Status.DIVERGED
                self.model.stop_training = True
            elif self.should_stop():
                self.aborted = Status.INTERRUPTED
                self.model.stop_training = True
            else:
                self.on_event(Step(member=self.member, step=min(batch + 1, self.steps), steps=self.steps))

        def on_epoch_end(self, epoch, logs=None):
            if self.aborted:
                return  # a part-epoch: its numbers would be misleading, so it is dropped
            seconds = time.perf_counter() - self.t_epoch
            metrics = {k: float(logs[k]) for k in METRICS}
            is_best, keep_going = self.tracker.add(metrics, seconds)
            if self.tracker.status == Status.DIVERGED:
                self.aborted = Status.DIVERGED
                self.model.stop_training = True
                return
            self.last_weights = self.model.get_weights()
            if is_best:
                self.best_weights = self.last_weights
            self.on_event(EpochEnd(member=self.member, epoch=epoch + 1, **metrics, seconds=seconds,
                                   is_best=is_best))
            if not keep_going:
                self.model.stop_training = True
            # After the last epoch there is nothing to stop.
            elif self.should_stop() and epoch + 1 < self.config.epochs:
                self.aborted = Status.INTERRUPTED
                self.model.stop_training = True

    return Recorder
