"""Start-up: what the server writes is its owner's only, and what stops it is one line with exit
code 2 that leaves nothing half-done (a configured certificate that cannot be read, a port in
use, an unusable data directory); failed TLS handshakes are logged with the peer; the soft
open-files limit is raised to the hard one. Real server processes throughout."""

from __future__ import annotations

import os
import re
import resource
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys

import pytest
from apache_iggy import IggyClient, TcpConfig
from apache_iggy import SendMessage as Message

from conftest import ROOT, ServerProcess, free_port, wait_for
from iggy_fast.testing import clean_env
from iggy_fast.server.metadata.sqlite import SqliteMetadataStore
from iggy_fast.server.transports.tls import self_signed


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def modes_of_files(directory) -> dict[str, int]:
    """Each file's mode. A sealed segment is renamed on the sync worker after the send that
    sealed it is answered, so a name listed may be gone when it is looked at: list again."""
    while True:
        try:
            return {name: mode(os.path.join(directory, name)) for name in os.listdir(directory)}
        except FileNotFoundError:
            continue


def start_failing(data_dir, env=None, address=None) -> subprocess.CompletedProcess:
    """Run a server that is expected not to start; no root password is configured, so one
    would be generated if it got that far."""
    cmd = [sys.executable, "-m", "iggy_fast.cli", "server", "--data-dir", str(data_dir),
           "--tcp-address", address or f"127.0.0.1:{free_port()}"]
    return subprocess.run(cmd, env=clean_env(**(env or {})), capture_output=True, text=True,
                          timeout=60)


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]



async def tls_client(address: str, ca: str) -> IggyClient:
    c = IggyClient(TcpConfig(server_address=address, tls_enabled=True, tls_domain="localhost",
                             tls_ca_file=ca, tls_validate_certificate=True))
    await c.connect()
    await c.login_user(*ROOT)
    return c


# -- file modes -------------------------------------------------------------------------------

async def test_metadata_certificates_and_data_are_owner_only(tmp_path):
    data = tmp_path / "data"
    srv = ServerProcess(data, env={"IGGY_TCP_TLS_ENABLED": "true",
                                   "IGGY_SYSTEM_SEGMENT_SIZE": "4 KiB"})
    old_umask = os.umask(0)             # the server's modes must not depend on the one it gets
    try:
        srv.start()
    finally:
        os.umask(old_umask)
    try:
        c = await tls_client(srv.address, str(data / "certs" / "iggy_cert.pem"))
        await c.create_stream("s")
        await c.create_topic(stream="s", name="t", partitions_count=1)
        for _ in range(8):                          # sealed segments and an active one
            await c.send_messages("s", "t", 0, [Message(b"secret" * 200)])
        partition = srv.data_path(0, 0, 0)
        db = data / "metadata.db"
        for path in (db, f"{db}-wal", f"{db}-shm", data / "certs" / "iggy_key.pem",
                     data / "certs" / "iggy_cert.pem"):
            assert mode(path) == 0o600, path
        for path in (data, data / "certs", partition):
            assert mode(path) == 0o700, path
        files = modes_of_files(partition)
        assert sum(name.endswith(".log") for name in files) >= 2, files
        assert set(files.values()) == {0o600}, files
    finally:
        assert srv.stop() == 0
    # Files an older version left readable to everyone are tightened at the next start.
    for path in (data / "metadata.db", data / "certs" / "iggy_key.pem"):
        os.chmod(path, 0o644)
    srv.start()
    try:
        assert mode(data / "metadata.db") == 0o600
        assert mode(data / "certs" / "iggy_key.pem") == 0o600
    finally:
        assert srv.stop() == 0


def test_the_metadata_store_is_owner_only_whatever_the_umask(tmp_path):
    old_umask = os.umask(0)
    try:
        store = SqliteMetadataStore(str(tmp_path))
    finally:
        os.umask(old_umask)
    try:
        for name in ("metadata.db", "metadata.db-wal", "metadata.db-shm"):
            assert mode(tmp_path / name) == 0o600, name
    finally:
        store.close()


# -- certificates -----------------------------------------------------------------------------

def test_a_missing_certificate_stops_the_server_in_one_line(tmp_path):
    missing = tmp_path / "typo" / "cert.pem"
    done = start_failing(tmp_path / "d", {"IGGY_TCP_TLS_ENABLED": "true",
                                          "IGGY_TCP_TLS_CERT_FILE": str(missing),
                                          "IGGY_TCP_TLS_KEY_FILE": str(tmp_path / "key.pem")})
    line = one_line(done)
    assert line == (f"iggy-fast: configuration error: tcp.tls.cert_file {missing}: "
                    f"No such file or directory")
    assert not (tmp_path / "d").exists()        # no data dir, no generated certificate


