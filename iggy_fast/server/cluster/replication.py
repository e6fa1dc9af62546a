"""The data path between nodes: followers copying partition logs, acknowledgements after the
in-sync replicas, and partition requests forwarded to the partition's leader.

Peers speak over the replication address (`cluster.replication_address`), one persistent TCP
connection per (follower task or forwarding node, leader), request and reply in lock-step.
A frame is `[u32 length][u32 header length][JSON header][payload]`, little-endian. A peer
that sends anything else (a bad length, a header that is not JSON) is named in one log line
and its connection closed.

    fetch    {"op", "p": partition identity, "offset", "durable", "epoch", "node"} -> the
             stored batches from `offset` (whole batches, at most FETCH_BYTES) and {"end",
             "hw"}; when the follower is caught up the leader holds the request up to
             LONG_POLL seconds for a new append; or {"truncate"} / {"start", "epoch"} when
             the follower's log must first be cut or begin anew (below). `offset` is the
             follower's log end, `durable` the part of it on the follower's disk.
    forward  {"op", "code", "user", "pid", "p", "node", "client", "retry"?} + the request
             body -> {"status", "moved"?} + the encoded result, exactly as this node would
             have answered it (a consumer group member is known by its node and client id:
             cluster/groups.py).

Forwarding. A node forwards a partition request it does not lead (from any transport: HTTP's
typed requests are encoded to binary bodies first) to the leader the placement names, and
again to the next leader whenever the leader is unreachable, answers "moved" (it does not
lead the partition, or lost it while serving) or the placement names another leader while
the answer is awaited; it gives up after `forward_for` (about the longest a failover takes)
with transient_not_accepted. Polls, flushes and offsets may simply go again. A send may not:
its first attempt may have been appended, and even replicated to the next leader, with the
answer lost. So a retried send carries "retry", the wall-clock time (µs) its first attempt
went out, and the leader appends it only if its log lacks it (`stored_at`): it compares the
batch with each batch it stamped since then (less CLOCK_SKEW_US) on everything but the fields
a leader stamps (partition id, base offset, base timestamp, checksum): length and origin
timestamp as they are, the frames by a 64-bit XXH3. A batch found is answered with its
offsets, once the in-sync replicas have it, and not appended again.
Why the log itself and no window of batch identities: every replica already holds the same
batches (a follower that becomes leader can answer a retry of a batch it only copied), so
nothing is kept in memory, rebuilt at start or lost when a busy window overflows before the
retry comes; the cost, a read of the log tail since the first attempt, is paid only by a
retry, never by the send path. Why the batch as sent for its identity rather than stamped
ids: the frames already carry the producer's message ids (the official SDK and our producer
give random ones), timestamps and payloads, and a stored batch must stay as the client sent
it. What this cannot tell apart: a retried send and another batch byte-identical to it (same
ids, same origin timestamps, same payloads) stamped since its first attempt: the retry is
then answered with that batch's offsets. A batch the dead leader appended but no in-sync
replica copied is appended again by the next leader, once, and cut from the old leader's log
by the epoch truncation below.

Followers. For every partition whose record names this node a replica and another node the
leader, a task fetches from the leader at the follower's log end and appends each batch with
the storage's replicated append, at the leader's offsets, so replicas are byte-identical. A
node whose record no longer names it (a move, controller.py) stops fetching and deletes its
copy. A fetch carries the follower's leader epoch: a leader whose record has another epoch
(or which is no longer leader) refuses it, and the follower waits for its record to change.

Epochs and truncation (as Kafka's leader epochs). Each partition's record keeps `starts`:
for every leader epoch, the leader's log end when it began (epoch 0: 0, by the controller; a
later one written by the new leader, with a compare-and-swap, before it accepts a send or
serves a fetch). Each replica keeps in `<partition dir>/leader.epoch` the epoch it last
agreed with. A fetch carries it; when it is older than the leader's, the replica's log may
hold batches no later leader has (appended by a leader that died before replicating them),
so the leader answers "truncate to the start of the first epoch after yours" when the
replica's log goes past it. The replica cuts its log there, records the epoch and fetches
on: its log stays a prefix of the leader's, byte for byte. The cut is at a batch boundary
(an epoch starts where a batch does) in whichever segment it falls: the later segments go,
that one is cut and becomes the active one again (PartitionLog.truncate), and it is durable
before the new epoch is recorded (a tail back after a power loss would never be cut again).
Only a cut that is not a batch boundary here (a log that does not match the leader's, which
the epochs should make impossible) makes the replica copy the whole log anew.

Where a copy starts. A replica's log need not start at 0: retention (message expiry, topic
size) and `delete_segments` delete a log's oldest segments. A fetch below the leader's log
start (a new replica, from a move or a replacement, fetches from 0; a follower away longer
than the leader keeps messages) is answered {"start", "epoch"}: the replica empties its log
to go on from that offset (PartitionLog.restart_at, which a restart keeps), records the
leader's epoch (an empty log is a prefix of any) and fetches from there; its log is then
byte-identical to the leader's from the leader's start, and it joins the in-sync set as any
follower. Offsets below the start are not served by it either, as by the leader. A fetch
beyond the leader's log end is answered "truncate to my end": after a reboot a replica's log
reopens with a gap of offsets after its end (its offset mark, storage/log.py, keeps offsets
from being handed out twice), and the cut, falling in the gap, takes it back to where its data
ends; a replica holding more than the leader (the leader lost an unsynced tail) is cut to the
leader's log. (Not handled: a gap inside the leader's own log, where a follower's fetch would
return batches from after the gap that the follower cannot append.)

Consumer offsets travel with their partition: a fetch carries a digest of the follower's
offsets and the leader answers with its own when they differ (a store wakes a long-polling
fetch), with the version they are at ("ov": [epoch, version]; versions count up from the
clock, so no later leader or later run of one reuses an older one's); the follower's next
fetch echoes it. A store (or deletion) on the leader is acknowledged, as a send is, once
every in-sync replica has it, so a committed offset survives its leader's death and the group
never gets committed messages again. Why not etcd: a poll with auto-commit stores an offset,
a write rate etcd is not built for.

Leaders. A follower's fetch offset is its log end; on a topic that enforces fsync, what
counts is its durable end (the log end its last fdatasync covered), so a send is acknowledged
only once every in-sync follower has it on disk, as the leader does (durability.py). The high
watermark is the smallest such end in the in-sync set (the leader's own log end included); a
send is acknowledged once the high watermark covers it (and, on an fsync-enforced topic, once
the leader's own sync covers it).
A follower of an fsync-enforced topic syncs (through the durability worker, so its syncs are
grouped with the node's own) before every fetch that would wait at the leader: a caught-up
fetch is held until the next append, so it must already report everything durable. While the
leader has more to send (the last reply's end is beyond the follower's log) it fetches on
first and syncs once it has caught up, or once SYNC_BYTES are unsynced: a backlog is copied
with one fdatasync per several fetches, not one per fetch. A leader answers a fetch at once,
instead of holding it, when the follower's durable end lags its log end.
A follower whose end (as counted above) has not reached the leader's log end for
`replica_lag_max` leaves the in-sync set, and one that reaches it returns (a follower whose
disk fails stops fetching, so it leaves); the leader writes either change into the
partition's record with a compare-and-swap on the record it read (so a controller's move, or a
newer epoch, wins over it). A leader that learns it no longer leads fails the sends still
waiting for acknowledgement: it never acknowledges after losing leadership (its followers
fetch from the new leader, so its high watermark cannot move anyway).

Joining the in-sync set. A follower in the set may be made leader, so it must hold
everything acknowledged: the log and the consumer offsets. Both had a gap. Offsets travel
with fetches, and the fetch that showed a returning follower at the log end used to put it in
the set while the offsets stored (and acknowledged without it) while it was away were still
on their way to it in that fetch's answer: a leader dying then left a new leader without the
newest stored offset. So a follower returns only once its fetch shows it has the leader's
offsets at their current version too (its digest equals the leader's, or it echoes that
version; a follower that had none of this leader's offsets counts as version -1, below a new
leader's 0). And a send or store acknowledged between the decision and the record's write
would be missing from a follower the record then names: so from the decision until the write
is settled the follower already counts for acknowledgements (`_in_sync`; Kafka's "maximal
ISR"), which only ever makes them wait for one more copy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time

import orjson

from iggy_fast import _wire
from iggy_fast._log import FileRegion
from iggy_fast.config import parse_duration_us, split_address
from iggy_fast.protocol.codes import PARTITION_ID
from iggy_fast.protocol.errors import IggyError, TransientNotAccepted
from iggy_fast.protocol.results import Sent
from iggy_fast.server.cluster import etcd as e
from iggy_fast.server.connection import reply_bytes
from iggy_fast.server.dispatch import COMMANDS, FORWARDED
from iggy_fast.server.transports.sockets import BACKLOG, bind
from iggy_fast.server.metadata.etcd import encode

log = logging.getLogger("iggy_fast.replication")

FRAME = struct.Struct("<II")
MAX_FRAME = 64 * 1024 * 1024
FETCH_BYTES = 1024 * 1024
COPY_CHUNK = 256 * 1024         # a fetch reply's batches copied at a time when sendfile waits
SYNC_BYTES = 4 * FETCH_BYTES    # a follower catching up syncs at least this often
LONG_POLL = 0.5
# How far a node's clock may trail another's: a retried send is looked for among the batches
# stamped since its first attempt went out, on the forwarding node's clock, less this.
CLOCK_SKEW_US = 10_000_000


EPOCH_FILE = "leader.epoch"


def ready(record: dict) -> bool:
    """Whether the record's leader has recorded where its epoch starts (and may serve)."""
    return str(record["epoch"]) in record.get("starts", {})


