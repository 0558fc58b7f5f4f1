"""torchvision by name: `dataset = "torchvision:CIFAR10"` (any `torchvision.datasets` class
with the usual root / train-or-split / download arguments) and `model =
"torchvision:resnet18"` (any `torchvision.models` builder, its classifier head replaced for
the data's number of outputs, optionally from local weights and with a frozen backbone).

Data sets are read from --data-dir; where the files are missing a download is tried (where
the network allows), and failing that the run is refused in one line naming the folder to
fill. A data set whose images sit in memory (`.data` and `.targets`, as MNIST's and
CIFAR's) becomes tensors at once; others are read item by item (held in memory when they
fit, streamed otherwise, as any Dataset).
"""

from __future__ import annotations

import inspect
import os
import socket
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autotune.errors import UsageError
from autotune.plugins._references import Data, DataInfo

MEAN_STD_SAMPLE = 10_000  # images whose pixels give the normalisation statistics
DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation of a download
# models whose auxiliary classifiers make training's output a tuple, not the logits: built
# without them (their weights, named or from a file, load all the same)
AUX_HEADS = ("googlenet", "inception_v3")
AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")


def dataset_class(name: str) -> type:
    """`torchvision.datasets.<name>`; UsageError listing a few when there is no such class."""
    from torchvision import datasets

    found = getattr(datasets, name, None)
    if not (inspect.isclass(found) and issubclass(found, torch.utils.data.Dataset)):
        known = sorted(n for n in dir(datasets) if n[:1].isupper() and n not in ("VisionDataset",
                                                                             "DatasetFolder"))
        raise UsageError(f"dataset 'torchvision:{name}': torchvision.datasets has no data set "
                         f"'{name}'; for example: {', '.join(known[:12])}, ...")
    return found


def load_dataset(name: str, data_dir: str, val_fraction: float, split_seed: int) -> Data:
    """Train (val carved from it) and test splits of a torchvision data set, images scaled to
    [0, 1] and normalised with the training part's mean and standard deviation."""
    cls = dataset_class(name)
    train, test = (_open(cls, name, data_dir, part) for part in ("train", "test"))
    x, y = _tensors(train)
    n_val = round(val_fraction * len(y))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = order[:n_val], order[n_val:]
    sample = x[train_idx[:MEAN_STD_SAMPLE]].float() / 255
    mean, std = float(sample.mean()), float(sample.std())
    x_test, y_test = _tensors(test)

    def normalised(images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255 - mean) / (std if std > 0 else 1.0)

    return Data(train=(normalised(x[train_idx]), y[train_idx]),
                val=(normalised(x[val_idx]), y[val_idx]),
                test=(normalised(x_test), y_test),
                source=f"torchvision:{name} in {data_dir}")


def _open(cls: type, name: str, data_dir: str, part: str) -> Any:
    """The `part` ("train" or "test") of a data set: from the files, else downloaded."""
    parameters = inspect.signature(cls).parameters
    if "train" in parameters:
        kwargs: dict[str, Any] = {"train": part == "train"}
    elif "split" in parameters:
        kwargs = {"split": part}
    else:
        raise UsageError(f"dataset 'torchvision:{name}' takes neither train= nor split=; "
                         "load it in a data.py of your own (dataset = \"data.py:load\")")
    try:
        return cls(data_dir, download=False, **kwargs)
    except RuntimeError:
        pass  # not there: try to download it
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # offline, a download must fail fast
    try:
        return cls(data_dir, download=True, **kwargs)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"dataset 'torchvision:{name}': its files are not in "
                         f"{Path(data_dir) / name} (or the folder {name} expects there) and "
                         f"the download failed ({reason[:120]}); put the files there, or "
                         "pass --data-dir") from None
    finally:
        socket.setdefaulttimeout(previous)


def _tensors(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) uint8 images and (N,) int64 labels of a torchvision data set."""
    data, targets = getattr(dataset, "data", None), getattr(dataset, "targets", None)
    if targets is None:
        targets = getattr(dataset, "labels", None)  # SVHN
    if data is not None and targets is not None:
        x = torch.as_tensor(np.asarray(data))
        if x.dim() == 3:  # (N, H, W): one channel
            x = x.unsqueeze(1)
        elif x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.permute(0, 3, 1, 2)  # (N, H, W, C) as CIFAR keeps it
        return x.contiguous(), torch.as_tensor(np.asarray(targets)).long()
    from torchvision.transforms.functional import pil_to_tensor

    images, labels = zip(*((pil_to_tensor(image), int(label)) for image, label in dataset),
                         strict=True)
    return torch.stack(images), torch.tensor(labels)


# --- models ---------------------------------------------------------------------------------


def build_model(name: str, params: dict[str, Any], info: DataInfo) -> nn.Module:
    """`torchvision.models.<name>` for `info`'s images and outputs. `weights` (torchvision's
    named weights, "DEFAULT" or e.g. "IMAGENET1K_V1", from torch's hub cache or downloaded;
    else a local state-dict or safetensors file, loaded before the head is replaced) and
    `freeze` ("backbone": only the new head trains) come from the study's params."""
    builder = model_builder(name)
    if len(info.input_shape) != 3 or info.input_shape[0] != 3:
        raise UsageError(f"model 'torchvision:{name}' takes 3-channel images (3, H, W); the "
                         f"data's examples have shape {tuple(info.input_shape)}")
    weights = str(params.get("weights") or "")
    options = {"aux_logits": False} if name in AUX_HEADS else {}
    if weights and is_named_weights(name, weights):
        model = _with_named_weights(builder, name, weights, options)
    else:
        model = builder(weights=None, **options)
        if weights:
            _load_backbone(model, _read_weights(Path(weights)), Path(weights))
    head_path, head = _head(model)
    if head is None:
        raise UsageError(f"model 'torchvision:{name}': no final nn.Linear to replace")
    new_head = nn.Linear(head.in_features, info.n_outputs)
    _set(model, head_path, new_head)
    freeze = params.get("freeze", "none")
    if freeze not in ("none", "backbone"):
        raise UsageError(f"freeze must be 'none' or 'backbone', got {freeze!r}")
    if freeze == "backbone":
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for parameter in new_head.parameters():
            parameter.requires_grad_(True)
    return model


