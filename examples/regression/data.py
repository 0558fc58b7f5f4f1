"""Your own data set: `load(data_dir)` returns autotune.Data of (inputs, targets) tensors.

scikit-learn's diabetes table: 442 patients, 10 features, a disease-progression score one
year later. Features and the target are standardised with the training rows' statistics
only, so `val_rmse` is in units of the target's standard deviation (~77 score points).
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_diabetes

import autotune


def load(data_dir: str) -> autotune.Data:
    x, y = (torch.tensor(a, dtype=torch.float32) for a in load_diabetes(return_X_y=True))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    n_test = 88  # a fixed fifth, evaluated once on the chosen configuration
    train, test = slice(n_test, None), slice(None, n_test)
    x = (x - x[train].mean(0)) / x[train].std(0)
    y = (y - y[train].mean()) / y[train].std()
    # no val split given: the study's val_fraction (0.1) is carved from train, seeded
    return autotune.Data(train=(x[train], y[train]), test=(x[test], y[test]))
