"""torchvision by name: data sets read from --data-dir (or refused offline in one line) and
models with their head replaced, from local weights, with a frozen backbone."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from tests.test_plugins import refused_with_storage_untouched, run

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")

STUDY = '''
name = "tv"
dataset = "DATASET"
model = "MODEL"
[budget]
n_trials = 1
max_epochs = 1
[pruner]
name = "none"
[fixed]
FIXED
lr = 0.01
optimizer = "adam"
batch_size = 64
'''


def write_study(folder: Path, dataset: str, model: str = "mlp", fixed: str = "") -> Path:
    path = folder / "study.toml"
    path.write_text(STUDY.replace("DATASET", dataset).replace("MODEL", model)
                    .replace("FIXED", fixed))
    return path


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist")
def test_a_torchvision_data_set_is_read_from_the_data_dir(tmp_path):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"  # where torchvision's class looks
    raw.mkdir(parents=True)
    for packed in DEBIAN_FASHION.glob("*.gz"):
        with gzip.open(packed) as source, (raw / packed.stem).open("wb") as target:
            shutil.copyfileobj(source, target)
    study_file = write_study(tmp_path, "torchvision:FashionMNIST", fixed="width = 32\ndepth = 1")
    url = f"sqlite:///{tmp_path / 'f.db'}"
    result = run("--study", str(study_file), "--storage", url, "--data-dir",
                 str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="tv", storage=url)
    assert study.best_value > 0.7  # one epoch of an MLP on Fashion-MNIST
    assert study.user_attrs["autotune:data_source"] == (
        f"torchvision:FashionMNIST in {tmp_path / 'data'}")
    assert "evaluated once on 10000 test examples" in result.stdout


def test_a_torchvision_data_set_that_is_not_there_is_refused_naming_the_folder(tmp_path):
    study_file = write_study(tmp_path, "torchvision:CIFAR10")
    empty = tmp_path / "empty"
    empty.mkdir()
    url = f"sqlite:///{tmp_path / 'kept.db'}"
    result = run("--study", str(study_file), "--storage", url, "--data-dir", str(empty),
                 cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1
    assert f"its files are not in {empty / 'CIFAR10'}" in result.stderr
    assert "the download failed" in result.stderr


def test_an_unknown_torchvision_name_is_refused_in_one_line(tmp_path):
    line = refused_with_storage_untouched(write_study(tmp_path, "torchvision:Cifar11"), tmp_path)
    assert "torchvision.datasets has no data set 'Cifar11'" in line


def images(folder: Path, channels: int, size: int = 32) -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (160,), generator=g)
    x = torch.randn(160, channels, size, size, generator=g) + y[:, None, None, None] * 0.5
    torch.save({"train": (x[:128], y[:128]), "test": (x[128:], y[128:])}, folder / "img.pt")


def test_a_torchvision_model_from_local_weights_trains_its_new_head_only(tmp_path):
    from torchvision.models import resnet18

    images(tmp_path, channels=3)
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "resnet18.pt")
    study_file = write_study(tmp_path, "tensors:img.pt", "torchvision:resnet18",
                             'weights = "resnet18.pt"\nfreeze = "backbone"')
    url = f"sqlite:///{tmp_path / 'm.db'}"
    result = run("--study", str(study_file), "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trial = optuna.load_study(study_name="tv", storage=url).trials[0]
    assert trial.state.name == "COMPLETE"
    assert trial.user_attrs["n_parameters"] == 512 * 4 + 4  # the new head alone trains
    assert trial.user_attrs["trained_on"] == "torch"
    (tmp_path / "out").mkdir()  # exported elsewhere, the weights file is still found
    exported = subprocess.run([sys.executable, "-m", "autotune.export", "--study", "tv",
                               "--storage", url, "--out", str(tmp_path / "out" / "best.toml")],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    text = (tmp_path / "out" / "best.toml").read_text()
    assert 'weights = "../resnet18.pt"' in text and 'dataset = "tensors:../img.pt"' in text


@pytest.mark.parametrize(("channels", "model", "fixed", "message"), [
    (1, "torchvision:resnet18", "", "takes 3-channel images (3, H, W); the data's examples "
                                    "have shape (1, 32, 32)"),
    (3, "torchvision:resnet19", "", "torchvision.models has no model 'resnet19'"),
    (3, "torchvision:resnet18", 'weights = "nothing.pt"', "nothing.pt' does not exist"),
    (3, "torchvision:alexnet", "", "model 'torchvision:alexnet' needs images of at least "
                                   "63 x 63; the data's are 32 x 32"),
])
def test_a_torchvision_model_that_cannot_fit_is_refused_in_one_line(tmp_path, channels, model,
                                                                   fixed, message):
    images(tmp_path, channels=channels)
    line = refused_with_storage_untouched(write_study(tmp_path, "tensors:img.pt", model, fixed),
                                          tmp_path)
    assert message in line, line


def test_named_weights_load_from_torch_s_hub_cache(tmp_path):
    from torchvision.models import ResNet18_Weights, resnet18

    images(tmp_path, channels=3)
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    saved = resnet18(weights=None).state_dict()  # stands in for the published file
    torch.save(saved, cache / Path(ResNet18_Weights.IMAGENET1K_V1.url).name)
    study_file = write_study(tmp_path, "tensors:img.pt", "torchvision:resnet18",
                             'weights = "IMAGENET1K_V1"\nfreeze = "backbone"')
    url = f"sqlite:///{tmp_path / 'n.db'}"
    result = run("--study", str(study_file), "--storage", url, cwd=tmp_path,
                 env={"TORCH_HOME": str(tmp_path / "torch-home")})
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="tv", storage=url)
    (meta,) = [m for m in optuna.artifacts.get_all_artifact_meta(
        study.trials[0], storage=study._storage) if m.filename == "weights.safetensors"]
    store = optuna.artifacts.FileSystemArtifactStore(
        study.user_attrs["autotune:artifact_dir"])
    with store.open_reader(meta.artifact_id) as reader:
        from safetensors.torch import load
        trained = load(reader.read())
    # the frozen backbone is the cached file's, to the bit
    torch.testing.assert_close(trained["conv1.weight"], saved["conv1.weight"], rtol=0, atol=0)


@pytest.mark.parametrize("name,features", [("googlenet", 1024), ("inception_v3", 2048)])
def test_a_model_with_auxiliary_classifiers_trains_from_a_file_that_has_them(tmp_path, name,
                                                                             features):
    """Their training output is a tuple (logits and the auxiliary heads'): built without the
    auxiliary heads, they train on the logits, and a file saved with the heads still loads."""
    from torchvision import models

    images(tmp_path, channels=3, size=80)  # inception_v3 takes 75 x 75 and up
    full = models.get_model(name, weights=None, aux_logits=True, init_weights=False)
    torch.save(full.state_dict(), tmp_path / "full.pt")
    study_file = write_study(tmp_path, "tensors:img.pt", f"torchvision:{name}",
                             'weights = "full.pt"\nfreeze = "backbone"')
    url = f"sqlite:///{tmp_path / 'aux.db'}"
    result = run("--study", str(study_file), "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trial = optuna.load_study(study_name="tv", storage=url).trials[0]
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
    assert trial.user_attrs["n_parameters"] == features * 4 + 4  # the new head alone trains


def test_named_weights_that_cannot_be_downloaded_are_refused_naming_the_file(tmp_path):
    images(tmp_path, channels=3)
    study_file = write_study(tmp_path, "tensors:img.pt", "torchvision:resnet18",
                             'weights = "IMAGENET1K_V1"')
    home = tmp_path / "torch-home"
    # a proxy that is not there: the download fails at once, with or without a network
    result = run("--study", str(study_file), "--storage", f"sqlite:///{tmp_path / 'w.db'}",
                 cwd=tmp_path, env={"TORCH_HOME": str(home), "https_proxy": "http://127.0.0.1:9",
                                    "HTTPS_PROXY": "http://127.0.0.1:9"})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    cached = home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert f"weights 'IMAGENET1K_V1' of torchvision:resnet18: '{cached}' is not there" in lines[0]
    assert "put https://download.pytorch.org/models/resnet18-f37072fd.pth there" in lines[0]
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path / 'w.db'}") == []  # none created


def test_weights_of_another_architecture_are_refused_naming_a_tensor(tmp_path):
    from torchvision.models import resnet34

    images(tmp_path, channels=3)
    torch.save(resnet34(num_classes=7).state_dict(), tmp_path / "other.pt")
    line = refused_with_storage_untouched(write_study(
        tmp_path, "tensors:img.pt", "torchvision:resnet18", 'weights = "other.pt"'), tmp_path)
    assert "holds layer1.2.conv1.weight, which this model does not have" in line, line
    assert "not this architecture's" in line
