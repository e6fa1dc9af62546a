"""Replication's edge cases (issue 12), on etcd and node processes on loopback:

* a divergent tail that spans a segment boundary: a leader killed after appending batches
  no follower got, over several small segments, truncates them when it returns (across
  segments, no copy of the whole log again) and ends byte-identical to the new leader;
* a move onto a new node when the leader's log no longer starts at 0 (its early segments
  deleted): the new replica begins its copy at the leader's start, catches up, joins the
  in-sync set, holds the leader's log byte for byte from there, and serves polls as leader;
* a follower restarted as after a reboot, its offset mark leaving a gap of offsets after its
  log end (storage/log.py, OffsetMark): its fetch beyond the leader's end is answered "truncate
  to my end", it goes back to where its data ends and catches up (it used to be refused as
  "ahead of the leader" for good);
* a returning follower joins the in-sync set only once it has the leader's newest consumer
  offsets, and counts for acknowledgements while its joining is being written: a stored
  offset and an acknowledged send survive the leader's death right after. The follower's
  fetches are made by the test here (the real follower is paused), with the same frames a
  node sends, to hold the moments a real fetch passes through in microseconds.

Skipped only without `etcd`.
"""

from __future__ import annotations

import asyncio
import glob
import os
import signal
import subprocess
import sys

import orjson
import pytest
from cluster_helpers import connect, read_partition, segments
from conftest import wait_for
from iggy_fast import _wire
from iggy_fast.config import split_address
from iggy_fast.server.cluster.dev import EtcdProcess, find_etcd, node
from iggy_fast.server.cluster.replication import frame, read_frame
from test_cluster import live, status

ETCD = find_etcd()
pytestmark = pytest.mark.skipif(ETCD is None, reason="no etcd binary on PATH "
                                "(Debian: apt-get install etcd-server)")

SMALL = {"IGGY_SYSTEM_SEGMENT_SIZE": "8 KiB"}


def partition_dirs(srv) -> list[str]:
    return sorted(glob.glob(os.path.join(srv.data_dir, "streams", "*", "topics", "*",
                                         "partitions", "*")),
                  key=lambda d: int(os.path.basename(d)))


def log_files(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".log"))


def stop_all(etcd, nodes: dict) -> None:
    for n in nodes.values():
        if n.proc is not None:
            n.proc.send_signal(signal.SIGCONT)
        n.stop()
        assert "Traceback" not in n.log(), n.log()[-5000:]
    if etcd.proc is not None:
        etcd.proc.send_signal(signal.SIGCONT)
    etcd.cleanup()


async def until(predicate, timeout: float):
    return await asyncio.get_running_loop().run_in_executor(None, wait_for, predicate, timeout)


def first_base(directory: str) -> int:
    return int(log_files(directory)[0][:20])


def cluster(tmp_path, name: str, count: int, leases: dict | None = None,
            env: dict | None = None):
    etcd = EtcdProcess(ETCD).start()
    nodes = {f"node{i}": node(f"node{i}", etcd.endpoint, cluster=name,
                              lease_ttl=(leases or {}).get(f"node{i}", "3 s"),
                              data_dir=str(tmp_path / f"node{i}"), env={**SMALL, **(env or {})})
             for i in range(1, count + 1)}
    return etcd, nodes


async def send_until_accepted(client, stream: str, partition: int, payload: bytes) -> None:
    """A send to a partition whose new leader may still be taking office."""
    for _ in range(100):
        try:
            await client.send_messages(stream, "t", partition, [payload])
            return
        except Exception:
            await asyncio.sleep(0.1)
    raise AssertionError("no send accepted in 10 s")


