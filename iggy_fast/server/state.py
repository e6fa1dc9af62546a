"""The server's data model: streams -> topics -> partitions, following the metadata store.

Memory changes only by `apply(change)`: the snapshot loaded at start, then every change the
store's watch reports, this server's own commits included (metadata/__init__.py). A mutation
(`create_stream`, `delete_topic`, ...) takes the metadata lock, validates against memory,
commits, and returns what the apply made of it. Nothing here touches sockets or reads the
clock: `now` (µs) is always passed in.

Two kinds of numbers. Ids follow PROTOCOL.md §10, as clients see them: streams, topics and
partitions are 0-based, stream and topic ids are the lowest free ones (reused after a delete),
partitions are 0..n-1. Identities are what the store and the disk know them by: a number
from the store's `next_identity` counter, given once and never again. Keys and directories are
paths of identities, the same path in both:

    streams/<s>                              {"id", "name", "created_at"}
    streams/<s>/topics/<t>                   {"id", "name", "created_at", "settings", "explicit"}
    streams/<s>/topics/<t>/partitions/<p>    {"id", "created_at"}
    <data dir>/streams/<s>/topics/<t>/partitions/<p>/    the partition's log and offsets/

(groups.py keeps its records under the topic's key.) So a late or replayed delete, or a slow
directory removal, can only ever remove what it meant to: a stream created later under the
same id has another identity, hence other keys and another directory. Directories are removed
on a worker thread after the commit; whatever a crash left behind (a removal that never ran, or
a creation whose commit was lost with the power) belongs to no live identity and is removed at
start (`sweep`).

Consumer offsets live in the partition's directory (offsets.py), not in the store.

Partition files are opened within one open-files budget (storage/files.py): cold ones are
closed and reopened when needed, so no number of partitions can exhaust the descriptors, at
run time or at start. A creation (CreateTopic, CreatePartitions) makes its partitions' files
before it commits, and the apply of its own commit adopts them; if any cannot be made (no
descriptor left even after closing every cold file, a full disk) it is refused whole and what
it made is removed: nothing reaches the metadata, nothing stays on disk.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
from contextlib import contextmanager

from iggy_fast import _wire
from iggy_fast.config import parse_size
from iggy_fast.protocol.errors import (CannotCreatePartition, CannotCreateStream,
                                       CannotCreateTopic, ConsumerOffsetNotFound, IggyError,
                                       InvalidOffset,
                                       InvalidPartitionsCount, InvalidStreamName, InvalidTopicName,
                                       PartitionNotFound, StreamIdNotFound, StreamNameAlreadyExists,
                                       TooManyPartitions, TopicIdNotFound, TopicNameAlreadyExists)
from iggy_fast.server import options as topic_options
from iggy_fast.server.metadata import Change, MetadataStore
from iggy_fast.server.offsets import ConsumerOffsets
from iggy_fast.server.storage.files import OpenFiles
from iggy_fast.server.storage.log import PartitionLog, remove_fresh_partition

log = logging.getLogger("iggy_fast.state")

MAX_PARTITIONS_PER_REQUEST = 1000
CONSUMER, GROUP = 1, 2
NEXT_IDENTITY = "next_identity"
_KINDS = {"streams", "topics", "partitions"}


def _check_name(name: str, error: type[IggyError]) -> str:
    # Any name of 1..255 bytes, as Iggy: spaces included, leading, trailing or only.
    if not 1 <= len(name.encode()) <= 255:
        raise error()
    return name


@contextmanager
def _no_space_as(error: type[IggyError], what: str):
    """A full disk (or quota) answers `error`, Iggy's code for the operation, not 1."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        log.warning("%s: %s", what, e)
        raise error(f"{what}: {e}") from e


def _lowest_free(ids) -> int:
    i = 0
    while i in ids:
        i += 1
    return i


def consumer_key(kind: int, ident) -> str:
    """How a consumer's offsets are keyed: by numeric id, or xxh32 of its name (as Iggy)."""
    if isinstance(ident, str):
        ident = _wire.xxh32(ident.encode())
    return f"{kind}.{ident}"


def _offsets_durable(topic: "Topic") -> bool:
    # Offsets follow their topic's durability: synced before the reply when the topic
    # enforces fsync or asks for persisted consumer offsets.
    settings = topic.settings
    return settings["enforce_fsync"] or settings["consumer_offset_durability"] == "persisted"


