"""Scoring a saved run on the validation or test split it was (or was not) trained against."""

from __future__ import annotations

from pathlib import Path

from . import data
from .errors import BrokenRecord, RunNotFound, StorageError, UsageError
from .records import EvaluationResult
from .store import RunStore, now


SPLITS = ("val", "test")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise UsageError(f"--split must be val or test, not {split!r}.")
    return split


def evaluate(store: RunStore, run_dir: Path, split: str = "val", data_dir=None, backend_name: str | None = None,
             keep: bool = True) -> EvaluationResult:
    """Score the run's model. With `keep`, the result is stored in run.json too; a result that cannot
    be stored (a read-only or full disk) is still returned, with `stored` false and `store_error` why."""
    check_split(split)
    config = store.read_config(run_dir)
    store.check_model(run_dir)   # before the backend and the data load: a missing model is said at once
    from . import backend

    backend.configure(backend_name)
    dataset = data.load(data_dir)
    if split == "val":
        # The same rows the run validated on: the split is rebuilt from the saved config.
        _, idx = data.split_indices(len(dataset.y_train), dataset.y_train, config.val_size,
                                    config.split_seed, config.limit)
        x, y = data.scale(dataset.x_train[idx]), dataset.y_train[idx]
    else:
        x, y = data.scale(dataset.x_test), dataset.y_test
    model = store.load_model(run_dir)
    import numpy as np
    from sklearn.metrics import confusion_matrix

    if not getattr(model, "compiled", False):
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    try:
        loss, accuracy = model.evaluate(x, y, batch_size=1024, verbose=0)
        predicted = np.argmax(model.predict(x, batch_size=1024, verbose=0), axis=-1)
    except Exception as err:  # a foreign model with other shapes fails here
        raise BrokenRecord(f"The model in {run_dir} does not take 28x28 images with 10 classes "
                           f"({type(err).__name__}): it is not an fmnist model.") from None
    matrix = confusion_matrix(y, predicted, labels=list(range(len(data.CLASS_NAMES))))
    per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    result = EvaluationResult(
        run_id=run_dir.name, run_dir=str(run_dir), split=split, n=int(len(y)),
        loss=float(loss), accuracy=float(accuracy),
        per_class=[{"class": name, "accuracy": float(a), "n": int(c)}
                   for name, a, c in zip(data.CLASS_NAMES, per_class, matrix.sum(axis=1))],
        confusion_matrix=matrix.tolist(), classes=list(data.CLASS_NAMES), evaluated=now())
    if keep:
        try:
            store.record_evaluation(run_dir, split, result)
            result.stored = True
        except (StorageError, BrokenRecord) as err:   # the numbers are worth having all the same
            result.store_error = str(err)
    return result


def evaluate_comparison(store: RunStore, cid: str, split: str = "val", data_dir=None,
                        backend_name: str | None = None, on_result=None) -> dict:
    """Score every completed run of a comparison (each result stored in its run, as `evaluate` does)
    and aggregate per variant: loss and accuracy as mean and std over its seeds. Any other slot
    (missing, broken, being trained, interrupted, diverged) is skipped, with the reason. `on_result(label,
    result)` hears of each run as it is scored."""
    from . import compare as cmp
    from .records import RESUMABLE, Status

    check_split(split)
    record = store.load_comparison(cid)
    summary = cmp.summarize(store, record)
    variants, skipped = [], []
    for v in summary.variants:
        results = []
        for slot in v.runs:
            # a diverged run's result is its divergence, not the weights from before it; an interrupted
            # one's model is a part-trained one, which its variant's figures would mix with finished ones
            why = None if slot.status == Status.COMPLETED else f"it is {slot.status}" + (
                f" (`fmnist compare --resume {record.id}` finishes it)" if slot.status in RESUMABLE else "")
            if why is None:
                try:
                    result = evaluate(store, store.root / slot.run_id, split, data_dir, backend_name)
                except (RunNotFound, BrokenRecord) as err:   # no model to score: check_model says why
                    why = str(err).rstrip(".")
            if why:
                skipped.append({"variant": v.label, "repeat": slot.repeat, "run_id": slot.run_id, "reason": why})
                continue
            results.append(result)
            if on_result:
                on_result(v.label, result)
        variants.append({"label": v.label, "n": len(results), "of": v.of,
                         "loss": cmp.stat([r.loss for r in results]),
                         "accuracy": cmp.stat([r.accuracy for r in results]), "runs": results})
    if not any(v["runs"] for v in variants):
        raise UsageError(f"Comparison {cid} has no run with a model to score yet; "
                         f"`fmnist compare --show {cid}` shows where it stands.")
    return {"comparison_id": cid, "split": split, "variants": variants, "skipped": skipped}
