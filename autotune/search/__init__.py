"""The search: create or resume a study, run trials in this process (objective, loop,
budget, heartbeats, retries), and evaluate the chosen configuration once on test.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune.search._final import evaluate_best
    from autotune.search._loop import run_trials
    from autotune.search._objective import Objective
    from autotune.search._samplers import build_pruner, build_sampler
    from autotune.search._study import (
        check_definition,
        count_finished,
        create_study,
        find_study,
        metric_name,
        resume_study,
    )

# public name -> the private module that defines it; imported when first used, so
# importing one module of the package does not import the others (and torch)
_WHERE = {
    "create_study": "_study",
    "resume_study": "_study",
    "find_study": "_study",
    "check_definition": "_study",
    "metric_name": "_study",
    "count_finished": "_study",
    "Objective": "_objective",
    "run_trials": "_loop",
    "evaluate_best": "_final",
    "build_sampler": "_samplers",
    "build_pruner": "_samplers",
}
__all__ = ["Objective", "build_pruner", "build_sampler", "check_definition", "count_finished",
    "create_study", "evaluate_best", "find_study", "metric_name", "resume_study", "run_trials"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
