"""The metadata store and the model that follows it, in process: commits numbered, watched in
order and reloaded; a failed expectation writes nothing; commits and password hashing leave
the event loop free; concurrent creates of one name (one wins, the other gets its error); and
a change committed by another writer reaching memory through the watch alone."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from iggy_fast.config import load_config
from iggy_fast.protocol.errors import (ConsumerGroupNameAlreadyExists,
                                       PersonalAccessTokenAlreadyExists, StreamNameAlreadyExists,
                                       TopicNameAlreadyExists, UserAlreadyExists)
from iggy_fast.server.core import Server
from iggy_fast.server.metadata import Change, Conflict
from iggy_fast.server.metadata.sqlite import SqliteMetadataStore
from iggy_fast.server.state import NEXT_IDENTITY
from iggy_fast.server.users import hash_password


async def open_server(path) -> Server:
    cfg = load_config(environ={}, overrides={"system": {"path": str(path)},
                                             "root": {"username": "iggy", "password": "iggy"}})
    server = Server(cfg)
    await server.start()
    return server


async def test_commits_are_numbered_watched_in_order_and_reloaded(tmp_path):
    store = SqliteMetadataStore(str(tmp_path))
    seen: list[Change] = []
    loop_thread = threading.get_ident()

    def watcher(change):
        assert threading.get_ident() == loop_thread      # watchers run on the loop
        seen.append(change)

    store.watch(watcher)
    first = await store.commit(puts=[("a/1", {"v": 1}), ("a/2", {"v": 2}), ("b/1", {"v": 3})])
    assert seen == [first] and first.revision == 1       # seen before commit returned
    second = await store.commit(puts=[("a/3", {"v": 4})], deletes=["b/1"],
                                delete_prefixes=["a/"])
    assert seen[-1] == second and second.revision == 2
    # Concurrent commits: each watched once, in revision order, each applied when it returns.
    async def put(i):
        change = await store.commit(puts=[(f"c/{i:02d}", {"i": i})])
        assert seen[change.revision - 1] == change
        return change
    changes = await asyncio.gather(*(put(i) for i in range(20)))
    assert sorted(c.revision for c in changes) == list(range(3, 23))
    assert [c.revision for c in seen] == list(range(1, 23))
    expected = (("a/3", {"v": 4}),) + tuple((f"c/{i:02d}", {"i": i}) for i in range(20))
    snapshot = await store.load()
    assert (snapshot.revision, snapshot.puts) == (22, expected)
    store.close()
    store = SqliteMetadataStore(str(tmp_path))
    snapshot = await store.load()
    assert (snapshot.revision, snapshot.puts) == (22, expected)
    store.close()


async def test_a_failed_expectation_writes_nothing(tmp_path):
    store = SqliteMetadataStore(str(tmp_path))
    seen = []
    store.watch(seen.append)
    await store.commit(puts=[("counter", {"next": 1})], expect={"counter": None})
    with pytest.raises(Conflict):                       # absent expected, present found
        await store.commit(puts=[("counter", {"next": 5}), ("x", {})], expect={"counter": None})
    with pytest.raises(Conflict):                       # another value expected
        await store.commit(deletes=["counter"], expect={"counter": {"next": 0}})
    assert len(seen) == 1
    assert (await store.load()).puts == (("counter", {"next": 1}),)
    done = await store.commit(puts=[("counter", {"next": 2})], expect={"counter": {"next": 1}})
    assert done.revision == 2 and (await store.load()).puts == (("counter", {"next": 2}),)
    store.close()


async def test_commits_and_password_hashing_leave_the_loop_free(tmp_path):
    """While durable commits (fsync) and argon2 hashes run, the loop keeps turning: done on a
    worker thread, the loop would otherwise stop for each one's whole duration."""
    server = await open_server(tmp_path)
    # 16 users at once (below): on the loop, their hashes would run back to back in one turn.
    start = time.perf_counter()
    for _ in range(16):
        hash_password("secret")
    serial = time.perf_counter() - start
    gaps = []

    async def ticker():
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    before = len(gaps)
    await server.store.commit(puts=[("durable/1", {})], durable=True)
    assert len(gaps) > before, "the loop did not turn during a durable commit"
    gaps.clear()
    users = await asyncio.gather(*(server.users.create(f"user-{i}", "secret", 1, None, 1)
                                   for i in range(16)))
    ticking.cancel()
    assert sorted(u.id for u in users) == list(range(1, 17))
    assert max(gaps) < serial / 2, (f"the loop stalled {max(gaps) * 1000:.0f} ms; 16 hashes "
                                    f"take {serial * 1000:.0f} ms")
    server.close()


