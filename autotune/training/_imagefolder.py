"""`dataset = "imagefolder:PATH"`: images in one folder per class, as torchvision's
ImageFolder lays them out.

PATH holds `train/`, optional `val/` and optional `test/`, each with a folder per class; or
the class folders themselves, whose images are split into train and validation by the
study's `val_fraction` (no test split then). `image_size = N` resizes every image to N x N;
without it every image must have the same size. Images are 1 channel if the first is gray,
else 3, normalised per channel with the training part's statistics.

A folder whose images fit the in-memory budget (as float tensors: a quarter of the RAM, or
$AUTOTUNE_DATA_BUDGET_MB) is decoded once into tensors. A larger one is streamed: each
file's header is checked once, the statistics come from a sample of up to STATS_SAMPLE
training images, and the splits are `torch.utils.data.Dataset`s that decode each image
when it is read (in DataLoader worker processes). An image that cannot be decoded is
skipped with one line naming it (`bad_images = "fail"` refuses the run instead); the count
of skipped images is part of the data source stored on the study.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from autotune.errors import UsageError
from autotune.plugins._references import Data
from autotune.training import _streams as streams

SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
SPLITS = ("train", "val", "test")
STATS_SAMPLE = 2_000  # training images a streamed folder's mean and std are taken from

Files = list[tuple[Path, int]]  # (image file, class index)


def load(path: Path, image_size: int | None, bad_images: str, val_fraction: float,
         split_seed: int) -> Data:
    """The splits of an image folder (see the module's description)."""
    where = f"dataset 'imagefolder:{path}'"
    if not path.is_dir():
        raise UsageError(f"{where}: folder '{path}' does not exist")
    roots = {split: path / split for split in SPLITS if (path / split).is_dir()}
    if roots and "train" not in roots:
        raise UsageError(f"{where}: has {', '.join(roots)} but no train/ folder")
    if not roots:
        roots = {"train": path}
    classes = sorted(p.name for p in roots["train"].iterdir() if p.is_dir())
    if len(classes) < 2:
        raise UsageError(f"{where}: '{roots['train']}' needs a folder per class, at least 2; "
                         f"found {len(classes)}")
    listed: dict[str, Files] = {}
    for split, root in roots.items():
        unknown = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in classes)
        if unknown:
            raise UsageError(f"{where}: {split}/ has classes train/ lacks: {', '.join(unknown)}")
        listed[split] = _list(root, classes)
    decoder = _Decoder(where, image_size, bad_images)
    first = _first_image(listed["train"], image_size)  # its mode and size, for all
    if first is None:
        raise UsageError(f"{where}: no readable image in '{roots['train']}'")
    decoder.mode = first[0]
    first_shape = tuple(first[1].shape)
    n_files = sum(len(files) for files in listed.values())
    held = n_files * math.prod(first_shape) * 4  # float32, as trials read them
    if held <= streams.budget_bytes(torch.device("cpu")):
        return _in_memory(path, roots, listed, decoder, classes, val_fraction, split_seed)
    return _streamed(path, roots, listed, decoder, classes, val_fraction, split_seed)


def _first_image(files: Files, image_size: int | None) -> tuple[str, torch.Tensor] | None:
    """The mode ("L" for gray, else "RGB") and pixels of the first readable image."""
    for file, _ in files:
        try:
            mode = _mode(file)
            return mode, _pixels(file, mode, image_size)
        except (OSError, ValueError):  # Pillow's UnidentifiedImageError is an OSError
            continue
    return None


def _mode(file: Path) -> str:
    from PIL import Image

    with Image.open(file) as opened:
        return "L" if opened.mode in ("1", "L", "I;16", "I") else "RGB"


def _list(root: Path, classes: list[str]) -> Files:
    return [(file, label) for label, name in enumerate(classes) if (root / name).is_dir()
            for file in sorted((root / name).iterdir()) if file.suffix.lower() in SUFFIXES]


