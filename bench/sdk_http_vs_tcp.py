"""Our IggyClient over HTTP against TCP, on one local server: sends of one pre-built batch of
1000 x 100-byte messages, then polls of 1000 back by offset, one request at a time.

    python bench/sdk_http_vs_tcp.py [--rounds 200]

Over HTTP every request goes through the link's translation (protocol/json_client.py): the
batch written as JSON by `_json.send_json`, the poll's JSON turned back into the binary reply.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

from iggy_fast import IggyClient, PollingStrategy
from iggy_fast.client.types import build_batch
from iggy_fast.testing import ServerProcess

N, SIZE = 1000, 100


async def run(name: str, url: str, rounds: int) -> None:
    async with IggyClient(url) as c:
        stream = f"bench-{name}"
        await c.create_stream(stream)
        await c.create_topic(stream, "t")
        batch, count = build_batch([os.urandom(SIZE) for _ in range(N)])
        t0 = time.perf_counter()
        for _ in range(rounds):
            await c.send_batch(stream, "t", 0, batch, count)
        send = time.perf_counter() - t0
        t0 = time.perf_counter()
        for k in range(rounds):
            polled = await c.poll_messages(stream, "t", partition_id=0, count=N,
                                           polling_strategy=PollingStrategy.Offset(k * N))
            assert polled.count == N
        poll = time.perf_counter() - t0
        total = N * rounds
        print(f"{name:5s} send {total / send:10,.0f} msg/s ({send / rounds * 1e3:6.2f} ms a "
              f"batch)   poll {total / poll:10,.0f} msg/s ({poll / rounds * 1e3:6.2f} ms a poll)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    srv = ServerProcess(tempfile.mkdtemp() + "/server").start()
    try:
        time.sleep(1)                       # HTTP starts after TCP
        asyncio.run(run("tcp", f"iggy://iggy:iggy@{srv.address}", args.rounds))
        asyncio.run(run("http", f"iggy+http://iggy:iggy@127.0.0.1:{srv.http_port}",
                        args.rounds))
    finally:
        srv.stop()
        srv.cleanup()


if __name__ == "__main__":
    main()
