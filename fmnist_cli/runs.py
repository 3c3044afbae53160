"""The run store: one folder per run, written so that a crash or a second process never leaves a
half-written file, and read so that a broken or unfinished run never breaks a listing.

    runs/<id>/config.json   the RunConfig: the whole truth about how to rebuild the run
    runs/<id>/history.json  per-epoch metrics, Keras names
    runs/<id>/model.keras   the trained model; plain `keras.models.load_model` opens it
    runs/<id>/run.json      status, timings, versions, device, best epoch, evaluations
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
import tempfile
import socket
import time
from pathlib import Path

from .config import RunConfig
from .errors import RunNotFound, StorageError, UsageError

COMPARISONS = "comparisons"   # sub-folder of the runs dir that holds comparison records
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ID_RE = re.compile(r"^\d{8}-\d{6}-[A-Za-z0-9._-]+$")
FINAL_STATUSES = ("completed", "interrupted", "diverged", "failed")


def runs_root(explicit: str | os.PathLike | None = None) -> Path:
    """--runs-dir, else $FMNIST_RUNS_DIR, else ./runs."""
    return Path(explicit or os.environ.get("FMNIST_RUNS_DIR") or "runs").expanduser()


def ensure_writable(root: Path) -> Path:
    """Fail in a second, before TensorFlow and the data load, when runs cannot be saved."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise storage_error(err, root) from None
    return root


def check_name(name: str | None) -> str | None:
    """Run names become part of a folder name, so they may hold no path separators or dots up front."""
    if name is None:
        return None
    if not NAME_RE.match(name):
        raise UsageError(f"Invalid run name {name!r}: use up to 64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit.")
    return name


