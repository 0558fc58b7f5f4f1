"""Optuna's TPE with its normal-distribution functions computed by SciPy: `use_scipy()`.

Optuna's TPE sampler scores its candidates with truncated-normal masses and draws them by
inverting the normal CDF. To avoid depending on SciPy, Optuna carries a copy of SciPy's
`log_ndtr` and `ndtr` (its `samplers/_tpe/_truncnorm.py`), evaluated one element at a time
in Python (`np.frompyfunc`, or a list of `math.erf` calls): over half of the sampling time
per trial for the bench study's five parameters (~100 mixture components x 24 candidates
each). SciPy, installed with autotune anyway for the GP and QMC samplers, computes the same
functions vectorised in C. The rest of the sampler is Optuna's own, untouched, and the
samples are the same up to float rounding (tests/test_tpe_math.py).
"""

from __future__ import annotations

import functools

import scipy.special

# The functions of Optuna's module replaced here, and SciPy's equivalent of each.
_REPLACEMENTS = {"_log_ndtr": scipy.special.log_ndtr, "_ndtr": scipy.special.ndtr}


@functools.cache
def use_scipy() -> bool:
    """Point Optuna's truncated-normal helpers at SciPy's (once per process); returns whether
    they were found (an Optuna without that module keeps its own code)."""
    try:
        from optuna.samplers._tpe import _truncnorm
    except ImportError:
        return False
    if not all(callable(getattr(_truncnorm, name, None)) for name in _REPLACEMENTS):
        return False
    for name, replacement in _REPLACEMENTS.items():
        setattr(_truncnorm, name, replacement)
    return True
