"""HTTP REST against TCP on one server in one run: send and poll throughput with batches of
1000 messages of 1000 bytes per request, one request at a time on each transport.

    python bench/http_vs_tcp.py [--requests 200] [--messages 1000] [--size 1000]

TCP is the blocking binary client (iggy_fast.client.blocking) sending one pre-encoded batch
per request; HTTP is an aiohttp keep-alive session posting one pre-encoded JSON body per
request (base64 payloads, as the official SDK sends them). Polls read the same number of
messages back in steps of `--messages` from offset 0 and read the whole reply without
decoding it (the server's work is what is compared). Each transport has its own topic on
the same server. Prints the settings, then messages/s and payload MB/s per phase and the
HTTP/TCP ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import struct
import time

import aiohttp
import orjson

from iggy_fast import _wire
from iggy_fast.client.blocking import BlockingClient
from iggy_fast.protocol.codes import OFFSET
from iggy_fast.testing import ServerProcess


def report(name: str, seconds: float, messages: int, size: int) -> float:
    rate = messages / seconds
    print(f"{name:10s} {rate:12,.0f} msg/s {rate * size / 1e6:9.1f} MB/s ({seconds:.2f} s)")
    return rate


def tcp_phase(srv, requests: int, n: int, size: int) -> tuple[float, float]:
    c = BlockingClient(srv.address)
    c.login()
    batch = bytes(_wire.build_batch([(0, os.urandom(size), b"", 0) for _ in range(n)],
                                    time.time_ns() // 1000))
    t0 = time.perf_counter()
    for _ in range(requests):
        c.send_batch("bench", "tcp", 0, batch, n)
    send = report("tcp send", time.perf_counter() - t0, requests * n, size)
    t0 = time.perf_counter()
    got = 0
    for i in range(requests):
        reply = c.poll("bench", "tcp", 0, OFFSET, i * n, n)
        got += int.from_bytes(reply.body[12:16], "little")
    poll = report("tcp poll", time.perf_counter() - t0, got, size)
    assert got == requests * n, got
    c.close()
    return send, poll


async def http_phase(srv, requests: int, n: int, size: int) -> tuple[float, float]:
    base = f"http://127.0.0.1:{srv.http_port}"
    async with aiohttp.ClientSession() as s:
        async with s.post(base + "/users/login",
                          json={"username": "iggy", "password": "iggy"}) as r:
            token = (await r.json())["access_token"]["token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body = orjson.dumps({
            "partitioning": {"kind": "partition_id",
                             "value": base64.b64encode(struct.pack("<I", 0)).decode()},
            "messages": [{"id": 0, "payload": base64.b64encode(os.urandom(size)).decode()}
                         for _ in range(n)]})
        url = base + "/streams/bench/topics/http/messages"
        t0 = time.perf_counter()
        for _ in range(requests):
            async with s.post(url, data=body, headers=headers) as r:
                assert r.status == 201, await r.text()
                await r.read()
        send = report("http send", time.perf_counter() - t0, requests * n, size)
        t0 = time.perf_counter()
        got = 0
        for i in range(requests):
            params = {"consumer_id": "1", "partition_id": "0", "kind": "offset",
                      "value": str(i * n), "count": str(n)}
            async with s.get(url, params=params, headers=headers) as r:
                assert r.status == 200, await r.text()
                data = await r.read()
            got += n
            if i == 0:           # check one reply fully: the right count came back
                assert orjson.loads(data)["count"] == n
        poll = report("http poll", time.perf_counter() - t0, got, size)
    return send, poll


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--size", type=int, default=1000)
    a = ap.parse_args()
    print(f"requests={a.requests} messages/request={a.messages} payload={a.size} B")
    srv = ServerProcess(env={"IGGY_HTTP_MAX_REQUEST_SIZE": "64 MB"}).start()
    try:
        c = BlockingClient(srv.address)
        c.login()
        c.call(202, _wire.Writer().name("bench").getvalue())
        for topic in ("tcp", "http"):
            c.call(302, _wire.Writer().identifier("bench").u32(1).name(topic).getvalue())
        c.close()
        tcp = tcp_phase(srv, a.requests, a.messages, a.size)
        http = asyncio.run(http_phase(srv, a.requests, a.messages, a.size))
        print(f"HTTP/TCP: send {http[0] / tcp[0]:.2f}, poll {http[1] / tcp[1]:.2f}")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
