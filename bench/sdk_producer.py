"""One producer with the OFFICIAL Python SDK (apache-iggy 0.9.0): 1000 messages of 1000 bytes
per send_messages call, against a server this script starts. Prints messages/s and MB/s.

    python bench/sdk_producer.py [batches]      # default 500
"""

import asyncio
import os
import sys
import time

from apache_iggy import IggyClient
from apache_iggy import SendMessage as Message

from iggy_fast.bench.runner import LocalServer


async def run(address: str, batches: int) -> float:
    client = IggyClient(address)
    await client.connect()
    await client.login_user("iggy", "iggy")
    await client.create_stream("sdk")
    await client.create_topic(stream="sdk", name="t", partitions_count=1)
    payload = os.urandom(1000)
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(batches):
            # The SDK needs fresh message objects per send (it consumes them).
            await client.send_messages("sdk", "t", 0, [Message(payload) for _ in range(1000)])
        best = max(best, batches * 1000 / (time.perf_counter() - start))
    return best


def main():
    batches = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    server = LocalServer(fsync=False)
    try:
        rate = asyncio.run(run(server.address, batches))
    finally:
        server.stop()
    print(f"official SDK, one producer, 1000 x 1000 B per send, best of 3: "
          f"{rate:,.0f} msg/s, {rate * 1000 / 1e6:,.0f} MB/s (payload)")


if __name__ == "__main__":
    main()
