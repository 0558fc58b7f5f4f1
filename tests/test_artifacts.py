"""The artifact store: uploads as Optuna records them, and a broken checkpoint is skipped,
never fatal to a retry."""

from __future__ import annotations

import io
import json
from pathlib import Path

import optuna
import pytest
import safetensors.torch
import torch

from autotune.spec._config import TrainConfig
from autotune.storage import _storage as storage
from autotune.training import _artifacts as artifacts
from autotune.training._fit import TrainState, fit
from autotune.training._models import build_model
from tests.test_train import X_TRAIN, X_VAL, Y_TRAIN, Y_VAL


def train_states(max_epochs: int) -> list[TrainState]:
    """The checkpoints of a small real fit: after each epoch but the last."""
    cfg = TrainConfig(width=8, max_epochs=max_epochs, seed=1)
    states: list[TrainState] = []
    fit(build_model(cfg, (1, 8, 8), 3), X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg,
        on_checkpoint=states.append)
    return states


def test_a_damaged_checkpoint_counts_as_none(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    store = artifacts.open_store(tmp_path / "store")
    artifacts.save_checkpoint(store, "s", 3, train_states(2)[0])
    loaded = artifacts.load_checkpoint(store, "s", 3)
    assert loaded is not None and loaded.epoch == 1
    path = tmp_path / "store" / artifacts.checkpoint_id("s", 3)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated on disk
    assert artifacts.load_checkpoint(store, "s", 3) is None
    assert "is unreadable" in capsys.readouterr().err
    assert artifacts.load_checkpoint(store, "s", 4) is None  # none at all: no line
    assert capsys.readouterr().err == ""


class CutShort(io.BytesIO):
    """A body whose reading is interrupted after its first chunk, as a Ctrl-C would."""

    def read(self, size: int | None = -1) -> bytes:
        if self.tell():
            raise KeyboardInterrupt
        return super().read(16)


def test_a_checkpoint_write_cut_short_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    store = artifacts.open_store(tmp_path / "store")
    states = train_states(3)
    artifacts.save_checkpoint(store, "s", 3, states[0])
    with pytest.raises(KeyboardInterrupt):
        store.write(artifacts.checkpoint_id("s", 3), CutShort(b"x" * 1000))
    loaded = artifacts.load_checkpoint(store, "s", 3)
    assert loaded is not None and loaded.epoch == 1
    artifacts.save_checkpoint(store, "s", 3, states[1])  # the next write replaces both files
    loaded = artifacts.load_checkpoint(store, "s", 3)
    assert loaded is not None and loaded.epoch == 2
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [
        artifacts.checkpoint_id("s", 3)]


def test_uploads_are_recorded_as_optunas_upload_artifact_records_them(tmp_path: Path) -> None:
    study = optuna.create_study(storage=storage.open_storage(f"sqlite:///{tmp_path / 'a.db'}"),
                                direction="maximize")
    store = artifacts.open_store(tmp_path / "store")
    ours, theirs = study.ask(), study.ask()
    curve = [{"epoch": 1, "val_accuracy": 0.5}]
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    ids = {artifacts.LEARNING_CURVE: artifacts.upload_json(store, ours, artifacts.LEARNING_CURVE,
                                                           curve),
           artifacts.WEIGHTS: artifacts.upload_weights(store, ours, weights)}
    for name, mimetype in ((artifacts.LEARNING_CURVE, "application/json"),
                           (artifacts.WEIGHTS, "application/octet-stream")):
        (tmp_path / name).write_bytes(b"x")
        optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(tmp_path / name),
                                         study_or_trial=theirs, mimetype=mimetype)
    study_id = artifacts.upload_study_weights(store, study, weights)
    for trial in (ours, theirs):
        study.tell(trial, 0.5)
    got = {m.filename: m for m in optuna.artifacts.get_all_artifact_meta(
        study.trials[0], storage=study._storage)}
    expected = {m.filename: m for m in optuna.artifacts.get_all_artifact_meta(
        study.trials[1], storage=study._storage)}
    assert got.keys() == expected.keys() == ids.keys()
    for name, meta in got.items():
        assert meta.artifact_id == ids[name]
        assert (meta.mimetype, meta.encoding) == (expected[name].mimetype,
                                                  expected[name].encoding)
    (study_meta,) = optuna.artifacts.get_all_artifact_meta(study)
    assert (study_meta.artifact_id, study_meta.filename) == (study_id, artifacts.FINAL_WEIGHTS)
    out = tmp_path / "out"
    optuna.artifacts.download_artifact(artifact_store=store, file_path=str(out),
                                       artifact_id=ids[artifacts.WEIGHTS])
    torch.testing.assert_close(safetensors.torch.load_file(out)["w"], weights["w"])
    out.unlink()
    optuna.artifacts.download_artifact(artifact_store=store, file_path=str(out),
                                       artifact_id=ids[artifacts.LEARNING_CURVE])
    assert json.loads(out.read_text()) == curve


