"""The line a training script prints to report to autotune, and the reader of a script's
output: tagged JSON lines from `report(...)`, or a study's `report_regex`.

`report` imports nothing of autotune's: a script that calls it runs the same with or
without a search around it (it prints one more line per epoch).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

TAG = "@autotune.report "  # a reported line starts with it; the rest is one JSON object


def report(epoch: int | None = None, **metrics: Any) -> None:
    """Print one epoch's metrics for the search running this script, e.g.
    `autotune.report(epoch=3, val_accuracy=0.91, val_loss=0.3)`.

    `epoch` (1-based) may be left out: each report is then the next epoch. Values are
    numbers (a 0-d tensor or NumPy scalar works too). The study's `metric` is the one
    the search scores and prunes by; the others go into the trial's learning curve.
    """
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)
                              or epoch < 0):
        raise ValueError(f"report(): epoch must be an integer >= 0, got {epoch=}")
    values: dict[str, float] = {}
    for name, value in metrics.items():
        try:
            values[name] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"report(): {name} must be a number, got {value!r}") from None
    line = TAG + json.dumps({"epoch": epoch, **values}, allow_nan=True)
    print(line, file=sys.stdout, flush=True)


@dataclass
class Reported:
    """One epoch's report read from a script's output."""

    epoch: int
    value: float  # the study's metric
    metrics: dict[str, float] = field(default_factory=dict)  # everything the line gave


class ReportReader:
    """Turns a script's output lines into reports of `metric`: tagged lines (any metric
    names; those without `metric` are remembered, not reported) or, with a `regex`, each
    match's first group as the next epoch's value (or, where the regex names them, its
    `value` group as the value of epoch `epoch`)."""

    def __init__(self, metric: str, regex: str = "") -> None:
        self.metric = metric
        self.regex = re.compile(regex) if regex else None
        self.last_epoch = 0
        self.seen: set[str] = set()  # metric names the tagged lines carried
        self.bad_line: str | None = None  # the first line that looked like a report but was not

    def feed(self, line: str) -> Reported | None:
        """The report in one line of output (without its newline), or None."""
        if self.regex is not None:
            match = self.regex.search(line)
            if match is None:
                return None
            named = match.groupdict()
            number = _number(named["value"] if "value" in named else match.group(1))
            epoch = named.get("epoch")
            if number is None or (epoch is not None and not epoch.isdigit()):
                self.bad_line = self.bad_line or line
                return None
            return self._next(None if epoch is None else int(epoch), number,
                              {self.metric: number})
        start = line.find(TAG)
        if start < 0:
            return None
        try:
            data = json.loads(line[start + len(TAG):])
            epoch = data.pop("epoch", None)
            metrics = {str(k): float(v) for k, v in data.items()}
        except (ValueError, TypeError, AttributeError):
            self.bad_line = self.bad_line or line
            return None
        self.seen.update(metrics)
        if self.metric not in metrics:
            return None
        if epoch is not None and not (isinstance(epoch, int) and epoch >= 0):
            self.bad_line = self.bad_line or line
            return None
        return self._next(epoch, metrics[self.metric], metrics)

    def _next(self, epoch: int | None, value: float, metrics: dict[str, float]) -> Reported:
        epoch = self.last_epoch + 1 if epoch is None else epoch
        self.last_epoch = epoch
        return Reported(epoch, value, metrics)

    def nothing_reported(self) -> str:
        """Why no report was read: one line for the failed trial."""
        if self.regex is not None:
            why = (f"report_regex {self.regex.pattern!r} matched no line" if self.bad_line is None
                   else "report_regex's group is not a number (or its epoch not a whole "
                   f"number) in: {self.bad_line.strip()!r}")
            return f"the script reported nothing: {why}"
        if self.seen:
            return (f"the script reported {', '.join(sorted(self.seen))} but not "
                    f"'{self.metric}', the study's metric")
        return ("the script reported nothing: call autotune.report(epoch=..., "
                f"{self.metric}=...) each epoch, or set report_regex in the study file")


def _number(text: str | None) -> float | None:
    """A regex group as a number: '0.93', '93', '1e-3'; None when it is not one."""
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
