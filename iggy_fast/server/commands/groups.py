"""Consumer groups: PROTOCOL.md §5.8.

A Group record is [id u32][partitions_count u32][members_count u32][name Name]; GroupDetails
appends, per member, [member_id u32][partitions_count u32][partition_id u32 x count].
Permissions follow Iggy: everything here needs read access to the topic (its get_topic rule),
except Sync, which only answers the caller about itself.
"""

from __future__ import annotations

from iggy_fast._wire import Reader, Writer
from iggy_fast.server.dispatch import command


def group_record(w: Writer, g) -> Writer:
    return w.u32(g.id).u32(len(g.topic.partitions)).u32(len(g.members)).name(g.name)


def group_details(g) -> bytearray:
    w = group_record(Writer(), g)
    for mid in sorted(g.members):
        owned = g.assignment.get(mid, [])
        w.u32(mid).u32(len(owned))
        for pid in owned:
            w.u32(pid)
    return w.buf


def _topic(server, client, r: Reader):
    topic = server.state.topic(r.identifier(), r.identifier())
    server.authz.require(client, "read_topic", topic.stream.id, topic.id)
    return topic


@command(600, "get_consumer_group")
def get_consumer_group(server, client, r: Reader, now: int):
    topic = _topic(server, client, r)
    group = server.groups.find(topic, r.identifier())
    r.expect_end()
    return group_details(group) if group is not None else None


@command(601, "get_consumer_groups")
def get_consumer_groups(server, client, r: Reader, now: int):
    topic = _topic(server, client, r)
    r.expect_end()
    w = Writer()
    for group in server.groups.list(topic):
        group_record(w, group)
    return w.buf


@command(602, "create_consumer_group")
async def create_consumer_group(server, client, r: Reader, now: int):
    topic = _topic(server, client, r)
    name = r.name()
    r.expect_end()
    return group_details(await server.groups.create(topic, name))


@command(603, "delete_consumer_group")
async def delete_consumer_group(server, client, r: Reader, now: int):
    topic = _topic(server, client, r)
    ident = r.identifier()
    r.expect_end()
    await server.groups.delete(topic, ident)


@command(604, "join_consumer_group")
def join_consumer_group(server, client, r: Reader, now: int):
    topic = _topic(server, client, r)
    ident = r.identifier()
    r.expect_end()
    server.groups.join(client, topic, ident)


@command(605, "leave_consumer_group")
def leave_consumer_group(server, client, r: Reader, now: int):
    topic = _topic(server, client, r)
    ident = r.identifier()
    r.expect_end()
    server.groups.leave(client, topic, ident)


@command(606, "sync_consumer_group")
def sync_consumer_group(server, client, r: Reader, now: int):
    # Self-scoped, so no permission rule (as Iggy): it only tells the caller its own
    # assignment, and only a member (who needed read access to join) has one.
    topic = server.state.topic(r.identifier(), r.identifier())
    ident = r.identifier()
    r.expect_end()
    synced = server.groups.sync(client, topic, ident)
    if synced is None:
        return None
    generation, partitions = synced
    w = Writer().u64(generation).u32(len(partitions))
    for pid in partitions:
        w.u32(pid)
    return w.buf
