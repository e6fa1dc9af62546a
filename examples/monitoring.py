"""Monitoring: messages per second, sent and received, printed every second by the client.

A `MetricsCollector` is handed to a producer and a consumer; each records every request
(messages, bytes, latency, errors), and `start(1.0)` prints a line per actor every second.
Runs for `--seconds` (default 3), then prints the totals.

    python examples/monitoring.py [--address 127.0.0.1:8090] [--seconds 3]
"""

import asyncio
import time

from _common import arguments, fresh_stream, url
from iggy_fast.client import IggyClient
from iggy_fast.client.consumer import IggyConsumer
from iggy_fast.client.metrics import MetricsCollector
from iggy_fast.client.producer import IggyProducer

STREAM, TOPIC = "example-monitoring", "metrics"


async def produce(producer, until: float) -> None:
    payloads = [b"x" * 100] * 100
    while time.monotonic() < until:
        await producer.send(payloads)


async def consume(consumer, until: float) -> None:
    async for _batch in consumer.batches(idle_timeout=0.5):
        if time.monotonic() >= until:
            break


async def main(args) -> None:
    metrics = MetricsCollector()
    async with IggyClient(url(args)) as client:
        await fresh_stream(client, STREAM)
        await client.create_topic(STREAM, TOPIC, partitions_count=2)
        producer = IggyProducer(client, STREAM, TOPIC, metrics=metrics, name="producer")
        consumer = IggyConsumer(client, STREAM, TOPIC, consumer_id=1, metrics=metrics,
                                name="consumer")
        metrics.start(1.0)
        until = time.monotonic() + args.seconds
        try:
            await asyncio.gather(produce(producer, until), consume(consumer, until))
        finally:
            metrics.stop()
            await consumer.close()
        total = metrics.snapshot()
        print(f"sent {total['producer'].messages_sent:,} messages, received "
              f"{total['consumer'].messages_received:,}, errors "
              f"{total['producer'].errors + total['consumer'].errors}")
        await client.delete_stream(STREAM)


if __name__ == "__main__":
    asyncio.run(main(arguments(__doc__.splitlines()[0], seconds=(3.0, "how long to run"))))
