"""Data folders: uncompressed IDX files (what `gunzip` leaves) are read and verified like the .gz
ones, and a --data-dir that is a file is told so."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest

from helpers import DATA_FILES, assert_clean_error, invoke, real_data_dir, write_idx
from fmnist_cli import data
from fmnist_cli.errors import DataError


@pytest.fixture(autouse=True)
def fresh_cache():
    data._load_dir.cache_clear()
    yield
    data._load_dir.cache_clear()


def tiny_folder(path, compress: bool):
    rng = np.random.default_rng(0)
    path.mkdir()
    arrays = (rng.integers(0, 256, (50, 28, 28)), np.arange(50) % 10,
              rng.integers(0, 256, (20, 28, 28)), np.arange(20) % 10)
    for name, array in zip(DATA_FILES, arrays):
        write_idx(path / (name if compress else name[:-3]), array, compress=compress)
    return path


def test_uncompressed_files_are_read_like_gzipped_ones(tmp_path):
    gz = data.load(tiny_folder(tmp_path / "gz", compress=True), strict=False)
    raw = data.load(tiny_folder(tmp_path / "raw", compress=False), strict=False)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(gz, key), getattr(raw, key))
    assert raw.files == tuple(name[:-3] for name in DATA_FILES) and gz.files == DATA_FILES
    assert data.locate(tmp_path / "raw") == (tmp_path / "raw", "--data-dir")


def test_uncompressed_files_are_checked_the_same_way(tmp_path):
    folder = tiny_folder(tmp_path / "raw", compress=False)
    with pytest.raises(DataError, match="holds 50 items where Fashion-MNIST has 60000"):
        data.load(folder)                                   # strict: the official counts
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(50) % 10, truncate=30, compress=False)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte is truncated"):
        data.load(folder, strict=False)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(50) % 12, compress=False)
    data._load_dir.cache_clear()
    with pytest.raises(DataError, match="label 11"):
        data.load(folder, strict=False)
    path = write_idx(tmp_path / "l", np.arange(10) % 10, compress=False)
    with pytest.raises(DataError, match="checksum"):
        data.read_idx(path, 1, sha256="0" * 64)
    path.write_bytes(b"\x08\x08 not IDX at all")
    with pytest.raises(DataError, match="not an unsigned-byte IDX"):
        data.read_idx(path, 1)
    write_idx(path, np.arange(10) % 10)   # gzipped, under a name without .gz
    with pytest.raises(DataError, match=r"gzip-compressed, but its name does not end in \.gz; rename it to l\.gz"):
        data.read_idx(path, 1)


def test_a_gz_file_is_preferred_and_mixed_folders_work(tmp_path):
    folder = tiny_folder(tmp_path / "mixed", compress=False)
    write_idx(folder / DATA_FILES[1], np.arange(50)[::-1] % 10)      # a .gz beside the uncompressed one
    ds = data.load(folder, strict=False)
    assert ds.files[1] == DATA_FILES[1] and ds.y_train[0] == 9


def test_missing_files_are_named_once(tmp_path):
    folder = tiny_folder(tmp_path / "raw", compress=False)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as err:
        data.locate(folder)
    assert "missing t10k-labels-idx1-ubyte.gz" in str(err.value) and "uncompressed" in str(err.value)


@pytest.mark.parametrize("source", ["--data-dir", "$FMNIST_DATA_DIR"])
def test_a_data_dir_that_is_a_file_is_told_so(source, tmp_path, monkeypatch):
    afile = tmp_path / "train-images-idx3-ubyte.gz"
    afile.write_bytes(b"x")
    args = ["data"]
    if source == "--data-dir":
        args += ["--data-dir", afile]
    else:
        monkeypatch.setenv("FMNIST_DATA_DIR", str(afile))
    message = assert_clean_error(invoke(*args), 2, f"{afile} ({source}) is a file, not a folder", max_sentences=1)
    assert "not found" not in message and "missing" not in message


def test_a_relative_data_dir_is_named_absolutely(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_clean_error(invoke("data", "--data-dir", "nowhere"), 2, f"{tmp_path / 'nowhere'} (--data-dir)")


def test_real_files_uncompressed_verify(tmp_path):
    source = real_data_dir()
    target = tmp_path / "gunzipped"
    target.mkdir()
    for f in data.FILES:
        found = f.find(source)
        opener = gzip.open if found.suffix == ".gz" else open
        with opener(found, "rb") as src, open(target / f.raw_name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    result = invoke("data", "--data-dir", target, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["verified"] and info["directory"] == str(target)
    assert [f["name"] for f in info["files"]] == [name[:-3] for name in DATA_FILES]
    assert sum(info["splits"]["train"]) == 48000
    text = " ".join(invoke("data", "--data-dir", target).stdout.split())
    assert "verified (IDX header, counts" in text   # no gzip to check
    # one byte changed in the payload: the SHA-256 of the payload catches it, as for a .gz
    labels = target / "t10k-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    raw[-1] = (raw[-1] + 1) % 10
    labels.write_bytes(bytes(raw))
    data._load_dir.cache_clear()
    assert_clean_error(invoke("data", "--data-dir", target), 2, "t10k-labels-idx1-ubyte", "checksum")
