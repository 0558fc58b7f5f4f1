"""A user's torch Dataset: held in memory when it fits and reads the same twice, streamed
through a DataLoader when it is over the budget or transforms items at random."""

from __future__ import annotations

import optuna
import pytest
import torch
from torch.utils.data import Dataset

from autotune.spec._config import TrainConfig
from autotune.training._fit import fit
from autotune.training._streams import Streamed
from tests.test_plugins import refused_with_storage_untouched, run, write_user_study

DATA = '''
import torch
from torch.utils.data import Dataset

import autotune


class Blobs(Dataset):
    """Three clusters of 8x8 one-channel 'images'; `noise` > 0 adds fresh noise per read."""

    def __init__(self, n, seed, noise=0.0):
        g = torch.Generator().manual_seed(seed)
        centers = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        self.targets = torch.randint(0, 3, (n,), generator=g)
        self.x = centers[self.targets] + 0.7 * torch.randn(n, 1, 8, 8, generator=g)
        self.noise = noise

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = self.x[i]
        if self.noise:
            x = x + self.noise * torch.randn_like(x)  # a random per-item transform
        return x, int(self.targets[i])


def load(data_dir):
    return autotune.Data(train=Blobs(600, 1), val=Blobs(150, 2), test=Blobs(150, 3))


def noisy(data_dir):
    return autotune.Data(train=Blobs(600, 1, noise=0.3), val=Blobs(150, 2))


def carved(data_dir):
    return autotune.Data(train=Blobs(600, 1, noise=0.3))


class Broken(Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return {"x": i}


def broken(data_dir):
    return autotune.Data(train=Broken())
'''

STUDY = '''
name = "blobs"
dataset = "code/data.py:FUNCTION"
model = "MODEL"
seed = 4
[budget]
n_trials = 3
max_epochs = 3
[sampler]
name = "random"
[pruner]
name = "none"
[fixed]
width = 32
depth = 1
batch_size = 64
[space]
lr = { low = 1e-2, high = 1e-1, log = true }
'''


def write(folder, function="load", model="mlp", fixed=""):
    path = write_user_study(folder, STUDY.replace("FUNCTION", function).replace(
        "MODEL", model).replace("batch_size = 64\n", "batch_size = 64\n" + fixed))
    (folder / "code" / "data.py").write_text(DATA)
    return path


def values(url: str) -> list[float]:
    study = optuna.load_study(study_name="blobs", storage=url)
    return [t.value for t in sorted(study.trials, key=lambda t: t.number)]


def test_a_dataset_that_fits_is_held_in_memory_and_streaming_it_gives_the_same_values(
        tmp_path):
    study_file = write(tmp_path)
    held, streamed = (f"sqlite:///{tmp_path / name}" for name in ("held.db", "streamed.db"))
    first = run("--study", str(study_file), "--storage", held, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert ("data: code/data.py:load (sha256 " in first.stderr
            and "train in memory (0.2 MB read once), val in memory" in first.stderr)
    assert "test accuracy of best configuration" in first.stdout  # the test Dataset, read once
    # a budget of nothing: every split streams through a DataLoader with a worker process
    second = run("--study", str(study_file), "--storage", streamed, cwd=tmp_path,
                 env={"AUTOTUNE_DATA_BUDGET_MB": "0", "AUTOTUNE_LOADER_WORKERS": "1"})
    assert second.returncode == 0, second.stderr
    assert "train streamed (0 MB is over the in-memory budget of 0 MB; DataLoader with 1 " \
           "worker processes)" in second.stderr
    assert values(held) == values(streamed)  # the same batches in the same order
    assert min(values(held)) > 0.8  # three separable clusters


def test_random_per_item_transforms_stream_on_two_workers_and_are_drawn_anew(tmp_path):
    study_file = write(tmp_path, function="noisy")
    url = f"sqlite:///{tmp_path / 'noisy.db'}"
    result = run("--study", str(study_file), "--storage", url, "--workers", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train streamed (random per-item transforms;" in result.stderr
    assert "val in memory" in result.stderr
    assert sum(t.state.name == "COMPLETE" for t in
               optuna.load_study(study_name="blobs", storage=url).trials) == 3


def test_a_streamed_train_split_gives_up_its_validation_share(tmp_path):
    study_file = write(tmp_path, function="carved", model="code/model.py:build",
                       fixed="hidden = 8\nscale = 1\n")  # the params of the user's build()
    result = run("--study", str(study_file), "--storage", f"sqlite:///{tmp_path / 'c.db'}",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train streamed (random per-item transforms" in result.stderr


def test_a_dataset_whose_items_are_not_pairs_is_refused_in_one_line(tmp_path):
    line = refused_with_storage_untouched(write(tmp_path, function="broken"), tmp_path)
    assert "Data.train[0] must be a pair (inputs tensor, target), got dict" in line


class Counting(Dataset):
    """Deterministic items that count their reads (read in this process: no workers)."""

    def __init__(self, n: int):
        self.x = torch.randn(n, 5, generator=torch.Generator().manual_seed(0))
        self.y = (self.x[:, 0] > 0).long()
        self.reads = 0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.x[i], self.y[i]


def test_a_streamed_split_is_read_again_every_epoch(monkeypatch):
    monkeypatch.setenv("AUTOTUNE_LOADER_WORKERS", "0")
    train, val = Counting(100), Counting(40)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    cfg = TrainConfig(model="mlp", max_epochs=3, batch_size=16, lr=0.05, optimizer="adam")
    result = fit(model, Streamed(train, (5,)), None, Streamed(val, (5,)), None, cfg, plain=True)
    assert len(result.epochs) == 3
    assert (train.reads, val.reads) == (300, 120)  # nothing frozen: every item, every epoch
    assert result.best_value > 0.8


@pytest.mark.parametrize("workers", ["0", "2"])
def test_streamed_and_in_memory_fits_match_exactly(monkeypatch, workers):
    monkeypatch.setenv("AUTOTUNE_LOADER_WORKERS", workers)
    data = Counting(200)
    cfg = TrainConfig(model="mlp", max_epochs=2, batch_size=32, lr=0.05, dropout=0.2)

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(),
                                   torch.nn.Dropout(0.2), torch.nn.Linear(8, 2))

    held = fit(model(), data.x, data.y, data.x, data.y, cfg, plain=True)
    streamed = fit(model(), Streamed(data, (5,)), None, Streamed(data, (5,)), None, cfg,
                   plain=True)
    assert [e.value for e in held.epochs] == [e.value for e in streamed.epochs]
    assert [e.train_loss for e in held.epochs] == [e.train_loss for e in streamed.epochs]
