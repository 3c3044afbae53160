"""Benchmark: fmnist against the textbook's plain Keras script (benchmarks/seed_script.py).

    make bench                          # 3 rounds: train 10 epochs, compare 5 (10-15 minutes)
    make bench ARGS=--quick             # 1 round, 2 epochs: a smoke test
    python benchmarks/bench.py --rounds 5 --train-epochs 20

Every measurement is a separate child process, timed from launch to exit, with its peak memory
(max RSS, from os.wait4). The items of a round are interleaved and their order rotates from round
to round, so a busy neighbour slows both sides of a comparison alike; ratios are taken within a
round and reported as the median over rounds.

  1. train: seed script (adam, --train-epochs) vs `fmnist train --optimizer adam` on TensorFlow and
     on JAX (the fused engine, the default on both): per-epoch seconds (first epoch, which includes compiling, and the mean of
     the later ones), whole-command seconds, peak memory, validation accuracy.
  2. compare: `fmnist compare sgd rmsprop adam` (TensorFlow and JAX) end to end vs three seed-script
     runs (sgd, rmsprop, adam) one after another.
  3. `fmnist --help`, and `fmnist data` with its cache warm: median wall time over several runs.
  4. JAX's persistent compilation cache: the same JAX train twice with one fresh cache folder
     (cold, then warm).

Results go to benchmarks/results/latest.json (with the machine and library versions) and a table.
The targets are printed as PASS/FAIL lines; they never change the exit status, which is 1 only
when a child process failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEED_SCRIPT = HERE / "seed_script.py"
RESULTS = HERE / "results" / "latest.json"
RESULT_PREFIX = "BENCH_RESULT "
OPTIMIZERS = ("sgd", "rmsprop", "adam")
GB = 1024 ** 3

# Targets: (key in results["ratios"] or a measured value, comparison, threshold, label)
TARGETS = {   # issue 10: ratios are at least, seconds and memory at most
    "train_tf_per_epoch": 8.0,        # seed s/epoch / `fmnist train` (default backend) s/epoch
    "train_tf_wall": 3.0,             # the same, whole command (--train-epochs, 10)
    "train_jax_per_epoch": 10.0,      # seed s/epoch / `fmnist train --backend jax` s/epoch
    "train_jax_wall": 5.0,
    "compare_tf_end_to_end": 6.0,     # three seed runs / one `fmnist compare sgd rmsprop adam`
    "compare_jax_end_to_end": 10.0,
    "help_seconds": 0.3,              # median `fmnist --help` wall time
    "data_seconds": 0.2,              # median `fmnist data` wall time, cache warm
    "train_peak_rss_gb": 1.2,         # peak memory of an `fmnist train` run (worse backend)
}


# --- running children ------------------------------------------------------------------------------

class Child:
    """One finished child process: wall seconds, peak RSS, exit code, stdout and a tail of stderr."""

    def __init__(self, argv, rc, wall, maxrss_bytes, stdout, stderr):
        self.argv, self.rc, self.wall, self.maxrss = argv, rc, wall, maxrss_bytes
        self.stdout, self.stderr = stdout, stderr

    @property
    def ok(self) -> bool:
        return self.rc == 0


def run_child(argv: list[str], env: dict, workdir: Path, timeout: float) -> Child:
    """Run argv to completion; os.wait4 gives this child's own rusage (ru_maxrss is in KiB on Linux),
    so the peak memory is the child's, not the benchmark's or an earlier child's."""
    out_path, err_path = workdir / "stdout.txt", workdir / "stderr.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                cwd=workdir)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
    proc.returncode = rc = os.waitstatus_to_exitcode(status)   # tell Popen the child is reaped
    maxrss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    return Child(argv, rc, wall, maxrss, stdout, stderr[-3000:])


def fmnist_argv() -> list[str]:
    exe = Path(sys.executable).parent / "fmnist"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fmnist_cli"]


