"""Model registry: build the network a TrainConfig describes, for images of a given shape.

Weights are initialised from torch's global RNG, which `build_model` seeds with `cfg.seed`
first, so the same config always gives the same initial weights (and the caller's global
RNG state is reset as a side effect).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autotune.plugins import _references as plugins
from autotune.spec._config import TrainConfig
from autotune.training import _rng as rng

# (channels, height, width) of one input image, e.g. (1, 8, 8) for digits, (1, 28, 28) for MNIST
InputShape = tuple[int, int, int]


def build_mlp(cfg: TrainConfig, input_shape: InputShape, n_classes: int) -> nn.Module:
    """Flatten → `depth` × (Linear(width) → ReLU [→ Dropout]) → Linear(n_classes)."""
    layers: list[nn.Module] = [nn.Flatten()]
    in_features = math.prod(input_shape)  # (C, H, W) images, or (F,) rows of features
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
    """`nn.Dropout` whose CPU mask comes from `keep_scales` instead of `bernoulli_`.

    Each value is kept with probability 1 - p (p rounded to a multiple of 1/65536) and kept
    values are scaled by 1 / (1 - p), drawn from torch's global generator, so seeded runs
    repeat. On the CPU here about 3x faster than `bernoulli_`, which draws element by element
    (128 x 128 activations). On other devices it is `F.dropout` (a fused kernel there).
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.p >= 1.0:
            return F.dropout(x, self.p, self.training, self.inplace)
        return x * keep_scales([x.numel()], self.p)[0].view_as(x)


# Uniform 16-bit lanes, 4 to a 64-bit word: the CPU generator (mt19937) costs about the same
# per 32 bits drawn whatever the dtype, so a float per value (torch.rand) costs 2x as much.
_LANES = 65536
_LANES_PER_WORD = 4


def keep_scales(numels: list[int], p: float) -> list[Tensor]:
    """Inverted-dropout multipliers for several layers, drawn in one call: for each layer a
    flat float32 tensor of numels[i] values, each 1 / (1 - p) (kept) or 0 (dropped).

    Value j is kept when the j-th 16-bit lane of the words drawn for its layer, read as an
    integer u in [0, 65536), is at least round(p * 65536): so with probability 1 - p up to
    1/65536. Layer i gets the next ceil(numels[i] / 4) words of torch's global CPU generator,
    so one call for several layers draws exactly what one call per layer, in order, draws
    (`autotune.fast._mlp_step` draws all its layers at once; `Dropout` draws one).
    """
    words = [-(-n // _LANES_PER_WORD) for n in numels]
    bits = torch.empty(sum(words), dtype=torch.int64).random_(-(2**63), None)
    threshold = round(p * _LANES)  # keep when u >= threshold
    # lane = u - 32768 (the bits read as int16): kept where lane >= threshold - 32768. The
    # comparison writes 1.0 / 0.0 straight into float32, then one multiply: 2 passes, not 4
    # (bits in 3 x 16,384 values: 26 -> 12 us here)
    lanes = bits.view(torch.int16)
    scales = torch.ge(lanes, threshold - _LANES // 2,
                      out=torch.empty(lanes.shape, dtype=torch.float32)).mul_(1.0 / (1.0 - p))
    starts = itertools.accumulate((w * _LANES_PER_WORD for w in words), initial=0)
    return [scales[start : start + n] for start, n in zip(starts, numels, strict=False)]


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
    if n_classes < 1:
        raise ValueError(f"n_classes (outputs) must be >= 1, got {n_classes=}")
    rng.seed(cfg.seed, torch.device("cpu"))  # built on the CPU
    return builder(cfg, input_shape, n_classes)


def mlp(params: dict[str, Any], info: plugins.DataInfo) -> nn.Module:
    """The built-in MLP through the seam a user's model takes (`build_mlp` of the params)."""
    return build_mlp(_config(params, "mlp"), info.input_shape, info.n_outputs)  # type: ignore[arg-type]


def cnn(params: dict[str, Any], info: plugins.DataInfo) -> nn.Module:
    """The built-in CNN through the seam a user's model takes (`build_cnn` of the params)."""
    if len(info.input_shape) != 3:
        raise ValueError(f"model 'cnn' needs images (C, H, W); the data's examples have "
                         f"shape {tuple(info.input_shape)}: use model 'mlp' or your own")
    return build_cnn(_config(params, "cnn"), info.input_shape, info.n_outputs)  # type: ignore[arg-type]


def _config(params: dict[str, Any], model: str) -> TrainConfig:
    """The TrainConfig fields among a study's params (the others are not the built-ins')."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in params.items() if k in fields and k != "model"},
                       model=model)


def build_for(model: str, base_dir: Path, cfg: TrainConfig, params: dict[str, Any],
              input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """The model a study names, built by `build(params, info)` with every param, seeded with
    `cfg.seed`: a registered name's function (the built-in mlp and cnn are two), or a user's
    reference ("file.py:function", relative to `base_dir`, or "package.module:function").
    TypeError if it returns anything but an nn.Module."""
    if model.startswith("torchvision:"):
        from autotune.training import _torchvision

        params = dict(params)
        name = model.partition(":")[2]
        weights = str(params.get("weights") or "")
        if weights and not _torchvision.is_named_weights(name, weights):
            params["weights"] = str(base_dir / weights)  # a path relative to the study file
        rng.seed(cfg.seed, torch.device("cpu"))
        return _torchvision.build_model(name, params,
                                        plugins.DataInfo(tuple(input_shape), n_outputs))
    reference = plugins.reference_for(model, plugins.MODELS)
    build = plugins.load_function(reference, base_dir, "model")
    rng.seed(cfg.seed, torch.device("cpu"))
    model = build(dict(params), plugins.DataInfo(tuple(input_shape), n_outputs))
    if not isinstance(model, nn.Module):
        raise TypeError(f"model '{reference}' returned {type(model).__name__}, not a "
                        "torch.nn.Module")
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars in `model` (BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
