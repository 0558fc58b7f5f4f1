"""A training script that knows nothing of autotune, in the style of PyTorch's MNIST
example: flags in, one "Validation set: ... Accuracy: ..." line per epoch out.

autotune runs it once per trial with the trial's params as flags and reads the accuracy
from that line (the study's report_regex); nothing here changes for it.
"""

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn


def main():
    parser = argparse.ArgumentParser(description="an MLP on scikit-learn's 8x8 digits")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.5)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16.0
    y = torch.tensor(y)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    val, fit = order[:359], order[359:]  # a fixed validation fifth

    model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    for epoch in range(1, args.epochs + 1):
        for batch in fit[torch.randperm(len(fit))].split(args.batch_size):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            opt.step()
        print(f"Train Epoch: {epoch}\tLoss: {loss.item():.6f}")
        with torch.no_grad():
            out = model(x[val])
            val_loss = nn.functional.cross_entropy(out, y[val]).item()
            correct = int((out.argmax(1) == y[val]).sum())
        print(f"\nValidation set: Average loss: {val_loss:.4f}, Accuracy: {correct}/{len(val)} "
              f"({100.0 * correct / len(val):.1f}%)\n")


if __name__ == "__main__":
    main()
