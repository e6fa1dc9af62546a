"""The server's data model: streams -> topics -> partitions, and consumer offsets.

Everything lives in memory, is written through to the `MetadataStore` on every change, and is
rebuilt from it (plus the partition logs on disk) at start. Ids follow PROTOCOL.md §10: streams,
topics and partitions are 0-based, stream and topic ids are the lowest free ones (reused after a
delete), partitions are 0..n-1. Nothing here touches sockets or reads the clock: `now` (µs) is
always passed in.
"""

from __future__ import annotations

import os
import shutil

from iggy_fast import _wire
from iggy_fast.protocol.errors import (ConsumerOffsetNotFound, IggyError, InvalidOffset,
                                       InvalidPartitionsCount, InvalidStreamName, InvalidTopicName,
                                       PartitionNotFound, StreamIdNotFound, StreamNameAlreadyExists,
                                       TooManyPartitions, TopicIdNotFound, TopicNameAlreadyExists)
from iggy_fast.server import options as topic_options
from iggy_fast.server.metadata import MetadataStore
from iggy_fast.server.storage.log import PartitionLog

MAX_PARTITIONS_PER_REQUEST = 1000
CONSUMER, GROUP = 1, 2


def _check_name(name: str, error: type[IggyError]) -> str:
    if not 1 <= len(name.encode()) <= 255 or name.strip() != name or not name:
        raise error()
    return name


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


class Partition:
    def __init__(self, topic: "Topic", pid: int, created_at: int, log: PartitionLog):
        self.topic = topic
        self.id = pid
        self.created_at = created_at
        self.log = log
        self.offsets: dict[str, int] = {}   # consumer key -> stored offset

    @property
    def key(self) -> str:
        return f"{self.topic.stream.id}/{self.topic.id}/{self.id}"


class Topic:
    def __init__(self, stream: "Stream", tid: int, name: str, created_at: int,
                 settings: dict, explicit: list):
        self.stream = stream
        self.id = tid
        self.name = name
        self.created_at = created_at
        self.settings = settings
        self.explicit = explicit            # option TLV entries the client set, verbatim
        self.partitions: dict[int, Partition] = {}
        self.round_robin = 0                # cursor for Balanced partitioning
        self.extra: dict = {}               # room for other subsystems (consumer groups)

    @property
    def size_bytes(self) -> int:
        return sum(p.log.size_bytes for p in self.partitions.values())

    @property
    def messages_count(self) -> int:
        return sum(p.log.messages_count for p in self.partitions.values())

    def record(self) -> dict:
        return {"name": self.name, "created_at": self.created_at, "settings": self.settings,
                "explicit": [[k, key.hex(), vk, v.hex()] for k, key, vk, v in self.explicit]}


