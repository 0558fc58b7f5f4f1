from __future__ import annotations

import copy
import subprocess
import sys
import warnings

import pytest
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import ExponentialLR
from torch.optim.optimizer import register_optimizer_step_pre_hook

from autotune.fast._fused_step import fused_step

OPTIMIZERS = {
    "adam": lambda params: torch.optim.Adam(params, lr=0.01, fused=True),
    "adam with weight decay": lambda params: torch.optim.Adam(
        params, lr=0.01, betas=(0.8, 0.99), weight_decay=0.01, fused=True),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.05, fused=True),
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1, fused=True),
    "sgd with nesterov momentum": lambda params: torch.optim.SGD(
        params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3, fused=True),
    "sgd with dampened momentum": lambda params: torch.optim.SGD(
        params, lr=0.1, momentum=0.5, dampening=0.3, fused=True),
    "rmsprop": lambda params: torch.optim.RMSprop(params, lr=0.01, foreach=True),
    "rmsprop with momentum, centered": lambda params: torch.optim.RMSprop(
        params, lr=0.01, alpha=0.9, momentum=0.8, centered=True, weight_decay=1e-3,
        foreach=True),
}


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def set_grads(net: nn.Module, step: int) -> None:
    g = torch.Generator().manual_seed(step)
    for p in net.parameters():
        p.grad = torch.randn(p.shape, generator=g)


def run(net: nn.Module, optimizer: torch.optim.Optimizer, step_fn, n_steps: int,  # type: ignore[no-untyped-def]
        first: int = 0) -> None:
    scheduler = ExponentialLR(optimizer, gamma=0.9)  # the LR changes between steps
    for step in range(first, first + n_steps):
        set_grads(net, step)
        step_fn()
        scheduler.step()


def params(net: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fused_step_moves_the_parameters_exactly_as_optimizer_step(name: str) -> None:
    plain, direct = model(), model()
    plain_opt, direct_opt = OPTIMIZERS[name](plain.parameters()), OPTIMIZERS[name](
        direct.parameters())
    step = fused_step(direct_opt)
    assert step != direct_opt.step  # the direct kernel call, after the first step
    run(plain, plain_opt, lambda: plain_opt.step(), 6)
    run(direct, direct_opt, step, 6)
    for a, b in zip(params(plain), params(direct), strict=True):
        assert torch.equal(a, b)
    for p, q in zip(plain.parameters(), direct.parameters(), strict=True):
        assert plain_opt.state[p].keys() == direct_opt.state[q].keys()
        for key, value in plain_opt.state[p].items():
            theirs = direct_opt.state[q][key]
            assert torch.equal(value, theirs) and value.dtype == theirs.dtype, key
            assert value.device == theirs.device, key


@pytest.mark.parametrize("name", ["adam", "sgd with nesterov momentum", "rmsprop"])
def test_fused_step_continues_from_a_loaded_state_as_optimizer_step_does(name: str) -> None:
    first, resumed = model(), model()
    first_opt = OPTIMIZERS[name](first.parameters())
    run(first, first_opt, fused_step(first_opt), 3)
    resumed.load_state_dict(first.state_dict())
    resumed_opt = OPTIMIZERS[name](resumed.parameters())
    # a deep copy, as a checkpoint holds: load_state_dict would share the moment tensors
    resumed_opt.load_state_dict(copy.deepcopy(first_opt.state_dict()))
    step = fused_step(resumed_opt)
    run(first, first_opt, lambda: first_opt.step(), 3, first=3)
    run(resumed, resumed_opt, step, 3, first=3)
    for a, b in zip(params(first), params(resumed), strict=True):
        assert torch.equal(a, b)


def test_fused_step_leaves_other_optimizers_and_settings_to_optimizer_step() -> None:
    net = model()
    for optimizer in (
        torch.optim.NAdam(net.parameters(), foreach=True),
        torch.optim.RMSprop(net.parameters(), foreach=False),
        torch.optim.Adam(net.parameters(), foreach=True),
        torch.optim.Adam(net.parameters(), fused=True, amsgrad=True),
        torch.optim.SGD(net.parameters(), lr=0.1, fused=True, maximize=True),
        torch.optim.Adam([{"params": net[0].parameters()}, {"params": net[2].parameters()}],
                         fused=True),
    ):
        assert fused_step(optimizer) == optimizer.step


def test_fused_step_runs_step_hooks_through_optimizer_step() -> None:
    net = model()
    optimizer = OPTIMIZERS["adam"](net.parameters())
    step = fused_step(optimizer)
    calls: list[int] = []
    handle = register_optimizer_step_pre_hook(lambda *args: calls.append(1))
    try:
        run(net, optimizer, step, 3)
    finally:
        handle.remove()
    assert len(calls) == 3


def test_fused_step_skips_parameters_without_gradients_as_optimizer_step_does() -> None:
    plain, direct = model(), model()
    plain_opt, direct_opt = OPTIMIZERS["adam"](plain.parameters()), OPTIMIZERS["adam"](
        direct.parameters())
    step = fused_step(direct_opt)
    for net, step_fn in ((plain, lambda: plain_opt.step()), (direct, step)):
        for i in range(3):
            set_grads(net, i)
            if i == 2:
                net[2].bias.grad = None  # one parameter without a gradient this step
            step_fn()
    for a, b in zip(params(plain), params(direct), strict=True):
        assert torch.equal(a, b)


def test_an_lr_scheduler_sees_the_direct_steps_as_optimizer_steps() -> None:
    net = model()
    optimizer = OPTIMIZERS["adam"](net.parameters())
    scheduler = ExponentialLR(optimizer, gamma=0.9)
    step = fused_step(optimizer)
    set_grads(net, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "lr_scheduler.step() before optimizer.step()"
        step()
        scheduler.step()


def test_training_with_these_optimizers_never_imports_torch_dynamo() -> None:
    """torch._dynamo takes ~1.4 s to import; a fresh process with the layer installed (as
    `autotune run` installs it) trains without it."""
    code = (
        "import sys, torch\n"
        "import autotune.fast\n"
        "autotune.fast.install()\n"
        "from autotune.spec._config import TrainConfig\n"
        "from autotune.training._models import build_model\n"
        "from autotune.training._fit import fit\n"
        "x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,))\n"
        "for name in ('adam', 'adamw', 'sgd', 'rmsprop'):\n"
        "    for model in ('mlp', 'cnn'):\n"
        "        cfg = TrainConfig(model=model, optimizer=name, momentum=0.5, width=8,\n"
        "                          depth=1, max_epochs=3, batch_size=16, grad_clip=1.0,\n"
        "                          schedule='cosine')\n"
        "        states = []  # checkpoints: the optimizer's state_dict, then a resume\n"
        "        fit(build_model(cfg, (1, 8, 8), 3), x, y, x, y, cfg,\n"
        "            on_checkpoint=states.append)\n"
        "        fit(build_model(cfg, (1, 8, 8), 3), x, y, x, y, cfg, start=states[0])\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, check=True)
    assert result.stdout.strip() == "False", result.stderr
