"""iggy-fast next to Redis Streams and NATS JetStream, the same workload, one run.

    python bench/peers.py [messages] [rounds]     # default 500 000 messages, 3 rounds

Workload: N messages of 1000 bytes in batches of 1000, one producer, then one consumer reading
everything back. Each server runs on loopback with a temporary directory and is stopped after:
  iggy-fast   `iggy-fast server`, our BlockingClient (one prebuilt batch re-sent), polls by offset
  Redis       redis-server (Debian), AOF on with appendfsync everysec; redis-py + hiredis,
              pipelines of 1000 XADD (no transaction), reads with XRANGE COUNT 1000
  NATS        nats-server -js (Debian), file store; nats-py, core publishes into the stream's
              subject flushed every 1000 (no per-message acks, as the fastest JetStream
              ingest), then a pull consumer fetching 1000 at a time with AckPolicy none
Each round runs the three in turn (fresh servers each time) and the best round of each counts:
this VM's page-cache and disk speed swing by 2x from one minute to the next.
Needs: apt-get install redis-server nats-server; pip install '.[bench]'.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from iggy_fast import _wire
from iggy_fast.bench.actors import make_batch
from iggy_fast.bench.runner import LocalServer
from iggy_fast.client import BlockingClient

SIZE = 1000
BATCH = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("peer server exited")
            time.sleep(0.05)
    raise RuntimeError("peer server did not start")


def iggy(n: int) -> tuple[float, float]:
    server = LocalServer(fsync=False)
    try:
        c = BlockingClient(server.address)
        c.login()
        c.call(202, _wire.Writer().name("peers").getvalue())
        c.call(302, _wire.Writer().identifier("peers").u32(1).name("t").getvalue())
        batch = make_batch(BATCH, SIZE)
        start = time.perf_counter()
        for _ in range(n // BATCH):
            c.send_batch("peers", "t", 0, batch, BATCH)
        produce = n / (time.perf_counter() - start)
        got, start = 0, time.perf_counter()
        while got < n:
            reply = c.poll("peers", "t", 0, 1, got, BATCH)
            got += int.from_bytes(reply.body[12:16], "little")
        consume = n / (time.perf_counter() - start)
        c.close()
        return produce, consume
    finally:
        server.stop()


def redis_streams(n: int) -> tuple[float, float]:
    import redis
    directory = tempfile.mkdtemp(prefix="peer-redis-")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", directory, "--appendonly", "yes", "--appendfsync",
                             "everysec", "--save", ""], stdout=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        r = redis.Redis(host="127.0.0.1", port=port)
        payload = os.urandom(SIZE)
        start = time.perf_counter()
        for _ in range(n // BATCH):
            pipe = r.pipeline(transaction=False)
            for _ in range(BATCH):
                pipe.xadd("s", {"d": payload})
            pipe.execute()
        produce = n / (time.perf_counter() - start)
        got, last, start = 0, "-", time.perf_counter()
        while got < n:
            entries = r.xrange("s", min=last, max="+", count=BATCH)
            if last != "-":
                entries = entries[1:] if entries and entries[0][0] == last else entries
            if not entries:
                break
            got += len(entries)
            last = entries[-1][0]
        consume = got / (time.perf_counter() - start)
        return produce, consume
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(directory, ignore_errors=True)


def nats_jetstream(n: int) -> tuple[float, float]:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, StorageType

    directory = tempfile.mkdtemp(prefix="peer-nats-")
    port = free_port()
    proc = subprocess.Popen(["nats-server", "-js", "-sd", directory, "-a", "127.0.0.1",
                             "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    async def run():
        nc = await nats.connect(f"nats://127.0.0.1:{port}", pending_size=64 << 20)
        js = nc.jetstream()
        await js.add_stream(name="S", subjects=["s"], storage=StorageType.FILE)
        payload = os.urandom(SIZE)
        start = time.perf_counter()
        for _ in range(n // BATCH):
            for _ in range(BATCH):
                await nc.publish("s", payload)
            await nc.flush()
        while (await js.stream_info("S")).state.messages < n:
            await asyncio.sleep(0.01)
        produce = n / (time.perf_counter() - start)
        sub = await js.pull_subscribe("s", "reader",
                                      config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        got, start = 0, time.perf_counter()
        while got < n:
            msgs = await sub.fetch(BATCH, timeout=10)
            got += len(msgs)
        consume = got / (time.perf_counter() - start)
        await nc.close()
        return produce, consume

    try:
        wait_port(port, proc)
        return asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    n -= n % BATCH
    runners = {"iggy-fast": iggy, "Redis Streams": redis_streams,
               "NATS JetStream": nats_jetstream}
    results = {name: (0.0, 0.0) for name in runners}
    for r in range(rounds):
        for name, fn in runners.items():
            produce, consume = fn(n)
            print(f"round {r + 1} {name}: produce {produce:,.0f} msg/s, consume "
                  f"{consume:,.0f} msg/s", file=sys.stderr)
            best = results[name]
            results[name] = (max(best[0], produce), max(best[1], consume))
    ours = results["iggy-fast"]
    print(f"{n:,} messages of {SIZE} B, batches of {BATCH}, one producer then one consumer, "
          f"best of {rounds} rounds")
    print(f"{'server':<16}{'produce msg/s':>15}{'MB/s':>8}{'consume msg/s':>15}{'MB/s':>8}"
          f"{'iggy/peer (produce, consume)':>32}")
    for name, (produce, consume) in results.items():
        ratio = "" if name == "iggy-fast" else (
            f"{ours[0] / produce:.1f}x, {ours[1] / consume:.1f}x")
        print(f"{name:<16}{produce:>15,.0f}{produce * SIZE / 1e6:>8,.0f}{consume:>15,.0f}"
              f"{consume * SIZE / 1e6:>8,.0f}{ratio:>32}")


if __name__ == "__main__":
    main()