class Stream:
    def __init__(self, sid: int, name: str, created_at: int):
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
    """Streams, topics, partitions and consumer offsets, persisted through a MetadataStore."""

    def __init__(self, store: MetadataStore, data_dir: str, cfg: dict):
        self.store = store
        self.data_dir = data_dir
        self.cfg = cfg
        self.defaults = topic_options.default_settings(cfg)
        self.verify_on_open = bool(cfg["system"]["partition"]["validate_checksum"])
        self.streams: dict[int, Stream] = {}
        self.listeners = []     # callables(event, obj): groups, replication, metrics hook in

    # -- loading -------------------------------------------------------------------------

    def load(self) -> None:
        for key, v in self.store.scan("streams/"):
            sid = int(key.split("/")[1])
            self.streams[sid] = Stream(sid, v["name"], v["created_at"])
        for key, v in self.store.scan("topics/"):
            _, sid, tid = key.split("/")
            stream = self.streams[int(sid)]
            explicit = [(k, bytes.fromhex(key_hex), vk, bytes.fromhex(v_hex))
                        for k, key_hex, vk, v_hex in v["explicit"]]
            settings = {**self.defaults, **v["settings"]}
            stream.topics[int(tid)] = Topic(stream, int(tid), v["name"], v["created_at"],
                                            settings, explicit)
        for key, v in self.store.scan("partitions/"):
            _, sid, tid, pid = key.split("/")
            topic = self.streams[int(sid)].topics[int(tid)]
            self._open_partition(topic, int(pid), v["created_at"])
        for key, offset in self.store.scan("offsets/"):
            _, sid, tid, pid, ckey = key.split("/")
            part = self._find_partition(int(sid), int(tid), int(pid))
            if part is not None:
                part.offsets[ckey] = offset["offset"]

    def _find_partition(self, sid, tid, pid):
        stream = self.streams.get(sid)
        topic = stream.topics.get(tid) if stream else None
        return topic.partitions.get(pid) if topic else None

    def partition_dir(self, sid: int, tid: int | None = None, pid: int | None = None) -> str:
        path = os.path.join(self.data_dir, "streams", str(sid))
        if tid is not None:
            path = os.path.join(path, "topics", str(tid))
        if pid is not None:
            path = os.path.join(path, "partitions", str(pid))
        return path

    def _open_partition(self, topic: Topic, pid: int, created_at: int) -> Partition:
        log = PartitionLog(self.partition_dir(topic.stream.id, topic.id, pid), pid,
                           topic.settings["segment_size"], self.verify_on_open)
        part = Partition(topic, pid, created_at, log)
        topic.partitions[pid] = part
        return part

    def close(self) -> None:
        for stream in self.streams.values():
            for topic in stream.topics.values():
                for part in topic.partitions.values():
                    part.log.close()

    def _emit(self, event: str, obj) -> None:
        for listener in self.listeners:
            listener(event, obj)

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

    # -- streams -------------------------------------------------------------------------

    def create_stream(self, name: str, now: int) -> Stream:
        _check_name(name, InvalidStreamName)
        if self.find_stream(name) is not None:
            raise StreamNameAlreadyExists()
        sid = _lowest_free(self.streams)
        stream = Stream(sid, name, now)
        self.store.apply(puts=[(f"streams/{sid}", {"name": name, "created_at": now})])
        self.streams[sid] = stream
        return stream

    def update_stream(self, ident, name: str) -> None:
        stream = self.stream(ident)
        _check_name(name, InvalidStreamName)
        other = self.find_stream(name)
        if other is not None and other is not stream:
            raise StreamNameAlreadyExists()
        self.store.apply(puts=[(f"streams/{stream.id}",
                                {"name": name, "created_at": stream.created_at})])
        stream.name = name

    def delete_stream(self, ident) -> None:
        stream = self.stream(ident)
        sid = stream.id
        self.store.apply(deletes=[f"streams/{sid}"],
                         delete_prefixes=[f"{kind}/{sid}/" for kind in
                                          ("topics", "partitions", "offsets", "groups",
                                           "groupseq")])
        for topic in list(stream.topics.values()):
            self._emit("topic_deleted", topic)
            for part in topic.partitions.values():
                part.log.close()
        del self.streams[sid]
        shutil.rmtree(self.partition_dir(sid), ignore_errors=True)

    def purge_stream(self, ident) -> None:
        for topic in list(self.stream(ident).topics.values()):
            self._purge_topic(topic)

    # -- topics --------------------------------------------------------------------------

    def create_topic(self, stream_ident, name: str, partitions: int, entries, now: int) -> Topic:
        stream = self.stream(stream_ident)
        _check_name(name, InvalidTopicName)
        if not 0 <= partitions <= MAX_PARTITIONS_PER_REQUEST:
            raise TooManyPartitions() if partitions > 0 else InvalidPartitionsCount()
        if stream.topic_by_name(name) is not None:
            raise TopicNameAlreadyExists()
        settings, explicit = topic_options.resolve(entries, self.defaults)
        tid = _lowest_free(stream.topics)
        topic = Topic(stream, tid, name, now, settings, explicit)
        puts = [(f"topics/{stream.id}/{tid}", topic.record())]
        puts += [(f"partitions/{stream.id}/{tid}/{p}", {"created_at": now})
                 for p in range(partitions)]
        # A directory left by a deleted topic with the same id must not leak old messages.
        shutil.rmtree(self.partition_dir(stream.id, tid), ignore_errors=True)
        # An fsync'd topic's messages must never outlive its metadata after a power loss: its
        # record is committed durably (syncing the WAL also covers its stream's record).
        self.store.apply(puts=puts, durable=settings["enforce_fsync"])
        stream.topics[tid] = topic
        for p in range(partitions):
            self._open_partition(topic, p, now)
        return topic

    def update_topic(self, stream_ident, topic_ident, name: str, entries) -> None:
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
        old = (topic.name, topic.settings, topic.explicit)
        topic.name, topic.settings, topic.explicit = name, settings, explicit
        try:
            self.store.apply(puts=[(f"topics/{topic.stream.id}/{topic.id}", topic.record())],
                             durable=settings["enforce_fsync"] or old[1]["enforce_fsync"])
        except BaseException:
            topic.name, topic.settings, topic.explicit = old
            raise

    def delete_topic(self, stream_ident, topic_ident) -> None:
        topic = self.topic(stream_ident, topic_ident)
        sid, tid = topic.stream.id, topic.id
        self.store.apply(deletes=[f"topics/{sid}/{tid}", f"groupseq/{sid}/{tid}"],
                         delete_prefixes=[f"{kind}/{sid}/{tid}/" for kind in
                                          ("partitions", "offsets", "groups")])
        self._emit("topic_deleted", topic)
        for part in topic.partitions.values():
            part.log.close()
        del topic.stream.topics[tid]
        shutil.rmtree(self.partition_dir(sid, tid), ignore_errors=True)

    def purge_topic(self, stream_ident, topic_ident) -> None:
        self._purge_topic(self.topic(stream_ident, topic_ident))

    def _purge_topic(self, topic: Topic) -> None:
        self.store.apply(delete_prefixes=[f"offsets/{topic.stream.id}/{topic.id}/"])
        for part in topic.partitions.values():
            part.log.purge()
            part.offsets.clear()

    # -- partitions ----------------------------------------------------------------------

    def create_partitions(self, stream_ident, topic_ident, count: int, now: int) -> None:
        topic = self.topic(stream_ident, topic_ident)
        if not 1 <= count <= MAX_PARTITIONS_PER_REQUEST:
            raise TooManyPartitions() if count > 0 else InvalidPartitionsCount()
        start = max(topic.partitions, default=-1) + 1
        ids = range(start, start + count)
        for pid in ids:
            shutil.rmtree(self.partition_dir(topic.stream.id, topic.id, pid), ignore_errors=True)
        self.store.apply(puts=[(f"partitions/{topic.stream.id}/{topic.id}/{p}",
                                {"created_at": now}) for p in ids],
                         durable=topic.settings["enforce_fsync"])
        for pid in ids:
            self._open_partition(topic, pid, now)
        self._emit("partitions_changed", topic)

    def delete_partitions(self, stream_ident, topic_ident, count: int) -> None:
        topic = self.topic(stream_ident, topic_ident)
        if not 1 <= count <= MAX_PARTITIONS_PER_REQUEST:
            raise TooManyPartitions() if count > 0 else InvalidPartitionsCount()
        if count > len(topic.partitions):
            raise InvalidPartitionsCount()
        doomed = sorted(topic.partitions)[-count:]
        sid, tid = topic.stream.id, topic.id
        self.store.apply(deletes=[f"partitions/{sid}/{tid}/{p}" for p in doomed],
                         delete_prefixes=[f"offsets/{sid}/{tid}/{p}/" for p in doomed])
        for pid in doomed:
            topic.partitions.pop(pid).log.destroy()
        self._emit("partitions_changed", topic)

    # -- consumer offsets ----------------------------------------------------------------

    def stored_offset(self, part: Partition, ckey: str) -> int | None:
        return part.offsets.get(ckey)

    def store_offset(self, part: Partition, ckey: str, offset: int) -> None:
        if part.log.next_offset == 0 or offset > part.log.current_offset:
            raise InvalidOffset()
        if part.offsets.get(ckey) == offset:
            return
        # Offsets follow their topic's durability: synced before the reply when the topic
        # enforces fsync or asks for persisted consumer offsets.
        settings = part.topic.settings
        durable = (settings["enforce_fsync"]
                   or settings["consumer_offset_durability"] == "persisted")
        self.store.apply(puts=[(f"offsets/{part.key}/{ckey}", {"offset": offset})],
                         durable=durable)
        part.offsets[ckey] = offset

    def delete_offset(self, part: Partition, ckey: str) -> None:
        if ckey not in part.offsets:
            raise ConsumerOffsetNotFound()
        self.store.apply(deletes=[f"offsets/{part.key}/{ckey}"])
        del part.offsets[ckey]

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

