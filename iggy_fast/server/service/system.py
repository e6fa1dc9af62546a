"""System commands: ping, stats, cluster metadata, the option catalog, clients (§5.1).

Stats and clients need read_servers; the rest only a login (ping not even that).
"""

from __future__ import annotations

import os
import platform
import shutil
import socket

from iggy_fast.protocol import requests as rq
from iggy_fast.protocol.codes import SERVER_VERSION, TOPIC_SCOPE
from iggy_fast.protocol.results import ClusterMetadata, ClusterNode, OptionInfo, Stats
from iggy_fast.server import metrics
from iggy_fast.server import options as topic_options
from iggy_fast.server.service import Context


def ping(ctx: Context, req: rq.Ping) -> None:
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


def _io() -> tuple[int, int]:
    """Bytes this process made the storage layer read and write (/proc/self/io)."""
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


def get_stats(ctx: Context, req: rq.GetStats) -> Stats:
    """Iggy's Stats from the numbers the metrics keep and read (server/metrics.py): CPU use
    over the last second (process: % of one core; machine: % of all cores), the process's
    resident memory and threads, storage I/O, the data directory's filesystem, and the totals
    of streams, topics, partitions, segments, messages, clients and consumer groups."""
    server = ctx.server
    server.authz.require_global(ctx.client, "read_servers")
    totals = server.state.totals()
    mem = _meminfo()
    cpu, total_cpu = server.metrics.cpu_usage()
    proc = metrics.process_figures()
    read_bytes, written_bytes = _io()
    disk = shutil.disk_usage(server.data_dir)
    uname = platform.uname()
    groups = sum(len(t.extra.get("groups", {})) for s in server.state.streams.values()
                 for t in s.topics.values())
    major, minor, patch = (int(x) for x in SERVER_VERSION.split("."))
    return Stats(
        process_id=os.getpid(), cpu_usage=cpu, total_cpu_usage=total_cpu,
        memory_usage=proc["resident_memory"], total_memory=mem.get("MemTotal", 0),
        available_memory=mem.get("MemAvailable", 0),
        run_time=max(0, ctx.now - server.started_at), start_time=server.started_at,
        read_bytes=read_bytes, written_bytes=written_bytes,
        messages_size_bytes=totals["bytes"], streams_count=totals["streams"],
        topics_count=totals["topics"], partitions_count=totals["partitions"],
        segments_count=totals["segments"], messages_count=totals["messages"],
        clients_count=len(server.clients), consumer_groups_count=groups,
        hostname=socket.gethostname(), os_name=uname.system, os_version=uname.release,
        kernel_version=uname.version, server_version=SERVER_VERSION,
        server_semver=major * 1_000_000 + minor * 1000 + patch,
        threads_count=proc["threads"], free_disk_space=disk.free,
        total_disk_space=disk.total)


def get_cluster_metadata(ctx: Context, req: rq.GetClusterMetadata) -> ClusterMetadata:
    server = ctx.server
    cluster = server.cfg["cluster"]
    ports = server.listen_ports
    host = server.cfg["tcp"]["address"].rpartition(":")[0].strip("[]") or "127.0.0.1"
    node = ClusterNode(cluster["node_name"], host, ports["tcp"], ports["quic"], ports["http"],
                       ports["websocket"], role=0, status=0)    # a single healthy leader
    return ClusterMetadata(cluster["name"], [node])


def describe_options(ctx: Context, req: rq.DescribeOptions) -> list[OptionInfo]:
    if req.scope != TOPIC_SCOPE:
        return []                  # streams and users have no options
    return [OptionInfo(*entry) for entry in topic_options.describe(ctx.server.state.defaults)]


def get_me(ctx: Context, req: rq.GetMe):
    return ctx.client


def get_client(ctx: Context, req: rq.GetClient):
    ctx.server.authz.require_global(ctx.client, "read_servers")
    return ctx.server.clients.get(req.client_id)


def get_clients(ctx: Context, req: rq.GetClients) -> list:
    ctx.server.authz.require_global(ctx.client, "read_servers")
    return sorted(ctx.server.clients.values(), key=lambda c: c.id)
