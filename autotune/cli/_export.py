"""`python -m autotune.export --study NAME --out best.toml`: the best trial as a study file
with nothing left to search, so `python -m autotune.run --study best.toml --n-trials 1`
retrains exactly that configuration."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import tomli_w

from autotune.cli import _common as cli
from autotune.errors import SpecError, UsageError
from autotune.plugins import _references as plugins
from autotune.search._study import DEFINITION_ATTR, PROVENANCE_ATTR, SPEC_TEXT_ATTR, metric_name
from autotune.spec._spec import parse_spec
from autotune.storage import _storage as storage
from autotune.storage import _stored as stored

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
FORMATS = (".toml", ".json")
NAME_SUFFIX = "-best"  # the exported study's name: a new study, never a resume of the search


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=cli.prog("export"),
        description="Write the best trial of a stored study as a study file: the study's own "
                    "settings (data, model, seeds, epochs, sampler) with every searched "
                    "parameter moved to [fixed] at its best value and no [space], so "
                    "`python -m autotune.run --study FILE --n-trials 1` retrains it.",
        epilog="exit codes: 0 written, 1 storage unreachable, 2 bad usage (unknown study, bad "
               "--storage URL, no complete trial yet)")
    cli.add_stored_study_arguments(parser)
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="FILE.toml: a study file for autotune.run; FILE.json: "
                             '{"study", "trial", "value", "seed", "params", "fixed", '
                             '"study_file"} for scripts, where params are the searched values, '
                             "fixed every setting held constant, and study_file the TOML text")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    out = Path(args.out)
    try:
        if out.suffix not in FORMATS:
            raise UsageError(f"--out '{args.out}' must end in .toml (a study file) or .json")
        if not out.parent.is_dir():
            raise UsageError(f"--out '{args.out}': folder '{out.parent}' does not exist")
        url = storage.resolve_url(args.storage)
        study = stored.load_existing(stored.open_existing(url), args.study, url)
        doc = best_study_file(study)
        for key in ("model", "dataset", "train"):  # the user's files, seen from the new folder
            if key in doc:
                doc[key] = relocated(study, doc[key], out.parent)
        if "script" in doc:
            doc["script"] = relocated_file(study, doc["script"], out.parent)
        weights = str(doc.get("fixed", {}).get("weights") or "")
        if weights and str(doc.get("model", "")).startswith("torchvision:"):
            from autotune.training._torchvision import is_named_weights

            if not is_named_weights(doc["model"].partition(":")[2], weights):
                doc["fixed"]["weights"] = relocated_file(study, weights, out.parent)
        text = to_toml(doc, header(study, out.with_suffix(".toml")))
        parse_spec(doc, path=str(out), text=text)  # what autotune.run will accept, or fail now
        if out.suffix == ".json":
            best = study.best_trial
            text = json.dumps({"study": study.study_name, "trial": best.number,
                               "metric": metric_name(study), "value": best.value,
                               "seed": best.user_attrs.get("seed"), "params": best.params,
                               "fixed": doc["fixed"], "study_file": text}, indent=1) + "\n"
        out.write_text(text, encoding="utf-8")
    except (UsageError, SpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except sqlalchemy.exc.SQLAlchemyError as exc:
        print(f"error: storage unreachable or failing: {stored.first_line(exc)}",
              file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"error: cannot write '{args.out}': {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    best = study.best_trial
    how = (f"retrain it with: python -m autotune.run --study {out} --n-trials 1"
           if out.suffix == ".toml" else "its study_file, saved as a .toml file, retrains it")
    print(f"wrote {out}: trial #{best.number} of study '{study.study_name}' "
          f"({metric_name(study)}={best.value:.4f}); {how}")
    return EXIT_OK


def best_study_file(study: optuna.Study) -> dict[str, Any]:
    """The study file, as a dict, that trains the best trial's configuration."""
    definition = study.user_attrs.get(DEFINITION_ATTR)
    if not definition:
        raise UsageError(f"study '{study.study_name}' has no stored definition (it was not "
                         "created by autotune.run); nothing to export")
    try:
        best = study.best_trial
    except ValueError:
        raise UsageError(f"study '{study.study_name}' has no complete trial yet; run more "
                         "trials before exporting") from None
    if definition.get("train") or definition.get("script"):
        return own_training_file(study, definition, best)
    return {
        "name": study.study_name + NAME_SUFFIX,
        # how the study's final step retrains and which trials keep weights: not part of the
        # definition, so read from the file
        **file_only_keys(study),
        "description": f"best configuration of study '{study.study_name}': trial "
                       f"#{best.number}, {metric_name(study)} {best.value:.4f}",
        "dataset": definition["dataset"],
        "model": definition["model"],
        **{key: definition[key] for key in ("loss", "metric", "image_size")
           if key in definition},
        # a csv's target columns: one as a name, as study files usually write it
        **({"target": definition["target"][0] if len(definition["target"]) == 1
            else definition["target"]} if "target" in definition else {}),
        "seed": definition["seed"],
        "val_fraction": definition["val_fraction"],
        "split_seed": definition["split_seed"],
        "budget": {"n_trials": 1, "max_epochs": definition["max_epochs"]},
        # nothing is searched: the sampler draws nothing and does not matter
        "sampler": {"name": definition["sampler"], **definition.get("sampler_options", {})},
        # every trial of this file trains the same configuration: none may be cut short
        "pruner": {"name": "none"},
        "fixed": {**definition.get("fixed", {}), **best.params},
    }


