"""QUIC: the official SDK (`iggy+quic://`) and our QuicLink against the real server over QUIC,
with the self-signed certificate and with a configured one; personal access tokens over QUIC
(and refused once expired or deleted); what reached the server over QUIC read back over TCP;
bad input (garbage datagrams, a stream that is not one frame) closes at most that one
connection; a QUIC port in use stops the server in one line."""

from __future__ import annotations

import asyncio
import os
import random
import socket

import pytest
from apache_iggy import (AutoLogin, Consumer, IggyClient, PollingStrategy, QuicConfig,
                         SendMessage)

from conftest import ROOT, ServerProcess, wait_for
from iggy_fast._wire import Reader, Writer
from iggy_fast.bench.actors import make_batch
from iggy_fast.client import BlockingClient
from iggy_fast.client.core import poll_body, send_messages_body
from iggy_fast.client.transports.quic import QuicLink
from iggy_fast.protocol.errors import IggyError
from iggy_fast.server.transports import tls
from test_startup import one_line, start_failing


async def until(predicate, timeout: float = 10.0) -> bool:
    """wait_for() for conditions the event loop must run to make true (our QuicLink's)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    return predicate()


def quic_url(srv) -> str:
    return f"iggy+quic://{ROOT[0]}:{ROOT[1]}@127.0.0.1:{srv.quic_port}"


async def quic_client(srv, token: str | None = None) -> IggyClient:
    if token is None:
        c = IggyClient.from_connection_string(quic_url(srv))
    else:
        c = IggyClient(QuicConfig(server_address=f"127.0.0.1:{srv.quic_port}",
                                  auto_login=AutoLogin.personal_access_token(token)))
    await asyncio.wait_for(c.connect(), 15)
    return c


async def tcp_client(srv) -> IggyClient:
    c = IggyClient(srv.address)
    await c.connect()
    await c.login_user(*ROOT)
    return c


def offset_body(stream: str, topic: str) -> Writer:
    """GetConsumerOffset's body (StoreConsumerOffset's starts alike): consumer 7, partition 0."""
    return Writer().u8(1).identifier(7).identifier(stream).identifier(topic).u8(1).u32(0)


async def round_trip(c: IggyClient, name: str, count: int = 20) -> None:
    """Create a stream and topic, send `count` messages, poll them, store and read an offset:
    all over `c`."""
    await c.create_stream(name)
    await c.create_topic(name, "t", 1)
    payloads = [f"{name}-{i}".encode() * 50 for i in range(count)]
    await c.send_messages(name, "t", 0, [SendMessage(p) for p in payloads])
    got = await c.poll_messages(name, "t", consumer=Consumer.Single(7),
                                polling_strategy=PollingStrategy.First(), count=count,
                                auto_commit=False)
    assert [m.payload() for m in got] == payloads
    assert await c.send_binary_request(
        121, offset_body(name, "t").u64(count - 3).u8(1).getvalue()) == b""
    r = Reader(await c.send_binary_request(120, offset_body(name, "t").getvalue()))
    assert (r.u32(), r.u64(), r.u64()) == (0, count - 1, count - 3)


async def read_back_over_tcp(srv, name: str, count: int = 20) -> None:
    t = await tcp_client(srv)
    got = await t.poll_messages(name, "t", consumer=Consumer.Single(8),
                                polling_strategy=PollingStrategy.First(), count=count + 5,
                                auto_commit=False)
    assert [m.payload() for m in got] == [f"{name}-{i}".encode() * 50 for i in range(count)]


@pytest.fixture
async def srv(tmp_path):
    s = ServerProcess(tmp_path / "q").start()
    yield s
    assert s.stop() == 0, s.log()
    assert "Traceback" not in s.log(), s.log()


# -- the official SDK -------------------------------------------------------------------------

async def test_sdk_over_quic_with_the_self_signed_certificate(srv):
    c = await quic_client(srv)
    await c.ping()
    await round_trip(c, "over-quic")
    await read_back_over_tcp(srv, "over-quic")
    # The certificate was generated once, kept in the data directory, owner-only.
    certs = os.path.join(srv.data_dir, "certs")
    assert sorted(os.listdir(certs)) == ["iggy_cert.pem", "iggy_key.pem"]
    assert os.stat(os.path.join(certs, "iggy_key.pem")).st_mode & 0o777 == 0o600
    # Our own QUIC link verifies it against the generated certificate itself.
    link = QuicLink(f"127.0.0.1:{srv.quic_port}", timeout=15,
                    tls_ca_file=os.path.join(certs, "iggy_cert.pem"))
    await link.connect()
    await link.login(*ROOT)
    await link.close()


def make_certificate(directory) -> tuple[str, str]:
    """A certificate for localhost and its key, made in `directory` (the server's own
    self-signed maker: ECDSA P-256, which the official SDK needs with certificate validation
    off, its default: Iggy's skip_server_verification.rs accepts no other scheme)."""
    return tls.self_signed(str(directory))


async def test_sdk_over_quic_with_a_configured_certificate(tmp_path):
    cert, key = make_certificate(tmp_path / "mine")
    other, _ = make_certificate(tmp_path / "other")
    srv = ServerProcess(tmp_path / "data", env={"IGGY_QUIC_CERTIFICATE_CERT_FILE": cert,
                                               "IGGY_QUIC_CERTIFICATE_KEY_FILE": key,
                                               "IGGY_QUIC_CERTIFICATE_SELF_SIGNED": "false"})
    srv.start()
    try:
        c = await quic_client(srv)
        await round_trip(c, "over-configured-quic")
        await read_back_over_tcp(srv, "over-configured-quic")
        assert not (tmp_path / "data" / "certs").exists()
        # The configured certificate is the one served: verified against it, a link connects;
        # against another, the handshake fails and the server logs one line for it.
        link = QuicLink(f"127.0.0.1:{srv.quic_port}", timeout=15, tls_ca_file=cert)
        await link.connect()
        await link.login(*ROOT)
        await link.close()
        stranger = QuicLink(f"127.0.0.1:{srv.quic_port}", timeout=15, tls_ca_file=other)
        with pytest.raises(ConnectionError):
            await stranger.connect()
        assert wait_for(lambda: "QUIC connection 127.0.0.1:" in srv.log()
                        and "failed" in srv.log(), 10), srv.log()
        await c.ping()
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in srv.log()


async def test_personal_access_tokens_over_quic(srv):
    with BlockingClient(srv.address) as b:         # created over TCP
        b.login(*ROOT)

        def create(name: str, expiry_us: int) -> str:
            return Reader(b.call(42, Writer().name(name).u64(expiry_us).getvalue()).body).name()

        lasting, brief, doomed = (create("quic-lasting", 0), create("quic-brief", 300_000),
                                  create("quic-doomed", 0))
    t = await quic_client(srv, lasting)
    await round_trip(t, "by-token-over-quic")          # acts as root, the token's owner
    await read_back_over_tcp(srv, "by-token-over-quic")
    # Deleted (over QUIC) or expired: refused over QUIC.
    await t.send_binary_request(43, Writer().name("quic-doomed").getvalue())
    await asyncio.sleep(0.5)
    for token in (doomed, brief):
        link = QuicLink(f"127.0.0.1:{srv.quic_port}", timeout=15)
        await link.connect()
        with pytest.raises(IggyError) as e:
            await link.token_login(token)
        assert e.value.code == 53
        await link.close()
        with pytest.raises(Exception):
            refused = await quic_client(srv, token)
            await asyncio.wait_for(refused.get_streams(), 5)
    await t.ping()                                      # the token's client is still served


# -- our QuicLink -----------------------------------------------------------------------------

async def test_quic_link_logs_in_and_pipelines_requests_in_order(srv):
    link = QuicLink(f"127.0.0.1:{srv.quic_port}", timeout=15)
    await link.connect()
    assert Reader(await link.login(*ROOT)).u32() == 0          # root's user id
    names = [f"link-{i}" for i in range(30)]
    # Thirty requests in flight on thirty streams: each answer is its own request's.
    await asyncio.gather(*[link.request(202, Writer().name(n).getvalue()) for n in names])
    details = await asyncio.gather(*[link.request(200, Writer().identifier(n).getvalue())
                                     for n in names])
    for name, body in zip(names, details):
        assert bytes(name.encode()) in bytes(body)
    with pytest.raises(IggyError) as e:
        await link.request(203, Writer().identifier("no-such-stream").getvalue())   # delete
    assert e.value.code == 1009
    await link.close()
    assert link.closed


async def test_pipelined_fsync_sends_are_answered_in_order(tmp_path):
    """With fsync enforced each send's reply is awaited, so the driver stops reading: the
    requests that arrive meanwhile on other streams wait and are served in order after it."""
    srv = ServerProcess(tmp_path / "data",
                        env={"IGGY_SYSTEM_PARTITION_ENFORCE_FSYNC": "true"}).start()
    try:
        link = QuicLink(f"127.0.0.1:{srv.quic_port}", timeout=30)
        await link.connect()
        await link.login(*ROOT)
        await link.request(202, Writer().name("fsynced").getvalue())
        await link.request(302, Writer().identifier("fsynced").u32(1).name("t").getvalue())
        batch = make_batch(10, 100)
        body = send_messages_body("fsynced", "t", 0, 10)
        replies = await asyncio.gather(*[link.request(101, body, (batch,)) for _ in range(12)])
        assert [int.from_bytes(r[16:24], "little") for r in replies] == list(range(0, 120, 10))
        await link.close()
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in srv.log()


async def test_pipelined_large_polls_pass_the_write_high_water_mark(srv):
    """Eight 1 MB polls in flight: more than the server lets wait unacknowledged (4 MiB), so it
    stops dispatching until the client's ACKs come back, then serves the rest, in order."""
    link = QuicLink(f"127.0.0.1:{srv.quic_port}", timeout=60)
    await link.connect()
    await link.login(*ROOT)
    await link.request(202, Writer().name("large-polls").getvalue())
    await link.request(302, Writer().identifier("large-polls").u32(1).name("t").getvalue())
    batch = make_batch(1000, 1000)
    body = send_messages_body("large-polls", "t", 0, 1000)
    for _ in range(8):
        await link.request(101, body, (batch,))
    polls = await asyncio.gather(*[link.request(100, poll_body(
        "large-polls", "t", 0, 1, offset, 1000, False)) for offset in range(0, 8000, 1000)])
    for offset, reply in zip(range(0, 8000, 1000), polls):
        assert int.from_bytes(reply[12:16], "little") == 1000      # messages in the reply
        assert len(reply) > 1000 * 1000
        assert int.from_bytes(reply[24:32], "little") == offset    # its batch's base offset
    await link.close()


# -- bad input --------------------------------------------------------------------------------

async def test_garbage_datagrams_disturb_no_client(srv):
    quic, tcp = await quic_client(srv), await tcp_client(srv)
    await quic.create_stream("before-garbage")
    rng = random.Random(9)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for size in (0, 1, 5, 20, 100, 1199, 1200, 1350, 1500, 9000):
            for first in (0x00, 0x40, 0xC0, 0xFF):       # short and long header forms
                s.sendto(bytes([first]) + rng.randbytes(max(size - 1, 0)),
                         ("127.0.0.1", srv.quic_port))
        # An Initial-sized long-header packet with QUIC v1's version and random rest.
        s.sendto(b"\xc3\x00\x00\x00\x01\x08" + rng.randbytes(1300), ("127.0.0.1", srv.quic_port))
    await asyncio.sleep(0.5)
    await quic.create_stream("after-garbage")
    await round_trip(quic, "garbage-survivor")
    assert (await tcp.get_stream("after-garbage")) is not None
    lines = [line for line in srv.log().splitlines() if "datagram" in line]
    assert len(lines) <= 1, lines


async def test_a_stream_that_is_not_one_frame_closes_that_connection_only(srv):
    bystander = await quic_client(srv)
    for payload in (b"not a frame at all",
                    b"\x00" * 48 + (100).to_bytes(4, "little") + b"\x00" * 252,   # size lies
                    b"\xff" * 300):
        bad = QuicLink(f"127.0.0.1:{srv.quic_port}", timeout=15)
        await bad.connect()
        await bad.login(*ROOT)
        quic = bad.protocol._quic
        sid = quic.get_next_available_stream_id()
        quic.send_stream_data(sid, payload, end_stream=True)
        bad.protocol.transmit()
        assert await until(lambda: bad.closed)
        assert "QUIC connection closed" in str(bad.error) or "not one request" in str(bad.error)
    assert srv.log().count("closing QUIC connection") == 3, srv.log()
    await round_trip(bystander, "bystander")


def test_a_quic_port_in_use_stops_the_server_in_one_line(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        done = start_failing(tmp_path / "d", env={"IGGY_QUIC_ADDRESS": address})
    line = one_line(done)
    assert line == f"iggy-fast: QUIC cannot listen on {address}: address already in use"
    assert not (tmp_path / "d").exists()


def test_an_unusable_quic_certificate_is_named(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    done = start_failing(tmp_path / "d", env={"IGGY_QUIC_CERTIFICATE_CERT_FILE": str(bad)})
    line = one_line(done)
    assert line.startswith("iggy-fast: configuration error: quic.certificate") and str(bad) in line
    assert not (tmp_path / "d").exists()


def test_a_datagram_size_quic_cannot_use_is_named(tmp_path):
    done = start_failing(tmp_path / "d", env={"IGGY_QUIC_INITIAL_MTU": "1000 B"})
    line = one_line(done)
    assert line == ("iggy-fast: configuration error: quic.initial_mtu 1000 B is outside "
                    "1200..65527 bytes"), line


async def test_the_sdk_takes_larger_datagrams(tmp_path):
    """quic.initial_mtu 1452 B: the official SDK (which accepts up to 1472 B) is served."""
    srv = ServerProcess(tmp_path / "data", env={"IGGY_QUIC_INITIAL_MTU": "1452 B"}).start()
    try:
        c = await quic_client(srv)
        await round_trip(c, "large-datagrams")
    finally:
        assert srv.stop() == 0
