"""Read-only access to stored studies for the commands that look at them (dashboard, report,
export): they never create a storage or a study, and refuse unknown names by listing the known."""

from __future__ import annotations

from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from autotune.errors import StorageError, UsageError
from autotune.storage import _storage as storage


def open_existing(url: str) -> optuna.storages.BaseStorage:
    """Open a storage that must already exist; a missing SQLite or journal file is a typo here,
    not a request to create an empty one."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    path: str | None = None
    if scheme.startswith("sqlite"):
        try:
            path = make_url(url).database
        except sqlalchemy.exc.ArgumentError:  # malformed: open_storage below says how
            path = None
    elif scheme == "journal":
        path = url.split("://", 1)[1]
    if path and path != ":memory:" and not Path(path).is_file():
        raise StorageError(f"storage '{storage.mask(url)}': file '{path}' does not exist; "
                           "pass the --storage URL the study was run with")
    return storage.open_storage(url, writable=False)


def study_names(store: optuna.storages.BaseStorage) -> list[str]:
    return sorted(s.study_name for s in optuna.get_all_study_summaries(store))


def load_existing(store: optuna.storages.BaseStorage, name: str, url: str) -> optuna.Study:
    """The stored study of that name; UsageError naming the studies there if it is absent."""
    names = study_names(store)
    if name not in names:
        raise UsageError(f"unknown study '{name}' in {storage.mask(url)}; available: "
                         f"{', '.join(names) or 'none (run python -m autotune.run first)'}")
    return optuna.load_study(study_name=name, storage=store)


def first_line(exc: BaseException) -> str:
    """One line of a driver error, for the single line a command prints on stderr."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