def model_builder(name: str) -> Any:
    """`torchvision.models`' builder of model `name`; UsageError listing a few when there is
    no such model."""
    from torchvision import models

    try:
        return models.get_model_builder(name)
    except ValueError:
        known = models.list_models(module=models)
        raise UsageError(f"model 'torchvision:{name}': torchvision.models has no model "
                         f"'{name}'; for example: {', '.join(known[:10])}, ...") from None


def is_named_weights(name: str, value: str) -> bool:
    """Whether `value` names weights torchvision publishes for model `name` ("DEFAULT",
    "IMAGENET1K_V1", ...) rather than a file."""
    from torchvision import models

    try:
        enum = models.get_model_weights(name)
    except (ValueError, KeyError):
        return False
    return value in enum.__members__


def _with_named_weights(builder: Any, name: str, value: str, options: dict[str, Any]
                        ) -> nn.Module:
    """The model with torchvision's named weights: from torch's hub cache, else downloaded
    (where the network allows); UsageError naming the file to put in the cache otherwise."""
    from torchvision import models

    weights = models.get_model_weights(name)[value]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # offline, a download must fail fast
    try:
        return builder(weights=weights, **options)  # type: ignore[no-any-return]
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"weights '{value}' of torchvision:{name}: '{cached}' is not there "
                         f"and the download failed ({reason[:100]}); put {weights.url} there, "
                         "or give weights = \"PATH\" (a local state dict)") from None
    finally:
        socket.setdefaulttimeout(previous)


def too_small(name: str, input_shape: tuple[int, ...], limit: int = 512) -> str | None:
    """Why images of `input_shape` (3, H, W) are too small for model `name`: the least N
    for which it takes N x N images (by bisection, on a model without weights), or None
    when they are big enough (or no size up to `limit` works: another problem)."""
    if len(input_shape) != 3:
        return None
    with warnings.catch_warnings():  # inception_v3's note on its initialisation: not ours
        warnings.simplefilter("ignore")
        model = model_builder(name)(weights=None).eval()

    def takes(n: int) -> bool:
        try:
            with torch.no_grad():
                model(torch.zeros(1, input_shape[0], n, n))
            return True
        except Exception:
            return False

    if not takes(limit):
        return None
    low, high = 1, limit  # images of `high` x `high` go through
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if takes(middle) else (middle + 1, high)
    if min(input_shape[1:]) >= high:
        return None
    return (f"model 'torchvision:{name}' needs images of at least {high} x {high}; the data's "
            f"are {input_shape[1]} x {input_shape[2]} (an imagefolder: data set resizes with "
            "image_size = N)")


def _load_backbone(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load a weights file into the model, all but its head (replaced next anyway, so the
    file may come from a model with any number of classes); UsageError naming the first
    tensor that does not fit otherwise."""
    head_path, _ = _head(model)
    head_keys = {f"{head_path}.weight", f"{head_path}.bias"}
    own = model.state_dict()
    body = {k: v for k, v in state.items() if k not in head_keys
            and (k in own or not k.startswith(AUX_PREFIXES))}  # a file's auxiliary heads
    for key, value in body.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise UsageError(f"weights: '{path}' holds {key} of shape {tuple(value.shape)}; "
                             f"this model's is {tuple(own[key].shape)}")
    missing, unexpected = model.load_state_dict(body, strict=False)
    missing = [k for k in missing if k not in head_keys]
    if missing or unexpected:
        what = (f"lacks {missing[0]}" if missing else f"holds {unexpected[0]}, which this "
                "model does not have")
        raise UsageError(f"weights: '{path}' {what} ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected tensors): not this architecture's")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UsageError(f"weights: file '{path}' does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict):
        raise UsageError(f"weights: '{path}' holds {type(loaded).__name__}, not a state dict")
    return loaded


def _head(model: nn.Module) -> tuple[str, nn.Linear | None]:
    """The dotted name and module of the model's last nn.Linear (its classifier head)."""
    last: tuple[str, nn.Linear | None] = ("", None)
    for path, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (path, module)
    return last


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    *parents, name = path.split(".")
    owner = model
    for parent in parents:
        owner = getattr(owner, parent)
    setattr(owner, name, module)
