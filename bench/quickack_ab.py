"""Bulk ingest with the official SDK against a server with `[tcp] quickack` on and one with it
off, one send to each in turn (alternating which goes first), so the machine's swings fall on
both alike. Prints each server's mean and median send time and the messages per second.

    python bench/quickack_ab.py [messages per send] [bytes per message] [sends to each]
    python bench/quickack_ab.py 1000 1000 300
"""

import asyncio
import statistics
import sys

from sdk_latency_sweep import prepare, sdk_client, sdk_sends

from iggy_fast.bench.runner import LocalServer


async def main(count: int, size: int, sends: int) -> None:
    servers = {on: LocalServer(False, env={"IGGY_TCP_QUICKACK": "true" if on else "false"})
               for on in (True, False)}
    try:
        clients = {on: await sdk_client(srv) for on, srv in servers.items()}
        for client in clients.values():
            await prepare(client)
        took = {on: [] for on in clients}
        for i in range(sends):
            for on in ((True, False) if i % 2 else (False, True)):
                took[on] += await sdk_sends(clients[on], count, size, 1)
    finally:
        for srv in servers.values():
            srv.stop()
    for on, ms in took.items():
        print(f"quickack {'on ' if on else 'off'}: {sends} sends of {count} x {size} B, mean "
              f"{statistics.mean(ms):.3f} ms, median {statistics.median(ms):.3f} ms, "
              f"{count * sends / sum(ms) * 1000:,.0f} msg/s")


if __name__ == "__main__":
    given = [int(a) for a in sys.argv[1:4]]
    asyncio.run(main(*(given + [1000, 1000, 300][len(given):])))
