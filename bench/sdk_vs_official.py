"""Our producer and consumer against the official SDK's (apache-iggy 0.9.0), same server, one run.

    python bench/sdk_vs_official.py [--messages 100000] [--rounds 3] [--address HOST:PORT]

Workloads: 1000-byte messages and 100-byte messages, 1000 per batch, one partition, one
producer then one consumer at a time, each side a single asyncio task on one connection.

* Producers send `--messages` messages in batches of 1000 to partition 0: in direct mode,
  each send waiting for its confirmation (ours `IggyProducer.send(payloads, partition=0)`,
  theirs `IggyProducer.send(list of SendMessage)` from `client.producer(...)` with
  DirectProducerConfig), and in background mode until every message is confirmed (ours
  `background=True, max_in_flight=4` then `flush()`, theirs BackgroundProducerConfig() then
  `shutdown()`). Both reuse their prepared message list on every send, so neither pays for
  building messages.
* Consumers then read every message back, 1000 per poll, and touch each payload: ours with
  the batch iterator (`for payload in batch.payloads(): payload[0]`, zero-copy views of the
  reply) and with the message iterator (`async for message in consumer: message.payload`).
  As a consumer group member (the offset stored by each poll: the official
  `AutoCommitWhen.PollingMessages`, our `AutoCommit.after_poll()`) against the official
  `consumer.iter_messages()` reading `message.payload()`; and as a single consumer (ours from
  First, no commits, the next poll in flight while a batch is read) against the official
  SDK's lowest level, a `poll_messages(..., Offset(n), count=1000)` loop reading each
  `payload()`.

Rounds are interleaved (official, ours, official, ours...) on one fresh server, each round on
fresh topics; the best round of each is reported, with the ratio ours / official. Without
`--address` a server is started on free ports with a temporary data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import timedelta

from iggy_fast.client import IggyClient, PollingStrategy
from iggy_fast.client.consumer import AutoCommit, IggyConsumer
from iggy_fast.client.producer import IggyProducer
from iggy_fast.testing import ServerProcess

BATCH = 1000


async def ours_produce(client, stream, topic, payload: bytes, total: int) -> float:
    producer = IggyProducer(client, stream, topic, batch_length=BATCH)
    await producer.init()
    payloads = [payload] * BATCH
    start = time.perf_counter()
    for _ in range(total // BATCH):
        await producer.send(payloads, partition=0)
    return total / (time.perf_counter() - start)


async def ours_produce_background(client, stream, topic, payload: bytes, total: int) -> float:
    producer = IggyProducer(client, stream, topic, batch_length=BATCH, background=True,
                            linger=0.001, max_in_flight=4)
    await producer.init()
    payloads = [payload] * BATCH
    start = time.perf_counter()
    for _ in range(total // BATCH):
        await producer.send(payloads, partition=0)
    await producer.flush()
    rate = total / (time.perf_counter() - start)
    await producer.close()
    return rate


async def ours_consume(client, stream, topic, total: int, per_message: bool,
                       group: bool = True) -> float:
    if group:
        consumer = IggyConsumer(client, stream, topic, group=f"g-{os.urandom(4).hex()}",
                                batch_length=BATCH, auto_commit=AutoCommit.after_poll())
    else:
        consumer = IggyConsumer(client, stream, topic, consumer_id=1, partitions=[0],
                                strategy=PollingStrategy.First(), batch_length=BATCH,
                                auto_commit=AutoCommit.never())
    await consumer.init()
    got = 0
    start = time.perf_counter()
    if per_message:
        async for message in consumer:
            message.payload
            got += 1
            if got == total:
                break
    else:
        async for batch in consumer.batches():
            for payload in batch.payloads():
                payload[0]
                got += 1
            if got >= total:
                break
    rate = got / (time.perf_counter() - start)
    await consumer.close()
    return rate


async def official_produce(client, stream, topic, payload: bytes, total: int) -> float:
    from apache_iggy import DirectProducerConfig, Partitioning, SendMessage
    producer = await client.producer(stream, topic, Partitioning.partition_id(0),
                                     DirectProducerConfig(batch_length=BATCH,
                                                          linger_time=timedelta(0)),
                                     create_stream_if_not_exists=False,
                                     create_topic_if_not_exists=False)
    messages = [SendMessage(payload) for _ in range(BATCH)]
    start = time.perf_counter()
    for _ in range(total // BATCH):
        await producer.send(messages)
    rate = total / (time.perf_counter() - start)
    await producer.shutdown()
    return rate


async def official_produce_background(client, stream, topic, payload: bytes,
                                      total: int) -> float:
    from apache_iggy import BackgroundProducerConfig, Partitioning, SendMessage
    producer = await client.producer(stream, topic, Partitioning.partition_id(0),
                                     BackgroundProducerConfig(),
                                     create_stream_if_not_exists=False,
                                     create_topic_if_not_exists=False)
    messages = [SendMessage(payload) for _ in range(BATCH)]
    start = time.perf_counter()
    for _ in range(total // BATCH):
        await producer.send(messages)
    await producer.shutdown()                   # flushes every accepted message
    return total / (time.perf_counter() - start)


async def official_poll(client, stream, topic, total: int) -> float:
    from apache_iggy import Consumer, PollingStrategy
    consumer = Consumer.Single(1)
    got = 0
    start = time.perf_counter()
    while got < total:
        messages = await client.poll_messages(
            stream, topic, consumer=consumer, polling_strategy=PollingStrategy.Offset(got),
            count=BATCH, auto_commit=False, partition_id=0)
        for message in messages:
            message.payload()
        got += len(messages)
    return got / (time.perf_counter() - start)


async def official_consume(client, stream, topic, total: int) -> float:
    from apache_iggy import AutoCommit as OfficialAutoCommit
    from apache_iggy import AutoCommitWhen, PollingStrategy
    consumer = await client.consumer_group(
        f"g-{os.urandom(4).hex()}", stream, topic, polling_strategy=PollingStrategy.Next(),
        batch_length=BATCH, poll_interval=timedelta(0),
        auto_commit=OfficialAutoCommit.When(AutoCommitWhen.PollingMessages()))
    got = 0
    start = time.perf_counter()
    async for message in consumer.iter_messages():
        message.payload()
        got += 1
        if got == total:
            break
    return got / (time.perf_counter() - start)


async def run(address: str, messages: int, rounds: int) -> dict:
    from apache_iggy import IggyClient as OfficialClient
    ours = IggyClient(f"iggy://iggy:iggy@{address}")
    await ours.connect()
    theirs = OfficialClient(address)
    await theirs.connect()
    await theirs.login_user("iggy", "iggy")
    stream = f"bench-{os.urandom(4).hex()}"
    await ours.create_stream(stream)
    results: dict = {}
    for size in (1000, 100):
        payload = os.urandom(size)
        best: dict = {}
        for r in range(rounds):
            for who in ("official", "ours"):
                topic = f"{who}-{size}-{r}"
                await ours.create_topic(stream, topic, partitions_count=1)
                await ours.create_topic(stream, topic + "-bg", partitions_count=1)
                if who == "official":
                    row = {
                        "produce official": await official_produce(
                            theirs, stream, topic, payload, messages),
                        "produce official background": await official_produce_background(
                            theirs, stream, topic + "-bg", payload, messages),
                        "consume official": await official_consume(
                            theirs, stream, topic, messages),
                        "consume official poll": await official_poll(
                            theirs, stream, topic, messages)}
                else:
                    row = {
                        "produce ours": await ours_produce(
                            ours, stream, topic, payload, messages),
                        "produce ours background": await ours_produce_background(
                            ours, stream, topic + "-bg", payload, messages),
                        "consume ours batches": await ours_consume(
                            ours, stream, topic, messages, False),
                        "consume ours messages": await ours_consume(
                            ours, stream, topic, messages, True),
                        "consume ours single": await ours_consume(
                            ours, stream, topic, messages, False, group=False),
                        "consume ours single messages": await ours_consume(
                            ours, stream, topic, messages, True, group=False)}
                await ours.delete_topic(stream, topic)
                await ours.delete_topic(stream, topic + "-bg")
                print(f"  {size} B round {r + 1}: " + ", ".join(
                    f"{k} {v:,.0f} msg/s" for k, v in row.items()), flush=True)
                for k, v in row.items():
                    best[k] = max(best.get(k, 0.0), v)
        results[size] = best
    await ours.delete_stream(stream)
    await ours.close()
    return results


PAIRS = [  # (row, ours, official): each of ours against the official SDK's matching mode
    ("produce, direct (each send confirmed)", "produce ours", "produce official"),
    ("produce, background", "produce ours background", "produce official background"),
    ("consume, group member: our batches / their iter_messages", "consume ours batches",
     "consume official"),
    ("consume, group member: our messages / their iter_messages", "consume ours messages",
     "consume official"),
    ("consume, single consumer: our batches / their poll_messages loop",
     "consume ours single", "consume official poll"),
    ("consume, single consumer: our messages / their poll_messages loop",
     "consume ours single messages", "consume official poll"),
]


def table(results: dict) -> str:
    lines = ["| workload | official msg/s | ours msg/s | ours / official |",
             "|---|---|---|---|"]
    for size, best in results.items():
        for row, mine, theirs in PAIRS:
            lines.append(f"| {size} B: {row} | {best[theirs]:,.0f} | {best[mine]:,.0f} | "
                         f"{best[mine] / best[theirs]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--address", help="a running server (default: start one)")
    args = parser.parse_args()
    server = None
    if args.address is None:
        server = ServerProcess(tempfile.mkdtemp(prefix="sdk-bench-")).start()
    try:
        results = asyncio.run(run(args.address or server.address, args.messages, args.rounds))
    finally:
        if server is not None:
            server.stop()
            server.cleanup()
    print(table(results))


if __name__ == "__main__":
    main()
