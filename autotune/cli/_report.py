"""`python -m autotune.report --study NAME --out DIR`: plots, top trials and best params of a
stored study, as a self-contained HTML page with PNG images, or as JSON for scripts."""

from __future__ import annotations

import argparse
import html
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from autotune.cli import _common as cli
from autotune.errors import UsageError
from autotune.search import _summary as summary
from autotune.search._study import (
    DEFINITION_ATTR,
    MLFLOW_ATTR,
    TENSORBOARD_ATTR,
    TEST_RESULT_ATTR,
    metric_name,
)
from autotune.storage import _storage as storage
from autotune.storage import _stored as stored

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_TOP = 10
HTML_NAME, JSON_NAME = "report.html", "report.json"
MIN_TRIALS_FOR_IMPORTANCE = 2  # complete trials; fANOVA needs values to compare
IMPORTANCE_SEED = 0  # fANOVA fits a random forest: fixed, so a report is reproducible
PNG_DPI = 110


@dataclass(frozen=True)
class Plot:
    """One plot of the report: a file stem, a title, and how to draw it."""

    name: str
    title: str
    caption: str


PLOTS = (
    Plot("optimization_history", "Optimization history",
         "{metric} of each complete trial, and the best so far."),
    Plot("param_importances", "Parameter importances",
         "fANOVA importance of each hyperparameter for {metric} (complete trials; "
         "parameters that every trial has)."),
    Plot("parallel_coordinate", "Parallel coordinate",
         "Each line is a complete trial, through its parameter values to its score."),
    Plot("slice", "Slice plots", "{metric} against each parameter, one panel per "
                                 "parameter; colour is the trial number."),
    Plot("intermediate_values", "Learning curves",
         "{metric} after every epoch, every trial (pruned trials stop early)."),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=cli.prog("report"),
        description="Report on a stored study: a summary and the top trials on stdout, and in "
                    "--out DIR either report.html (plots that render offline, plus the top "
                    "trials table) with one PNG per plot, or report.json (best params and every "
                    "trial) for scripts.",
        epilog="plots: " + ", ".join(f"{p.name}.png" for p in PLOTS) + ". exit codes: 0 done, "
               "1 storage unreachable, 2 bad usage (unknown study, bad --storage URL)")
    cli.add_stored_study_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder to write into (created if missing; files of the same "
                             "names are replaced)")
    parser.add_argument("--format", choices=("html", "json"), default="html",
                        help=f"html: {HTML_NAME} + PNG images; json: {JSON_NAME} with the best "
                             "params, counts, test result and every trial (default: "
                             "%(default)s)")
    parser.add_argument("--top", type=cli.positive_int, default=DEFAULT_TOP, metavar="N",
                        help="trials in the top-trials table (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out '{args.out}' is a file; give a folder")
        url = storage.resolve_url(args.storage)
        study = stored.load_existing(stored.open_existing(url), args.study, url)
        rows = trial_rows(study)
        top = top_rows(rows, study.direction, args.top)
        print("\n".join(summary.summary_lines(study, storage.mask(url), test_result(study))))
        print()
        print("\n".join(table_lines(top, f"top {len(top)} of {len(rows)} trials",
                                     metric_name(study))))
        out.mkdir(parents=True, exist_ok=True)
        if args.format == "json":
            path = out / JSON_NAME
            path.write_text(json.dumps(report_data(study, rows, url), indent=1) + "\n")
            cli.log(f"wrote {path}")
        else:
            written = write_html_report(study, rows, top, url, out)
            cli.log(f"wrote {', '.join(str(p) for p in written)}")
    except UsageError as exc:
        return cli.fail(f"error: {exc}", EXIT_USAGE)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        return cli.fail(f"error: storage unreachable or failing: {stored.first_line(exc)}",
                     EXIT_FAILURE)
    except OSError as exc:
        return cli.fail(f"error: cannot write into '{args.out}': {exc.strerror or exc}",
                     EXIT_FAILURE)
    return EXIT_OK


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One JSON-able dict per trial: what the tables and report.json show."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        curve = list(t.intermediate_values.values())
        rows.append({
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            # a pruned trial has no value: its last epoch's score says how far it got
            "last_intermediate": curve[-1] if curve else None,
            "params": dict(t.params),
            "epochs": attrs.get("epochs_run", len(curve)),
            "best_epoch": attrs.get("best_epoch"),
            "train_time_s": attrs.get("train_time_s"),
            "wall_time_s": attrs.get("wall_time_s"),
            "seed": attrs.get("seed"),
            "n_parameters": attrs.get("n_parameters"),
            "reason": attrs.get("prune_reason") or attrs.get("fail_reason"),
            "started": t.datetime_start.isoformat(timespec="seconds")
            if t.datetime_start else None,
        })
    return rows


