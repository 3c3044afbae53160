"""Dispatching units of work (groups of runs that train together). The one seam between a comparison
and where its runs execute: a distributed executor (Ray, say) implements the same `run` method.

    executor.run(units, on_event, should_stop) -> yields (unit_index, results | Exception)

A unit is `(configs, root, data_dir, runs to resume or None)`; results are `training.train_group`'s dicts. Units are fixed
before dispatch and never depend on the number of workers, so results do not either.
"""

from __future__ import annotations

import os
import queue as queue_mod
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

# After its parent died, a worker gets this long to stop at its next check and save what finished;
# then it exits whatever it is doing (its runs keep their last checkpoint).
ORPHAN_GRACE_SECONDS = 10.0
PARENT_GONE = threading.Event()   # set in a worker process whose parent has died


class LocalExecutor:
    """Runs units one after another in this process (jobs=1) or in up to `jobs` worker processes."""

    def __init__(self, jobs: int = 1):
        self.jobs = max(1, int(jobs))

    def run(self, units, on_event, should_stop) -> Iterator[tuple[int, object]]:
        if not units:
            return
        if self.jobs == 1 or len(units) == 1:
            yield from self._serial(units, on_event, should_stop)
        else:
            yield from self._parallel(units, on_event, should_stop)

    def _serial(self, units, on_event, should_stop):
        from .training import train_group

        for i, (configs, root, data_dir, resume) in enumerate(units):
            if should_stop():
                return
            try:
                yield i, train_group(configs, root, data_dir, on_event, should_stop, resume=_dirs(root, resume))
            except KeyboardInterrupt:
                raise
            except Exception as err:  # one failing unit must not stop the others
                yield i, err

    def _parallel(self, units, on_event, should_stop):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from multiprocessing.managers import SyncManager

        ctx = mp.get_context("spawn")   # fork after TF/JAX initialised is unsafe; spawn starts clean
        # Ctrl-C reaches every process of the group: the manager must outlive it to carry the
        # workers' last events, and a worker still starting must not die of it. All of them die with
        # this process, however it dies (`kill -9` included), instead of training on as orphans.
        parent = os.getpid()
        manager = SyncManager(ctx=ctx)
        manager.start(_child_init, (parent, signal.SIGKILL))
        events, stop = manager.Queue(), manager.Event()
        try:
            workers = min(self.jobs, len(units))
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_child_init,
                                     initargs=(parent, signal.SIGTERM, workers)) as pool:
                try:
                    yield from self._dispatch(pool, units, events, stop, on_event, should_stop)
                except BaseException:
                    # Leaving early (a second Ctrl-C, a closed reader): queued units never start;
                    # running ones see the stop at their next check.
                    stop.set()
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
        finally:
            manager.shutdown()


    @staticmethod
    def _dispatch(pool, units, events, stop, on_event, should_stop):
        from concurrent.futures import FIRST_COMPLETED, wait

        pending = {pool.submit(_worker, configs, root, data_dir, resume, events, stop): i
                   for i, (configs, root, data_dir, resume) in enumerate(units)}
        while pending:
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(events, on_event)
            if should_stop() and not stop.is_set():
                stop.set()
                for fut in pending:
                    fut.cancel()   # units not started yet never start
            for fut in done:
                i = pending.pop(fut)
                if fut.cancelled():
                    continue
                try:
                    result = fut.result()
                    if result is None:   # the worker saw the stop before it began
                        continue
                    yield i, result
                except Exception as err:
                    yield i, err
            for fut in [f for f in pending if f.cancelled()]:
                pending.pop(fut)
        _drain(events, on_event)


def _drain(events, on_event):
    while True:
        try:
            on_event(events.get_nowait())
        except queue_mod.Empty:
            return
        except (EOFError, OSError):
            return


def _child_init(parent_pid: int, death_signal: int, workers: int = 1) -> None:
    """In the manager and every worker: ignore the group's Ctrl-C (the parent decides), and die with
    the parent. On Linux the kernel sends `death_signal` when the parent exits (PR_SET_PDEATHSIG); a
    thread polling the parent's pid backs that up everywhere else."""
    # Several workers may share one GPU: JAX would let each take 75% of its memory up front, and the
    # second would fail. Allocating as needed lets them share it (a setting the user made stays).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if workers > 1:   # the workers share the cores: each steps its unit in lanes for its share
        from .cores import cpu_cores
        from .engines.fused import lanes_for

        os.environ.setdefault("FMNIST_LANES", str(lanes_for(cpu_cores() // workers)))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(death_signal))   # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass   # not Linux: the watcher alone
    if os.getppid() != parent_pid:   # the parent died before the kernel was asked to tell us
        os.kill(os.getpid(), death_signal)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="fmnist-parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    PARENT_GONE.set()
    time.sleep(ORPHAN_GRACE_SECONDS)
    os._exit(1)


def _dirs(root, names):
    """A unit's runs to resume, as folders (None: new runs)."""
    return [Path(root) / name for name in names] if names else None


def _worker(configs, root, data_dir, resume, events, stop):
    """In a worker process: train one unit, sending events to the parent. Ctrl-C reaches the whole
    process group, so each worker also stops on its own signal and keeps what finished. When the
    parent is gone (its manager with it), events are dropped and training stops at its next check."""
    from .training import StopFlag, train_group

    def stopped() -> bool:
        if flag() or PARENT_GONE.is_set():
            return True
        try:
            return stop.is_set()
        except (OSError, EOFError):   # the manager died with the parent
            PARENT_GONE.set()
            return True

    def send(event) -> None:
        if PARENT_GONE.is_set():
            return
        try:
            events.put(event)
        except (OSError, EOFError):
            PARENT_GONE.set()

    flag = StopFlag()
    if stopped():   # queued before Ctrl-C, picked up after it: do not start
        return None
    signal.signal(signal.SIGINT, lambda *a: flag.event.set())
    signal.signal(signal.SIGTERM, lambda *a: flag.event.set())
    try:
        return train_group(configs, root, data_dir, send, stopped, resume=_dirs(root, resume))
    finally:   # an idle pool process dies of SIGTERM again (the parent-death signal among them)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