class Partition:
    def __init__(self, topic: "Topic", identity: int, pid: int, created_at: int,
                 log: PartitionLog, offsets: ConsumerOffsets):
        self.topic = topic
        self.identity = identity
        self.path = f"{topic.path}/partitions/{identity}"
        self.id = pid
        self.created_at = created_at
        self.log = log
        self.offsets = offsets
        # In a cluster, on the partition's leader: the high watermark, the end of what every
        # in-sync replica has; polls stop there. None: all that is appended is visible.
        self.high_watermark: int | None = None
        # In a cluster, on the partition's leader: hook(partition, reply) after an offset is
        # stored or deleted, the reply once the in-sync replicas have the offsets too.
        self.offsets_hook = None
        # What consumers polled since start (service/messages.py), for metrics; what was
        # appended the log counts itself.
        self.polled_messages = self.polled_bytes = 0

    @property
    def key(self) -> str:
        """Stream, topic and partition ids, as clients know them (for log lines)."""
        return f"{self.topic.stream.id}/{self.topic.id}/{self.id}"


class Topic:
    def __init__(self, stream: "Stream", identity: int, tid: int, created_at: int):
        self.stream = stream
        self.identity = identity
        self.path = f"{stream.path}/topics/{identity}"
        self.id = tid
        self.created_at = created_at
        self.name = ""
        self.settings: dict = {}
        self.explicit: list = []            # option TLV entries the client set (options.canonical)
        self.partitions: dict[int, Partition] = {}
        self.round_robin = 0                # cursor for Balanced partitioning
        self.extra: dict = {}               # room for other subsystems (consumer groups)

    @property
    def size_bytes(self) -> int:
        return sum(p.log.size_bytes for p in self.partitions.values())

    @property
    def messages_count(self) -> int:
        return sum(p.log.messages_count for p in self.partitions.values())


def _topic_record(tid: int, name: str, created_at: int, settings: dict, explicit) -> dict:
    return {"id": tid, "name": name, "created_at": created_at, "settings": settings,
            "explicit": [[k, key.hex(), vk, v.hex()] for k, key, vk, v in explicit]}


class Stream:
    def __init__(self, identity: int, sid: int, name: str, created_at: int):
        self.identity = identity
        self.path = f"streams/{identity}"
        self.id = sid
        self.name = name
        self.created_at = created_at
        self.topics: dict[int, Topic] = {}

    def topic_by_name(self, name: str) -> Topic | None:
        for t in self.topics.values():
            if t.name == name:
                return t
        return None

    @property
    def size_bytes(self) -> int:
        return sum(t.size_bytes for t in self.topics.values())

    @property
    def messages_count(self) -> int:
        return sum(t.messages_count for t in self.topics.values())


