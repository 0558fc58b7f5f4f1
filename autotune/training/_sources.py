"""Data sets named by a scheme: `csv:PATH` (a table of numbers, `target` naming its label or
value columns), `tensors:PATH` (a `.pt` file read with `weights_only=True`, or a `.npz`
file), and, from their own modules, `imagefolder:PATH` and `torchvision:NAME`. `loader`
makes each the loader a user would write, `load(data_dir, val_fraction, split_seed) ->
Data`, which goes through the same seam.

A file that holds one table (a CSV, or tensors `x` and `y`) is split here: a fixed fifth is
held out as the test split (seeded by TEST_SEED, whatever the study's seeds), then the
study's `val_fraction` of the rest is carved for validation (seeded by `split_seed`). CSV
features are standardised with the statistics of the training part only.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autotune.errors import UsageError
from autotune.plugins._references import Data

TEST_FRACTION = 0.2  # of a single table, held out for the one test evaluation
TEST_SEED = 0


def loader(scheme: str, location: str, base_dir: Path, *, target: Sequence[str] = (),
           task: str = "classification", image_size: int | None = None,
           bad_images: str = "skip") -> Callable[[str, float, int], Data]:
    """The `load(data_dir, val_fraction, split_seed)` of a `scheme:location` data set: a
    file or folder relative to `base_dir`, or for torchvision a data set's name."""
    if scheme == "torchvision":
        from autotune.training._torchvision import load_dataset

        return lambda data_dir, val_fraction, split_seed: load_dataset(
            location, data_dir, val_fraction, split_seed)
    path = (base_dir / location).resolve()
    if scheme == "imagefolder":
        from autotune.training import _imagefolder

        return lambda data_dir, val_fraction, split_seed: _imagefolder.load(
            path, image_size, bad_images, val_fraction, split_seed)
    if scheme == "csv":
        return lambda data_dir, val_fraction, split_seed: csv_table(
            path, target, task, val_fraction, split_seed)
    if scheme == "tensors":
        return lambda data_dir, val_fraction, split_seed: tensor_file(
            path, val_fraction, split_seed)
    raise UsageError(f"unknown data scheme '{scheme}'")


