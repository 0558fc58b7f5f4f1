"""The reporting line of a training script: `autotune.report` writes it, ReportReader reads
it (or a study's report_regex reads what the script prints anyway)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import autotune
from autotune.routes._report import ReportReader


def test_report_prints_one_tagged_json_line_that_the_reader_reads_back(capsys):
    autotune.report(epoch=2, val_accuracy=torch.tensor(0.75), val_loss=np.float32(0.5))
    autotune.report(val_accuracy=0.8)  # no epoch: the next one
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == '@autotune.report {"epoch": 2, "val_accuracy": 0.75, "val_loss": 0.5}'
    reader = ReportReader("val_accuracy")
    first, second = (reader.feed(line) for line in lines)
    assert (first.epoch, first.value, first.metrics) == (2, 0.75, {"val_accuracy": 0.75,
                                                                   "val_loss": 0.5})
    assert (second.epoch, second.value) == (3, 0.8)
    assert reader.feed("loss 0.3 accuracy 0.9") is None  # a line of its own: not a report


def test_report_refuses_what_is_not_a_number_or_an_epoch():
    with pytest.raises(ValueError, match="report\\(\\): val_accuracy must be a number, got 'x'"):
        autotune.report(epoch=1, val_accuracy="x")
    with pytest.raises(ValueError, match="epoch must be an integer >= 0, got epoch=1.5"):
        autotune.report(epoch=1.5, val_accuracy=0.5)


def test_a_regex_s_first_group_is_each_next_epoch_s_value():
    reader = ReportReader("acc", r"Accuracy: \d+/\d+ \((\d+)%\)")
    lines = ["Train Epoch: 1 [0/60000 (0%)]\tLoss: 2.3",
             "Test set: Average loss: 0.0300, Accuracy: 9903/10000 (99%)",
             "Test set: Average loss: 0.0200, Accuracy: 9950/10000 (100%)"]
    got = [r for r in map(reader.feed, lines) if r is not None]
    assert [(r.epoch, r.value) for r in got] == [(1, 99.0), (2, 100.0)]


def test_a_regex_naming_epoch_and_value_reports_the_epoch_the_line_names():
    """A resumed script's first line names epoch 3: it is epoch 3, not the reader's first."""
    reader = ReportReader("acc", r"epoch (?P<epoch>\d+) .*val_acc=(?P<value>[\d.]+)")
    lines = ["resuming from epoch 2", "epoch 3 loss=0.2 val_acc=0.91", "epoch x val_acc=0.5",
             "epoch 4 loss=0.1 val_acc=0.93"]
    got = [r for r in map(reader.feed, lines) if r is not None]
    assert [(r.epoch, r.value) for r in got] == [(3, 0.91), (4, 0.93)]


def test_the_reader_says_why_nothing_was_reported():
    silent = ReportReader("val_accuracy", r"acc=([\w.]+)")
    silent.feed("acc=high")
    assert silent.nothing_reported() == ("the script reported nothing: report_regex's group "
                                         "is not a number (or its epoch not a whole number) "
                                         "in: 'acc=high'")
    other = ReportReader("val_accuracy")
    other.feed('@autotune.report {"epoch": 1, "loss": 0.2}')
    assert other.nothing_reported() == ("the script reported loss but not 'val_accuracy', "
                                        "the study's metric")


def test_a_script_that_imports_autotune_only_to_report_starts_without_torch_or_optuna():
    code = ("import sys, autotune\nautotune.report(epoch=1, val_accuracy=1)\n"
            "print(sorted(m for m in ('torch', 'optuna') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ['@autotune.report {"epoch": 1, "val_accuracy": 1.0}',
                                        "[]"]
