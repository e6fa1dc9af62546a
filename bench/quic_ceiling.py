"""How close our server over QUIC comes to what aioquic itself carries: one run, two endpoints.

1. Our server (a real `iggy-fast server` process) over QUIC: one QuicLink producer sends
   `--batches` batches of `--messages` x `--size`-byte messages to one partition, then one
   consumer polls them back, `--messages` per poll.
2. A no-op aioquic endpoint in its own process (the ceiling): the same aioquic server classes,
   the same certificate kind, the same QuicLink client sending the very same frames; each
   request stream is answered at its FIN with a well-formed reply of the size our server's
   reply to that request had (a send confirmation; for a poll, as many bytes as our server
   returned), without decoding, storing or reading anything.

Both use uvloop when it is installed (as the server does). `--inflight` requests may be
outstanding at once (1, as the official SDK does, by default); `--mtu` is the datagram size
both ends send. The endpoints run in alternating rounds and the best of each is kept. Reported
per phase and endpoint: messages/s, and messages per CPU-second of the endpoint's process (on
a shared machine the steadier figure: it does not count time the process waited for a core),
with our share of the ceiling.

    python bench/quic_ceiling.py [--batches 300] [--messages 1000] [--size 1000] [--inflight 1]
                                 [--mtu 1200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time

from iggy_fast import _wire
from iggy_fast.bench.actors import make_batch
from iggy_fast.client import BlockingClient
from iggy_fast.client.core import poll_body, send_messages_body
from iggy_fast.client.transports.quic import QuicLink
from iggy_fast.protocol.codes import RESULT_FRAMED
from iggy_fast.testing import ServerProcess, free_port

REGISTER = 1            # the login's operation (protocol/codes.py Operation.REGISTER)


def _loop_policy() -> None:
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


# -- the no-op endpoint ---------------------------------------------------------------------------

def serve_noop(port: int, cert: str, key: str, send_reply: int, poll_reply: int, mtu: int,
               ready) -> None:
    """Answer every request stream with a reply frame the client accepts, of the sizes given
    (body bytes after the header), and nothing else."""
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.asyncio.server import QuicServer
    from aioquic.quic import events
    from aioquic.quic.configuration import QuicConfiguration

    from iggy_fast.server.transports.quic import WINDOW

    login_body = bytes(4) + bytes(4) + (1).to_bytes(8, "little")   # result, user 0, session 1
    send_body = bytes(send_reply)
    poll_body_ = bytearray(poll_reply)
    poll_body_[12:16] = (1000).to_bytes(4, "little")                # a count, as polls read

    class Noop(QuicConnectionProtocol):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.chunks: dict[int, list] = {}

        def quic_event_received(self, event) -> None:
            if type(event) is not events.StreamDataReceived:
                return
            chunks = self.chunks.setdefault(event.stream_id, [])
            chunks.append(event.data)
            if not event.end_stream:
                return
            frame = b"".join(self.chunks.pop(event.stream_id))
            h = _wire.parse_request_header(frame[:256])
            op = h.operation
            if op == REGISTER:
                body = login_body
            elif h.code == 100:
                body = poll_body_
            else:
                body = (bytes(4) if op in RESULT_FRAMED else b"") + send_body
            self._quic.send_stream_data(event.stream_id,
                                        _wire.reply_header(h, op, len(body)) + body,
                                        end_stream=True)

    async def main() -> None:
        configuration = QuicConfiguration(is_client=False, max_data=WINDOW,
                                          max_stream_data=WINDOW, max_datagram_size=mtu)
        configuration.load_cert_chain(cert, key)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", port))
        await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: QuicServer(configuration=configuration, create_protocol=Noop), sock=sock)
        ready.set()
        await asyncio.Event().wait()

    _loop_policy()
    asyncio.run(main())


# -- the client ----------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(port: int, pid: int, args, batch, reply_sizes: dict | None = None,
                batches: int | None = None) -> dict:
    """Produce then consume `batches` (--batches) over one QuicLink to the endpoint process
    `pid`; per phase, messages/s and messages per CPU-second of that process. Records the body
    size of the last send and poll reply in `reply_sizes` when given."""
    batches = batches or args.batches
    link = QuicLink(f"127.0.0.1:{port}", timeout=60, max_datagram_size=args.mtu)
    await link.connect()
    await link.login("iggy", "iggy")
    send_body = send_messages_body("ceiling", "t", 0, args.messages)
    rates = {}

    async def phase(make_request) -> tuple[float, float]:
        sem = asyncio.Semaphore(args.inflight)
        replies = []

        async def one(i):
            async with sem:
                replies.append(await make_request(i))

        start, cpu = time.perf_counter(), cpu_seconds(pid)
        await asyncio.gather(*[one(i) for i in range(batches)])
        elapsed, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu
        if reply_sizes is not None:
            reply_sizes.setdefault("sizes", []).append(len(replies[-1]))
        messages = batches * args.messages
        return messages / elapsed, messages / max(cpu, 0.01)

    rates["producer"] = await phase(lambda i: link.request(101, send_body, (batch,)))
    rates["consumer"] = await phase(lambda i: link.request(
        100, poll_body("ceiling", "t", 0, 1, i * args.messages, args.messages, False)))
    await link.close()
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--messages", type=int, default=1000, help="messages per batch")
    parser.add_argument("--size", type=int, default=1000, help="message payload bytes")
    parser.add_argument("--inflight", type=int, default=1, help="requests outstanding at once")
    parser.add_argument("--mtu", type=int, default=1200,
                        help="UDP datagram size both ends send (quic.initial_mtu)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per endpoint (best kept)")
    args = parser.parse_args()
    _loop_policy()
    batch = make_batch(args.messages, args.size)

    with tempfile.TemporaryDirectory(prefix="quic-ceiling-") as tmp:
        srv = ServerProcess(os.path.join(tmp, "data"),
                            env={"IGGY_SYSTEM_PARTITION_ENFORCE_FSYNC": "false",
                                 "IGGY_QUIC_INITIAL_MTU": str(args.mtu)}).start()
        try:
            with BlockingClient(srv.address) as b:
                b.login()
                b.call(202, _wire.Writer().name("ceiling").getvalue())
                b.call(302, _wire.Writer().identifier("ceiling").u32(1).name("t").getvalue())
            sizes: dict = {}        # a short first run: the sizes of our replies
            asyncio.run(drive(srv.quic_port, srv.proc.pid, args, batch, sizes, batches=3))
            cert = os.path.join(srv.data_dir, "certs", "iggy_cert.pem")
            key = os.path.join(srv.data_dir, "certs", "iggy_key.pem")
            send_reply, poll_reply = sizes["sizes"]
            port = free_port(socket.SOCK_DGRAM)
            ready = mp.Event()
            noop = mp.Process(target=serve_noop, daemon=True,
                              args=(port, cert, key, send_reply, poll_reply, args.mtu, ready))
            noop.start()
            try:
                if not ready.wait(30):
                    raise SystemExit("the no-op endpoint did not start")
                # Alternate rounds, best of each: the machine's other load hits both alike.
                runs = {"ours": [], "ceiling": []}
                for _ in range(args.rounds):
                    runs["ceiling"].append(asyncio.run(drive(port, noop.pid, args, batch)))
                    runs["ours"].append(asyncio.run(drive(srv.quic_port, srv.proc.pid, args,
                                                             batch)))
            finally:
                noop.terminate()
                noop.join()
        finally:
            srv.stop()

    print(f"QUIC, {args.batches} batches of {args.messages} x {args.size} B, "
          f"{args.inflight} in flight, {args.mtu} B datagrams; best of "
          f"{args.rounds} alternating rounds")
    print("(per server CPU s: messages carried per CPU-second the endpoint process used; the")
    print(" figure a loaded machine disturbs least)")
    print(f"{'':<20} {'aioquic no-op':>14} {'iggy-fast':>12} {'ratio':>7}")
    for phase in ("producer", "consumer"):
        for i, what in enumerate(("messages/s", "per server CPU s")):
            ceiling = max(run[phase][i] for run in runs["ceiling"])
            ours = max(run[phase][i] for run in runs["ours"])
            print(f"{phase + ' ' + what:<26} {ceiling:>8,.0f} {ours:>12,.0f} "
                  f"{ours / ceiling:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
