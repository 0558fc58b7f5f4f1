from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autotune.fast import _onednn as onednn
from autotune.fast._cpu_forward import PlannedSequential, cpu_forward
from autotune.spec._config import TrainConfig
from autotune.training._models import build_model

MNIST = (1, 28, 28)


@pytest.mark.parametrize("cfg", [
    TrainConfig(model="cnn", width=8, depth=2),                          # the mnist study's
    TrainConfig(model="cnn", width=4, depth=3, dropout=0.3, fc_units=40),
    TrainConfig(model="cnn", width=4, depth=1, batch_norm=False),
    TrainConfig(model="mlp", width=32, depth=2),
], ids=["cnn", "cnn-deep-dropout", "cnn-no-batch-norm", "mlp"])
def test_training_steps_through_the_plan_repeat_the_models_own(cfg: TrainConfig, monkeypatch
                                                              ) -> None:  # type: ignore[no-untyped-def]
    # wide layers through oneDNN, as on a CPU with AVX-512, whatever this one has
    monkeypatch.setattr(onednn, "FASTER_HERE", True)
    model = build_model(cfg, MNIST, 10)
    reference = copy.deepcopy(model)
    planned = cpu_forward(model)
    assert isinstance(planned, PlannedSequential)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # a few SGD steps: outputs, gradients and BatchNorm's statistics
        x = torch.randn(16, *MNIST, generator=g).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (16,), generator=g)
        for net, forward in ((model, planned), (reference, reference)):
            torch.manual_seed(5)  # the same dropout masks on both sides
            net.zero_grad()
            F.cross_entropy(forward(x), y).backward()
            with torch.no_grad():
                for p in net.parameters():
                    p -= 0.1 * p.grad
    for (name, got), expected in zip(model.state_dict().items(),
                                     reference.state_dict().values(), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=name)
    planned.eval()
    assert not model.training  # the plan's mode reaches the model's layers
    with torch.no_grad():
        torch.testing.assert_close(planned(x), reference.eval()(x), rtol=1e-4, atol=1e-5)


def test_what_the_plan_does_not_speed_up_is_returned_as_it_is() -> None:
    narrow = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.ReLU(), nn.Linear(8, 3))
    assert cpu_forward(narrow) is narrow
    not_sequential = nn.Linear(784, 10)
    assert cpu_forward(not_sequential) is not_sequential
    doubles = build_model(TrainConfig(model="cnn", width=4, depth=1), MNIST, 10).double()
    assert cpu_forward(doubles) is doubles
