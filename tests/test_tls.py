"""TCP over TLS: the official SDK validates our self-signed certificate against its CA file, and
polls of many messages across segments come back byte for byte as sent (over TLS, stored
batches cannot go by sendfile: they are read in chunks into a reused buffer)."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from apache_iggy import Consumer, IggyClient, PollingStrategy, TcpConfig
from apache_iggy import SendMessage as Message

from conftest import ServerProcess


async def tls_client(srv):
    """The official SDK over TLS, validating the server's self-signed certificate."""
    ca = os.path.join(srv.data_dir, "certs", "iggy_cert.pem")
    c = IggyClient(TcpConfig(server_address=srv.address, tls_enabled=True,
                             tls_domain="localhost", tls_ca_file=ca,
                             tls_validate_certificate=True))
    await c.connect()
    await c.login_user("iggy", "iggy")
    return c


async def test_sdk_over_tls_with_ca_validation(tmp_path):
    srv = ServerProcess(tmp_path / "tls", env={"IGGY_TCP_TLS_ENABLED": "true"})
    srv.start()
    try:
        c = await tls_client(srv)
        await c.create_stream("secure")
        assert (await c.get_stream("secure")).name == "secure"
        # A plaintext client gets nowhere (and does not disturb the server).
        plain = IggyClient(srv.address)
        # It talks past the TLS handshake and never gets an answer.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(plain.connect(), 2)
            await asyncio.wait_for(plain.login_user("iggy", "iggy"), 2)
        assert await c.get_stream("secure") is not None
    finally:
        assert srv.stop() == 0


async def test_poll_over_tls_across_segments_is_byte_identical(tmp_path):
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    srv = ServerProcess(tmp_path / "tlspoll", env={"IGGY_TCP_TLS_ENABLED": "true",
                                                   "IGGY_SYSTEM_SEGMENT_SIZE": "256 KiB"})
    srv.start()
    try:
        c = await tls_client(srv)
        await c.create_stream("s")
        await c.create_topic(stream="s", name="t", partitions_count=1)
        sent = []
        for _ in range(30):                 # ~1.5 MB: several segments, regions > 256 KiB
            batch = [rng.randbytes(rng.randint(1, 2000)) for _ in range(50)]
            await c.send_messages("s", "t", 0, [Message(p) for p in batch])
            sent += batch
        segments = [n for n in os.listdir(srv.data_path(0, 0, 0)) if n.endswith(".log")]
        assert len(segments) >= 4

        async def poll(offset, count):
            return await c.poll_messages(stream="s", topic="t", consumer=Consumer.Single(1),
                                         partition_id=0,
                                         polling_strategy=PollingStrategy.Offset(offset),
                                         count=count, auto_commit=False)

        got = await poll(0, len(sent))
        assert [m.offset() for m in got] == list(range(len(sent)))
        assert [m.payload() for m in got] == sent
        for start, count in [(17, 999), (333, 1), (1234, 266)]:   # sliced at batch edges
            got = await poll(start, count)
            assert [m.payload() for m in got] == sent[start:start + count]
    finally:
        assert srv.stop() == 0
