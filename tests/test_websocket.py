"""The WebSocket transport: the official SDK over `iggy+ws://` end to end (and the same data
over TCP), personal access tokens over WebSocket, bad input that closes only its own
connection with one log line, reading held back while replies wait, and our WebSocketLink.

The RFC 6455 details (fragmented messages, pings, the close handshake, refused upgrades) are
checked with frames written by hand here (`RawSocket`), independently of the transport's own
codec (iggy_fast/_websocket.pyx), which the server and our link both use."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import struct

import aiohttp
import pytest
from apache_iggy import IggyClient, WebSocketConfig

from conftest import ROOT, ServerProcess, wait_for
from iggy_fast import _websocket
from iggy_fast._wire import Writer
from iggy_fast.client.core import ClientCore, Reply, poll_body
from iggy_fast.client.transports.websocket import WebSocketLink
from iggy_fast.protocol.errors import IggyError
from transport_checks import connect, create_token, delete_token, full_path, token_login


class RawSocket:
    """A WebSocket client written out by hand: the upgrade, masked frames, frames read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, behind: bytes = b"") -> "RawSocket":
        """Upgrade; `behind` is sent in the same write as the request."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16))
        writer.write(upgrade_request(key) + behind)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101 "), head
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                  .digest())
        headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if line)
        assert {k.lower(): v for k, v in headers.items()}[b"sec-websocket-accept"] == accept
        return cls(reader, writer)

    def send(self, opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> None:
        self.writer.write(frame(opcode, payload, fin, mask))

    async def receive(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame; (-1, b"") once the server has hung up."""
        try:
            b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), 10)
        except asyncio.IncompleteReadError:
            return -1, b""
        assert b0 & 0x80 and not b1 & 0x80           # whole frames, unmasked
        length = b1 & 0x7F
        if length >= 126:
            raw = await self.reader.readexactly(2 if length == 126 else 8)
            length = int.from_bytes(raw, "big")
        return b0 & 0x0F, await asyncio.wait_for(self.reader.readexactly(length), 10)

    async def reply(self, core: ClientCore):
        """The next Iggy reply (one binary message each)."""
        opcode, payload = await self.receive()
        assert opcode == 2, (opcode, payload)
        [event] = core.receive_data(payload)
        return event

    async def closed_with(self) -> int:
        """The close code the server sent, once it has also hung up."""
        while True:
            opcode, payload = await self.receive()
            if opcode == 8:
                code = int.from_bytes(payload[:2], "big")
                self.send(8, payload[:2])            # the close handshake: answered
                assert (await self.receive())[0] == -1
                self.writer.close()
                return code
            assert opcode in (2, 10), opcode         # replies and pongs may come first


async def hung_up(reader: asyncio.StreamReader) -> bool:
    """The server ended the connection (an abort resets it) without sending anything more."""
    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        return True


