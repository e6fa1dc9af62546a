"""iggy-fast's own client: a sans-IO protocol core and thin transports over it."""

from iggy_fast.client.core import ClientCore, Failure, Pending, Reply
from iggy_fast.client.blocking import BlockingClient

__all__ = ["ClientCore", "Failure", "Pending", "Reply", "BlockingClient"]