def storage_error(err: OSError, path: Path) -> StorageError:
    import errno

    if err.errno == errno.ENOSPC:
        why = "the disk is full; free some space and run again"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "permission denied; choose another folder with --runs-dir or $FMNIST_RUNS_DIR"
    elif err.errno in (errno.EEXIST, errno.ENOTDIR):
        why = "a file is in the way where a folder should be; choose another folder with --runs-dir"
    else:
        why = f"{(err.strerror or str(err)).lower()}; check the path, or choose another folder with --runs-dir"
    return StorageError(f"Cannot write {path}: {why}.")


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target: readers see
    the old file or the new one, never a part."""
    tmp = None
    try:
        # Not mkstemp: its files are 0600 whatever the umask. O_EXCL with mode 0666 lets the umask
        # decide, as for any other file the user writes (a shared runs folder, a --csv file).
        name = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        tmp = name   # ours to remove from here on
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise storage_error(err, path) from None


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


def read_json(path: Path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


@contextlib.contextmanager
def locked(run_dir: Path):
    """An exclusive lock for read-modify-write of run.json (two `evaluate`s at once, say)."""
    import fcntl

    with open(run_dir / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def create_run(root: Path, config: RunConfig) -> Path:
    """Make a new, uniquely named run folder holding config.json and a `running` run.json.
    `mkdir` is atomic, so two processes can never get the same folder."""
    slug = config.name or f"{config.optimizer.name}-{config.activation}"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(err, root) from None
    for _ in range(100):
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"
        run_dir = root / run_id
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            continue
        except OSError as err:
            raise storage_error(err, root) from None
    else:
        raise StorageError(f"Could not find a free run id in {root}.")
    atomic_write_json(run_dir / "config.json", config.to_dict())
    atomic_write_json(run_dir / "run.json", {
        "id": run_id, "status": "running", "created": now(), "pid": os.getpid(),
        "host": socket.gethostname(), "comparison": config.comparison,
    })
    return run_dir


def _read_info(run_dir: Path) -> dict:
    """run.json for a read-modify-write; a damaged one is rebuilt rather than blocking the write."""
    try:
        info = read_json(run_dir / "run.json")
    except (OSError, ValueError):
        info = None
    return info if isinstance(info, dict) else {"id": run_dir.name}


def update_run(run_dir: Path, **fields) -> dict:
    with locked(run_dir):
        info = _read_info(run_dir)
        info.update(fields)
        atomic_write_json(run_dir / "run.json", info)
    return info


def save_model(run_dir: Path, model) -> Path:
    """Save under a temporary .keras name (Keras insists on the suffix), then rename into place."""
    target = run_dir / "model.keras"
    tmp = run_dir / f".model-{secrets.token_hex(4)}.keras"
    try:
        model.save(tmp)
        os.replace(tmp, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise storage_error(err, target) from None
    return target


def load_model(run_dir: Path):
    """Open a run's model with Keras's safe mode: a model file can never run code of its own."""
    path = run_dir / "model.keras"
    if not path.is_file():
        raise RunNotFound(f"Run {run_dir.name} has no saved model (status: {run_status(run_dir)}); "
                          "train it again or pick another run.")
    import zipfile

    if not zipfile.is_zipfile(path):   # Keras would call it "File not found", which misleads
        raise StorageError(f"{path} is not a Keras model file (not a .keras zip archive). "
                           "It is damaged or was replaced; train the run again.")
    import keras

    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as err:  # Keras raises ValueError, OSError, zipfile errors... for a bad file
        text = str(err).strip()
        # Keras's first sentence only: its messages run on, and a cut mid-sentence reads as a bug.
        detail = re.split(r"(?<=[.!?])\s", text.splitlines()[0], maxsplit=1)[0][:200] if text else "unreadable"
        raise StorageError(f"{path} could not be opened as a Keras model ({type(err).__name__}: {detail.rstrip('.')}). "
                           "The file is damaged, not an fmnist model, or holds code that safe mode refuses; "
                           "train the run again.") from None


def run_status(run_dir: Path) -> str:
    """The status a listing should show. A `running` run whose process on this host is gone crashed."""
    try:
        info = read_json(run_dir / "run.json")
    except (OSError, ValueError):   # missing, unreadable, half-written
        return "broken"
    if not isinstance(info, dict) or not isinstance(info.get("status"), str):
        return "broken"             # valid JSON, but not a run record
    status = info["status"]
    if status == "running" and info.get("host") == socket.gethostname():
        pid = info.get("pid")
        if isinstance(pid, int) and not _pid_alive(pid):
            return "crashed"
    return status


def _pid_alive(pid: int) -> bool:
    if pid <= 0:   # 0 and negatives name process groups, not a run's process
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def load_run(run_dir: Path) -> dict:
    """Everything known about one run, tolerant of missing or broken files."""
    record: dict = {"id": run_dir.name, "run_dir": str(run_dir), "status": run_status(run_dir)}
    try:
        info = read_json(run_dir / "run.json")
    except (OSError, ValueError):
        info = None
    if isinstance(info, dict):   # the folder name stays the id: it is what `resolve` finds
        record.update({k: v for k, v in info.items() if k not in ("status", "id", "run_dir")})
    try:
        record["config"] = RunConfig.from_dict(read_json(run_dir / "config.json")).to_dict()
    except (OSError, ValueError, TypeError, KeyError, AttributeError, UsageError):  # foreign or hand-edited
        record["config"] = None
        record["status"] = "broken"
    try:
        record["history"] = read_json(run_dir / "history.json")
    except (OSError, ValueError):
        record["history"] = None
    record["model_path"] = str(run_dir / "model.keras") if (run_dir / "model.keras").is_file() else None
    return record


def list_runs(root: Path, comparison: str | None = None) -> list[dict]:
    """All runs, newest first. Never raises on a single bad folder."""
    if not root.is_dir():
        return []
    runs = []
    for entry in root.iterdir():
        if entry.name == COMPARISONS or entry.name.startswith(".") or not entry.is_dir():
            continue
        record = load_run(entry)
        if comparison and record.get("comparison") != comparison:
            continue
        runs.append(record)
    runs.sort(key=lambda r: (r.get("created") or "", r["id"]), reverse=True)
    return runs


def resolve(root: Path, ref: str | None) -> Path:
    """A run from `latest`, an id, a unique part of an id (its name, say), or a path to a run folder."""
    if ref is not None and not ref.strip():
        raise RunNotFound("The run id is empty. See `fmnist runs` for the ids.")
    ref = (ref or "latest").strip()
    if ref == "latest":
        done = [r for r in list_runs(root) if r["status"] in ("completed", "interrupted") and r.get("model_path")]
        if not done:
            raise RunNotFound(f"There are no finished runs in {root}. Train one with `fmnist train`, "
                              "or point --runs-dir at another folder.")
        return Path(done[0]["run_dir"])
    as_path = Path(ref).expanduser()
    if ("/" in ref or os.sep in ref) and as_path.is_dir():
        if not (as_path / "config.json").is_file():
            raise RunNotFound(f"{ref} is not a run folder (it has no config.json).")
        return as_path
    if root.is_dir() and "/" not in ref and os.sep not in ref and ref not in (".", ".."):
        if (root / ref).is_dir() and ref != COMPARISONS:
            return root / ref
        candidates = [p for p in root.iterdir() if p.is_dir() and p.name != COMPARISONS
                      and not p.name.startswith(".")]
        matches = [p for p in candidates if p.name.startswith(ref) or p.name.endswith(ref)]
        if not matches:   # a run's name, or any other unique part of its id
            matches = [p for p in candidates if ref in p.name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise RunNotFound(f"{ref!r} matches {len(matches)} runs; give more of the id "
                              "(see `fmnist runs`).")
    raise RunNotFound(f"No run {ref!r} in {root}. See `fmnist runs` for the ids, or pass --runs-dir.")


def record_evaluation(run_dir: Path, split: str, result: dict) -> None:
    with locked(run_dir):
        info = _read_info(run_dir)
        if not isinstance(info.get("evaluations"), dict):
            info["evaluations"] = {}
        info["evaluations"][split] = {k: v for k, v in result.items()
                                                     if k in ("loss", "accuracy", "evaluated", "n")}
        atomic_write_json(run_dir / "run.json", info)
