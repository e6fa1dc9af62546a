"""What the request accounting costs the hot path, measured where it runs: `Dispatcher.handle`
serving SendMessages and PollMessages frames with the metrics on and off, in one process.

A server is built in this process (no transport: frames go straight to its dispatcher, as the
connection driver hands them over), with one topic of one partition. The same prebuilt frame
is served over and over (a fresh copy of its body each time: the server stamps the batch in
place), in blocks that alternate between the dispatcher with its Metrics and without
(`dispatcher.metrics = None`, what `[http.metrics] enabled = false` gives), so both meet the
same noise. Printed per workload: the median time per request of each setting, the difference
(what the counting costs per request) and its share of the request. This leaves out what every
request also costs outside the dispatcher (the socket read and write, cutting the frame), so
the share is an upper bound of the share in a server.

  python bench/bench_metrics_cost.py [--messages-per-batch 1 --message-size 100 --blocks 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from iggy_fast.bench.actors import make_batch
from iggy_fast.client.core import ClientCore, poll_body, send_messages_body
from iggy_fast.config import load_config
from iggy_fast.server.core import Server


def frame(core: ClientCore, code: int, body: bytes, extra=()) -> tuple[bytes, bytes]:
    _pending, pieces = core.request(code, body, extra)
    return bytes(pieces[0]), b"".join(bytes(p) for p in pieces[1:])


def block(dispatcher, client, header: bytes, body: bytes, n: int) -> float:
    """Seconds per request over `n` requests of one frame."""
    head = memoryview(header)
    start = time.perf_counter()
    for _ in range(n):
        out = dispatcher.handle(client, head, memoryview(bytearray(body)),
                                time.time_ns() // 1000)
        assert type(out) is list
    return (time.perf_counter() - start) / n


async def main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="iggy-fast-cost-") as data:
        cfg = load_config(environ={}, overrides={"system": {"path": data},
                                                 "root": {"password": "iggy"}})
        server = Server(cfg)
        await server.start()
        try:
            now = time.time_ns() // 1000
            await server.state.create_stream("s", now)
            await server.state.create_topic("s", "t", 1, [], now)
            client = server.connect("TCP", "127.0.0.1:1")
            client.user_id, client.session = 0, server.new_session()     # root, logged in
            core = ClientCore()
            core.session = client.session
            batch = make_batch(args.messages_per_batch, args.message_size)
            workloads = {
                "send": frame(core, 101, send_messages_body("s", "t", 0,
                                                            args.messages_per_batch),
                              (bytes(batch),)),
                "poll": frame(core, 100, poll_body("s", "t", 0, 1, 0, args.messages_per_batch,
                                                   False)),
            }
            dispatcher, metrics = server.dispatcher, server.metrics
            print(f"{args.messages_per_batch} x {args.message_size} B per request, "
                  f"{args.blocks} blocks of {args.requests} requests per setting")
            print(f"{'':<6}{'off µs':>10}{'on µs':>10}{'cost ns':>10}{'share':>9}")
            for name, (header, body) in workloads.items():
                times = {"off": [], "on": []}
                for i in range(2 * args.blocks):
                    setting = ("off", "on")[(i + i // 2) % 2]      # off on on off off on ...
                    dispatcher.metrics = metrics if setting == "on" else None
                    times[setting].append(block(dispatcher, client, header, body,
                                                args.requests))
                off, on = (statistics.median(times[s]) for s in ("off", "on"))
                print(f"{name:<6}{off * 1e6:>10.2f}{on * 1e6:>10.2f}"
                      f"{(on - off) * 1e9:>10.0f}{(on - off) / off:>9.1%}")
        finally:
            server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages-per-batch", type=int, default=1)
    parser.add_argument("--message-size", type=int, default=100)
    parser.add_argument("--blocks", type=int, default=30, help="blocks per setting")
    parser.add_argument("--requests", type=int, default=2000, help="requests per block")
    asyncio.run(main(parser.parse_args()))
