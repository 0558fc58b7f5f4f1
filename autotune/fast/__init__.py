"""Opt-in speed-ups: hand-written CPU steps and kernels for the built-in models, direct
optimizer kernels, batched writes to Optuna's tables, SciPy's truncated normal for TPE.

The core never imports this package. It is an installed plugin (entry point `fast` in the
group `autotune.plugins`): `autotune run` loads it, and `install()` plugs it into the
core's hooks (`autotune.training.use_fit_speedup`, `autotune.storage.use_storage_speedup`).
Set $AUTOTUNE_PLUGINS=none to train and store on plain torch and Optuna only.
"""

from __future__ import annotations

from autotune.fast._hooks import FastStorage, FastTraining, environment_ok

__all__ = ["FastStorage", "FastTraining", "install", "uninstall"]


def install() -> None:
    """Plug every speed-up into the core (idempotent); UsageError for a bad setting."""
    from autotune.fast._tpe_math import use_scipy
    from autotune.storage._storage import use_storage_speedup
    from autotune.training._fit import use_fit_speedup

    environment_ok()
    use_fit_speedup(FastTraining())
    use_storage_speedup(FastStorage())
    use_scipy()  # TPE's truncated normal from SciPy: same samples, a fraction of the time


def uninstall() -> None:
    """Back to plain torch and Optuna (the TPE functions stay SciPy's: same values)."""
    from autotune.storage._storage import use_storage_speedup
    from autotune.training._fit import use_fit_speedup

    use_fit_speedup(None)
    use_storage_speedup(None)
