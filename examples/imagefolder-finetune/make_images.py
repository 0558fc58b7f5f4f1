"""Make this example's data and its pretrained backbone, offline, in about 20 s:

- images/{train,val,test}/<digit>/*.png: scikit-learn's 8x8 digits 0-4 as 32x32 RGB PNG
  files, in the folder-per-class layout of torchvision's ImageFolder (60/20/20 split);
- pretrained-resnet18.pt: a torchvision ResNet-18 trained for a few epochs on the *other*
  digits, 5-9: a backbone that has seen strokes, but never the classes tuned on here.

Both go beside this file, or into the folder given as its argument. Then:
    python -m autotune.run --study examples/imagefolder-finetune/study.toml
(With a network, `weights = "DEFAULT"` in study.toml takes torchvision's ImageNet weights
instead of this file.)
"""

import sys
from pathlib import Path

import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_digits

HERE = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent


def as_rgb_32(images: torch.Tensor) -> torch.Tensor:
    """(N, 8, 8) values 0-16 -> (N, 3, 32, 32) uint8."""
    big = torch.nn.functional.interpolate(images[:, None].float() / 16, size=32,
                                          mode="bilinear", align_corners=False)
    return (big.clamp(0, 1) * 255).to(torch.uint8).expand(-1, 3, -1, -1)


def main() -> None:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x).reshape(-1, 8, 8)
    y = torch.tensor(y)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]

    tuned = y < 5
    images, labels = as_rgb_32(x[tuned]), y[tuned]
    n = len(labels)
    for split, part in (("train", slice(0, int(0.6 * n))),
                        ("val", slice(int(0.6 * n), int(0.8 * n))),
                        ("test", slice(int(0.8 * n), n))):
        for i, (image, label) in enumerate(zip(images[part], labels[part], strict=True)):
            folder = HERE / "images" / split / str(int(label))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy(), "RGB").save(folder / f"{i}.png")
    print(f"wrote {n} images of digits 0-4 under {HERE / 'images'}")

    # pretraining on digits 5-9 (labels 0-4 there), ImageNet-style statistics aside
    torch.manual_seed(0)
    other = as_rgb_32(x[~tuned]).float() / 255
    other = (other - other.mean()) / other.std()
    target = y[~tuned] - 5
    model = torchvision.models.resnet18(num_classes=5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for epoch in range(2):
        for batch in torch.randperm(len(target)).split(64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(other[batch]), target[batch])
            loss.backward()
            optimizer.step()
        print(f"pretraining epoch {epoch + 1}: loss {loss.item():.3f}")
    torch.save(model.state_dict(), HERE / "pretrained-resnet18.pt")
    print(f"wrote {HERE / 'pretrained-resnet18.pt'}")


if __name__ == "__main__":
    main()
