"""A mutation fuzzer for the whole server: SDK-captured request frames, mutated, over real TCP.

    python fuzz/fuzz_server.py --frames 1000000 --seed 1

Seeds are the frames in fuzz/corpus/ (fuzz/capture.py records them from `apache-iggy==0.9.0`).
Each round takes one, writes this connection's session into it, and applies one to three
mutations: bit flips, interesting bytes, byte inserts and deletes, truncation, edits of length
fields inside the body, edits of header fields (size, command, client, request checksum,
request, operation, session, command code, ...), splices of two frames, and edits of the
fields of a message batch followed by re-checksumming it. Afterwards the size field and the
request checksum are usually repaired, so most frames get past framing and the checksum and
reach the command handlers; the rest test the layers they stop at.

A frame whose size field matches its length ("aligned") goes over one logged-in connection
and must get exactly one reply frame (a reply or an eviction) that is not status 1 (internal
error); a login it turns into, or a logout, is followed through. Any other frame ("desync")
goes over a fresh connection, half of them logged in with a personal access token: the bytes
are sent, the sending side is shut, and the server must answer what it can (never status 1)
and then close that connection.

Every --check-every frames the fuzzer checks that the server process is alive, that a fresh
client can connect, ping, log in and list streams, that its log holds no traceback, and samples
its VmRSS; every --reset-every frames it deletes every stream, user and token the mutations
made and replays the corpus's create frames (unmutated; each must succeed), so the server's
state, and with it a correct server's memory, stays bounded. The first failure stops the run
with the frame in hex. A summary ends every run; --seed replays a run exactly.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import socket
import sys
import time

import xxhash

from iggy_fast._wire import Reader, Writer
from iggy_fast.client import BlockingClient
from iggy_fast.protocol.codes import COMMANDS, RESULT_FRAMED
from iggy_fast.testing import ServerProcess

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
# Create frames replayed at every reset, in corpus order: user, token, stream, topic, messages,
# a stored offset, a consumer group and this connection's membership of it.
SETUP_OPS = {141, 146, 128, 132, 160, 161, 139, 148}
VALID_OPS = [0, 1, 2, 3, 64, 68, 127, 150, 159, 163, 255, *range(128, 150), 160, 161, 162]
INTERESTING = [0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF,
               0x80000000, 0xFFFFFFFF, 2**63, 2**64 - 1]
# Request header fields (offset, width) a mutation may rewrite.
HEADER_FIELDS = [(0, 16), (16, 16), (32, 16), (48, 4), (52, 4), (56, 4), (60, 1), (61, 1),
                 (62, 8), (128, 16), (144, 16), (160, 8), (168, 8), (176, 1), (177, 1),
                 (184, 8), (192, 4), (196, 4), (200, 8), (248, 8)]
# Message-batch fields (offset, width): batch header, then a message header (relative).
BATCH_FIELDS = [(0, 8), (8, 8), (16, 8), (24, 8), (32, 8), (40, 8), (48, 4), (52, 4), (255, 1)]
MESSAGE_FIELDS = [(0, 8), (8, 16), (24, 4), (28, 4), (32, 4), (36, 4), (40, 8)]
MAX_FRAME = 64 * 1024 * 1024


class FuzzFailure(Exception):
    """What the server did wrong, with the frame that made it."""


def u32(b, at: int) -> int:
    return int.from_bytes(b[at:at + 4], "little")


def put(b: bytearray, at: int, width: int, value: int) -> None:
    b[at:at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")


def load_corpus(path: str = CORPUS) -> list[tuple[str, bytes]]:
    names = sorted(n for n in os.listdir(path) if n.endswith(".bin"))
    if not names:
        raise SystemExit(f"no corpus in {path}: run fuzz/capture.py")
    out = []
    for n in names:
        with open(os.path.join(path, n), "rb") as f:
            out.append((n[:-4], f.read()))
    return out


def body_checksum(frame) -> int:
    return xxhash.xxh3_64_intdigest(bytes(frame[256:]))


def rechecksum_batch(frame: bytearray) -> bool:
    """Recompute the message and batch checksums of a SendMessages frame whose batch still
    tiles, so a mutated batch gets past checksum validation; False when it does not tile."""
    if len(frame) < 260:
        return False
    start = 260 + u32(frame, 256)
    batch = memoryview(frame)[start:]
    if start > len(frame) or len(batch) < 256:
        return False
    pos, sums = 256, []
    for _ in range(u32(batch, 48)):
        if pos + 48 > len(batch):
            return False
        end = pos + 48 + u32(batch, pos + 32) + u32(batch, pos + 36)
        if end > len(batch):
            return False
        digest = xxhash.xxh3_64_intdigest(bytes(batch[pos + 8:end]))
        batch[pos:pos + 8] = digest.to_bytes(8, "little")
        sums.append(bytes(batch[pos:pos + 8]))
        pos = end
    digest = xxhash.xxh3_64_intdigest(bytes(batch[0:40]) + bytes(batch[48:52]) + b"".join(sums))
    batch[40:48] = digest.to_bytes(8, "little")
    return True


class Mutator:
    """Picks a corpus frame and mutates it; deterministic for a given random.Random."""

    def __init__(self, rng: random.Random, corpus: list[tuple[str, bytes]]):
        self.rng = rng
        self.corpus = corpus
        self.ops = [self.bit_flip, self.interesting_byte, self.insert, self.delete,
                    self.truncate, self.length_field, self.header_field, self.splice,
                    self.batch_field]

    def body_pos(self, f: bytearray, end_ok: bool = False) -> int:
        """A position in the body (in the frame, if a truncation left less than a header)."""
        lo = min(256, len(f))
        n = len(f) - lo + (1 if end_ok else 0)
        return lo + self.rng.randrange(n) if n > 0 else lo

    def bit_flip(self, f: bytearray) -> str:
        for _ in range(self.rng.randint(1, 8)):
            at = self.body_pos(f) if len(f) > 256 and self.rng.random() < 0.7 \
                else self.rng.randrange(len(f))
            f[at] ^= 1 << self.rng.randrange(8)
        return "bit flip"

    def interesting_byte(self, f: bytearray) -> str:
        at = self.body_pos(f) if len(f) > 256 else self.rng.randrange(len(f))
        f[at] = self.rng.choice((0, 1, 0x7F, 0x80, 0xFE, 0xFF))
        return "byte"

    def insert(self, f: bytearray) -> str:
        at = self.body_pos(f, end_ok=True)
        f[at:at] = self.rng.randbytes(self.rng.choice((1, 1, 2, 4, 8, 16, 300)))
        return "insert"

    def delete(self, f: bytearray) -> str:
        if len(f) <= 256:
            return self.insert(f)
        at = self.body_pos(f)
        del f[at:at + self.rng.choice((1, 1, 2, 4, 8, 64))]
        return "delete"

    def truncate(self, f: bytearray) -> str:
        # Mostly inside the body; sometimes into the header (a frame shorter than 256).
        cut = self.body_pos(f, end_ok=True) if self.rng.random() < 0.9 \
            else self.rng.randrange(len(f))
        del f[cut:]
        return "truncate"

    def length_field(self, f: bytearray) -> str:
        if len(f) <= 256:
            return self.header_field(f)
        at = self.body_pos(f)
        width = min(self.rng.choice((1, 1, 4, 4, 8)), len(f) - at)   # never past the end
        body_len = len(f) - 256
        put(f, at, width, self.rng.choice([*INTERESTING, body_len - 1, body_len, body_len + 1]))
        return "length field"

    def header_field(self, f: bytearray) -> str:
        if len(f) < 256:
            return self.bit_flip(f)
        at, width = self.rng.choice(HEADER_FIELDS)
        if at == 176 and self.rng.random() < 0.8:
            value = self.rng.choice(VALID_OPS)
        elif at == 196 and self.rng.random() < 0.8:
            value = self.rng.choice([*COMMANDS, 38, 44, 45, 0, 99, 2**32 - 1])
        elif at == 48:
            value = self.rng.choice([0, 255, 256, len(f) - 1, len(f) + 1, len(f) + 4096,
                                     MAX_FRAME, MAX_FRAME + 1, 2**32 - 1])
        elif self.rng.random() < 0.5:
            value = self.rng.choice(INTERESTING)
        else:
            value = self.rng.getrandbits(8 * width)
        put(f, at, width, value)
        return f"header@{at}"

    def splice(self, f: bytearray) -> str:
        other = self.rng.choice(self.corpus)[1]
        if self.rng.random() < 0.5:      # this header, another frame's body
            f[256:] = other[256:]
            return "splice body"
        a = self.body_pos(f, end_ok=True)
        b = 256 + self.rng.randrange(len(other) - 255)
        f[a:] = other[b:]
        return "splice"

    def batch_field(self, f: bytearray) -> str:
        if len(f) < 260 or f[176] != 160:
            return self.length_field(f)
        start = 260 + u32(f, 256)
        if start + 256 > len(f):
            return self.length_field(f)
        if self.rng.random() < 0.4:
            at, width = self.rng.choice(BATCH_FIELDS)
        else:
            at, width = self.rng.choice(MESSAGE_FIELDS)
            at += 256
        value = self.rng.choice([*INTERESTING, len(f) - start, len(f) - start - 256])
        put(f, start + at, width, value)
        rechecksum_batch(f)
        return "batch field"

    def mutate(self, base: bytes, session: int) -> tuple[bytearray, str]:
        f = bytearray(base)
        if u32(f, 184) or f[184:192] != bytes(8):
            put(f, 184, 8, session)
        had_checksum = f[144:160] != bytes(16)
        done = []
        for _ in range(self.rng.choice((1, 1, 1, 2, 3))):
            done.append(self.rng.choice(self.ops)(f))
            if len(f) < 256:        # truncated into the header: nothing left to mutate
                break
        touched_header = any(d.startswith("header") for d in done)
        if len(f) >= 256:
            # Repair what the mutations broke, usually, so the frame reaches a handler.
            if not touched_header or self.rng.random() < 0.5:
                if self.rng.random() < 0.95:
                    put(f, 48, 4, len(f))
                if had_checksum and self.rng.random() < 0.85:
                    put(f, 144, 16, body_checksum(f))
            if f[176] == 160 and self.rng.random() < 0.5:
                rechecksum_batch(f)
        return f, "+".join(done)


def read_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return bytes(out)


def check_reply(header: bytes, body: bytes) -> None:
    """A reply frame must be a reply (8) or an eviction (13) and never internal error (1)."""
    command, status, op = header[60], u32(header, 216), header[208]
    if command not in (8, 13):
        raise FuzzFailure(f"reply with command byte {command}")
    if command == 8 and status == 1:
        raise FuzzFailure("status 1 (internal error)")
    if command == 8 and status == 0 and op in RESULT_FRAMED and len(body) >= 12 \
            and u32(body, 0) == 1 and u32(body, 8) == 1:
        raise FuzzFailure("result section with error 1 (internal error)")
    if command == 8 and status != 0 and body:
        raise FuzzFailure(f"status {status} with a {len(body)}-byte body")


class Session:
    """The logged-in connection aligned frames go over."""

    def __init__(self, address: str, login_frame: bytes, timeout: float):
        self.address = address
        self.login_frame = login_frame
        self.timeout = timeout
        self.sock = None
        self.session = 0
        self.logins = 0

    def connect(self) -> None:
        if self.sock is not None:
            self.sock.close()
        host, _, port = self.address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.login()

    def login(self) -> None:
        header, body = self.exchange(self.login_frame)
        if header[60] != 8 or u32(header, 216) != 0:
            raise FuzzFailure(f"root login refused (command {header[60]}, status "
                              f"{u32(header, 216)})")
        self.session = int.from_bytes(body[8:16], "little")
        self.logins += 1

    def exchange(self, frame) -> tuple[bytes, bytes]:
        self.sock.sendall(frame)
        header = read_exact(self.sock, 256)
        size = u32(header, 48)
        if not 256 <= size <= MAX_FRAME:
            raise FuzzFailure(f"reply size {size}")
        return header, read_exact(self.sock, size - 256)


def desync_exchange(address: str, frame: bytes, token_login: bytes | None,
                    timeout: float) -> list[bytes]:
    """Send a frame whose size field lies on a fresh connection, shut the sending side and
    read until the server closes; returns the reply headers it sent."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        if token_login is not None:
            sock.sendall(token_login)
            header = read_exact(sock, 256)
            read_exact(sock, u32(header, 48) - 256)
            if header[60] != 8 or u32(header, 216) != 0:
                token_login = None       # the token was deleted by a mutation: fine
        sock.sendall(frame)
        sock.shutdown(socket.SHUT_WR)
        data = bytearray()
        deadline = time.monotonic() + timeout
        try:
            while chunk := sock.recv(65536):
                data += chunk
                if time.monotonic() > deadline:
                    raise FuzzFailure("the server kept a half-closed connection open")
        except ConnectionResetError:
            pass       # closed with bytes of ours unread: a reset is a close too
        except socket.timeout:
            raise FuzzFailure(f"the server neither answered nor closed in {timeout} s") from None
    headers, pos = [], 0
    while pos + 256 <= len(data):
        header = bytes(data[pos:pos + 256])
        size = u32(header, 48)
        if size < 256 or pos + size > len(data):
            raise FuzzFailure(f"a reply of size {size} cut at {len(data) - pos} bytes")
        check_reply(header, bytes(data[pos + 256:pos + size]))
        headers.append(header)
        pos += size
    if pos != len(data):
        raise FuzzFailure(f"{len(data) - pos} stray bytes after the replies")
    return headers


