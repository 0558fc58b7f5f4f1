"""The objective of a study whose unchanged script trains: `script = "train.py"`.

Each trial runs the script once, in its own process group, with the trial's params on its
command line (`args`, default every param as `--name value`) and the study file's folder as
its working directory. What it reports (autotune.report lines, or `report_regex` matches in
what it prints) is reported and pruned on epoch by epoch; a pruned trial's process group is
killed. Its output's tail is stored on the trial as an artifact; a non-zero exit fails the
trial with the last lines of its stderr, and so does a script that never reports.

Each trial has a checkpoint folder of its own ($AUTOTUNE_CHECKPOINT_DIR, `{checkpoint_dir}`
in `args`): a retry of a trial whose worker died, or whose run was interrupted, gets that
trial's folder, so a script that saves its state there and continues from what it finds
resumes where the dead one stopped.
"""

from __future__ import annotations

import collections
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

from autotune.errors import Diverged, UserCodeError
from autotune.routes import _trial
from autotune.routes._report import ReportReader
from autotune.spec._spec import StudySpec
from autotune.tracking._tracker import Tracker
from autotune.training import _artifacts as artifacts

OUTPUT = "script-output.txt"  # the trial's artifact: the last lines the script printed
OUTPUT_LINES = 200
STDERR_LINES = 20  # stored with a failed trial's reason
STOP_GRACE_S = 5.0  # SIGTERM first; SIGKILL for a group still there this much later


class ScriptObjective:
    """Runs the study's script once per trial."""

    def __init__(self, spec: StudySpec, device: torch.device,
                 store: FileSystemArtifactStore, artifact_dir: Path,
                 tracker: Tracker | None = None) -> None:
        self.spec = spec
        self.tracker = tracker
        self.device = device
        self.store = store
        self.artifact_dir = artifact_dir
        self.folder = Path(spec.path).parent.resolve()

    def __call__(self, trial: optuna.Trial) -> float:
        user = _trial.start(trial, self.spec, self.device, self.store,
                            trained_on=f"your script {self.spec.script}",
                            tracker=self.tracker)
        checkpoints = artifacts.checkpoint_folder(self.artifact_dir, self.spec.name,
                                                  trial.number)
        taken_from = artifacts.take_over_folder(self.artifact_dir, self.spec.name,
                                                trial.number, user.retries)
        argv = command(self.spec, self.folder, user.params, trial.number, user.seed,
                       self.device, checkpoints)
        trial.set_user_attr("command", shlex.join(argv))
        reader = ReportReader(self.spec.metric, self.spec.report_regex)
        started = time.perf_counter()
        interrupted = False
        try:
            process = ScriptProcess(argv, self.folder,
                                    script_env(user, self.device, checkpoints))
        except UserCodeError:
            artifacts.remove_folder(self.artifact_dir, self.spec.name, trial.number)
            raise
        try:
            for line in process.lines():
                got = reader.feed(line)
                if got is not None:
                    if taken_from is not None:  # the first report says where it resumed
                        carry_on(user, trial, taken_from, got.epoch)
                        taken_from = None
                    others = {k: v for k, v in got.metrics.items() if k != self.spec.metric}
                    user.report(got.epoch, got.value, **others)
            code = process.wait()
            if code != 0:
                how = (f"killed by signal {-code}" if code < 0 else f"exited with code {code}")
                last = process.stderr_tail[-1].strip() if process.stderr_tail else ""
                raise failed(trial, f"the script {how}" + (f": {last}" if last else ""),
                             "".join(process.stderr_tail))
            if not user.epochs:
                raise failed(trial, reader.nothing_reported(), "".join(process.stderr_tail))
            return user.epochs[-1]["value"]  # the model the script ends with
        except (optuna.TrialPruned, Diverged, UserCodeError):
            raise
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            process.stop()
            artifacts.upload_text(self.store, trial, OUTPUT, "".join(process.output_tail))
            user.finish(time.perf_counter() - started, keep_checkpoint=interrupted)
            if not interrupted:  # a retry (of an interrupted run) continues from it
                artifacts.remove_folder(self.artifact_dir, self.spec.name, trial.number)


