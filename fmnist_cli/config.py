"""The run configuration: everything that defines a run, validated, and round-tripped through JSON.

Stdlib only, so that parsing and validating options costs nothing before any heavy import.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from .errors import UsageError

ACTIVATIONS = ("sigmoid", "relu", "tanh", "elu", "selu", "gelu", "leaky_relu", "swish", "softplus")
BACKENDS = ("tensorflow", "jax")
ENGINES = ("auto", "fit", "fused")
# What "best epoch" and early stopping watch, and which way is better (Keras's EarlyStopping infers
# the same: lower for losses, higher for accuracies). val_loss is Keras's default and the book's.
MONITORS = {"val_loss": "min", "val_accuracy": "max", "loss": "min", "accuracy": "max"}
DEFAULT_MONITOR = "val_loss"
# Runs stored before `monitor` existed were trained watching val_accuracy (their early stopping and
# best epoch): a stored config without the key means that, so old runs are described truthfully.
LEGACY_MONITOR = "val_accuracy"

# name -> (Keras class, fixed arguments). Learning rates are left to Keras's own defaults.
OPTIMIZERS: dict[str, tuple[str, dict]] = {
    "sgd": ("SGD", {}),
    "momentum": ("SGD", {"momentum": 0.9}),
    "nesterov": ("SGD", {"momentum": 0.9, "nesterov": True}),
    "adagrad": ("Adagrad", {}),
    "rmsprop": ("RMSprop", {}),
    "adam": ("Adam", {}),
    "adamw": ("AdamW", {}),
    "nadam": ("Nadam", {}),
}

# Keras's own default learning rates where not 0.001 (Adam, RMSprop, Adagrad, AdamW, Nadam).
KERAS_DEFAULT_LR = {"SGD": 0.01}

TRAIN_IMAGES = 60_000
# Weights, gradients and two optimizer slots in float32: 100M parameters is about 1.6 GB.
MAX_PARAMS = 100_000_000

# Short keys accepted inside an optimizer spec such as "sgd:lr=0.1,momentum=0.5".
_SPEC_KEYS = {"lr": "learning_rate", "learning_rate": "learning_rate",
              "momentum": "momentum", "nesterov": "nesterov"}


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer by name plus the settings the user overrides (None: Keras's default)."""

    name: str = "rmsprop"
    learning_rate: float | None = None
    momentum: float | None = None   # SGD family only
    nesterov: bool | None = None    # SGD family only

    @property
    def keras_class(self) -> str:
        return OPTIMIZERS[self.name][0]

    @property
    def default_rate(self) -> float:
        """Keras's default learning rate for its class: 0.01 for SGD, else 0.001."""
        return KERAS_DEFAULT_LR.get(self.keras_class, 0.001)

    @property
    def rate(self) -> float:
        """The learning rate it trains with: its own, else Keras's default."""
        return self.learning_rate if self.learning_rate is not None else self.default_rate

    def trained_with(self) -> dict:
        """The rate, momentum and nesterov it trains with, Keras's defaults and the name's own settings
        filled in (`momentum` is SGD with 0.9); momentum and nesterov are None outside the SGD family."""
        kwargs, sgd = self.keras_kwargs(), self.keras_class == "SGD"
        return {"lr": self.rate, "momentum": kwargs.get("momentum", 0.0) if sgd else None,
                "nesterov": bool(kwargs.get("nesterov", False)) if sgd else None}

    def keras_kwargs(self) -> dict:
        """Arguments for the Keras optimizer class: fixed ones of the name, then the overrides."""
        kwargs = dict(OPTIMIZERS[self.name][1])
        if self.learning_rate is not None:
            kwargs["learning_rate"] = self.learning_rate
        if self.momentum is not None:
            kwargs["momentum"] = self.momentum
        if self.nesterov is not None:
            kwargs["nesterov"] = self.nesterov
        return kwargs

    def label(self) -> str:
        """The spec written back the way a user types it: `sgd`, `sgd:lr=0.1`."""
        parts = []
        if self.learning_rate is not None:
            parts.append(f"lr={self.learning_rate:g}")
        if self.momentum is not None:
            parts.append(f"momentum={self.momentum:g}")
        if self.nesterov is not None:
            parts.append(f"nesterov={str(self.nesterov).lower()}")
        return self.name + (":" + ",".join(parts) if parts else "")


