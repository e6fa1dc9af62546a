"""iggy-fast's own client: a sans-IO protocol core and thin transports over it."""

from iggy_fast.client.core import ClientCore, Failure, Pending, Reply
from iggy_fast.client.blocking import BlockingClient, SyncIggyClient
from iggy_fast.client.aio import IggyClient
from iggy_fast.client.connection_string import ClientConfig
from iggy_fast.client.types import Consumer, Partitioning, PollingStrategy, SendMessage

__all__ = ["ClientCore", "Failure", "Pending", "Reply", "BlockingClient", "IggyClient",
           "SyncIggyClient", "ClientConfig", "Consumer", "Partitioning", "PollingStrategy",
           "SendMessage"]
