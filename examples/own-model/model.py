"""Your own PyTorch model, tuned by autotune: `build(params, info)` returns any nn.Module.

`params` holds every param of the study file ([space] and [fixed], names of your choosing);
`info.input_shape` is one example's shape and `info.n_outputs` the number of classes.
"""

from __future__ import annotations

from torch import nn


class ResidualMLP(nn.Module):
    """A small MLP with skip connections: nothing autotune ships."""

    def __init__(self, n_in: int, width: int, n_blocks: int, activation: str, n_out: int):
        super().__init__()
        act = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}[activation]
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(n_in, width), act())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), act())
            for _ in range(n_blocks))
        self.head = nn.Linear(width, n_out)

    def forward(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


def build(params: dict, info) -> nn.Module:
    n_in = 1
    for size in info.input_shape:
        n_in *= size
    return ResidualMLP(n_in, params["hidden"], params["n_blocks"], params["activation"],
                       info.n_outputs)
