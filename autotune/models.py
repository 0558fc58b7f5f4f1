"""Model registry: build the network a TrainConfig describes, for images of a given shape.

Weights are initialised from torch's global RNG, which `build_model` seeds with `cfg.seed`
first, so the same config always gives the same initial weights (and the caller's global
RNG state is reset as a side effect).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autotune import rng
from autotune.config import TrainConfig

# (channels, height, width) of one input image, e.g. (1, 8, 8) for digits, (1, 28, 28) for MNIST
InputShape = tuple[int, int, int]


def build_mlp(cfg: TrainConfig, input_shape: InputShape, n_classes: int) -> nn.Module:
    """Flatten → `depth` × (Linear(width) → ReLU [→ Dropout]) → Linear(n_classes)."""
    layers: list[nn.Module] = [nn.Flatten()]
    in_features = input_shape[0] * input_shape[1] * input_shape[2]
    for _ in range(cfg.depth):
        layers += [nn.Linear(in_features, cfg.width), nn.ReLU()]
        if cfg.dropout > 0:
            layers.append(Dropout(cfg.dropout))
        in_features = cfg.width
    layers.append(nn.Linear(in_features, n_classes))
    return nn.Sequential(*layers)


def build_cnn(cfg: TrainConfig, input_shape: InputShape, n_classes: int) -> nn.Module:
    """`depth` x (Conv3x3 [-> BatchNorm] -> ReLU [-> MaxPool2]) -> Flatten -> fc head.

    Block i has `width * 2**i` channels; the head has `fc_units` hidden units. The 2x2
    max-pool is skipped once it would shrink the feature map below 2x2, so deep nets still
    fit small images (depth 3 on 8x8 digits). The head keeps the spatial layout (flatten, not
    global pooling): with two or three conv blocks, where a stroke sits is much of what tells
    digits and garments apart. With `batch_norm` off, each conv gets its bias back.

    The modules run MaxPool before ReLU: max and ReLU commute (ReLU is monotone), so outputs
    and gradients are those of ReLU -> MaxPool, but ReLU touches a quarter of the values
    (+20% training images/s on CPU for width 16, depth 2 on 28x28).
    """
    layers: list[nn.Module] = []
    in_channels, h, w = input_shape
    for i in range(cfg.depth):
        out_channels = cfg.width * 2**i
        # no conv bias under BatchNorm: its shift makes the bias redundant
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1,
                                bias=not cfg.batch_norm))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        if min(h, w) // 2 >= 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        layers.append(nn.ReLU())
        in_channels = out_channels
    layers.append(nn.Flatten())  # in_channels x h x w features
    layers += _dropout(cfg) + [nn.Linear(in_channels * h * w, cfg.fc_units), nn.ReLU()]
    layers += _dropout(cfg) + [nn.Linear(cfg.fc_units, n_classes)]
    # NHWC weights make oneDNN's CPU convolutions run ~1.5x faster here (2-core CPU, width 16,
    # 28x28); the outputs are unchanged and inputs may stay NCHW
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)


def _dropout(cfg: TrainConfig) -> list[nn.Module]:
    return [Dropout(cfg.dropout)] if cfg.dropout > 0 else []


class Dropout(nn.Dropout):
    """`nn.Dropout` whose CPU mask comes from `torch.rand` instead of `bernoulli_`.

    The same distribution (each value kept with probability 1 - p, kept values scaled by
    1 / (1 - p)) from the same global RNG, so seeded runs repeat; about 2x faster on the CPU
    here (128 x 128 activations: 124 -> 64 us forward + backward), where bernoulli_ draws
    element by element. On other devices it is `F.dropout` (a fused kernel there).
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.p >= 1.0:
            return F.dropout(x, self.p, self.training, self.inplace)
        # ge_ leaves 1.0 where kept, 0.0 where dropped; mul_ scales the kept ones
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))


ModelBuilder = Callable[[TrainConfig, InputShape, int], nn.Module]

# The one list of models; keys match config.MODELS and the `model` param of study files.
MODEL_BUILDERS: dict[str, ModelBuilder] = {"mlp": build_mlp, "cnn": build_cnn}


def build_model(cfg: TrainConfig, input_shape: InputShape, n_classes: int) -> nn.Module:
    """Build `cfg.model` for inputs of `input_shape` (C, H, W), seeding torch with `cfg.seed`.

    Returns a module mapping a (batch, C, H, W) float tensor to (batch, n_classes) logits,
    on the CPU; move it to the training device yourself (`fit` does).
    """
    builder = MODEL_BUILDERS.get(cfg.model)
    if builder is None:
        available = ", ".join(sorted(MODEL_BUILDERS))
        raise ValueError(f"unknown model {cfg.model!r}; available: {available}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes=}")
    rng.seed(cfg.seed, torch.device("cpu"))  # built on the CPU
    return builder(cfg, input_shape, n_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars in `model` (BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