@pytest.mark.parametrize("case", ["key is a directory", "not PEM", "self_signed off"])
def test_certificates_that_cannot_be_used_are_named(tmp_path, case):
    cert, key = self_signed(str(tmp_path / "made"))
    env = {"IGGY_TCP_TLS_ENABLED": "true", "IGGY_TCP_TLS_CERT_FILE": cert,
           "IGGY_TCP_TLS_KEY_FILE": key}
    if case == "key is a directory":
        env["IGGY_TCP_TLS_KEY_FILE"] = str(tmp_path)
        expected = f"tcp.tls.key_file {tmp_path}: Is a directory"
    elif case == "not PEM":
        garbage = tmp_path / "garbage.pem"
        garbage.write_bytes(b"not a certificate\n")
        env["IGGY_TCP_TLS_CERT_FILE"] = str(garbage)
        expected = f"tcp.tls: {garbage} / {key} is not a usable PEM certificate and key"
    else:
        env = {"IGGY_TCP_TLS_ENABLED": "true", "IGGY_TCP_TLS_SELF_SIGNED": "false"}
        expected = "tcp.tls is enabled with self_signed = false and no cert_file"
    line = one_line(start_failing(tmp_path / "d", env))
    assert line.startswith("iggy-fast: configuration error: ") and expected in line, line
    assert not (tmp_path / "d").exists()


async def test_configured_certificates_are_served_and_none_is_generated(tmp_path):
    cert, key = self_signed(str(tmp_path / "mine"))
    srv = ServerProcess(tmp_path / "data", env={"IGGY_TCP_TLS_ENABLED": "true",
                                               "IGGY_TCP_TLS_CERT_FILE": cert,
                                               "IGGY_TCP_TLS_KEY_FILE": key,
                                               # QUIC would make its own (test_quic.py)
                                               "IGGY_QUIC_ENABLED": "false"})
    srv.start()
    try:
        c = await tls_client(srv.address, cert)      # validated against the configured one
        await c.create_stream("over-configured-tls")
        assert not (tmp_path / "data" / "certs").exists()
    finally:
        assert srv.stop() == 0


# -- port and data directory --------------------------------------------------------------------

def test_a_port_in_use_stops_the_server_before_anything_is_written(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        done = start_failing(tmp_path / "d", address=address)
    line = one_line(done)
    assert line == f"iggy-fast: TCP cannot listen on {address}: address already in use"
    # No metadata, so no root user whose generated password nobody saw.
    assert not (tmp_path / "d").exists() and "password" not in done.stderr


def test_a_data_dir_that_is_a_file_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    line = one_line(start_failing(blocker))
    assert line == (f"iggy-fast: data directory {blocker} cannot be used: it exists and is "
                    f"not a directory")
    under = blocker / "data"
    line = one_line(start_failing(under))
    assert line == f"iggy-fast: data directory {under} cannot be created: not a directory"
    assert blocker.read_text() == "in the way"


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory the server cannot write: a read-only tmpfs as root (root ignores modes),
    mode 0500 otherwise."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o500)
        yield path, "permission denied"
        path.chmod(0o700)
        return
    if not shutil.which("mount"):
        pytest.skip("needs mount")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {done.stderr.decode().strip()}")
    try:
        yield path, "read-only file system"
    finally:
        subprocess.run(["umount", "-l", str(path)])


def test_a_data_dir_without_write_permission_is_named(read_only_dir):
    path, reason = read_only_dir
    line = one_line(start_failing(path))
    assert line == f"iggy-fast: data directory {path} is not writable: {reason}"
    assert os.listdir(path) == []
    inside = path / "data"
    line = one_line(start_failing(inside))
    assert line == f"iggy-fast: data directory {inside} cannot be created: {reason}"


def test_data_of_an_older_layout_is_refused_in_one_line(tmp_path):
    data = tmp_path / "old"
    data.mkdir()
    db = sqlite3.connect(data / "metadata.db")
    db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID")
    db.execute("INSERT INTO kv VALUES ('streams/1', '{\"id\": 1}')")
    db.commit()
    db.close()
    done = start_failing(data)
    # Found after the open-files limit is logged: the error is the last line, alone.
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"iggy-fast: {data} holds data in an older layout"), done.stderr


# -- TLS handshakes and the open-files limit ----------------------------------------------------

async def test_a_failed_tls_handshake_is_logged_once_with_the_peer(tmp_path):
    srv = ServerProcess(tmp_path / "tls", env={"IGGY_TCP_TLS_ENABLED": "true"})
    srv.start()          # its readiness probe connects and closes: not worth a warning
    try:
        with socket.create_connection(("127.0.0.1", srv.tcp_port)) as plain:
            peer = "%s:%d" % plain.getsockname()
            plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
            plain.settimeout(10)
            while plain.recv(4096):                      # the server closes it (a recv
                pass                                     # timeout would fail the test)
        wanted = f"TLS handshake with {peer} failed: "
        assert wait_for(lambda: wanted in srv.log()), srv.log()
        warnings = [line for line in srv.log().splitlines() if "WARNING" in line]
        assert len(warnings) == 1 and wanted in warnings[0], warnings
        assert "Traceback" not in srv.log()
        # The listener goes on serving TLS clients.
        c = await tls_client(srv.address, os.path.join(srv.data_dir, "certs", "iggy_cert.pem"))
        await c.create_stream("after-a-bad-handshake")
    finally:
        assert srv.stop() == 0


def test_the_soft_open_files_limit_is_raised_to_the_hard_limit(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit is {hard}: nothing to raise")
    srv = ServerProcess(tmp_path / "nofile")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))   # the server inherits it
    try:
        srv.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        with open(f"/proc/{srv.proc.pid}/limits") as f:
            row = next(line for line in f if line.startswith("Max open files"))
        limits = re.split(r"\s{2,}", row.strip())
        assert limits[1] == limits[2] != "256", row
        shown = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
        assert f"INFO iggy_fast: open files limit: {shown}" in srv.log()
    finally:
        assert srv.stop() == 0
