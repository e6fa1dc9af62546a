"""The client core against the server core in memory, and the client's receive state machine.

No sockets: a real `Server` runs in process on a temporary data dir; the bytes of the client
core's requests go through a server-side FrameReader into `server.dispatcher.handle()` (its
awaitable replies are awaited in order, as a connection does), and the reply bytes come back
to the client core cut into chunks of every size: one byte, odd sizes, several frames at once.
Property tests (hypothesis) check that any chunking of a stream of valid frames yields the same
events, and that a frame announcing an impossible size is a ProtocolViolation.
"""

from __future__ import annotations

import inspect
import itertools
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iggy_fast import _wire
from iggy_fast._log import FileRegion
from iggy_fast._wire import FrameReader, Writer
from iggy_fast.client.core import (ClientCore, Failure, Reply, origin_timestamps, poll_body,
                                   send_messages_body)
from iggy_fast.config import load_config
from iggy_fast.protocol.codes import COMMAND_OPERATIONS, MAX_FRAME_SIZE, RESULT_FRAMED
from iggy_fast.protocol.errors import (InvalidCredentials, LocalProtocolError, ProtocolViolation,
                                       StreamIdNotFound, StreamNameAlreadyExists,
                                       TopicIdNotFound, Unauthenticated)
from iggy_fast.server.core import Server

FIRST = 3          # PollingStrategy "first"
OFFSET = 1         # PollingStrategy "offset"


def chunked(data: bytes, size: int | None):
    """`data` cut into pieces of `size` bytes (None: in one piece)."""
    if size is None:
        return [data]
    return [data[i:i + size] for i in range(0, len(data), size)]


class Pipe:
    """One client core and one connection to the in-process server, joined by two byte queues."""

    def __init__(self, server: Server, chunk: int | None = None):
        self.server = server
        self.conn = server.connect("TCP", "127.0.0.1:1")
        self.core = ClientCore()
        self.frames = FrameReader()
        self.replies = bytearray()        # what the server has written, not yet delivered
        self.chunk = chunk

    def send(self, built) -> object:
        """Hand one request (pending, pieces) to the server side; returns its Pending."""
        pending, pieces = built
        self.frames.feed(b"".join(bytes(p) for p in pieces))
        return pending

    async def serve(self) -> None:
        """The server answers every complete request it has, in order."""
        while (frame := self.frames.next_frame()) is not None:
            out = self.server.dispatcher.handle(self.conn, frame[0], frame[1], 1_000_000)
            if inspect.isawaitable(out):
                out = await out
            for piece in out:
                self.replies += piece.read() if type(piece) is FileRegion else bytes(piece)

    def deliver(self) -> list:
        """Give the client everything the server wrote, in chunks; returns the events."""
        data, self.replies = bytes(self.replies), bytearray()
        events = []
        for piece in chunked(data, self.chunk):
            events += self.core.receive_data(piece)
        return events

    async def call(self, built):
        """One request, lock-step: its Reply, or raise the error of its Failure."""
        pending = self.send(built)
        await self.serve()
        events = self.deliver()
        assert len(events) == 1 and events[0].pending is pending, events
        if isinstance(events[0], Failure):
            raise events[0].error
        return events[0]


@pytest.fixture
def server(tmp_path):
    cfg = load_config(environ={}, overrides={
        "system": {"path": str(tmp_path / "data")},
        "root": {"username": "iggy", "password": "iggy"}})
    srv = Server(cfg)
    yield srv
    srv.close()


def batch(payloads, origin: int = 7_000_000):
    return _wire.build_batch([(i + 1, p, b"", i) for i, p in enumerate(payloads)], origin)


# -- the client core and the server core, in memory ----------------------------------------

@pytest.mark.parametrize("chunk", [None, 1, 7, 255, 256, 257, 1000])
async def test_login_create_send_poll_roundtrip(server, chunk):
    pipe = Pipe(server, chunk)
    core = pipe.core
    reply = await pipe.call(core.login("iggy", "iggy"))
    assert int.from_bytes(reply.body[:4], "little") == 0              # root's user id
    assert core.session == pipe.conn.session > 0
    await pipe.call(core.request(202, Writer().name("s").getvalue()))
    await pipe.call(core.request(302, Writer().identifier("s").u32(1).name("t").getvalue()))
    # Payloads of every awkward size, and a batch handed over as a memoryview (never copied).
    payloads = [b"\x00", b"x", bytes(range(256)) * 3, b"\xff" * 4097, b"last"]
    sent = memoryview(batch(payloads))
    reply = await pipe.call(core.request(101, send_messages_body("s", "t", 0, len(payloads)),
                                         (sent,)))
    assert int.from_bytes(reply.body[16:24], "little") == 0           # base offset
    reply = await pipe.call(core.request(100, poll_body("s", "t", 0, FIRST, 0, 100, False)))
    got = _wire.iter_messages(reply.body[16:])
    assert [m[4] for m in got] == payloads                            # byte-identical
    assert [m[0] for m in got] == list(range(len(payloads)))
    deltas = array("I")
    assert origin_timestamps(reply.body, deltas) == [(7_000_000, len(payloads))]
    assert list(deltas) == list(range(len(payloads)))