_epochs: dict = {}      # PartitionLog -> its leader.epoch, as last read or written


def local_epoch(part) -> int:
    """The leader epoch this replica's log last agreed with (-1: never recorded)."""
    if part.log not in _epochs:
        try:
            with open(os.path.join(part.log.directory, EPOCH_FILE)) as f:
                _epochs[part.log] = int(f.read())
        except (OSError, ValueError):
            _epochs[part.log] = -1
    return _epochs[part.log]


def set_local_epoch(part, epoch: int) -> None:
    _epochs[part.log] = epoch
    path = os.path.join(part.log.directory, EPOCH_FILE)
    with open(path + ".tmp", "w") as f:
        f.write(str(epoch))
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def offsets_digest(part) -> int:
    """A digest of a partition's consumer offsets: a fetch carries the follower's, and the
    leader sends its offsets only when they differ."""
    return _wire.xxh32(orjson.dumps(part.offsets.values, option=orjson.OPT_SORT_KEYS))


class PeerGarbage(Exception):
    """A peer sent something that is not a replication frame."""


class Moved(Exception):
    """A forwarded request must go again, to the partition's leader as the placement names
    it then (the one it went to is unreachable or no longer leads)."""


def stored_at(plog, batch, since: int) -> int | None:
    """The base offset of a stored batch identical to the producer batch `batch` (all but
    the fields the leader stamps: partition id, base offset, base timestamp, checksum) among
    those stamped at `since` (µs) or later, or None. Stamps never go back in time
    (PartitionLog.append), so the batches to compare start at `offset_for_timestamp`."""
    start = plog.offset_for_timestamp(since)
    if start is None:
        return None
    length = len(batch)
    origin = bytes(batch[24:40])                # origin timestamp, batch length
    frames = _wire.xxh3_64(batch[48:])          # message count, reserved, the frames
    while start < plog.next_offset:
        chunks, got, after = plog.read(start, 1 << 62, max_bytes=FETCH_BYTES)
        if not got:
            return None
        for chunk in chunks:
            view = memoryview(chunk)
            at = 0
            while at < len(view):
                base, _, size, _ = _wire.batch_info(view[at:])
                if size == length and view[at + 24:at + 40] == origin \
                        and _wire.xxh3_64(view[at + 48:at + size]) == frames:
                    return base
                at += size
        start = after
    return None


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict, bytes]:
    total, hlen = FRAME.unpack(await reader.readexactly(FRAME.size))
    if total > MAX_FRAME or hlen > total:
        raise PeerGarbage(f"a frame of {total} bytes with a {hlen}-byte header")
    data = await reader.readexactly(total)
    try:
        header = orjson.loads(data[:hlen])
    except orjson.JSONDecodeError:
        raise PeerGarbage("a frame header that is not JSON") from None
    if not isinstance(header, dict):
        raise PeerGarbage("a frame header that is not an object")
    return header, data[hlen:]


