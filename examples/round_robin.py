"""Round-robin: 100 messages spread evenly over 4 partitions, then the count per partition.

`Balanced()` (the default partitioning) sends each send to the next partition in turn: 0, 1,
2, 3, 0, ... so 100 single-message sends put 25 messages on each partition.

    python examples/round_robin.py [--address 127.0.0.1:8090]
"""

import asyncio

from _common import arguments, fresh_stream, url
from iggy_fast.client import IggyClient
from iggy_fast.client.partitioners import Balanced
from iggy_fast.client.producer import IggyProducer

STREAM, TOPIC, PARTITIONS, MESSAGES = "example-round-robin", "events", 4, 100


async def main(args) -> None:
    async with IggyClient(url(args)) as client:
        await fresh_stream(client, STREAM)
        await client.create_topic(STREAM, TOPIC, partitions_count=PARTITIONS)
        producer = IggyProducer(client, STREAM, TOPIC, partitioning=Balanced())
        for i in range(MESSAGES):
            await producer.send(f"message {i}")
        topic = await client.get_topic(STREAM, TOPIC)
        for partition in topic.partitions:
            print(f"partition {partition.id}: {partition.messages_count} messages")
        await client.delete_stream(STREAM)


if __name__ == "__main__":
    asyncio.run(main(arguments(__doc__.splitlines()[0])))
