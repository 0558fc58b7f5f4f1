"""The seams a user's own code plugs into: a function named by an import path.

A reference is `path/to/file.py:function` (relative to the study file) or
`package.module:function` (importable). Every worker imports it the same way, by that path,
so the user's code reaches every process; the file's hash goes into the study's definition,
so a resume on changed code is refused like any other changed setting.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.errors import SpecError


@dataclass(frozen=True)
class DataInfo:
    """What a user's `build(params, info)` needs to know about the data."""

    input_shape: tuple[int, ...]  # one example's shape, e.g. (1, 28, 28) or (64,)
    n_outputs: int  # outputs the model must give per example: classes, or regression targets


@dataclass(frozen=True)
class Data:
    """What a user's `load(data_dir)` returns: (inputs, targets) tensor pairs.

    Targets are class indices (N,) for a classification loss, numbers (N,) or (N, K) for a
    regression loss (mse, l1, smooth_l1, huber). A `load` that takes `val_fraction` and
    `split_seed` too is given the study's, to carve `val` itself (for instance to normalise
    with the statistics of the training part only, as the built-in data sets do).

    `val` None carves the study's `val_fraction` out of `train` (seeded by `split_seed`);
    `test` None skips the final test evaluation. Inputs are used as given (normalise them
    in `load`); every example must have the same shape.
    """

    train: tuple[Any, Any]
    val: tuple[Any, Any] | None = None
    test: tuple[Any, Any] | None = None
    source: str | None = None  # where the data came from, stored on the study (default: the
    # reference and its file's hash); a resume on another source is refused


# The names a study file may give instead of a reference: the built-in models and data
# sets, registered through the same seam as a user's code (an importable
# package.module:function with a user's signature). A plugin adds its own with
# `register_model` / `register_dataset`.
MODELS: dict[str, str] = {
    "mlp": "autotune.training._models:mlp",
    "cnn": "autotune.training._models:cnn",
}
DATASETS: dict[str, str] = {
    "digits": "autotune.training._data:digits",
    "mnist": "autotune.training._data:mnist",
    "fashion-mnist": "autotune.training._data:fashion_mnist",
}


def register_model(name: str, reference: str) -> None:
    """Let study files name a model `name`: `reference` ("package.module:build") builds it
    with a user's signature, build(params, info) -> nn.Module."""
    _register(MODELS, "model", name, reference)


def register_dataset(name: str, reference: str) -> None:
    """Let study files name a data set `name`: `reference` ("package.module:load") loads it
    with a user's signature, load(data_dir[, val_fraction, split_seed]) -> Data."""
    _register(DATASETS, "dataset", name, reference)


def _register(registry: dict[str, str], what: str, name: str, reference: str) -> None:
    if is_reference(name) or not name:
        raise ValueError(f"a {what} name cannot be empty or contain ':', got {name=}")
    if not is_reference(reference) or reference.rpartition(":")[0].endswith(".py"):
        raise ValueError(f"register a {what} by 'package.module:function', got {reference=}")
    registry[name] = reference


def reference_for(value: str, registry: dict[str, str]) -> str:
    """The reference a study file's model or dataset value stands for (a registered name's,
    or the value itself when it is a reference)."""
    return value if is_reference(value) else registry[value]


# Data named by a scheme and a file's path (relative to the study file), read by
# autotune.training._sources: `csv:table.csv` (with `target`), `tensors:data.pt` or `.npz`,
# `imagefolder:images/` (autotune.training._imagefolder);
# and torchvision's by name (autotune.training._torchvision): `torchvision:CIFAR10`, and as
# a model `torchvision:resnet18`
DATA_SCHEMES = ("csv", "tensors", "imagefolder", "torchvision")
MODEL_SCHEMES = ("torchvision",)


def data_scheme(value: str) -> tuple[str, str] | None:
    """(scheme, path or name) of a `scheme:...` dataset or model value, or None."""
    scheme, sep, path = value.partition(":")
    return (scheme, path) if sep and scheme in DATA_SCHEMES else None


def is_builtin_model(value: str) -> bool:
    """Whether a study's model is autotune's own (mlp, cnn, or a plugin's registered name):
    the others (a user's file, torchvision's) train on plain torch and are tried on one
    batch before the study is created."""
    return value in MODELS


def is_reference(value: str) -> bool:
    """Whether a study-file value names user code (`file.py:fn`, `pkg.mod:fn`)."""
    return ":" in value and data_scheme(value) is None


def resolve(reference: str, base_dir: Path) -> tuple[Path | None, str, str]:
    """(file or None, module name, function name) of a reference."""
    target, _, function = reference.rpartition(":")
    if target.endswith(".py"):
        path = (base_dir / target).resolve()
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        return path, f"autotune_user_{path.stem}_{digest}", function
    return None, target, function


def load_function(reference: str, base_dir: Path, where: str) -> Callable[..., Any]:
    """The function a reference names; SpecError (one line, naming `where`: the study file
    and key) when the file, the module or the function is missing or fails to import."""
    path, module_name, function = resolve(reference, base_dir)
    if not function or not module_name:
        raise SpecError(f"{where}: '{reference}' must be 'file.py:function' or "
                        "'package.module:function'")
    try:
        if path is not None:
            if not path.is_file():
                raise SpecError(f"{where}: file '{path}' does not exist")
            module = sys.modules.get(module_name)
            if module is None:
                spec = importlib.util.spec_from_file_location(module_name, path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module  # pickling, dataclasses need it there
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[module_name]
                    raise
        else:
            module = importlib.import_module(module_name)
    except SpecError:
        raise
    except Exception as exc:
        last = traceback.extract_tb(exc.__traceback__)[-1]
        raise SpecError(f"{where}: importing '{reference}' failed: {type(exc).__name__}: "
                        f"{exc} ({Path(last.filename).name}, line {last.lineno})") from None
    found = getattr(module, function, None)
    if not callable(found):
        raise SpecError(f"{where}: '{path or module_name}' has no function '{function}'")
    return found  # type: ignore[no-any-return]


def code_hash(reference: str, base_dir: Path) -> str | None:
    """sha256 of the file a `file.py:fn` reference names (None for an importable module)."""
    path, _, _ = resolve(reference, base_dir)
    if path is None or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()