def top_rows(rows: list[dict[str, Any]], direction: optuna.study.StudyDirection, n: int
             ) -> list[dict[str, Any]]:
    """Complete trials best first, then pruned ones by how far they got; failed ones never."""
    sign = -1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    complete = sorted((r for r in rows if r["state"] == "complete" and r["value"] is not None),
                      key=lambda r: (sign * r["value"], r["number"]))
    pruned = sorted((r for r in rows if r["state"] == "pruned"),
                    key=lambda r: (r["last_intermediate"] is None,
                                   sign * (r["last_intermediate"] or 0.0), r["number"]))
    return (complete + pruned)[:n]


def table_lines(rows: list[dict[str, Any]], title: str, metric: str) -> list[str]:
    """A fixed-width table for the terminal."""
    if not rows:
        return [f"{title}: no complete or pruned trial yet"]
    lines = [f"{title}:", f"{'trial':>5} {'state':<8} {metric:>12} {'epochs':>6} "
                          f"{'seconds':>7}  params"]
    for r in rows:
        lines.append(f"{r['number']:>5} {r['state']:<8} {_score(r):>12} {r['epochs']:>6} "
                     f"{_num(r['wall_time_s'], '.1f'):>7}  {summary.format_params(r['params'])}")
    return lines


def test_result(study: optuna.Study) -> dict[str, Any] | None:
    """The stored test evaluation, if it belongs to the current best trial."""
    test = study.user_attrs.get(TEST_RESULT_ATTR)
    try:
        best = study.best_trial.number
    except ValueError:
        return None
    return test if test and test.get("trial") == best else None


def report_data(study: optuna.Study, rows: list[dict[str, Any]], url: str) -> dict[str, Any]:
    """report.json: everything a script needs to pick up the result."""
    complete = [r for r in rows if r["state"] == "complete"]
    best = top_rows(complete, study.direction, 1)
    return {
        "study": study.study_name,
        "storage": storage.mask(url),
        "metric": metric_name(study),
        "direction": study.direction.name.lower(),
        "counts": dict(summary.state_counts(study)),
        "best": best[0] if best else None,
        "best_params": best[0]["params"] if best else None,
        "test_result": test_result(study),
        "definition": study.user_attrs.get(DEFINITION_ATTR),
        "tensorboard": study.user_attrs.get(TENSORBOARD_ATTR),
        "mlflow": study.user_attrs.get(MLFLOW_ATTR),
        "trials": rows,
    }


def draw(study: optuna.Study, name: str, backend: str) -> Any:
    """One of PLOTS as a plotly Figure (backend "plotly") or matplotlib Figure ("matplotlib")."""
    if backend == "plotly":
        import optuna.visualization as vis
    else:
        _pyplot()
        import optuna.visualization.matplotlib as vis  # type: ignore[no-redef]
    metric = metric_name(study)
    funcs: dict[str, Callable[[], Any]] = {
        "optimization_history": lambda: vis.plot_optimization_history(
            study, target_name=metric),
        "param_importances": lambda: vis.plot_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED),
            target_name=metric),
        "parallel_coordinate": lambda: vis.plot_parallel_coordinate(
            study, target_name=metric),
        "slice": lambda: vis.plot_slice(study, target_name=metric),
        "intermediate_values": lambda: vis.plot_intermediate_values(study),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # matplotlib's
        warnings.simplefilter("ignore", UserWarning)  # matplotlib: a one-valued slice axis
        drawn = funcs[name]()
    if backend == "plotly":
        if name == "intermediate_values":  # optuna labels it "Intermediate Value"
            drawn.update_layout(yaxis_title=metric, xaxis_title="epoch")
        return drawn
    axes = drawn.flat if hasattr(drawn, "flat") else [drawn]  # slice: one Axes per param
    if name == "intermediate_values":
        axes[0].set_ylabel(metric)
        axes[0].set_xlabel("epoch")
    figure = axes[0].figure
    if name == "parallel_coordinate":  # one vertical axis per param: give each room
        n_params = len({p for t in study.get_trials(deepcopy=False) for p in t.params})
        figure.set_size_inches(max(8.0, 1.8 * (n_params + 1)), 5.0)
    return figure


