"""Finding, verifying, reading and splitting Fashion-MNIST. numpy and scikit-learn only: no TensorFlow."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import math
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

from .errors import DataError

if TYPE_CHECKING:   # numpy is imported where it is used: a warm `fmnist data` never needs it
    import numpy as np

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist puts them here


@dataclass(frozen=True)
class IdxFile:
    key: str
    filename: str
    ndim: int      # 3 for images (n, 28, 28), 1 for labels
    count: int
    sha256: str    # of the decompressed payload: the .gz wrappers differ between mirrors, the payloads do not

    @property
    def raw_name(self) -> str:
        """The name of the uncompressed file (what `gunzip` leaves): read and verified alike."""
        return self.filename[:-len(".gz")]

    def find(self, folder: Path) -> Path | None:
        """The file in `folder`, gzipped or not (the .gz first), or None."""
        for name in (self.filename, self.raw_name):
            if (folder / name).is_file():
                return folder / name
        return None


FILES = (
    IdxFile("train_images", "train-images-idx3-ubyte.gz", 3, 60_000,
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    IdxFile("train_labels", "train-labels-idx1-ubyte.gz", 1, 60_000,
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    IdxFile("test_images", "t10k-images-idx3-ubyte.gz", 3, 10_000,
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    IdxFile("test_labels", "t10k-labels-idx1-ubyte.gz", 1, 10_000,
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
)

# For a file that is there but broken: one sentence on getting a good copy.
REPLACE = ("Delete it, then get a fresh copy with `fmnist data --download`, or on Debian/Ubuntu "
           "`sudo apt-get install --reinstall dataset-fashion-mnist`.")
HOW_TO_GET = ("Get the data with `fmnist data --download` (needs internet), or on Debian/Ubuntu "
              "`sudo apt-get install dataset-fashion-mnist`, or point --data-dir / $FMNIST_DATA_DIR "
              "at a folder holding the four files (.gz or uncompressed).")


def keras_cache_dir() -> Path:
    """Where Keras's own downloader keeps the files (it honours $KERAS_HOME)."""
    base = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return base / "datasets" / "fashion-mnist"


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """The places to look, in order. A folder the user names is the only place looked at:
    silently falling back to another copy would hide their mistake."""
    if data_dir:
        return [(_absolute(data_dir), "--data-dir")]
    env = os.environ.get("FMNIST_DATA_DIR")
    if env:
        return [(_absolute(env), "$FMNIST_DATA_DIR")]
    return [(_absolute(keras_cache_dir()), "Keras cache"), (SYSTEM_DIR, "Debian package dataset-fashion-mnist")]


def _absolute(path: str | os.PathLike) -> Path:
    """Messages name folders absolutely, wherever the command was run from."""
    path = Path(path).expanduser()
    try:
        return Path(os.path.abspath(path))
    except OSError:   # the working folder was removed
        return path


