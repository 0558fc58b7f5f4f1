"""Checkpoints in the artifact store: a broken one is skipped, never fatal to a retry."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune import artifacts
from autotune.config import TrainConfig
from autotune.models import build_model
from autotune.train import fit
from tests.test_train import X_TRAIN, X_VAL, Y_TRAIN, Y_VAL


def test_a_checkpoint_cut_short_counts_as_none(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    store = artifacts.open_store(tmp_path / "store")
    cfg = TrainConfig(width=8, max_epochs=2, seed=1)
    states = []
    fit(build_model(cfg, (1, 8, 8), 3), X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg,
        on_checkpoint=states.append)
    artifacts.save_checkpoint(store, "s", 3, states[0])
    loaded = artifacts.load_checkpoint(store, "s", 3)
    assert loaded is not None and loaded.epoch == 1
    path = tmp_path / "store" / artifacts.checkpoint_id("s", 3)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a write interrupted
    assert artifacts.load_checkpoint(store, "s", 3) is None
    assert "is unreadable" in capsys.readouterr().err
    assert artifacts.load_checkpoint(store, "s", 4) is None  # none at all: no line
    assert capsys.readouterr().err == ""
