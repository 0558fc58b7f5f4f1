"""What a study is: a study file (TOML) or `autotune.tune`'s arguments, validated into a
frozen `StudySpec`; the search space and the `TrainConfig` one trial trains with.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune.spec._config import TrainConfig
    from autotune.spec._space import model_params, suggest, to_config
    from autotune.spec._spec import (
        ParamSpec,
        StudySpec,
        find_study_file,
        load_spec,
        parse_spec,
        shipped_names,
    )

# public name -> the private module that defines it; imported when first used, so
# importing one module of the package does not import the others (and torch)
_WHERE = {
    "StudySpec": "_spec",
    "ParamSpec": "_spec",
    "load_spec": "_spec",
    "parse_spec": "_spec",
    "find_study_file": "_spec",
    "shipped_names": "_spec",
    "TrainConfig": "_config",
    "suggest": "_space",
    "to_config": "_space",
    "model_params": "_space",
}
__all__ = ["ParamSpec", "StudySpec", "TrainConfig", "find_study_file", "load_spec",
    "model_params", "parse_spec", "shipped_names", "suggest", "to_config"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