def locate(data_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The first place holding all four files, with a label saying which kind of place it is."""
    places = search_dirs(data_dir)
    for path, label in places:
        if label.startswith(("--", "$")) and path.exists() and not path.is_dir():
            raise DataError(f"{path} ({label}) is a file, not a folder; point {label} at the folder that "
                            "holds the four Fashion-MNIST files.")
        if all(f.find(path) for f in FILES):
            return path, label
    lines = []
    for path, label in places:
        missing = [f.filename for f in FILES if not f.find(path)]
        lines.append(f"{path} ({label}): missing {', '.join(missing)}")
    raise DataError("Fashion-MNIST was not found (searched " + "; ".join(lines) + "). " + HOW_TO_GET)


def read_idx(path: Path, ndim: int, count: int | None = None, sha256: str | None = None) -> np.ndarray:
    """Read one IDX file, gzipped (a .gz name) or not, checking everything that can be checked;
    DataError names the problem."""
    return _decode(path, ndim, count, sha256)[0]


def _decode(path: Path, ndim: int, count: int | None, sha256: str | None) -> tuple[np.ndarray, str]:
    """read_idx, also returning the SHA-256 of the decompressed payload (what the cache records)."""
    import numpy as np

    name = path.name
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as fh:
            payload = fh.read()   # reading to the end also checks the gzip CRC and length
    except FileNotFoundError:
        raise DataError(f"{path} does not exist. {HOW_TO_GET}") from None
    except PermissionError:
        raise DataError(f"{path} cannot be read (permission denied).") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} is corrupt or truncated ({err}). {REPLACE}") from None
    if path.suffix != ".gz" and payload[:2] == b"\x1f\x8b":
        raise DataError(f"{path} is gzip-compressed, but its name does not end in .gz; rename it to {name}.gz.")
    if len(payload) < 4:
        raise DataError(f"{name} is too short to be an IDX file ({len(payload)} bytes). {REPLACE}")
    zero, dtype_code, dims = struct.unpack(">HBB", payload[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{name} is not an unsigned-byte IDX file (magic number {payload[:4].hex()}). {REPLACE}")
    if dims != ndim:
        raise DataError(f"{name} has {dims} dimensions where {ndim} were expected; is it the right file?")
    header = 4 + 4 * dims
    if len(payload) < header:
        raise DataError(f"{name} is truncated inside its header. {REPLACE}")
    shape = struct.unpack(">" + "I" * dims, payload[4:header])
    if dims == 3 and shape[1:] != (28, 28):
        raise DataError(f"{name} holds {shape[1]}x{shape[2]} images, not 28x28.")
    if count is not None and shape[0] != count:
        raise DataError(f"{name} holds {shape[0]} items where Fashion-MNIST has {count}. {REPLACE}")
    expected = int(np.prod(shape))
    if len(payload) - header != expected:
        raise DataError(f"{name} is truncated or padded: {len(payload) - header} data bytes for a header "
                        f"that promises {expected}. {REPLACE}")
    digest = hashlib.sha256(payload).hexdigest()
    if sha256 is not None and digest != sha256:
        raise DataError(f"{name} is not the official Fashion-MNIST file (its checksum differs). "
                        f"{REPLACE}")
    array = np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(shape)
    if dims == 1 and array.size and array.max() > 9:
        raise DataError(f"{name} has label {int(array.max())}; Fashion-MNIST labels are 0 to 9.")
    return array, digest


@dataclass
class Dataset:
    """The raw uint8 images and int32 labels, as read and verified (read-only arrays: memory-mapped
    from the cache, or views of the decompressed files)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    directory: Path
    source: str
    files: tuple[str, ...] = ()   # the names read, .gz or not, in the order of FILES
    cache: dict = field(default_factory=dict)   # {"directory", "used", "rebuilt", "reason"}


def load(data_dir: str | os.PathLike | None = None, strict: bool = True, verify: bool = False) -> Dataset:
    """Locate all four files and return their arrays: from the cache (datacache.py) when it matches
    the files, else read and verified in full (and cached). `strict` also checks counts and checksums
    (off only for tests that build small IDX files of their own); `verify` ignores the cache, verifies
    the files and rebuilds it."""
    directory, source = locate(data_dir)
    if verify:
        _load_dir.cache_clear()
        return _load_dir.__wrapped__(directory.resolve(), source, strict, True)
    return _load_dir(directory.resolve(), source, strict)


KEYS = ("x_train", "y_train", "x_test", "y_test")
WHY = {"changed": "the source files changed", "damaged": "a cached file was damaged or missing",
       "racy": "the source files changed"}


@functools.lru_cache(maxsize=2)
def _load_dir(directory: Path, source: str, strict: bool, verify: bool = False) -> Dataset:
    from . import datacache

    paths = [f.find(directory) or directory / f.filename for f in FILES]
    names = tuple(p.name for p in paths)
    strict_sha = [f.sha256 for f in FILES] if strict else None
    root = datacache.root()
    cache = {"directory": None if root is None else str(root), "used": False, "rebuilt": False, "reason": None}

    def done(arrays: dict) -> Dataset:
        return Dataset(*(arrays[k] for k in KEYS), directory, source, names, cache)

    def cached():
        """(the cached Dataset, None), or (None, why the cache cannot serve it)."""
        try:
            found = done(datacache.lookup(directory, paths, strict_sha))
        except datacache.Miss as miss:
            cache.update(used=False)
            return None, miss.reason
        cache.update(used=True)
        return found, None

    reason = "verify"
    if not verify:
        found, reason = cached()
        if found is not None:
            return found
    entry = None if reason == "off" else datacache.prepare(directory)
    if entry is None:   # no cache folder, or one that cannot be written
        return done(verify_sources(paths, strict)[0])
    with datacache.build_lock(entry) as held:
        if held and not verify:   # another process may have built it while this one waited
            found, reason = cached()
            if found is not None:
                return found
        built_ns = time.time_ns()   # before the files are looked at: a later change is caught
        try:
            sources = datacache.stat_sources(paths)
        except OSError:
            sources = None   # vanished: verification names it
        arrays, digests = verify_sources(paths, strict)
        previous = datacache.recorded_sha(directory)
        if sources is None or not datacache.write(directory, sources, built_ns, digests, arrays, held):
            return done(arrays)
    cache.update(rebuilt=True, reason=reason)
    if reason in ("changed", "damaged") or (reason == "racy" and previous != digests):
        print(f"Rebuilt the Fashion-MNIST cache in {datacache.shown(root)} ({WHY[reason]}).",
              file=sys.stderr, flush=True)
    return done(arrays)


def verify_sources(paths: list[Path], strict: bool) -> tuple[dict[str, np.ndarray], list[str]]:
    """Read and verify the four files in full; the arrays by key, and each payload's SHA-256."""
    import numpy as np

    arrays, digests = {}, []
    for f, path in zip(FILES, paths):
        array, digest = _decode(path, f.ndim, f.count if strict else None, f.sha256 if strict else None)
        arrays[f.key] = array
        digests.append(digest)
    for part in ("train", "test"):
        n_img, n_lab = len(arrays[f"{part}_images"]), len(arrays[f"{part}_labels"])
        if n_img != n_lab:
            raise DataError(f"The {part} files disagree: {n_img} images but {n_lab} labels.")
    out = {"x_train": arrays["train_images"], "y_train": arrays["train_labels"].astype(np.int32),
           "x_test": arrays["test_images"], "y_test": arrays["test_labels"].astype(np.int32)}
    for array in out.values():
        array.flags.writeable = False   # as read-only as the cached ones: a write shows up in tests
    return out, digests


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], as the book does with `/ 255.0`."""
    import numpy as np

    # one pass, one float32 array (not astype's copy and then the division's): the same values
    return np.divide(images, np.float32(255.0), dtype=np.float32)


@functools.lru_cache(maxsize=1)
def pixel_values() -> np.ndarray:
    """scale() of every pixel value: a program that gathers from this table gets the very floats numpy
    computes (XLA turns `/ 255` into a multiplication, which differs in the last bit for half of them)."""
    import numpy as np

    return scale(np.arange(256, dtype=np.uint8))


@dataclass
class Split:
    """The training and validation images as uint8 pixels (a quarter of float32's memory: the fused
    engine scales them inside its programs) and, made on first use, as the book's float32 in [0, 1]."""
    pixels_train: np.ndarray
    y_train: np.ndarray
    pixels_val: np.ndarray
    y_val: np.ndarray

    @functools.cached_property
    def x_train(self) -> np.ndarray:
        return scale(self.pixels_train)

    @functools.cached_property
    def x_val(self) -> np.ndarray:
        return scale(self.pixels_val)


