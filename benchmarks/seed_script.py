"""The textbook's plain Keras script, the baseline that `benchmarks/bench.py` measures fmnist against.

Flatten(28x28) -> Dense(100, relu) -> Dense(10, softmax), the optimizer named on the command line,
5 epochs, batch 32 (Keras's default), on the 48,000-image training part of
train_test_split(test_size=0.2, random_state=42), then scored on the 12,000 validation images.

    python benchmarks/seed_script.py [EPOCHS] [OPTIMIZER]      # defaults: 5 adam

The data come from `keras.datasets.fashion_mnist.load_data()` (Keras's cache, $KERAS_HOME or
~/.keras; bench.py points $KERAS_HOME at a folder linking to the files fmnist finds). The only
additions to the book's code are timing: a callback that reads the clock at each epoch's start and
end (it does no work during the epoch) and one machine-readable line at the end:

    BENCH_RESULT {"fit_seconds": ..., "per_epoch_seconds": ..., "val_accuracy": ..., ...}
"""
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")   # the book's backend, whatever the shell says

from tensorflow import keras  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
optimizer = sys.argv[2] if len(sys.argv) > 2 else "adam"

(train_input, train_target), (test_input, test_target) = keras.datasets.fashion_mnist.load_data()
train_scaled = train_input / 255.0
train_scaled, val_scaled, train_target, val_target = train_test_split(
    train_scaled, train_target, test_size=0.2, random_state=42)

model = keras.Sequential()
model.add(keras.layers.Flatten(input_shape=(28, 28)))
model.add(keras.layers.Dense(100, activation='relu'))
model.add(keras.layers.Dense(10, activation='softmax'))
model.compile(optimizer=optimizer, loss='sparse_categorical_crossentropy', metrics=['accuracy'])

epoch_seconds = []
starts = {}
clock = keras.callbacks.LambdaCallback(
    on_epoch_begin=lambda epoch, logs: starts.__setitem__(epoch, time.perf_counter()),
    on_epoch_end=lambda epoch, logs: epoch_seconds.append(time.perf_counter() - starts[epoch]))

t0 = time.perf_counter()
model.fit(train_scaled, train_target, epochs=epochs, verbose=2, callbacks=[clock])
t1 = time.perf_counter()
val_loss, val_acc = model.evaluate(val_scaled, val_target, verbose=0)

fit_seconds = t1 - t0
later = epoch_seconds[1:]
print("BENCH_RESULT " + json.dumps({
    "optimizer": optimizer,
    "epochs": epochs,
    "fit_seconds": round(fit_seconds, 4),
    "per_epoch_seconds": round(fit_seconds / epochs, 4),          # what the book's reader sees
    "first_epoch_seconds": round(epoch_seconds[0], 4) if epoch_seconds else None,
    "steady_epoch_seconds": round(sum(later) / len(later), 4) if later else None,
    "epoch_seconds": [round(s, 4) for s in epoch_seconds],
    "val_loss": round(float(val_loss), 6),
    "val_accuracy": round(float(val_acc), 6),
}), flush=True)