async def test_a_divergent_tail_over_several_segments_is_cut_when_the_old_leader_returns(
        tmp_path):
    """node1 leads; node2 is paused; node1 appends batches over several 8 KiB segments that
    node2 never gets and is killed before acknowledging any. node2 leads from its own end;
    node1, restarted, cuts its tail there, in an earlier segment than its last, and copies
    node2's log from there on, ending byte-identical to it."""
    # node2 is paused for a while: a long lease keeps it live (and in the in-sync set).
    etcd, nodes = cluster(tmp_path, "ts", 2, leases={"node2": "15 s"})
    try:
        for n in nodes.values():
            n.start()
        assert wait_for(lambda: len(live(etcd, "ts")) == 2, 20)
        admin = await connect(nodes["node1"])
        await admin.create_stream("ts")
        await admin.create_topic("ts", "t", 1)
        assert await until(lambda: status(etcd, "ts")["partitions"], 10)
        assert status(etcd, "ts")["partitions"][0]["leader"] == "node1"
        acked = []
        for i in range(6):
            payloads = [f"acked-{i}-{k}".encode().ljust(500, b".") for k in range(3)]
            await admin.send_messages("ts", "t", 0, payloads)
            acked += payloads
        cut = len(acked)
        directory = partition_dirs(nodes["node1"])[0]

        nodes["node2"].proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(1.0)     # node2's fetch in flight is answered into its socket
        senders = [await connect(nodes["node1"], timeout=30) for _ in range(12)]
        doomed = [asyncio.ensure_future(c.send_messages(
            "ts", "t", 0, [f"doomed-{i}-{k}".encode().ljust(1000, b".") for k in range(3)]))
            for i, c in enumerate(senders)]
        # Appended on node1 (waiting for node2), over segments after the one holding the cut.
        assert await until(lambda: len(log_files(directory)) >= 4
                           and int(log_files(directory)[-1][:20]) > cut + 9, 10), \
            log_files(directory)
        assert not any(d.done() for d in doomed)
        before = log_files(directory)
        holding_cut = [n for n in before if int(n[:20]) <= cut][-1]
        assert holding_cut != before[-1]
        nodes["node1"].stop(signal.SIGKILL)
        nodes["node2"].proc.send_signal(signal.SIGCONT)
        for result in await asyncio.gather(*doomed, return_exceptions=True):
            assert isinstance(result, Exception)
        for c in senders:
            await c.close()

        assert await until(lambda: status(etcd, "ts")["partitions"][0]["leader"] == "node2",
                           20)
        to_new = await connect(nodes["node2"])
        await send_until_accepted(to_new, "ts", 0, b"after-failover")

        nodes["node1"].start()
        assert await until(lambda: f"to {cut}, where it diverges" in nodes["node1"].log(), 20), \
            nodes["node1"].log()[-3000:]
        assert await until(lambda: segments(nodes["node1"]) == segments(nodes["node2"]), 20)
        text = nodes["node1"].log()
        assert "copying the leader's log" not in text and "begins there" not in text
        # The segments before the cut were kept (not copied anew), the later ones deleted.
        after = log_files(directory)
        assert after[:before.index(holding_cut)] == before[:before.index(holding_cut)]
        assert not set(after) & set(before[before.index(holding_cut) + 1:])
        read = await read_partition(to_new, "ts", "t", 0)
        assert [o for o, _ in read] == list(range(cut + 1))
        assert [p for _, p in read] == acked + [b"after-failover"]
        await to_new.close()
        await admin.close()
    finally:
        stop_all(etcd, nodes)


async def test_a_follower_restarted_with_a_gap_of_offsets_goes_back_and_catches_up(tmp_path):
    etcd, nodes = cluster(tmp_path, "gp", 2)
    try:
        for n in nodes.values():
            n.start()
        assert wait_for(lambda: len(live(etcd, "gp")) == 2, 20)
        admin = await connect(nodes["node1"], timeout=30)
        await admin.create_stream("gp")
        await admin.create_topic("gp", "t", 1)
        assert await until(lambda: placed(etcd, "gp", 1), 20)
        assert status(etcd, "gp")["partitions"][0]["leader"] == "node1"
        sent = []
        for i in range(8):
            payloads = [f"m{i}-{k}".encode() for k in range(5)]
            await admin.send_messages("gp", "t", 0, payloads)
            sent += payloads
            if i == 4:
                # Killed with everything so far; its lease runs out and sends go on.
                nodes["node2"].stop(signal.SIGKILL)
        # As after a reboot: the offset mark's reservation (65536 offsets past the log end)
        # is no longer this boot's, so the log reopens with a gap of offsets up to it.
        mark = os.path.join(partition_dirs(nodes["node2"])[0], "offsets.mark")
        with open(mark) as f:
            reserved = int(f.read().split()[0])
        assert reserved > len(sent)
        with open(mark, "w") as f:
            f.write(f"{reserved:020d} {'another-boot':<36}\n")

        nodes["node2"].start()
        assert await until(lambda: placed(etcd, "gp", 1) and sorted(
            status(etcd, "gp")["partitions"][0]["isr"]) == ["node1", "node2"], 30), \
            nodes["node2"].log()[-3000:]
        assert f"truncated from {reserved} to {len(sent)}" in nodes["node2"].log()
        assert await until(lambda: segments(nodes["node1"]) == segments(nodes["node2"]), 20)
        await admin.send_messages("gp", "t", 0, [b"after"])
        nodes["node1"].stop(signal.SIGKILL)         # node2 leads with everything, densely
        assert await until(lambda: status(etcd, "gp")["partitions"][0]["leader"] == "node2",
                           20)
        to_new = await connect(nodes["node2"], timeout=30)
        await send_until_accepted(to_new, "gp", 0, b"on-node2")
        read = await read_partition(to_new, "gp", "t", 0)
        assert [o for o, _ in read] == list(range(len(sent) + 2))
        assert [p for _, p in read] == sent + [b"after", b"on-node2"]
        await to_new.close()
        await admin.close()
    finally:
        stop_all(etcd, nodes)