def shown(argv: list[str]) -> str:
    """A command as a person would type it: no absolute paths of this machine."""
    words = list(argv)
    if words and Path(words[0]).name == "fmnist":
        words[0] = "fmnist"
    elif words[:1] == [sys.executable]:
        words[0] = "python"
        if len(words) > 1 and words[1] == str(SEED_SCRIPT):
            words[1] = "benchmarks/seed_script.py"
    return " ".join(words)


# --- the environment -------------------------------------------------------------------------------

class Sandbox:
    """Temporary folders: a Keras home whose datasets/fashion-mnist links to the files fmnist finds
    (so the seed script's load_data() works offline), one runs folder per fmnist child, and the JAX
    compilation caches."""

    def __init__(self, base: Path):
        from fmnist_cli import data

        self.base = base
        directory, self.data_source = data.locate()
        self.keras_home = base / "keras_home"
        target = self.keras_home / "datasets" / "fashion-mnist"
        target.mkdir(parents=True)
        for f in data.FILES:
            (target / f.filename).symlink_to((directory / f.filename).resolve())
        self.shared_cache = base / "xdg_cache_shared"
        self.shared_cache.mkdir()
        self.counter = 0
        clean = {k: v for k, v in os.environ.items()
                 if k not in ("FMNIST_BACKEND", "KERAS_BACKEND", "FMNIST_JAX_CACHE", "FMNIST_COMPILE_CACHE",
                              "TF_XLA_FLAGS", "FMNIST_RUNS_DIR",
                              "XDG_CACHE_HOME", "FMNIST_DEBUG")}
        clean["PYTHONUNBUFFERED"] = "1"
        self.clean_env = clean

    def workdir(self, tag: str) -> Path:
        self.counter += 1
        path = self.base / f"{self.counter:03d}-{tag}"
        path.mkdir()
        return path

    def seed_env(self) -> dict:
        return {**self.clean_env, "KERAS_HOME": str(self.keras_home), "KERAS_BACKEND": "tensorflow"}

    def fmnist_env(self, workdir: Path, cache: Path | None = None) -> dict:
        runs = workdir / "runs"
        runs.mkdir(exist_ok=True)
        return {**self.clean_env, "FMNIST_RUNS_DIR": str(runs),
                "XDG_CACHE_HOME": str(cache or self.shared_cache)}


# --- the measurements ------------------------------------------------------------------------------

def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def failure(child: Child, what: str) -> dict:
    tail = child.stderr.strip().splitlines()[-5:]
    return {"ok": False, "command": shown(child.argv), "rc": child.rc, "wall_seconds": round(child.wall, 3),
            "error": f"{what}: exit {child.rc}", "stderr_tail": tail}


