"""Which runs `fmnist runs` lists, and in what order: `--status`, `--where KEY=VALUE` and `--sort`.

Plain data in, plain data out: the CLI parses the options here and renders what is left."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .config import BACKEND_SHORT, BACKENDS, parse_activation, parse_hidden, parse_monitor, parse_optimizer
from .errors import UsageError
from . import records
from .records import Status


def _whole(text: str) -> int | None:
    if text.lower() == "none":
        return None
    if not (text.isascii() and text.isdigit()):
        raise ValueError("a whole number (or none)")
    return int(text)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("a number") from None


def _hidden(text: str) -> tuple[int, ...]:
    try:
        return parse_hidden(text)   # 300-100, as --vary reads it
    except UsageError:
        raise ValueError("layer sizes such as 100 or 300-100 (commas separate values)") from None


def _backend(text: str) -> str:
    names = {short: full for full, short in BACKEND_SHORT.items()}
    name = names.get(text.lower(), text.lower())
    if name not in BACKENDS:
        raise ValueError(f"one of {', '.join(BACKENDS)} (or tf)")
    return name


def _engine(text: str) -> str:
    name = "fused" if text.lower() == "auto" else text.lower()   # `auto` is the fused engine
    if name not in ("fused", "fit"):
        raise ValueError("fused (or auto) or fit")
    return name


def _trained(spec) -> tuple:
    return (spec.name, *spec.trained_with().values())


def _optimizer(text: str):
    """A name (`adam`: any of its settings) or a whole spec (`sgd:lr=0.1`: what it trains with)."""
    spec = parse_optimizer(text)   # its UsageError names the optimizers
    return _trained(spec) if ":" in text else spec.name


# key -> (what a run's config has, how a typed value becomes comparable). The optimizer matches by its
# name (`adam`) or by what a whole spec trains with (`sgd:lr=0.01` is plain sgd); lr by the rate the
# run trained with, Keras's defaults included.
KEYS: dict[str, tuple[Callable[[Any], Any], Callable[[str], Any]]] = {
    "optimizer": (lambda c: {c.optimizer.name, _trained(c.optimizer)}, _optimizer),
    "lr": (lambda c: c.optimizer.rate, _number),
    "hidden": (lambda c: tuple(c.hidden), _hidden),
    "activation": (lambda c: c.activation, parse_activation),
    "dropout": (lambda c: float(c.dropout), _number),
    "epochs": (lambda c: c.epochs, _whole),
    "batch_size": (lambda c: c.batch_size, _whole),
    "seed": (lambda c: c.seed, _whole),
    "limit": (lambda c: c.limit, _whole),
    "early_stopping": (lambda c: c.early_stopping, _whole),
    "monitor": (lambda c: c.monitor, parse_monitor),
    "backend": (lambda c: c.backend, _backend),
    "engine": (lambda c: c.resolved_engine, _engine),
    "val_size": (lambda c: float(c.val_size), _number),
    "split_seed": (lambda c: c.split_seed, _whole),
    "name": (lambda c: c.name, str),
    "variant": (lambda c: c.variant, str),
    # a comparison ref (id, part of one, name, latest) or none; resolved by resolve_comparisons
    "comparison": (lambda c: c.comparison, lambda text: None if text.lower() == "none" else text),
}
ALIASES = {"learning_rate": "lr", "optimiser": "optimizer", "patience": "early_stopping"}

# --sort NAME -> (what to sort by, best first?). Runs without the figure go last either way.
SORTS = {
    "created": (lambda r: r.created, True),
    "val_acc": (lambda r: r.saved_val_accuracy, True),
    "test_acc": (lambda r: r.test_accuracy, True),
    "time": (lambda r: r.get("seconds"), False),
}


@dataclass(frozen=True)
class Condition:
    key: str
    values: tuple   # any of them matches

    def matches(self, config) -> bool:
        if config is None:   # a broken run's settings are unknown: it matches no setting
            return False
        have = KEYS[self.key][0](config)
        if isinstance(have, set):
            return any(v in have for v in self.values)
        return have in self.values


def _values(key: str, raw: str) -> list[str]:
    """The comma-separated values; an optimizer spec's own settings (`sgd:lr=0.1,momentum=0.9`) stay
    with their spec."""
    parts = [p.strip() for p in raw.split(",")]
    if key != "optimizer":
        return parts
    out: list[str] = []
    for part in parts:
        if out and "=" in part and ":" not in part and ":" in out[-1]:
            out[-1] += "," + part
        else:
            out.append(part)
    return out


def parse_where(items: list[str] | None) -> list[Condition]:
    """`--where optimizer=sgd,adam --where epochs=20`: every condition holds; within one, any value."""
    out = []
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip().lower().replace("-", "_")
        key = ALIASES.get(key, key)
        if not sep or not raw.strip():
            raise UsageError(f"--where takes KEY=VALUE (e.g. --where optimizer=adam), not {item!r}.")
        if key not in KEYS:
            raise UsageError(f"Unknown setting {key!r} for --where; choose from {', '.join(KEYS)}.")
        parse = KEYS[key][1]
        values = []
        for part in _values(key, raw):   # as in --vary: hidden=100,300-100
            try:
                values.append(parse(part))
            except ValueError as e:
                raise UsageError(f"--where {key}={part}: {key} takes {e}.") from None
            except UsageError as e:   # the setting's own parser, which names its option
                raise UsageError(f"--where {key}={part}: {e}") from None
        out.append(Condition(key, tuple(values)))
    return out


def resolve_comparisons(conditions: list[Condition], resolve: Callable[[str], str]) -> list[Condition]:
    """`comparison=` values as typed (`lr-sweep`, `latest`, a part of an id) -> comparison ids, by
    `resolve` (the store's, whose error says what a ref matched)."""
    return [Condition(c.key, tuple(v if v is None else resolve(v) for v in c.values)) if c.key == "comparison" else c
            for c in conditions]


# A run's status as listings show it: `missing` and `incomplete` belong to comparisons' slots.
LISTED = tuple(s for s in Status if s not in (Status.MISSING, Status.INCOMPLETE))


def parse_statuses(text: str | None) -> set[Status]:
    return records.parse_statuses(text, LISTED)


def parse_sort(text: str | None) -> str:
    name = (text or "created").strip().lower().replace("-", "_")
    name = {"val_accuracy": "val_acc", "test_accuracy": "test_acc", "seconds": "time"}.get(name, name)
    if name not in SORTS:
        raise UsageError(f"Unknown --sort {text!r}; choose from {', '.join(SORTS)}.")
    return name


def select(runs: list, statuses: set[Status] | None = None, where: list[Condition] = (),
           sort: str = "created", copies: bool = True) -> list:
    """The runs that have one of `statuses` (any when empty) and meet every condition, ordered by
    `sort`: best first (newest, highest accuracy, shortest time), runs without the figure last.
    `copies=False` leaves out copies made by `compare --reuse` whose source is listed too: a ranking
    then shows each result once."""
    chosen = [r for r in runs if (not statuses or r.status in statuses) and all(c.matches(r.config) for c in where)]
    if not copies:   # against what is listed: a copy whose source a filter left out stands for it
        listed = {r.id for r in chosen}
        chosen = [r for r in chosen if r.get("reused_from") not in listed]
    key, descending = SORTS[sort]
    have = [r for r in chosen if key(r) is not None]
    have.sort(key=key, reverse=descending)   # stable: equal figures stay newest first
    return have + [r for r in chosen if key(r) is None]