async def test_concurrent_creates_of_one_name_one_wins(tmp_path):
    server = await open_server(tmp_path)
    state = server.state

    async def race(make, error):
        results = await asyncio.gather(make(), make(), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1 and type(errors[0]) is error, results
        return next(r for r in results if not isinstance(r, BaseException))

    stream = await race(lambda: state.create_stream("s", 1), StreamNameAlreadyExists)
    topic = await race(lambda: state.create_topic("s", "t", 2, [], 1), TopicNameAlreadyExists)
    await race(lambda: server.groups.create(topic, "g"), ConsumerGroupNameAlreadyExists)
    await race(lambda: server.users.create("alice", "secret", 1, None, 1), UserAlreadyExists)
    await race(lambda: server.tokens.create(0, "tok", 0, 1), PersonalAccessTokenAlreadyExists)
    assert [s.name for s in state.streams.values()] == ["s"]
    assert list(stream.topics) == [0] and sorted(topic.partitions) == [0, 1]
    assert [g.name for g in server.groups.list(topic)] == ["g"]
    assert sorted(u.username for u in server.users.by_id.values()) == ["alice", "iggy"]
    server.close()
    # What memory held is what the store holds.
    server = await open_server(tmp_path)
    topic = server.state.topic("s", "t")
    assert [s.name for s in server.state.streams.values()] == ["s"]
    assert sorted(topic.partitions) == [0, 1]
    assert [g.name for g in server.groups.list(topic)] == ["g"]
    assert sorted(server.tokens.by_user[0]) == ["tok"]
    server.close()


async def test_a_change_made_elsewhere_reaches_memory_through_the_watch(tmp_path):
    """Another writer (a cluster peer, later) commits straight to the store: memory follows,
    a partition's log is opened and, once deleted, its directory removed."""
    server = await open_server(tmp_path)
    state = server.state
    first = state.identity()
    stream_key = f"streams/{first}"
    topic_key = f"{stream_key}/topics/{first + 1}"
    partition_key = f"{topic_key}/partitions/{first + 2}"
    await server.store.commit(
        puts=[(stream_key, {"id": 0, "name": "remote", "created_at": 5}),
              (topic_key, {"id": 0, "name": "t", "created_at": 5, "settings": {},
                           "explicit": []}),
              (partition_key, {"id": 0, "created_at": 5}),
              (NEXT_IDENTITY, {"next": first + 3})],
        expect={NEXT_IDENTITY: state.next_identity})
    partition = state.partition(state.topic("remote", "t"), 0)
    assert partition.path == partition_key and partition.log.next_offset == 0
    assert os.path.isdir(os.path.join(server.data_dir, partition_key))
    # Our own next creation takes the identity after the peer's.
    mine = await state.create_stream("mine", 6)
    assert (mine.id, mine.identity) == (1, first + 3)
    await server.store.commit(deletes=[stream_key], delete_prefixes=[stream_key + "/"])
    assert state.find_stream("remote") is None and first + 2 not in state.by_identity
    await asyncio.gather(*state.removals.values())
    assert not os.path.exists(os.path.join(server.data_dir, stream_key))
    server.close()