def split_indices(n: int, labels: np.ndarray, val_size: float, split_seed: int,
                  limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation parts. Splitting indices gives exactly the rows that
    `train_test_split(x, y, test_size=val_size, random_state=split_seed)` gives, without copying x."""
    import numpy as np

    if isinstance(val_size, float) and 0 < val_size < 1 and isinstance(split_seed, int) and math.ceil(val_size * n) < n:
        # ShuffleSplit's own steps (no scikit-learn import, 0.7 s, for `fmnist data`); a test checks
        # that the rows are the same
        n_val = math.ceil(val_size * n)
        permutation = np.random.RandomState(split_seed).permutation(n)
        train_idx, val_idx = permutation[n_val:], permutation[:n_val]
    else:
        from sklearn.model_selection import train_test_split

        train_idx, val_idx = train_test_split(np.arange(n), test_size=val_size, random_state=split_seed)
    if limit is not None and limit < len(train_idx):
        from sklearn.model_selection import train_test_split

        try:
            train_idx, _ = train_test_split(train_idx, train_size=limit, stratify=labels[train_idx],
                                            random_state=split_seed)
        except ValueError:  # too few images for a stratified pick: fall back to a plain one
            train_idx, _ = train_test_split(train_idx, train_size=limit, random_state=split_seed)
    return train_idx, val_idx


def make_split(dataset: Dataset, val_size: float = 0.2, split_seed: int = 42,
               limit: int | None = None) -> Split:
    train_idx, val_idx = split_indices(len(dataset.y_train), dataset.y_train, val_size, split_seed, limit)
    return Split(dataset.x_train[train_idx], dataset.y_train[train_idx],
                 dataset.x_train[val_idx], dataset.y_train[val_idx])


def class_counts(labels: np.ndarray) -> list[int]:
    import numpy as np

    return np.bincount(labels, minlength=len(CLASS_NAMES)).tolist()


def describe(data_dir: str | os.PathLike | None = None, val_size: float = 0.2, split_seed: int = 42,
             limit: int | None = None, verify: bool = False) -> dict:
    """What `fmnist data` shows: where the files are, that they verified (now, or when the cache was
    built), the cache, class counts per split. Warm, it comes from the cache's stored summaries."""
    from . import datacache

    key = json.dumps([val_size, split_seed, limit])
    if not verify:
        directory, source = locate(data_dir)
        directory = directory.resolve()
        paths = [f.find(directory) or directory / f.filename for f in FILES]
        found = datacache.summary(directory, paths, [f.sha256 for f in FILES], key)
        if found is not None and found.get("directory") == str(directory) and found.get("source") == source:
            root = datacache.root()
            return dict(found, cache={"directory": None if root is None else str(root), "used": True,
                                      "rebuilt": False})
    info = _describe(data_dir, val_size, split_seed, limit, verify)
    if info["cache"].get("used") or info["cache"].get("rebuilt"):
        datacache.remember_summary(Path(info["directory"]), key, {k: v for k, v in info.items() if k != "cache"})
    return info


def _describe(data_dir, val_size: float, split_seed: int, limit: int | None, verify: bool) -> dict:
    ds = load(data_dir, verify=True) if verify else load(data_dir)
    train_idx, val_idx = split_indices(len(ds.y_train), ds.y_train, val_size, split_seed, limit)
    return {
        "directory": str(ds.directory),
        "source": ds.source,
        "verified": True,
        "cache": {k: ds.cache.get(k) for k in ("directory", "used", "rebuilt")},
        "files": [{"name": name, "items": f.count, "sha256": f.sha256} for f, name in zip(FILES, ds.files)],
        "classes": list(CLASS_NAMES),
        "splits": {
            "train": class_counts(ds.y_train[train_idx]),
            "val": class_counts(ds.y_train[val_idx]),
            "test": class_counts(ds.y_test),
        },
        "val_size": val_size,
        "split_seed": split_seed,
        "limit": limit,
    }


def download(target: str | os.PathLike | None = None) -> Path:
    """Fetch the files with Keras's own downloader into its cache (needs internet), then copy them
    into `target` (the --data-dir or $FMNIST_DATA_DIR the user named), if any."""
    from . import backend

    target = target or os.environ.get("FMNIST_DATA_DIR")
    if not target and not os.environ.get("KERAS_HOME") and not backend.home_exists():
        raise DataError(f"The home folder {os.path.expanduser('~')} does not exist, so there is no Keras cache to "
                        "download into; name a folder with --data-dir.")
    backend.configure()
    import keras

    try:
        keras.datasets.fashion_mnist.load_data()
    except Exception as err:  # network errors come in many types (URLError, socket, SSL)
        raise DataError(f"Downloading Fashion-MNIST failed ({err}). Check the internet connection, "
                        "or install it with `sudo apt-get install dataset-fashion-mnist`.") from None
    _load_dir.cache_clear()
    if not target:
        return keras_cache_dir()
    import shutil

    target = Path(target).expanduser()
    try:
        target.mkdir(parents=True, exist_ok=True)
        for f in FILES:
            shutil.copyfile(keras_cache_dir() / f.filename, target / f.filename)
    except OSError as err:
        raise DataError(f"Downloaded, but could not copy the files into {target} ({err.strerror}); "
                        f"they are in {keras_cache_dir()}.") from None
    return target
