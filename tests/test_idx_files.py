from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from autotune.errors import DataError
from autotune.training import _idx_files as idx_files


def write_folder(folder: Path, suffix: str = ".gz") -> dict[str, bytes]:
    """Four files of distinct made-up bytes (the reader here does not parse IDX headers)."""
    folder.mkdir(parents=True)
    contents = {}
    for i, name in enumerate(idx_files.NAMES):
        payload = bytes([i]) * (1000 + i)
        (folder / (name + suffix)).write_bytes(gzip.compress(payload) if suffix else payload)
        contents[name] = payload
    return contents


@pytest.fixture(autouse=True)
def nothing_read_ahead():
    idx_files.forget()
    yield
    idx_files.forget()


def test_folders_are_the_data_dirs_then_debians_in_the_loaders_order(tmp_path):
    assert idx_files.folders("fashion-mnist", tmp_path) == [
        tmp_path.resolve() / "FashionMNIST" / "raw", idx_files.DEBIAN_FASHION_DIR]
    assert idx_files.folders("mnist", tmp_path) == [tmp_path.resolve() / "MNIST" / "raw"]
    assert idx_files.folders("digits", tmp_path) == []


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_ahead_hands_over_each_files_bytes_once(tmp_path, suffix):
    contents = write_folder(tmp_path / "MNIST" / "raw", suffix)
    thread = idx_files.read_ahead("mnist", tmp_path)
    assert thread is not None
    thread.join(timeout=30)
    paths = idx_files.find(tmp_path / "MNIST" / "raw")
    assert paths is not None and [p.name for p in paths] == [n + suffix for n in idx_files.NAMES]
    assert set(idx_files._ahead) == set(paths)
    for path in paths:
        assert idx_files.read(path) == contents[path.name.removesuffix(".gz")]
    assert idx_files._ahead == {}  # handed over, not kept twice
    assert idx_files.read(paths[0]) == contents[idx_files.NAMES[0]]  # read afresh


def test_read_ahead_without_the_files_starts_nothing(tmp_path):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw" / idx_files.NAMES[0]).write_bytes(b"one of four")
    assert idx_files.read_ahead("mnist", tmp_path) is None
    assert idx_files.read_ahead("digits", tmp_path) is None
    assert idx_files._ahead == {}


def test_a_file_that_failed_ahead_is_read_again_and_its_error_raised(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_folder(folder)
    bad = folder / (idx_files.NAMES[0] + ".gz")
    bad.write_bytes(b"not gzip")
    thread = idx_files.read_ahead("mnist", tmp_path)
    assert thread is not None
    thread.join(timeout=30)
    with pytest.raises(DataError, match=r"cannot read .*train-images-idx3-ubyte\.gz"):
        idx_files.read(bad)
    bad.write_bytes(gzip.compress(b"fixed"))  # fixed since: read again, not the old failure
    thread = idx_files.read_ahead("mnist", tmp_path)
    assert thread is not None
    thread.join(timeout=30)
    bad.write_bytes(gzip.compress(b"fixed again"))
    assert idx_files.read(bad) == b"fixed"  # what was read ahead


def test_forget_drops_what_nobody_took(tmp_path):
    write_folder(tmp_path / "MNIST" / "raw")
    thread = idx_files.read_ahead("mnist", tmp_path)
    assert thread is not None
    thread.join(timeout=30)
    assert len(idx_files._ahead) == 4
    idx_files.forget()
    assert idx_files._ahead == {}
