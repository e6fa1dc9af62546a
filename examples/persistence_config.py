"""Persistence: a topic with 100 MB segments and 7-day retention, set as topic options.

The options travel with CreateTopic; the server validates them (a segment is 4 KiB..1 GiB)
and keeps them with the topic. The script reads the topic back and prints what the server
stored, then checks that it is what was asked for.

    python examples/persistence_config.py [--address 127.0.0.1:8090]
"""

import asyncio
from datetime import timedelta

from _common import arguments, fresh_stream, url
from iggy_fast.client import IggyClient

STREAM, TOPIC = "example-persistence", "orders"
SEGMENT_SIZE = 100 * 1000 * 1000                # 100 MB per segment file
RETENTION = timedelta(days=7)                   # messages older than this are deleted


async def main(args) -> None:
    async with IggyClient(url(args)) as client:
        await fresh_stream(client, STREAM)
        await client.create_topic(STREAM, TOPIC, partitions_count=2,
                                  segment_size=SEGMENT_SIZE, message_expiry=RETENTION)
        topic = await client.get_topic(STREAM, TOPIC)
        segment = int.from_bytes(topic.option("segment_size"), "little")
        print(f"topic {topic.name}: {topic.partitions_count} partitions")
        print(f"  segment_size   = {segment:,} bytes ({segment / 1e6:.0f} MB)")
        print(f"  message_expiry = {topic.message_expiry:,} us "
              f"({timedelta(microseconds=topic.message_expiry)})")
        assert segment == SEGMENT_SIZE, segment
        assert topic.message_expiry == RETENTION // timedelta(microseconds=1)
        print("read back as configured")
        await client.delete_stream(STREAM)


if __name__ == "__main__":
    asyncio.run(main(arguments(__doc__.splitlines()[0])))