def seed_run(box: Sandbox, epochs: int, optimizer: str, timeout: float) -> dict:
    work = box.workdir(f"seed-{optimizer}")
    child = run_child([sys.executable, str(SEED_SCRIPT), str(epochs), optimizer], box.seed_env(), work, timeout)
    lines = [ln for ln in child.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if not child.ok or not lines:
        return failure(child, f"seed script ({optimizer})")
    res = json.loads(lines[-1][len(RESULT_PREFIX):])
    return {"ok": True, "command": shown(child.argv), "wall_seconds": round(child.wall, 3),
            "peak_rss_bytes": child.maxrss, "fit_seconds": res["fit_seconds"],
            "per_epoch_seconds": res["per_epoch_seconds"], "first_epoch_seconds": res["first_epoch_seconds"],
            "steady_epoch_seconds": res["steady_epoch_seconds"], "epoch_seconds": res["epoch_seconds"],
            "val_accuracy": res["val_accuracy"]}


def train_run(box: Sandbox, epochs: int, seed: int, backend: str | None, timeout: float,
              cache: Path | None = None) -> dict:
    argv = fmnist_argv() + ["train", "--optimizer", "adam", "--epochs", str(epochs), "--seed", str(seed), "--json"]
    if backend:
        argv += ["--backend", backend]
    work = box.workdir(f"train-{backend or 'default'}")
    child = run_child(argv, box.fmnist_env(work, cache), work, timeout)
    try:
        res = json.loads(child.stdout)
    except ValueError:
        res = None
    if not child.ok or not res or res.get("status") != "completed":
        return failure(child, "fmnist train")
    secs = res["history"]["seconds"]
    return {"ok": True, "command": shown(child.argv), "wall_seconds": round(child.wall, 3),
            "peak_rss_bytes": child.maxrss, "train_seconds": res["seconds"],
            "outside_training_seconds": round(child.wall - res["seconds"], 3),
            "engine": res["config"].get("engine"), "backend": res["config"].get("backend"),
            "first_epoch_seconds": secs[0], "steady_epoch_seconds": mean(secs[1:]),
            "per_epoch_seconds": mean(secs), "epoch_seconds": secs,
            "val_accuracy": res["final"]["val_accuracy"]}


def compare_run(box: Sandbox, epochs: int, seed: int, backend: str | None, timeout: float) -> dict:
    argv = fmnist_argv() + ["compare", *OPTIMIZERS, "--epochs", str(epochs), "--seed", str(seed), "--json"]
    if backend:
        argv += ["--backend", backend]
    work = box.workdir(f"compare-{backend or 'default'}")
    child = run_child(argv, box.fmnist_env(work), work, timeout)
    try:
        res = json.loads(child.stdout)
    except ValueError:
        res = None
    if not child.ok or not res or any(v["status"] != "completed" for v in res.get("variants", [])):
        return failure(child, "fmnist compare")
    variants = {}
    for v in res["variants"]:
        agg = v["aggregate"]
        hist = v["runs"][0]["history"]
        variants[v["label"]] = {"val_accuracy": agg["final"]["val_accuracy"]["mean"],
                                "steady_epoch_seconds": agg["seconds_per_epoch"]["mean"],
                                "first_epoch_seconds": hist["seconds"][0],
                                "run_seconds": v["runs"][0]["seconds"]}
    return {"ok": True, "command": shown(child.argv), "wall_seconds": round(child.wall, 3),
            "peak_rss_bytes": child.maxrss, "variants": variants}


def help_runs(box: Sandbox, repeats: int, timeout: float) -> dict:
    walls, rss = [], []
    for _ in range(repeats):
        work = box.workdir("help")
        child = run_child(fmnist_argv() + ["--help"], box.fmnist_env(work), work, timeout)
        if not child.ok:
            return failure(child, "fmnist --help")
        walls.append(round(child.wall, 4))
        rss.append(child.maxrss)
    return {"ok": True, "command": "fmnist --help", "wall_seconds": walls, "median_seconds": median(walls),
            "peak_rss_bytes": max(rss)}


def data_runs(box: Sandbox, repeats: int, timeout: float) -> dict:
    """`fmnist data` with its cache warm (the first call of a round may fill it: not counted)."""
    walls = []
    for i in range(repeats + 1):
        work = box.workdir("data")
        child = run_child(fmnist_argv() + ["data"], box.fmnist_env(work), work, timeout)
        if not child.ok:
            return failure(child, "fmnist data")
        if i:
            walls.append(round(child.wall, 4))
    return {"ok": True, "command": "fmnist data", "wall_seconds": walls, "median_seconds": median(walls)}


def cache_runs(box: Sandbox, epochs: int, seed: int, timeout: float) -> dict:
    """The same JAX train twice with one fresh XDG_CACHE_HOME: the second reuses the compiled epoch."""
    cache = box.workdir("jax-cache")
    cold = train_run(box, epochs, seed, "jax", timeout, cache)
    warm = train_run(box, epochs, seed, "jax", timeout, cache) if cold["ok"] else None
    if not cold["ok"] or not warm["ok"]:
        return cold if not cold["ok"] else warm
    return {"ok": True, "cold": cold, "warm": warm}


# --- one round -------------------------------------------------------------------------------------

def run_round(box: Sandbox, r: int, args, log) -> dict:
    seed = 42 + r
    E, TE, T = args.epochs, args.train_epochs, args.timeout
    units = [
        ("seed_train", lambda: seed_run(box, TE, "adam", T)),
        ("train_tf", lambda: train_run(box, TE, seed, None, T)),
        ("seed_sgd", lambda: seed_run(box, E, "sgd", T)),
        ("train_jax", lambda: train_run(box, TE, seed, "jax", T)),
        ("compare_tf", lambda: compare_run(box, E, seed, None, T)),
        ("seed_rmsprop", lambda: seed_run(box, E, "rmsprop", T)),
        ("compare_jax", lambda: compare_run(box, E, seed, "jax", T)),
        ("seed_adam", lambda: seed_run(box, E, "adam", T)),
        ("help", lambda: help_runs(box, args.help_repeats, T)),
        ("data", lambda: data_runs(box, args.help_repeats, T)),
    ]
    if not args.no_cache_test:
        units.append(("jax_cache", lambda: cache_runs(box, E, seed, T)))
    k = r % len(units)
    units = units[k:] + units[:k]   # rotate, so no item always runs first or right after another
    out = {"round": r, "seed": seed, "order": [name for name, _ in units], "load_before": os.getloadavg()[0]}
    for name, fn in units:
        t0 = time.perf_counter()
        res = fn()
        out[name] = res
        status = "ok" if res["ok"] else f"FAILED ({res.get('error')})"
        log(f"  round {r + 1}: {name:<13} {time.perf_counter() - t0:7.1f} s  {status}")
    out["load_after"] = os.getloadavg()[0]
    out["ratios"] = round_ratios(out)
    return out


def _ratio(a, b):
    return a / b if a is not None and b else None


def _get(d: dict, *keys):
    for key in keys:
        if not isinstance(d, dict) or not d.get("ok", True) or key not in d:
            return None
        d = d[key]
    return d


def round_ratios(rd: dict) -> dict:
    """Within one round: how many times faster fmnist is than the seed script."""
    seeds = [rd.get(f"seed_{o}") for o in OPTIMIZERS]
    three_seed = sum(s["wall_seconds"] for s in seeds) if all(s and s["ok"] for s in seeds) else None
    out = {}
    for eng in ("tf", "jax"):
        out[f"train_{eng}_per_epoch"] = _ratio(_get(rd, "seed_train", "steady_epoch_seconds"),
                                               _get(rd, f"train_{eng}", "steady_epoch_seconds"))
        # The book's reader sees fit time / epochs, compiling included; the same on both sides here.
        out[f"train_{eng}_per_epoch_all_epochs"] = _ratio(_get(rd, "seed_train", "per_epoch_seconds"),
                                                          _get(rd, f"train_{eng}", "per_epoch_seconds"))
        out[f"train_{eng}_wall"] = _ratio(_get(rd, "seed_train", "wall_seconds"),
                                          _get(rd, f"train_{eng}", "wall_seconds"))
        out[f"compare_{eng}_end_to_end"] = _ratio(three_seed, _get(rd, f"compare_{eng}", "wall_seconds"))
    per_epoch = [v for v in (out["train_tf_per_epoch"], out["train_jax_per_epoch"]) if v]
    out["train_fastest_per_epoch"] = max(per_epoch) if per_epoch else None
    ends = [v for v in (out["compare_tf_end_to_end"], out["compare_jax_end_to_end"]) if v]
    out["compare_end_to_end"] = max(ends) if ends else None
    out["three_seed_runs_wall"] = three_seed
    return out


# --- summary ---------------------------------------------------------------------------------------

def summarize(rounds: list[dict]) -> dict:
    def med(*path):
        return median([_get(rd, *path) for rd in rounds])

    def acc(*path):
        vals = [_get(rd, *path) for rd in rounds]
        vals = [v for v in vals if v is not None]
        return {"median": median(vals), "min": min(vals) if vals else None, "max": max(vals) if vals else None,
                "n": len(vals)}

    s = {"train": {}, "compare": {}, "ratios": {}}
    for name in ("seed_train", "train_tf", "train_jax"):
        s["train"][name] = {
            "first_epoch_seconds": med(name, "first_epoch_seconds"),
            "steady_epoch_seconds": med(name, "steady_epoch_seconds"),
            "per_epoch_seconds": med(name, "per_epoch_seconds"),
            "wall_seconds": med(name, "wall_seconds"),
            "peak_rss_bytes": med(name, "peak_rss_bytes"),
            "val_accuracy": acc(name, "val_accuracy"),
        }
        if name != "seed_train":
            s["train"][name]["outside_training_seconds"] = med(name, "outside_training_seconds")
    for o in OPTIMIZERS:
        s["train"][f"seed_{o}"] = {"wall_seconds": med(f"seed_{o}", "wall_seconds"),
                                   "val_accuracy": acc(f"seed_{o}", "val_accuracy")}
    s["compare"]["three_seed_runs_wall_seconds"] = median([rd["ratios"]["three_seed_runs_wall"] for rd in rounds])
    for name in ("compare_tf", "compare_jax"):
        s["compare"][name] = {"wall_seconds": med(name, "wall_seconds"), "peak_rss_bytes": med(name, "peak_rss_bytes"),
                              "val_accuracy": {o: acc(name, "variants", o, "val_accuracy") for o in OPTIMIZERS},
                              "steady_epoch_seconds": med(name, "variants", "adam", "steady_epoch_seconds")}
    helps = [w for rd in rounds for w in (_get(rd, "help", "wall_seconds") or [])]
    s["help"] = {"median_seconds": median(helps), "n": len(helps), "min_seconds": min(helps) if helps else None}
    datas = [w for rd in rounds for w in (_get(rd, "data", "wall_seconds") or [])]
    s["data"] = {"median_seconds": median(datas), "n": len(datas)}
    if any("jax_cache" in rd for rd in rounds):
        s["jax_cache"] = {state: {"first_epoch_seconds": med("jax_cache", state, "first_epoch_seconds"),
                                  "wall_seconds": med("jax_cache", state, "wall_seconds")}
                          for state in ("cold", "warm")}
    loads = [rd[k] for rd in rounds for k in ("load_before", "load_after")]
    s["load_average"] = {"median": median(loads), "max": max(loads) if loads else None,
                         "cpu_count": os.cpu_count()}
    keys = rounds[0]["ratios"].keys() if rounds else []
    s["ratios"] = {k: median([rd["ratios"].get(k) for rd in rounds]) for k in keys if k != "three_seed_runs_wall"}
    return s


def check_targets(s: dict) -> list[dict]:
    r = s["ratios"]
    rss = [s["train"][n]["peak_rss_bytes"] for n in ("train_tf", "train_jax")]
    rss = [v for v in rss if v is not None]
    worst_rss = max(rss) / GB if rss else None

    def line(name, value, ok, text):
        return {"target": name, "value": value, "pass": ok, "text": text}

    out = []
    for key, label in (("train_tf_per_epoch", "fmnist train (TensorFlow, the default) per epoch"),
                       ("train_tf_wall", "fmnist train (TensorFlow) whole command"),
                       ("train_jax_per_epoch", "fmnist train --backend jax per epoch"),
                       ("train_jax_wall", "fmnist train --backend jax whole command"),
                       ("compare_tf_end_to_end", "compare sgd rmsprop adam (TensorFlow) vs 3 seed runs"),
                       ("compare_jax_end_to_end", "compare sgd rmsprop adam (JAX) vs 3 seed runs")):
        v, t = r.get(key), TARGETS[key]
        out.append(line(key, v, v is not None and v >= t, f"{label}: {_fmt(v, 'x', 1)} (target >= {t:g}x)"))
    for key, value, label in (("help_seconds", s["help"]["median_seconds"], "fmnist --help"),
                              ("data_seconds", s["data"]["median_seconds"], "fmnist data (cache warm)")):
        t = TARGETS[key]
        out.append(line(key, value, value is not None and value <= t,
                        f"{label}: {_fmt(value, ' s', 3)} (target <= {t:g} s)"))
    t = TARGETS["train_peak_rss_gb"]
    out.append(line("train_peak_rss_gb", worst_rss, worst_rss is not None and worst_rss <= t,
                    f"peak memory of a train run (worse backend): {_fmt(worst_rss, ' GB', 2)} (target <= {t:g} GB)"))
    return out


def _fmt(v, unit="", digits=2):
    if v is None:
        return "-"
    return f"{v:.{digits}f}{unit}"


def machine_info() -> dict:
    from importlib import metadata

    cpu = None
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.lower().startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or None
    versions = {}
    for dist in ("fmnist-cli", "tensorflow", "tensorflow-cpu", "keras", "jax", "jaxlib", "numpy", "scikit-learn"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    mem = None
    try:
        for ln in Path("/proc/meminfo").read_text().splitlines():
            if ln.startswith("MemTotal:"):
                mem = round(int(ln.split()[1]) * 1024 / GB, 1)
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "cpu_model": cpu, "memory_gb": mem, "versions": versions,
            "git": git_version()}


def git_version() -> str | None:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def print_report(s: dict, targets: list[dict], info: dict, n_rounds: int, epochs: int, train_epochs: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=140)   # a log file: no wrapping
    tr = s["train"]

    t = Table(title=f"fmnist vs the book's script: adam, {train_epochs} epochs, median of {n_rounds} round(s)")
    for col in ("", "s/epoch (later)", "1st epoch s", "command s", "peak RSS", "val acc (min-max)",
                "x per epoch", "x command"):
        t.add_column(col, justify="left" if not col else "right")
    for name, label, eng in (("seed_train", "seed script (TF, fit)", None),
                             ("train_tf", "fmnist train (TF, fused)", "tf"),
                             ("train_jax", "fmnist train (JAX, fused)", "jax")):
        row = tr[name]
        va = row["val_accuracy"]
        t.add_row(label, _fmt(row["steady_epoch_seconds"], "", 3), _fmt(row["first_epoch_seconds"]),
                  _fmt(row["wall_seconds"], "", 1),
                  _fmt(row["peak_rss_bytes"] / GB if row["peak_rss_bytes"] else None, " GB"),
                  f"{_fmt(va['median'], '', 4)} ({_fmt(va['min'], '', 3)}-{_fmt(va['max'], '', 3)})",
                  _fmt(s["ratios"].get(f"train_{eng}_per_epoch"), "x", 1) if eng else "1x",
                  _fmt(s["ratios"].get(f"train_{eng}_wall"), "x", 1) if eng else "1x")
    console.print(t)

    c = Table(title=f"Comparing sgd, rmsprop and adam, {epochs} epochs, end to end")
    for col in ("", "wall s", "peak RSS", "val acc sgd / rmsprop / adam", "x end to end"):
        c.add_column(col, justify="left" if not col else "right")
    seed_accs = " / ".join(_fmt(tr[f"seed_{o}"]["val_accuracy"]["median"], "", 4) for o in OPTIMIZERS)
    c.add_row("3 seed-script runs", _fmt(s["compare"]["three_seed_runs_wall_seconds"], "", 1), "", seed_accs, "1x")
    for name, label, eng in (("compare_tf", "fmnist compare (TF)", "tf"), ("compare_jax", "fmnist compare (JAX)", "jax")):
        row = s["compare"][name]
        accs = " / ".join(_fmt(row["val_accuracy"][o]["median"], "", 4) for o in OPTIMIZERS)
        c.add_row(label, _fmt(row["wall_seconds"], "", 1),
                  _fmt(row["peak_rss_bytes"] / GB if row["peak_rss_bytes"] else None, " GB"), accs,
                  _fmt(s["ratios"].get(f"compare_{eng}_end_to_end"), "x", 1))
    console.print(c)

    console.print(f"fmnist --help: median {_fmt(s['help']['median_seconds'], ' s', 3)} over {s['help']['n']} runs; "
                  f"fmnist data (warm): median {_fmt(s['data']['median_seconds'], ' s', 3)} over {s['data']['n']} runs")
    if "jax_cache" in s:
        jc = s["jax_cache"]
        console.print(f"JAX compilation cache: first epoch {_fmt(jc['cold']['first_epoch_seconds'])} s cold -> "
                      f"{_fmt(jc['warm']['first_epoch_seconds'])} s warm; whole command "
                      f"{_fmt(jc['cold']['wall_seconds'], '', 1)} s -> {_fmt(jc['warm']['wall_seconds'], '', 1)} s")
    la = s["load_average"]
    busy = " (busy: other work shared the CPUs, absolute times are inflated)" if (la["max"] or 0) > (la["cpu_count"] or 1) else ""
    console.print(f"1-minute load average during the run: median {_fmt(la['median'])}, max {_fmt(la['max'])} "
                  f"on {la['cpu_count']} CPUs{busy}", highlight=False)
    console.print(f"Machine: {info['cpu_model']}, {info['cpu_count']} CPUs; "
                  + ", ".join(f"{k} {v}" for k, v in info["versions"].items()), highlight=False)
    console.print("Targets:")
    for tg in targets:
        mark = "[green]PASS[/]" if tg["pass"] else "[red]FAIL[/]"
        console.print(f"  {mark}  {tg['text']}", highlight=False)


# --- main ------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Benchmark fmnist against the book's plain Keras script.")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every measurement (default 3)")
    p.add_argument("--epochs", type=int, default=5, help="epochs of each compare run (default 5, as the book)")
    p.add_argument("--train-epochs", type=int, default=10,
                   help="epochs of the train comparison (default 10: the whole-command targets are set at 10)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 round, 2 epochs, 3 --help runs")
    p.add_argument("--help-repeats", type=int, default=5, help="fmnist --help runs per round (default 5)")
    p.add_argument("--no-cache-test", action="store_true", help="skip the cold/warm JAX cache measurement")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a child is killed")
    p.add_argument("--output", type=Path, default=RESULTS, help="results JSON (default benchmarks/results/latest.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.epochs, args.train_epochs, args.help_repeats = 1, 2, 2, 3
    if min(args.rounds, args.epochs, args.train_epochs, args.help_repeats) < 1:
        p.error("--rounds, --epochs and --help-repeats must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from fmnist_cli.errors import FmnistError

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    info = machine_info()
    started = dt.datetime.now().astimezone()
    with tempfile.TemporaryDirectory(prefix="fmnist-bench-") as tmp:
        try:
            box = Sandbox(Path(tmp))
        except FmnistError as err:
            log(f"Cannot benchmark: {err}")
            return 2
        log(f"Benchmark: {args.rounds} round(s), {args.epochs} epochs, data from {box.data_source}; "
            f"load average {os.getloadavg()[0]:.2f}")
        rounds = []
        for r in range(args.rounds):
            rounds.append(run_round(box, r, args, log))
    info["git_end"] = git_version()
    if info["git_end"] != info["git"]:
        log(f"Warning: the code changed during the benchmark ({info['git']} -> {info['git_end']}).")
    s = summarize(rounds)
    targets = check_targets(s)
    failed = [f"round {rd['round'] + 1} {k}" for rd in rounds for k, v in rd.items()
              if isinstance(v, dict) and v.get("ok") is False]
    result = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((dt.datetime.now().astimezone() - started).total_seconds(), 1),
        "settings": {"rounds": args.rounds, "epochs": args.epochs, "train_epochs": args.train_epochs, "quick": args.quick,
                     "help_repeats": args.help_repeats, "optimizers": list(OPTIMIZERS), "batch_size": 32,
                     "seeds": [42 + r for r in range(args.rounds)], "data_source": box.data_source},
        "notes": {
            "steady_epoch_seconds": "mean of epochs 2..E (epoch 1 includes tracing/compiling)",
            "per_epoch_seconds": "mean of all epochs (seed script: fit seconds / epochs)",
            "ratios": "seed script / fmnist, per round, median over rounds",
            "jax_cache": "train_jax and compare_jax share one cache folder, empty at the start, so their "
                         "first round compiles; jax_cache uses a fresh folder per round (cold, then warm)",
            "peak_rss_bytes": "ru_maxrss of the child process, from os.wait4",
        },
        "machine": info,
        "summary": s,
        "targets": targets,
        "failed": failed,
        "rounds": rounds,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print_report(s, targets, info, args.rounds, args.epochs, args.train_epochs)
    try:
        where = args.output.resolve().relative_to(ROOT)
    except ValueError:
        where = args.output
    print(f"Results written to {where}")
    if failed:
        log("Failed: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
