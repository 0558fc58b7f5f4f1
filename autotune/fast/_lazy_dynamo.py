"""Keep `torch._dynamo` out of processes that never compile: `skip_dynamo_wrappers()`.

Importing `torch._dynamo` takes ~1.4 s on this project's 2-core CPU, once per process: in
every `autotune.run`, every worker, every test that starts one. Training needs none of it,
but torch.optim's `Optimizer.add_param_group`, `zero_grad`, `state_dict` and
`load_state_dict` are wrapped by `torch._disable_dynamo`, which imports it on the first call
only to mark the method as one the compiler must not trace; outside compiled code the
wrapper then just calls the method. (`Optimizer.step` imports it too, on every call;
`autotune.fast._fused_step` calls the optimizers' kernels directly instead.)

`skip_dynamo_wrappers()` gives those wrappers, while `torch._dynamo` is not loaded, the
method itself as the cached result they look up (the attribute `__dynamo_disable` on the
wrapped function), so they call it without the import. Where torch changes that mechanism
the attribute is simply unused and the import happens as before. autotune never calls an
optimizer method inside compiled code (`compile = true` compiles the model's forward), so
nothing is traced that was meant to be skipped.
"""

from __future__ import annotations

import sys

from torch.optim import Optimizer

_WRAPPED_METHODS = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def skip_dynamo_wrappers() -> None:
    """Let the optimizers' dynamo-disable wrappers call their methods without importing
    torch._dynamo (a no-op once it is loaded)."""
    if "torch._dynamo" in sys.modules:
        return
    for name in _WRAPPED_METHODS:
        method = getattr(Optimizer, name, None)
        raw = getattr(method, "__wrapped__", None)
        if raw is not None and getattr(raw, "__dynamo_disable", None) is None:
            setattr(raw, "__dynamo_disable", raw)