class Fuzzer:
    def __init__(self, server: ServerProcess, seed: int, check_every: int, reset_every: int,
                 timeout: float, rss_limit_mb: int, out=sys.stdout):
        self.server = server
        self.rng = random.Random(seed)
        self.corpus = load_corpus()
        self.mutator = Mutator(self.rng, self.corpus)
        self.check_every = check_every
        self.reset_every = reset_every
        self.timeout = timeout
        self.rss_limit_kib = rss_limit_mb * 1024
        self.out = out
        logins = [f for n, f in self.corpus if n.endswith("-login")]
        self.password_login, self.token_login_base = logins[0], logins[1]
        self.setup = [f for _, f in self.corpus if f[176] in SETUP_OPS]
        self.main = Session(server.address, self.password_login, timeout)
        self.token_login = None
        self.log_pos = 0
        self.stats = collections.Counter()
        self.statuses = collections.Counter()
        self.rss_samples: list[int] = []

    def token_login_frame(self, token: str) -> bytes:
        """The captured token login, carrying this run's token."""
        base = self.token_login_base
        r = Reader(base[256:])
        r.u32(), r.name(), r.name()
        body = base[256:256 + r.pos] + Writer().u8(len(token)).raw(token.encode()).u32(0).buf
        f = bytearray(base[:256]) + body
        put(f, 48, 4, len(f))
        put(f, 144, 16, body_checksum(f))
        return bytes(f)

    def reset(self) -> None:
        """Delete what mutations made, then rebuild the corpus's world from its create frames."""
        with BlockingClient(self.server.address, timeout=self.timeout) as admin:
            admin.login()
            body = admin.call(201).body
            r = Reader(body)
            while r.remaining:
                sid = r.u32()
                r.u64(), r.u32(), r.u64(), r.u64(), r.name()
                r.raw(r.u32())
                admin.call(203, Writer().identifier(sid).getvalue())
            r = Reader(admin.call(32).body)
            while r.remaining:
                uid = r.u32()
                r.u64(), r.u8(), r.name()
                r.raw(r.u32())
                if uid != 0:
                    admin.call(34, Writer().identifier(uid).getvalue())
            r = Reader(admin.call(41).body)
            while r.remaining:
                name = r.name()
                r.u64()
                admin.call(43, Writer().name(name).getvalue())
        self.main.connect()
        for frame in self.setup:
            f = bytearray(frame)
            put(f, 184, 8, self.main.session)
            header, body = self.main.exchange(f)
            if header[60] != 8 or u32(header, 216) != 0 or (header[208] in RESULT_FRAMED
                                                             and body[:4] != bytes(4)):
                raise FuzzFailure(f"setup frame (op {frame[176]}) failed: command "
                                  f"{header[60]}, status {u32(header, 216)}, "
                                  f"body {body[:16].hex()}")
            if frame[176] == 146:
                token = Reader(body, 4).name()
                self.token_login = self.token_login_frame(token)
        self.stats["resets"] += 1

    def check(self) -> None:
        """The server is alive, serves a fresh client, logged no traceback, and is not
        growing without bound."""
        if not self.server.alive():
            raise FuzzFailure(f"server exited with {self.server.proc.returncode}")
        with BlockingClient(self.server.address, timeout=self.timeout) as fresh:
            fresh.ping()
            fresh.login()
            fresh.call(201)
        with open(self.server.log_path, "rb") as f:
            f.seek(self.log_pos)
            new = f.read()
            self.log_pos += len(new)
        for marker in (b"Traceback", b"internal error"):
            if marker in new:
                at = new.index(marker)
                raise FuzzFailure("server log: " + new[max(0, at - 2000):at + 3000]
                                  .decode(errors="replace"))
        rss = self.server.rss_kib()
        self.rss_samples.append(rss)
        if rss > self.rss_limit_kib:
            raise FuzzFailure(f"server RSS {rss} KiB over the {self.rss_limit_kib} KiB limit")
        self.stats["checks"] += 1

    def one(self) -> None:
        name, base = self.rng.choice(self.corpus)
        frame, how = self.mutator.mutate(base, self.main.session)
        aligned = len(frame) >= 256 and u32(frame, 48) == len(frame) and len(frame) <= MAX_FRAME
        try:
            if aligned:
                self.stats["aligned"] += 1
                try:
                    header, body = self.main.exchange(frame)
                except (ConnectionError, socket.timeout) as e:
                    if isinstance(e, socket.timeout):
                        raise FuzzFailure(f"no reply within {self.timeout} s") from None
                    self.stats["closed"] += 1          # a clean close is an answer too
                    self.main.connect()
                    return
                check_reply(header, body)
                self.statuses["evict" if header[60] == 13 else u32(header, 216)] += 1
                op = frame[176]
                if header[60] == 8 and u32(header, 216) == 0:
                    if op == 1 and len(body) >= 16:
                        self.main.session = int.from_bytes(body[8:16], "little")
                        self.stats["mutated logins"] += 1
                    elif op == 3:
                        self.stats["logouts"] += 1
                        self.main.login()
            else:
                self.stats["desync"] += 1
                token = self.token_login if self.rng.random() < 0.5 else None
                replies = desync_exchange(self.server.address, bytes(frame), token,
                                          self.timeout)
                self.stats["desync replies"] += len(replies)
        except FuzzFailure as e:
            raise FuzzFailure(f"{e}\n  seed frame {name}, mutations {how}, "
                              f"{'aligned' if aligned else 'desync'}\n  frame "
                              f"{bytes(frame).hex()}") from None

    def run(self, frames: int, progress_every: int = 0) -> dict:
        start = time.monotonic()
        self.reset()
        self.check()
        for i in range(1, frames + 1):
            self.one()
            if i % self.check_every == 0:
                self.check()
            if i % self.reset_every == 0:
                self.reset()
            if progress_every and i % progress_every == 0:
                rate = i / (time.monotonic() - start)
                print(f"  {i} frames, {rate:.0f}/s, RSS {self.rss_samples[-1] // 1024} MiB",
                      file=self.out, flush=True)
        self.check()
        self.stats["frames"] = frames
        return {"seconds": time.monotonic() - start, "stats": dict(self.stats),
                "statuses": dict(self.statuses), "logins": self.main.logins,
                "rss_first_kib": self.rss_samples[0], "rss_max_kib": max(self.rss_samples),
                "rss_last_kib": self.rss_samples[-1]}