def source(scheme: str, path: Path) -> str:
    """How the study records where its data came from: the file and its content's hash."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{scheme}:{path} (sha256 {digest})"


def csv_table(path: Path, target: Sequence[str], task: str, val_fraction: float,
              split_seed: int) -> Data:
    """A CSV file with a header row: `target` columns are the labels (classification: any
    values, numbered in sorted order) or the values to predict (regression: numbers); every
    other column is a numeric feature."""
    where = f"dataset 'csv:{path}'"
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    if len(rows) < 2:
        raise UsageError(f"{where}: needs a header row and at least one row of data")
    header, body = [name.strip() for name in rows[0]], rows[1:]
    missing = [name for name in target if name not in header]
    if missing:
        raise UsageError(f"{where}: no column {', '.join(map(repr, missing))}; columns: "
                         f"{', '.join(header)}")
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise UsageError(f"{where}: line {number} has {len(row)} fields, the header "
                             f"{len(header)}")
    features = [i for i, name in enumerate(header) if name not in target]
    if not features:
        raise UsageError(f"{where}: every column is a target; no feature is left")
    x = np.empty((len(body), len(features)), dtype=np.float32)
    for j, column in enumerate(features):
        x[:, j] = _numbers(where, header[column], [row[column] for row in body])
    columns = [header.index(name) for name in target]
    if task == "regression":
        y = torch.from_numpy(np.stack([_numbers(where, header[c], [row[c] for row in body])
                                       for c in columns], axis=1))
    else:
        if len(columns) != 1:
            raise UsageError(f"{where}: a classification takes one target column, got "
                             f"{len(columns)}")
        labels = [row[columns[0]].strip() for row in body]
        classes = sorted(set(labels), key=_label_order)
        index = {label: i for i, label in enumerate(classes)}
        y = torch.tensor([index[label] for label in labels], dtype=torch.long)
    return _split(where, torch.from_numpy(x), y, val_fraction, split_seed,
                  standardise=True, source=source("csv", path))


def tensor_file(path: Path, val_fraction: float, split_seed: int) -> Data:
    """Tensors from a `.pt` file (torch.load with weights_only=True) or a `.npz` file, under
    the keys x_train, y_train and optionally x_val, y_val, x_test, y_test (used as given), or
    x and y (one table, split here). In a `.pt` file a dict {"train": (x, y), ...} works too."""
    where = f"dataset 'tensors:{path}'"
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                found: dict[str, Any] = {k: torch.from_numpy(archive[k]) for k in archive.files}
        elif path.suffix == ".pt":
            found = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise UsageError(f"{where}: give a .pt or a .npz file")
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"{where}: cannot read: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(found, dict):
        raise UsageError(f"{where}: holds {type(found).__name__}; give a dict of tensors")
    for split in ("train", "val", "test"):  # {"train": (x, y)} -> x_train, y_train
        pair = found.pop(split, None)
        if isinstance(pair, tuple | list) and len(pair) == 2:
            found[f"x_{split}"], found[f"y_{split}"] = pair
    label = source("tensors", path)
    if "x_train" in found and "y_train" in found:
        def pair(split: str) -> tuple[Any, Any] | None:
            return (found[f"x_{split}"], found[f"y_{split}"]) if f"x_{split}" in found \
                else None
        return Data(train=pair("train"), val=pair("val"), test=pair("test"),  # type: ignore[arg-type]
                    source=label)
    if "x" in found and "y" in found:
        return _split(where, torch.as_tensor(found["x"]), torch.as_tensor(found["y"]),
                      val_fraction, split_seed, standardise=False, source=label)
    raise UsageError(f"{where}: needs x_train and y_train (x_val, y_val, x_test, y_test "
                     f"optional), or x and y; found {', '.join(sorted(found)) or 'nothing'}")


def _split(where: str, x: torch.Tensor, y: torch.Tensor, val_fraction: float,
           split_seed: int, *, standardise: bool, source: str) -> Data:
    """One table -> train / val / test: a fixed test fifth, then val from the rest."""
    if len(x) != len(y):
        raise UsageError(f"{where}: {len(x)} inputs but {len(y)} targets")
    n_test = round(TEST_FRACTION * len(x))
    n_val = round(val_fraction * (len(x) - n_test))
    if n_test < 1 or n_val < 1 or len(x) - n_test - n_val < 1:
        raise UsageError(f"{where}: {len(x)} rows are too few for a test fifth, a "
                         f"validation share of {val_fraction} and a training part")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(TEST_SEED))
    test, rest = order[:n_test], order[n_test:]
    shuffled = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(
        split_seed))]
    val, train = shuffled[:n_val], shuffled[n_val:]
    if standardise:  # with the training part's statistics only: nothing of val or test leaks
        mean, std = x[train].mean(0), x[train].std(0)
        x = (x - mean) / torch.where(std > 0, std, torch.ones_like(std))
    return Data(train=(x[train], y[train]), val=(x[val], y[val]), test=(x[test], y[test]),
                source=source)


def _numbers(where: str, column: str, values: list[str]) -> np.ndarray:
    """A column's values as float32; UsageError naming the column and the first bad value."""
    bad = next((v for v in values if not _is_number(v)), None)
    if bad is not None:
        raise UsageError(f"{where}: column '{column}' holds {bad!r}, not a number; every "
                         "column but the target must be numeric")
    return np.array([float(v) for v in values], dtype=np.float32)


def _is_number(value: str) -> bool:
    """A finite number (empty cells, NaN and infinities are not)."""
    try:
        return bool(np.isfinite(float(value)))
    except ValueError:
        return False


def _label_order(label: str) -> tuple[int, float | str]:
    """Numbers in numeric order (2 before 10), then other labels alphabetically."""
    return (0, float(label)) if _is_number(label) else (1, label)