def carry_on(user: _trial.Trial, trial: optuna.Trial, dead: int, first_epoch: int) -> None:
    """A retry whose script reports `first_epoch` first, from the checkpoint folder of the
    dead trial `dead`: the epochs before it are that trial's (as it reported them; their
    seconds are not known). A script that starts over at epoch 1 carries none."""
    if first_epoch <= 1:
        return
    (frozen,) = [t for t in trial.study.get_trials(deepcopy=False) if t.number == dead]
    user.carry_on(dead, [{"epoch": step, "value": value, "seconds": 0.0}
                         for step, value in sorted(frozen.intermediate_values.items())
                         if step < first_epoch])


def command(spec: StudySpec, folder: Path, params: dict[str, Any], number: int, seed: int,
            device: torch.device, checkpoints: Path) -> list[str]:
    """The script's command line: the interpreter for a .py file, then `args` with each
    {name} replaced by its value (default: every param as --name value)."""
    script = str(folder / spec.script)
    head = [sys.executable, script] if spec.script.endswith(".py") else [script]
    if spec.args is None:
        return head + [word for name, value in params.items()
                       for word in (f"--{name}", _text(value))]
    values = {**params, "max_epochs": spec.max_epochs, "trial_number": number, "seed": seed,
              "device": device.type, "checkpoint_dir": str(checkpoints)}
    quoted = {name: shlex.quote(_text(value)) for name, value in values.items()}
    return head + shlex.split(spec.args.format(**quoted))


def script_env(user: _trial.Trial, device: torch.device, checkpoints: Path
               ) -> dict[str, str]:
    """The script's environment: this process's, unbuffered output (its reports arrive
    when printed), the trial's facts and checkpoint folder, and only this worker's GPU."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "AUTOTUNE_TRIAL_NUMBER": str(user.number), "AUTOTUNE_SEED": str(user.seed),
           "AUTOTUNE_MAX_EPOCHS": str(user.max_epochs), "AUTOTUNE_DEVICE": device.type,
           "AUTOTUNE_CHECKPOINT_DIR": str(checkpoints)}
    if device.type == "cuda" and device.index is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(device.index)
    env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    return env


def failed(trial: optuna.Trial, reason: str, details: str) -> UserCodeError:
    """The error that fails this trial only, its reason and stderr's tail stored on it."""
    trial.set_user_attr("fail_reason", reason.splitlines()[0] if reason else "failed")
    trial.set_user_attr("traceback", details)
    return UserCodeError(reason)


class ScriptProcess:
    """A script running in its own process group; its stdout and stderr read line by line
    (by two threads), the last lines of each kept."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.output_tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        try:
            self.process = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1,
                start_new_session=True)  # its own group: stop() reaches its children too
        except OSError as exc:
            raise UserCodeError(f"cannot start the script: {exc}") from None
        assert self.process.stdout is not None and self.process.stderr is not None
        for name, stream in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
            threading.Thread(target=self._read, args=(name, stream), daemon=True,
                             name=f"autotune-script-{name}").start()

    def _read(self, name: str, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put((name, line))
        self._lines.put((name, None))

    def lines(self) -> Any:
        """Lines of stdout and stderr as they are printed, until both are closed (children
        the script left behind are killed once it has exited, so their copies close too)."""
        open_streams = 2
        exited_at: float | None = None
        while open_streams:
            try:
                name, line = self._lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > 1.0:
                        self._signal(signal.SIGKILL)
                continue
            if line is None:
                open_streams -= 1
                continue
            self.output_tail.append(line)
            if name == "stderr":
                self.stderr_tail.append(line)
            yield line.rstrip("\n")

    def wait(self) -> int:
        return self.process.wait()

    def stop(self) -> None:
        """End the script's whole process group: SIGTERM, then SIGKILL after a grace."""
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        self._signal(signal.SIGKILL)  # what is left of the group, children included
        self.process.wait()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _text(value: Any) -> str:
    """A param's value as the script reads it: numbers as Python prints them."""
    return str(value)
