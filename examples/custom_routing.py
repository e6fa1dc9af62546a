"""Custom routing: messages with the same key always land on the same one of 4 partitions.

Two ways, side by side. `MessageKey()` places a key where Iggy itself does (XXH32 of the key
modulo the partition count, as the official SDK and the server compute it). A function of
your own, `calculate_partition_id(key)`, can route by anything; here: by the key's hash too,
so both agree, which the script checks. Then every partition is read back to show that each
user's events sit together, in order.

    python examples/custom_routing.py [--address 127.0.0.1:8090]
"""

import asyncio
from collections import defaultdict

from _common import arguments, fresh_stream, url
from iggy_fast.client import IggyClient, PollingStrategy
from iggy_fast.client.partitioners import MessageKey, partition_for_key
from iggy_fast.client.producer import IggyProducer

STREAM, TOPIC, PARTITIONS = "example-routing", "events", 4
USERS = ["user-1", "user-2", "user-3", "user-123", "alice", "bob"]


def calculate_partition_id(key: str) -> int:
    """The tutorial's custom router: a user's events always go to one partition."""
    return partition_for_key(key, PARTITIONS)


async def main(args) -> None:
    async with IggyClient(url(args)) as client:
        await fresh_stream(client, STREAM)
        await client.create_topic(STREAM, TOPIC, partitions_count=PARTITIONS)
        by_key = IggyProducer(client, STREAM, TOPIC, partitioning=MessageKey())
        by_function = IggyProducer(client, STREAM, TOPIC, partitioning=calculate_partition_id)
        for step in range(3):
            for user in USERS:
                a = await by_key.send(f"{user} event {step}", key=user)
                b = await by_function.send(f"{user} event {step} (custom)", key=user)
                assert a.partition_id == b.partition_id == calculate_partition_id(user)
        placed = defaultdict(list)
        for partition_id in range(PARTITIONS):
            polled = await client.poll_messages(STREAM, TOPIC, partition_id=partition_id,
                                                polling_strategy=PollingStrategy.First(),
                                                count=1000)
            for message in polled:
                placed[partition_id].append(bytes(message.payload).decode())
        for user in USERS:
            print(f"{user:>9} -> partition {calculate_partition_id(user)}")
        for partition_id in range(PARTITIONS):
            print(f"partition {partition_id}: {len(placed[partition_id])} messages")
        await client.delete_stream(STREAM)


if __name__ == "__main__":
    asyncio.run(main(arguments(__doc__.splitlines()[0])))