def frame(header: dict, payload: bytes = b"") -> bytes:
    head = orjson.dumps(header)
    return FRAME.pack(len(head) + len(payload), len(head)) + head + payload


def frame_pieces(header: dict, pieces: list) -> list:
    """A frame as pieces to write one after another (send_pieces): a fetch's batches (a
    megabyte each at full speed) go to the socket without being joined into one buffer."""
    head = orjson.dumps(header)
    return [FRAME.pack(len(head) + sum(map(len, pieces)), len(head)) + head, *pieces]


async def send_pieces(writer: asyncio.StreamWriter, pieces: list, sock: int | None) -> None:
    """Write a frame's pieces in order; a stored batch (FileRegion) goes from the page cache
    to the socket with sendfile(2) while nothing is queued ahead of it (as TCP polls do,
    transports/tcp.py), so a fetch reply costs the leader no copy through user space. When
    the socket is full, COPY_CHUNK of it is read and queued instead, and the rest waits for
    the queue to drain (the connection's low-water mark is 0)."""
    transport = writer.transport
    for piece in pieces:
        if type(piece) is not FileRegion:
            transport.write(piece)
            continue
        at, left = piece.offset, piece.length
        while left:
            sent = 0
            if sock is not None and not transport.get_write_buffer_size():
                try:
                    sent = os.sendfile(sock, piece.fd, at, left)
                except (BlockingIOError, InterruptedError):
                    pass
            if not sent:
                sent = min(left, COPY_CHUNK)
                data = os.pread(piece.fd, sent, at)
                if len(data) != sent:
                    raise OSError(f"short read of {sent} bytes at {at} of a stored batch")
                transport.write(data)
                await writer.drain()
            at += sent
            left -= sent
    await writer.drain()


class FetchLink:
    """A follower's connection to its leader for one partition's fetches, lock-step as Peer's
    but reading each reply straight into a buffer it reuses: a fetch reply (a megabyte at full
    speed) arrives with the one copy out of the kernel, where a stream reader would copy it
    three times more (into its buffer, out of it, and the payload out of the frame). The
    payload handed back is a view of that buffer, valid until the next call (which reads
    over it; the buffer is replaced, never resized, so an old view never breaks a read)."""

    BUFFER = FETCH_BYTES + 64 * 1024

    def __init__(self, address: str):
        self.address = address
        self._conn: _FetchConnection | None = None     # the connection now, if any
        self._buf = bytearray(self.BUFFER)
        self._have = 0                  # bytes of the frame received
        self._need = 0                  # its whole size once the length is known, else 0
        self._reply: asyncio.Future | None = None

    async def call(self, header: dict, timeout: float) -> tuple[dict, memoryview]:
        try:
            if self._conn is None:
                host, port = split_address(self.address)
                loop = asyncio.get_running_loop()
                await asyncio.wait_for(
                    loop.create_connection(lambda: _FetchConnection(self), host, port), 3)
            if len(self._buf) > 2 * self.BUFFER:        # let an outsized reply's buffer go
                self._buf = bytearray(self.BUFFER)
            if self._conn is None:                      # lost as soon as it was made
                raise ConnectionResetError(f"the leader at {self.address} closed the link")
            self._have = self._need = 0
            self._reply = asyncio.get_running_loop().create_future()
            self._conn.transport.write(frame(header))
            await asyncio.wait_for(self._reply, timeout)
            view = memoryview(self._buf)[FRAME.size:self._need]
            hlen = FRAME.unpack_from(self._buf)[1]
            try:
                answer = orjson.loads(view[:hlen])
            except orjson.JSONDecodeError:
                raise PeerGarbage("a frame header that is not JSON") from None
            if not isinstance(answer, dict):
                raise PeerGarbage("a frame header that is not an object")
            return answer, view[hlen:]
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.transport.abort()
            self._conn = None

    # -- what the connection received (only the current connection's count) ----------------

    def _buffer(self):
        if self._have == len(self._buf):         # a reply longer than the buffer: grow
            self._grow(2 * len(self._buf))
        return memoryview(self._buf)[self._have:]

    def _received(self, nbytes: int) -> None:
        self._have += nbytes
        if not self._need and self._have >= FRAME.size:
            total, hlen = FRAME.unpack_from(self._buf)
            if total > MAX_FRAME or hlen > total:
                return self._fail(PeerGarbage(f"a frame of {total} bytes with a {hlen}-byte "
                                              f"header"))
            self._need = FRAME.size + total
            if self._need > len(self._buf):
                self._grow(self._need)
        if self._need and self._have >= self._need:
            if self._have > self._need or self._reply is None or self._reply.done():
                return self._fail(PeerGarbage("a frame nothing asked for"))
            self._reply.set_result(None)

    def _grow(self, size: int) -> None:
        # A new buffer, never a resize: a payload view handed out earlier may still exist.
        buf = bytearray(size)
        buf[:self._have] = memoryview(self._buf)[:self._have]
        self._buf = buf

    def _fail(self, error: BaseException) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.set_exception(error)
        self.close()