def skip_reason(study: optuna.Study, name: str) -> str | None:
    """Why a plot would be empty or fail for this study, before trying to draw it."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if name == "intermediate_values":
        return None if any(t.intermediate_values for t in trials) else \
            "no trial has reported an epoch yet"
    if not complete:
        return "no trial has completed yet"
    if name == "param_importances":
        if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
            return (f"needs at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials to compare, "
                    f"the study has {len(complete)}")
        common = set.intersection(*(set(t.params) for t in complete))
        if not any(len({repr(t.params[p]) for t in complete}) > 1 for p in common):
            return "no parameter that every complete trial has took more than one value"
    elif not any(t.params for t in complete):
        return "the trials have no searched parameters"
    return None


def write_html_report(study: optuna.Study, rows: list[dict[str, Any]],
                      top: list[dict[str, Any]], url: str, out: Path) -> list[Path]:
    """report.html (plotly.js inlined: renders offline) and one PNG per plot drawn."""
    plt = _pyplot()
    sections, written = [], []
    plotly_included = False
    for plot in PLOTS:
        reason = skip_reason(study, plot.name)
        figure_html = ""
        if reason is None:
            try:
                figure = draw(study, plot.name, "plotly")
                figure_html = figure.to_html(full_html=False, include_plotlyjs=not plotly_included,
                                             default_width="100%", default_height="520px")
                plotly_included = True
                image = draw(study, plot.name, "matplotlib")
                image.savefig(out / f"{plot.name}.png", dpi=PNG_DPI, bbox_inches="tight")
                plt.close(image)
                written.append(out / f"{plot.name}.png")
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                # a study too small or too uniform for this plot: say so, draw the rest
                reason = f"could not be drawn: {stored.first_line(exc)}"
        if reason is not None:
            cli.log(f"note: {plot.name} skipped: {reason}")
            (out / f"{plot.name}.png").unlink(missing_ok=True)  # no stale image of a rerun
            figure_html = f'<p class="skipped">Skipped: {html.escape(reason)}.</p>'
        caption = html.escape(plot.caption.format(metric=metric_name(study)))
        sections.append(f'<section id="{plot.name}"><h2>{html.escape(plot.title)}</h2>'
                        f'<p class="caption">{caption}</p>{figure_html}</section>')
    page = out / HTML_NAME
    page.write_text(_page(study, rows, top, url, sections), encoding="utf-8")
    return [page, *written]


def _page(study: optuna.Study, rows: list[dict[str, Any]], top: list[dict[str, Any]],
          url: str, sections: list[str]) -> str:
    esc = html.escape
    lines = summary.summary_lines(study, storage.mask(url), test_result(study))
    param_names = sorted({p for r in top for p in r["params"]})
    head = "".join(f"<th>{esc(h)}</th>" for h in
                   ["trial", "state", metric_name(study), "epochs", "best epoch", "seconds",
                    *param_names])
    body = []
    for r in top:
        cells = [str(r["number"]), r["state"], _score(r), str(r["epochs"]),
                 str(r["best_epoch"] or ""), _num(r["wall_time_s"], ".1f"),
                 *(summary.format_value(r["params"][p]) if p in r["params"] else ""
                   for p in param_names)]
        body.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    table = (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
             if top else "<p>No complete or pruned trial yet.</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>autotune report: {esc(study.study_name)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f0f0f0; }}
.caption, .skipped {{ color: #555; }} .skipped {{ font-style: italic; }}
pre {{ background: #f7f7f7; padding: 0.8em; }}
</style></head><body>
<h1>Study {esc(study.study_name)}</h1>
<pre id="summary">{esc(chr(10).join(lines))}</pre>
<section id="top-trials"><h2>Top trials</h2>
<p class="caption">{len(top)} of {len(rows)} trials: complete ones best first, then pruned ones
by their last epoch's score.</p>{table}</section>
{chr(10).join(sections)}
</body></html>
"""


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: files only, never a window or a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _score(row: dict[str, Any]) -> str:
    if row["value"] is not None:
        return f"{row['value']:.4f}"
    if row["last_intermediate"] is not None:
        return f"({row['last_intermediate']:.4f})"  # pruned: last epoch's score
    return "-"


def _num(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"

