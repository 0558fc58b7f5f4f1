"""Study files: TOML under studies/ -> a validated, frozen StudySpec (SpecError on bad input)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.errors import SpecError, UsageError
from autotune.plugins import _references as plugins
from autotune.search import _samplers as samplers
from autotune.spec._config import MODELS, OPTIMIZERS, SCHEDULES, TrainConfig, field_types
from autotune.training._losses import (
    DEFAULT_LOSS,
    DEFAULT_METRIC,
    LOSSES,
    METRICS,
    check_pair,
    default_metric,
    task,
)

# Shipped study files live beside the package; $AUTOTUNE_STUDIES_DIR adds another place.
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "studies"

TOP_KEYS = {"name", "description", "dataset", "model", "seed", "val_fraction", "split_seed",
            "final_train", "trial_weights", "speedups", "budget", "sampler", "pruner", "fixed",
            "space", "start_from", "loss", "metric", "target", "image_size", "bad_images",
            "train", "script", "args", "report_regex", "direction", "tensorboard", "mlflow",
            "cpus_per_trial", "gpus_per_trial"}
BUDGET_KEYS = {"n_trials", "timeout_s", "max_epochs"}
PARAM_KEYS = {"low", "high", "log", "step", "choices"}
# Fields a study sets in its own keys, not through [fixed] or [space].
NOT_SEARCHABLE = {"seed", "max_epochs", "model"}
ALLOWED_CHOICES = {"optimizer": OPTIMIZERS, "model": MODELS, "schedule": SCHEDULES}
# What the final retrain of the best configuration trains on (autotune.search._final).
FINAL_TRAIN = ("train", "train+val")
# Which trials store their best epoch's weights as an artifact (autotune.search._objective).
TRIAL_WEIGHTS = ("improving", "all", "none")
# What only autotune's own training reads: a study whose `train` function or `script` trains
# refuses them (that code loads its own data and builds its own model).
OWN_TRAINING_KEYS = ("dataset", "model", "loss", "target", "image_size", "bad_images",
                     "val_fraction", "split_seed", "final_train", "trial_weights", "speedups")
DIRECTIONS = ("maximize", "minimize")
# a metric of the user's own (what their train function returns or their script reports)
METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# names a script's `args` may use besides the study's params
ARGS_NAMES = ("max_epochs", "trial_number", "seed", "device", "checkpoint_dir")
# Flipping a digit left-right makes another symbol (or none): no label survives it.
NO_HFLIP_DATASETS = ("digits", "mnist")


@dataclass(frozen=True)
class ParamSpec:
    """One searched hyperparameter: a numeric range or a list of choices."""

    name: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class StudySpec:
    """Everything that defines a study: data, model, search space, algorithms and budget."""

    name: str
    dataset: str  # "" when `train` or `script` trains (that code loads its own data)
    model: str = "mlp"
    loss: str = "cross_entropy"  # what trials train with (autotune.training._losses.LOSSES)
    metric: str = "val_accuracy"  # what scores them; the study's direction follows it
    description: str = ""
    seed: int = 0  # sampler seed; trial k trains with torch seed `seed + k`
    val_fraction: float = 0.1  # share of the training data held out for validation; (0, 1)
    split_seed: int = 0  # seed of the train/validation split
    # the final retrain of the best configuration, for its best epoch count, before the one
    # test evaluation: "train" reproduces the validated model; "train+val" adds the
    # validation images (more data, usually a little higher test accuracy)
    final_train: str = "train"
    # trials that store their best epoch's weights: "improving" (those that were the study's
    # best when they finished, so the best trial always has them), "all" or "none"
    trial_weights: str = "improving"
    # a user's model takes the speed-up layer's steps where it recognises its layers (as the
    # built-in models always do; results equal up to float rounding); off: plain torch
    speedups: bool = False
    target: tuple[str, ...] = ()  # the label or value columns of a csv: data set
    image_size: int | None = None  # an imagefolder: data set's images resized to N x N
    bad_images: str = "skip"  # an imagefolder: image that cannot be decoded: skip or fail
    # Your own training instead of autotune's (then dataset, model and loss are not given):
    train: str = ""  # "file.py:function": train(params, trial: autotune.Trial) -> float
    script: str = ""  # a training script (relative to the study file), run once per trial
    args: str | None = None  # its arguments, "--lr {lr} ..."; None: every param as --name value
    report_regex: str = ""  # its printed lines' first group (or `value`) is an epoch's value
    direction: str = "maximize"  # maximize or minimize: the metric's, or the file's own
    # TensorBoard event files per trial under this folder (relative to the study file);
    # where a study is watched, not what it is: not part of its definition
    tensorboard: str = ""
    mlflow: str = ""  # MLflow tracking URI: a run per trial under one per study
    # what each worker asks a Ray cluster for (--launcher ray); fractions share a CPU or GPU.
    # Where a study runs, not what it is: not part of its definition
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    n_trials: int = 20  # study-wide total of finished (complete + pruned) trials
    timeout_s: float | None = None  # stop starting trials after this many seconds of a run
    max_epochs: int = 10  # epochs per trial unless pruned
    sampler: str = "tpe"
    sampler_options: dict[str, Any] = field(default_factory=dict)
    pruner: str = "median"
    pruner_options: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields held constant
    space: tuple[ParamSpec, ...] = ()
    # configurations tried first ([[start_from]] tables: a value per searched param, or some);
    # queued once when the study is created, the sampler's own picks follow
    start_from: tuple[dict[str, Any], ...] = ()
    path: str = ""  # where the spec was read from
    text: str = ""  # the study file's raw text, stored on the study

    @property
    def own_training(self) -> bool:
        """Whether the user's `train` function or `script` trains, not autotune's fit."""
        return bool(self.train or self.script)

    def definition(self) -> dict[str, Any]:
        """What must match for a run to resume this study (everything but budget and labels)."""
        keep = {"dataset", "model", "seed", "val_fraction", "split_seed", "max_epochs",
                "sampler", "sampler_options", "pruner", "pruner_options", "fixed"}
        out = {k: v for k, v in dataclasses.asdict(self).items() if k in keep}
        out["space"] = {
            p.name: {k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in dataclasses.asdict(p).items() if k != "name" and v is not None}
            for p in self.space
        }
        for key in ("model", "dataset", "train"):  # the code itself: a resume on changed code
            if plugins.is_reference(getattr(self, key)):
                out[f"{key}_code"] = plugins.code_hash(getattr(self, key),
                                                       Path(self.path).parent)
        if self.own_training:  # only then, so studies stored before them still match
            out.update({k: getattr(self, k) for k in ("train", "script", "report_regex",
                                                        "direction") if getattr(self, k)})
            if self.args is not None:
                out["args"] = self.args
            if self.script:
                out["script_code"] = _file_hash(Path(self.path).parent / self.script)
        if self.target:  # only when given, so studies stored before it still match
            out["target"] = list(self.target)
        if self.image_size is not None:
            out["image_size"] = self.image_size
        for key, default in (("loss", DEFAULT_LOSS), ("metric", DEFAULT_METRIC)):
            if getattr(self, key) != default:  # so studies stored before them still match
                out[key] = getattr(self, key)
        if self.start_from:  # only when given, so studies stored before it still match
            out["start_from"] = [dict(e) for e in self.start_from]
        return out


def _file_hash(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def find_study_file(study: str) -> Path:
    """Resolve --study: a path to a .toml file, or the name of a shipped study."""
    as_path = Path(study)
    if not study.strip():
        raise SpecError("--study is empty; give a shipped study's name "
                        f"({', '.join(shipped_names()) or 'none'}) or a .toml file's path")
    if as_path.is_dir():
        raise SpecError(f"study '{study}' is a directory; give a .toml study file inside it")
    if names_a_file(study):
        if not as_path.is_file():
            raise SpecError(f"study file '{study}' does not exist")
        return as_path
    for folder in study_dirs():
        candidate = folder / f"{study}.toml"
        if candidate.is_file():
            return candidate
    raise SpecError(f"unknown study '{study}'; available: {', '.join(shipped_names()) or 'none'}"
                    " (or pass a path to a .toml study file)")


def names_a_file(study: str) -> bool:
    """Whether --study gives a study file's path (else a study's name in the study folders)."""
    return study.endswith(".toml") or os.sep in study


def study_dirs() -> list[Path]:
    """Folders searched for study names: $AUTOTUNE_STUDIES_DIR first, then the shipped ones."""
    extra = os.environ.get("AUTOTUNE_STUDIES_DIR")
    return ([Path(extra)] if extra else []) + [SHIPPED_DIR]


def shipped_names() -> list[str]:
    """Names of every study file found in the study folders."""
    return sorted({p.stem for d in study_dirs() if d.is_dir() for p in d.glob("*.toml")})


def load_spec(study: str) -> StudySpec:
    """Read and validate a study by name or path."""
    path = find_study_file(study)
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    return parse_spec(raw, path=str(path), text=text, default_name=path.stem)


def parse_spec(raw: dict[str, Any], *, path: str, text: str = "", default_name: str = "study"
               ) -> StudySpec:
    """Validate a parsed study file; every error names the file, the key and what is allowed."""
    v = _Validator(path)
    v.keys(raw, TOP_KEYS, "")
    budget = v.table(raw, "budget")
    v.keys(budget, BUDGET_KEYS, "budget.")
    own = v.own_training(raw)  # train = ... or script = ...: the user's code trains
    spec = StudySpec(
        name=v.study_name(raw, default_name),
        description=v.typed(raw, "description", str, ""),
        dataset="" if own else v.dataset(raw),
        model="" if own else v.model(raw),
        loss=v.one_of(raw, "loss", tuple(LOSSES), DEFAULT_LOSS),
        seed=v.typed(raw, "seed", int, 0),
        val_fraction=v.number(raw, "val_fraction", 0.1, low=0.0, high=1.0, open_=True) or 0.1,
        split_seed=v.typed(raw, "split_seed", int, 0),
        final_train=v.one_of(raw, "final_train", FINAL_TRAIN, "train"),
        trial_weights=v.one_of(raw, "trial_weights", TRIAL_WEIGHTS, "improving"),
        speedups=v.typed(raw, "speedups", bool, False),
        tensorboard=v.typed(raw, "tensorboard", str, ""),
        mlflow=v.typed(raw, "mlflow", str, ""),
        cpus_per_trial=v.number(raw, "cpus_per_trial", 1.0, low=0.0, open_=True) or 1.0,
        gpus_per_trial=v.number(raw, "gpus_per_trial", 0.0, low=0.0) or 0.0,
        n_trials=v.positive_int(budget, "n_trials", 20, "budget."),
        timeout_s=v.number(budget, "timeout_s", None, low=0.0, prefix="budget.", open_=True),
        max_epochs=v.positive_int(budget, "max_epochs", 10, "budget."),
        path=path,
        text=text,
    )
    if own:
        spec = dataclasses.replace(spec, **own, **v.own_metric(raw))
    else:
        metric = v.one_of(raw, "metric", tuple(METRICS), default_metric(spec.loss))
        mismatch = check_pair(spec.loss, metric)
        if mismatch:
            raise v.fail("metric", mismatch)
        if "direction" in raw:
            raise v.fail("direction", f"follows the metric ('{metric}' is "
                         f"{METRICS[metric].direction}d); only a study whose train function "
                         "or script reports a metric of its own sets it")
        spec = dataclasses.replace(spec, metric=metric, direction=METRICS[metric].direction)
    spec = dataclasses.replace(spec, target=v.target(raw, spec.dataset),
                               **v.image_options(raw, spec.dataset))
    if task(spec.loss) == "regression" and spec.dataset in plugins.DATASETS:
        raise v.fail("loss", f"'{spec.loss}' is a regression loss and the built-in dataset "
                     f"'{spec.dataset}' has class labels; use cross_entropy or hinge, or "
                     "your own dataset (dataset = \"data.py:load\")")
    sampler, sampler_options = v.algorithm(raw, "sampler", samplers.SAMPLERS, "tpe")
    pruner, pruner_options = v.algorithm(raw, "pruner", samplers.PRUNERS, "median")
    fixed = v.fixed(raw)
    space = v.space(raw, fixed)
    v.no_hflip(spec.dataset, fixed, space)
    start_from = v.start_from(raw, space)
    if spec.script:
        v.script_args(spec.args, space, fixed)
    spec = dataclasses.replace(spec, sampler=sampler, sampler_options=sampler_options,
                               pruner=pruner, pruner_options=pruner_options, fixed=fixed,
                               space=space, start_from=start_from)
    check_algorithms(spec)
    return spec


def check_algorithms(spec: StudySpec) -> None:
    """Build the sampler and pruner once so option values Optuna rejects fail here, early."""
    for kind, build in (("sampler", lambda: samplers.build_sampler(
            spec.sampler, spec.sampler_options, spec.seed)),
                        ("pruner", lambda: samplers.build_pruner(
            spec.pruner, spec.pruner_options, spec.max_epochs))):
        try:
            build()
        except (TypeError, ValueError, ImportError) as exc:
            name = spec.sampler if kind == "sampler" else spec.pruner
            raise SpecError(f"{spec.path}: {kind} '{name}' rejects its options: {exc}") from None


def check_study_name(name: str, where: str) -> str:
    """A study's name in storage: not empty, no edge whitespace (it could not be told apart
    from another in a listing); SpecError naming `where` it came from otherwise."""
    if not name.strip():
        raise SpecError(f"{where}: the study name is empty; give a name such as 'my-study'")
    if name != name.strip():
        raise SpecError(f"{where}: the study name {name!r} starts or ends with whitespace")
    return name


class _Validator:
    """Reads values out of a parsed study file, raising SpecError with file and key named."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.user_model = False  # a user's model takes params of any name
        self.own = False  # the user's train function or script: every param is theirs

    def own_training(self, raw: dict[str, Any]) -> dict[str, Any]:
        """`train` or `script` (with `args` and `report_regex`), checked; {} when neither is
        given (autotune trains)."""
        given = [key for key in ("train", "script") if key in raw]
        if not given:
            for key in ("args", "report_regex"):
                if key in raw:
                    raise self.fail(key, "only a study with script = \"train.py\" takes it")
            return {}
        if len(given) == 2:
            raise self.fail("script", "give train (a function) or script (a file), not both")
        key = given[0]
        extra = [k for k in OWN_TRAINING_KEYS if k in raw]
        if extra:
            raise self.fail(extra[0], f"is for autotune's own training; a study whose {key} "
                            "trains loads its own data and builds its own model: remove it")
        self.user_model = self.own = True
        value = self.typed(raw, key, str, None)
        if key == "train":
            for option in ("args", "report_regex"):
                if option in raw:
                    raise self.fail(option, "only a study with script = \"train.py\" takes "
                                    "it; a train function reports through trial.report()")
            plugins.load_function(value, Path(self.path).parent, f"{self.path}: train")
            return {"train": value}
        script = Path(self.path).parent / value
        if not value or not script.is_file():
            raise self.fail("script", f"file '{script}' does not exist (the script's path is "
                            "relative to the study file)")
        if script.suffix != ".py" and not os.access(script, os.X_OK):
            raise self.fail("script", f"'{script}' is neither a .py file nor executable")
        regex = self.typed(raw, "report_regex", str, "")
        if regex:
            try:
                compiled = re.compile(regex)
            except re.error as exc:
                raise self.fail("report_regex", f"not a valid regular expression: {exc}"
                                ) from None
            if compiled.groups < 1:
                raise self.fail("report_regex", "needs a group around the value, e.g. "
                                "'Accuracy: ([0-9.]+)'")
            if "epoch" in compiled.groupindex and "value" not in compiled.groupindex:
                raise self.fail("report_regex", "with an epoch group, name the value's "
                                "too, e.g. 'Epoch (?P<epoch>[0-9]+) .* acc (?P<value>[0-9.]+)'")
        return {"script": value, "args": self.typed(raw, "args", str, None),
                "report_regex": regex}

    def own_metric(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The metric a train function returns or a script reports, and its direction: a
        known metric's own, else the file's `direction` (required then)."""
        metric = self.typed(raw, "metric", str, "val_accuracy")
        if not METRIC_NAME.fullmatch(metric):
            raise self.fail("metric", f"must be a name such as 'val_accuracy' or 'f1', got "
                            f"{metric!r}")
        known = METRICS[metric].direction if metric in METRICS else None
        if "direction" not in raw and known is None:
            raise self.fail("direction", f"is required: metric '{metric}' is your own; add "
                            "direction = \"maximize\" or \"minimize\"")
        direction = self.one_of(raw, "direction", DIRECTIONS, known)
        if known is not None and direction != known:
            raise self.fail("direction", f"metric '{metric}' is {known}d; remove direction "
                            "or name your metric otherwise")
        return {"metric": metric, "direction": direction}

    def script_args(self, args: str | None, space: tuple[ParamSpec, ...],
                    fixed: dict[str, Any]) -> None:
        """Every {name} in a script's `args` must be a param or one of ARGS_NAMES."""
        if args is None:
            return
        allowed = [p.name for p in space] + list(fixed) + list(ARGS_NAMES)
        try:
            names = [field for _, field, _, _ in string.Formatter().parse(args)
                     if field is not None]
        except ValueError as exc:
            raise self.fail("args", f"{exc} (write {{{{ and }}}} for literal braces)") from None
        for name in names:
            if name not in allowed:
                raise self.fail("args", f"{{{name}}} is not a param; allowed: "
                                f"{', '.join(allowed)}")

    def dataset(self, raw: dict[str, Any]) -> str:
        value = raw.get("dataset")
        scheme = plugins.data_scheme(value) if isinstance(value, str) else None
        if scheme is not None and scheme[0] == "torchvision":
            from autotune.training._torchvision import dataset_class

            try:
                dataset_class(scheme[1])
            except UsageError as exc:
                raise self.fail("dataset", str(exc)) from None
            return str(value)
        if scheme is not None and scheme[0] == "imagefolder":
            path = Path(self.path).parent / scheme[1]
            if not scheme[1] or not path.is_dir():
                raise self.fail("dataset", f"folder '{path}' does not exist (imagefolder:PATH "
                                "is relative to the study file)")
            return str(value)
        if scheme is not None:
            path = Path(self.path).parent / scheme[1]
            if not scheme[1] or not path.is_file():
                raise self.fail("dataset", f"file '{path}' does not exist "
                                f"({scheme[0]}:PATH is relative to the study file)")
            return str(value)
        if isinstance(value, str) and plugins.is_reference(value):
            plugins.load_function(value, Path(self.path).parent, f"{self.path}: dataset")
            return value
        return self.one_of(raw, "dataset", tuple(plugins.DATASETS), None)

    def image_options(self, raw: dict[str, Any], dataset: str) -> dict[str, Any]:
        """`image_size` and `bad_images`, which only an imagefolder: data set takes."""
        given = [key for key in ("image_size", "bad_images") if key in raw]
        if given and not dataset.startswith("imagefolder:"):
            raise self.fail(given[0], "only an imagefolder: data set takes it")
        size = self.typed(raw, "image_size", int, None)
        if size is not None and not 1 <= size <= 4096:
            raise self.fail("image_size", f"must be in [1, 4096], got {size}")
        return {"image_size": size,
                "bad_images": self.one_of(raw, "bad_images", ("skip", "fail"), "skip")}

    def target(self, raw: dict[str, Any], dataset: str) -> tuple[str, ...]:
        """The `target` column(s): required by a csv: data set, refused elsewhere."""
        value = raw.get("target")
        is_csv = dataset.startswith("csv:")
        if value is None:
            if is_csv:
                raise self.fail("target", "a csv: data set needs target = \"column\" (or a "
                                "list of columns): the labels, or the values to predict")
            return ()
        if not is_csv:
            raise self.fail("target", "only a csv: data set takes a target column")
        names = [value] if isinstance(value, str) else value
        if not (isinstance(names, list) and names
                and all(isinstance(n, str) and n for n in names)):
            raise self.fail("target", f"must be a column name or a list of them, got {value!r}")
        return tuple(names)

    def model(self, raw: dict[str, Any]) -> str:
        value = raw.get("model", "mlp")
        if isinstance(value, str) and value.startswith("torchvision:"):
            from autotune.training._torchvision import model_builder

            try:
                model_builder(value.partition(":")[2])
            except UsageError as exc:
                raise self.fail("model", str(exc)) from None
            self.user_model = True  # its params (weights, freeze) are of any name
            return value
        if isinstance(value, str) and plugins.is_reference(value):
            plugins.load_function(value, Path(self.path).parent, f"{self.path}: model")
            self.user_model = True
            return value
        return self.one_of(raw, "model", tuple(plugins.MODELS), "mlp")

    def user_param_type(self, key: str, entry: Any) -> type:
        """The type of a parameter only the user's model knows, from its values."""
        values = entry.get("choices") if isinstance(entry, dict) and "choices" in entry else (
            [entry.get("low"), entry.get("high")] if isinstance(entry, dict) else [entry])
        values = values if isinstance(values, list) else [values]
        for kind in (bool, str):
            if values and all(isinstance(v, kind) for v in values):
                return kind
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return int
        if values and all(isinstance(v, int | float) and not isinstance(v, bool)
                          for v in values):
            return float
        raise self.fail(key, f"values must be numbers, strings or booleans, got {entry!r}")

    def fail(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.path}: {key}: {message}")

    def keys(self, table: dict[str, Any], allowed: set[str], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(prefix + key,
                                f"unknown key; allowed: {', '.join(sorted(allowed))}")

    def table(self, raw: dict[str, Any], key: str) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table ([{key}]), got {value!r}")
        return value

    def typed(self, raw: dict[str, Any], key: str, kind: type, default: Any,
              prefix: str = "") -> Any:
        if key not in raw:
            return default
        value = raw[key]
        if not _is_type(value, kind):
            raise self.fail(prefix + key, f"must be {_type_name(kind)}, got {value!r}")
        return float(value) if kind is float else value

    def study_name(self, raw: dict[str, Any], default: str) -> str:
        name: str = self.typed(raw, "name", str, default)
        return check_study_name(name, f"{self.path}: name")

    def one_of(self, raw: dict[str, Any], key: str, allowed: tuple[str, ...],
               default: str | None, prefix: str = "") -> str:
        if key not in raw and default is None:
            raise self.fail(prefix + key, f"is required; allowed: {', '.join(allowed)}")
        value = self.typed(raw, key, str, default, prefix)
        if value not in allowed:
            raise self.fail(prefix + key,
                            f"unknown value {value!r}; allowed: {', '.join(allowed)}")
        return value

    def positive_int(self, raw: dict[str, Any], key: str, default: int, prefix: str) -> int:
        value = self.typed(raw, key, int, default, prefix)
        if value < 1:
            raise self.fail(prefix + key, f"must be an integer >= 1, got {value!r}")
        return value

    def number(self, raw: dict[str, Any], key: str, default: float | None, *, low: float,
               high: float = math.inf, prefix: str = "", open_: bool = False) -> float | None:
        value = self.typed(raw, key, float, default, prefix)
        if value is None:
            return None
        ok = low < value < high if open_ else low <= value <= high
        if not ok or not math.isfinite(value):
            bounds = f"({low:g}, {high:g})" if open_ else f"[{low:g}, {high:g}]"
            raise self.fail(prefix + key, f"must be in {bounds}, got {value!r}")
        return value

    def algorithm(self, raw: dict[str, Any], key: str, registry: dict[str, Any],
                  default: str) -> tuple[str, dict[str, Any]]:
        table = dict(self.table(raw, key))
        name = self.one_of(table, "name", tuple(registry), default, f"{key}.")
        table.pop("name", None)
        allowed = samplers.allowed_options(registry[name])
        if key == "pruner":
            allowed = sorted(allowed + list(samplers.PATIENCE_OPTIONS))
        for option, value in table.items():
            if option not in allowed:
                hint = ", ".join(allowed) if allowed else "none"
                raise self.fail(f"{key}.{option}",
                                f"unknown option for {key} '{name}'; allowed: name, {hint}")
            if not isinstance(value, (bool, int, float, str)):
                raise self.fail(f"{key}.{option}", f"must be a number, boolean or string, "
                                f"got {value!r}")
        return name, table

    def known_types(self) -> dict[str, type]:
        """The TrainConfig fields and their types; none when the user's code trains (every
        param is then theirs to name and judge)."""
        return {} if self.own else field_types()

    def fixed(self, raw: dict[str, Any]) -> dict[str, Any]:
        table = self.table(raw, "fixed")
        types = self.known_types()
        settable = sorted(set(types) - NOT_SEARCHABLE)
        out: dict[str, Any] = {}
        for key in table:
            if key not in settable and self.user_model:  # a param of the user's model
                out[key] = self.typed(table, key, self.user_param_type(f"fixed.{key}",
                                                                        table[key]), None,
                                      "fixed.")
                continue
            if key not in settable:
                raise self.fail(f"fixed.{key}", f"unknown key; allowed: {', '.join(settable)}")
            out[key] = self.typed(table, key, types[key], None, "fixed.")
            self.check_value(f"fixed.{key}", key, out[key])
        return out

    def space(self, raw: dict[str, Any], fixed: dict[str, Any]) -> tuple[ParamSpec, ...]:
        table = self.table(raw, "space")
        types = self.known_types()
        settable = sorted(set(types) - NOT_SEARCHABLE)
        params = []
        for name, entry in table.items():
            key = f"space.{name}"
            if name not in settable and not self.user_model:
                raise self.fail(key, f"unknown hyperparameter; allowed: {', '.join(settable)} "
                                "(or any name, for your own model = 'file.py:function')")
            if name in fixed:
                raise self.fail(key, "is also set in [fixed]; keep it in one of the two")
            if not isinstance(entry, dict):
                raise self.fail(key, f"must be a table with low/high or choices, got {entry!r}")
            self.keys(entry, PARAM_KEYS, key + ".")
            kind = types[name] if name in types else self.user_param_type(key, entry)
            params.append(self.param(name, entry, kind))
        return tuple(params)

    def start_from(self, raw: dict[str, Any], space: tuple[ParamSpec, ...]
                   ) -> tuple[dict[str, Any], ...]:
        """[[start_from]] tables: each names searched params with a value inside their range."""
        entries = raw.get("start_from", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise self.fail("start_from", "must be tables ([[start_from]] with param = value "
                            f"lines), got {entries!r}")
        params = {p.name: p for p in space}
        types = self.known_types()
        for i, entry in enumerate(entries):
            for name, value in entry.items():
                key = f"start_from[{i}].{name}"
                param = params.get(name)
                if param is None:
                    raise self.fail(key, "is not a searched param; allowed: "
                                    f"{', '.join(sorted(params)) or 'none ([space] is empty)'}")
                if param.choices is not None:
                    if value not in param.choices or type(value) is not type(param.choices[0]):
                        raise self.fail(key, f"must be one of {list(param.choices)}, "
                                        f"got {value!r}")
                elif not _is_type(value, kind := types.get(name) or type(param.low)) or not (
                        param.low <= value <= param.high):  # type: ignore[operator]
                    raise self.fail(key, f"must be {_type_name(kind)} in "
                                    f"[{param.low}, {param.high}], got {value!r}")
        return tuple(dict(e) for e in entries)

    def param(self, name: str, entry: dict[str, Any], kind: type) -> ParamSpec:
        key = f"space.{name}"
        if "choices" in entry:
            extra = sorted(set(entry) - {"choices"})
            if extra:
                raise self.fail(f"{key}.{extra[0]}", "cannot be combined with choices")
            return ParamSpec(name, choices=self.choices(name, entry["choices"], kind))
        if kind in (bool, str):
            raise self.fail(key, f"is {_type_name(kind)}: give choices = [...]")
        for bound in ("low", "high"):
            if bound not in entry:
                raise self.fail(key, f"needs low and high (or choices); {bound} is missing")
        low = self.typed(entry, "low", kind, None, key + ".")
        high = self.typed(entry, "high", kind, None, key + ".")
        log = self.typed(entry, "log", bool, False, key + ".")
        step = self.typed(entry, "step", kind, None, key + ".")
        if low > high:
            raise self.fail(f"{key}.low", f"must be <= high ({high!r}), got {low!r}")
        if log and low <= 0:
            raise self.fail(f"{key}.low", f"must be > 0 when log = true, got {low!r}")
        if step is not None and log:
            raise self.fail(f"{key}.step", "cannot be combined with log = true")
        if step is not None and step <= 0:
            raise self.fail(f"{key}.step", f"must be > 0, got {step!r}")
        self.check_value(f"{key}.low", name, low)
        self.check_value(f"{key}.high", name, high)
        return ParamSpec(name, low=low, high=high, log=log, step=step)

    def choices(self, name: str, values: Any, kind: type) -> tuple[Any, ...]:
        key = f"space.{name}.choices"
        if not isinstance(values, list) or not values:
            raise self.fail(key, f"must be a non-empty list, got {values!r}")
        if len(set(map(repr, values))) != len(values):
            raise self.fail(key, f"has duplicates: {values!r}")
        out = []
        for value in values:
            if not _is_type(value, kind):
                raise self.fail(key, f"every choice must be {_type_name(kind)}, got {value!r}")
            value = float(value) if kind is float else value
            allowed = None if self.own else ALLOWED_CHOICES.get(name)
            if allowed and value not in allowed:
                raise self.fail(key, f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
            self.check_value(key, name, value)
            out.append(value)
        return tuple(out)

    def no_hflip(self, dataset: str, fixed: dict[str, Any], space: tuple[ParamSpec, ...]
                 ) -> None:
        """Refuse horizontal flips where they change the label (digits)."""
        if dataset not in NO_HFLIP_DATASETS:
            return
        searched = next((p for p in space if p.name == "hflip"), None)
        if fixed.get("hflip") is True:
            key, value = "fixed.hflip", "true"
        elif searched is not None and True in (searched.choices or ()):
            key, value = "space.hflip.choices", "[true, ...]"
        else:
            return
        raise self.fail(key, f"{value} is not allowed for dataset {dataset!r}: a flipped digit "
                        "is another symbol; allowed: false (flips suit fashion-mnist)")

    def check_value(self, key: str, name: str, value: Any) -> None:
        """Let TrainConfig judge one value (e.g. momentum must stay below 1); a param only the
        user's model knows is the model's to judge."""
        if name not in self.known_types():
            return
        try:
            TrainConfig(**{name: value})
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None


def _is_type(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _type_name(kind: type) -> str:
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number",
            str: "a string"}[kind]
