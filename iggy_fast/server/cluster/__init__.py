"""The replicated cluster: nodes coordinated by etcd (GitHub issue 12).

* `etcd.py`: the etcd v3 client (its JSON gateway over aiohttp).
* `node.py`: this node in the cluster: its identity (bound to its data directory), its
  registration under a lease, the view of every node, the controller election.
* `controller.py`: what the controller does: places partition replicas on distinct nodes with
  leaders spread, moves leadership off nodes whose lease expired (compare-and-swap under
  the controller's own key, so two controllers can never both win), and moves replicas:
  onto nodes that joined when `iggy-fast cluster rebalance` asks (a request in etcd), and
  off nodes gone longer than `replica_replace_after` (5 minutes by default). A move adds the
  new replica first (it copies the log from the leader and joins the in-sync set once caught
  up) and only then drops the old one, in a compare-and-swap that also hands leadership to
  an in-sync replica (epoch bumped) when the target says so; the dropped replica stops
  fetching and deletes its copy.
* `replication.py`: the data path: followers fetch from leaders, sends acknowledged once the
  in-sync replicas have them, leader epochs and truncation, forwarding to the leader.
* `cluster.py`: the wiring the server calls; `dev.py`: etcd and nodes as local processes.

Why no acknowledged message is lost when any one node dies: a send is acknowledged only once
every in-sync replica has it, and only an in-sync replica may become leader (when none is
live the partition waits for one rather than electing a replica that may lack acknowledged
messages). A follower that falls behind leaves the in-sync set before sends stop waiting for
it, so the set always holds every acknowledged message. The price is availability: with the
in-sync set down to the leader (its follower dead), the leader's death leaves the partition
without a leader until one of the two returns.

The metadata itself lives in etcd behind the `MetadataStore` interface
(server/metadata/etcd.py). etcd keys, all under `/iggy/<cluster name>/`:

    meta/<key>                       the metadata store's keys (metadata/__init__.py)
    meta/<partition key>/placement   {"replicas", "leader", "epoch", "isr"} per partition
                                     (and "target" while it moves: controller.py)
    cluster/nodes/<name>             a live node's registration, under its lease
    cluster/known/<name>             {"id", "addresses"}: the data directory a name is bound to
    cluster/controller               {"name", "id"}: the controller, under its lease
    cluster/rebalance                {"id", "state"}: `cluster rebalance`'s request, state
                                     "requested", then "moving", then "done"
    cluster/init                     held (under a lease) by the node creating the first
                                     metadata (the format marker, the root user)

Topic options (server/options.py): `replication_factor` (default: the node's) and
`min_in_sync_replicas`: a leader refuses a send (transient_not_accepted, nothing appended)
while the partition's in-sync set is smaller (`Replication.check_in_sync`). GET
/cluster/status on the HTTP transport (transports/http_cluster.py) is `Cluster.status()`.
A partition request for a partition another node leads is forwarded to the leader, from
every transport (an HTTP REST request is encoded to its binary body to travel and its answer
decoded back to JSON), and forwarded again to the next leader while leadership moves, for
about as long as a failover takes; a forwarded send is appended once even then (a retried
send is looked for in the new leader's log first: replication.py, "Forwarding"). Only the
forwarding node's own retries are recognised: a client that sends again itself (having lost
its connection or its patience) stores a second copy, as with a single node.

Not done yet (issue 12): consumer groups are each node's own (their requests
are not forwarded), so members on different nodes do not share a group; truncation cuts only
within the active segment (otherwise the replica copies the whole log again); a node that has not yet seen a stream's or topic's deletion may still answer for it
for a few milliseconds (a name it does not know makes it catch up with etcd first); renames
are not guarded across nodes (creations are, by the identity counter). The official SDK
(0.9.0), once GetClusterMetadata lists several nodes, polls with auto-commit by code 103, whose
body is PollMessages' (auto_commit set; the code appears in no Iggy source on this machine): it
is served as PollMessages and forwarded like it. Even so, that SDK's `poll_messages(...,
auto_commit=True)` raises InvalidCommand on its own side after receiving the answer (the
server answers it as it answers code 100, which the SDK accepts; its raw
`send_binary_request(103, ...)` works): with several nodes, poll without auto-commit and store
offsets with `store_consumer_offset`. Its other requests work on any node.
"""