def upgrade_request(key: bytes, path: str = "/", method: str = "GET",
                    version: str = "13") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            f"Sec-WebSocket-Version: {version}\r\n\r\n").encode()


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
    """One frame as RFC 6455 §5.2 lays it out, masked with a random key (a client's)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(key * (n // 4 + 1), "little")
              & ((1 << 8 * n) - 1)).to_bytes(n, "little")
    return head + key + masked


@pytest.mark.parametrize("masked", [True, False], ids=["client frames", "server frames"])
def test_frames_decode_alike_however_reads_cut_them(masked):
    """The transports' decoder (iggy_fast/_websocket.pyx) gives back the data payloads, in
    order and unmasked, and the control frames, whatever the sizes of the frames (the three
    length encodings), their fragments and the reads that deliver them (headers cut
    anywhere); message boundaries are not kept, as the Iggy byte stream needs none."""
    rnd = random.Random(7)
    for _ in range(20):
        stream, data, pings = bytearray(), bytearray(), []
        for _ in range(40):
            payload = os.urandom(rnd.choice([0, 1, 125, 126, 65535, 65536, 70_000,
                                             rnd.randrange(300)]))
            data += payload
            cuts = sorted(rnd.sample(range(len(payload) + 1), k=min(2, len(payload) + 1)))
            parts = [payload] if rnd.random() < 0.5 else [
                payload[:cuts[0]], payload[cuts[0]:cuts[-1]], payload[cuts[-1]:]]
            for i, part in enumerate(parts):
                stream += frame(2 if i == 0 else 0, part, i == len(parts) - 1, masked)
                if rnd.random() < 0.2:
                    pings.append(os.urandom(rnd.randrange(126)))
                    stream += frame(9, pings[-1], True, masked)
        decoder = _websocket.FrameDecoder(masked)
        out, pos = bytearray(), 0
        while pos < len(stream):
            n = min(rnd.choice([1, 2, 3, 9, 14, 1000, 100_000]), len(stream) - pos)
            buffer = bytearray(stream[pos:pos + n] + b"\xee" * rnd.randrange(4))
            out += buffer[:decoder.decode(buffer, n)]
            pos += n
        assert (decoder.error_code, decoder.error_reason) == (0, "")
        assert out == data
        assert decoder.events == [(9, p) for p in pings]


def ws_url(srv) -> str:
    return f"iggy+ws://iggy:iggy@127.0.0.1:{srv.websocket_port}"


async def tcp_root(srv) -> IggyClient:
    c = IggyClient(srv.address)
    await c.connect()
    await c.login_user(*ROOT)
    return c


async def test_sdk_over_websocket_and_the_same_data_over_tcp(server):
    ws = await connect(ws_url(server))
    tcp = await tcp_root(server)
    await full_path(ws, tcp)
    await full_path(tcp, ws)
    # A client that logs in by hand works as well as the connection string's auto-login.
    manual = await connect(WebSocketConfig(server_address=f"127.0.0.1:{server.websocket_port}"))
    await manual.login_user(*ROOT)
    assert len(await manual.get_streams()) >= 2


async def test_personal_access_tokens_over_websocket(server):
    tcp = await tcp_root(server)
    token = await create_token(tcp, "ws-token")
    address = f"127.0.0.1:{server.websocket_port}"
    by_token = await connect(WebSocketConfig(server_address=address,
                                             auto_login=token_login(token)))
    await by_token.create_stream("made-by-ws-token")
    assert (await tcp.get_stream("made-by-ws-token")) is not None

    expiring = await create_token(tcp, "ws-expiring", 300_000)        # 0.3 s
    await asyncio.sleep(0.6)
    await delete_token(tcp, "ws-token")
    for refused in (expiring, token):
        link = WebSocketLink(address, timeout=10)
        await link.connect()
        with pytest.raises(IggyError) as e:
            await link.token_login(refused)
        assert e.value.code == 53
        await link.close()
        with pytest.raises(Exception):
            sdk = await connect(WebSocketConfig(server_address=address,
                                                auto_login=token_login(refused)))
            await asyncio.wait_for(sdk.get_streams(), 5)
    await tcp.ping()


@pytest.fixture
async def small_messages(tmp_path):
    srv = ServerProcess(tmp_path / "ws", env={"IGGY_WEBSOCKET_MAX_MESSAGE_SIZE": "64 KiB"})
    srv.start()
    yield srv
    assert srv.stop() == 0
    assert "Traceback" not in srv.log(), srv.log()


async def test_bad_messages_close_only_their_connection(small_messages):
    srv = small_messages
    bystander = await connect(ws_url(srv))
    url = f"http://127.0.0.1:{srv.websocket_port}/"
    cases = [
        ("text", lambda ws: ws.send_str("hello"), 1003, "a text message"),
        ("too large", lambda ws: ws.send_bytes(b"\0" * (65 * 1024)), 1009, "max_message_size"),
        ("not a frame", lambda ws: ws.send_bytes(b"\xff" * 300), 1000, "frame size"),
    ]
    async with aiohttp.ClientSession() as session:
        for what, send, code, logged in cases:
            before = srv.log().count("closing")
            async with session.ws_connect(url, max_msg_size=0) as ws:
                await send(ws)
                msg = await asyncio.wait_for(ws.receive(), 10)
                assert msg.type == aiohttp.WSMsgType.CLOSE, what
                assert ws.close_code == code, what
            assert wait_for(lambda: srv.log().count("closing") == before + 1, 5), srv.log()
            line = [ln for ln in srv.log().splitlines() if "closing" in ln][-1]
            assert logged in line.lower(), (what, line)
            await bystander.ping()
            assert (await bystander.get_streams()) is not None
        # A plain HTTP request on the WebSocket port is told to upgrade.
        async with session.get(url) as response:
            assert response.status == 426
    await bystander.ping()


async def test_fragmented_messages_pings_and_the_close_handshake(server):
    """A request split over continuation frames, with a ping between them (control frames may
    come inside a fragmented message), is served; the ping is answered with its payload; a
    request sent right behind the upgrade request, two requests in one message and a request
    split over two messages are served; a close is answered and the server hangs up."""
    core = ClientCore()
    _, pieces = core.login(*ROOT)
    login = b"".join(pieces)
    raw = await RawSocket.open(server.websocket_port, behind=frame(2, login))
    assert type(await raw.reply(core)) is Reply

    ping = b"".join(core.request(1)[1])                       # Ping, a 256-byte frame
    raw.send(2, ping[:10], fin=False)
    raw.send(9, b"are you there?")
    raw.send(0, ping[10:100], fin=False)
    raw.send(0, b"", fin=False)
    raw.send(0, ping[100:])
    got = dict([await raw.receive(), await raw.receive()])     # in either order
    assert got[10] == b"are you there?"
    assert [type(e) for e in core.receive_data(got[2])] == [Reply]

    raw.send(2, b"".join(core.request(1)[1]) + b"".join(core.request(1)[1]))
    assert type(await raw.reply(core)) is Reply
    assert type(await raw.reply(core)) is Reply
    split = b"".join(core.request(1)[1])
    raw.send(2, split[:200])
    raw.send(2, split[200:])
    assert type(await raw.reply(core)) is Reply

    raw.send(8, (1000).to_bytes(2, "big"))
    assert await raw.receive() == (8, (1000).to_bytes(2, "big"))
    assert await raw.receive() == (-1, b"")


async def test_broken_frames_close_only_their_connection(small_messages):
    """A message over the limit only once its fragments add up (1009), an unmasked frame and
    a continuation with no message begun (1002), a text message (1003): each closes its own
    connection with a close frame and one log line, while an SDK client is served on."""
    srv = small_messages
    bystander = await connect(ws_url(srv))
    # A request frame of 90 KiB in three parts of 30 KiB (refused before it is whole).
    big = b"".join(ClientCore().request(1, b"\0" * (90 * 1024 - 256))[1])
    part = 30 * 1024
    cases = [
        ("fragments", [(2, big[:part], False), (0, big[part:2 * part], False),
                       (0, big[2 * part:], True)], 1009,
         "max_message_size"),
        ("unmasked", [(2, b"\0" * 300, True, False)], 1002, "unmasked"),
        ("continuation", [(0, b"\0" * 10, True)], 1002, "continuation"),
        ("text", [(1, b"hello", True)], 1003, "text message"),
    ]
    for what, frames, code, logged in cases:
        before = srv.log().count("closing")
        core = ClientCore()
        raw = await RawSocket.open(srv.websocket_port, behind=frame(2, b"".join(
            core.login(*ROOT)[1])))
        assert type(await raw.reply(core)) is Reply
        for opcode, payload, fin, *mask in frames:
            raw.send(opcode, payload, fin, *mask)
        assert await raw.closed_with() == code, what
        assert wait_for(lambda: srv.log().count("closing") == before + 1, 5), srv.log()
        line = [ln for ln in srv.log().splitlines() if "closing" in ln][-1]
        assert logged in line, (what, line)
        assert (await bystander.get_streams()) is not None


async def test_refused_upgrades(server):
    """What is not a WebSocket upgrade for / gets an HTTP error and a hang-up."""
    key = base64.b64encode(os.urandom(16))
    for request, status in ((upgrade_request(key, path="/other"), b"404"),
                            (upgrade_request(key, method="POST"), b"405"),
                            (upgrade_request(key, version="8"), b"426"),
                            (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"426"),
                            (b"GET / HTTP/1.1\r\n" + b"X-Long: x\r\n" * 1000, b"431")):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.websocket_port)
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), 10)       # until the server hangs up
        assert answer.split(b" ")[1] == status, (request[:40], answer)
        writer.close()
    link = WebSocketLink(f"ws://127.0.0.1:{server.websocket_port}/other", timeout=10)
    with pytest.raises(ConnectionError, match="404"):
        await link.connect()


async def test_reading_is_held_back_while_replies_wait(tmp_path):
    """A client that sends 200 polls of ~1 MB without reading their replies, 100 in one
    message and 100 in a message each, costs the server a bounded amount of memory (the driver stops
    dispatching above the high-water mark, and reading stops while replies wait), and then
    gets every reply, in order, when it reads."""
    srv = ServerProcess(tmp_path / "held").start()
    try:
        tcp = await tcp_root(srv)
        await tcp.create_stream("big")
        await tcp.create_topic(stream="big", name="t", partitions_count=1)
        from apache_iggy import SendMessage
        for _ in range(2):
            await tcp.send_messages("big", "t", 0, [SendMessage(b"m" * 1000)
                                                    for _ in range(500)])
        core = ClientCore()
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{srv.websocket_port}",
                                          max_msg_size=0) as ws:
                _, pieces = core.login(*ROOT)
                await ws.send_bytes(b"".join(pieces))
                events = core.receive_data((await ws.receive()).data)
                assert type(events[0]) is Reply
                rss_before = srv.rss_kib()
                body = poll_body("big", "t", 0, 1, 0, 1000, False)
                polls = 200
                await ws.send_bytes(b"".join(b"".join(core.request(100, body)[1])
                                             for _ in range(polls // 2)))
                for _ in range(polls // 2):
                    await ws.send_bytes(b"".join(core.request(100, body)[1]))
                await asyncio.sleep(2)
                grown_mib = (srv.rss_kib() - rss_before) / 1024
                # Unheld, the replies would be 200 x 1.05 MB in the server.
                print(f"server grew by {grown_mib:.1f} MiB")
                assert grown_mib < 40, f"server grew by {grown_mib:.0f} MiB"
                await tcp.ping()                      # others are served meanwhile
                replies = []
                while len(replies) < polls:
                    msg = await asyncio.wait_for(ws.receive(), 20)
                    replies += core.receive_data(msg.data)
                assert all(type(r) is Reply and len(r.body) > 1_000_000 for r in replies)
    finally:
        assert srv.stop() == 0


async def test_websocket_link(server):
    link = WebSocketLink(f"127.0.0.1:{server.websocket_port}", timeout=10)
    await link.connect()
    await link.login(*ROOT)
    await link.request(202, Writer().name("by-link").getvalue())        # CreateStream
    with pytest.raises(IggyError) as e:
        await link.request(202, Writer().name("by-link").getvalue())
    assert e.value.code == 1012                                         # name taken
    # Pipelined requests are answered in order over the one connection.
    answers = await asyncio.gather(*(link.request(1) for _ in range(500)))
    assert len(answers) == 500
    tcp = await tcp_root(server)
    assert (await tcp.get_stream("by-link")).name == "by-link"
    await link.close()
    assert link.closed
    with pytest.raises(ConnectionError):
        await link.request(1)


async def test_connection_limits_and_the_login_deadline_apply(tmp_path):
    """[connections] holds for WebSocket as for TCP: a connection over max_total is closed at
    once (1013, try again later), and one that does not log in in time is dropped, as is one
    that does not finish its upgrade request in that time."""
    srv = ServerProcess(tmp_path / "limits", env={"IGGY_CONNECTIONS_MAX_TOTAL": "1",
                                                  "IGGY_CONNECTIONS_LOGIN_TIMEOUT": "1 s"})
    srv.start()
    try:
        url = f"ws://127.0.0.1:{srv.websocket_port}"
        # The harness's readiness probe (a TCP connection) may hold the one slot a moment
        # longer: until the first connection is admitted (then it is told nothing), retry.
        for _ in range(20):
            first = await RawSocket.open(srv.websocket_port)
            try:
                await asyncio.wait_for(first.reader.readexactly(2), 0.3)
            except asyncio.TimeoutError:
                break
            first.writer.close()
            await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url) as second:
                msg = await asyncio.wait_for(second.receive(), 10)
                assert msg.type == aiohttp.WSMsgType.CLOSE
                assert second.close_code == 1013
        # Our link is told so too, naming the close code.
        refused = WebSocketLink(url, timeout=10)
        with pytest.raises(ConnectionError, match="close code 1013"):
            await refused.connect()          # (or the login, had the close come later)
            await refused.login(*ROOT)
        await refused.close()
        # The first never logs in: it is dropped after the deadline.
        assert await hung_up(first.reader)
        # A connection that never even asks for the upgrade is dropped then too.
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.websocket_port)
        writer.write(b"GET / HTTP/1.1\r\n")
        assert await hung_up(reader)
        assert wait_for(lambda: "no WebSocket upgrade within 1.0 s" in srv.log(), 5)
        assert wait_for(lambda: "not logged in in time" in srv.log(), 5), srv.log()
        # The slot is free again: a client that logs in is served.
        link = WebSocketLink(url, timeout=10)
        await link.connect()
        await link.login(*ROOT)
        await link.request(1)
        await link.close()
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in srv.log(), srv.log()


def test_the_harness_chooses_a_taken_port_anew_on_first_start_only():
    """Another process may take a port between free_port() and the server's bind (test runs in
    parallel on one machine); ServerProcess then picks new ports, but never on a restart, which
    must come back where clients know it."""
    import socket

    srv = ServerProcess()
    try:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", srv.websocket_port))
            holder.listen()
            taken = srv.websocket_port
            srv.start()
            assert srv.websocket_port != taken
        assert srv.stop() == 0
        with socket.socket() as holder:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.bind(("127.0.0.1", srv.websocket_port))
            holder.listen()
            with pytest.raises(RuntimeError, match="address already in use"):
                srv.start()
    finally:
        srv.stop()
        srv.cleanup()
