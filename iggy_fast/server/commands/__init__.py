"""Command handlers, one module per area; importing this package registers them all."""

from iggy_fast.server.commands import (groups, messages, session, streams, system,  # noqa: F401
                                       users)