class _FetchConnection(asyncio.BufferedProtocol):
    """One connection of a FetchLink. One that the link has let go of (closed, and maybe
    already replaced) reads into a scratch buffer and changes nothing."""

    def __init__(self, link: FetchLink):
        self.link = link
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.link._conn = self

    def get_buffer(self, sizehint: int):
        return self.link._buffer() if self.link._conn is self else bytearray(64 * 1024)

    def buffer_updated(self, nbytes: int) -> None:
        if self.link._conn is self:
            self.link._received(nbytes)

    def connection_lost(self, exc) -> None:
        if self.link._conn is self:
            self.link._conn = None
            self.link._fail(exc or asyncio.IncompleteReadError(b"", None))


class Peer:
    """One lock-step connection to another node's replication address."""

    def __init__(self, address: str):
        self.address = address
        self._conn = None
        self._lock = asyncio.Lock()

    async def call(self, header: dict, payload: bytes = b"", timeout: float = 10.0):
        async with self._lock:
            try:
                if self._conn is None:
                    host, port = split_address(self.address)
                    self._conn = await asyncio.wait_for(asyncio.open_connection(host, port), 3)
                reader, writer = self._conn
                writer.write(frame(header, payload))
                return await asyncio.wait_for(read_frame(reader), timeout)
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


