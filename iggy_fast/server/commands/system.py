"""System commands: ping, stats, cluster metadata, option catalog, clients (PROTOCOL.md §5.1)."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import socket
import time

from iggy_fast._wire import Reader, Writer
from iggy_fast.protocol.errors import InvalidCommand
from iggy_fast.server import options as topic_options
from iggy_fast.protocol.codes import SERVER_VERSION, TRANSPORTS
from iggy_fast.server.dispatch import command

NOT_LOGGED_IN = 0xFFFFFFFF


@command(1, "ping", auth=False)
def ping(server, client, r: Reader, now: int):
    return None


def _meminfo() -> dict[str, int]:
    info = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return info


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _io() -> tuple[int, int]:
    read = written = 0
    try:
        with open("/proc/self/io") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "read_bytes":
                    read = int(value)
                elif key == "write_bytes":
                    written = int(value)
    except OSError:
        pass
    return read, written


@command(10, "get_stats")
def get_stats(server, client, r: Reader, now: int):
    server.authz.require_global(client, "read_servers")
    totals = server.state.totals()
    mem = _meminfo()
    run_us = max(0, now - server.started_at)
    cpu = time.process_time() * 1e6 / run_us * 100 if run_us else 0.0
    load = os.getloadavg()[0] / (os.cpu_count() or 1) * 100
    read_bytes, written_bytes = _io()
    disk = shutil.disk_usage(server.data_dir)
    uname = platform.uname()
    groups = sum(len(t.extra.get("groups", {})) for s in server.state.streams.values()
                 for t in s.topics.values())
    w = Writer()
    w.u32(os.getpid()).f32(cpu).f32(load)
    w.u64(_rss()).u64(mem.get("MemTotal", 0)).u64(mem.get("MemAvailable", 0))
    w.u64(run_us).u64(server.started_at).u64(read_bytes).u64(written_bytes)
    w.u64(totals["bytes"]).u32(totals["streams"]).u32(totals["topics"])
    w.u32(totals["partitions"]).u32(totals["segments"]).u64(totals["messages"])
    w.u32(len(server.clients)).u32(groups)
    for text in (socket.gethostname(), uname.system, uname.release, uname.version,
                 SERVER_VERSION):
        w.long_string(text)
    major, minor, patch = (int(x) for x in SERVER_VERSION.split("."))
    w.u32(major * 1_000_000 + minor * 1000 + patch)
    w.u32(0)                                   # cache metrics: no message cache to report
    w.u32(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    w.u64(disk.free).u64(disk.total)
    return w.buf


@command(12, "get_cluster_metadata")
def get_cluster_metadata(server, client, r: Reader, now: int):
    cluster = server.cfg["cluster"]
    ports = server.listen_ports
    host = server.cfg["tcp"]["address"].rpartition(":")[0].strip("[]") or "127.0.0.1"
    w = Writer().long_string(cluster["name"]).u32(1)
    w.long_string(cluster["node_name"]).long_string(host)
    for transport in ("tcp", "quic", "http", "websocket"):
        w.raw(ports[transport].to_bytes(2, "little"))
    w.u8(0).u8(0)                              # role leader, status healthy
    return w.buf


@command(13, "describe_options")
def describe_options(server, client, r: Reader, now: int):
    scope = r.u8()
    if scope in (2, 3):
        return b"\x00\x00\x00\x00"
    if scope != 1:
        raise InvalidCommand(f"options scope {scope}")
    entries = topic_options.describe(server.state.defaults)
    w = Writer().u32(len(entries))
    for key, kind, default, desc in entries:
        w.name(key).u8(kind).u32(len(default)).raw(default).long_string(desc)
    return w.buf


def client_record(w: Writer, c) -> Writer:
    w.u32(c.id).u32(NOT_LOGGED_IN if c.user_id is None else c.user_id)
    w.u8(TRANSPORTS.get(c.transport, 1)).long_string(c.address).u32(len(c.groups))
    return w


def client_details(c) -> bytearray:
    w = client_record(Writer(), c)
    for sid, tid, gid in sorted(c.groups):
        w.u32(sid).u32(tid).u32(gid)
    return w.buf


@command(20, "get_me")
def get_me(server, client, r: Reader, now: int):
    return client_details(client)


@command(21, "get_client")
def get_client(server, client, r: Reader, now: int):
    server.authz.require_global(client, "read_servers")
    other = server.clients.get(r.u32())
    return client_details(other) if other is not None else None


@command(22, "get_clients")
def get_clients(server, client, r: Reader, now: int):
    server.authz.require_global(client, "read_servers")
    w = Writer()
    for c in sorted(server.clients.values(), key=lambda c: c.id):
        client_record(w, c)
    return w.buf
