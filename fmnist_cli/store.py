"""The run store: the one place that creates, updates, reads, resolves, lists and removes runs and
comparisons. Written so that a crash or a second process never leaves a half-written file, and read
so that one damaged file never breaks a listing.

    runs/<id>/config.json             the RunConfig: the whole truth about how to rebuild the run
    runs/<id>/history.json            per-epoch metrics, Keras names
    runs/<id>/model.keras             the trained model; plain `keras.models.load_model` opens it
    runs/<id>/run.json                a RunRecord: status, timings, versions, best epoch, evaluations
    runs/comparisons/<id>.json        a ComparisonRecord: the spec and the run of each slot
    runs/comparisons/.<id>.lock       held while a process trains the comparison
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import errno
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

from .config import RunConfig
from .errors import BrokenRecord, Busy, RunNotFound, StorageError, UsageError
from .records import (RUN_ID_RE, Broken, ComparisonRecord, RunInfo, RunRecord, Status, check_history,
                      first_clause)

COMPARISONS = "comparisons"   # sub-folder of the runs dir that holds comparison records
RUN_FILES = {"config.json", "run.json", "history.json", "model.keras", ".lock"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
STALE_SECONDS = 60            # a temporary file this old belongs to a write that will never finish


# --- files ----------------------------------------------------------------------------------------

def storage_error(err: OSError, path: Path, action: str = "write") -> StorageError:
    """`action` is what failed, "write" or "remove": removing from a read-only folder is not helped by
    choosing another runs folder."""
    if err.errno == errno.ENOSPC:
        why = "the disk is full; free some space and run again"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and action == "remove":
        why = f"permission denied; check the permissions of {Path(path).parent}"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = ("permission denied; make its folder writable, or choose another runs folder with --runs-dir "
               "or $FMNIST_RUNS_DIR")
    elif err.errno in (errno.EEXIST, errno.ENOTDIR):
        why = "a file is in the way where a folder should be; choose another folder with --runs-dir"
    else:
        why = f"{(err.strerror or str(err)).lower()}; check the path, or choose another folder with --runs-dir"
    return StorageError(f"Cannot {action} {path}: {why}.")


def atomic_write_text(path: Path, text: str, *, exclusive: bool = False, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), exclusive=exclusive, durable=durable)


def atomic_write_bytes(path: Path, data, *, exclusive: bool = False, durable: bool = True) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target: readers see
    the old file or the new one, never a part. `data`: bytes, or a binary file to copy from, a
    megabyte at a time (the temporary file's time then shows the copy going on, see _stale; and a
    large model is never whole in memory). `exclusive`: link instead of rename, so an existing
    target is never replaced (FileExistsError), which makes claiming a new id and writing it one step.
    `durable=False` skips the fsync: still whole or absent after a crash of the process, which is what
    per-epoch checkpoints need, at a fraction of the cost."""
    tmp = None
    try:
        # Not mkstemp: its files are 0600 whatever the umask. O_EXCL with mode 0666 lets the umask
        # decide, as for any other file the user writes (a shared runs folder, a --csv file).
        name = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        tmp = name   # ours to remove from here on
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, (bytes, bytearray, memoryview)):
                fh.write(data)
            else:
                shutil.copyfileobj(data, fh, 1 << 20)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError as err:   # a file system without hard links: claim with O_EXCL, then fill
                if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                os.replace(tmp, path)
                tmp = None
        else:
            os.replace(tmp, path)
            tmp = None
    except FileExistsError:
        raise
    except OSError as err:
        raise storage_error(err, path) from None
    finally:   # BaseException too: a second Ctrl-C mid-write must not leave the temporary file
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write_json(path: Path, data, **kw) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n", **kw)


