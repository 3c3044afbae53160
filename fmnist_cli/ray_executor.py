"""A comparison's units on a Ray cluster: the seam of executors.py filled with Ray core (actors), not
Ray Tune, which would own the trial loop, the result folders and the seeds.

    RayExecutor(address).run(units, on_event, should_stop) -> yields (unit_index, results | Exception)

The contract is LocalExecutor's: units are fixed before dispatch, so the numbers are the same; epoch
events reach the driver as they happen; a first Ctrl-C stops the running units at their next check
(they keep their finished epochs) and starts no queued one; a second gives up on them.

- Workers are long-lived actors, one unit at a time each, so TensorFlow or JAX and the compiled
  programs load once per worker. The driver hands the units out itself: after a stop, a queued unit
  is simply never handed out.
- A worker never blocks in `ray.get`: a blocked worker gives its CPU back to Ray, which would then
  start more units than there are cores. The driver polls each busy worker instead; the poll carries
  the stop one way and the epoch events the other.
- The training arrays travel once, through the object store: worker nodes need no Fashion-MNIST.
- Where a worker sees the driver's runs folder (a marker file the driver writes there is visible to
  it), it trains in place; otherwise into a private folder, and each finished run travels back to
  the driver, which writes it whole into its runs folder (RunStore.receive_run).
- A worker that dies mid-unit (its process, or its node) fails that unit's runs with the reason;
  the other units go on, on a replacement worker.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib.util
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import ClusterError, FmnistError, UsageError

POLL_SECONDS = 0.2        # how often the driver polls busy workers: events' latency and a stop's
INSTALL = "pip install 'fmnist-cli[ray]'"
MARKER = ".ray-shared-"   # in the runs folder while a comparison runs on Ray: who sees it, shares it
PACKAGE_DIR = Path(__file__).resolve().parent
WORKER_ENV = ("FMNIST_DEBUG", "FMNIST_COMPILE_CACHE", "FMNIST_JAX_CACHE")   # settings workers follow too
AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
LOCAL_TOKEN = secrets.token_hex(32)   # this process's local instances: never written to a file


def check_installed() -> None:
    """Ray is an optional extra: without it, say how to get it (exit 2)."""
    if importlib.util.find_spec("ray") is None:
        raise UsageError(f"--executor ray needs Ray, which is not installed: {INSTALL} (or pip install ray).")


class UnitFailed(FmnistError):
    """A unit that raised on its worker, worded as the local executor words it."""


class RayExecutor:
    """Joins the Ray cluster at `address` (else $RAY_ADDRESS), or starts a local Ray instance with
    this machine's cores and stops it afterwards. `max_workers` caps the workers (--jobs).
    `shared=False` has every run sent back even where workers see the runs folder (it could only
    look shared); by default, workers that see it write there."""

    def __init__(self, address: str | None = None, cpus_per_unit: float = 1.0, gpus_per_unit: float = 0.0,
                 max_workers: int | None = None, shared: bool | None = None):
        check_installed()
        if not cpus_per_unit > 0:
            raise UsageError(f"--cpus-per-unit must be above 0, not {cpus_per_unit:g}.")
        if not gpus_per_unit >= 0:
            raise UsageError(f"--gpus-per-unit must be 0 or more, not {gpus_per_unit:g}.")
        # where the address came from, for messages: the user fixes that one
        self.source = "--address" if (address or "").strip() else "$RAY_ADDRESS"
        self.address = (address or os.environ.get("RAY_ADDRESS") or "").strip() or None
        self.cpus_per_unit, self.gpus_per_unit = float(cpus_per_unit), float(gpus_per_unit)
        self.max_workers, self.shared = max_workers, shared
        self._owned = False     # this executor called ray.init, so it calls ray.shutdown
        self._env_set: list[str] = []
        if self.address:   # an unreadable address is refused before anything is said or started
            self._host_port()

    def _host_port(self) -> tuple[str, int] | None:
        """The address's host and port; None for Ray's own words ("auto", "local")."""
        host, colon, port = self.address.split("://")[-1].rpartition(":")
        if not colon and self.address in ("auto", "local"):
            return None
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise self._unreadable_address()
        return host.strip("[]"), int(port)

    def __enter__(self) -> "RayExecutor":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def where(self) -> str:
        return f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"

    # --- the session --------------------------------------------------------------------------------

    def connect(self) -> None:
        """Join the cluster or start the local instance; a session this process already has (a test's,
        a notebook's) is used as it is. A failure is one sentence: unreachable, or refused."""
        imported = "ray" in sys.modules
        if imported and sys.modules["ray"].is_initialized():
            self.capacity(sys.modules["ray"])
            return
        from . import backend

        if not backend.debug():   # Ray's start-up notes would bury our one-line messages
            logging.getLogger("ray").setLevel(logging.ERROR)
        self._setenv("RAY_USAGE_STATS_ENABLED", "0")   # never reach out to the internet on our own
        options = dict(include_dashboard=False, log_to_driver=backend.debug(), configure_logging=False,
                       # the driver's own code, on every node: same code, same numbers; no install there
                       runtime_env={"py_modules": [str(PACKAGE_DIR)],
                                    "env_vars": {k: os.environ[k] for k in WORKER_ENV if k in os.environ}})
        if not self.address and not any(os.environ.get(k) for k in AUTH_ENV):
            # Ray's default would write a token under the home folder; a one-off instance needs none kept
            self._setenv("RAY_AUTH_MODE", "token")
            self._setenv("RAY_AUTH_TOKEN", LOCAL_TOKEN)
        import ray   # reads RAY_AUTH_MODE when first imported: set before, or read again below

        if imported:   # a second session in this process (its token loader remembers the first's)
            with contextlib.suppress(Exception):
                from ray._raylet import AuthenticationTokenLoader, Config

                Config.initialize("")
                AuthenticationTokenLoader.instance().reset_cache()
        if self.address:
            self._check_reachable()
        _errors_off_stdout(backend.debug())
        handlers = _signal_handlers()   # ray.init installs its own; Ctrl-C and SIGTERM stay ours
        try:
            # Ray's C++ core logs to the descriptor itself, once a second while it retries a cluster
            # that refuses it: that would bury the one sentence that says why. Shown with --debug.
            with backend.stderr_silenced(not backend.debug()):
                if self.address:
                    ray.init(address=self.address, **options)
                else:   # "local": a new instance even where another runs on this machine
                    ray.init(address="local", num_cpus=_cores(), **options)
            self._owned = True
            self.capacity(ray)   # a unit no node can hold is refused now, before anything is made
        except FmnistError:
            self.close()
            raise
        except BaseException as err:
            with contextlib.suppress(Exception):
                ray.shutdown()
            self._unsetenv()
            if isinstance(err, Exception):
                raise self._connect_error(err) from None
            raise
        finally:
            _restore(handlers)

    def close(self) -> None:
        if self._owned:
            import ray

            self._owned = False
            with contextlib.suppress(Exception):
                ray.shutdown()
        self._unsetenv()

    def _setenv(self, key: str, value: str) -> None:
        if key not in os.environ:
            os.environ[key] = value
            self._env_set.append(key)

    def _unsetenv(self) -> None:
        while self._env_set:
            os.environ.pop(self._env_set.pop(), None)

    def _check_reachable(self) -> None:
        """Ray retries an address where nothing answers for minutes; a plain connection says so in
        seconds. ("auto" and the like are Ray's to resolve.) An address that is not HOST:PORT, where
        nothing answers, or where something other than Ray answers is all one thing to the user: a
        wrong --address, bad input (exit 2) like any other bad option value."""
        where = self._host_port()
        if where is None:
            return
        try:
            conn = socket.create_connection(where, timeout=CONNECT_SECONDS)
        except (OSError, ValueError) as err:
            why = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise UsageError(f"Cannot reach the Ray cluster at {self.address} ({why.lower()}): check "
                             f"{self.source}, and that `ray start --head` runs there.") from None
        with conn:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("0", "false", ""):
                answer = _speaks_grpc(conn)
                if answer is not True:
                    raise UsageError(f"Something answers at {self.address}, but not as a Ray cluster ({answer}): "
                                     f"check {self.source}, which names the head node's port (6379 unless "
                                     "`ray start --head --port` chose another).")

    def _unreadable_address(self) -> UsageError:
        return UsageError(f"Cannot read the Ray address {self.address!r} from {self.source}: give the head "
                          "node's HOST:PORT, as in head-node:6379.")

    def _connect_error(self, err: Exception) -> FmnistError:
        chain, e = [], err
        while e is not None and len(chain) < 10:
            chain.append(e)
            e = e.__cause__ or e.__context__
        text = " ".join(f"{type(e).__name__}: {e}" for e in chain)
        if "InvalidAuthToken" in text or any(type(e).__name__ == "AuthenticationError" for e in chain):
            return ClusterError(f"{_capital(self.where())} refused this client's token: give it the cluster's "
                                "token in $RAY_AUTH_TOKEN, or in a file named by $RAY_AUTH_TOKEN_PATH "
                                "(`ray get-auth-token` on the head node prints it).")
        if "Invalid address" in text:
            return self._unreadable_address()
        # Ray's "Failed to connect to GCS. Last connection error: Traceback (most recent call last):"
        # says what failed in its first sentence; the rest is the start of a traceback
        detail = re.split(r"\.?\s*(?:Last connection error:|Traceback \(most recent call last\))",
                          _first_line(str(chain[-1]) or type(chain[-1]).__name__))[0] or type(chain[-1]).__name__
        if self.address:
            return ClusterError(f"Cannot join the Ray cluster at {self.address} ({detail}); check --address "
                                "(or $RAY_ADDRESS), and that `ray start --head` runs there.")
        return ClusterError(f"Could not start a local Ray instance ({detail}); run again with --debug for "
                            "Ray's own messages.")

    # --- running units ------------------------------------------------------------------------------

    def run(self, units, on_event, should_stop) -> Iterator[tuple[int, object]]:
        if not units:
            return
        import ray

        from .store import RunStore

        self.connect()
        root = Path(units[0][1])
        store = RunStore(root)
        workers = max(1, min(len(units), self.capacity(ray), self.max_workers or len(units)))
        arrays = ray.put(_arrays(units[0][2]))
        token = secrets.token_hex(8)
        marker = root / f"{MARKER}{token}"
        if self.shared is not False:
            from .store import atomic_write_text

            atomic_write_text(marker, token, durable=False)
        seen = (str(root), marker.name, token) if self.shared is not False else None
        pool = _Pool(ray, self, store, arrays, seen, on_event)
        hooks = getattr(should_stop, "on_abort", None)
        hook = functools.partial(self._abort, pool)
        if hooks is not None:
            hooks.append(hook)
        try:
            pool.start(workers)
            yield from pool.dispatch(units, should_stop)
        finally:
            if hooks is not None:
                with contextlib.suppress(ValueError):
                    hooks.remove(hook)
            pool.kill()
            with contextlib.suppress(OSError):
                marker.unlink()

    def _abort(self, pool: "_Pool") -> None:
        """A second Ctrl-C: runs in flight in the runs folder are marked interrupted (each keeps its
        last checkpoint); runs a worker was training in a folder of its own are given up. Then the
        session ends, which ends the workers (they belong to this driver)."""
        pool.mark_busy("interrupted", "stopped by a second Ctrl-C; it keeps its last checkpoint "
                       "(`fmnist compare --resume` trains it again)")
        self.close()

    def capacity(self, ray) -> int:
        """How many units the cluster holds at once (--cpus-per-unit and --gpus-per-unit of each alive
        node): the most workers worth starting. None is refused: a worker would wait for ever."""
        cpus, gpus = self.cpus_per_unit, self.gpus_per_unit
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        fits = [min(int(r.get("CPU", 0) // cpus), int(r.get("GPU", 0) // gpus) if gpus else 1 << 30) for r in nodes]
        if not any(fits):
            most_cpu = max((r.get("CPU", 0) for r in nodes), default=0)
            most_gpu = max((r.get("GPU", 0) for r in nodes), default=0)
            need = f"{cpus:g} CPU(s)" + (f" and {gpus:g} GPU(s)" if gpus else "")
            raise UsageError(f"No node of {self.where()} has {need} for a unit (the largest has {most_cpu:g} "
                             f"CPU(s) and {most_gpu:g} GPU(s)); lower --cpus-per-unit or --gpus-per-unit.")
        return sum(fits)


# --- the driver's side ------------------------------------------------------------------------------

@dataclass(eq=False)
class _Handle:
    actor: object
    ready: object = None                 # the identity call, until it answers
    info: dict = field(default_factory=dict)   # host, pid, shared
    unit: int | None = None
    train: object = None                 # the running unit's result
    poll: object = None                  # the poll in flight
    resumed: tuple = ()                  # the running unit's runs that go on from their checkpoints


class _Pool:
    """The driver's side of one run: its workers, the unit each trains, the polls in flight."""

    def __init__(self, ray, executor: RayExecutor, store, arrays, marker, on_event):
        self.ray, self.executor, self.store = ray, executor, store
        self.arrays, self.marker, self.on_event = arrays, marker, on_event
        self.workers: list[_Handle] = []
        self.started = False   # a worker has answered: a later start failure is a loss, not a set-up error
        self.comparisons: set[str] = set()

    def start(self, n: int) -> None:
        cls = self.ray.remote(_Worker).options(num_cpus=self.executor.cpus_per_unit,
                                               num_gpus=self.executor.gpus_per_unit or None,
                                               max_concurrency=2, max_restarts=0)
        for _ in range(n):
            actor = cls.remote(self.arrays, self.marker, self.executor.cpus_per_unit)
            self.workers.append(_Handle(actor=actor, ready=actor.identity.remote()))

    def dispatch(self, units, should_stop):
        queue = collections.deque(range(len(units)))
        for configs, *_ in units:
            self.comparisons.update(c.comparison for c in configs if c.comparison)
        while queue or any(w.unit is not None for w in self.workers):
            stopping = should_stop()
            if stopping:
                queue.clear()   # queued units never start
            for w in self.workers:
                if w.ready is None and w.unit is None and queue:
                    index = queue.popleft()
                    configs, root, _, resume = units[index]
                    try:
                        shipped = self._ship(Path(root), resume) if resume and not w.info.get("shared") else None
                    except FmnistError as err:   # this unit fails; the others go on
                        yield index, err
                        continue
                    w.unit, w.resumed = index, tuple(resume or ())
                    w.train = w.actor.train.remote(configs, str(root), resume, shipped)
                if w.unit is not None and w.poll is None:
                    w.poll = w.actor.poll.remote(stopping)
            refs = [r for w in self.workers for r in (w.ready, w.train, w.poll) if r is not None]
            if not refs:
                raise ClusterError(f"No Ray worker is left to train the remaining {len(queue)} unit(s) on "
                                   f"{self.executor.where()}; `fmnist compare --resume` trains them later.")
            done, _ = self.ray.wait(refs, num_returns=len(refs), timeout=POLL_SECONDS)
            done = set(done)
            for w in list(self.workers):
                if w.ready is not None and w.ready in done:
                    self._started(w)
                if w.poll is not None and w.poll in done:
                    self._relay(w)
                if w.train is not None and w.train in done:
                    yield from self._finish(w, queue, stopping)

    def _started(self, w: _Handle) -> None:
        try:
            w.info = self.ray.get(w.ready)
            w.ready = None
            self.started = True
        except Exception as err:
            self.workers.remove(w)
            if not self.started and not any(x.ready is None for x in self.workers):
                raise ClusterError(f"The Ray workers could not start on {self.executor.where()} "
                                   f"({_ray_reason(err)}); every node needs fmnist's dependencies "
                                   f"({INSTALL}).") from None

    def _ship(self, root: Path, names) -> dict:
        """The runs a unit goes on from, for a worker without the runs folder: each claimed here first
        (`running`, by this process), as a resume in place claims it, so that no `train --resume`
        or `evaluate` meanwhile works on the copy left here; their files, checkpoints and all."""
        from .training import check_resumable

        shipped, claimed = {}, []
        try:
            for name in names:
                check_resumable(self.store, root / name)
                claimed.append(name)
                shipped[name] = self.store.pack_run(root / name)
        except FmnistError:
            self._unclaim(claimed, "interrupted", "not sent to a Ray worker; it keeps its last checkpoint")
            raise
        return shipped

    def _unclaim(self, names, status: str, message: str) -> None:
        """Runs claimed for a worker that never sent them back: no longer `running`."""
        from .records import Status
        from .store import now

        for name in names:
            with contextlib.suppress(FmnistError, OSError):
                self.store.update_run(self.store.root / name, status=Status(status), message=message,
                                      finished=now())

    def _relay(self, w: _Handle) -> None:
        try:
            events = self.ray.get(w.poll)
        except Exception:   # the worker died: its unit's result says so
            events = []
        w.poll = None
        for event in events:
            self.on_event(event)

    def _finish(self, w: _Handle, queue, stopping: bool):
        index, ref, resumed = w.unit, w.train, w.resumed
        try:
            outcome = self.ray.get(ref)
        except Exception as err:   # the worker process or its node is gone
            yield index, self._lost(w, err, queue, stopping)
            return
        if w.poll is not None:
            self._relay(w)
        w.poll = w.actor.poll.remote(False)   # the events sent after the last poll
        self._relay(w)
        w.unit = w.train = None
        shipped = resumed if not w.info.get("shared") else ()
        if outcome is None:   # the stop came before the unit began
            self._unclaim(shipped, "interrupted", "stopped before its Ray worker began; it keeps its last checkpoint")
            return
        if "error" in outcome:
            self._unclaim(shipped, "failed", outcome["error"])
            yield index, UnitFailed(outcome["error"])
            return
        results = outcome["results"]
        try:
            for result, files in zip(results, outcome.get("packed") or []):
                if files is None:   # not kept: stopped before its first epoch finished
                    continue
                run_dir = self.store.receive_run(result.run_id, files, resumed=result.run_id in resumed)
                result.run_dir = str(run_dir)
                result.model_path = str(run_dir / "model.keras") if "model.keras" in files else None
        except FmnistError as err:
            yield index, err
            return
        yield index, results

    def _lost(self, w: _Handle, err: Exception, queue, stopping: bool) -> ClusterError:
        where = f" (process {w.info.get('pid')} on {w.info.get('host')})" if w.info else ""
        reason = f"Lost its Ray worker{where}: {_ray_reason(err)}"
        self.workers.remove(w)
        if w.info.get("shared"):
            self._mark(w, "failed", f"{reason}; `fmnist compare --resume` trains it again")
        else:   # the runs it went on from are as they were here: their last checkpoint
            self._unclaim(w.resumed, "failed", f"{reason}; `fmnist compare --resume` goes on from its checkpoint")
        if queue and not stopping:   # the units still queued get a new worker, wherever Ray places it
            self.start(1)
        return ClusterError(f"{reason}.")

    def mark_busy(self, status: str, message: str) -> None:
        for w in self.workers:
            if w.unit is not None and w.info.get("shared"):
                self._mark(w, status, message)

    def _mark(self, w: _Handle, status: str, message: str) -> None:
        """The runs a worker was training in the runs folder, never left `running`: found by the
        process and host that run.json names."""
        from .records import Status
        from .store import now

        for cid in self.comparisons:
            for info in self.store.list_runs(comparison=cid, clean=False):
                record = info.record
                if record is not None and record.status == Status.RUNNING and record.pid == w.info.get("pid") \
                        and record.host == w.info.get("host"):
                    with contextlib.suppress(FmnistError, OSError):
                        self.store.update_run(Path(info.run_dir), status=Status(status), message=message,
                                              finished=now())

    def kill(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                self.ray.kill(w.actor)
        self.workers.clear()


# --- the worker's side ------------------------------------------------------------------------------

class _Worker:
    """A Ray actor: trains the units it is handed, one at a time, keeping the data, the libraries and
    the compiled programs between them. Two threads: one trains, the other answers the driver's polls."""

    def __init__(self, arrays: dict, marker: tuple[str, str, str] | None, cpus: float = 1):
        from . import data
        from .engines.fused import lanes_for

        # The unit's lanes for the CPUs Ray gave it (--cpus-per-unit), not the node's every core:
        # several workers share a node. A value the user set in the worker's environment stays.
        os.environ.setdefault("FMNIST_LANES", str(lanes_for(max(1, int(cpus)))))

        self.dataset = data.Dataset(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                                    Path(arrays["directory"]), arrays["source"])
        self.shared = _sees(marker)
        self.events: collections.deque = collections.deque()
        self.stop = threading.Event()

    def identity(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "shared": self.shared}

    def poll(self, stop: bool) -> list:
        if stop:
            self.stop.set()
        out = []
        while self.events:
            out.append(self.events.popleft())
        return out

    def train(self, configs, root: str, resume=None, shipped: dict | None = None):
        """Train a unit into the runs folder, or without it into a temporary one whose runs go back
        to the driver whole. `resume`: the names of the run folders that go on from their checkpoints,
        read in place or, without the runs folder, from `shipped` (name -> packed files)."""
        from .store import RunStore
        from .training import train_group

        if self.stop.is_set():
            return None
        shared = self.shared
        target = Path(root) if shared else Path(tempfile.mkdtemp(prefix="fmnist-ray-"))
        try:
            try:
                for name in (resume or ()) if not shared else ():
                    RunStore(target).receive_run(name, shipped[name])
                resume = [target / name for name in resume] if resume else None
                results = train_group(configs, target, on_event=self.events.append, should_stop=self.stop.is_set,
                                      dataset=self.dataset, resume=resume)
            except KeyboardInterrupt:   # stopped while loading: no run was made
                return None
            except Exception as err:   # the runs are marked failed; the driver reports the unit
                return {"error": str(err) if isinstance(err, FmnistError) else f"{type(err).__name__}: {err}"[:500]}
            if shared:
                return {"results": results}
            return {"results": results,
                    "packed": [RunStore.pack_run(Path(r.run_dir)) if r.kept else None for r in results]}
        finally:
            if not shared:
                shutil.rmtree(target, ignore_errors=True)


def _sees(marker: tuple[str, str, str] | None) -> bool:
    """True when this worker sees the driver's runs folder itself: the marker file there, with the
    token of this run (a folder of the same name on another machine has neither)."""
    if marker is None:
        return False
    root, name, token = marker
    try:
        return (Path(root) / name).read_text() == token
    except (OSError, UnicodeDecodeError):
        return False


# --- helpers ------------------------------------------------------------------------------------------

def _arrays(data_dir) -> dict:
    """What the workers need of the data: the training images and labels (47 MB), put once into the
    object store; every worker maps the same copy."""
    import numpy as np

    from . import data

    ds = data.load(data_dir)
    return {"x_train": ds.x_train, "y_train": ds.y_train, "x_test": np.zeros((0, 28, 28), np.uint8),
            "y_test": np.zeros((0,), np.int32), "directory": str(ds.directory), "source": ds.source}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _signal_handlers() -> dict | None:
    if threading.current_thread() is not threading.main_thread():
        return None
    return {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore(handlers: dict | None) -> None:
    for s, h in (handlers or {}).items():
        if h is not None:
            signal.signal(s, h)


def _errors_off_stdout(debug: bool) -> None:
    """Ray prints the cluster's error notes ("A worker died or was killed...") on the driver's stdout,
    where `--json` output goes. This executor reports a lost worker itself: the notes are dropped,
    or with --debug shown on stderr."""
    try:
        from ray._private import worker
    except ImportError:
        return
    original = getattr(worker.print_to_stdstream, "__wrapped__", worker.print_to_stdstream)

    @functools.wraps(original)
    def to_stderr(data, *args, **kwargs):
        if data.get("pid") != "raylet" or debug:
            original({**data, "is_err": True}, *args, **kwargs)

    worker.print_to_stdstream = to_stderr


# A gRPC server (Ray's GCS) answers the HTTP/2 client preface with a SETTINGS frame at once; anything
# else (a web server, a database, a port that accepts and stays silent) would keep ray.init
# retrying for minutes. Ray with TLS ($RAY_USE_TLS) expects a TLS handshake first, and is not probed.
CONNECT_SECONDS = 5
GRPC_ANSWER_SECONDS = 3
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])   # + empty SETTINGS


def _speaks_grpc(conn: socket.socket) -> bool | str:
    """True if the peer answers as an HTTP/2 (gRPC) server; else a few words on what it did."""
    conn.settimeout(GRPC_ANSWER_SECONDS)
    try:
        conn.sendall(HTTP2_PREFACE)
        header = b""
        while len(header) < 9:
            chunk = conn.recv(9 - len(header))
            if not chunk:
                return "it closed the connection"
            header += chunk
    except socket.timeout:
        return f"no answer in {GRPC_ANSWER_SECONDS} s"
    except OSError as err:
        return (err.strerror or type(err).__name__).lower()
    return True if header[3] == 4 else "it does not speak gRPC"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300].rstrip(".")


def _ray_reason(err: Exception) -> str:
    """Ray's errors run to many lines; the first says what happened."""
    text = str(err).strip()
    for line in text.splitlines():
        if line.strip() and not line.startswith(("Traceback", "  ")):
            return _first_line(line)
    return type(err).__name__