class State:
    """Streams, topics, partitions and consumer offsets, following a MetadataStore."""

    def __init__(self, store: MetadataStore, data_dir: str, cfg: dict, lock: asyncio.Lock):
        self.store = store
        self.data_dir = data_dir
        self.cfg = cfg
        self.lock = lock                # the metadata lock: one mutation decides at a time
        self.defaults = topic_options.default_settings(cfg)
        self.verify_on_open = bool(cfg["system"]["partition"]["validate_checksum"])
        self.max_poll_size = parse_size(cfg["system"]["partition"]["max_poll_size"])
        # Every partition file is opened within this budget (read when first needed: after
        # start-up has set the process's limit).
        self.files = OpenFiles(cfg["system"]["partition"]["max_open_files"])
        # Partitions a creation made on disk before committing: identity -> PartitionLog,
        # adopted by the apply of the commit.
        self._prepared: dict[int, PartitionLog] = {}
        self.streams: dict[int, Stream] = {}                       # by id
        self.by_identity: dict[int, Stream | Topic | Partition] = {}
        self.next_identity: dict | None = None   # the counter's record, as last applied
        self.removals: dict[str, asyncio.Future] = {}   # key -> its directory's removal
        self.listeners = []     # callables(event, topic): groups, replication, metrics hook in

    # -- applying committed changes ------------------------------------------------------

    def apply(self, change: Change) -> None:
        """Make memory follow one committed change (or the start-up snapshot)."""
        touched: set[Topic] = set()
        # A removal takes its object's whole subtree, so deletes go first and leave the
        # prefix deletes (the same subtrees) nothing to do unless they came alone.
        for key in change.deletes:
            self._remove(self._find(key), touched)
        for prefix in change.delete_prefixes:
            parent = self._find(prefix.rstrip("/"))
            for child in list(self._children(parent)):
                self._remove(child, touched)
        for key, value in change.puts:
            if key == NEXT_IDENTITY:
                self.next_identity = value
            else:
                self._put(key, value, touched)
        for topic in touched:
            if self.by_identity.get(topic.identity) is topic:
                self._emit("partitions_changed", topic)

    @staticmethod
    def _parse(key: str):
        """(kind, identity, parent identity) of a stream, topic or partition key, else None
        (another module's key: a group's, a user's)."""
        parts = key.split("/")
        if parts[0] != "streams" or len(parts) % 2 or parts[-2] not in _KINDS:
            return None
        return parts[-2], int(parts[-1]), (int(parts[-3]) if len(parts) > 2 else None)

    def _find(self, key: str):
        """The live object a key names (None for another module's key or a gone object)."""
        parsed = self._parse(key)
        return self.by_identity.get(parsed[1]) if parsed else None

    @staticmethod
    def _children(obj):
        if isinstance(obj, Stream):
            return obj.topics.values()
        if isinstance(obj, Topic):
            return obj.partitions.values()
        return ()

    def _put(self, key: str, v: dict, touched: set) -> None:
        parsed = self._parse(key)
        if parsed is None:
            return
        kind, identity, parent = parsed
        existing = self.by_identity.get(identity)
        if kind == "streams":
            if existing is None:
                existing = Stream(identity, v["id"], v["name"], v["created_at"])
                self.streams[existing.id] = self.by_identity[identity] = existing
            existing.name = v["name"]
        elif kind == "topics":
            if existing is None:
                stream = self.by_identity[parent]
                existing = Topic(stream, identity, v["id"], v["created_at"])
                stream.topics[existing.id] = self.by_identity[identity] = existing
            existing.name = v["name"]
            existing.settings = {**self.defaults, **v["settings"]}
            # Canonical: a record written before explicit options were kept typed shows
            # them typed too.
            existing.explicit = topic_options.canonical(
                [(k, bytes.fromhex(key_hex), vk, bytes.fromhex(v_hex))
                 for k, key_hex, vk, v_hex in v["explicit"]], existing.settings)
        elif existing is None:      # a partition's record never changes once created
            topic = self.by_identity[parent]
            path = self._partition_dir(topic.path, identity)
            plog = self._prepared.pop(identity, None)
            if plog is None:
                plog = PartitionLog(path, v["id"], topic.settings["segment_size"],
                                    self.verify_on_open, self.files)
            part = Partition(topic, identity, v["id"], v["created_at"], plog,
                             ConsumerOffsets(os.path.join(path, "offsets"), self.files))
            topic.partitions[part.id] = self.by_identity[identity] = part
            touched.add(topic)

    def _partition_dir(self, topic_path: str, identity: int) -> str:
        return os.path.join(self.data_dir, f"{topic_path}/partitions/{identity}")

    def _prepare(self, topic_path: str, parts, segment_size: int, error: type[IggyError]):
        """Make the files of new partitions ((identity, id) pairs) before their commit; on
        any failure remove what was made and raise `error`. Returns what to pass to
        `_unprepare` if the commit then fails."""
        # The directories the first partition will make (deepest first), to remove on failure.
        made = []
        directory = os.path.join(self.data_dir, topic_path, "partitions")
        while not os.path.isdir(directory):
            made.append(directory)
            directory = os.path.dirname(directory)
        identities = []
        try:
            for identity, pid in parts:
                path = self._partition_dir(topic_path, identity)
                try:
                    plog = PartitionLog(path, pid, segment_size, self.verify_on_open,
                                        self.files)
                except OSError:
                    remove_fresh_partition(path)     # what it made before it failed
                    raise
                self._prepared[identity] = plog
                identities.append(identity)
        except OSError as e:
            self._unprepare(identities, made)
            log.error("refused to create %d partitions under %s: %s", len(parts), topic_path, e)
            raise error(f"cannot create partition files: {e}") from None
        return identities, made

    def _unprepare(self, identities, made) -> None:
        """Remove prepared partitions that were not adopted by an apply, then the directories
        made for them (deepest first; one still holding anything stays), without listing
        any directory: this must work when no descriptor is left."""
        for identity in identities:
            plog = self._prepared.pop(identity, None)
            if plog is not None:
                plog.discard()
        for directory in made:
            try:
                os.rmdir(directory)
            except OSError:
                pass        # not empty: an apply adopted partitions in it

    def _remove(self, obj, touched: set) -> None:
        if obj is None:
            return
        self._forget(obj)
        if isinstance(obj, Stream):
            del self.streams[obj.id]
        elif isinstance(obj, Topic):
            del obj.stream.topics[obj.id]
        else:
            del obj.topic.partitions[obj.id]
            touched.add(obj.topic)
        self._remove_dir(obj.path)

    def _forget(self, obj) -> None:
        """Drop `obj` and what is under it from the identity map; close its files."""
        for child in list(self._children(obj)):
            self._forget(child)
        del self.by_identity[obj.identity]
        if isinstance(obj, Topic):
            self._emit("topic_deleted", obj)
        elif isinstance(obj, Partition):
            # Not close(): it would wait on the loop for a background sync of the partition.
            obj.log.release()
            obj.offsets.close()

    def _remove_dir(self, path: str) -> None:
        """Remove a deleted object's directory on a worker thread (the loop never waits)."""
        removal = asyncio.get_running_loop().run_in_executor(
            None, shutil.rmtree, os.path.join(self.data_dir, path), True)
        self.removals[path] = removal
        removal.add_done_callback(lambda _: self.removals.pop(path, None))

    async def _removed(self, paths) -> None:
        """Wait (not holding the lock) until these deleted objects' directories are gone, so
        that a delete is answered when its files are."""
        pending = [self.removals[p] for p in paths if p in self.removals]
        if pending:
            await asyncio.gather(*pending)

    def sweep(self) -> None:
        """At start: remove directories that belong to no live identity (left by a removal a
        crash interrupted, or by a creation whose commit a power loss undid)."""
        def walk(directory: str, kinds: list[str]):
            kind, rest = kinds[0], kinds[1:]
            path = os.path.join(directory, kind)
            if not os.path.isdir(path):
                return
            for name in os.listdir(path):
                child = os.path.join(path, name)
                if not name.isdigit() or int(name) not in self.by_identity:
                    log.warning("removing %s: it belongs to no stream, topic or partition",
                                child)
                    shutil.rmtree(child, ignore_errors=True)
                elif rest:
                    walk(child, rest)
        walk(self.data_dir, ["streams", "topics", "partitions"])

    def close(self) -> None:
        for stream in self.streams.values():
            for topic in stream.topics.values():
                for part in topic.partitions.values():
                    part.log.close()
                    part.offsets.close()

    def _emit(self, event: str, obj) -> None:
        for listener in self.listeners:
            listener(event, obj)

    def identity(self) -> int:
        """The first identity the next creation gets (read under the lock)."""
        return self.next_identity["next"] if self.next_identity else 0

    async def _commit(self, puts=(), deletes=(), delete_prefixes=(), durable=False,
                      identities: int = 0) -> None:
        """Commit a change (the caller holds the lock), taking `identities` new identities
        from the counter: the commit carries the counter's value as read, so a store shared
        with other writers refuses it if one took them first."""
        puts = list(puts)
        expect = None
        if identities:
            puts.append((NEXT_IDENTITY, {"next": self.identity() + identities}))
            expect = {NEXT_IDENTITY: self.next_identity}
        await self.store.commit(puts, deletes, delete_prefixes, expect, durable)

    # -- lookups -------------------------------------------------------------------------

    def find_stream(self, ident) -> Stream | None:
        if isinstance(ident, int):
            return self.streams.get(ident)
        for s in self.streams.values():
            if s.name == ident:
                return s
        return None

    def stream(self, ident) -> Stream:
        s = self.find_stream(ident)
        if s is None:
            raise StreamIdNotFound()
        return s

    def find_topic(self, stream: Stream, ident) -> Topic | None:
        if isinstance(ident, int):
            return stream.topics.get(ident)
        return stream.topic_by_name(ident)

    def topic(self, stream_ident, topic_ident) -> Topic:
        t = self.find_topic(self.stream(stream_ident), topic_ident)
        if t is None:
            raise TopicIdNotFound()
        return t

    @staticmethod
    def partition(topic: Topic, pid: int) -> Partition:
        p = topic.partitions.get(pid)
        if p is None:
            raise PartitionNotFound()
        return p

    def live(self, obj) -> bool:
        """Whether `obj` (found before an await) still exists."""
        return self.by_identity.get(obj.identity) is obj

    # -- streams -------------------------------------------------------------------------

    async def create_stream(self, name: str, now: int) -> Stream:
        _check_name(name, InvalidStreamName)
        async with self.lock:
            if self.find_stream(name) is not None:
                raise StreamNameAlreadyExists()
            identity = self.identity()
            record = {"id": _lowest_free(self.streams), "name": name, "created_at": now}
            with _no_space_as(CannotCreateStream, f"cannot create stream {name!r}"):
                await self._commit([(f"streams/{identity}", record)], identities=1)
            return self.by_identity[identity]

    async def update_stream(self, ident, name: str) -> None:
        async with self.lock:
            stream = self.stream(ident)
            _check_name(name, InvalidStreamName)
            other = self.find_stream(name)
            if other is not None and other is not stream:
                raise StreamNameAlreadyExists()
            await self._commit([(stream.path, {"id": stream.id, "name": name,
                                               "created_at": stream.created_at})])

    async def delete_stream(self, ident) -> None:
        async with self.lock:
            stream = self.stream(ident)
            await self._commit(deletes=[stream.path], delete_prefixes=[stream.path + "/"])
        await self._removed([stream.path])

    async def purge_stream(self, ident) -> None:
        async with self.lock:
            for topic in list(self.stream(ident).topics.values()):
                self._purge_topic(topic)

    # -- topics --------------------------------------------------------------------------

    async def create_topic(self, stream_ident, name: str, partitions: int, entries,
                           now: int) -> Topic:
        async with self.lock:
            stream = self.stream(stream_ident)
            _check_name(name, InvalidTopicName)
            if not 0 <= partitions <= MAX_PARTITIONS_PER_REQUEST:
                raise TooManyPartitions() if partitions > 0 else InvalidPartitionsCount()
            if stream.topic_by_name(name) is not None:
                raise TopicNameAlreadyExists()
            settings, explicit = topic_options.resolve(entries, self.defaults)
            identity = self.identity()
            path = f"{stream.path}/topics/{identity}"
            puts = [(path, _topic_record(_lowest_free(stream.topics), name, now, settings,
                                         explicit))]
            puts += [(f"{path}/partitions/{identity + 1 + p}", {"id": p, "created_at": now})
                     for p in range(partitions)]
            prepared = self._prepare(path, [(identity + 1 + p, p) for p in range(partitions)],
                                     settings["segment_size"], CannotCreateTopic)
            # An fsync'd topic's messages must never outlive its metadata after a power loss:
            # its record is committed durably (syncing the WAL also covers its stream's).
            with _no_space_as(CannotCreateTopic, f"cannot create topic {name!r}"):
                await self._commit_prepared(prepared, puts, durable=settings["enforce_fsync"],
                                            identities=1 + partitions)
            return self.by_identity[identity]

    async def _commit_prepared(self, prepared, puts, durable: bool, identities: int) -> None:
        """Commit a creation whose partitions `_prepare` made; they go if it fails."""
        try:
            await self._commit(puts, durable=durable, identities=identities)
        except BaseException:
            self._unprepare(*prepared)
            raise

    async def update_topic(self, stream_ident, topic_ident, name: str, entries) -> None:
        async with self.lock:
            topic = self.topic(stream_ident, topic_ident)
            _check_name(name, InvalidTopicName)
            other = topic.stream.topic_by_name(name)
            if other is not None and other is not topic:
                raise TopicNameAlreadyExists()
            settings, changed = topic_options.resolve(entries, self.defaults, topic.settings,
                                                      updatable_only=True)
            changed_keys = {key for _, key, _, _ in changed}
            explicit = [e for e in topic.explicit if e[1] not in changed_keys] + changed
            explicit.sort(key=lambda e: (e[0], e[1]))
            record = _topic_record(topic.id, name, topic.created_at, settings, explicit)
            durable = settings["enforce_fsync"] or topic.settings["enforce_fsync"]
            await self._commit([(topic.path, record)], durable=durable)

    async def delete_topic(self, stream_ident, topic_ident) -> None:
        async with self.lock:
            topic = self.topic(stream_ident, topic_ident)
            await self._commit(deletes=[topic.path], delete_prefixes=[topic.path + "/"])
        await self._removed([topic.path])

    async def purge_topic(self, stream_ident, topic_ident) -> None:
        async with self.lock:
            self._purge_topic(self.topic(stream_ident, topic_ident))

    @staticmethod
    def _purge_topic(topic: Topic) -> None:
        # Messages and offsets are the partitions' own, not metadata: nothing to commit.
        for part in topic.partitions.values():
            part.log.purge()
            part.offsets.clear()

    # -- partitions ----------------------------------------------------------------------

    async def create_partitions(self, stream_ident, topic_ident, count: int, now: int) -> None:
        async with self.lock:
            topic = self.topic(stream_ident, topic_ident)
            if not 1 <= count <= MAX_PARTITIONS_PER_REQUEST:
                raise TooManyPartitions() if count > 0 else InvalidPartitionsCount()
            start = max(topic.partitions, default=-1) + 1
            identity = self.identity()
            prepared = self._prepare(topic.path, [(identity + i, start + i) for i in range(count)],
                                     topic.settings["segment_size"], CannotCreatePartition)
            with _no_space_as(CannotCreatePartition, f"cannot create partitions of topic "
                                                     f"{topic.stream.id}/{topic.id}"):
                await self._commit_prepared(
                    prepared, [(f"{topic.path}/partitions/{identity + i}",
                                {"id": start + i, "created_at": now}) for i in range(count)],
                    durable=topic.settings["enforce_fsync"], identities=count)

    async def delete_partitions(self, stream_ident, topic_ident, count: int) -> None:
        async with self.lock:
            topic = self.topic(stream_ident, topic_ident)
            if not 1 <= count <= MAX_PARTITIONS_PER_REQUEST:
                raise TooManyPartitions() if count > 0 else InvalidPartitionsCount()
            if count > len(topic.partitions):
                raise InvalidPartitionsCount()
            doomed = [topic.partitions[p].path for p in sorted(topic.partitions)[-count:]]
            await self._commit(deletes=doomed)
        await self._removed(doomed)

    # -- consumer offsets (the partition's own files, see offsets.py) --------------------

    @staticmethod
    def stored_offset(part: Partition, ckey: str) -> int | None:
        return part.offsets.get(ckey)

    @staticmethod
    def store_offset(part: Partition, ckey: str, offset: int, reply=None):
        """Store a consumer's offset: returns `reply`, or an awaitable of it once the offset
        is on disk when the topic asks for durable offsets. No metadata commit, so a poll
        that auto-commits is not made to wait for one."""
        if part.log.next_offset == 0 or offset > part.log.current_offset:
            raise InvalidOffset()
        if part.offsets.get(ckey) != offset:
            synced = part.offsets.store(ckey, offset, _offsets_durable(part.topic))
            reply = reply if synced is None else _then(synced, reply)
        return reply if part.offsets_hook is None else part.offsets_hook(part, reply)

    @staticmethod
    def delete_offset(part: Partition, ckey: str):
        """Forget a consumer's offset: returns None, or an awaitable of the deletion reaching
        the disk when the topic asks for durable offsets."""
        if ckey not in part.offsets:
            raise ConsumerOffsetNotFound()
        done = part.offsets.delete(ckey, _offsets_durable(part.topic))
        return done if part.offsets_hook is None else part.offsets_hook(part, done)

    # -- totals --------------------------------------------------------------------------

    def totals(self) -> dict:
        topics = [t for s in self.streams.values() for t in s.topics.values()]
        parts = [p for t in topics for p in t.partitions.values()]
        return {
            "streams": len(self.streams),
            "topics": len(topics),
            "partitions": len(parts),
            "segments": sum(len(p.log.segments) for p in parts),
            "messages": sum(p.log.messages_count for p in parts),
            "bytes": sum(p.log.size_bytes for p in parts),
        }


async def _then(awaitable, reply):
    await awaitable
    return reply
