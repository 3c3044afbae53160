"""The decoded Fashion-MNIST arrays, kept as .npy files under the fmnist cache folder so that a command
does not decompress and hash 30 MB of gzip every time.

One entry per source folder: <cache>/data/<hash of the folder>/ holds manifest.json and the four
arrays. The manifest records, for each source file, its path, size, mtime_ns, inode and the SHA-256 of
its decoded payload (what verification computed), and the name, shape, dtype and size of its .npy
file. An entry is used only when every source file still has the recorded path, size, mtime and inode
and every .npy file opens with the recorded shape, dtype and size; anything else (stale, damaged,
missing, unreadable) sends the caller back to the sources, which are fully verified, and the entry is
written again.

Writes are atomic: each build writes its .npy files under new names (temporary, then renamed), then
replaces manifest.json in one rename, so a reader sees either the old entry or the new one, whole.
Builders take a lock (flock) so that two processes do the work once; without a lock (a file system
that has none) they still produce a good entry, the last rename winning. Nothing here ever fails a
command: a read-only, full or missing cache folder only means loading from the sources.

A source rewritten within the file system's timestamp granularity of the build would keep its
recorded size and mtime ("racily clean", as git calls it): an entry whose sources were modified less
than RACY_NS before it was built is not trusted until the sources have been verified again."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # imported where used: `fmnist data` answers from the summaries without numpy
    import numpy as np

VERSION = 1
RACY_NS = 2_000_000_000          # covers coarse kernel clocks and 2 s (FAT) timestamps
LOCK_WAIT_S = 120.0              # a build takes seconds; after this, build without the lock
KEYS = ("x_train", "y_train", "x_test", "y_test")


def turned_off() -> bool:
    return os.environ.get("FMNIST_DATA_CACHE", "1") == "0"


def root() -> Path | None:
    """<cache>/data, or None where there is no cache folder: $FMNIST_DATA_CACHE=0, or no home folder
    and no $XDG_CACHE_HOME."""
    if turned_off():
        return None
    from . import backend

    base = backend.cache_dir()
    return None if base is None else base / "data"


def entry_dir(source_dir: Path) -> Path | None:
    base = root()
    if base is None:
        return None
    return base / hashlib.sha256(os.fsencode(str(source_dir))).hexdigest()[:16]


def shown(path: Path | None) -> str:
    """The folder for messages, with the home folder as ~."""
    if path is None:
        return "(none)"
    text = str(path)
    with contextlib.suppress(RuntimeError, KeyError, OSError):
        home = str(Path.home())
        if home not in ("", "/") and (text == home or text.startswith(home + os.sep)):
            return "~" + text[len(home):]
    return text


def stat_sources(paths: list[Path]) -> list[dict]:
    out = []
    for path in paths:
        st = os.stat(path)
        out.append({"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino})
    return out


class Miss(Exception):
    """Why an entry cannot be used: 'new' (none yet), 'changed' (stale), 'damaged', 'racy'."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def read_manifest(entry: Path) -> dict:
    try:
        with open(entry / "manifest.json", encoding="utf-8") as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        raise Miss("new") from None
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise Miss("damaged", f"manifest.json: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("version") != VERSION:
        raise Miss("damaged", "manifest.json: unknown version")
    return manifest


def check_sources(manifest: dict, paths: list[Path], strict_sha: list[str] | None) -> None:
    """Miss unless the sources are the ones the entry was built from."""
    try:
        recorded = manifest["sources"]
        now = stat_sources(paths)
    except (KeyError, TypeError):
        raise Miss("damaged", "manifest.json: no sources") from None
    except OSError:
        raise Miss("changed") from None
    if not isinstance(recorded, list) or len(recorded) != len(now):
        raise Miss("damaged", "manifest.json: sources")
    for rec, cur in zip(recorded, now):
        if not isinstance(rec, dict) or any(rec.get(k) != cur[k] for k in ("path", "size", "mtime_ns", "ino")):
            raise Miss("changed")
    if strict_sha is not None and [rec.get("sha256") for rec in recorded] != strict_sha:
        # built from files that are not the official ones (a small test set, loaded leniently)
        raise Miss("changed")
    built = manifest.get("built_ns")
    if not isinstance(built, int) or any(cur["mtime_ns"] >= built - RACY_NS for cur in now):
        raise Miss("racy")


def open_arrays(entry: Path, manifest: dict) -> dict[str, np.ndarray]:
    """The four arrays, memory-mapped read-only; Miss('damaged') for any that is not what the
    manifest says."""
    import numpy as np

    arrays = {}
    for key in KEYS:
        try:
            spec = manifest["arrays"][key]
            path = entry / spec["file"]
            if os.path.basename(spec["file"]) != spec["file"]:
                raise ValueError("bad file name")
            size = os.stat(path).st_size
            mm = np.load(path, mmap_mode="r", allow_pickle=False)
            if (size != spec["bytes"] or list(mm.shape) != spec["shape"] or mm.dtype.str != spec["dtype"]
                    or mm.offset + mm.nbytes != size):
                raise ValueError(f"{spec['file']} has shape {mm.shape}, dtype {mm.dtype}, {size} bytes")
        except (KeyError, TypeError):
            raise Miss("damaged", f"manifest.json: {key}") from None
        except (OSError, ValueError, EOFError) as err:
            raise Miss("damaged", str(err)) from None
        arrays[key] = np.asarray(mm)   # a plain read-only ndarray over the map (no memmap subclass)
    return arrays


def lookup(source_dir: Path, paths: list[Path], strict_sha: list[str] | None) -> dict[str, np.ndarray]:
    """The cached arrays, or Miss saying why not."""
    entry = entry_dir(source_dir)
    if entry is None:
        raise Miss("off")
    manifest = read_manifest(entry)
    check_sources(manifest, paths, strict_sha)
    return open_arrays(entry, manifest)


def arrays_present(entry: Path, manifest: dict) -> bool:
    """Every .npy file of the entry is there with its recorded size (the cheap part of open_arrays)."""
    try:
        return all(os.stat(entry / spec["file"]).st_size == spec["bytes"] for spec in manifest["arrays"].values())
    except (OSError, KeyError, TypeError, AttributeError):
        return False


# What `fmnist data` shows depends only on the files and the split settings: kept beside the arrays,
# it answers a warm `fmnist data` without reading them (or importing numpy). Tied to one build.
SUMMARIES = "summaries.json"
MAX_SUMMARIES = 32


def summary(source_dir: Path, paths: list[Path], strict_sha: list[str] | None, key: str) -> dict | None:
    """The summary stored under `key` for the current entry, when that entry still matches the files."""
    entry = entry_dir(source_dir)
    if entry is None:
        return None
    try:
        manifest = read_manifest(entry)
        check_sources(manifest, paths, strict_sha)
    except Miss:
        return None
    if not arrays_present(entry, manifest):
        return None
    try:
        with open(entry / SUMMARIES, encoding="utf-8") as fh:
            stored = json.load(fh)
        if stored.get("built_ns") != manifest["built_ns"]:
            return None
        found = stored["summaries"].get(key)
    except (OSError, ValueError, UnicodeDecodeError, AttributeError, KeyError, TypeError):
        return None
    return found if isinstance(found, dict) else None


def remember_summary(source_dir: Path, key: str, value: dict) -> None:
    """Store a summary for the current entry (atomically; silently not, where the cache cannot)."""
    entry = entry_dir(source_dir)
    if entry is None:
        return
    try:
        built = read_manifest(entry)["built_ns"]
    except (Miss, KeyError, TypeError):
        return
    stored: dict = {}
    with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
        with open(entry / SUMMARIES, encoding="utf-8") as fh:
            stored = json.load(fh)
    summaries = stored.get("summaries") if isinstance(stored, dict) and stored.get("built_ns") == built else None
    summaries = dict(summaries) if isinstance(summaries, dict) else {}
    summaries.pop(key, None)
    summaries[key] = value
    while len(summaries) > MAX_SUMMARIES:   # the oldest go first
        summaries.pop(next(iter(summaries)))
    tmp = entry / f"{SUMMARIES}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"built_ns": built, "summaries": summaries}, fh)
        os.replace(tmp, entry / SUMMARIES)
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            tmp.unlink()


def recorded_sha(source_dir: Path) -> list | None:
    """The payload checksums the current entry was built from (to tell 'changed' from 'racy')."""
    entry = entry_dir(source_dir)
    try:
        return [s.get("sha256") for s in read_manifest(entry)["sources"]] if entry else None
    except (Miss, KeyError, TypeError, AttributeError):
        return None


@contextlib.contextmanager
def build_lock(entry: Path):
    """An exclusive flock on <entry>/.lock, held while building; yields whether it is held. Waits up
    to LOCK_WAIT_S for another builder, then goes on without it (the writes are atomic anyway)."""
    fd = None
    try:
        import fcntl

        fd = os.open(entry / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        held = True
    except (OSError, ImportError):
        held = False
    try:
        yield held
    finally:
        if fd is not None:
            os.close(fd)   # releases the lock


def write(source_dir: Path, sources: list[dict], built_ns: int, digests: list[str],
          arrays: dict[str, np.ndarray], locked: bool = True) -> bool:
    """Write a new entry (call with the build lock held where there is one: `locked`). False, and
    nothing left behind, when the cache folder cannot take it."""
    import numpy as np

    entry = entry_dir(source_dir)
    if entry is None:
        return False
    token = secrets.token_hex(4)
    written: list[Path] = []
    try:
        manifest = {"version": VERSION, "source_dir": str(source_dir), "built_ns": built_ns,
                    "sources": [dict(s, sha256=d) for s, d in zip(sources, digests)], "arrays": {}}
        for key in KEYS:
            array = np.ascontiguousarray(arrays[key])
            name = f"{key}.{token}.npy"
            tmp = entry / (name + ".tmp")
            written.append(tmp)
            with open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, entry / name)
            written.append(entry / name)
            manifest["arrays"][key] = {"file": name, "shape": list(array.shape), "dtype": array.dtype.str,
                                       "bytes": os.stat(entry / name).st_size}
        tmp = entry / f"manifest.json.{token}.tmp"
        written.append(tmp)
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, entry / "manifest.json")
    except (OSError, ValueError):   # read-only, full, removed under us
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        return False
    if locked:   # without the lock another builder's new files could look like old ones
        _sweep(entry, {spec["file"] for spec in manifest["arrays"].values()})
    return True


def _sweep(entry: Path, keep: set[str]) -> None:
    """Remove the arrays of earlier builds. A reader still holding an old manifest then finds its file
    gone, calls it damaged, and comes back for the lock, behind which it finds this entry."""
    now = time.time()
    with contextlib.suppress(OSError):
        for path in entry.iterdir():
            name = path.name
            stale_tmp = name.endswith(".tmp") and now - path.stat().st_mtime > 600   # a crashed builder's
            if (name.endswith(".npy") and name not in keep) or stale_tmp:
                with contextlib.suppress(OSError):
                    path.unlink()


def prepare(source_dir: Path) -> Path | None:
    """The entry folder, created; None where it cannot be (read-only, no home)."""
    entry = entry_dir(source_dir)
    if entry is None:
        return None
    try:
        entry.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return entry