def _carve(n: int, val_fraction: float, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation indices, training indices) of `n` items: val_fraction of them, seeded."""
    n_val = round(val_fraction * n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    return order[:n_val], order[n_val:]


def _in_memory(path: Path, roots: dict[str, Path], listed: dict[str, Files],
               decoder: _Decoder, classes: list[str], val_fraction: float,
               split_seed: int) -> Data:
    """Every image decoded once into tensors."""
    splits = {split: decoder.files(files, roots[split]) for split, files in listed.items()}
    x, y = splits["train"]
    if "val" not in splits:
        val_idx, train_idx = _carve(len(y), val_fraction, split_seed)
        splits["val"] = (x[val_idx], y[val_idx])
        splits["train"] = (x[train_idx], y[train_idx])
    mean, std = _mean_std(splits["train"][0])

    def normalised(split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if split not in splits:
            return None
        images, labels = splits[split]
        return (images.float() / 255 - mean) / std, labels

    n_images = sum(len(labels) for _, labels in splits.values())
    return Data(train=normalised("train"), val=normalised("val"),  # type: ignore[arg-type]
                test=normalised("test"),
                source=f"imagefolder:{path} ({n_images} images of {len(classes)} classes, "
                       f"{decoder.n_skipped} unreadable skipped)")


def _streamed(path: Path, roots: dict[str, Path], listed: dict[str, Files],
              decoder: _Decoder, classes: list[str], val_fraction: float,
              split_seed: int) -> Data:
    """Headers checked once; the images decoded each time a trial reads them."""
    kept = {split: [(f, label) for f, label in files if decoder.check(f)]
            for split, files in listed.items()}
    for split, files in kept.items():
        if not files:
            raise UsageError(f"{decoder.where}: no readable image in '{roots[split]}'")
    if "val" not in kept:
        val_idx, train_idx = _carve(len(kept["train"]), val_fraction, split_seed)
        kept["val"] = [kept["train"][i] for i in val_idx.tolist()]
        kept["train"] = [kept["train"][i] for i in train_idx.tolist()]
    train = kept["train"]  # all of them, in order, as the in-memory path: the same numbers
    if len(train) > STATS_SAMPLE:
        sample = torch.randperm(len(train), generator=torch.Generator().manual_seed(
            split_seed))[:STATS_SAMPLE]
        train = [train[i] for i in sample.tolist()]
    images, _ = decoder.files(train, roots["train"])
    mean, std = _mean_std(images)

    def dataset(split: str) -> ImageFiles | None:
        if split not in kept:
            return None
        return ImageFiles(kept[split], classes, decoder.mode or "RGB", decoder.image_size,
                          mean, std)

    n_images = sum(len(files) for files in kept.values())
    splits: dict[str, Any] = {split: dataset(split) for split in SPLITS}  # Datasets
    return Data(**splits,
                source=f"imagefolder:{path} ({n_images} images of {len(classes)} classes, "
                       f"{decoder.n_skipped} unreadable skipped)")


def _mean_std(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (1, C, 1, 1) of uint8 images (N, C, H, W), scaled to [0, 1]."""
    scaled = images.float() / 255
    return (scaled.mean(dim=(0, 2, 3), keepdim=True),
            scaled.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6))


class ImageFiles(Dataset[tuple[torch.Tensor, int]]):
    """Image files decoded when read: (normalised (C, H, W) float tensor, class index)."""

    def __init__(self, files: Files, classes: list[str], mode: str, image_size: int | None,
                 mean: torch.Tensor, std: torch.Tensor) -> None:
        self.files = files
        self.classes = classes  # as torchvision's ImageFolder: the number of classes
        self.targets = [label for _, label in files]
        self.mode, self.image_size = mode, image_size
        self.mean, self.std = mean[0], std[0]  # (C, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        file, label = self.files[index]
        image = _pixels(file, self.mode, self.image_size)
        return (image.float() / 255 - self.mean) / self.std, label


def _pixels(file: Path, mode: str, image_size: int | None) -> torch.Tensor:
    """One image file as a (C, H, W) uint8 tensor, converted to `mode` and resized."""
    # Pillow (torchvision's own dependency) decodes: torchvision.io's decoders are
    # deprecated since torchvision 0.29
    from PIL import Image

    with Image.open(file) as opened:
        picture = opened.convert(mode)
        if image_size is not None:
            picture = picture.resize((image_size, image_size), Image.Resampling.BILINEAR)
    image = torch.from_numpy(np.asarray(picture).copy())
    return image[None] if image.dim() == 2 else image.permute(2, 0, 1)


class _Decoder:
    """Decodes image files into (C, H, W) uint8 tensors of one shape."""

    def __init__(self, where: str, image_size: int | None, bad_images: str):
        self.where, self.image_size, self.bad_images = where, image_size, bad_images
        self.mode: str | None = None  # "L" (gray) or "RGB": the first readable image's
        self.shape: tuple[int, ...] | None = None
        self.n_skipped = 0

    def files(self, files: Files, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for file, label in files:
            image = self.decode(file)
            if image is not None:
                images.append(image)
                labels.append(label)
        if not images:
            raise UsageError(f"{self.where}: no readable image in '{root}'")
        return torch.stack(images), torch.tensor(labels)

    def decode(self, file: Path) -> torch.Tensor | None:
        from PIL import UnidentifiedImageError

        try:
            image = _pixels(file, self.mode or _mode(file), self.image_size)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            self.unreadable(file, exc)
            return None
        self.same_shape(file, tuple(image.shape))
        return image

    def check(self, file: Path) -> bool:
        """Whether a file's header reads as an image of the study's size (for streaming:
        its pixels are decoded later, each time it is read)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(file) as opened:
                width, height = opened.size
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            self.unreadable(file, exc)
            return False
        if self.image_size is None:
            channels = self.shape[0] if self.shape else (1 if self.mode == "L" else 3)
            self.same_shape(file, (channels, height, width))
        return True

    def unreadable(self, file: Path, exc: Exception) -> None:
        if self.bad_images == "fail":
            raise UsageError(f"{self.where}: cannot decode '{file}' "
                             f"({str(exc).splitlines()[0][:80]}); bad_images = \"skip\" "
                             "skips such files") from None
        print(f"warning: skipped '{file}': cannot decode it", file=sys.stderr, flush=True)
        self.n_skipped += 1

    def same_shape(self, file: Path, shape: tuple[int, ...]) -> None:
        if self.shape is None:
            self.shape = shape
        elif shape != self.shape:
            raise UsageError(f"{self.where}: '{file}' is {shape[1:]}, others "
                             f"{self.shape[1:]}; set image_size = N to resize every image to "
                             "N x N")