class Replication:
    def __init__(self, server, node, placements):
        self.server = server
        self.node = node
        self.placements = placements
        self.lag_max = parse_duration_us(server.cfg["cluster"]["replica_lag_max"]) / 1e6
        self._servers: list[asyncio.AbstractServer] = []
        self._followers: dict[int, asyncio.Task] = {}      # identity -> fetch task
        # identity -> follower -> its end as acknowledgements count it: the log end, or on
        # an fsync-enforced topic the durable end
        self._ends: dict[int, dict[str, int]] = {}
        self._caught_up: dict[int, dict[str, float]] = {}  # ... -> when it last was
        self._appended: dict[int, asyncio.Event] = {}      # wakes long-polling fetches
        self._waiters: dict[int, list] = {}                # identity -> [(end, future)]
        self._ov: dict[int, int] = {}                      # identity -> offsets version
        self._ov_at: dict[int, dict[str, int]] = {}        # ... -> follower -> its version
        self._ov_waiters: dict[int, list] = {}             # identity -> [(version, future)]
        self._ov_have: dict[int, list] = {}                # (follower) -> [epoch, version]
        self._joining: dict[int, set[str]] = {}            # identity -> followers joining
        self._idle: dict[str, list[Peer]] = {}             # address -> idle forward links
        self._leader_changes: dict[tuple, asyncio.Future] = {}  # (identity, leader) -> ...
        # How long a forwarded request keeps going to whichever node leads: a dead leader's
        # lease runs out and its successor takes office within about twice the lease, and a
        # live leader may hold a send for up to replica_lag_max (a lagging follower leaving
        # the in-sync set). After that the client is answered transient_not_accepted.
        self.forward_for = self.lag_max + 3 * node.ttl
        self._isr_task: asyncio.Task | None = None
        self._taking_office: set[int] = set()
        placements.changed.append(self.follow_placements)

    # -- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        # bind() first: a taken port is one StartupError line naming the replication
        # listener, as for every transport, not a traceback.
        for sock in bind("replication", self.node.replication_address):
            self._servers.append(await asyncio.start_server(self._serve, sock=sock,
                                                            backlog=BACKLOG))
        log.info("replication listening on %s", self.node.replication_address)
        self._isr_task = asyncio.ensure_future(self._watch_isr())
        self.follow_placements()

    def close(self) -> None:
        for listener in self._servers:
            listener.close()
        for task in [*self._followers.values(), self._isr_task]:
            if task is not None:
                task.cancel()
        for peers in self._idle.values():
            for peer in peers:
                peer.close()

    def _partition(self, identity: int):
        part = self.server.state.by_identity.get(identity)
        return part if part is not None and hasattr(part, "log") else None

    def leader_address(self, record: dict) -> str | None:
        node = self.node.nodes.get(record.get("leader"))
        return None if node is None else node["replication"]

    # -- following -----------------------------------------------------------------------

    def follow_placements(self) -> None:
        """Run one fetch task per partition this node follows; stop the others."""
        me = self.node.name
        wanted = {identity for identity, record in self.placements.records.items()
                  if me in record["replicas"] and record.get("leader") not in (None, me)}
        for identity in list(self._followers):
            if identity not in wanted:
                self._followers.pop(identity).cancel()
        for identity in wanted:
            if identity not in self._followers or self._followers[identity].done():
                self._followers[identity] = asyncio.ensure_future(self._fetch_loop(identity))
        for identity, record in self.placements.records.items():
            part = self._partition(identity)
            if part is None:
                continue
            part.offsets_hook = self.offsets_stored if record.get("leader") == me else None
            if record.get("leader") != me:
                part.high_watermark = None          # its reads go to the leader
                if me not in record["replicas"] and part.log.next_offset:
                    self._drop_copy(part)
            elif not ready(record):
                part.high_watermark = self.high_watermark(part)
                if identity not in self._taking_office:
                    self._taking_office.add(identity)
                    asyncio.ensure_future(self._take_office(identity, record))
            else:
                part.high_watermark = self.high_watermark(part)
                if local_epoch(part) != record["epoch"]:
                    set_local_epoch(part, record["epoch"])
        self._check_waiters()
        self._leaders_changed()

    async def _take_office(self, identity: int, record: dict) -> None:
        """A new leader: record where its epoch starts (its log end), then serve."""
        try:
            part = self._partition(identity)
            if part is None:
                return
            set_local_epoch(part, record["epoch"])
            new = {**record, "starts": {**record["starts"],
                                        str(record["epoch"]): part.log.next_offset}}
            if await self._swap_record(identity, record, new):
                log.info("partition %s: leader at epoch %d from offset %d", part.key,
                         record["epoch"], part.log.next_offset)
        finally:
            self._taking_office.discard(identity)

    async def _fetch_loop(self, identity: int) -> None:
        # A connection of its own: a fetch long-polls, and must never queue behind a
        # forwarded send that waits for this very fetch.
        peer = FetchLink("")
        try:
            await self._fetch_from(identity, peer)
        finally:
            peer.close()

    async def _fetch_from(self, identity: int, peer: FetchLink) -> None:
        more = False            # the last reply said the leader has more after it
        failing = None          # the sync error last reported, to report it once
        while True:
            fetch_first, more = more, False
            record = self.placements.records.get(identity)
            part = self._partition(identity)
            if record is None or part is None:
                await asyncio.sleep(0.2)
                continue
            address = self.leader_address(record)
            if address is None:
                await asyncio.sleep(0.2)
                continue
            plog = part.log
            if (part.topic.settings["enforce_fsync"] and plog.durable_offset < plog.next_offset
                    and not (fetch_first and plog.unsynced_bytes < SYNC_BYTES)):
                try:
                    await self.server.durability.sync_now(part)
                except IggyError as e:
                    # The disk failed (sync_error, final until a restart): report nothing
                    # more as durable; the leader drops this replica from the in-sync set.
                    if str(e) != failing:
                        log.warning("partition %s: this replica's log cannot be synced: %s; "
                                    "fetching stopped", part.key, e)
                        failing = str(e)
                    await asyncio.sleep(1)
                    continue
            if peer.address != address:       # a new leader
                peer.close()
                peer.address = address
            try:
                header, payload = await peer.call(
                    {"op": "fetch", "p": identity, "offset": plog.next_offset,
                     "durable": plog.durable_offset, "epoch": record["epoch"],
                     "last_epoch": local_epoch(part), "offsets": offsets_digest(part),
                     "ov": self._ov_have.get(identity), "node": self.node.name},
                    timeout=LONG_POLL + 5)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, PeerGarbage) as e:
                log.debug("fetch of partition %s from %s: %s", part.key, address, e)
                await asyncio.sleep(0.2)
                continue
            if "error" in header:
                log.debug("fetch of partition %s refused: %s", part.key, header["error"])
                await asyncio.sleep(0.2)
                continue
            if "truncate" in header:
                self._truncate(part, int(header["truncate"]))
                continue
            if "start" in header:
                self._start_at(part, int(header["start"]), header["epoch"])
                continue
            if local_epoch(part) != header["epoch"]:
                set_local_epoch(part, header["epoch"])
            if "offsets" in header:
                self._copy_offsets(part, header["offsets"])
                self._ov_have[identity] = header.get("ov")
            try:
                self._append(part, payload)
            except (IggyError, ValueError, OSError) as e:
                log.warning("partition %s: the leader's batches cannot be appended here: %s",
                            part.key, e)
                await asyncio.sleep(1)
                continue
            more = int(header.get("end", 0)) > part.log.next_offset

    @staticmethod
    def _drop_copy(part) -> None:
        """This node is no longer a replica (a move dropped it once the replicas staying had
        caught up): its copy goes, so a later move onto it copies the log afresh."""
        log.info("partition %s: no longer a replica here; its copy (%d messages) deleted",
                 part.key, part.log.next_offset)
        part.log.purge()
        set_local_epoch(part, -1)

    @staticmethod
    def _truncate(part, offset: int) -> None:
        log.warning("partition %s: log truncated from %d to %d, where it diverges from the "
                    "leader's", part.key, part.log.next_offset, offset)
        try:
            part.log.truncate(offset)
        except ValueError as e:     # not a batch boundary here: copy it all again
            log.warning("partition %s: %s; copying the leader's log from its start",
                        part.key, e)
            part.log.purge()
        except OSError as e:        # not made durable: the next fetch is told again
            log.error("partition %s: truncation failed: %s", part.key, e)

    @staticmethod
    def _start_at(part, start: int, epoch: int) -> None:
        """The leader's log starts at `start`, after this replica's end: retention deleted
        what this replica still lacks. Its copy begins anew there, an empty log (which
        agrees with the leader's current epoch)."""
        log.info("partition %s: the leader's log starts at %d, after this copy's end %d: "
                 "the copy begins there", part.key, start, part.log.next_offset)
        part.log.restart_at(start)
        set_local_epoch(part, epoch)

    @staticmethod
    def _copy_offsets(part, offsets: dict) -> None:
        """Make this replica's consumer offsets the leader's."""
        mine = part.offsets
        for ckey in [k for k in mine.values if k not in offsets]:
            mine.delete(ckey, False)
        for ckey, offset in offsets.items():
            if mine.get(ckey) != offset:
                mine.store(ckey, offset, False)

    @staticmethod
    def _append(part, payload: bytes) -> None:
        view = memoryview(payload)
        at = 0
        while at < len(view):
            length = _wire.batch_info(view[at:])[2]
            part.log.append_replicated(view[at:at + length])
            at += length

    # -- leading -------------------------------------------------------------------------

    async def _serve(self, reader, writer) -> None:
        where = "%s:%s" % writer.get_extra_info("peername")[:2]
        sock = writer.get_extra_info("socket")      # (sendfile only where bytes go as sent)
        plain = sock is not None and writer.get_extra_info("ssl_object") is None
        sendfile = sock.fileno() if plain else None
        # drain() then waits for an empty buffer, where stored batches go by sendfile again.
        writer.transport.set_write_buffer_limits(COPY_CHUNK, 0)
        try:
            while True:
                header, payload = await read_frame(reader)
                if header.get("op") == "fetch":
                    reply = await self._fetch(header)
                elif header.get("op") == "forward":
                    reply = await self._forwarded(header, payload)
                else:
                    raise PeerGarbage(f"unknown operation {header.get('op')!r}")
                if isinstance(reply, list):
                    await send_pieces(writer, reply, sendfile)
                else:
                    writer.write(reply)
                    await writer.drain()
        except PeerGarbage as e:
            log.warning("replication peer %s refused: it sent %s", where, e)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except OSError as e:        # reading a stored batch failed: the fetch goes again
            log.warning("replication peer %s: a fetch reply failed: %s", where, e)
        except asyncio.CancelledError:
            pass            # the node is stopping: end quietly (asyncio logs a re-raise)
        finally:
            writer.close()

    async def _fetch(self, h: dict) -> bytes | list:
        identity, offset, follower = int(h["p"]), int(h["offset"]), str(h["node"])
        record = self.placements.records.get(identity)
        part = self._partition(identity)
        if part is None or record is None or record.get("leader") != self.node.name:
            return frame({"error": "not the leader"})
        if record["epoch"] != h["epoch"]:
            return frame({"error": f"epoch {h['epoch']} is not {record['epoch']}"})
        if not ready(record):
            return frame({"error": "the leader has not recorded its epoch's start yet"})
        plog = part.log
        last = int(h.get("last_epoch", -1))
        if last != record["epoch"]:
            later = [start for epoch, start in record["starts"].items() if int(epoch) > last]
            if later and offset > min(later):
                return frame({"truncate": min(later)})
        if offset > plog.next_offset:       # a gap its restart left, or what this lost
            return frame({"truncate": plog.next_offset})
        if offset < plog.first_offset:      # deleted here: the follower begins at the start
            return frame({"start": plog.first_offset, "epoch": record["epoch"]})
        echoed = h.get("ov")
        # -1: it has had none of this leader's offsets (version 0 is a leader's before its
        # first store), so it cannot join the in-sync set yet (_follower_at).
        have = echoed[1] if isinstance(echoed, list) and echoed[0] == record["epoch"] else -1
        if h.get("offsets") == offsets_digest(part):
            have = self._ov.get(identity, 0)        # it has these very offsets
        self._ov_at.setdefault(identity, {})[follower] = have
        durable = min(offset, int(h.get("durable", 0)))
        fsync = part.topic.settings["enforce_fsync"]
        self._follower_at(identity, follower, durable if fsync else offset, plog.next_offset)
        # Caught up, offsets included (and synced, where that counts): hold the fetch until
        # there is something new.
        if offset == plog.next_offset and h.get("offsets") == offsets_digest(part) \
                and (durable == offset or not fsync):
            event = self._appended.setdefault(identity, asyncio.Event())
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), LONG_POLL)
            except asyncio.TimeoutError:
                pass
        chunks, _, _ = plog.read(offset, 1 << 62, regions=True, max_bytes=FETCH_BYTES)
        reply = {"end": plog.next_offset, "hw": self.high_watermark(part),
                 "epoch": record["epoch"]}
        if h.get("offsets") != offsets_digest(part):
            reply["offsets"] = part.offsets.values
            reply["ov"] = [record["epoch"], self._ov.get(identity, 0)]
        # bytes(): a chunk that is not a region may be a view of a buffer the log reuses.
        return frame_pieces(reply, [c if type(c) is FileRegion else bytes(c) for c in chunks])

    def _follower_at(self, identity: int, follower: str, offset: int, end: int) -> None:
        self._ends.setdefault(identity, {})[follower] = offset
        if offset >= end:
            self._caught_up.setdefault(identity, {})[follower] = time.monotonic()
        record = self.placements.records.get(identity)
        joining = self._joining.setdefault(identity, set())
        # It returns once it has the whole log and the leader's offsets at their current
        # version (see "Joining the in-sync set" in the module docstring).
        version = self._ov_at.get(identity, {}).get(follower, -1)
        has_offsets = version >= self._ov.get(identity, 0)
        if record and offset >= end and has_offsets and follower in record["replicas"] \
                and follower not in record["isr"] and follower in self.node.nodes \
                and follower not in joining:
            joining.add(follower)
            asyncio.ensure_future(self._join_isr(identity, record, follower))
        self._check_waiters(identity)

    async def _join_isr(self, identity: int, record: dict, follower: str) -> None:
        """Write `follower` into the in-sync set. Until the write is settled the follower
        already counts as in sync for acknowledgements (`_in_sync`): a send or offset
        acknowledged meanwhile without it could be missing from it once the record names it,
        and it may then be made leader."""
        try:
            await self._set_isr(identity, record, [*record["isr"], follower])
        finally:
            self._joining.get(identity, set()).discard(follower)
            self._check_waiters(identity)

    def _in_sync(self, identity: int):
        """The replicas whose copies acknowledgements wait for (this leader among them): the
        in-sync set and the followers being written into it."""
        isr = (self.placements.records.get(identity) or {}).get("isr", ())
        joining = self._joining.get(identity)
        return [*isr, *(m for m in joining if m not in isr)] if joining else isr

    def high_watermark(self, part) -> int:
        ends = self._ends.get(part.identity, {})
        hw = part.log.next_offset
        for member in self._in_sync(part.identity):
            if member != self.node.name:
                hw = min(hw, ends.get(member, 0))
        return hw

    def appended(self, partition, reply):
        """After a local append on a leader: the reply once the in-sync replicas have it
        (an awaitable), or at once when this node is the only one in the in-sync set."""
        event = self._appended.get(partition.identity)
        if event is not None:
            event.set()
        end = partition.log.next_offset
        if self.high_watermark(partition) >= end:
            partition.high_watermark = end
            return reply
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(partition.identity, []).append((end, future))
        return _after(reply, future)

    def offsets_stored(self, part, reply):
        """After an offset is stored or deleted on this leader (state.store_offset's hook):
        the reply once every in-sync replica has the partition's offsets (an awaitable), or
        at once when none lacks them."""
        identity = part.identity
        version = self._ov[identity] = max(self._ov.get(identity, 0) + 1, time.time_ns())
        event = self._appended.get(identity)
        if event is not None:
            event.set()                 # a long-polling follower takes the offsets now
        if self._offsets_in_sync(identity, version):
            return reply
        future = asyncio.get_running_loop().create_future()
        self._ov_waiters.setdefault(identity, []).append((version, future))
        return _after(reply, future)

    def _offsets_in_sync(self, identity: int, version: int) -> bool:
        have = self._ov_at.get(identity, {})
        return all(have.get(m, -1) >= version for m in self._in_sync(identity)
                   if m != self.node.name)

    def _check_offset_waiters(self, identity: int | None) -> None:
        for pid in ([identity] if identity is not None else list(self._ov_waiters)):
            waiting = self._ov_waiters.pop(pid, None)
            if not waiting:
                continue
            record = self.placements.records.get(pid) or {}
            lost = record.get("leader") != self.node.name or self._partition(pid) is None
            still = []
            for version, future in waiting:
                if future.done():
                    continue
                if lost:        # never acknowledge after losing leadership
                    future.set_exception(TransientNotAccepted(
                        "this node no longer leads the partition"))
                elif self._offsets_in_sync(pid, version):
                    future.set_result(None)
                else:
                    still.append((version, future))
            if still:
                self._ov_waiters[pid] = still

    def _check_waiters(self, identity: int | None = None) -> None:
        self._check_offset_waiters(identity)
        for pid in ([identity] if identity is not None else list(self._waiters)):
            waiting = self._waiters.get(pid)
            part = self._partition(pid)
            if not waiting:
                record = self.placements.records.get(pid) or {}
                if part is not None and record.get("leader") == self.node.name:
                    part.high_watermark = self.high_watermark(part)
                continue
            if part is None:
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(IggyError.from_code(1))
                self._waiters.pop(pid, None)
                continue
            record = self.placements.records.get(pid) or {}
            if record.get("leader") != self.node.name:
                for _, future in waiting:       # never acknowledge after losing leadership
                    if not future.done():
                        future.set_exception(TransientNotAccepted("this node no longer leads the partition"))
                self._waiters.pop(pid, None)
                continue
            hw = part.high_watermark = self.high_watermark(part)
            still = []
            for end, future in waiting:
                if end <= hw:
                    if not future.done():
                        future.set_result(None)
                else:
                    still.append((end, future))
            self._waiters[pid] = still

    async def _watch_isr(self) -> None:
        """Leaders drop followers that lag more than replica_lag_max from the in-sync set."""
        while True:
            await asyncio.sleep(min(1.0, self.lag_max / 2))
            now = time.monotonic()
            for identity, record in list(self.placements.records.items()):
                if record.get("leader") != self.node.name:
                    continue
                part = self._partition(identity)
                if part is None:
                    continue
                caught = self._caught_up.setdefault(identity, {})
                ends = self._ends.get(identity, {})
                lagging = [m for m in record["isr"] if m != self.node.name
                           and ends.get(m, -1) < part.log.next_offset
                           and now - caught.setdefault(m, now) > self.lag_max]
                if lagging:
                    log.info("partition %s: %s left the in-sync set (lagging over %.1f s)",
                             part.key, ", ".join(lagging), self.lag_max)
                    await self._set_isr(identity, record,
                                        [m for m in record["isr"] if m not in lagging])

    async def _set_isr(self, identity: int, record: dict, isr: list[str]) -> None:
        await self._swap_record(identity, record, {**record, "isr": isr})

    async def _swap_record(self, identity: int, record: dict, new: dict) -> bool:
        """Write a partition's record if it is still `record` (this node's view of it)."""
        store = self.server.store
        key = store.prefix + self.placements.keys[identity]
        try:
            won, reply = await self.node.etcd.txn([e.value_is(key, encode(record))],
                                                  [e.put(key, encode(new))])
        except e.EtcdUnavailable as error:
            log.warning("partition record not written: %s", error)
            return False
        if won:
            await store.seen(int(reply["header"]["revision"]))
        return won

    # -- forwarding ----------------------------------------------------------------------

    def leads(self, identity: int) -> bool:
        """Whether this node leads the partition and may serve its sends now."""
        record = self.placements.records.get(identity)
        return record is not None and record.get("leader") == self.node.name and ready(record)

    def check_in_sync(self, topic, part) -> None:
        """Refuse a send this leader could not acknowledge safely: fewer in-sync replicas
        than the topic's `min_in_sync_replicas` (nothing is appended, so a retry is clean)."""
        need = int(topic.settings.get("min_in_sync_replicas", 1))
        record = self.placements.records.get(part.identity) or {}
        have = len(record.get("isr", ()))
        if have < need:
            message = (f"partition {part.key}: {have} in-sync replica(s) "
                       f"({', '.join(record.get('isr', ())) or 'none'}), the topic's "
                       f"min_in_sync_replicas is {need}; send refused")
            log.warning("%s", message)
            raise TransientNotAccepted(message)

    def forward(self, client, code: int, pid: int, identity: int, record: dict, body: bytes,
                since: int, retry: bool, deadline: float):
        """An awaitable of the leader's encoded answer (a list of pieces). Raises Moved when
        the request must go again, to whichever node leads then: the leader is unreachable,
        it no longer leads, or the placement names another leader while waiting for it.
        `since` (µs, wall clock) is when the first attempt went out; `retry` marks a later
        attempt, a send the leader first looks for in its log (`_send_once`)."""
        address = self.leader_address(record)
        if address is None:
            raise Moved("the partition's leader is not live")
        node, cid = self.server.groups.who(client)      # a group member: its node and client
        header = {"op": "forward", "code": code, "user": client.user_id, "pid": pid,
                  "p": identity, "node": node, "client": cid}
        if retry:
            header["retry"] = since
        return self._forward(address, header, body, record, deadline)

    async def _forward(self, address, header, body, record, deadline: float) -> list:
        # One lock-step link per request in flight: an idle one if there is, else a new one.
        idle = self._idle.setdefault(address, [])
        peer = idle.pop() if idle else Peer(address)
        loop = asyncio.get_running_loop()
        call = loop.create_task(peer.call(header, body,
                                          timeout=max(0.0, deadline - loop.time())))
        moved = self._leader_change(header["p"], record["leader"])
        try:
            await asyncio.wait((call, moved), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not call.done():     # (the link is closed: a late answer cannot be misread)
                call.cancel()
        if not call.done() or call.cancelled():
            raise Moved(f"the partition's leader is no longer {record['leader']}")
        try:
            answer, payload = call.result()
        except asyncio.TimeoutError:
            # Not connected within Peer's connect timeout, or no answer by the deadline
            # (then _route_later gives up with this as the reason).
            raise Moved(f"the leader at {address} did not answer in time") from None
        except (OSError, asyncio.IncompleteReadError) as e:
            log.debug("forwarding to the leader at %s failed: %s", address, e)
            raise Moved(f"the leader at {address} is unreachable") from None
        except PeerGarbage as e:
            log.warning("the leader at %s answered a forwarded request with %s", address, e)
            raise TransientNotAccepted(f"the leader at {address} answered garbage") from None
        idle.append(peer)
        if answer.get("moved"):
            raise Moved(f"{record['leader']} no longer leads the partition")
        if answer.get("status"):
            raise IggyError.from_code(int(answer["status"]))
        return [payload] if payload else []

    def _leader_change(self, identity: int, leader: str) -> asyncio.Future:
        """A future done once the placement of the partition names another leader than
        `leader` (follow_placements resolves it); shared by the requests in flight."""
        key = (identity, leader)
        future = self._leader_changes.get(key)
        if future is None:
            future = self._leader_changes[key] = asyncio.get_running_loop().create_future()
        return future

    def _leaders_changed(self) -> None:
        for key in list(self._leader_changes):
            record = self.placements.records.get(key[0]) or {}
            if record.get("leader") != key[1]:
                future = self._leader_changes.pop(key)
                if not future.done():
                    future.set_result(None)

    async def _forwarded(self, h: dict, body: bytes) -> bytes:
        """Serve a request another node forwarded. A node that does not lead the partition
        (any longer) answers "moved", and the forwarding node tries again where the
        placement points; a retried send is appended only if the log lacks it."""
        from iggy_fast.server.core import Client

        code, identity = int(h["code"]), int(h["p"])
        cmd = COMMANDS.get(code)
        if cmd is None or code not in FORWARDED:
            return frame({"status": 3})
        if not self.leads(identity):
            return frame({"status": TransientNotAccepted.code, "moved": True})
        # The requester as its node knows it (a consumer group member is its node and client).
        client = Client(int(h.get("client", 0)), "replication", str(h.get("node", "peer")))
        client.user_id = h["user"]
        try:
            request = cmd.decode(memoryview(body))
            if code == 101 and h.get("pid") is not None:
                request = request._replace(partitioning=PARTITION_ID,
                                           partitioning_value=int(h["pid"]).to_bytes(4, "little"))
            if code == 101:
                part = self._partition(identity)
                if part is not None:
                    self.check_in_sync(part.topic, part)
            if code == 101 and "retry" in h:
                pieces = await self._send_once(client, request, int(h["retry"]))
            else:
                pieces = await self.serve_encoded(client, code, request)
        except IggyError as e:
            # Failed because this node lost the partition meanwhile (a send appended here
            # may have reached the next leader: the retry finds it there).
            return frame({"status": e.code, "moved": not self.leads(identity)})
        return frame({"status": 0}, pieces[0] if pieces else b"")

    async def _send_once(self, client, request, since: int) -> list:
        """A retried forwarded send: answered with the offsets the batch already has when an
        earlier attempt appended it (once the in-sync replicas have it), else appended."""
        from iggy_fast.server.service import Context, lookup
        from iggy_fast.server.service.messages import _route

        ctx = Context(self.server, client, time.time_ns() // 1000)
        topic = lookup.existing_topic(ctx, request.stream, request.topic, "send")
        part = self.server.state.partition(
            topic, _route(topic, request.partitioning, request.partitioning_value))
        base = stored_at(part.log, request.batch, since - CLOCK_SKEW_US)
        if base is None:
            return await self.serve_encoded(client, 101, request)
        log.info("partition %s: a retried send is already stored at offset %d: not appended "
                 "again", part.key, base)
        reply = self.server.durability.acknowledge(
            part, Sent(topic.stream.id, topic.id, part.id, base))
        if hasattr(reply, "__await__"):
            reply = await reply
        return [reply_bytes([COMMANDS[101].encode(reply)])]

    async def serve_encoded(self, client, code: int, request) -> list:
        """Serve a request here, its answer encoded as one piece (as a leader answers a
        forwarded one)."""
        from iggy_fast.server.service import Context

        cmd = COMMANDS[code]
        result = cmd.serve(Context(self.server, client, time.time_ns() // 1000), request)
        if hasattr(result, "__await__"):
            result = await result
        pieces = [] if result is None or cmd.encode is None else cmd.encode(result)
        return [reply_bytes(pieces if isinstance(pieces, list) else [pieces])]


async def _after(reply, future):
    if hasattr(reply, "__await__"):
        reply = await reply
    await future
    return reply
