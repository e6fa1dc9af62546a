"""Regenerate the fuzz corpus: request frames the official SDK really sends, one file each.

    python fuzz/capture.py            # rewrites fuzz/corpus/*.bin

It starts our server, puts a recording TCP proxy in front of it and drives `apache-iggy==0.9.0`
through the proxy over every command the SDK can send (typed calls, and `send_binary_request`
for the codes it has no method for), from a password login and from a personal-access-token
login. The proxy cuts the client's byte stream into frames (size u32 at header offset 48) and
keeps each distinct one. A file is one whole frame, header and body, exactly as captured; its
name is `<order>-<operation byte>-<command name>.bin`. The fuzzer (fuzz_server.py) overwrites
only the session field before mutating, since sessions differ from run to run.

Every reply is checked on the way back: a capture made while the server answers the SDK with
an error would seed the fuzzer with the wrong frames, so any status other than the ones this
script expects stops it.

Fixed names (stream `fuzz-s`, topic `fuzz-t`, group `fuzz-g`, user `fuzz-user`) let the
fuzzer rebuild the same world before it replays mutated frames that refer to them.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta

from iggy_fast._wire import Writer
from iggy_fast.protocol.codes import COMMANDS, OPERATION_COMMANDS
from iggy_fast.testing import ServerProcess, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
STREAM, TOPIC, GROUP, USER, PASSWORD, TOKEN = (
    "fuzz-s", "fuzz-t", "fuzz-g", "fuzz-user", "fuzz-pass", "fuzz-token")


def frame_name(frame: bytes) -> str:
    """`<operation>-<command name>` of a request frame."""
    op = frame[176]
    if op == 2:
        code = int.from_bytes(frame[196:200], "little")
    elif op == 1:
        code = 40
    else:
        code = OPERATION_COMMANDS.get(op, 39 if op == 3 else 0)
    cmd = COMMANDS.get(code)
    return f"{op:03d}-{cmd.name if cmd else f'code{code}'}"


class Recorder:
    """A TCP proxy that records request frames and the status of each reply, in order."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.frames: list[bytes] = []                 # every connection's, in arrival order
        # Per connection: its requests and its replies' (command, status), in order.
        self.connections: list[tuple[list, list]] = []

    async def handle(self, reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        requests, replies = [], []
        self.connections.append((requests, replies))

        def request(frame: bytes) -> None:
            requests.append(frame)
            self.frames.append(frame)

        def reply(frame: bytes) -> None:
            replies.append((frame[60], int.from_bytes(frame[216:220], "little")))

        await asyncio.gather(self.pump(reader, up_writer, request),
                             self.pump(up_reader, writer, reply))

    @staticmethod
    async def pump(reader, writer, record):
        buf = bytearray()
        try:
            while data := await reader.read(65536):
                writer.write(data)
                buf += data
                while len(buf) >= 256 and len(buf) >= int.from_bytes(buf[48:52], "little"):
                    size = int.from_bytes(buf[48:52], "little")
                    record(bytes(buf[:size]))
                    del buf[:size]
        except ConnectionError:
            pass        # a side closed mid-stream: what was recorded so far stands
        finally:
            writer.close()


async def drive(address: str, recorder: Recorder) -> None:
    from apache_iggy import (Consumer, GlobalPermissions, IggyClient, IggyExpiry, MaxTopicSize,
                             Permissions, PollingStrategy, SendMessage, StreamPermissions,
                             TopicPermissions, UserStatus)

    def ids(*names) -> Writer:
        w = Writer()
        for n in names:
            w.identifier(n)
        return w

    def offset_body() -> Writer:
        return Writer().u8(1).identifier(7).identifier(STREAM).identifier(TOPIC).u8(1).u32(0)

    c = IggyClient(address)
    await c.connect()
    await c.login_user("iggy", "iggy")
    await c.ping()
    await c.get_stats()
    await c.describe_options("topic")
    await c.send_binary_request(20, b"")                                  # GetMe
    await c.send_binary_request(22, b"")                                  # GetClients
    await c.send_binary_request(21, (1).to_bytes(4, "little"))            # GetClient
    perms = Permissions(GlobalPermissions(read_streams=True, poll_messages=True),
                        {0: StreamPermissions(read_stream=True, topics={
                            0: TopicPermissions(poll_messages=True, send_messages=True)})})
    await c.create_user(USER, PASSWORD, UserStatus.Active, perms)
    await c.get_users()
    await c.get_user(USER)
    await c.update_user(USER, username=USER, status=UserStatus.Active)
    await c.update_permissions(USER, perms)
    await c.change_password(USER, PASSWORD, PASSWORD)
    token_reply = await c.send_binary_request(42, Writer().name(TOKEN).u64(0).getvalue())
    await c.send_binary_request(41, b"")                                  # GetPersonalAccessTokens
    await c.create_stream(STREAM)
    await c.get_streams()
    await c.get_stream(STREAM)
    await c.update_stream(STREAM, STREAM)
    await c.create_topic(STREAM, TOPIC, 2, compression_algorithm="gzip",
                         message_expiry=IggyExpiry.ExpireDuration(timedelta(hours=1)),
                         max_topic_size=MaxTopicSize.ServerDefault(),
                         options={"note": "fuzz"})
    await c.get_topics(STREAM)
    await c.get_topic(STREAM, TOPIC)
    await c.update_topic(STREAM, TOPIC, TOPIC, compression_algorithm="none")
    await c.create_partitions(STREAM, TOPIC, 1)
    await c.delete_partitions(STREAM, TOPIC, 1)
    await c.send_messages(STREAM, TOPIC, 0, [
        SendMessage("hello"), SendMessage(b"\x00" * 100, user_headers={"k": "v", "b": True}),
        SendMessage("with id", id=42)])
    await c.send_messages(STREAM, TOPIC, 1, [SendMessage("one")])
    for strategy in (PollingStrategy.First(), PollingStrategy.Offset(1), PollingStrategy.Last(),
                     PollingStrategy.Timestamp(1), PollingStrategy.Next()):
        await c.poll_messages(STREAM, TOPIC, consumer=Consumer.Single(7), partition_id=0,
                              polling_strategy=strategy, count=10,
                              auto_commit=isinstance(strategy, PollingStrategy.Next))
    await c.send_binary_request(121, offset_body().u64(1).u8(1).getvalue())   # StoreConsumerOffset
    await c.send_binary_request(120, offset_body().getvalue())                # GetConsumerOffset
    await c.send_binary_request(122, offset_body().u8(1).getvalue())          # DeleteConsumerOffset
    await c.create_consumer_group(STREAM, TOPIC, GROUP)
    await c.get_consumer_groups(STREAM, TOPIC)
    await c.get_consumer_group(STREAM, TOPIC, GROUP)
    await c.join_consumer_group(STREAM, TOPIC, GROUP)
    await c.send_binary_request(606, ids(STREAM, TOPIC, GROUP).getvalue())    # SyncConsumerGroup
    await c.poll_messages(STREAM, TOPIC, consumer=Consumer.Group(GROUP), partition_id=0,
                          polling_strategy=PollingStrategy.Next(), count=5, auto_commit=True)
    await c.leave_consumer_group(STREAM, TOPIC, GROUP)
    await c.send_binary_request(102, ids(STREAM, TOPIC).u32(0).u8(1).getvalue())   # Flush
    await c.send_binary_request(503, ids(STREAM, TOPIC).u32(1).u32(1).getvalue())  # DeleteSegments

    # A second connection logs in with the token (op 1 in its other body shape).
    token = token_reply[5:5 + token_reply[4]].decode() if token_reply[:4] == b"\0\0\0\0" \
        else token_reply[1:1 + token_reply[0]].decode()
    pat = IggyClient.from_connection_string(f"iggy://{token}@{address}")
    await pat.connect()
    await pat.ping()
    await pat.send_binary_request(20, b"")
    await pat.logout_user()

    await c.purge_topic(STREAM, TOPIC)
    await c.purge_stream(STREAM)
    await c.send_binary_request(43, Writer().name(TOKEN).getvalue())   # DeletePersonalAccessToken
    await c.delete_consumer_group(STREAM, TOPIC, GROUP)
    await c.delete_topic(STREAM, TOPIC)
    await c.delete_stream(STREAM)
    await c.delete_user(USER)
    await c.logout_user()


async def capture(address_port: int) -> Recorder:
    recorder = Recorder(address_port)
    proxy_port = free_port()
    proxy = await asyncio.start_server(recorder.handle, "127.0.0.1", proxy_port)
    async with proxy:
        await drive(f"127.0.0.1:{proxy_port}", recorder)
        await asyncio.sleep(0.2)      # let the last replies pass the proxy
    return recorder


def main() -> int:
    srv = ServerProcess().start()
    try:
        recorder = asyncio.run(capture(srv.tcp_port))
    finally:
        srv.stop()
        srv.cleanup()
    # Replies arrive in request order on each connection; any failure (command 8 with a
    # non-zero status, or an eviction) means the capture did not exercise what it meant to.
    for requests, replies in recorder.connections:
        bad = [(frame_name(f), s) for f, s in zip(requests, replies) if s != (8, 0)]
        if bad or len(replies) != len(requests):
            print(f"capture failed: {len(requests)} requests, {len(replies)} replies, "
                  f"failures {bad}", file=sys.stderr)
            return 1
    os.makedirs(CORPUS, exist_ok=True)
    for old in os.listdir(CORPUS):
        if old.endswith(".bin"):
            os.remove(os.path.join(CORPUS, old))
    seen = set()
    written = 0
    for frame in recorder.frames:
        # Heartbeat pings and repeated metadata probes differ only in the request counter.
        key = frame[:168] + frame[176:]
        if key in seen:
            continue
        seen.add(key)
        with open(os.path.join(CORPUS, f"{written:03d}-{frame_name(frame)}.bin"), "wb") as f:
            f.write(frame)
        written += 1
    print(f"captured {len(recorder.frames)} request frames, wrote {written} distinct ones "
          f"to {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