@pytest.mark.parametrize("chunk", [None, 1, 13])
async def test_status_codes_become_their_error_classes(server, chunk):
    pipe = Pipe(server, chunk)
    core = pipe.core
    with pytest.raises(Unauthenticated):                               # a read before login
        await pipe.call(core.request(201))
    await pipe.call(core.login("iggy", "iggy"))
    await pipe.call(core.request(202, Writer().name("dup").getvalue()))
    with pytest.raises(StreamNameAlreadyExists) as e:
        await pipe.call(core.request(202, Writer().name("dup").getvalue()))
    assert e.value.code == 1012
    with pytest.raises(StreamIdNotFound):
        await pipe.call(core.request(302, Writer().identifier("nope").u32(1).name("t")
                                     .getvalue()))
    with pytest.raises(TopicIdNotFound):
        await pipe.call(core.request(100, poll_body("dup", "none", 0, FIRST, 0, 1, False)))
    # A status leaves the session alone: the connection goes on serving.
    assert (await pipe.call(core.request(201))).body.nbytes > 0
    assert (await pipe.call(core.request(200, Writer().identifier("nope").getvalue())
                            )).body == b""                            # not found: empty


async def test_bad_login_is_an_eviction_and_the_connection_logs_in_again(server):
    pipe = Pipe(server, 5)
    core = pipe.core
    with pytest.raises(InvalidCredentials) as e:
        await pipe.call(core.login("iggy", "wrong"))
    assert e.value.code == 42 and core.session == 0 and not core.pending
    with pytest.raises(Unauthenticated):                # a write without a session: eviction 1
        await pipe.call(core.request(202, Writer().name("s").getvalue()))
    await pipe.call(core.login("iggy", "iggy"))
    assert core.session > 0
    await pipe.call(core.request(202, Writer().name("s").getvalue()))


@pytest.mark.parametrize("chunk", [None, 1, 3, 300, 4096])
async def test_pipelined_requests_are_matched_in_order(server, chunk):
    pipe = Pipe(server, chunk)
    core = pipe.core
    login = pipe.send(core.login("iggy", "iggy"))
    ping = pipe.send(core.request(1))                 # a read may follow a pending login
    with pytest.raises(LocalProtocolError):           # a write needs the session it brings
        core.request(202, Writer().name("p").getvalue())
    assert list(core.pending) == [login, ping]
    await pipe.serve()
    events = pipe.deliver()
    assert [e.pending for e in events] == [login, ping]
    assert all(type(e) is Reply for e in events) and core.session > 0
    # Everything sent before anything is read: writes take a number each, reads share one.
    asked = [pipe.send(core.request(202, Writer().name("p").getvalue())),
             pipe.send(core.request(302, Writer().identifier("p").u32(1).name("t").getvalue())),
             pipe.send(core.request(1)),
             pipe.send(core.request(202, Writer().name("p").getvalue()))]   # a duplicate
    for k in range(3):
        asked.append(pipe.send(core.request(101, send_messages_body("p", "t", 0, 2),
                                            (batch([b"a%d" % k, b"b%d" % k]),))))
    asked.append(pipe.send(core.request(100, poll_body("p", "t", 0, FIRST, 0, 10, False))))
    assert [p.request for p in asked] == [1, 2, 3, 3, 4, 5, 6, 7]
    assert list(core.pending) == asked
    await pipe.serve()
    events = pipe.deliver()
    assert [e.pending for e in events] == asked and not core.pending
    assert [type(e).__name__ for e in events] == ["Reply"] * 3 + ["Failure"] + ["Reply"] * 4
    assert isinstance(events[3].error, StreamNameAlreadyExists)
    assert [int.from_bytes(e.body[16:24], "little") for e in events[4:7]] == [0, 2, 4]
    assert [m[4] for m in _wire.iter_messages(events[7].body[16:])] == [
        b"a0", b"b0", b"a1", b"b1", b"a2", b"b2"]