def own_training_file(study: optuna.Study, definition: dict[str, Any],
                      best: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """best_study_file for a study whose own train function or script trains."""
    return {
        "name": study.study_name + NAME_SUFFIX,
        "description": f"best configuration of study '{study.study_name}': trial "
                       f"#{best.number}, {metric_name(study)} {best.value:.4f}",
        **{key: definition[key] for key in ("train", "script", "args", "report_regex")
           if key in definition},
        "metric": metric_name(study),
        "direction": definition.get("direction", study.direction.name.lower()),
        "seed": definition["seed"],
        "budget": {"n_trials": 1, "max_epochs": definition["max_epochs"]},
        "sampler": {"name": definition["sampler"], **definition.get("sampler_options", {})},
        "pruner": {"name": "none"},
        "fixed": {**definition.get("fixed", {}), **best.params},
    }


def relocated_file(study: optuna.Study, value: str, out_dir: Path) -> str:
    """A file's path relative to the study file it was declared in, rewritten relative to
    the folder the export goes to (an absolute path stays as it is)."""
    if Path(value).is_absolute():
        return value
    spec_dir = Path(study.user_attrs.get(PROVENANCE_ATTR, {}).get("spec_path") or ".").parent
    return os.path.relpath((spec_dir / value).resolve(), out_dir.resolve())


def relocated(study: optuna.Study, value: str, out_dir: Path) -> str:
    """A model or dataset as the exported file must name it: a user's `file.py:fn` or a
    data file's `scheme:PATH`, relative to the study file it was declared in, rewritten
    relative to the folder the export goes to; built-in names and importable modules as
    they are."""
    spec_dir = Path(study.user_attrs.get(PROVENANCE_ATTR, {}).get("spec_path") or ".").parent
    scheme = plugins.data_scheme(value)
    if scheme is not None and scheme[0] == "torchvision":  # a name, not a file
        return value
    if scheme is not None:
        data_file = (spec_dir / scheme[1]).resolve()
        return f"{scheme[0]}:{os.path.relpath(data_file, out_dir.resolve())}"
    path, _, function = plugins.resolve(value, Path("."))
    if path is None:  # a built-in name, or an importable package.module:fn
        return value
    source = spec_dir / value.rpartition(":")[0]
    return f"{os.path.relpath(source.resolve(), out_dir.resolve())}:{function}"


# Top-level study-file keys outside the stored definition, carried over as the file set them.
FILE_ONLY_KEYS = ("final_train", "trial_weights", "speedups", "bad_images")


def file_only_keys(study: optuna.Study) -> dict[str, Any]:
    """The FILE_ONLY_KEYS the study's own file set (a key it did not set keeps its default)."""
    try:
        raw = tomllib.loads(study.user_attrs.get(SPEC_TEXT_ATTR) or "")
    except tomllib.TOMLDecodeError:
        return {}
    return {key: raw[key] for key in FILE_ONLY_KEYS if key in raw}


def header(study: optuna.Study, out: Path) -> str:
    """Comment lines: where the file comes from, how to run it, and why its seed differs."""
    best = study.best_trial
    return "\n".join([
        f"# The best configuration of study '{study.study_name}': trial #{best.number}, "
        f"{metric_name(study)} {best.value:.6f}" + (
            f" (epoch {best.user_attrs['best_epoch']})." if "best_epoch" in best.user_attrs
            else "."),
        "# Written by `python -m autotune.export`; retrain it with",
        f"#   python -m autotune.run --study {out} --n-trials 1",
        f"# The trial trained with torch seed {best.user_attrs.get('seed', '?')}; a run of this "
        "file seeds its own",
        "# trials from `seed` below, so its accuracy can differ by the spread between seeds.",
    ]) + "\n\n"


def to_toml(doc: dict[str, Any], comment: str = "") -> str:
    """TOML text: top-level keys first, then one [table] per dict."""
    return comment + tomli_w.dumps(doc)

