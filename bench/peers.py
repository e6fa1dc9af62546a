"""iggy-fast next to Redis Streams and NATS JetStream, the same workload, one run.

    python bench/peers.py [messages] [rounds] [--servers iggy-fast,redis,nats]
                          [--output bench/results/peers.json]
    # default 500 000 messages, 3 rounds, all three servers

Workload: N messages of 1000 bytes in batches of 1000, one producer, then one consumer reading
everything back. Each server runs on loopback with a temporary directory and is stopped after.
Each peer is driven by the best client available here, and where two are tried the better
one counts and is named:
  iggy-fast   `iggy-fast server`; our BlockingClient, one prebuilt batch re-sent, polls by
              offset 1000 at a time
  Redis       redis-server (Debian), AOF on with appendfsync everysec, no RDB snapshots.
              Produce: redis-benchmark -c 1 -P 1000 (pipelined XADD s * d <1000 bytes>), and
              redis-py + hiredis pipelines of 1000 XADD (no transaction). Consume: XRANGE
              COUNT 1000 from after the last id read, through redis-py + hiredis and through a
              lean RESP reader (one socket, replies walked in place, no object per entry)
  NATS        nats-server -js (Debian), file store. A lean client speaking NATS's text
              protocol on one socket (nats_raw below): produce = core PUB to the stream's
              subject, 1000 per write, no per-message acks, the last message with a reply
              subject whose PubAck (seq = N) proves everything is stored; consume = a durable
              pull consumer (AckPolicy none) fetched 1000 at a time via
              $JS.API.CONSUMER.MSG.NEXT, MSG frames counted in the receive buffer where they
              lie. (nats-py makes a Python object per message and reads back only ~40 000
              msg/s here: it measures the client, not the server.)
Each round runs every server in turn (fresh servers each time); all rounds are printed and the
best of each server counts: this VM's page-cache and disk speed swing by 2x from one minute to
the next.

Throughput columns: msg/s; payload MB/s = messages x 1000 bytes / s; wire MB/s = bytes the
client wrote (produce) or read (consume) on its socket per second, protocol framing included
(for Redis the server's total_net_input/output_bytes counters, which cover any client).
MB = 10^6 bytes.

Needs: apt-get install redis-server redis-tools nats-server; pip install '.[bench]'.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from iggy_fast import _wire
from iggy_fast.bench.actors import make_batch
from iggy_fast.bench.runner import LocalServer, machine
from iggy_fast.client import BlockingClient

SIZE = 1000
BATCH = 1000
SERVERS = ("iggy-fast", "redis", "nats")
NAMES = {"iggy-fast": "iggy-fast", "redis": "Redis Streams", "nats": "NATS JetStream"}


def row(server: str, client: str, phase: str, messages: int, seconds: float,
        wire_bytes: int) -> dict:
    seconds = max(seconds, 1e-9)
    return {"server": server, "client": client, "phase": phase, "messages": messages,
            "seconds": round(seconds, 4), "messages_per_second": messages / seconds,
            "payload_mb_per_second": messages * SIZE / seconds / 1e6,
            "wire_mb_per_second": wire_bytes / seconds / 1e6}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Peer:
    """A peer server on a free loopback port with a temporary directory, stopped on exit."""

    def __init__(self, prefix: str, command):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.port = free_port()
        self.proc = subprocess.Popen(command(self.port, self.dir), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def __enter__(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"peer server {self.proc.args[0]} did not start")

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- iggy-fast -------------------------------------------------------------------------------

def iggy_fast(n: int) -> list[dict]:
    server = LocalServer(fsync=False)
    try:
        c = BlockingClient(server.address)
        c.login()
        c.call(202, _wire.Writer().name("peers").getvalue())
        c.call(302, _wire.Writer().identifier("peers").u32(1).name("t").getvalue())
        batch = make_batch(BATCH, SIZE)
        sent_before = c.bytes_sent
        start = time.perf_counter()
        for _ in range(n // BATCH):
            c.send_batch("peers", "t", 0, batch, BATCH)
        produce = row("iggy-fast", "iggy-fast BlockingClient", "produce", n,
                      time.perf_counter() - start, c.bytes_sent - sent_before)
        got, received_before, start = 0, c.bytes_received, time.perf_counter()
        while got < n:
            count = int.from_bytes(c.poll("peers", "t", 0, 1, got, BATCH).body[12:16], "little")
            if not count:
                raise RuntimeError(f"iggy-fast: {got} of {n} messages read back")
            got += count
        consume = row("iggy-fast", "iggy-fast BlockingClient", "consume", got,
                      time.perf_counter() - start, c.bytes_received - received_before)
        c.close()
        return [produce, consume]
    finally:
        server.stop()


def iggy(n: int) -> tuple[float, float]:
    """(produce, consume) msg/s of the iggy-fast workload; bench/bench_sendfile.py uses it."""
    produce, consume = iggy_fast(n)
    return produce["messages_per_second"], consume["messages_per_second"]


# --- Redis Streams ---------------------------------------------------------------------------

def _redis_command(port, directory):
    return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]


def _net_bytes(r) -> tuple[int, int]:
    stats = r.info("stats")
    return stats["total_net_input_bytes"], stats["total_net_output_bytes"]


def redis_streams(n: int) -> list[dict]:
    import redis
    rows = []
    with Peer("peer-redis-", _redis_command) as peer:
        r = redis.Redis(host="127.0.0.1", port=peer.port)
        payload = os.urandom(SIZE)
        before = _net_bytes(r)
        start = time.perf_counter()
        for _ in range(n // BATCH):
            pipe = r.pipeline(transaction=False)
            for _ in range(BATCH):
                pipe.xadd("s", {"d": payload})
            pipe.execute()
        seconds = time.perf_counter() - start
        rows.append(row("redis", "redis-py + hiredis, pipelines of 1000", "produce", n,
                        seconds, _net_bytes(r)[0] - before[0]))
        if r.xlen("s") != n:
            raise RuntimeError(f"Redis holds {r.xlen('s')} of {n} entries")
        rows.append(_redis_py_read(r, n))
        rows.append(_resp_read(peer.port, r, n))
    if shutil.which("redis-benchmark"):
        with Peer("peer-redis-", _redis_command) as peer:
            rows.append(_redis_benchmark_write(peer.port, n))
    return rows


def _redis_py_read(r, n: int) -> dict:
    before = _net_bytes(r)
    got, last, start = 0, "-", time.perf_counter()
    while got < n:
        entries = r.xrange("s", min=last, max="+", count=BATCH)
        if not entries:
            break
        got += len(entries)
        last = b"(" + entries[-1][0]
    seconds = time.perf_counter() - start
    return row("redis", "redis-py + hiredis", "consume", got, seconds,
               _net_bytes(r)[1] - before[1])


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _resp_read(port: int, r, n: int) -> dict:
    """XRANGE s (last + COUNT 1000 over one socket; each reply is walked where it lies,
    finding only each entry's length fields and keeping the last id."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(2 * BATCH * (SIZE + 128))
    view = memoryview(buf)
    before = _net_bytes(r)
    got, last, start = 0, b"-", time.perf_counter()
    try:
        while got < n:
            sock.sendall(_resp(b"XRANGE", b"s", last, b"+", b"COUNT", b"%d" % BATCH))
            filled = pos = 0
            while (eol := buf.find(b"\r\n", 0, filled)) < 0:
                filled += _recv(sock, view[filled:])
            if buf[0] != 42:                             # '*'
                raise RuntimeError(f"Redis: {bytes(buf[:eol])!r}")
            entries = int(buf[1:eol])
            if entries <= 0:
                break
            pos = eol + 2
            left = entries
            while left:
                # *2\r\n$<id length>\r\n<id>\r\n*2\r\n$1\r\nd\r\n$<size>\r\n<value>\r\n
                eol = buf.find(b"\r\n", pos + 5, filled)
                if eol < 0:
                    filled += _recv(sock, view[filled:])
                    continue
                id_start = eol + 2
                id_end = id_start + int(buf[pos + 5:eol])
                size_at = id_end + 14                        # past \r\n*2\r\n$1\r\nd\r\n$
                if size_at > filled:
                    filled += _recv(sock, view[filled:])
                    continue
                if buf[size_at - 1] != 36:                   # '$': not the entry we wrote
                    raise RuntimeError("unexpected XRANGE reply layout")
                eol = buf.find(b"\r\n", size_at, filled)
                if eol < 0:
                    filled += _recv(sock, view[filled:])
                    continue
                end = eol + 2 + int(buf[size_at:eol]) + 2
                if end > filled:
                    filled += _recv(sock, view[filled:])
                    continue
                if left == 1:
                    last = b"(" + bytes(buf[id_start:id_end])
                pos = end
                left -= 1
            got += entries
        seconds = time.perf_counter() - start
    finally:
        sock.close()
    return row("redis", "lean RESP reader", "consume", got, seconds,
               _net_bytes(r)[1] - before[1])


def _recv(sock, view) -> int:
    if not view.nbytes:
        raise RuntimeError("reply larger than the receive buffer")
    got = sock.recv_into(view)
    if not got:
        raise ConnectionError("peer closed the connection")
    return got


def _redis_benchmark_write(port: int, n: int) -> dict:
    import redis
    r = redis.Redis(host="127.0.0.1", port=port)
    before = _net_bytes(r)
    value = "x" * SIZE                  # a command-line argument: printable, same length
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-c", "1", "-n", str(n),
                          "-P", str(BATCH), "--csv", "XADD", "s", "*", "d", value],
                         capture_output=True, text=True, check=True, timeout=600).stdout
    records = list(csv.reader(io.StringIO(out)))
    rps = float(records[-1][1])
    if r.xlen("s") != n:
        raise RuntimeError(f"redis-benchmark left {r.xlen('s')} of {n} entries")
    wire = _net_bytes(r)[0] - before[0]
    return row("redis", "redis-benchmark -c 1 -P 1000", "produce", n, n / rps, wire)