def test_weights_are_the_bytes_safetensors_torch_writer_gives_for_every_dtype(
        tmp_path: Path) -> None:
    """A CNN's state (float32 weights, BatchNorm's int64 count) goes through safetensors'
    NumPy writer, a bfloat16 one through its torch writer: the stored file is what
    `safetensors.torch.save` makes of the same tensors either way."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.Flatten(), torch.nn.LazyLinear(3))
    net(torch.rand(2, 1, 6, 6))
    states = {"float32": net.state_dict(),
              "bfloat16": {k: v.to(torch.bfloat16) if v.is_floating_point() else v
                           for k, v in net.state_dict().items()}}
    store = artifacts.open_store(tmp_path / "store")
    study = optuna.create_study()
    for label, state in states.items():
        trial = study.ask()
        artifact_id = artifacts.upload_weights(store, trial, state)
        with store.open_reader(artifact_id) as reader:
            stored = reader.read()
        expected = safetensors.torch.save({k: v.contiguous() for k, v in state.items()})
        assert stored == expected, label
        loaded = safetensors.torch.load(stored)
        assert loaded.keys() == state.keys()
        for key, value in state.items():
            assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key


WEIGHTS_STUDY = """
name = "weights"
dataset = "digits"
model = "mlp"
seed = 5
val_fraction = 0.2
trial_weights = "{policy}"
[budget]
n_trials = 6
max_epochs = 2
[sampler]
name = "random"
[pruner]
name = "none"
[fixed]
depth = 1
[space]
lr = {{ low = 1e-4, high = 0.3, log = true }}
width = {{ low = 8, high = 32 }}
"""


@pytest.mark.parametrize("policy", ["improving", "all", "none"])
def test_trials_store_their_best_epochs_weights_as_the_study_file_says(
        tmp_path: Path, policy: str) -> None:
    import subprocess
    import sys

    from autotune.spec import _space as space
    from autotune.spec import _spec as spec
    from autotune.training import _data as data
    from autotune.training._fit import evaluate
    from tests.conftest import REPO, write_study

    study_file = write_study(tmp_path, WEIGHTS_STUDY.format(policy=policy), name="weights")
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    done = subprocess.run([sys.executable, "-m", "autotune.run", "--study", str(study_file),
                           "--storage", url, "--artifacts", str(tmp_path / "art")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="weights", storage=url)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 6
    with_weights = [t.number for t in trials if artifacts.WEIGHTS in {
        m.filename for m in optuna.artifacts.get_all_artifact_meta(t, storage=study._storage)}]
    improving = [t.number for i, t in enumerate(trials)
                 if all(t.value >= earlier.value for earlier in trials[:i])]
    assert len(improving) < 6  # else "improving" and "all" would look alike
    assert with_weights == {"improving": improving, "all": [t.number for t in trials],
                            "none": []}[policy]
    if policy == "none":
        return
    # the best trial's weights are its best epoch's: they score its value on validation again
    best = study.best_trial
    (meta,) = [m for m in optuna.artifacts.get_all_artifact_meta(best, storage=study._storage)
               if m.filename == artifacts.WEIGHTS]
    study_spec = spec.load_spec(str(study_file))
    cfg = space.to_config(study_spec, best.params, seed=best.user_attrs["seed"])
    splits = data.load_splits("digits", data_dir=None, val_fraction=0.2, split_seed=0)
    model = build_model(cfg, splits.input_shape, splits.n_outputs)
    model.load_state_dict(safetensors.torch.load_file(tmp_path / "art" / meta.artifact_id))
    assert evaluate(model, splits.x_val, splits.y_val) == best.value


def test_a_trial_copies_only_epochs_that_could_be_stored_and_stores_what_keeps_weights_says(
        ) -> None:
    import math

    from autotune.search._objective import keeps_weights, weights_floor

    study = optuna.create_study(direction="maximize")
    assert weights_floor("improving", study) == -math.inf  # the first trial stores its weights
    for value in (0.5, 0.8, 0.7):
        study.tell(study.ask(), value)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    assert weights_floor("improving", study) == 0.8
    assert weights_floor("all", study) == weights_floor("none", study) == -math.inf
    assert [keeps_weights("improving", v, study) for v in (0.79, 0.8, 0.9)] == [False, True, True]
    assert keeps_weights("all", 0.1, study) and not keeps_weights("none", 0.9, study)