async def test_a_reply_nobody_asked_for_breaks_the_connection(server):
    pipe = Pipe(server)
    await pipe.call(pipe.core.login("iggy", "iggy"))
    other = Pipe(server)
    other.send(other.core.request(1))
    await other.serve()
    stray = bytes(other.replies)
    with pytest.raises(ProtocolViolation):
        pipe.core.receive_data(stray)                      # nothing is pending
    with pytest.raises(ProtocolViolation):
        pipe.core.receive_data(b"\x00")                    # and it stays broken


async def test_a_reply_echoing_another_request_number_is_a_violation(server):
    pipe = Pipe(server)
    core = pipe.core
    await pipe.call(core.login("iggy", "iggy"))
    pipe.send(core.request(202, Writer().name("n").getvalue()))          # request 1
    await pipe.serve()
    core.pending[0].request = 9                       # as if we had asked something else
    with pytest.raises(ProtocolViolation):
        pipe.deliver()


# -- the receive state machine ---------------------------------------------------------------

# How the scripted server answers a request: a reply, a status, a committed rejection (result
# section) or an eviction.
ANSWERS = ["ok", "status", "rejected", "evicted"]


def scripted(script, seed: int):
    """A client core with `script`'s requests pending, and the byte stream answering them."""
    core = ClientCore()
    stream = bytearray()
    for n, (code, answer, size) in enumerate(script):
        pending, pieces = core.request(code, bytes([n % 251]) * 3)
        h = _wire.parse_request_header(pieces[0])
        op = COMMAND_OPERATIONS[code]
        if answer == "evicted":
            stream += _wire.eviction_frame(h, 9)
            continue
        if answer == "status":
            stream += _wire.reply_header(h, op, 0, 1009)
            continue
        framed = op in RESULT_FRAMED
        if answer == "rejected" and framed:
            body = (1).to_bytes(4, "little") + bytes(4) + (2010).to_bytes(4, "little")
        else:
            payload = bytes((seed + n + i) % 256 for i in range(size))
            body = (bytes(4) if framed else b"") + payload
        stream += _wire.reply_header(h, op, len(body)) + body
    return core, bytes(stream)


def summary(events) -> list:
    out = []
    for e in events:
        if isinstance(e, Reply):
            out.append(("reply", e.pending.request, e.pending.code, bytes(e.body)))
        else:
            out.append(("failure", e.pending.request, e.pending.code, type(e.error),
                        e.error.code))
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


SCRIPTS = st.lists(st.tuples(st.sampled_from([1, 100, 202, 302, 121, 101]),
                             st.sampled_from(ANSWERS), st.integers(0, 3000)),
                   min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(script=SCRIPTS, cuts=st.lists(st.integers(0, 10**6), max_size=40),
       seed=st.integers(0, 255))
def test_any_chunking_of_valid_frames_yields_the_same_events(script, cuts, seed):
    whole_core, stream = scripted(script, seed)
    expected = summary(whole_core.receive_data(stream))
    assert len(expected) == len(script) and not whole_core.pending
    core, _ = scripted(script, seed)
    got = []
    for piece in split(stream, cuts):
        got += core.receive_data(piece)
    assert summary(got) == expected and not core.pending
    # Reading into the core's own buffers, in reads of any size, gives the same events too.
    core, _ = scripted(script, seed)
    got, pos = [], 0
    for size in itertools.cycle([c % 700 + 1 for c in cuts] or [4096]):
        if pos == len(stream):
            break
        room = core.get_buffer()
        n = min(size, room.nbytes, len(stream) - pos)
        room[:n] = stream[pos:pos + n]
        pos += n
        got += core.buffer_updated(n)
    assert summary(got) == expected and not core.pending


BAD_SIZES = st.one_of(st.integers(0, 255), st.integers(MAX_FRAME_SIZE + 1, 2**32 - 1))


@settings(max_examples=150, deadline=None)
@given(size=BAD_SIZES, before=st.integers(0, 3), cuts=st.lists(st.integers(0, 10**4),
                                                                max_size=8))
def test_a_frame_of_impossible_size_is_a_protocol_violation(size, before, cuts):
    core, stream = scripted([(1, "ok", 10)] * before, 0)
    core.request(1)                                         # the request the garbage answers
    bad = bytearray(256)
    bad[48:52] = size.to_bytes(4, "little")
    bad[60] = _wire.COMMAND_REPLY
    with pytest.raises(ProtocolViolation):
        for piece in split(stream + bytes(bad), cuts):
            core.receive_data(piece)
    with pytest.raises(ProtocolViolation):
        core.receive_data(bytes(256))                       # the connection stays broken
    with pytest.raises(ProtocolViolation):
        core.get_buffer()
