"""From a request frame to reply buffers: the command table, the login gate, reply framing.

`Dispatcher.handle()` takes one frame (header and body as memoryviews into the receive
buffer) and returns the list of buffers to write: the 256-byte reply header followed by the
payload pieces (for a poll, the stored batches themselves). It never blocks on the network
and never reads the clock (the transport passes `now` in µs). A command whose answer must wait
(an fsync'd send, a login checking a password on a thread) returns an awaitable; the
transport waits for it, in order.

Each command is three steps, listed in `COMMANDS`: the binary decoder (body -> typed request;
a body that is not exactly the layout is InvalidCommand), the service function (permission
check and state change) and the encoder of its result (None is an empty body).

Every request gets exactly one reply frame (PROTOCOL.md §1.1): failures are a status code with
an empty body, or an Eviction frame for login failures and replicated requests sent before
login (§1.7, §8.2).
"""

from __future__ import annotations

import inspect
import logging
from typing import Callable, NamedTuple

from iggy_fast import _wire
from iggy_fast.protocol import binary
from iggy_fast.protocol.codes import COMMANDS as PROTOCOL_COMMANDS
from iggy_fast.protocol.codes import (LEGACY_LOGIN_CODES, OPERATION_COMMANDS, RESULT_FRAMED,
                                      EvictionReason, Operation)
from iggy_fast.protocol.errors import (Eviction, IggyError, PartitionNotFound,
                                       StreamIdNotFound, TopicIdNotFound, Unauthenticated)
from iggy_fast.server.metadata import Conflict
from iggy_fast.server.service import (Context, groups, leaders, messages, routing, session,
                                     streams, system, users)

log = logging.getLogger("iggy_fast.dispatch")

OP_REGISTER, OP_NON_REPLICATED = Operation.REGISTER, Operation.NON_REPLICATED
# Codes an Iggy server knows: one without a handler here answers FeatureUnavailable (5), an
# unknown one InvalidCommand (3).
KNOWN_CODES = frozenset(PROTOCOL_COMMANDS)
MAX_CONFLICT_RETRIES = 8
# Partition requests a cluster node that does not lead the partition forwards to its leader
# (server/cluster/replication.py): sends, polls and offsets, flushes, from any transport
# (HTTP's typed requests are encoded to binary bodies to travel). A consumer group's too: the
# leader checks the member owns the partition (the member is known cluster-wide:
# server/cluster/groups.py).
FORWARDED = frozenset({100, 101, 102, 104, 120, 121, 122})
# In a cluster, a request naming a stream, topic or partition this node does not know (yet)
# is served again once the node has caught up with etcd.
CATCH_UP_CODES = frozenset({StreamIdNotFound.code, TopicIdNotFound.code,
                            PartitionNotFound.code})


class Command(NamedTuple):
    decode: Callable        # body -> request
    serve: Callable         # (Context, request) -> result | awaitable of it
    encode: Callable | None  # result (not None) -> payload; None: the result is always None


