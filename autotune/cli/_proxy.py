"""`autotune proxy --storage URL --port P`: Optuna's gRPC storage proxy in front of a database.

Workers given `--storage grpc://HOST:P` talk to the proxy; only the proxy holds database
connections, at most `--connections` of them however many workers there are (each worker
on a database server holds its own otherwise, and hundreds of them exhaust its
`max_connections`). The proxy is `optuna.storages.run_grpc_proxy_server`, unchanged.

Optuna's gRPC protocol has no heartbeat call: trials behind the proxy beat through a trial
attribute instead (`autotune.search._beats`), so a dead worker's trial is still failed and
retried from its checkpoint.
"""

from __future__ import annotations

import argparse
import signal
import warnings
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

from autotune.cli import _common as cli
from autotune.errors import UsageError

__all__ = ["DEFAULT_CONNECTIONS", "build_parser", "main"]

DEFAULT_CONNECTIONS = 10  # Optuna's own default: a server thread pool of 10


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=cli.prog("proxy"),
        description="Serve a study storage to many workers through Optuna's gRPC storage "
                    "proxy: start it once, then run workers with --storage grpc://HOST:PORT. "
                    "It holds at most --connections database connections. It has no "
                    "authentication or TLS: listen on a private network only.",
        epilog="example: autotune proxy --storage postgresql://tuner@db/studies --port 13000 "
               "--host 0.0.0.0; then on each machine: autotune run --study mnist --storage "
               "grpc://PROXY-HOST:13000 --workers 8")
    parser.add_argument("--storage", required=True, metavar="URL",
                        help="the database the proxy serves: postgresql://..., mysql://... or "
                             "sqlite:///PATH.db (a journal storage cannot be proxied)")
    parser.add_argument("--port", type=cli.port, default=13000,
                        help="port to listen on (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 for workers on other machines "
                             "(default: %(default)s)")
    parser.add_argument("--connections", type=cli.positive_int, default=DEFAULT_CONNECTIONS,
                        metavar="N",
                        help="database connections, and requests served at once "
                             "(default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    import optuna

    from autotune.storage import _storage as storage

    args = build_parser().parse_args(argv)
    scheme = args.storage.split("://", 1)[0] if "://" in args.storage else ""
    if scheme in ("journal", "redis", "grpc"):
        return cli.fail(f"error: --storage {scheme}://... cannot be proxied: Optuna's gRPC "
                        "proxy serves relational databases (postgresql://, mysql://, "
                        "sqlite:///)", 2)
    try:
        storage.check_grpc_installed()
        backend = storage.open_storage(args.storage, pool_size=args.connections)
    except UsageError as exc:
        return cli.fail(f"error: {exc}", 2)
    served = optuna.storages.get_storage(backend)  # with Optuna's cache, as its docs advise
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cli.log(f"autotune proxy: serving {storage.mask(args.storage)} on grpc://{args.host}:"
            f"{args.port} with at most {args.connections} database connections; workers: "
            f"--storage grpc://{args.host}:{args.port}; Ctrl-C stops it")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with warnings.catch_warnings():  # "experimental" since Optuna 4.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.run_grpc_proxy_server(
                served, host=args.host, port=args.port,
                thread_pool=ThreadPoolExecutor(max_workers=args.connections))
    except KeyboardInterrupt:
        cli.log("autotune proxy: stopped")
        return 0
    except RuntimeError as exc:  # gRPC could not bind the address
        return cli.fail(f"error: cannot listen on {args.host}:{args.port} ({exc}); is the "
                        "port taken? choose another with --port", 1)
    finally:
        signal.signal(signal.SIGTERM, previous)
        storage.close_all()
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
