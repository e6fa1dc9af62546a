"""Our SDK's connection handling against real servers: connection strings, TLS, automatic
login, reconnect after a restart, heartbeats past the server's idle timeout, failover between
nodes, timeouts, and each client-side exception (wrong password, unreachable server, a server
that closes mid-request, a reply that does not decode, a message too big).

Misbehaving servers are small socket listeners in this file (a real server cannot be made to
send garbage); everything else is the real server as a subprocess."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time

import pytest

from iggy_fast import ClientConfig, IggyClient, PollingStrategy, SyncIggyClient, _wire
from iggy_fast.client import aio
from iggy_fast.client.connection_string import parse
from iggy_fast.protocol import errors
from iggy_fast.protocol.codes import HEADER_SIZE

from conftest import ServerProcess, free_port, wait_for

pytestmark = pytest.mark.timeout(180)


# -- connection strings -------------------------------------------------------------------

def test_connection_string_password_and_options():
    c = parse("iggy+tcp://user:p%40ss@10.0.0.1:8090,10.0.0.2:8091?tls=true&tls_ca_file=/ca.pem"
              "&tls_domain=iggy.local&heartbeat_interval=500ms&reconnection_retries=3"
              "&reconnection_interval=2s&reestablish_after=1s&nodelay=false&timeout=7s")
    assert c.transport == "tcp" and c.addresses == ["10.0.0.1:8090", "10.0.0.2:8091"]
    assert (c.username, c.password, c.token) == ("user", "p@ss", None)
    assert c.tls and c.tls_ca_file == "/ca.pem" and c.tls_domain == "iggy.local"
    assert c.heartbeat_interval == 0.5 and c.reconnection_retries == 3
    assert c.reconnection_interval == 2.0 and c.reestablish_after == 1.0
    assert c.nodelay is False and c.timeout == 7.0 and c.auto_login


def test_connection_string_token_and_schemes():
    c = parse("iggy://iggypat-abc123@127.0.0.1:8090")
    assert c.token == "iggypat-abc123" and c.username is None and c.transport == "tcp"
    assert parse("iggy+quic://a:b@h:8080").transport == "quic"
    assert parse("iggy+http://a:b@h:3000").transport == "http"
    assert parse("iggy+ws://a:b@h:8092").transport == "ws"
    assert parse("iggy://a:b@h:1?reconnection_retries=unlimited").reconnection_retries is None


@pytest.mark.parametrize("bad, says", [
    ("127.0.0.1:8090", "scheme"),
    ("kafka://a:b@h:1", "unknown scheme"),
    ("iggy://h:8090", "no credentials"),
    ("iggy://a:@h:8090", "USER:PASSWORD"),
    ("iggy://:b@h:8090", "USER:PASSWORD"),
    ("iggy://a:b:c@h:8090", "USER:PASSWORD"),
    ("iggy://a:b@h", "HOST:PORT"),
    ("iggy://a:b@h:99999", "HOST:PORT"),
    ("iggy://a:b@h:1?colour=blue", "unknown option 'colour'"),
    ("iggy://a:b@h:1?tls=maybe", "tls='maybe'"),
    ("iggy://a:b@h:1?heartbeat_interval=soon", "heartbeat_interval='soon'"),
])
def test_bad_connection_strings(bad, says):
    with pytest.raises(errors.InvalidConnectionString) as info:
        parse(bad)
    assert says in str(info.value) and info.value.code == 8000
    assert ":b@" not in str(info.value)             # never echoes a password


def test_config_objects():
    c = ClientConfig(addresses="a:1, b:2", username="u", password="p", timeout=3)
    assert c.addresses == ["a:1", "b:2"] and c.auto_login
    with pytest.raises(errors.InvalidConnectionString):
        ClientConfig(username="only-a-user")
    with pytest.raises(errors.InvalidConnectionString):
        ClientConfig(transport="pigeon")
    client = IggyClient("iggy://u:p@h:1", timeout=2.5, heartbeat_interval=None)
    assert client.config.timeout == 2.5 and client.config.heartbeat_interval is None


def test_transport_not_available(monkeypatch):
    monkeypatch.setitem(aio.TRANSPORTS, "tcp", "iggy_fast.client.transports.pigeon:Link")
    with pytest.raises(errors.FeatureUnavailable) as info:
        aio.link_class("tcp")
    assert "transport 'tcp' not available" in str(info.value)


# -- against real servers -----------------------------------------------------------------

async def test_tls_with_ca_validation(tmp_path):
    srv = ServerProcess(tmp_path / "tls", env={"IGGY_TCP_TLS_ENABLED": "true"}).start()
    try:
        ca = os.path.join(srv.data_dir, "certs", "iggy_cert.pem")
        url = (f"iggy+tcp://iggy:iggy@{srv.address}?tls=true&tls_ca_file={ca}"
               f"&tls_domain=localhost")
        async with IggyClient(url) as c:
            await c.create_stream("secure")
            await c.create_topic("secure", "t")
            payloads = [os.urandom(3000) for _ in range(400)]           # ~1.2 MB
            await c.send_messages("secure", "t", 0, payloads)
            polled = await c.poll_messages("secure", "t", partition_id=0, count=1000,
                                           polling_strategy=PollingStrategy.First())
            assert [m.payload for m in polled] == payloads
        # The wrong name is refused by certificate verification, naming TLS.
        bad = IggyClient(f"iggy+tcp://iggy:iggy@{srv.address}?tls=true&tls_ca_file={ca}"
                         f"&tls_domain=not-the-server", reconnection_retries=0)
        with pytest.raises(errors.CannotEstablishConnection) as info:
            await bad.connect()
        assert "with TLS" in str(info.value) and "certificate" in str(info.value).lower()
        # Plain TCP to a TLS listener gets no answer within its timeout.
        plain = IggyClient(f"iggy://iggy:iggy@{srv.address}", connect_timeout=1, timeout=1)
        with pytest.raises(errors.CannotEstablishConnection):
            await plain.connect()
    finally:
        assert srv.stop() == 0


async def test_wrong_password_is_not_retried(server):
    c = IggyClient(f"iggy://iggy:wrong-password@{server.address},{server.address}")
    t0 = time.monotonic()
    with pytest.raises(errors.InvalidCredentials) as info:
        await c.connect()
    assert "user 'iggy'" in str(info.value) and "check the username and password" in \
        str(info.value) and info.value.code == 42
    assert time.monotonic() - t0 < 5 and not c.connected
    with pytest.raises(errors.NotConnected):
        await c.ping()


async def test_unreachable_server():
    port = free_port()
    c = IggyClient(f"iggy://iggy:iggy@127.0.0.1:{port}", connect_timeout=2)
    with pytest.raises(errors.CannotEstablishConnection) as info:
        await c.connect()
    assert f"127.0.0.1:{port}" in str(info.value) and "check that the server runs" in \
        str(info.value)
    assert isinstance(info.value, ConnectionError) and info.value.code == 9


async def test_not_connected_before_connect(server):
    c = IggyClient(f"iggy://iggy:iggy@{server.address}")
    with pytest.raises(errors.NotConnected) as info:
        await c.get_streams()
    assert "connect()" in str(info.value)


async def outlive_a_restart(c, srv) -> None:
    """Stop and restart `srv` under the connected client `c`: the loss is noticed (by a
    request or the heartbeat), the client reconnects with backoff once the server is back and
    logs in again, so what was there before is read and writes work."""
    await c.create_stream("before")
    srv.stop()
    with pytest.raises((errors.Disconnected, errors.NotConnected,
                        errors.CannotEstablishConnection)):
        await c.get_streams()
        await asyncio.sleep(1)
        await c.get_streams()
    srv.start()
    assert [s.name for s in await c.get_streams()] == ["before"]
    assert c.reconnects == 1
    await c.create_stream("after")


async def test_reconnect_after_server_restart(fresh_server):
    srv = fresh_server.start()
    reconnected = []

    async def on_reconnect(client):
        reconnected.append(client.identity)

    async with IggyClient(f"iggy://iggy:iggy@{srv.address}", reconnection_interval=0.2,
                          heartbeat_interval=0.5) as c:
        c.on_reconnect.append(on_reconnect)
        await outlive_a_restart(c, srv)
        assert reconnected and reconnected[0].user_id == 0


async def test_heartbeat_keeps_an_idle_connection(tmp_path):
    # The server drops a connection silent for 2 s; the heartbeat pings every 0.2 s idle
    # (ten times over, for a loaded machine), and the silent client is dropped.
    srv = ServerProcess(tmp_path / "idle", env={"IGGY_CONNECTIONS_IDLE_TIMEOUT": "2s"}).start()
    try:
        url = f"iggy://iggy:iggy@{srv.address}"
        async with IggyClient(url, heartbeat_interval=0.2) as beating, \
                IggyClient(url, heartbeat_interval=None, reconnection_interval=0.1) as silent:
            await asyncio.sleep(5)
            await beating.ping()
            await silent.ping()             # the server dropped it: this one reconnected
            assert beating.reconnects == 0
            assert silent.reconnects == 1
    finally:
        srv.stop()


async def test_failover_between_nodes(tmp_path):
    a = ServerProcess(tmp_path / "a").start()
    b = ServerProcess(tmp_path / "b").start()
    dead = f"127.0.0.1:{free_port()}"
    try:
        url = f"iggy://iggy:iggy@{dead},{a.address},{b.address}"
        async with IggyClient(url, reconnection_interval=0.1, connect_timeout=2) as c:
            assert c.address == a.address                # the dead node was skipped
            await c.create_stream("on-a")
            a.stop()
            await wait_until_lost(c)
            await c.create_stream("on-b")
            assert c.address == b.address and c.reconnects == 1
        async with IggyClient(f"iggy://iggy:iggy@{b.address}") as check:
            assert [s.name for s in await check.get_streams()] == ["on-b"]
    finally:
        a.stop()
        b.stop()


async def wait_until_lost(client):
    deadline = time.monotonic() + 20
    while client._link is not None and not client._link.closed:
        assert time.monotonic() < deadline, "the client never noticed the server's exit"
        await asyncio.sleep(0.05)


async def test_reconnection_gives_up_after_its_retries(fresh_server):
    srv = fresh_server.start()
    async with IggyClient(f"iggy://iggy:iggy@{srv.address}", reconnection_retries=2,
                          reconnection_interval=0.1, heartbeat_interval=None) as c:
        srv.stop()
        await wait_until_lost(c)
        with pytest.raises(errors.CannotEstablishConnection) as info:
            await c.ping()
        assert "gave up reconnecting after 3 attempts" in str(info.value)


async def test_message_too_big(server, unique):
    stream = unique("s")
    async with IggyClient(f"iggy://iggy:iggy@{server.address}") as c:
        await c.create_stream(stream)
        await c.create_topic(stream, "t")
        with pytest.raises(errors.TooBigMessagePayload) as info:
            await c.send_messages(stream, "t", 0, [bytes(64_000_001)])
        assert "split it" in str(info.value) and info.value.code == 4022
        big = bytes(9_000_000)
        with pytest.raises(errors.RequestTooLarge) as info:
            await c.send_messages(stream, "t", 0, [big] * 8)
        assert "send less per call" in str(info.value)
        # Nothing went out: the connection is intact and the topic empty.
        assert (await c.get_topic(stream, "t")).messages_count == 0


# -- misbehaving servers ------------------------------------------------------------------

class FakeServer:
    """A TCP listener that answers each request frame with `answer(header, body)`: bytes to
    send, None to stay silent, or "close" to drop the connection."""

    def __init__(self, answer):
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn):
        try:
            while True:
                header = _recv(conn, HEADER_SIZE)
                size = int.from_bytes(header[48:52], "little")
                body = _recv(conn, size - HEADER_SIZE)
                out = self.answer(header, body)
                if out == "close":
                    conn.close()
                    return
                if out is not None:
                    conn.sendall(out)
        except (OSError, EOFError):
            pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def _recv(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def reply(header, body=b"", operation=None):
    req = _wire.parse_request_header(header)
    return _wire.reply_header(req, req.operation if operation is None else operation,
                              len(body)) + body


async def test_request_timeout_names_the_request():
    silent = FakeServer(lambda h, b: None)
    try:
        c = IggyClient(silent.address, timeout=0.5)
        await c.connect()
        t0 = time.monotonic()
        with pytest.raises(errors.RequestTimeout) as info:
            await c.get_stats()
        assert time.monotonic() - t0 < 5
        assert "get_stats" in str(info.value) and isinstance(info.value, TimeoutError)
        # A login that is never answered is an address that did not work.
        c2 = IggyClient(f"iggy://iggy:iggy@{silent.address}", timeout=0.5,
                        reconnection_retries=0)
        with pytest.raises(errors.CannotEstablishConnection) as info:
            await c2.connect()
        assert "login" in str(info.value)
        await c.close()
    finally:
        silent.close()


async def test_server_closing_mid_request():
    closer = FakeServer(lambda h, b: "close")
    try:
        c = IggyClient(closer.address, heartbeat_interval=None)
        await c.connect()
        with pytest.raises(errors.Disconnected) as info:
            await c.get_streams()
        assert "get_streams" in str(info.value) and "may or may not have been applied" in \
            str(info.value)
        await c.close()
    finally:
        closer.close()


async def test_undecodable_reply():
    garbage = FakeServer(lambda h, b: reply(h, b"\x01\x02\x03"))
    try:
        c = IggyClient(garbage.address, heartbeat_interval=None)
        await c.connect()
        with pytest.raises(errors.UndecodableReply) as info:
            await c.get_stats()
        assert "get_stats" in str(info.value) and info.value.code == 4
        with pytest.raises(errors.UndecodableReply):
            await c.poll_messages("s", "t", partition_id=0)
        await c.close()
    finally:
        garbage.close()


async def test_unframeable_reply_drops_the_connection():
    junk = FakeServer(lambda h, b: b"\xff" * HEADER_SIZE)
    try:
        c = IggyClient(junk.address, heartbeat_interval=None, reconnection_retries=0)
        await c.connect()
        with pytest.raises(errors.Disconnected) as info:
            await c.ping()
        assert "reply frame of" in str(info.value)
        await c.close()
    finally:
        junk.close()


def test_sync_client_errors_and_timeouts(server):
    port = free_port()
    c = SyncIggyClient(f"iggy://iggy:iggy@127.0.0.1:{port}", connect_timeout=1)
    with pytest.raises(errors.CannotEstablishConnection):
        c.connect()
    c.close()
    with SyncIggyClient(f"iggy://iggy:iggy@{server.address}") as s:
        assert wait_for(lambda: s.connected, 5)
        with pytest.raises(errors.StreamIdNotFound):
            s.purge_stream("no-such-stream")


GEVENT_USERS = """
from gevent import monkey; monkey.patch_all()
import sys, gevent
from iggy_fast import SyncIggyClient

def user(i):
    with SyncIggyClient(f"iggy://iggy:iggy@{sys.argv[1]}") as c:
        for _ in range(50):
            c.ping()
        return i

jobs = [gevent.spawn(user, i) for i in range(10)]
gevent.joinall(jobs, timeout=60)
print(sorted(j.value for j in jobs if j.value is not None))
"""


def test_sync_clients_under_gevent(server):
    """Locust runs users as gevent greenlets of one OS thread: ten SyncIggyClients there
    share one loop and all finish."""
    import subprocess
    import sys
    pytest.importorskip("gevent")
    out = subprocess.run([sys.executable, "-c", GEVENT_USERS, server.address],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(list(range(10))), out.stderr
