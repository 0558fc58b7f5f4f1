"""Workers on "separate machines": network namespaces reaching PostgreSQL over veth links."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import REPO, _skip_or_fail, write_study
from tests.test_workers import SHARED_STUDY

SUBNET = "10.231"  # private addresses on veth links this test creates and removes
RELAY_PORT = 15432


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespaces() -> Iterator[list[tuple[str, str]]]:
    """Two namespaces, each with a veth link to this host: [(name, host-side address)]."""
    if not shutil.which("ip") or os.geteuid() != 0:
        _skip_or_fail("network namespaces need root and iproute2")
    tag = uuid.uuid4().hex[:4]
    made: list[tuple[str, str]] = []
    try:
        for i in (1, 2):
            ns, host_if, ns_if = f"at{tag}n{i}", f"at{tag}h{i}", f"at{tag}p{i}"
            host_ip, ns_ip = f"{SUBNET}.{i}.1", f"{SUBNET}.{i}.2"
            sh("ip", "netns", "add", ns)
            made.append((ns, host_ip))
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            sh("ip", "link", "set", ns_if, "netns", ns)
            sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
            sh("ip", "link", "set", host_if, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
    except subprocess.CalledProcessError as exc:
        for ns, _ in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        _skip_or_fail(f"cannot create network namespaces here: {exc.stderr.decode().strip()}")
    yield made
    for ns, _ in made:  # deleting a namespace deletes its veth pair too
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class Relay:
    """Forwards TCP from a veth address to PostgreSQL on 127.0.0.1, which listens only there.

    Stands in for a database server's network interface; PostgreSQL's config is not touched.
    """

    def __init__(self, listen: list[tuple[str, int]], target: tuple[str, int]) -> None:
        self.target = target
        self.servers = [socket.create_server(addr) for addr in listen]
        for server in self.servers:
            threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        for server in self.servers:
            server.close()


def test_workers_in_separate_network_namespaces_share_one_postgresql_study(
        namespaces, postgres_url, tmp_path):
    url = make_url(postgres_url)
    relay = Relay([(host_ip, RELAY_PORT) for _, host_ip in namespaces],
                  (url.host or "127.0.0.1", url.port or 5432))
    try:
        ns0 = namespaces[0][0]
        isolated = subprocess.run(
            ["ip", "netns", "exec", ns0, sys.executable, "-c",
             f"import socket; socket.create_connection(('127.0.0.1', {url.port or 5432}), 3)"],
            capture_output=True, timeout=30)
        assert isolated.returncode != 0, "the namespace must not reach the host's loopback"
        spec = write_study(tmp_path, SHARED_STUDY, name="netns")
        name = f"netns-{uuid.uuid4().hex[:8]}"
        procs = []
        for ns, host_ip in namespaces:
            remote = url.set(host=host_ip, port=RELAY_PORT).render_as_string(
                hide_password=False)
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "autotune.run", "--study",
                 str(spec), "--study-name", name, "--storage", remote, "--artifacts",
                 str(tmp_path / "shared-artifacts")],
                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
    finally:
        relay.close()
    study = optuna.load_study(study_name=name, storage=postgres_url)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 10
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    assert len({t.user_attrs["pid"] for t in finished}) == 2
    assert Path(tmp_path / "shared-artifacts").is_dir()
