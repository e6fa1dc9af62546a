"""Authorization: may this client do that, on that stream or topic? (PROTOCOL.md §8.2)

Handlers call `require_global(client, flag)` for server-wide actions and
`require(client, action, stream_id, topic_id)` for actions on a stream or topic, where
action is one of ACTIONS. A denial raises Unauthorized (41). Root (id 0) may do everything.
"""

from __future__ import annotations

from iggy_fast.errors import IggyError
from iggy_fast.server.users import ROOT_ID

GLOBAL_FLAGS = ("manage_servers", "read_servers", "manage_users", "read_users",
                "manage_streams", "read_streams", "manage_topics", "read_topics",
                "poll_messages", "send_messages")

# read_stream: see a stream; manage_stream: update/delete/purge it; manage_topics: create a
# topic in it; read_topic / manage_topic: see / change a topic; poll / send: messages.
ACTIONS = ("read_stream", "manage_stream", "manage_topics", "read_topic", "manage_topic",
           "poll", "send")


class Authorizer:
    def __init__(self, users):
        self.users = users

    def require_global(self, client, flag: str) -> None:
        if not self.allowed_global(client, flag):
            raise IggyError.from_code(41)

    def require(self, client, action: str, stream_id: int | None = None,
                topic_id: int | None = None) -> None:
        if not self.allowed(client, action, stream_id, topic_id):
            raise IggyError.from_code(41)

    def allowed_global(self, client, flag: str) -> bool:
        return client.user_id == ROOT_ID

    def allowed(self, client, action: str, stream_id=None, topic_id=None) -> bool:
        return client.user_id == ROOT_ID