# code -> (decoder, service function, encoder). Whether a code needs a login is the protocol
# table's `auth` (codes.COMMANDS); a code the protocol knows but this table lacks answers
# FeatureUnavailable.
COMMANDS: dict[int, Command] = {
    1: Command(binary.decode_ping, system.ping, None),
    10: Command(binary.decode_get_stats, system.get_stats, binary.encode_stats),
    12: Command(binary.decode_get_cluster_metadata, system.get_cluster_metadata,
                binary.encode_cluster_metadata),
    13: Command(binary.decode_describe_options, system.describe_options, binary.encode_options),
    14: Command(binary.decode_bind_poll_route, routing.bind_poll_route, None),
    20: Command(binary.decode_get_me, system.get_me, binary.encode_client_details),
    21: Command(binary.decode_get_client, system.get_client, binary.encode_client_details),
    22: Command(binary.decode_get_clients, system.get_clients, binary.encode_clients),
    31: Command(binary.decode_get_user, users.get_user, binary.encode_user_details),
    32: Command(binary.decode_get_users, users.get_users, binary.encode_users),
    33: Command(binary.decode_create_user, users.create_user, binary.encode_user_details),
    34: Command(binary.decode_delete_user, users.delete_user, None),
    35: Command(binary.decode_update_user, users.update_user, None),
    36: Command(binary.decode_update_permissions, users.update_permissions, None),
    37: Command(binary.decode_change_password, users.change_password, None),
    39: Command(binary.decode_logout, session.logout, None),
    40: Command(binary.decode_login, session.login, binary.encode_session),
    41: Command(binary.decode_get_personal_access_tokens, users.get_personal_access_tokens,
                binary.encode_tokens),
    42: Command(binary.decode_create_personal_access_token, users.create_personal_access_token,
                binary.encode_token),
    43: Command(binary.decode_delete_personal_access_token, users.delete_personal_access_token,
                None),
    100: Command(binary.decode_poll_messages, messages.poll_messages, binary.encode_polled),
    103: Command(binary.decode_poll_messages, routing.route_poll, binary.encode_poll_route),
    104: Command(binary.decode_poll_messages, messages.poll_messages, binary.encode_polled),
    101: Command(binary.decode_send_messages, messages.send_messages, binary.encode_sent),
    102: Command(binary.decode_flush_unsaved_buffer, messages.flush_unsaved_buffer, None),
    120: Command(binary.decode_get_consumer_offset, messages.get_consumer_offset,
                 binary.encode_stored_offset),
    121: Command(binary.decode_store_consumer_offset, messages.store_consumer_offset, None),
    122: Command(binary.decode_delete_consumer_offset, messages.delete_consumer_offset, None),
    200: Command(binary.decode_get_stream, streams.get_stream, binary.encode_stream_details),
    201: Command(binary.decode_get_streams, streams.get_streams, binary.encode_streams),
    202: Command(binary.decode_create_stream, streams.create_stream, binary.encode_stream_details),
    203: Command(binary.decode_delete_stream, streams.delete_stream, None),
    204: Command(binary.decode_update_stream, streams.update_stream, None),
    205: Command(binary.decode_purge_stream, streams.purge_stream, None),
    300: Command(binary.decode_get_topic, streams.get_topic, binary.encode_topic_details),
    301: Command(binary.decode_get_topics, streams.get_topics, binary.encode_topics),
    302: Command(binary.decode_create_topic, streams.create_topic, binary.encode_topic_details),
    303: Command(binary.decode_delete_topic, streams.delete_topic, None),
    304: Command(binary.decode_update_topic, streams.update_topic, None),
    305: Command(binary.decode_purge_topic, streams.purge_topic, None),
    402: Command(binary.decode_create_partitions, streams.create_partitions, None),
    403: Command(binary.decode_delete_partitions, streams.delete_partitions, None),
    503: Command(binary.decode_delete_segments, streams.delete_segments, None),
    600: Command(binary.decode_get_consumer_group, groups.get_consumer_group,
                 binary.encode_group_details),
    601: Command(binary.decode_get_consumer_groups, groups.get_consumer_groups,
                 binary.encode_groups),
    602: Command(binary.decode_create_consumer_group, groups.create_consumer_group,
                 binary.encode_group_details),
    603: Command(binary.decode_delete_consumer_group, groups.delete_consumer_group, None),
    604: Command(binary.decode_join_consumer_group, groups.join_consumer_group, None),
    605: Command(binary.decode_leave_consumer_group, groups.leave_consumer_group, None),
    606: Command(binary.decode_sync_consumer_group, groups.sync_consumer_group,
                 binary.encode_group_assignment),
    # iggy-fast's own (codes.py): a partition's leader, for our client to go straight there.
    9000: Command(binary.decode_get_partition_leaders, leaders.get_partition_leaders,
                  binary.encode_partition_leaders),
}
NEEDS_LOGIN = frozenset(code for code, c in PROTOCOL_COMMANDS.items() if c.auth)


