"""The built-in models and data sets come through the seams a user's code takes, and give
what they gave as special cases."""

from __future__ import annotations

import pytest
import torch

import autotune
from autotune.plugins import DataInfo
from autotune.plugins import _references as plugins
from autotune.spec._config import TrainConfig
from autotune.training import _data, build_for, build_model, load_splits


@pytest.mark.parametrize(("model", "shape"), [("mlp", (1, 8, 8)), ("cnn", (1, 8, 8)),
                                              ("mlp", (12,))])
def test_a_built_in_model_through_the_seam_is_the_same_network(model, shape):
    params = {"width": 24, "depth": 2, "dropout": 0.1, "lr": 0.01, "optimizer": "adam"}
    cfg = TrainConfig(model=model, seed=7, **params)
    by_seam = build_for(model, plugins.Path("."), cfg, params, shape, 10)
    direct = build_model(cfg, shape, 10)  # seeds with cfg.seed itself
    assert str(by_seam) == str(direct)
    for (name, a), (_, b) in zip(by_seam.state_dict().items(), direct.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_a_built_in_data_set_through_the_seam_gives_the_same_tensors():
    splits = load_splits("digits", data_dir=None, val_fraction=0.2, split_seed=3)
    raw = _data._load_raw("digits", str(_data.idx_files.resolve_data_dir(None)))
    direct = _data._make_splits(raw, 0.2, 3)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(splits, name), getattr(direct, name)), name
    assert (splits.source, splits.n_outputs, splits.held) == ("sklearn-digits", 10,
                                                              "in memory")


def tiny(params, info: DataInfo) -> torch.nn.Module:
    """A model a plugin registers under a name."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, info.n_outputs))


def test_a_registered_name_is_a_model_study_files_may_name(tmp_path, capsys):
    with pytest.raises(autotune.UsageError):
        autotune.tune(name="t", data="digits", model="tiny", n_trials=1, max_epochs=1,
                      storage=f"sqlite:///{tmp_path / 'a.db'}")
    assert "model: unknown value 'tiny'; allowed: mlp, cnn" in capsys.readouterr().err
    plugins.register_model("tiny", "tests.test_builtins:tiny")
    try:
        study = autotune.tune(name="t", data="digits", model="tiny", n_trials=2, max_epochs=5,
                              storage=f"sqlite:///{tmp_path / 't.db'}")
    finally:
        del plugins.MODELS["tiny"]
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 2
    assert study.best_value > 0.3  # a linear model on digits, a few epochs (chance: 0.1)


def test_a_registration_by_file_path_is_refused():
    with pytest.raises(ValueError, match="register a model by 'package.module:function'"):
        plugins.register_model("x", "model.py:build")