def rebalance(etcd, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iggy_fast.cli", "cluster", "rebalance",
                           "--etcd-endpoints", etcd.endpoint, "--name", name,
                           "--timeout", "60"], capture_output=True, text=True, timeout=120)


def placed(etcd, name: str, partitions: int) -> bool:
    parts = status(etcd, name)["partitions"]
    return len(parts) == partitions and all(
        sorted(p["isr"]) == sorted(p["replicas"]) and "target" not in p for p in parts)


def partition_bytes(srv, pid: int) -> bytes:
    directory = partition_dirs(srv)[pid]
    return b"".join(open(os.path.join(directory, n), "rb").read() for n in log_files(directory))


async def read_all(client, stream: str, partition: int) -> list[tuple[int, bytes]]:
    """(offset, payload) of every message of a partition from its log start, page by page
    (the first poll, at offset 0, starts where the log does)."""
    from iggy_fast.client import PollingStrategy
    out: list[tuple[int, bytes]] = []
    while True:
        at = out[-1][0] + 1 if out else 0
        polled = await client.poll_messages(stream, "t", partition_id=partition,
                                            polling_strategy=PollingStrategy.Offset(at),
                                            count=50, consumer=99)
        got = [(m.offset, bytes(m.payload)) for m in polled]
        if not got:
            return out
        out += got


async def test_a_move_copies_a_log_whose_early_segments_were_deleted(tmp_path):
    """Two partitions on node1 and node2; each leader deletes its two oldest segments; node3
    joins and `cluster rebalance` moves replicas onto it. Each new replica starts its copy at
    its leader's log start, catches up, joins the in-sync set, holds the leader's log byte for
    byte, and once it leads serves polls from that start and takes sends."""
    etcd, nodes = cluster(tmp_path, "mv", 3)
    try:
        nodes["node1"].start()
        nodes["node2"].start()
        assert wait_for(lambda: len(live(etcd, "mv")) == 2, 20)
        admin = await connect(nodes["node1"])
        await admin.create_stream("mv")
        await admin.create_topic("mv", "t", 2)
        assert await until(lambda: placed(etcd, "mv", 2), 20)
        sent = {0: [], 1: []}
        for i in range(12):
            for pid in sent:
                payloads = [f"p{pid}-{i}-{k}".encode().ljust(300, b".") for k in range(10)]
                await admin.send_messages("mv", "t", pid, payloads)
                sent[pid] += payloads
        leaders = {p["partition"]: p["leader"] for p in status(etcd, "mv")["partitions"]}
        starts = {}
        for pid, leader in leaders.items():
            to_leader = await connect(nodes[leader])
            await to_leader.delete_segments("mv", "t", pid, 2)      # served where it lands
            await to_leader.close()
            starts[pid] = first_base(partition_dirs(nodes[leader])[pid])
            assert 0 < starts[pid] < len(sent[pid]), starts

        nodes["node3"].start()
        assert await until(lambda: len(live(etcd, "mv")) == 3, 20)
        out = await asyncio.get_running_loop().run_in_executor(None, rebalance, etcd, "mv")
        assert out.returncode == 0 and "rebalanced" in out.stdout, (
            out.stdout, out.stderr, nodes["node3"].log()[-3000:])
        assert placed(etcd, "mv", 2)
        st = {p["partition"]: p for p in status(etcd, "mv")["partitions"]}
        moved = [pid for pid, p in st.items() if "node3" in p["replicas"]]
        assert moved, st
        assert "the copy begins there" in nodes["node3"].log()
        for pid in moved:
            leader = st[pid]["leader"]
            assert await until(lambda: partition_bytes(nodes["node3"], pid) ==
                               partition_bytes(nodes[leader], pid), 20)
            assert first_base(partition_dirs(nodes["node3"])[pid]) == starts[pid]

        # node3 leads a partition it copied (its co-replica killed if need be): polls through
        # it read that partition from the leader's start, and a send continues the offsets.
        pid = moved[0]
        if st[pid]["leader"] != "node3":
            nodes[st[pid]["leader"]].stop(signal.SIGKILL)
            assert await until(lambda: next(p for p in status(etcd, "mv")["partitions"]
                                            if p["partition"] == pid)["leader"] == "node3", 20)
        reader = await connect(nodes["node3"])
        await send_until_accepted(reader, "mv", pid, b"after-move")
        read = await read_all(reader, "mv", pid)
        end = len(sent[pid])
        assert [o for o, _ in read] == list(range(starts[pid], end + 1))
        assert [p for _, p in read] == sent[pid][starts[pid]:] + [b"after-move"]
        await reader.close()
        await admin.close()
    finally:
        stop_all(etcd, nodes)


