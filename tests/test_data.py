
import numpy as np
import pytest

from helpers import invoke, write_idx
from fmnist_cli import data
from fmnist_cli.errors import DataError


def test_reads_good_small_files(tiny_data):
    ds = data.load(tiny_data, strict=False)
    assert ds.x_train.shape == (50, 28, 28) and ds.x_train.dtype == np.uint8
    assert ds.y_test.tolist() == [i % 10 for i in range(20)]


def test_strict_load_refuses_wrong_counts(tiny_data):
    with pytest.raises(DataError, match="holds 50 items where Fashion-MNIST has 60000"):
        data.load(tiny_data)


def test_scaling_is_float32_in_unit_interval():
    x = data.scale(np.array([[0, 255, 128]], dtype=np.uint8))
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0


@pytest.mark.parametrize("broken,problem", [
    (dict(magic=b"\x00\x00\x09\x03"), "not an unsigned-byte IDX"),
    (dict(truncate=100), "truncated"),
    (dict(magic=b"\x00\x00\x08\x02"), "dimensions"),
])
def test_broken_idx_names_file_and_problem(tmp_path, broken, problem):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((5, 28, 28)), **broken)
    with pytest.raises(DataError, match=problem) as err:
        data.read_idx(path, 3)
    assert "train-images-idx3-ubyte.gz" in str(err.value)


def test_corrupt_gzip_is_reported(tmp_path):
    path = write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(10) % 10)
    raw = bytearray(path.read_bytes())
    raw[-6] ^= 0xFF   # break the CRC
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt or truncated"):
        data.read_idx(path, 1)


def test_not_gzip_at_all(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"hello, I am not gzip")
    with pytest.raises(DataError, match="corrupt"):
        data.read_idx(path, 1)


def test_labels_out_of_range(tmp_path):
    path = write_idx(tmp_path / "l.gz", np.array([0, 3, 12]))
    with pytest.raises(DataError, match="label 12"):
        data.read_idx(path, 1)


def test_checksum_mismatch_is_refused(tmp_path):
    path = write_idx(tmp_path / "l.gz", np.arange(10) % 10)
    with pytest.raises(DataError, match="checksum"):
        data.read_idx(path, 1, sha256="0" * 64)


def test_image_and_label_counts_must_agree(tiny_data):
    write_idx(tiny_data / "train-labels-idx1-ubyte.gz", np.arange(49) % 10)
    data._load_dir.cache_clear()
    with pytest.raises(DataError, match="50 images but 49 labels"):
        data.load(tiny_data, strict=False)


def test_missing_files_name_every_place_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "system")
    with pytest.raises(DataError) as err:
        data.locate()
    text = str(err.value)
    assert str(tmp_path / "keras") in text and str(tmp_path / "system") in text
    assert "fmnist data --download" in text and "dataset-fashion-mnist" in text


def test_search_order_prefers_explicit_then_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FMNIST_DATA_DIR", str(tmp_path / "env"))
    assert data.search_dirs(tmp_path / "flag")[0][0] == tmp_path / "flag"
    assert data.search_dirs()[0][0] == tmp_path / "env"
    monkeypatch.delenv("FMNIST_DATA_DIR")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "k"))
    assert [p for p, _ in data.search_dirs()] == [tmp_path / "k" / "datasets" / "fashion-mnist", data.SYSTEM_DIR]


def test_real_data_verifies_and_splits_like_the_book():
    from sklearn.model_selection import train_test_split

    ds = data.load()
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    split = data.make_split(ds)
    # The book: train_test_split(train_scaled, train_target, test_size=0.2, random_state=42)
    _, x_val, _, y_val = train_test_split(ds.x_train / 255.0, ds.y_train, test_size=0.2, random_state=42)
    assert np.array_equal(split.y_val, y_val) and np.allclose(split.x_val, x_val)
    assert len(split.y_train) == 48000


def test_limit_is_a_stratified_subset():
    split = data.make_split(data.load(), limit=1000)
    assert len(split.y_train) == 1000
    assert set(np.bincount(split.y_train, minlength=10)) <= {99, 100, 101}
    assert len(split.y_val) == 12000   # validation stays whole: honest numbers


def test_data_command_shows_source_and_class_counts():
    result = invoke("data")
    assert result.exit_code == 0
    assert "verified" in result.output and "Ankle boot" in result.output and "48,000" in result.output
    js = invoke("data", "--json")
    info = __import__("json").loads(js.output)
    assert sum(info["splits"]["train"]) == 48000 and sum(info["splits"]["test"]) == 10000
    assert info["classes"][0] == "T-shirt/top"


def test_data_command_on_missing_dir_is_a_clean_error(tmp_path):
    result = invoke("data", "--data-dir", tmp_path)
    assert result.exit_code == 2
    assert "not found" in result.output and str(tmp_path) in result.output
    assert "Traceback" not in result.output
