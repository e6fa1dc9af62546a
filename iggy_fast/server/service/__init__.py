"""The service layer: one function per command, whatever transport the request came by.

`fn(ctx, request) -> result` checks the caller's permission (authz.py, the one place the rules
live) and changes or reads the state; it sees typed requests and returns model objects or
typed results (iggy_fast.protocol.requests / results), never bytes of a socket or a JSON
document. A function whose answer must wait (an fsync'd send, an argon2 check on a thread)
returns an awaitable of its result. Errors are raised as IggyError subclasses (or Eviction
for a failed login). The clock is not read here: `ctx.now` (µs) comes from the transport.

Modules by area: system, session, users (and tokens), streams (topics, partitions,
segments), messages (and consumer offsets), groups.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Context(NamedTuple):
    """Who asks, of which server, when."""
    server: Any         # iggy_fast.server.core.Server
    client: Any         # iggy_fast.server.core.Client
    now: int            # µs