def run(frames: int, seed: int, check_every: int = 1000, reset_every: int = 1000,
        timeout: float = 30.0, rss_limit_mb: int = 1024, progress_every: int = 0,
        out=sys.stdout) -> dict:
    """Start a server, fuzz it, stop it; the summary, or FuzzFailure."""
    # Mutated logins are failed logins: the throttle would make the run wait on them rather
    # than fuzz (tests/test_login_defences.py covers the throttle).
    server = ServerProcess(env={"IGGY_LOGIN_MAX_DELAY": "0 s"}).start()
    try:
        fuzzer = Fuzzer(server, seed, check_every, reset_every, timeout, rss_limit_mb, out)
        summary = fuzzer.run(frames, progress_every)
        rc = server.stop()
        if rc != 0:
            raise FuzzFailure(f"server exited with {rc} on SIGTERM:\n{server.log()[-3000:]}")
        return summary
    finally:
        server.stop()
        server.cleanup()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--check-every", type=int, default=1000)
    p.add_argument("--reset-every", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a reply")
    p.add_argument("--rss-limit-mb", type=int, default=1024)
    p.add_argument("--progress-every", type=int, default=50_000)
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.randrange(1 << 31)
    print(f"fuzz_server: seed {seed}, frames {a.frames}, check every {a.check_every}, "
          f"reset every {a.reset_every}, timeout {a.timeout} s, RSS limit {a.rss_limit_mb} MiB, "
          f"corpus {len(load_corpus())} frames", flush=True)
    try:
        s = run(a.frames, seed, a.check_every, a.reset_every, a.timeout, a.rss_limit_mb,
                a.progress_every)
    except FuzzFailure as e:
        print(f"FAILURE (seed {seed}): {e}", flush=True)
        return 1
    top = sorted(s["statuses"].items(), key=lambda kv: -kv[1])[:12]
    print(f"done: {a.frames} frames in {s['seconds']:.0f} s ({a.frames / s['seconds']:.0f}/s), "
          f"0 failures\n  {s['stats']}\n  logins {s['logins']}; replies by status: {top}\n"
          f"  server RSS: first {s['rss_first_kib'] // 1024} MiB, max "
          f"{s['rss_max_kib'] // 1024} MiB, last {s['rss_last_kib'] // 1024} MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
