"""TLS on TCP and WebSocket with certificates from `iggy-fast certs generate`: the official SDK
verifies the server against the CA file (`tls_ca_file`) over both transports, logs in with a
password and with a personal access token, and reads over one what it wrote over the other;
a client trusting another CA is refused; plain text on a TLS port and a failed handshake are
one log line each while everyone else is served; wss:// with the self-signed certificate."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import pytest
from apache_iggy import IggyClient, TcpConfig, WebSocketConfig

from conftest import ServerProcess, wait_for
from iggy_fast.client.transports.websocket import WebSocketLink
from transport_checks import connect, create_token, full_path, token_login


def generate(out, *hosts: str) -> None:
    args = [a for h in hosts for a in ("--host", h)]
    subprocess.run([sys.executable, "-m", "iggy_fast.cli", "certs", "generate", "--out",
                    str(out), *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    out = tmp_path_factory.mktemp("certs")
    generate(out, "localhost", "127.0.0.1")
    return out


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, certs):
    cert, key = str(certs / "server_cert.pem"), str(certs / "server_key.pem")
    env = {"IGGY_TCP_TLS_ENABLED": "true", "IGGY_TCP_TLS_CERT_FILE": cert,
           "IGGY_TCP_TLS_KEY_FILE": key, "IGGY_WEBSOCKET_TLS_ENABLED": "true",
           "IGGY_WEBSOCKET_TLS_CERT_FILE": cert, "IGGY_WEBSOCKET_TLS_KEY_FILE": key}
    srv = ServerProcess(tmp_path_factory.mktemp("data") / "tls", env=env).start()
    yield srv
    assert srv.stop() == 0
    assert "Traceback" not in srv.log(), srv.log()


def url(scheme: str, port: int, ca) -> str:
    """A connection string verifying the server against `ca`. Over TCP the SDK verifies
    whenever TLS is on; over WebSocket only when told to (and TCP's strings refuse that
    option)."""
    verify = "&tls_validate_certificate=true" if scheme == "ws" else ""
    return (f"iggy+{scheme}://iggy:iggy@127.0.0.1:{port}?tls=true&tls_domain=localhost"
            f"&tls_ca_file={ca}{verify}")


async def test_sdk_over_tls_tcp_and_wss_with_the_generated_ca(tls_server, certs):
    ca = certs / "ca_cert.pem"
    tcp = await connect(url("tcp", tls_server.tcp_port, ca))
    wss = await connect(url("ws", tls_server.websocket_port, ca))
    await full_path(tcp, wss)
    await full_path(wss, tcp)
    # A personal access token made over TLS TCP logs in over wss:// and over TLS TCP.
    token = await create_token(tcp, "tls-token")
    common = dict(tls_enabled=True, tls_domain="localhost", tls_ca_file=str(ca),
                  tls_validate_certificate=True, auto_login=token_login(token))
    for config in (WebSocketConfig(server_address=f"127.0.0.1:{tls_server.websocket_port}",
                                   **common),
                   TcpConfig(server_address=tls_server.address, **common)):
        by_token = await connect(config)
        assert len(await by_token.get_streams()) >= 2
    # Our own link verifies the same way.
    link = WebSocketLink(f"127.0.0.1:{tls_server.websocket_port}", tls=True, ca_file=str(ca),
                         domain="localhost", timeout=10)
    await link.connect()
    await link.login("iggy", "iggy")
    await link.request(1)
    await link.close()


def handshake_failures(srv) -> int:
    return srv.log().count("TLS handshake with")


async def test_a_client_trusting_another_ca_is_refused(tls_server, certs, tmp_path):
    generate(tmp_path, "localhost")
    bystander = await connect(url("ws", tls_server.websocket_port, certs / "ca_cert.pem"))
    for scheme, port in (("tcp", tls_server.tcp_port), ("ws", tls_server.websocket_port)):
        before = handshake_failures(tls_server)
        with pytest.raises(Exception):
            c = IggyClient.from_connection_string(url(scheme, port, tmp_path / "ca_cert.pem"))
            await asyncio.wait_for(c.connect(), 10)
            await asyncio.wait_for(c.ping(), 5)
        # The SDK's refusal ends the handshake: the server logs it once.
        assert wait_for(lambda: handshake_failures(tls_server) >= before + 1, 5)
        await bystander.ping()
    link = WebSocketLink(f"127.0.0.1:{tls_server.websocket_port}", tls=True,
                         ca_file=str(tmp_path / "ca_cert.pem"), domain="localhost", timeout=5)
    with pytest.raises(Exception, match="(?i)certificate"):
        await link.connect()


async def test_plain_text_on_tls_ports_is_one_log_line(tls_server, certs):
    bystander = await connect(url("tcp", tls_server.tcp_port, certs / "ca_cert.pem"))
    for port in (tls_server.tcp_port, tls_server.websocket_port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            peer = f"TLS handshake with 127.0.0.1:{s.getsockname()[1]} failed"
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\r\n")
            assert s.recv(100) == b""            # the server hangs up
        assert wait_for(lambda: peer in tls_server.log(), 5), tls_server.log()
        lines = [ln for ln in tls_server.log().splitlines() if peer in ln]
        assert len(lines) == 1 and "WARNING" in lines[0], lines
        await bystander.ping()
    # A ws:// client on the wss:// port fails the same way, and only its connection.
    link = WebSocketLink(f"127.0.0.1:{tls_server.websocket_port}", timeout=5)
    with pytest.raises(Exception):
        await link.connect()
    await bystander.ping()


async def test_wss_with_the_self_signed_certificate(tmp_path):
    srv = ServerProcess(tmp_path / "self", env={"IGGY_WEBSOCKET_TLS_ENABLED": "true"}).start()
    try:
        own = os.path.join(srv.data_dir, "certs", "iggy_cert.pem")
        assert oct(os.stat(os.path.join(srv.data_dir, "certs", "iggy_key.pem")).st_mode
                   & 0o777) == "0o600"
        wss = await connect(url("ws", srv.websocket_port, own))
        tcp = IggyClient(srv.address)                 # TCP stays plain
        await tcp.connect()
        await tcp.login_user("iggy", "iggy")
        await full_path(wss, tcp, messages=50)
        # Verification off accepts it too (the SDK's default for wss://).
        link = WebSocketLink(f"wss://127.0.0.1:{srv.websocket_port}", verify=False, timeout=10)
        await link.connect()
        await link.login("iggy", "iggy")
        await link.close()
    finally:
        assert srv.stop() == 0, srv.log()
