"""The house rules: the core never imports the speed-up layer, implementation modules are
private, every subpackage lists its public names."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "autotune"
SUBPACKAGES = ("cli", "spec", "search", "launch", "training", "routes", "tracking", "plugins",
               "storage", "fast")
# the public modules at the top: the API, the errors, and `python -m autotune.<command>`
PUBLIC_TOP = {"__init__", "__main__", "api", "errors", "run", "status", "report", "export",
              "migrate", "dashboard", "lightning", "proxy"}


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` in the file names (relative resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_no_core_module_imports_the_speed_up_layer():
    core = [p for p in PACKAGE.rglob("*.py") if "fast" not in p.relative_to(PACKAGE).parts]
    assert len(core) > 40
    leaks = {str(p.relative_to(PACKAGE)): sorted(m for m in imported_modules(p)
                                                 if m == "autotune.fast"
                                                 or m.startswith("autotune.fast."))
             for p in core}
    assert {p: m for p, m in leaks.items() if m} == {}


def test_a_plain_run_loads_nothing_of_the_speed_up_layer(tmp_path):
    script = (
        "import sys\n"
        "from autotune.cli._run import main\n"
        f"code = main(['--study', 'digits', '--n-trials', '1', '--storage', "
        f"'sqlite:///{tmp_path / 'p.db'}'])\n"
        "assert code == 0, code\n"
        "print(sorted(m for m in sys.modules if m.startswith('autotune.fast')))\n")
    env = {**os.environ, "AUTOTUNE_PLUGINS": "none"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    # and with the plugin installed, the same run does load it: the check above can fail
    env["AUTOTUNE_PLUGINS"] = "all"
    done = subprocess.run([sys.executable, "-c", script.replace("p.db", "f.db")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "autotune.fast._hooks" in done.stdout.strip().splitlines()[-1]


def test_an_unknown_plugin_name_is_refused_in_one_line():
    env = {**os.environ, "AUTOTUNE_PLUGINS": "turbo"}
    done = subprocess.run([sys.executable, "-m", "autotune.run", "--study", "digits"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: $AUTOTUNE_PLUGINS: no installed plugin named "
                                   "turbo; installed: fast (or all, none)")


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_implementation_modules_are_private_and_the_package_lists_its_public_names(package):
    folder = PACKAGE / package
    modules = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    assert modules and all(m.startswith("_") for m in modules), modules
    module = importlib.import_module(f"autotune.{package}")
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_the_top_level_holds_only_the_public_modules_and_private_helpers():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert {m for m in top if not m.startswith("_")} | {"__init__", "__main__"} == PUBLIC_TOP
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == \
        set(SUBPACKAGES)


def test_autotune_report_stays_the_reporting_function_once_the_report_command_is_imported():
    script = ("import autotune, autotune.report, io, contextlib\n"
              "out = io.StringIO()\n"
              "with contextlib.redirect_stdout(out):\n"
              "    autotune.report(epoch=2, val_accuracy=0.5)\n"
              "print(repr(out.getvalue()), callable(autotune.report.main))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("'@autotune.report {\"epoch\": 2, \"val_accuracy\": 0.5}\\n'"
                                   " True")
