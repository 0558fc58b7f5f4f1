"""`imagefolder:PATH`: real PNG files in a folder per class, decoded once, unreadable ones
skipped in one line each (or refused), resized with image_size."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from PIL import Image

from tests.test_plugins import refused_with_storage_untouched, run

STUDY = '''
name = "pics"
dataset = "imagefolder:DATASET"
EXTRA
[budget]
n_trials = 2
max_epochs = 4
[pruner]
name = "none"
[fixed]
width = 32
depth = 1
optimizer = "adam"
lr = 0.01
batch_size = 16
'''

COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def draw(folder: Path, per_class: int, size: int, seed: int, sizes: tuple[int, ...] = ()
         ) -> None:
    """PNG files of three colours with noise, in a folder per class."""
    g = torch.Generator().manual_seed(seed)
    for name, colour in COLOURS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = sizes[i % len(sizes)] if sizes else size
            base = torch.tensor(colour, dtype=torch.float32)[:, None, None]
            image = (base + 40 * torch.randn(3, side, side, generator=g)).clamp(0, 255)
            pixels = image.to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(pixels, "RGB").save(folder / name / f"{i}.png")


def write_study(folder: Path, dataset: str, extra: str = "") -> Path:
    path = folder / "study.toml"
    path.write_text(STUDY.replace("DATASET", dataset).replace("EXTRA", extra))
    return path


def test_train_val_test_folders_train_and_an_unreadable_image_is_skipped(tmp_path):
    for split, n, seed in (("train", 20, 0), ("val", 6, 1), ("test", 6, 2)):
        draw(tmp_path / "pics" / split, n, 12, seed)
    (tmp_path / "pics" / "train" / "red" / "broken.png").write_bytes(b"not a png at all")
    url = f"sqlite:///{tmp_path / 'p.db'}"
    result = run("--study", str(write_study(tmp_path, "pics")), "--storage", url,
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    broken = tmp_path / "pics" / "train" / "red" / "broken.png"
    assert f"warning: skipped '{broken}': cannot decode it" in result.stderr
    study = optuna.load_study(study_name="pics", storage=url)
    assert study.best_value > 0.9  # three colours
    assert study.user_attrs["autotune:data_source"] == (
        f"imagefolder:{tmp_path / 'pics'} (96 images of 3 classes, 1 unreadable skipped)")
    assert "evaluated once on 18 test examples" in result.stdout


def test_one_folder_of_classes_is_split_and_image_size_resizes(tmp_path):
    draw(tmp_path / "flat", 10, 0, 3, sizes=(10, 14, 20))
    url = f"sqlite:///{tmp_path / 'f.db'}"
    result = run("--study", str(write_study(tmp_path, "flat", "image_size = 8")), "--storage",
                 url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="pics", storage=url)
    assert study.user_attrs["autotune:definition"]["image_size"] == 8
    assert "test accuracy" not in result.stdout  # no test/ folder: nothing held out


@pytest.mark.parametrize(("extra", "sizes", "broken", "message"), [
    ("", (10, 14), False, "set image_size = N to resize every image to N x N"),
    ('bad_images = "fail"', (), True, "cannot decode"),
    ("image_size = 0", (), False, "image_size: must be in [1, 4096], got 0"),
])
def test_a_bad_image_folder_is_refused_in_one_line(tmp_path, extra, sizes, broken, message):
    draw(tmp_path / "flat", 4, 10, 0, sizes=sizes)
    if broken:
        (tmp_path / "flat" / "red" / "x.png").write_bytes(b"garbage")
    line = refused_with_storage_untouched(write_study(tmp_path, "flat", extra), tmp_path)
    assert message in line, line


def test_image_options_belong_to_an_image_folder(tmp_path):
    study = tmp_path / "s.toml"
    study.write_text('dataset = "digits"\nimage_size = 8\n')
    line = refused_with_storage_untouched(study, tmp_path)
    assert "image_size: only an imagefolder: data set takes it" in line


@pytest.mark.parametrize("layout", ["train-val-test", "one-folder"])
def test_a_folder_over_the_memory_budget_streams_and_trains_as_if_held(tmp_path, layout):
    if layout == "one-folder":
        draw(tmp_path / "pics", 20, 12, 0)
    else:
        for split, n, seed in (("train", 20, 0), ("val", 6, 1), ("test", 6, 2)):
            draw(tmp_path / "pics" / split, n, 12, seed)
    (tmp_path / "pics" / ("train" if layout != "one-folder" else "") / "red" / "bad.png"
     ).write_bytes(b"no image")
    study_file = write_study(tmp_path, "pics")
    values = {}
    for budget in ("1000", "0.01"):  # MB: 96 images of 12 x 12 x 3 floats are ~0.17 MB
        url = f"sqlite:///{tmp_path / f'{budget}.db'}"
        result = run("--study", str(study_file), "--storage", url, cwd=tmp_path,
                     env={"AUTOTUNE_DATA_BUDGET_MB": budget, "AUTOTUNE_LOADER_WORKERS": "1"})
        assert result.returncode == 0, result.stderr
        assert ("train streamed" in result.stderr) == (budget == "0.01"), result.stderr
        assert result.stderr.count("warning: skipped") == 1
        study = optuna.load_study(study_name="pics", storage=url)
        assert "1 unreadable skipped" in study.user_attrs["autotune:data_source"]
        values[budget] = [t.intermediate_values for t in study.trials]
    assert values["0.01"] == values["1000"]  # decoded per read, the same numbers


def test_an_image_folder_trains_a_torchvision_model_built_without_weights(tmp_path):
    draw(tmp_path / "pics", 16, 16, 0)
    study = write_study(tmp_path, "pics", 'model = "torchvision:resnet18"').read_text()
    (tmp_path / "study.toml").write_text(study.replace("width = 32\ndepth = 1\n", ""))
    url = f"sqlite:///{tmp_path / 'r.db'}"
    result = run("--study", str(tmp_path / "study.toml"), "--storage", url, "--n-trials", "1",
                 "--max-epochs", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trial = optuna.load_study(study_name="pics", storage=url).trials[0]
    assert trial.state.name == "COMPLETE" and trial.value > 0.5  # three colours, 2 epochs
    assert trial.user_attrs["n_parameters"] > 11_000_000  # all of it trains


def test_a_folder_of_one_class_or_of_no_images_is_refused_in_one_line(tmp_path):
    draw(tmp_path / "one", 3, 8, 0)
    for name in ("green", "blue"):
        for file in (tmp_path / "one" / name).iterdir():
            file.unlink()
        (tmp_path / "one" / name).rmdir()
    line = refused_with_storage_untouched(write_study(tmp_path, "one"), tmp_path)
    assert line.endswith("needs a folder per class, at least 2; found 1"), line
    for name in ("cats", "dogs"):
        (tmp_path / "empty" / name).mkdir(parents=True)
        (tmp_path / "empty" / name / "notes.txt").write_text("no image here")
    (tmp_path / "second").mkdir()
    line = refused_with_storage_untouched(write_study(tmp_path, "empty"), tmp_path / "second")
    assert line.endswith(f"no readable image in '{tmp_path / 'empty'}'"), line
