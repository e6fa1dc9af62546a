"""`iggy-fast cluster dev`: a cluster on this machine; `iggy-fast cluster status`: its state.

`dev` starts etcd (the `etcd` binary on PATH, or `--etcd`) and `--nodes` nodes on loopback
ports, each with its own temporary data directory, prints where each listens, and stops them
all on Ctrl-C (or when one exits). `status` reads etcd directly (so it works whichever nodes
are up): the nodes and whether they are live, the controller, and every partition's replicas,
leader, leader epoch and in-sync replicas (and where it is moving, during a move).

`rebalance` asks the controller, through etcd (`cluster/rebalance`: see
server/cluster/controller.py), to move replicas and leaderships so that every live node
carries an even share of both, then waits until the moves are done (each new replica has
copied the log and joined the in-sync set before an old one is dropped) and prints how many
replicas and leaderships each node has.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid

import orjson


def _dev(args) -> int:
    from iggy_fast.server.cluster.dev import EtcdProcess, find_etcd, node

    binary = find_etcd(args.etcd)
    if binary is None:
        print("iggy-fast: no etcd binary on PATH (Debian: apt-get install etcd-server); "
              "give one with --etcd", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="iggy-cluster-") as base:
        etcd = EtcdProcess(binary, f"{base}/etcd")
        nodes = []
        stop = []
        signal.signal(signal.SIGINT, lambda *_: stop.append(1))
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        try:
            os.makedirs(etcd.directory)
            etcd.start()
            print(f"etcd        {etcd.endpoint}", flush=True)
            for i in range(1, args.nodes + 1):
                n = node(f"node{i}", etcd.endpoint, cluster=args.name,
                         replication_factor=args.replication_factor,
                         data_dir=f"{base}/node{i}").start()
                nodes.append(n)
                print(f"node{i}       tcp {n.address}  quic 127.0.0.1:{n.quic_port}  "
                      f"http 127.0.0.1:{n.http_port}  websocket 127.0.0.1:{n.websocket_port}  "
                      f"(log {n.log_path})", flush=True)
            print(f"status:     iggy-fast cluster status --etcd-endpoints {etcd.endpoint} "
                  f"--name {args.name}\nCtrl-C stops them all.", flush=True)
            while not stop and all(n.alive() for n in nodes):
                time.sleep(0.2)
            for n in nodes:
                if not n.alive():
                    print(f"a node exited; see {n.log_path}", file=sys.stderr)
        finally:
            for n in nodes:
                n.stop()
            etcd.stop()
    return 0


async def read_status(endpoints: list[str], name: str) -> dict:
    """The cluster's state as etcd holds it (see server/cluster/__init__.py for the keys)."""
    from iggy_fast.server.cluster.etcd import Etcd

    etcd = Etcd(endpoints)
    try:
        root = f"/iggy/{name}/"
        kvs, _ = await etcd.range(root, prefix=True)
    finally:
        await etcd.close()
    values = {kv.key[len(root):]: kv.value for kv in kvs}
    nodes = {}
    for key, value in values.items():
        if key.startswith("cluster/known/"):
            record = orjson.loads(value)
            nodes[key[14:]] = {"live": f"cluster/nodes/{key[14:]}" in values,
                               "host": record["host"], "ports": record["ports"]}
    controller = values.get("cluster/controller")
    ids = {}        # metadata key -> the id clients know
    for key, value in values.items():
        if key.startswith("meta/streams/") and not key.endswith("/placement"):
            record = orjson.loads(value)
            if "id" in record:
                ids[key[5:]] = record["id"]
    partitions = []
    for key, value in values.items():
        if key.endswith("/placement"):
            path = key[5:-len("/placement")]
            parts = path.split("/")
            stream, topic = "/".join(parts[:2]), "/".join(parts[:4])
            if path in ids and stream in ids and topic in ids:
                partitions.append({"stream": ids[stream], "topic": ids[topic],
                                   "partition": ids[path], **orjson.loads(value)})
    partitions.sort(key=lambda p: (p["stream"], p["topic"], p["partition"]))
    return {"cluster": name, "nodes": nodes,
            "controller": orjson.loads(controller)["name"] if controller else None,
            "partitions": partitions}


