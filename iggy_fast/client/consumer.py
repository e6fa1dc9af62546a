"""A consumer over the async IggyClient: one consumer or a group member, auto-commit, iterators.

    async with IggyConsumer(client, "orders", "eu", group="billing",
                            auto_commit=AutoCommit.every(1000)) as consumer:
        async for message in consumer:              # one Message at a time
            handle(message.payload)

    async for batch in consumer.batches():          # a PolledMessages per poll (a view)
        for offset, _, _, _, payload, _, _ in batch.tuples():
            ...

Positions. Each partition's position is kept on the client: the first poll of a partition
uses the configured strategy (offset, timestamp, first, last or next: the stored offset + 1),
every later one `Offset(last returned + 1)`. A group member always starts a partition with
Next, from the group's committed offset, and forgets its positions whenever its assignment
changes, so a partition that comes back after another member had it resumes from what that
member committed.

Commits store a consumer offset: the last offset *consumed* on each partition. A message is
consumed once the caller has it and asks for the next (the next message from the message
iterator, the next batch from the batch iterator) or calls `commit()`/`close()`, so a
committed message has been handled.
`auto_commit`:
  * AutoCommit.never(): only `commit()` (and `close()`) commit;
  * AutoCommit.after_poll(): the server stores the last returned offset as part of the poll
    (the poll's auto_commit flag: no extra request, at-most-once);
  * AutoCommit.every(n): a commit once n messages were consumed since the last one;
  * AutoCommit.interval(seconds): a commit when that much time passed since the last one.
`close()` commits what was consumed, leaves the group and stops the iterators.

Rebalancing. A group member reads its assignment (SyncConsumerGroup) every `sync_interval`
seconds, at once when a poll is fenced or a commit refused because a partition moved, and
before every commit. When the assignment changed, the member keeps the positions and what it
consumed of the partitions that cannot have left it (owned before and after one rebalance)
and forgets the rest, starting those again from the group's committed offset. The
server lets only a partition's owner store its offset, so a member that lost a partition
cannot move it. So committed messages are never delivered again and none is skipped;
consumed but uncommitted ones may come again (at-least-once). The one window left: a
partition that moves away and back between two polls of the same member, in less than the
time it takes to handle one batch, is read on from the member's own position.

A poll's answer is the reply buffer itself (`PolledMessages`, a view decoding a message only
when asked); the consumer checks every frame's bounds and reads the batch's last offset in C
(`_wire.poll_summary`) without making an object per message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from iggy_fast import _wire
from iggy_fast.client.metrics import MetricsCollector
from iggy_fast.client.types import Consumer, PollingStrategy
from iggy_fast.protocol.errors import (ConsumerGroupMemberNotFound,
                                       ConsumerGroupNameAlreadyExists,
                                       ConsumerGroupPartitionNotOwned, IggyError,
                                       ResourceNotFound, TopicIdNotFound)
from iggy_fast.protocol.models import PolledMessages

log = logging.getLogger("iggy_fast.consumer")

NEXT = PollingStrategy.Next().kind
OFFSET = PollingStrategy.Offset(0).kind
FENCED = 0xFFFFFFFF
# A commit or poll the server refused because this member does not own the partition (any
# more): re-sync and carry on.
_MOVED = (ResourceNotFound, ConsumerGroupPartitionNotOwned, ConsumerGroupMemberNotFound)


@dataclass(frozen=True)
class AutoCommit:
    """When the consumer commits on its own (see the module docstring)."""
    mode: str                       # never, after_poll, every, interval
    messages: int = 0
    seconds: float = 0.0

    @classmethod
    def never(cls) -> "AutoCommit":
        return cls("never")

    @classmethod
    def after_poll(cls) -> "AutoCommit":
        return cls("after_poll")

    @classmethod
    def every(cls, messages: int) -> "AutoCommit":
        if messages < 1:
            raise ValueError("commit every n messages needs n >= 1")
        return cls("every", messages=messages)

    @classmethod
    def interval(cls, seconds: float) -> "AutoCommit":
        if seconds <= 0:
            raise ValueError("a commit interval must be positive")
        return cls("interval", seconds=seconds)


class IggyConsumer:
    def __init__(self, client, stream, topic, *, group: int | str | None = None,
                 consumer_id: int | str = 1, partitions: list[int] | None = None,
                 strategy: PollingStrategy | None = None, batch_length: int = 1000,
                 auto_commit: AutoCommit | None = None, poll_interval: float = 0.01,
                 create_group: bool = True, metrics: MetricsCollector | None = None,
                 name: str = "consumer", sync_interval: float = 1.0):
        """A group member when `group` is given (partitions are assigned), else consumer
        `consumer_id` reading `partitions` (default: all of the topic's) in turn.
        `poll_interval` is the pause after a round of polls that found nothing;
        `sync_interval` how often a group member asks for its assignment unprompted (to
        take partitions that came free)."""
        self.client = client
        self.stream = stream
        self.topic = topic
        self.group = group
        self.consumer = Consumer.group(group) if group is not None else \
            Consumer.single(consumer_id)
        self.partitions = list(partitions) if partitions is not None else None
        self.strategy = strategy or PollingStrategy.Next()
        self.batch_length = batch_length
        self.auto_commit = auto_commit or AutoCommit.every(batch_length)
        self.poll_interval = poll_interval
        self.sync_interval = sync_interval
        self._last_sync = 0.0
        self.create_group = create_group
        self.stats = metrics.actor(name) if metrics is not None else None
        self.positions: dict[int, int] = {}     # partition -> last offset polled
        self.consumed: dict[int, int] = {}      # partition -> last offset consumed
        self.committed: dict[int, int] = {}     # partition -> last offset committed
        self.owned: list[int] = []
        self.generation = -1
        self.closed = False
        self._initialised = False
        self._since_commit = 0
        self._last_commit = time.monotonic()
        self._cursor = 0
        # Handed out, not yet consumed: (partition, last offset), or (partition, None) with
        # the last message handed out in _held_message.
        self._held: tuple[int, int | None] | None = None
        self._held_message = None

    # -- life cycle ----------------------------------------------------------------------------

    async def init(self) -> "IggyConsumer":
        if self.group is not None:
            if self.create_group:
                try:
                    await self.client.create_consumer_group(self.stream, self.topic,
                                                            str(self.group))
                except ConsumerGroupNameAlreadyExists:
                    pass
            await self.client.join_consumer_group(self.stream, self.topic, self.group)
            await self._sync()
        elif self.partitions is None:
            topic = await self.client.get_topic(self.stream, self.topic)
            if topic is None:
                raise TopicIdNotFound(f"topic {self.topic!r} of stream {self.stream!r} "
                                      f"not found")
            self.owned = list(range(topic.partitions_count))
        else:
            self.owned = list(self.partitions)
        self._initialised = True
        return self

    async def __aenter__(self) -> "IggyConsumer":
        return await self.init() if not self._initialised else self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Commit what was consumed, leave the group, stop the iterators."""
        if self.closed:
            return
        try:
            if self._initialised:
                await self.commit()
        finally:
            self.closed = True
            if self.group is not None and self._initialised:
                try:
                    await self.client.leave_consumer_group(self.stream, self.topic, self.group)
                except _MOVED:
                    pass

    # -- assignment ----------------------------------------------------------------------------

    async def _sync(self) -> bool:
        """Read this member's partitions; on a new generation keep only the state of the
        partitions that cannot have left meanwhile (and say that it changed)."""
        self._last_sync = time.monotonic()
        assignment = await self.client.sync_consumer_group(self.stream, self.topic,
                                                           self.group)
        rejoined = assignment is None
        if rejoined:                    # dropped (reconnected, heartbeats missed): join again
            await self.client.join_consumer_group(self.stream, self.topic, self.group)
            assignment = await self.client.sync_consumer_group(self.stream, self.topic,
                                                               self.group)
        generation, owned = assignment.generation, list(assignment.partitions)
        if generation == self.generation and not rejoined:
            return False
        # Each rebalance adds one to the generation. One step, and a partition owned before
        # and after never left: its position and what was consumed stay. Otherwise it may
        # have moved and even come back with its offset moved on, so what was consumed and
        # not committed is forgotten: it may come again; committed messages cannot.
        kept = set(owned) & set(self.owned) if generation == self.generation + 1 \
            and not rejoined else set()
        for state in (self.positions, self.consumed, self.committed):
            for partition_id in [p for p in state if p not in kept]:
                del state[partition_id]
        if self._held is not None and self._held[0] not in kept:
            self._held = self._held_message = None
        self.generation = generation
        self.owned = owned
        return True

    # -- polling -------------------------------------------------------------------------------

    async def poll(self, partition_id: int) -> PolledMessages:
        """One poll of `partition_id` from its position (or the configured strategy); the
        position moves past what it returned."""
        polled, last = await self._poll(partition_id)
        self._advance(partition_id, last)
        return polled

    async def _poll(self, partition_id: int) -> tuple[PolledMessages, int]:
        position = self.positions.get(partition_id)
        if position is not None:
            strategy = PollingStrategy.Offset(position + 1)
        elif self.group is not None:
            strategy = PollingStrategy.Next()
        else:
            strategy = self.strategy
        t0 = time.perf_counter()
        try:
            polled = await self.client.poll_messages(
                self.stream, self.topic, partition_id=partition_id, polling_strategy=strategy,
                count=self.batch_length, auto_commit=self.auto_commit.mode == "after_poll",
                consumer=self.consumer)
        except BaseException as e:
            if self.stats is not None and not isinstance(e, asyncio.CancelledError):
                self.stats.error(e)
            raise
        _, _, count, _, last, nbytes = _wire.poll_summary(polled.body)
        if self.stats is not None:
            self.stats.received(count, nbytes, time.perf_counter() - t0)
        return polled, last

    def _advance(self, partition_id: int, last: int) -> None:
        if last >= 0:
            self.positions[partition_id] = last
            if self.auto_commit.mode == "after_poll":
                self.committed[partition_id] = last

    async def batches(self, idle_timeout: float | None = None):
        """Each non-empty poll, as a PolledMessages; the previous batch counts as consumed
        when the next is asked for. Ends on close(), or after `idle_timeout` seconds without
        a message.

        While the caller works on a batch, the poll of the next partition in turn (the same
        one when there is one) is already in flight, so the server's work and the caller's
        overlap; positions move only when an answer is taken, so an answer dropped because
        the assignment changed meanwhile costs nothing (not done with AutoCommit.after_poll,
        where the poll itself commits).
        """
        if not self._initialised:
            await self.init()
        idle_since = time.monotonic()
        ahead: tuple[int, asyncio.Task] | None = None
        try:
            while not self.closed:
                if (self.group is not None
                        and time.monotonic() - self._last_sync >= self.sync_interval
                        and await self._sync()):
                    ahead = await _drop(ahead)
                owned = self.owned
                got = False
                for i in range(len(owned)):
                    k = (self._cursor + i) % len(owned)
                    partition_id = owned[k]
                    try:
                        if ahead is not None and ahead[0] == partition_id:
                            polled, last = await ahead[1]
                        else:
                            ahead = await _drop(ahead)
                            polled, last = await self._poll(partition_id)
                    except _MOVED:
                        polled = None
                    finally:
                        if ahead is not None and ahead[0] == partition_id:
                            ahead = None
                    if polled is None or polled.partition_id == FENCED:
                        ahead = await _drop(ahead)
                        await self._sync()
                        break
                    if not polled.count:
                        continue
                    got = True
                    self._advance(partition_id, last)
                    self._cursor = (k + 1) % len(owned)
                    if self.auto_commit.mode != "after_poll":
                        # (Not when polls commit: a dropped answer would be a lost message.)
                        following = owned[self._cursor]
                        ahead = (following, asyncio.ensure_future(self._poll(following)))
                    self._held = (partition_id, last)
                    yield polled
                    self._consume_held()
                    await self._auto_commit()
                    break
                if got:
                    idle_since = time.monotonic()
                    continue
                if idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                    return
                await asyncio.sleep(self.poll_interval)
        finally:
            await _drop(ahead)

    async def messages(self, idle_timeout: float | None = None):
        """Each message as a `Message` (offset, payload, headers...), built when reached."""
        async for batch in self.batches(idle_timeout):
            # Only the messages handed out are consumed: the last one is known when the
            # caller asks for the next batch, commits or closes (one store per message here,
            # no object).
            self._held = (self._held[0], None)
            for message in batch:
                self._held_message = message
                yield message

    def __aiter__(self):
        return self.messages()

    # -- commits -------------------------------------------------------------------------------

    def _consume_held(self) -> None:
        if self._held is not None:
            partition_id, last = self._held
            if last is None:
                last = self._held_message.offset if self._held_message is not None else None
                self._held_message = None
                if last is None:
                    self._held = None
                    return
            before = self.consumed.get(partition_id)
            self.consumed[partition_id] = last
            self._since_commit += last - (before if before is not None else -1)
            self._held = None

    async def _auto_commit(self) -> None:
        mode = self.auto_commit.mode
        if (mode == "every" and self._since_commit >= self.auto_commit.messages
                or mode == "interval"
                and time.monotonic() - self._last_commit >= self.auto_commit.seconds):
            try:
                await self.commit()
            except _MOVED:
                await self._sync()

    async def commit(self) -> None:
        """Store the last consumed offset of every partition that moved since its last
        commit; what the iterators handed out so far counts as consumed (a caller commits
        what it has handled). Raises ResourceNotFound for a partition this member no longer
        owns (after committing the others)."""
        self._consume_held()
        self._since_commit = 0
        self._last_commit = time.monotonic()
        if self.group is not None and any(self.committed.get(p) != o
                                          for p, o in self.consumed.items()):
            # Commit only what is still this member's under the current assignment.
            await self._sync()
        refused = None
        for partition_id, offset in list(self.consumed.items()):
            if self.committed.get(partition_id) == offset:
                continue
            try:
                await self.client.store_consumer_offset(self.stream, self.topic, offset,
                                                        partition_id, consumer=self.consumer)
            except _MOVED as e:
                # Not ours any more: its new owner goes on from the last committed offset.
                self.consumed.pop(partition_id, None)
                refused = refused or e
                continue
            self.committed[partition_id] = offset
        if refused is not None:
            raise refused


async def _drop(ahead):
    """Abandon a poll in flight (its answer is stale or unwanted); always None."""
    if ahead is not None:
        task = ahead[1]
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, IggyError, ConnectionError, TimeoutError):
            pass
    return None
