"""What the metrics cost with many partitions: the Prometheus text, the JSON rates document and
the once-a-second rates tick, timed on a live server with 10 000 partitions.

The server runs in this process (`app.serve`, TCP on a free port, a temporary data directory);
the official SDK creates --topics topics of --partitions partitions each (10 x 1000 by default),
sends one batch of 10 messages to every partition, polls 5 of them back with auto-commit as
consumer 1 (an individual consumer's offset and lag on every partition) and creates one
consumer group per topic (a group's lag on every partition). Then it times, --repeat times
each, on the event loop as a request would run them:

  prometheus   metrics.prometheus(server): the /metrics body
  rates        metrics.rates_document(server, now) and its orjson encoding: /stats/rates
  tick         Metrics.tick(now): the periodic sample behind the rates

and prints the median and the largest of each, with the body sizes.

  python bench/bench_metrics_render.py [--topics 10 --partitions 1000 --repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import orjson
from apache_iggy import Consumer, IggyClient, PollingStrategy
from apache_iggy import SendMessage as Message

from iggy_fast.config import load_config
from iggy_fast.server import app, metrics
from iggy_fast.testing import free_port


def timed(repeat: int, job) -> tuple[float, float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = job()
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(times), result


async def main(args) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="iggy-fast-metrics-") as data:
        cfg = load_config(environ={}, overrides={
            "system": {"path": data}, "tcp": {"address": f"127.0.0.1:{port}"},
            "quic": {"enabled": False}, "http": {"enabled": False},
            "websocket": {"enabled": False}, "root": {"username": "iggy", "password": "iggy"}})
        ready = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(app.serve(cfg, ready=ready.set_result))
        server = await ready
        try:
            client = IggyClient(f"127.0.0.1:{port}")
            await client.connect()
            await client.login_user("iggy", "iggy")
            await client.create_stream("bench")
            start = time.perf_counter()
            for t in range(args.topics):
                await client.create_topic(stream="bench", name=f"t{t}",
                                          partitions_count=args.partitions)
                await client.create_consumer_group("bench", f"t{t}", f"g{t}")
                for p in range(args.partitions):
                    await client.send_messages("bench", f"t{t}", p,
                                               [Message(b"x" * 100) for _ in range(10)])
                    await client.poll_messages(
                        stream="bench", topic=f"t{t}", partition_id=p,
                        consumer=Consumer.Single(1), polling_strategy=PollingStrategy.Next(),
                        count=5, auto_commit=True)
            total = args.topics * args.partitions
            print(f"{total} partitions made, sent to and polled in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
            now = time.time_ns() // 1000
            rows = [
                ("prometheus", lambda: metrics.prometheus(server).encode()),
                ("rates", lambda: orjson.dumps(metrics.rates_document(server, now))),
                ("tick", lambda: server.metrics.tick(time.time_ns() // 1000)),
            ]
            print(f"{'':<12}{'median ms':>12}{'max ms':>10}{'bytes':>12}")
            for name, job in rows:
                median, worst, result = timed(args.repeat, job)
                size = len(result) if result is not None else 0
                print(f"{name:<12}{median * 1e3:>12.1f}{worst * 1e3:>10.1f}{size:>12,}")
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=1000, help="per topic (at most 1000)")
    parser.add_argument("--repeat", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
