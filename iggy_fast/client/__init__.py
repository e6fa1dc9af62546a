"""iggy-fast's own client: a sans-IO protocol core and thin transports over it."""

from iggy_fast.client.protocol import ClientProtocol, Reply
from iggy_fast.client.blocking import BlockingClient

__all__ = ["ClientProtocol", "Reply", "BlockingClient"]
