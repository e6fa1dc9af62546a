"""Finding the stream or topic a request names, permission first (PROTOCOL.md §8.2).

A caller who may not see a stream must not learn whether it exists, so "missing" and
"forbidden" are told apart only for callers who could see it had it existed. The permission
is decided on the ids the identifiers name: the stream's (topic's) own when it exists, the
number asked for when the identifier is numeric, and no id at all for a name that matches
nothing, which only a global right can cover. Only then is existence looked at: a permitted
caller gets what Iggy answers (None for a missing stream on a read, 1009 / 2010 on a write),
everyone else 41 either way.
"""

from __future__ import annotations

from iggy_fast.protocol.errors import StreamIdNotFound, TopicIdNotFound
from iggy_fast.server.service import Context


def _id(found, ident):
    if found is not None:
        return found.id
    return ident if isinstance(ident, int) else None


def resolve(ctx: Context, stream_ident, topic_ident=None):
    """(stream or None, topic or None, stream id, topic id) as the permission rules see them."""
    state = ctx.server.state
    stream = state.find_stream(stream_ident)
    topic = (state.find_topic(stream, topic_ident)
             if stream is not None and topic_ident is not None else None)
    return stream, topic, _id(stream, stream_ident), _id(topic, topic_ident)


def stream(ctx: Context, ident, action: str):
    """The stream `ident` names, or None; 41 unless `action` on it is allowed."""
    found, _, sid, _ = resolve(ctx, ident)
    ctx.server.authz.require(ctx.client, action, sid)
    return found


def existing_stream(ctx: Context, ident, action: str):
    found = stream(ctx, ident, action)
    if found is None:
        raise StreamIdNotFound()
    return found


def topic(ctx: Context, stream_ident, topic_ident, action: str):
    """The topic named, or None; 41 unless `action` on it is allowed."""
    _, found, sid, tid = resolve(ctx, stream_ident, topic_ident)
    ctx.server.authz.require(ctx.client, action, sid, tid)
    return found


def existing_topic(ctx: Context, stream_ident, topic_ident, action: str):
    s, t, sid, tid = resolve(ctx, stream_ident, topic_ident)
    ctx.server.authz.require(ctx.client, action, sid, tid)
    if s is None:
        raise StreamIdNotFound()
    if t is None:
        raise TopicIdNotFound()
    return t
