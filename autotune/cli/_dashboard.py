"""`python -m autotune.dashboard`: optuna-dashboard on autotune's storage, artifacts attached."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import optuna
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

from autotune.cli import _common as cli
from autotune.errors import UsageError
from autotune.search._study import ARTIFACT_DIR_ATTR
from autotune.storage import _storage as storage
from autotune.storage import _stored as stored

DEFAULT_HOST = "127.0.0.1"  # the dashboard has no authentication: local only unless asked
DEFAULT_PORT = 8080
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class ArtifactDirs:
    """Several artifact folders read as one store (Optuna's ArtifactStore protocol).

    Studies run with different --artifacts folders can share one storage; artifact ids are
    UUIDs, so a read can simply try each folder. Uploads from the dashboard go to the first.
    """

    def __init__(self, paths: list[Path]) -> None:
        if not paths:
            raise ValueError(f"need at least one artifact folder, got {paths=}")
        self.paths = paths
        self.stores = [FileSystemArtifactStore(str(p)) for p in paths]

    def open_reader(self, artifact_id: str) -> BinaryIO:
        for store in self.stores:
            try:
                return store.open_reader(artifact_id)
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} is in none of "
                               f"{', '.join(map(str, self.paths))}")

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.stores[0].write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        for store in self.stores:
            try:
                store.remove(artifact_id)
                return
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} is in none of "
                               f"{', '.join(map(str, self.paths))}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=cli.prog("dashboard"),
        description="Serve optuna-dashboard on autotune's storage: every study with its trials, "
                    "plots, user attributes (seed, epochs, seconds, prune/fail reasons), notes "
                    "and per-trial artifacts (learning_curve.json; weights.safetensors of the "
                    "trials the study file's trial_weights names). Stop it with Ctrl-C.",
        epilog="exit codes: 0 stopped, 1 storage unreachable, 2 bad usage (e.g. a bad "
               "--storage URL, a port in use)")
    parser.add_argument("--storage", metavar="URL",
                        help=f"the storage autotune.run used (default: ${storage.ENV_VAR}, else "
                             f"{storage.DEFAULT_URL} in the working directory)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default: %(default)s, this machine only); "
                             "the dashboard has no authentication, so another address (e.g. "
                             "0.0.0.0) lets anyone who can reach it read and edit the studies")
    parser.add_argument("--port", type=cli.port, default=DEFAULT_PORT,
                        help="TCP port to listen on (default: %(default)s)")
    parser.add_argument("--artifacts", metavar="DIR",
                        help="artifact store to show trial artifacts from (default: the "
                             f"folder(s) stored on the studies as {ARTIFACT_DIR_ATTR}, all of "
                             "them if they differ)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        url = storage.resolve_url(args.storage)
        store = stored.open_existing(url)
        summaries = optuna.get_all_study_summaries(store)
        if args.artifacts:
            folder = Path(args.artifacts).absolute()
            if not folder.is_dir():
                raise UsageError(f"--artifacts '{args.artifacts}' is not a folder")
            folders = [folder]
        else:
            folders = artifact_dirs(s.user_attrs.get(ARTIFACT_DIR_ATTR) for s in summaries)
        check_bindable(args.host, args.port)
    except UsageError as exc:
        return cli.fail(f"error: {exc}", EXIT_USAGE)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        return cli.fail(f"error: storage unreachable or failing: {stored.first_line(exc)}",
                     EXIT_FAILURE)
    if not _is_loopback(args.host):
        cli.log(f"warning: listening on {args.host}: optuna-dashboard has no authentication; "
             "anyone who can reach this port can read, edit and delete the studies")
    cli.log(f"storage: {storage.mask(url)} ({len(summaries)} studies)")
    if folders:
        cli.log(f"artifacts: {', '.join(map(str, folders))}")
        if len(folders) > 1:
            cli.log("note: the studies use different artifact folders; all are served, and files "
                 f"uploaded from the dashboard go to {folders[0]}")
    else:
        cli.log("artifacts: none (no study names an existing artifact folder; pass --artifacts "
             "DIR to show trial artifacts)")
    print(f"optuna-dashboard: open {_url(args.host, args.port)}", flush=True)
    from optuna_dashboard import run_server  # imports bottle; after argument checks

    try:
        # host passed explicitly: run_server's own default is "localhost", not 127.0.0.1
        run_server(store, host=args.host, port=args.port,
                   artifact_store=ArtifactDirs(folders) if folders else None)
    except OSError as exc:  # the port was taken since check_bindable
        return cli.fail(f"error: {bind_error(args.host, args.port, exc)}", EXIT_USAGE)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def check_bindable(host: str, port: int) -> None:
    """UsageError unless a server could listen on host:port now (it is released at once)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            sock.bind(address)
    except OSError as exc:
        raise UsageError(bind_error(host, port, exc)) from None


def bind_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use; pass another --port"
    if isinstance(exc, socket.gaierror):
        return f"--host {host!r} is not an address or known host name: {exc.strerror or exc}"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def artifact_dirs(stored_dirs: Iterable[object]) -> list[Path]:
    """The distinct artifact folders the studies name, in study order, that exist here."""
    folders: list[Path] = []
    for value in stored_dirs:
        if not value:
            continue
        folder = Path(str(value))
        if folder in folders:
            continue
        if not folder.is_dir():
            cli.log(f"warning: artifact folder {folder} (stored on a study) is not on this "
                 "machine; its trials' artifacts will not show")
            continue
        folders.append(folder)
    return folders


def _url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()  # listening everywhere: a name others can use
    elif ":" in host:
        host = f"[{host}]"  # IPv6 literal
    return f"http://{host}:{port}/dashboard/"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

