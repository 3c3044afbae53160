"""A fake engine and fake data for tests of the store, compare, resume and the CLI: deterministic
histories at once, no Keras, no data files. The `fake_engine` fixture (conftest) swaps them in.

The numbers depend on the seed, the optimizer and the hidden sizes only, so equal configs give equal
histories, and a learning rate above 10 diverges at epoch 2 (above 1000: at epoch 1), as a real run would.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass

import numpy as np

from fmnist_cli.engines import EpochTracker, Outcome
from fmnist_cli.records import EpochEnd, EpochStart, Status


class FakeModel:
    """Saves as a small zip file, so the store's model handling is exercised without Keras."""

    def __init__(self, config):
        self.config = config

    def save(self, path):
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("config.json", "{}")


def _jitter(config) -> float:
    key = f"{config.seed}-{config.optimizer.label()}-{config.hidden}-{config.activation}".encode()
    return int(hashlib.sha256(key).hexdigest()[:6], 16) / 0xFFFFFF * 0.02


def fake_history(config, epochs: int | None = None) -> dict:
    """The metrics the fake engine reports for `config`, epoch by epoch."""
    j = _jitter(config)
    out = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": [], "seconds": []}
    for e in range(1, (epochs or config.epochs) + 1):
        out["loss"].append(1.0 / (e + 1) + j)
        out["accuracy"].append(0.8 - 0.2 / e + j)
        out["val_loss"].append(1.1 / (e + 1) + j)
        out["val_accuracy"].append(0.78 - 0.2 / e + j)
        out["seconds"].append(0.01)
    return out


class FakeEngine:
    """engines.get(...) stand-in: the same interface as fit and fused."""

    def __init__(self):
        self.trained = []          # configs, in the order they were trained
        self.stop_after = None     # epochs after which should_stop is treated as set (a Ctrl-C)
        self.fail = None           # an exception to raise instead of training

    def train(self, configs, split, on_event, should_stop, checkpoint=None, starts=None):
        if self.fail:
            raise self.fail
        checkpoint = checkpoint or (lambda *a: None)
        outcomes = []
        for member, config in enumerate(configs):
            self.trained.append(config)
            tracker = EpochTracker.for_config(config)
            full = fake_history(config)
            interrupted = False
            for e in range(config.epochs):
                if should_stop() or (self.stop_after is not None and e >= self.stop_after):
                    interrupted = True
                    break
                on_event(EpochStart(member=member, epoch=e + 1, steps=3))
                lr = config.optimizer.learning_rate or 0.001
                metrics = {k: full[k][e] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
                if lr > 10 and (e >= 1 or lr > 1000):   # above 1000: in the first epoch
                    metrics["loss"] = float("nan")
                is_best, keep_going = tracker.add(metrics, 0.01)
                if tracker.status == Status.DIVERGED:
                    break
                on_event(EpochEnd(member=member, epoch=e + 1, **metrics, seconds=0.01, is_best=is_best))
                checkpoint(member, e + 1, tracker.history, is_best, lambda: FakeModel(config))
                if not keep_going:
                    break
            status = tracker.status if tracker.status == Status.DIVERGED else (
                Status.INTERRUPTED if interrupted else Status.COMPLETED)
            outcomes.append(Outcome(history=tracker.history, status=status, best_epoch=tracker.best_epoch,
                                    stopped_early=tracker.stopped_early,
                                    model=FakeModel(config) if tracker.history["loss"] else None,
                                    message="fake divergence" if status == Status.DIVERGED else None))
        return outcomes


@dataclass
class FakeSplit:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


@dataclass
class FakeDataset:
    directory: str = "fake-data"


def install(monkeypatch) -> FakeEngine:
    """Swap the engine, the backend set-up and the data for fakes; returns the engine to steer."""
    from fmnist_cli import backend, data, engines

    engine = FakeEngine()
    monkeypatch.setattr(engines, "get", lambda name: engine)
    monkeypatch.setattr(backend, "configure", lambda name=None: name or "tensorflow")
    monkeypatch.setattr(backend, "describe", lambda: {"backend": "fake"})
    monkeypatch.setattr(data, "load", lambda data_dir=None, strict=True: FakeDataset())
    tiny = FakeSplit(np.zeros((30, 28, 28), np.float32), np.arange(30) % 10,
                     np.zeros((10, 28, 28), np.float32), np.arange(10) % 10)
    monkeypatch.setattr(data, "make_split", lambda *a, **k: tiny)
    return engine
