"""IggyClient over every transport this build has (TCP always; QUIC, WebSocket and HTTP once
their Link modules are in the tree): the same session, send, poll, group and error flow on
each, plain and with TLS where the transport has it, against one real server."""

from __future__ import annotations

import importlib.util
import os

import pytest

from iggy_fast import Consumer, IggyClient, PollingStrategy
from iggy_fast.client import aio
from iggy_fast.protocol import errors

pytestmark = pytest.mark.timeout(120)

TRANSPORT_NAMES = {"tcp": "TCP", "quic": "QUIC", "ws": "WebSocket", "http": "HTTP"}
AVAILABLE = [t for t, spec in aio.TRANSPORTS.items()
             if importlib.util.find_spec(spec.partition(":")[0]) is not None]


def url(srv, transport: str, tls: bool = False) -> str:
    port = {"tcp": srv.tcp_port, "quic": srv.quic_port, "ws": srv.websocket_port,
            "http": srv.http_port}[transport]
    options = ""
    if tls:
        ca = os.path.join(srv.data_dir, "certs", "iggy_cert.pem")
        options = f"?tls=true&tls_ca_file={ca}&tls_domain=localhost"
    return f"iggy+{transport}://iggy:iggy@127.0.0.1:{port}{options}"


async def session_flow(client, stream: str, transport: str) -> None:
    assert (await client.get_me()).transport == TRANSPORT_NAMES[transport]
    await client.create_stream(stream)
    await client.create_topic(stream, "t", partitions_count=2)
    sent = await client.send_messages(stream, "t", 1, [b"one", "two", memoryview(b"three")])
    assert (sent.partition_id, sent.offsets) == (1, range(0, 3))
    big = [os.urandom(50_000) for _ in range(20)]                # a 1 MB reply
    await client.send_messages(stream, "t", 0, big)
    polled = await client.poll_messages(stream, "t", partition_id=0, count=100,
                                        polling_strategy=PollingStrategy.First())
    assert [m.payload for m in polled] == big
    await client.create_consumer_group(stream, "t", "g")
    await client.join_consumer_group(stream, "t", "g")
    assert sorted((await client.sync_consumer_group(stream, "t", "g")).partitions) == [0, 1]
    group_poll = await client.poll_messages(stream, "t", partition_id=1,
                                            consumer=Consumer.group("g"), auto_commit=True)
    assert [m.payload for m in group_poll] == [b"one", b"two", b"three"]
    with pytest.raises(errors.TopicIdNotFound):
        await client.delete_topic(stream, "missing")
    await client.delete_stream(stream)


@pytest.mark.parametrize("transport", AVAILABLE)
async def test_every_transport(server, transport, unique):
    async with IggyClient(url(server, transport)) as client:
        await session_flow(client, unique("s"), transport)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    from conftest import ServerProcess
    env = {"IGGY_TCP_TLS_ENABLED": "true", "IGGY_WEBSOCKET_TLS_ENABLED": "true"}
    srv = ServerProcess(tmp_path_factory.mktemp("tls") / "server", env=env).start()
    yield srv
    assert srv.stop() == 0


@pytest.mark.parametrize("transport", [t for t in AVAILABLE if t in ("tcp", "ws", "quic")])
async def test_every_transport_with_tls(tls_server, transport, unique):
    """With the server's certificate verified against its CA (QUIC is always TLS)."""
    async with IggyClient(url(tls_server, transport, tls=True)) as client:
        await session_flow(client, unique("s"), transport)
