"""Cluster configuration: three nodes, each partition on two of them (replication factor 2).

The client takes every node's address and fails over between them:

    python examples/cluster_config.py --nodes 127.0.0.1:8090,127.0.0.1:8091,127.0.0.1:8092

It asks the server it reaches for the cluster's nodes (GetClusterMetadata), and creates a
topic with the option `replication_factor=2`, which a node in cluster mode uses to place each
partition on two distinct nodes. What it cannot do yet is shown rather than pretended: with
fewer than three nodes answering (a single server, cluster mode off) it says so and stops,
and it does not check that a partition's messages are copied to its second node: that
replication of message data is not part of this release's client API.
"""

import asyncio
import sys

from _common import arguments, fresh_stream, url
from iggy_fast.client import IggyClient
from iggy_fast.protocol.errors import IggyError

STREAM, TOPIC, NODES, REPLICATION_FACTOR = "example-cluster", "replicated", 3, 2


async def main(args) -> int:
    args.address = args.nodes or args.address
    async with IggyClient(url(args)) as client:
        metadata = await client.get_cluster_metadata()
        print(f"connected to {client.address}; cluster {metadata.name!r} has "
              f"{len(metadata.nodes)} node(s):")
        for node in metadata.nodes:
            print(f"  {node.name} {node.ip}:{node.tcp_port} "
                  f"{'leader' if node.role == 0 else 'follower'}")
        if len(metadata.nodes) < NODES:
            print(f"cannot show a {NODES}-node cluster with replication factor "
                  f"{REPLICATION_FACTOR}: this server reports {len(metadata.nodes)} node(s). "
                  f"Start one with `iggy-fast cluster dev` (cluster mode, etcd) and pass "
                  f"every node with --nodes.")
            return 0
        await fresh_stream(client, STREAM)
        try:
            await client.create_topic(STREAM, TOPIC, partitions_count=3,
                                      options={"replication_factor": str(REPLICATION_FACTOR)})
        except IggyError as e:
            print(f"the server refused replication_factor={REPLICATION_FACTOR}: {e!r}")
            return 1
        topic = await client.get_topic(STREAM, TOPIC)
        print(f"topic {topic.name}: {topic.partitions_count} partitions, replication factor "
              f"{REPLICATION_FACTOR} requested; where the replicas live is the cluster's "
              f"record (`iggy-fast cluster status`), not something this client reads yet")
        await client.delete_stream(STREAM)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(arguments(
        __doc__.splitlines()[0],
        nodes=(None, "comma-separated node addresses (default: --address)")))))
