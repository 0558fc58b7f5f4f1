"""Figures of the routes of issue 24: an image folder trained by autotune against the usual
DataLoader(ImageFolder(transform=ToTensor())) loop, and what the script route adds to a
script's own run time.

  imagefolder  the same CNN (Adam, batches of 128, same seed) trained on the same PNG files
               (--images of 32x32 RGB, 10 classes, written to a temporary folder):
                 autotune  `dataset = "imagefolder:..."`: decoded once into tensors, then
                           batched by index (`autotune.training.fit`, plain torch);
                 example   a DataLoader over torchvision's ImageFolder with ToTensor() per
                           image, shuffle=True, num_workers 0 (as Optuna's PyTorch example)
                           and 2.
               Sides alternate A B B A; each figure is the median over --repeats rounds of
               the second epoch's training images/s. The one-time decode is printed too,
               and the ratio over a 10-epoch trial with the decode counted.
  script       a script that imports autotune and reports 5 epochs: its run time started
               directly (subprocess, wait) against a trial's wall time in a study that runs
               it (`script = ...`): the difference is the route's per-trial overhead
               (target <= 0.5 s). Then the time from a pruning decision (ScriptProcess.stop)
               to the script's process group being gone, a child `sleep` included
               (target <= 1 s).

    python scripts/bench_routes.py            # ~2 minutes on 2 cores
    python scripts/bench_routes.py --quick    # a smoke test of the script
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autotune.routes._script import ScriptProcess  # noqa: E402
from autotune.spec._config import TrainConfig  # noqa: E402
from autotune.training import _imagefolder  # noqa: E402
from autotune.training._fit import fit  # noqa: E402
from autotune.training._models import build_model  # noqa: E402


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 10))


def mlp() -> nn.Module:
    return build_model(TrainConfig(model="mlp", width=128, depth=2, seed=0), (3, 32, 32), 10)


# name -> (the model, whether autotune trains it on plain torch: a user's model does; the
# built-in MLP takes the speed-up layer's steps, as in any study that names it)
MODELS = {"own cnn": (cnn, True), "mlp 2x128": (mlp, False)}


def write_images(root: Path, n: int) -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (n,), generator=g)
    colours = torch.rand(10, 3, 1, 1, generator=g) * 200
    for i, label in enumerate(labels.tolist()):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (colours[label] + 40 * torch.randn(3, 32, 32, generator=g)).clamp(0, 255)
        Image.fromarray(pixels.to(torch.uint8).permute(1, 2, 0).numpy(), "RGB").save(
            folder / f"{i}.png")


def autotune_side(root: Path, model: str) -> tuple[float, float]:
    """(images/s of the second epoch, seconds of the one-time decode)."""
    started = time.perf_counter()
    data = _imagefolder.load(root, None, "skip", 0.1, 0)
    decode_s = time.perf_counter() - started
    (x, y), (xv, yv) = data.train, data.val
    cfg = TrainConfig(optimizer="adam", lr=1e-3, batch_size=128, max_epochs=2, seed=0)
    build, plain = MODELS[model]
    result = fit(build(), x, y, xv, yv, cfg, plain=plain)
    return len(y) / result.epochs[1].seconds, decode_s


def example_side(root: Path, workers: int, model_name: str) -> float:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import ToTensor

    loader = torch.utils.data.DataLoader(ImageFolder(str(root), transform=ToTensor()),
                                         batch_size=128, shuffle=True, num_workers=workers)
    model = MODELS[model_name][0]()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rate = 0.0
    for _ in range(2):  # the second epoch is measured, as autotune's
        started, n = time.perf_counter(), 0
        for images, labels in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
            n += len(labels)
        rate = n / (time.perf_counter() - started)
    return rate


def bench_imagefolder(n_images: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "images"
        write_images(root, n_images)
        for model in MODELS:
            bench_model(root, n_images, repeats, model)


def bench_model(root: Path, n_images: int, repeats: int, model: str) -> None:
    rows: dict[str, list[float]] = {"autotune": [], "decode_s": [], "example w0": [],
                                    "example w2": []}
    for round_ in range(repeats):
        order = ("a", "b") if round_ % 2 == 0 else ("b", "a")
        for side in order:
            if side == "a":
                rate, decode_s = autotune_side(root, model)
                rows["autotune"].append(rate)
                rows["decode_s"].append(decode_s)
            else:
                rows["example w0"].append(example_side(root, 0, model))
                rows["example w2"].append(example_side(root, 2, model))
    med = {k: statistics.median(v) for k, v in rows.items()}
    n_train = round(0.9 * n_images)
    print(f"imagefolder: {n_images} PNGs of 32x32, {model}, Adam, batch 128, "
          f"{repeats} rounds (median)")
    print(f"  autotune      {med['autotune']:9.0f} images/s   (decode once: "
          f"{med['decode_s']:.2f} s)")
    for name in ("example w0", "example w2"):
        ratio = med["autotune"] / med[name]
        epochs10 = (10 * n_train / med[name]) / (
            10 * n_train / med["autotune"] + med["decode_s"])
        print(f"  {name:<13} {med[name]:9.0f} images/s   autotune x{ratio:.1f} per epoch,"
              f" x{epochs10:.1f} over a 10-epoch trial with the decode")


SCRIPT = '''
import argparse
import autotune
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float)
args = parser.parse_args()
for epoch in range(1, 6):
    autotune.report(epoch=epoch, val_accuracy=epoch * args.lr)
'''

SLEEPER = '''
import subprocess, sys, time
child = subprocess.Popen(["sleep", "60"])
print(child.pid, flush=True)
time.sleep(60)
'''


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def bench_script(n_trials: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as folder:
        here = Path(folder)
        (here / "train.py").write_text(SCRIPT)
        direct = []
        for _ in range(n_trials):
            started = time.perf_counter()
            subprocess.run([sys.executable, str(here / "train.py"), "--lr", "0.1"], env=env,
                           check=True, capture_output=True)
            direct.append(time.perf_counter() - started)
        (here / "study.toml").write_text(
            f'name = "bench"\nscript = "train.py"\n[budget]\nn_trials = {n_trials}\n'
            'max_epochs = 5\n[pruner]\nname = "none"\n[space]\nlr = { low = 0.01, high = 0.2 }\n')
        url = f"sqlite:///{here / 'b.db'}"
        subprocess.run([sys.executable, "-m", "autotune.run", "--study",
                        str(here / "study.toml"), "--storage", url], env=env, check=True,
                       capture_output=True, cwd=here)
        trials = optuna.load_study(study_name="bench", storage=url).trials
        wall = [t.user_attrs["wall_time_s"] for t in trials]
        span = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
        overhead = statistics.median(span) - statistics.median(direct)
        print(f"script: {n_trials} runs of a script reporting 5 epochs (median)")
        print(f"  started directly          {statistics.median(direct):.3f} s")
        print(f"  as a trial (objective)    {statistics.median(wall):.3f} s")
        print(f"  as a trial (start to end) {statistics.median(span):.3f} s   overhead "
              f"{overhead:+.3f} s (target <= 0.5 s)")
        (here / "sleeper.py").write_text(SLEEPER)
        stops = []
        for _ in range(5):
            process = ScriptProcess([sys.executable, str(here / "sleeper.py")], here, env)
            child = int(next(iter(process.lines())))
            started = time.perf_counter()
            process.stop()  # what a pruning decision does
            while alive(child) or alive(process.process.pid):
                time.sleep(0.005)
            stops.append(time.perf_counter() - started)
        print(f"  pruned -> group gone      {statistics.median(stops):.3f} s   (target <= 1 s;"
              " a child process included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="a smoke test: small and once")
    args = parser.parse_args()
    try:  # the speed-up layer, as `autotune run` installs it for a built-in model
        from autotune.fast import install

        install()
    except Exception as exc:  # noqa: BLE001 - the figures say which way they ran
        print(f"speed-up layer not installed: {exc}")
    if args.quick:
        args.images, args.repeats, args.trials = 600, 1, 3
    print(f"load average before: {os.getloadavg()[0]:.2f}; torch threads "
          f"{torch.get_num_threads()}")
    bench_imagefolder(args.images, args.repeats)
    bench_script(args.trials)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
