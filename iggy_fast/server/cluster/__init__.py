"""The replicated cluster: nodes coordinated by etcd (GitHub issue 12).

* `etcd.py`: the etcd v3 client (its JSON gateway over aiohttp).
* `node.py`: this node in the cluster: its identity (bound to its data directory), its
  registration under a lease, the view of every node, the controller election.
* `controller.py`: what the controller does: places partition replicas on distinct nodes with
  leaders spread, and moves leadership off nodes whose lease expired (compare-and-swap under
  the controller's own key, so two controllers can never both win).

The metadata itself lives in etcd behind the `MetadataStore` interface
(server/metadata/etcd.py). etcd keys, all under `/iggy/<cluster name>/`:

    meta/<key>                       the metadata store's keys (metadata/__init__.py)
    meta/<partition key>/placement   {"replicas", "leader", "epoch", "isr"} per partition
    cluster/nodes/<name>             a live node's registration, under its lease
    cluster/known/<name>             {"id", "addresses"}: the data directory a name is bound to
    cluster/controller               {"name", "id"}: the controller, under its lease
    cluster/init                     held (under a lease) by the node creating the first
                                     metadata (the format marker, the root user)
"""
