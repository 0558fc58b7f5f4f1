from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np

# Runs in a fresh interpreter, so Optuna's own functions are still in place unless asked.
SCRIPT = """
import json, sys, warnings
import numpy as np
import optuna
from optuna.samplers._tpe import _truncnorm
from autotune.fast import _tpe_math as tpe_math
warnings.simplefilter("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)
grid = np.concatenate([np.linspace(-45, 12, 400), [-1e3, -38.5, -20.0, -5.0, 0.0, 6.0, 8.5]])
if sys.argv[1] == "scipy":
    assert tpe_math.use_scipy()
values = {"log_ndtr": _truncnorm._log_ndtr(grid).tolist(), "ndtr": _truncnorm._ndtr(grid).tolist()}
sampler = optuna.samplers.TPESampler(seed=3, multivariate=True, group=True, constant_liar=True,
                                     n_startup_trials=5)
study = optuna.create_study(direction="maximize", sampler=sampler)
def objective(trial):
    optimizer = trial.suggest_categorical("optimizer", ["sgd", "adam"])
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    momentum = trial.suggest_float("momentum", 0.0, 0.95) if optimizer == "sgd" else 0.5
    width = trial.suggest_int("width", 4, 128)
    dropout = trial.suggest_float("dropout", 0.0, 0.5, step=0.05)
    return -abs(np.log10(lr) + 2.5) + width / 200 - dropout + momentum / 3
study.optimize(objective, n_trials=40)
print(json.dumps({"values": values, "params": [t.params for t in study.trials]}))
"""


def run(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)


def test_scipy_functions_equal_optunas_own_and_tpe_samples_the_same_points() -> None:
    own, fast = run("own"), run("scipy")
    # equal to 1e-12 relative, or 1e-15 absolute where log_ndtr nears 0 (x > 4: there Optuna's
    # log(1 - erfc) loses digits that SciPy keeps)
    for name in ("log_ndtr", "ndtr"):
        np.testing.assert_allclose(fast["values"][name], own["values"][name], rtol=1e-12,
                                   atol=1e-15, err_msg=name)
    assert len(fast["params"]) == len(own["params"]) == 40
    for number, (a, b) in enumerate(zip(own["params"], fast["params"], strict=True)):
        assert a.keys() == b.keys(), number
        for name in a:
            if isinstance(a[name], float):
                assert math.isclose(a[name], b[name], rel_tol=1e-9), (number, name)
            else:
                assert a[name] == b[name], (number, name)
    # the sampler left its start-up phase and took the conditional parameter as TPE does
    assert any("momentum" in p for p in own["params"][5:])