def read_json(path: Path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _read(path: Path, what: str):
    """(data, None) or (None, reason) for a JSON file that may be missing or damaged."""
    try:
        return read_json(path), None
    except FileNotFoundError:
        return None, f"{what} is missing"
    except IsADirectoryError:
        return None, f"{what} is a folder"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"{what} cannot be read ({type(err).__name__})"
    except (ValueError, RecursionError):   # RecursionError: JSON nested thousands deep
        size = path.stat().st_size if path.is_file() else 0
        return None, f"{what} is {'empty' if size == 0 else 'not valid JSON'}"


def _so_far(record: RunRecord, history: dict, config) -> RunRecord:
    """A run still training, or killed, writes its figures into run.json only at its end: read what
    its history holds so far (epochs, best epoch by its monitor, time), for listings. Not saved."""
    import dataclasses

    from .config import DEFAULT_MONITOR
    from .engines import best_index

    monitor = config.monitor if config is not None else DEFAULT_MONITOR
    best = best_index(history.get(monitor) or [], monitor)
    seconds = history.get("seconds") or []
    return dataclasses.replace(
        record, epochs_run=record.epochs_run or len(history["loss"]),
        best_epoch=None if best is None else best + 1,
        best_val_accuracy=None if best is None else history["val_accuracy"][best],
        seconds=record.seconds if record.seconds is not None else (round(sum(seconds), 3) if seconds else None))


def in_comparison(info: RunInfo, comparison: str) -> bool:
    """Whether a run was trained for that comparison (its run.json says so, or its config does)."""
    return (info.record is not None and info.record.comparison == comparison) or \
        getattr(info.config, "comparison", None) == comparison


def _is_zip(path: Path) -> bool:
    """A .keras file is a zip archive (zipfile imported here: listings need it, start-up does not)."""
    import zipfile

    return zipfile.is_zipfile(path)   # False for one that cannot be read, too


def _not_a_model_file(path: Path) -> str | None:
    """Why a model.keras that is there is no file (a folder, a dangling link), for a reason; None when
    it is a file or simply missing. save_model only ever renames a file into place, so this is damage."""
    if path.is_file() or not (path.exists() or path.is_symlink()):
        return None
    if path.is_dir():
        return "model.keras is a folder, not a model file"
    if not path.exists():
        return "model.keras is a link to nothing"
    return "model.keras is not a regular file"


def absolute(path: str | os.PathLike) -> Path:
    """`~` expanded and made absolute (not resolved: a link the user chose keeps its name)."""
    path = Path(path).expanduser()
    try:
        return Path(os.path.abspath(path))
    except OSError:   # the working folder was removed: keep the path as given
        return path


def now(timespec: str = "seconds") -> str:
    return dt.datetime.now().astimezone().isoformat(timespec=timespec)


def check_name(name: str | None, what: str = "run") -> str | None:
    """Run and comparison names become part of a file or folder name, so they may hold no path
    separators or dots up front; `latest` is taken: it names the newest one wherever one is asked for."""
    if name is None:
        return None
    if name.strip().lower() == "latest":
        raise UsageError(f"The {what} name 'latest' is reserved (`latest` means the newest {what}); "
                         "choose another --name.")
    if not NAME_RE.match(name):
        raise UsageError(f"Invalid {what} name {name!r}: use up to 64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit.")
    return name


def pid_alive(pid: int) -> bool:
    if pid <= 0:   # 0 and negatives name process groups, not a run's process
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def _is_leftover(name: str) -> bool:
    return name.endswith(".tmp") or (name.startswith(".model-") and name.endswith(".keras"))


def _stale(path: Path) -> bool:
    """Untouched for STALE_SECONDS. A folder being filled (a run copied or received) counts as touched
    while any file in it is being written: a long write of one large model.keras leaves the folder's
    own time alone."""
    try:
        newest = path.lstat().st_mtime
        if path.is_dir() and not path.is_symlink():
            for child in path.iterdir():
                with contextlib.suppress(OSError):
                    newest = max(newest, child.lstat().st_mtime)
        return time.time() - newest > STALE_SECONDS
    except OSError:
        return False


# date-time-NAME-xxxx: runs and comparisons alike (NAME is a --name, or optimizer-activation, or cmp)
_ID_NAME = re.compile(r"^\d{8}-\d{6}-(.+)-[0-9a-f]{4}$")


def _named(ids: list[str], name: str) -> list[str]:
    """The ids whose NAME part is `name` whole."""
    return [i for i in ids if (m := _ID_NAME.match(i)) and m.group(1) == name]


def resolve_ref(ref: str | None, names: list[str], kind: str, listing: str, plural: str | None = None) -> str:
    """Runs and comparisons resolve alike: an exact id, else a unique prefix or suffix, else any unique
    part of the id (a run's name, a time). `kind` is "run" or "comparison"."""
    ref = (ref or "").strip()
    if not ref:
        raise RunNotFound(f"The {kind} id is empty; see `{listing}` for the ids.")
    if ref in names:
        return ref
    # a --name whole (`lr-sweep`) before parts of ids: it is also part of `lr-sweep-wide`'s id
    named = _named(names, ref)
    matches = (named or [n for n in names if n.startswith(ref) or n.endswith(ref)]
               or [n for n in names if ref in n])
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        some = ", ".join(sorted(matches)[:3]) + (", ..." if len(matches) > 3 else "")
        raise RunNotFound(f"{ref!r} matches {len(matches)} {plural or kind + 's'} ({some}); give more of the id "
                          f"(see `{listing}`).")
    raise RunNotFound(f"No {kind} {ref!r}; see `{listing}` for the ids, or pass --runs-dir.")


class RunStore:
    """All runs and comparisons under one folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = absolute(root)   # messages name the folder wherever the command was run from

    @classmethod
    def at(cls, explicit: str | os.PathLike | None = None) -> "RunStore":
        """--runs-dir, else $FMNIST_RUNS_DIR, else ./runs; a file there is refused (exit 2)."""
        env = os.environ.get("FMNIST_RUNS_DIR")
        store = cls(explicit or env or "runs")
        source = "--runs-dir" if explicit else "$FMNIST_RUNS_DIR" if env else "the default runs folder"
        if store.root.exists() and not store.root.is_dir():
            raise UsageError(f"The runs folder {store.root} ({source}) is a file, not a folder; choose a "
                             "folder with --runs-dir or $FMNIST_RUNS_DIR.")
        # under a file it can never be made: said now, not as "no runs yet" (or a failed save later)
        above = next((p for p in store.root.parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise UsageError(f"The runs folder {store.root} ({source}) is under {above}, which is a file, not a "
                             "folder; choose a folder with --runs-dir or $FMNIST_RUNS_DIR.")
        return store

    @property
    def comparisons_dir(self) -> Path:
        return self.root / COMPARISONS

    def ensure_writable(self) -> "RunStore":
        """Fail in a second, before TensorFlow and the data load, when runs cannot be saved."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=".write-test-", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise storage_error(err, self.root) from None
        return self

    # --- runs: writing ----------------------------------------------------------------------------

    def create_run(self, config: RunConfig) -> Path:
        """A new, uniquely named run folder holding config.json and a `running` run.json, or nothing
        (disk full, say). Both files are written in a hidden folder that is then renamed into place:
        a run folder never exists without them, so one without them is damage, shown `broken` at
        once. The rename fails when another process took the id first, and a new id is drawn."""
        def fill(staging: Path, run_id: str) -> None:
            # to the microsecond: runs made in one second still list (and are `latest`) in order
            record = RunRecord(id=run_id, status=Status.RUNNING, created=now("microseconds"), pid=os.getpid(),
                               host=socket.gethostname(), comparison=config.comparison)
            atomic_write_json(staging / "run.json", record.to_json())
            atomic_write_json(staging / "config.json", config.to_dict())

        return self._new_run_folder(config, fill)

    def copy_run(self, source: Path, config: RunConfig) -> Path:
        """A finished run copied whole under a new id, as a run of `config` (its comparison, variant and
        repeat; the settings that train it are the source's): `compare --reuse`. A copy, not a link,
        so that removing either run leaves the other whole; it appears at once, whole, like a new run.
        Its run.json says which run trained it (`reused_from`), and keeps that run's figures, times
        and evaluations."""
        def fill(staging: Path, run_id: str) -> None:
            with self._locked(source):   # an `evaluate` may be rewriting the source's run.json
                record = self.read_record(source)
                if record.broken:
                    raise BrokenRecord(f"Run {source.name} cannot be copied ({record.broken}).")
                for name in ("history.json", "model.keras"):
                    if name == "model.keras" and record.status == Status.DIVERGED and not (source / name).exists():
                        continue   # a run that diverged in its first epoch has its history alone
                    with open(source / name, "rb") as src:
                        atomic_write_bytes(staging / name, src)
            copied = RunRecord.from_json({**record.to_json(), "id": run_id, "created": now("microseconds"),
                                          "comparison": config.comparison,
                                          "reused_from": record.reused_from or source.name})
            atomic_write_json(staging / "config.json", config.to_dict())
            atomic_write_json(staging / "run.json", copied.to_json())

        return self._new_run_folder(config, fill)

    def _new_run_folder(self, config: RunConfig, fill) -> Path:
        """A fresh run id claimed by renaming a hidden folder that `fill(folder, run_id)` wrote into
        place: readers (and a crash) see the whole run or none of it."""
        slug = config.name or f"{config.optimizer.name}-{config.activation}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise storage_error(err, self.root) from None
        for _ in range(100):
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"
            run_dir = self.root / run_id
            if run_dir.exists() or run_dir.is_symlink():
                continue
            staging = self.root / f".new-{run_id}"
            try:
                staging.mkdir()
            except FileExistsError:
                continue
            except OSError as err:
                raise storage_error(err, self.root) from None
            try:
                fill(staging, run_id)
                os.rename(staging, run_dir)   # onto a non-empty folder (another run's) it fails
                return run_dir
            except BaseException as err:
                shutil.rmtree(staging, ignore_errors=True)
                if not isinstance(err, OSError):
                    raise
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise storage_error(err, self.root) from None
        raise StorageError(f"Could not find a free run id in {self.root}.")

    @contextlib.contextmanager
    def _locked(self, run_dir: Path):
        """An exclusive lock for read-modify-write of run.json (two `evaluate`s at once, say)."""
        import fcntl

        try:
            fh = open(run_dir / ".lock", "a+")
        except OSError as err:
            raise storage_error(err, run_dir) from None
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def update_run(self, run_dir: Path, **fields) -> RunRecord:
        """Set fields of run.json. A damaged run.json is rebuilt rather than blocking the write."""
        with self._locked(run_dir):
            # A damaged run.json is rebuilt from what of it still reads (from_json keeps good fields).
            record = self.read_record(run_dir)
            record = RunRecord.from_json({**record.to_json(), **_plain_fields(fields)})
            if record.broken:   # a programming error: never write a record we could not read back
                raise ValueError(f"update_run({fields}): {record.broken}")
            atomic_write_json(run_dir / "run.json", record.to_json())
        return record

    def record_evaluation(self, run_dir: Path, split: str, result) -> None:
        """Store an evaluation (an EvaluationResult, or a dict with its keys) in run.json."""
        from .records import Evaluation

        get = result.get if isinstance(result, dict) else lambda k: getattr(result, k)
        evaluation = Evaluation(**{k: get(k) for k in ("loss", "accuracy", "evaluated", "n", "per_class",
                                                       "confusion_matrix", "classes")})
        with self._locked(run_dir):
            record = self.read_record(run_dir)
            if record.broken:
                raise BrokenRecord(f"Run {run_dir.name} is broken ({record.broken}), so its evaluation "
                                   "cannot be stored.")
            record.evaluations[split] = evaluation
            atomic_write_json(run_dir / "run.json", record.to_json())

    def save_history(self, run_dir: Path, history: dict, durable: bool = True) -> None:
        atomic_write_json(run_dir / "history.json", history, durable=durable)

    def save_model(self, run_dir: Path, model, epoch: int | None = None) -> Path:
        """Save under a temporary .keras name (Keras insists on the suffix), then rename into place.
        The temporary file goes on any failure, a second Ctrl-C included. `epoch` goes into the
        archive too (fmnist.json, which Keras ignores): the file says itself which epoch it holds."""
        import zipfile

        target = run_dir / "model.keras"
        tmp = run_dir / f".model-{secrets.token_hex(4)}.keras"
        try:
            model.save(tmp)
            if epoch is not None and zipfile.is_zipfile(tmp):
                with zipfile.ZipFile(tmp, "a") as archive:
                    archive.writestr("fmnist.json", json.dumps({"epoch": int(epoch)}))
            os.replace(tmp, target)
        except OSError as err:
            raise storage_error(err, target) from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return target

    # --- runs: reading ----------------------------------------------------------------------------

    def read_record(self, run_dir: Path) -> RunRecord:
        data, reason = _read(run_dir / "run.json", "run.json")
        if reason:
            return RunRecord(id=run_dir.name, status=Status.RUNNING, broken=reason)
        record = RunRecord.from_json(data, id=run_dir.name)
        if record.broken:
            record.broken = f"run.json: {record.broken}"
        return record

    def read_config(self, run_dir: Path) -> RunConfig:
        """The config that rebuilds a run; a damaged one is a one-sentence error (exit 2)."""
        data, reason = _read(run_dir / "config.json", "config.json")
        if reason is None:
            try:
                return RunConfig.from_dict(data)
            except UsageError as err:
                reason = f"config.json is unusable ({first_clause(str(err))})"
        raise BrokenRecord(f"Run {run_dir.name} cannot be rebuilt: its {reason}; remove it with "
                           f"`fmnist runs rm {run_dir.name}`.")

    def read_history(self, run_dir: Path) -> dict | None:
        """The per-epoch history, None when there is none yet; raises Broken when it is damaged."""
        data, reason = _read(run_dir / "history.json", "history.json")
        if reason == "history.json is missing":
            return None
        if reason:
            raise Broken(reason)
        return check_history(data)

    def model_epoch(self, run_dir: Path) -> int | None:
        """The epoch model.keras holds, as written into it by save_model (None if it does not say)."""
        import zipfile

        try:
            with zipfile.ZipFile(run_dir / "model.keras") as archive:
                epoch = json.loads(archive.read("fmnist.json")).get("epoch")
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, AttributeError):
            return None
        return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1 else None

    def claim(self, run_dir: Path, check) -> None:
        """Check a run and mark it `running` for this process in one step under its lock: `check`
        gets its RunInfo and raises to refuse."""
        with self._locked(run_dir):
            check(self.load_run(run_dir))
            record = self.read_record(run_dir)
            record = RunRecord.from_json({**record.to_json(), "status": Status.RUNNING.value,
                                          "pid": os.getpid(), "host": socket.gethostname(), "message": None})
            atomic_write_json(run_dir / "run.json", record.to_json())

    def load_model(self, run_dir: Path):
        """Open a run's model with Keras's safe mode: a model file can never run code of its own."""
        path = self.check_model(run_dir)
        import keras

        try:
            return keras.models.load_model(path, safe_mode=True)
        except Exception as err:  # Keras raises ValueError, OSError, zipfile errors... for a bad file
            text = str(err).strip()
            # Keras's first sentence only: its messages run on, and a cut mid-sentence reads as a bug.
            detail = re.split(r"(?<=[.!?])\s", text.splitlines()[0], maxsplit=1)[0][:200] if text else "unreadable"
            raise BrokenRecord(f"{path} could not be opened as a Keras model ({type(err).__name__}: "
                               f"{detail.rstrip('.')}): the file is damaged, not an fmnist model, or holds "
                               "code that safe mode refuses, so train the run again.") from None

    def check_model(self, run_dir: Path) -> Path:
        """The run's model file, or one sentence on why there is none to open (missing, still being
        trained, damaged): cheap, so a command says it before loading a backend and the data."""
        path = run_dir / "model.keras"
        damage = _not_a_model_file(path)
        if damage:
            raise BrokenRecord(f"Run {run_dir.name} is broken ({damage}), so it has no model to open; train it "
                               f"again, or remove it with `fmnist runs rm {run_dir.name}`.")
        if not path.is_file():
            info = self.load_run(run_dir)
            if info.status == Status.RUNNING:
                pid = info.get("pid")
                raise RunNotFound(f"Run {run_dir.name} is still being trained" + (f" (process {pid})" if pid else "")
                                  + " and has no saved model yet; wait for its first epoch, or pick another run.")
            raise RunNotFound(f"Run {run_dir.name} has no saved model (status: {info.status}); "
                              "train it again or pick another run.")
        if not _is_zip(path):   # Keras would call it "File not found", which misleads
            raise BrokenRecord(f"{path} is not a Keras model file (not a .keras zip archive): it is damaged "
                               "or was replaced, so train the run again.")
        return path

    def load_run(self, run_dir: Path) -> RunInfo:
        """Everything known about one run. Never raises: a damaged file makes it `broken`, with why."""
        record = self.read_record(run_dir)
        config_data, config_reason = _read(run_dir / "config.json", "config.json")
        config = None
        if config_reason is None:
            try:
                config = RunConfig.from_dict(config_data)
            except UsageError as err:
                config_reason = f"config.json is unusable ({first_clause(str(err))})"
        reason = record.broken or config_reason
        history = None
        try:
            history = self.read_history(run_dir)
        except Broken as err:
            reason = reason or str(err)
        model = run_dir / "model.keras"
        model_path = str(model) if model.is_file() else None
        status = record.status
        if status == Status.RUNNING and record.host == socket.gethostname() and record.pid is not None \
                and not pid_alive(record.pid):
            status = Status.CRASHED
        if not reason and history is None and (status == Status.COMPLETED or record.epochs_run):
            reason = "history.json is missing"
        if not reason and model_path is None and status != Status.RUNNING:
            reason = _not_a_model_file(model)   # a folder is damage, not a model yet to be saved
        if not reason and model_path is not None and not _is_zip(model):
            # A .keras file is a zip archive, and saves rename a whole one into place: anything else is
            # damage, found here rather than by the next `evaluate`. (The end of the file is read.)
            reason = "model.keras is not a Keras model file (not a zip archive): it is damaged or was replaced"
        if not reason and status == Status.COMPLETED and model_path is None and history and history["loss"]:
            reason = "model.keras is missing"
        if reason and not (run_dir / "config.json").exists() and not (run_dir / "run.json").exists():
            reason = "a run folder without its files (made by hand, or they were removed)"
        if reason:
            status = Status.BROKEN
        elif status in (Status.RUNNING, Status.CRASHED) and history and history.get("loss") \
                and record.best_val_accuracy is None:
            record = _so_far(record, history, config)
        return RunInfo(id=run_dir.name, run_dir=str(run_dir), status=status, record=None if record.broken else record,
                       config=config, history=history, model_path=model_path, reason=reason)

    def _run_dirs(self) -> list[Path]:
        """Folders that are runs: named like a run id, or holding a run's files. Anything else a user
        keeps in the runs folder is none of our business, and is never listed or removed."""
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir()
                if p.name != COMPARISONS and not p.name.startswith(".") and p.is_dir() and not p.is_symlink()
                and (RUN_ID_RE.match(p.name) or (p / "run.json").exists() or (p / "config.json").exists())]

    def list_runs(self, comparison: str | None = None, clean: bool = True) -> list[RunInfo]:
        """All runs, newest first. Never raises on a single bad folder. Leftovers of interrupted
        writes in runs that are not running are removed on the way."""
        runs = []
        for run_dir in self._run_dirs():
            info = self.load_run(run_dir)
            if clean and info.status != Status.RUNNING:
                self._clean(run_dir)
            if comparison and not in_comparison(info, comparison):
                continue
            runs.append(info)
        runs.sort(key=lambda r: (r.created, r.id), reverse=True)
        if clean:
            self._clean_root()
        return runs

    def _clean(self, run_dir: Path) -> None:
        for p in self._leftovers_in(run_dir):
            with contextlib.suppress(OSError):
                p.unlink()

    @staticmethod
    def _leftovers_in(run_dir: Path) -> list[Path]:
        """Temporary files of interrupted saves in a run that is not running: a model's at once (only
        the training process writes one), any other once it is stale (an `evaluate` may be writing)."""
        with contextlib.suppress(OSError):
            return [p for p in run_dir.iterdir()
                    if _is_leftover(p.name) and (p.name.startswith(".model-") or _stale(p))]
        return []

    def _clean_root(self) -> None:
        """Stale temporary files, and the remains of removals and of received runs that were interrupted."""
        for folder in (self.root, self.comparisons_dir):
            with contextlib.suppress(OSError):
                for p in folder.iterdir():
                    if p.name.startswith((".trash-", ".incoming-", ".new-")) and _stale(p):
                        shutil.rmtree(p, ignore_errors=True)
                    elif _is_leftover(p.name) and _stale(p):
                        p.unlink()

    def leftovers(self) -> list[Path]:
        """Temporary files of interrupted saves in runs that are not running (`runs rm --broken`)."""
        out = []
        for run_dir in self._run_dirs():
            if self.load_run(run_dir).status != Status.RUNNING:
                out += self._leftovers_in(run_dir)
        return out

    def resolve_run(self, ref: str | None,
                    latest: tuple[Status, ...] | None = (Status.COMPLETED, Status.INTERRUPTED)) -> Path:
        """A run from `latest` (the newest with one of the `latest` statuses and a model; with `latest`
        None, the newest run whatever its status), an id, a unique part of an id (its name, say), or
        a path to a run folder."""
        if ref is not None and not ref.strip():
            raise RunNotFound("The run id is empty; see `fmnist runs` for the ids.")
        ref = (ref or "latest").strip()
        if ref == "latest":
            runs = self.list_runs()
            done = runs if latest is None else [r for r in runs if r.status in latest and r.model_path]
            if not done:
                if latest is None:
                    raise RunNotFound(f"There are no runs in {self.root}; see `fmnist runs`.")
                if Status.COMPLETED in latest:
                    counts = collections.Counter(r.status.value for r in runs)
                    there = (f" (its {len(runs)} run(s): " + ", ".join(f"{n} {s}" for s, n in counts.most_common())
                             + "; `fmnist runs` lists them)") if runs else ""
                    raise RunNotFound(f"There are no finished runs in {self.root}{there}; train one with "
                                      "`fmnist train`, or point --runs-dir at another folder.")
                raise RunNotFound(f"There are no interrupted or crashed runs with a checkpoint in {self.root}; "
                                  "see `fmnist runs`.")
            return Path(done[0].run_dir)
        as_path = Path(ref).expanduser()
        if "/" in ref or os.sep in ref:
            if as_path.is_dir():
                if not (as_path / "config.json").is_file() and not (as_path / "run.json").is_file():
                    raise RunNotFound(f"{ref} is not a run folder (it has no config.json).")
                return absolute(as_path)   # messages and --json name it whole
            raise RunNotFound(f"No run folder {ref}; see `fmnist runs` for the ids.")
        name = resolve_ref(ref, [p.name for p in self._run_dirs()], "run", "fmnist runs")
        return self.root / name

    @staticmethod
    def foreign_files(run_dir: Path) -> list[str]:
        with contextlib.suppress(OSError):
            return sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES and not _is_leftover(p.name))
        return []

    def remove_run(self, run_dir: Path) -> None:
        """Remove a run at once for every reader: renamed out of sight first, then deleted. A folder
        holding files fmnist does not write is refused: those are the user's."""
        foreign = self.foreign_files(run_dir)
        if foreign:
            raise UsageError(f"{run_dir.resolve()} holds files fmnist did not write ({', '.join(foreign[:3])}); "
                             "remove it by hand if it should go.")
        trash = self.root / f".trash-{run_dir.name}-{secrets.token_hex(3)}"
        try:
            os.rename(run_dir, trash)
        except FileNotFoundError:
            return
        except OSError as err:
            raise storage_error(err, run_dir, "remove") from None
        shutil.rmtree(trash, ignore_errors=True)

    # --- runs trained elsewhere (a Ray worker without this folder) ---------------------------------

    @staticmethod
    def pack_run(run_dir: Path) -> dict[str, bytes]:
        """A run's files as bytes: a finished one, to send to the machine that keeps the runs, or one
        to go on from its checkpoint, to send to a worker."""
        try:
            return {p.name: p.read_bytes() for p in sorted(Path(run_dir).iterdir())
                    if p.name in RUN_FILES and p.name != ".lock" and p.is_file()}
        except OSError as err:
            raise storage_error(err, run_dir) from None

    def receive_run(self, run_id: str, files: dict[str, bytes], resumed: bool = False) -> Path:
        """Put a packed run into this folder, whole or not at all: written into a hidden folder, then
        renamed into place, so no reader (nor a crash) ever sees part of it. `resumed`: the run went on
        from a checkpoint of this folder's run of that id, and replaces its files one by one, each
        whole, run.json last (what a resume in place writes too)."""
        if not RUN_ID_RE.match(run_id) or set(files) - RUN_FILES:
            raise StorageError(f"Refused a run sent back as {run_id!r}: not a run id, or files fmnist does not write.")
        target = self.root / run_id
        if resumed and target.is_dir():
            try:
                with self._locked(target):   # an `evaluate` read-modify-writes run.json under it
                    for name in sorted(files, key=lambda n: n == "run.json"):
                        atomic_write_bytes(target / name, files[name])
            except OSError as err:
                raise storage_error(err, target) from None
            return target
        staging = self.root / f".incoming-{run_id}-{secrets.token_hex(3)}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            staging.mkdir()
            for name, data in files.items():
                with open(staging / name, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            os.rename(staging, target)   # fails when the id is taken: a run is never overwritten
        except OSError as err:
            raise storage_error(err, target) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    # --- comparisons ------------------------------------------------------------------------------

    def _comparison_path(self, cid: str) -> Path:
        return self.comparisons_dir / f"{cid}.json"

    def comparison_ids(self) -> list[str]:
        cdir = self.comparisons_dir
        return sorted(p.stem for p in cdir.glob("*.json") if not p.name.startswith(".")) if cdir.is_dir() else []

    def new_comparison(self, record: ComparisonRecord, name: str | None = None) -> ComparisonRecord:
        """Give the record a fresh id (with `name` in it, else `cmp`) and write it, whole: the id is
        claimed by the write itself."""
        cdir = self.comparisons_dir
        try:
            cdir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise storage_error(err, cdir) from None
        while True:
            record.id = f"{time.strftime('%Y%m%d-%H%M%S')}-{name or 'cmp'}-{secrets.token_hex(2)}"
            try:
                atomic_write_json(self._comparison_path(record.id), record.to_json(), exclusive=True)
                return record
            except FileExistsError:
                continue

    def save_comparison(self, record: ComparisonRecord) -> None:
        atomic_write_json(self._comparison_path(record.id), record.to_json())

    def read_comparison(self, cid: str) -> ComparisonRecord:
        """Never raises: a damaged record comes back with `broken` set."""
        data, reason = _read(self._comparison_path(cid), "the record")
        if reason:
            return ComparisonRecord(id=cid, broken=reason)
        record = ComparisonRecord.from_json(data, id=cid)
        if not record.broken and record.id != cid:
            record.broken = f"it names itself {record.id!r}, not {cid!r}"
        return record

    def resolve_comparison(self, ref: str | None) -> str:
        ids = self.comparison_ids()
        ref = (ref or "").strip()
        if ref == "latest":   # the newest usable one, as for runs
            usable = [cid for cid in reversed(ids) if not self.read_comparison(cid).broken]
            if not usable:
                raise RunNotFound(f"There are no usable comparisons in {self.root}; start one with "
                                  "`fmnist compare sgd rmsprop adam`.")
            return usable[0]
        return resolve_ref(ref, ids, "comparison", "fmnist compare --list")

    def resolve_any(self, ref: str | None) -> tuple[str, str | Path]:
        """("comparison", its id) or ("run", its folder), for commands that take either. Ids of both
        kinds resolve together, by resolve_ref's rules: a part that matches a run and a comparison is
        ambiguous, an exact id never is. A path is a run folder. `latest` is the newest finished run,
        or the comparison it belongs to (so after `fmnist compare`, that comparison)."""
        if ref is not None and not ref.strip():
            raise RunNotFound("The id is empty; see `fmnist runs` and `fmnist compare --list` for the ids.")
        ref = (ref or "latest").strip()
        if ref == "latest":
            try:
                info = self.load_run(self.resolve_run("latest"))
            except RunNotFound:
                try:
                    return "comparison", self.resolve_comparison("latest")
                except RunNotFound:
                    raise RunNotFound(f"There are no finished runs or comparisons in {self.root}; train one "
                                      "with `fmnist train`, or point --runs-dir at another folder.") from None
            cid = info.record.comparison if info.record else None
            if cid and cid in self.comparison_ids() and not self.read_comparison(cid).broken:
                return "comparison", cid
            return "run", Path(info.run_dir)
        if "/" in ref or os.sep in ref:
            return "run", self.resolve_run(ref)
        cids, run_ids = self.comparison_ids(), [p.name for p in self._run_dirs()]
        # A comparison's name is always a --name; a run's may be its default optimizer-activation
        # slug. So `compare --name adam-relu`'s own runs (named adam-relu by default) do not make
        # `report adam-relu` ambiguous: only a run given that --name does (or whose config is damaged).
        named = _named(cids, ref)
        if len(named) == 1 and not any((config := self.load_run(self.root / i).config) is None or config.name == ref
                                       for i in _named(run_ids, ref)):
            return "comparison", named[0]
        name = resolve_ref(ref, cids + run_ids, "run or comparison",
                           "fmnist runs` and `fmnist compare --list", plural="runs and comparisons")
        return ("comparison", name) if name in cids else ("run", self.root / name)

    def load_comparison(self, ref: str | None) -> ComparisonRecord:
        """A usable comparison record, or a one-sentence error (exit 2) for a missing or damaged one."""
        cid = self.resolve_comparison(ref)
        record = self.read_comparison(cid)
        if record.broken:
            raise BrokenRecord(f"Comparison {cid} is broken ({first_clause(record.broken)}); `fmnist runs rm --broken` "
                               "removes its record and leaves its runs.")
        return record

    def list_comparisons(self) -> list[ComparisonRecord]:
        """Every comparison, newest first; damaged ones included, marked `broken`."""
        return [self.read_comparison(cid) for cid in reversed(self.comparison_ids())]

    @contextlib.contextmanager
    def comparison_lock(self, cid: str) -> Iterator[None]:
        """Held while a process trains a comparison, so that no slot is ever trained twice. The
        kernel drops it when the process dies, however it dies."""
        import fcntl

        path = self.comparisons_dir / f".{cid}.lock"
        try:
            fh = open(path, "a+")
        except OSError as err:
            raise storage_error(err, path) from None
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(f"Comparison {cid} is being trained by another fmnist process; wait for it to "
                           f"finish, or stop it and run `fmnist compare --resume {cid}` again.") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def remove_comparison(self, cid: str) -> None:
        path = self._comparison_path(cid)
        try:
            if path.is_dir() and not path.is_symlink():   # "the record is a folder": a broken one
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            (self.comparisons_dir / f".{cid}.lock").unlink(missing_ok=True)
        except OSError as err:
            raise storage_error(err, path, "remove") from None


def _plain_fields(fields: dict) -> dict:
    from .records import _plain

    return {k: _plain(v) for k, v in fields.items()}
