"""`autotune proxy` and `--storage grpc://HOST:PORT`: Optuna's gRPC storage proxy, run as a
real process in front of the real PostgreSQL server; workers as real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import optuna
import sqlalchemy

from tests.conftest import REPO
from tests.test_plugins import run, run_without


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proxy(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "autotune", "proxy", *args],
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def proxy_on(url: str, connections: int = 4) -> Iterator[str]:
    """`autotune proxy` serving `url`; yields its grpc:// URL, stops it with Ctrl-C."""
    port = free_port()
    proc = _proxy("--storage", url, "--port", str(port), "--connections", str(connections))
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the proxy did not start listening"
                time.sleep(0.2)
        yield f"grpc://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "autotune proxy: stopped" in err


class ConnectionCount:
    """The most connections autotune's processes held to one PostgreSQL database at once
    (pg_stat_activity, by the application_name autotune gives its connections: "autotune",
    or "autotune proxy"; sampled every 50 ms)."""

    def __init__(self, url: str) -> None:
        # autocommit: PostgreSQL keeps one snapshot of pg_stat_activity per transaction
        self.engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        self.database = self.engine.url.database
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ConnectionCount:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()

    def _sample(self) -> None:
        query = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
                                "AND application_name LIKE 'autotune%'")
        while not self._stop.wait(0.05):
            try:
                with self.engine.connect() as conn:
                    while not self._stop.wait(0.05):
                        found = conn.execute(query, {"db": self.database}).scalar()
                        self.most = max(self.most, found)
            except sqlalchemy.exc.OperationalError:  # the server restarted: connect again
                continue


def test_eight_workers_behind_the_proxy_reach_the_exact_total_on_its_few_connections(
        postgres_url, tmp_path):
    with proxy_on(postgres_url, connections=3) as grpc_url, \
            ConnectionCount(postgres_url) as count:
        done = run("--study", "digits", "--study-name", "proxied", "--storage", grpc_url,
                   "--workers", "8", "--n-trials", "16", "--max-epochs", "1", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert "starting 8 workers (new processes)" in done.stderr  # no fork: gRPC channels
    assert 1 <= count.most <= 3, count.most  # the proxy's pool; 8 workers hold none
    study = optuna.load_study(study_name="proxied", storage=postgres_url)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 16
    others = [t for t in study.trials if t not in finished]
    assert all(t.state.name == "FAIL" and t.user_attrs["fail_reason"].startswith("surplus")
               for t in others), [(t.number, t.state.name, t.user_attrs) for t in others]
    assert f"storage: {grpc_url}" in done.stdout


def test_grpc_storage_with_no_proxy_listening_is_refused_in_one_line(tmp_path):
    port = free_port()
    done = run("--study", "digits", "--storage", f"grpc://127.0.0.1:{port}", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: no storage proxy answers at grpc://127.0.0.1:{port} (waited 5 s); start one "
        f"with: autotune proxy --storage URL --port {port}")
    done = run("--study", "digits", "--storage", "grpc://127.0.0.1", cwd=tmp_path)
    assert done.returncode == 2
    assert "is not grpc://HOST:PORT" in done.stderr


def test_the_proxy_refuses_a_journal_a_bad_url_and_a_taken_port(tmp_path, postgres_url):
    journal = _proxy("--storage", f"journal:///{tmp_path / 'j.log'}")
    _, err = journal.communicate(timeout=60)
    assert journal.returncode == 2
    assert err.strip().startswith("error: --storage journal://... cannot be proxied")
    assert not (tmp_path / "j.log").exists()
    bare = _proxy("--storage", str(tmp_path / "x.db"))
    _, err = bare.communicate(timeout=60)
    assert bare.returncode == 2 and "is not a URL" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = _proxy("--storage", postgres_url, "--port", str(port))
        _, err = busy.communicate(timeout=60)
    assert busy.returncode == 1, err
    assert f"error: cannot listen on 127.0.0.1:{port}" in err


def test_grpc_storage_without_grpcio_says_how_to_install_it(tmp_path):
    done = run_without("grpc", "--study", "digits", "--storage", "grpc://127.0.0.1:1",
                       cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: a gRPC storage proxy needs grpcio, which is not "
                                   "installed: pip install 'autotune[grpc]'")
