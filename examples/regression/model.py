"""A regression model: `build(params, info)` returns an nn.Module with `info.n_outputs`
outputs per example (1 here: the score)."""

from __future__ import annotations

from torch import nn


def build(params: dict, info) -> nn.Module:
    (n_features,) = info.input_shape
    return nn.Sequential(
        nn.Linear(n_features, params["hidden"]), nn.ReLU(), nn.Dropout(params["dropout"]),
        nn.Linear(params["hidden"], info.n_outputs),
    )
