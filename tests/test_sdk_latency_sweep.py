"""Send latency over a sweep of batch sizes with the official SDK at its default settings (Nagle
on), over TCP and TLS, and with our own client: no send may wait for a delayed ACK.

The SDK writes a request of ~8-64 KB (over TLS: any request) in two pieces; Nagle holds the
second until the first is ACKed, and a server that delays its ACK made each such send take
~44 ms. The server now ACKs a read that leaves a frame incomplete at once (`[tcp] quickack`).
Each size's median must stay under 5 ms plus 10 ms per MB sent (1000 x 1000 B is mostly work:
a megabyte through the SDK, TLS and the page cache, which a shared 2-core machine under load can
take ~10 ms over): far below a delayed ACK's 40 ms either way. A size over its limit is measured
once more before the test fails, since a stall repeats and a busy moment does not.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
from apache_iggy import IggyClient, TcpConfig
from apache_iggy import SendMessage as Message

from conftest import ServerProcess
from iggy_fast.bench.actors import make_batch
from iggy_fast.client import BlockingClient

# (messages per send, bytes per message): the sizes of the issue, both sides of the stall.
SIZES = ((1, 128), (10, 128), (50, 128), (100, 128), (300, 128),
         (50, 1000), (200, 1000), (1000, 1000))
SENDS = 5


def limit_ms(count: int, size: int) -> float:
    return 5.0 + count * size / 100_000


def start(tmp_path, tls: bool, **env) -> ServerProcess:
    return ServerProcess(tmp_path / "server",
                         env={"IGGY_TCP_TLS_ENABLED": "true" if tls else "false", **env}).start()


async def sdk_client(srv: ServerProcess, tls: bool) -> IggyClient:
    """The official client with every setting at its default but the address (and TLS)."""
    if tls:
        ca = os.path.join(srv.data_dir, "certs", "iggy_cert.pem")
        client = IggyClient(TcpConfig(server_address=srv.address, tls_enabled=True,
                                      tls_domain="localhost", tls_ca_file=ca,
                                      tls_validate_certificate=True))
    else:
        client = IggyClient(srv.address)
    await client.connect()
    await client.login_user("iggy", "iggy")
    await client.create_stream("sweep")
    await client.create_topic(stream="sweep", name="t", partitions_count=1)
    return client


def sdk_send(client: IggyClient, count: int, size: int):
    payload = os.urandom(size)

    async def send() -> float:
        messages = [Message(payload) for _ in range(count)]   # the SDK consumes them
        t0 = time.perf_counter()
        await client.send_messages("sweep", "t", 0, messages)
        return (time.perf_counter() - t0) * 1e3
    return send


def own_send(client: BlockingClient, count: int, size: int):
    batch = make_batch(count, size)

    async def send() -> float:
        t0 = time.perf_counter()
        client.send_batch("sweep", "t", 0, batch, count)
        return (time.perf_counter() - t0) * 1e3
    return send


async def median_ms(send, count: int, size: int) -> float:
    """The median of SENDS sends in ms, measured once more if over the size's limit."""
    for _attempt in range(2):
        median = statistics.median([await send() for _ in range(SENDS)])
        if median < limit_ms(count, size):
            break
    return median


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_no_send_waits_for_a_delayed_ack(tmp_path, tls):
    srv = start(tmp_path, tls)
    try:
        sdk = await sdk_client(srv, tls)
        medians = {("SDK", (n, size)): await median_ms(sdk_send(sdk, n, size), n, size)
                   for n, size in SIZES}
        ca = os.path.join(srv.data_dir, "certs", "iggy_cert.pem") if tls else None
        own = BlockingClient(srv.address, tls=tls, tls_ca_file=ca, tls_domain="localhost")
        own.login()
        for n, size in SIZES:
            medians["ours", (n, size)] = await median_ms(own_send(own, n, size), n, size)
        own.close()
        slow = {k: round(v, 2) for k, v in medians.items() if v >= limit_ms(*k[1])}
        assert not slow, f"median send latency of {SENDS} sends, ms: {slow}"
    finally:
        assert srv.stop() == 0


async def test_without_quickack_the_sdk_waits_for_the_delayed_ack(tmp_path):
    # The switch is what cures it, and the sweep above would catch its loss: with it off, a
    # 50 x 128 B send waits for the server's delayed ACK (40 ms at least on Linux).
    srv = start(tmp_path, False, IGGY_TCP_QUICKACK="false")
    try:
        sdk = await sdk_client(srv, False)
        assert await median_ms(sdk_send(sdk, 50, 128), 50, 128) >= 30
    finally:
        assert srv.stop() == 0
