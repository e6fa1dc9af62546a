"""The WebSocket transport: the official SDK over `iggy+ws://` end to end (and the same data
over TCP), personal access tokens over WebSocket, bad input that closes only its own
connection with one log line, reading held back while replies wait, and our WebSocketLink."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from apache_iggy import IggyClient, WebSocketConfig

from conftest import ROOT, ServerProcess, wait_for
from iggy_fast._wire import Writer
from iggy_fast.client.core import ClientCore, Reply, poll_body
from iggy_fast.client.transports.websocket import WebSocketLink
from iggy_fast.protocol.errors import IggyError
from transport_checks import connect, create_token, delete_token, full_path, token_login


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
    once (1013, try again later), and one that does not log in in time is dropped."""
    srv = ServerProcess(tmp_path / "limits", env={"IGGY_CONNECTIONS_MAX_TOTAL": "1",
                                                  "IGGY_CONNECTIONS_LOGIN_TIMEOUT": "1 s"})
    srv.start()
    try:
        url = f"ws://127.0.0.1:{srv.websocket_port}"
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url) as first:
                async with session.ws_connect(url) as second:
                    msg = await asyncio.wait_for(second.receive(), 10)
                    assert msg.type == aiohttp.WSMsgType.CLOSE
                    assert second.close_code == 1013
                # The first never logs in: it is dropped after the deadline.
                msg = await asyncio.wait_for(first.receive(), 10)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                    aiohttp.WSMsgType.ERROR)
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
