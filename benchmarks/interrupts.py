"""How promptly fmnist stops, and what its checkpoints cost: the figures behind the README's
"When things go wrong".

For each backend and for the book's model and a 2000-2000 one, a real `fmnist train` gets SIGINT
half a second into its second epoch; we time the stop (until "Interrupted:" is printed, the run
saved) and the exit. A second run gets two SIGINTs 0.3 s apart: the time from the second to the
exit. Then a 5-epoch run of the book's model on each backend reports the share of its time spent
checkpointing (`checkpoint_seconds` in run.json).

    .venv/bin/python benchmarks/interrupts.py            # prints a Markdown table
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

MODELS = {"100 (the book's)": ["--hidden", "100"], "2000-2000": ["--hidden", "2000,2000", "--limit", "10000"]}


def fmnist(*args, runs_dir):
    env = {**os.environ, "FMNIST_RUNS_DIR": runs_dir}
    return subprocess.Popen([sys.executable, "-m", "fmnist_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def interrupt(backend: str, model: list[str], twice: bool, runs_dir: str) -> tuple[float, float]:
    """(seconds from the signal to the saved stop, seconds from the (last) signal to the exit)."""
    p = fmnist("train", "--backend", backend, "--epochs", "3", *model, runs_dir=runs_dir)
    sent = stopped = None
    for line in p.stdout:
        if line.startswith("epoch 1/") and sent is None:
            time.sleep(0.5)
            p.send_signal(signal.SIGINT)
            sent = time.monotonic()
            if twice:
                time.sleep(0.3)
                p.send_signal(signal.SIGINT)
                sent = time.monotonic()
        if line.startswith("Interrupted:") and stopped is None:
            stopped = time.monotonic()
    p.wait()
    exited = time.monotonic()
    return ((stopped or exited) - sent, exited - sent)


def checkpoint_share(backend: str, runs_dir: str) -> tuple[float, float]:
    p = fmnist("train", "--backend", backend, "--json", runs_dir=runs_dir)
    out, _ = p.communicate()
    result = json.loads(out[out.index("{"):])
    record = json.load(open(os.path.join(result["run_dir"], "run.json")))
    return record["checkpoint_seconds"], result["seconds"]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("tensorflow", "jax"):
            for name, model in MODELS.items():
                stop, exit_ = interrupt(backend, model, False, tmp)
                _, second = interrupt(backend, model, True, tmp)
                rows.append(f"| {backend} | {name} | {stop:.2f} s | {exit_:.2f} s | {second:.2f} s |")
        shares = []
        for backend in ("tensorflow", "jax"):
            spent, total = checkpoint_share(backend, tmp)
            shares.append(f"| {backend} | {spent:.2f} s of {total:.1f} s | {100 * spent / total:.1f}% |")
    print("| backend | model | Ctrl-C to saved stop | to exit | second Ctrl-C to exit |")
    print("|---|---|---:|---:|---:|")
    print("\n".join(rows))
    print()
    print("| backend | checkpoints in a 5-epoch run of the book's model | share |")
    print("|---|---:|---:|")
    print("\n".join(shares))


if __name__ == "__main__":
    main()
