"""Augmentation of whole training batches, on the batch's device, drawn from a seeded generator.

The semantics are torchvision's, per image: `RandomCrop(size=(H, W), padding=p)` (pad every
side with `fill`, then crop an H x W window at a uniform random offset) and
`RandomHorizontalFlip(0.5)`; but one call transforms a (N, C, H, W) batch with a handful of
kernels instead of N Python calls, so augmentation costs next to nothing on a GPU.
"""

from __future__ import annotations

import torch
from torch import Tensor


def shift(x: Tensor, dy: Tensor, dx: Tensor, fill: float | Tensor = 0.0) -> Tensor:
    """Move image n by (dy[n], dx[n]) pixels, filling what comes in from outside with `fill`.

    out[n, :, i, j] = x[n, :, i + dy[n], j + dx[n]] where that pixel exists, else `fill`: the
    crop at offset (p + dy, p + dx) of the image padded by p on every side.
    x: (N, C, H, W); dy, dx: (N,) integer tensors on x's device.
    """
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device) + dy[:, None]  # (N, H) source row of each row
    cols = torch.arange(w, device=x.device) + dx[:, None]  # (N, W)
    inside = (((rows >= 0) & (rows < h))[:, None, :, None]
              & ((cols >= 0) & (cols < w))[:, None, None, :])  # (N, 1, H, W)
    gathered = x[
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows.clamp(0, h - 1)[:, None, :, None],
        cols.clamp(0, w - 1)[:, None, None, :],
    ]
    fill_value = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    return torch.where(inside, gathered, fill_value)


def random_crop(x: Tensor, padding: int, generator: torch.Generator,
                fill: float | Tensor = 0.0) -> Tensor:
    """torchvision's RandomCrop(size=(H, W), padding=padding, fill=fill) on every image."""
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding=}")
    if padding == 0:
        return x
    offsets = torch.randint(-padding, padding + 1, (2, len(x)), generator=generator,
                            device=x.device)
    return shift(x, offsets[0], offsets[1], fill)


def random_hflip(x: Tensor, generator: torch.Generator) -> Tensor:
    """torchvision's RandomHorizontalFlip(0.5) on every image, each with probability 1/2."""
    flip = torch.rand(len(x), generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def augment(x: Tensor, generator: torch.Generator, *, crop_padding: int = 0,
            hflip: bool = False, fill: float | Tensor = 0.0) -> Tensor:
    """Random crop (if crop_padding > 0), then random flip (if hflip): torchvision's order."""
    if crop_padding > 0:
        x = random_crop(x, crop_padding, generator, fill)
    if hflip:
        x = random_hflip(x, generator)
    return x
