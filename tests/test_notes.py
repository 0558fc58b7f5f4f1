"""The dashboard note on a study: its best trial and the test result, as Markdown."""

from __future__ import annotations

import optuna

from autotune.search._notes import study_note
from autotune.search._study import METRIC_NAME, TEST_RESULT_ATTR


def study_with_best_trial() -> optuna.Study:
    study = optuna.create_study(study_name="s", direction="maximize")
    study.set_metric_names([METRIC_NAME])  # as autotune's create_study names it
    study.add_trial(optuna.trial.create_trial(
        value=0.93, params={"lr": 0.05},
        distributions={"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)},
        user_attrs={"best_epoch": 15, "epochs_run": 15, "seed": 0, "train_time_s": 370.0}))
    return study


def test_study_note_names_the_best_trial_and_where_its_final_model_was_trained() -> None:
    study = study_with_best_trial()
    study.set_user_attr(TEST_RESULT_ATTR, {"trial": 0, "test_accuracy": 0.9312, "epochs": 15,
                                           "train_on": "train+val", "n_train": 60000,
                                           "n_test": 10000})
    note = study_note(study)
    assert "**Best trial: #0**, val_accuracy = **0.9300** (epoch 15 of 15" in note
    assert ("**Test accuracy: 0.9312** (configuration retrained 15 epochs on train+val (60000 "
            "examples), evaluated once on 10000 test examples)") in note
    assert "| lr | " in note


def test_study_note_says_when_the_test_set_has_not_been_used_yet() -> None:
    note = study_note(study_with_best_trial())
    assert "Test result: not evaluated yet for this trial." in note


def test_the_note_is_written_without_importing_the_dashboard_app(tmp_path) -> None:
    """In a fresh interpreter, as at the end of a run: the note the dashboard reads back is
    there, and neither the dashboard's web app nor scikit-learn was imported to write it."""
    import subprocess
    import sys

    db = tmp_path / "notes.db"
    code = f"""
import sys, optuna
from autotune.search._notes import write_study_note, study_note
study = optuna.create_study(storage="sqlite:///{db}", study_name="s", direction="maximize")
study.add_trial(optuna.trial.create_trial(value=0.5))
write_study_note(study)
print(sorted(m for m in ("optuna_dashboard._app", "sklearn") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
    from optuna_dashboard._note import get_note

    study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    assert get_note(study) == study_note(study)
