"""The data cache (datacache.py): the verified arrays kept as .npy files under $XDG_CACHE_HOME/fmnist/data,
memory-mapped on load; rebuilt (and said so) when the sources change or a cached file is damaged; a
cache folder that cannot be written only means loading from the sources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import DATA_FILES, invoke, real_data_dir, write_idx
from fmnist_cli import data, datacache


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("FMNIST_DATA_CACHE", raising=False)
    data._load_dir.cache_clear()
    yield
    data._load_dir.cache_clear()


def age(folder: Path, seconds: float = 3600) -> None:
    """Date the files back: a file modified just before the cache was built is not trusted (racy)."""
    when = time.time() - seconds
    for path in folder.iterdir():
        os.utime(path, (when, when))


@pytest.fixture
def src(tiny_data) -> Path:
    age(tiny_data)
    return tiny_data


def load(folder):
    data._load_dir.cache_clear()   # the in-process cache: each call goes to the disk cache
    return data.load(folder, strict=False)


def entry(folder: Path) -> Path:
    return datacache.entry_dir(folder.resolve())


def no_verify(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the sources were read although the cache matched")

    monkeypatch.setattr(data, "verify_sources", refuse)


def same(a, b):
    for key in ("x_train", "y_train", "x_test", "y_test"):
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype == y.dtype and np.array_equal(x, y), key


def test_first_load_builds_second_uses(src, tmp_path, monkeypatch, capsys):
    first = load(src)
    assert first.cache == {"directory": str(tmp_path / "xdg" / "fmnist" / "data"), "used": False,
                           "rebuilt": True, "reason": "new"}
    manifest = json.loads((entry(src) / "manifest.json").read_text())
    assert [s["path"] for s in manifest["sources"]] == [str(src.resolve() / n) for n in DATA_FILES]
    assert all(len(s["sha256"]) == 64 and s["mtime_ns"] and s["size"] for s in manifest["sources"])
    no_verify(monkeypatch)
    second = load(src)
    assert second.cache["used"] and not second.cache["rebuilt"]
    same(first, second)
    assert not second.x_train.flags.writeable and not second.y_train.flags.writeable
    assert capsys.readouterr().err == "", "a first build is silent"


def test_touched_source_rebuilds_and_says_so(src, capsys):
    load(src)
    path = src / "train-labels-idx1-ubyte.gz"
    when = time.time() - 1800
    os.utime(path, (when, when))
    ds = load(src)
    assert ds.cache["rebuilt"] and not ds.cache["used"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Rebuilt the Fashion-MNIST cache in" in err and "source files changed" in err
    assert load(src).cache["used"]
    assert capsys.readouterr().err == "", "told once"


def test_changed_source_gives_the_new_numbers(src, capsys):
    load(src)
    write_idx(src / "t10k-labels-idx1-ubyte.gz", (np.arange(20) + 3) % 10)
    age(src)
    ds = load(src)
    assert ds.y_test.tolist() == [(i + 3) % 10 for i in range(20)]
    assert "source files changed" in capsys.readouterr().err


def test_rewrite_with_the_same_size_and_mtime_is_caught(tiny_data, capsys):
    """A file rewritten within the timestamp granularity keeps size and mtime: an entry built from
    files modified just before it is checked against the sources until they are older."""
    load(tiny_data)   # files just written: the entry is racy
    path = tiny_data / "t10k-labels-idx1-ubyte.gz"
    st = path.stat()
    write_idx(path, (np.arange(20) + 1) % 10)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    assert load(tiny_data).y_test.tolist() == [(i + 1) % 10 for i in range(20)]


def test_racy_entry_whose_sources_did_not_change_is_refreshed_silently(tiny_data, monkeypatch, capsys):
    load(tiny_data)
    load(tiny_data)   # re-verified (racy), same payloads: nothing to say
    assert capsys.readouterr().err == ""
    age(tiny_data)
    load(tiny_data)   # mtimes changed: rebuilt once more
    capsys.readouterr()
    no_verify(monkeypatch)
    assert load(tiny_data).cache["used"]


@pytest.mark.parametrize("damage", ["truncate", "dtype", "shape", "missing", "garbage", "manifest"])
def test_damaged_cache_file_rebuilds(src, capsys, damage):
    good = load(src)
    folder = entry(src)
    manifest = json.loads((folder / "manifest.json").read_text())
    npy = folder / manifest["arrays"]["x_train"]["file"]
    if damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:1000])
    elif damage == "dtype":
        np.save(npy, np.zeros((50, 28, 28), dtype=np.float32))
    elif damage == "shape":
        np.save(npy, np.zeros((49, 28, 28), dtype=np.uint8))
    elif damage == "missing":
        npy.unlink()
    elif damage == "garbage":
        npy.write_bytes(b"not a numpy file" * 100)
    else:
        (folder / "manifest.json").write_text("{broken")
    again = load(src)
    same(good, again)
    assert again.cache["rebuilt"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged" in err
    assert load(src).cache["used"]
    files = sorted(p.name for p in folder.iterdir())
    assert len([f for f in files if f.endswith(".npy")]) == 4 and not [f for f in files if f.endswith(".tmp")]


def test_cache_folder_that_cannot_be_made_falls_back(src, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    ds = load(src)
    assert ds.cache["used"] is False and ds.cache["rebuilt"] is False
    assert ds.x_train.shape == (50, 28, 28) and capsys.readouterr().err == ""


def test_full_disk_falls_back_and_leaves_nothing(src, monkeypatch, capsys):
    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    ds = load(src)
    assert not ds.cache["used"] and not ds.cache["rebuilt"] and ds.y_train.shape == (50,)
    assert [p.name for p in entry(src).iterdir()] in ([], [".lock"])
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_cache_folder_falls_back(src, tmp_path):
    root = tmp_path / "xdg" / "fmnist" / "data"
    root.mkdir(parents=True)
    root.chmod(0o555)
    try:
        ds = load(src)
        assert not ds.cache["used"] and not ds.cache["rebuilt"]
    finally:
        root.chmod(0o755)


def test_read_only_entry_is_still_used(src, monkeypatch):
    """A cache that holds a good entry but cannot be written (a read-only mount) is read from."""
    load(src)
    monkeypatch.setattr(datacache, "prepare", lambda *a: None)
    monkeypatch.setattr(datacache, "write", lambda *a: pytest.fail("no write"))
    no_verify(monkeypatch)
    assert load(src).cache["used"]


def test_no_cache_without_a_home(src, tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "no-such-home"))
    ds = load(src)
    assert ds.cache == {"directory": None, "used": False, "rebuilt": False, "reason": None}
    assert not (tmp_path / "no-such-home").exists()


LOADER = """
import hashlib, sys
from fmnist_cli import data
ds = data.load(sys.argv[1], strict=False)
h = hashlib.sha256()
for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
    h.update(a.tobytes())