def _status(args) -> int:
    from iggy_fast.server.cluster.etcd import EtcdUnavailable

    endpoints = [e.strip() for e in args.etcd_endpoints.split(",") if e.strip()]
    try:
        status = asyncio.run(read_status(endpoints, args.name))
    except EtcdUnavailable as e:
        print(f"iggy-fast: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"cluster {status['cluster']}, controller {status['controller']}")
    for name, node in sorted(status["nodes"].items()):
        print(f"  {name:12} {'live' if node['live'] else 'gone':5} {node['host']}:"
              f"{node['ports'].get('tcp', 0)}")
    print("partition  leader        epoch  replicas / in-sync")
    for p in status["partitions"]:
        moving = (f"  (moving to {','.join(p['target']['replicas'])}, led by "
                  f"{p['target']['leader']})" if "target" in p else "")
        print(f"  {p['stream']}/{p['topic']}/{p['partition']:<5} {p['leader'] or '-':12} "
              f"{p['epoch']:5}  {','.join(p['replicas'])} / {','.join(p['isr'])}{moving}")
    return 0


def _status_of(args):
    endpoints = [e.strip() for e in args.etcd_endpoints.split(",") if e.strip()]
    return endpoints, asyncio.run(read_status(endpoints, args.name))


def _spread(status: dict) -> dict[str, tuple[int, int]]:
    """(replicas, leaderships) per live node."""
    live = [n for n, v in status["nodes"].items() if v["live"]]
    return {n: (sum(n in p["replicas"] for p in status["partitions"]),
                sum(p["leader"] == n for p in status["partitions"])) for n in sorted(live)}


async def request_rebalance(endpoints: list[str], name: str, timeout: float) -> dict:
    """Put a rebalance request in etcd and wait (up to `timeout` s; 0: not at all) for the
    controller to say it is done; the request as the controller last left it."""
    from iggy_fast.server.cluster.etcd import Etcd

    etcd = Etcd(endpoints)
    key = f"/iggy/{name}/cluster/rebalance"
    request = {"id": uuid.uuid4().hex, "state": "requested"}
    try:
        await etcd.put(key, orjson.dumps(request))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kvs, _ = await etcd.range(key)
            now = orjson.loads(kvs[0].value) if kvs else {}
            if now.get("id") != request["id"]:
                return now          # a newer request took its place
            request = now
            if now.get("state") == "done":
                break
            await asyncio.sleep(0.5)
    finally:
        await etcd.close()
    return request


def _rebalance(args) -> int:
    from iggy_fast.server.cluster.etcd import EtcdUnavailable

    try:
        endpoints, status = _status_of(args)
        if status["controller"] is None:
            print(f"iggy-fast: cluster {args.name!r} has no controller (no live node): "
                  f"nothing rebalanced", file=sys.stderr)
            return 1
        request = asyncio.run(request_rebalance(endpoints, args.name, args.timeout))
        _, status = _status_of(args)
    except EtcdUnavailable as e:
        print(f"iggy-fast: {e}", file=sys.stderr)
        return 1
    state = request.get("state")
    if state == "done":
        print(f"rebalanced: {request.get('partitions', 0)} partition(s) to move, every move "
              f"done")
    elif args.timeout:
        print(f"iggy-fast: the moves are not done after {args.timeout:g} s (state "
              f"{state!r}); they go on: see `iggy-fast cluster status`", file=sys.stderr)
    else:
        print("rebalance requested; `iggy-fast cluster status` shows the moves")
    print("node          replicas  leaders")
    for n, (replicas, leaders) in _spread(status).items():
        print(f"  {n:12} {replicas:8} {leaders:8}")
    return 0 if state == "done" or not args.timeout else 1


def add_parser(sub) -> None:
    cluster = sub.add_parser("cluster", help="a replicated cluster coordinated by etcd")
    commands = cluster.add_subparsers(dest="cluster_command", required=True)
    dev = commands.add_parser("dev", help="run etcd and a cluster of nodes on this machine")
    dev.add_argument("--nodes", type=int, default=3)
    dev.add_argument("--replication-factor", type=int, default=2)
    dev.add_argument("--name", default="dev", help="the cluster name (cluster.name)")
    dev.add_argument("--etcd", help="the etcd binary (default: etcd on PATH)")
    dev.set_defaults(func=_dev)
    status = commands.add_parser("status", help="nodes, controller, partition leaders")
    status.add_argument("--etcd-endpoints", default="http://127.0.0.1:2379",
                        help="comma-separated etcd URLs (cluster.etcd_endpoints)")
    status.add_argument("--name", default="iggy-cluster", help="the cluster name")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
    rebalance = commands.add_parser(
        "rebalance", help="move replicas and leaderships so every live node has its share")
    rebalance.add_argument("--etcd-endpoints", default="http://127.0.0.1:2379",
                           help="comma-separated etcd URLs (cluster.etcd_endpoints)")
    rebalance.add_argument("--name", default="iggy-cluster", help="the cluster name")
    rebalance.add_argument("--timeout", type=float, default=600.0,
                           help="seconds to wait for the moves to finish (0: do not wait)")
    rebalance.set_defaults(func=_rebalance)
