"""The optimizer's step as a direct call of torch's kernel: `fused_step(optimizer)`.

`Optimizer.step()` of a fused Adam, AdamW or SGD, or a foreach RMSprop, ends in one call
(`torch._fused_adam_`, `_fused_adamw_`, `_fused_sgd_`, `torch.optim.rmsprop.
_multi_tensor_rmsprop`), but gets there through ~60 lines of Python a step: the profiling
and hook wrappers, `_init_group` rebuilding six lists, grouping the tensors by device and
dtype. For the small networks searched on a CPU that costs as much as the kernel itself
(MLP 3 x 128: ~140 us a step against ~60 us for the kernel, measured in the training loop,
where the Python runs with caches the matrix products just evicted). And its first call
imports `torch._dynamo` (~1.4 s here; see `autotune.fast._lazy_dynamo`).

`fused_step` returns a callable doing what `optimizer.step()` does: it creates the state on
the first call as `_init_group` creates it (moments, step counts, momentum buffers; same
dtypes and devices), then sends the state tensors and the group's current hyperparameters
(an LR schedule keeps changing `lr`) to the kernel, and records the call where an LR
scheduler looks for it (`optimizer._opt_called`, set by the wrapper schedulers put around
`step`). State is looked up on every call, so `optimizer.load_state_dict` (a resumed trial)
stays in effect. Anything else (other optimizers, several parameter groups, amsgrad,
maximize, capturable, gradient scaling, complex parameters) gets `optimizer.step` itself, and
so does every call while step hooks are registered or a parameter has no gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import SGD, Adam, AdamW, Optimizer, RMSprop
from torch.optim import optimizer as optimizer_module
from torch.optim import rmsprop as rmsprop_module

Step = Callable[[], Any]
Kernel = Callable[[Optimizer, dict[str, Any], list[Tensor], list[Tensor]], None]

# RMSprop's foreach implementation, which RMSprop.step calls (a private function of torch's:
# where a release renames it, RMSprop keeps optimizer.step)
_multi_tensor_rmsprop = getattr(rmsprop_module, "_multi_tensor_rmsprop", None)


def fused_step(optimizer: Optimizer) -> Step:
    """A callable equivalent to `optimizer.step()`, cheaper where the kernel can be called
    directly (see the module docstring); else `optimizer.step` itself."""
    kernel = _direct_kernel(optimizer)
    if kernel is None:
        return optimizer.step

    def step() -> None:
        group = optimizer.param_groups[0]
        params: list[Tensor] = group["params"]
        grads = [p.grad for p in params]
        if _has_hooks(optimizer) or any(g is None for g in grads):
            optimizer.step()  # runs the hooks; skips parameters without gradients
            return
        with torch.no_grad():  # as step() runs: parameters are updated in place
            kernel(optimizer, group, params, grads)  # type: ignore[arg-type]
        optimizer._opt_called = True  # type: ignore[attr-defined]  # as step's LR wrapper

    return step


def _direct_kernel(optimizer: Optimizer) -> Kernel | None:
    """The function that calls `optimizer`'s kernel, or None where it cannot stand in for
    `optimizer.step()` exactly."""
    if len(optimizer.param_groups) != 1:
        return None
    if getattr(optimizer, "grad_scale", None) is not None:  # set by GradScaler
        return None
    group = optimizer.param_groups[0]
    params = group["params"]
    if (group.get("maximize") or group.get("differentiable") or group.get("capturable")
            or not params or len({(p.device, p.dtype) for p in params}) != 1
            or any(torch.is_complex(p) for p in params)):
        return None
    if type(optimizer) in (Adam, AdamW) and group.get("fused") and not group.get("amsgrad"):
        return _adam
    if type(optimizer) is SGD and group.get("fused"):
        return _sgd
    if (type(optimizer) is RMSprop and group.get("foreach") and not group.get("fused")
            and _multi_tensor_rmsprop is not None):
        return _rmsprop
    return None


def _has_hooks(optimizer: Optimizer) -> bool:
    return bool(
        optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
        or optimizer_module._global_optimizer_pre_hooks
        or optimizer_module._global_optimizer_post_hooks)


def _zeros_like(p: Tensor) -> Tensor:
    return torch.zeros_like(p, memory_format=torch.preserve_format)


def _adam(optimizer: Optimizer, group: dict[str, Any], params: list[Tensor],
          grads: list[Tensor]) -> None:
    """torch.optim.adam._fused_adam for one device and dtype, without grad scaling."""
    states = [optimizer.state[p] for p in params]
    for p, state in zip(params, states, strict=True):
        if not state:  # as Adam._init_group creates it for a fused Adam
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = _zeros_like(p)
            state["exp_avg_sq"] = _zeros_like(p)
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
    """torch.optim.sgd._fused_sgd for one device and dtype, without grad scaling."""
    momentum = group["momentum"]
    buffers: list[Tensor] = []
    first = False
    if momentum:
        states = [optimizer.state[p] for p in params]
        first = all(s.get("momentum_buffer") is None for s in states)
        if first:  # the kernel fills them with the first gradients
            for state, g in zip(states, grads, strict=True):
                state["momentum_buffer"] = torch.empty_like(g)
        buffers = [s["momentum_buffer"] for s in states]
    torch._fused_sgd_(params, grads, buffers, weight_decay=group["weight_decay"],
                      momentum=momentum, lr=group["lr"], dampening=group["dampening"],
                      nesterov=group["nesterov"], maximize=False, is_first_step=first,
                      grad_scale=None, found_inf=None)


def _rmsprop(optimizer: Optimizer, group: dict[str, Any], params: list[Tensor],
             grads: list[Tensor]) -> None:
    """torch.optim.rmsprop._multi_tensor_rmsprop, as RMSprop.step calls it."""
    momentum, centered = group["momentum"], group["centered"]
    states = [optimizer.state[p] for p in params]
    for p, state in zip(params, states, strict=True):
        if not state:  # as RMSprop._init_group creates it (not capturable)
            state["step"] = torch.zeros((), dtype=_scalar_dtype())
            state["square_avg"] = _zeros_like(p)
            if momentum > 0:
                state["momentum_buffer"] = _zeros_like(p)
            if centered:
                state["grad_avg"] = _zeros_like(p)
    assert _multi_tensor_rmsprop is not None  # _direct_kernel checked
    _multi_tensor_rmsprop(
        params, grads, [s["square_avg"] for s in states],
        [s["grad_avg"] for s in states] if centered else [],
        [s["momentum_buffer"] for s in states] if momentum > 0 else [],
        [s["step"] for s in states], lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
        weight_decay=group["weight_decay"], momentum=momentum, centered=centered,
        maximize=False, differentiable=False, capturable=False, has_complex=False)


def _scalar_dtype() -> torch.dtype:
    """torch.optim.optimizer._get_scalar_dtype() for a non-fused optimizer."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