def _as_is(pieces: list) -> list:
    """The encoder of a forwarded request's answer: the leader encoded it."""
    return pieces


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
        # Requests are counted and timed per transport and command (server/metrics.py).
        self.metrics = server.metrics if server.metrics.enabled else None
        self.code = 0          # the command of the frame being handled, once known

    def handle(self, client, header, body, now: int):
        self.code = 0
        try:
            out = self._handle(client, header, body, now)
        except Exception:
            # A bug or an I/O failure must still answer this request, and only this one.
            log.exception("internal error handling a request from client %s", client.id)
            h = _wire.parse_request_header(header)
            op = h.operation if h.operation in OPERATION_COMMANDS or h.operation in (1, 2) else 2
            out = self._status(h, op, 1)
        if self.metrics is None:
            return out
        return self.metrics.replied(client.transport, self.code, out, now)

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
        self.code = code if code in KNOWN_CODES else 0     # a bounded set of labels
        if not _wire.body_checksum_ok(h, body):
            return self._status(h, reply_op, 4)
        if code in LEGACY_LOGIN_CODES:
            return [_wire.eviction_frame(h, EvictionReason.MALFORMED_LOGIN)]
        cmd = COMMANDS.get(code)
        if cmd is None:
            return self._status(h, reply_op, 5 if code in KNOWN_CODES else 3)
        if code in NEEDS_LOGIN:
            if client.user_id is None:
                if op == OP_NON_REPLICATED:
                    return self._status(h, reply_op, 40)
                return [_wire.eviction_frame(h, EvictionReason.NO_SESSION)]
            if h.session != client.session:
                # A session number this connection was not given (forged or stale).
                if op == OP_NON_REPLICATED:
                    return self._status(h, reply_op, 40)
                return [_wire.eviction_frame(h, EvictionReason.SESSION_ERROR)]
        def serve():        # again after a Conflict, or after catching up (a cluster)
            return cmd.serve(Context(self.server, client, now), request)

        try:
            request = cmd.decode(body)
            if self.server.cluster is not None:     # a partition another node leads
                forwarded = self.server.cluster.route(client, code, request, body)
                if forwarded is not None:
                    return self._finish_later(h, reply_op, _as_is, forwarded)
            result = serve()
        except IggyError as e:
            if self.server.cluster is not None and e.code in CATCH_UP_CODES \
                    and code not in FORWARDED:      # (route catches up for those itself)
                # Made on another node a moment ago? Answer once this node has seen all
                # that etcd holds now.
                return self._finish_later(h, reply_op, cmd.encode, self._caught_up(serve),
                                          serve)
            return self._status(h, reply_op, e.code)
        except Eviction as e:
            return [_wire.eviction_frame(h, e.reason, e.version, e.version_min)]
        if inspect.isawaitable(result):
            return self._finish_later(h, reply_op, cmd.encode, result, serve)
        return self._reply(h, reply_op, cmd.encode, result)

    def call(self, client, code: int, request, now: int):
        """Serve one typed request from a transport that decoded it itself (HTTP's JSON):
        the login gate and the service function, as for a binary frame. Returns the result
        or an awaitable of it; raises IggyError (Unauthenticated, 40, without a login)."""
        metrics = self.metrics
        try:
            if code in NEEDS_LOGIN and client.user_id is None:
                raise Unauthenticated()
            forwarded = None
            if self.server.cluster is not None:     # a partition another node leads
                forwarded = self.server.cluster.route(client, code, request, None)
            if forwarded is not None:
                result = forwarded
            else:
                result = COMMANDS[code].serve(Context(self.server, client, now), request)
        except IggyError:
            if metrics is not None:
                metrics.count(client.transport, code, True, now)
            raise
        return result if metrics is None else metrics.called(client.transport, code, result,
                                                             now)

    async def _caught_up(self, serve):
        await self.server.store.catch_up()
        result = serve()
        return await result if inspect.isawaitable(result) else result

    def _reply(self, h, op: int, encode, result) -> list:
        pieces = _pieces(encode(result)) if result is not None else []
        if op in RESULT_FRAMED or (op == OP_REGISTER and pieces):
            pieces.insert(0, b"\x00\x00\x00\x00")
        pieces.insert(0, _wire.reply_header(h, op, _size(pieces)))
        return pieces

    @staticmethod
    def _status(h, op: int, code: int) -> list:
        return [_wire.reply_header(h, op, 0, code)]

    async def _finish_later(self, h, op: int, encode, awaitable, retry=None) -> list:
        try:
            for _ in range(MAX_CONFLICT_RETRIES):
                try:
                    result = await awaitable
                    break
                except Conflict:
                    # Another node of the cluster committed first what this mutation decided
                    # on; the store has shown us its change: decide again.
                    awaitable = retry()
            else:
                result = await awaitable
        except IggyError as e:
            return self._status(h, op, e.code)
        except Eviction as e:
            return [_wire.eviction_frame(h, e.reason, e.version, e.version_min)]
        except Exception:
            log.exception("internal error finishing a request")
            return self._status(h, op, 1)
        return self._reply(h, op, encode, result)
