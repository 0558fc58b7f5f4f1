"""`dataset = "imagefolder:PATH"`: images in one folder per class, as torchvision's
ImageFolder lays them out.

PATH holds `train/`, optional `val/` and optional `test/`, each with a folder per class; or
the class folders themselves, whose images are split into train and validation by the
study's `val_fraction` (no test split then). `image_size = N` resizes every image to N x N;
without it every image must have the same size. The images are decoded once into uint8
tensors (1 channel if the first image is gray, else 3) and normalised per channel with the
training part's statistics. An image that cannot be decoded is skipped with one line naming
it (`bad_images = "fail"` refuses the run instead); the count of skipped images is part of
the data source stored on the study.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from autotune.errors import UsageError
from autotune.plugins._references import Data

SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
SPLITS = ("train", "val", "test")


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
    decoder = _Decoder(where, image_size, bad_images)
    splits = {}
    for split, root in roots.items():
        unknown = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in classes)
        if unknown:
            raise UsageError(f"{where}: {split}/ has classes train/ lacks: {', '.join(unknown)}")
        splits[split] = decoder.folder(root, classes)
    x, y = splits["train"]
    if "val" not in splits:
        n_val = round(val_fraction * len(y))
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
        splits["val"] = (x[order[:n_val]], y[order[:n_val]])
        splits["train"] = (x[order[n_val:]], y[order[n_val:]])
    x_train = splits["train"][0].float() / 255
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)

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


class _Decoder:
    """Decodes image files into (C, H, W) uint8 tensors of one shape."""

    def __init__(self, where: str, image_size: int | None, bad_images: str):
        self.where, self.image_size, self.bad_images = where, image_size, bad_images
        self.mode: str | None = None  # "L" (gray) or "RGB", from the first image
        self.shape: tuple[int, ...] | None = None
        self.n_skipped = 0

    def folder(self, root: Path, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for label, name in enumerate(classes):
            folder = root / name
            if not folder.is_dir():
                continue
            for file in sorted(folder.iterdir()):
                if file.suffix.lower() not in SUFFIXES:
                    continue
                image = self.decode(file)
                if image is not None:
                    images.append(image)
                    labels.append(label)
        if not images:
            raise UsageError(f"{self.where}: no readable image in '{root}'")
        return torch.stack(images), torch.tensor(labels)

    def decode(self, file: Path) -> torch.Tensor | None:
        # Pillow (torchvision's own dependency) decodes: torchvision.io's decoders are
        # deprecated since torchvision 0.29
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(file) as opened:
                if self.mode is None:
                    self.mode = "L" if opened.mode in ("1", "L", "I;16", "I") else "RGB"
                picture = opened.convert(str(self.mode))
                if self.image_size is not None:
                    picture = picture.resize((self.image_size, self.image_size),
                                             Image.Resampling.BILINEAR)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            if self.bad_images == "fail":
                raise UsageError(f"{self.where}: cannot decode '{file}' "
                                 f"({str(exc).splitlines()[0][:80]}); bad_images = \"skip\" "
                                 "skips such files") from None
            print(f"warning: skipped '{file}': cannot decode it", file=sys.stderr, flush=True)
            self.n_skipped += 1
            return None
        image = torch.from_numpy(np.asarray(picture).copy())
        image = image[None] if image.dim() == 2 else image.permute(2, 0, 1)  # (C, H, W)
        if self.shape is None:
            self.shape = tuple(image.shape)
        elif tuple(image.shape) != self.shape:
            raise UsageError(f"{self.where}: '{file}' is {tuple(image.shape[1:])}, others "
                             f"{self.shape[1:]}; set image_size = N to resize every image to "
                             "N x N")
        return image
