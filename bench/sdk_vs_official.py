"""Our producer and consumer against the official SDK's (apache-iggy 0.9.0), same server, one run.

    python bench/sdk_vs_official.py [--messages 100000] [--rounds 3] [--address HOST:PORT]
                                    [--produce-only]

Workloads: 1000-byte messages and 100-byte messages, 1000 per batch, one partition, one
producer then one consumer at a time, each side a single asyncio task on one connection.

* Producers send `--messages` messages in batches of 1000 to partition 0: in direct mode,
  each send waiting for its confirmation (ours `IggyProducer.send(payloads, partition=0)`,
  theirs `IggyProducer.send(list of SendMessage)` from `client.producer(...)` with
  DirectProducerConfig), and in background mode until every message is confirmed (ours
  `background=True, max_in_flight=4` then `flush()`, theirs BackgroundProducerConfig() then
  `shutdown()`). In background mode both merge waiting sends into requests of up to 1 MiB:
  the official default (`batch_size` 1 MiB, `batch_length` 1000 sends), ours
  `batch_bytes=1_048_576` with a message count that does not bind first; at 1000-byte
  messages that is the same 1000 per request as direct mode, at 100-byte messages about ten
  sends per request. Both reuse their prepared message list on every send, so neither pays
  for building messages.
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

Beside each rate, the CPU it cost: the client's (this process, all its threads: the official
SDK runs a Rust runtime in it) in µs per message, and how busy the server was (its CPU
seconds per wall second; 1.0 is one core saturated: the server, not the client, sets the
pace, and no client can go faster against it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
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
    # Requests of up to 1 MiB of payload, as the official BackgroundProducerConfig() makes.
    producer = IggyProducer(client, stream, topic, batch_length=100 * BATCH,
                            batch_bytes=1_048_576, background=True, linger=0.001,
                            max_in_flight=4)
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


def _cpu_seconds(pid: int | None) -> float:
    """CPU seconds used so far by process `pid` (user + system), or by this process."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measured(workload, total: int, server_pid: int | None) -> tuple[float, float, float]:
    """(msg/s, client CPU µs per message, server CPU s per wall s) of one workload run."""
    client, server = _cpu_seconds(None), server_pid and _cpu_seconds(server_pid)
    wall = time.perf_counter()
    rate = await workload
    wall = time.perf_counter() - wall
    client_us = (_cpu_seconds(None) - client) / total * 1e6
    busy = (_cpu_seconds(server_pid) - server) / wall if server_pid else float("nan")
    return rate, client_us, busy


async def run(address: str, messages: int, rounds: int, server_pid: int | None,
              produce_only: bool = False) -> dict:
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
                    workloads = {
                        "produce official": official_produce(
                            theirs, stream, topic, payload, messages),
                        "produce official background": official_produce_background(
                            theirs, stream, topic + "-bg", payload, messages),
                        "consume official": official_consume(theirs, stream, topic, messages),
                        "consume official poll": official_poll(theirs, stream, topic, messages)}
                else:
                    workloads = {
                        "produce ours": ours_produce(ours, stream, topic, payload, messages),
                        "produce ours background": ours_produce_background(
                            ours, stream, topic + "-bg", payload, messages),
                        "consume ours batches": ours_consume(
                            ours, stream, topic, messages, False),
                        "consume ours messages": ours_consume(
                            ours, stream, topic, messages, True),
                        "consume ours single": ours_consume(
                            ours, stream, topic, messages, False, group=False),
                        "consume ours single messages": ours_consume(
                            ours, stream, topic, messages, True, group=False)}
                row = {}
                for name, workload in workloads.items():    # one after another, in order
                    if produce_only and not name.startswith("produce"):
                        workload.close()                    # never started
                        continue
                    row[name] = await measured(workload, messages, server_pid)
                await ours.delete_topic(stream, topic)
                await ours.delete_topic(stream, topic + "-bg")
                print(f"  {size} B round {r + 1}: " + ", ".join(
                    f"{k} {rate:,.0f} msg/s ({client:.2f} µs/msg client CPU, server busy "
                    f"{busy:.2f})" for k, (rate, client, busy) in row.items()), flush=True)
                for k, v in row.items():
                    if v[0] > best.get(k, (0.0,))[0]:
                        best[k] = v
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
    lines = ["| workload | official msg/s | ours msg/s | ours / official | client CPU µs/msg: "
             "official / ours | server busy: official / ours |",
             "|---|---|---|---|---|---|"]
    for size, best in results.items():
        for row, mine, theirs in PAIRS:
            if mine not in best or theirs not in best:
                continue
            (rate, client, busy), (their_rate, their_client, their_busy) = best[mine], best[theirs]
            lines.append(f"| {size} B: {row} | {their_rate:,.0f} | {rate:,.0f} | "
                         f"{rate / their_rate:.2f} | {their_client:.2f} / {client:.2f} | "
                         f"{their_busy:.2f} / {busy:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--address", help="a running server (default: start one)")
    parser.add_argument("--produce-only", action="store_true",
                        help="only the producer rows (the consumers read what they wrote)")
    args = parser.parse_args()
    server = None
    if args.address is None:
        server = ServerProcess(tempfile.mkdtemp(prefix="sdk-bench-")).start()
    try:
        results = asyncio.run(run(args.address or server.address, args.messages, args.rounds,
                                  server.proc.pid if server is not None else None,
                                  args.produce_only))
    finally:
        if server is not None:
            server.stop()
            server.cleanup()
    print(table(results))


if __name__ == "__main__":
    main()
