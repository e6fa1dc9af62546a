"""Blocking clients: `SyncIggyClient` (every typed method of IggyClient) and `BlockingClient`
(a raw, lock-step socket driver over ClientCore for tools, tests and the benchmark's actors).

SyncIggyClient runs an IggyClient on an event loop in a background thread and waits for each
call's answer. That keeps one implementation of everything a real client needs (failover,
reconnect with backoff, heartbeats, every transport's Link) instead of a second, blocking
copy of it; the price is a thread hand-off per call (tens of µs), small next to a round trip,
and the poll answer is still the zero-copy view. All SyncIggyClients of a process share that
one loop thread: a hundred clients (locust users) cost one thread, not a hundred, and under
gevent (locust monkey-patches threads into greenlets of one OS thread, where only one asyncio
loop can run) the one loop runs as a greenlet whose select yields to the others. Every wait
is bounded: each call by the client's own timeouts, and the hand-off by `timeout` plus a
margin as a backstop.

BlockingClient:

Plain TCP or TCP over TLS (`tls=True`, as the server's `[tcp.tls]` listener expects). The
driver only moves bytes: each request goes out in one vectored write of the core's pieces,
and replies are read straight into the buffers the core hands out (a poll reply lands in its
own buffer, no copy). It is lock-step: `call()` sends one request and waits for its answer.
`send_request()` and `wait()` split that in two for callers that must do something while a
request is in flight.

Every wait has the connection's timeout (`timeout` seconds per send and per read) and fails
with a TimeoutError naming the request: a read's late answer, if any, is dropped when the next
request waits; a send that timed out closes the socket (part of a frame may be out). A
server that closes the connection mid-request raises ConnectionError naming the request; one
that sends bytes that cannot be framed raises ProtocolViolation and the socket is closed. It
counts the bytes it writes and reads (`bytes_sent`, `bytes_received`, frames included) so the
benchmark can report wire throughput next to payload throughput.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import socket
import ssl
import threading

from iggy_fast import _wire
from iggy_fast.client.core import (ClientCore, Failure, Pending, Reply, poll_body,
                                   send_messages_body)
from iggy_fast.client.aio import IggyClient
from iggy_fast.protocol.errors import IggyError, ProtocolViolation, RequestTimeout


def _nbytes(piece) -> int:
    return piece.nbytes if isinstance(piece, memoryview) else len(piece)


class BlockingClient:
    def __init__(self, address: str = "127.0.0.1:8090", timeout: float | None = 30.0,
                 tls: bool = False, tls_ca_file: str | None = None,
                 tls_domain: str = "localhost"):
        """`tls_ca_file` is the CA to validate the server's certificate against; without it
        the certificate is not checked (acceptable for a benchmark on loopback, not more).
        `timeout=None` waits forever."""
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = tls
        if tls:
            if tls_ca_file:
                context = ssl.create_default_context(cafile=tls_ca_file)
            else:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=tls_domain)
        self.sock = sock
        self.core = ClientCore()
        self.bytes_sent = 0
        self.bytes_received = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- moving bytes ------------------------------------------------------------------------

    def send_frame(self, pending: Pending, frame: list) -> Pending:
        """Write a frame the core built (tests may alter it first); returns `pending`."""
        total = sum(_nbytes(p) for p in frame)
        try:
            if self.tls:
                # SSLSocket has no sendmsg; one record per piece costs no copy of the batch.
                for piece in frame:
                    self.sock.sendall(piece)
            else:
                sent = self.sock.sendmsg(frame)
                # A socket with a timeout is non-blocking underneath: sendmsg may write part
                # of a large frame, and the rest must follow or the stream is corrupt.
                if sent < total:
                    for piece in frame:
                        size = _nbytes(piece)
                        if sent >= size:
                            sent -= size
                            continue
                        self.sock.sendall(memoryview(piece)[sent:])
                        sent = 0
        except TimeoutError:
            # Part of the frame may be on the wire: nothing after it could be framed.
            timeout = self.sock.gettimeout()
            self.sock.close()
            raise TimeoutError(f"could not send {pending} within {timeout} s; connection closed"
                               ) from None
        self.bytes_sent += total
        return pending

    def send_request(self, code: int, body=b"", extra=()) -> Pending:
        """Send one request without waiting for its answer (see `wait`)."""
        return self.send_frame(*self.core.request(code, body, extra))

    def wait(self, pending: Pending) -> Reply:
        """Read until `pending` is answered: its Reply, or the IggyError it failed with."""
        core = self.core
        while True:
            try:
                n = self.sock.recv_into(core.get_buffer())
            except TimeoutError:
                raise TimeoutError(f"no answer to {pending} within {self.sock.gettimeout()} s"
                                   ) from None
            if n == 0:
                raise ConnectionError(f"the server closed the connection before answering "
                                      f"{pending}")
            self.bytes_received += n
            try:
                events = core.buffer_updated(n)
            except ProtocolViolation:
                self.sock.close()
                raise
            for event in events:
                # Anything before our answer belongs to a request abandoned by a timeout.
                if event.pending is pending:
                    if type(event) is Failure:
                        raise event.error
                    return event

    # -- commands ----------------------------------------------------------------------------

    def call(self, code: int, body=b"", extra=()) -> Reply:
        return self.wait(self.send_request(code, body, extra))

    def login(self, username: str = "iggy", password: str = "iggy") -> int:
        """Log in; returns the user id."""
        reply = self.wait(self.send_frame(*self.core.login(username, password)))
        return int.from_bytes(reply.body[:4], "little")

    def login_with_token(self, token: str) -> int:
        """Log in with a personal access token; returns the user id."""
        reply = self.wait(self.send_frame(*self.core.token_login(token)))
        return int.from_bytes(reply.body[:4], "little")

    def ping(self) -> None:
        self.call(1)

    def send_batch(self, stream, topic, partition_id: int, batch, count: int) -> int:
        """Send one encoded batch; returns its base offset."""
        body = send_messages_body(stream, topic, partition_id, count)
        reply = self.call(101, body, (batch,))
        if len(reply.body) < 24:
            raise IggyError.from_code(4, "short send confirmation")
        return int.from_bytes(reply.body[16:24], "little")

    def poll(self, stream, topic, partition_id, strategy: int, value: int, count: int,
             auto_commit: bool = False, consumer_id=1, consumer_kind: int = 1) -> Reply:
        return self.call(100, poll_body(stream, topic, partition_id, strategy, value, count,
                                        auto_commit, consumer_id, consumer_kind))

    def poll_messages(self, *args, **kwargs) -> list:
        """Poll and decode: [(offset, timestamp, origin_timestamp, id, payload, headers, checksum)]."""
        reply = self.poll(*args, **kwargs)
        return _wire.iter_messages(reply.body[16:])


_shared_loop: asyncio.AbstractEventLoop | None = None
_shared_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    """The event loop every SyncIggyClient of this process runs on (started on first use)."""
    global _shared_loop
    with _shared_lock:
        if _shared_loop is None:
            _shared_loop = asyncio.new_event_loop()
            threading.Thread(target=_shared_loop.run_forever, daemon=True,
                             name="iggy-fast-client").start()
        return _shared_loop


class SyncIggyClient:
    """IggyClient's methods, blocking (see the module docstring); same arguments, same
    results, same exceptions. `with SyncIggyClient(url) as client:` connects and closes."""

    def __init__(self, conn=None, **options):
        self._client = IggyClient(conn, **options)
        self.config = self._client.config
        c = self.config
        # A backstop only: each call is bounded by the client's own timeouts well before it
        # (waiting for a reconnection, or for a partition's leader to be learnt, then the
        # request itself).
        self._bound = 3 * c.timeout + c.connect_timeout * len(c.addresses) + 5.0
        self._loop = _background_loop()

    def _run(self, coro):
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self._bound)
        except TimeoutError:
            future.cancel()
            raise RequestTimeout(f"no answer within {self._bound} s") from None

    @property
    def identity(self):
        return self._client.identity

    @property
    def address(self) -> str | None:
        return self._client.address

    @property
    def connected(self) -> bool:
        return self._client.connected

    @property
    def reconnects(self) -> int:
        return self._client.reconnects

    def close(self) -> None:
        """Close the connection (the shared loop thread stays for other clients)."""
        self._run(self._client.close())

    disconnect = close

    def __enter__(self) -> "SyncIggyClient":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _blocking(name: str):
    method = getattr(IggyClient, name)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return self._run(getattr(self._client, name)(*args, **kwargs))
    return call


for _name, _method in vars(IggyClient).items():
    if (not _name.startswith("_") and inspect.iscoroutinefunction(_method)
            and _name not in vars(SyncIggyClient)):
        setattr(SyncIggyClient, _name, _blocking(_name))
