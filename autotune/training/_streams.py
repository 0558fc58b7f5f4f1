"""A user's `torch.utils.data.Dataset`: held in memory as tensors when it fits, else streamed.

Data that fits a budget (a quarter of the training device's memory, or
$AUTOTUNE_DATA_BUDGET_MB) is read once into tensors on the device and batched by index, like
the built-in data sets. A larger data set, or one whose items change from one read to the
next (random per-item transforms), stays a `Dataset` and is read each epoch by a
`DataLoader` with worker processes and pinned memory: freezing it would freeze its
augmentation.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import (
    ConcatDataset,
    DataLoader,
    Dataset,
    Sampler,
    Subset,
    TensorDataset,
)

from autotune.errors import UsageError

BUDGET_ENV = "AUTOTUNE_DATA_BUDGET_MB"
LOADER_WORKERS_ENV = "AUTOTUNE_LOADER_WORKERS"
READ_BATCH = 512  # items per batch while reading a data set into memory


@dataclass(frozen=True, eq=False)
class Streamed:
    """A split kept as a Dataset: read by a DataLoader each epoch, batches moved to `device`.

    Items are (inputs, target) pairs; targets come out as class indices (int64) or, for a
    regression, float32 (N, K).
    """

    dataset: Dataset[Any]
    example_shape: tuple[int, ...]
    task: str = "classification"
    device: torch.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def to(self, device: str | torch.device) -> Streamed:
        return dataclasses.replace(self, device=torch.device(device))

    def head(self, n: int) -> Streamed:
        """The first `n` items (validation on a subset)."""
        return dataclasses.replace(self, dataset=Subset(self.dataset, range(min(n, len(self)))))

    def loader(self, batch_size: int, generator: torch.Generator | None = None
               ) -> DataLoader[Any]:
        """A DataLoader over the items, with worker processes that stay for the loader's life.

        Shuffled by `generator` when given (in order otherwise): the order of each epoch is
        `torch.randperm` drawn from it, as for tensors held in memory, so the same seed gives
        the same batches either way. The workers' seeds come from a second generator seeded
        from the first, so neither torch's global RNG (dropout) nor the order moves.
        """
        workers = loader_workers()
        sampler = None
        seeds = torch.Generator().manual_seed(0)  # evaluation: in order, RNG untouched
        if generator is not None:
            sampler = EpochOrder(len(self), generator)
            seeds = torch.Generator().manual_seed(generator.initial_seed() + 1)
        return DataLoader(self.dataset, batch_size=batch_size, sampler=sampler,
                          generator=seeds, num_workers=workers,
                          persistent_workers=workers > 0,
                          pin_memory=self.device.type == "cuda")

    def batches(self, loader: DataLoader[Any], limit: int | None = None
                ) -> Iterator[tuple[Tensor, Tensor]]:
        """One pass of `loader`: (inputs, targets) on the device, at most `limit` batches."""
        for inputs, targets in itertools.islice(loader, limit):
            yield (inputs.to(self.device, torch.float32, non_blocking=True),
                   self._targets(targets).to(self.device, non_blocking=True))

    def _targets(self, targets: Tensor) -> Tensor:
        if self.task == "regression":
            return targets.float().reshape(len(targets), -1)
        return targets.long()


class EpochOrder(Sampler[int]):
    """Each epoch one `torch.randperm` from the generator: the order `train.batches` gives
    tensors (torch's RandomSampler draws a second permutation at the end of each pass)."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


def loader_workers() -> int:
    """DataLoader worker processes: $AUTOTUNE_LOADER_WORKERS, else half the cores (up to 4)."""
    value = os.environ.get(LOADER_WORKERS_ENV, "").strip()
    if value:
        return max(0, int(value))
    return min(4, (os.cpu_count() or 2) // 2)


def budget_bytes(device: torch.device) -> int:
    """How much data may be held as tensors: $AUTOTUNE_DATA_BUDGET_MB, else a quarter of the
    device's memory (the GPU's for CUDA, the machine's RAM for the CPU)."""
    value = os.environ.get(BUDGET_ENV, "").strip()
    if value:
        return int(float(value) * 2**20)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 4
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def item(where: str, name: str, dataset: Dataset[Any], index: int) -> tuple[Tensor, Tensor]:
    """Item `index` as (inputs, target) tensors; UsageError naming the split if it is not a
    pair of a tensor and a number or tensor."""
    try:
        got = dataset[index]
    except Exception as exc:
        raise UsageError(f"{where}: Data.{name}[{index}] failed: {type(exc).__name__}: "
                         f"{exc}".splitlines()[0]) from None
    if not (isinstance(got, tuple | list) and len(got) == 2 and isinstance(got[0], Tensor)):
        raise UsageError(f"{where}: Data.{name}[{index}] must be a pair (inputs tensor, "
                         f"target), got {type(got).__name__}")
    return got[0], torch.as_tensor(got[1])


def changes_between_reads(dataset: Dataset[Any], first: tuple[Tensor, Tensor]) -> bool:
    """Whether reading item 0 again gives other inputs: random per-item transforms. torch's
    RNG is put back afterwards, so probing does not move the study's seeds."""
    with torch.random.fork_rng(devices=[]):
        again = dataset[0][0]
    return not (isinstance(again, Tensor) and again.shape == first[0].shape
                and torch.equal(again, first[0]))


def read_all(dataset: Dataset[Any]) -> tuple[Tensor, Tensor]:
    """Every item of a data set, in order, as two stacked tensors."""
    inputs, targets = [], []
    for x, y in DataLoader(dataset, batch_size=READ_BATCH, num_workers=0):
        inputs.append(x)
        targets.append(torch.as_tensor(y))
    return torch.cat(inputs), torch.cat(targets)


def n_classes(dataset: Dataset[Any]) -> int:
    """Classes of a classification data set: its `classes` (as torchvision's have), else its
    `targets`, else the largest label seen in one pass over its items, plus one."""
    base: Dataset[Any] = dataset
    indices: Any = None
    while isinstance(base, Subset):
        subset: Subset[Any] = base
        base, indices = subset.dataset, (subset.indices if indices is None
                                         else [subset.indices[i] for i in indices])
    classes = getattr(base, "classes", None)
    if classes is not None:
        return len(classes)
    targets = getattr(base, "targets", None)
    if targets is not None:
        labels = torch.as_tensor(targets)
        return int(labels[list(indices)].max() if indices is not None else labels.max()) + 1
    return int(read_labels(dataset).max()) + 1


def read_labels(dataset: Dataset[Any]) -> Tensor:
    return torch.cat([torch.as_tensor(y).reshape(-1) for _, y in DataLoader(
        dataset, batch_size=READ_BATCH, num_workers=loader_workers())])


def as_dataset(x: Tensor | Streamed, y: Tensor | None) -> Dataset[Any]:
    """A split as a Dataset, whether it is held as tensors or streamed."""
    return x.dataset if isinstance(x, Streamed) else TensorDataset(x.cpu(), y.cpu())  # type: ignore[union-attr]


def concat(x: Tensor | Streamed, y: Tensor | None, x2: Tensor | Streamed, y2: Tensor | None
           ) -> tuple[Tensor | Streamed, Tensor | None]:
    """Two splits as one (train + val): tensors stay tensors; with a stream, a stream."""
    if isinstance(x, Tensor) and isinstance(x2, Tensor):
        return torch.cat([x, x2]), torch.cat([y, y2])  # type: ignore[list-item]
    stream = x if isinstance(x, Streamed) else x2
    assert isinstance(stream, Streamed)
    return dataclasses.replace(stream, dataset=ConcatDataset(
        [as_dataset(x, y), as_dataset(x2, y2)])), None


def first(x: Tensor | Streamed, n: int) -> Tensor:
    """The inputs of the first `n` examples, on the split's device."""
    if isinstance(x, Tensor):
        return x[:n]
    inputs = torch.stack([x.dataset[i][0] for i in range(min(n, len(x)))])
    return inputs.to(x.device, torch.float32)
