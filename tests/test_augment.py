from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from autotune.training._augment import augment, random_crop, random_hflip, shift


def images(n: int = 6, c: int = 2, h: int = 5, w: int = 7, seed: int = 0) -> torch.Tensor:
    """Distinct positive values everywhere, so a zero can only come from padding."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g) + 1.0


def torchvision_crop(x: torch.Tensor, padding: int, top: int, left: int) -> torch.Tensor:
    """torchvision's RandomCrop(size=(H, W), padding) at a chosen offset: zero pad, then crop."""
    h, w = x.shape[-2:]
    return TF.crop(TF.pad(x, [padding], fill=0), top, left, h, w)


@pytest.mark.parametrize("padding", [1, 2, 4])
def test_shift_equals_torchvision_pad_then_crop_at_every_offset(padding: int) -> None:
    x = images()
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            n = len(x)
            dy, dx = torch.full((n,), top - padding), torch.full((n,), left - padding)
            assert torch.equal(shift(x, dy, dx), torchvision_crop(x, padding, top, left)), (
                top, left)


def test_shift_moves_each_image_by_its_own_offset() -> None:
    x = images(n=3)
    dy, dx = torch.tensor([0, 1, -2]), torch.tensor([3, 0, -1])
    out = shift(x, dy, dx)
    for i in range(3):
        top, left = 4 + int(dy[i]), 4 + int(dx[i])
        assert torch.equal(out[i], torchvision_crop(x[i], 4, top, left))


def test_shift_pads_with_zeros_by_default_and_with_fill_when_given() -> None:
    x = images(n=1, c=1, h=4, w=4)
    down = shift(x, torch.tensor([-1]), torch.tensor([0]))  # row 0 comes from outside
    assert torch.equal(down[0, 0, 0], torch.zeros(4))
    assert torch.equal(down[0, 0, 1:], x[0, 0, :3])
    filled = shift(x, torch.tensor([0]), torch.tensor([2]), fill=torch.tensor(-0.5))
    assert torch.equal(filled[0, 0, :, 2:], torch.full((4, 2), -0.5))


def test_random_crop_gives_torchvision_crops_at_every_offset_uniformly() -> None:
    padding, n = 2, 2000
    x = images(n=1).expand(n, -1, -1, -1).contiguous()
    out = random_crop(x, padding, torch.Generator().manual_seed(0))
    candidates = [torchvision_crop(x[:1], padding, top, left)[0]
                  for top in range(2 * padding + 1) for left in range(2 * padding + 1)]
    counts = [0] * len(candidates)
    for image in out:
        matches = [k for k, c in enumerate(candidates) if torch.equal(image, c)]
        assert len(matches) == 1
        counts[matches[0]] += 1
    expected = n / len(candidates)  # 80 each
    assert min(counts) > 0.5 * expected and max(counts) < 1.5 * expected


def test_random_crop_with_zero_padding_returns_the_batch_unchanged() -> None:
    x = images()
    assert random_crop(x, 0, torch.Generator()) is x


def test_random_crop_rejects_negative_padding() -> None:
    with pytest.raises(ValueError, match="padding must be >= 0, got padding=-1"):
        random_crop(images(), -1, torch.Generator())


def test_random_hflip_flips_about_half_exactly_as_torchvision() -> None:
    x = images(n=400)
    out = random_hflip(x, torch.Generator().manual_seed(0))
    flipped = TF.hflip(x)
    is_flipped = [torch.equal(o, f) for o, f in zip(out, flipped, strict=True)]
    is_same = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(a != b for a, b in zip(is_flipped, is_same, strict=True))
    assert 150 < sum(is_flipped) < 250


def test_augment_repeats_for_the_same_generator_seed_and_differs_for_another() -> None:
    x = images(n=50)

    def run(seed: int) -> torch.Tensor:
        return augment(x, torch.Generator().manual_seed(seed), crop_padding=2, hflip=True)

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_augment_with_nothing_on_returns_the_batch_and_draws_nothing() -> None:
    x = images()
    generator = torch.Generator().manual_seed(0)
    before = generator.get_state()
    assert augment(x, generator) is x
    assert torch.equal(generator.get_state(), before)


def test_augment_crops_then_flips_like_a_torchvision_pipeline() -> None:
    x = images(n=200)
    out = augment(x, torch.Generator().manual_seed(1), crop_padding=1, hflip=True)
    for image, original in zip(out, x, strict=True):
        crops = [torchvision_crop(original, 1, top, left) for top in range(3) for left in range(3)]
        assert any(torch.equal(image, c) or torch.equal(image, TF.hflip(c)) for c in crops)
