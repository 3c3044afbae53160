"""Dispatching units of work (groups of runs that train together). The one seam between a comparison
and where its runs execute: a distributed executor (Ray, say) implements the same `run` method.

    executor.run(units, on_event, should_stop) -> yields (unit_index, results | Exception)

A unit is `(configs, root, data_dir)`; results are `training.train_group`'s dicts. Units are fixed
before dispatch and never depend on the number of workers, so results do not either.
"""

from __future__ import annotations

import queue as queue_mod
from typing import Iterator


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

        for i, (configs, root, data_dir) in enumerate(units):
            if should_stop():
                return
            try:
                yield i, train_group(configs, root, data_dir, on_event, should_stop)
            except KeyboardInterrupt:
                raise
            except Exception as err:  # one failing unit must not stop the others
                yield i, err

    def _parallel(self, units, on_event, should_stop):
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        from multiprocessing.managers import SyncManager

        ctx = mp.get_context("spawn")   # fork after TF/JAX initialised is unsafe; spawn starts clean
        # Ctrl-C reaches every process of the group: the manager must outlive it to carry the
        # workers' last events, and a worker still starting must not die of it.
        manager = SyncManager(ctx=ctx)
        manager.start(_ignore_sigint)
        events, stop = manager.Queue(), manager.Event()
        try:
            with ProcessPoolExecutor(max_workers=min(self.jobs, len(units)), mp_context=ctx,
                                     initializer=_ignore_sigint) as pool:
                pending = {pool.submit(_worker, configs, root, data_dir, events, stop): i
                           for i, (configs, root, data_dir) in enumerate(units)}
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
        finally:
            manager.shutdown()


def _drain(events, on_event):
    while True:
        try:
            on_event(events.get_nowait())
        except queue_mod.Empty:
            return
        except (EOFError, OSError):
            return


def _ignore_sigint():
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker(configs, root, data_dir, events, stop):
    """In a worker process: train one unit, sending events to the parent. Ctrl-C reaches the whole
    process group, so each worker also stops on its own signal and keeps what finished."""
    import signal

    from .training import StopFlag, train_group

    if stop.is_set():   # queued before Ctrl-C, picked up after it: do not start
        return None
    flag = StopFlag()
    signal.signal(signal.SIGINT, lambda *a: flag.event.set())
    signal.signal(signal.SIGTERM, lambda *a: flag.event.set())
    return train_group(configs, root, data_dir, events.put, lambda: flag() or stop.is_set())
