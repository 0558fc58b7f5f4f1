from __future__ import annotations

import math
from pathlib import Path

import pytest

from autotune.errors import SpecError
from autotune.spec._config import PRECISIONS, SCHEDULES, TrainConfig, field_types
from autotune.spec._spec import NOT_SEARCHABLE, load_spec

REPO = Path(__file__).resolve().parent.parent

SPEED_AND_AUGMENTATION_FIELDS = {"max_batches_per_epoch": int, "val_subset": int,
                                 "crop_padding": int, "hflip": bool, "precision": str,
                                 "compile": bool}


def test_new_fields_default_to_the_old_behaviour() -> None:
    cfg = TrainConfig()
    assert (cfg.max_batches_per_epoch, cfg.val_subset, cfg.crop_padding) == (0, 0, 0)
    assert (cfg.hflip, cfg.precision, cfg.compile) == (False, "fp32", False)


def test_new_fields_have_study_file_types_and_are_settable_in_study_files() -> None:
    types = field_types()
    for name, kind in SPEED_AND_AUGMENTATION_FIELDS.items():
        assert types[name] is kind
        assert name not in NOT_SEARCHABLE


@pytest.mark.parametrize("name", ["max_batches_per_epoch", "val_subset", "crop_padding"])
def test_train_config_rejects_negative_counts(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be >= 0, got {name}=-1"):
        TrainConfig(**{name: -1})  # type: ignore[arg-type]


def test_train_config_rejects_an_unknown_precision_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, got "
                                         "self.precision='fp16'"):
        TrainConfig(precision="fp16")
    assert PRECISIONS == ("fp32", "bf16")