def _parse_bool(text: str, what: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{what} must be true or false, not {text!r}.")


def _parse_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{what} must be a number, not {text!r}.") from None
    return value


def parse_optimizer(text: str, learning_rate: float | None = None, momentum: float | None = None,
                    nesterov: bool | None = None) -> OptimizerSpec:
    """Parse `name[:key=value,...]`, with the settings of explicit options (--learning-rate ...) added;
    a setting given both ways with two values is refused rather than one of them silently dropped."""
    text = (text or "").strip()
    name, _, rest = text.partition(":")
    name = name.strip().lower()
    if name not in OPTIMIZERS:
        raise UsageError(f"Unknown optimizer {name!r}. Choose one of: {', '.join(OPTIMIZERS)} "
                         "(optionally with settings, e.g. 'sgd:lr=0.1').")
    settings: dict = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in _SPEC_KEYS:
            raise UsageError(f"Cannot read {item!r} in optimizer {text!r}: use key=value with keys "
                             "lr, momentum, nesterov (e.g. 'sgd:lr=0.1,momentum=0.9').")
        key = _SPEC_KEYS[key]
        if key == "nesterov":
            settings[key] = _parse_bool(value, f"nesterov in {text!r}")
        else:
            settings[key] = _parse_float(value, f"{key} in {text!r}")
    options = {"learning_rate": (learning_rate, "--learning-rate"), "momentum": (momentum, "--momentum"),
               "nesterov": (nesterov, "--nesterov")}
    for key, (value, option) in options.items():
        if value is None:
            continue
        if key in settings and settings[key] != value:   # one would be dropped without a word
            raise UsageError(f"{text!r} sets {key.replace('_', ' ')} {settings[key]:g} and {option} sets it to "
                             f"{value:g}; give it once." if key != "nesterov" else
                             f"{text!r} and {option} disagree on nesterov; give it once.")
        settings[key] = value
    spec = OptimizerSpec(name=name, **settings)
    _validate_optimizer(spec)
    return spec


def _validate_optimizer(spec: OptimizerSpec) -> None:
    if not isinstance(spec.name, str) or spec.name not in OPTIMIZERS:
        raise UsageError(f"Unknown optimizer {spec.name!r}. Choose one of: {', '.join(OPTIMIZERS)}.")
    for key in ("learning_rate", "momentum"):
        value = getattr(spec, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UsageError(f"The optimizer's {key} must be a number, not {value!r}.")
    if spec.nesterov is not None and not isinstance(spec.nesterov, bool):
        raise UsageError(f"The optimizer's nesterov must be true or false, not {spec.nesterov!r}.")
    lr = spec.learning_rate
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise UsageError(f"The learning rate must be a positive number, not {lr}.")
    is_sgd = spec.keras_class == "SGD"
    if spec.momentum is not None:
        if not is_sgd:
            raise UsageError(f"--momentum applies to sgd, momentum and nesterov, not {spec.name}.")
        if not (math.isfinite(spec.momentum) and 0 <= spec.momentum < 1):
            raise UsageError(f"The momentum must be in [0, 1), not {spec.momentum}.")
    if spec.nesterov is not None and not is_sgd:
        raise UsageError(f"--nesterov applies to sgd, momentum and nesterov, not {spec.name}.")


def parse_hidden(text: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """`100`, `300,100`, `300-100` (as tables and --vary write it) or `300x100` -> (300, 100). Every
    size a positive integer, at most 8 layers."""
    if isinstance(text, (list, tuple)):
        sizes = list(text)
    else:
        joined = re.sub(r"(?<=\d)[-x](?=\d)", ",", str(text).replace(" ", ""))
        raw = [p.strip() for p in joined.split(",")]
        if raw == [""]:
            raise UsageError("--hidden needs at least one layer size, e.g. --hidden 100 or --hidden 300,100.")
        sizes = []
        for p in raw:
            if not (p.isascii() and p.isdigit()):
                part = f"{p!r} is not one" if len(raw) == 1 else f"{p!r} in {text!r} is not one"
                raise UsageError(f"--hidden takes comma-separated positive integers (e.g. 300,100); {part}.")
            sizes.append(int(p))
    if not sizes or len(sizes) > 8 or any(not isinstance(s, int) or s < 1 or s > 100_000 for s in sizes):
        raise UsageError(f"--hidden takes 1 to 8 layer sizes between 1 and 100000, not {text!r}.")
    return tuple(sizes)


def parse_monitor(text: str) -> str:
    """`val_loss`, `val_accuracy`, `loss` or `accuracy` (a `-` for `_` and any case accepted)."""
    name = text.strip().lower().replace("-", "_") if isinstance(text, str) else None
    if name not in MONITORS:
        raise UsageError(f"Unknown monitor {text!r}. Choose one of: {', '.join(MONITORS)}.")
    return name


def monitor_phrase(monitor: str) -> str:
    """`lowest val_loss`, `highest val_accuracy`: what a best epoch is, in words."""
    return ("lowest " if MONITORS.get(monitor) == "min" else "highest ") + monitor


def parse_activation(text: str) -> str:
    if not isinstance(text, str):
        raise UsageError(f"Unknown activation {text!r}. Choose one of: {', '.join(ACTIVATIONS)}.")
    name = (text or "").strip().lower().replace("-", "_")
    if name not in ACTIVATIONS:
        raise UsageError(f"Unknown activation {text!r}. Choose one of: {', '.join(ACTIVATIONS)}.")
    return name


BACKEND_SHORT = {"tensorflow": "tf"}   # in tables; jax is short already


# RunConfig's fields that say where a run belongs, not how it trains.
PLACE_FIELDS = ("name", "comparison", "variant", "repeat")


@dataclass
class RunConfig:
    """Everything that defines a run. Saved as config.json beside every model; enough to rebuild it."""

    hidden: tuple[int, ...] = (100,)   # one Dense layer per size; the book's model is (100,)
    activation: str = "relu"           # of the hidden layers; the book starts with sigmoid, then relu
    dropout: float = 0.0               # rate of a Dropout after each hidden layer; 0 means none
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)  # Keras's rmsprop by default, as in the book
    epochs: int = 5
    batch_size: int = 32               # Keras's default, as in the book
    seed: int = 42                     # initial weights, dropout and batch order
    val_size: float = 0.2              # the book's train_test_split(test_size=0.2, random_state=42)
    split_seed: int = 42
    limit: int | None = None           # train on a stratified subset of this many images
    early_stopping: int | None = None  # patience in epochs on `monitor`; restores the best weights
    monitor: str = DEFAULT_MONITOR     # what the best epoch is (and early stopping watches); see MONITORS
    backend: str = "tensorflow"        # Keras backend
    engine: str = "auto"               # fit (model.fit) or fused (compiled programs over each epoch's steps)
    name: str | None = None            # a label the user chose for the run
    comparison: str | None = None      # id of the comparison this run belongs to
    variant: str | None = None         # the variant label within that comparison
    repeat: int | None = None          # 0-based repeat index within that variant

    def validate(self) -> "RunConfig":
        self.hidden = parse_hidden(self.hidden)
        self.activation = parse_activation(self.activation)
        self.monitor = parse_monitor(self.monitor)
        if isinstance(self.optimizer, str):
            self.optimizer = parse_optimizer(self.optimizer)
        _validate_optimizer(self.optimizer)
        checks = [
            (isinstance(self.epochs, int) and 1 <= self.epochs <= 10_000, "--epochs must be a whole number from 1 to 10000"),
            (isinstance(self.batch_size, int) and 1 <= self.batch_size <= 60_000, "--batch-size must be a whole number from 1 to 60000"),
            (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1, "--dropout must be a rate in [0, 1), e.g. 0.2"),
            (isinstance(self.val_size, (int, float)) and 0 < self.val_size < 1, "--val-size must be a fraction between 0 and 1, e.g. 0.2"),
            (isinstance(self.seed, int) and 0 <= self.seed < 2**32, "--seed must be a whole number from 0 to 4294967295"),
            (isinstance(self.split_seed, int) and 0 <= self.split_seed < 2**32, "--split-seed must be a whole number from 0 to 4294967295"),
            (self.limit is None or (isinstance(self.limit, int) and self.limit >= 10), "--limit must be at least 10 (one image per class)"),
            (self.early_stopping is None or (isinstance(self.early_stopping, int) and self.early_stopping >= 1), "--early-stopping takes a patience of at least 1 epoch"),
            (self.backend in BACKENDS, f"--backend must be one of: {', '.join(BACKENDS)}"),
            (self.engine in ENGINES, f"--engine must be one of: {', '.join(ENGINES)}"),
            (all(v is None or isinstance(v, str) for v in (self.name, self.comparison, self.variant)),
             "name, comparison and variant must be text"),
            (self.repeat is None or (isinstance(self.repeat, int) and self.repeat >= 0),
             "repeat must be a whole number from 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message + ".")
        n_train = TRAIN_IMAGES - math.ceil(TRAIN_IMAGES * self.val_size)   # train_test_split's rounding
        if self.limit is not None and self.limit > n_train:
            raise UsageError(f"--limit can be at most {n_train} (the training images left by "
                             f"--val-size {self.val_size:g}); leave it out to train on all of them.")
        params = self.param_count()
        if params > MAX_PARAMS:
            raise UsageError(f"That model has {params:,} parameters (about {params * 16 / 1e9:.0f} GB to train "
                             f"with an adaptive optimizer); fmnist takes up to {MAX_PARAMS:,}: use smaller --hidden.")
        return self

    def param_count(self) -> int:
        """Weights and biases of the dense stack (the factory's count, without Keras)."""
        sizes = [28 * 28, *self.hidden, 10]
        return sum(a * b + b for a, b in zip(sizes, sizes[1:]))

    @property
    def resolved_engine(self) -> str:
        """`auto` is the fused engine, the fastest on both backends; `fit` is Keras's own loop."""
        return "fused" if self.engine == "auto" else self.engine

    def short(self, backend: bool = False) -> str:
        """One line for tables: `100 relu rmsprop e5 b32`; `es2` with early stopping (patience 2), and
        `best=val_accuracy` where the best epoch is not by the default val_loss; with `backend`, it
        ends with the backend (`tf` or `jax`), and `fit` for Keras's fit engine (fused is the default)."""
        hidden = "-".join(map(str, self.hidden))   # as --vary and --where write one network's layers
        extra = f" d{self.dropout:g}" if self.dropout else ""
        lim = f" n{self.limit}" if self.limit else ""
        es = f" es{self.early_stopping}" if self.early_stopping else ""
        by = f" best={self.monitor}" if self.monitor != DEFAULT_MONITOR else ""
        end = (f" {BACKEND_SHORT.get(self.backend, self.backend)}" + (" fit" if self.resolved_engine == "fit" else "")
               if backend else "")
        return (f"{hidden} {self.activation}{extra} {self.optimizer.label()} e{self.epochs} b{self.batch_size}"
                f"{lim}{es}{by}{end}")

    def train_command(self) -> str:
        """The `fmnist train` command that trains this config again: its settings that differ from
        the defaults (the backend named when it is not TensorFlow)."""
        import shlex

        default = RunConfig()
        options = [("--hidden", ",".join(map(str, self.hidden)), self.hidden != default.hidden),
                   ("--activation", self.activation, self.activation != default.activation),
                   ("--dropout", f"{self.dropout:g}", bool(self.dropout)),
                   ("--optimizer", self.optimizer.label(), self.optimizer.label() != default.optimizer.label()),
                   ("--epochs", str(self.epochs), self.epochs != default.epochs),
                   ("--batch-size", str(self.batch_size), self.batch_size != default.batch_size),
                   ("--seed", str(self.seed), self.seed != default.seed),
                   ("--val-size", f"{self.val_size:g}", self.val_size != default.val_size),
                   ("--split-seed", str(self.split_seed), self.split_seed != default.split_seed),
                   ("--limit", str(self.limit), self.limit is not None),
                   ("--early-stopping", str(self.early_stopping), self.early_stopping is not None),
                   ("--monitor", self.monitor, self.monitor != default.monitor),
                   ("--backend", self.backend, self.backend != default.backend),
                   ("--engine", self.engine, self.engine != default.engine)]
        parts = ["fmnist", "train"] + [x for option, value, given in options if given for x in (option, value)]
        return " ".join(shlex.quote(p) for p in parts)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """Rebuild from config.json; unknown keys (from newer versions) are ignored, values re-validated.
        A config without `monitor` was stored before it existed, when the best epoch and early
        stopping watched val_accuracy: it reads as LEGACY_MONITOR (new configs default to val_loss).
        Any fault, of type or of value, is a UsageError saying what is wrong."""
        if not isinstance(data, dict):
            raise UsageError("the config is not a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs.setdefault("monitor", LEGACY_MONITOR)
        opt = kwargs.get("optimizer", {})
        if isinstance(opt, dict):
            opt_known = {f.name for f in dataclasses.fields(OptimizerSpec)}
            kwargs["optimizer"] = OptimizerSpec(**{k: v for k, v in opt.items() if k in opt_known})
        elif not isinstance(opt, str):
            raise UsageError(f"the optimizer is {opt!r}, not a name or an object")
        if "hidden" in kwargs:
            if not isinstance(kwargs["hidden"], list):
                raise UsageError(f"hidden is {kwargs['hidden']!r}, not a list of layer sizes")
            kwargs["hidden"] = tuple(kwargs["hidden"])
        try:
            return cls(**kwargs).validate()
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as err:  # a belt to the checks' braces
            raise UsageError(f"the config does not validate ({type(err).__name__}: {err})") from None

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes).validate()


def config_problem(data) -> str | None:
    """Why a stored config cannot rebuild a run (one clause, no final stop), or None when it can."""
    try:
        RunConfig.from_dict(data)
    except UsageError as err:
        return str(err).rstrip(".")
    return None
