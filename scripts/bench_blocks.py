"""The CNN's Conv -> BatchNorm -> MaxPool(2) -> ReLU blocks, forward and backward, three ways.

For the mnist study's CNN shapes (batch 128, 28 x 28 one-channel images; first block
1 -> C channels at 28 x 28, second C -> 2C at 14 x 14), in training mode, one process:

  modules   the layers as `autotune.training._models.build_cnn` stacks them, each run by itself
            (`nn.Conv2d`, `nn.BatchNorm2d`, `nn.MaxPool2d`, `nn.ReLU`): the baseline.
  ops       `autotune.fast._cpu_forward`'s blocks on PyTorch ops (where numba is missing).
  compiled  the same blocks on numba's loops (`autotune.fast._cnn_kernels`), as training runs them.

The three take turns, one batch of steps each, for --repeats rounds; printed: the median
milliseconds of a forward and backward pass, and each against the modules (the median of the
rounds' ratios). Second blocks include their convolution (oneDNN's, the same on every side).

    python scripts/bench_blocks.py                  # widths 8, 16, 32; 15 rounds
    python scripts/bench_blocks.py --widths 16 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIDES = ("modules", "ops", "compiled")
BATCH = 128
STEPS = 10  # passes per timed batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="8,16,32",
                        help="comma-separated first-block channel counts (default 8,16,32)")
    parser.add_argument("--repeats", type=int, default=15, help="rounds (default 15)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    try:
        widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        parser.error(f"--widths: expected comma-separated whole numbers, got {args.widths!r}")
    if not widths or min(widths) < 1 or args.repeats < 1:
        parser.error("--widths must be positive whole numbers and --repeats at least 1")

    import torch

    from autotune.fast import _bn_pool_relu as bn_pool_relu

    if args.threads:
        torch.set_num_threads(args.threads)
    kernels = bn_pool_relu.block_kernels()
    if kernels is None:
        print("error: numba's loops are unavailable (see the line above); nothing to compare",
              file=sys.stderr)
        return 1
    print(f"forward + backward, ms (median of {args.repeats} rounds of {STEPS} passes); "
          f"threads: {torch.get_num_threads()}; load average (1 min): {os.getloadavg()[0]:.2f}")
    print(f"{'block':<22} {'modules':>8} {'ops':>8} {'compiled':>9} {'ops gain':>9} "
          f"{'compiled gain':>14}")
    for width in widths:
        for name, passes in blocks(width).items():
            times = measure(passes, args.repeats)
            base = times["modules"]
            gains = {side: statistics.median(b / s for b, s in zip(base, times[side],
                                                                    strict=True))
                     for side in ("ops", "compiled")}
            print(f"{name:<22} {statistics.median(base):>8.2f} "
                  f"{statistics.median(times['ops']):>8.2f} "
                  f"{statistics.median(times['compiled']):>9.2f} {gains['ops']:>8.2f}x "
                  f"{gains['compiled']:>13.2f}x", flush=True)
    return 0


def blocks(width: int) -> dict[str, dict[str, Callable[[], None]]]:
    """Per block of the CNN of `width`: one forward and backward pass for each side."""
    import torch
    from torch import nn

    from autotune.fast import _bn_pool_relu as bn_pool_relu
    from autotune.fast import _gray_block as gray_block
    from autotune.fast._cpu_forward import cpu_forward
    from autotune.spec._config import TrainConfig
    from autotune.training._models import build_model

    real_kernels = bn_pool_relu.block_kernels

    def use(kernels: Callable[[], object]) -> None:  # the loops, or the PyTorch ops' None
        bn_pool_relu.block_kernels = kernels  # type: ignore[assignment]
        gray_block.block_kernels = kernels  # type: ignore[assignment]

    # the mnist study's CNN of this width as training builds it; its two conv blocks
    model = cast(nn.Sequential, build_model(TrainConfig(model="cnn", width=width, depth=2,
                                                        seed=0), (1, 28, 28), 10))
    first, second = model[0:4], model[4:8]  # Conv -> BatchNorm -> MaxPool -> ReLU, twice
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(BATCH, 1, 28, 28, generator=generator)
    hidden = torch.rand(BATCH, width, 14, 14, generator=generator).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    shapes = {f"1 -> {width} ch, 28x28": (first, images),
              f"{width} -> {2 * width} ch, 14x14": (second, hidden)}
    result = {}
    for name, (block, x) in shapes.items():
        planned = cpu_forward(block)
        shape = block(x).shape
        grad = torch.cos(torch.arange(shape.numel(), dtype=torch.float32)).view(shape)

        def run(model: nn.Module, kernels: Callable[[], object] | None,
                x: torch.Tensor = x, grad: torch.Tensor = grad) -> Callable[[], None]:
            def one_pass() -> None:
                if kernels is not None:
                    use(kernels)
                model(x).backward(grad)
            return one_pass

        result[name] = {"modules": run(block, None), "ops": run(planned, lambda: None),
                        "compiled": run(planned, real_kernels)}
    use(real_kernels)
    return result


def measure(passes: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    """Milliseconds per pass of each side, one list entry per round (sides take turns)."""
    for one_pass in passes.values():
        for _ in range(3):  # warm-up: first calls allocate and pick kernels
            one_pass()
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    for _ in range(repeats):
        for side in SIDES:
            start = time.perf_counter()
            for _ in range(STEPS):
                passes[side]()
            times[side].append(1000 * (time.perf_counter() - start) / STEPS)
    return times


if __name__ == "__main__":
    sys.exit(main())
