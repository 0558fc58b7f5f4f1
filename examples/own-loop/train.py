"""Your own training loop, tuned by autotune: train(params, trial) -> the trial's value.

autotune samples `params`, seeds torch, calls this once per trial and records what
`trial.report` gets; `trial.report` raises autotune.Pruned when the trial is losing
(let it propagate). `trial.checkpoint` / `trial.restore` let a trial whose worker died
continue where it stopped, on another worker.
"""

import torch
from sklearn.datasets import load_digits
from torch import nn


def load(val_fraction=0.2, seed=0):
    """scikit-learn's 8x8 digits: a fixed train/validation split, scaled to [0, 1]."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16.0
    y = torch.tensor(y)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(x) * val_fraction)
    return x[order[n_val:]], y[order[n_val:]], x[order[:n_val]], y[order[:n_val]]


def train(params, trial):
    x, y, x_val, y_val = (t.to(trial.device) for t in load())
    model = nn.Sequential(nn.Linear(64, params["hidden"]), nn.ReLU(),
                          nn.Dropout(params["dropout"]), nn.Linear(params["hidden"], 10))
    model.to(trial.device)
    opt = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=params["momentum"])
    first_epoch = 1
    state = trial.restore()  # None unless this trial continues a dead worker's
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        first_epoch = state["epoch"] + 1
    for epoch in range(first_epoch, trial.max_epochs + 1):
        model.train()
        for batch in torch.randperm(len(x), device=x.device).split(params["batch_size"]):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
        trial.report(epoch, accuracy)  # may raise autotune.Pruned: let it go
        trial.checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(),
                          "epoch": epoch})
    return accuracy
