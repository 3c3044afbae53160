"""Training engines. Each trains a group of runs that share their data and batching, and reports
epoch events. One interface, so the rest of the tool never cares which engine ran:

    train(configs, split, on_event, should_stop, checkpoint=None, starts=None) -> list[Outcome]

`checkpoint(member, epoch, history, is_best, model_fn)` is called after every finished epoch;
`model_fn()` gives a compiled Keras model holding that epoch's weights and optimizer state.
`starts` continues runs from a saved state (`fmnist train --resume`).

- `fit`:   Keras `model.fit`, any backend, one run at a time (steps_per_execution fuses steps).
- `fused`: JAX only; every run of the group stepped inside one compiled program per epoch, with the
           data resident on the device (see fused.py).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

from ..config import DEFAULT_MONITOR, MONITORS
from ..records import METRICS, Status


@dataclass
class Outcome:
    """What an engine hands back for one run."""

    history: dict[str, list[float]]
    status: Status              # completed | interrupted | diverged
    best_epoch: int | None      # 1-based, by the config's monitor; None when no epoch finished
    stopped_early: bool = False
    model: Any = None           # a compiled Keras model holding the weights to save
    message: str | None = None


@dataclass
class Start:
    """Where a resumed run continues: after `epoch`, from `model` (a compiled Keras model with its
    optimizer state, loaded from the run's checkpoint), with the history of the epochs before."""

    epoch: int
    history: dict[str, list[float]]
    model: Any


def _float32(value: float) -> float:
    """`value` rounded to float32, as Keras's `ops.less`/`ops.greater` see a Python float."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def improves(monitor: str, current: float, best: float | None) -> bool:
    """Keras's EarlyStopping rule with min_delta=0: the first value always improves; after that, a
    strictly lower loss or a strictly higher accuracy, compared in float32 as Keras compares. A tie
    is no improvement, and NaN never improves."""
    if best is None:
        return True
    a, b = _float32(current), _float32(best)
    return a < b if MONITORS[monitor] == "min" else a > b


def best_index(values: list[float], monitor: str) -> int | None:
    """The 0-based epoch EpochTracker calls best for a history's `monitor` values (the first of ties)."""
    best = None
    for i, value in enumerate(values):
        if improves(monitor, value, None if best is None else values[best]):
            best = i
    return best


@dataclass
class EpochTracker:
    """The per-run policy both engines share, so they agree on meaning: records finished epochs,
    finds the best one (by `monitor`: lowest val_loss by default), applies early stopping and spots
    divergence. Early stopping is keras.callbacks.EarlyStopping(monitor, patience,
    restore_best_weights=True), decision for decision (tests/test_monitor.py drives both)."""

    patience: int | None = None
    monitor: str = DEFAULT_MONITOR
    history: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in (*METRICS, "seconds")})
    best_epoch: int | None = None
    best_value: float | None = None
    wait: int = 0
    done: bool = False
    status: Status = Status.COMPLETED
    stopped_early: bool = False

    @classmethod
    def for_config(cls, config) -> "EpochTracker":
        return cls(patience=config.early_stopping, monitor=config.monitor)

    def replay(self, history: dict[str, list[float]]) -> None:
        """Feed a resumed run's earlier epochs, so best epoch and patience carry on as if unbroken."""
        for e in range(len(history["loss"])):
            seconds = history["seconds"][e] if e < len(history.get("seconds", [])) else 0.0
            self.add({k: history[k][e] for k in METRICS}, seconds)

    def add(self, metrics: dict[str, float], seconds: float) -> tuple[bool, bool]:
        """Record one finished epoch. Returns (is_best, keep_going)."""
        if exploded(metrics["loss"]) or exploded(metrics["val_loss"]):
            self.status, self.done = Status.DIVERGED, True
            return False, False
        for key in METRICS:
            self.history[key].append(float(metrics[key]))
        self.history["seconds"].append(round(float(seconds), 4))
        epoch = len(self.history["loss"])
        current = float(metrics[self.monitor])
        # Keras: wait += 1, then back to 0 on an improvement; stop once wait reaches the patience.
        self.wait += 1
        if improves(self.monitor, current, self.best_value):
            self.best_value, self.best_epoch, self.wait = current, epoch, 0
            return True, True
        if self.patience is not None and self.wait >= self.patience:
            self.stopped_early, self.done = True, True
            return False, False
        return False, True


# Cross-entropy over 10 classes starts near ln(10) = 2.3 (a uniform guess). A blown-up network is
# confidently wrong: on TensorFlow Keras computes the loss from the logits and it reaches 1e9 long
# before NaN; on JAX it comes from clipped probabilities and saturates near -0.9 * log(1e-7) = 14.5.
# No run that is still learning has an epoch-mean loss above 10: that is divergence too.
EXPLODED_LOSS = 10.0


def exploded(loss: float) -> bool:
    return not math.isfinite(loss) or loss > EXPLODED_LOSS


def get(name: str):
    if name == "fit":
        from . import fit

        return fit
    if name == "fused":
        from . import fused

        return fused
    raise ValueError(f"unknown engine {name!r}")


def divergence_hint(config) -> str:
    """What to try instead: a lower rate (Keras's default where the rate was above it, else a tenth
    of it), and for the SGD family an adaptive optimizer too."""
    spec = config.optimizer
    lr = spec.learning_rate
    now = f" (now {lr:g})" if lr is not None else ""
    lower = spec.default_rate if spec.rate > spec.default_rate else spec.rate / 10
    other = ", or pick an adaptive optimizer such as adam" if spec.keras_class == "SGD" else ""
    return (f"The loss exploded (NaN, infinite or above {EXPLODED_LOSS:g}, where guessing scores 2.3): "
            f"lower the learning rate{now}, e.g. --learning-rate {lower:g}{other}.")