print(h.hexdigest(), ds.cache["used"], ds.cache["rebuilt"])
"""


def test_two_processes_building_at_once(src, tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    procs = [subprocess.Popen([sys.executable, "-c", LOADER, str(src)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    digests = {out.split()[0] for out, _ in outs}
    assert len(digests) == 1
    assert all(err == "" for _, err in outs), outs
    ds = load(src)
    assert ds.cache["used"]
    h = __import__("hashlib").sha256()
    for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        h.update(a.tobytes())
    assert h.hexdigest() in digests
    assert len(list(entry(src).glob("*.npy"))) == 4


def test_numbers_identical_with_and_without_cache(src, monkeypatch):
    built, cached = load(src), load(src)
    assert cached.cache["used"]
    monkeypatch.setenv("FMNIST_DATA_CACHE", "0")
    plain = load(src)
    assert plain.cache["directory"] is None
    from fmnist_cli import report

    assert report.cache_line(plain.cache) == ("Cache: none ($FMNIST_DATA_CACHE=0); the files are read and "
                                              "verified each time.")
    for ds in (built, cached):
        same(ds, plain)
        a, b = data.make_split(ds, 0.2, 7, 30), data.make_split(plain, 0.2, 7, 30)
        for key in ("x_train", "y_train", "x_val", "y_val"):
            assert np.array_equal(getattr(a, key), getattr(b, key))
        assert a.x_train.flags.writeable and a.y_train.flags.writeable   # the split is the engines' own


@pytest.mark.parametrize("n,val_size,seed", [(60000, 0.2, 42), (50, 0.2, 7), (1000, 0.33, 0), (10, 0.5, 3)])
def test_split_without_sklearn_gives_sklearns_rows(n, val_size, seed):
    from sklearn.model_selection import train_test_split

    train, val = train_test_split(np.arange(n), test_size=val_size, random_state=seed)
    mine = data.split_indices(n, np.arange(n) % 10, val_size, seed, None)
    assert np.array_equal(mine[0], train) and np.array_equal(mine[1], val)


def test_real_data_same_split_with_and_without_cache(monkeypatch):
    folder = real_data_dir()
    first = data.load(folder, verify=True)    # verified in full, cache (re)built
    assert first.cache["rebuilt"] or first.cache["directory"] is None
    data._load_dir.cache_clear()
    cached = data.load(folder)
    assert cached.cache["used"]
    monkeypatch.setenv("FMNIST_DATA_CACHE", "0")
    data._load_dir.cache_clear()
    plain = data.load(folder)
    assert not plain.cache["used"]
    same(cached, plain)
    a, b = data.make_split(cached), data.make_split(plain)
    for key in ("x_train", "y_train", "x_val", "y_val"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key


def test_data_command_reports_the_cache(tmp_path):
    folder = real_data_dir()
    first = json.loads(invoke("data", "--data-dir", folder, "--verify", "--json").stdout)
    assert first["cache"] == {"directory": str(tmp_path / "xdg" / "fmnist" / "data"), "used": False,
                              "rebuilt": True}
    data._load_dir.cache_clear()
    second = json.loads(invoke("data", "--data-dir", folder, "--json").stdout)
    assert second["cache"]["used"] and not second["cache"]["rebuilt"]
    assert second["splits"] == first["splits"]
    data._load_dir.cache_clear()
    text = invoke("data", "--data-dir", folder).stdout
    assert "Cache: " in text and "used" in text


PROBE = ("import sys, atexit\n"
         "atexit.register(lambda: sys.stderr.write('NUMPY=%s\\n' % ('numpy' in sys.modules)))\n"
         "from fmnist_cli.entry import main\n"
         "sys.argv = ['fmnist', 'data', '--json'] + sys.argv[1:]\n"
         "main()\n")


def fmnist_data(tmp_path, *args):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"), FMNIST_DATA_DIR=str(real_data_dir()))
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), "NUMPY=True" in proc.stderr


def test_a_warm_fmnist_data_answers_from_its_stored_summary_without_numpy(tmp_path):
    cold, cold_numpy = fmnist_data(tmp_path)
    warm, warm_numpy = fmnist_data(tmp_path)
    assert cold_numpy and not warm_numpy
    assert cold["cache"]["rebuilt"] and warm["cache"] == {**cold["cache"], "used": True, "rebuilt": False}
    assert {k: v for k, v in warm.items() if k != "cache"} == {k: v for k, v in cold.items() if k != "cache"}
    # other split settings have their own summary; the first one is kept
    limited, limited_numpy = fmnist_data(tmp_path, "--limit", "1000")
    assert limited_numpy and sum(limited["splits"]["train"]) == 1000
    assert fmnist_data(tmp_path, "--limit", "1000") == (limited, False)
    assert fmnist_data(tmp_path)[1] is False


def test_a_stored_summary_is_not_trusted_past_its_cache_entry(tmp_path):
    first, _ = fmnist_data(tmp_path)
    base = tmp_path / "xdg" / "fmnist" / "data"
    (entry_folder,) = [p for p in base.iterdir() if p.is_dir()]
    manifest = json.loads((entry_folder / "manifest.json").read_text())
    npy = entry_folder / manifest["arrays"]["y_test"]["file"]
    npy.write_bytes(npy.read_bytes()[:-10])   # a damaged array: the entry is rebuilt, the summary with it
    again, used_numpy = fmnist_data(tmp_path)
    assert used_numpy and again["cache"]["rebuilt"] and again["splits"] == first["splits"]
    (entry_folder / "summaries.json").write_text("{not json")
    damaged, used_numpy = fmnist_data(tmp_path)
    assert used_numpy and damaged["splits"] == first["splits"]
    assert fmnist_data(tmp_path)[1] is False   # and stored again