async def fetch(address: str, header: dict) -> dict:
    """One fetch to a node's replication listener, as a follower makes it; its answer."""
    host, port = split_address(address)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(frame(header))
        answer, _ = await asyncio.wait_for(read_frame(reader), 10)
        return answer
    finally:
        writer.close()


async def test_a_returning_follower_joins_the_in_sync_set_only_with_the_newest_offsets(
        tmp_path):
    """node2 (paused) leaves the in-sync set; a consumer offset is stored meanwhile. A fetch
    at the log end that shows node2 lacks that offset does not bring it back (it used to, and
    node1 dying then left node2 leading without the offset); one showing it has them does,
    and while that is being written (etcd paused) a send waits for node2 too. node2, resumed,
    returns, and after node1's death leads with the newest offset and the send."""
    etcd, nodes = cluster(tmp_path, "ov", 2, leases={"node1": "10 s", "node2": "40 s"},
                          env={"IGGY_CLUSTER_REPLICA_LAG_MAX": "1 s"})
    try:
        for n in nodes.values():
            n.start()
        assert wait_for(lambda: len(live(etcd, "ov")) == 2, 20)
        admin = await connect(nodes["node1"], timeout=30)
        await admin.create_stream("ov")
        await admin.create_topic("ov", "t", 1)
        assert await until(lambda: placed(etcd, "ov", 1), 20)
        record = status(etcd, "ov")["partitions"][0]
        assert record["leader"] == "node1"
        for i in range(5):
            await admin.send_messages("ov", "t", 0, [f"m{i}".encode()])
        await admin.store_consumer_offset("ov", "t", 1, partition_id=0, consumer=7)

        nodes["node2"].proc.send_signal(signal.SIGSTOP)
        await admin.send_messages("ov", "t", 0, [b"m5"])        # once node2 has left
        assert status(etcd, "ov")["partitions"][0]["isr"] == ["node1"]
        await admin.store_consumer_offset("ov", "t", 4, partition_id=0, consumer=7)

        address = nodes["node1"].env["IGGY_CLUSTER_REPLICATION_ADDRESS"]
        identity = int(os.path.basename(partition_dirs(nodes["node1"])[0]))
        ask = {"op": "fetch", "p": identity, "offset": 6, "epoch": record["epoch"],
               "last_epoch": record["epoch"], "offsets": 0, "ov": None, "node": "node2"}
        answer = await fetch(address, ask)
        assert answer["end"] == 6 and list(answer["offsets"].values()) == [4], answer
        await asyncio.sleep(2.0)
        assert status(etcd, "ov")["partitions"][0]["isr"] == ["node1"]

        # It has them now (its digest and version echoed): it joins. The write waits for
        # etcd, paused; a send meanwhile is not acknowledged without node2's copy.
        digest = _wire.xxh32(orjson.dumps(answer["offsets"], option=orjson.OPT_SORT_KEYS))
        etcd.proc.send_signal(signal.SIGSTOP)
        try:
            await fetch(address, {**ask, "offsets": digest, "ov": answer["ov"]})
            held = asyncio.ensure_future(admin.send_messages("ov", "t", 0, [b"m6"]))
            await asyncio.sleep(1.0)
            assert not held.done()
        finally:
            etcd.proc.send_signal(signal.SIGCONT)
        nodes["node2"].proc.send_signal(signal.SIGCONT)
        await asyncio.wait_for(held, 30)
        assert await until(lambda: sorted(status(etcd, "ov")["partitions"][0]["isr"]) ==
                           ["node1", "node2"], 20)

        nodes["node1"].stop(signal.SIGKILL)
        assert await until(lambda: status(etcd, "ov")["partitions"][0]["leader"] == "node2",
                           30)
        to_new = await connect(nodes["node2"], timeout=30)
        offset = None
        for _ in range(100):       # the new leader takes office
            try:
                offset = await to_new.get_consumer_offset("ov", "t", 0, consumer=7)
                break
            except Exception:
                await asyncio.sleep(0.1)
        assert offset is not None and offset.stored_offset == 4, offset
        read = await read_partition(to_new, "ov", "t", 0)
        assert [p for _, p in read] == [f"m{i}".encode() for i in range(7)]
        await to_new.close()
        await admin.close()
    finally:
        stop_all(etcd, nodes)