def test_study_file_fixes_and_searches_the_new_fields(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('dataset = "fashion-mnist"\n'  # hflip: refused for digits
                    "[fixed]\n"
                    'precision = "bf16"\ncompile = false\nmax_batches_per_epoch = 30\n'
                    "val_subset = 1280\n"
                    "[space]\n"
                    "crop_padding = { low = 0, high = 4 }\nhflip = { choices = [true, false] }\n")
    spec = load_spec(str(path))
    assert spec.fixed == {"precision": "bf16", "compile": False, "max_batches_per_epoch": 30,
                          "val_subset": 1280}
    assert {p.name for p in spec.space} == {"crop_padding", "hflip"}


@pytest.mark.parametrize(("entry", "message"), [
    ('[fixed]\nprecision = "fp16"', "fixed.precision: precision must be one of fp32, bf16"),
    ("[fixed]\nval_subset = -5", "fixed.val_subset: val_subset must be >= 0"),
    ('[fixed]\ncompile = "yes"', "fixed.compile: must be a boolean"),
    ("[space]\ncrop_padding = { low = -1, high = 2 }",
     "space.crop_padding.low: crop_padding must be >= 0"),
])
def test_study_file_rejects_bad_values_of_the_new_fields(tmp_path: Path, entry: str,
                                                          message: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(f'dataset = "digits"\n{entry}\n')
    with pytest.raises(SpecError, match=message):
        load_spec(str(path))


def test_the_benchmark_study_file_validates_and_mirrors_the_optuna_example() -> None:
    spec = load_spec(str(REPO / "studies" / "bench" / "fashion-mlp.toml"))
    assert spec.fixed == {"batch_size": 128, "max_batches_per_epoch": 30, "val_subset": 1280}
    assert (spec.n_trials, spec.max_epochs, spec.timeout_s) == (100, 10, 600)
    assert spec.pruner == "median" and spec.pruner_options == {"n_startup_trials": 5,
                                                               "n_warmup_steps": 0}
    params = {p.name: p for p in spec.space}
    assert params["optimizer"].choices == ("adam", "rmsprop", "sgd")
    assert (params["lr"].low, params["lr"].high, params["lr"].log) == (1e-5, 1e-1, True)
    assert (params["depth"].low, params["depth"].high) == (1, 3)
    assert (params["width"].low, params["width"].high) == (4, 128)


# --- training options: schedule, label smoothing, clipping, cnn head -------------------------

TRAINING_OPTION_FIELDS = {"schedule": str, "warmup_fraction": float, "label_smoothing": float,
                          "grad_clip": float, "batch_norm": bool, "fc_units": int}


def test_training_options_default_to_the_old_behaviour() -> None:
    cfg = TrainConfig()
    assert (cfg.schedule, cfg.label_smoothing, cfg.grad_clip) == ("exponential", 0.0, 0.0)
    assert (cfg.batch_norm, cfg.fc_units) == (True, 128)
    assert SCHEDULES == ("exponential", "cosine", "onecycle")


def test_training_options_are_study_file_keys_of_their_types() -> None:
    types = field_types()
    for name, kind in TRAINING_OPTION_FIELDS.items():
        assert types[name] is kind
        assert name not in NOT_SEARCHABLE


@pytest.mark.parametrize(("values", "message"), [
    ({"schedule": "linear"},
     "schedule must be one of exponential, cosine, onecycle, got self.schedule='linear'"),
    ({"warmup_fraction": 0.0},
     r"warmup_fraction must be in \(0, 1\), got self.warmup_fraction=0.0"),
    ({"warmup_fraction": 1.0},
     r"warmup_fraction must be in \(0, 1\), got self.warmup_fraction=1.0"),
    ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\), got label_smoothing=1.0"),
    ({"label_smoothing": -0.1}, r"label_smoothing must be in \[0, 1\), got label_smoothing=-0.1"),
    ({"grad_clip": -1.0}, "grad_clip must be a finite number >= 0, got grad_clip=-1.0"),
    ({"grad_clip": math.inf}, "grad_clip must be a finite number >= 0, got grad_clip=inf"),
    ({"grad_clip": math.nan}, "grad_clip must be a finite number >= 0, got grad_clip=nan"),
    ({"fc_units": 0}, "fc_units must be >= 1, got fc_units=0"),
])
def test_train_config_rejects_bad_training_options_showing_the_value(
        values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**values)  # type: ignore[arg-type]


def test_study_file_fixes_and_searches_the_training_options(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('dataset = "fashion-mnist"\nmodel = "cnn"\n'
                    "[fixed]\n"
                    "batch_norm = false\nfc_units = 256\ngrad_clip = 2.0\n"
                    "[space]\n"
                    'schedule = { choices = ["cosine", "onecycle"] }\n'
                    "warmup_fraction = { low = 0.1, high = 0.3 }\n"
                    "label_smoothing = { low = 0.0, high = 0.1 }\n")
    spec = load_spec(str(path))
    assert spec.fixed == {"batch_norm": False, "fc_units": 256, "grad_clip": 2.0}
    params = {p.name: p for p in spec.space}
    assert params["schedule"].choices == ("cosine", "onecycle")
    assert (params["warmup_fraction"].low, params["warmup_fraction"].high) == (0.1, 0.3)


@pytest.mark.parametrize(("entry", "message"), [
    ('[space]\nschedule = { choices = ["cosine", "step"] }',
     "space.schedule.choices: unknown schedule 'step'; allowed: exponential, cosine, onecycle"),
    ('[fixed]\nschedule = "step"', "fixed.schedule: schedule must be one of"),
    ("[space]\nlabel_smoothing = { low = 0.0, high = 1.0 }",
     "space.label_smoothing.high: label_smoothing must be in"),
    ("[fixed]\nwarmup_fraction = 0", "fixed.warmup_fraction: warmup_fraction must be in"),
    ("[fixed]\nbatch_norm = 1", "fixed.batch_norm: must be a boolean"),
    ("[fixed]\nfc_units = 0", "fixed.fc_units: fc_units must be >= 1"),
])
def test_study_file_rejects_bad_training_options(tmp_path: Path, entry: str,
                                                  message: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(f'dataset = "digits"\n{entry}\n')
    with pytest.raises(SpecError, match=message):
        load_spec(str(path))
