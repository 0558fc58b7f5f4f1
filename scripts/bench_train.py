"""Training throughput: autotune's `fit` on in-memory tensors against the Optuna example's loop.

Every side trains the same model (same seed) with Adam, batches of 128, on the CPU, for the
same number of batches per epoch:

  autotune  `autotune.training.fit` on fashion-mnist tensors held in memory (shuffled by
            index on the device), with the speed-up layer (`autotune.fast`) installed.
  plain     the same `fit` without the layer: plain torch (autograd, `model(x)`,
            `optimizer.step()`), as a user's own model always trains. Its ratio to the
            example is what in-memory batching alone is worth.
  example   the loop of optuna-examples pytorch/pytorch_simple.py: a DataLoader over
            torchvision's FashionMNIST dataset with `transforms.ToTensor()` per image
            (batch_size=128, shuffle=True), `torch.optim.Adam(params, lr=...)`.

The models: the built-in MLPs and CNN (`autotune.training.build_model`), and "own mlp", an
nn.Module this script defines (a residual MLP with LayerNorm, as a user would write one):
no speed-up knows it, so autotune and plain train it alike.

  autograd  (with --autograd) autotune's `fit` as above, but with the model's layers in an
            `nn.Sequential` subclass, which `autotune.fast._mlp_step` does not take:
            autograd's step instead of the MLP's written-out backward.

Each side runs in its own process, so neither inherits the other's settings (threads are the
same for both). They take turns, A B then B A, for --repeats rounds; each measurement is the
second of two epochs (the first warms up), training only. Printed: median images/s of each,
the ratio, and the 1-minute load average before and after (CPU timings are only comparable
on an otherwise idle machine).

    python scripts/bench_train.py                 # 4 models, 30 batches per epoch, 7 rounds
    python scripts/bench_train.py --quick         # seconds: a smoke test of the script
    python scripts/bench_train.py --autograd --models "mlp 3x128"   # the written-out step's gain
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when spawned

# name -> (TrainConfig fields, the target ratio to the example: autotune's, or for a user's
# own model the plain path's)
MODELS: dict[str, tuple[dict[str, object], float]] = {
    # the example's space: 1-3 layers of 4-128 units; the middle of it, then its widest
    "mlp 2x64": ({"model": "mlp", "depth": 2, "width": 64, "dropout": 0.2}, 8.0),
    "mlp 1x128": ({"model": "mlp", "depth": 1, "width": 128, "dropout": 0.2}, 8.0),
    "mlp 3x128": ({"model": "mlp", "depth": 3, "width": 128, "dropout": 0.2}, 8.0),
    "cnn w16 d2": ({"model": "cnn", "depth": 2, "width": 16, "dropout": 0.0}, 2.0),
    "own mlp": ({"model": "mlp", "depth": 2, "width": 64, "dropout": 0.0}, 5.0),
}
OWN = "own mlp"
SIDES = ("autotune", "plain", "example")
AUTOGRAD = "autograd"
BATCH_SIZE = 128
LR = 1e-3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="rounds of A B / B A (default 7)")
    parser.add_argument("--batches", type=int, default=30,
                        help="batches of 128 per timed epoch (default 30, as the example)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated subset of: {', '.join(MODELS)}")
    parser.add_argument("--threads", type=int, help="torch threads in both processes "
                                                    "(default: torch's choice, the cores)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for the 1-minute load to fall below 1")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 batches")
    parser.add_argument("--autograd", action="store_true",
                        help="also time autotune's fit with autograd's step (a third side)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.batches = 2, 3
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; available: {', '.join(MODELS)}")
    wait_quiet(args.wait_quiet)
    sides = SIDES + (AUTOGRAD,) if args.autograd else SIDES

    load_before = os.getloadavg()[0]
    rates: dict[tuple[str, str], list[float]] = {(n, s): [] for n in names for s in sides}
    with (tempfile.TemporaryDirectory() as tmp,
          Workers(Path(tmp), args.threads, sides) as workers):
        for round_ in range(args.repeats):
            for name in names:
                for side in sides if round_ % 2 == 0 else sides[::-1]:
                    rates[name, side].append(workers.measure(side, name, args.batches))
    load_after = os.getloadavg()[0]

    print(f"training images/s, median of {args.repeats} (epochs of {args.batches} batches of "
          f"{BATCH_SIZE}); threads: {workers.threads}; "
          f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    print("ratio: the median of the rounds' ratios (each round's two sides measured back to "
          "back, so a drift in the machine's speed\nreaches both); range: its lowest and "
          "highest round")
    print("target: autotune's ratio for the built-in models, the plain path's for a user's "
          "own model (in-memory batching alone)")
    autograd_header = f" {'autograd':>9} {'gain':>6}" if args.autograd else ""
    print(f"{'model':<12} {'autotune':>9} {'plain':>9} {'example':>9} {'ratio':>7} "
          f"{'range':>12} {'plain':>7} {'layer':>6} {'target':>7}       {autograd_header}")
    for name in names:
        def ratios(side: str, name: str = name) -> list[float]:
            return [a / b for a, b in zip(rates[name, side], rates[name, "example"],
                                          strict=True)]
        fast = statistics.median(rates[name, "autotune"])
        plain = statistics.median(rates[name, "plain"])
        slow = statistics.median(rates[name, "example"])
        paired = ratios("autotune")
        ratio, plain_ratio = statistics.median(paired), statistics.median(ratios("plain"))
        target = MODELS[name][1]
        verdict = "met" if (plain_ratio if name == OWN else ratio) >= target else "MISSED"
        autograd = ""
        if args.autograd:  # autotune's loop with autograd's step, and what writing it out gains
            step = statistics.median(rates[name, AUTOGRAD])
            autograd = f" {step:>9.0f} {fast / step:>5.2f}x"
        spread = f"{min(paired):.1f}-{max(paired):.1f}x"
        print(f"{name:<12} {fast:>9.0f} {plain:>9.0f} {slow:>9.0f} {ratio:>6.1f}x {spread:>12} "
              f"{plain_ratio:>6.1f}x {fast / plain:>5.2f}x {target:>6.0f}x {verdict:<6}"
              f"{autograd}")
    return 0


def wait_quiet(limit_s: float, below: float = 1.0) -> None:
    """Wait (up to limit_s) until other work leaves the machine: timings need idle cores."""
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] >= below and time.monotonic() < deadline:
        time.sleep(5)


class Workers:
    """One warm process per side; `measure` asks one of them for one timed epoch."""

    def __init__(self, tmp: Path, threads: int | None, sides: tuple[str, ...] = SIDES) -> None:
        self.tmp, self.threads, self.sides = tmp, threads, sides

    def __enter__(self) -> Workers:
        ctx = mp.get_context("spawn")  # a fresh interpreter: no shared torch or malloc state
        self.conns: dict[str, Connection] = {}
        self.procs = []
        for side in self.sides:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=serve, args=(side, child, self.tmp, self.threads))
            proc.start()
            self.conns[side] = parent
            self.procs.append(proc)
        ready = {side: self.conns[side].recv() for side in self.sides}  # each loads its data
        self.threads = ready["autotune"]
        return self

    def measure(self, side: str, name: str, n_batches: int) -> float:
        self.conns[side].send((name, n_batches))
        reply = self.conns[side].recv()
        if isinstance(reply, str):
            raise RuntimeError(f"{side} worker failed: {reply}")
        return float(reply)

    def __exit__(self, *exc: object) -> None:
        for conn in self.conns.values():
            conn.send(None)
        for proc in self.procs:
            proc.join(timeout=30)


def serve(side: str, conn: Connection, tmp: Path, threads: int | None) -> None:
    """Worker process: load the data once, then answer (model, n_batches) with images/s."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    measure = example_side(tmp) if side == "example" else autotune_side(side)
    conn.send(torch.get_num_threads())
    while (request := conn.recv()) is not None:
        name, n_batches = request
        try:
            conn.send(measure(name, n_batches))
        except Exception as exc:  # report it to the parent instead of hanging it
            conn.send(f"{type(exc).__name__}: {exc}")


