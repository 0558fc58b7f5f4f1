"""Optuna's PyTorch example (optuna-examples pytorch/pytorch_simple.py), wired as published.

The baseline of scripts/bench_study.py and, for its data loading, of scripts/bench_train.py:
FashionMNIST through torchvision's dataset and a DataLoader (ToTensor per image, batches of
128, shuffled), an MLP of 1-3 layers of 4-128 units with dropout 0.2-0.5 each, LogSoftmax and
nll_loss, Adam | RMSprop | SGD with a log-uniform lr in [1e-5, 1e-1]; 30 training and 10
validation batches (test images) per epoch, 10 epochs, accuracy reported every epoch;
`optuna.create_study(direction="maximize")` (default TPE and MedianPruner, in-memory storage),
100 trials, timeout 600 s, on the CPU.

Changed from the published file, none of it on the timed path: the datasets are read from
Debian's dataset-fashion-mnist files (gunzipped into a temporary torchvision root) instead of
downloaded; `--seed` seeds the sampler and torch so that runs repeat; `--epochs`,
`--n-trials` and `--timeout` shrink the run for quick checks; `--json` writes every trial
(params, intermediate values, start and end times) for the benchmark.

    python scripts/baseline_optuna_example.py --seed 0 --json trials.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")

# The example's constants.
BATCHSIZE = 128
CLASSES = 10
N_TRAIN_EXAMPLES = BATCHSIZE * 30
N_VALID_EXAMPLES = BATCHSIZE * 10


def torchvision_root(folder: Path, source: Path = DEBIAN_FASHION_DIR) -> Path:
    """A torchvision root holding FashionMNIST/raw/ (gunzipped IDX files), built in `folder`.

    torchvision's FashionMNIST accepts these raw files with download=False.
    """
    raw = folder / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in RAW_FILES:
        if (raw / name).exists():
            continue
        packed = source / f"{name}.gz"
        if not packed.exists():
            raise SystemExit(f"error: {packed} not found; install Debian's dataset-fashion-mnist "
                             "package (apt-get install dataset-fashion-mnist)")
        with gzip.open(packed) as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, help="seed of the sampler and of torch (default: "
                                                 "none, like the example)")
    parser.add_argument("--n-trials", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--root", type=Path, help="torchvision root with FashionMNIST/raw/ "
                                                  "(default: built from Debian's files)")
    parser.add_argument("--json", type=Path, help="write the trials here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or torchvision_root(Path(tmp))
        study = run_example(root, args.seed, args.n_trials, args.timeout, args.epochs)
    if args.json:
        args.json.write_text(json.dumps(trials_as_json(study)))
    print(f"finished trials: {len(study.trials)}; best value: {study.best_value:.4f}; "
          f"best params: {study.best_params}")
    return 0


def run_example(root: Path, seed: int | None, n_trials: int, timeout: float,
                epochs: int) -> Any:
    """The example's __main__ block, with the data root, seed and budget given."""
    import optuna
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torch.optim as optim
    import torch.utils.data
    from torchvision import datasets, transforms

    device = torch.device("cpu")
    if seed is not None:
        torch.manual_seed(seed)

    def define_model(trial: optuna.Trial) -> nn.Module:
        n_layers = trial.suggest_int("n_layers", 1, 3)
        layers: list[nn.Module] = []
        in_features = 28 * 28
        for i in range(n_layers):
            out_features = trial.suggest_int(f"n_units_l{i}", 4, 128)
            layers.append(nn.Linear(in_features, out_features))
            layers.append(nn.ReLU())
            p = trial.suggest_float(f"dropout_l{i}", 0.2, 0.5)
            layers.append(nn.Dropout(p))
            in_features = out_features
        layers.append(nn.Linear(in_features, CLASSES))
        layers.append(nn.LogSoftmax(dim=1))
        return nn.Sequential(*layers)

    def get_mnist():
        train_loader = torch.utils.data.DataLoader(
            datasets.FashionMNIST(str(root), train=True, download=False,
                                  transform=transforms.ToTensor()),
            batch_size=BATCHSIZE, shuffle=True)
        valid_loader = torch.utils.data.DataLoader(
            datasets.FashionMNIST(str(root), train=False, transform=transforms.ToTensor()),
            batch_size=BATCHSIZE, shuffle=True)
        return train_loader, valid_loader

    def objective(trial: optuna.Trial) -> float:
        model = define_model(trial).to(device)
        optimizer_name = trial.suggest_categorical("optimizer", ["Adam", "RMSprop", "SGD"])
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        optimizer = getattr(optim, optimizer_name)(model.parameters(), lr=lr)
        train_loader, valid_loader = get_mnist()
        for epoch in range(epochs):
            model.train()
            for batch_idx, (data, target) in enumerate(train_loader):
                if batch_idx * BATCHSIZE >= N_TRAIN_EXAMPLES:
                    break
                data, target = data.view(data.size(0), -1).to(device), target.to(device)
                optimizer.zero_grad()
                output = model(data)
                loss = F.nll_loss(output, target)
                loss.backward()
                optimizer.step()
            model.eval()
            correct = 0
            with torch.no_grad():
                for batch_idx, (data, target) in enumerate(valid_loader):
                    if batch_idx * BATCHSIZE >= N_VALID_EXAMPLES:
                        break
                    data, target = data.view(data.size(0), -1).to(device), target.to(device)
                    output = model(data)
                    pred = output.argmax(dim=1, keepdim=True)
                    correct += pred.eq(target.view_as(pred)).sum().item()
            accuracy = correct / min(len(valid_loader.dataset), N_VALID_EXAMPLES)
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.exceptions.TrialPruned()
        return accuracy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)  # the default sampler, seeded
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=n_trials, timeout=timeout)
    return study


def trials_as_json(study: Any) -> list[dict[str, object]]:
    """Each trial's state, value, params, per-epoch values and start/end (Unix seconds)."""
    return [{
        "number": t.number,
        "state": t.state.name,
        "value": t.value,
        "params": t.params,
        "intermediate_values": [t.intermediate_values[k] for k in sorted(t.intermediate_values)],
        "start": t.datetime_start.timestamp() if t.datetime_start else None,
        "complete": t.datetime_complete.timestamp() if t.datetime_complete else None,
    } for t in study.trials]


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"wall time: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    sys.exit(code)
