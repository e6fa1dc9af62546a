"""From a request frame to reply buffers: the command table, the login gate, reply framing.

`Dispatcher.handle()` takes one frame (header and body as memoryviews into the receive
buffer) and returns the list of buffers to write: the 256-byte reply header followed by the
payload pieces (for a poll, the stored batches themselves). It never blocks on the network
and never reads the clock (the transport passes `now` in µs). A handler whose answer must wait
for the disk (an fsync'd send) returns an awaitable; the transport waits for it, in order.

Every request gets exactly one reply frame (PROTOCOL.md §1.1): failures are a status code with
an empty body, or an Eviction frame for login failures and replicated requests sent before
login (§1.7, §8.2).
"""

from __future__ import annotations

import inspect
import logging
from typing import Callable, NamedTuple

from iggy_fast import _wire
from iggy_fast._wire import Reader
from iggy_fast.protocol.codes import COMMANDS as PROTOCOL_COMMANDS
from iggy_fast.protocol.codes import (EMPTY_BODY, LEGACY_LOGIN_CODES, OPERATION_COMMANDS,
                                      RESULT_FRAMED, EvictionReason, Operation)
from iggy_fast.protocol.errors import IggyError

log = logging.getLogger("iggy_fast.dispatch")

OP_REGISTER, OP_NON_REPLICATED = Operation.REGISTER, Operation.NON_REPLICATED
# Codes an Iggy server knows: one without a handler here answers FeatureUnavailable (5), an
# unknown one InvalidCommand (3).
KNOWN_CODES = frozenset(PROTOCOL_COMMANDS)


class Command(NamedTuple):
    code: int
    name: str
    handler: Callable
    auth: bool


COMMANDS: dict[int, Command] = {}


def command(code: int, name: str, auth: bool = True):
    """Register a handler `fn(server, client, reader, now) -> payload | awaitable`.

    A payload is None (empty), a bytes-like object, or a list of bytes-like pieces.
    """
    def register(fn):
        if code in COMMANDS:
            raise RuntimeError(f"command {code} registered twice")
        COMMANDS[code] = Command(code, name, fn, auth)
        return fn
    return register


class Eviction(Exception):
    """Raised by a handler to answer with an Eviction frame instead of a reply."""

    def __init__(self, reason: int, version: int = 0, version_min: int = 0):
        super().__init__(reason)
        self.reason = reason
        self.version = version
        self.version_min = version_min


def _pieces(payload) -> list:
    if payload is None:
        return []
    if isinstance(payload, list):
        return payload
    return [payload]


def _size(pieces) -> int:
    return sum(len(p) if not isinstance(p, memoryview) else p.nbytes for p in pieces)


class Dispatcher:
    def __init__(self, server):
        self.server = server
        from iggy_fast.server import commands  # noqa: F401  (registers every handler)

    def handle(self, client, header, body, now: int):
        try:
            return self._handle(client, header, body, now)
        except Exception:
            # A bug or an I/O failure must still answer this request, and only this one.
            log.exception("internal error handling a request from client %s", client.id)
            h = _wire.parse_request_header(header)
            op = h.operation if h.operation in OPERATION_COMMANDS or h.operation in (1, 2) else 2
            return self._status(h, op, 1)

    def _handle(self, client, header, body, now: int):
        h = _wire.parse_request_header(header)
        op = h.operation
        reply_op = op if op in OPERATION_COMMANDS or op in (1, 2) else OP_NON_REPLICATED
        if h.command != _wire.COMMAND_REQUEST or not h.has_client:
            return self._status(h, reply_op, 3)
        if op == OP_NON_REPLICATED:
            code = h.code
        elif op == OP_REGISTER:
            code = 40
        elif op in OPERATION_COMMANDS:
            code = OPERATION_COMMANDS[op]
        else:
            return self._status(h, reply_op, 3)
        if not _wire.body_checksum_ok(h, body):
            return self._status(h, reply_op, 4)
        if code in LEGACY_LOGIN_CODES:
            return [_wire.eviction_frame(h, EvictionReason.MALFORMED_LOGIN)]
        cmd = COMMANDS.get(code)
        if cmd is None:
            return self._status(h, reply_op, 5 if code in KNOWN_CODES else 3)
        if cmd.auth:
            if client.user_id is None:
                if op == OP_NON_REPLICATED:
                    return self._status(h, reply_op, 40)
                return [_wire.eviction_frame(h, EvictionReason.NO_SESSION)]
            if h.session != client.session:
                # A session number this connection was not given (forged or stale).
                if op == OP_NON_REPLICATED:
                    return self._status(h, reply_op, 40)
                return [_wire.eviction_frame(h, EvictionReason.SESSION_ERROR)]
        if code in EMPTY_BODY and len(body):
            return self._status(h, reply_op, 3)
        r = Reader(body)
        try:
            payload = cmd.handler(self.server, client, r, now)
        except IggyError as e:
            return self._status(h, reply_op, e.code)
        except Eviction as e:
            return [_wire.eviction_frame(h, e.reason, e.version, e.version_min)]
        if inspect.isawaitable(payload):
            return self._finish_later(h, reply_op, payload)
        if r.remaining:
            # Bytes after the layout: InvalidCommand. Handlers that change state read their
            # whole body before acting, so only a read (which changed nothing) gets here.
            return self._status(h, reply_op, 3)
        return self._reply(h, reply_op, payload)

    def _reply(self, h, op: int, payload) -> list:
        pieces = _pieces(payload)
        if op in RESULT_FRAMED or (op == OP_REGISTER and pieces):
            pieces.insert(0, b"\x00\x00\x00\x00")
        pieces.insert(0, _wire.reply_header(h, op, _size(pieces)))
        return pieces

    @staticmethod
    def _status(h, op: int, code: int) -> list:
        return [_wire.reply_header(h, op, 0, code)]

    async def _finish_later(self, h, op: int, awaitable) -> list:
        try:
            payload = await awaitable
        except IggyError as e:
            return self._status(h, op, e.code)
        except Eviction as e:
            return [_wire.eviction_frame(h, e.reason, e.version, e.version_min)]
        except Exception:
            log.exception("internal error finishing a request")
            return self._status(h, op, 1)
        return self._reply(h, op, payload)
