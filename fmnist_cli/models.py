"""The model and optimizer factory, and parameter counts that need no Keras import."""

from __future__ import annotations

from .config import RunConfig

INPUT_SHAPE = (28, 28)
NUM_CLASSES = 10


def layer_table(config: RunConfig) -> list[dict]:
    """The layers `build_model` makes, with output shapes and parameter counts, computed by hand
    so that `fmnist summary` answers without starting TensorFlow. Tests hold it equal to Keras's count."""
    rows = [{"name": "flatten", "type": "Flatten", "output_shape": [None, 784], "params": 0}]
    width = INPUT_SHAPE[0] * INPUT_SHAPE[1]
    for i, units in enumerate(config.hidden, start=1):
        rows.append({"name": f"hidden_{i}", "type": "Dense", "activation": config.activation,
                     "output_shape": [None, units], "params": width * units + units})
        if config.dropout:
            rows.append({"name": f"dropout_{i}", "type": "Dropout", "output_shape": [None, units], "params": 0})
        width = units
    rows.append({"name": "output", "type": "Dense", "activation": "softmax",
                 "output_shape": [None, NUM_CLASSES], "params": width * NUM_CLASSES + NUM_CLASSES})
    return rows


def summary(config: RunConfig) -> dict:
    layers = layer_table(config)
    total = sum(r["params"] for r in layers)
    return {"layers": layers, "total_params": total, "trainable_params": total, "non_trainable_params": 0}


def set_seed(seed: int) -> None:
    """keras.utils.set_random_seed, minus its `import tensorflow` (3 s) when Keras runs on JAX."""
    import keras

    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    import random

    import numpy as np

    try:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils import rng_utils

        global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
        global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
        random.seed(seed)
        np.random.seed(seed)
    except (ImportError, AttributeError):  # Keras moved its internals: take the slow public path
        keras.utils.set_random_seed(seed)


def build_model(config: RunConfig):
    """Flatten(28, 28) -> Dense(size, activation) [-> Dropout] per hidden size -> Dense(10, softmax).
    Keras's default initializers (Glorot uniform kernels, zero biases), seeded from config.seed."""
    import keras
    from keras import layers

    def seeded(i: int, salt: int) -> int:
        # Every layer draws from its own seed, derived from the run's: adding a Dropout (which takes
        # a draw of its own) must not change the initial weights of the layers after it.
        return (config.seed * 1_000_003 + i * 101 + salt) % 2**31

    def dense(units, activation, name, i):
        return layers.Dense(units, activation=activation, name=name,
                            kernel_initializer=keras.initializers.GlorotUniform(seed=seeded(i, 1)))

    stack = [keras.Input(shape=INPUT_SHAPE, name="image"), layers.Flatten(name="flatten")]
    for i, units in enumerate(config.hidden, start=1):
        stack.append(dense(units, config.activation, f"hidden_{i}", i))
        if config.dropout:
            stack.append(layers.Dropout(config.dropout, name=f"dropout_{i}", seed=seeded(i, 2)))
    stack.append(dense(NUM_CLASSES, "softmax", "output", len(config.hidden) + 1))
    return keras.Sequential(stack, name="fmnist_" + "_".join(map(str, config.hidden)))


def build_optimizer(config: RunConfig):
    import keras

    spec = config.optimizer
    return getattr(keras.optimizers, spec.keras_class)(**spec.keras_kwargs())


def compile_model(model, config: RunConfig, steps_per_execution: int = 1):
    model.compile(optimizer=build_optimizer(config), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)
    return model