def config(name: str, n_batches: int):  # type: ignore[no-untyped-def]
    from autotune.spec._config import TrainConfig

    return TrainConfig(**MODELS[name][0], optimizer="adam", lr=LR,  # type: ignore[arg-type]
                       batch_size=BATCH_SIZE, max_epochs=2, max_batches_per_epoch=n_batches,
                       val_subset=BATCH_SIZE, seed=0)


def build(name: str, cfg):  # type: ignore[no-untyped-def]
    """The model `name` stands for, seeded: a built-in one, or the script's own."""
    import torch
    from torch import nn

    from autotune.training import build_model

    if name != OWN:
        return build_model(cfg, (1, 28, 28), 10)

    class ResidualMLP(nn.Module):  # a user's model: nothing autotune recognises
        def __init__(self, width: int, depth: int):
            super().__init__()
            self.stem = nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.GELU())
            self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width),
                                                      nn.Linear(width, width), nn.GELU())
                                        for _ in range(depth))
            self.head = nn.Linear(width, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.stem(x)
            for block in self.blocks:
                h = h + block(h)
            return self.head(h)

    torch.manual_seed(cfg.seed)
    return ResidualMLP(cfg.width, cfg.depth)


def autotune_side(side: str):  # type: ignore[no-untyped-def]
    from torch import nn

    from autotune.training import fit, load_splits

    if side != "plain":
        import autotune.fast  # a script may: the layer is plugged in as `autotune run` does

        autotune.fast.install()
    splits = load_splits("fashion-mnist", data_dir=None, val_fraction=0.1, split_seed=0,
                         on_notice=lambda message: None)

    def measure(name: str, n_batches: int) -> float:
        cfg = config(name, n_batches)
        model = build(name, cfg)
        if side == AUTOGRAD and name != OWN:
            model = AutogradStep(*model)
        # a user's model trains plain in a study, whether or not the layer is installed
        result = fit(model, splits.x_train, splits.y_train, splits.x_val, splits.y_val, cfg,
                     plain=side == "plain" or name == OWN)
        return n_batches * BATCH_SIZE / result.epochs[-1].seconds  # the warm second epoch

    class AutogradStep(nn.Sequential):
        """The same layers; a subclass, so `mlp_step` leaves it to autograd."""

    return measure


def example_side(tmp: Path):  # type: ignore[no-untyped-def]
    import torch
    import torch.nn.functional as F
    from baseline_optuna_example import torchvision_root
    from torchvision import datasets, transforms

    dataset = datasets.FashionMNIST(str(torchvision_root(tmp)), train=True, download=False,
                                    transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True)
    device = torch.device("cpu")

    def measure(name: str, n_batches: int) -> float:
        cfg = config(name, n_batches)
        model = build(name, cfg).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)  # as the example builds it
        for _ in range(2):  # time the second epoch, like the autotune side
            start = time.perf_counter()
            model.train()
            for batch_idx, (data, target) in enumerate(loader):
                if batch_idx >= n_batches:
                    break
                data, target = data.to(device), target.to(device)
                optimizer.zero_grad()
                loss = F.cross_entropy(model(data), target)  # = LogSoftmax + nll_loss
                loss.backward()
                optimizer.step()
            seconds = time.perf_counter() - start
        return n_batches * BATCH_SIZE / seconds

    return measure


if __name__ == "__main__":
    sys.exit(main())