# --- NATS JetStream --------------------------------------------------------------------------

class RawNats:
    """NATS's text protocol over one blocking socket: just what the benchmark needs.

    Frames are read into one large buffer and walked in place; counting a MSG costs a
    CRLF search and its size field, nothing per message is kept.
    """

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray(16 << 20)
        self.view = memoryview(self.buf)
        self.pos = self.filled = 0
        self.sent = self.received = 0
        self.inbox = f"_INBOX.{os.urandom(6).hex()}"
        if not self._line().startswith(b"INFO "):
            raise RuntimeError("not a NATS server")
        self.send(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
                  b'"no_responders":true,"protocol":1,"lang":"raw","version":"0"}\r\n'
                  b"SUB " + self.inbox.encode() + b".* 1\r\nPING\r\n")
        while (line := self._line()) != b"PONG":
            if line.startswith(b"-ERR"):
                raise RuntimeError(f"NATS: {line!r}")

    def close(self) -> None:
        self.sock.close()

    def send(self, data) -> None:
        self.sock.sendall(data)
        self.sent += len(data)

    def _fill(self) -> None:
        if self.filled > len(self.buf) - (2 << 20):     # keep room: move the rest to the front
            rest = self.filled - self.pos
            self.buf[:rest] = self.buf[self.pos:self.filled]
            self.pos, self.filled = 0, rest
        got = self.sock.recv_into(self.view[self.filled:])
        if not got:
            raise ConnectionError("NATS closed the connection")
        self.filled += got
        self.received += got

    def _line(self) -> bytes:
        while (eol := self.buf.find(b"\r\n", self.pos, self.filled)) < 0:
            self._fill()
        line = bytes(self.buf[self.pos:eol])
        self.pos = eol + 2
        return line

    def _payload(self, size: int) -> bytes:
        while self.filled - self.pos < size + 2:
            self._fill()
        data = bytes(self.buf[self.pos:self.pos + size])
        self.pos += size + 2
        return data

    def reply(self) -> tuple[bytes, bytes]:
        """The next message on our inbox: (subject, payload); answers PINGs on the way."""
        while True:
            line = self._line()
            if line.startswith(b"MSG "):
                parts = line.split()
                return parts[1], self._payload(int(parts[-1]))
            if line.startswith(b"HMSG "):
                parts = line.split()
                return parts[1], self._payload(int(parts[-1]))
            if line == b"PING":
                self.send(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise RuntimeError(f"NATS: {line!r}")

    def request(self, subject: str, body: dict) -> dict:
        data = json.dumps(body).encode()
        self.send(b"PUB %s %s.r %d\r\n%s\r\n" % (subject.encode(), self.inbox.encode(),
                                                   len(data), data))
        answer = json.loads(self.reply()[1])
        if "error" in answer:
            raise RuntimeError(f"NATS {subject}: {answer['error']}")
        return answer

    def count_fetched(self, n: int, fetch: bytes, in_flight: int = 2) -> int:
        """Send `fetch` requests (1000 messages each), keeping `in_flight` outstanding, and
        count MSG frames until n have arrived."""
        requests = -(-n // BATCH)
        sent = min(in_flight, requests)
        self.send(fetch * sent)
        buf = self.buf
        size_suffix = b" %d" % SIZE
        got = in_batch = 0
        while got < n:
            pos = self.pos
            eol = buf.find(b"\r\n", pos, self.filled)
            if eol < 0:
                self._fill()
                continue
            first = buf[pos]
            if first == 77:                                      # MSG
                if buf.endswith(size_suffix, pos, eol):
                    size = SIZE
                else:
                    size = int(buf[buf.rfind(b" ", pos, eol) + 1:eol])
                end = eol + 4 + size
                if end > self.filled:
                    self._fill()
                    continue
                self.pos = end
                got += 1
                in_batch += 1
                if in_batch == BATCH:
                    in_batch = 0
                    if sent < requests:
                        self.send(fetch)
                        sent += 1
            elif first == 72:                                    # HMSG: a status, not data
                line = bytes(buf[pos:eol])
                self.pos = eol + 2
                status = self._payload(int(line.split()[-1]))
                raise RuntimeError(f"NATS fetch after {got} of {n}: {status[:60]!r}")
            else:
                line = self._line()
                if line == b"PING":
                    self.send(b"PONG\r\n")
                elif line.startswith(b"-ERR"):
                    raise RuntimeError(f"NATS: {line!r}")
        return got


def _nats_command(port, directory):
    return ["nats-server", "-js", "-sd", directory, "-a", "127.0.0.1", "-p", str(port)]


def nats_jetstream(n: int) -> list[dict]:
    with Peer("peer-nats-", _nats_command) as peer:
        nc = RawNats(peer.port)
        try:
            nc.request("$JS.API.STREAM.CREATE.S", {
                "name": "S", "subjects": ["s"], "storage": "file", "retention": "limits",
                "discard": "old", "num_replicas": 1, "max_msgs": -1, "max_bytes": -1})
            payload = os.urandom(SIZE)
            pub = b"PUB s %d\r\n%s\r\n" % (SIZE, payload)
            batch = pub * BATCH
            # The last message asks for a PubAck: it comes once everything before is stored.
            last = (pub * (BATCH - 1)
                    + b"PUB s %s.ack %d\r\n%s\r\n" % (nc.inbox.encode(), SIZE, payload))
            sent_before = nc.sent
            start = time.perf_counter()
            for i in range(n // BATCH):
                nc.send(last if i == n // BATCH - 1 else batch)
            ack = json.loads(nc.reply()[1])
            seconds = time.perf_counter() - start
            if ack.get("seq") != n:
                raise RuntimeError(f"NATS stored {ack} of {n} messages")
            rows = [row("nats", "lean NATS protocol client", "produce", n, seconds,
                        nc.sent - sent_before)]
            nc.request("$JS.API.CONSUMER.DURABLE.CREATE.S.reader", {
                "stream_name": "S", "config": {"durable_name": "reader",
                                               "deliver_policy": "all", "ack_policy": "none",
                                               "replay_policy": "instant"}})
            fetch_body = json.dumps({"batch": BATCH, "expires": 30_000_000_000}).encode()
            fetch = b"PUB $JS.API.CONSUMER.MSG.NEXT.S.reader %s.f %d\r\n%s\r\n" % (
                nc.inbox.encode(), len(fetch_body), fetch_body)
            received_before = nc.received
            start = time.perf_counter()
            got = nc.count_fetched(n, fetch)
            rows.append(row("nats", "lean NATS protocol client", "consume", got,
                            time.perf_counter() - start, nc.received - received_before))
            return rows
        finally:
            nc.close()


# --- the run ---------------------------------------------------------------------------------

RUNNERS = {"iggy-fast": iggy_fast, "redis": redis_streams, "nats": nats_jetstream}
BINARIES = {"redis": "redis-server", "nats": "nats-server"}


def best(rows: list[dict], server: str, phase: str) -> dict | None:
    mine = [r for r in rows if r["server"] == server and r["phase"] == phase]
    return max(mine, key=lambda r: r["messages_per_second"], default=None)


def print_row(r: dict, out=sys.stdout) -> None:
    out.write(f"round {r['round']} {NAMES[r['server']]:<15} {r['phase']:<8}"
              f"{r['messages_per_second']:>12,.0f} msg/s {r['payload_mb_per_second']:>7,.0f} "
              f"payload MB/s {r['wire_mb_per_second']:>7,.0f} wire MB/s  {r['client']}\n")
    out.flush()


def print_table(rows: list[dict], servers, n: int, rounds: int, out=sys.stdout) -> None:
    out.write(f"\n{n:,} messages of {SIZE} B, batches of {BATCH}, one producer then one "
              f"consumer, best of {rounds} round(s); MB = 10^6 bytes, payload MB/s = msg/s x "
              f"{SIZE} B\n")
    out.write(f"{'server':<16}{'produce msg/s':>14}{'payload MB/s':>13}{'consume msg/s':>15}"
              f"{'payload MB/s':>13}{'iggy/peer produce, consume':>28}\n")
    ours = (best(rows, "iggy-fast", "produce"), best(rows, "iggy-fast", "consume"))
    for server in servers:
        produce, consume = best(rows, server, "produce"), best(rows, server, "consume")
        if not produce or not consume:
            continue
        ratio = ""
        if server != "iggy-fast" and all(ours):
            ratio = (f"{ours[0]['messages_per_second'] / produce['messages_per_second']:.1f}x, "
                     f"{ours[1]['messages_per_second'] / consume['messages_per_second']:.1f}x")
        out.write(f"{NAMES[server]:<16}{produce['messages_per_second']:>14,.0f}"
                  f"{produce['payload_mb_per_second']:>13,.0f}"
                  f"{consume['messages_per_second']:>15,.0f}"
                  f"{consume['payload_mb_per_second']:>13,.0f}{ratio:>28}\n")
    for server in servers:
        for phase in ("produce", "consume"):
            b = best(rows, server, phase)
            if b:
                out.write(f"  {NAMES[server]} {phase}: {b['client']} "
                          f"(wire {b['wire_mb_per_second']:,.0f} MB/s)\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("messages", nargs="?", type=int, default=500_000)
    parser.add_argument("rounds", nargs="?", type=int, default=3)
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated subset of {', '.join(SERVERS)}")
    parser.add_argument("--output", help="write every round as JSON to this file "
                                         "(e.g. bench/results/peers.json)")
    args = parser.parse_args(argv)
    n = args.messages - args.messages % BATCH
    if n <= 0:
        parser.error(f"messages must be at least {BATCH}")
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers {', '.join(sorted(unknown))}")
    skipped = {}
    for server in servers:
        if server in BINARIES and not shutil.which(BINARIES[server]):
            skipped[server] = f"{BINARIES[server]} is not installed"
            print(f"skipping {NAMES[server]}: {skipped[server]}", file=sys.stderr)
    servers = [s for s in servers if s not in skipped]
    rows: list[dict] = []
    started = time.time()
    for r in range(1, args.rounds + 1):
        for server in servers:
            for result in RUNNERS[server](n):
                result["round"] = r
                rows.append(result)
                print_row(result)
    print_table(rows, servers, n, args.rounds)
    if args.output:
        report = {"settings": {"messages": n, "message_size": SIZE, "batch": BATCH,
                               "rounds": args.rounds, "servers": servers,
                               "skipped": skipped},
                  "started_at": started, "machine": machine(), "rounds": rows,
                  "best": {server: {phase: best(rows, server, phase)
                                    for phase in ("produce", "consume")}
                           for server in servers}}
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
