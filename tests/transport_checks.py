"""What every transport must carry, checked through the official SDK: shared by the WebSocket
and TLS tests (test_websocket.py, test_tls_transports.py).

`full_path(writer, reader)`: `writer` creates a stream and a topic, sends messages, polls them
and stores a consumer offset; `reader`, a client over another transport, reads the same
messages and the stored offset back, byte for byte.
"""

from __future__ import annotations

import asyncio
import uuid

from apache_iggy import AutoLogin, Consumer, IggyClient, PollingStrategy
from apache_iggy import SendMessage as Message

from iggy_fast._wire import Reader, Writer


async def connect(config) -> IggyClient:
    """An SDK client for a connection string or a *Config, connected (and logged in when the
    config logs in by itself)."""
    c = (IggyClient.from_connection_string(config) if isinstance(config, str)
         else IggyClient(config))
    await asyncio.wait_for(c.connect(), 15)
    return c


def offset_target(stream: str, topic: str, consumer: str = "reader") -> Writer:
    """[Consumer][stream][topic][partition 0] of Get/StoreConsumerOffset (PROTOCOL.md §5.9)."""
    return Writer().u8(1).identifier(consumer).identifier(stream).identifier(topic) \
        .u8(1).u32(0)


async def stored_offset(c: IggyClient, stream: str, topic: str) -> int | None:
    """The stored offset of consumer "reader" on partition 0 (None: nothing stored)."""
    reply = await c.send_binary_request(120, offset_target(stream, topic).getvalue())
    return int.from_bytes(reply[12:20], "little") if reply else None


async def poll(c: IggyClient, stream: str, topic: str, strategy, count: int):
    return await c.poll_messages(stream=stream, topic=topic, partition_id=0,
                                 consumer=Consumer.Single("reader"),
                                 polling_strategy=strategy, count=count, auto_commit=False)


async def full_path(writer: IggyClient, reader: IggyClient, messages: int = 300) -> str:
    """The scenario in the module docstring; returns the stream's name."""
    stream, topic = f"s-{uuid.uuid4().hex[:10]}", "t"
    await writer.create_stream(stream)
    await writer.create_topic(stream=stream, name=topic, partitions_count=1)
    payloads = [f"{i:05d}".encode() * (1 + i % 50) for i in range(messages)]
    for start in range(0, messages, 100):
        await writer.send_messages(stream, topic, 0,
                                   [Message(p) for p in payloads[start:start + 100]])
    got = await poll(writer, stream, topic, PollingStrategy.Offset(0), messages)
    assert [m.payload() for m in got] == payloads
    await writer.send_binary_request(121, offset_target(stream, topic).u64(messages // 2)
                                     .u8(1).getvalue())
    assert await stored_offset(writer, stream, topic) == messages // 2
    # The other transport sees the same stream, messages and offset.
    assert (await reader.get_stream(stream)).name == stream
    assert await stored_offset(reader, stream, topic) == messages // 2
    again = await poll(reader, stream, topic, PollingStrategy.Offset(0), messages)
    assert [m.payload() for m in again] == payloads
    rest = await poll(reader, stream, topic, PollingStrategy.Next(), messages)
    assert [m.offset() for m in rest] == list(range(messages // 2 + 1, messages))
    return stream


async def create_token(c: IggyClient, name: str, expiry_us: int = 0) -> str:
    """A personal access token of the logged-in user (CreatePersonalAccessToken, 42)."""
    reply = await c.send_binary_request(42, Writer().name(name).u64(expiry_us).getvalue())
    return Reader(reply).name()


async def delete_token(c: IggyClient, name: str) -> None:
    await c.send_binary_request(43, Writer().name(name).getvalue())


def token_login(token: str):
    return AutoLogin.personal_access_token(token)
