"""The optimizer's step as one direct call of torch's fused kernel: `fused_step(optimizer)`.

`Optimizer.step()` of a fused Adam, AdamW or SGD ends in one kernel call (`torch._fused_adam_`,
`_fused_adamw_`, `_fused_sgd_`), but gets there through ~60 lines of Python a step: the
profiling and hook wrappers, `_init_group` rebuilding six lists, grouping the tensors by device
and dtype. For the small networks searched on a CPU that costs as much as the kernel itself
(MLP 3 x 128: ~140 us a step against ~60 us for the kernel, measured in the training loop,
where the Python runs with caches the matrix products just evicted).

`fused_step` returns a callable doing what `optimizer.step()` does: the first call is
`optimizer.step()` itself (it creates the state: moments, step counts, momentum buffers),
later calls send the same state tensors and the group's current hyperparameters (an LR
schedule keeps changing `lr`) straight to the kernel. State is looked up on every call, so
`optimizer.load_state_dict` (a resumed trial) stays in effect. Anything else (other
optimizers, several parameter groups, amsgrad, maximize, gradient scaling) gets
`optimizer.step` itself, and so does every call while step hooks are registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import SGD, Adam, AdamW, Optimizer
from torch.optim import optimizer as optimizer_module

Step = Callable[[], Any]


def fused_step(optimizer: Optimizer) -> Step:
    """A callable equivalent to `optimizer.step()`, cheaper where the kernel can be called
    directly (see the module docstring); else `optimizer.step` itself."""
    kernel = _direct_kernel(optimizer)
    if kernel is None:
        return optimizer.step
    started = False

    def step() -> None:
        nonlocal started
        group = optimizer.param_groups[0]
        params: list[Tensor] = group["params"]
        if not started or _has_hooks(optimizer) or any(p.grad is None for p in params):
            optimizer.step()  # creates the state; runs hooks; skips parameters without grads
            started = True
            return
        kernel(optimizer, group, params, [p.grad for p in params])  # type: ignore[misc]

    return step


def _direct_kernel(optimizer: Optimizer) -> Callable[..., None] | None:
    """The function that calls `optimizer`'s fused kernel, or None where it cannot stand in
    for `optimizer.step()` exactly."""
    if len(optimizer.param_groups) != 1:
        return None
    if getattr(optimizer, "grad_scale", None) is not None:  # set by GradScaler
        return None
    group = optimizer.param_groups[0]
    if not group.get("fused") or group.get("maximize") or group.get("differentiable"):
        return None
    params = group["params"]
    if not params or len({(p.device, p.dtype) for p in params}) != 1:
        return None
    if type(optimizer) in (Adam, AdamW):
        if group.get("amsgrad") or group.get("capturable"):
            return None
        return _adam
    if type(optimizer) is SGD:
        return _sgd
    return None


def _has_hooks(optimizer: Optimizer) -> bool:
    return bool(
        optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
        or optimizer_module._global_optimizer_pre_hooks
        or optimizer_module._global_optimizer_post_hooks)


def _adam(optimizer: Optimizer, group: dict[str, Any], params: list[Tensor],
          grads: list[Tensor]) -> None:
    """torch.optim.adam._fused_adam for one device and dtype, without grad scaling."""
    states = [optimizer.state[p] for p in params]
    steps = [s["step"] for s in states]
    beta1, beta2 = group["betas"]
    torch._foreach_add_(steps, 1)
    kernel = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
    kernel(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
           [], steps, amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
           weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
           grad_scale=None, found_inf=None)


def _sgd(optimizer: Optimizer, group: dict[str, Any], params: list[Tensor],
         grads: list[Tensor]) -> None:
    """torch.optim.sgd._fused_sgd after its first step, for one device and dtype."""
    momentum = group["momentum"]
    buffers = [optimizer.state[p]["momentum_buffer"] for p in params] if momentum else []
    torch._fused_sgd_(params, grads, buffers, weight_decay=group["weight_decay"],
                      momentum=momentum, lr=group["lr"], dampening=group["dampening"],
                      nesterov=group["nesterov"], maximize=False, is_first_step=False,
                      grad_scale=None, found_inf=None)
